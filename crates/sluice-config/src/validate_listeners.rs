//! `[[listener]]` and `[admin]`: addresses (one socket per address, the admin listener
//! apart), TLS certificate files read as the server will read them.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;

use crate::defaults;
use crate::file::{FileCertificate, FileListener};
use crate::model::*;
use crate::validate::*;

/// `[admin]`: its address (loopback by default) and optional bearer token.
pub(crate) fn check_admin(checker: &mut Checker, admin: &crate::file::FileAdmin) -> Option<AdminConfig> {
    let address = match &admin.address {
        None => SocketAddr::from(([127, 0, 0, 1], 9901)),
        Some(text) => match text.get_ref().parse::<SocketAddr>() {
            Ok(address) => address,
            Err(_) => {
                checker.problem(
                    text.span(),
                    "admin.address",
                    format!("\"{}\" is not an IP address with a port; write e.g. \"127.0.0.1:9901\"", text.get_ref()),
                );
                return None;
            }
        },
    };
    let token = match &admin.token {
        Some(token) if token.get_ref().len() < 16 || token.get_ref().chars().any(|c| c.is_whitespace()) => {
            checker.problem(
                token.span(),
                "admin.token",
                "must be at least 16 characters without spaces; e.g. the output of `openssl rand -hex 16`",
            );
            return None;
        }
        Some(token) => Some(token.get_ref().clone()),
        None => None,
    };
    Some(AdminConfig { address, token })
}

/// Two listeners on one address cannot both bind; say so before trying.
pub(crate) fn check_duplicate_addresses(checker: &mut Checker, files: &[FileListener], listeners: &[ListenerConfig]) {
    for (i, listener) in listeners.iter().enumerate() {
        // Port 0 asks the system for a free port: each such listener gets its own.
        if listener.address.port() != 0 && listeners[..i].iter().any(|l| l.address == listener.address) {
            if let Some(file) = files.iter().filter(|f| f.address.get_ref().parse() == Ok(listener.address)).nth(1) {
                checker.problem(
                    file.address.span(),
                    "listener.address",
                    format!(
                        "{} is already used by an earlier [[listener]]; give each listener its own address",
                        listener.address
                    ),
                );
            }
        }
    }
}

/// Two sockets on one port, one on a wildcard address (0.0.0.0, ::) and one on a
/// specific address: `run` binds both (SO_REUSEPORT), and the specific one takes its
/// address's connections while the wildcard takes the rest: rarely what was meant.
pub(crate) fn overlapping_listeners(listeners: &[ListenerConfig]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (i, a) in listeners.iter().enumerate() {
        for (j, b) in listeners.iter().enumerate().skip(i + 1) {
            let same_port = a.address.port() == b.address.port() && a.address.port() != 0;
            let family = a.address.is_ipv4() == b.address.is_ipv4();
            let one_wildcard = a.address.ip().is_unspecified() != b.address.ip().is_unspecified();
            if same_port && family && one_wildcard {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// The admin listener cannot share a proxy listener's address (or its port with a
/// wildcard on either side): `run` would fail to bind it.
pub(crate) fn check_admin_apart(
    checker: &mut Checker,
    admin: &AdminConfig,
    file: &crate::file::FileAdmin,
    listeners: &[ListenerConfig],
) {
    let clash = listeners.iter().enumerate().find(|(_, l)| {
        l.address.port() == admin.address.port()
            && admin.address.port() != 0
            && (l.address.ip() == admin.address.ip()
                || l.address.ip().is_unspecified()
                || admin.address.ip().is_unspecified())
    });
    if let (Some((i, listener)), Some(address)) = (clash, &file.address) {
        checker.problem(
            address.span(),
            "admin.address",
            format!(
                "{} is also listener[{i}]'s address ({}); give the admin listener a port of its own, e.g. \"127.0.0.1:9901\"",
                admin.address, listener.address
            ),
        );
    }
}

pub(crate) fn check_listener(
    checker: &mut Checker,
    index: usize,
    listener: &FileListener,
    base_dir: &Path,
) -> Option<ListenerConfig> {
    let key = format!("listener[{index}]");
    let address = match listener.address.get_ref().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            checker.problem(
                listener.address.span(),
                format!("{key}.address"),
                format!(
                    "\"{}\" is not an IP address with a port; write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
                    listener.address.get_ref()
                ),
            );
            None
        }
    };
    let protocol = choice(
        checker,
        &listener.protocol,
        &format!("{key}.protocol"),
        &[("auto", ListenerProtocol::Auto), ("http1", ListenerProtocol::Http1), ("http2", ListenerProtocol::Http2)],
    );
    let backlog = match &listener.backlog {
        Some(b) if *b.get_ref() == 0 => {
            checker.problem(b.span(), format!("{key}.backlog"), "must be at least 1; the default is 4096");
            None
        }
        Some(b) => Some(*b.get_ref()),
        None => Some(defaults::BACKLOG),
    };
    let tls = match &listener.tls {
        None => Some(None),
        Some(tls) => check_listener_tls(checker, &key, tls, listener.address.span(), base_dir).map(Some),
    };
    Some(ListenerConfig {
        address: address?,
        protocol: protocol?,
        reuse_port: listener.reuse_port,
        backlog: backlog?,
        tls: tls?,
    })
}

/// A TLS listener's certificates: `certificate` + `key`, or a `certificates` list.
pub(crate) fn check_listener_tls(
    checker: &mut Checker,
    key: &str,
    tls: &crate::file::FileTls,
    span: Range<usize>,
    base_dir: &Path,
) -> Option<TlsFiles> {
    let mut certificates = Vec::new();
    if let (Some(certificate), Some(pem_key)) = (&tls.certificate, &tls.key) {
        let pair = FileCertificate { certificate: certificate.clone(), key: pem_key.clone() };
        certificates.push(check_pem_pair(checker, &format!("{key}.tls"), &pair, base_dir)?);
    } else if tls.certificate.is_some() || tls.key.is_some() {
        checker.problem(span.clone(), format!("{key}.tls"), "give both certificate and key");
        return None;
    }
    for (i, pair) in tls.certificates.iter().flat_map(|c| c.get_ref().iter()).enumerate() {
        certificates.push(check_pem_pair(checker, &format!("{key}.tls.certificates[{i}]"), pair, base_dir)?);
    }
    if certificates.is_empty() {
        checker.problem(
            span,
            format!("{key}.tls"),
            "names no certificate; write tls = { certificate = \"cert.pem\", key = \"key.pem\" }",
        );
        return None;
    }
    Some(TlsFiles { certificates })
}

/// A certificate chain and key that exist and parse as PEM.
pub(crate) fn check_pem_pair(
    checker: &mut Checker,
    key: &str,
    pair: &FileCertificate,
    base_dir: &Path,
) -> Option<CertificateFiles> {
    let files = CertificateFiles {
        certificate: base_dir.join(pair.certificate.get_ref()),
        key: base_dir.join(pair.key.get_ref()),
    };
    let mut ok = true;
    for (path, spanned, name) in
        [(&files.certificate, &pair.certificate, "certificate"), (&files.key, &pair.key, "key")]
    {
        if let Some(message) = pem_file_problem(path, name == "key") {
            checker.problem(spanned.span(), format!("{key}.{name}"), message);
            ok = false;
        }
    }
    ok.then_some(files)
}

/// A PEM file that is missing or holds nothing usable.
pub(crate) fn pem_file_problem(path: &Path, is_key: bool) -> Option<String> {
    if !path.is_file() {
        return Some(format!(
            "file {} does not exist; give a PEM file path (relative paths are from the config file's folder)",
            path.display()
        ));
    }
    pem_problem(path, is_key)
}

/// Reads a PEM file as the server will at start: a certificate chain (at least one
/// CERTIFICATE block) or one private key. None when it is usable.
pub(crate) fn pem_problem(path: &Path, is_key: bool) -> Option<String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let shown = path.display();
    if is_key {
        return PrivateKeyDer::from_pem_file(path).err().map(|e| {
            format!("{shown} holds no usable private key ({e}); give a PEM file with a PKCS#8, PKCS#1 or SEC1 key")
        });
    }
    match CertificateDer::pem_file_iter(path).and_then(|certs| certs.collect::<Result<Vec<_>, _>>()) {
        Ok(certs) if certs.is_empty() => {
            Some(format!("{shown} holds no CERTIFICATE block; give the PEM certificate chain, leaf first"))
        }
        Ok(_) => None,
        Err(e) => Some(format!("{shown} is not a PEM certificate chain ({e}); give the chain, leaf first")),
    }
}
