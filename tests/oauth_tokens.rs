//! The token engine on the send path, through the real binary: a cached token costs no
//! token request, an expired one exactly one refresh, a refused one one refresh and one
//! retry (not a loop); rotation, the refresh lock, invalid_grant (exit 77, guidance, the
//! message kept), an unreachable token endpoint (75), service accounts, client
//! credentials, `status`; and no secret in anything printed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::thread;

use common::harness::{code, free_port, stderr, stdout, Harness, BIN};
use common::oauth_server::{
    assert_no_oauth_secrets, explain, harness_with_oauth, login, use_oauth, use_service_account,
    write_service_account_key, OAuthOptions, OAuthServer, CLIENT_ID, CLIENT_SECRET,
};
use common::smtp_server::{ServerOptions, TEST_TOKEN, TEST_USER};

const MESSAGE: &[u8] = b"To: rcpt@example.com\nSubject: token test\n\nBody of the token test.\n";
const BODY: &str = "Body of the token test.";
/// An access token the test SMTP server refuses (it accepts only TEST_TOKEN).
const REFUSED: &str = "ya29.refused-by-the-server-MUST-NOT-LEAK";

/// A logged-in account "test" against a fresh provider with `opts`.
fn logged_in(opts: OAuthOptions) -> (OAuthServer, Harness) {
    let (oauth, h) = harness_with_oauth(opts, |c| c);
    let o = login(&h, &[]);
    assert_eq!(code(&o), 0, "login: {}", explain(&h, &oauth, &o));
    (oauth, h)
}

fn send(h: &Harness, oauth: &OAuthServer) -> Output {
    let o = h.send(&["-v", "-i", "rcpt@example.com"], MESSAGE);
    assert_no_oauth_secrets(oauth, &o);
    o
}

fn status(h: &Harness, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("status").args(args);
    h.run(cmd, b"")
}

#[test]
fn sends_within_the_lifetime_cost_one_token_request() {
    let (oauth, h) = logged_in(OAuthOptions::default());
    for _ in 0..3 {
        let o = send(&h, &oauth);
        assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
        assert!(
            stderr(&o).contains("using the cached access token"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(h.server.received().len(), 3);
    // The login's code exchange is the only token request.
    assert_eq!(oauth.token_requests(), 1, "{}", oauth.log());
}

#[test]
fn an_expired_token_costs_one_refresh_per_send() {
    // 30 s is inside the safety margin: every cached token counts as expired.
    let (oauth, h) = logged_in(OAuthOptions {
        lifetimes: vec![30],
        ..OAuthOptions::default()
    });
    for n in 1..=2 {
        let o = send(&h, &oauth);
        assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
        assert_eq!(oauth.calls("refresh_token"), n, "{}", oauth.log());
    }
    assert_eq!(h.server.received().len(), 2);
}

#[test]
fn a_refused_token_means_one_refresh_and_one_retry() {
    let (oauth, h) = logged_in(OAuthOptions {
        access_tokens: vec![REFUSED.to_string(), TEST_TOKEN.to_string()],
        ..OAuthOptions::default()
    });
    let o = send(&h, &oauth);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_eq!(oauth.calls("refresh_token"), 1, "{}", oauth.log());
    assert_eq!(h.server.connections(), 2);
    assert_eq!(h.server.received().len(), 1);
    assert!(h.dead_letter().is_none());
    // The new token was cached: the next send needs no token request.
    let o = send(&h, &oauth);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_eq!(oauth.calls("refresh_token"), 1);
}

#[test]
fn a_server_that_refuses_every_token_is_not_looped_on() {
    let (oauth, h) = logged_in(OAuthOptions {
        access_tokens: vec![REFUSED.to_string()],
        ..OAuthOptions::default()
    });
    let o = send(&h, &oauth);
    assert_eq!(code(&o), 77, "{}", explain(&h, &oauth, &o));
    assert_eq!(oauth.calls("refresh_token"), 1, "{}", oauth.log());
    assert_eq!(h.server.connections(), 2);
    assert!(
        stderr(&o).contains("a newly issued token was refused too"),
        "{}",
        stderr(&o)
    );
    assert_queued_not_dead(&h, &o);
}

/// Kept for after the fix: in the queue (mailq shows it), not in dead.letter.
fn assert_queued_not_dead(h: &common::harness::Harness, o: &std::process::Output) {
    assert!(stderr(o).contains("queued as"), "{}", stderr(o));
    assert!(h.dead_letter().is_none(), "queued, so not a dead letter");
    let (ids, listing) = h.queue_listing();
    assert_eq!(ids.len(), 1, "{listing}");
    let shown = stdout(&h.own(&["queue", "show", &ids[0]]));
    assert!(shown.contains(BODY), "the queued message is whole: {shown}");
}

#[test]
fn invalid_grant_exits_77_with_guidance_and_keeps_the_message() {
    let (oauth, h) = logged_in(OAuthOptions {
        lifetimes: vec![30],
        ..OAuthOptions::default()
    });
    oauth.revoke_all();
    let o = send(&h, &oauth);
    assert_eq!(code(&o), 77, "{}", explain(&h, &oauth, &o));
    let err = stderr(&o);
    for needle in [
        "oauth-sendmail: cannot get an access token for account `test`",
        "invalid_grant",
        "the refresh token was revoked or expired; run `oauth-sendmail login --account test`",
        "Google apps left in Testing status lose their tokens after 7 days",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert_queued_not_dead(&h, &o);
    assert_eq!(h.server.connections(), 0, "nothing to send with");

    // status shows the failure, and still no secret.
    let o = status(&h, &[]);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_no_oauth_secrets(&oauth, &o);
    let out = stdout(&o);
    assert!(
        out.contains("last error:") && out.contains("invalid_grant"),
        "{out}"
    );
    // When, then what: no brackets inside brackets.
    let line = out.lines().find(|l| l.contains("last error:")).unwrap();
    let value = line.split_once("last error:").unwrap().1.trim();
    assert!(
        value.contains(" UTC (") && value.contains(" ago): cannot get an access token"),
        "{line}"
    );
    assert!(!line.contains("))"), "{line}");
    let mut h = h;
    h.server.expect_unused();
}

#[test]
fn an_unreachable_token_endpoint_is_a_temporary_failure() {
    let (oauth, h) = logged_in(OAuthOptions {
        lifetimes: vec![30],
        ..OAuthOptions::default()
    });
    let closed = free_port();
    let mut h = h;
    h.write_config(|c| c.oauth("token_uri", format!("http://127.0.0.1:{closed}/token")));
    // With the default queue the message waits, exit 0 and a one-line notice...
    let o = send(&h, &oauth);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert!(
        stderr(&o).contains("cannot reach the token endpoint"),
        "{}",
        stderr(&o)
    );
    assert_queued_not_dead(&h, &o);
    // ...and with queue = "never" it is exit 75 and dead.letter.
    h.write_config(|c| c.queue("never"));
    let o = send(&h, &oauth);
    assert_eq!(code(&o), 75, "{}", explain(&h, &oauth, &o));
    assert!(stderr(&o).contains("temporary"), "{}", stderr(&o));
    assert!(h.dead_letter().is_some());
    let mut h = h;
    h.server.expect_unused();
}

#[test]
fn rotated_refresh_tokens_are_stored() {
    let (oauth, h) = logged_in(OAuthOptions {
        lifetimes: vec![30],
        rotate: true,
        ..OAuthOptions::default()
    });
    // Each refresh voids the token it used: the second works only if the first's
    // replacement was stored.
    for n in 1..=3 {
        let o = send(&h, &oauth);
        assert_eq!(code(&o), 0, "send {n}: {}", explain(&h, &oauth, &o));
        assert!(stderr(&o).contains("stored the new (rotated) refresh token"));
    }
    let stored = std::fs::read_to_string(
        h.home
            .path()
            .join(".local/state/oauth-sendmail/test.refresh-token"),
    )
    .unwrap();
    assert_eq!(vec![stored.trim().to_string()], oauth.live_refresh_tokens());
}

#[test]
fn concurrent_senders_refresh_once_under_the_lock() {
    // The login's token is already expired; the refreshed ones live an hour, and refresh
    // tokens rotate: a second refresh without the lock would use a voided token.
    let (oauth, h) = logged_in(OAuthOptions {
        lifetimes: vec![30, 3600],
        rotate: true,
        refresh_delay: std::time::Duration::from_millis(700),
        ..OAuthOptions::default()
    });
    let outputs: Vec<Output> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| h.send(&["-i", "rcpt@example.com"], MESSAGE)))
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for o in &outputs {
        assert_eq!(code(o), 0, "{}", explain(&h, &oauth, o));
        assert_no_oauth_secrets(&oauth, o);
    }
    assert_eq!(oauth.calls("refresh_token"), 1, "{}", oauth.log());
    assert_eq!(h.server.received().len(), 4);
}

/// An account that acts as TEST_USER through the test service account.
fn service_account(oauth: &OAuthServer, key_mode: u32) -> Harness {
    let mut h = Harness::new(ServerOptions::default());
    let key = h.home.path().join("sa.json");
    write_service_account_key(&key);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(key_mode)).unwrap();
    // No client, no store: the key file is the credential.
    h.write_config(|c| use_service_account(c, oauth, &key));
    h
}

#[test]
fn service_account_jwt_for_the_mailbox_then_cached() {
    let oauth = OAuthServer::start(OAuthOptions::default());
    let h = service_account(&oauth, 0o600);
    for _ in 0..2 {
        let o = send(&h, &oauth);
        assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    }
    assert_eq!(oauth.calls("jwt_bearer"), 1, "{}", oauth.log());
    assert_eq!(oauth.token_requests(), 1);
    let claims = &oauth.jwt_claims()[0];
    assert_eq!(claims["sub"], TEST_USER);
    assert_eq!(claims["scope"], "https://mail.google.com/");
    assert_eq!(h.server.received().len(), 2);
}

#[test]
fn a_service_account_key_readable_by_others_is_refused() {
    let mut oauth = OAuthServer::start(OAuthOptions::default());
    oauth.expect_unused();
    let mut h = service_account(&oauth, 0o644);
    h.server.expect_unused();
    let o = send(&h, &oauth);
    assert_eq!(code(&o), 78, "{}", explain(&h, &oauth, &o));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("PRIVATE KEY"));
}

#[test]
fn microsoft_client_credentials_need_no_login() {
    let oauth = OAuthServer::start(OAuthOptions::default());
    let h = Harness::with_config(ServerOptions::default(), |c| {
        use_oauth(c, &oauth)
            .oauth("client_credentials", true)
            .oauth("tenant", "contoso.onmicrosoft.com")
            .account_field("provider", "outlook")
            .oauth_unset("store")
            .oauth_unset("auth_uri")
    });
    let o = send(&h, &oauth);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    let o = send(&h, &oauth);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_eq!(oauth.calls("client_credentials"), 1, "{}", oauth.log());
    let o = status(&h, &[]);
    assert!(stdout(&o).contains(&format!("client credentials of client {CLIENT_ID}")));
    assert_no_oauth_secrets(&oauth, &o);
}

#[test]
fn status_shows_state_and_check_authenticates_without_sending() {
    let (oauth, h) = logged_in(OAuthOptions::default());
    let o = status(&h, &["--check", "-v"]);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_no_oauth_secrets(&oauth, &o);
    let out = stdout(&o);
    for needle in [
        "account test",
        "server:         127.0.0.1:",
        "store:          the file ",
        "refresh token:  present",
        "access token:   expires ",
        "last refreshed: ",
        "last error:     none",
        "check:          ok",
    ] {
        assert!(out.contains(needle), "stdout lacks {needle:?}:\n{out}");
    }
    assert!(
        stderr(&o).contains("AUTH XOAUTH2 (redacted)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(h.server.connections(), 1);
    assert!(h.server.received().is_empty());
    // The client secret never shows, neither does the token cache's content.
    assert!(!out.contains(CLIENT_SECRET));
}

/// A refused login is CRITICAL: `status --check` exits as a Nagios plugin (2), its
/// verdict first.
#[test]
fn status_check_failure_is_critical() {
    let (oauth, h) = logged_in(OAuthOptions {
        access_tokens: vec![REFUSED.to_string()],
        ..OAuthOptions::default()
    });
    let o = status(&h, &["--check"]);
    assert_eq!(code(&o), 2, "{}", explain(&h, &oauth, &o));
    assert!(
        stdout(&o).starts_with("CRITICAL: account test: check failed: "),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("check:          FAILED"),
        "{}",
        stdout(&o)
    );
    assert_no_oauth_secrets(&oauth, &o);
}

#[test]
fn a_5xx_or_429_from_the_token_endpoint_is_temporary_whatever_its_error_says() {
    for (status, error) in [
        ("503 Service Unavailable", "invalid_grant"),
        ("500 Internal Server Error", "invalid_request"),
        ("429 Too Many Requests", "rate_limited"),
    ] {
        let (oauth, h) = logged_in(OAuthOptions {
            lifetimes: vec![30],
            ..OAuthOptions::default()
        });
        oauth.fail_token_requests(status, error);
        let o = send(&h, &oauth);
        assert_eq!(code(&o), 0, "{status}: {}", explain(&h, &oauth, &o));
        let err = stderr(&o);
        assert!(err.contains(&status[..3]), "{status}: {err}");
        assert!(
            !err.contains("oauth-sendmail login"),
            "{status}: not a refused login: {err}"
        );
        assert_queued_not_dead(&h, &o);
        let mut h = h;
        h.server.expect_unused();
    }
}
