//! TLS for listeners: PEM files → a rustls acceptor offering h2 and http/1.1 by ALPN.
//! With several certificates, the client's SNI name picks the first whose certificate
//! is valid for it (as webpki checks a name: SAN entries, wildcards); a client with no
//! name, or one no certificate covers, gets the first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sluice_config::{CertificateFiles, ListenerProtocol, TlsFiles};
use tokio_rustls::TlsAcceptor;

use super::ServerError;

/// Names remembered per listener at most, so random SNI names cannot grow memory.
const MAX_REMEMBERED_NAMES: usize = 1024;

/// Loads every certificate chain and key and builds the acceptor.
pub(crate) fn acceptor(files: &TlsFiles, protocol: ListenerProtocol) -> Result<TlsAcceptor, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates =
        files.certificates.iter().map(|pair| load(pair, &provider)).collect::<Result<Vec<_>, ServerError>>()?;
    let resolver = BySni { certificates, chosen: Mutex::new(HashMap::new()) };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = match protocol {
        ListenerProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        ListenerProtocol::Http1 => vec![b"http/1.1".to_vec()],
        ListenerProtocol::Http2 => vec![b"h2".to_vec()],
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load(files: &CertificateFiles, provider: &rustls::crypto::CryptoProvider) -> Result<Arc<CertifiedKey>, ServerError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.certificate)
        .and_then(|iter| iter.collect())
        .map_err(|e| tls_error(&files.certificate, e))?;
    if certs.is_empty() {
        return Err(tls_error(&files.certificate, "no CERTIFICATE block found"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| tls_error(&files.key, e))?;
    let certified = CertifiedKey::from_der(certs, key, provider).map_err(|e| tls_error(&files.certificate, e))?;
    Ok(Arc::new(certified))
}

fn tls_error(path: &Path, cause: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(format!("{}: {cause}", path.display()))
}

/// Chooses a certificate by the client's SNI name.
#[derive(Debug)]
struct BySni {
    certificates: Vec<Arc<CertifiedKey>>,
    /// Name → index of the certificate chosen for it.
    chosen: Mutex<HashMap<String, usize>>,
}

impl BySni {
    fn choose(&self, name: &str) -> usize {
        let mut chosen = self.chosen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(&index) = chosen.get(name) {
            return index;
        }
        let index = ServerName::try_from(name)
            .ok()
            .and_then(|server_name| {
                self.certificates.iter().position(|certified| {
                    let Some(leaf) = certified.cert.first() else { return false };
                    webpki::EndEntityCert::try_from(leaf)
                        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&server_name).is_ok())
                })
            })
            .unwrap_or(0);
        if chosen.len() < MAX_REMEMBERED_NAMES {
            chosen.insert(name.to_string(), index);
        }
        index
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let index = match (hello.server_name(), self.certificates.len()) {
            (Some(name), n) if n > 1 => self.choose(name),
            _ => 0,
        };
        self.certificates.get(index).cloned()
    }
}
