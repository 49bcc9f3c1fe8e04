//! The network SMTP server devices talk to: STARTTLS, implicit TLS or none (rustls),
//! AUTH PLAIN (with and without an initial response) and LOGIN, HELO without EHLO, bare
//! LF line ends, several messages per connection. The lines are read and parsed by the
//! pieces of `smtp::server`; what is new here is who may send. Never an open relay: no
//! MAIL before the device is known, by its password or by its address.

use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustls::{ServerConnection, StreamOwned};

use crate::config::relay::ListenerTls;
use crate::config::Config;
use crate::message::address::{self, Resolver};
use crate::message::input;
use crate::smtp::server::{
    failure_reply, mail_parameters, parse_path, read_data, read_line, ready_for_data, reply_lines,
    split_command, strip_line_end, write_reply, Read as Line, Stage, MAX_COMMAND_LINE,
    MAX_RECIPIENTS,
};

use super::devices::{Devices, Known};
use super::limits::{self, Metered, Timed};
use super::{Handed, Port, Relay};

/// Accepts until the service stops; each connection gets a thread within the caps.
pub fn accept_loop(relay: &Arc<Relay>, port: &Port, socket: TcpListener) {
    let port = Arc::new(Port {
        settings: port.settings.clone(),
        tls: port.tls.clone(),
    });
    if socket.set_nonblocking(true).is_err() {
        eprintln!("oauth-sendmail: relay: cannot use its socket");
        return;
    }
    while crate::sys::signals::stop_requested().is_none() {
        if !crate::sys::peer::wait_readable(socket.as_raw_fd(), Duration::from_millis(500)) {
            continue;
        }
        let (stream, peer) = match socket.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                eprintln!("oauth-sendmail: relay: accepting a connection: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        let relay = relay.clone();
        let port = port.clone();
        let started = std::thread::Builder::new().spawn(move || {
            let ip = canonical(peer.ip());
            match relay.limits.connect(ip) {
                Ok(_slot) => serve(&relay, &port, stream, ip),
                Err(why) => {
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = write_reply(&mut &stream, 421, "4.7.0", &[why]);
                }
            }
        });
        if let Err(e) = started {
            eprintln!("oauth-sendmail: relay: cannot take a connection: {e}");
        }
    }
}

/// An IPv4 client on a dual-stack socket is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The connection, in the clear or in TLS.
enum Conn {
    Plain(Timed),
    Tls(Box<StreamOwned<ServerConnection, Timed>>),
    /// For the moment of the switch to TLS.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection is gone")
}

impl Conn {
    /// Every read from now must be done by `until`.
    fn deadline(&mut self, until: Instant) {
        match self {
            Conn::Plain(timed) => timed.until = until,
            Conn::Tls(tls) => tls.sock.until = until,
            Conn::Gone => {}
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Gone => Err(gone()),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
            Conn::Gone => Err(gone()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
            Conn::Gone => Err(gone()),
        }
    }
}

fn tls(config: &Arc<rustls::ServerConfig>, timed: Timed) -> io::Result<Conn> {
    let connection = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    Ok(Conn::Tls(Box::new(StreamOwned::new(connection, timed))))
}

/// What to do after a command.
#[derive(PartialEq)]
enum Flow {
    Continue,
    Quit,
}

struct Envelope {
    claimed: String,
    recipients: Vec<String>,
    declared: Option<u64>,
}

struct Session<'a> {
    relay: &'a Relay,
    port: &'a Port,
    config: Arc<Config>,
    devices: Arc<Devices>,
    ip: IpAddr,
    io: BufReader<Conn>,
    line: Vec<u8>,
    helo: Option<String>,
    extended: bool,
    encrypted: bool,
    /// Known by its password (AUTH), not by its address.
    authenticated: bool,
    device: Option<Known>,
    envelope: Option<Envelope>,
}

fn serve(relay: &Relay, port: &Port, stream: TcpStream, ip: IpAddr) {
    let timed = Timed::new(stream);
    let conn = match (&port.tls, port.settings.tls) {
        (Some(config), ListenerTls::Implicit) => match tls(config, timed) {
            Ok(conn) => conn,
            Err(_) => return,
        },
        _ => Conn::Plain(timed),
    };
    let (config, devices) = relay.current();
    let mut session = Session {
        relay,
        port,
        config,
        devices,
        ip,
        io: BufReader::new(conn),
        line: Vec::new(),
        helo: None,
        extended: false,
        encrypted: port.settings.tls == ListenerTls::Implicit,
        authenticated: false,
        device: None,
        envelope: None,
    };
    if let Err(err) = session.run() {
        if err.kind() == io::ErrorKind::TimedOut || err.kind() == io::ErrorKind::WouldBlock {
            let _ = session.reply(421, "4.4.2", "Timeout: closing the connection");
            eprintln!("oauth-sendmail: relay: {ip} too slow, dropped");
        } else if err.kind() == io::ErrorKind::InvalidData {
            // rustls: a TLS version or cipher it does not speak (TLS 1.0/1.1), or garbage.
            eprintln!(
                "oauth-sendmail: relay: TLS with {ip} failed: {err} (TLS 1.2 and 1.3 only; a device that has nothing older needs a listener with tls = \"none\" on the LAN)"
            );
        }
    }
}

impl Session<'_> {
    fn run(&mut self) -> io::Result<()> {
        let greeting = format!("{} ESMTP oauth-sendmail relay", self.relay.host);
        self.reply(220, "", &greeting)?;
        loop {
            // A stopping service answers the command in flight, then closes (RFC 5321
            // 3.8): the device keeps what it has not had a 250 for, and sends it later.
            if crate::sys::signals::stop_requested().is_some() {
                self.reply(421, "4.3.2", "Service shutting down: try again later")?;
                return Ok(());
            }
            self.io
                .get_mut()
                .deadline(Instant::now() + limits::COMMAND_DEADLINE);
            let flow = match read_line(&mut self.io, &mut self.line, MAX_COMMAND_LINE)? {
                Line::Eof => return Ok(()),
                Line::Line { too_long: true, .. } => {
                    self.reply(500, "5.5.2", "Line too long")?;
                    Flow::Continue
                }
                Line::Line { .. } => self.command()?,
            };
            if flow == Flow::Quit {
                return Ok(());
            }
        }
    }

    fn command(&mut self) -> io::Result<Flow> {
        let Some((verb, arg)) = split_command(&self.line) else {
            self.reply(500, "5.5.2", "Command contains bad characters")?;
            return Ok(Flow::Continue);
        };
        let arg = arg.as_str();
        match verb.as_str() {
            "EHLO" => self.hello(arg, true)?,
            "HELO" => self.hello(arg, false)?,
            "STARTTLS" => return self.starttls(arg),
            "AUTH" => return self.auth(arg),
            "MAIL" => self.mail(arg)?,
            "RCPT" => self.rcpt(arg)?,
            "DATA" => self.data(arg)?,
            "RSET" => {
                self.envelope = None;
                self.reply(250, "2.0.0", "Ok")?;
            }
            "NOOP" => self.reply(250, "2.0.0", "Ok")?,
            "VRFY" => self.reply(252, "2.0.0", "Cannot VRFY, but send a message")?,
            "HELP" => self.reply(
                214,
                "2.0.0",
                "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP QUIT",
            )?,
            "QUIT" => {
                self.reply(221, "2.0.0", "Bye")?;
                return Ok(Flow::Quit);
            }
            "EXPN" | "BDAT" | "ETRN" | "TURN" | "ATRN" | "SEND" | "SOML" | "SAML" => {
                self.reply(502, "5.5.1", "Command not implemented")?
            }
            _ => self.reply(500, "5.5.2", "Command not recognized")?,
        }
        Ok(Flow::Continue)
    }

    /// AUTH is offered once the line is encrypted, or in the clear only where the
    /// listener says `tls = "none"`.
    fn auth_offered(&self) -> bool {
        self.encrypted || self.port.settings.tls == ListenerTls::None
    }

    fn starttls_offered(&self) -> bool {
        !self.encrypted
            && self.port.settings.tls == ListenerTls::Starttls
            && self.port.tls.is_some()
    }

    fn hello(&mut self, arg: &str, extended: bool) -> io::Result<()> {
        let verb = if extended { "EHLO" } else { "HELO" };
        if arg.trim().is_empty() {
            return self.reply(501, "5.5.4", &format!("Syntax: {verb} hostname"));
        }
        self.envelope = None;
        self.helo = Some(arg.trim().chars().take(100).collect());
        self.extended = extended;
        let name = self.relay.host.clone();
        if !extended {
            return self.reply(250, "", &name);
        }
        let mut lines = vec![
            name,
            "PIPELINING".to_string(),
            format!("SIZE {}", self.port.settings.max_message_size),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
        ];
        if self.starttls_offered() {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() && !self.authenticated {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        write_reply(self.io.get_mut(), 250, "", &lines)
    }

    fn starttls(&mut self, arg: &str) -> io::Result<Flow> {
        if !arg.is_empty() {
            self.reply(501, "5.5.4", "Syntax: STARTTLS")?;
            return Ok(Flow::Continue);
        }
        let Some(config) = self.port.tls.clone().filter(|_| self.starttls_offered()) else {
            self.reply(503, "5.5.1", "TLS is not available here or already on")?;
            return Ok(Flow::Continue);
        };
        self.reply(220, "2.0.0", "Ready to start TLS")?;
        // RFC 3207: whatever the client sent before the handshake is not to be trusted
        // (command injection): a client that pipelined past STARTTLS is dropped.
        if !self.io.buffer().is_empty() {
            eprintln!(
                "oauth-sendmail: relay: {} sent commands after STARTTLS in the clear, dropped",
                self.ip
            );
            return Ok(Flow::Quit);
        }
        let old = std::mem::replace(&mut self.io, BufReader::new(Conn::Gone)).into_inner();
        let Conn::Plain(timed) = old else {
            return Ok(Flow::Quit);
        };
        self.io = BufReader::new(tls(&config, timed)?);
        self.encrypted = true;
        // RFC 3207 4.2: the client starts over with EHLO, and nothing learnt in the
        // clear is kept.
        self.helo = None;
        self.envelope = None;
        self.device = None;
        self.authenticated = false;
        Ok(Flow::Continue)
    }

    fn auth(&mut self, arg: &str) -> io::Result<Flow> {
        if !self.auth_offered() {
            self.reply(538, "5.7.11", "Encryption required: send STARTTLS first")?;
            return Ok(Flow::Continue);
        }
        if self.helo.is_none() {
            self.reply(503, "5.5.1", "Send EHLO first")?;
            return Ok(Flow::Continue);
        }
        if self.authenticated {
            self.reply(503, "5.5.1", "Already authenticated")?;
            return Ok(Flow::Continue);
        }
        if self.envelope.is_some() {
            self.reply(503, "5.5.1", "AUTH not allowed during a transaction")?;
            return Ok(Flow::Continue);
        }
        if self.relay.limits.blocked(self.ip) {
            eprintln!(
                "oauth-sendmail: relay: {} has too many failed logins, refused",
                self.ip
            );
            self.reply(
                421,
                "4.7.0",
                "Too many failed logins from your address: try later",
            )?;
            return Ok(Flow::Quit);
        }
        let (mechanism, initial) = arg.split_once(' ').unwrap_or((arg, ""));
        let initial = initial.trim();
        let credentials = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let response = match initial {
                    "" => match self.challenge("")? {
                        Some(response) => response,
                        None => return Ok(Flow::Quit),
                    },
                    given => given.to_string(),
                };
                decode(&response).and_then(|bytes| {
                    // authzid NUL authcid NUL password (RFC 4616)
                    let mut parts = bytes.split(|&b| b == 0);
                    let (_, Some(user), Some(password), None) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        return None;
                    };
                    Some((text(user)?, text(password)?))
                })
            }
            "LOGIN" => {
                let user = match initial {
                    "" => match self.challenge("VXNlcm5hbWU6")? {
                        Some(response) => response,
                        None => return Ok(Flow::Quit),
                    },
                    given => given.to_string(),
                };
                let Some(user) = decode(&user).and_then(|b| text(&b)) else {
                    self.reply(501, "5.5.2", "Cannot decode the response")?;
                    return Ok(Flow::Continue);
                };
                let Some(password) = self.challenge("UGFzc3dvcmQ6")? else {
                    return Ok(Flow::Quit);
                };
                decode(&password).and_then(|b| text(&b)).map(|p| (user, p))
            }
            _ => {
                self.reply(504, "5.5.4", "Unrecognized authentication type")?;
                return Ok(Flow::Continue);
            }
        };
        let Some((user, password)) = credentials else {
            self.reply(501, "5.5.2", "Cannot decode the response")?;
            return Ok(Flow::Continue);
        };
        match self.devices.authenticate(&user, &password, self.ip) {
            Some(device) => {
                self.device = Some(device.clone());
                self.authenticated = true;
                self.reply(235, "2.7.0", "Authentication successful")?;
            }
            None => {
                self.relay.limits.failed(self.ip);
                let shown: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
                eprintln!(
                    "oauth-sendmail: relay: failed login as `{shown}` from {}",
                    self.ip
                );
                std::thread::sleep(limits::FAILURE_DELAY);
                self.reply(535, "5.7.8", "Authentication credentials invalid")?;
            }
        }
        Ok(Flow::Continue)
    }

    /// Sends a 334 challenge and reads the response line; `None` when the client quit
    /// (some Xerox printers send QUIT instead of an answer). A cancel ("*") does not
    /// decode, so it gets the 501 RFC 4954 asks for.
    fn challenge(&mut self, prompt: &str) -> io::Result<Option<String>> {
        write_reply(self.io.get_mut(), 334, "", &[prompt])?;
        self.io
            .get_mut()
            .deadline(Instant::now() + limits::COMMAND_DEADLINE);
        match read_line(&mut self.io, &mut self.line, MAX_COMMAND_LINE)? {
            Line::Eof => Ok(None),
            Line::Line { .. } => {
                let response = String::from_utf8_lossy(strip_line_end(&self.line))
                    .trim()
                    .to_string();
                if response.eq_ignore_ascii_case("QUIT") {
                    self.reply(221, "2.0.0", "Bye")?;
                    return Ok(None);
                }
                Ok(Some(response))
            }
        }
    }

    fn mail(&mut self, arg: &str) -> io::Result<()> {
        if self.helo.is_none() {
            return self.reply(503, "5.5.1", "Send HELO or EHLO first");
        }
        if self.envelope.is_some() {
            return self.reply(503, "5.5.1", "Nested MAIL command");
        }
        if self.device.is_none() {
            self.device = self.devices.by_address(self.ip).cloned();
        }
        let Some(device) = self.device.clone() else {
            eprintln!(
                "oauth-sendmail: relay: refused mail from {}: not authenticated and in no device's network",
                self.ip
            );
            return match self.auth_offered() {
                true => self.reply(530, "5.7.0", "Authentication required"),
                false => self.reply(
                    530,
                    "5.7.0",
                    "Must issue a STARTTLS command first, then AUTH",
                ),
            };
        };
        let Some((claimed, parameters)) = self.path(arg, "MAIL", "FROM:")? else {
            return Ok(());
        };
        let parameters: Vec<&str> = parameters.iter().map(String::as_str).collect();
        let declared = match mail_parameters(&parameters, self.port.settings.max_message_size) {
            Ok(declared) => declared,
            Err((code, status, text)) => return self.reply(code, status, &text),
        };
        if let Err((code, status, text)) = self.relay.admit(&device) {
            eprintln!("oauth-sendmail: relay: {text}");
            return self.reply(code, status, &text);
        }
        self.envelope = Some(Envelope {
            claimed,
            recipients: Vec::new(),
            declared,
        });
        self.reply(250, "2.1.0", "Ok")
    }

    fn rcpt(&mut self, arg: &str) -> io::Result<()> {
        let Some(taken) = self.envelope.as_ref().map(|e| e.recipients.len()) else {
            return self.reply(503, "5.5.1", "Need MAIL command");
        };
        let Some((recipient, parameters)) = self.path(arg, "RCPT", "TO:")? else {
            return Ok(());
        };
        if let Some(parameter) = parameters.first() {
            return self.reply(
                555,
                "5.5.4",
                &format!("Unsupported RCPT parameter {parameter}"),
            );
        }
        if recipient.is_empty() {
            return self.reply(501, "5.1.3", "Empty recipient address");
        }
        if taken >= MAX_RECIPIENTS {
            return self.reply(452, "4.5.3", "Too many recipients");
        }
        let resolver = Resolver::new(&self.config.aliases, self.config.domain.as_deref());
        if let Err(err) = resolver.recipient(&recipient) {
            let (code, status) = failure_reply(&err, Stage::Recipient);
            return self.failure(code, status, &err.to_string());
        }
        if let Some(envelope) = &mut self.envelope {
            envelope.recipients.push(recipient);
        }
        self.reply(250, "2.1.5", "Ok")
    }

    fn path(
        &mut self,
        arg: &str,
        verb: &str,
        keyword: &str,
    ) -> io::Result<Option<(String, Vec<String>)>> {
        if !arg.is_ascii() {
            self.reply(
                553,
                "5.6.7",
                "SMTPUTF8 is not offered: use an ASCII address",
            )?;
            return Ok(None);
        }
        let Some((path, parameters)) = parse_path(arg, keyword) else {
            self.reply(501, "5.5.4", &format!("Syntax: {verb} {keyword}<address>"))?;
            return Ok(None);
        };
        if address::is_qualified(&path) {
            if let Err(err) = address::check_syntax(&path) {
                self.failure(553, "5.1.7", &err.to_string())?;
                return Ok(None);
            }
        }
        Ok(Some((
            path,
            parameters.into_iter().map(str::to_string).collect(),
        )))
    }

    fn data(&mut self, arg: &str) -> io::Result<()> {
        let envelope = match ready_for_data(arg, &mut self.envelope, |e| e.recipients.len()) {
            Ok(envelope) => envelope,
            Err((code, status, text)) => return self.reply(code, status, text),
        };
        // The listener's maximum is the limit, as Postfix's message_size_limit is: a SIZE
        // declared at MAIL FROM was checked against it there, and is an estimate (Python's
        // smtplib declares the bytes it was given, then adds the CRLF a message must end
        // with). The deadline goes by what was declared.
        let max = self.port.settings.max_message_size;
        let expected = envelope.declared.unwrap_or(max).min(max);
        let until = Instant::now()
            + limits::DATA_DEADLINE
            + Duration::from_secs(expected / limits::BYTES_PER_SECOND);
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>")?;
        self.io.get_mut().deadline(until);
        // Held until the message is spooled; what it holds grows as the bytes arrive, up
        // to what a message keeps in memory: a large body goes to a file in the queue
        // directory as it is read.
        let mut metered = Metered::new(&mut self.io, self.relay.limits.budget(), until)
            .charging_at_most(input::HELD_AT_MOST);
        let queue = self.config.queue.dir.clone();
        let mut new_file = input::spill_in_queue(&queue);
        let no_room = input::NoRoom::Refuse;
        let read = read_data(
            &mut metered,
            &mut self.line,
            max as usize,
            &mut new_file,
            no_room,
        );
        let (exhausted, _memory) = (metered.exhausted, metered.budget);
        let data = match read {
            Ok(Some(data)) => data,
            Ok(None) => {
                return self.reply(
                    552,
                    "5.3.4",
                    "Message size exceeds fixed maximum message size",
                )
            }
            Err(_) if exhausted => {
                // The rest of the message is still coming: the dialogue cannot go on.
                self.reply(452, "4.3.1", "Too busy: try again later")?;
                return Err(io::Error::new(io::ErrorKind::OutOfMemory, "no room"));
            }
            Err(err) if err.kind() == crate::error::Kind::Temporary => {
                // A full disk: the spool could not take it either. As above, the rest of
                // the message is unread.
                self.reply(452, "4.3.1", "Insufficient system storage")?;
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no room"));
            }
            // A client that goes away before the final dot: nothing is queued.
            Err(_) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut off")),
        };
        let Some(device) = self.device.clone() else {
            return self.reply(530, "5.7.0", "Authentication required");
        };
        let protocol = match (self.extended, self.encrypted, self.authenticated) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, false, true) => "ESMTPA",
            (true, true, false) => "ESMTPS",
            (true, true, true) => "ESMTPSA",
        };
        let handed = Handed {
            device: &device,
            ip: self.ip,
            helo: self.helo.as_deref().unwrap_or(""),
            protocol,
            claimed: &envelope.claimed,
            recipients: &envelope.recipients,
            data: data.raw(),
            account: self.port.settings.account.as_deref(),
        };
        let config = self.config.clone();
        match self.relay.spool(&config, &handed) {
            Ok(id) => self.reply(250, "2.0.0", &format!("Ok: queued as {id}")),
            Err((code, status, text)) => self.failure(code, status, &text),
        }
    }

    fn failure(&mut self, code: u16, status: &str, text: &str) -> io::Result<()> {
        write_reply(self.io.get_mut(), code, status, &reply_lines(text))
    }

    fn reply(&mut self, code: u16, status: &str, text: &str) -> io::Result<()> {
        write_reply(self.io.get_mut(), code, status, &[text])
    }
}

fn decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text.trim()).ok()
}

fn text(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}
