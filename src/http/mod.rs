//! The HTTPS transports, for where SMTP cannot go: Gmail's API (`gmail`) and Microsoft
//! Graph (`graph`). One ureq Agent per session, so a flush of the queue reuses one
//! keep-alive connection; TLS verified against the system's anchors and the account's
//! `ca_file`; the answers sorted as SMTP's are (408, 429, 5xx: later, and not before
//! `Retry-After`; 401: the token; other 4xx: refused, in the API's words); with `-v` the
//! exchange on stderr (method, path, status, headers), the token never shown.

pub mod gmail;
pub mod graph;

use std::io::{self, Read};
use std::time::Duration;

use serde_json::Value;

use crate::config::{Account, Transport};
use crate::error::{Error, Kind, Result};
use crate::message::envelope::{Body, Prepared};
use crate::secret::Secret;

/// An answer larger than this is not one of these APIs' answers.
const MAX_ANSWER: u64 = 1024 * 1024;
/// Uploads go at least this fast (bytes per second) before the send counts as hung.
const MIN_RATE: u64 = 10 * 1024;
/// An API's words in a log line or a bounce: enough to say what, not a page.
const MAX_WORDS: usize = 300;

/// What the API said of a message it took: the reply each recipient's log entry records.
#[derive(Debug)]
pub struct Sent {
    pub reply: String,
}

/// One request, as an API module describes it.
struct Call<'m> {
    method: &'static str,
    /// From the API's base address on, query included.
    path: String,
    content_type: Option<&'static str>,
    body: Payload<'m>,
}

/// What a request carries.
enum Payload<'m> {
    Bytes(Vec<u8>),
    /// A message as it is uploaded, read as it goes out.
    Message(Upload<'m>),
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Bytes(bytes) => bytes.len() as u64,
            Payload::Message(upload) => upload.len(),
        }
    }
}

/// A status and the JSON object of the answer (empty when there was none).
struct Answer {
    status: u16,
    json: serde_json::Map<String, Value>,
}

/// An account's API, ready for several messages over one connection.
pub struct Session {
    transport: Transport,
    base: String,
    /// The mailbox in paths: `/me`, or `/users/{id}` for Graph's app-only access.
    mailbox: String,
    agent: ureq::Agent,
    timeout: Duration,
    verbose: bool,
}

impl Session {
    /// Sets up the client; nothing is sent until the first request.
    pub fn open(account: &Account, verbose: bool) -> Result<Session> {
        let mut extra = Vec::new();
        if let Some(path) = &account.ca_file {
            let bad = |why: String| {
                Error::new(
                    Kind::Config,
                    format!("cannot use ca_file {}", path.display()),
                    why,
                )
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            extra = crate::sys::trust::pem_certs(&pem).map_err(bad)?;
            if extra.is_empty() {
                return Err(bad("it holds no PEM certificate".into()));
            }
        }
        let tls = crate::sys::trust::ureq_tls(&extra).map_err(|why| {
            Error::new(Kind::Config, "cannot verify the API's certificate", why)
                .hint("install the ca-certificates package, or set ca_file")
        })?;
        // A timeout of centuries is a wish for none: a day keeps the arithmetic finite.
        let timeout = account.timeout.min(Duration::from_secs(24 * 3600));
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect would send the token and the message somewhere else.
            .max_redirects(0)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_recv_body(Some(timeout))
            .user_agent(concat!("oauth-sendmail/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls);
        if is_loopback(&account.api_uri) {
            config = config.proxy(None);
        }
        let mailbox = match account.transport {
            Transport::Graph => graph::mailbox(account),
            _ => "/users/me".to_string(),
        };
        Ok(Session {
            transport: account.transport,
            base: account.api_uri.clone(),
            mailbox,
            agent: ureq::Agent::new_with_config(config.build()),
            timeout,
            verbose,
        })
    }

    /// Sends one message with the access token `token`.
    pub fn send(&mut self, message: &Prepared, token: &Secret) -> Result<Sent> {
        let upload = Upload::of(message)?;
        let call = match self.transport {
            Transport::Graph => graph::send_call(&self.mailbox, upload)?,
            _ => gmail::send_call(&self.mailbox, upload)?,
        };
        let answer = self.exchange(&call, token)?;
        match answer.status {
            200..=299 => Ok(Sent {
                reply: match self.transport {
                    Transport::Graph => graph::reply(answer.status),
                    _ => gmail::reply(answer.status, &answer.json),
                },
            }),
            _ => Err(self.refusal(&answer, "the message")),
        }
    }

    /// Asks the API who the token is for, sending nothing (`status --check`): the words
    /// for the check line.
    pub fn check(&mut self, token: &Secret) -> Result<String> {
        let call = Call {
            method: "GET",
            path: match self.transport {
                Transport::Graph => self.mailbox.clone(),
                _ => format!("/gmail/v1{}/profile", self.mailbox),
            },
            content_type: None,
            body: Payload::Bytes(Vec::new()),
        };
        let answer = self.exchange(&call, token)?;
        let name = match self.transport {
            Transport::Graph => "Microsoft Graph",
            _ => "the Gmail API",
        };
        match answer.status {
            200..=299 => {
                let who = ["emailAddress", "userPrincipalName", "mail"]
                    .iter()
                    .find_map(|key| answer.json.get(*key).and_then(Value::as_str))
                    .unwrap_or("the mailbox");
                Ok(format!("{name} accepts the token for {}", clean(who)))
            }
            // The token was taken; reading the profile needs a scope sending does not
            // (gmail.send alone, Mail.Send alone).
            403 => Ok(format!(
                "{name} accepts the token (the profile is not readable with the send-only scope: {})",
                api_words(&answer).unwrap_or_else(|| "HTTP 403".into())
            )),
            _ => Err(self.refusal(&answer, "the check")),
        }
    }

    /// One request and its answer; the failures of getting there sorted by what helps.
    fn exchange(&self, call: &Call, token: &Secret) -> Result<Answer> {
        let url = format!("{}{}", self.base, call.path);
        let note = |arrow: &str, text: &str| {
            if self.verbose {
                crate::transcript::line(arrow, text);
            }
        };
        note("->", &format!("{} {}", call.method, call.path));
        note("->", "Authorization: Bearer (redacted)");
        let bearer = format!("Bearer {}", token.expose());
        let result = match call.method {
            "GET" => self
                .agent
                .get(&url)
                .header("Authorization", &bearer)
                .header("Accept", "application/json")
                .call(),
            _ => {
                let content_type = call.content_type.unwrap_or("application/octet-stream");
                note("->", &format!("Content-Type: {content_type}"));
                let length = call.body.len();
                note("->", &format!("Content-Length: {length}"));
                let allowance = self.timeout + Duration::from_secs(length / MIN_RATE);
                let request = self
                    .agent
                    .post(&url)
                    .config()
                    .timeout_send_body(Some(allowance))
                    .build()
                    .header("Authorization", &bearer)
                    .header("Accept", "application/json")
                    .header("Content-Type", content_type);
                match &call.body {
                    Payload::Bytes(bytes) => request.send(&bytes[..]),
                    // The length given, so that ureq sends it as is rather than chunked.
                    Payload::Message(upload) => request
                        .header("Content-Length", length.to_string())
                        .send(ureq::SendBody::from_reader(&mut upload.reader())),
                }
            }
        };
        let mut response = result.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        note("<-", &format!("HTTP {status}"));
        for (name, value) in response.headers() {
            note(
                "<-",
                &format!("{name}: {}", clean(value.to_str().unwrap_or("(binary)"))),
            );
        }
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        if !body.is_empty() {
            note("<-", &clean(&body.replace(token.expose(), "(redacted)")));
        }
        let json = match serde_json::from_str::<Value>(&body) {
            Ok(Value::Object(map)) => map,
            _ => Default::default(),
        };
        let answer = Answer { status, json };
        match status {
            408 | 429 | 500..=599 => {
                let mut err = Error::new(
                    Kind::Temporary,
                    format!("{} failed", self.server()),
                    self.words(&answer),
                );
                if let Some(wait) = wait {
                    err = err.retry_after(wait).hint(format!(
                        "it asked to be tried again in {} s",
                        wait.as_secs()
                    ));
                }
                Err(err)
            }
            401 => Err(Error::new(
                Kind::AuthRefused,
                format!("{} refused the access token", self.server()),
                self.words(&answer),
            )),
            _ => Ok(answer),
        }
    }

    /// A 4xx answer other than 401, in the API's own words for the bounce and the log:
    /// the message refused for good; or, for what refuses every message alike (no
    /// permission, no such mailbox or address), the setup, for which messages wait.
    fn refusal(&self, answer: &Answer, what: &str) -> Error {
        let kind = refusal_kind(answer);
        let err = Error::new(
            kind,
            format!("{} refused {what}", self.server()),
            self.words(answer),
        );
        match (kind, answer.status, self.transport) {
            (Kind::Temporary, ..) => err,
            (_, 403, Transport::Graph) => err.hint("the app needs the Mail.Send permission (delegated, or application with admin consent for app-only access), and the mailbox must be one it may send as"),
            (_, 403, _) => err.hint("the OAuth client needs the gmail.send scope (https://www.googleapis.com/auth/gmail.send) and the Gmail API enabled in its Google Cloud project"),
            (_, 404 | 405, _) => err.hint("check api_uri (or leave it out for the provider's) and user, the mailbox the API is asked for"),
            _ => err,
        }
    }

    /// "HTTP 400 (INVALID_ARGUMENT: Invalid To header)".
    fn words(&self, answer: &Answer) -> String {
        match api_words(answer) {
            Some(words) => format!("HTTP {} ({words})", answer.status),
            None => format!("HTTP {}", answer.status),
        }
    }

    fn server(&self) -> String {
        let host = self
            .base
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or(&self.base);
        format!("the API at {host}")
    }

    /// No answer: the network, TLS, a timeout.
    fn unreachable(&self, err: ureq::Error) -> Error {
        let what = format!("cannot reach {}", self.server());
        if let Some(problem) = certificate_problem(&err) {
            return Error::new(
                Kind::Certificate,
                what,
                format!("its certificate is not valid: {problem}"),
            )
            .hint("if the API is reached through a private CA (a proxy that inspects TLS), set ca_file to that CA's certificate (PEM)");
        }
        let kind = match err {
            ureq::Error::BadUri(_) | ureq::Error::InvalidProxyUrl => Kind::Config,
            ureq::Error::Protocol(_) | ureq::Error::BodyExceedsLimit(_) => Kind::Protocol,
            _ => Kind::Temporary,
        };
        Error::new(kind, what, err)
    }
}

/// The rustls certificate error inside a ureq error, if that is what it is.
fn certificate_problem(err: &ureq::Error) -> Option<String> {
    let rustls_error = match err {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(io) => io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(problem)) => Some(format!("{problem:?}")),
        _ => None,
    }
}

/// What a 4xx answer (not 401) means for the message.
fn refusal_kind(answer: &Answer) -> Kind {
    match answer.status {
        // Google answers some of its quotas with 403 (rateLimitExceeded...).
        403 if over_quota(answer) => Kind::Temporary,
        403..=405 => Kind::Config,
        300..=399 => Kind::Protocol,
        _ => Kind::Unavailable,
    }
}

/// Google's `{"error": {"errors": [{"reason": "rateLimitExceeded"}]}}` and its kin.
fn over_quota(answer: &Answer) -> bool {
    let reasons = answer
        .json
        .get("error")
        .and_then(|e| e.get("errors"))
        .and_then(Value::as_array);
    reasons.is_some_and(|all| {
        all.iter()
            .filter_map(|e| e.get("reason").and_then(Value::as_str))
            .any(|r| r.ends_with("imitExceeded") || r == "quotaExceeded")
    })
}

/// The `error.status`/`error.code` and `error.message` both APIs answer with (Google's
/// `{"error": {"code": 400, "message": ..., "status": ...}}`, Graph's `{"error": {"code":
/// ..., "message": ...}}`), cleaned for a log line.
fn api_words(answer: &Answer) -> Option<String> {
    let error = answer.json.get("error")?;
    let code = ["status", "code"]
        .iter()
        .find_map(|key| error.get(*key).and_then(Value::as_str));
    let message = error.get("message").and_then(Value::as_str);
    let words = match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(one), None) | (None, Some(one)) => one.to_string(),
        // OAuth-style `{"error": "invalid_token"}`.
        (None, None) => error.as_str()?.to_string(),
    };
    Some(clean(&words))
}

/// Server text for a log line: one line, bounded.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_WORDS)
        .collect()
}

/// `Retry-After` as seconds (its HTTP-date form is read as "later", a minute).
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds.min(7 * 86400))),
        Err(_) if !value.is_empty() => Some(Duration::from_secs(60)),
        Err(_) => None,
    }
}

fn is_loopback(uri: &str) -> bool {
    let rest = uri.split("://").nth(1).unwrap_or_default();
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => authority,
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// The message as the APIs get it. They deliver to the addresses of its To, Cc and Bcc
/// fields, not to an envelope, and Gmail and Exchange take a `Bcc:` field out of what
/// they deliver. So: the envelope recipients that no To or Cc names (argv, aliases,
/// `-bs` RCPT, Bcc) go in a `Bcc:` field; a To or Cc field naming someone who is not a
/// recipient of this message (`To: root` when root is an alias, a partial retry) is kept
/// as `X-Original-To`/`X-Original-Cc`, so nobody outside the envelope gets the message.
///
/// Only the header block is rewritten and held: the rest is read from the message as
/// the upload goes (a queued message's file a chunk at a time), so a large message is
/// never held whole, and one over an API's limit is refused before it is read.
struct Upload<'m> {
    head: Vec<u8>,
    message: &'m Prepared<'m>,
    /// Where in the message the rest (the blank line and the body) begins.
    rest: u64,
}

impl<'m> Upload<'m> {
    fn of(message: &'m Prepared<'m>) -> Result<Upload<'m>> {
        let (header, rest) = header_block(message).map_err(crate::message::envelope::unreadable)?;
        Ok(Upload {
            head: rewrite_header(message, &header),
            message,
            rest,
        })
    }

    fn len(&self) -> u64 {
        self.head.len() as u64 + (self.message.len() as u64 - self.rest)
    }

    fn reader(&self) -> impl Read + '_ {
        io::Cursor::new(&self.head[..]).chain(MessageReader {
            message: self.message,
            at: self.rest,
        })
    }

    /// The whole upload in memory (Graph's needs base64 of it, and is at most 4 MB).
    fn to_vec(&self) -> Result<Vec<u8>> {
        let mut copy = Vec::with_capacity(self.len() as usize);
        self.reader()
            .read_to_end(&mut copy)
            .map_err(crate::message::envelope::unreadable)?;
        Ok(copy)
    }
}

/// A prepared message (head, then body) read from a position on.
struct MessageReader<'m> {
    message: &'m Prepared<'m>,
    at: u64,
}

impl Read for MessageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let head = &self.message.head;
        let n = match usize::try_from(self.at).ok().and_then(|at| head.get(at..)) {
            Some(rest) if !rest.is_empty() => copy_into(buf, rest),
            _ => {
                let at = self.at - head.len() as u64;
                match self.message.body {
                    Body::Bytes(bytes) => copy_into(buf, bytes.get(at as usize..).unwrap_or(&[])),
                    Body::File { file, len } if at < len => {
                        let want = buf.len().min((len - at).min(usize::MAX as u64) as usize);
                        let n = std::os::unix::fs::FileExt::read_at(file, &mut buf[..want], at)?;
                        if n == 0 && want > 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the queue file is shorter than it was",
                            ));
                        }
                        n
                    }
                    Body::File { .. } => 0,
                }
            }
        };
        self.at += n as u64;
        Ok(n)
    }
}

fn copy_into(buf: &mut [u8], from: &[u8]) -> usize {
    let n = buf.len().min(from.len());
    buf[..n].copy_from_slice(&from[..n]);
    n
}

/// The message's header block up to and with the CRLF of its last field, and where the
/// rest begins; the whole message when it has no blank line.
fn header_block(message: &Prepared) -> io::Result<(Vec<u8>, u64)> {
    let mut reader = MessageReader { message, at: 0 };
    let mut header = Vec::new();
    let mut chunk = vec![0; crate::message::envelope::CHUNK];
    loop {
        // From a little before the new bytes: the blank line may straddle two reads.
        let from = header.len().saturating_sub(3);
        let n = reader.read(&mut chunk)?;
        header.extend_from_slice(&chunk[..n]);
        if let Some(at) = memchr::memmem::find(&header[from..], b"\r\n\r\n") {
            let end = from + at + 2;
            header.truncate(end);
            return Ok((header, end as u64));
        }
        if n == 0 {
            let end = header.len() as u64;
            return Ok((header, end));
        }
    }
}

/// The header block as the APIs get it (see [`Upload`]).
fn rewrite_header(message: &Prepared, header: &[u8]) -> Vec<u8> {
    let envelope: Vec<String> = message
        .envelope
        .recipients
        .iter()
        .map(|r| r.to_ascii_lowercase())
        .collect();
    let mut head = Vec::with_capacity(header.len() + 256);
    let mut named: Vec<String> = Vec::new();
    for field in fields(header) {
        let name = field_name(field);
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("Bcc") {
            continue;
        }
        if is("To") || is("Cc") {
            let colon = field.iter().position(|&b| b == b':').unwrap_or(0);
            let value = &field[colon + 1..];
            let addresses: Vec<String> = crate::message::address::parse_list(value)
                .iter()
                .flat_map(|entry| entry.mailboxes())
                .map(|m| m.address.to_ascii_lowercase())
                .collect();
            if addresses.iter().all(|a| envelope.contains(a)) {
                named.extend(addresses);
            } else {
                head.extend_from_slice(b"X-Original-");
            }
        }
        head.extend_from_slice(field);
    }
    let hidden: Vec<&String> = message
        .envelope
        .recipients
        .iter()
        .filter(|r| !named.contains(&r.to_ascii_lowercase()))
        .collect();
    if !hidden.is_empty() {
        head.extend_from_slice(b"Bcc:");
        let mut line = 4;
        for (i, address) in hidden.iter().enumerate() {
            let comma = if i + 1 < hidden.len() { "," } else { "" };
            if line + address.len() + 2 > 76 && i > 0 {
                head.extend_from_slice(b"\r\n");
                line = 0;
            }
            head.extend_from_slice(format!(" {address}{comma}").as_bytes());
            line += address.len() + 2;
        }
        head.extend_from_slice(b"\r\n");
    }
    head
}

/// The fields of a header block, each with its continuation lines and CRLF.
fn fields(block: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while at < block.len() {
        let next = block[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(block.len(), |p| at + p + 2);
        if at > start && !matches!(block.get(at), Some(b' ' | b'\t')) {
            fields.push(&block[start..at]);
            start = at;
        }
        at = next;
    }
    if start < block.len() {
        fields.push(&block[start..]);
    }
    fields
}

fn field_name(field: &[u8]) -> &str {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(0);
    std::str::from_utf8(&field[..colon]).unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::envelope::Envelope;

    fn prepared<'a>(head: &str, body: &'a [u8], recipients: &[&str]) -> Prepared<'a> {
        Prepared {
            envelope: Envelope {
                sender: "s@x.org".into(),
                recipients: recipients.iter().map(|r| r.to_string()).collect(),
            },
            head: head.as_bytes().to_vec(),
            body: crate::message::envelope::Body::Bytes(body),
            eight_bit: false,
            message_id: None,
        }
    }

    fn text(message: &Prepared) -> String {
        String::from_utf8(Upload::of(message).unwrap().to_vec().unwrap()).unwrap()
    }

    #[test]
    fn envelope_only_recipients_go_in_a_bcc_field() {
        let message = prepared(
            "From: s@x.org\r\nTo: A <a@x.org>,\r\n b@x.org\r\nSubject: s\r\n\r\n",
            b"body\r\n",
            &["a@x.org", "B@x.org", "hidden@x.org"],
        );
        assert_eq!(
            text(&message),
            "From: s@x.org\r\nTo: A <a@x.org>,\r\n b@x.org\r\nSubject: s\r\nBcc: hidden@x.org\r\n\r\nbody\r\n"
        );
    }

    /// A message in a file (as the queue hands it over: no head in memory) is uploaded as
    /// the same message in memory is, its header found across reads (this one is longer
    /// than a read) and the rest read from the file.
    #[test]
    fn a_message_in_a_file_is_uploaded_as_the_one_in_memory() {
        use std::io::Write;
        let long = format!(
            "X-Long: {}\r\n",
            "a ".repeat(40_000).replace("a a", "a\r\n a")
        );
        let header = format!("To: a@x.org\r\n{long}Bcc: b@x.org\r\nSubject: s\r\n\r\n");
        let body: Vec<u8> = (0..200_000).map(|i| b"ab\r\n"[i % 4]).collect();
        let whole = [header.as_bytes(), &body].concat();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&whole).unwrap();
        let recipients = ["a@x.org", "b@x.org"];
        let in_memory = text(&prepared(&header, &body, &recipients));
        let mut from_file = prepared("", b"", &recipients);
        from_file.body = Body::File {
            file: &file,
            len: whole.len() as u64,
        };
        assert!(text(&from_file) == in_memory);
        assert!(in_memory.contains("Bcc: b@x.org\r\n\r\nab\r\n"));
        assert_eq!(
            Upload::of(&from_file).unwrap().len(),
            in_memory.len() as u64
        );

        // A file that became shorter than its length fails the upload: never one cut short.
        file.set_len(whole.len() as u64 - 10).unwrap();
        let upload = Upload::of(&from_file).unwrap();
        let err = upload.reader().read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// Over an API's limit, a message is refused by its length alone: its body is not
    /// read (here a file far shorter than it claims, which a read would find out).
    #[test]
    fn a_message_over_the_limit_is_refused_before_it_is_read() {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"To: a@x.org\r\n\r\nbody\r\n").unwrap();
        let mut message = prepared("", b"", &["a@x.org"]);
        for limit in [gmail::LIMIT, graph::LIMIT] {
            message.body = Body::File {
                file: &file,
                len: limit as u64 + 1,
            };
            let upload = Upload::of(&message).unwrap();
            let refused = match limit == gmail::LIMIT {
                true => gmail::send_call("/users/me", upload).err(),
                false => graph::send_call("/me", upload).err(),
            };
            let refused = refused.expect("sent a message over the limit");
            assert_eq!(refused.kind(), Kind::Unavailable, "{}", refused.summary());
            assert!(
                refused.summary().contains("too large"),
                "{}",
                refused.summary()
            );
        }
    }

    #[test]
    fn a_to_naming_someone_outside_the_envelope_is_not_delivered_to() {
        let message = prepared(
            "To: root@x.org\r\nCc: a@x.org\r\n\r\n",
            b"b\r\n",
            &["admin@x.org", "a@x.org"],
        );
        assert_eq!(
            text(&message),
            "X-Original-To: root@x.org\r\nCc: a@x.org\r\nBcc: admin@x.org\r\n\r\nb\r\n"
        );
    }

    #[test]
    fn a_long_bcc_is_folded_and_an_old_one_dropped() {
        let many: Vec<String> = (0..12).map(|n| format!("someone{n}@example.org")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let copy = text(&prepared(
            "Bcc: old@x.org\r\nSubject: s\r\n\r\n",
            b"",
            &refs,
        ));
        assert!(!copy.contains("old@x.org"), "{copy}");
        assert!(copy.lines().all(|l| l.len() <= 78), "{copy}");
        let bcc = copy.split("Bcc:").nth(1).unwrap();
        let listed =
            crate::message::address::parse_list(bcc.split("\r\n\r\n").next().unwrap().as_bytes());
        assert_eq!(listed.iter().flat_map(|e| e.mailboxes()).count(), 12);
    }

    #[test]
    fn a_refusal_of_every_message_waits_and_one_of_this_message_bounces() {
        let answer = |status: u16, body: &str| Answer {
            status,
            json: serde_json::from_str(body).unwrap(),
        };
        let quota = r#"{"error": {"code": 403, "errors": [{"reason": "userRateLimitExceeded"}], "message": "User-rate limit exceeded"}}"#;
        let scope = r#"{"error": {"code": 403, "errors": [{"reason": "insufficientPermissions"}], "message": "Request had insufficient authentication scopes.", "status": "PERMISSION_DENIED"}}"#;
        let to = r#"{"error": {"code": 400, "message": "Invalid To header", "status": "INVALID_ARGUMENT"}}"#;
        assert_eq!(refusal_kind(&answer(403, quota)), Kind::Temporary);
        assert_eq!(refusal_kind(&answer(403, scope)), Kind::Config);
        assert_eq!(refusal_kind(&answer(404, "{}")), Kind::Config);
        assert_eq!(refusal_kind(&answer(400, to)), Kind::Unavailable);
        assert_eq!(refusal_kind(&answer(413, "{}")), Kind::Unavailable);
        assert_eq!(
            api_words(&answer(400, to)).as_deref(),
            Some("INVALID_ARGUMENT: Invalid To header")
        );
        let graph = r#"{"error": {"code": "ErrorInvalidRecipients", "message": "At least one recipient is not valid.\nTry again."}}"#;
        assert_eq!(
            api_words(&answer(400, graph)).as_deref(),
            Some("ErrorInvalidRecipients: At least one recipient is not valid. Try again.")
        );
    }

    #[test]
    fn retry_after_in_seconds_or_a_date() {
        assert_eq!(retry_after(" 120"), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2026 07:28:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after(""), None);
    }
}
