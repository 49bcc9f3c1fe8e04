//! The keyring store against a real Secret Service (gnome-keyring): login puts the refresh
//! token there (and nowhere on disk), a refresh reads it and stores the rotated one, a send
//! with a valid cached token needs no keyring at all, logout deletes it. `secret-tool`
//! (libsecret) looks at the keyring independently of our code.
//!
//! scripts/test runs the suite inside a private D-Bus session with gnome-keyring unlocked
//! and sets OAUTH_SENDMAIL_TEST_KEYRING=1; without that the test would write into the
//! developer's own keyring, so it is skipped (and fails under CI=true).

mod common;

use std::ffi::OsString;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::harness::{code, stdout, Harness, BIN};
use common::oauth_server::{
    assert_no_oauth_secrets, explain, harness_with_oauth, write_browser, OAuthOptions,
};
use common::skip::skip;
use common::tmpfs::Tmpfs;

const MESSAGE: &[u8] = b"To: rcpt@example.com\nSubject: keyring test\n\nBody.\n";

/// The private session's bus address, or `None` (skipped) outside scripts/test.
fn keyring_session(test: &str) -> Option<OsString> {
    let opted_in = std::env::var("OAUTH_SENDMAIL_TEST_KEYRING").as_deref() == Ok("1");
    let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").filter(|b| !b.is_empty());
    let why = match (opted_in, bus) {
        (true, Some(bus)) => return Some(bus),
        (true, None) => "OAUTH_SENDMAIL_TEST_KEYRING=1 but DBUS_SESSION_BUS_ADDRESS is not set",
        (false, _) => "not inside scripts/test's private keyring session (OAUTH_SENDMAIL_TEST_KEYRING is not 1)",
    };
    skip(
        test,
        format!("{why}: run scripts/test, which starts gnome-keyring"),
    );
    None
}

/// What `secret-tool` finds for the account's refresh token (`None`: nothing).
fn secret_tool_lookup() -> Option<String> {
    secret_tool_lookup_on(None)
}

/// The same on `bus` (`None`: the bus of the environment).
fn secret_tool_lookup_on(bus: Option<&OsString>) -> Option<String> {
    let mut cmd = Command::new("secret-tool");
    cmd.args([
        "lookup",
        "service",
        "oauth-sendmail",
        "username",
        "test refresh-token",
    ]);
    if let Some(bus) = bus {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", bus);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run secret-tool (scripts/install-test-deps installs libsecret-tools)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The binary with `args`, talking to the private session bus.
fn run_with_bus(h: &Harness, bus: &OsString, args: &[&str], browser: bool) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("DBUS_SESSION_BUS_ADDRESS", bus);
    if browser {
        cmd.env("BROWSER", write_browser(h.home.path()));
    }
    h.run(cmd, MESSAGE)
}

#[test]
fn keyring_round_trip_with_a_real_secret_service() {
    let Some(bus) = keyring_session("keyring_round_trip_with_a_real_secret_service") else {
        return;
    };
    let (oauth, h) = harness_with_oauth(
        OAuthOptions {
            // The login's token is expired at once; refreshed ones live an hour.
            lifetimes: vec![30, 3600],
            rotate: true,
            ..OAuthOptions::default()
        },
        |c| c.oauth("store", "keyring"),
    );
    let check = |o: &Output| assert_no_oauth_secrets(&oauth, o);

    let o = run_with_bus(&h, &bus, &["login", "--timeout", "20"], true);
    assert_eq!(code(&o), 0, "login: {}", explain(&h, &oauth, &o));
    check(&o);
    assert!(
        stdout(&o).contains("the OS keyring (Secret Service)"),
        "{}",
        stdout(&o)
    );
    let live = oauth.live_refresh_tokens();
    assert_eq!(
        secret_tool_lookup().as_ref(),
        live.first(),
        "not in the keyring"
    );
    let state = h.home.path().join(".local/state/oauth-sendmail");
    assert!(
        !state.join("test.refresh-token").exists(),
        "written to a file too"
    );

    // Expired: the refresh reads the keyring and stores the rotated token there.
    let o = run_with_bus(&h, &bus, &["send", "-v", "-i", "rcpt@example.com"], false);
    assert_eq!(code(&o), 0, "send: {}", explain(&h, &oauth, &o));
    check(&o);
    assert_eq!(oauth.calls("refresh_token"), 1);
    let live = oauth.live_refresh_tokens();
    assert_eq!(live.len(), 1);
    assert_eq!(
        secret_tool_lookup().as_ref(),
        live.first(),
        "rotated token not stored"
    );

    // A valid cached token: no keyring needed, so no session bus either.
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_eq!(
        code(&o),
        0,
        "send without a bus: {}",
        explain(&h, &oauth, &o)
    );
    assert_eq!(oauth.token_requests(), 2);

    let o = run_with_bus(&h, &bus, &["status"], false);
    assert_eq!(code(&o), 0, "status: {}", explain(&h, &oauth, &o));
    check(&o);
    assert!(
        stdout(&o).contains("refresh token:  present"),
        "{}",
        stdout(&o)
    );

    let o = run_with_bus(&h, &bus, &["logout"], false);
    assert_eq!(code(&o), 0, "logout: {}", explain(&h, &oauth, &o));
    assert!(stdout(&o).contains("OS keyring"), "{}", stdout(&o));
    assert_eq!(
        secret_tool_lookup(),
        None,
        "logout left the token in the keyring"
    );
    assert_eq!(h.server.received().len(), 2);
}

/// A D-Bus session bus of this test's own with gnome-keyring on it, its keyrings in
/// `data` (XDG_DATA_HOME); stopped when dropped (gnome-keyring leaves with its bus).
struct PrivateKeyring {
    bus: OsString,
    bus_pid: String,
}

impl PrivateKeyring {
    fn start(home: &std::path::Path, data: &std::path::Path) -> Result<PrivateKeyring, String> {
        let out = Command::new("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("dbus-daemon: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut lines = text.lines();
        let (Some(bus), Some(pid)) = (lines.next(), lines.next()) else {
            return Err(format!("dbus-daemon printed {text:?}"));
        };
        let keyring = PrivateKeyring {
            bus: OsString::from(bus),
            bus_pid: pid.trim().to_string(),
        };
        let runtime = home.join("run");
        std::fs::create_dir_all(&runtime).map_err(|e| e.to_string())?;
        let mut daemon = Command::new("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &keyring.bus)
            .env("XDG_DATA_HOME", data)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("HOME", home)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("gnome-keyring-daemon: {e}"))?;
        daemon
            .stdin
            .take()
            .unwrap()
            .write_all(b"pass")
            .map_err(|e| e.to_string())?;
        let started = daemon.wait().map_err(|e| e.to_string())?;
        if !started.success() {
            return Err(format!("gnome-keyring-daemon --unlock: {started}"));
        }
        Ok(keyring)
    }

    /// What `secret-tool` finds on this bus for the account's refresh token.
    fn lookup(&self) -> Option<String> {
        secret_tool_lookup_on(Some(&self.bus))
    }
}

impl Drop for PrivateKeyring {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.bus_pid).status();
    }
}

#[test]
fn a_rotated_token_the_keyring_cannot_take_is_kept_and_used() {
    const TEST: &str = "a_rotated_token_the_keyring_cannot_take_is_kept_and_used";
    let (oauth, h) = harness_with_oauth(
        OAuthOptions {
            lifetimes: vec![30],
            rotate: true,
            ..OAuthOptions::default()
        },
        |c| c.oauth("store", "keyring"),
    );
    // The keyrings and the state directory on one small disk, as in one home.
    let local = h.home.path().join(".local");
    let ready = Tmpfs::mount(&local, "1m").and_then(|tmpfs| {
        PrivateKeyring::start(h.home.path(), &local.join("share")).map(|k| (tmpfs, k))
    });
    // Declared in this order, the bus goes first, then the disk under it.
    let (tmpfs, keyring) = match ready {
        Ok(ready) => ready,
        Err(why) => {
            let (mut oauth, mut h) = (oauth, h);
            oauth.expect_unused();
            h.server.expect_unused();
            return skip(TEST, why);
        }
    };
    let o = run_with_bus(&h, &keyring.bus, &["login", "--timeout", "20"], true);
    assert_eq!(code(&o), 0, "login: {}", explain(&h, &oauth, &o));
    assert_eq!(
        keyring.lookup(),
        oauth.live_refresh_tokens().first().cloned()
    );

    let filler = tmpfs.fill();
    let o = run_with_bus(&h, &keyring.bus, &["send", "-i", "rcpt@example.com"], false);
    assert_eq!(
        code(&o),
        0,
        "send on a full disk: {}",
        explain(&h, &oauth, &o)
    );
    assert_no_oauth_secrets(&oauth, &o);
    let err = common::harness::stderr(&o);
    assert!(
        err.contains("cannot store the rotated refresh token in the OS keyring")
            && err.contains("test.refresh-token.rescued"),
        "{err}"
    );
    let rescued = local.join("state/oauth-sendmail/test.refresh-token.rescued");
    let kept = std::fs::read_to_string(&rescued).unwrap();
    let live = oauth.live_refresh_tokens();
    assert_eq!(vec![kept.lines().next().unwrap().to_string()], live);

    // Room again: the next refresh uses the kept token (the keyring's is void) and puts
    // its successor in the keyring.
    std::fs::remove_file(filler).unwrap();
    let o = run_with_bus(&h, &keyring.bus, &["send", "-i", "rcpt@example.com"], false);
    assert_eq!(code(&o), 0, "send with room: {}", explain(&h, &oauth, &o));
    assert_eq!(oauth.calls("refresh_token"), 2);
    assert_eq!(
        keyring.lookup(),
        oauth.live_refresh_tokens().first().cloned()
    );
    assert!(!rescued.exists(), "the keyring holds the newest now");
    assert_eq!(h.server.received().len(), 2);
}
