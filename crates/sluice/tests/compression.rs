//! Response compression on a route (issue 23 §3), against the real binary: zstd, br
//! and gzip chosen by the client's Accept-Encoding and q-values, decoded by curl
//! (`--compressed`) and by Python's zstandard, brotli and gzip modules; streamed (a
//! stalled upstream's first part reaches the client decodable); left alone when the
//! response is small, of another type, already encoded, `no-transform`, a range or a
//! HEAD; `Vary: Accept-Encoding`; the cache storing one identity copy and compressing
//! hits; over HTTP/1 and HTTP/2.

mod support;

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use support::client::{self, field, send1, send2};
use support::upstream::{full, TestBody, Upstream};
use support::Sluice;
use tokio::sync::Notify;

/// A JSON document of about `n` bytes, compressible as APIs' are.
fn json(n: usize) -> Bytes {
    let mut text = String::from("[");
    let mut i = 0;
    while text.len() < n {
        text.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item {i}\",\"tags\":[\"a\",\"b\"],\"price\":{}.{}}},",
            i * 7 % 1000,
            i % 100
        ));
        i += 1;
    }
    text.push_str("{}]");
    Bytes::from(text)
}

fn chunked(body: Bytes, size: usize) -> TestBody {
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> =
        body.chunks(size).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed()
}

/// The origin: a large JSON document in 8 KiB chunks and the cases left alone.
async fn origin(release: Arc<Notify>) -> Upstream {
    Upstream::start(move |request: Request<hyper::body::Incoming>| {
        let release = Arc::clone(&release);
        async move {
            let path = request.uri().path().to_string();
            let typed = |body: TestBody, content_type: &str| {
                let mut response = Response::new(body);
                response.headers_mut().insert("content-type", content_type.parse().expect("type"));
                response
            };
            match path.as_str() {
                "/big" | "/cached/doc" => {
                    let mut response = typed(chunked(json(256 * 1024), 8192), "application/json; charset=utf-8");
                    if path == "/cached/doc" {
                        response.headers_mut().insert("cache-control", "max-age=60".parse().expect("cc"));
                        response.headers_mut().insert("etag", "\"v1\"".parse().expect("etag"));
                    }
                    response
                }
                "/small" => typed(full(json(300)), "application/json"),
                "/png" => typed(full(vec![7u8; 8192]), "image/png"),
                "/encoded" => {
                    let mut response = typed(full(vec![1u8; 8192]), "application/json");
                    response.headers_mut().insert("content-encoding", "gzip".parse().expect("ce"));
                    response
                }
                "/no-transform" => {
                    let mut response = typed(full(json(8192)), "application/json");
                    response.headers_mut().insert("cache-control", "no-transform".parse().expect("cc"));
                    response
                }
                "/range" => {
                    let mut response = typed(full(json(8192)), "application/json");
                    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                    response.headers_mut().insert("content-range", "bytes 0-8191/100000".parse().expect("cr"));
                    response
                }
                "/stream" => {
                    // The first part at once; the rest only when the test says so.
                    let stream = futures_util::stream::unfold(0, move |step| {
                        let release = Arc::clone(&release);
                        async move {
                            match step {
                                0 => Some((Ok::<_, Infallible>(Frame::data(json(8192))), 1)),
                                1 => {
                                    release.notified().await;
                                    Some((Ok(Frame::data(Bytes::from_static(b"THE END"))), 2))
                                }
                                _ => None,
                            }
                        }
                    });
                    typed(http_body_util::StreamBody::new(stream).boxed(), "text/event-stream")
                }
                _ => typed(full(json(4096)), "text/html"),
            }
        }
    })
    .await
}

fn config(origin: &Upstream) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[cache]\nmemory = \"64MiB\"\n\
         [[route]]\npath_prefix = \"/cached/\"\nupstream = \"api\"\ncache = true\n[route.compression]\n\
         [[route]]\nupstream = \"api\"\n[route.compression]\ntypes = [\"application/json\", \"text/*\"]\nmin_size = \"1KiB\"\n\
         [upstream.api]\nendpoints = [\"{}\"]\n",
        origin.addr
    )
}

async fn get1(sluice: &Sluice, method: &str, path: &str, accept: Option<&str>) -> (http::response::Parts, Bytes) {
    let mut conn = client::h1(sluice.addr).await;
    let mut request = Request::builder().method(method).uri(path).header("host", "api.test");
    if let Some(accept) = accept {
        request = request.header("accept-encoding", accept);
    }
    send1(&mut conn, request.body(full("")).expect("request")).await
}

/// `bytes` decoded by Python's decoder for `coding`.
fn python_decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let script = match coding {
        "zstd" => "import sys, zstandard; sys.stdout.buffer.write(zstandard.ZstdDecompressor().decompressobj().decompress(sys.stdin.buffer.read()))",
        "br" => "import sys, brotli; sys.stdout.buffer.write(brotli.decompress(sys.stdin.buffer.read()))",
        _ => "import sys, gzip; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
    };
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().expect("python3");
    writer.join().expect("writer").expect("write");
    assert!(out.status.success(), "python could not decode {coding}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_coding_is_chosen_by_the_client_and_decodes_to_the_original() {
    let origin = origin(Arc::new(Notify::new())).await;
    let sluice = Sluice::start(&config(&origin));
    let original = json(256 * 1024);
    for (accept, coding) in [
        ("gzip, deflate, br, zstd", "zstd"),
        ("br", "br"),
        ("gzip", "gzip"),
        ("gzip;q=1.0, br;q=0.5, zstd;q=0.1", "gzip"),
        ("*;q=0.5, zstd;q=0", "br"),
    ] {
        let (parts, body) = get1(&sluice, "GET", "/big", Some(accept)).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(field(&parts, "content-encoding"), coding, "for {accept}");
        assert_eq!(field(&parts, "vary"), "Accept-Encoding");
        assert!(parts.headers.get("content-length").is_none(), "a length of the uncompressed body");
        assert!(body.len() < original.len() / 4, "{coding}: {} of {} bytes", body.len(), original.len());
        assert_eq!(python_decode(coding, &body), original, "{coding} for {accept}");
    }
    // curl --compressed, as a user would run it, for each coding curl decodes.
    for coding in ["zstd", "br", "gzip"] {
        let out = Command::new("curl")
            .args(["-s", "--compressed", "-H", &format!("Accept-Encoding: {coding}"), "-D", "-"])
            .arg(format!("http://{}/big", sluice.addr))
            .output()
            .expect("curl");
        let text = out.stdout;
        let split = text.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        let head = String::from_utf8_lossy(&text[..split]).to_ascii_lowercase();
        assert!(head.contains(&format!("content-encoding: {coding}")), "{head}");
        assert_eq!(&text[split..], &original[..], "curl's {coding}");
    }
    // HTTP/2.
    let mut h2 = client::h2(sluice.addr).await;
    let request = Request::get("http://api.test/big").header("accept-encoding", "br, gzip").body(full("")).expect("r");
    let (parts, body) = send2(&mut h2, request).await;
    assert_eq!(field(&parts, "content-encoding"), "br");
    assert_eq!(python_decode("br", &body), original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_must_not_or_need_not_be_compressed_pass_as_they_are() {
    let origin = origin(Arc::new(Notify::new())).await;
    let sluice = Sluice::start(&config(&origin));
    // No Accept-Encoding, or only identity: as sent, but still Vary.
    for accept in [None, Some("identity"), Some("gzip;q=0")] {
        let (parts, body) = get1(&sluice, "GET", "/big", accept).await;
        assert!(parts.headers.get("content-encoding").is_none(), "{accept:?}");
        assert_eq!(field(&parts, "vary"), "Accept-Encoding");
        assert_eq!(body, json(256 * 1024));
    }
    let (parts, body) = get1(&sluice, "GET", "/small", Some("gzip")).await;
    assert!(parts.headers.get("content-encoding").is_none(), "under min_size");
    assert_eq!(body, json(300));
    let (parts, _) = get1(&sluice, "GET", "/png", Some("gzip")).await;
    assert!(
        parts.headers.get("content-encoding").is_none() && parts.headers.get("vary").is_none(),
        "not a listed type"
    );
    let (parts, body) = get1(&sluice, "GET", "/encoded", Some("zstd")).await;
    assert_eq!((field(&parts, "content-encoding"), body.len()), ("gzip", 8192), "encoded twice");
    let (parts, body) = get1(&sluice, "GET", "/no-transform", Some("gzip")).await;
    assert!(parts.headers.get("content-encoding").is_none());
    assert_eq!(body, json(8192));
    let (parts, _) = get1(&sluice, "GET", "/range", Some("gzip")).await;
    assert_eq!(parts.status, StatusCode::PARTIAL_CONTENT);
    assert!(parts.headers.get("content-encoding").is_none(), "a range compressed");
    let (parts, body) = get1(&sluice, "HEAD", "/big", Some("gzip")).await;
    assert!(parts.headers.get("content-encoding").is_none() && body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_compressed_as_it_comes_not_held_until_its_end() {
    let release = Arc::new(Notify::new());
    let origin = origin(Arc::clone(&release)).await;
    let sluice = Sluice::start(&config(&origin));
    for http2 in [false, true] {
        let request =
            Request::get("http://api.test/stream").header("accept-encoding", "gzip").body(full("")).expect("r");
        let response = match http2 {
            false => {
                let mut conn = client::h1(sluice.addr).await;
                let response = conn.send_request(request).await.expect("response");
                tokio::spawn(async move { drop(conn) });
                response
            }
            true => client::send_head2(&mut client::h2(sluice.addr).await, request).await,
        };
        assert_eq!(field_of(&response, "content-encoding"), "gzip");
        let mut body = response.into_body();
        // The upstream holds the rest: what came so far must decode to the first part.
        let mut got = Vec::new();
        let first = json(8192);
        while python_gzip_prefix(&got).len() < first.len() {
            let frame = tokio::time::timeout(support::WAIT, body.frame()).await.expect("a frame before the end");
            got.extend_from_slice(&frame.expect("frame").expect("data").into_data().expect("data"));
        }
        assert_eq!(python_gzip_prefix(&got), first);
        release.notify_one();
        while let Some(frame) = body.frame().await {
            got.extend_from_slice(&frame.expect("frame").into_data().unwrap_or_default());
        }
        let mut whole = first.to_vec();
        whole.extend_from_slice(b"THE END");
        assert_eq!(python_decode("gzip", &got), whole);
    }
}

fn field_of<'a, B>(response: &'a Response<B>, name: &str) -> &'a str {
    response.headers().get(name).map_or("", |v| v.to_str().unwrap_or(""))
}

/// What a gzip stream cut short decodes to so far.
fn python_gzip_prefix(bytes: &[u8]) -> Vec<u8> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let script = "import sys, zlib; d = zlib.decompressobj(16 + zlib.MAX_WBITS); sys.stdout.buffer.write(d.decompress(sys.stdin.buffer.read()))";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, bytes).expect("write");
    drop(stdin);
    child.wait_with_output().expect("python3").stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_one_identity_copy_and_compresses_each_hit_for_its_client() {
    let origin = origin(Arc::new(Notify::new())).await;
    let sluice = Sluice::start(&config(&origin));
    let original = json(256 * 1024);
    let (miss, body) = get1(&sluice, "GET", "/cached/doc", Some("zstd")).await;
    assert_eq!(field(&miss, "content-encoding"), "zstd");
    assert_eq!(field(&miss, "etag"), "W/\"v1\"", "a strong validator on compressed bytes");
    assert_eq!(python_decode("zstd", &body), original);
    let accepted = origin.accepted();
    let (hit, body) = get1(&sluice, "GET", "/cached/doc", None).await;
    assert!(field(&hit, "cache-status").contains("hit"), "{:?}", hit.headers);
    assert!(hit.headers.get("content-encoding").is_none());
    assert_eq!((field(&hit, "etag"), body), ("\"v1\"", original.clone()));
    let (hit, body) = get1(&sluice, "GET", "/cached/doc", Some("gzip")).await;
    assert!(field(&hit, "cache-status").contains("hit"));
    assert_eq!(field(&hit, "content-encoding"), "gzip");
    assert_eq!(python_decode("gzip", &body), original);
    let mut h2 = client::h2(sluice.addr).await;
    let request = Request::get("http://api.test/cached/doc").header("accept-encoding", "br").body(full("")).expect("r");
    let (hit, body) = send2(&mut h2, request).await;
    assert_eq!(field(&hit, "content-encoding"), "br");
    assert_eq!(python_decode("br", &body), original);
    assert_eq!(origin.accepted(), accepted, "a hit went to the origin");
}
