//! HTTP/2 conformance where it decides what reaches the upstream: malformed streams
//! (RFC 9113 §8.1.1, §8.1) get their stream error every time and are never forwarded
//! (bodies are read whole before an upstream is chosen), and PING floods end the
//! connection. Frames are written by hand, as a hostile client would.

mod support;

use support::raw::RawUpstream;
use support::{simple_config, Sluice, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK literal fields without indexing (RFC 7541 §6.2.2), no Huffman.
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        for text in [name, value] {
            assert!(text.len() < 127, "short strings only");
            out.push(text.len() as u8);
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

fn request_head(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![(":method", "POST"), (":scheme", "http"), (":path", "/upload"), (":authority", "x")];
    fields.extend_from_slice(extra);
    hpack(&fields)
}

/// Frames received: (type, flags, stream, payload).
type Frame = (u8, u8, u32, Vec<u8>);

/// Reads frames until `done` says so or the connection ends; returns them all.
async fn read_frames(stream: &mut TcpStream, mut done: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while buf.len() >= 9 {
            let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let stream_id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let f = (buf[3], buf[4], stream_id, buf[9..9 + len].to_vec());
            buf.drain(..9 + len);
            let stop = done(&f);
            frames.push(f);
            if stop {
                return frames;
            }
        }
        match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return frames,
            Err(_) => panic!("no end in time; frames so far: {frames:?}"),
        }
    }
}

/// Sends `frames` on a new h2c connection, then a PING; returns what came back up to
/// a stream error on stream 1 (when one is expected) or else the PING's acknowledgement.
async fn exchange(addr: std::net::SocketAddr, frames: &[Vec<u8>], until_error: bool) -> Vec<Frame> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(SETTINGS, 0, 0, &[]));
    for f in frames {
        wire.extend_from_slice(f);
    }
    wire.extend(frame(PING, 0, 0, b"12345678"));
    stream.write_all(&wire).await.expect("write");
    read_frames(&mut stream, |(kind, flags, id, payload)| {
        let acked = *kind == PING && flags & ACK != 0 && payload == b"12345678";
        (acked && !until_error) || (*kind == RST_STREAM && *id == 1) || *kind == GOAWAY
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_streams_get_their_stream_error_every_time_and_are_never_forwarded() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let cases: Vec<(&str, Vec<Vec<u8>>, bool)> = vec![
        (
            "content-length does not match DATA",
            vec![
                frame(HEADERS, END_HEADERS, 1, &request_head(&[("content-length", "10")])),
                frame(DATA, END_STREAM, 1, b"abc"),
            ],
            true,
        ),
        (
            "a second HEADERS without END_STREAM",
            vec![
                frame(HEADERS, END_HEADERS, 1, &request_head(&[])),
                frame(DATA, 0, 1, b"abc"),
                frame(HEADERS, END_HEADERS, 1, &hpack(&[("x-more", "1")])),
            ],
            true,
        ),
        (
            "a pseudo-header in trailers (h2spec 8.1.2.1: trailers without END_STREAM)",
            vec![
                frame(HEADERS, END_HEADERS, 1, &request_head(&[])),
                frame(DATA, 0, 1, b"test"),
                frame(HEADERS, END_HEADERS, 1, &hpack(&[(":method", "POST")])),
            ],
            true,
        ),
        (
            "DATA after RST_STREAM",
            vec![
                frame(HEADERS, END_HEADERS, 1, &request_head(&[])),
                frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()),
                frame(DATA, END_STREAM, 1, b"abc"),
            ],
            false, // the client reset it: an error or silence are both right
        ),
    ];
    for (name, frames, expect_error) in &cases {
        for round in 0..20 {
            let got = exchange(sluice.addr, frames, *expect_error).await;
            let on_stream: Vec<&Frame> = got.iter().filter(|f| f.2 == 1).collect();
            assert!(on_stream.iter().all(|f| f.0 != HEADERS), "{name} (round {round}): a response was sent: {got:?}");
            if *expect_error {
                let errored = on_stream.iter().any(|f| f.0 == RST_STREAM) || got.iter().any(|f| f.0 == GOAWAY);
                assert!(errored, "{name} (round {round}): no stream error: {got:?}");
            }
        }
    }
    assert!(upstream.requests().is_empty(), "no malformed stream reached the upstream: {:?}", upstream.requests());
}

/// KNOWN GAP, stricter than h2spec's case (which sends the trailers without END_STREAM
/// and is in the list above): a trailer block with END_STREAM that opens with a
/// pseudo-header is accepted by the h2 crate (0.4.20), which drops the pseudo-header
/// instead of answering PROTOCOL_ERROR (RFC 9113 §8.1). What sluice guarantees: the
/// pseudo-header never reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn a_pseudo_header_in_trailers_never_reaches_the_upstream() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let frames = [
        frame(HEADERS, END_HEADERS, 1, &request_head(&[])),
        frame(DATA, 0, 1, b"abc"),
        frame(HEADERS, END_HEADERS | END_STREAM, 1, &hpack(&[(":path", "/other"), ("x-trailer", "1")])),
    ];
    let got = exchange(sluice.addr, &frames, false).await;
    if upstream.accepted() > 0 {
        upstream.wait_requests(1).await;
    }
    for request in upstream.requests() {
        assert!(!request.contains(":path") && !request.contains("/other"), "{request}");
    }
    assert!(got.iter().all(|f| f.0 != GOAWAY), "the connection survives: {got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ping_flood_gets_goaway_enhance_your_calm_and_the_connection_ends() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let stream = TcpStream::connect(sluice.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let flood = tokio::spawn(async move {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(SETTINGS, 0, 0, &[]));
        for i in 0..5_000u64 {
            wire.extend(frame(PING, 0, 0, &i.to_be_bytes()));
        }
        // The server may close before reading it all; that is the point.
        let _ = writer.write_all(&wire).await;
        writer
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(WAIT, reader.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _writer = flood.await.expect("writer");
    let mut frames = Vec::new();
    while buf.len() >= 9 {
        let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
        if buf.len() < 9 + len {
            break;
        }
        frames.push((buf[3], buf[4], buf[9..9 + len].to_vec()));
        buf.drain(..9 + len);
    }
    let acks = frames.iter().filter(|f| f.0 == PING && f.1 & ACK != 0).count();
    assert!(acks < 2_000, "{acks} of 5,000 PINGs were answered");
    let goaway = frames.iter().find(|f| f.0 == GOAWAY).expect("a GOAWAY before the close");
    assert_eq!(&goaway.2[4..8], &[0, 0, 0, 0x0b], "ENHANCE_YOUR_CALM");
    sluice.wait_for_log("flooding PING/SETTINGS");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_preface_on_an_http2_only_listener_gets_goaway_protocol_error() {
    let upstream = RawUpstream::ok().await;
    let config = simple_config(&[upstream.addr], "")
        .replace("address = \"127.0.0.1:0\"\n", "address = \"127.0.0.1:0\"\nprotocol = \"http2\"\n");
    let sluice = Sluice::start(&config);
    // h2spec 3.5/2: an invalid connection preface.
    let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
    stream.write_all(b"INVALID CONNECTION PREFACE\r\n\r\n").await.expect("write");
    let frames = read_frames(&mut stream, |(kind, ..)| *kind == GOAWAY).await;
    let goaway = frames.iter().find(|(kind, ..)| *kind == GOAWAY).expect("a GOAWAY");
    assert_eq!(&goaway.3[4..8], &[0, 0, 0, 1], "PROTOCOL_ERROR: {frames:?}");
    // A valid preface on the same listener is served.
    let mut h2 = support::client::h2(sluice.addr).await;
    let (parts, _) = support::client::send2(&mut h2, support::client::get2("/")).await;
    assert_eq!(parts.status, 200);
}
