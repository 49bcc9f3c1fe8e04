//! The configuration file as a file, through the real binary: who may write it (ssh's
//! rule, as its commands run as the caller), who may read it when it holds a secret,
//! what is said when there is none (every place looked at, and the shipped example), and
//! `status` and `sendmail -bv` running the checks a send makes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::config::{TestConfig, Value};
use common::harness::{
    code, describe as explain, isolate, run_with_limit, stderr, stdout, Harness, BIN,
};
use common::oauth_server::{use_oauth, OAuthOptions, OAuthServer, CLIENT_SECRET};
use common::skip::skip;
use common::smtp_server::{AuthCheck, ServerOptions};

fn unused_server(edit: impl FnOnce(TestConfig) -> TestConfig) -> Harness {
    unused(ServerOptions::default(), edit)
}

/// A harness whose SMTP server is not meant to be called.
fn unused(opts: ServerOptions, edit: impl FnOnce(TestConfig) -> TestConfig) -> Harness {
    let mut h = Harness::with_config(opts, edit);
    h.server.expect_unused();
    h
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `oauth-sendmail status -C CONFIG` in the harness.
fn status_of(h: &Harness, config: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("status").arg("-C").arg(config);
    h.run(cmd, b"")
}

/// The harness's config with its secret replaced by a command that leaves a mark when run.
fn with_marking_command(h: &Harness) -> (String, PathBuf) {
    let mark = h.home.path().join("command-ran");
    let command = format!("touch {} && echo token", mark.display());
    let config = h
        .config
        .clone()
        .account_field("secret", Value::command(&command));
    (config.render(), mark)
}

#[test]
fn a_config_others_may_write_is_refused_before_its_command_runs() {
    let h = unused_server(|c| c);
    let (text, mark) = with_marking_command(&h);
    std::fs::write(&h.config_path, text).unwrap();
    chmod(&h.config_path, 0o666);
    let o = status_of(&h, &h.config_path);
    assert_eq!(code(&o), 78, "{}", explain(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("run: chmod go-w {}", h.config_path.display())),
        "{err}"
    );
    assert!(err.contains("mode 666"), "{err}");
    assert!(!mark.exists(), "the command of a file others may write ran");

    // Safe again: it is used (and status runs the command, as a send would).
    chmod(&h.config_path, 0o644);
    let o = status_of(&h, &h.config_path);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert!(mark.exists());
}

#[test]
fn a_directory_others_may_write_is_refused_but_a_sticky_one_of_roots_is_not() {
    let h = unused_server(|c| c);
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let shared = h.home.path().join("shared");
    let inner = shared.join("conf");
    std::fs::create_dir_all(&inner).unwrap();
    let config = inner.join("config.toml");
    std::fs::write(&config, &text).unwrap();
    chmod(&config, 0o600);
    for mode in [0o775, 0o757, 0o777] {
        chmod(&shared, mode);
        let o = status_of(&h, &config);
        assert_eq!(code(&o), 78, "{mode:o}: {}", explain(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("the directory {}", shared.display()))
                && err.contains(&format!("run: chmod go-w {}", shared.display())),
            "{mode:o}: {err}"
        );
    }
    // A symbolic link is followed to the file it names, and that is what is checked.
    let link = h.home.path().join("link.toml");
    std::os::unix::fs::symlink(&config, &link).unwrap();
    let o = status_of(&h, &link);
    assert_eq!(code(&o), 78, "{}", explain(&o));
    // Like /tmp: root's and sticky. Nobody can replace what is ours in it.
    if !is_root() {
        return skip("sticky directory", "it must belong to root: run as root");
    }
    chmod(&shared, 0o1777);
    let o = status_of(&h, &config);
    assert_eq!(code(&o), 0, "{}", explain(&o));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_config_of_another_user_is_refused() {
    let h = unused_server(|c| c);
    if !is_root() {
        return skip(
            "a_config_of_another_user_is_refused",
            "chown needs root: run as root",
        );
    }
    // Hand the file to nobody.
    let chown = Command::new("chown")
        .arg("65534")
        .arg(&h.config_path)
        .status()
        .unwrap();
    assert!(chown.success());
    let o = status_of(&h, &h.config_path);
    assert_eq!(code(&o), 78, "{}", explain(&o));
    assert!(
        stderr(&o).contains("belongs to user id 65534"),
        "{}",
        explain(&o)
    );
}

#[test]
fn an_inline_secret_in_a_config_others_can_read_is_refused() {
    let mut oauth = OAuthServer::start(OAuthOptions::default());
    oauth.expect_unused();
    let h = unused_server(|c| use_oauth(c, &oauth));
    assert!(std::fs::read_to_string(&h.config_path)
        .unwrap()
        .contains(&format!("client_secret = \"{CLIENT_SECRET}\"")));
    // The temporary HOME is 0700: nobody else gets to the file, whatever its mode.
    chmod(&h.config_path, 0o644);
    let o = status_of(&h, &h.config_path);
    assert!(
        !stderr(&o).contains("cannot use the configuration"),
        "{}",
        explain(&o)
    );
    // Opened up, as /etc is: refused, and the secret is not shown.
    chmod(h.home.path(), 0o755);
    let o = status_of(&h, &h.config_path);
    assert_eq!(code(&o), 78, "{}", explain(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("run: chmod 600 {}", h.config_path.display())),
        "{err}"
    );
    assert!(err.contains("client_secret of account `test`"), "{err}");
    assert!(!err.contains(CLIENT_SECRET), "{err}");
    for mode in [0o640, 0o604] {
        chmod(&h.config_path, mode);
        assert_eq!(code(&status_of(&h, &h.config_path)), 78, "{mode:o}");
    }
    chmod(&h.config_path, 0o600);
    let o = status_of(&h, &h.config_path);
    assert!(
        !stderr(&o).contains("cannot use the configuration"),
        "{}",
        explain(&o)
    );
    chmod(h.home.path(), 0o700);
}

#[test]
fn a_config_readable_by_all_without_inline_secrets_is_fine() {
    // /etc/oauth-sendmail/config.toml at 0644: secrets in files, commands or stores.
    let h = unused_server(|c| c);
    chmod(h.home.path(), 0o755);
    chmod(&h.config_path, 0o644);
    let o = status_of(&h, &h.config_path);
    chmod(h.home.path(), 0o700);
    assert_eq!(code(&o), 0, "{}", explain(&o));
}

/// The binary with no configuration anywhere: no -C, no $OAUTH_SENDMAIL_CONFIG, nothing in
/// the (empty) HOME, and /etc has none.
fn without_config(args: &[&str]) -> Output {
    assert!(
        !Path::new("/etc/oauth-sendmail/config.toml").exists(),
        "this machine has /etc/oauth-sendmail/config.toml: the test cannot see the no-config case"
    );
    let home = tempfile::tempdir().unwrap();
    let sendmail = home.path().join("sendmail");
    std::os::unix::fs::symlink(BIN, &sendmail).unwrap();
    let (program, args) = match args.split_first() {
        Some((&"sendmail", rest)) => (sendmail, rest),
        _ => (PathBuf::from(BIN), args),
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    isolate(&mut cmd, home.path(), Path::new("/unused"));
    cmd.env_remove("OAUTH_SENDMAIL_CONFIG");
    run_with_limit(cmd, b"", std::time::Duration::from_secs(30))
}

#[test]
fn without_a_config_every_place_looked_at_is_named_and_the_example_shipped() {
    let o = without_config(&["status"]);
    assert_eq!(code(&o), 78, "{}", explain(&o));
    let err = stderr(&o);
    let places = [
        "-C/--config",
        "$OAUTH_SENDMAIL_CONFIG",
        "/.config/oauth-sendmail/config.toml",
        "/etc/oauth-sendmail/config.toml",
    ];
    let mut last = 0;
    for place in places {
        let at = err
            .find(place)
            .unwrap_or_else(|| panic!("{place} not named: {err}"));
        assert!(at >= last, "not in the order they are tried: {err}");
        last = at;
    }
    assert!(err.contains("contrib/config.example.toml"), "{err}");
    assert!(!err.contains("quick start"), "{err}");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/config.example.toml");
    assert!(example.is_file(), "the example it points to is shipped");
}

#[test]
fn bv_without_an_account_does_not_say_deliverable() {
    let o = without_config(&["sendmail", "-bv", "root@example.com"]);
    assert_ne!(code(&o), 0, "{}", explain(&o));
    assert!(!stdout(&o).contains("deliverable"), "{}", explain(&o));
    assert!(
        stderr(&o).contains("no account to send with"),
        "{}",
        explain(&o)
    );
    // A file with no account in it: the same.
    let h = unused_server(|c| c.no_accounts());
    let o = h.sendmail(&["-bv", "root"], b"");
    assert_eq!(code(&o), 78, "{}", explain(&o));
    assert!(!stdout(&o).contains("deliverable"), "{}", explain(&o));
}

/// The harness's account "test" twice: as "test" and as "other".
fn two_accounts(config: TestConfig) -> TestConfig {
    config.copy_account("test", "other")
}

#[test]
fn status_fails_when_every_send_would() {
    // Two accounts and no default: a plain `sendmail root` cannot pick one.
    let mut h = unused_server(two_accounts);
    let o = h.own(&["status"]);
    assert_eq!(code(&o), 78, "{}", explain(&o));
    assert!(
        stdout(&o).contains("default account:  none: several accounts and no default"),
        "{}",
        explain(&o)
    );
    let err = stderr(&o);
    assert!(
        err.contains("oauth-sendmail: a send would fail: several accounts and no default"),
        "{err}"
    );
    assert!(err.contains("set default_account"), "{err}");
    // Naming the account is what a send with --account does: that one is fine.
    let o = h.own(&["status", "--account", "other"]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    // With a default, fine.
    h.write_config(|c| c.set("default_account", "other"));
    let o = h.own(&["status"]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert!(
        stdout(&o).contains("default account:  other"),
        "{}",
        explain(&o)
    );
}

#[test]
fn status_fails_when_the_secret_cannot_be_read() {
    let h = unused_server(|c| c);
    std::fs::remove_file(h.home.path().join("secret")).unwrap();
    let o = h.own(&["status"]);
    assert_eq!(code(&o), 78, "{}", explain(&o));
    assert!(
        stdout(&o).contains("credentials:    a ready token or password from the file")
            && stdout(&o).contains("FAILED: cannot use the secret file"),
        "{}",
        explain(&o)
    );
    assert!(stderr(&o).contains("a send would fail"), "{}", explain(&o));
}

#[test]
fn status_fails_for_an_account_not_logged_in() {
    let mut oauth = OAuthServer::start(OAuthOptions::default());
    oauth.expect_unused();
    let h = unused_server(|c| use_oauth(c, &oauth));
    let o = h.own(&["status"]);
    assert_eq!(code(&o), 78, "{}", explain(&o));
    assert!(
        stdout(&o).contains("refresh token:  none: run `oauth-sendmail login --account test`"),
        "{}",
        explain(&o)
    );
    assert!(
        stderr(&o).contains("a send would fail: account `test` is not logged in"),
        "{}",
        explain(&o)
    );
}

#[test]
fn status_shows_from_and_user_only_where_there_is_a_login() {
    let relay = unused_server(|c| c);
    let h = unused(
        ServerOptions {
            auth: AuthCheck::None,
            ..ServerOptions::default()
        },
        |c| c,
    );
    let o = h.own(&["status"]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let out = stdout(&o);
    assert!(out.contains("  from:           sender@"), "{out}");
    assert!(!out.contains("user:"), "no login, no user: {out}");
    let o = relay.own(&["status"]);
    assert!(stdout(&o).contains("  user:           "), "{}", explain(&o));
}

#[test]
fn state_and_queue_directories_left_at_0755_are_made_private() {
    let mut h = Harness::new(ServerOptions::default());
    let home = h.home.path().to_path_buf();
    let state = home.join(".local/state/oauth-sendmail");
    let chosen_parent = home.join("spool");
    let queue = chosen_parent.join("oauth-sendmail");
    h.write_config(|c| c.queue("always").set("queue_dir", &queue));
    // As an older version, or mkdir under umask 022, left them.
    for dir in [&state, &queue] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let default_queue = state.join("queue");
    std::fs::create_dir_all(&default_queue).unwrap();
    for dir in [&state, &default_queue, &chosen_parent, &queue] {
        chmod(dir, 0o755);
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let o = h.send(&["-i", "rcpt@example.com"], b"Subject: x\n\nbody\n");
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert_eq!(mode(&queue), 0o700, "the queue directory");
    assert_eq!(mode(&chosen_parent), 0o755, "the administrator's directory");
    // The default queue, inside the state directory: both.
    h.write_config(|c| c.unset("queue_dir"));
    let o = h.send(&["-i", "rcpt@example.com"], b"Subject: y\n\nbody\n");
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert_eq!(mode(&default_queue), 0o700, "the default queue directory");
    assert_eq!(mode(&state), 0o700, "the state directory");
    assert_eq!(h.server.received().len(), 2);
}
