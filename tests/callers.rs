//! Each program that calls `sendmail` (the table in tests/common/callers.rs) runs the binary
//! through a `sendmail` symlink with its own argv and stdin; the in-process SMTP server must
//! receive the right envelope and bytes.

#[path = "common/callers.rs"]
mod callers;
mod common;

use common::harness::{code, stderr, Harness};
use common::smtp_server::ServerOptions;

/// Runs `name`'s argv and stdin through `sendmail` and checks what the server received.
fn run_caller(name: &str) {
    let caller = callers::caller(name);
    let h = Harness::new(ServerOptions::default());

    let out = h.sendmail(caller.argv, caller.stdin.as_bytes());

    assert_eq!(
        code(&out),
        0,
        "{name}: sendmail {:?} failed; stderr:\n{}\nserver transcript:\n{}",
        caller.argv,
        stderr(&out),
        h.server.transcript()
    );
    assert_eq!(
        stderr(&out),
        "",
        "{name}: a successful send must be silent on stderr"
    );
    assert!(
        h.dead_letter().is_none(),
        "{name}: wrote dead.letter although it exited 0"
    );

    let received = h.server.received();
    assert_eq!(
        received.len(),
        1,
        "{name}: expected one message, the server stored {}; transcript:\n{}",
        received.len(),
        h.server.transcript()
    );
    let message = &received[0];
    callers::assert_delivered(
        caller,
        &callers::Delivery {
            mail_from: &message.mail_from,
            mail_params: &message.mail_params,
            rcpt_to: &message.rcpt_to,
            data: &message.data,
        },
    );
}

macro_rules! caller_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_caller(stringify!($name));
            }
        )*

        /// Every caller in the table has a test here (a caller added to the table but not to
        /// this list fails).
        #[test]
        fn every_caller_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for caller in callers::CALLERS {
                assert!(tested.contains(&caller.name), "no test for caller {}", caller.name);
            }
        }
    };
}

caller_tests!(
    debian_cron,
    cronie,
    systemd_cron,
    bsd_mailx,
    s_nail,
    php_mail,
    git_send_email,
    mutt,
    logwatch,
    mdadm,
    fail2ban,
    unattended_upgrades,
);

/// The checks themselves must catch what they are meant to: feed `check` a delivery that
/// breaks each rule and see it complain. Guards against a check that always passes.
#[test]
fn check_catches_a_bad_delivery() {
    let caller = callers::caller("bsd_mailx");
    let data = b"To: ops@example.org\r\nCc: carol\r\nBcc: auditor@example.net\r\n\
                 Subject: Disk usage on web1\r\n\r\nbody\n";
    let problems = callers::check(
        caller,
        &callers::Delivery {
            mail_from: "root",
            mail_params: &[],
            rcpt_to: &["ops@example.org".to_string()],
            data,
        },
    );
    let all = problems.join("\n");
    for expected in [
        "MAIL FROM",
        "RCPT TO",
        "bare LF",
        "Bcc header",
        "0 Date headers",
        "0 Message-ID headers",
        "0 From headers",
        "Cc addresses",
        "body differs",
    ] {
        assert!(
            all.contains(expected),
            "check missed {expected:?}; it said:\n{all}"
        );
    }
}
