//! Symfony Mailer itself (Debian's php-symfony-mailer, run by php-cli) sends through the
//! `sendmail` symlink with its sendmail DSN, as `-bs` (Symfony's default) and as `-bs -i`
//! (Laravel's), to the in-process server that checks XOAUTH2. Skipped with a reason when
//! PHP or Symfony Mailer is missing, except under CI=true, where that is a failure.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::harness::{code, explain, stdout, Harness};
use common::skip::skip;
use common::smtp_server::{Fault, ServerOptions};

/// Where Debian's php-symfony-mailer puts its class loader.
const AUTOLOAD: &str = "/usr/share/php/Symfony/Component/Mailer/autoload.php";

/// Sends two messages through one Mailer (so one `sendmail -bs` session), or prints the
/// exception Symfony throws.
const SCRIPT: &str = r#"<?php
require getenv('SYMFONY_AUTOLOAD');

use Symfony\Component\Mailer\Mailer;
use Symfony\Component\Mailer\Transport;
use Symfony\Component\Mime\Email;

$mailer = new Mailer(Transport::fromDsn(getenv('MAILER_DSN')));
// ATTACH_BYTES: the second message carries an attachment of that many bytes, byte i
// being (7i + 3) mod 256.
$attachment = '';
for ($i = 0; $i < (int) getenv('ATTACH_BYTES'); $i++) {
    $attachment .= chr((7 * $i + 3) % 256);
}
foreach ([1, 2] as $i) {
    $email = (new Email())
        ->from('sender@example.com')
        ->to(getenv('MAIL_TO'))
        ->bcc('hidden@example.com')
        ->subject("Symfony $i")
        ->text("Hello $i\n.leading dot\nCafé");
    if ($i == 2 && $attachment !== '') {
        $email->attach($attachment, 'report.bin', 'application/octet-stream');
    }
    try {
        $mailer->send($email);
        echo "sent $i\n";
    } catch (\Symfony\Component\Mailer\Exception\TransportExceptionInterface $e) {
        echo "failed $i: ", $e->getMessage(), "\n";
    }
}
"#;

/// Whether php and Symfony Mailer are here; says why not, and fails under CI.
fn php_available() -> bool {
    let php = Command::new("php")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if php && Path::new(AUTOLOAD).exists() {
        return true;
    }
    let why = "php-cli and php-symfony-mailer are not installed (scripts/install-test-deps installs them)";
    skip("php_symfony", why);
    false
}

/// Runs the script with Symfony's sendmail DSN, its command being our symlink and `flags`.
fn run_php(h: &Harness, flags: &str, to: &str) -> Output {
    run_php_attaching(h, flags, to, 0)
}

/// The same, the second message with an attachment of `bytes` bytes.
fn run_php_attaching(h: &Harness, flags: &str, to: &str, bytes: usize) -> Output {
    let script = h.home.path().join("send.php");
    std::fs::write(&script, SCRIPT).expect("write send.php");
    let command = format!("{} {flags}", h.home.path().join("bin/sendmail").display());
    let mut cmd = Command::new("php");
    cmd.arg(&script)
        .env("SYMFONY_AUTOLOAD", AUTOLOAD)
        .env(
            "MAILER_DSN",
            format!("sendmail://default?command={}", url_encode(&command)),
        )
        .env("MAIL_TO", to)
        .env("ATTACH_BYTES", bytes.to_string());
    h.run(cmd, b"")
}

/// Percent-encodes all but unreserved characters and "/", for a DSN's query value.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Both messages of the script arrived, whole, through XOAUTH2, with Bcc as envelope only.
fn sends_with(flags: &str) {
    if !php_available() {
        return;
    }
    let h = Harness::new(ServerOptions::default());
    let o = run_php(&h, flags, "rcpt@example.com");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    assert_eq!(stdout(&o), "sent 1\nsent 2\n", "{}", explain(&h, &o));

    let received = h.server.received();
    assert_eq!(received.len(), 2, "{}", explain(&h, &o));
    for (i, message) in received.iter().enumerate() {
        let data = String::from_utf8_lossy(&message.data);
        assert_eq!(message.mail_from, "sender@example.com");
        assert_eq!(message.rcpt_to, ["rcpt@example.com", "hidden@example.com"]);
        assert_eq!(message.auth_mechanism.as_deref(), Some("XOAUTH2"));
        assert!(message.tls);
        assert!(
            data.contains(&format!("Subject: Symfony {}\r\n", i + 1)),
            "{data}"
        );
        assert!(!data.contains("hidden@example.com"), "Bcc shown: {data}");
        // Symfony dot-stuffed the line; the server got it back as written.
        assert!(data.contains("\r\n.leading dot\r\n"), "{data}");
        assert!(
            data.contains("Caf=C3=A9"),
            "the quoted-printable body: {data}"
        );
    }
}

#[test]
fn symfony_mailer_default_sendmail_dsn() {
    sends_with("-bs");
}

#[test]
fn laravel_sendmail_path_bs_i() {
    sends_with("-bs -i");
}

#[test]
fn symfony_sees_a_refused_recipient_and_goes_on() {
    if !php_available() {
        return;
    }
    let h = Harness::new(ServerOptions {
        fault: Fault::Rcpt550("nobody@example.com".into()),
        ..ServerOptions::default()
    });
    let o = run_php(&h, "-bs", "nobody@example.com");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{}", explain(&h, &o));
    for (i, line) in lines.iter().enumerate() {
        // Symfony's exception carries our 550 and the real server's words.
        assert!(
            line.starts_with(&format!("failed {}: ", i + 1))
                && line.contains("\"550\"")
                && line.contains("does not exist"),
            "{}",
            explain(&h, &o)
        );
    }
    // Only hidden@example.com was accepted; it got both messages.
    let received = h.server.received();
    assert_eq!(received.len(), 2, "{}", explain(&h, &o));
    assert!(received.iter().all(|m| m.rcpt_to == ["hidden@example.com"]));
}

/// Issue 15: a large attachment through Symfony's default `-bs` comes through whole: the
/// session reads a message as stdin is read (its body past a megabyte in a file), and
/// the next message of the same session goes on as before.
#[test]
fn symfony_sends_a_large_attachment_through_bs() {
    if !php_available() {
        return;
    }
    const BYTES: usize = 3 * 1024 * 1024;
    let h = Harness::new(ServerOptions::default());
    let o = run_php_attaching(&h, "-bs", "rcpt@example.com", BYTES);
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    assert_eq!(stdout(&o), "sent 1\nsent 2\n", "{}", explain(&h, &o));
    let received = h.server.received();
    assert_eq!(received.len(), 2, "{}", explain(&h, &o));
    let message = mail_parser::MessageParser::default()
        .parse(&received[1].data)
        .expect("a MIME message");
    let attachment = message.attachment(0).expect("the attachment");
    let expected: Vec<u8> = (0..BYTES).map(|i| ((7 * i + 3) % 256) as u8).collect();
    assert!(
        attachment.contents() == expected.as_slice(),
        "the attachment arrived changed ({} bytes)",
        attachment.contents().len()
    );
    assert_eq!(message.subject(), Some("Symfony 2"));
}
