//! TLS to upstreams: a rustls client config per group (system roots, a CA file, or
//! pinned certificates; an optional client certificate for mTLS; ALPN for the group's
//! protocol) and the handshake, whose failures say what was wrong with the certificate
//! and what to do about it.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sluice_config::{Endpoint, UpstreamProtocol, UpstreamTls};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// What a group's connections need for TLS.
#[derive(Clone)]
pub(crate) struct UpstreamTlsConfig {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// HTTP/2 groups need the upstream to agree to h2 by ALPN.
    needs_h2: bool,
}

impl UpstreamTlsConfig {
    /// Builds the client config; an error names the file or setting at fault.
    pub(crate) fn new(tls: &UpstreamTls, protocol: UpstreamProtocol) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match tls.pin_sha256.is_empty() {
            true => versions.with_root_certificates(roots(tls)?),
            false => versions.dangerous().with_custom_certificate_verifier(Arc::new(super::pinned::Pinned::new(
                tls.pin_sha256.clone(),
                provider.signature_verification_algorithms,
            ))),
        };
        let mut config = match &tls.client_certificate {
            Some(files) => {
                let chain = CertificateDer::pem_file_iter(&files.certificate)
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("{}: {e}", files.certificate.display()))?;
                let key =
                    PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("{}: {e}", files.key.display()))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = match protocol {
            UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
            UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        };
        let server_name = match &tls.server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| format!("server_name {name}: {e}"))?),
            None => None,
        };
        let needs_h2 = protocol == UpstreamProtocol::Http2;
        Ok(UpstreamTlsConfig { connector: TlsConnector::from(Arc::new(config)), server_name, needs_h2 })
    }

    /// The TLS handshake on a connected socket; SNI is the configured server_name or
    /// the endpoint's host.
    pub(crate) async fn handshake(&self, endpoint: &Endpoint, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(endpoint.host.clone())
                .map_err(|e| format!("endpoint host {} cannot be a TLS server name: {e}", endpoint.host))?,
        };
        let stream = self.connector.connect(name, tcp).await.map_err(|e| describe(&e))?;
        if self.needs_h2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(
                "the upstream did not agree to HTTP/2 (ALPN h2); set protocol = \"http1\" for this group".into()
            );
        }
        Ok(stream)
    }
}

/// The CA certificates a group trusts: its `ca_file`, or the system's roots.
fn roots(tls: &UpstreamTls) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{}: no usable CA certificate", path.display()));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err("no system CA certificates found (install ca-certificates, or set tls.ca_file)".into());
            }
        }
    }
    Ok(roots)
}

/// A handshake error in words an operator can act on (rustls's certificate errors
/// are precise: expired, unknown issuer, name mismatch).
fn describe(error: &std::io::Error) -> String {
    match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(why)) if format!("{why:?}").contains("CaUsedAsEndEntity") => {
            "the upstream's certificate was refused: it is a CA certificate (CA:TRUE, as `openssl req -x509` makes) used as the server's own; make a leaf certificate signed by that CA for the server, or accept exactly this certificate with tls.pin_sha256 = [\"<openssl x509 -noout -fingerprint -sha256>\"] (and no ca_file)".to_string()
        }
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)) => {
            "the upstream's certificate is not one of tls.pin_sha256 (compare with `openssl x509 -noout -fingerprint -sha256`)".to_string()
        }
        Some(rustls::Error::InvalidCertificate(why)) => format!("the upstream's certificate was refused: {why:?}"),
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)) => {
            "the upstream accepts none of the protocols offered by ALPN (h2 for protocol = \"http2\", http/1.1 for \"http1\"); set the group's protocol to what it speaks".to_string()
        }
        Some(other) => format!("TLS error: {other}"),
        None => format!("TLS handshake failed: {error}"),
    }
}
