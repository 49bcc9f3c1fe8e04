//! The SMTP client's connection: TCP, then TLS (rustls, always verified), every read and
//! write under a deadline, replies parsed and redacted as they arrive, and the `-v`
//! transcript of both directions.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, ClientConnection, StreamOwned};

use super::reply::{Parser, Redactor, Reply};
use crate::config::Account;
use crate::error::{Error, Kind, Result};

/// What the client is doing when a read or write fails: names the step in the error.
#[derive(Clone, Copy)]
pub enum Step<'a> {
    Connect,
    Greeting,
    Tls,
    /// AUTH, a step of its own: a refusal there is a refusal of our credentials.
    Auth,
    /// Any other command, named by its verb ("RCPT TO"), or "the message" after DATA.
    Command(&'a str),
}

impl Step<'_> {
    /// "timed out waiting for the reply to RCPT TO from HOST:PORT", or when it was our
    /// turn to write, "timed out sending the message to HOST:PORT".
    fn timed_out(&self, server: &str, sending: bool) -> String {
        match self {
            Step::Auth => Step::Command("AUTH").timed_out(server, sending),
            Step::Command(what) if sending => format!("timed out sending {what} to {server}"),
            Step::Connect => format!("timed out connecting to {server}"),
            Step::Greeting => format!("timed out waiting for the greeting from {server}"),
            Step::Tls => format!("timed out in the TLS handshake with {server}"),
            Step::Command(verb) => {
                format!("timed out waiting for the reply to {verb} from {server}")
            }
        }
    }

    /// "RCPT TO failed at HOST:PORT"
    pub fn failed(&self, server: &str) -> String {
        match self {
            Step::Auth => Step::Command("AUTH").failed(server),
            Step::Connect => format!("cannot connect to {server}"),
            Step::Greeting => format!("no greeting from {server}"),
            Step::Tls => format!("cannot secure the connection to {server}"),
            Step::Command(verb) => format!("{verb} failed at {server}"),
        }
    }
}

/// A socket whose every read and write ends by `deadline`: a server that drips a byte at
/// a time cannot hold us beyond it, as a per-read timeout would let it.
struct Socket {
    tcp: TcpStream,
    deadline: Instant,
}

impl Socket {
    fn left(&self) -> io::Result<Duration> {
        match self.deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

fn timed_out(err: io::Error) -> io::Error {
    match err.kind() {
        io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut.into(),
        _ => err,
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.left()?))?;
        quick_ack(&self.tcp);
        self.tcp.read(buf).map_err(timed_out)
    }
}

/// Asks the kernel to acknowledge what arrives at once rather than delay the ACK (by up
/// to 40 ms) for data of ours to ride on. A server that leaves Nagle's algorithm on and
/// writes a reply in two pieces (Postfix after TLS: the session tickets, then the EHLO
/// reply) holds the second until the first is acknowledged; while we wait for that reply
/// we have nothing to send, so a delayed ACK stalled the session by 40 ms. Linux resets
/// the flag by itself, hence before every read.
fn quick_ack(tcp: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option of the right size; failure is harmless.
        unsafe {
            libc::setsockopt(
                tcp.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = tcp;
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.left()?))?;
        self.tcp.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

enum Stream {
    Plain(Socket),
    Tls(Box<StreamOwned<ClientConnection, Socket>>),
}

impl Stream {
    fn socket(&mut self) -> &mut Socket {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &mut tls.sock,
        }
    }
}

/// One connection to a server, in plain text or TLS.
pub struct Wire {
    /// `None` only during the TLS upgrade, or after a failed one.
    stream: Option<Stream>,
    /// Bytes read and not yet consumed as reply lines.
    buf: Vec<u8>,
    pub server: String,
    host: String,
    /// The account's `timeout`: what each step may take.
    timeout: Duration,
    /// When the current phase (opening, one transaction) must be over, whatever the steps.
    bound: Instant,
    /// How long that phase was given, for the error when it runs out.
    bound_len: Duration,
    redactor: Redactor,
    pub transcript: Transcript,
}

impl Wire {
    /// Connects to the account's server (each address it resolves to, in turn), each step
    /// to take at most `timeout`, starting a phase that must be over within `bound`.
    pub fn connect(
        account: &Account,
        timeout: Duration,
        bound: Duration,
        transcript: Transcript,
    ) -> Result<Wire> {
        let server = format!("{}:{}", account.host, account.port);
        let start = Instant::now();
        let deadline = start + timeout.min(bound);
        let addresses = (account.host.as_str(), account.port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::new(Kind::Temporary, Step::Connect.failed(&server), e)
                    .hint("check `host` and the network")
            })?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
        let mut connected = None;
        for address in addresses {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = io::ErrorKind::TimedOut.into();
                break;
            }
            transcript.note(&format!("connecting to {address}"));
            match TcpStream::connect_timeout(&address, left) {
                Ok(tcp) => {
                    connected = Some(tcp);
                    break;
                }
                Err(e) => last = timed_out(e),
            }
        }
        let mut wire = Wire {
            stream: None,
            buf: Vec::new(),
            host: account.host.clone(),
            timeout,
            bound: start + bound,
            bound_len: bound,
            redactor: Redactor::default(),
            transcript,
            server,
        };
        let Some(tcp) = connected else {
            return Err(wire.io_error(Step::Connect, last, false));
        };
        // Commands are small writes each awaiting a reply: Nagle's algorithm would hold
        // them for the peer's delayed ACK (40 ms or more, on every command).
        let _ = tcp.set_nodelay(true);
        wire.stream = Some(Stream::Plain(Socket { tcp, deadline }));
        Ok(wire)
    }

    /// Starts a new phase that must be over within `bound`.
    pub fn set_bound(&mut self, bound: Duration) {
        self.bound = Instant::now() + bound;
        self.bound_len = bound;
    }

    pub fn is_encrypted(&self) -> bool {
        matches!(self.stream, Some(Stream::Tls(_)))
    }

    /// Takes `secret` out of every reply from now on.
    pub fn redact(&mut self, secret: &str) {
        self.redactor.add(secret);
    }

    /// `text` from the server (a decoded challenge) with the secrets taken out.
    pub fn redacted(&self, text: &str) -> String {
        self.redactor.apply(text)
    }

    /// Sets the deadline of the next reads and writes: `deadline`, or the end of the phase
    /// if that comes first.
    fn arm(&mut self, deadline: Instant) -> Result<&mut Stream> {
        let deadline = deadline.min(self.bound);
        match self.stream.as_mut() {
            Some(stream) => {
                stream.socket().deadline = deadline;
                Ok(stream)
            }
            None => Err(Error::new(
                Kind::Temporary,
                format!("the connection to {} is closed", self.server),
                "an earlier step failed",
            )),
        }
    }

    /// The TLS handshake, on connecting (implicit TLS) or after STARTTLS's 220.
    pub fn start_tls(&mut self, config: Arc<ClientConfig>) -> Result<()> {
        let name = ServerName::try_from(self.host.clone()).map_err(|e| {
            Error::new(
                Kind::Config,
                format!("cannot use host `{}` for TLS", self.host),
                e,
            )
        })?;
        let conn = ClientConnection::new(config, name)
            .map_err(|e| Error::new(Kind::Internal, "cannot set up TLS", e))?;
        self.arm(Instant::now() + self.timeout)?;
        let socket = match self.stream.take() {
            Some(Stream::Plain(socket)) => socket,
            other => {
                self.stream = other;
                return Err(Error::new(
                    Kind::Internal,
                    "cannot start TLS",
                    "TLS is on already",
                ));
            }
        };
        if !self.buf.is_empty() {
            // RFC 3207 section 4.2: what came before the handshake may be an attacker's.
            return Err(Error::new(
                Kind::Protocol,
                Step::Tls.failed(&self.server),
                "the server sent more after its STARTTLS reply",
            ));
        }
        let mut tls = StreamOwned::new(conn, socket);
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                return Err(self.tls_error(e));
            }
        }
        let version = match tls.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
            _ => "TLS",
        };
        // A resumed session was verified when it was made, by this process.
        let how = match tls.conn.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => format!("session with {} resumed", self.host),
            _ => format!("certificate of {} verified", self.host),
        };
        self.transcript
            .note(&format!("{version} established, {how}"));
        self.stream = Some(Stream::Tls(Box::new(tls)));
        Ok(())
    }

    /// A failed handshake: a certificate we cannot trust is a person's problem, named as
    /// such; anything else (a reset, a handshake cut short) may pass.
    fn tls_error(&self, err: io::Error) -> Error {
        let rustls_error = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let Some(rustls::Error::InvalidCertificate(problem)) = rustls_error else {
            return self
                .io_error(Step::Tls, err, false)
                .hint("if the server uses a private CA, set ca_file to its certificate (PEM)");
        };
        let host = &self.host;
        let name_hint = "set `host` to a name the certificate is for (as the provider \
                         documents it), or find out why the server presents another one";
        let (problem, hint) = match problem {
            CertificateError::NotValidForName => (format!("is not for {host}"), name_hint),
            CertificateError::NotValidForNameContext { presented, .. } => (
                format!(
                    "is for {}, not {host}",
                    presented
                        .iter()
                        .map(|name| presented_name(name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                name_hint,
            ),
            CertificateError::UnknownIssuer => (
                "is not trusted: unknown issuer".to_string(),
                "if the server uses a private CA, set ca_file to that CA's certificate (PEM); \
                 if it should have a public certificate, something in between may be \
                 intercepting the connection",
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                "has expired".to_string(),
                "the server's administrator must renew it; check this machine's clock too",
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                ("is not valid yet".to_string(), "check this machine's clock")
            }
            CertificateError::Revoked => (
                "has been revoked".to_string(),
                "the server's administrator must replace it",
            ),
            other => {
                let error = Error::new(
                    Kind::Certificate,
                    Step::Tls.failed(&self.server),
                    format!("the certificate of {host} is not valid"),
                );
                return error
                    .caused_by(rustls::Error::InvalidCertificate(other.clone()))
                    .hint("if the server uses a private CA, set ca_file to that CA's certificate (PEM)");
            }
        };
        Error::new(
            Kind::Certificate,
            Step::Tls.failed(&self.server),
            format!("the certificate of {host} {problem}"),
        )
        .hint(hint)
    }

    /// Writes `bytes` by `deadline`.
    pub fn write(&mut self, bytes: &[u8], deadline: Instant, step: Step) -> Result<()> {
        let stream = self.arm(deadline)?;
        let written = match stream {
            Stream::Plain(socket) => socket.write_all(bytes),
            Stream::Tls(tls) => tls.write_all(bytes).and_then(|()| tls.flush()),
        };
        written.map_err(|e| self.broken(step, e, true))
    }

    /// Sends a command line (CRLF added), shown in the transcript as `shown`.
    pub fn send(&mut self, line: &str, shown: &str, step: Step) -> Result<()> {
        self.transcript.sent(shown);
        let deadline = Instant::now() + self.timeout;
        self.write(format!("{line}\r\n").as_bytes(), deadline, step)
    }

    /// Sends several command lines in one write (RFC 2920 pipelining), each shown.
    pub fn send_all(&mut self, lines: &[String], step: Step) -> Result<()> {
        let mut bytes = Vec::with_capacity(lines.iter().map(|l| l.len() + 2).sum());
        for line in lines {
            self.transcript.sent(line);
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        let deadline = Instant::now() + self.timeout;
        self.write(&bytes, deadline, step)
    }

    /// Sends a command and waits for its reply.
    pub fn command(&mut self, line: &str, step: Step) -> Result<Reply> {
        self.send(line, line, step)?;
        self.reply(step)
    }

    /// Reads one complete reply within the step's timeout, every line redacted and shown.
    pub fn reply(&mut self, step: Step) -> Result<Reply> {
        self.arm(Instant::now() + self.timeout)?;
        let mut parser = Parser::default();
        loop {
            let line = self.read_line(step)?;
            let parsed = parser.line(&line);
            match parsed {
                Ok(None) => continue,
                Ok(Some(mut reply)) => {
                    for text in &mut reply.lines {
                        *text = self.redactor.apply(text);
                    }
                    for line in reply.wire_lines() {
                        self.transcript.received(&line);
                    }
                    return Ok(reply);
                }
                Err(why) => return Err(self.not_smtp(step, &why)),
            }
        }
    }

    /// One line without its line end (CRLF, or a bare LF some servers send).
    fn read_line(&mut self, step: Step) -> Result<Vec<u8>> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.buf[scanned..]) {
                let mut line: Vec<u8> = self.buf.drain(..=scanned + pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            scanned = self.buf.len();
            if scanned > super::reply::MAX_LINE {
                let why = format!("a line of over {} octets", super::reply::MAX_LINE);
                return Err(self.not_smtp(step, &why));
            }
            let mut chunk = [0u8; 4096];
            let read = match self.stream.as_mut() {
                Some(Stream::Plain(socket)) => socket.read(&mut chunk),
                Some(Stream::Tls(tls)) => tls.read(&mut chunk),
                None => Ok(0),
            };
            match read {
                Ok(0) => {
                    self.stream = None;
                    return Err(Error::new(
                        Kind::Temporary,
                        step.failed(&self.server),
                        "the server closed the connection",
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.broken(step, e, false)),
            }
        }
    }

    /// An answer that is not SMTP: nothing after it can be trusted to be either.
    fn not_smtp(&mut self, step: Step, why: &str) -> Error {
        self.stream = None;
        Error::new(
            Kind::Protocol,
            step.failed(&self.server),
            format!(
                "the server's answer is not SMTP: {}",
                self.redactor.apply(why)
            ),
        )
    }

    /// An I/O failure in the middle of the dialogue: the connection is good for nothing
    /// more (not even QUIT, whose reply would come after what did not).
    fn broken(&mut self, step: Step, err: io::Error, sending: bool) -> Error {
        self.stream = None;
        self.io_error(step, err, sending)
    }

    /// An I/O failure at `step`: a timeout worded as one, the rest as the OS says it.
    fn io_error(&self, step: Step, err: io::Error, sending: bool) -> Error {
        if err.kind() == io::ErrorKind::TimedOut {
            let why = match self.bound <= Instant::now() {
                true => format!(
                    "this part of the session is allowed {} seconds in all",
                    self.bound_len.as_secs()
                ),
                false => format!(
                    "not done in time (timeout = {} seconds a step)",
                    self.timeout.as_secs()
                ),
            };
            return Error::new(Kind::Temporary, step.timed_out(&self.server, sending), why)
                .hint("if the server is only slow, raise `timeout` for this account");
        }
        let what = step.failed(&self.server);
        match err.kind() {
            io::ErrorKind::UnexpectedEof => {
                Error::new(Kind::Temporary, what, "the server closed the connection")
            }
            _ => Error::from_cause(Kind::Temporary, what, err),
        }
    }

    /// Says QUIT (when the connection is still fit) and closes TLS properly.
    pub fn quit(mut self) {
        if self.stream.is_none() {
            return;
        }
        let timeout = self.timeout.min(Duration::from_secs(5));
        self.bound = Instant::now() + timeout;
        if self.send("QUIT", "QUIT", Step::Command("QUIT")).is_ok() {
            let _ = self.reply(Step::Command("QUIT"));
        }
        if let Some(Stream::Tls(mut tls)) = self.stream.take() {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }
}

/// A name from a certificate as rustls presents it (`DnsName("mx.example")`): the name.
fn presented_name(name: &str) -> &str {
    match (name.find('"'), name.rfind('"')) {
        (Some(start), Some(end)) if start < end => &name[start + 1..end],
        _ => name,
    }
}

/// The rustls client config for an account: the system's CA certificates (read once per
/// process, see `trust`) and the account's `ca_file`, which is tried first (the system's
/// are read only if the server's chain does not lead to it).
///
/// One config per trust setting for the life of the process, since its session cache is
/// what lets a later connection to the same server resume (a TLS 1.3 ticket): no
/// certificate chain or handshake signature to verify, which is most of a handshake's
/// cost. That is every connection after the first in the service, in a drain's parallel
/// connections and in a `sendmail -q` that reconnects. The `ca_file` is read each time,
/// so a changed one (the service reloads on SIGHUP) gets a config of its own.
/// Across processes there is no resumption: rustls gives a client no way to store a
/// session outside memory (rustls/rustls#2287).
pub fn tls_config(account: &Account) -> Result<Arc<ClientConfig>> {
    type Configs = Vec<(Option<(std::path::PathBuf, Vec<u8>)>, Arc<ClientConfig>)>;
    static CONFIGS: std::sync::Mutex<Configs> = std::sync::Mutex::new(Vec::new());
    let trust = match &account.ca_file {
        None => None,
        Some(path) => Some((path.clone(), read_ca_file(path)?)),
    };
    let mut configs = CONFIGS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, config)) = configs.iter().find(|(key, _)| *key == trust) {
        return Ok(Arc::clone(config));
    }
    let config = new_tls_config(trust.as_ref().map(|(path, pem)| (path.as_path(), &pem[..])))?;
    // A service reloaded many times with a ca_file changed each time keeps a few.
    if configs.len() == 8 {
        configs.remove(0);
    }
    configs.push((trust, Arc::clone(&config)));
    Ok(config)
}

fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| bad_ca_file(path, &e))
}

fn bad_ca_file(path: &std::path::Path, why: &dyn fmt::Display) -> Error {
    Error::new(
        Kind::Config,
        format!("cannot use ca_file {}", path.display()),
        why.to_string(),
    )
}

fn new_tls_config(ca_file: Option<(&std::path::Path, &[u8])>) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(Kind::Internal, "cannot set up TLS", e))?;
    let Some((path, pem)) = ca_file else {
        let system = crate::sys::trust::system();
        if system.store.is_empty() {
            return Err(Error::new(
                Kind::Config,
                "cannot verify the server's certificate",
                "no CA certificates: none in the system store and no ca_file",
            )
            .hint("install the ca-certificates package, or set ca_file"));
        }
        let config = builder
            .with_root_certificates(Arc::clone(&system.store))
            .with_no_client_auth();
        return Ok(Arc::new(config));
    };
    let bad = |why: &dyn fmt::Display| bad_ca_file(path, why);
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::sys::trust::pem_certs(pem).map_err(|e| bad(&e))? {
        roots.add(cert).map_err(|e| bad(&e))?;
    }
    let verifier =
        crate::sys::trust::CaFileFirst::new(roots, provider, crate::sys::trust::system_store)
            .ok_or_else(|| bad(&"it holds no PEM certificate"))?;
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The `-v` dialogue on stderr: `-> ` what we sent (secrets shown as "(redacted)"),
/// `<- ` each line the server sent, `-- ` what happened in between.
pub struct Transcript {
    pub on: bool,
}

impl Transcript {
    pub fn sent(&self, line: &str) {
        if self.on {
            crate::transcript::line("->", line);
        }
    }

    fn received(&self, line: &str) {
        if self.on {
            crate::transcript::line("<-", line);
        }
    }

    pub fn note(&self, text: &str) {
        if self.on {
            crate::transcript::line("--", text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_ask_for_quick_acks() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(b"220 hi\r\n").unwrap();
        let mut socket = Socket {
            tcp,
            deadline: Instant::now() + Duration::from_secs(5),
        };
        let quick = |socket: &Socket| {
            let mut on: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: a valid socket, and room for the c_int option.
            let rc = unsafe {
                libc::getsockopt(
                    socket.tcp.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    (&mut on as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            on
        };
        quick_ack(&socket.tcp);
        assert_eq!(quick(&socket), 1);
        let mut buf = [0u8; 16];
        assert_eq!(socket.read(&mut buf).unwrap(), 8);
    }

    #[test]
    fn auth_is_named_as_the_command_it_is() {
        assert_eq!(Step::Auth.failed("mx:587"), "AUTH failed at mx:587");
        assert_eq!(
            Step::Auth.timed_out("mx:587", false),
            "timed out waiting for the reply to AUTH from mx:587"
        );
        assert_eq!(
            Step::Auth.timed_out("mx:587", true),
            "timed out sending AUTH to mx:587"
        );
    }

    #[test]
    fn presented_names_lose_their_wrapping() {
        assert_eq!(presented_name("DnsName(\"mx.example\")"), "mx.example");
        assert_eq!(presented_name("192.0.2.1"), "192.0.2.1");
        assert_eq!(presented_name("\""), "\"");
    }
}
