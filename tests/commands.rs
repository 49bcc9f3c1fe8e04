//! The commands around sending, through the real binary: `send --dry-run` (the first thing
//! a new user runs: no account, no network), `sendmail -bv`, `newaliases`, `queue remove`
//! and `log --since`.

mod common;

use std::process::{Command, Output};

use common::harness::{code, stderr, stdout, Harness, BIN};
use common::smtp_server::{Fault, ServerOptions};

const MESSAGE: &[u8] = b"To: someone@example.org\nBcc: hidden@example.org\nSubject: hi\n\nbody\n";

fn unused_server(edit: impl FnOnce(&mut String)) -> Harness {
    let mut h = Harness::with_config(ServerOptions::default(), edit);
    h.server.expect_unused();
    h
}

fn explain(o: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// Runs the binary under another name (`newaliases`, `mailq`) from the harness's bin dir.
fn as_named(h: &Harness, name: &str, args: &[&str]) -> Output {
    let link = h.home.path().join("bin").join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, &link).unwrap();
    }
    let mut cmd = Command::new(link);
    cmd.args(args);
    h.run(cmd, b"")
}

#[test]
fn dry_run_needs_no_account_and_touches_no_server() {
    let h = unused_server(|config| config.clear());
    let o = h.send(&["--dry-run", "-t"], MESSAGE);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let out = stdout(&o);
    assert!(out.contains("Account: none"), "{out}");
    assert!(
        out.contains("Envelope recipients: <someone@example.org>, <hidden@example.org>"),
        "{out}"
    );
    assert!(
        !out.contains("Bcc:"),
        "the Bcc header is not in the message: {out}"
    );
    assert!(
        out.contains("\r\nMessage-ID: <") && out.contains("\r\nDate: "),
        "{out}"
    );
    assert!(h.dead_letter().is_none());
    assert_eq!(h.server.connections(), 0);
}

#[test]
fn dry_run_with_an_account_shows_its_sender_and_qualified_addresses() {
    let h = unused_server(|_| {});
    let o = h.sendmail(&["--dry-run", "-i", "root"], b"Subject: cron\n\nout\n");
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let out = stdout(&o);
    assert!(out.contains("Account: test (127.0.0.1:"), "{out}");
    assert!(
        out.contains("Envelope sender: <sender@example.com>"),
        "{out}"
    );
    assert!(
        out.contains("Envelope recipients: <admin@example.com>"),
        "{out}"
    );
    assert_eq!(h.server.connections(), 0);
}

#[test]
fn bv_shows_where_each_recipient_goes_and_fails_for_one_that_goes_nowhere() {
    let h = unused_server(|_| {});
    let o = h.sendmail(&["-bv", "root", "bob", "x@y.org"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let out = stdout(&o);
    assert!(
        out.contains("root... deliverable: admin@example.com"),
        "{out}"
    );
    assert!(out.contains("bob... deliverable: bob@example.com"), "{out}");
    assert!(out.contains("x@y.org... deliverable: x@y.org"), "{out}");

    let h = unused_server(|config| *config = config.replace("domain = \"example.com\"\n", ""));
    let o = h.sendmail(&["-bv", "root", "nobody"], b"");
    assert_eq!(code(&o), 67, "{}", explain(&o));
    assert!(
        stdout(&o).contains("nobody... undeliverable"),
        "{}",
        explain(&o)
    );
    assert!(
        stdout(&o).contains("root... deliverable: admin@example.com"),
        "{}",
        explain(&o)
    );
}

#[test]
fn newaliases_counts_the_aliases_and_names_one_that_does_not_resolve() {
    let h = unused_server(|_| {});
    let o = as_named(&h, "newaliases", &[]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert!(stdout(&o).contains(": 1 aliases"), "{}", explain(&o));

    let h = unused_server(|config| {
        *config = config
            .replace("domain = \"example.com\"\n", "")
            .replace("root = \"admin@example.com\"", "root = \"ghost\"");
    });
    let o = as_named(&h, "newaliases", &[]);
    assert_eq!(code(&o), 78, "{}", explain(&o));
    assert!(stderr(&o).contains("alias `root`"), "{}", explain(&o));
}

#[test]
fn queue_remove_takes_a_message_out_unsent() {
    let h = Harness::new(ServerOptions {
        fault: Fault::Greeting421,
        ..ServerOptions::default()
    });
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let (ids, listing) = h.queue_listing();
    assert_eq!(ids.len(), 1, "{listing}");

    let o = h.own(&["queue", "remove", &ids[0]]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert!(
        stdout(&o).contains(&format!("{}: removed", ids[0])),
        "{}",
        explain(&o)
    );
    assert!(h.queue_listing().0.is_empty());
    assert_eq!(code(&h.own(&["queue", "remove", &ids[0]])), 64, "gone now");
    assert_eq!(code(&h.own(&["queue", "show", "../../etc/passwd"])), 64);
}

#[test]
fn log_since_keeps_recent_attempts() {
    let h = Harness::new(ServerOptions::default());
    assert_eq!(code(&h.send(&["-i", "rcpt@example.com"], MESSAGE)), 0);
    let recent = stdout(&h.own(&["log", "--since", "1h", "--format", "csv"]));
    assert_eq!(recent.lines().count(), 2, "header and one row: {recent}");
    assert!(
        recent
            .lines()
            .nth(1)
            .unwrap()
            .contains(",rcpt@example.com,sent,"),
        "{recent}"
    );
}
