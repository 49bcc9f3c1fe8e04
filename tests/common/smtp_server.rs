//! In-process scripted SMTP server for tests: RFC 5321 submission with STARTTLS or implicit
//! TLS, AUTH XOAUTH2/PLAIN/LOGIN that checks the credentials (with or without an initial
//! response), fault scripts (421, 451, 550, dropped connection, Gmail's 334-then-535, a
//! 535 that echoes the AUTH argument, replies dripped a byte a second), and a record of what
//! it received.
//!
//! It is deliberately strict where a lax server would hide a client bug: MAIL without
//! STARTTLS or AUTH, unqualified addresses, parameters that were not advertised, bare CR or
//! LF in DATA, lines over 998 octets and undeclared 8-bit data are all refused, and the
//! transcript says why. Command lines are cut at 2048 octets as Postfix cuts them
//! (`line_length_limit`), so an AUTH line with a long initial response fails as it does
//! against Postfix.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rustls::{ServerConnection, StreamOwned};

use super::tls;

pub const TEST_USER: &str = "sender@example.com";
pub const TEST_TOKEN: &str = "ya29.TEST-access-token-MUST-NOT-LEAK";
pub const TEST_PASSWORD: &str = "app-password-MUST-NOT-LEAK";

/// What Gmail sends (base64) in its 334 challenge when an XOAUTH2 token is refused.
pub const GMAIL_XOAUTH2_ERROR_JSON: &str =
    r#"{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}"#;

/// A stuck or silent client must not hang a test.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Postfix's `line_length_limit`: a longer command line is cut there and the rest of it
/// discarded (smtp_get with SMTP_GET_FLAG_SKIP).
const MAX_COMMAND_LINE: usize = 2048;
/// RFC 4954 section 4 (and Postfix): a SASL response line on its own may be this long.
const MAX_SASL_LINE: usize = 12288;
/// RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF (998 + CRLF).
const MAX_TEXT_LINE: usize = 1000;
/// Hard cap on any line held in memory; beyond it the connection is dropped.
const MAX_BUFFERED_LINE: usize = 1 << 20;
/// Advertised as SIZE (Gmail's value) and enforced.
const MAX_MESSAGE: usize = 35_882_577;
/// A client looping on commands is a bug; stop it rather than spin.
const MAX_COMMANDS: usize = 1000;

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum TlsMode {
    /// Plain greeting, STARTTLS offered, AUTH and MAIL only after it.
    StartTls,
    /// TLS from the first byte (port 465 style).
    Implicit,
    /// No TLS at all: only useful with `AuthCheck::None` (AUTH is never offered in clear).
    Plain,
}

#[derive(Clone, Debug)]
pub enum AuthCheck {
    Xoauth2 {
        user: String,
        token: String,
    },
    /// Checked for AUTH PLAIN and AUTH LOGIN.
    Plain {
        user: String,
        password: String,
    },
    /// A relay: no AUTH offered, MAIL accepted without it.
    None,
}

#[derive(Clone, Debug)]
pub enum Fault {
    None,
    /// 421 instead of the 220 greeting, then close.
    Greeting421,
    /// 451 after the final dot; the message is not stored.
    Data451,
    /// 550 5.1.1 on RCPT for this address only.
    Rcpt550(String),
    /// Close the socket (no reply, no TLS close_notify) when MAIL FROM arrives.
    DropAfterMail,
    /// Gmail's answer to a refused token: 334 <base64 JSON>, then after the client's
    /// (empty) line, 535-5.7.8 Username and Password not accepted.
    Xoauth2Reject,
    /// 451 4.2.1 on RCPT for this address only (a mailbox that is busy for now).
    Rcpt451(String),
    /// Wait this long before answering DATA: a client killed meanwhile leaves nothing
    /// stored.
    StallData(Duration),
    /// Refuse every AUTH with a 535 that quotes what the client sent, base64 and decoded,
    /// as some servers do (so a client that shows replies shows the secret).
    EchoAuth535,
    /// Send this reply a byte a second, for ever (until the client leaves).
    Drip(DripAt),
    /// Wait this long before every reply: each step is slow but within a client's
    /// per-step timeout, the whole is not.
    SlowReplies(Duration),
    /// A provider's reply for a sending quota used up, in its words, at the step it comes.
    Quota(QuotaReply),
    /// Close the socket once this many bytes of message text have come: a connection
    /// lost in the middle of DATA.
    DropMidData(usize),
}

/// The providers' quota replies (their documented texts) for `Fault::Quota`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QuotaReply {
    /// Gmail, after the final dot: 550 5.4.5 Daily user sending limit exceeded.
    GmailDaily,
    /// Gmail, to MAIL FROM: 421 4.7.0 Try again later, closing connection.
    GmailRate,
    /// Microsoft 365, after the final dot: 554 5.2.0 ...SubmissionQuotaExceededException.
    MicrosoftQuota,
    /// Microsoft 365, to RCPT: 451 4.7.500 Server busy.
    MicrosoftBusy,
}

/// Which reply `Fault::Drip` drips.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DripAt {
    Greeting,
    Rcpt,
}

/// The certificate the server presents.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Certificate {
    /// For "localhost" and 127.0.0.1, signed by the test CA (`TestServer::ca_file`).
    Trusted,
    /// Signed by the test CA, but for "other.example" only: a wrong host name.
    OtherName,
}

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub tls: TlsMode,
    pub auth: AuthCheck,
    pub fault: Fault,
    /// Advertise 8BITMIME (and accept BODY=8BITMIME).
    pub eight_bit_mime: bool,
    pub certificate: Certificate,
    /// Advertise PIPELINING (RFC 2920). Each `Received` says whether its MAIL, RCPTs and
    /// DATA came in one read, offered or not.
    pub pipelining: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            tls: TlsMode::StartTls,
            auth: AuthCheck::Xoauth2 {
                user: TEST_USER.to_string(),
                token: TEST_TOKEN.to_string(),
            },
            fault: Fault::None,
            eight_bit_mime: true,
            certificate: Certificate::Trusted,
            pipelining: true,
        }
    }
}

/// One message the server answered 250 after DATA.
#[derive(Clone, Debug)]
pub struct Received {
    /// The reverse-path without the angle brackets ("" for the null sender).
    pub mail_from: String,
    /// MAIL FROM parameters as sent, e.g. "BODY=8BITMIME".
    pub mail_params: Vec<String>,
    /// The accepted recipients, in order.
    pub rcpt_to: Vec<String>,
    /// The content after dot-unstuffing, CRLF line ends, without the terminating ".\r\n"
    /// but with the CRLF that precedes it.
    pub data: Vec<u8>,
    /// The SASL mechanism the session authenticated with, if any.
    pub auth_mechanism: Option<String>,
    /// Whether the session was encrypted when the message arrived.
    pub tls: bool,
    /// MAIL, every RCPT and DATA arrived in one read: the client pipelined them.
    pub pipelined: bool,
}

struct Shared {
    opts: ServerOptions,
    /// The fault in force now (starts as `opts.fault`; `set_fault` changes it).
    fault: Mutex<Fault>,
    received: Mutex<Vec<Received>>,
    transcript: Mutex<String>,
    connections: AtomicUsize,
    active: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn log(&self, line: String) {
        let mut t = self.transcript.lock().unwrap_or_else(|e| e.into_inner());
        t.push_str(&line);
        t.push('\n');
    }
}

pub struct TestServer {
    pub port: u16,
    /// The CA that signed the server certificate, as a PEM file (lives as long as the server).
    pub ca_file: PathBuf,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    unused_ok: bool,
    _ca_dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start(opts: ServerOptions) -> TestServer {
        TestServer::start_on(opts, 0)
    }

    /// On a given port (0: any), e.g. one a client was configured with before the server
    /// "came back up".
    pub fn start_on(opts: ServerOptions, port: u16) -> TestServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let ca_dir = tempfile::tempdir().expect("tempdir for the CA file");
        let ca_file = tls::write_ca_file(ca_dir.path());
        let shared = Arc::new(Shared {
            fault: Mutex::new(opts.fault.clone()),
            opts,
            received: Mutex::new(Vec::new()),
            transcript: Mutex::new(String::new()),
            connections: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("smtp-accept-{port}"))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn acceptor")
        };
        TestServer {
            port,
            ca_file,
            shared,
            acceptor: Some(acceptor),
            unused_ok: false,
            _ca_dir: ca_dir,
        }
    }

    /// Messages answered 250 after DATA, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every line both ways, `#N C: ...` (client) / `#N S: ...` (server) / `#N -- ...`
    /// (events), N being the connection number.
    pub fn transcript(&self) -> String {
        // The client may have exited a moment before its connection thread logged the last
        // lines (QUIT, EOF); give open connections a short while to finish.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        self.shared
            .transcript
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the fault for connections and commands from now on.
    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// The transcript as it is now, without waiting for open connections (for polling).
    pub fn transcript_now(&self) -> String {
        self.shared
            .transcript
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// For a test that means not to reach the server (e.g. `--dry-run`).
    pub fn expect_unused(&mut self) {
        self.unused_ok = true;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor blocked in accept(); it sees `stop` and returns.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        if !thread::panicking() && !self.unused_ok && self.connections() == 0 {
            panic!(
                "test SMTP server on port {} was never connected to: the test did not exercise \
                 what it meant to (call expect_unused() if that is intended)",
                self.port
            );
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for tcp in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let tcp = match tcp {
            Ok(tcp) => tcp,
            Err(_) => {
                // E.g. EMFILE: do not spin.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        shared.active.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        let spawned = thread::Builder::new()
            .name(format!("smtp-conn-{id}"))
            .spawn(move || {
                let _active = ActiveGuard(shared.clone());
                Session::new(id, tcp, shared).run();
            });
        if spawned.is_err() {
            // The closure (and its guard) was dropped with the error.
            continue;
        }
    }
}

/// Keeps `active` right even if a session thread panics.
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connection, before or after the TLS upgrade.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    Closed,
}

impl Stream {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(tcp) => Some(tcp),
            Stream::Tls(tls) => Some(&tls.sock),
            Stream::Closed => None,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Closed => Ok(0),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Closed => Ok(()),
        }
    }
}

/// What to do after a command.
enum Flow {
    Continue,
    /// Orderly end (after 221 or 421): TLS close_notify, then close.
    Close,
    /// Abrupt end (fault script): just close the socket.
    Drop,
}

struct Envelope {
    from: String,
    params: Vec<String>,
    rcpts: Vec<String>,
    /// `Session::reads` when MAIL was taken: unchanged at DATA if nothing more was read.
    reads_at_mail: usize,
}

struct Session {
    id: usize,
    shared: Arc<Shared>,
    stream: Stream,
    /// Bytes read from the stream and not yet consumed as lines.
    buf: Vec<u8>,
    /// Reads from the stream so far.
    reads: usize,
    tls: bool,
    greeted: bool,
    authenticated: Option<String>,
    envelope: Option<Envelope>,
}

impl Session {
    fn new(id: usize, tcp: TcpStream, shared: Arc<Shared>) -> Session {
        let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
        let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
        Session {
            id,
            shared,
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            reads: 0,
            tls: false,
            greeted: false,
            authenticated: None,
            envelope: None,
        }
    }

    fn opts(&self) -> &ServerOptions {
        &self.shared.opts
    }

    fn fault(&self) -> Fault {
        self.shared
            .fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn auth_required(&self) -> bool {
        !matches!(self.opts().auth, AuthCheck::None)
    }

    fn run(mut self) {
        self.note("connected");
        let flow = match self.serve() {
            Ok(flow) => flow,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.note(&format!(
                    "timed out: the client was silent for {IO_TIMEOUT:?}"
                ));
                Flow::Drop
            }
            Err(e) => {
                self.note(&format!("connection ended: {e}"));
                Flow::Drop
            }
        };
        self.close(flow);
    }

    fn close(&mut self, flow: Flow) {
        if let (Flow::Close, Stream::Tls(tls)) = (&flow, &mut self.stream) {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        if let Some(tcp) = self.stream.tcp() {
            let _ = tcp.shutdown(Shutdown::Both);
        }
        self.stream = Stream::Closed;
        self.note("closed");
    }

    fn serve(&mut self) -> io::Result<Flow> {
        if self.opts().tls == TlsMode::Implicit {
            self.start_tls()?;
        }
        if let Fault::Drip(DripAt::Greeting) = self.fault() {
            return self.drip("220 localhost ESMTP dripping a byte a second");
        }
        if matches!(self.fault(), Fault::Greeting421) {
            self.reply(
                421,
                &["4.3.2 Service not available, closing transmission channel (test fault)"],
            )?;
            return Ok(Flow::Close);
        }
        self.reply(220, &["localhost ESMTP oauth-sendmail test server"])?;
        for _ in 0..MAX_COMMANDS {
            let Some(raw) = self.read_line()? else {
                self.note("client closed the connection");
                return Ok(Flow::Drop);
            };
            let mut line = String::from_utf8_lossy(strip_eol(&raw)).into_owned();
            self.log("C", &line);
            let cut = strip_eol(&raw).len() > MAX_COMMAND_LINE;
            if cut {
                // Postfix: the command is what fits, the rest of the line is skipped.
                let mut end = MAX_COMMAND_LINE;
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                line.truncate(end);
                self.note(&format!(
                    "command line of {} octets cut at {MAX_COMMAND_LINE}",
                    strip_eol(&raw).len()
                ));
                if !line.to_ascii_uppercase().starts_with("AUTH ") {
                    self.reply(500, &["5.5.2 Error: command line too long"])?;
                    continue;
                }
            }
            let (verb, arg) = match line.split_once(' ') {
                Some((verb, arg)) => (verb.to_ascii_uppercase(), arg.to_string()),
                None => (line.to_ascii_uppercase(), String::new()),
            };
            let flow = match verb.as_str() {
                "EHLO" => self.ehlo(&arg)?,
                "HELO" => self.helo(&arg)?,
                "STARTTLS" => self.starttls()?,
                "AUTH" => self.auth(&arg, cut)?,
                "MAIL" => self.mail(&arg)?,
                "RCPT" => self.rcpt(&arg)?,
                "DATA" => self.data(&arg)?,
                "RSET" => {
                    self.envelope = None;
                    self.reply(250, &["2.1.5 Flushed"])?;
                    Flow::Continue
                }
                "NOOP" => {
                    self.reply(250, &["2.0.0 OK"])?;
                    Flow::Continue
                }
                "VRFY" => {
                    self.reply(252, &["2.1.5 Send some mail, I'll try my best"])?;
                    Flow::Continue
                }
                "QUIT" => {
                    self.reply(221, &["2.0.0 closing connection"])?;
                    Flow::Close
                }
                _ => {
                    self.reply(502, &["5.5.1 Unrecognized command"])?;
                    Flow::Continue
                }
            };
            if !matches!(flow, Flow::Continue) {
                return Ok(flow);
            }
        }
        self.reply(421, &["4.7.0 Too many commands, closing connection"])?;
        Ok(Flow::Close)
    }

    fn ehlo(&mut self, arg: &str) -> io::Result<Flow> {
        if arg.trim().is_empty() {
            self.reply(501, &["5.5.4 EHLO needs a domain or address literal"])?;
            return Ok(Flow::Continue);
        }
        self.greeted = true;
        self.envelope = None;
        let mut lines = vec!["localhost at your service".to_string()];
        lines.push(format!("SIZE {MAX_MESSAGE}"));
        if self.opts().eight_bit_mime {
            lines.push("8BITMIME".to_string());
        }
        if self.opts().tls == TlsMode::StartTls && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        // Like Gmail: all mechanisms offered, only once encrypted; the check decides.
        if self.auth_required() && self.tls {
            lines.push("AUTH LOGIN PLAIN XOAUTH2".to_string());
        }
        lines.push("ENHANCEDSTATUSCODES".to_string());
        if self.opts().pipelining {
            lines.push("PIPELINING".to_string());
        }
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        self.reply(250, &lines)?;
        Ok(Flow::Continue)
    }

    fn helo(&mut self, arg: &str) -> io::Result<Flow> {
        if arg.trim().is_empty() {
            self.reply(501, &["5.5.4 HELO needs a domain"])?;
            return Ok(Flow::Continue);
        }
        self.greeted = true;
        self.envelope = None;
        self.reply(250, &["localhost at your service"])?;
        Ok(Flow::Continue)
    }

    fn starttls(&mut self) -> io::Result<Flow> {
        if self.opts().tls != TlsMode::StartTls {
            self.reply(502, &["5.5.1 STARTTLS not offered"])?;
            return Ok(Flow::Continue);
        }
        if self.tls {
            self.reply(503, &["5.5.1 TLS already active"])?;
            return Ok(Flow::Continue);
        }
        self.reply(220, &["2.0.0 Ready to start TLS"])?;
        if !self.buf.is_empty() {
            // RFC 3207 section 4.2: nothing may follow STARTTLS before the handshake; anything
            // that did is discarded (the CVE-2011-0411 fix), so the client will notice.
            self.note(&format!(
                "discarding {} plaintext bytes pipelined after STARTTLS (client bug)",
                self.buf.len()
            ));
            self.buf.clear();
        }
        self.start_tls()?;
        // RFC 3207 section 4.2: the server forgets everything learned before TLS.
        self.greeted = false;
        self.authenticated = None;
        self.envelope = None;
        Ok(Flow::Continue)
    }

    fn start_tls(&mut self) -> io::Result<()> {
        let tcp = match std::mem::replace(&mut self.stream, Stream::Closed) {
            Stream::Plain(tcp) => tcp,
            other => {
                self.stream = other;
                return Err(io::Error::other("TLS requested on a non-plain stream"));
            }
        };
        let config = match self.opts().certificate {
            Certificate::Trusted => tls::server_config(),
            Certificate::OtherName => tls::other_name_server_config(),
        };
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                self.note(&format!("TLS handshake failed: {e}"));
                let _ = stream.sock.shutdown(Shutdown::Both);
                return Err(e);
            }
        }
        self.note(&format!(
            "TLS established ({:?})",
            stream.conn.protocol_version()
        ));
        self.stream = Stream::Tls(Box::new(stream));
        self.tls = true;
        Ok(())
    }

    /// `cut`: the command line was longer than Postfix takes, so its initial response is
    /// the first 2048 octets of the line only.
    fn auth(&mut self, arg: &str, cut: bool) -> io::Result<Flow> {
        if !self.auth_required() {
            self.reply(502, &["5.5.1 AUTH not offered"])?;
            return Ok(Flow::Continue);
        }
        if !self.greeted {
            self.reply(503, &["5.5.1 EHLO first"])?;
            return Ok(Flow::Continue);
        }
        if !self.tls {
            self.reply(530, &["5.7.0 Must issue a STARTTLS command first"])?;
            return Ok(Flow::Continue);
        }
        if self.authenticated.is_some() {
            self.reply(503, &["5.5.1 Already authenticated"])?;
            return Ok(Flow::Continue);
        }
        if self.envelope.is_some() {
            self.reply(503, &["5.5.1 AUTH not allowed during a mail transaction"])?;
            return Ok(Flow::Continue);
        }
        let mut parts = arg.split_whitespace();
        let mechanism = parts.next().unwrap_or("").to_ascii_uppercase();
        let initial = parts.next().map(str::to_string);
        if cut {
            // What Postfix with Dovecot SASL answers to the truncated base64.
            self.reply(
                535,
                &["5.7.8 Error: authentication failed: Invalid base64 data in initial response"],
            )?;
            return Ok(Flow::Continue);
        }
        if matches!(self.fault(), Fault::EchoAuth535) {
            return self.echo_auth(&mechanism, initial);
        }
        match mechanism.as_str() {
            "XOAUTH2" => self.auth_xoauth2(initial),
            "PLAIN" => self.auth_plain(initial),
            "LOGIN" => self.auth_login(initial),
            _ => {
                self.reply(504, &["5.7.4 Unrecognized authentication type"])?;
                Ok(Flow::Continue)
            }
        }
    }

    /// The client's response line to a 334 challenge, as sent.
    fn sasl_line(&mut self, challenge: &str) -> io::Result<String> {
        self.reply(334, &[challenge])?;
        let Some(raw) = self.read_line()? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let line = String::from_utf8_lossy(strip_eol(&raw)).into_owned();
        self.log("C", &line);
        Ok(line)
    }

    /// The client's response to a 334 challenge, base64-decoded. `Ok(None)` means the
    /// exchange is over (cancelled, undecodable, too long or EOF) and has been answered.
    fn sasl_response(&mut self, challenge: &str) -> io::Result<Option<Vec<u8>>> {
        let line = self.sasl_line(challenge)?;
        if line.len() > MAX_SASL_LINE {
            self.reply(500, &["5.5.2 Error: SASL response line too long"])?;
            return Ok(None);
        }
        self.decode_sasl(&line)
    }

    /// `Fault::EchoAuth535`: the 535 quotes the response, as sent and decoded.
    fn echo_auth(&mut self, mechanism: &str, initial: Option<String>) -> io::Result<Flow> {
        let sent = match initial {
            Some(text) => text,
            None => self.sasl_line("")?,
        };
        let decoded: String = String::from_utf8_lossy(&B64.decode(&sent).unwrap_or_default())
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let first = format!("5.7.8 Authentication failed: AUTH {mechanism} {sent}");
        let second = format!("5.7.8 which is: {decoded}");
        self.reply(535, &[first.as_str(), second.as_str()])?;
        Ok(Flow::Continue)
    }

    /// `Fault::Drip`: `text` and then spaces, a byte a second, until the client leaves or
    /// the test ends. Never a whole line: a client must give up by a deadline of its own.
    fn drip(&mut self, text: &str) -> io::Result<Flow> {
        self.note("fault: dripping a reply a byte a second");
        let mut bytes = text.bytes().chain(std::iter::repeat(b' '));
        while !self.shared.stop.load(Ordering::SeqCst) {
            let byte = bytes.next().unwrap_or(b' ');
            if self
                .stream
                .write_all(&[byte])
                .and_then(|()| self.stream.flush())
                .is_err()
            {
                self.note("the client left during the drip");
                return Ok(Flow::Drop);
            }
            thread::sleep(Duration::from_secs(1));
        }
        Ok(Flow::Drop)
    }

    /// Decodes an initial response or a continuation line (RFC 4954: "=" is empty, "*"
    /// cancels).
    fn decode_sasl(&mut self, text: &str) -> io::Result<Option<Vec<u8>>> {
        match text {
            "*" => {
                self.reply(501, &["5.7.0 Authentication cancelled"])?;
                Ok(None)
            }
            "=" => Ok(Some(Vec::new())),
            _ => match B64.decode(text) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(_) => {
                    self.reply(501, &["5.5.2 Cannot decode response"])?;
                    Ok(None)
                }
            },
        }
    }

    fn auth_xoauth2(&mut self, initial: Option<String>) -> io::Result<Flow> {
        let decoded = match initial {
            Some(text) => self.decode_sasl(&text)?,
            None => self.sasl_response("")?,
        };
        let Some(decoded) = decoded else {
            return Ok(Flow::Continue);
        };
        if matches!(self.fault(), Fault::Xoauth2Reject) {
            // Gmail: the error comes as a challenge; the client must answer it (with an empty
            // line) before the final 535 arrives.
            self.note("fault: Gmail-style XOAUTH2 rejection");
            let challenge = B64.encode(GMAIL_XOAUTH2_ERROR_JSON);
            self.reply(334, &[challenge.as_str()])?;
            let Some(raw) = self.read_line()? else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            let line = String::from_utf8_lossy(strip_eol(&raw)).into_owned();
            self.log("C", &line);
            if !line.is_empty() {
                self.note("client answered the error challenge with a non-empty line");
            }
            self.reply(
                535,
                &[
                    "5.7.8 Username and Password not accepted. For more information, go to",
                    "5.7.8  https://support.google.com/mail/?p=BadCredentials test - gsmtp",
                ],
            )?;
            return Ok(Flow::Continue);
        }
        let accepted = match (&self.opts().auth, parse_xoauth2(&decoded)) {
            (AuthCheck::Xoauth2 { user, token }, Some((u, t))) => *user == u && *token == t,
            (_, None) => {
                self.note("malformed XOAUTH2 initial response");
                false
            }
            _ => false,
        };
        self.auth_result(accepted, "XOAUTH2")
    }

    fn auth_plain(&mut self, initial: Option<String>) -> io::Result<Flow> {
        let decoded = match initial {
            Some(text) => self.decode_sasl(&text)?,
            None => self.sasl_response("")?,
        };
        let Some(decoded) = decoded else {
            return Ok(Flow::Continue);
        };
        // RFC 4616: authzid NUL authcid NUL passwd.
        let fields: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        let accepted = match (&self.opts().auth, fields.as_slice()) {
            (AuthCheck::Plain { user, password }, [authzid, authcid, passwd]) => {
                (authzid.is_empty() || *authzid == user.as_bytes())
                    && *authcid == user.as_bytes()
                    && *passwd == password.as_bytes()
            }
            _ => false,
        };
        self.auth_result(accepted, "PLAIN")
    }

    fn auth_login(&mut self, initial: Option<String>) -> io::Result<Flow> {
        let user = match initial {
            Some(text) => self.decode_sasl(&text)?,
            None => self.sasl_response(&B64.encode("Username:"))?,
        };
        let Some(user) = user else {
            return Ok(Flow::Continue);
        };
        let Some(password) = self.sasl_response(&B64.encode("Password:"))? else {
            return Ok(Flow::Continue);
        };
        let accepted = match &self.opts().auth {
            AuthCheck::Plain {
                user: u,
                password: p,
            } => user == u.as_bytes() && password == p.as_bytes(),
            _ => false,
        };
        self.auth_result(accepted, "LOGIN")
    }

    fn auth_result(&mut self, accepted: bool, mechanism: &str) -> io::Result<Flow> {
        if accepted {
            self.authenticated = Some(mechanism.to_string());
            self.reply(235, &["2.7.0 Accepted"])?;
        } else {
            self.reply(535, &["5.7.8 Username and Password not accepted"])?;
        }
        Ok(Flow::Continue)
    }

    fn mail(&mut self, arg: &str) -> io::Result<Flow> {
        if !self.greeted {
            self.reply(503, &["5.5.1 EHLO/HELO first"])?;
            return Ok(Flow::Continue);
        }
        if self.opts().tls == TlsMode::StartTls && !self.tls {
            // Catches a client that skips STARTTLS (a downgrade) even for a relay.
            self.reply(530, &["5.7.0 Must issue a STARTTLS command first"])?;
            return Ok(Flow::Continue);
        }
        if self.auth_required() && self.authenticated.is_none() {
            self.reply(530, &["5.7.0 Authentication Required"])?;
            return Ok(Flow::Continue);
        }
        if self.envelope.is_some() {
            self.reply(503, &["5.5.1 Nested MAIL command"])?;
            return Ok(Flow::Continue);
        }
        if matches!(self.fault(), Fault::DropAfterMail) {
            self.note("fault: dropping the connection after MAIL FROM");
            return Ok(Flow::Drop);
        }
        if matches!(self.fault(), Fault::Quota(QuotaReply::GmailRate)) {
            self.reply(
                421,
                &["4.7.0 Try again later, closing connection. (MAIL) 5-20020a05 - gsmtp"],
            )?;
            return Ok(Flow::Drop);
        }
        let Some((from, params)) = parse_path(arg, "FROM:") else {
            self.reply(501, &["5.5.4 Syntax: MAIL FROM:<address>"])?;
            return Ok(Flow::Continue);
        };
        if !from.is_empty() && !is_qualified(&from) {
            let text = format!("5.1.7 The sender address <{from}> is not a valid RFC 5321 address");
            self.reply(553, &[text.as_str()])?;
            return Ok(Flow::Continue);
        }
        for param in &params {
            let upper = param.to_ascii_uppercase();
            let ok = match upper.split_once('=') {
                Some(("BODY", "7BIT")) => true,
                Some(("BODY", "8BITMIME")) => self.opts().eight_bit_mime,
                Some(("SIZE", n)) => n.parse::<usize>().is_ok_and(|n| n <= MAX_MESSAGE),
                _ => false,
            };
            if !ok {
                let text = format!("5.5.4 MAIL parameter {param} not supported or not offered");
                self.reply(555, &[text.as_str()])?;
                return Ok(Flow::Continue);
            }
        }
        self.envelope = Some(Envelope {
            from,
            params,
            rcpts: Vec::new(),
            reads_at_mail: self.reads,
        });
        self.reply(250, &["2.1.0 OK"])?;
        Ok(Flow::Continue)
    }

    fn rcpt(&mut self, arg: &str) -> io::Result<Flow> {
        if self.envelope.is_none() {
            self.reply(503, &["5.5.1 need MAIL before RCPT"])?;
            return Ok(Flow::Continue);
        }
        let Some((to, params)) = parse_path(arg, "TO:") else {
            self.reply(501, &["5.5.4 Syntax: RCPT TO:<address>"])?;
            return Ok(Flow::Continue);
        };
        if !params.is_empty() {
            // No DSN or other RCPT extension is advertised.
            let text = format!("5.5.4 RCPT parameters not offered: {}", params.join(" "));
            self.reply(555, &[text.as_str()])?;
            return Ok(Flow::Continue);
        }
        if !is_qualified(&to) {
            let text =
                format!("5.1.3 The recipient address <{to}> is not a valid RFC 5321 address");
            self.reply(553, &[text.as_str()])?;
            return Ok(Flow::Continue);
        }
        match self.fault() {
            Fault::Drip(DripAt::Rcpt) => return self.drip("250 2.1.5 OK, dripped"),
            Fault::Rcpt550(refused) if refused.eq_ignore_ascii_case(&to) => {
                self.reply(
                    550,
                    &["5.1.1 The email account that you tried to reach does not exist"],
                )?;
                return Ok(Flow::Continue);
            }
            Fault::Quota(QuotaReply::MicrosoftBusy) => {
                self.reply(
                    451,
                    &["4.7.500 Server busy. Please try again later from [127.0.0.1]. (S77719)"],
                )?;
                return Ok(Flow::Continue);
            }
            Fault::Rcpt451(busy) if busy.eq_ignore_ascii_case(&to) => {
                self.reply(
                    451,
                    &["4.2.1 The user you are trying to contact is receiving mail too quickly"],
                )?;
                return Ok(Flow::Continue);
            }
            _ => {}
        }
        if let Some(envelope) = self.envelope.as_mut() {
            envelope.rcpts.push(to);
        }
        self.reply(250, &["2.1.5 OK"])?;
        Ok(Flow::Continue)
    }

    fn data(&mut self, arg: &str) -> io::Result<Flow> {
        if let Fault::StallData(wait) = self.fault() {
            thread::sleep(wait);
        }
        if !arg.trim().is_empty() {
            self.reply(501, &["5.5.4 DATA takes no argument"])?;
            return Ok(Flow::Continue);
        }
        match &self.envelope {
            None => {
                self.reply(503, &["5.5.1 MAIL first"])?;
                return Ok(Flow::Continue);
            }
            Some(envelope) if envelope.rcpts.is_empty() => {
                self.reply(503, &["5.5.1 RCPT first"])?;
                return Ok(Flow::Continue);
            }
            Some(_) => {}
        }
        let pipelined = self
            .envelope
            .as_ref()
            .is_some_and(|e| e.reads_at_mail == self.reads);
        self.reply(354, &["Go ahead, end data with <CR><LF>.<CR><LF>"])?;

        let mut data = Vec::new();
        let mut problem: Option<String> = None;
        let mut line_no = 0usize;
        loop {
            let Some(line) = self.read_line()? else {
                self.note("EOF in DATA: message discarded");
                return Ok(Flow::Drop);
            };
            line_no += 1;
            // Postfix also ends on ".\n"; the bare LF is still reported below.
            if line == b".\r\n" || line == b".\n" {
                if line == b".\n" && problem.is_none() {
                    problem = Some(format!("bare <LF> at line {line_no} (the final dot)"));
                }
                self.log("C", ".");
                break;
            }
            self.log("C", &String::from_utf8_lossy(strip_eol(&line)));
            // RFC 5321 4.5.2: a leading dot was doubled by the client.
            let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
            if problem.is_none() {
                // The length limit does not count the stuffed dot (RFC 5321 4.5.3.1.6).
                problem = check_data_line(unstuffed, line_no);
            }
            if data.len() + unstuffed.len() > MAX_MESSAGE {
                problem.get_or_insert_with(|| "message exceeds SIZE".to_string());
            } else {
                data.extend_from_slice(unstuffed);
            }
            if matches!(self.fault(), Fault::DropMidData(n) if data.len() >= n) {
                self.note("fault: dropping the connection in the middle of DATA");
                return Ok(Flow::Drop);
            }
        }
        let envelope = self.envelope.take().expect("checked above");
        let body_8bit = envelope
            .params
            .iter()
            .any(|p| p.eq_ignore_ascii_case("BODY=8BITMIME"));
        if problem.is_none() && !body_8bit && !data.is_ascii() {
            problem = Some("8-bit data without BODY=8BITMIME (RFC 6152)".to_string());
        }
        if let Some(problem) = problem {
            self.note(&format!("message refused: {problem}"));
            let text = format!("5.6.0 Message refused: {problem}");
            self.reply(554, &[text.as_str()])?;
            return Ok(Flow::Continue);
        }
        let quota: Option<(u16, &[&str])> = match self.fault() {
            Fault::Quota(QuotaReply::GmailDaily) => Some((
                550,
                &[
                    "5.4.5 Daily user sending limit exceeded. For more information on Gmail",
                    "5.4.5 sending limits go to",
                    "5.4.5  https://support.google.com/a/answer/166852 - gsmtp",
                ],
            )),
            Fault::Quota(QuotaReply::MicrosoftQuota) => Some((
                554,
                &["5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.[EndDiagnosticData]"],
            )),
            _ => None,
        };
        if let Some((code, lines)) = quota {
            self.reply(code, lines)?;
            return Ok(Flow::Continue);
        }
        if matches!(self.fault(), Fault::Data451) {
            self.reply(
                451,
                &["4.3.0 Temporary System Problem. Try again later (test fault)"],
            )?;
            return Ok(Flow::Continue);
        }
        let received = Received {
            mail_from: envelope.from,
            mail_params: envelope.params,
            rcpt_to: envelope.rcpts,
            data,
            auth_mechanism: self.authenticated.clone(),
            tls: self.tls,
            pipelined,
        };
        self.shared
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(received);
        self.reply(250, &["2.0.0 OK, message accepted - gsmtp"])?;
        Ok(Flow::Continue)
    }

    /// One line including its line end; `None` at EOF. A partial line at EOF is dropped:
    /// without its line end it was never a complete command.
    fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=scanned + pos).collect();
                return Ok(Some(line));
            }
            scanned = self.buf.len();
            if self.buf.len() > MAX_BUFFERED_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "line longer than the server's hard limit",
                ));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            self.reads += 1;
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a (possibly multi-line) reply: "250-first", ..., "250 last".
    fn reply(&mut self, code: u16, lines: &[&str]) -> io::Result<()> {
        if let Fault::SlowReplies(wait) = self.fault() {
            thread::sleep(wait);
        }
        let mut out = String::new();
        for (i, text) in lines.iter().enumerate() {
            let separator = if i + 1 == lines.len() { ' ' } else { '-' };
            let line = format!("{code}{separator}{text}");
            self.log("S", &line);
            out.push_str(&line);
            out.push_str("\r\n");
        }
        self.stream.write_all(out.as_bytes())?;
        self.stream.flush()
    }

    fn log(&self, who: &str, line: &str) {
        self.shared.log(format!("#{} {who}: {line}", self.id));
    }

    fn note(&self, event: &str) {
        self.shared.log(format!("#{} -- {event}", self.id));
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What a strict server refuses in a DATA line: anything but CRLF line ends (bare LF, CR CR
/// LF, lone CR) and lines over 998 octets.
fn check_data_line(line: &[u8], line_no: usize) -> Option<String> {
    let content = line.strip_suffix(b"\r\n");
    match content {
        None => Some(format!("bare <LF> at line {line_no}")),
        Some(content) if content.contains(&b'\r') => Some(format!("bare <CR> at line {line_no}")),
        Some(_) if line.len() > MAX_TEXT_LINE => Some(format!(
            "line {line_no} is {} octets, over the 998 limit",
            line.len() - 2
        )),
        Some(_) => None,
    }
}

/// Parses "FROM:<addr> PARAM..." / "TO:<addr> PARAM..." (keyword case-insensitive, a space
/// after the colon tolerated as most servers do) into the address and its parameters.
fn parse_path(arg: &str, keyword: &str) -> Option<(String, Vec<String>)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let address = rest[..end].to_string();
    let params = rest[end + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some((address, params))
}

/// `local@domain` with both parts present: Gmail refuses anything else with 553.
fn is_qualified(address: &str) -> bool {
    match address.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !address.contains(' '),
        None => false,
    }
}

/// Decodes "user=U\x01auth=Bearer T\x01\x01" into (U, T).
fn parse_xoauth2(decoded: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(decoded).ok()?;
    let body = text.strip_suffix("\x01\x01")?;
    let mut user = None;
    let mut token = None;
    for field in body.split('\x01') {
        if let Some(u) = field.strip_prefix("user=") {
            user = Some(u.to_string());
        } else if let Some(t) = field.strip_prefix("auth=Bearer ") {
            token = Some(t.to_string());
        } else {
            return None;
        }
    }
    Some((user?, token?))
}
