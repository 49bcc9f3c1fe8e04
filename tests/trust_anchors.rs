//! Where the system's trust anchors come from (src/sys/trust.rs): the distribution's
//! bundle alone by default, and `SSL_CERT_FILE` / `SSL_CERT_DIR` honoured when set, as
//! rustls-native-certs does, for the SMTP connection without a `ca_file`.

mod common;

use std::process::{Command, Output};

use common::harness::{code, stderr, Harness};
use common::smtp_server::ServerOptions;

const MESSAGE: &[u8] = b"To: rcpt@example.com\nSubject: trust\n\nbody\n";

/// A harness whose account has no `ca_file`: only the system's anchors are trusted.
fn without_ca_file() -> Harness {
    Harness::with_config(ServerOptions::default(), |config| {
        config.account_unset("ca_file")
    })
}

fn send_with(h: &Harness, env: &[(&str, &std::path::Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oauth-sendmail"));
    cmd.args(["send", "-i", "rcpt@example.com"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    for (key, value) in env {
        cmd.env(key, value);
    }
    h.run(cmd, MESSAGE)
}

#[test]
fn the_system_bundle_does_not_trust_the_test_ca() {
    let h = without_ca_file();
    let o = send_with(&h, &[]);
    assert_eq!(code(&o), 78, "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown issuer"), "{}", stderr(&o));
    assert!(h.server.received().is_empty());
}

#[test]
fn ssl_cert_file_is_honoured() {
    let h = without_ca_file();
    let o = send_with(&h, &[("SSL_CERT_FILE", &h.server.ca_file)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(h.server.received().len(), 1);
}

#[test]
fn ssl_cert_dir_is_honoured() {
    let h = without_ca_file();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&h.server.ca_file, dir.path().join("test-ca.pem")).unwrap();
    let o = send_with(&h, &[("SSL_CERT_DIR", dir.path())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(h.server.received().len(), 1);
}

/// `ca_file` is trusted beside the system's anchors, not instead of them: with a ca_file
/// that signed nothing, a server the system trusts is still verified (the system's
/// anchors read then, after the ca_file alone did not do).
#[test]
fn the_system_anchors_still_count_beside_an_unrelated_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let unrelated = common::tls::write_unrelated_ca_file(dir.path());
    let h = Harness::with_config(ServerOptions::default(), |config| {
        config.account_field("ca_file", unrelated.as_path())
    });
    let o = send_with(&h, &[("SSL_CERT_FILE", &h.server.ca_file)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(h.server.received().len(), 1);
}
