//! Runs the framing corpus (`corpus/framing.txt`): every request, response and chunked
//! body case there meets its expected verdict. The file is the list of decisions;
//! docs/SECURITY.md says why.

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, HOST};

use super::body::{BodyDecoder, Decoded};
use super::{Framing, HeadError};

const CORPUS: &str = include_str!("../../corpus/framing.txt");

/// One line of the corpus.
pub(super) struct Case {
    side: String,
    expect: String,
    pub(super) wire: Vec<u8>,
}

/// Every case, escapes decoded.
pub(super) fn cases() -> Vec<Case> {
    CORPUS
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let side = parts.next().unwrap_or_default().to_string();
            let rest = parts.collect::<Vec<_>>().join(" ");
            let rest = rest.trim_start();
            let (expect, wire) = rest.split_once(' ').unwrap_or((rest, ""));
            Case { side, expect: expect.to_string(), wire: unescape(wire.trim_start()) }
        })
        .collect()
}

fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'r')) => out.push(b'\r'),
            (b'\\', Some(b'n')) => out.push(b'\n'),
            (b'\\', Some(b't')) => out.push(b'\t'),
            (b'\\', Some(b'\\')) => out.push(b'\\'),
            (b'\\', Some(b'x')) => {
                let hex = text.get(i + 2..i + 4).and_then(|h| u8::from_str_radix(h, 16).ok()).expect("\\xNN");
                out.push(hex);
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    out
}

fn status(error: HeadError) -> &'static str {
    match error {
        HeadError::Malformed(_) => "400",
        HeadError::TooLarge => "431",
        HeadError::UriTooLong => "414",
        HeadError::Version => "505",
        HeadError::NotImplemented(_) => "501",
    }
}

fn framing_name(framing: Framing) -> String {
    match framing {
        Framing::Empty => "empty".into(),
        Framing::Length(n) => format!("length={n}"),
        Framing::Chunked => "chunked".into(),
        Framing::UntilClose => "until-close".into(),
    }
}

fn request_verdict(wire: &[u8], expect: &str) -> String {
    let (framing, headers) = match crate::server::parse_request_head_for_tests(&mut BytesMut::from(wire)) {
        Err(e) => return status(e).to_string(),
        Ok(None) => return "incomplete".to_string(),
        Ok(Some(head)) => head,
    };
    let mut verdict = format!("ok:{}", framing_name(framing));
    if let Some(host) = headers.get(HOST) {
        verdict.push_str(&format!(";host={}", host.to_str().unwrap_or("?")));
    }
    if expect.contains("cl-once") && headers.get_all(CONTENT_LENGTH).iter().count() == 1 {
        verdict.push_str(";cl-once");
    }
    verdict
}

fn response_verdict(wire: &[u8], expect: &str) -> String {
    let (parts, keep_alive, framing) = match crate::upstream::parse_response_head_for_tests(&mut BytesMut::from(wire)) {
        Err(_) => return "502".to_string(),
        Ok(None) => return "incomplete".to_string(),
        Ok(Some(head)) => head,
    };
    let mut verdict = format!("ok:{}", framing_name(framing));
    if !keep_alive {
        verdict.push_str(";close");
    }
    let lengths = parts.headers.get_all(CONTENT_LENGTH).iter().count();
    if expect.contains("no-cl") && lengths == 0 {
        verdict.push_str(";no-cl");
    }
    if expect.contains("cl-once") && lengths == 1 {
        verdict.push_str(";cl-once");
    }
    verdict
}

fn chunked_verdict(wire: &[u8]) -> String {
    let mut decoder = BodyDecoder::new(Framing::Chunked);
    let mut buf = BytesMut::from(wire);
    let mut data = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(d)) => data.extend_from_slice(&d),
            Ok(Decoded::Trailers(_)) => continue,
            Ok(Decoded::Done) => return format!("ok:{}", String::from_utf8_lossy(&data)),
            Ok(Decoded::NeedMore) => return "incomplete".to_string(),
            Err(_) => return "reject".to_string(),
        }
    }
}

#[test]
fn every_corpus_case_meets_its_verdict() {
    let cases = cases();
    assert!(cases.len() >= 50, "the corpus is read: {} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let verdict = match case.side.as_str() {
            "request" => request_verdict(&case.wire, &case.expect),
            "response" => response_verdict(&case.wire, &case.expect),
            "chunked" => chunked_verdict(&case.wire),
            other => panic!("unknown side {other}"),
        };
        if verdict != case.expect {
            wrong.push(format!(
                "{} {:?}: expected {}, got {verdict}",
                case.side,
                String::from_utf8_lossy(&case.wire),
                case.expect
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
