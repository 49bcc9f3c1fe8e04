//! The system's trust anchors, for the SMTP client and the token endpoint alike: read once
//! per process, and only when a TLS connection first needs them (a send with `tls = "none"`
//! or a cached token reads none for the endpoint).
//!
//! `rustls_native_certs::load_native_certs` reads the bundle and then every file of
//! `/etc/ssl/certs` again (on Debian some 150 files holding the same certificates): 6-7 ms
//! of a 20 ms cron mail. Here the bundle alone is read when the system has one (decoded
//! here, see `pem_certificates`), and `SSL_CERT_FILE` / `SSL_CERT_DIR`, when set, are
//! honoured exactly as that crate does.
//!
//! An account's `ca_file` is trusted beside the system's anchors, and tried first: a
//! server whose chain leads to it (a private CA, the test suites) is verified without the
//! system's anchors ever being read.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

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
    let bundled = match source(env_set, bundle) {
        Source::Bundle(path) => std::fs::read(path).map(|pem| pem_certificates(&pem)),
        Source::Native => Ok(Vec::new()),
    };
    let (certs, problem) = match bundled {
        Ok(certs) if !certs.is_empty() => (certs, None),
        // The environment's choice, or a bundle that holds nothing usable (the
        // directories may still): rustls-native-certs decides.
        _ => {
            let found = rustls_native_certs::load_native_certs();
            let problem = found.errors.first().map(|e| e.to_string());
            (found.certs, problem)
        }
    };
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(certs.iter().cloned());
    let problem = match store.is_empty() {
        false => None,
        true => Some(problem.unwrap_or_else(|| "none found".to_string())),
    };
    SystemRoots {
        certs,
        store: Arc::new(store),
        problem,
    }
}

/// The certificates of a PEM bundle. Certificates are public: the `base64` crate's decoder
/// does here what rustls-pki-types' constant-time one (made for private keys) took 5.7 M
/// instructions for, two thirds of a whole cron mail. A block that does not decode is
/// passed over, as rustls-native-certs passes it over.
fn pem_certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use base64::Engine;
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = pem;
    while let Some(start) = memchr::memmem::find(rest, BEGIN) {
        rest = &rest[start + BEGIN.len()..];
        let Some(end) = memchr::memmem::find(rest, END) else {
            break;
        };
        let mut text = Vec::with_capacity(end);
        text.extend(rest[..end].iter().filter(|b| !b.is_ascii_whitespace()));
        rest = &rest[end + END.len()..];
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&text) {
            certs.push(CertificateDer::from(der));
        }
    }
    certs
}

/// The certificates of a PEM file (an account's `ca_file`).
pub fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// ureq's TLS settings (rustls with ring) trusting the system's anchors and `extra` (an
/// account's `ca_file`): ureq takes a set of roots, not a verifier, so here the trust is
/// the union from the start. `Err` says why there is no anchor at all.
pub fn ureq_tls(extra: &[CertificateDer<'static>]) -> Result<ureq::tls::TlsConfig, String> {
    let system = system();
    let roots: Vec<ureq::tls::Certificate<'static>> = system
        .certs
        .iter()
        .chain(extra)
        .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    if roots.is_empty() {
        return Err(system
            .problem
            .clone()
            .unwrap_or_else(|| "none found".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .unversioned_rustls_crypto_provider(provider)
        .build())
}

/// Verifies a server's certificate against an account's `ca_file` and, only when that
/// fails, against the system's and the `ca_file`'s together (the
/// trust is the union either way: a path ends at one anchor).
pub struct CaFileFirst {
    own: Arc<WebPkiServerVerifier>,
    own_roots: RootCertStore,
    provider: Arc<CryptoProvider>,
    /// The system's anchors, asked for only when needed.
    system: fn() -> Arc<RootCertStore>,
    both: OnceLock<Option<Arc<WebPkiServerVerifier>>>,
}

impl CaFileFirst {
    /// `None` when `own_roots` make no verifier (an empty store).
    pub fn new(
        own_roots: RootCertStore,
        provider: Arc<CryptoProvider>,
        system: fn() -> Arc<RootCertStore>,
    ) -> Option<CaFileFirst> {
        let own = WebPkiServerVerifier::builder_with_provider(
            Arc::new(own_roots.clone()),
            provider.clone(),
        )
        .build()
        .ok()?;
        Some(CaFileFirst {
            own,
            own_roots,
            provider,
            system,
            both: OnceLock::new(),
        })
    }

    fn both(&self) -> Option<&Arc<WebPkiServerVerifier>> {
        self.both
            .get_or_init(|| {
                let mut roots = (*(self.system)()).clone();
                roots.roots.extend(self.own_roots.roots.iter().cloned());
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .ok()
            })
            .as_ref()
    }
}

/// The system's store, for `CaFileFirst`.
pub fn system_store() -> Arc<RootCertStore> {
    Arc::clone(&system().store)
}

impl fmt::Debug for CaFileFirst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaFileFirst")
    }
}

impl ServerCertVerifier for CaFileFirst {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verify = |verifier: &WebPkiServerVerifier| {
            verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        };
        // Any failure: the union decides (and names the problem), as it would have alone.
        match verify(&self.own) {
            Err(err) => match self.both() {
                Some(both) => verify(both),
                None => Err(err),
            },
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.own.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.own.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.own.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::CertificateError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A CA's certificate and a leaf for 127.0.0.1 it signed.
    fn ca_and_leaf(name: &str) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        (ca_cert.der().clone(), leaf.der().clone())
    }

    static ASKED: AtomicUsize = AtomicUsize::new(0);

    /// A "system" store holding only the second CA of the test, counting the calls.
    static SYSTEM_CA: OnceLock<(CertificateDer<'static>, CertificateDer<'static>)> =
        OnceLock::new();

    fn counted_system() -> Arc<RootCertStore> {
        ASKED.fetch_add(1, Ordering::SeqCst);
        let mut store = RootCertStore::empty();
        store.add(SYSTEM_CA.get().unwrap().0.clone()).unwrap();
        Arc::new(store)
    }

    #[test]
    fn the_ca_file_first_and_the_system_only_when_needed() {
        let (own_ca, own_leaf) = ca_and_leaf("own");
        let (_, system_leaf) = SYSTEM_CA.get_or_init(|| ca_and_leaf("system")).clone();
        let (_, stranger_leaf) = ca_and_leaf("stranger");
        let mut own = RootCertStore::empty();
        own.add(own_ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = CaFileFirst::new(own, provider, counted_system).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let verify = |leaf: &CertificateDer<'_>| {
            verifier.verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
        };
        verify(&own_leaf).expect("signed by the ca_file's CA");
        assert_eq!(ASKED.load(Ordering::SeqCst), 0, "the system store was read");
        verify(&system_leaf).expect("signed by a system CA");
        let err = verify(&stranger_leaf).expect_err("signed by neither");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );
        assert_eq!(ASKED.load(Ordering::SeqCst), 1, "read once");
    }

    #[test]
    fn the_bundle_alone_unless_the_environment_says_otherwise() {
        let bundle = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
        assert_eq!(source(false, Some(bundle.clone())), Source::Bundle(bundle));
        assert_eq!(source(true, Some("/x".into())), Source::Native);
        assert_eq!(source(false, None), Source::Native);
    }

    #[test]
    fn a_bundle_is_read_as_rustls_reads_it() {
        let (ca, leaf) = ca_and_leaf("bundle");
        let pem = |der: &CertificateDer<'_>| {
            use base64::Engine;
            let text = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            let lines: Vec<&str> = text
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        };
        let bundle = format!(
            "# a comment\n{}junk between\r\n{}-----BEGIN CERTIFICATE-----\n!!not base64\n\
             -----END CERTIFICATE-----\n",
            pem(&ca),
            pem(&leaf).replace('\n', "\r\n")
        );
        assert_eq!(pem_certificates(bundle.as_bytes()), [ca, leaf]);
        // The system's bundle: what rustls-pki-types' own reader finds in it.
        use rustls::pki_types::pem::PemObject;
        let path = "/etc/ssl/certs/ca-certificates.crt";
        if let Ok(system) = std::fs::read(path) {
            let theirs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&system)
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(!theirs.is_empty());
            assert_eq!(pem_certificates(&system), theirs);
        }
    }

    #[test]
    fn the_system_roots_are_loaded_once() {
        let first = system();
        assert!(std::ptr::eq(first, system()));
        // This machine has ca-certificates (the TLS tests need it too).
        assert!(first.problem.is_none() && !first.store.is_empty());
    }
}
