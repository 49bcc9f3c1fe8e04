//! A real submission server for tests, written by nobody here: Debian's Postfix, taking mail
//! on 127.0.0.1 only after STARTTLS and SASL XOAUTH2, with Dovecot's oauth2 passdb checking
//! each token at the fake OAuth server's introspection endpoint, delivering into one Maildir
//! per address. Its own instance in a temporary directory (configuration from
//! tests/mta/postfix/, run by tests/mta/postfix/instance), never the system's.
//!
//! Needs root and the Debian packages postfix and dovecot-core (scripts/install-test-deps).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::harness::write_private;
use super::tls;

/// Starting both daemons, and then the port answering with its greeting.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Stopping both daemons when the instance is dropped.
const STOP_LIMIT: Duration = Duration::from_secs(20);
/// The uid and gid that own the Maildirs (virtual(8) refuses root): nobody/nogroup.
const MAIL_ID: u32 = 65534;
/// The daemons are in /usr/sbin, not always on a test's PATH.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the real server cannot run here, if it cannot: not root, or a package is missing.
pub fn unavailable() -> Option<String> {
    for (program, package) in [
        ("/usr/sbin/postfix", "postfix"),
        ("/usr/sbin/dovecot", "dovecot-core"),
    ] {
        if !Path::new(program).exists() {
            return Some(format!(
                "{program} is missing (Debian package {package}; scripts/install-test-deps \
                 installs it)"
            ));
        }
    }
    // A Postfix master runs as root (it hands out the ports and drops to its users).
    match std::fs::metadata("/proc/self") {
        Ok(meta) if meta.uid() == 0 => None,
        Ok(meta) => Some(format!(
            "a Postfix instance needs root, this test runs as uid {} (run the tests as root)",
            meta.uid()
        )),
        Err(e) => Some(format!("cannot tell who runs this test (/proc/self: {e})")),
    }
}

/// True when the real server can run. Otherwise: under CI=true, fail; elsewhere, print why
/// `test` is skipped and return false.
pub fn available(test: &str) -> bool {
    super::skip::unless(test, unavailable())
}

/// A running Postfix + Dovecot instance. Dropping it stops both and removes its directory;
/// so does the end of the test process for an instance that is never dropped (in a static):
/// the helper script stops when its stdin, held only by this process, closes.
pub struct Postfix {
    pub port: u16,
    dir: PathBuf,
    script: Child,
    stdin: Option<ChildStdin>,
}

impl Postfix {
    /// Starts an instance whose Dovecot checks tokens at `introspection_url`. Panics, with
    /// both daemons' logs, when it does not come up within START_LIMIT.
    pub fn start(introspection_url: &str) -> Postfix {
        let dir = tempfile::Builder::new()
            .prefix("oauth-sendmail-postfix.")
            .tempdir()
            .expect("tempdir for the Postfix instance")
            .keep();
        let port = free_port();
        if let Err(e) = lay_out(&dir, port, introspection_url) {
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "cannot set up the Postfix instance in {}: {e}",
                dir.display()
            );
        }

        let script_path = templates().join("instance");
        let stderr = std::fs::File::create(dir.join("instance.log")).expect("instance.log");
        let mut script = Command::new(&script_path)
            .arg(&dir)
            .env("PATH", PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", script_path.display()));
        let stdin = script.stdin.take();
        let stdout = script.stdout.take().expect("stdout piped");
        let mut postfix = Postfix {
            port,
            dir,
            script,
            stdin,
        };

        // "started" on stdout once both daemons are launched; read in a thread so that a
        // stuck start times out.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let deadline = Instant::now() + START_LIMIT;
        let line = rx.recv_timeout(START_LIMIT).unwrap_or_default();
        if line.trim() != "started" {
            postfix.fail(&format!(
                "the instance script printed {line:?}, not \"started\""
            ));
        }
        if let Err(why) = postfix.wait_until_ready(deadline) {
            postfix.fail(&why);
        }
        postfix
    }

    /// The greeting on the port and Dovecot's auth socket, both before `deadline`.
    fn wait_until_ready(&self, deadline: Instant) -> Result<(), String> {
        let socket = self.dir.join("dovecot/run/auth-postfix");
        let mut last = String::from("nothing tried");
        while Instant::now() < deadline {
            match greeting(self.port) {
                Ok(line) if line.starts_with("220 ") && socket.exists() => return Ok(()),
                Ok(line) if line.starts_with("220 ") => {
                    last = format!("no Dovecot auth socket at {}", socket.display())
                }
                Ok(line) => last = format!("greeting {line:?}"),
                Err(e) => last = format!("127.0.0.1:{}: {e}", self.port),
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(format!("not ready within {START_LIMIT:?}: {last}"))
    }

    /// Stops what started, and panics with the logs.
    fn fail(&mut self, why: &str) -> ! {
        let logs = self.logs();
        let _ = self.script.kill();
        let _ = self.script.wait();
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.dir.join("postfix"))
            .arg("abort")
            .env("PATH", PATH)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(self.dir.join("dovecot/dovecot.conf"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
        panic!("the Postfix + Dovecot test instance did not start: {why}\n{logs}");
    }

    /// Postfix's log, Dovecot's log and the helper script's stderr, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["postfix.log", "dovecot.log", "instance.log"] {
            let content = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            text.push_str(&format!("--- {name} ---\n{content}"));
        }
        text
    }

    /// Postfix's log only.
    pub fn postfix_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postfix.log")).unwrap_or_default()
    }

    /// The Maildir of `local`@example.com.
    pub fn maildir(&self, local: &str) -> PathBuf {
        self.dir.join("mail/example.com").join(local)
    }

    /// The messages delivered to `local`@example.com, oldest first, as stored (LF line ends).
    pub fn messages(&self, local: &str) -> Vec<Vec<u8>> {
        let new = self.maildir(local).join("new");
        let Ok(entries) = std::fs::read_dir(&new) else {
            return Vec::new();
        };
        let mut found: Vec<(SystemTime, PathBuf)> = entries
            .flatten()
            .map(|e| {
                let modified = e.metadata().and_then(|m| m.modified());
                (modified.unwrap_or(SystemTime::UNIX_EPOCH), e.path())
            })
            .collect();
        found.sort();
        found
            .into_iter()
            .map(|(_, path)| {
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            })
            .collect()
    }

    /// Waits (at most `limit`) until Postfix's queue is empty, so that every message it
    /// accepted was delivered or bounced; false when it was not in time.
    pub fn wait_until_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let busy = ["maildrop", "incoming", "active", "deferred", "hold"]
                .iter()
                .any(|queue| has_files(&self.dir.join("queue").join(queue)));
            if !busy {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // End of file on its stdin: the script stops both daemons and removes the directory.
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.script.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.script.kill();
        let _ = self.script.wait();
    }
}

/// The configuration templates and the helper script.
fn templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mta/postfix")
}

/// The instance directory: Postfix's config, queue and data directories, Dovecot's config
/// and runtime directories, the Maildir base, the server certificate.
fn lay_out(dir: &Path, port: u16, introspection_url: &str) -> std::io::Result<()> {
    // Postfix's and Dovecot's users must reach their parts of it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for sub in ["postfix", "dovecot", "queue", "mail"] {
        std::fs::create_dir(dir.join(sub))?;
    }
    std::os::unix::fs::chown(dir.join("mail"), Some(MAIL_ID), Some(MAIL_ID))?;
    let fill = |name: &str, to: &str| -> std::io::Result<()> {
        let template = templates().join(name);
        let text = std::fs::read_to_string(&template)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", template.display())))?
            .replace("@DIR@", &dir.to_string_lossy())
            .replace("@PORT@", &port.to_string())
            .replace("@INTROSPECTION_URL@", introspection_url);
        std::fs::write(dir.join(to).join(name), text)
    };
    for name in ["main.cf", "master.cf", "mailboxes", "refused"] {
        fill(name, "postfix")?;
    }
    for name in ["dovecot.conf", "oauth2.conf.ext"] {
        fill(name, "dovecot")?;
    }
    let pki = tls::pki();
    std::fs::write(dir.join("server-cert.pem"), &pki.server_cert_pem)?;
    write_private(&dir.join("server-key.pem"), &pki.server_key_pem);
    Ok(())
}

/// A port nobody listens on now (the instance binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// The first line the server sends, read within a few seconds.
fn greeting(port: u16) -> std::io::Result<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\n") && bytes.len() < 512 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        bytes.push(byte[0]);
    }
    let _ = stream.write_all(b"QUIT\r\n");
    Ok(String::from_utf8_lossy(&bytes).trim_end().to_string())
}

fn has_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|e| e.path().is_file() || (e.path().is_dir() && has_files(&e.path())))
}
