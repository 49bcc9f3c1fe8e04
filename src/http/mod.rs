//! The HTTPS transports, for where SMTP cannot go: Gmail's API (`gmail`) and Microsoft
//! Graph (`graph`). One ureq Agent per session, so a flush of the queue reuses one
//! keep-alive connection; TLS verified against the system's anchors and the account's
//! `ca_file`; the answers sorted as SMTP's are (408, 429, 5xx: later, and not before
//! `Retry-After`; 401: the token; other 4xx: refused, in the API's words); with `-v` the
//! exchange on stderr (method, path, status, headers), the token never shown.

pub mod gmail;
pub mod graph;

use std::time::Duration;

use serde_json::Value;

use crate::config::{Account, Transport};
use crate::error::{Error, Kind, Result};
use crate::message::envelope::Prepared;
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
struct Call {
    method: &'static str,
    /// From the API's base address on, query included.
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
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
        let copy = upload_copy(message)?;
        let call = match self.transport {
            Transport::Graph => graph::send_call(&self.mailbox, copy)?,
            _ => gmail::send_call(&self.mailbox, copy)?,
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
            body: Vec::new(),
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
                eprintln!("{arrow} {text}");
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
                note("->", &format!("Content-Length: {}", call.body.len()));
                let allowance =
                    self.timeout + Duration::from_secs(call.body.len() as u64 / MIN_RATE);
                self.agent
                    .post(&url)
                    .config()
                    .timeout_send_body(Some(allowance))
                    .build()
                    .header("Authorization", &bearer)
                    .header("Accept", "application/json")
                    .header("Content-Type", content_type)
                    .send(&call.body[..])
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
fn upload_copy(message: &Prepared) -> Result<Vec<u8>> {
    let whole = message
        .to_vec()
        .map_err(crate::message::envelope::unreadable)?;
    let end = whole
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(whole.len(), |at| at + 2);
    let envelope: Vec<String> = message
        .envelope
        .recipients
        .iter()
        .map(|r| r.to_ascii_lowercase())
        .collect();
    let mut head = Vec::with_capacity(end + 256);
    let mut named: Vec<String> = Vec::new();
    for field in fields(&whole[..end]) {
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
    head.extend_from_slice(&whole[end..]);
    Ok(head)
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
        String::from_utf8(upload_copy(message).unwrap()).unwrap()
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
