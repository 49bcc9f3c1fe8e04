//! `~/dead.letter`: where a message goes when it could not be sent, so it is never lost.
//!
//! Each entry is mbox: a `From SENDER DATE` line, then one `X-Envelope-To:` line naming
//! the envelope recipients (they are not always in the headers: `sendmail rcpt` without
//! `-t`, Bcc), then the message with `From ` lines quoted, then a blank line. An append
//! that fails part way (a full disk) is cut back off, so the file never ends in half an
//! entry that would swallow the next one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::error::{Error, Kind, Result};

/// Appends `message` to `$HOME/dead.letter` as one mbox entry and returns the path;
/// `None` when there is nothing to keep (an empty message, as `echo | sendmail` sends).
pub fn save(message: &[u8], sender: &str, recipients: &[String]) -> Result<Option<PathBuf>> {
    if message.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let home = std::env::var_os("HOME").ok_or_else(|| {
        Error::new(
            Kind::CannotCreate,
            "cannot save the message",
            "HOME is not set",
        )
    })?;
    let path = PathBuf::from(home).join("dead.letter");
    let what = || format!("cannot save the message to {}", path.display());
    // Owner only: it holds whole messages (cron output, logs), as the queue does.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::new(Kind::CannotCreate, what(), e))?;
    let before = file
        .metadata()
        .map_err(|e| Error::new(Kind::Io, what(), e))?
        .len();
    let written = file
        .write_all(&mbox_entry(message, sender, recipients))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        // Back to the last whole entry; if even that fails, say so.
        let rolled_back = file.set_len(before).and_then(|()| file.sync_all());
        let why = match rolled_back {
            Ok(()) => e.to_string(),
            Err(cut) => format!("{e} (and the partial entry stays at its end: {cut})"),
        };
        return Err(Error::new(Kind::Io, what(), why));
    }
    Ok(Some(path))
}

/// An mbox entry: a "From " separator, the envelope recipients, LF line ends, body lines
/// starting with "From " quoted as ">From ", and a blank line after.
fn mbox_entry(message: &[u8], sender: &str, recipients: &[String]) -> Vec<u8> {
    // The separator is one word then the date: a sender with a space would not parse.
    let sender = match sender {
        "" => "MAILER-DAEMON",
        s if s.contains(char::is_whitespace) => "MAILER-DAEMON",
        s => s,
    };
    let mut out = format!(
        "From {sender} {}\n",
        crate::sys::clock::asctime(crate::sys::clock::now())
    )
    .into_bytes();
    if !recipients.is_empty() {
        let list: Vec<String> = recipients
            .iter()
            .map(|r| format!("<{}>", r.replace(['\r', '\n'], "")))
            .collect();
        out.extend_from_slice(format!("X-Envelope-To: {}\n", list.join(", ")).as_bytes());
    }
    for line in message.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_entry_quotes_from_lines_and_uses_lf() {
        let entry =
            String::from_utf8(mbox_entry(b"Subject: s\r\n\r\nFrom here\r\nbody", "", &[])).unwrap();
        let (separator, rest) = entry.split_once('\n').unwrap();
        assert!(
            separator.starts_with("From MAILER-DAEMON ") && separator.len() > 40,
            "{separator}"
        );
        assert_eq!(rest, "Subject: s\n\n>From here\nbody\n\n");
    }

    #[test]
    fn mbox_entry_keeps_the_envelope() {
        let entry = String::from_utf8(mbox_entry(
            b"Subject: s\n\nbody\n",
            "cron@x.org",
            &["a@x.org".into(), "b@y.org".into()],
        ))
        .unwrap();
        let mut lines = entry.lines();
        assert!(lines.next().unwrap().starts_with("From cron@x.org "));
        assert_eq!(lines.next().unwrap(), "X-Envelope-To: <a@x.org>, <b@y.org>");
        assert_eq!(lines.next().unwrap(), "Subject: s");
    }
}
