//! The relay's TLS identity: the certificate and key a listener names, or one the
//! service generates on first start and keeps; and its SHA-256 fingerprint, which a
//! person compares with what the device shows when it asks to trust it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::relay::Listener;
use crate::error::{Error, Kind, Result};
use crate::sys::files;

/// The generated pair, in the service's state directory.
pub fn generated_paths(state: &Path) -> (PathBuf, PathBuf) {
    (state.join("relay-cert.pem"), state.join("relay-key.pem"))
}

/// "AB:CD:..." of the certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// The fingerprint of the first certificate of a PEM file, if it reads.
pub fn fingerprint_of(path: &Path) -> Option<String> {
    let first = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    Some(fingerprint(&first))
}

/// The server side of TLS for `listener`, and its certificate's fingerprint. Generates
/// and keeps a self-signed certificate for `host` when the listener names none.
pub fn server_config(
    listener: &Listener,
    state: &Path,
    host: &str,
) -> Result<(Arc<ServerConfig>, String)> {
    let (cert, key) = match (&listener.cert_file, &listener.key_file) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, None) => {
            let (cert, key) = generated_paths(state);
            if !cert.exists() || !key.exists() {
                generate(&cert, &key, host)?;
            }
            (cert, key)
        }
        _ => {
            return Err(Error::new(
                Kind::Config,
                "a [[relay.listener]] has only one of cert_file and key_file",
                "both are needed, or neither (a certificate is generated)",
            ))
        }
    };
    let unreadable = |path: &Path, why: String| {
        Error::new(
            Kind::Config,
            format!("cannot use {} for the relay's TLS", path.display()),
            why,
        )
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| unreadable(&cert, e.to_string()))?;
    let Some(first) = chain.first() else {
        return Err(unreadable(&cert, "it holds no certificate".into()));
    };
    let print = fingerprint(first);
    let key_der =
        PrivateKeyDer::from_pem_file(&key).map_err(|e| unreadable(&key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key_der))
        .map_err(|e| unreadable(&cert, e.to_string()))?;
    Ok((Arc::new(config), print))
}

fn generate(cert: &Path, key: &Path, host: &str) -> Result<()> {
    let made = rcgen::generate_simple_self_signed(vec![host.to_string(), "localhost".to_string()])
        .map_err(|e| Error::new(Kind::Internal, "cannot generate the relay's certificate", e))?;
    files::write_private(key, made.signing_key.serialize_pem().as_bytes())?;
    files::write_private(cert, made.cert.pem().as_bytes())?;
    eprintln!(
        "oauth-sendmail: relay: generated a self-signed certificate {}",
        cert.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let listener: Listener = toml::from_str("port = 587\n").unwrap();
        let (_, first) = server_config(&listener, dir.path(), "relay.example").unwrap();
        let (_, again) = server_config(&listener, dir.path(), "relay.example").unwrap();
        assert_eq!(first, again, "the same certificate on the next start");
        assert_eq!(first.len(), 32 * 3 - 1);
        let (cert, key) = generated_paths(dir.path());
        let der = CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(fingerprint(&der), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        let half: Listener = toml::from_str("port = 587\ncert_file = \"/x.pem\"\n").unwrap();
        assert!(server_config(&half, dir.path(), "h").is_err());
    }
}
