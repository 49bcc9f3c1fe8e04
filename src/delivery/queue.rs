//! The spool: messages waiting for delivery, each a pair of files written durably.
//!
//! `ID.msg` holds the message bytes and never changes; `ID.json` holds the envelope and
//! the delivery state and is replaced atomically. A message is in the queue exactly when
//! its `ID.json` exists: the `.msg` is made durable first, so a writer killed at any
//! point leaves either nothing or a `.msg` no flusher looks at (removed later as an
//! orphan). Locks are flock(2) on the `.msg` (never replaced, so every process locks the
//! same inode) and on `.flush.lock` for the one flusher at a time.
//!
//! An entry that cannot be read (bad JSON, no permission, its `.msg` gone) must not stop
//! the others: the flusher moves both files into `corrupt/` with a `ID.why` note, and
//! `mailq` lists it there until a person looks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind, Result};
use crate::message::envelope::{Body, Envelope, Prepared};
use crate::{sys::clock, sys::files};

/// One queued message's envelope and delivery state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub id: String,
    pub account: String,
    /// Empty for the null sender.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    /// Unix seconds.
    pub arrival: u64,
    pub attempts: u32,
    /// Unix seconds; not tried before then unless forced.
    pub next_try: u64,
    pub last_error: Option<String>,
    pub message_id: Option<String>,
    pub size: u64,
    pub eight_bit: bool,
    /// Set for a message queued before it could be prepared (no account could be chosen,
    /// the configuration did not load): its `.msg` is the input as read, and the flusher
    /// runs intake with these options once the setup is fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intake: Option<Intake>,
    /// Who handed the message to the machine-wide service (SO_PEERCRED or a drop
    /// file's owner); none in user mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Where bounces go instead of the envelope sender (a LAN device's notification
    /// address: the sender is the account's, which the device does not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
}

/// The sendmail options a held message was given, for intake at flush time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Intake {
    pub extract_recipients: bool,
    /// `-f`, as given.
    pub sender: Option<String>,
    /// `-F`.
    pub full_name: Option<String>,
    /// As given on the command line, before aliases and qualification.
    pub recipients: Vec<String>,
    /// `--account`, as given.
    pub account: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    pub state: RecipientState,
    /// The server's last words about this recipient.
    pub reply: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    Pending,
    Delivered,
    Bounced,
}

impl QueueEntry {
    /// A new entry for `message`, for the recipients still to be served.
    pub fn new(account: &str, message: &Prepared, recipients: &[String]) -> QueueEntry {
        let now = clock::now();
        QueueEntry {
            id: new_id(),
            account: account.to_string(),
            sender: message.envelope.sender.clone(),
            recipients: recipients
                .iter()
                .map(|address| Recipient {
                    address: address.clone(),
                    state: RecipientState::Pending,
                    reply: None,
                })
                .collect(),
            arrival: now,
            attempts: 0,
            next_try: now,
            last_error: None,
            message_id: message.message_id.clone(),
            size: message.len() as u64,
            eight_bit: message.eight_bit,
            intake: None,
            uid: None,
            user: None,
            notify: None,
        }
    }

    /// An entry for input that intake has not seen yet (see [`QueueEntry::intake`]).
    pub fn held(raw: &Prepared, intake: Intake, why: &str) -> QueueEntry {
        let mut entry = QueueEntry::new(intake.account.as_deref().unwrap_or(""), raw, &[]);
        entry.last_error = Some(why.to_string());
        entry.intake = Some(intake);
        entry
    }

    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| r.state == RecipientState::Pending)
    }

    /// The message to send now, `data` its queue file (or its bytes): only to the
    /// recipients still pending.
    pub fn prepared<'a>(&self, data: Body<'a>) -> Prepared<'a> {
        Prepared {
            envelope: Envelope {
                sender: self.sender.clone(),
                recipients: self.pending().map(|r| r.address.clone()).collect(),
            },
            head: Vec::new(),
            body: data,
            eight_bit: self.eight_bit,
            message_id: self.message_id.clone(),
        }
    }

    pub fn is_due(&self, at: u64) -> bool {
        self.next_try <= at
    }
}

/// A queue entry that cannot be read, in the queue still or already quarantined.
#[derive(Clone, Debug, PartialEq)]
pub struct Unreadable {
    pub id: String,
    pub why: String,
    /// Where its files are: the queue, or its `corrupt/` directory.
    pub dir: PathBuf,
    pub quarantined: bool,
}

/// Where the flusher moves entries it cannot read.
pub const CORRUPT: &str = "corrupt";

/// The spool directory.
pub struct Queue {
    dir: PathBuf,
}

/// Held while a message is in flight; released when dropped (the file closes).
pub struct MessageLock {
    _file: File,
}

/// Held by the one flusher.
pub struct FlushLock {
    _file: File,
}

impl Queue {
    /// Opens the spool, creating it (mode 0700: messages are private) when missing.
    pub fn open(dir: &Path) -> Result<Queue> {
        files::ensure_private_dir(dir)?;
        Ok(Queue {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens the spool if it exists; `None` means nothing was ever queued there.
    pub fn existing(dir: &Path) -> Option<Queue> {
        dir.is_dir().then(|| Queue {
            dir: dir.to_path_buf(),
        })
    }

    /// Writes a message and its entry durably; once this returns, the message is safe.
    pub fn add(&self, entry: &QueueEntry, message: &Prepared) -> Result<()> {
        // The message first: an entry never points at a missing or half-written message.
        // A body in a file (spilled from stdin) is copied in the kernel, never held.
        files::write_private_with(&self.dir.join(format!("{}.msg", entry.id)), |file| {
            file.write_all(&message.head)?;
            copy_body(message.body, file)
        })
        .and_then(|()| {
            files::write_private(
                &self.dir.join(format!("{}.json", entry.id)),
                &serialize(entry),
            )
        })
        .map_err(|e| e.within("cannot queue the message"))
    }

    /// Replaces an entry's state (after an attempt).
    pub fn save(&self, entry: &QueueEntry) -> Result<()> {
        files::write_private(
            &self.dir.join(format!("{}.json", entry.id)),
            &serialize(entry),
        )
        .map_err(|e| e.within(format!("cannot update queued message {}", entry.id)))
    }

    /// The ids of the queued messages, oldest first (ids sort by time).
    pub fn ids(&self) -> Result<Vec<String>> {
        let read = fs::read_dir(&self.dir).map_err(|e| self.io_error(e))?;
        let mut ids: Vec<String> = read
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| {
                name.strip_suffix(".json")
                    .filter(|id| valid_id(id))
                    .map(str::to_string)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The entry, or `None` when it has left the queue (delivered by another flusher).
    pub fn load(&self, id: &str) -> Result<Option<QueueEntry>> {
        if !valid_id(id) {
            return Ok(None);
        }
        match fs::read(self.dir.join(format!("{id}.json"))) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::new(Kind::Io, format!("queued message {id} is unreadable"), e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// The readable entries, and the unreadable ones: those still in the queue, then
    /// those quarantined in `corrupt/`.
    pub fn scan(&self) -> Result<(Vec<QueueEntry>, Vec<Unreadable>)> {
        let mut entries = Vec::new();
        let mut unreadable = Vec::new();
        for id in self.ids()? {
            match self.check(&id) {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {}
                Err(why) => unreadable.push(Unreadable {
                    id,
                    why,
                    dir: self.dir.clone(),
                    quarantined: false,
                }),
            }
        }
        unreadable.extend(self.quarantined());
        Ok((entries, unreadable))
    }

    /// The entry if it and its message can be read, `None` if it left the queue meanwhile,
    /// else why not.
    fn check(&self, id: &str) -> std::result::Result<Option<QueueEntry>, String> {
        let entry = match self.load(id) {
            Ok(Some(entry)) => entry,
            Ok(None) => return Ok(None),
            Err(err) => return Err(err.summary()),
        };
        match fs::File::open(self.dir.join(format!("{id}.msg"))) {
            Ok(_) => Ok(Some(entry)),
            // Removed by `queue remove` or a flusher between the two reads.
            Err(_) if !self.dir.join(format!("{id}.json")).exists() => Ok(None),
            Err(e) => Err(format!("its message file {id}.msg cannot be read: {e}")),
        }
    }

    /// The entries in `corrupt/`, with the reason noted when they were moved there.
    pub fn quarantined(&self) -> Vec<Unreadable> {
        let dir = self.dir.join(CORRUPT);
        let Ok(read) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = read
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".why").map(str::to_string))
            .filter(|id| valid_id(id))
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|id| Unreadable {
                why: fs::read_to_string(dir.join(format!("{id}.why")))
                    .map(|text| text.trim().to_string())
                    .unwrap_or_else(|e| format!("(reason unreadable: {e})")),
                id,
                dir: dir.clone(),
                quarantined: true,
            })
            .collect()
    }

    /// Moves an unreadable entry's files into `corrupt/` with a note of `why`, so it no
    /// longer holds up the queue; returns where they are. The note is written first: an
    /// entry is listed as quarantined by its note, and a `.json` or `.msg` that is not
    /// moved yet is still seen (and moved) by the next flush.
    pub fn quarantine(&self, id: &str, why: &str) -> Result<PathBuf> {
        let dir = self.dir.join(CORRUPT);
        let failed = |e: io::Error| {
            Error::new(
                Kind::Io,
                format!("cannot quarantine queued message {id} in {}", dir.display()),
                e,
            )
        };
        files::ensure_private_dir(&dir)?;
        files::write_private(
            &dir.join(format!("{id}.why")),
            format!("{why}\n").as_bytes(),
        )?;
        // The entry first: once it is gone, no flusher reads the message.
        for suffix in ["json", "msg"] {
            let name = format!("{id}.{suffix}");
            match fs::rename(self.dir.join(&name), dir.join(&name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(failed(e)),
                _ => {}
            }
        }
        files::sync_dir(&self.dir)
            .and_then(|()| files::sync_dir(&dir))
            .map_err(failed)?;
        Ok(dir)
    }

    /// A quarantined entry by its id: why it is there, and its message as far as there
    /// is one (the entry's own JSON is what could not be read).
    pub fn quarantined_one(&self, id: &str) -> Option<(Unreadable, Option<Vec<u8>>)> {
        if !valid_id(id) {
            return None;
        }
        let bad = self.quarantined().into_iter().find(|bad| bad.id == id)?;
        let message = fs::read(bad.dir.join(format!("{id}.msg"))).ok();
        Some((bad, message))
    }

    /// Deletes a quarantined entry's files (the note last: until it goes, it is listed).
    pub fn remove_quarantined(&self, id: &str) -> Result<bool> {
        if self.quarantined_one(id).is_none() {
            return Ok(false);
        }
        let dir = self.dir.join(CORRUPT);
        for suffix in ["json", "msg", "why"] {
            match fs::remove_file(dir.join(format!("{id}.{suffix}"))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(self.io_error(e)),
                _ => {}
            }
        }
        files::sync_dir(&dir).map_err(|e| self.io_error(e))?;
        Ok(true)
    }

    pub fn message(&self, id: &str) -> Result<Vec<u8>> {
        fs::read(self.dir.join(format!("{id}.msg"))).map_err(|e| self.io_error(e))
    }

    /// The message's file, open, and its length: what a delivery sends from, a chunk at a
    /// time, so a large message is never read whole into memory.
    pub fn message_file(&self, id: &str) -> Result<(File, u64)> {
        let file = File::open(self.dir.join(format!("{id}.msg"))).map_err(|e| self.io_error(e))?;
        let len = file.metadata().map_err(|e| self.io_error(e))?.len();
        Ok((file, len))
    }

    /// Moves every entry of `other` into this queue, each written here whole (and made
    /// durable) before it leaves there, so a crash leaves it in one or in both, never in
    /// neither; an entry being delivered (locked) or unreadable stays. What a send queues
    /// when the configuration cannot be read goes to the default queue, and would wait
    /// there unseen once a configuration with a `queue_dir` of its own is fixed. Returns
    /// how many moved.
    pub fn adopt(&self, other: &Queue) -> Result<usize> {
        let mut moved = 0;
        for id in other.ids()? {
            let Some(_lock) = other.lock(&id)? else {
                continue;
            };
            let Ok(Some(entry)) = other.load(&id) else {
                continue;
            };
            let (file, len) = other.message_file(&id)?;
            if self.load(&id)?.is_none() {
                self.add(&entry, &entry.prepared(Body::File { file: &file, len }))?;
            }
            other.remove(&id)?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Takes a message out of the queue: the entry first, so no flusher picks it up again.
    pub fn remove(&self, id: &str) -> Result<()> {
        for suffix in ["json", "msg"] {
            match fs::remove_file(self.dir.join(format!("{id}.{suffix}"))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(self.io_error(e)),
                _ => {}
            }
        }
        files::sync_dir(&self.dir).map_err(|e| self.io_error(e))
    }

    /// Locks a message for delivery; `None` when another process has it, or when it left
    /// the queue while we waited (the caller must load the entry again after this).
    pub fn lock(&self, id: &str) -> Result<Option<MessageLock>> {
        let file = match File::open(self.dir.join(format!("{id}.msg"))) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error(e)),
        };
        // A lock that cannot be taken for any reason counts as held: the message waits.
        let locked = files::try_lock(&file).unwrap_or(false);
        Ok(locked.then_some(MessageLock { _file: file }))
    }

    /// The flusher's lock; `None` when another flush is running.
    pub fn lock_flusher(&self) -> Result<Option<FlushLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join(".flush.lock"))
            .map_err(|e| self.io_error(e))?;
        let locked = files::try_lock(&file).unwrap_or(false);
        Ok(locked.then_some(FlushLock { _file: file }))
    }

    /// Removes what a killed writer left: `.msg` files without an entry and temporary
    /// files, once they are old enough that no writer can still be at work on them.
    pub fn remove_leftovers(&self, older_than: Duration) {
        let Ok(read) = fs::read_dir(&self.dir) else {
            return;
        };
        for dirent in read.flatten() {
            let name = dirent.file_name().to_string_lossy().into_owned();
            let orphan = match name.strip_suffix(".msg") {
                Some(id) => !self.dir.join(format!("{id}.json")).exists(),
                None => name.starts_with(files::TEMPORARY_PREFIX),
            };
            let old = dirent
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > older_than);
            if orphan && old {
                let _ = fs::remove_file(dirent.path());
            }
        }
    }

    fn io_error(&self, e: io::Error) -> Error {
        Error::new(
            Kind::Io,
            format!("cannot use the queue {}", self.dir.display()),
            e,
        )
    }
}

/// Writes `body` to `out`: a file's from its start (copy_file_range where the kernel can),
/// all of it or an error, never a message cut short.
fn copy_body(body: Body, out: &mut File) -> io::Result<()> {
    match body {
        Body::Bytes(bytes) => out.write_all(bytes),
        Body::File { mut file, len } => {
            file.seek(io::SeekFrom::Start(0))?;
            let copied = io::copy(&mut file.take(len), out)?;
            match copied == len {
                true => Ok(()),
                false => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the message's file holds {copied} of its {len} bytes"),
                )),
            }
        }
    }
}

fn serialize(entry: &QueueEntry) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(entry).expect("an entry always serializes");
    bytes.push(b'\n');
    bytes
}

/// Queue ids: hex of the time and a per-process part, so they sort by arrival and two
/// processes (or two messages of one process) never pick the same one.
fn new_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let sequence = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:09X}{:05X}{:06X}{:02X}",
        since.as_secs(),
        since.subsec_micros(),
        std::process::id() & 0xFF_FFFF,
        sequence & 0xFF
    )
}

/// Ids are ours to make, and end up in paths: nothing but hex digits.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 40 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Prepared<'static> {
        Prepared {
            envelope: Envelope {
                sender: "s@x.org".into(),
                recipients: vec!["a@x.org".into(), "b@x.org".into()],
            },
            head: b"Subject: s\r\n\r\n".to_vec(),
            body: crate::message::envelope::Body::Bytes(b"body\r\n"),
            eight_bit: false,
            message_id: Some("<1@x.org>".into()),
        }
    }

    #[test]
    fn add_load_save_remove() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let message = message();
        let mut entry = QueueEntry::new("acct", &message, &message.envelope.recipients);
        queue.add(&entry, &message).unwrap();
        assert_eq!(queue.ids().unwrap(), [entry.id.clone()]);
        assert_eq!(queue.load(&entry.id).unwrap().as_ref(), Some(&entry));
        assert_eq!(
            queue.message(&entry.id).unwrap(),
            b"Subject: s\r\n\r\nbody\r\n"
        );
        assert_eq!(entry.size, 20);
        entry.recipients[0].state = RecipientState::Delivered;
        queue.save(&entry).unwrap();
        let loaded = queue.load(&entry.id).unwrap().unwrap();
        assert_eq!(
            loaded.prepared(Body::Bytes(&[])).envelope.recipients,
            ["b@x.org"]
        );
        queue.remove(&entry.id).unwrap();
        assert!(queue.ids().unwrap().is_empty());
        assert_eq!(queue.load(&entry.id).unwrap(), None);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temporary file left"
        );
    }

    #[test]
    fn an_unreadable_entry_is_reported_then_quarantined_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let message = message();
        let good = QueueEntry::new("acct", &message, &message.envelope.recipients);
        let bad = QueueEntry::new("acct", &message, &message.envelope.recipients);
        queue.add(&good, &message).unwrap();
        queue.add(&bad, &message).unwrap();
        fs::write(dir.path().join(format!("{}.json", bad.id)), b"[").unwrap();

        let (entries, unreadable) = queue.scan().unwrap();
        assert_eq!(entries, std::slice::from_ref(&good));
        assert_eq!(unreadable.len(), 1);
        assert_eq!(
            (unreadable[0].id.as_str(), unreadable[0].quarantined),
            (bad.id.as_str(), false)
        );

        let corrupt = queue.quarantine(&bad.id, &unreadable[0].why).unwrap();
        assert_eq!(corrupt, dir.path().join("corrupt"));
        for suffix in ["json", "msg", "why"] {
            assert!(
                corrupt.join(format!("{}.{suffix}", bad.id)).exists(),
                "{suffix}"
            );
        }
        let (entries, unreadable) = queue.scan().unwrap();
        assert_eq!(entries, [good]);
        assert_eq!(unreadable[0].dir, corrupt);
        assert!(unreadable[0].quarantined && unreadable[0].why.contains("unreadable"));
        assert_eq!(queue.ids().unwrap().len(), 1);
    }

    #[test]
    fn ids_are_unique_and_sort_by_arrival() {
        let ids: Vec<String> = (0..200).map(|_| new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
        assert!(ids.iter().all(|id| valid_id(id)));
    }

    #[test]
    fn ids_from_outside_cannot_name_other_files() {
        assert!(!valid_id("../../etc/passwd"));
        assert!(!valid_id(""));
        assert!(!valid_id("ABC.json"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Queue::open(dir.path()).unwrap().load("../x").unwrap(), None);
    }

    #[test]
    fn a_locked_message_cannot_be_locked_again() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let message = message();
        let entry = QueueEntry::new("acct", &message, &message.envelope.recipients);
        queue.add(&entry, &message).unwrap();
        let held = queue.lock(&entry.id).unwrap();
        assert!(held.is_some());
        assert!(queue.lock(&entry.id).unwrap().is_none());
        drop(held);
        assert!(queue.lock(&entry.id).unwrap().is_some());
        let flusher = queue.lock_flusher().unwrap();
        assert!(flusher.is_some() && queue.lock_flusher().unwrap().is_none());
    }

    #[test]
    fn leftovers_of_a_killed_writer_are_removed_entries_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let message = message();
        let entry = QueueEntry::new("acct", &message, &message.envelope.recipients);
        queue.add(&entry, &message).unwrap();
        fs::write(dir.path().join("0123ABC.msg"), b"half a mess").unwrap();
        fs::write(dir.path().join(".tmp.0123ABD.json.77"), b"{").unwrap();
        assert_eq!(
            queue.ids().unwrap(),
            std::slice::from_ref(&entry.id),
            "a .msg alone is not queued"
        );
        queue.remove_leftovers(Duration::ZERO);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [format!("{}.json", entry.id), format!("{}.msg", entry.id)]
        );
    }
}
