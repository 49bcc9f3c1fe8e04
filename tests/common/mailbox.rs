//! tests/mta/mailbox_server.py (aiosmtpd: STARTTLS with the test PKI, XOAUTH2 for TEST_USER
//! with TEST_TOKEN, a Maildir) started as a child of the test, with its files in one
//! directory, and `Home`, a client's HOME pointed at it. Callers check
//! `skip::aiosmtpd_missing` first.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::config::{TestConfig, Value};
use super::harness::{
    code, isolate, queue_ids, run_with_limit, stderr, stdout, write_private, BIN,
};
use super::smtp_server::{TEST_TOKEN, TEST_USER};
use super::tls;

/// How long the server may take to print its port.
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

pub struct MailboxServer {
    pub child: Child,
    /// Kept open: the server exits when it closes (--stop-on-stdin-eof), so it dies with us.
    pub stdin: ChildStdin,
    /// The port it printed (the one `--port` asked for, or one it chose).
    pub port: u16,
}

/// Starts the server with its certificate and key, `server.log` and `Maildir/` in `dir`,
/// plus `args` (`--port N`, `--data-delay SECONDS`); panics, with its log, if it does not
/// print its port.
pub fn start(dir: &Path, args: &[String]) -> MailboxServer {
    let pki = tls::pki();
    let (cert, key) = (dir.join("server-cert.pem"), dir.join("server-key.pem"));
    std::fs::write(&cert, &pki.server_cert_pem).expect("write server cert");
    write_private(&key, &pki.server_key_pem);
    let server_log = std::fs::File::create(dir.join("server.log")).expect("log file");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mta/mailbox_server.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["--user", TEST_USER, "--token", TEST_TOKEN])
        .arg("--maildir")
        .arg(dir.join("Maildir"))
        .args(args)
        .arg("--stop-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(server_log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", script.display()));
    let stdin = child.stdin.take().expect("server stdin piped");

    // The first stdout line is the port; read it in a thread so a stuck server times out.
    let stdout = child.stdout.take().expect("server stdout piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(STARTUP_LIMIT).unwrap_or_default();
    let Ok(port) = line.trim().parse::<u16>() else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "mailbox_server.py printed {line:?} instead of its port; its log:\n{}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
    };
    MailboxServer { child, stdin, port }
}

/// The server on a port chosen before it started (so that mail can be queued while
/// nothing listens there), counting what arrives in its Maildir; killed when dropped.
pub struct OnPort {
    child: Child,
    _stdin: ChildStdin,
    maildir: PathBuf,
}

impl OnPort {
    /// [`start`] with `--port port` and `args`; panics, with the server's log, if it
    /// took another port.
    pub fn start(dir: &Path, port: u16, args: &[String]) -> OnPort {
        let mut all = vec!["--port".to_string(), port.to_string()];
        all.extend_from_slice(args);
        let server = start(dir, &all);
        assert_eq!(
            server.port,
            port,
            "mailbox_server.py took another port: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        OnPort {
            child: server.child,
            _stdin: server.stdin,
            maildir: dir.join("Maildir"),
        }
    }

    /// How many times each Message-ID arrived.
    pub fn arrivals(&self) -> BTreeMap<String, usize> {
        arrivals(&self.maildir)
    }

    pub fn delivered(&self) -> usize {
        self.arrivals().values().sum()
    }

    /// Waits until `n` messages are stored; panics after a minute.
    pub fn wait_for(&self, n: usize) {
        wait_for(&self.maildir, n, Duration::from_secs(60))
    }
}

impl Drop for OnPort {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many times each Message-ID arrived in the Maildir `maildir` (its `new/`).
pub fn arrivals(maildir: &Path) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(maildir.join("new")) else {
        return count;
    };
    for file in dir.flatten() {
        let text = String::from_utf8_lossy(&std::fs::read(file.path()).unwrap()).into_owned();
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap_or("(none)")
            .to_string();
        *count.entry(id).or_default() += 1;
    }
    count
}

/// Waits until `n` messages are in the Maildir `maildir`; panics after `limit`.
pub fn wait_for(maildir: &Path, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let delivered: usize = arrivals(maildir).values().sum();
        if delivered >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {delivered} messages arrived"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A HOME whose config points its account at the server on `port` (STARTTLS, XOAUTH2
/// with TEST_TOKEN, `connections`), with a `bin/sendmail` link; runs time out at `limit`.
pub struct Home {
    pub dir: tempfile::TempDir,
    limit: Duration,
}

impl Home {
    pub fn new(port: u16, connections: i64, limit: Duration) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let ca = tls::write_ca_file(dir.path());
        let secret = dir.path().join("secret");
        write_private(&secret, &format!("{TEST_TOKEN}\n"));
        TestConfig::new(port, &ca)
            .no_aliases()
            .account_field("auth", "xoauth2")
            .account_field("secret", Value::file(&secret))
            .account_field("connections", connections)
            .write(&dir.path().join("config.toml"));
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(BIN, dir.path().join("bin/sendmail")).unwrap();
        Home { dir, limit }
    }

    pub fn sendmail(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.dir.path().join("bin/sendmail"));
        cmd.args(args);
        isolate(
            &mut cmd,
            self.dir.path(),
            &self.dir.path().join("config.toml"),
        );
        cmd
    }

    /// `sendmail ARGS` running, its stdio piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.sendmail(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_limit(self.sendmail(args), stdin, self.limit)
    }

    /// How many messages `mailq` lists.
    pub fn queued(&self) -> usize {
        let out = self.run(&["-bp"], b"");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        queue_ids(&stdout(&out)).len()
    }

    /// Sends each of `messages` (`sendmail -i rcpt@example.com`) while nothing listens on
    /// the account's port yet: each is queued.
    pub fn queue_while_down(&self, messages: impl IntoIterator<Item = String>) {
        let before = self.queued();
        let mut sent = 0;
        for message in messages {
            let o = self.run(&["-i", "rcpt@example.com"], message.as_bytes());
            assert_eq!(
                code(&o),
                0,
                "nothing listens yet, so queued: {}",
                stderr(&o)
            );
            sent += 1;
        }
        assert_eq!(self.queued(), before + sent);
    }
}
