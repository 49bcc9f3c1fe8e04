//! `~/dead.letter`: where a message goes when it could not be sent, so it is never lost.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::error::{Error, Kind, Result};

/// Appends `message` to `$HOME/dead.letter` as one mbox entry and returns the path.
pub fn save(message: &[u8]) -> Result<PathBuf> {
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
    file.write_all(&mbox_entry(message))
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::new(Kind::Io, what(), e))?;
    Ok(path)
}

/// An mbox entry: a "From " separator, LF line ends, body lines starting with "From "
/// quoted as ">From ", and a blank line after.
fn mbox_entry(message: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "From MAILER-DAEMON {}\n",
        crate::clock::asctime(crate::clock::now())
    )
    .into_bytes();
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
        let entry = String::from_utf8(mbox_entry(b"Subject: s\r\n\r\nFrom here\r\nbody")).unwrap();
        let (separator, rest) = entry.split_once('\n').unwrap();
        assert!(
            separator.starts_with("From MAILER-DAEMON ") && separator.len() > 40,
            "{separator}"
        );
        assert_eq!(rest, "Subject: s\n\n>From here\nbody\n\n");
    }
}
