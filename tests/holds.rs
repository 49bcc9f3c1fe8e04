//! Accounts held, not mail bounced: a provider's quota reply (Gmail's and Microsoft's, in
//! their words, from the in-process SMTP server) queues the message and every later one of
//! the account without a connection, until the hold (`quota_hold`) is over; then they go
//! once each. And `status --check` / `--json` for monitoring, against the real binary.

mod common;

use std::process::Output;
use std::thread;
use std::time::Duration;

use common::harness::{code, explain, stderr, stdout, Harness};
use common::smtp_server::{Fault, QuotaReply, ServerOptions};

const MESSAGE: &[u8] = b"To: rcpt@example.com\nSubject: quota test\n\nnightly report\n";

fn harness(fault: Fault, settings: &[(&str, &str)]) -> Harness {
    let opts = ServerOptions {
        fault,
        ..ServerOptions::default()
    };
    Harness::with_config(opts, |config| config.settings(settings))
}

/// Every recipient the server got a message for, sorted.
fn recipients(h: &Harness) -> Vec<String> {
    let mut to: Vec<String> = h
        .server
        .received()
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    to.sort();
    to
}

fn ok(h: &Harness, o: &Output) {
    assert_eq!(code(o), 0, "{}", explain(h, o));
}

#[test]
fn each_providers_quota_reply_holds_the_account_then_its_mail_goes_once() {
    for quota in [
        QuotaReply::GmailDaily,
        QuotaReply::GmailRate,
        QuotaReply::MicrosoftQuota,
        QuotaReply::MicrosoftBusy,
    ] {
        let h = harness(Fault::Quota(quota), &[("quota_hold", "2s")]);
        let first = h.send(&["-i", "rcpt@example.com"], MESSAGE);
        ok(&h, &first);
        assert!(
            stderr(&first).contains("queued as"),
            "{quota:?}: {}",
            explain(&h, &first)
        );
        // The next message of the account waits with it, without a connection.
        let second = h.send(&["-i", "other@example.com"], MESSAGE);
        ok(&h, &second);
        assert!(
            stderr(&second).contains("is held until"),
            "{quota:?}: {}",
            explain(&h, &second)
        );
        assert_eq!(
            h.server.connections(),
            1,
            "{quota:?}: {}",
            h.server.transcript()
        );
        assert_eq!(h.queue_listing().0.len(), 2, "{quota:?}: nothing bounced");
        assert!(h.dead_letter().is_none(), "{quota:?}");

        h.server.set_fault(Fault::None);
        ok(&h, &h.own(&["queue", "flush"]));
        assert!(
            h.server.received().is_empty(),
            "{quota:?}: tried while held"
        );
        let status = h.own(&["status", "--check"]);
        assert_eq!(code(&status), 1, "{quota:?}: {}", explain(&h, &status));
        assert!(
            stdout(&status).starts_with("WARNING: account test held until"),
            "{quota:?}: {}",
            stdout(&status)
        );

        thread::sleep(Duration::from_millis(2100));
        ok(&h, &h.own(&["queue", "flush"]));
        let to = recipients(&h);
        assert_eq!(to, ["other@example.com", "rcpt@example.com"], "{quota:?}");
        assert!(h.queue_listing().0.is_empty(), "{quota:?}");
        // No bounce went anywhere: the server got the two messages, nothing more.
        assert_eq!(h.server.received().len(), 2, "{quota:?}");
        let status = h.own(&["status", "--check"]);
        assert_eq!(code(&status), 0, "{quota:?}: {}", explain(&h, &status));
        assert!(
            stdout(&status).starts_with("OK: 1 account ready, queue 0"),
            "{}",
            stdout(&status)
        );
    }
}

/// A 5xx that is no quota still bounces at once: the table is narrow.
#[test]
fn a_refusal_that_is_no_quota_is_not_held() {
    let h = harness(Fault::Rcpt550("rcpt@example.com".into()), &[]);
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_eq!(code(&o), 67, "{}", explain(&h, &o));
    assert!(!stderr(&o).contains("held"), "{}", explain(&h, &o));
    assert!(h.queue_listing().0.is_empty());
}

#[test]
fn status_json_and_check_report_deferred_mail() {
    let h = harness(Fault::Data451, &[]);
    ok(&h, &h.send(&["-i", "rcpt@example.com"], MESSAGE));
    let status = h.own(&["status", "--json"]);
    assert_eq!(code(&status), 0, "{}", explain(&h, &status));
    let json: serde_json::Value = serde_json::from_str(&stdout(&status)).expect("JSON");
    assert_eq!(json["mode"], "user", "{json}");
    assert_eq!(json["health"], "warning", "{json}");
    assert_eq!(json["queue"]["messages"], 1, "{json}");
    assert_eq!(json["queue"]["deferred"], 1, "{json}");
    assert_eq!(json["accounts"][0]["name"], "test", "{json}");
    assert_eq!(json["accounts"][0]["state"], "ready", "{json}");
    assert!(
        json["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("451"),
        "{json}"
    );
    let check = h.own(&["status", "--check"]);
    assert_eq!(code(&check), 1, "{}", explain(&h, &check));
    let first = stdout(&check)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.starts_with("WARNING: 1 message deferred, oldest "),
        "{first}"
    );
}

/// Retry early: once a fresh message goes through, the account's mail waiting for a
/// later retry time follows at once (if it rested `retry_initial` since its last try).
#[test]
fn a_fresh_message_that_goes_through_takes_waiting_mail_along_early() {
    let h = harness(Fault::Greeting421, &[("retry_initial", "1s")]);
    ok(&h, &h.send(&["-i", "old@example.com"], MESSAGE));
    // Two more failures: the next try is 4 s after the last.
    for _ in 0..2 {
        ok(&h, &h.own(&["queue", "retry", "--all"]));
    }
    thread::sleep(Duration::from_millis(1100));
    h.server.set_fault(Fault::None);
    ok(&h, &h.send(&["-i", "new@example.com"], MESSAGE));
    let to = recipients(&h);
    assert_eq!(to, ["new@example.com", "old@example.com"]);
    assert!(h.queue_listing().0.is_empty());
}
