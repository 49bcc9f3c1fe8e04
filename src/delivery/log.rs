//! The delivery log: one JSON line per delivery attempt, answering "did my mail go out?".
//! Appended with O_APPEND (one write a record, so concurrent senders never interleave),
//! rotated to `.1` past a size cap, read back by `oauth-sendmail log`. Never a secret.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind, Result};

/// One attempt at delivering one message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC.
    pub time: String,
    /// Unix seconds (for filtering).
    pub unix: u64,
    pub queue_id: Option<String>,
    pub message_id: Option<String>,
    pub account: String,
    pub sender: String,
    pub recipients: Vec<Outcome>,
    pub size: u64,
    pub duration_ms: u64,
    pub result: Status,
    /// What happened to a message that never reached a server (a quarantined entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Record {
    /// A record of an attempt that began at `started`, its result from its recipients'
    /// (see [`Status::overall`]).
    pub fn new(
        queue_id: Option<String>,
        message_id: Option<String>,
        account: &str,
        sender: &str,
        recipients: Vec<Outcome>,
        size: u64,
        started: std::time::Instant,
    ) -> Record {
        let now = crate::sys::clock::now();
        Record {
            time: crate::sys::clock::rfc3339(now),
            unix: now,
            queue_id,
            message_id,
            account: account.to_string(),
            sender: sender.to_string(),
            result: Status::overall(&recipients),
            recipients,
            size,
            duration_ms: started.elapsed().as_millis() as u64,
            note: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub address: String,
    pub status: Status,
    /// The server's words about this recipient: its reply to the final dot when it took
    /// the message, else its reply to RCPT (or why the attempt failed).
    pub reply: Option<String>,
}

/// What became of a message, or of one recipient. [`Status::ALL`] lists them with what
/// each means, for `log --status` and its `--help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Sent,
    Queued,
    Deferred,
    Bounced,
    Failed,
    Partial,
    Quarantined,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Sent,
        Status::Queued,
        Status::Deferred,
        Status::Bounced,
        Status::Failed,
        Status::Partial,
        Status::Quarantined,
    ];

    /// What the status means, to a reader of the log (and of `log --help`).
    pub fn meaning(self) -> &'static str {
        match self {
            Status::Sent => "The server accepted it",
            Status::Queued => "It could not go now and waits in the queue",
            Status::Deferred => "A queued message was tried again and must wait more",
            Status::Bounced => "Given up: the sender was (or could not be) told",
            Status::Failed => "Refused for good and not queued; the caller got an error",
            Status::Partial => {
                "A message's result only: some recipients got it and some did not (each recipient's own status says which)"
            }
            Status::Quarantined => "A queue entry that could not be read, moved aside to `corrupt/`",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Queued => "queued",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
            Status::Failed => "failed",
            Status::Partial => "partial",
            Status::Quarantined => "quarantined",
        }
    }

    /// The message's status from its recipients': theirs when they agree, `partial` when
    /// some were sent and others not, else the worst one.
    pub fn overall(recipients: &[Outcome]) -> Status {
        let sent = recipients.iter().any(|r| r.status == Status::Sent);
        if sent && recipients.iter().any(|r| r.status != Status::Sent) {
            return Status::Partial;
        }
        let rank = |s: Status| match s {
            Status::Sent => 0,
            Status::Queued => 1,
            Status::Deferred => 2,
            Status::Partial => 3,
            Status::Bounced => 4,
            Status::Failed => 5,
            Status::Quarantined => 6,
        };
        recipients
            .iter()
            .map(|r| r.status)
            .max_by_key(|s| rank(*s))
            .unwrap_or(Status::Failed)
    }
}

/// Past this size the log moves to `<name>.1` (replacing the older one).
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

pub struct DeliveryLog {
    path: PathBuf,
    max_bytes: u64,
}

impl DeliveryLog {
    pub fn new(path: &Path) -> DeliveryLog {
        DeliveryLog {
            path: path.to_path_buf(),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// Appends a record. A log that cannot be written must not stop mail, so the caller
    /// gets the error to print as a warning, not to fail on.
    pub fn append(&self, record: &Record) -> Result<()> {
        let failed = |e: io::Error| {
            Error::new(
                Kind::Io,
                format!("cannot write the delivery log {}", self.path.display()),
                e,
            )
        };
        // Directories made for the log are private like the queue (the log names who mails
        // whom); one that exists is left as it is: it may be /var/log.
        let missing = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.is_dir());
        if let Some(dir) = missing {
            crate::sys::files::ensure_private_dir(dir).map_err(|e| {
                e.within(format!(
                    "cannot write the delivery log {}",
                    self.path.display()
                ))
            })?;
        }
        if fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.max_bytes) {
            fs::rename(&self.path, rotated(&self.path)).map_err(failed)?;
        }
        let mut line = serde_json::to_vec(record).expect("a record always serializes");
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(failed)?;
        file.write_all(&line).map_err(failed)
    }

    /// Appends a record, or says on stderr why it could not: a log that cannot be written
    /// must not stop mail.
    pub fn append_or_warn(&self, record: &Record) {
        if let Err(err) = self.append(record) {
            eprintln!("oauth-sendmail: warning: {}", err.summary());
        }
    }

    /// Every record, oldest first (the rotated file, then the current one); lines that
    /// do not parse (a torn write after a crash) are skipped.
    pub fn read(&self) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        for path in [rotated(&self.path), self.path.clone()] {
            let text = match fs::read(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::new(
                        Kind::Io,
                        format!("cannot read the delivery log {}", path.display()),
                        e,
                    ))
                }
            };
            records.extend(
                text.split(|&b| b == b'\n')
                    .filter_map(|line| serde_json::from_slice::<Record>(line).ok()),
            );
        }
        Ok(records)
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(unix: u64, status: Status) -> Record {
        Record {
            time: crate::sys::clock::rfc3339(unix),
            unix,
            queue_id: Some("ABC".into()),
            message_id: Some("<m@x>".into()),
            account: "gmail".into(),
            sender: "me@x.org".into(),
            recipients: vec![Outcome {
                address: "a@x.org".into(),
                status,
                reply: Some("250 2.0.0 OK, \"queued\"".into()),
            }],
            size: 10,
            duration_ms: 5,
            result: status,
            note: None,
        }
    }

    #[test]
    fn append_read_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::new(&dir.path().join("state/delivery.log"));
        log.max_bytes = 300;
        for i in 0..6 {
            log.append(&record(1000 + i, Status::Sent)).unwrap();
        }
        assert!(dir.path().join("state/delivery.log.1").exists());
        let records = log.read().unwrap();
        assert!(records.len() >= 2 && records.len() < 6, "{}", records.len());
        assert_eq!(records.last().unwrap().unix, 1005);
        assert!(records.windows(2).all(|w| w[0].unix < w[1].unix));
    }

    #[test]
    fn new_parent_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = DeliveryLog::new(&dir.path().join("var/log/mail/delivery.log"));
        log.append(&record(1, Status::Sent)).unwrap();
        let mode = |sub: &str| {
            let metadata = fs::metadata(dir.path().join(sub)).unwrap();
            metadata.permissions().mode() & 0o777
        };
        for sub in ["var", "var/log", "var/log/mail"] {
            assert_eq!(mode(sub), 0o700, "{sub}");
        }
        // An existing directory (/var/log) is not ours to change.
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
        DeliveryLog::new(&shared.join("delivery.log"))
            .append(&record(1, Status::Sent))
            .unwrap();
        assert_eq!(mode("shared"), 0o755);
    }

    #[test]
    fn a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = DeliveryLog::new(&dir.path().join("delivery.log"));
        log.append(&record(1, Status::Sent)).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("delivery.log"))
            .unwrap();
        file.write_all(b"{\"time\":\"19").unwrap();
        assert_eq!(log.read().unwrap().len(), 1);
    }

    #[test]
    fn overall_status_is_the_worst() {
        let outcome = |status| Outcome {
            address: "a".into(),
            status,
            reply: None,
        };
        assert_eq!(
            Status::overall(&[outcome(Status::Deferred), outcome(Status::Queued)]),
            Status::Deferred
        );
        // A delivered recipient's row never says the message failed.
        assert_eq!(
            Status::overall(&[outcome(Status::Sent), outcome(Status::Failed)]),
            Status::Partial
        );
        assert_eq!(
            Status::overall(&[outcome(Status::Bounced), outcome(Status::Failed)]),
            Status::Failed
        );
        assert_eq!(
            Status::overall(&[outcome(Status::Sent), outcome(Status::Sent)]),
            Status::Sent
        );
    }
}
