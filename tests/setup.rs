//! `oauth-sendmail setup` end to end: with flags (a script) and on a terminal (a pty driven
//! by python3), against the fake OAuth provider and the test SMTP server, with the scripted
//! browser of tests/oauth_login.rs for its login.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::harness::{code, describe, isolate, stderr, stdout, Harness, BIN};
use common::oauth_server::{
    assert_no_oauth_secrets, explain, harness_with_oauth, write_browser, OAuthOptions, OAuthServer,
    CLIENT_ID, CLIENT_SECRET,
};
use common::smtp_server::TEST_USER;

/// Where setup writes in these tests: not the harness's own file.
fn setup_config(h: &Harness) -> PathBuf {
    h.home.path().join("setup/config.toml")
}

/// `setup` with the harness's environment, its configuration named with -C, the scripted
/// browser as $BROWSER.
fn setup_command(h: &Harness) -> Command {
    let config = setup_config(h);
    let mut cmd = Command::new(BIN);
    isolate(&mut cmd, h.home.path(), &config);
    cmd.arg("setup")
        .arg("-C")
        .arg(&config)
        .env("BROWSER", write_browser(h.home.path()));
    cmd
}

/// The flags that point the account at the test servers (what a custom setup would give).
fn server_flags(h: &Harness, oauth: &OAuthServer) -> Vec<String> {
    vec![
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        h.server.port.to_string(),
        "--ca-file".into(),
        h.server.ca_file.display().to_string(),
        "--auth-uri".into(),
        oauth.url("/authorize"),
        "--token-uri".into(),
        oauth.url("/token"),
    ]
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn setup_with_flags_writes_a_private_configuration_logs_in_and_sends_a_test_message() {
    let (oauth, h) = harness_with_oauth(OAuthOptions::default(), |c| c);
    let mut cmd = setup_command(&h);
    cmd.args([
        "--non-interactive",
        "--provider",
        "gmail",
        "--address",
        TEST_USER,
        "--client-id",
        CLIENT_ID,
        "--client-secret-stdin",
        "--store",
        "file",
        "--domain",
        "example.com",
        "--root-alias",
        "admin@example.com",
        "--test-to",
        "root",
    ])
    .args(server_flags(&h, &oauth));
    let o = h.run(cmd, format!("{CLIENT_SECRET}\n").as_bytes());
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_no_oauth_secrets(&oauth, &o);

    // What it says it did, and did.
    let config = setup_config(&h);
    let said = stdout(&o);
    assert!(
        said.contains(&format!("wrote {} (mode 600)", config.display())),
        "{said}"
    );
    assert!(said.contains("logged in account `gmail`"), "{said}");
    assert!(said.contains("sent a test message to root"), "{said}");
    assert_eq!(mode(&config), 0o600);
    let secret_file = config.with_file_name("gmail-client-secret");
    assert_eq!(mode(&secret_file), 0o600);
    assert_eq!(
        std::fs::read_to_string(&secret_file).unwrap(),
        format!("{CLIENT_SECRET}\n")
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains(CLIENT_SECRET), "{text}");
    assert_eq!(oauth.calls("authorization_code"), 1);

    // The test message went out with the login's token, to root's alias.
    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", h.server.transcript());
    assert_eq!(received[0].rcpt_to, ["admin@example.com"]);
    assert_eq!(received[0].mail_from, TEST_USER);
    assert_eq!(received[0].auth_mechanism.as_deref(), Some("XOAUTH2"));
    let data = String::from_utf8_lossy(&received[0].data);
    assert!(
        data.contains("Subject: oauth-sendmail setup test"),
        "{data}"
    );

    // A configuration with an account is not replaced without --force.
    let mut again = setup_command(&h);
    again.args(["--non-interactive", "--no-login", "--provider", "outlook"]);
    again.args(["--address", "other@example.org", "--client-id", "x"]);
    let o = h.run(again, b"");
    assert_eq!(code(&o), 73, "{}", describe(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
}

#[test]
fn setup_without_a_terminal_names_the_flag_it_needs() {
    let (mut oauth, mut h) = harness_with_oauth(OAuthOptions::default(), |c| c);
    oauth.expect_unused();
    h.server.expect_unused();
    let mut cmd = setup_command(&h);
    cmd.args(["--provider", "gmail", "--client-id", CLIENT_ID]);
    let o = h.run(cmd, b"");
    assert_eq!(code(&o), 64, "{}", describe(&o));
    assert!(
        stderr(&o).contains("oauth-sendmail: setup needs --address"),
        "{}",
        stderr(&o)
    );
    assert!(!setup_config(&h).exists());
}

/// Drives `setup` on a pty: waits for each prompt, types its answer, and prints everything
/// the terminal showed (the echo included) on stdout; exits with setup's status.
const PTY_DRIVER: &str = r#"
import json, os, pty, select, subprocess, sys, time
argv, answers = json.loads(sys.argv[1]), json.loads(sys.argv[2])
master, slave = pty.openpty()
child = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
os.close(slave)
seen = b""
def read_some(limit):
    global seen
    ready, _, _ = select.select([master], [], [], limit)
    if not ready:
        return False
    try:
        data = os.read(master, 4096)
    except OSError:
        return None
    if not data:
        return None
    seen += data
    return True
for prompt, answer in answers:
    deadline = time.time() + 30
    while prompt.encode() not in seen:
        if time.time() > deadline or read_some(1) is None:
            sys.stdout.write(seen.decode(errors="replace"))
            sys.exit(f"no prompt {prompt!r}")
    seen = seen.replace(prompt.encode(), b"<" + prompt.encode() + b">", 1)
    time.sleep(0.2)  # the echo is switched off after the prompt is written
    os.write(master, answer.encode() + b"\n")
deadline = time.time() + 60
while time.time() < deadline and read_some(1) is not None:
    pass
status = child.wait(timeout=30)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(status)
"#;

#[test]
fn setup_on_a_terminal_asks_hides_the_secret_and_does_it_all() {
    let (oauth, h) = harness_with_oauth(OAuthOptions::default(), |c| c);
    let setup = setup_command(&h);
    let mut argv: Vec<String> = std::iter::once(BIN.to_string())
        .chain(setup.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    argv.extend(server_flags(&h, &oauth));
    let answers = serde_json::json!([
        ["Provider (gmail, outlook, custom) [gmail]: ", ""],
        ["Address of the account (login and sender): ", TEST_USER],
        ["Google service account key file", ""],
        ["OAuth client id: ", CLIENT_ID],
        [
            "OAuth client secret (empty: none) (not shown): ",
            CLIENT_SECRET
        ],
        ["Token store (keyring, file) [keyring]: ", "file"],
        [
            "Domain for unqualified recipients (cron's root) [example.com]: ",
            ""
        ],
        [
            "Where mail to root goes [sender@example.com]: ",
            "admin@example.com"
        ],
        [
            "Send a test message to (empty: none) [sender@example.com]: ",
            "root"
        ],
    ]);
    let mut driver = Command::new("python3");
    driver
        .args(["-c", PTY_DRIVER])
        .arg(serde_json::to_string(&argv).unwrap())
        .arg(answers.to_string());
    for (key, value) in setup.get_envs() {
        match value {
            Some(value) => driver.env(key, value),
            None => driver.env_remove(key),
        };
    }
    let o = driver.output().expect("python3");
    let screen = stdout(&o);
    assert_eq!(code(&o), 0, "{screen}\n{}", explain(&h, &oauth, &o));
    // The answers typed are on the screen, the secret is not.
    assert!(screen.contains(CLIENT_ID), "{screen}");
    assert!(screen.contains("admin@example.com"), "{screen}");
    assert!(
        !screen.contains(CLIENT_SECRET),
        "the secret was echoed:\n{screen}"
    );
    assert_no_oauth_secrets(&oauth, &o);
    assert!(screen.contains("sent a test message to root"), "{screen}");

    let config = setup_config(&h);
    assert_eq!(mode(&config), 0o600);
    assert_eq!(
        std::fs::read_to_string(config.with_file_name("gmail-client-secret")).unwrap(),
        format!("{CLIENT_SECRET}\n")
    );
    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", h.server.transcript());
    assert_eq!(received[0].rcpt_to, ["admin@example.com"]);
}
