//! The machine-wide service under test: real system users (made with useradd when
//! missing), a root directory laid out as the package lays out /, the daemon started as
//! root (it drops to its own user), and the binary run as other users with setpriv. Needs
//! root; without it a test fails under CI=true and is skipped otherwise.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::harness::{run_with_limit, BIN};
use super::smtp_server::{Received, ServerOptions, TestServer, TEST_TOKEN, TEST_USER};

/// A local user, as the tests use it.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl User {
    /// `setpriv` arguments that run a program as this user, its groups included.
    pub fn setpriv(&self) -> Vec<String> {
        vec![
            "setpriv".into(),
            "--reuid".into(),
            self.uid.to_string(),
            "--regid".into(),
            self.gid.to_string(),
            "--init-groups".into(),
        ]
    }

    /// `program` as this user.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let setpriv = self.setpriv();
        let mut cmd = Command::new(&setpriv[0]);
        cmd.args(&setpriv[1..]).arg(program);
        cmd
    }
}

/// The service's own user, a www-data-like user with no home, an ordinary user; and the
/// binary where they may all run it.
pub struct Users {
    pub service: User,
    pub www: User,
    pub person: User,
    pub bin: PathBuf,
}

/// The binary copied to a place every user may traverse (the build tree may be in a
/// private home). Once per process, before any test starts a program: a copy written
/// while another thread forks would make that exec fail with ETXTBSY. Copies of
/// processes that are gone are removed.
fn shared_binary() -> PathBuf {
    if let Ok(list) = std::fs::read_dir("/tmp") {
        for entry in list.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let gone = name
                .strip_prefix("oas-bin-")
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = PathBuf::from(format!("/tmp/oas-bin-{}", std::process::id()));
    mkdir(&dir, 0o755, None);
    let bin = dir.join("oauth-sendmail");
    std::fs::copy(BIN, &bin).expect("copy the binary");
    chmod(&bin, 0o755);
    bin
}

fn id(flag: &str, name: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn ensure_user(name: &str, args: &[&str]) -> User {
    if id("-u", name).is_none() {
        let out = Command::new("useradd")
            .args(args)
            .arg(name)
            .output()
            .expect("run useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let home = Command::new("getent")
        .args(["passwd", name])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(':')
                .nth(5)
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    User {
        name: name.to_string(),
        uid: id("-u", name).expect("uid"),
        gid: id("-g", name).expect("gid"),
        home: PathBuf::from(home),
    }
}

/// The users, or `None` (the test returns) when this is not root and not CI.
pub fn require() -> Option<&'static Users> {
    static USERS: OnceLock<Option<Users>> = OnceLock::new();
    USERS
        .get_or_init(|| {
            // SAFETY: geteuid cannot fail.
            let root = unsafe { libc::geteuid() } == 0;
            let tools = ["useradd", "setpriv"].iter().all(|tool| {
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
            if !root || !tools {
                let why = "the service tests need root, useradd and setpriv (util-linux)";
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{why}: CI must run them");
                }
                eprintln!("SKIPPED: {why}");
                return None;
            }
            let system = [
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
            ];
            Some(Users {
                service: ensure_user("oas-service", &system),
                www: ensure_user("oas-www", &system),
                person: ensure_user("oas-person", &["--create-home", "--user-group"]),
                bin: shared_binary(),
            })
        })
        .as_ref()
}

/// One installed service: its root, the SMTP server it delivers to, the daemon.
pub struct System {
    pub root: PathBuf,
    pub server: TestServer,
    pub bin: PathBuf,
    service: User,
    daemon: Option<Child>,
    daemon_log: Arc<Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

fn chown(path: &Path, user: &User) {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn mkdir(path: &Path, mode: u32, owner: Option<&User>) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    if let Some(owner) = owner {
        chown(path, owner);
    }
    chmod(path, mode);
}

impl System {
    /// Installs the service under a fresh root in /tmp: `extra` is appended to its
    /// configuration (inside `[service]`, or further tables).
    pub fn install(users: &Users, opts: ServerOptions, extra: &str) -> System {
        let dir = tempfile::Builder::new()
            .prefix("oas-root-")
            .tempdir_in("/tmp")
            .expect("a root under /tmp");
        let root = dir.path().to_path_buf();
        chmod(&root, 0o755);
        let server = TestServer::start(opts);
        let service = users.service.clone();
        mkdir(&root.join("bin"), 0o755, None);
        let bin = users.bin.clone();
        let etc = root.join("etc/oauth-sendmail");
        mkdir(&etc, 0o755, None);
        let ca = etc.join("ca.pem");
        std::fs::copy(&server.ca_file, &ca).expect("copy the CA");
        chmod(&ca, 0o644);
        let state = root.join("var/lib/oauth-sendmail");
        mkdir(&root.join("var/lib"), 0o755, None);
        mkdir(&state, 0o700, Some(&service));
        let token = state.join("token");
        std::fs::write(&token, format!("{TEST_TOKEN}\n")).unwrap();
        chown(&token, &service);
        chmod(&token, 0o600);
        let spool = root.join("var/spool/oauth-sendmail");
        mkdir(&spool, 0o755, Some(&service));
        mkdir(&spool.join("maildrop"), 0o1733, Some(&service));
        mkdir(&root.join("run/oauth-sendmail"), 0o755, Some(&service));
        let system = System {
            root,
            server,
            bin,
            service,
            daemon: None,
            daemon_log: Arc::default(),
            _dir: dir,
        };
        system.write_config(extra);
        system
    }

    /// The account gets its tokens from `oauth` (a login is needed) instead of the ready
    /// token; its client secret in a file of the service's.
    pub fn use_oauth(&self, oauth: &super::oauth_server::OAuthServer, extra: &str) {
        let secret = self.path("var/lib/oauth-sendmail/client-secret");
        std::fs::write(&secret, super::oauth_server::CLIENT_SECRET).unwrap();
        chown(&secret, &self.service);
        chmod(&secret, 0o600);
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        let secret_line = text.lines().find(|l| l.starts_with("secret = ")).unwrap();
        let text = text
            .replace(&format!("{secret_line}\n"), "")
            .replace("provider = \"custom\"", "provider = \"gmail\"");
        let text = format!(
            "{text}\n[accounts.test.oauth]\nclient_id = \"{}\"\nclient_secret = {{ file = \"{}\" }}\n\
             auth_uri = \"{}\"\ntoken_uri = \"{}\"\n{extra}",
            super::oauth_server::CLIENT_ID,
            secret.display(),
            oauth.url("/authorize"),
            oauth.url("/token"),
        );
        let path = self.config_path();
        std::fs::write(&path, text).unwrap();
        std::os::unix::fs::chown(&path, Some(0), Some(self.service.gid)).unwrap();
        chmod(&path, 0o640);
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("etc/oauth-sendmail/config.toml")
    }

    /// The configuration (root:service 0640, as the package installs it).
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "domain = \"example.com\"\ndefault_account = \"test\"\n\n[aliases]\nroot = \"admin@example.com\"\n\n\
             [accounts.test]\nprovider = \"custom\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             tls = \"starttls\"\nca_file = \"{ca}\"\ntimeout = 20\nfrom = \"{TEST_USER}\"\n\
             user = \"{TEST_USER}\"\nauth = \"xoauth2\"\nsecret = {{ file = \"{token}\" }}\n\n\
             [service]\nuser = \"{user}\"\n{extra}\n",
            port = self.server.port,
            ca = self.root.join("etc/oauth-sendmail/ca.pem").display(),
            token = self.root.join("var/lib/oauth-sendmail/token").display(),
            user = self.service.name,
        );
        let path = self.config_path();
        std::fs::write(&path, text).unwrap();
        std::os::unix::fs::chown(&path, Some(0), Some(self.service.gid)).unwrap();
        chmod(&path, 0o640);
    }

    /// Adds a top-level key (`quota_hold = "2s"`) to the configuration as it is now.
    pub fn set_top(&self, line: &str) {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{line}\n{text}")).unwrap();
    }

    /// Replaces `from` by `to` in the configuration as it is now.
    pub fn edit_config(&self, from: &str, to: &str) {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "no {from} in {text}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Starts the daemon as root (it drops to the service user) and waits until its
    /// socket answers. `env` adds variables (NOTIFY_SOCKET).
    pub fn start_with(&mut self, env: &[(&str, &Path)]) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("daemon");
        self.spawn(cmd, env);
        self.wait_ready();
    }

    /// As systemd's socket activation starts it: `systemd-socket-activate` holds the
    /// socket (mode 0666, as SocketMode= sets it) and starts the daemon on the first
    /// connection, handing it over as fd 3.
    pub fn start_activated(&mut self) {
        let mut cmd = Command::new("systemd-socket-activate");
        cmd.arg("-l")
            .arg(self.path("run/oauth-sendmail/submit.sock"))
            .arg("-E")
            .arg(format!("OAUTH_SENDMAIL_ROOT={}", self.root.display()))
            .arg(&self.bin)
            .arg("daemon");
        self.start_command(cmd);
    }

    /// Starts `cmd`, a `systemd-socket-activate -l SOCKET ...` line, and makes its
    /// socket 0666 once it is there.
    pub fn start_command(&mut self, cmd: Command) {
        let socket = self.path("run/oauth-sendmail/submit.sock");
        self.spawn(cmd, &[]);
        let until = Instant::now() + Duration::from_secs(15);
        while !socket.exists() {
            assert!(Instant::now() < until, "no socket: {}", self.log());
            thread::sleep(Duration::from_millis(20));
        }
        chmod(&socket, 0o666);
    }

    fn spawn(&mut self, mut cmd: Command, env: &[(&str, &Path)]) {
        assert!(self.daemon.is_none(), "the daemon is running already");
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("OAUTH_SENDMAIL_ROOT", &self.root)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().expect("start the daemon");
        let mut stderr = child.stderr.take().unwrap();
        let log = self.daemon_log.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        self.daemon = Some(child);
    }

    /// Waits for the daemon's "service ready" line.
    pub fn wait_ready(&mut self) {
        let until = Instant::now() + Duration::from_secs(15);
        while !self.log().contains("service ready") {
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("the daemon exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < until,
                "the daemon is not ready:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("running").id()
    }

    /// Sends `signal` and, unless it is SIGHUP, waits (at most `limit`) for the exit.
    pub fn signal(&mut self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// SIGTERM; the exit status and how long the stop took.
    pub fn stop(&mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        self.signal("TERM");
        self.wait_exit(started)
    }

    pub fn kill9(&mut self) {
        let started = Instant::now();
        self.signal("KILL");
        self.wait_exit(started);
    }

    /// Waits for the daemon to end (after a signal this test sent), at most a while.
    pub fn wait_exit(&mut self, started: Instant) -> (std::process::ExitStatus, Duration) {
        let mut child = self.daemon.take().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("the daemon did not stop:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most 10 s) until the daemon's stderr holds `needle`: it is read by
    /// another thread, so what the daemon wrote before answering may still be on its way.
    pub fn log_shows(&self, needle: &str) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(needle) {
            if Instant::now() > until {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// What the daemon wrote on stderr (the journal).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.daemon_log.lock().unwrap()).into_owned()
    }

    /// The binary as `user` (root when `None`): an environment of nothing but the root
    /// and the user's own HOME, no configuration of its own.
    pub fn command(&self, user: Option<&User>, args: &[&str]) -> Command {
        let mut cmd = match user {
            None => Command::new(&self.bin),
            Some(user) => user.command(&self.bin),
        };
        let home = user.map_or(PathBuf::from("/root"), |u| u.home.clone());
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("OAUTH_SENDMAIL_ROOT", &self.root)
            .env("HOME", home)
            .current_dir("/");
        cmd
    }

    /// Runs the binary as `user` with `stdin`.
    pub fn run(&self, user: Option<&User>, args: &[&str], stdin: &[u8]) -> Output {
        run_with_limit(self.command(user, args), stdin, Duration::from_secs(30))
    }

    /// Runs any program as `user` (for what a user can or cannot read).
    pub fn run_as(&self, user: &User, program: &[&str]) -> Output {
        user.command(program[0])
            .args(&program[1..])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .output()
            .expect("setpriv")
    }

    /// Waits until the server got `n` messages (at most `limit`), and returns them.
    pub fn wait_received(&self, n: usize, limit: Duration) -> Vec<Received> {
        let until = Instant::now() + limit;
        loop {
            let received = self.server.received();
            if received.len() >= n || Instant::now() > until {
                return received;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The service's delivery log (read as root).
    pub fn delivery_log(&self) -> String {
        std::fs::read_to_string(self.path("var/lib/oauth-sendmail/delivery.log"))
            .unwrap_or_default()
    }

    /// Queue ids in the service's spool (read as root).
    pub fn queued(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.path("var/spool/oauth-sendmail/queue"))
            .map(|list| {
                list.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
