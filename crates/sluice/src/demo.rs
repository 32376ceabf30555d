//! `sluice demo`: three small JSON API servers on loopback and sluice in front of them,
//! so a new user sees balancing, pooling, the cache, the error pages and the live status
//! page with nothing installed.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The demo gateway's config: the upstream ports are filled in at start.
fn demo_config(listen: SocketAddr, upstreams: &[SocketAddr]) -> String {
    let endpoints: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"[server]
keepalive_timeout = "60s"

[[listener]]
address = "{listen}"

[[route]]
path_prefix = "/api/catalog"
upstream = "demo"
cache = true

[[route]]
path_prefix = "/api"
upstream = "demo"
timeout = "5s"

[upstream.demo]
endpoints = [{}]
pool = {{ max_connections = 64, min_idle = 1 }}

[cache]
memory = "64MiB"

[admin]
address = "127.0.0.1:0"
"#,
        endpoints.join(", ")
    )
}

/// Starts the demo servers and sluice; runs until Ctrl-C.
pub fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut upstreams = Vec::new();
        for n in 1..=3 {
            upstreams.push(spawn_demo_api(n).await?);
        }
        let text = demo_config(listen, &upstreams);
        let config = sluice_config::parse(&text, std::path::Path::new("<demo>"))?;
        crate::serve::serve(config, None, |addrs, admin| {
            let base = addrs.first().map(|a| format!("http://{a}")).unwrap_or_default();
            println!("\nsluice demo: three API servers on {upstreams:?}, sluice in front on {base}");
            println!("try:");
            println!(
                "  curl -i {base}/api/hello          # spread over the three servers (least outstanding requests)"
            );
            println!("  curl -i --http2-prior-knowledge {base}/api/h2   # HTTP/2 cleartext to sluice");
            println!("  curl -i -d 'ping' {base}/api/echo # request body streamed through");
            println!("  curl -i {base}/api/catalog        # cached for 10 s: see Cache-Status and Age");
            println!("  curl -i {base}/nowhere            # no route: 404 from sluice");
            if let Some(admin) = admin {
                println!("live status page: http://{admin}/   (metrics: http://{admin}/metrics)");
            }
            println!("Ctrl-C drains and stops.\n");
        })
        .await
    })
}

/// One demo API server: `GET` answers JSON naming the server, `/api/echo` echoes the body.
async fn spawn_demo_api(n: usize) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service_fn(move |req: Request<Incoming>| answer(n, req));
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
        }
    });
    Ok(addr)
}

async fn answer(n: usize, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().to_string();
    let forwarded_for = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if path == "/api/echo" {
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Ok(Response::new(Full::new(body)));
    }
    let json = format!(
        "{{\"server\":\"demo-{n}\",\"method\":\"{method}\",\"path\":{path:?},\"x_forwarded_for\":{forwarded_for:?},\"x_request_id\":{request_id:?}}}\n"
    );
    let mut response = Response::new(Full::new(Bytes::from(json)));
    response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    if path.starts_with("/api/catalog") {
        response.headers_mut().insert("cache-control", http::HeaderValue::from_static("max-age=10"));
    }
    Ok(response)
}
