//! Opening a connection: TCP (no Nagle), then TLS with ALPN when the URL is https.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::failure::Failure;
use crate::plan::Origin;

/// A connection to an origin, cleartext or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects to `origin`; `turn` picks among its addresses so connections spread over them.
pub async fn connect(origin: &Origin, tls: Option<&Arc<ClientConfig>>, turn: usize) -> Result<Stream, Failure> {
    if origin.addrs.is_empty() {
        crate::failure::note(
            Failure::Dns,
            &format!("{}: {}", origin.host, origin.dns_error.as_deref().unwrap_or("no addresses")),
        );
        return Err(Failure::Dns);
    }
    let addr = origin.addrs[turn % origin.addrs.len()];
    let tcp = TcpStream::connect(addr).await.map_err(|e| Failure::from_io(&e))?;
    // Requests are written whole; Nagle would only delay the next one.
    tcp.set_nodelay(true).map_err(|e| Failure::from_io(&e))?;
    if !origin.tls {
        return Ok(Stream::Plain(tcp));
    }
    let config = tls.ok_or(Failure::Tls)?;
    let name = ServerName::try_from(origin.host.clone()).map_err(|_| Failure::Tls)?;
    let stream =
        TlsConnector::from(Arc::clone(config)).connect(name, tcp).await.map_err(|e| match Failure::from_io(&e) {
            Failure::Protocol | Failure::Io => {
                crate::failure::note(Failure::Tls, &e);
                Failure::Tls
            }
            other => other,
        })?;
    let wants_h2 = config.alpn_protocols.iter().any(|p| p == b"h2");
    if wants_h2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        // --http2 over TLS needs the server to agree on h2.
        crate::failure::note(Failure::Tls, &"the server did not agree to HTTP/2 by ALPN");
        return Err(Failure::Tls);
    }
    Ok(Stream::Tls(Box::new(stream)))
}

/// The client TLS settings: system roots, a PEM file of roots, or no verification.
pub fn tls_config(insecure: bool, cacert: Option<&Path>, http2: bool) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS setup")?;
    let mut config = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider))).with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match cacert {
            Some(path) => {
                for cert in CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("cannot read --cacert {}", path.display()))?
                {
                    let cert = cert.with_context(|| format!("--cacert {}: not a PEM certificate", path.display()))?;
                    roots.add(cert).with_context(|| format!("--cacert {}: unusable certificate", path.display()))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A system certificate rustls cannot use is skipped, as browsers do.
                    let _ = roots.add(cert);
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![if http2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    Ok(Arc::new(config))
}

/// `--insecure`: accepts any certificate (signatures are still checked for form).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
