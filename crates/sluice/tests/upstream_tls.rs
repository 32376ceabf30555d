//! TLS on both sides: sluice reaching HTTPS upstreams (SNI, a CA file, mutual TLS,
//! ALPN h2 and http/1.1, clear certificate errors), and a TLS listener with several
//! certificates chosen by the client's SNI name.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use support::client::{self, get, send1};
use support::upstream::full;
use support::{Sluice, TempDir};

/// A CA and certificates it signs, written as PEM files into a folder.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "sluice test CA");
        let ca = params.self_signed(&ca_key).expect("CA");
        let dir = TempDir::new();
        std::fs::write(dir.path.join("ca.pem"), ca.pem()).expect("write");
        Pki { ca, ca_key, dir }
    }

    /// A leaf for `names`, written as `<file>.pem` and `<file>.key`.
    fn leaf(&self, names: &[&str], file: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).expect("leaf");
        std::fs::write(self.dir.path.join(format!("{file}.pem")), cert.pem()).expect("write");
        std::fs::write(self.dir.path.join(format!("{file}.key")), key.serialize_pem()).expect("write");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone(), self.ca.der().clone()], der)
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("root");
        roots
    }

    fn path(&self, file: &str) -> String {
        self.dir.path.join(file).display().to_string()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An HTTPS upstream that answers with what it saw of the TLS session:
/// `sni=<name> alpn=<protocol> client_cert=<yes|no> version=<HTTP version> scheme=<:scheme or ->`.
async fn https_upstream(pki: &Pki, require_client_cert: bool, alpn: &[&[u8]]) -> SocketAddr {
    let (chain, key) = pki.leaf(&["api.internal.test", "127.0.0.1"], "upstream");
    let builder =
        rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().expect("v");
    let builder = if require_client_cert {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(pki.roots()), provider())
            .build()
            .expect("verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key).expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let session = tls.get_ref().1;
                let seen = format!(
                    "sni={} alpn={} client_cert={}",
                    session.server_name().unwrap_or("-"),
                    session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or("-".into()),
                    if session.peer_certificates().is_some_and(|c| !c.is_empty()) { "yes" } else { "no" },
                );
                let service = service_fn(move |req: Request<Incoming>| {
                    let scheme = req.uri().scheme_str().unwrap_or("-");
                    let body = format!("{seen} version={:?} scheme={scheme}", req.version());
                    async move { Ok::<_, Infallible>(Response::new(full(body))) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    addr
}

fn upstream_config(addr: SocketAddr, protocol: &str, tls: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\nupstream = \"up\"\n\n[upstream.up]\nendpoints = [\"{addr}\"]\nprotocol = \"{protocol}\"\ntls = {{ {tls} }}\n"
    )
}

async fn fetch(sluice: &Sluice) -> (u16, String) {
    let mut conn = client::h1(sluice.addr).await;
    let (parts, body) = send1(&mut conn, get("/")).await;
    (parts.status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstreams_get_sni_a_trusted_ca_and_alpn() {
    let pki = Pki::new();
    let upstream = https_upstream(&pki, false, &[b"h2", b"http/1.1"]).await;
    let tls = format!("server_name = \"api.internal.test\", ca_file = \"{}\"", pki.path("ca.pem"));
    // Over HTTP/2 the request says `:scheme https` (it said http before).
    for (protocol, alpn, version, scheme) in
        [("http1", "http/1.1", "HTTP/1.1", "-"), ("http2", "h2", "HTTP/2.0", "https")]
    {
        let sluice = Sluice::start(&upstream_config(upstream, protocol, &tls));
        let (status, seen) = fetch(&sluice).await;
        assert_eq!(status, 200, "{seen}");
        assert_eq!(seen, format!("sni=api.internal.test alpn={alpn} client_cert=no version={version} scheme={scheme}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = Pki::new();
    let upstream = https_upstream(&pki, true, &[b"http/1.1"]).await;
    pki.leaf(&["sluice.client.test"], "client");
    let without = format!("server_name = \"api.internal.test\", ca_file = \"{}\"", pki.path("ca.pem"));
    let sluice = Sluice::start(&upstream_config(upstream, "http1", &without));
    assert_eq!(fetch(&sluice).await.0, 502, "the upstream refuses a client without a certificate");
    let with = format!("{without}, certificate = \"{}\", key = \"{}\"", pki.path("client.pem"), pki.path("client.key"));
    let sluice = Sluice::start(&upstream_config(upstream, "http1", &with));
    let (status, seen) = fetch(&sluice).await;
    assert_eq!((status, seen.contains("client_cert=yes")), (200, true), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_or_misnamed_certificate_is_a_502_with_a_clear_log_line() {
    let pki = Pki::new();
    let upstream = https_upstream(&pki, false, &[b"http/1.1"]).await;
    // The system roots do not know the test CA.
    let sluice = Sluice::start(&upstream_config(upstream, "http1", "server_name = \"api.internal.test\""));
    let (status, body) = fetch(&sluice).await;
    assert_eq!(status, 502);
    assert!(body.contains("TLS handshake with the upstream failed"), "{body}");
    assert!(!body.contains(&upstream.to_string()), "no internal address in the body: {body}");
    sluice.wait_for_log("certificate was refused: UnknownIssuer");
    // Trusted CA, wrong name.
    let tls = format!("server_name = \"other.test\", ca_file = \"{}\"", pki.path("ca.pem"));
    let sluice = Sluice::start(&upstream_config(upstream, "http1", &tls));
    assert_eq!(fetch(&sluice).await.0, 502);
    sluice.wait_for_log("certificate was refused: NotValidForName");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_group_whose_upstream_offers_only_http1_says_so() {
    let pki = Pki::new();
    let upstream = https_upstream(&pki, false, &[b"http/1.1"]).await;
    let tls = format!("server_name = \"api.internal.test\", ca_file = \"{}\"", pki.path("ca.pem"));
    let sluice = Sluice::start(&upstream_config(upstream, "http2", &tls));
    assert_eq!(fetch(&sluice).await.0, 502);
    // rustls servers refuse the handshake (no_application_protocol); servers without
    // ALPN finish it, and sluice checks what was agreed: either way the log says ALPN.
    sluice.wait_for_log("the upstream accepts none of the protocols offered by ALPN");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_listener_picks_its_certificate_by_sni() {
    let pki = Pki::new();
    pki.leaf(&["a.example.test"], "a");
    pki.leaf(&["*.b.example.test"], "b");
    let upstream = support::upstream::Upstream::hello().await;
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = {{ certificates = [{{ certificate = \"a.pem\", key = \"a.key\" }}, {{ certificate = \"b.pem\", key = \"b.key\" }}] }}\n\n[[route]]\nupstream = \"up\"\n\n[upstream.up]\nendpoints = [\"{}\"]\n",
        upstream.addr
    );
    let path = pki.dir.path.join("sluice.toml");
    std::fs::write(&path, config).expect("write");
    let sluice = Sluice::start_file(TempDir::new(), &path, None);
    for (name, expect) in [
        ("a.example.test", "a.example.test"),
        ("x.b.example.test", "*.b.example.test"),
        ("unknown.test", "a.example.test"),
    ] {
        let presented = leaf_names(sluice.addr, name, &pki).await;
        assert!(presented.iter().any(|n| n == expect), "{name}: {presented:?}");
    }
}

/// The DNS names of the certificate the server presents for SNI `name` (no verification).
async fn leaf_names(addr: SocketAddr, name: &str, pki: &Pki) -> Vec<String> {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let _ = pki;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("v")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_string()).expect("name"), tcp)
        .await
        .expect("handshake");
    let leaf = tls.get_ref().1.peer_certificates().expect("certificates")[0].clone();
    // The names are in the certificate as plain ASCII: find the candidates in the DER.
    let text = String::from_utf8_lossy(leaf.as_ref()).into_owned();
    ["a.example.test", "*.b.example.test"].iter().filter(|n| text.contains(*n)).map(|n| n.to_string()).collect()
}

/// A development upstream as `openssl req -x509` makes one: a self-signed certificate
/// with CA:TRUE, for 127.0.0.1, written to `dev.pem`.
async fn self_signed_upstream(dir: &TempDir) -> SocketAddr {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-signed");
    std::fs::write(dir.path.join("dev.pem"), cert.pem()).expect("write");
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service =
                    service_fn(|_: Request<Incoming>| async { Ok::<_, Infallible>(Response::new(full("dev"))) });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_self_signed_development_certificate_is_explained_and_can_be_pinned() {
    let dir = TempDir::new();
    let upstream = self_signed_upstream(&dir).await;
    let dev = dir.path.join("dev.pem");
    // Given as the CA, as curl and nginx would take it: refused by rustls, and the log
    // line says what it is and the two ways out.
    let sluice = Sluice::start(&upstream_config(upstream, "http1", &format!("ca_file = \"{}\"", dev.display())));
    assert_eq!(fetch(&sluice).await.0, 502);
    let line = sluice.wait_for_log("is a CA certificate");
    assert!(line.contains("make a leaf certificate") && line.contains("pin_sha256"), "{line}");
    // Pinned by the fingerprint openssl prints: accepted.
    let output = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&dev)
        .output()
        .expect("openssl");
    let printed = String::from_utf8_lossy(&output.stdout);
    let fingerprint = printed.trim().rsplit('=').next().expect("fingerprint").to_string();
    let pinned = Sluice::start(&upstream_config(upstream, "http1", &format!("pin_sha256 = [\"{fingerprint}\"]")));
    assert_eq!(fetch(&pinned).await, (200, "dev".to_string()));
    // Another certificate's pin: refused, and said so.
    let other = "00".repeat(32);
    let wrong = Sluice::start(&upstream_config(upstream, "http1", &format!("pin_sha256 = [\"{other}\"]")));
    assert_eq!(fetch(&wrong).await.0, 502);
    wrong.wait_for_log("not one of tls.pin_sha256");
}
