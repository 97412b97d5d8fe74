//! TLS for the broker connection (`mqtts://`), with rustls and its `ring`
//! provider.
//!
//! The broker's certificate is checked against the CA file given (a private
//! CA is the usual case for a hospital's broker; `deploy/tls/` makes one for
//! tests), or else against the system's trust store. A client certificate
//! is sent when the broker requires one (`require_certificate true`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::error::Error;

/// PEM files for a TLS connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) that signed the broker's certificate; `None`: the
    /// system's trust store.
    pub ca: Option<PathBuf>,
    /// Our client certificate and its private key, when the broker asks.
    pub client: Option<(PathBuf, PathBuf)>,
}

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{}: {reason}", path.display()))
}

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_error(path, e))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration for these files.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, Error> {
    let mut roots = RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| tls_error(ca, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system store may hold a certificate rustls cannot parse;
                // the others are still good.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(Error::Tls(
                    "no CA file given and no system CA certificates found".into(),
                ));
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match &files.client {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| tls_error(cert, e)),
        None => Ok(builder.with_no_client_auth()),
    }
}
