//! The real binary against the scripted SMTP server: the happy paths (STARTTLS, implicit
//! TLS, XOAUTH2, AUTH PLAIN), one test per server fault with the exit code and message the
//! contract promises, and no secret ever on stdout or stderr.

mod common;

use std::process::Output;

use common::harness::{
    assert_no_secrets, assert_no_secrets_in_files, code, stderr, stdout, write_private, Harness,
};
use common::smtp_server::{AuthCheck, Fault, ServerOptions, TlsMode, TEST_PASSWORD, TEST_USER};

/// A small message a cron job could send; the body line is what we look for downstream.
const MESSAGE: &[u8] =
    b"To: rcpt@example.com\nSubject: fault test\n\nBody line of the fault test.\n";
const BODY_LINE: &str = "Body line of the fault test.";

/// A temporary failure, twice: with the default `queue = "on-failure"` the message is
/// spooled and sendmail exits 0 with a one-line notice; with `queue = "never"` it is exit 75
/// and dead.letter, as msmtp does.
fn assert_temporary(fault: Fault, needle: &str) {
    let h = Harness::new(with_fault(fault.clone()));
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_stderr_has(&h, &o, "queued as");
    assert_stderr_has(&h, &o, needle);
    assert_eq!(
        stderr(&o).lines().count(),
        1,
        "the notice is one line\n{}",
        explain(&h, &o)
    );
    assert!(h.server.received().is_empty());
    assert!(
        h.dead_letter().is_none(),
        "a queued message is not also a dead letter"
    );
    let (ids, listing) = h.queue_listing();
    assert_eq!(ids.len(), 1, "{listing}");
    assert!(listing.contains("rcpt@example.com"), "{listing}");

    let h = Harness::with_config(with_fault(fault), |config| {
        config.insert_str(0, "queue = \"never\"\n")
    });
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 75);
    assert_stderr_has(&h, &o, needle);
    assert!(h.server.received().is_empty());
    assert_dead_letter(&h, &o);
    assert!(h.queue_listing().0.is_empty());
}

/// A refused login: exit 77 so the caller and the admin see it, and the message waits in
/// the queue for the fix (not in dead.letter).
fn assert_auth_refused_and_queued(h: &Harness, o: &Output) {
    assert_exit(h, o, 77);
    assert!(
        h.dead_letter().is_none(),
        "queued, so not a dead letter\n{}",
        explain(h, o)
    );
    assert_stderr_has(h, o, "queued as");
    let (ids, listing) = h.queue_listing();
    assert_eq!(ids.len(), 1, "{listing}");
    // The refusal is written down, in the queue entry and the delivery log, without the
    // secret that was refused.
    let log = stdout(&h.own(&["log", "--format", "json"]));
    assert!(log.contains("\"result\":\"queued\""), "{log}");
    assert_no_secrets_in_files(&h.home.path().join(".local/state"));
}

fn with_fault(fault: Fault) -> ServerOptions {
    ServerOptions {
        fault,
        ..ServerOptions::default()
    }
}

fn password_auth() -> ServerOptions {
    ServerOptions {
        auth: AuthCheck::Plain {
            user: TEST_USER.to_string(),
            password: TEST_PASSWORD.to_string(),
        },
        ..ServerOptions::default()
    }
}

/// Everything a failing assertion should show: the exit code, both streams, the server side.
fn explain(h: &Harness, o: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- server transcript ---\n{}",
        o.status,
        stdout(o),
        stderr(o),
        h.server.transcript()
    )
}

fn assert_exit(h: &Harness, o: &Output, expected: i32) {
    assert_eq!(code(o), expected, "wrong exit code\n{}", explain(h, o));
    assert_no_secrets(o);
}

fn assert_stderr_has(h: &Harness, o: &Output, needle: &str) {
    assert!(
        stderr(o).contains(needle),
        "stderr lacks {needle:?}\n{}",
        explain(h, o)
    );
}

/// The one message the server accepted, checked for what every successful send must have.
fn assert_delivered_once(h: &Harness, o: &Output, mechanism: &str) {
    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", explain(h, o));
    let msg = &received[0];
    assert_eq!(msg.mail_from, TEST_USER);
    assert_eq!(msg.rcpt_to, ["rcpt@example.com"]);
    assert_eq!(msg.auth_mechanism.as_deref(), Some(mechanism));
    assert!(msg.tls, "delivered without TLS");
    let data = String::from_utf8_lossy(&msg.data);
    assert!(data.contains("Subject: fault test\r\n"), "{data:?}");
    assert!(
        data.ends_with(&format!("\r\n\r\n{BODY_LINE}\r\n")),
        "body mangled: {data:?}"
    );
}

#[test]
fn happy_path_starttls_xoauth2() {
    let h = Harness::new(ServerOptions::default());
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "XOAUTH2");
    assert!(h.dead_letter().is_none(), "dead.letter written on success");
}

#[test]
fn happy_path_implicit_tls_xoauth2() {
    let h = Harness::new(ServerOptions {
        tls: TlsMode::Implicit,
        ..ServerOptions::default()
    });
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "XOAUTH2");
}

#[test]
fn happy_path_sendmail_personality() {
    let h = Harness::new(ServerOptions::default());
    let o = h.sendmail(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "XOAUTH2");
}

/// The text after DATA is written two ways (src/smtp.rs): in one write with its final dot
/// (UTF-8, up to 4 MiB) or by lettre in chunks (larger, or not UTF-8). Both dot-stuff:
/// lines starting with "." arrive as they were, in every case.
#[test]
fn dot_lines_arrive_intact_whichever_way_the_text_is_written() {
    let h = Harness::new(ServerOptions::default());
    let dots: &[u8] = b".\n..\n.leading\nmiddle.\n";
    let filler = "0123456789abcdef".repeat(4) + "\n";
    let cases: [(&str, Vec<u8>); 3] = [
        ("utf-8", [b"caf\xc3\xa9\n".as_slice(), dots].concat()),
        ("latin-1", [b"caf\xe9\n".as_slice(), dots].concat()),
        ("5 MiB", [filler.repeat(80_000).as_bytes(), dots].concat()),
    ];
    for (name, body) in &cases {
        let message = [b"To: rcpt@example.com\nSubject: dots\n\n".as_slice(), body].concat();
        let o = h.send(&["-i", "rcpt@example.com"], &message);
        assert_exit(&h, &o, 0);
        let received = h.server.received();
        let data = &received.last().expect("a message arrived").data;
        let expected: Vec<u8> = body
            .split_inclusive(|&b| b == b'\n')
            .flat_map(|line| [&line[..line.len() - 1], b"\r\n"].concat())
            .collect();
        assert!(
            data.ends_with(&[b"\r\n\r\n".as_slice(), &expected].concat()),
            "{name}: body mangled, {} bytes arrived",
            data.len()
        );
    }
    assert_eq!(h.server.received().len(), cases.len());
}

#[test]
fn happy_path_password_auth_plain() {
    let h = Harness::new(password_auth());
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "PLAIN");
}

#[test]
fn wrong_password_is_an_authentication_failure() {
    let h = Harness::with_config(password_auth(), |config| {
        let edited = config.replace("/secret\"", "/wrong-secret\"");
        assert_ne!(
            *config, edited,
            "secret path not found in the config:\n{config}"
        );
        *config = edited;
    });
    write_private(
        &h.home.path().join("wrong-secret"),
        "not-the-app-password\n",
    );
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_stderr_has(&h, &o, "535");
    assert!(h.server.received().is_empty());
    assert!(
        h.server.transcript().contains("AUTH "),
        "the binary never tried to authenticate\n{}",
        explain(&h, &o)
    );
    assert_auth_refused_and_queued(&h, &o);
}

#[test]
fn greeting_421_is_temporary() {
    assert_temporary(Fault::Greeting421, "421");
}

#[test]
fn data_451_is_temporary() {
    assert_temporary(Fault::Data451, "451");
}

#[test]
fn rcpt_550_refuses_one_recipient_the_other_gets_the_message() {
    let h = Harness::new(with_fault(Fault::Rcpt550("bad@example.com".to_string())));
    let o = h.send(&["-i", "good@example.com", "bad@example.com"], MESSAGE);
    assert_exit(&h, &o, 67);
    assert_stderr_has(&h, &o, "bad@example.com");
    assert_stderr_has(&h, &o, "550");
    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", explain(&h, &o));
    assert_eq!(received[0].rcpt_to, ["good@example.com"]);
    assert!(String::from_utf8_lossy(&received[0].data).contains(BODY_LINE));
}

#[test]
fn connection_dropped_after_mail_is_temporary() {
    assert_temporary(Fault::DropAfterMail, "MAIL FROM");
}

#[test]
fn gmail_xoauth2_rejection_is_an_authentication_failure() {
    let h = Harness::new(with_fault(Fault::Xoauth2Reject));
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    let err = stderr(&o);
    let lower = err.to_lowercase();
    assert!(
        lower.contains("authentication")
            && ["refused", "rejected", "not accepted", "failed"]
                .iter()
                .any(|w| lower.contains(w)),
        "stderr does not say authentication was refused\n{}",
        explain(&h, &o)
    );
    // The decoded 334 challenge: {"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}
    assert!(
        err.contains("401") || err.contains("https://mail.google.com/"),
        "stderr lacks the decoded reason (401 / scope)\n{}",
        explain(&h, &o)
    );
    assert!(h.server.received().is_empty());
    assert_auth_refused_and_queued(&h, &o);
}

#[test]
fn verbose_shows_the_dialogue_with_auth_redacted() {
    let h = Harness::new(ServerOptions::default());
    let o = h.send(&["-v", "-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "XOAUTH2");
    assert_stderr_has(&h, &o, "-> MAIL FROM:");
    assert_stderr_has(&h, &o, "<- 250");
    let err = stderr(&o);
    let auth_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.trim_start().starts_with("-> AUTH"))
        .collect();
    assert!(
        !auth_lines.is_empty(),
        "no AUTH line in the -v dialogue\n{}",
        explain(&h, &o)
    );
    for line in auth_lines {
        assert!(
            line.contains("(redacted)"),
            "AUTH line not redacted: {line}"
        );
    }
}

/// The contract: a message that could not be sent is appended to $HOME/dead.letter (mbox).
fn assert_dead_letter(h: &Harness, o: &Output) {
    let Some(dead) = h.dead_letter() else {
        panic!("no dead.letter\n{}", explain(h, o));
    };
    let dead = String::from_utf8_lossy(&dead);
    assert!(dead.starts_with("From "), "not mbox: {dead:?}");
    assert!(dead.contains(BODY_LINE), "message missing: {dead:?}");
}
