//! What client and service say on the socket, and what a drop file holds: one JSON line
//! (a [`Request`], at most [`MAX_REQUEST_LINE`] bytes), for a submission followed by
//! exactly `size` bytes of message; the answer is one JSON line (a [`Response`]). A
//! submission cut short is an error, never half a message.

use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};

use crate::delivery::log::Status;
use crate::error::{Error, Kind, Result};
use crate::message::input::Input;
use crate::message::input::NoRoom;

/// The longest request line: an envelope with thousands of recipients fits.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// The longest response line a client reads (a listing of a long queue fits).
pub const MAX_RESPONSE_LINE: usize = 64 * 1024 * 1024;

/// A message handed to the service: the sendmail options that shape intake. What the
/// caller is (uid, user) is never in here: the service learns it from the kernel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Submission {
    /// `-f`, as given.
    pub sender: Option<String>,
    pub recipients: Vec<String>,
    /// `-t`.
    pub extract_recipients: bool,
    /// `-F`.
    pub full_name: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// The message's length in bytes: exactly this many follow the request line.
    pub size: u64,
}

/// One request; a connection carries one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Submit(Submission),
    /// `mailq`, `queue list`.
    List,
    /// `queue show ID`.
    Show {
        id: String,
    },
    /// `queue remove ID...` or `--all`.
    Remove {
        ids: Vec<String>,
        all: bool,
    },
    /// `sendmail -q` (all) or `queue flush` (those due); `queue retry` names ids.
    Flush {
        all: bool,
        ids: Vec<String>,
    },
    /// `oauth-sendmail log`.
    Log {
        /// Seconds back from now.
        since: Option<u64>,
        status: Option<Status>,
        /// table, csv or json.
        format: String,
    },
    /// `oauth-sendmail status`.
    Status {
        check: bool,
        /// `--json`: the state as one JSON object (an older client sends none).
        #[serde(default)]
        json: bool,
    },
}

/// A failure as it travels: the client rebuilds the same error, so it prints the same
/// line and exits with the same status (error.rs decides which).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: String,
    /// What happened and why, as one line.
    pub summary: String,
    pub hints: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The message is in the spool, fsync'd.
    Accepted {
        id: String,
        notice: Option<String>,
    },
    /// A command's output, as the command prints it, and how it ended.
    Output {
        stdout: String,
        stderr: String,
        failure: Option<Failure>,
        /// `stdout` exactly, in base64, when it is not UTF-8 (`queue show` of a Latin-1
        /// message): `stdout` then holds it with replacement characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdout_bytes: Option<String>,
    },
    Failed(Failure),
    /// The service cannot take the message now (the submitter's connections, or the
    /// memory for messages, are all in use): the client leaves it in the drop directory,
    /// which the service empties on its own.
    Busy(Failure),
}

const KINDS: [(Kind, &str); 14] = [
    (Kind::Usage, "usage"),
    (Kind::BadInput, "bad_input"),
    (Kind::RecipientRefused, "recipient_refused"),
    (Kind::Unavailable, "unavailable"),
    (Kind::Internal, "internal"),
    (Kind::CannotCreate, "cannot_create"),
    (Kind::Io, "io"),
    (Kind::Temporary, "temporary"),
    (Kind::Protocol, "protocol"),
    (Kind::AuthRefused, "auth_refused"),
    (Kind::Config, "config"),
    (Kind::Certificate, "certificate"),
    (Kind::CheckWarning, "check_warning"),
    (Kind::CheckCritical, "check_critical"),
];

/// A command's output as [`Response::Output`] carries it: text, and the bytes when they
/// are not text.
pub fn output_of(bytes: Vec<u8>) -> (String, Option<String>) {
    use base64::Engine;
    match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let bytes = e.into_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let exact = base64::engine::general_purpose::STANDARD.encode(&bytes);
            (text, Some(exact))
        }
    }
}

/// What [`output_of`] made, back as the bytes the command wrote.
pub fn output_bytes(text: &str, exact: Option<&str>) -> Vec<u8> {
    use base64::Engine;
    exact
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .unwrap_or_else(|| text.as_bytes().to_vec())
}

impl Failure {
    pub fn from_error(err: &Error) -> Failure {
        let kind = KINDS
            .iter()
            .find(|(k, _)| *k == err.kind())
            .map_or("internal", |(_, name)| name);
        let text = err.to_string();
        let mut lines = text.lines();
        let summary = lines.next().unwrap_or_default().to_string();
        Failure {
            kind: kind.to_string(),
            summary,
            hints: lines.map(|l| l.trim_start().to_string()).collect(),
        }
    }

    /// The error again; an unknown kind (a newer service) is taken as temporary, so the
    /// caller tries again rather than losing anything.
    pub fn to_error(&self) -> Error {
        let kind = KINDS
            .iter()
            .find(|(_, name)| *name == self.kind)
            .map_or(Kind::Temporary, |(k, _)| *k);
        // Display is "what: why": split anywhere, it prints the same.
        let (what, why) = self
            .summary
            .split_once(": ")
            .unwrap_or((self.summary.as_str(), "the service gave no reason"));
        let mut err = Error::new(kind, what, why);
        for hint in &self.hints {
            err = err.hint(hint.clone());
        }
        err
    }
}

fn bad(why: impl std::fmt::Display) -> Error {
    Error::new(Kind::Protocol, "bad request", why)
}

/// Reads one line of at most `limit` bytes, its "\n" removed; `None` at a clean end of
/// input before any byte.
fn read_line(input: &mut impl BufRead, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    input
        .by_ref()
        .take(limit as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        let why = match line.len() >= limit {
            true => format!("a line longer than {limit} bytes"),
            false => "the line was cut short".to_string(),
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
    }
    Ok(Some(line))
}

/// Reads a request line and, for a submission, the message (at most `max_message`
/// bytes), as the service and the drop directory's pickup read them.
#[cfg(test)]
pub fn read_request(input: &mut impl BufRead, max_message: u64) -> Result<(Request, Vec<u8>)> {
    let request = read_head(input)?;
    let message = match &request {
        Request::Submit(submission) => {
            let mut new_file = || tempfile::tempfile();
            let read = read_body(
                input,
                submission,
                max_message,
                &mut new_file,
                NoRoom::InMemory,
            )?;
            let whole = read.raw().whole().map_err(bad)?.into_owned();
            whole
        }
        _ => Vec::new(),
    };
    Ok((request, message))
}

/// The request line alone (the service gives the message its own deadline).
pub fn read_head(input: &mut impl BufRead) -> Result<Request> {
    let line = read_line(input, MAX_REQUEST_LINE)
        .map_err(bad)?
        .ok_or_else(|| bad("the connection closed before a request"))?;
    serde_json::from_slice(&line).map_err(bad)
}

/// The `size` bytes of a submission's message; fewer is an error. Read as sendmail reads
/// stdin ([`crate::message::input::read`] with `-i`: the client's lines are CRLF already
/// and come out the same), the body spilled to a file from `new_file` past the
/// threshold, so that a large submission is not held in memory.
pub fn read_body(
    input: &mut impl BufRead,
    submission: &Submission,
    max_message: u64,
    new_file: &mut dyn FnMut() -> io::Result<std::fs::File>,
    no_room: NoRoom,
) -> Result<Input> {
    check_size(submission, max_message)?;
    let mut body = input.take(submission.size);
    let message =
        crate::message::input::read_or(&mut body, true, new_file, no_room).map_err(|e| match e
            .kind()
        {
            io::ErrorKind::StorageFull => Error::new(
                Kind::Temporary,
                "the mail service has no room for it now",
                e,
            ),
            _ => bad(format!("reading the message: {e}")),
        })?;
    if body.limit() > 0 {
        return Err(cut_short(submission.size - body.limit(), submission.size));
    }
    Ok(message)
}

fn check_size(submission: &Submission, max_message: u64) -> Result<()> {
    match submission.size > max_message {
        true => Err(Error::new(
            Kind::BadInput,
            "message refused",
            format!(
                "it is {} bytes, over the service's limit of {max_message}",
                submission.size
            ),
        )),
        false => Ok(()),
    }
}

fn cut_short(got: u64, size: u64) -> Error {
    bad(format!("the message was cut short: {got} of {size} bytes"))
}

/// Writes a request (and the message of a submission) as [`read_request`] reads it.
pub fn write_request(out: &mut impl Write, request: &Request, message: &[u8]) -> io::Result<()> {
    let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.write_all(message)?;
    out.flush()
}

pub fn write_response(out: &mut impl Write, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

pub fn read_response(input: &mut impl BufRead) -> Result<Response> {
    let broken = |why: String| {
        Error::new(Kind::Temporary, "no answer from the mail service", why)
            .hint("see `journalctl -u oauth-sendmail`")
    };
    let line = read_line(input, MAX_RESPONSE_LINE)
        .map_err(|e| broken(e.to_string()))?
        .ok_or_else(|| broken("it closed the connection".into()))?;
    serde_json::from_slice(&line).map_err(|e| broken(format!("a bad answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command's output comes back byte for byte, text or not; text travels as it
    /// always did (a response without the new field still reads).
    #[test]
    fn output_that_is_not_text_comes_back_exact() {
        for bytes in [&b"plain\n"[..], b"caf\xe9 \xff\x00\n", b"caf\xc3\xa9\n"] {
            let (text, exact) = output_of(bytes.to_vec());
            assert_eq!(exact.is_some(), std::str::from_utf8(bytes).is_err());
            assert_eq!(output_bytes(&text, exact.as_deref()), bytes);
        }
        let text = Response::Output {
            stdout: "ok\n".into(),
            stderr: String::new(),
            failure: None,
            stdout_bytes: None,
        };
        let line = serde_json::to_string(&text).unwrap();
        assert!(!line.contains("stdout_bytes"), "{line}");
        let old = r#"{"result":"output","stdout":"ok\n","stderr":"","failure":null}"#;
        assert_eq!(serde_json::from_str::<Response>(old).unwrap(), text);
    }

    fn submission(size: u64) -> Request {
        Request::Submit(Submission {
            sender: Some("root".into()),
            recipients: vec!["a@example.com".into()],
            size,
            ..Submission::default()
        })
    }

    #[test]
    fn a_submission_round_trips_with_its_message() {
        let mut wire = Vec::new();
        write_request(&mut wire, &submission(7), b"hello\r\n").unwrap();
        let (request, message) = read_request(&mut &wire[..], 100).unwrap();
        assert_eq!(request, submission(7));
        assert_eq!(message, b"hello\r\n");
    }

    #[test]
    fn control_requests_round_trip() {
        for request in [
            Request::List,
            Request::Remove {
                ids: vec!["A".into()],
                all: false,
            },
            Request::Log {
                since: Some(60),
                status: Some(Status::Sent),
                format: "json".into(),
            },
            Request::Status {
                check: true,
                json: false,
            },
        ] {
            let mut wire = Vec::new();
            write_request(&mut wire, &request, b"").unwrap();
            assert_eq!(read_request(&mut &wire[..], 0).unwrap().0, request);
        }
    }

    #[test]
    fn a_message_cut_short_is_refused_whole() {
        let mut wire = Vec::new();
        write_request(&mut wire, &submission(10), b"only5").unwrap();
        let err = read_request(&mut &wire[..], 100).unwrap_err();
        assert_eq!(err.kind(), Kind::Protocol);
        assert!(err.to_string().contains("cut short: 5 of 10"), "{err}");
    }

    #[test]
    fn garbage_and_truncated_lines_are_errors_not_panics() {
        let inputs: [&[u8]; 8] = [
            b"",
            b"\n",
            b"{\"request\":\"submit\"",
            b"not json\n",
            b"{\"request\":\"submit\",\"size\":-1}\n",
            b"{\"request\":\"nonsense\"}\n",
            b"{\"request\":\"submit\",\"recipients\":[],\"size\":0,\"uid\":0}\n",
            b"\xff\xfe\x00\n",
        ];
        for input in inputs {
            let err = read_request(&mut &input[..], 100).unwrap_err();
            assert_eq!(err.kind(), Kind::Protocol, "{input:?}: {err}");
        }
        let long = vec![b'x'; MAX_REQUEST_LINE + 10];
        let err = read_request(&mut &long[..], 100).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }

    #[test]
    fn a_message_over_the_limit_is_refused_before_it_is_read() {
        let mut wire = Vec::new();
        write_request(&mut wire, &submission(1000), b"").unwrap();
        let err = read_request(&mut &wire[..], 999).unwrap_err();
        assert_eq!(err.kind(), Kind::BadInput);
    }

    #[test]
    fn an_error_travels_with_its_kind_and_hints() {
        let err = Error::new(Kind::AuthRefused, "sender refused", "not yours")
            .hint("ask root")
            .hint("see the README");
        let back = Failure::from_error(&err).to_error();
        assert_eq!(back.exit_code(), 77);
        assert_eq!(back.to_string(), err.to_string());
        let unknown = Failure {
            kind: "from-the-future".into(),
            summary: "x".into(),
            hints: vec![],
        };
        assert_eq!(unknown.to_error().kind(), Kind::Temporary);
    }

    #[test]
    fn responses_round_trip_and_garbage_is_temporary() {
        let mut wire = Vec::new();
        let response = Response::Accepted {
            id: "ABC".into(),
            notice: None,
        };
        write_response(&mut wire, &response).unwrap();
        assert_eq!(read_response(&mut &wire[..]).unwrap(), response);
        for garbage in [&b""[..], b"{\n", b"{\"result\":\"accepted\"}"] {
            let err = read_response(&mut &garbage[..]).unwrap_err();
            assert_eq!(err.kind(), Kind::Temporary);
        }
    }
}
