//! The commands around sending, through the real binary: `send --dry-run` (the first thing
//! a new user runs: no account, no network), `sendmail -bv`, `newaliases`, `queue remove`
//! and `log --since`.

mod common;

use std::process::{Command, Output};

use common::config::TestConfig;
use common::harness::{code, describe as explain, stderr, stdout, Harness, BIN};
use common::smtp_server::{Fault, ServerOptions};

const MESSAGE: &[u8] = b"To: someone@example.org\nBcc: hidden@example.org\nSubject: hi\n\nbody\n";

fn unused_server(edit: impl FnOnce(TestConfig) -> TestConfig) -> Harness {
    let mut h = Harness::with_config(ServerOptions::default(), edit);
    h.server.expect_unused();
    h
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
    let h = unused_server(|_| TestConfig::empty());
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
    let h = unused_server(|c| c);
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
    let h = unused_server(|c| c);
    let o = h.sendmail(&["-bv", "root", "bob", "x@y.org"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let out = stdout(&o);
    assert!(
        out.contains("root... deliverable: admin@example.com"),
        "{out}"
    );
    assert!(out.contains("bob... deliverable: bob@example.com"), "{out}");
    assert!(out.contains("x@y.org... deliverable: x@y.org"), "{out}");

    let h = unused_server(|c| c.no_domain());
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
    let h = unused_server(|c| c);
    let o = as_named(&h, "newaliases", &[]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert!(stdout(&o).contains(": 1 aliases"), "{}", explain(&o));

    let h = unused_server(|c| c.no_domain().alias("root", "ghost"));
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

/// Issue 9 item 18: clap's whole message (what is missing, the valid values), then our one
/// line, exit 64; under the sendmail name one line that still says what is wrong.
#[test]
fn usage_errors_show_clap_whole_message_then_one_summary_line() {
    let h = unused_server(|c| c);
    let o = h.own(&["queue", "retry"]);
    assert_eq!(code(&o), 64, "{}", explain(&o));
    let err = stderr(&o);
    assert!(err.contains("\n  <IDS>...\n"), "{err}");
    assert!(err.contains("Usage: oauth-sendmail queue retry"), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("oauth-sendmail: bad command line: ") && last.contains("<IDS>"),
        "the last line sums it up: {err}"
    );

    let o = h.own(&["log", "--status", "nope"]);
    assert_eq!(code(&o), 64, "{}", explain(&o));
    let err = stderr(&o);
    assert!(err.contains("[possible values: sent, queued"), "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap()
            .contains("possible values: sent"),
        "{err}"
    );

    let o = h.sendmail(&["-bt"], b"");
    assert_eq!(code(&o), 64, "{}", explain(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("possible values: m, p, s, v, i"), "{err}");
}

/// Issue 9 item 19: `-C FILE` and `--config FILE` name the configuration for every command,
/// before or after its name. A file that does not exist proves it was the one read (the
/// harness's own configuration would work).
#[test]
fn every_command_reads_the_configuration_given_with_c() {
    let h = unused_server(|c| c);
    let missing = h.home.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    let commands: [&[&str]; 8] = [
        &["send", "--dry-run", "x@y.z"],
        &["queue", "list"],
        &["queue", "flush"],
        &["queue", "remove", "--all"],
        &["log"],
        &["login"],
        &["logout"],
        &["status"],
    ];
    for command in commands {
        for flag in ["-C", "--config"] {
            let mut places = vec![[&[flag, missing][..], command].concat()];
            places.push([&command[..1], &[flag, missing], &command[1..]].concat());
            places.push([command, &[flag, missing]].concat());
            for args in places {
                let mut cmd = Command::new(BIN);
                cmd.args(&args);
                let o = h.run(cmd, b"");
                assert_eq!(code(&o), 78, "{args:?}: {}", explain(&o));
                assert!(
                    stderr(&o).contains(&format!("cannot read {missing}")),
                    "{args:?}: {}",
                    explain(&o)
                );
            }
        }
    }
    for name in ["mailq", "newaliases"] {
        let o = as_named(&h, name, &["-C", missing]);
        assert_eq!(code(&o), 78, "{name}: {}", explain(&o));
    }
}

/// Issue 9 item 25: `mailq --help` is help, as for the other names, not the queue.
#[test]
fn mailq_help_prints_help() {
    let h = unused_server(|c| c);
    for name in ["mailq", "newaliases"] {
        let o = as_named(&h, name, &["--help"]);
        assert_eq!(code(&o), 0, "{}", explain(&o));
        let out = stdout(&o);
        assert!(out.contains(&format!("Usage: {name} [OPTIONS]")), "{out}");
        assert!(out.contains("--config <FILE>"), "{out}");
    }
}

/// Issue 9 item 25: `queue remove --all` empties the queue.
#[test]
fn queue_remove_all_empties_the_queue() {
    let h = Harness::new(ServerOptions {
        fault: Fault::Greeting421,
        ..ServerOptions::default()
    });
    for _ in 0..2 {
        assert_eq!(code(&h.send(&["-i", "rcpt@example.com"], MESSAGE)), 0);
    }
    let (ids, listing) = h.queue_listing();
    assert_eq!(ids.len(), 2, "{listing}");
    let o = h.own(&["queue", "remove", "--all"]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    for id in &ids {
        assert!(
            stdout(&o).contains(&format!("{id}: removed")),
            "{}",
            explain(&o)
        );
    }
    assert!(h.queue_listing().0.is_empty());
    let o = h.own(&["queue", "remove", "--all"]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert_eq!(stdout(&o), "the queue is empty\n");
}

/// Issue 9 item 25: an empty `log` says, on stderr (stdout stays CSV or JSON), which file
/// it read.
#[test]
fn an_empty_log_names_its_file() {
    let h = unused_server(|c| c);
    let log_file = h
        .home
        .path()
        .join(".local/state/oauth-sendmail/delivery.log");
    for format in ["table", "csv", "json"] {
        let o = h.own(&["log", "--format", format]);
        assert_eq!(code(&o), 0, "{}", explain(&o));
        assert_eq!(
            stderr(&o),
            format!("no deliveries logged in {}\n", log_file.display()),
            "{format}"
        );
    }
    assert_eq!(stdout(&h.own(&["log", "--format", "json"])), "");
}
