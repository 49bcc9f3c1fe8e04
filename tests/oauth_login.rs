//! `login`, `logout` and the stores end to end: the real binary, a scripted browser
//! ($BROWSER), the fake OAuth provider standing in for Google or Microsoft, and the test
//! SMTP server checking the XOAUTH2 token that came out of it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use common::harness::{code, stderr, stdout, Harness, BIN};
use common::oauth_server::{
    assert_no_oauth_secrets, explain, harness_with_oauth, login, use_oauth, OAuthOptions,
    OAuthServer, USER_CODE,
};
use common::smtp_server::ServerOptions;

const MESSAGE: &[u8] = b"To: rcpt@example.com\nSubject: oauth test\n\nBody of the oauth test.\n";

fn state_file(h: &Harness, name: &str) -> std::path::PathBuf {
    h.home.path().join(".local/state/oauth-sendmail").join(name)
}

#[test]
fn login_with_a_scripted_browser_then_send_uses_its_token() {
    let (oauth, h) = harness_with_oauth(OAuthOptions::default(), |c| c);
    let o = login(&h, &[]);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert!(
        stdout(&o).contains("Logged in: account `test`"),
        "{}",
        stdout(&o)
    );
    assert_no_oauth_secrets(&oauth, &o);
    // What the browser was sent to: PKCE S256, state, and what yields a Google refresh token.
    let params = &oauth.authorize_params()[0];
    for (key, value) in [
        ("code_challenge_method", "S256"),
        ("access_type", "offline"),
        ("prompt", "consent"),
        ("login_hint", "sender@example.com"),
        ("scope", "https://mail.google.com/"),
    ] {
        assert_eq!(
            params.get(key).map(String::as_str),
            Some(value),
            "{params:?}"
        );
    }
    assert!(
        stderr(&o).contains("http://127.0.0.1:"),
        "the URL is printed too"
    );
    let page = std::fs::read_to_string(h.home.path().join("browser.log")).unwrap();
    assert!(page.starts_with("200 http://127.0.0.1:"), "{page}");
    assert!(page.contains("Logged in"), "{page}");
    assert_eq!(oauth.calls("authorization_code"), 1);

    // The refresh token is in the file store, owner-only.
    let refresh_file = state_file(&h, "test.refresh-token");
    let stored = std::fs::read_to_string(&refresh_file).unwrap();
    assert_eq!(vec![stored.trim().to_string()], oauth.live_refresh_tokens());
    let mode = std::fs::metadata(&refresh_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "refresh token file mode {mode:o}");

    // The access token from the login is cached: sending costs no token request.
    let o = h.send(&["-v", "-i", "rcpt@example.com"], MESSAGE);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_no_oauth_secrets(&oauth, &o);
    assert_eq!(oauth.token_requests(), 1);
    assert_eq!(h.server.received().len(), 1);
    assert_eq!(
        h.server.received()[0].auth_mechanism.as_deref(),
        Some("XOAUTH2")
    );
}

/// GETs `url` from the fake provider without following its redirect; returns Location.
fn redirect_location(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, target) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET /{target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .unwrap_or_else(|| panic!("no redirect: {answer}"))
        .to_string()
}

/// Runs `login --no-browser`, reads the address it prints, has the provider answer it as a
/// browser on another machine would, and pastes `edit(redirected address)` on stdin.
fn paste_login(h: &Harness, edit: impl Fn(String) -> String) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "login",
        "--account",
        "test",
        "--no-browser",
        "--timeout",
        "20",
    ])
    .env("HOME", h.home.path())
    .env("OAUTH_SENDMAIL_CONFIG", &h.config_path)
    .env("XDG_STATE_HOME", h.home.path().join(".local/state"))
    .env_remove("DBUS_SESSION_BUS_ADDRESS")
    .env_remove("XDG_RUNTIME_DIR")
    .env_remove("BROWSER")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let url = loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("login ended before printing the address:\n{seen}");
        }
        seen.push_str(&line);
        if let Some(url) = line.trim().strip_prefix("http://") {
            break format!("http://{url}");
        }
    };
    let location = redirect_location(&url);
    writeln!(stdin, "not an address").unwrap();
    writeln!(stdin, "{}", edit(location)).unwrap();
    drop(stdin);
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: out.into_bytes(),
        stderr: (seen + &rest).into_bytes(),
    }
}

#[test]
fn login_by_pasting_the_redirected_address() {
    let (oauth, h) = harness_with_oauth(OAuthOptions::default(), |c| c);
    let o = paste_login(&h, |location| location);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert!(
        stderr(&o).contains("That is not the address"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("ssh -L"), "{}", stderr(&o));
    assert_no_oauth_secrets(&oauth, &o);
    assert_eq!(oauth.calls("authorization_code"), 1);
    assert_eq!(oauth.live_refresh_tokens().len(), 1);
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
}

#[test]
fn a_pasted_address_with_another_state_is_refused() {
    let (oauth, h) = harness_with_oauth(OAuthOptions::default(), |c| c);
    let o = paste_login(&h, |location| location.replace("state=", "state=X"));
    assert_eq!(code(&o), 77, "{}", explain(&h, &oauth, &o));
    assert!(
        stderr(&o).contains("does not belong to this login"),
        "{}",
        stderr(&o)
    );
    assert_eq!(oauth.calls("authorization_code"), 0);
    assert!(!state_file(&h, "test.refresh-token").exists());
    let mut h = h;
    h.server.expect_unused();
}

#[test]
fn a_declined_login_says_so() {
    let (oauth, mut h) = harness_with_oauth(
        OAuthOptions {
            deny: true,
            ..OAuthOptions::default()
        },
        |c| c,
    );
    h.server.expect_unused();
    let o = login(&h, &[]);
    assert_eq!(code(&o), 77, "{}", explain(&h, &oauth, &o));
    assert!(stderr(&o).contains("access_denied"), "{}", stderr(&o));
}

#[test]
fn the_wait_for_the_browser_is_bounded() {
    let (mut oauth, mut h) = harness_with_oauth(OAuthOptions::default(), |c| c);
    oauth.expect_unused();
    h.server.expect_unused();
    let mut cmd = Command::new(BIN);
    cmd.args(["login", "--no-browser", "--timeout", "1"]);
    let o = h.run(cmd, b"");
    assert_eq!(code(&o), 75, "{}", explain(&h, &oauth, &o));
    assert!(stderr(&o).contains("the login timed out"), "{}", stderr(&o));
    // What --timeout said, not a second less.
    assert!(
        stderr(&o).contains("Waiting up to 1 second..."),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("oauth-sendmail: "), "{}", stderr(&o));
}

#[test]
fn device_login_for_microsoft() {
    let oauth = OAuthServer::start(OAuthOptions::default());
    let h = Harness::with_config(ServerOptions::default(), |c| {
        use_oauth(c, &oauth)
            .oauth("device_uri", oauth.url("/devicecode"))
            .account_field("provider", "outlook")
    });
    let mut cmd = Command::new(BIN);
    cmd.args(["login", "--device", "--timeout", "30"]);
    let o = h.run(cmd, b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert!(stderr(&o).contains(USER_CODE), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Waiting up to 30 seconds..."),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("/device"), "{}", stderr(&o));
    assert_no_oauth_secrets(&oauth, &o);
    assert_eq!(oauth.calls("devicecode"), 1);
    // One authorization_pending, then the token.
    assert_eq!(oauth.calls("device_code"), 2);
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_eq!(oauth.token_requests(), 2);
}

#[test]
fn device_login_is_refused_for_gmail_with_the_alternatives() {
    let (mut oauth, mut h) = harness_with_oauth(OAuthOptions::default(), |c| c);
    oauth.expect_unused();
    h.server.expect_unused();
    let mut cmd = Command::new(BIN);
    cmd.args(["login", "--device"]);
    let o = h.run(cmd, b"");
    assert_eq!(code(&o), 64, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("does not allow the Gmail scope"), "{err}");
    assert!(
        err.contains("--no-browser") && err.contains("ssh -L"),
        "{err}"
    );
}

#[test]
fn logout_forgets_and_sending_then_asks_for_login() {
    let (oauth, h) = harness_with_oauth(OAuthOptions::default(), |c| c);
    assert_eq!(code(&login(&h, &[])), 0);
    let mut cmd = Command::new(BIN);
    cmd.arg("logout");
    let o = h.run(cmd, b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert!(
        stdout(&o).contains("removed the refresh token"),
        "{}",
        stdout(&o)
    );
    assert!(!state_file(&h, "test.refresh-token").exists());
    assert!(!state_file(&h, "test.json").exists());
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_eq!(code(&o), 78, "{}", explain(&h, &oauth, &o));
    assert!(
        stderr(&o).contains("login --account test"),
        "{}",
        stderr(&o)
    );
    // Not logged in is a setup to finish: the message waits in the queue (issue 9, item 14).
    assert!(stderr(&o).contains("queued as"), "{}", stderr(&o));
    assert!(h.dead_letter().is_none(), "queued, so not a dead letter");
    assert_eq!(h.queue_listing().0.len(), 1);
    let mut h = h;
    h.server.expect_unused();
}

#[test]
fn logout_names_only_what_there_was() {
    let (oauth, h) = harness_with_oauth(
        OAuthOptions {
            lifetimes: vec![30],
            ..OAuthOptions::default()
        },
        |c| c,
    );
    assert_eq!(code(&login(&h, &[])), 0);
    // A refused refresh leaves the state file with the last error and no access token.
    oauth.revoke_all();
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_eq!(code(&o), 77, "{}", explain(&h, &oauth, &o));
    assert!(state_file(&h, "test.json").exists());
    let logout = || {
        let mut cmd = Command::new(BIN);
        cmd.arg("logout");
        h.run(cmd, b"")
    };
    let o = logout();
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    let out = stdout(&o);
    assert!(out.contains("removed the refresh token"), "{out}");
    assert!(
        !out.contains("cached access token"),
        "there was none: {out}"
    );
    assert!(!state_file(&h, "test.json").exists());
    let o = logout();
    assert!(
        stdout(&o).contains("had no tokens to forget"),
        "{}",
        stdout(&o)
    );
    let mut h = h;
    h.server.expect_unused();
}

#[test]
fn keyring_store_without_a_session_bus_says_how_to_use_a_file() {
    let (mut oauth, mut h) =
        harness_with_oauth(OAuthOptions::default(), |c| c.oauth("store", "keyring"));
    oauth.expect_unused();
    h.server.expect_unused();
    let o = login(&h, &[]);
    assert_eq!(code(&o), 78, "{}", explain(&h, &oauth, &o));
    let err = stderr(&o);
    assert!(err.contains("cannot reach the OS keyring"), "{err}");
    assert!(err.contains("no D-Bus session bus"), "{err}");
    assert!(err.contains("store = \"file\""), "{err}");
    assert_eq!(
        oauth.calls("authorize"),
        0,
        "the browser must not open for nothing"
    );
}

#[test]
fn without_a_store_setting_login_falls_back_to_a_file_and_remembers_it() {
    // The login's access token is already stale, so the send must find the refresh token
    // in the store the login chose: that is what "remembers" means.
    let oauth = OAuthServer::start(OAuthOptions {
        lifetimes: vec![30, 3600],
        ..OAuthOptions::default()
    });
    let h = Harness::with_config(ServerOptions::default(), |c| {
        use_oauth(c, &oauth).oauth_unset("store")
    });
    let o = login(&h, &[]);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert!(
        stderr(&o).contains("so the tokens go to a file"),
        "{}",
        stderr(&o)
    );
    assert!(state_file(&h, "test.refresh-token").exists());
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_eq!(oauth.calls("refresh_token"), 1, "{}", oauth.log());
}
