//! The system's trust anchors, for the SMTP client and the token endpoint alike: read once
//! per process, and only when a TLS connection first needs them (a send with `tls = "none"`
//! or a cached token reads none for the endpoint).
//!
//! `rustls_native_certs::load_native_certs` reads the bundle and then every file of
//! `/etc/ssl/certs` again (on Debian some 150 files holding the same certificates): 6-7 ms
//! of a 20 ms cron mail. Here the bundle alone is read when the system has one, and
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`, when set, are honoured exactly as that crate does.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The system's CA certificates, as DER (for ureq) and as a parsed store (for rustls).
pub struct SystemRoots {
    pub certs: Vec<CertificateDer<'static>>,
    pub store: Arc<RootCertStore>,
    /// Why there are none, when there are none.
    pub problem: Option<String>,
}

/// Where the certificates come from.
#[derive(Debug, PartialEq)]
enum Source {
    /// The environment names a file or directories, or the system has no known bundle:
    /// rustls-native-certs decides, as it always has.
    Native,
    /// The distribution's bundle, alone.
    Bundle(PathBuf),
}

fn source(env_set: bool, bundle: Option<PathBuf>) -> Source {
    match (env_set, bundle) {
        (false, Some(bundle)) => Source::Bundle(bundle),
        _ => Source::Native,
    }
}

/// The system's roots, loaded on first use.
pub fn system() -> &'static SystemRoots {
    static ROOTS: OnceLock<SystemRoots> = OnceLock::new();
    ROOTS.get_or_init(load)
}

fn load() -> SystemRoots {
    let env_set = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    // Only the bundle's name is probed here: the directories are not read.
    let bundle = match env_set {
        true => None,
        false => openssl_probe::probe().cert_file,
    };
    let mut found = match source(env_set, bundle) {
        Source::Bundle(path) => rustls_native_certs::load_certs_from_paths(Some(&path), None),
        Source::Native => rustls_native_certs::load_native_certs(),
    };
    if found.certs.is_empty() && !env_set {
        // A bundle that holds nothing usable: the directories may still.
        found = rustls_native_certs::load_native_certs();
    }
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(found.certs.iter().cloned());
    let problem = match store.is_empty() {
        false => None,
        true => Some(match found.errors.first() {
            Some(e) => e.to_string(),
            None => "none found".to_string(),
        }),
    };
    SystemRoots {
        certs: found.certs,
        store: Arc::new(store),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_alone_unless_the_environment_says_otherwise() {
        let bundle = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
        assert_eq!(source(false, Some(bundle.clone())), Source::Bundle(bundle));
        assert_eq!(source(true, Some("/x".into())), Source::Native);
        assert_eq!(source(false, None), Source::Native);
    }

    #[test]
    fn the_system_roots_are_loaded_once() {
        let first = system();
        assert!(std::ptr::eq(first, system()));
        // This machine has ca-certificates (the TLS tests need it too).
        assert!(first.problem.is_none() && !first.store.is_empty());
    }
}
