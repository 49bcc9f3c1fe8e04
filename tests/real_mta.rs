//! Delivery through an SMTP server we did not write: aiosmtpd (tests/mta/mailbox_server.py),
//! STARTTLS and XOAUTH2 required, storing into a Maildir. Every caller of
//! tests/common/callers.rs goes through the binary and is checked in that Maildir.
//!
//! Needs python3 with aiosmtpd (scripts/install-test-deps). Without it the tests say why and
//! pass, except under CI=true, where a missing server is a failure.

#[path = "common/callers.rs"]
mod callers;
mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output};
use std::time::Duration;

use common::config::TestConfig;
use common::harness::{code, isolate, run_with_limit, stderr, write_private, BIN};
use common::mailbox;
use common::oauth_server::{
    assert_no_oauth_secrets, use_oauth, write_browser, OAuthOptions, OAuthServer,
};
use common::skip;
use common::smtp_server::{TEST_TOKEN, TEST_USER};
use common::tls;

/// How long one run of the binary may take.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// True when aiosmtpd can be imported; otherwise the test skips (fails under CI=true).
fn aiosmtpd_available(test: &str) -> bool {
    skip::unless(test, skip::aiosmtpd_missing())
}

/// tests/mta/mailbox_server.py running on a free port, with its Maildir and the files the
/// binary needs (CA, token, config, `sendmail` symlink) in one temporary directory.
struct Mailbox {
    child: Child,
    /// Kept open: the server exits when it closes (--stop-on-stdin-eof), so it dies with us.
    _stdin: ChildStdin,
    port: u16,
    dir: tempfile::TempDir,
    /// Maildir keys already handed out by `take_new`.
    seen: HashSet<String>,
}

/// One message as aiosmtpd stored it, with its envelope sidecar.
struct Stored {
    key: String,
    data: Vec<u8>,
    /// The sidecar's "name value" lines (see mailbox_server.py).
    envelope: Vec<(String, String)>,
}

impl Stored {
    fn values(&self, name: &str) -> Vec<String> {
        self.envelope
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn value(&self, name: &str) -> String {
        self.values(name).into_iter().next().unwrap_or_default()
    }
}

impl Mailbox {
    fn start() -> Mailbox {
        let dir = tempfile::tempdir().expect("tempdir");
        // Private, as a home is: a config holding a client secret (use_oauth) is refused
        // where others can read it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod 700 the mailbox's HOME");
        let server = mailbox::start(dir.path(), &[]);
        let mailbox = Mailbox {
            child: server.child,
            _stdin: server.stdin,
            port: server.port,
            dir,
            seen: HashSet::new(),
        };
        mailbox.write_client_files(TEST_TOKEN);
        mailbox
    }

    /// CA file, secret file, config and the `sendmail` symlink for the binary.
    fn write_client_files(&self, token: &str) {
        let home = self.dir.path();
        tls::write_ca_file(home);
        write_private(&home.join("secret"), &format!("{token}\n"));
        self.config().write(&self.config_path());
        let link = self.bin_dir().join("sendmail");
        if !link.exists() {
            std::fs::create_dir_all(self.bin_dir()).expect("create bin dir");
            std::os::unix::fs::symlink(BIN, &link).expect("symlink sendmail");
        }
    }

    /// The harness's config, at this server, with the token in `<dir>/secret`.
    fn config(&self) -> TestConfig {
        let home = self.dir.path();
        TestConfig::new(self.port, &home.join("test-ca.pem"))
            .xoauth2(TEST_USER, &home.join("secret"))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// Runs the binary as `sendmail ARGS` with `stdin`, HOME being the temporary directory.
    fn sendmail(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(self.bin_dir().join("sendmail"));
        cmd.args(args);
        self.run(cmd, stdin)
    }

    /// Runs `cmd` with HOME, config and state in the temporary directory.
    fn run(&self, mut cmd: Command, stdin: &[u8]) -> Output {
        isolate(&mut cmd, self.dir.path(), &self.config_path());
        run_with_limit(cmd, stdin, RUN_LIMIT)
    }

    /// Messages delivered since the last call, oldest first.
    fn take_new(&mut self) -> Vec<Stored> {
        let maildir = self.dir.path().join("Maildir");
        let mut fresh: Vec<(std::time::SystemTime, String)> = Vec::new();
        for entry in std::fs::read_dir(maildir.join("new")).expect("read Maildir/new") {
            let entry = entry.expect("Maildir entry");
            let key = entry.file_name().to_string_lossy().into_owned();
            if self.seen.insert(key.clone()) {
                let modified = entry.metadata().and_then(|m| m.modified()).expect("mtime");
                fresh.push((modified, key));
            }
        }
        fresh.sort();
        fresh
            .into_iter()
            .map(|(_, key)| {
                let data = std::fs::read(maildir.join("new").join(&key)).expect("read message");
                let sidecar = std::fs::read_to_string(maildir.join("envelope").join(&key))
                    .unwrap_or_else(|e| panic!("envelope sidecar of {key}: {e}"));
                let envelope = sidecar
                    .lines()
                    .map(|line| {
                        let (name, value) = line.split_once(' ').unwrap_or((line, ""));
                        (name.to_string(), value.to_string())
                    })
                    .collect();
                Stored {
                    key,
                    data,
                    envelope,
                }
            })
            .collect()
    }

    fn dead_letter(&self) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join("dead.letter")).ok()
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What is wrong with one caller's run through aiosmtpd (empty: nothing).
fn problems_with(mailbox: &mut Mailbox, caller: &callers::Caller) -> Vec<String> {
    let out = mailbox.sendmail(caller.argv, caller.stdin.as_bytes());
    let delivered = mailbox.take_new();
    let mut problems = Vec::new();
    if code(&out) != 0 {
        problems.push(format!(
            "exit code {}, stderr:\n{}",
            code(&out),
            stderr(&out)
        ));
    } else if !out.stderr.is_empty() {
        problems.push(format!("exit 0 but stderr is not empty:\n{}", stderr(&out)));
    }
    let [stored] = delivered.as_slice() else {
        problems.push(format!(
            "{} messages in the Maildir, expected 1",
            delivered.len()
        ));
        return problems;
    };

    let mail_params = stored.values("mail_option");
    let rcpt_to = stored.values("rcpt_to");
    let mail_from = stored.value("mail_from");
    let found = callers::check(
        caller,
        &callers::Delivery {
            mail_from: &mail_from,
            mail_params: &mail_params,
            rcpt_to: &rcpt_to,
            data: &stored.data,
        },
    );
    problems.extend(found);

    // The session really was TLS + XOAUTH2 as the account.
    if stored.value("auth_user") != TEST_USER {
        problems.push(format!("authenticated as {:?}", stored.value("auth_user")));
    }
    if !stored.value("tls").starts_with("TLS") {
        problems.push(format!("TLS version {:?}", stored.value("tls")));
    }

    // Python's email package, a parser independent of ours, reads the same addresses.
    let want = &caller.expect;
    for (name, expected) in [
        ("header_from", vec![want.from]),
        ("header_to", want.to.to_vec()),
        ("header_cc", want.cc.to_vec()),
    ] {
        let got = stored.values(name);
        if got != expected {
            problems.push(format!(
                "Python reads {name} as {got:?}, expected {expected:?}"
            ));
        }
    }
    for defect in stored.values("header_defect") {
        problems.push(format!("Python's email parser reports: {defect}"));
    }

    if !problems.is_empty() {
        problems.push(format!(
            "(message {} as stored:)\n{}",
            stored.key,
            String::from_utf8_lossy(&stored.data)
        ));
    }
    problems
}

#[test]
fn every_caller_delivers_through_aiosmtpd() {
    if !aiosmtpd_available("every_caller_delivers_through_aiosmtpd") {
        return;
    }
    let mut mailbox = Mailbox::start();

    let mut report = String::new();
    let mut failed = 0;
    for caller in callers::CALLERS {
        let problems = problems_with(&mut mailbox, caller);
        if !problems.is_empty() {
            failed += 1;
            report.push_str(&format!(
                "\n=== {} (sendmail {:?}):\n- {}\n",
                caller.name,
                caller.argv,
                problems.join("\n- ")
            ));
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} callers failed through aiosmtpd:{report}\n=== server log:\n{}",
        callers::CALLERS.len(),
        mailbox.server_log()
    );
}

/// A refused token at a real server (aiosmtpd answering the way Gmail does: 334 with a JSON
/// error, then 535) is exit 77, nothing delivered, and the message waits in the queue.
#[test]
fn refused_token_is_exit_77() {
    if !aiosmtpd_available("refused_token_is_exit_77") {
        return;
    }
    let mut mailbox = Mailbox::start();
    mailbox.write_client_files("ya29.a-token-the-server-does-not-know");
    let caller = callers::caller("logwatch");

    let out = mailbox.sendmail(caller.argv, caller.stdin.as_bytes());

    assert_eq!(
        code(&out),
        77,
        "expected 77 (authentication refused); stderr:\n{}\nserver log:\n{}",
        stderr(&out),
        mailbox.server_log()
    );
    assert!(
        mailbox.take_new().is_empty(),
        "a message was delivered with a wrong token"
    );
    assert!(
        mailbox.dead_letter().is_none(),
        "queued, so not a dead letter"
    );
    // Kept in the queue until the login is fixed (the queue's own tests check it further).
    assert!(
        stderr(&out).contains("queued as"),
        "the refused message was not queued; stderr:\n{}",
        stderr(&out)
    );
}

/// The "done when" for OAuth: `login` (scripted browser, fake provider) keeps a
/// refresh token, then cron mails go through a real XOAUTH2 server with the access token
/// the login got, and the second one reuses the cached token: no token request at all.
#[test]
fn oauth_login_then_cron_mail_through_the_real_server() {
    if !aiosmtpd_available("oauth_login_then_cron_mail_through_the_real_server") {
        return;
    }
    // The provider issues TEST_TOKEN, the one token mailbox_server.py accepts.
    let oauth = OAuthServer::start(OAuthOptions::default());
    let mut mailbox = Mailbox::start();
    use_oauth(mailbox.config(), &oauth).write(&mailbox.config_path());

    let mut login = Command::new(BIN);
    login
        .args(["login", "--account", "test", "--timeout", "20"])
        .env("BROWSER", write_browser(mailbox.dir.path()));
    let out = mailbox.run(login, b"");
    assert_eq!(code(&out), 0, "login failed: {}", stderr(&out));
    assert_eq!(oauth.calls("authorization_code"), 1, "{}", oauth.log());

    let caller = callers::caller("debian_cron");
    for _ in 0..2 {
        let out = mailbox.sendmail(caller.argv, caller.stdin.as_bytes());
        assert_eq!(
            code(&out),
            0,
            "stderr:\n{}\nserver log:\n{}",
            stderr(&out),
            mailbox.server_log()
        );
        assert_no_oauth_secrets(&oauth, &out);
    }
    let delivered = mailbox.take_new();
    assert_eq!(delivered.len(), 2, "server log:\n{}", mailbox.server_log());
    assert_eq!(
        oauth.token_requests(),
        1,
        "only the login's code exchange: {}",
        oauth.log()
    );
}

/// Issue 15: one process that connects to the same server twice resumes the TLS session
/// the second time (a ticket from the first), skipping the certificate checks that are
/// most of a handshake's cost. Here `sendmail -q` delivers one queued message for each of
/// two accounts of the same server, a connection each: the first verifies the
/// certificate, the second resumes (Python's ssl, OpenSSL, issues the tickets).
#[test]
fn a_second_connection_of_one_process_resumes_the_tls_session() {
    if !aiosmtpd_available("a_second_connection_of_one_process_resumes_the_tls_session") {
        return;
    }
    let mut mailbox = Mailbox::start();
    let two_accounts = |port: u16| mailbox.config().port(port).copy_account("test", "second");
    // Queued while nothing listens, so that one flush sends both.
    two_accounts(common::harness::free_port()).write(&mailbox.config_path());
    for account in ["test", "second"] {
        let out = mailbox.sendmail(
            &[
                "--account",
                account,
                "-i",
                "-f",
                TEST_USER,
                "admin@example.com",
            ],
            format!("Subject: through {account}\n\nbody\n").as_bytes(),
        );
        assert!(
            code(&out) == 0 && stderr(&out).contains("queued as"),
            "not queued: {}",
            stderr(&out)
        );
    }
    two_accounts(mailbox.port).write(&mailbox.config_path());

    let out = mailbox.sendmail(&["-q", "-v"], b"");

    let transcript = stderr(&out);
    assert_eq!(code(&out), 0, "sendmail -q failed:\n{transcript}");
    assert_eq!(
        mailbox.take_new().len(),
        2,
        "not both delivered:\n{transcript}"
    );
    let verified = transcript
        .matches("certificate of 127.0.0.1 verified")
        .count();
    let resumed = transcript.matches("session with 127.0.0.1 resumed").count();
    assert!(
        verified == 1 && resumed == 1,
        "expected one full handshake and one resumed, got {verified} and {resumed}:\n{transcript}"
    );
}
