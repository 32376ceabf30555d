//! TLS for listeners: PEM files → a rustls acceptor offering h2 and http/1.1 by ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice_config::{ListenerProtocol, TlsFiles};
use tokio_rustls::TlsAcceptor;

use super::ServerError;

/// Loads the certificate chain and key and builds the acceptor.
pub(crate) fn acceptor(files: &TlsFiles, protocol: ListenerProtocol) -> Result<TlsAcceptor, ServerError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.certificate)
        .and_then(|iter| iter.collect())
        .map_err(|e| tls_error(&files.certificate, e))?;
    if certs.is_empty() {
        return Err(tls_error(&files.certificate, "no CERTIFICATE block found"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| tls_error(&files.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| tls_error(&files.certificate, e))?;
    config.alpn_protocols = match protocol {
        ListenerProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        ListenerProtocol::Http1 => vec![b"http/1.1".to_vec()],
        ListenerProtocol::Http2 => vec![b"h2".to_vec()],
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn tls_error(path: &Path, cause: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(format!("{}: {cause}", path.display()))
}
