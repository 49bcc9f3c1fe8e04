//! SMTP submission, spoken here over `wire` (TCP, rustls): TLS always verified (STARTTLS
//! or implicit), AUTH by XOAUTH2, PLAIN/LOGIN or none (the response on its own line when
//! the command would be long, RFC 4954), then MAIL/RCPT/DATA keeping each recipient's
//! answer, in one write where the server offers PIPELINING (RFC 2920). Every step has a deadline, and so has each phase. With `-v` the whole dialogue
//! goes to stderr, secrets redacted.
//!
//! lettre's `SmtpConnection` was used before: its timeout is per read (a server dripping
//! a byte at a time held a sender for ever), it cannot show the greeting or give the
//! certificate error apart from other TLS failures, and it cannot pipeline.

use std::io;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::reply::Reply;
use super::wire::{self, Step, Transcript, Wire};
use crate::config::{Account, AuthMethod, Tls};
use crate::error::{Error, Kind, Result};
use crate::message::envelope::Prepared;
use crate::secret::Secret;

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
    /// The error to report when some recipients did not get the message: each address
    /// once, with the server's words.
    pub fn failure(&self) -> Option<Error> {
        let kind = match (self.refused.is_empty(), self.deferred.is_empty()) {
            (true, true) => return None,
            (false, _) => Kind::RecipientRefused,
            (true, false) => Kind::Temporary,
        };
        let answers: Vec<(&str, &str, &str)> = self
            .refused
            .iter()
            .map(|(r, e)| (r.as_str(), e.as_str(), "refused"))
            .chain(
                self.deferred
                    .iter()
                    .map(|(r, e)| (r.as_str(), e.as_str(), "deferred")),
            )
            .collect();
        let (what, mut why) = match answers.as_slice() {
            [(who, reply, verb)] => (format!("recipient {who} {verb}"), vec![reply.to_string()]),
            _ => {
                let verb = match (self.refused.is_empty(), self.deferred.is_empty()) {
                    (false, false) => "not accepted",
                    (false, true) => "refused",
                    _ => "deferred",
                };
                let why = answers
                    .iter()
                    .map(|(who, reply, verb)| format!("{who} {verb}: {reply}"))
                    .collect();
                (format!("{} recipients {verb}", answers.len()), why)
            }
        };
        if !self.accepted.is_empty() {
            why.push(format!(
                "the message went to the other {} recipient(s)",
                self.accepted.len()
            ));
        }
        Some(Error::new(kind, what, why.join("; ")))
    }
}

/// Opening a session (connect, greeting, EHLO, STARTTLS, EHLO, AUTH) may take this many
/// times the account's `timeout` in all, whatever each step takes.
const OPEN_BOUND: u32 = 3;
/// A transaction beyond its transfer (MAIL, RCPT..., DATA, the final reply) likewise.
const TRANSACTION_BOUND: u32 = 2;
/// The transfer of the message text is allowed `timeout` plus its size at this rate: a
/// slow uplink is not a stalled server.
const MIN_RATE: usize = 32 << 10;
/// "Service not available, closing transmission channel".
const CLOSING: u16 = 421;
/// RFC 4954 section 4: a longer AUTH line with its initial response is not sent as one.
const MAX_AUTH_LINE: usize = 512;

/// An open, authenticated connection to an account's server, good for several messages.
pub struct Session {
    wire: Wire,
    extensions: Extensions,
    timeout: Duration,
    broken: bool,
}

impl Session {
    /// Connects, secures and authenticates with `secret`.
    pub fn open(account: &Account, secret: Option<&Secret>, verbose: bool) -> Result<Session> {
        let transcript = Transcript { on: verbose };
        let tls = match account.tls {
            Tls::None => None,
            Tls::Starttls | Tls::Implicit => Some(wire::tls_config(account)?),
        };
        // A timeout of centuries is a wish for none: a day keeps the arithmetic finite.
        let timeout = account.timeout.min(Duration::from_secs(24 * 3600));
        let mut wire = Wire::connect(account, timeout, timeout * OPEN_BOUND, transcript)?;
        if let (Tls::Implicit, Some(tls)) = (account.tls, &tls) {
            wire.start_tls(tls.clone())?;
        }
        let greeting = wire.reply(Step::Greeting)?;
        if greeting.code != 220 {
            let err = refusal(&wire, Step::Greeting, &greeting);
            wire.quit();
            return Err(err);
        }
        let hello = account
            .hello_name
            .clone()
            .unwrap_or_else(default_hello_name);
        let mut session = Session {
            extensions: Extensions::default(),
            wire,
            timeout,
            broken: false,
        };
        let opened = session.hello(&hello).and_then(|()| {
            if let (Tls::Starttls, Some(tls)) = (account.tls, tls) {
                session.starttls(tls, &hello)?;
            }
            match (account.auth, secret) {
                (AuthMethod::Xoauth2 | AuthMethod::Password, Some(secret)) => {
                    session.authenticate(account, secret)
                }
                _ => Ok(()),
            }
        });
        match opened {
            Ok(()) => Ok(session),
            Err(err) => {
                // The server deserves to know we left.
                session.close();
                Err(err)
            }
        }
    }

    /// Sends one message: MAIL, RCPT for each recipient, DATA.
    pub fn send(&mut self, message: &Prepared) -> Result<Delivery> {
        let transfer = self.transfer_allowance(message.len());
        self.wire
            .set_bound(self.timeout * TRANSACTION_BOUND + transfer);
        let result = self.transmit(message);
        if let Err(err) = &result {
            if err.kind() == Kind::Temporary || err.kind() == Kind::Protocol {
                // The connection may be half-way through a command: do not reuse it.
                self.broken = true;
            } else {
                // A refused transaction leaves the session usable once reset.
                self.reset();
            }
        }
        result
    }

    /// Still fit for another message.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    pub fn close(self) {
        self.wire.quit();
    }

    fn hello(&mut self, name: &str) -> Result<()> {
        let step = Step::Command("EHLO");
        let reply = self.wire.command(&format!("EHLO {name}"), step)?;
        if reply.is_success() {
            self.extensions = Extensions::from(&reply);
            return Ok(());
        }
        if !reply.is_permanent() {
            return Err(refusal(&self.wire, step, &reply));
        }
        // An old server without ESMTP: HELO, and no extensions.
        let step = Step::Command("HELO");
        let reply = self.wire.command(&format!("HELO {name}"), step)?;
        if !reply.is_success() {
            return Err(refusal(&self.wire, step, &reply));
        }
        self.extensions = Extensions::default();
        Ok(())
    }

    fn starttls(&mut self, tls: std::sync::Arc<rustls::ClientConfig>, hello: &str) -> Result<()> {
        if !self.extensions.has("STARTTLS") {
            return Err(Error::new(
                Kind::Unavailable,
                format!("cannot secure the connection to {}", self.wire.server),
                "the server does not offer STARTTLS",
            )
            .hint(
                "use tls = \"implicit\" (usually port 465) if the server speaks TLS from the start",
            ));
        }
        let step = Step::Command("STARTTLS");
        let reply = self.wire.command("STARTTLS", step)?;
        if reply.code != 220 {
            return Err(refusal(&self.wire, step, &reply));
        }
        self.wire.start_tls(tls)?;
        // RFC 3207 section 4.2: what the server said before TLS counts for nothing.
        self.hello(hello)
    }

    fn authenticate(&mut self, account: &Account, secret: &Secret) -> Result<()> {
        if !self.wire.is_encrypted() {
            return Err(Error::new(
                Kind::Internal,
                "refusing to authenticate",
                "the connection is not encrypted",
            ));
        }
        self.wire.redact(secret.expose());
        let offers = |mechanism| self.extensions.offers_auth(mechanism);
        match account.auth {
            AuthMethod::Xoauth2 if offers("XOAUTH2") => self.xoauth2(account, secret),
            AuthMethod::Password if offers("PLAIN") => {
                let plain = format!("\0{}\0{}", account.user, secret.expose());
                let reply = self.sasl("PLAIN", &BASE64.encode(plain))?;
                self.accepted(&reply)
            }
            AuthMethod::Password if offers("LOGIN") => self.login(account, secret),
            _ => Err(Error::new(
                Kind::Unavailable,
                format!("cannot authenticate to {}", self.wire.server),
                format!(
                    "the server offers none of the mechanisms for auth = \"{}\": {}",
                    auth_name(account.auth),
                    self.extensions
                        .auth_line()
                        .unwrap_or("it offers no AUTH at all")
                ),
            )),
        }
    }

    /// `AUTH MECHANISM response`, or when that line would be long, `AUTH MECHANISM`, the
    /// server's empty 334, then the response on its own line (RFC 4954 section 4: Postfix
    /// cuts command lines at 2048 octets, Microsoft's tokens are longer). The reply after
    /// the response comes back, whatever it is.
    fn sasl(&mut self, mechanism: &str, response: &str) -> Result<Reply> {
        self.wire.redact(response);
        let step = Step::Auth;
        let line = format!("AUTH {mechanism} {response}");
        if line.len() + 2 <= MAX_AUTH_LINE {
            self.wire
                .send(&line, &format!("AUTH {mechanism} (redacted)"), step)?;
            return self.wire.reply(step);
        }
        let challenge = self.wire.command(&format!("AUTH {mechanism}"), step)?;
        if challenge.code != 334 {
            return Ok(challenge);
        }
        self.wire.send(response, "(redacted)", step)?;
        self.wire.reply(step)
    }

    /// SASL XOAUTH2. A refused token draws `334 <base64 JSON>` (Gmail, Microsoft); the
    /// client must answer with an empty line to get the final `535`. The JSON is the real
    /// reason.
    fn xoauth2(&mut self, account: &Account, token: &Secret) -> Result<()> {
        let user = &account.user;
        let initial = format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose());
        let reply = self.sasl("XOAUTH2", &BASE64.encode(initial))?;
        if reply.code != 334 {
            return self.accepted(&reply);
        }
        let challenge = reply.first().trim();
        let reason = BASE64
            .decode(challenge)
            .map(|b| self.wire.redacted(&String::from_utf8_lossy(&b)))
            .unwrap_or_else(|_| challenge.to_string());
        let step = Step::Auth;
        let refusal = match self.wire.command("", step) {
            Ok(reply) => reply.to_string(),
            Err(e) => e.summary(),
        };
        let error = Error::new(
            Kind::AuthRefused,
            format!("authentication refused by {}", self.wire.server),
            format!("{refusal} (reason: {reason})"),
        );
        // With [oauth] the token engine refreshes and retries, and says what to check then.
        match account.oauth {
            Some(_) => Err(error),
            None => Err(error.hint(format!("the access token for {user} was not accepted: check that `secret` yields a current token (they expire after about an hour)"))),
        }
    }

    /// AUTH LOGIN: the user name and the password, each answering a 334.
    fn login(&mut self, account: &Account, secret: &Secret) -> Result<()> {
        let step = Step::Auth;
        let password = BASE64.encode(secret.expose());
        self.wire.redact(&password);
        let mut reply = self.wire.command("AUTH LOGIN", step)?;
        for (line, shown) in [
            (BASE64.encode(&account.user), "(user)"),
            (password, "(redacted)"),
        ] {
            if reply.code != 334 {
                break;
            }
            self.wire.send(&line, shown, step)?;
            reply = self.wire.reply(step)?;
        }
        self.accepted(&reply)
    }

    /// The end of an AUTH exchange: 235, or the refusal as an error.
    fn accepted(&self, reply: &Reply) -> Result<()> {
        match reply.is_success() {
            true => Ok(()),
            false => Err(refusal(&self.wire, Step::Auth, reply)),
        }
    }

    fn transmit(&mut self, message: &Prepared) -> Result<Delivery> {
        let envelope = &message.envelope;
        if !envelope.sender.is_empty() {
            check_address(&envelope.sender)?;
        }
        for recipient in &envelope.recipients {
            check_address(recipient)?;
        }
        let mut mail = format!("MAIL FROM:<{}>", envelope.sender);
        if message.eight_bit && self.extensions.has("8BITMIME") {
            mail.push_str(" BODY=8BITMIME");
        }
        let mut delivery = match self.extensions.has("PIPELINING") {
            true => self.envelope_pipelined(mail, &envelope.recipients)?,
            false => self.envelope_in_turn(&mail, &envelope.recipients)?,
        };
        if delivery.accepted.is_empty() {
            self.reset();
            return Ok(delivery);
        }
        self.wire
            .transcript
            .note(&format!("{} bytes of message text", message.len()));
        self.wire.transcript.sent(".");
        let step = Step::Command("the message");
        // One deadline for the whole text, however it is cut into writes.
        let deadline = Instant::now() + self.transfer_allowance(message.len());
        let mut stuffer = DotStuffer::new(message.len());
        let mut write = |chunk: &[u8]| self.wire.write(chunk, deadline, step);
        stuffer.push(&message.head, &mut write)?;
        // A queue file is read a chunk at a time: what the write refused is kept apart
        // from the file's own read errors, which are not the server's doing.
        let mut refused = None;
        let read = message.body.each_chunk(&mut |piece| {
            stuffer.push(piece, &mut write).map_err(|err| {
                refused = Some(err);
                io::Error::other("write failed")
            })
        });
        if let Some(err) = refused {
            return Err(err);
        }
        read.map_err(crate::message::envelope::unreadable)?;
        self.wire.write(&stuffer.finish(), deadline, step)?;
        let reply = self.wire.reply(step)?;
        if !reply.is_success() {
            return Err(refusal(&self.wire, step, &reply));
        }
        delivery.reply = Some(reply.to_string());
        Ok(delivery)
    }

    /// MAIL, then each RCPT, then DATA once a recipient is accepted, each awaiting its
    /// reply; with no recipient accepted, no DATA.
    fn envelope_in_turn(&mut self, mail: &str, recipients: &[String]) -> Result<Delivery> {
        self.expect_success(mail, "MAIL FROM")?;
        let mut delivery = Delivery::default();
        for recipient in recipients {
            let step = Step::Command("RCPT TO");
            let reply = self.wire.command(&format!("RCPT TO:<{recipient}>"), step)?;
            self.record(&mut delivery, recipient, step, &reply)?;
        }
        if !delivery.accepted.is_empty() {
            let reply = self.wire.command("DATA", Step::Command("DATA"))?;
            self.expect_data(reply)?;
        }
        Ok(delivery)
    }

    /// RFC 2920: MAIL, every RCPT and DATA in one write, then their replies in order, each
    /// recipient keeping its own. When no recipient was accepted the server refuses the
    /// DATA (554 or 503, "no valid recipients"); one that took it anyway gets the lone
    /// dot of an empty text, which it must refuse too (section 3.1), never the message.
    fn envelope_pipelined(&mut self, mail: String, recipients: &[String]) -> Result<Delivery> {
        let mut lines = vec![mail];
        lines.extend(recipients.iter().map(|r| format!("RCPT TO:<{r}>")));
        lines.push("DATA".to_string());
        self.wire.send_all(&lines, Step::Command("MAIL FROM"))?;
        let mail_reply = self.wire.reply(Step::Command("MAIL FROM"))?;
        // 421: the server closes the connection (RFC 5321 3.8); no more replies come,
        // and this one is the reason (Gmail's rate limit answers MAIL so).
        if mail_reply.code == CLOSING {
            return Err(refusal(&self.wire, Step::Command("MAIL FROM"), &mail_reply));
        }
        let mut delivery = Delivery::default();
        for recipient in recipients {
            let step = Step::Command("RCPT TO");
            let reply = self.wire.reply(step)?;
            if reply.code == CLOSING {
                return Err(refusal(&self.wire, step, &reply));
            }
            if mail_reply.is_success() {
                self.record(&mut delivery, recipient, step, &reply)?;
            }
        }
        let step = Step::Command("DATA");
        let data_reply = self.wire.reply(step)?;
        let nothing_to_send = !mail_reply.is_success() || delivery.accepted.is_empty();
        if nothing_to_send && data_reply.code == 354 {
            self.wire.send(".", ".", Step::Command("the message"))?;
            self.wire.reply(Step::Command("the message"))?;
        }
        if !mail_reply.is_success() {
            return Err(refusal(&self.wire, Step::Command("MAIL FROM"), &mail_reply));
        }
        if !delivery.accepted.is_empty() {
            self.expect_data(data_reply)?;
        }
        Ok(delivery)
    }

    /// A recipient's answer, kept in `delivery`.
    fn record(
        &self,
        delivery: &mut Delivery,
        recipient: &str,
        step: Step,
        reply: &Reply,
    ) -> Result<()> {
        let answer = (recipient.to_string(), reply.to_string());
        if quota_hold(reply).is_some() {
            // The account's quota, not this recipient's: the whole message waits.
            return Err(refusal(&self.wire, step, reply));
        }
        match reply.code {
            200..=299 => delivery.accepted.push(recipient.to_string()),
            400..=499 => delivery.deferred.push(answer),
            500..=599 => delivery.refused.push(answer),
            _ => return Err(refusal(&self.wire, step, reply)),
        }
        Ok(())
    }

    /// DATA's reply: 354 goes on to the text.
    fn expect_data(&self, reply: Reply) -> Result<()> {
        match reply.code {
            354 => Ok(()),
            _ => Err(refusal(&self.wire, Step::Command("DATA"), &reply)),
        }
    }

    fn expect_success(&mut self, line: &str, verb: &str) -> Result<Reply> {
        let step = Step::Command(verb);
        let reply = self.wire.command(line, step)?;
        match reply.is_success() {
            true => Ok(reply),
            false => Err(refusal(&self.wire, step, &reply)),
        }
    }

    /// RSET after a refused transaction; the session is broken if that fails too.
    fn reset(&mut self) {
        self.wire.set_bound(self.timeout);
        self.broken = self.expect_success("RSET", "RSET").is_err();
    }

    fn transfer_allowance(&self, len: usize) -> Duration {
        self.timeout + Duration::from_secs((len / MIN_RATE) as u64)
    }
}

/// Connects, authenticates and quits, sending nothing (`status --check`).
pub fn check(account: &Account, secret: Option<&Secret>, verbose: bool) -> Result<()> {
    Session::open(account, secret, verbose)?.close();
    Ok(())
}

/// The EHLO name when the account sets none: this machine's host name (RFC 5321 4.1.4),
/// else the address literal of the loopback address.
pub fn default_hello_name() -> String {
    crate::sys::host::name()
        .filter(|name| {
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "[127.0.0.1]".to_string())
}

/// A reply that refuses `step`, as our error: the kind from the reply code, the server's
/// words kept. A provider's quota reply is temporary, whatever its code, and holds the
/// account (see [`QUOTAS`]).
fn refusal(wire: &Wire, step: Step, reply: &Reply) -> Error {
    if let Some(hold) = quota_hold(reply) {
        return Error::new(Kind::Temporary, step.failed(&wire.server), reply)
            .holds_account(hold)
            .hint(format!(
                "the provider's sending quota for this account is used up: its mail waits {} before the next try",
                crate::sys::clock::exactly(hold)
            ));
    }
    let kind = match reply.code {
        530 | 534 | 535 | 538 if matches!(step, Step::Auth) => Kind::AuthRefused,
        400..=499 => Kind::Temporary,
        500..=599 => Kind::Unavailable,
        // A positive reply where another was due: not the SMTP we speak.
        _ => Kind::Protocol,
    };
    Error::new(kind, step.failed(&wire.server), reply)
}

/// A daily quota: the window is likely over in about an hour's steps (Gmail's and
/// Microsoft's are rolling 24-hour windows; a try each hour finds the end).
const DAILY_HOLD: Duration = Duration::from_secs(3600);
/// A rate limit: minutes.
const RATE_HOLD: Duration = Duration::from_secs(300);

/// The providers' documented replies for a sending quota used up: reply code, enhanced
/// status code, a token of the text (lower case; empty: any text), and how long the
/// account waits. They are the account's state, not the message's: a 5xx here is no
/// reason to bounce.
const QUOTAS: [(u16, &str, &str, Duration); 4] = [
    // Gmail: "550-5.4.5 Daily user sending limit exceeded" (also "...quota exceeded").
    (550, "5.4.5", "daily", DAILY_HOLD),
    // Gmail: "421-4.7.0 Try again later, closing connection" and its rate replies.
    (421, "4.7.0", "", RATE_HOLD),
    // Microsoft 365: "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException".
    (554, "5.2.0", "submissionquotaexceeded", DAILY_HOLD),
    // Microsoft 365: "451 4.7.500 Server busy. Please try again later".
    (451, "4.7.500", "", RATE_HOLD),
];

/// How long the account waits when `reply` says its sending quota is used up.
pub fn quota_hold(reply: &Reply) -> Option<Duration> {
    let text = reply.lines.join(" ").to_ascii_lowercase();
    let status = text.split_whitespace().next().unwrap_or_default();
    QUOTAS
        .iter()
        .find(|(code, enhanced, token, _)| {
            reply.code == *code && status == *enhanced && text.contains(token)
        })
        .map(|(.., hold)| *hold)
}

/// An envelope address must be `local@domain` and fit in angle brackets on one line.
fn check_address(address: &str) -> Result<()> {
    address
        .parse::<lettre::Address>()
        .map(drop)
        .map_err(|e| Error::new(Kind::BadInput, format!("bad address `{address}`"), e))
}

fn auth_name(auth: AuthMethod) -> &'static str {
    match auth {
        AuthMethod::Xoauth2 => "xoauth2",
        AuthMethod::Password => "password",
        AuthMethod::None => "none",
    }
}

/// The EHLO keywords, upper case, one entry per line after the first.
#[derive(Default)]
struct Extensions {
    lines: Vec<String>,
}

impl Extensions {
    fn from(reply: &Reply) -> Extensions {
        Extensions {
            lines: reply
                .lines
                .iter()
                .skip(1)
                .map(|line| line.trim().to_ascii_uppercase())
                .collect(),
        }
    }

    fn has(&self, keyword: &str) -> bool {
        self.lines
            .iter()
            .any(|line| line.split_whitespace().next() == Some(keyword))
    }

    /// The AUTH lines ("AUTH PLAIN LOGIN", or the old "AUTH=PLAIN LOGIN").
    fn auth_lines(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .filter(|l| l.starts_with("AUTH ") || l.starts_with("AUTH="))
            .map(String::as_str)
    }

    fn auth_line(&self) -> Option<&str> {
        self.auth_lines().next()
    }

    fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth_lines()
            .any(|line| line[5..].split_whitespace().any(|m| m == mechanism))
    }
}

/// Messages up to this size go out in one write with their final dot (one more copy of
/// the message, dot-stuffed): no second small write for Nagle or delayed ACKs to hold.
const ONE_WRITE: usize = 4 << 20;
/// Larger ones are dot-stuffed and written this much at a time, each chunk as it is
/// ready: never copied whole.
const CHUNK: usize = 64 << 10;

/// Message text (CRLF line ends, ending in CRLF) as DATA content: each line that starts
/// with "." gets another (RFC 5321 4.5.2), then the final ".". Lines may cross pieces.
struct DotStuffer {
    out: Vec<u8>,
    limit: usize,
    at_line_start: bool,
    last: Option<u8>,
}

impl DotStuffer {
    fn new(len: usize) -> DotStuffer {
        let limit = if len <= ONE_WRITE { usize::MAX } else { CHUNK };
        DotStuffer {
            out: Vec::with_capacity(len.min(ONE_WRITE) + len.min(ONE_WRITE) / 64 + 8),
            limit,
            at_line_start: true,
            last: None,
        }
    }

    /// Adds `piece`, giving `write` each chunk as soon as it is ready (the buffer is
    /// reused: at most a chunk and a line are held).
    fn push(&mut self, mut piece: &[u8], write: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        while !piece.is_empty() {
            if self.at_line_start && piece[0] == b'.' {
                self.out.push(b'.');
            }
            let (line, rest) = match memchr::memchr(b'\n', piece) {
                Some(end) => piece.split_at(end + 1),
                None => (piece, &[][..]),
            };
            self.out.extend_from_slice(line);
            self.at_line_start = line.ends_with(b"\n");
            self.last = line.last().copied();
            piece = rest;
            if self.out.len() >= self.limit {
                write(&self.out)?;
                self.out.clear();
            }
        }
        Ok(())
    }

    /// What is left, with the final dot.
    fn finish(mut self) -> Vec<u8> {
        if self.last.is_some() && !self.at_line_start {
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b".\r\n");
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// a@example.com to b@example.com, with `body`.
    fn one_message(body: &'static [u8]) -> Prepared<'static> {
        Prepared {
            envelope: crate::message::envelope::Envelope {
                sender: "a@example.com".into(),
                recipients: vec!["b@example.com".into()],
            },
            head: b"Subject: x\r\n\r\n".to_vec(),
            body: crate::message::envelope::Body::Bytes(body),
            eight_bit: false,
            message_id: None,
        }
    }
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A plain-text relay account at `port` on 127.0.0.1.
    fn account(port: u16, timeout: u64) -> Account {
        let text = format!(
            "[accounts.t]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
             auth = \"none\"\nfrom = \"a@example.com\"\ntimeout = {timeout}\n"
        );
        let config = crate::config::Config::parse(&text, std::path::Path::new("/t.toml")).unwrap();
        config.accounts["t"].clone()
    }

    /// A server that sends `greeting`, then answers each line it reads with the next of
    /// `answers` (raw bytes, CRLF included), then waits for the client to leave.
    fn scripted(greeting: &'static [u8], answers: &'static [&'static [u8]]) -> u16 {
        scripted_logged(greeting, answers).0
    }

    /// `scripted`, keeping the lines the client sent.
    fn scripted_logged(
        greeting: &'static [u8],
        answers: &'static [&'static [u8]],
    ) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = lines.clone();
        std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let _ = tcp.write_all(greeting);
            let mut reader = BufReader::new(tcp.try_clone().unwrap());
            for answer in answers {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                log.lock().unwrap().push(line.trim_end().to_string());
                let _ = tcp.write_all(answer);
            }
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        (port, lines)
    }

    fn open(port: u16) -> Result<Session> {
        Session::open(&account(port, 2), None, false)
    }

    #[test]
    fn what_is_not_smtp_is_a_protocol_error_not_a_panic() {
        let cases: [(&[u8], &[&[u8]]); 4] = [
            (b"hello there\r\n", &[]),
            (b"220-one\r\n554 two\r\n", &[]),
            (b"220 ok\r\n", &[b"250-a\r\n550 b\r\n"]),
            (b"220 ok\r\n", &[b"299999\r\n"]),
        ];
        for (greeting, answers) in cases {
            let err = open(scripted(greeting, answers)).err().expect("an error");
            assert_eq!(err.exit_code(), 76, "{greeting:?} {answers:?}: {err}");
            assert!(err.to_string().contains("not SMTP"), "{err}");
        }
        let endless: &'static [u8] =
            Box::leak(vec![b'2'; crate::smtp::reply::MAX_LINE + 10].into_boxed_slice());
        let err = open(scripted(endless, &[])).err().expect("an error");
        assert_eq!(err.exit_code(), 76, "{err}");
    }

    #[test]
    fn a_closed_connection_or_a_421_is_temporary() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || drop(listener.accept()));
        let err = open(port).err().expect("an error");
        assert!(err.is_transient(), "{err}");
        assert!(
            err.to_string().contains("the server closed the connection"),
            "{err}"
        );
        let err = open(scripted(b"421 4.3.2 busy\r\n", &[b"221 bye\r\n"]))
            .err()
            .expect("an error");
        assert!(
            err.is_transient() && err.to_string().contains("421 4.3.2 busy"),
            "{err}"
        );
    }

    #[test]
    fn a_huge_timeout_is_no_overflow() {
        let port = scripted(b"220 ok\r\n", &[b"250 hi\r\n", b"221 bye\r\n"]);
        Session::open(&account(port, i64::MAX as u64), None, false)
            .unwrap_or_else(|e| panic!("{e}"))
            .close();
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo() {
        let port = scripted(
            b"220 old\r\n",
            &[b"502 what\r\n", b"250 hi\r\n", b"221 bye\r\n"],
        );
        let session = open(port).expect("HELO is enough");
        assert!(!session.extensions.has("8BITMIME"));
        session.close();
    }

    #[test]
    fn a_refused_transaction_is_reset_and_the_session_stays_usable() {
        let port = scripted(
            b"220 ok\r\n",
            &[
                b"250 hi\r\n",
                b"550 5.7.1 not you\r\n",
                b"250 reset\r\n",
                b"221 bye\r\n",
            ],
        );
        let mut session = open(port).unwrap();
        let message = one_message(b"body\r\n");
        let err = session.send(&message).expect_err("MAIL refused");
        assert_eq!(err.exit_code(), 69, "{err}");
        assert!(err.to_string().contains("MAIL FROM failed at"), "{err}");
        assert!(session.is_usable());
        session.close();
    }

    /// RFC 2920 section 3.1: a server that answers 354 to the pipelined DATA although it
    /// refused every recipient gets the lone dot of an empty text, not the message.
    #[test]
    fn a_pipelined_data_taken_without_recipients_gets_only_the_dot() {
        let (port, lines) = scripted_logged(
            b"220 ok\r\n",
            &[
                b"250-hi\r\n250 PIPELINING\r\n",
                b"250 sender ok\r\n",
                b"550 5.1.1 no such user\r\n",
                b"354 go on\r\n",
                b"554 5.5.1 no valid recipients\r\n",
                b"250 reset\r\n",
                b"221 bye\r\n",
            ],
        );
        let mut session = open(port).unwrap();
        let message = one_message(b"secret body\r\n");
        let delivery = session.send(&message).expect("a refused recipient");
        assert!(delivery.accepted.is_empty() && delivery.reply.is_none());
        assert_eq!(delivery.refused.len(), 1);
        assert!(session.is_usable());
        session.close();
        let sent = lines.lock().unwrap().clone();
        assert_eq!(
            sent[1..6],
            [
                "MAIL FROM:<a@example.com>",
                "RCPT TO:<b@example.com>",
                "DATA",
                ".",
                "RSET"
            ],
            "{sent:?}"
        );
    }

    fn stuffed(pieces: &[&[u8]], len: usize) -> Vec<u8> {
        let mut stuffer = DotStuffer::new(len);
        let mut out: Vec<u8> = Vec::new();
        for piece in pieces {
            stuffer
                .push(piece, &mut |chunk| {
                    out.extend_from_slice(chunk);
                    Ok(())
                })
                .unwrap();
        }
        out.extend(stuffer.finish());
        out
    }

    #[test]
    fn dot_stuffed_text_ends_with_the_final_dot() {
        let pieces: [&[u8]; 2] = [b".top\r\nSubject: s\r\n\r\n", b"..two\r\n.\r\nend.\r\n"];
        let expected = b"..top\r\nSubject: s\r\n\r\n...two\r\n..\r\nend.\r\n.\r\n";
        assert_eq!(stuffed(&pieces, 10), expected);
        // In chunks, with lines cut across pieces, the text on the wire is the same.
        let cut: [&[u8]; 4] = [
            b".top\r\nSubject: s\r\n\r\n.",
            b".two\r",
            b"\n",
            b".\r\nend.\r\n",
        ];
        assert_eq!(stuffed(&cut, ONE_WRITE + 1), expected);
        assert_eq!(stuffed(&[b"", b""], 0), b".\r\n");
        assert_eq!(stuffed(&[b"no end"], 6), b"no end\r\n.\r\n");
    }

    /// A large message is written a chunk at a time as it is stuffed: the stuffer never
    /// holds more than a chunk and a line, however long the text (it held every chunk of a
    /// piece until the piece was done: a second copy of a 27 MiB body).
    #[test]
    fn a_large_text_is_written_as_it_is_stuffed() {
        let line = b".a line of a large message, dot first\r\n";
        let body: Vec<u8> = line.repeat((ONE_WRITE * 2) / line.len());
        let mut stuffer = DotStuffer::new(body.len() + 1);
        let mut written = 0usize;
        let mut writes = 0usize;
        let mut most_held = 0usize;
        let mut pushed = 0usize;
        for piece in body.chunks(CHUNK / 2 + 7) {
            pushed += piece.len();
            stuffer
                .push(piece, &mut |chunk| {
                    assert!(chunk.len() < CHUNK + 2 * line.len(), "{}", chunk.len());
                    written += chunk.len();
                    writes += 1;
                    Ok(())
                })
                .unwrap();
            // Stuffing adds a byte a line: what is not written yet is what is held.
            most_held = most_held.max(pushed + pushed / line.len() + 1 - written);
        }
        assert!(most_held < CHUNK + 2 * line.len(), "held {most_held}");
        assert!(writes >= body.len() / CHUNK, "{writes} writes");
        let rest = stuffer.finish();
        assert_eq!(
            written + rest.len(),
            body.len() + body.len() / line.len() + 3
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
            text.contains("c@x.org refused: 550 5.1.1")
                && text.contains("b@x.org deferred: 451")
                && text.contains("other 1"),
            "{text}"
        );
    }

    /// Issue 9 item 25: "recipient bad@x refused: bad@x: 550 ..." said the address twice.
    #[test]
    fn one_refused_recipient_is_named_once() {
        let delivery = Delivery {
            refused: vec![("bad@x.org".into(), "550 5.1.1 no such user".into())],
            ..Default::default()
        };
        let text = delivery.failure().unwrap().to_string();
        assert_eq!(text, "recipient bad@x.org refused: 550 5.1.1 no such user");
    }

    #[test]
    fn extensions_are_read_from_the_ehlo_reply() {
        let reply = Reply {
            code: 250,
            lines: vec![
                "mx.example at your service".into(),
                "8bitmime".into(),
                "AUTH=LOGIN".into(),
                "AUTH PLAIN XOAUTH2".into(),
                "STARTTLS".into(),
            ],
        };
        let ext = Extensions::from(&reply);
        assert!(ext.has("8BITMIME") && ext.has("STARTTLS") && !ext.has("PIPELINING"));
        assert!(ext.offers_auth("LOGIN") && ext.offers_auth("XOAUTH2"));
        assert!(!ext.offers_auth("CRAM-MD5"));
        assert!(Extensions::default().auth_line().is_none());
    }

    #[test]
    fn the_default_hello_name_is_usable_in_ehlo() {
        let name = default_hello_name();
        assert!(!name.is_empty() && !name.contains(' '), "{name:?}");
    }
}
