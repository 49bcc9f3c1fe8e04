//! SMTP submission through lettre's `SmtpConnection`: TLS always verified (STARTTLS or
//! implicit), AUTH by XOAUTH2, PLAIN/LOGIN or none, then MAIL/RCPT/DATA keeping each
//! recipient's answer. With `-v` the dialogue goes to stderr, secrets redacted.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use lettre::transport::smtp::authentication::Mechanism;
use lettre::transport::smtp::client::{Certificate, SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

use crate::config::{Account, AuthMethod, Tls};
use crate::credential::Secret;
use crate::error::{Error, Kind, Result};
use crate::intake::Prepared;

/// What the server said about each recipient of a message that reached DATA (or not).
#[derive(Debug, Default)]
pub struct Delivery {
    pub accepted: Vec<String>,
    /// The server's reply to the final dot ("250 2.0.0 Ok: queued as ABC"): what each
    /// accepted recipient's delivery-log entry records.
    pub reply: Option<String>,
    /// Refused for good (5xx on RCPT), with the server's words.
    pub refused: Vec<(String, String)>,
    /// Refused for now (4xx on RCPT).
    pub deferred: Vec<(String, String)>,
}

impl Delivery {
    /// The error to report when some recipients did not get the message.
    pub fn failure(&self) -> Option<Error> {
        let (kind, list, verb) = match (self.refused.is_empty(), self.deferred.is_empty()) {
            (true, true) => return None,
            (false, _) => (Kind::RecipientRefused, &self.refused, "refused"),
            (true, false) => (Kind::Temporary, &self.deferred, "deferred"),
        };
        let mut why: Vec<String> = self
            .refused
            .iter()
            .chain(&self.deferred)
            .map(|(r, e)| format!("{r}: {e}"))
            .collect();
        if !self.accepted.is_empty() {
            why.push(format!(
                "the message went to the other {} recipient(s)",
                self.accepted.len()
            ));
        }
        let who: Vec<&str> = list.iter().map(|(r, _)| r.as_str()).collect();
        Some(Error::new(
            kind,
            format!("recipient {} {verb}", who.join(", ")),
            why.join("; "),
        ))
    }
}

/// An open, authenticated connection to an account's server, good for several messages.
pub struct Session {
    conn: SmtpConnection,
    server: String,
    log: Transcript,
    broken: bool,
}

impl Session {
    /// Connects, secures and authenticates with `secret`.
    pub fn open(account: &Account, secret: Option<&Secret>, verbose: bool) -> Result<Session> {
        let log = Transcript { on: verbose };
        let server = format!("{}:{}", account.host, account.port);
        let mut conn = connect(account, &server, &log)?;
        if let (AuthMethod::Xoauth2 | AuthMethod::Password, Some(secret)) = (account.auth, secret) {
            if let Err(err) = authenticate(&mut conn, account, secret, &server, &log) {
                // Says QUIT and closes TLS properly: the server deserves to know we left.
                conn.abort();
                return Err(err);
            }
        }
        Ok(Session {
            conn,
            server,
            log,
            broken: false,
        })
    }

    /// Sends one message: MAIL, RCPT for each recipient, DATA.
    pub fn send(&mut self, message: &Prepared) -> Result<Delivery> {
        let result = transmit(&mut self.conn, message, &self.server, &self.log);
        if let Err(err) = &result {
            if err.kind() == Kind::Temporary || err.kind() == Kind::Protocol {
                // The connection may be half-way through a command: do not reuse it.
                self.broken = true;
            } else {
                // A refused transaction leaves the session usable once reset.
                self.log.sent("RSET");
                self.broken = self.conn.command(Rset).is_err();
            }
        }
        result
    }

    /// Still fit for another message.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    pub fn close(mut self) {
        self.log.sent("QUIT");
        let _ = self.conn.quit();
    }
}

/// Connects, authenticates and quits, sending nothing (`status --check`).
pub fn check(account: &Account, secret: Option<&Secret>, verbose: bool) -> Result<()> {
    Session::open(account, secret, verbose)?.close();
    Ok(())
}

fn connect(account: &Account, server: &str, log: &Transcript) -> Result<SmtpConnection> {
    let hello = account
        .hello_name
        .clone()
        .map(ClientId::Domain)
        .unwrap_or_default();
    let tls = match account.tls {
        Tls::None => None,
        Tls::Starttls | Tls::Implicit => Some(tls_parameters(account)?),
    };
    let implicit = tls.as_ref().filter(|_| account.tls == Tls::Implicit);
    log.note(&format!(
        "connecting to {server}{}",
        if implicit.is_some() { " with TLS" } else { "" }
    ));
    let mut conn = SmtpConnection::connect(
        (account.host.as_str(), account.port),
        Some(account.timeout),
        &hello,
        implicit,
        None,
    )
    .map_err(|e| failure(server, "connect", e))?;
    log.sent(&format!("EHLO {hello}"));
    log.note(&format!("server: {}", conn.server_info()));
    if account.tls == Tls::Starttls {
        if !conn.can_starttls() {
            return Err(Error::new(
                Kind::Unavailable,
                format!("cannot secure the connection to {server}"),
                "the server does not offer STARTTLS",
            )
            .hint(
                "use tls = \"implicit\" (usually port 465) if the server speaks TLS from the start",
            ));
        }
        log.sent("STARTTLS");
        let params = tls.as_ref().expect("STARTTLS has TLS parameters");
        conn.starttls(params, &hello)
            .map_err(|e| failure(server, "STARTTLS", e))?;
        log.sent(&format!("EHLO {hello}"));
        log.note(&format!("server: {}", conn.server_info()));
    }
    Ok(conn)
}

fn tls_parameters(account: &Account) -> Result<TlsParameters> {
    let mut builder = TlsParameters::builder(account.host.clone());
    if let Some(path) = &account.ca_file {
        let bad = |why: &dyn fmt::Display| {
            Error::new(
                Kind::Config,
                format!("cannot use ca_file {}", path.display()),
                why.to_string(),
            )
        };
        let pem = std::fs::read(path).map_err(|e| bad(&e))?;
        builder = builder.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| bad(&e))?);
    }
    builder
        .build_rustls()
        .map_err(|e| Error::new(Kind::Internal, "cannot set up TLS", e))
}

fn authenticate(
    conn: &mut SmtpConnection,
    account: &Account,
    secret: &Secret,
    server: &str,
    log: &Transcript,
) -> Result<()> {
    if !conn.is_encrypted() {
        return Err(Error::new(
            Kind::Internal,
            "refusing to authenticate",
            "the connection is not encrypted",
        ));
    }
    let offers = |m| conn.server_info().supports_auth_mechanism(m);
    match account.auth {
        AuthMethod::Xoauth2 if offers(Mechanism::Xoauth2) => {
            xoauth2(conn, account, secret, server, log)
        }
        AuthMethod::Password if offers(Mechanism::Plain) => {
            let plain = format!("\0{}\0{}", account.user, secret.expose());
            log.sent("AUTH PLAIN (redacted)");
            let reply = conn
                .command(Line(&format!("AUTH PLAIN {}", BASE64.encode(plain))))
                .map_err(|e| failure(server, "AUTH", e))?;
            log.received(&reply);
            Ok(())
        }
        AuthMethod::Password if offers(Mechanism::Login) => {
            let steps = [
                ("AUTH LOGIN".to_string(), "AUTH LOGIN"),
                (BASE64.encode(&account.user), "(user)"),
                (BASE64.encode(secret.expose()), "(redacted)"),
            ];
            for (line, shown) in steps {
                log.sent(shown);
                let reply = conn
                    .command(Line(&line))
                    .map_err(|e| failure(server, "AUTH", e))?;
                log.received(&reply);
            }
            Ok(())
        }
        _ => Err(Error::new(
            Kind::Unavailable,
            format!("cannot authenticate to {server}"),
            format!(
                "the server offers none of the mechanisms for auth = \"{}\": {}",
                auth_name(account.auth),
                conn.server_info()
            ),
        )),
    }
}

/// SASL XOAUTH2. A refused token draws `334 <base64 JSON>` (Gmail, Microsoft); the client
/// must answer with an empty line to get the final `535`. The JSON is the real reason.
fn xoauth2(
    conn: &mut SmtpConnection,
    account: &Account,
    token: &Secret,
    server: &str,
    log: &Transcript,
) -> Result<()> {
    let user = &account.user;
    let initial = format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose());
    log.sent("AUTH XOAUTH2 (redacted)");
    let reply = conn
        .command(Line(&format!("AUTH XOAUTH2 {}", BASE64.encode(initial))))
        .map_err(|e| failure(server, "AUTH", e))?;
    log.received(&reply);
    if !reply.has_code(334) {
        return Ok(());
    }
    let challenge = reply.first_line().unwrap_or_default().trim();
    let reason = BASE64
        .decode(challenge)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| challenge.to_string());
    log.sent("");
    let refusal = match conn.command(Line("")) {
        Ok(reply) => format!(
            "{} {}",
            reply.code(),
            reply.message().collect::<Vec<_>>().join(" ")
        ),
        Err(e) => describe(&e),
    };
    let error = Error::new(
        Kind::AuthRefused,
        format!("authentication refused by {server}"),
        format!("{refusal} (reason: {reason})"),
    );
    // With [oauth] the token engine refreshes and retries, and says what to check then.
    match account.oauth {
        Some(_) => Err(error),
        None => Err(error.hint(format!("the access token for {user} was not accepted: check that `secret` yields a current token (they expire after about an hour)"))),
    }
}

fn transmit(
    conn: &mut SmtpConnection,
    message: &Prepared,
    server: &str,
    log: &Transcript,
) -> Result<Delivery> {
    let envelope = &message.envelope;
    let sender = match envelope.sender.as_str() {
        "" => None,
        address => Some(parse_address(address)?),
    };
    let mut parameters = Vec::new();
    if message.eight_bit && conn.server_info().supports_feature(Extension::EightBitMime) {
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let mail = Mail::new(sender, parameters);
    log.sent(&mail.to_string());
    let reply = conn
        .command(mail)
        .map_err(|e| failure(server, "MAIL FROM", e))?;
    log.received(&reply);

    let mut delivery = Delivery::default();
    for recipient in &envelope.recipients {
        let rcpt = Rcpt::new(parse_address(recipient)?, vec![]);
        log.sent(&rcpt.to_string());
        match conn.command(rcpt) {
            Ok(reply) => {
                log.received(&reply);
                delivery.accepted.push(recipient.clone());
            }
            Err(e) if e.is_permanent() => delivery.refused.push((recipient.clone(), describe(&e))),
            Err(e) if e.is_transient() => delivery.deferred.push((recipient.clone(), describe(&e))),
            Err(e) => return Err(failure(server, "RCPT TO", e)),
        }
    }
    if delivery.accepted.is_empty() {
        log.sent("RSET");
        let _ = conn.command(Rset);
        return Ok(delivery);
    }
    log.sent("DATA");
    let reply = conn.command(Data).map_err(|e| failure(server, "DATA", e))?;
    log.received(&reply);
    log.note(&format!("({} bytes of message)", message.len()));
    log.sent(".");
    let reply = content(conn, message).map_err(|e| failure(server, "the message", e))?;
    log.received(&reply);
    delivery.reply = Some(format!(
        "{} {}",
        reply.code(),
        reply.message().collect::<Vec<_>>().join(" ")
    ));
    Ok(delivery)
}

/// Messages up to this size go out in one write with their final dot (one more copy of
/// the message, dot-stuffed, while it is written).
const ONE_WRITE: usize = 4 << 20;
/// Larger ones are dot-stuffed and written this much at a time, never copied whole.
const CHUNK: usize = 64 << 10;

/// The message after DATA's 354, and the server's reply to its final dot.
///
/// lettre's `message()` writes the text, then the final "\r\n.\r\n" in a second write,
/// then waits for the reply. lettre 0.11.23 sets no TCP_NODELAY (and offers no way to),
/// so Nagle's algorithm holds that small second write until the server acknowledges the
/// first, which a server delaying its ACKs does only after 40 ms (Linux) or more: on
/// every message. A text message therefore goes through `command()`, which writes what
/// it is given in one write; a larger or non-UTF-8 one through `message_iter`, in chunks
/// (at most that one stall, small beside the time its size takes).
fn content(conn: &mut SmtpConnection, message: &Prepared) -> SmtpResult {
    let [head, body] = message.pieces();
    if message.len() <= ONE_WRITE {
        if let (Ok(head), Ok(body)) = (std::str::from_utf8(head), std::str::from_utf8(body)) {
            return conn.command(DotStuffed([head, body]));
        }
    }
    // lettre dot-stuffs and appends CRLF.CRLF itself: hand it the text without its last CRLF.
    let (head, body) = match body.strip_suffix(b"\r\n") {
        Some(body) => (head, body),
        None if body.is_empty() => (head.strip_suffix(b"\r\n").unwrap_or(head), body),
        None => (head, body),
    };
    conn.message_iter(head.chunks(CHUNK).chain(body.chunks(CHUNK)))
}

type SmtpResult = std::result::Result<Response, lettre::transport::smtp::Error>;

/// Message text (CRLF line ends, ending in CRLF) as DATA content: each line that starts
/// with "." gets another, then the final ".", all in one string for `command()`.
struct DotStuffed<'a>([&'a str; 2]);

impl fmt::Display for DotStuffed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.0.iter().flat_map(|piece| piece.split_inclusive('\n')) {
            if line.starts_with('.') {
                f.write_str(".")?;
            }
            f.write_str(line)?;
        }
        f.write_str(".\r\n")
    }
}

fn parse_address(address: &str) -> Result<lettre::Address> {
    address
        .parse()
        .map_err(|e| Error::new(Kind::BadInput, format!("bad address `{address}`"), e))
}

/// A lettre error at `step` as our error: the kind from the reply code, the server's words kept.
fn failure(server: &str, step: &str, err: lettre::transport::smtp::Error) -> Error {
    let kind = if err.is_permanent() {
        match (step, err.status().map(u16::from)) {
            ("AUTH", Some(530 | 534 | 535 | 538)) => Kind::AuthRefused,
            _ => Kind::Unavailable,
        }
    } else if err.is_response() {
        Kind::Protocol
    } else {
        // 4xx, refused or dropped connections, timeouts, TLS handshakes cut short.
        Kind::Temporary
    };
    let error = Error::new(kind, format!("{step} failed at {server}"), describe(&err));
    if err.is_tls() {
        return error.hint("if the server uses a private CA, set ca_file to its certificate (PEM)");
    }
    error
}

/// A server's reply as it said it ("550 5.1.1 no such user"), else lettre's message with
/// its causes, which hold the useful part ("Connection refused").
fn describe(err: &lettre::transport::smtp::Error) -> String {
    use std::error::Error as _;
    match (err.status(), err.source()) {
        (Some(code), Some(words)) => format!("{code} {words}"),
        _ => describe_chain(err),
    }
}

fn describe_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // rustls appends a documentation link to some errors: noise in a mail log.
        let cause_text = cause.to_string();
        let cause_text = cause_text
            .split(": https://")
            .next()
            .unwrap_or_default()
            .to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

fn auth_name(auth: AuthMethod) -> &'static str {
    match auth {
        AuthMethod::Xoauth2 => "xoauth2",
        AuthMethod::Password => "password",
        AuthMethod::None => "none",
    }
}

/// A raw command line (lettre adds nothing): for AUTH, whose arguments we build.
struct Line<'a>(&'a str);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

/// The `-v` dialogue. Only lines given to it are printed, so secrets never are.
struct Transcript {
    on: bool,
}

impl Transcript {
    fn sent(&self, line: &str) {
        if self.on {
            eprintln!("-> {}", line.trim_end());
        }
    }

    fn received(&self, reply: &Response) {
        if self.on {
            let lines: Vec<&str> = reply.message().collect();
            for (i, line) in lines.iter().enumerate() {
                let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                eprintln!("<- {}{sep}{line}", reply.code());
            }
        }
    }

    fn note(&self, text: &str) {
        if self.on {
            eprintln!("-- {text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffed_text_ends_with_the_final_dot() {
        let text = DotStuffed([".top\r\nSubject: s\r\n\r\n", "..two\r\n.\r\nend.\r\n"]);
        assert_eq!(
            text.to_string(),
            "..top\r\nSubject: s\r\n\r\n...two\r\n..\r\nend.\r\n.\r\n"
        );
    }

    #[test]
    fn delivery_reports_refused_before_deferred() {
        let mut delivery = Delivery {
            accepted: vec!["a@x.org".into()],
            ..Default::default()
        };
        assert!(delivery.failure().is_none());
        delivery
            .deferred
            .push(("b@x.org".into(), "451 try later".into()));
        assert!(delivery.failure().unwrap().is_transient());
        delivery
            .refused
            .push(("c@x.org".into(), "550 5.1.1 no such user".into()));
        let err = delivery.failure().unwrap();
        assert_eq!(err.exit_code(), 67);
        let text = err.to_string();
        assert!(
            text.contains("c@x.org") && text.contains("550 5.1.1") && text.contains("other 1"),
            "{text}"
        );
    }
}
