//! `~/dead.letter`: where a message goes when it could not be sent, so it is never lost.
//!
//! Each entry is mbox: a `From SENDER DATE` line, then one `X-Envelope-To:` line naming
//! the envelope recipients (they are not always in the headers: `sendmail rcpt` without
//! `-t`, Bcc), then the message with `From ` lines quoted, then a blank line. An append
//! that fails part way (a full disk) is cut back off, so the file never ends in half an
//! entry that would swallow the next one.

use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::error::{Error, Kind, Result};
use crate::message::input::Raw;

/// Appends `message` to `$HOME/dead.letter` as one mbox entry and returns the path;
/// `None` when there is nothing to keep (an empty message, as `echo | sendmail` sends).
/// A message spilled to a file is copied from it a chunk at a time, never held whole.
pub fn save<'m>(
    message: impl Into<Raw<'m>>,
    sender: &str,
    recipients: &[String],
) -> Result<Option<PathBuf>> {
    let message = message.into();
    if message.spill().is_none() && message.memory().iter().all(u8::is_ascii_whitespace) {
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
    let written =
        write_entry(&mut file, message, sender, recipients).and_then(|()| file.sync_all());
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

/// Writes the mbox entry of `message` to `out`, buffered, a chunk of the message at a time.
fn write_entry(
    out: &mut impl Write,
    message: Raw,
    sender: &str,
    recipients: &[String],
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(crate::message::envelope::CHUNK, out);
    out.write_all(&separator(sender, recipients))?;
    let mut lines = MboxLines {
        out: &mut out,
        start: Vec::with_capacity(5),
        deciding: true,
        open: false,
        cr: false,
    };
    message.each_chunk(&mut |chunk| lines.feed(chunk))?;
    lines.finish()?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The "From " separator and the envelope recipients.
fn separator(sender: &str, recipients: &[String]) -> Vec<u8> {
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
    out
}

/// The message's lines as mbox holds them, as they stream past: LF line ends (one CR
/// before an LF dropped), a line starting with "From " quoted as ">From ", a last line
/// without its line end given one.
struct MboxLines<'w, W: Write> {
    out: &'w mut W,
    /// The start of the line while it may still be "From ".
    start: Vec<u8>,
    deciding: bool,
    /// Something of the current line was seen.
    open: bool,
    /// A CR was the last byte seen and is not written yet: it goes if an LF follows.
    cr: bool,
}

impl<W: Write> MboxLines<'_, W> {
    fn feed(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        while !chunk.is_empty() {
            let at = memchr::memchr(b'\n', chunk);
            let (content, rest) = chunk.split_at(at.unwrap_or(chunk.len()));
            self.content(content)?;
            match at {
                Some(_) => {
                    self.end_line()?;
                    chunk = &rest[1..];
                }
                None => break,
            }
        }
        Ok(())
    }

    fn content(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.open = true;
        if self.deciding {
            let take = (5 - self.start.len()).min(bytes.len());
            self.start.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.start.len() < 5 && b"From ".starts_with(&self.start) {
                return Ok(());
            }
            self.decide()?;
        }
        self.raw(bytes)
    }

    fn decide(&mut self) -> io::Result<()> {
        self.deciding = false;
        if self.start == b"From " {
            self.out.write_all(b">")?;
        }
        let start = std::mem::take(&mut self.start);
        self.raw(&start)?;
        self.start = start;
        self.start.clear();
        Ok(())
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some((&last, _)) = bytes.split_last() else {
            return Ok(());
        };
        if std::mem::take(&mut self.cr) {
            self.out.write_all(b"\r")?;
        }
        match last {
            b'\r' => {
                self.cr = true;
                self.out.write_all(&bytes[..bytes.len() - 1])
            }
            _ => self.out.write_all(bytes),
        }
    }

    fn end_line(&mut self) -> io::Result<()> {
        if self.deciding {
            self.decide()?;
        }
        self.cr = false;
        self.open = false;
        self.deciding = true;
        self.out.write_all(b"\n")
    }

    fn finish(&mut self) -> io::Result<()> {
        match self.open {
            true => self.end_line(),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbox_entry(message: &[u8], sender: &str, recipients: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        write_entry(&mut out, Raw::from(message), sender, recipients).unwrap();
        out
    }

    /// What the entry held before it was written as the message streams past.
    fn old_lines(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
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

    /// Cut into chunks anywhere, a message makes the same lines.
    #[test]
    fn the_lines_are_the_same_whatever_the_chunks() {
        let message: &[u8] = b"From a\r\nFrom\nFro\r\r\n From x\nFromage\r\nx\r\rFrom y\r";
        for size in 1..message.len() + 1 {
            let mut out = Vec::new();
            let mut lines = MboxLines {
                out: &mut out,
                start: Vec::new(),
                deciding: true,
                open: false,
                cr: false,
            };
            for chunk in message.chunks(size) {
                lines.feed(chunk).unwrap();
            }
            lines.finish().unwrap();
            out.push(b'\n');
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&old_lines(message)),
                "{size}"
            );
        }
    }

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
