//! Runs the real `oauth-sendmail` binary against a `TestServer`, in a private HOME with a
//! config file (per tests/CONTRACT.md) that points at that server.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::config::TestConfig;
use super::smtp_server::{
    AuthCheck, ServerOptions, TestServer, TlsMode, TEST_PASSWORD, TEST_TOKEN, TEST_USER,
};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_oauth-sendmail");

/// A client that takes longer than this is hung: kill it and fail the test.
const WALL_LIMIT: Duration = Duration::from_secs(30);

pub struct Harness {
    pub home: tempfile::TempDir,
    pub config_path: PathBuf,
    /// What `config_path` was written from (`write_config` replaces the file).
    pub config: TestConfig,
    pub server: TestServer,
}

impl Harness {
    /// A server per `opts` and a config whose only account ("test") uses it.
    pub fn new(opts: ServerOptions) -> Harness {
        Harness::with_config(opts, |c| c)
    }

    /// Like `new`, but `edit` may change the config before it is written. Its secret file
    /// is `<home>/secret`.
    pub fn with_config(
        opts: ServerOptions,
        edit: impl FnOnce(TestConfig) -> TestConfig,
    ) -> Harness {
        let home = tempfile::tempdir().expect("tempdir for HOME");
        // Private, as adduser makes a home: the binary refuses a config that holds a
        // secret (use_oauth's client_secret) where others can read it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))
                .expect("chmod 700 HOME");
        }
        let server = TestServer::start(opts.clone());

        let secret_path = home.path().join("secret");
        match &opts.auth {
            // A trailing newline, as `echo token > file` leaves it: the binary must cope.
            AuthCheck::Xoauth2 { .. } => write_private(&secret_path, &format!("{TEST_TOKEN}\n")),
            AuthCheck::Plain { .. } => write_private(&secret_path, &format!("{TEST_PASSWORD}\n")),
            AuthCheck::None => {}
        }

        let config = edit(harness_config(&server, &opts, &secret_path));
        let config_path = home.path().join("config.toml");
        config.write(&config_path);

        // argv[0] personality: the name `sendmail`, anywhere.
        let bin_dir = home.path().join("bin");
        std::fs::create_dir(&bin_dir).expect("create <home>/bin");
        link_binary(&bin_dir.join("sendmail"));

        Harness {
            home,
            config_path,
            config,
            server,
        }
    }

    /// Rewrites the config file with `edit` applied to the config it was last written from.
    pub fn write_config(&mut self, edit: impl FnOnce(TestConfig) -> TestConfig) {
        self.config = edit(self.config.clone());
        self.config.write(&self.config_path);
    }

    /// `oauth-sendmail send ARGS` with `stdin` piped in.
    pub fn send(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("send").args(args);
        self.run(cmd, stdin)
    }

    /// The same binary called through `<home>/bin/sendmail` (the sendmail personality).
    pub fn sendmail(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(self.home.path().join("bin").join("sendmail"));
        cmd.args(args);
        self.run(cmd, stdin)
    }

    /// The binary with `args`, isolated in this harness, for a test that spawns it itself
    /// (to run several at once, or to kill one).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        self.isolate(&mut cmd);
        cmd
    }

    /// `oauth-sendmail ARGS` (its own commands: queue, log, ...).
    pub fn own(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        self.run(cmd, b"")
    }

    /// The ids `oauth-sendmail queue list` shows, with the text of the listing.
    pub fn queue_listing(&self) -> (Vec<String>, String) {
        let out = self.own(&["queue", "list"]);
        assert_eq!(code(&out), 0, "queue list failed: {}", stderr(&out));
        let text = stdout(&out);
        (queue_ids(&text), text)
    }

    /// `<home>/dead.letter`, if the binary wrote one.
    pub fn dead_letter(&self) -> Option<Vec<u8>> {
        std::fs::read(self.home.path().join("dead.letter")).ok()
    }

    /// `<home>/bin/sendmail ARGS` started in this harness's environment with stdin, stdout
    /// and stderr piped, for a test that talks to it (`-bs`). The caller waits for it.
    pub fn spawn_sendmail(&self, args: &[&str]) -> Child {
        let mut cmd = Command::new(self.home.path().join("bin").join("sendmail"));
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.isolate(&mut cmd);
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawn sendmail {args:?}: {e}"))
    }

    /// Runs `cmd` in this harness's environment and returns its output.
    pub fn run(&self, mut cmd: Command, stdin: &[u8]) -> Output {
        self.isolate(&mut cmd);
        run_with_limit(cmd, stdin, WALL_LIMIT)
    }

    /// Points `cmd` at this harness's HOME and config.
    fn isolate(&self, cmd: &mut Command) {
        isolate(cmd, self.home.path(), &self.config_path);
    }
}

/// Points `cmd` at `home` and `config` and at nothing of the developer's: no other
/// OAUTH_SENDMAIL* variable, no XDG directory outside `home`, no mailbox, and no session
/// bus (which leads to the real keyring) unless the test named one itself.
pub fn isolate(cmd: &mut Command, home: &Path, config: &Path) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OAUTH_SENDMAIL") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HOME", home)
        .env("OAUTH_SENDMAIL_CONFIG", config)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("MAIL")
        .current_dir(home);
    if !cmd
        .get_envs()
        .any(|(key, value)| key == "DBUS_SESSION_BUS_ADDRESS" && value.is_some())
    {
        cmd.env_remove("DBUS_SESSION_BUS_ADDRESS");
    }
}

/// Spawns `cmd` with piped stdio, feeds `stdin`, and waits at most `limit`; a hung child is
/// killed and the test fails with what it printed so far.
pub fn run_with_limit(mut cmd: Command, stdin: &[u8], limit: Duration) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let description = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {description}: {e}"));

    // Separate threads: a child that does not read stdin, or fills a pipe, must not deadlock
    // the test.
    let input = stdin.to_vec();
    let mut child_stdin = child.stdin.take().expect("stdin piped");
    let writer = thread::spawn(move || {
        // A child that exits without reading all of stdin makes this fail: that is its right.
        let _ = child_stdin.write_all(&input);
    });
    let stdout = reader(child.stdout.take().expect("stdout piped"));
    let stderr = reader(child.stderr.take().expect("stderr piped"));

    let deadline = Instant::now() + limit;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = writer.join();
            let out = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
            let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
            panic!(
                "{description} still running after {limit:?}: killed\n--- stdout ---\n{out}\n\
                 --- stderr ---\n{err}"
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The exit code; a child killed by a signal fails the test (that is never a valid outcome).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| {
        panic!(
            "child ended without an exit code ({}); stderr:\n{}",
            o.status,
            stderr(o)
        )
    })
}

/// Every form in which a test secret could leak: raw, and base64 as it goes on the wire
/// (the whole XOAUTH2 string, the PLAIN string, the LOGIN password line, the bare token).
pub fn secret_forms() -> Vec<String> {
    vec![
        TEST_TOKEN.to_string(),
        TEST_PASSWORD.to_string(),
        B64.encode(format!(
            "user={TEST_USER}\x01auth=Bearer {TEST_TOKEN}\x01\x01"
        )),
        B64.encode(format!("\0{TEST_USER}\0{TEST_PASSWORD}")),
        B64.encode(format!("{TEST_USER}\0{TEST_USER}\0{TEST_PASSWORD}")),
        B64.encode(TEST_PASSWORD),
        B64.encode(TEST_TOKEN),
    ]
}

/// Fails if any secret form appears in the child's stdout or stderr.
pub fn assert_no_secrets(o: &Output) {
    let out = stdout(o);
    let err = stderr(o);
    for secret in secret_forms() {
        assert!(
            !out.contains(&secret),
            "a secret ({secret}) leaked to stdout:\n{out}"
        );
        assert!(
            !err.contains(&secret),
            "a secret ({secret}) leaked to stderr:\n{err}"
        );
    }
}

/// Fails if any secret form is in a file the binary left in `dir` (queue entries, the
/// delivery log, caches), looking through every file below it.
pub fn assert_no_secrets_in_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            assert_no_secrets_in_files(&path);
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
        for secret in secret_forms() {
            assert!(
                !text.contains(&secret),
                "a secret ({secret}) is in {}",
                path.display()
            );
        }
    }
}

/// The config per tests/CONTRACT.md for one account "test" at `server`, logging in as
/// `opts.auth` says with the secret in `secret_path`.
fn harness_config(server: &TestServer, opts: &ServerOptions, secret_path: &Path) -> TestConfig {
    let tls = match opts.tls {
        TlsMode::StartTls => "starttls",
        TlsMode::Implicit => "implicit",
        TlsMode::Plain => "none",
    };
    let config = TestConfig::new(server.port, &server.ca_file).account_field("tls", tls);
    match &opts.auth {
        AuthCheck::Xoauth2 { user, .. } => config.xoauth2(user, secret_path),
        AuthCheck::Plain { user, .. } => config.password(user, secret_path),
        AuthCheck::None => config.no_auth(),
    }
}

/// The ids in a queue listing (`queue list`, `mailq`, `sendmail -bp`): the lines that start
/// with a hex word.
pub fn queue_ids(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.len() > 8 && word.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect()
}

/// A port on 127.0.0.1 where nothing listens (the listener that found it is closed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Exit status and both streams, for a failing assertion.
pub fn describe(o: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// `describe` and the server's transcript.
pub fn explain(h: &Harness, o: &Output) -> String {
    format!("{}\n--- server ---\n{}", describe(o), h.server.transcript())
}

/// Writes a file only its owner may read, as a secret file must be.
pub fn write_private(path: &Path, contents: &str) {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn link_binary(link: &Path) {
    #[cfg(unix)]
    std::os::unix::fs::symlink(BIN, link).expect("symlink <home>/bin/sendmail");
    #[cfg(not(unix))]
    std::fs::copy(BIN, link).expect("copy the binary to <home>/bin/sendmail");
}

/// Waits for `child`, which was told to stop (SIGTERM), to end by itself; kills it and
/// fails the test if it is still running after `limit`.
pub fn wait_for_exit(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running {limit:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}
