//! The server side of one SMTP session (RFC 5321): `sendmail -bs` on stdin/stdout, where
//! each message the client hands over goes to a delivery callback and its outcome is the
//! reply to the final dot.
//!
//! The dialogue works on any `BufRead` + `Write` and knows nothing of pipes or sockets, so
//! a TCP listener can serve the same code. It trusts nothing it reads: every line is
//! bounded, every mistake gets a reply, no input makes it panic.

use std::fs::File;
use std::io::{self, BufRead, Write};

use crate::error::{Error, Kind, Result};
use crate::message::address::{self, Resolver};
use crate::message::input::{self, Input};

/// The largest message taken, after dot-unstuffing, advertised as SIZE: a little over what
/// Gmail (35,882,577 octets) and Microsoft 365 accept by default, so a message refused
/// here would have been refused upstream anyway.
pub const MAX_MESSAGE: usize = 35 * 1024 * 1024;

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets, CRLF included. An address is
/// at most 254, so no honest command comes near it.
pub const MAX_COMMAND_LINE: usize = 512;

/// RFC 5321 4.5.3.1.8 asks for at least 100 recipients a message; far more is a runaway
/// client, and each one costs memory until the message is sent.
pub const MAX_RECIPIENTS: usize = 1000;

/// A reply line is at most 512 octets (RFC 5321 4.5.3.1.5); the code, status and CRLF
/// take up to 14 of them.
const MAX_REPLY_TEXT: usize = 480;

/// One message as the client handed it over.
#[derive(Debug)]
pub struct Transaction {
    /// The MAIL FROM address without its angle brackets; empty for the null sender `<>`.
    pub sender: String,
    /// The RCPT TO addresses as the client wrote them (each one resolved once already),
    /// in order.
    pub recipients: Vec<String>,
    /// The message after dot-unstuffing, the final "." line excluded, read as stdin is
    /// ([`input::read`]: CRLF lines, the body past a megabyte in a file), so a large
    /// message costs no more memory here than piped in.
    pub data: Input,
}

/// What the server says about itself.
pub struct Settings {
    /// Our name in the greeting and in the reply to EHLO/HELO.
    pub hostname: String,
    /// The SIZE limit, in octets after dot-unstuffing.
    pub max_message: usize,
    /// Makes the file a large message's body goes to (see [`input::read`]).
    pub spill: Box<dyn Fn() -> io::Result<File>>,
}

impl Settings {
    /// Spilling into the system's temporary directory; a caller with a queue sets
    /// `spill` to put the file beside it.
    pub fn new(hostname: impl Into<String>) -> Settings {
        Settings {
            hostname: hostname.into(),
            max_message: MAX_MESSAGE,
            spill: Box::new(|| crate::sys::files::anonymous_file(&std::env::temp_dir())),
        }
    }
}

/// Runs one session: greeting, commands until QUIT or the end of the input. `deliver` is
/// called once per message and its result is the reply to the final dot, so a 250 means
/// the message was delivered (or, once there is a queue, safely queued).
///
/// Ends with an error only when the dialogue itself broke: the input ended in the middle of
/// a message (which is then discarded, never half delivered) or reading or writing failed.
pub fn serve(
    input: impl BufRead,
    output: impl Write,
    settings: &Settings,
    resolver: &Resolver,
    deliver: impl FnMut(&Transaction) -> Result<()>,
) -> Result<()> {
    let mut session = Session {
        input,
        output,
        settings,
        resolver,
        deliver,
        greeted: false,
        envelope: None,
        line: Vec::new(),
    };
    session.run()
}

/// Tells the client that no session is possible (e.g. the configuration cannot be read),
/// with `err`'s words, and hands `err` back. RFC 5321 3.1 lets the server close after a
/// 421 greeting, so nothing more is read.
pub fn refuse(mut output: impl Write, settings: &Settings, err: Error) -> Error {
    let lines = reply_lines(&err.to_string());
    let text = std::iter::once(format!("{} unavailable:", settings.hostname))
        .chain(lines)
        .collect::<Vec<_>>();
    // The client may be gone already; the error goes to the caller either way.
    let _ = write_reply(&mut output, 421, "4.3.0", &text);
    err
}

/// RFC 5321's order for DATA, for every server side we speak: no argument, a MAIL FROM
/// given and at least one recipient (`recipients` counts them). The envelope to take, or
/// the reply that refuses DATA (the envelope stays for a RCPT still to come).
pub fn ready_for_data<E>(
    arg: &str,
    envelope: &mut Option<E>,
    recipients: impl Fn(&E) -> usize,
) -> std::result::Result<E, (u16, &'static str, &'static str)> {
    if !arg.is_empty() {
        return Err((501, "5.5.4", "Syntax: DATA"));
    }
    match envelope.take() {
        None => Err((503, "5.5.1", "Need MAIL command")),
        Some(taken) if recipients(&taken) == 0 => {
            *envelope = Some(taken);
            Err((503, "5.5.1", "Need RCPT command"))
        }
        Some(taken) => Ok(taken),
    }
}

/// The transaction being built: MAIL FROM given, RCPT TOs so far.
struct Envelope {
    sender: String,
    recipients: Vec<String>,
}

/// What to do after a command.
#[derive(PartialEq)]
enum Flow {
    Continue,
    Quit,
}

/// Where a failure happened: RFC 5321 allows different codes after RCPT and after DATA.
#[derive(Clone, Copy)]
pub enum Stage {
    Recipient,
    Message,
}

/// What reading a line found.
pub enum Read {
    /// The input ended; a last line without its LF is dropped with it, as it was never a
    /// complete command (and in a message, the message is cut off anyway).
    Eof,
    Line {
        /// Longer than the limit: only its start was kept.
        too_long: bool,
        /// Ended in CRLF, not a bare LF.
        crlf: bool,
    },
}

struct Session<'a, R, W, D> {
    input: R,
    output: W,
    settings: &'a Settings,
    resolver: &'a Resolver<'a>,
    deliver: D,
    /// HELO or EHLO was accepted: RFC 5321 4.1.4 wants it before MAIL.
    greeted: bool,
    envelope: Option<Envelope>,
    /// The line being read, kept to reuse its allocation.
    line: Vec<u8>,
}

impl<R, W, D> Session<'_, R, W, D>
where
    R: BufRead,
    W: Write,
    D: FnMut(&Transaction) -> Result<()>,
{
    fn run(&mut self) -> Result<()> {
        let greeting = format!("{} ESMTP oauth-sendmail", self.settings.hostname);
        // RFC 2034: the greeting has no enhanced status code.
        self.reply(220, "", &greeting)?;
        loop {
            let read = read_line(&mut self.input, &mut self.line, MAX_COMMAND_LINE)
                .map_err(read_failed)?;
            let flow = match read {
                Read::Eof => return Ok(()),
                Read::Line { too_long: true, .. } => {
                    self.reply(500, "5.5.2", "Line too long")?;
                    Flow::Continue
                }
                Read::Line { .. } => self.command()?,
            };
            if flow == Flow::Quit {
                return Ok(());
            }
        }
    }

    /// Answers the command in `self.line`.
    fn command(&mut self) -> Result<Flow> {
        let Some((verb, arg)) = split_command(&self.line) else {
            self.reply(500, "5.5.2", "Command contains bad characters")?;
            return Ok(Flow::Continue);
        };
        let arg = arg.as_str();
        match verb.as_str() {
            "EHLO" => self.hello(arg, true)?,
            "HELO" => self.hello(arg, false)?,
            "MAIL" => self.mail(arg)?,
            "RCPT" => self.rcpt(arg)?,
            "DATA" => self.data(arg)?,
            "RSET" if arg.is_empty() => {
                self.envelope = None;
                self.reply(250, "2.0.0", "Ok")?;
            }
            // RFC 5321 4.1.1.9: NOOP may have an argument, to be ignored.
            "NOOP" => self.reply(250, "2.0.0", "Ok")?,
            "VRFY" if arg.trim().is_empty() => self.reply(501, "5.5.4", "Syntax: VRFY address")?,
            // RFC 5321 3.5.3: 252 when we will not say, but would accept mail for it.
            "VRFY" => self.reply(
                252,
                "2.0.0",
                "Cannot VRFY, but send a message and delivery will be attempted",
            )?,
            "HELP" => self.reply(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT",
            )?,
            "QUIT" if arg.is_empty() => {
                self.reply(221, "2.0.0", "Bye")?;
                return Ok(Flow::Quit);
            }
            "RSET" | "QUIT" => {
                let syntax = format!("Syntax: {}", verb.to_ascii_uppercase());
                self.reply(501, "5.5.4", &syntax)?;
            }
            // Known to SMTP but not offered: the pipe is local, so no AUTH or STARTTLS.
            "EXPN" | "AUTH" | "STARTTLS" | "BDAT" | "ETRN" | "TURN" | "ATRN" | "SEND" | "SOML"
            | "SAML" => self.reply(502, "5.5.1", "Command not implemented")?,
            _ => self.reply(500, "5.5.2", "Command not recognized")?,
        }
        Ok(Flow::Continue)
    }

    fn hello(&mut self, arg: &str, extended: bool) -> Result<()> {
        let verb = if extended { "EHLO" } else { "HELO" };
        if arg.trim().is_empty() {
            return self.reply(501, "5.5.4", &format!("Syntax: {verb} hostname"));
        }
        // RFC 5321 4.1.4: a new greeting resets the transaction like RSET.
        self.envelope = None;
        self.greeted = true;
        let name = self.settings.hostname.clone();
        if !extended {
            return self.reply(250, "", &name);
        }
        // No AUTH and no STARTTLS: the client is local. No SMTPUTF8: the message goes on
        // through a submission that does not use it.
        let lines = [
            name,
            "PIPELINING".to_string(),
            format!("SIZE {}", self.settings.max_message),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
        ];
        write_reply(&mut self.output, 250, "", &lines).map_err(write_failed)
    }

    fn mail(&mut self, arg: &str) -> Result<()> {
        if !self.greeted {
            return self.reply(503, "5.5.1", "Send HELO or EHLO first");
        }
        if self.envelope.is_some() {
            return self.reply(503, "5.5.1", "Nested MAIL command");
        }
        let Some((sender, parameters)) = self.path(arg, "MAIL", "FROM:")? else {
            return Ok(());
        };
        if let Err((code, status, text)) =
            mail_parameters(&parameters, self.settings.max_message as u64)
        {
            return self.reply(code, status, &text);
        }
        // An unqualified sender (www-data) is fine: delivery qualifies it, as for -f.
        if address::is_qualified(&sender) {
            if let Err(err) = address::check_syntax(&sender) {
                return self.failure(553, "5.1.7", &err);
            }
        }
        self.envelope = Some(Envelope {
            sender,
            recipients: Vec::new(),
        });
        self.reply(250, "2.1.0", "Ok")
    }

    fn rcpt(&mut self, arg: &str) -> Result<()> {
        let Some(taken) = self.envelope.as_ref().map(|e| e.recipients.len()) else {
            return self.reply(503, "5.5.1", "Need MAIL command");
        };
        let Some((recipient, parameters)) = self.path(arg, "RCPT", "TO:")? else {
            return Ok(());
        };
        if let Some(parameter) = parameters.first() {
            let text = format!("Unsupported RCPT parameter {parameter}");
            return self.reply(555, "5.5.4", &text);
        }
        if recipient.is_empty() {
            return self.reply(501, "5.1.3", "Empty recipient address");
        }
        if taken >= MAX_RECIPIENTS {
            return self.reply(452, "4.5.3", "Too many recipients");
        }
        // The same resolution as for a recipient on the command line, so an address that
        // could never be delivered is refused now, while the client can still say so.
        if let Err(err) = self.resolver.recipient(&recipient) {
            let (code, status) = failure_reply(&err, Stage::Recipient);
            return self.failure(code, status, &err);
        }
        if let Some(envelope) = &mut self.envelope {
            envelope.recipients.push(recipient);
        }
        self.reply(250, "2.1.5", "Ok")
    }

    /// The address and parameters of MAIL FROM or RCPT TO; `None` once the client was told
    /// what is wrong with them.
    fn path<'s>(
        &mut self,
        arg: &'s str,
        verb: &str,
        keyword: &str,
    ) -> Result<Option<(String, Vec<&'s str>)>> {
        if !arg.is_ascii() {
            let text = "SMTPUTF8 is not offered: use an ASCII address";
            self.reply(553, "5.6.7", text)?;
            return Ok(None);
        }
        let path = parse_path(arg, keyword);
        if path.is_none() {
            self.reply(501, "5.5.4", &format!("Syntax: {verb} {keyword}<address>"))?;
        }
        Ok(path)
    }

    fn data(&mut self, arg: &str) -> Result<()> {
        let envelope = match ready_for_data(arg, &mut self.envelope, |e| e.recipients.len()) {
            Ok(envelope) => envelope,
            Err((code, status, text)) => return self.reply(code, status, text),
        };
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>")?;
        let Some(data) = self.read_data()? else {
            return self.reply(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            );
        };
        let transaction = Transaction {
            sender: envelope.sender,
            recipients: envelope.recipients,
            data,
        };
        // The reply waits for the delivery: a 250 promises the message is taken care of.
        match (self.deliver)(&transaction) {
            Ok(()) => self.reply(250, "2.0.0", "Message accepted for delivery"),
            Err(err) => {
                let (code, status) = failure_reply(&err, Stage::Message);
                self.failure(code, status, &err)
            }
        }
    }

    fn read_data(&mut self) -> Result<Option<Input>> {
        let mut new_file = || (self.settings.spill)();
        read_data(
            &mut self.input,
            &mut self.line,
            self.settings.max_message,
            &mut new_file,
            input::NoRoom::InMemory,
        )
    }

    /// A failure reply with the error's words, one reply line per line of them.
    fn failure(&mut self, code: u16, status: &str, err: &Error) -> Result<()> {
        let lines = reply_lines(&err.to_string());
        write_reply(&mut self.output, code, status, &lines).map_err(write_failed)
    }

    fn reply(&mut self, code: u16, status: &str, text: &str) -> Result<()> {
        write_reply(&mut self.output, code, status, &[text]).map_err(write_failed)
    }
}

/// Checks the parameters of MAIL FROM against what EHLO offered (BODY, SIZE): the reply
/// for the first one that is wrong, or the SIZE the client declared.
pub fn mail_parameters(
    parameters: &[&str],
    max_message: u64,
) -> std::result::Result<Option<u64>, (u16, &'static str, String)> {
    let mut declared = None;
    for parameter in parameters {
        let (keyword, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
        match keyword.to_ascii_uppercase().as_str() {
            // 8-bit content is detected in the message itself, so BODY only has to be
            // one of the values we advertise.
            "BODY"
                if value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME") => {
            }
            // RFC 1870: refuse at once what cannot fit, before it is sent.
            "SIZE" if digits => {
                let size = value
                    .parse::<u64>()
                    .ok()
                    .filter(|size| *size <= max_message);
                let Some(size) = size else {
                    let text = "Message size exceeds fixed maximum message size";
                    return Err((552, "5.3.4", text.to_string()));
                };
                declared = Some(size);
            }
            "SIZE" => return Err((501, "5.5.4", "Bad SIZE value".to_string())),
            _ => {
                let text = format!("Unsupported MAIL parameter {parameter}");
                return Err((555, "5.5.4", text));
            }
        }
    }
    Ok(declared)
}

/// The code and enhanced status (RFC 3463) for a failure, chosen by its kind and never by
/// its words: 4xx for what may work later, 5xx for what will not.
pub fn failure_reply(err: &Error, stage: Stage) -> (u16, &'static str) {
    if err.is_transient() {
        return (451, "4.3.0");
    }
    match (stage, err.kind()) {
        (Stage::Recipient, Kind::BadInput) => (553, "5.1.3"),
        (Stage::Recipient, Kind::Config) => (550, "5.3.5"),
        (Stage::Recipient, _) => (550, "5.1.1"),
        (Stage::Message, Kind::RecipientRefused) => (550, "5.1.1"),
        (Stage::Message, Kind::BadInput) => (554, "5.6.0"),
        (Stage::Message, Kind::Config) => (554, "5.3.5"),
        (Stage::Message, Kind::AuthRefused) => (554, "5.7.0"),
        (Stage::Message, Kind::Protocol) => (554, "5.5.0"),
        (Stage::Message, Kind::Unavailable) => (554, "5.0.0"),
        (Stage::Message, _) => (554, "5.3.0"),
    }
}

/// Writes a reply, `code-status line` for all lines but the last, then flushes: a client
/// waits for each reply (RFC 2920 lets us hold them back, but never past a read).
pub fn write_reply(
    output: &mut impl Write,
    code: u16,
    status: &str,
    lines: &[impl AsRef<str>],
) -> io::Result<()> {
    let mut reply = String::new();
    for (i, line) in lines.iter().enumerate() {
        let separator = if i + 1 == lines.len() { ' ' } else { '-' };
        reply.push_str(&code.to_string());
        reply.push(separator);
        if !status.is_empty() {
            reply.push_str(status);
            reply.push(' ');
        }
        reply.push_str(line.as_ref());
        reply.push_str("\r\n");
    }
    output.write_all(reply.as_bytes())?;
    output.flush()
}

/// Error words as reply lines: ASCII without control characters, each short enough.
pub fn reply_lines(text: &str) -> Vec<String> {
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let mut clean: String = line
                .trim()
                .chars()
                .map(|c| match c {
                    ' '..='~' => c,
                    _ => '?',
                })
                .collect();
            if clean.len() > MAX_REPLY_TEXT {
                clean.truncate(MAX_REPLY_TEXT - 3);
                clean.push_str("...");
            }
            clean
        })
        .filter(|line| !line.is_empty())
        .collect();
    if lines.is_empty() {
        return vec!["Failed".to_string()];
    }
    lines
}

/// Reads one line, LF included, into `line`, keeping at most `max` octets of it: the rest
/// of a longer line is read and dropped, so no input can make us hold more.
pub fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<Read> {
    line.clear();
    let mut too_long = false;
    // The last octet of the previous chunk, to see a CR just before an LF across reads.
    let mut last = None;
    loop {
        let buffer = match input.fill_buf() {
            Ok(buffer) => buffer,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if buffer.is_empty() {
            return Ok(Read::Eof);
        }
        let end = buffer.iter().position(|&b| b == b'\n');
        let chunk = match end {
            Some(lf) => &buffer[..=lf],
            None => buffer,
        };
        let room = max.saturating_sub(line.len());
        too_long |= chunk.len() > room;
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let before_lf = match chunk.len() {
            1 => last,
            n => Some(chunk[n - 2]),
        };
        last = chunk.last().copied();
        let used = chunk.len();
        input.consume(used);
        if end.is_some() {
            return Ok(Read::Line {
                too_long,
                crlf: before_lf == Some(b'\r'),
            });
        }
    }
}

/// The text after DATA as a stream: dot-stuffing undone line by line, at most `limit`
/// octets, ending at the final "." line (which is not part of it). Past the limit the
/// rest is read and dropped up to that line, so the dialogue stays in step, and `over`
/// says so; input that ends first is an `UnexpectedEof` error.
struct DataText<'a, R> {
    input: &'a mut R,
    line: &'a mut Vec<u8>,
    limit: usize,
    taken: usize,
    /// What of `line` is still to hand out.
    at: usize,
    end: usize,
    after_crlf: bool,
    done: bool,
    over: bool,
}

impl<'a, R: BufRead> DataText<'a, R> {
    fn new(input: &'a mut R, line: &'a mut Vec<u8>, limit: usize) -> Self {
        DataText {
            input,
            line,
            limit,
            taken: 0,
            at: 0,
            end: 0,
            after_crlf: true,
            done: false,
            over: false,
        }
    }

    /// The next line of text into `line`, or the end.
    fn next_line(&mut self) -> io::Result<()> {
        self.at = 0;
        self.end = 0;
        loop {
            // A line longer than the limit is over it whatever came before.
            let read = read_line(self.input, self.line, self.limit.saturating_add(3))?;
            let Read::Line { too_long, crlf } = read else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            // The end is CRLF "." CRLF exactly: a "." line after a bare LF is text.
            // Taking it as the end would let a message smuggle in commands of its own
            // ("SMTP smuggling").
            if self.after_crlf && self.line.as_slice() == b".\r\n" {
                self.done = true;
                return Ok(());
            }
            self.after_crlf = crlf;
            if self.over {
                continue;
            }
            // RFC 5321 4.5.2: the client doubled a leading dot; a "." alone is not stuffed.
            let stuffed = self.line.starts_with(b".") && strip_line_end(self.line).len() > 1;
            let start = usize::from(stuffed);
            let text = self.line.len() - start;
            if too_long || self.taken + text > self.limit {
                self.over = true;
                continue;
            }
            self.taken += text;
            (self.at, self.end) = (start, self.line.len());
            return Ok(());
        }
    }
}

impl<R: BufRead> io::Read for DataText<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let text = self.fill_buf()?;
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for DataText<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        // Past the limit, next_line reads on to the final dot and hands out nothing.
        while self.at == self.end && !self.done {
            self.next_line()?;
        }
        Ok(&self.line[self.at..self.end])
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.end);
    }
}

fn went_away() -> Error {
    Error::new(
        Kind::Io,
        "the SMTP client went away in the middle of a message",
        "the input ended before the final \".\" line; the message was discarded",
    )
}

/// Reads the message up to the final "." line and undoes dot-stuffing, as stdin is read
/// ([`input::read`]: CRLF lines, the body past a megabyte in a file `new_file` makes).
/// `None` when it is over the size limit: the rest is read and dropped, so the dialogue
/// stays in step.
/// A body the disk has no room for: `no_room` says whether it waits in memory (`-bs`,
/// whose one local client waits) or is refused as `Kind::Temporary` (the relay, with many
/// clients at once: the rest of the message is then unread, so the session must end).
pub fn read_data(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    limit: usize,
    new_file: &mut dyn FnMut() -> io::Result<File>,
    no_room: input::NoRoom,
) -> Result<Option<Input>> {
    let mut text = DataText::new(input, line, limit);
    // The final dot is DataText's to find: no line ends the message for the reader.
    match input::read_or(&mut text, true, new_file, no_room) {
        Ok(_) if text.over => Ok(None),
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(went_away()),
        Err(e) if e.kind() == io::ErrorKind::StorageFull => {
            Err(Error::new(Kind::Temporary, "no room for the message", e))
        }
        Err(e) => Err(read_failed(e)),
    }
}

/// A command line as its verb in upper case and its argument; `None` when it is not
/// UTF-8 or holds control characters (a tab aside).
pub fn split_command(line: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(strip_line_end(line)).ok()?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
    Some((verb.to_ascii_uppercase(), arg.to_string()))
}

/// The line without its LF or CRLF.
pub fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses `FROM:<path> PARAM...` or `TO:<path> PARAM...` (keyword in any case, a space
/// after the colon tolerated as most servers do) into the address and the parameters.
/// `None` for anything else, brackets being required (RFC 5321 4.1.2).
pub fn parse_path<'a>(arg: &'a str, keyword: &str) -> Option<(String, Vec<&'a str>)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start().strip_prefix('<')?;
    // The closing '>' is the first one outside a quoted local part ("a>b"@example.com).
    let mut quoted = false;
    let mut escaped = false;
    let mut end = None;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                end = Some(i);
                break;
            }
            c if c.is_whitespace() && !quoted => return None,
            _ => {}
        }
    }
    let end = end?;
    let mut path = &rest[..end];
    // RFC 5321 4.1.1.3 and appendix C: a source route (<@relay:user@domain>) is obsolete;
    // accept it and ignore the route.
    if path.starts_with('@') {
        path = path.split_once(':')?.1;
    }
    let after = &rest[end + 1..];
    if !after.is_empty() && !after.starts_with(' ') {
        return None;
    }
    Some((path.to_string(), after.split_whitespace().collect()))
}

pub fn read_failed(err: io::Error) -> Error {
    Error::new(Kind::Io, "cannot read from the SMTP client", err)
}

pub fn write_failed(err: io::Error) -> Error {
    Error::new(Kind::Io, "cannot write to the SMTP client", err)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use super::*;

    /// A transaction as the tests look at it: its message read back whole.
    #[derive(Clone, Debug, PartialEq)]
    struct Transaction {
        sender: String,
        recipients: Vec<String>,
        data: Vec<u8>,
        /// Its body came in a file, not in memory.
        spilled: bool,
    }

    impl From<&super::Transaction> for Transaction {
        fn from(t: &super::Transaction) -> Transaction {
            Transaction {
                sender: t.sender.clone(),
                recipients: t.recipients.clone(),
                data: t.data.raw().whole().unwrap().into_owned(),
                spilled: t.data.raw().spill().is_some(),
            }
        }
    }

    #[test]
    fn data_needs_mail_then_a_recipient_and_no_argument() {
        let count = |e: &Vec<&str>| e.len();
        let mut none: Option<Vec<&str>> = None;
        assert_eq!(ready_for_data("", &mut none, count).unwrap_err().0, 503);
        let mut empty = Some(Vec::new());
        assert_eq!(
            ready_for_data("", &mut empty, count).unwrap_err().2,
            "Need RCPT command"
        );
        assert!(empty.is_some(), "the envelope waits for its RCPT");
        let mut one = Some(vec!["a@b.c"]);
        assert_eq!(ready_for_data("x", &mut one, count).unwrap_err().0, 501);
        assert_eq!(ready_for_data("", &mut one, count).unwrap(), ["a@b.c"]);
        assert!(one.is_none());
    }

    /// What a session did: its replies, the messages it handed over, how it ended.
    struct Outcome {
        output: String,
        delivered: Vec<Transaction>,
        end: Result<()>,
    }

    impl Outcome {
        /// The reply codes in order, one per reply (multi-line replies count once).
        fn codes(&self) -> Vec<u16> {
            self.replies().iter().map(|(code, _)| *code).collect()
        }

        /// Each reply as its code and its lines' texts joined by newlines.
        fn replies(&self) -> Vec<(u16, String)> {
            let mut replies = Vec::new();
            let mut text = Vec::new();
            for line in self.output.split_terminator("\r\n") {
                let code = line[..3].parse().expect("a reply starts with its code");
                text.push(&line[4..]);
                if line.as_bytes()[3] == b' ' {
                    replies.push((code, text.join("\n")));
                    text.clear();
                }
            }
            assert!(text.is_empty(), "unfinished reply in {:?}", self.output);
            replies
        }

        /// The text of the reply with this code, which must be there exactly once.
        fn reply(&self, code: u16) -> String {
            let found: Vec<String> = self
                .replies()
                .into_iter()
                .filter(|(c, _)| *c == code)
                .map(|(_, text)| text)
                .collect();
            assert_eq!(found.len(), 1, "one {code} in {:?}", self.output);
            found[0].clone()
        }
    }

    fn aliases() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([("root".to_string(), vec!["admin@example.com".to_string()])])
    }

    /// Runs a session on `input` with a delivery that records each message and answers as
    /// `answer` says.
    fn run_with(
        input: &[u8],
        settings: &Settings,
        mut answer: impl FnMut(&Transaction) -> Result<()>,
    ) -> Outcome {
        let aliases = aliases();
        // No domain: an unqualified name that is no alias cannot be resolved.
        let resolver = Resolver::new(&aliases, None);
        let mut delivered = Vec::new();
        let mut output = Vec::new();
        let end = serve(input, &mut output, settings, &resolver, |t| {
            let t = Transaction::from(t);
            delivered.push(t.clone());
            answer(&t)
        });
        Outcome {
            output: String::from_utf8(output).expect("replies are ASCII"),
            delivered,
            end,
        }
    }

    fn run(input: &[u8]) -> Outcome {
        run_with(input, &Settings::new("test.host"), |_| Ok(()))
    }

    const ENVELOPE: &str =
        "EHLO client\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n";

    #[test]
    fn greeting_and_ehlo_advertise_the_extensions_but_no_auth_or_starttls() {
        let o = run(b"EHLO client.example\r\nQUIT\r\n");
        assert!(o.end.is_ok());
        assert_eq!(
            o.output,
            "220 test.host ESMTP oauth-sendmail\r\n\
             250-test.host\r\n\
             250-PIPELINING\r\n\
             250-SIZE 36700160\r\n\
             250-8BITMIME\r\n\
             250 ENHANCEDSTATUSCODES\r\n\
             221 2.0.0 Bye\r\n"
        );
    }

    #[test]
    fn a_message_is_delivered_with_its_envelope_and_dots_unstuffed() {
        let o = run(b"HELO client\r\n\
            MAIL FROM:<a@example.org>\r\n\
            RCPT TO:<b@example.org>\r\n\
            RCPT TO:<root>\r\n\
            DATA\r\n\
            Subject: hi\r\n\
            \r\n\
            ..leading dot\r\n\
            ..\r\n\
            ...\r\n\
            last\r\n\
            .\r\n\
            QUIT\r\n");
        assert_eq!(o.codes(), [220, 250, 250, 250, 250, 354, 250, 221]);
        assert_eq!(o.reply(354), "End data with <CR><LF>.<CR><LF>");
        assert_eq!(
            o.delivered,
            [Transaction {
                sender: "a@example.org".into(),
                // As given: delivery resolves root again, like a command-line recipient.
                recipients: vec!["b@example.org".into(), "root".into()],
                data: b"Subject: hi\r\n\r\n.leading dot\r\n.\r\n..\r\nlast\r\n".to_vec(),
                spilled: false,
            }]
        );
        assert!(
            o.output.contains("250 2.0.0 Message accepted"),
            "{}",
            o.output
        );
    }

    #[test]
    fn pipelined_commands_are_answered_in_order() {
        // A PIPELINING client sends the whole envelope and DATA in one write.
        let input = format!(
            "{ENVELOPE}RCPT TO:<nobody>\r\nRCPT TO:<c@example.org>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\n"
        );
        let o = run(input.as_bytes());
        assert_eq!(o.codes(), [220, 250, 250, 250, 550, 250, 354, 250, 221]);
        assert_eq!(o.delivered.len(), 1);
        assert_eq!(
            o.delivered[0].recipients,
            ["b@example.org", "c@example.org"]
        );
    }

    #[test]
    fn several_transactions_in_one_session() {
        let mut input = String::from("EHLO client\r\n");
        for i in 0..3 {
            input.push_str(&format!(
                "MAIL FROM:<s{i}@example.org>\r\nRCPT TO:<r{i}@example.org>\r\nDATA\r\nmessage {i}\r\n.\r\n"
            ));
        }
        input.push_str("QUIT\r\n");
        let o = run(input.as_bytes());
        assert_eq!(o.delivered.len(), 3, "{}", o.output);
        for (i, t) in o.delivered.iter().enumerate() {
            assert_eq!(t.sender, format!("s{i}@example.org"));
            assert_eq!(t.recipients, [format!("r{i}@example.org")]);
            assert_eq!(t.data, format!("message {i}\r\n").as_bytes());
        }
    }

    #[test]
    fn rset_and_a_new_ehlo_discard_the_transaction() {
        let input = format!("{ENVELOPE}RSET\r\nDATA\r\nMAIL FROM:<c@example.org>\r\nEHLO again\r\nRCPT TO:<d@example.org>\r\n");
        let o = run(input.as_bytes());
        // DATA after RSET has no MAIL; MAIL after RSET is not nested; RCPT after EHLO
        // has no MAIL any more.
        assert_eq!(o.codes(), [220, 250, 250, 250, 250, 503, 250, 250, 503]);
        assert!(o.delivered.is_empty());
    }

    #[test]
    fn bad_sequences_get_503() {
        let o = run(b"MAIL FROM:<a@example.org>\r\n\
            HELO client\r\n\
            RCPT TO:<b@example.org>\r\n\
            DATA\r\n\
            MAIL FROM:<a@example.org>\r\n\
            MAIL FROM:<a@example.org>\r\n\
            DATA\r\n\
            QUIT\r\n");
        // MAIL before HELO; RCPT and DATA before MAIL; nested MAIL; DATA before RCPT.
        assert_eq!(o.codes(), [220, 503, 250, 503, 503, 250, 503, 503, 221]);
        let texts: Vec<String> = o.replies().into_iter().map(|(_, t)| t).collect();
        assert!(texts[1].starts_with("5.5.1 Send HELO"), "{texts:?}");
        assert!(texts[6].contains("Nested"), "{texts:?}");
        assert!(texts[7].contains("RCPT"), "{texts:?}");
        assert!(o.delivered.is_empty());
    }

    #[test]
    fn unknown_commands_get_500_and_unoffered_ones_502() {
        let o = run(b"FROB\r\n\r\nAUTH PLAIN AGFAYg==\r\nSTARTTLS\r\nEXPN staff\r\nBDAT 10 LAST\r\nNOOP\r\n");
        assert_eq!(o.codes(), [220, 500, 500, 502, 502, 502, 502, 250]);
        assert!(o.output.contains("500 5.5.2 Command not recognized"));
        assert!(o.output.contains("502 5.5.1 Command not implemented"));
    }

    #[test]
    fn commands_are_case_insensitive() {
        let o = run(b"ehlo client\r\nmail from:<a@example.org>\r\nrcpt to:<b@example.org>\r\ndata\r\nx\r\n.\r\nquit\r\n");
        assert_eq!(o.codes(), [220, 250, 250, 250, 354, 250, 221]);
    }

    #[test]
    fn an_over_long_command_line_gets_500_and_the_session_goes_on() {
        let long = format!("MAIL FROM:<{}@example.org>\r\n", "a".repeat(600));
        let input = format!("EHLO client\r\n{long}NOOP\r\n");
        let o = run(input.as_bytes());
        assert_eq!(o.codes(), [220, 250, 500, 250]);
        assert_eq!(o.reply(500), "5.5.2 Line too long");
    }

    #[test]
    fn an_endless_line_is_not_kept_in_memory() {
        // 10 MB without a line end: refused after the limit, and its end is not a command.
        let mut input = vec![b'x'; 10_000_000];
        input.extend_from_slice(b"NOOP\r\nNOOP\r\n");
        let o = run(&input);
        assert_eq!(o.codes(), [220, 500, 250]);
    }

    #[test]
    fn mail_parameters_that_are_offered_are_taken() {
        let o = run(b"EHLO c\r\n\
            MAIL FROM:<a@example.org> BODY=8BITMIME SIZE=1000\r\n\
            RSET\r\n\
            MAIL FROM:<a@example.org> body=7bit\r\n\
            RCPT TO:<b@example.org>\r\n\
            DATA\r\n\
            caf\xc3\xa9\r\n\
            .\r\n");
        assert_eq!(o.codes(), [220, 250, 250, 250, 250, 250, 354, 250]);
        assert_eq!(o.delivered[0].data, "café\r\n".as_bytes());
    }

    #[test]
    fn mail_parameters_that_are_not_offered_or_wrong_are_refused() {
        let o = run(b"EHLO c\r\n\
            MAIL FROM:<a@example.org> SIZE=36700161\r\n\
            MAIL FROM:<a@example.org> SIZE=99999999999999999999999\r\n\
            MAIL FROM:<a@example.org> SIZE=big\r\n\
            MAIL FROM:<a@example.org> SMTPUTF8\r\n\
            MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n\
            MAIL FROM:<a@example.org> RET=HDRS\r\n\
            MAIL FROM:<a@example.org>\r\n\
            RCPT TO:<b@example.org> NOTIFY=NEVER\r\n");
        assert_eq!(
            o.codes(),
            [220, 250, 552, 552, 501, 555, 555, 555, 250, 555]
        );
        assert!(o
            .output
            .contains("555 5.5.4 Unsupported MAIL parameter RET=HDRS"));
        assert!(o
            .output
            .contains("555 5.5.4 Unsupported RCPT parameter NOTIFY=NEVER"));
    }

    #[test]
    fn path_syntax_errors_get_501() {
        let o = run(b"EHLO c\r\n\
            MAIL FROM:a@example.org\r\n\
            MAIL FROM:<a b@example.org>\r\n\
            MAIL FROM:<a@example.org\r\n\
            MAIL TO:<a@example.org>\r\n\
            MAIL FROM:<a@example.org>junk\r\n\
            MAIL FROM:<a@example.org>\r\n\
            RCPT TO:b@example.org\r\n\
            RCPT TO:<>\r\n\
            RCPT FROM:<b@example.org>\r\n\
            DATA now\r\n\
            EHLO\r\n\
            HELO \r\n\
            VRFY\r\n");
        assert_eq!(
            o.codes(),
            [220, 250, 501, 501, 501, 501, 501, 250, 501, 501, 501, 501, 501, 501, 501]
        );
    }

    #[test]
    fn null_sender_quoted_local_parts_and_source_routes() {
        let o = run(b"EHLO c\r\n\
            MAIL FROM:<>\r\n\
            RCPT TO:<@relay.example:b@example.org>\r\n\
            RCPT TO:<\"odd> name\"@example.org>\r\n\
            RCPT TO: <c@example.org>\r\n\
            DATA\r\n\
            bounce\r\n\
            .\r\n");
        assert_eq!(o.codes(), [220, 250, 250, 250, 250, 250, 354, 250]);
        assert_eq!(o.delivered[0].sender, "");
        assert_eq!(
            o.delivered[0].recipients,
            [
                "b@example.org",
                "\"odd> name\"@example.org",
                "c@example.org"
            ]
        );
    }

    #[test]
    fn non_ascii_addresses_get_553_and_binary_commands_500() {
        let o = run(b"EHLO c\r\n\
            MAIL FROM:<j\xc3\xb6rg@example.org>\r\n\
            MAIL FROM:<a@example.org>\r\n\
            RCPT TO:<j\xc3\xb6rg@example.org>\r\n\
            NO\xffOP\r\n\
            NOOP\0\r\n");
        assert_eq!(o.codes(), [220, 250, 553, 250, 553, 500, 500]);
        assert!(o.output.contains("553 5.6.7 "), "{}", o.output);
    }

    #[test]
    fn a_malformed_sender_gets_553_with_the_reason() {
        let o = run(b"EHLO c\r\nMAIL FROM:<a@@example.org>\r\nMAIL FROM:<www-data>\r\n");
        // An unqualified sender is fine: delivery qualifies it as it does -f.
        assert_eq!(o.codes(), [220, 250, 553, 250]);
        assert!(
            o.reply(553)
                .starts_with("5.1.7 bad address `a@@example.org`"),
            "{}",
            o.output
        );
    }

    #[test]
    fn recipients_resolve_through_aliases_or_get_refused() {
        let o = run(b"EHLO c\r\n\
            MAIL FROM:<a@example.org>\r\n\
            RCPT TO:<root>\r\n\
            RCPT TO:<nobody>\r\n\
            RCPT TO:<b@@example.org>\r\n\
            DATA\r\n\
            x\r\n\
            .\r\n");
        assert_eq!(o.codes(), [220, 250, 250, 250, 550, 553, 354, 250]);
        // The resolver's words, so the client's log tells what to configure.
        let refused = o.reply(550);
        assert!(
            refused.starts_with("5.1.1 recipient `nobody` has no domain"),
            "{refused}"
        );
        assert!(
            refused.contains("\n5.1.1 add it under [aliases]"),
            "{refused}"
        );
        assert!(o.reply(553).starts_with("5.1.3 "), "{}", o.output);
        assert_eq!(o.delivered[0].recipients, ["root"]);
    }

    #[test]
    fn too_many_recipients_get_452() {
        let mut input = String::from("EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
        for i in 0..=MAX_RECIPIENTS {
            input.push_str(&format!("RCPT TO:<r{i}@example.org>\r\n"));
        }
        let o = run(input.as_bytes());
        let codes = o.codes();
        assert_eq!(codes.len(), MAX_RECIPIENTS + 4);
        assert_eq!(codes[codes.len() - 2..], [250, 452]);
    }

    #[test]
    fn the_250_after_data_comes_only_after_the_delivery() {
        /// A writer the delivery can look at while the session holds it.
        #[derive(Clone, Default)]
        struct Shared(Rc<RefCell<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.borrow_mut().write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let output = Shared::default();
        let seen = output.clone();
        let aliases = aliases();
        let resolver = Resolver::new(&aliases, None);
        let input = format!("{ENVELOPE}DATA\r\nx\r\n.\r\n");
        let mut calls = 0;
        let end = serve(
            input.as_bytes(),
            output.clone(),
            &Settings::new("h"),
            &resolver,
            |_| {
                calls += 1;
                let so_far = String::from_utf8(seen.0.borrow().clone()).unwrap();
                assert!(
                    so_far.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
                    "{so_far}"
                );
                Ok(())
            },
        );
        assert!(end.is_ok());
        assert_eq!(calls, 1);
        let all = String::from_utf8(output.0.borrow().clone()).unwrap();
        assert!(
            all.ends_with("250 2.0.0 Message accepted for delivery\r\n"),
            "{all}"
        );
    }

    #[test]
    fn delivery_failures_become_replies_chosen_by_kind() {
        let cases = [
            (Kind::Temporary, "451 4.3.0 "),
            (Kind::RecipientRefused, "550 5.1.1 "),
            (Kind::Unavailable, "554 5.0.0 "),
            (Kind::AuthRefused, "554 5.7.0 "),
            (Kind::Config, "554 5.3.5 "),
            (Kind::BadInput, "554 5.6.0 "),
            (Kind::Internal, "554 5.3.0 "),
        ];
        for (kind, expected) in cases {
            let input = format!("{ENVELOPE}DATA\r\nx\r\n.\r\nNOOP\r\n");
            let o = run_with(input.as_bytes(), &Settings::new("h"), |_| {
                Err(Error::new(
                    kind,
                    "the message failed at smtp.example",
                    "it said no",
                ))
            });
            let line = format!("{expected}the message failed at smtp.example: it said no\r\n");
            assert!(o.output.contains(&line), "{kind:?}: {}", o.output);
            // The session goes on after a failed message.
            assert!(
                o.output.ends_with("250 2.0.0 Ok\r\n"),
                "{kind:?}: {}",
                o.output
            );
        }
    }

    #[test]
    fn a_failure_with_hints_is_a_multi_line_reply_of_safe_text() {
        let input = format!("{ENVELOPE}DATA\r\nx\r\n.\r\n");
        let o = run_with(input.as_bytes(), &Settings::new("h"), |_| {
            let why = format!("bad token \u{e9}\r{}", "x".repeat(1000));
            Err(Error::new(Kind::AuthRefused, "authentication refused", why)
                .hint("renew the token"))
        });
        let lines: Vec<&str> = o.output.lines().filter(|l| l.starts_with("554")).collect();
        assert_eq!(lines.len(), 2, "{}", o.output);
        assert!(
            lines[0].starts_with("554-5.7.0 authentication refused: bad token ?"),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].len() <= 512 && lines[0].ends_with("..."),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "554 5.7.0 renew the token");
    }

    #[test]
    fn an_over_size_message_gets_552_and_is_not_delivered() {
        let settings = Settings {
            max_message: 100,
            ..Settings::new("h")
        };
        let big = "x".repeat(60);
        let input = format!(
            "{ENVELOPE}DATA\r\n{big}\r\n{big}\r\n.\r\n\
             MAIL FROM:<a@example.org> SIZE=101\r\n\
             MAIL FROM:<a@example.org> SIZE=100\r\nRCPT TO:<b@example.org>\r\nDATA\r\n{big}\r\n.\r\n"
        );
        let o = run_with(input.as_bytes(), &settings, |_| Ok(()));
        assert_eq!(
            o.codes(),
            [220, 250, 250, 250, 354, 552, 552, 250, 250, 354, 250]
        );
        assert_eq!(o.delivered.len(), 1, "only the second message fits");
        assert_eq!(o.delivered[0].data, format!("{big}\r\n").as_bytes());
        assert!(o.output.contains("250-SIZE 100\r\n"));
    }

    #[test]
    fn an_over_size_single_line_is_dropped_without_losing_the_dialogue() {
        let settings = Settings {
            max_message: 100,
            ..Settings::new("h")
        };
        let input = format!("{ENVELOPE}DATA\r\n{}\r\n.\r\nNOOP\r\n", "y".repeat(5000));
        let o = run_with(input.as_bytes(), &settings, |_| Ok(()));
        assert_eq!(o.codes(), [220, 250, 250, 250, 354, 552, 250]);
        assert!(o.delivered.is_empty());
    }

    #[test]
    fn long_lines_in_a_message_are_kept_whole() {
        // Intake re-encodes lines over 998 octets; cutting them here would lose text.
        let line = "z".repeat(5000);
        let input = format!("{ENVELOPE}DATA\r\n{line}\r\n.\r\n");
        let o = run(input.as_bytes());
        assert_eq!(o.delivered[0].data, format!("{line}\r\n").as_bytes());
    }

    #[test]
    fn end_of_input_in_the_middle_of_a_message_discards_it() {
        for cut in [
            "DATA\r\nSubject: x\r\n\r\nhalf a mess",
            "DATA\r\nbody\r\n",
            "DATA\r\n",
        ] {
            let input = format!("{ENVELOPE}{cut}");
            let o = run(input.as_bytes());
            assert!(o.delivered.is_empty(), "delivered after {cut:?}");
            let err = o.end.expect_err("a cut-off message is an error");
            assert_eq!(err.exit_code(), 74);
            assert!(err.to_string().contains("discarded"), "{err}");
        }
    }

    #[test]
    fn end_of_input_between_commands_ends_the_session_quietly() {
        let o = run(ENVELOPE.as_bytes());
        assert!(o.end.is_ok());
        assert!(o.delivered.is_empty());
        // A last command without its line end is not answered.
        let o = run(b"EHLO c\r\nNOOP");
        assert_eq!(o.codes(), [220, 250]);
    }

    /// A large message is read as stdin is: its body past a megabyte in a file, never
    /// whole in memory, with its dots unstuffed on either side of the spill and the
    /// session going on after it.
    #[test]
    fn a_large_message_comes_in_a_file_whole() {
        let line = |n: usize| format!("..line {n} {}\r\n", "x".repeat(60));
        let text: String = (0..40_000).map(line).collect();
        let input = format!(
            "{ENVELOPE}DATA\r\nSubject: big\r\n\r\n{text}.\r\n{ENVELOPE}DATA\r\nsmall\r\n.\r\nQUIT\r\n"
        );
        let o = run(input.as_bytes());
        assert_eq!(
            o.codes(),
            [220, 250, 250, 250, 354, 250, 250, 250, 250, 354, 250, 221]
        );
        assert_eq!(o.delivered.len(), 2);
        let unstuffed = text.replace("\r\n..line", "\r\n.line");
        let expected = format!("Subject: big\r\n\r\n{}", &unstuffed[1..]);
        assert!(
            o.delivered[0].data == expected.as_bytes(),
            "the message changed"
        );
        assert!(
            o.delivered[0].spilled,
            "a 2.7 MB message was held in memory"
        );
        assert_eq!(
            (&o.delivered[1].data[..], o.delivered[1].spilled),
            (&b"small\r\n"[..], false)
        );
    }

    /// The reader of DATA before it was a stream (kept here as the oracle).
    fn old_read_data(
        input: &mut impl BufRead,
        line: &mut Vec<u8>,
        limit: usize,
    ) -> Result<Option<Vec<u8>>> {
        let mut data = Vec::new();
        let mut oversize = false;
        let mut after_crlf = true;
        loop {
            let read = read_line(input, line, limit.saturating_add(3)).map_err(read_failed)?;
            let Read::Line { too_long, crlf } = read else {
                return Err(went_away());
            };
            if after_crlf && line.as_slice() == b".\r\n" {
                return Ok((!oversize).then_some(data));
            }
            after_crlf = crlf;
            if oversize {
                continue;
            }
            let stuffed = line.starts_with(b".") && strip_line_end(line).len() > 1;
            let text = if stuffed { &line[1..] } else { &line[..] };
            if too_long || data.len() + text.len() > limit {
                oversize = true;
                data = Vec::new();
                continue;
            }
            data.extend_from_slice(text);
        }
    }

    /// Any DATA text, cut anywhere, with any limit: the stream gives what the reader of
    /// old gave (its lines then made CRLF, as intake made them), the same verdict (over
    /// the limit, cut off), and leaves the input at the same place for the next command.
    #[test]
    fn the_data_stream_reads_as_the_old_reader_did() {
        const PIECES: &[&[u8]] = &[
            b"a",
            b"text",
            b"..x",
            b".",
            b"\r\n",
            b"\n",
            b"\r",
            b"\r\n.\r\n",
            b".\r\n",
            b"From x",
            b"Subject: s",
            b"\xc3\xa9",
            b"\0",
            b" ",
            b"\r\n\r\n",
            b"QUIT\r\n",
        ];
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let pieces = (next() % 40) as usize;
            let text: Vec<u8> = (0..pieces)
                .flat_map(|_| {
                    PIECES[(next() % PIECES.len() as u64) as usize]
                        .iter()
                        .copied()
                })
                .collect();
            let limit = [8, 30, 100, 10_000][(next() % 4) as usize];
            let capacity = 1 + (next() % 7) as usize;
            let mut old_input = io::BufReader::with_capacity(capacity, &text[..]);
            let old = old_read_data(&mut old_input, &mut Vec::new(), limit);
            let mut new_input = io::BufReader::with_capacity(capacity, &text[..]);
            let mut no_file = || Err(io::Error::other("no spill here"));
            let new = read_data(
                &mut new_input,
                &mut Vec::new(),
                limit,
                &mut no_file,
                input::NoRoom::InMemory,
            );
            let old = old.map(|d| d.map(|d| input::read_message(&d[..], true).unwrap()));
            let new = new.map(|d| d.map(|m| m.raw().whole().unwrap().into_owned()));
            match (&old, &new) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b, "{:?} limit {limit}", String::from_utf8_lossy(&text))
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                _ => panic!(
                    "{old:?} against {new:?} for {:?}",
                    String::from_utf8_lossy(&text)
                ),
            }
            let rest = |mut r: io::BufReader<&[u8]>| {
                let mut rest = Vec::new();
                io::Read::read_to_end(&mut r, &mut rest).unwrap();
                rest
            };
            assert_eq!(
                rest(old_input),
                rest(new_input),
                "in step after the message"
            );
        }
    }

    #[test]
    fn a_dot_after_a_bare_lf_does_not_end_the_message() {
        // SMTP smuggling: the "." after a bare LF is text, so the MAIL after it is too.
        let input = format!(
            "{ENVELOPE}DATA\r\nfirst\n.\r\nMAIL FROM:<evil@example.org>\r\n.\n\r\n.\r\nQUIT\r\n"
        );
        let o = run(input.as_bytes());
        assert_eq!(o.codes(), [220, 250, 250, 250, 354, 250, 221]);
        assert_eq!(o.delivered.len(), 1);
        // All of it one message's text, its line ends made CRLF as any message's are.
        assert_eq!(
            o.delivered[0].data,
            b"first\r\n.\r\nMAIL FROM:<evil@example.org>\r\n.\r\n\r\n"
        );
    }

    #[test]
    fn a_dot_line_split_across_reads_still_ends_the_message() {
        /// Hands out its input a few octets at a time, as a pipe may.
        struct Trickle<'a>(&'a [u8]);
        impl io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(3);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let input = format!("{ENVELOPE}DATA\r\nab\r\n.\r\nQUIT\r\n");
        let aliases = aliases();
        let resolver = Resolver::new(&aliases, None);
        let mut delivered = Vec::new();
        let mut output = Vec::new();
        let reader = io::BufReader::with_capacity(4, Trickle(input.as_bytes()));
        serve(reader, &mut output, &Settings::new("h"), &resolver, |t| {
            delivered.push(Transaction::from(t).data);
            Ok(())
        })
        .unwrap();
        assert_eq!(delivered, [b"ab\r\n".to_vec()]);
        assert!(String::from_utf8(output)
            .unwrap()
            .ends_with("221 2.0.0 Bye\r\n"));
    }

    #[test]
    fn vrfy_help_noop_and_quit() {
        let o =
            run(b"VRFY root\r\nHELP\r\nNOOP anything\r\nRSET x\r\nQUIT now\r\nQUIT\r\nNOOP\r\n");
        // Nothing after QUIT is read.
        assert_eq!(o.codes(), [220, 252, 214, 250, 501, 501, 221]);
        assert!(o.reply(214).contains("MAIL RCPT DATA"));
    }

    #[test]
    fn a_client_that_stops_reading_ends_the_session_with_an_error() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let aliases = aliases();
        let resolver = Resolver::new(&aliases, None);
        let end = serve(
            &b"NOOP\r\n"[..],
            Broken,
            &Settings::new("h"),
            &resolver,
            |_| Ok(()),
        );
        assert_eq!(end.unwrap_err().exit_code(), 74);
    }

    #[test]
    fn refusing_a_session_says_why_with_421() {
        let mut output = Vec::new();
        let err = Error::new(Kind::Config, "cannot read /etc/x.toml", "no such file");
        let err = refuse(&mut output, &Settings::new("h"), err);
        assert_eq!(err.exit_code(), 78);
        assert_eq!(
            String::from_utf8(output).unwrap(),
            "421-4.3.0 h unavailable:\r\n421 4.3.0 cannot read /etc/x.toml: no such file\r\n"
        );
    }

    #[test]
    fn no_input_makes_it_panic() {
        // Deterministic noise built from SMTP fragments, so it gets past the greeting into
        // every command and the DATA state, plus raw bytes.
        let pieces: [&[u8]; 16] = [
            b"EHLO x\r\n",
            b"MAIL FROM:<",
            b"RCPT TO:<",
            b">",
            b"DATA\r\n",
            b".\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b".",
            b"@",
            b"\"",
            b"\\",
            b"\xff\xc3",
            b" SIZE=",
            b"RSET\r\n",
        ];
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let mut input = Vec::new();
            for _ in 0..40 {
                let state = next();
                input.extend_from_slice(pieces[(state % 16) as usize]);
                if state.is_multiple_of(7) {
                    input.push((state >> 24) as u8);
                }
            }
            let settings = Settings {
                max_message: 64,
                ..Settings::new("h")
            };
            let o = run_with(&input, &settings, |_| Ok(()));
            assert!(o.output.starts_with("220 "));
        }
    }
}
