//! Test PKI: one CA and one server certificate (for "localhost" and 127.0.0.1), made with
//! rcgen when a test process first asks for them, plus the rustls server config built from
//! them; and for the certificate faults, a server certificate for another name and a CA
//! that signed nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// Everything a test may need from the test PKI. Private keys are test-only material.
pub struct TestPki {
    /// The CA certificate (PEM): what a client is told to trust (`ca_file`).
    pub ca_pem: String,
    /// The server certificate (PEM), signed by the CA: for a real MTA under test.
    pub server_cert_pem: String,
    /// The server's private key (PKCS#8 PEM): for a real MTA under test.
    pub server_key_pem: String,
    /// rustls server side, ring provider, presenting the server certificate.
    pub server_config: Arc<ServerConfig>,
    /// The same, presenting a certificate of the CA for "other.example" only.
    pub other_name_config: Arc<ServerConfig>,
    /// A CA (PEM) that signed none of the certificates: trusting only it is trusting none.
    pub unrelated_ca_pem: String,
}

/// The process-wide test PKI. Key generation is cheap but not free, and one CA per process
/// means every server in a test binary can be trusted through the same CA file.
pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(make_pki)
}

/// The rustls config for the in-process SMTP server.
pub fn server_config() -> Arc<ServerConfig> {
    pki().server_config.clone()
}

/// The rustls config presenting a certificate for "other.example" (a wrong host name).
pub fn other_name_server_config() -> Arc<ServerConfig> {
    pki().other_name_config.clone()
}

/// Writes a CA certificate that signed nothing to `dir/unrelated-ca.pem`: as `ca_file`,
/// the server's certificate has an unknown issuer.
pub fn write_unrelated_ca_file(dir: &Path) -> PathBuf {
    let path = dir.join("unrelated-ca.pem");
    std::fs::write(&path, &pki().unrelated_ca_pem).expect("write unrelated CA file");
    path
}

/// Writes the CA certificate to `dir/test-ca.pem` and returns that path. The caller owns
/// `dir` (a tempdir), so nothing is left behind in /tmp when the test ends.
pub fn write_ca_file(dir: &Path) -> PathBuf {
    let path = dir.join("test-ca.pem");
    std::fs::write(&path, &pki().ca_pem).expect("write test CA file");
    path
}

/// A CA certificate (PEM) and the issuer to sign with.
fn make_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let ca_key = KeyPair::generate().expect("generate CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
    (ca_cert.pem(), Issuer::new(ca_params, ca_key))
}

fn make_pki() -> TestPki {
    let (ca_pem, issuer) = make_ca("oauth-sendmail test CA");
    // Both names: the binary connects to the configured host "127.0.0.1" (IP SAN),
    // Python's smtplib tests also connect by name (DNS SAN).
    let (server_cert_pem, server_key_pem, server_config) =
        make_server(&issuer, &["localhost", "127.0.0.1"]);
    let (_, _, other_name_config) = make_server(&issuer, &["other.example"]);
    TestPki {
        ca_pem,
        server_cert_pem,
        server_key_pem,
        server_config,
        other_name_config,
        unrelated_ca_pem: make_ca("oauth-sendmail unrelated CA").0,
    }
}

/// A server certificate for `names` signed by `issuer`: its PEM, its key's PEM, and the
/// rustls config presenting it.
fn make_server(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
) -> (String, String, Arc<ServerConfig>) {
    let server_key = KeyPair::generate().expect("generate server key");
    let mut server_params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, names[0]);
    // Strict verifiers (OpenSSL's X509_STRICT, used by newer Pythons) want these.
    server_params.use_authority_key_identifier_extension = true;
    server_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, issuer)
        .expect("sign server certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
    let server_config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .expect("server certificate and key");

    (
        server_cert.pem(),
        server_key.serialize_pem(),
        Arc::new(server_config),
    )
}
