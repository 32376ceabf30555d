//! The `sluice bench` command line.

use std::path::PathBuf;
use std::time::Duration;

/// Load-test HTTP APIs: HTTP/1.1 or HTTP/2, as fast as possible (closed loop) or at a fixed
/// rate (open loop, latency measured from when each request was due).
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Example: sluice bench -c 64 -d 10s http://127.0.0.1:8080/api")]
pub struct BenchArgs {
    /// URLs to call, in turn (http:// or https://).
    #[arg(value_name = "URL", required_unless_present_any = ["request_file", "compare"])]
    pub urls: Vec<String>,

    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,

    /// Threads, each a single-threaded event loop owning its share of the connections
    /// [default: the number of CPUs].
    #[arg(short = 't', long)]
    pub threads: Option<usize>,

    /// How long to send, after the warm-up (e.g. 10s, 500ms, 2m) [default: 10s unless -n].
    #[arg(short = 'd', long, value_parser = sluice_config::parse_duration)]
    pub duration: Option<Duration>,

    /// How many requests to send, after the warm-up.
    #[arg(short = 'n', long = "requests", conflicts_with = "duration")]
    pub requests: Option<u64>,

    /// Open loop: send this many requests per second in all, on a fixed timetable; each
    /// latency counts from when its request was due, so a stall is not hidden.
    /// Also a ramp, "1000:10000 over 30s", or stages, "100 for 10s, 100:1000 over 20s, 1000"
    /// (the last rate then holds), to find the rate where latency breaks.
    #[arg(short = 'r', long, value_parser = crate::schedule::RateProfile::parse)]
    pub rate: Option<crate::schedule::RateProfile>,

    /// Send, but do not record, for this long first.
    #[arg(long, value_parser = sluice_config::parse_duration, default_value = "0s")]
    pub warmup: Duration,

    /// Request method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,

    /// Request header, "Name: value"; repeat for more.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Request body.
    #[arg(short = 'b', long, conflicts_with = "body_file")]
    pub body: Option<String>,

    /// Request body, read from a file.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,

    /// Requests to send, in turn: one per line, either "URL", "METHOD URL", or a JSON object
    /// {"method", "url", "headers": {..}, "body"}. Lines starting with # are skipped.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub request_file: Option<PathBuf>,

    /// Give up on a request (connect included) after this long; counted as a timeout error.
    #[arg(long, value_parser = sluice_config::parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// Speak HTTP/2 (h2c on http://, ALPN h2 on https://).
    #[arg(long)]
    pub http2: bool,

    /// HTTP/2: concurrent streams per connection.
    #[arg(long = "streams", default_value_t = 1, requires = "http2")]
    pub streams: usize,

    /// HTTP/1.1: open a new connection for every request.
    #[arg(long, conflicts_with = "http2")]
    pub no_keepalive: bool,

    /// TLS: do not verify the server's certificate.
    #[arg(short = 'k', long)]
    pub insecure: bool,

    /// TLS: trust the certificates in this PEM file (instead of the system's).
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Print the report as JSON on stdout (input for --compare).
    #[arg(long)]
    pub json: bool,

    /// Also write an SVG: latency by percentile, and throughput per second.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// No progress on stderr while running.
    #[arg(short = 'q', long = "no-progress")]
    pub no_progress: bool,

    /// Exit with status 1 when more than this share of requests failed (no response, or a
    /// status outside 200-399, as k6 and vegeta count them): "1%" or "0.01". Without it,
    /// any failed request makes the exit status 1.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub max_error_rate: Option<f64>,

    /// Exit with status 1 when the 99th percentile latency is above this ("250ms").
    #[arg(long, value_name = "DURATION", value_parser = sluice_config::parse_duration)]
    pub max_p99: Option<std::time::Duration>,

    /// Print two JSON reports side by side with ratios (B ÷ A), instead of running.
    #[arg(long, num_args = 2, value_names = ["A.json", "B.json"], conflicts_with_all = ["urls", "request_file"])]
    pub compare: Option<Vec<PathBuf>>,
}

/// `"1%"` or `"0.01"`: a share from 0 to 1.
fn parse_rate(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.trim().strip_suffix('%') {
        Some(percent) => (percent, 100.0),
        None => (text.trim(), 1.0),
    };
    let value: f64 = number.parse().map_err(|_| format!("\"{text}\" is not a rate; write e.g. \"1%\" or \"0.01\""))?;
    let share = value / scale;
    if !(0.0..=1.0).contains(&share) {
        return Err(format!("\"{text}\" is outside 0-100%"));
    }
    Ok(share)
}
