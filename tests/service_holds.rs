//! The machine-wide service holds an account instead of bouncing or hammering it: a
//! provider's quota reply holds its mail until `quota_hold` is over, then it goes once; a
//! revoked refresh token holds it (logged once, `status --check` CRITICAL, exit 2) until
//! root logs in again, then it goes; an idle Microsoft login is refreshed to keep it alive.
//! As root, like tests/service.rs.

mod common;

use std::time::{Duration, Instant};

use common::harness::{code, stderr, stdout};
use common::oauth_server::{write_browser, OAuthOptions, OAuthServer};
use common::service::{require, System};
use common::smtp_server::{Fault, QuotaReply, ServerOptions};

fn message(subject: &str) -> Vec<u8> {
    format!("Subject: {subject}\n\nhello from {subject}\n").into_bytes()
}

/// `login` as root, its browser a script that follows the redirect.
fn login(system: &System, oauth: &OAuthServer) {
    let browser = write_browser(&system.path("bin"));
    let mut cmd = system.command(None, &["login", "--account", "test", "--timeout", "20"]);
    cmd.env("BROWSER", &browser);
    let out = common::harness::run_with_limit(cmd, b"", Duration::from_secs(30));
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), oauth.log());
}

fn occurrences(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn a_quota_reply_holds_the_account_and_its_mail_goes_once_the_hold_is_over() {
    let Some(users) = require() else { return };
    let opts = ServerOptions {
        fault: Fault::Quota(QuotaReply::MicrosoftQuota),
        ..ServerOptions::default()
    };
    let mut system = System::install(users, opts, "");
    system.set_top("quota_hold = \"3s\"");
    system.start();
    for (n, user) in [&users.www, &users.person].into_iter().enumerate() {
        let subject = format!("quota-{n}");
        let out = system.run(
            Some(user),
            &["send", "-i", "dest@example.net"],
            &message(&subject),
        );
        assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), system.log());
    }
    assert!(system.log_shows("held until"), "{}", system.log());
    assert!(system.server.received().is_empty());
    assert_eq!(system.queued().len(), 2, "both wait: {}", system.log());
    let out = system.run(Some(&users.person), &["status", "--check"], b"");
    assert_eq!(code(&out), 1, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("WARNING: account test held until"),
        "{}",
        stdout(&out)
    );

    system.server.set_fault(Fault::None);
    let received = system.wait_received(2, Duration::from_secs(20));
    assert_eq!(received.len(), 2, "{}", system.log());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        system.server.received().len(),
        2,
        "once each, and no bounce"
    );
    assert!(system.queued().is_empty());
    assert!(!system.delivery_log().contains("\"bounced\""));
    assert_eq!(
        occurrences(&system.log(), "held until"),
        1,
        "{}",
        system.log()
    );
}

#[test]
fn a_revoked_login_holds_the_account_until_root_logs_in_again() {
    let Some(users) = require() else { return };
    // Access tokens that do not outlive the margin: every session asks the endpoint.
    let oauth = OAuthServer::start(OAuthOptions {
        lifetimes: vec![1],
        ..OAuthOptions::default()
    });
    let mut system = System::install(users, ServerOptions::default(), "");
    system.use_oauth(&oauth, "");
    system.start();
    login(&system, &oauth);
    let out = system.run(
        Some(&users.www),
        &["send", "-i", "a@example.net"],
        &message("one"),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(system.wait_received(1, Duration::from_secs(20)).len(), 1);

    oauth.revoke_issued();
    let out = system.run(
        Some(&users.www),
        &["send", "-i", "b@example.net"],
        &message("two"),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(system.log_shows("needs a login"), "{}", system.log());
    let refreshes = oauth.calls("refresh_token");
    // More mail for the held account: taken, not tried, not logged again.
    for subject in ["three", "four"] {
        let out = system.run(
            Some(&users.person),
            &["send", "-i", "c@example.net"],
            &message(subject),
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        oauth.calls("refresh_token"),
        refreshes,
        "the held account was tried"
    );
    assert_eq!(
        occurrences(&system.log(), "needs a login"),
        1,
        "{}",
        system.log()
    );
    assert_eq!(system.queued().len(), 3);
    assert_eq!(system.server.received().len(), 1);

    for user in [None, Some(&users.person)] {
        let out = system.run(user, &["status", "--check"], b"");
        assert_eq!(code(&out), 2, "{}\n{}", stdout(&out), stderr(&out));
        assert!(
            stdout(&out).starts_with("CRITICAL: account test needs login since "),
            "{}",
            stdout(&out)
        );
    }
    let out = system.run(None, &["status"], b"");
    assert!(
        stdout(&out).contains("needs login since"),
        "{}",
        stdout(&out)
    );
    let out = system.run(Some(&users.person), &["status", "--json"], b"");
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["mode"], "system", "{json}");
    assert_eq!(json["health"], "critical", "{json}");
    assert_eq!(json["accounts"][0]["state"], "needs_login", "{json}");
    assert_eq!(json["queue"]["messages"], 3, "{json}");

    login(&system, &oauth);
    let received = system.wait_received(4, Duration::from_secs(20));
    assert_eq!(received.len(), 4, "{}", system.log());
    let until = Instant::now() + Duration::from_secs(10);
    while !system.queued().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = system.run(None, &["status", "--check"], b"");
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("OK: 1 account ready, queue 0"),
        "{}",
        stdout(&out)
    );
}

/// A Microsoft login idle for `keep_alive` is refreshed by the service, mail or not.
#[test]
fn an_idle_microsoft_login_is_kept_alive() {
    let Some(users) = require() else { return };
    let oauth = OAuthServer::start(OAuthOptions::default());
    let mut system = System::install(users, ServerOptions::default(), "keep_alive = \"2s\"");
    system.use_oauth(&oauth, "");
    system.edit_config("provider = \"gmail\"", "provider = \"outlook\"");
    system.start();
    login(&system, &oauth);
    let after_login = oauth.calls("refresh_token");
    assert!(
        system.log_shows("refresh token used to keep the login alive"),
        "{}",
        system.log()
    );
    assert!(
        oauth.calls("refresh_token") > after_login,
        "{}",
        oauth.log()
    );
    // No mail was needed for it: the SMTP server stays unused.
    system.server.expect_unused();
}

/// A message queued while the server is down goes out within seconds of its return (the
/// service probes the server), not at its retry time a minute later; and once a message
/// goes through, the account's other waiting mail follows.
#[test]
fn mail_queued_while_the_server_is_down_goes_out_soon_after_it_returns() {
    use common::smtp_server::TestServer;
    let Some(users) = require() else { return };
    let mut system = System::install(users, ServerOptions::default(), "");
    let port = common::harness::free_port();
    system.edit_config(
        &format!("port = {}\n", system.server.port),
        &format!("port = {port}\n"),
    );
    system.server.expect_unused();
    system.start();
    let out = system.run(
        Some(&users.www),
        &["send", "-i", "a@example.net"],
        &message("down"),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(system.log_shows("deferred 1"), "{}", system.log());
    std::thread::sleep(Duration::from_secs(3));
    let server = TestServer::start_on(ServerOptions::default(), port);
    let back = Instant::now();
    let until = back + Duration::from_secs(15);
    while server.received().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.received().len(), 1, "{}", system.log());
    assert!(back.elapsed() < Duration::from_secs(15));
}
