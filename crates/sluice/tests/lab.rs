//! `sluice lab`, run for real at small connection counts: every model at every count
//! gives a row, a thread per connection shows as threads, and the chart is written.

mod support;

use std::process::Command;

use support::TempDir;

#[test]
fn a_short_lab_run_measures_every_model_at_every_count() {
    let dir = TempDir::new();
    let svg = dir.path.join("lab.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["lab", "--connections", "4,16", "--duration", "300ms", "--json", "--svg"])
        .arg(&svg)
        .output()
        .expect("run sluice lab");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let results: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let rows = results["rows"].as_array().expect("rows");
    let models = ["thread-per-connection", "thread-pool", "event-loop", "per-core"];
    assert_eq!(rows.len(), models.len() * 2, "{results:#}");
    for model in models {
        for connections in [4u64, 16] {
            let row = rows
                .iter()
                .find(|r| r["model"] == model && r["connections"] == connections)
                .unwrap_or_else(|| panic!("a row for {model} at {connections}: {results:#}"));
            assert!(row["responses"].as_u64().unwrap_or(0) > 0, "{row}");
            assert_eq!(row["failed_requests"], 0, "{row}");
            assert!(row["p99_ms"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
            assert_eq!(row["p99_all_ms"], row["p99_ms"], "nothing failed: every request is in the p99: {row}");
            let threads = row["threads"].as_u64().unwrap_or(0);
            match model {
                // One thread per connection, plus the accepting and the stdin-watching threads.
                "thread-per-connection" => {
                    assert!((connections..=connections + 3).contains(&threads), "{row}")
                }
                "thread-pool" => assert!(threads >= 200, "the pool's 200 threads: {row}"),
                "event-loop" => assert!(threads <= 3, "{row}"),
                _ => {}
            }
        }
    }
    let chart = std::fs::read_to_string(&svg).expect("the SVG");
    assert!(chart.starts_with("<svg") && models.iter().all(|m| chart.contains(m)), "{chart}");
    assert!(chart.contains("Verdict, on this machine at 16 connections:"), "the chart answers: {chart}");
}

#[test]
fn the_table_ends_with_a_verdict_written_from_the_numbers() {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["lab", "--connections", "8", "--duration", "200ms", "--models", "thread-pool,event-loop"])
        .output()
        .expect("run sluice lab");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8_lossy(&output.stdout);
    let verdict = table.lines().find(|l| l.starts_with("Verdict, on this machine at 8 connections:")).expect(&table);
    assert!(verdict.contains("2xx/s") && verdict.contains("KiB per connection"), "{verdict}");
    assert!(table.contains("the goodput of"), "the other model against the best: {table}");
}
