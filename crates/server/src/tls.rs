//! paymux serving HTTPS itself, with optional client certificates (mutual
//! TLS): `tls_cert_file` and `tls_key_file` turn TLS on; `client_ca_file`
//! verifies client certificates issued under that CA, and
//! `client_cert_required` refuses every connection that presents none. An
//! app bound to a certificate (`paymux app bind-client-cert`) is served
//! only over a connection that presented exactly that certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest::{digest, SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The TLS part of the configuration (top-level keys).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_cert_required: bool,
}

/// The SHA-256 of the client certificate a connection presented (lowercase
/// hex of the DER), as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert(pub String);

pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(digest(&SHA256, der).as_ref())
}

/// The fingerprint of the first certificate in a PEM file's text.
pub fn pem_fingerprint(pem: &str) -> Result<String, String> {
    let cert = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("no certificate in PEM: {e}"))?;
    Ok(fingerprint(cert.as_ref()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

/// The acceptor for the configured files, or why they cannot be used.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            // Optional unless required: channels calling back present no
            // client certificate; apps bound to one are refused without it.
            let verifier = if files.client_cert_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder
                .with_client_cert_verifier(verifier.build().map_err(|e| format!("client CA: {e}"))?)
        }
        None => {
            if files.client_cert_required {
                return Err("client_cert_required needs client_ca_file".into());
            }
            builder.with_no_client_auth()
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
