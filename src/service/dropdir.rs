//! The drop directory: where a client leaves a message when no service answers, and
//! where the service picks them up. Mode 1733: anyone may create a file, nobody may list
//! (names are unguessable), only the owner of a file (or of the directory) may remove it.
//! A file holds the socket's framing (a request line, then the message); its owner is
//! the submitter (st_uid: the kernel's word, not the file's). Drop files are hostile
//! input: size-capped, no links, and what does not parse goes to quarantine.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use ring::rand::SecureRandom;

use crate::error::{Error, Kind, Result};
use crate::message::input::{Input, Raw};
use crate::service::protocol::{self, Request, MAX_REQUEST_LINE};

/// The prefix of a file still being written: not picked up, removed when old.
const WRITING: &str = ".tmp-";

fn random_name() -> Result<String> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| {
            Error::new(
                Kind::Internal,
                "cannot name the drop file",
                "no randomness from the system",
            )
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Leaves `request` and `message` in `dir`, durably: a temporary name (O_EXCL), written,
/// fsync'd, renamed to its final name. The directory cannot be opened by us (no read
/// permission), so syncfs makes the rename durable. Returns the file's name.
pub fn leave(dir: &Path, request: &Request, message: Raw) -> Result<String> {
    let name = random_name()?;
    let temporary = dir.join(format!("{WRITING}{name}"));
    let cannot = |e: std::io::Error| {
        Error::new(
            Kind::CannotCreate,
            format!("cannot leave the message in {}", dir.display()),
            e,
        )
    };
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temporary)
        .and_then(|mut file| {
            // Whatever the umask: the service reads it as another user.
            file.set_permissions(fs::Permissions::from_mode(0o644))?;
            crate::service::client::write_submission(&mut file, request, message)?;
            file.sync_all()?;
            fs::rename(&temporary, dir.join(&name))?;
            // SAFETY: syncfs on a valid open descriptor.
            match unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&file)) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temporary);
        return Err(cannot(e));
    }
    Ok(name)
}

/// One drop file, read.
pub struct Dropped {
    pub owner: u32,
    pub owner_gid: u32,
    pub request: Request,
    pub message: Input,
}

/// What the pickup makes of each file: done (removed), a refusal (quarantined), or to
/// be tried again later (left).
pub enum Taken {
    Done,
    Refused(Error),
    Later(Error),
}

/// Takes every finished drop file in `dir` to `take`; what does not parse or is refused
/// goes to `quarantine` with a `.why` note. A file left for later is logged once (its
/// name is kept in `waiting` until it is gone). Returns how many were taken.
pub fn pick_up(
    dir: &Path,
    quarantine: &Path,
    spill: &Path,
    max_message: u64,
    waiting: &mut HashSet<String>,
    mut take: impl FnMut(Dropped) -> Taken,
) -> usize {
    let Ok(listing) = fs::read_dir(dir) else {
        return 0;
    };
    let mut names: Vec<String> = listing
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    waiting.retain(|name| names.contains(name));
    let mut taken = 0;
    for name in names {
        let path = dir.join(&name);
        if name.starts_with(WRITING) {
            // A client killed while writing: nobody will finish it.
            let old = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
            if old {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        let dropped = match read(&path, max_message, spill) {
            Ok(dropped) => dropped,
            Err(why) => {
                set_aside(&path, quarantine, &why);
                continue;
            }
        };
        match take(dropped) {
            Taken::Done => {
                taken += 1;
                let _ = fs::remove_file(&path).and_then(|()| crate::sys::files::sync_dir(dir));
            }
            Taken::Refused(err) => set_aside(&path, quarantine, &err.summary()),
            Taken::Later(err) => {
                if waiting.insert(name.clone()) {
                    eprintln!(
                        "oauth-sendmail: {name} waits in the drop directory: {}",
                        err.summary()
                    );
                }
            }
        }
    }
    taken
}

/// Opens a drop file as hostile input: no symbolic link, a regular file with one link
/// (a hard link would lend us someone else's file and name), within the size cap. The
/// message is read as a submission on the socket is, a large body spilled into `spill`.
fn read(path: &Path, max_message: u64, spill: &Path) -> std::result::Result<Dropped, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if meta.nlink() != 1 {
        return Err(format!("it has {} links", meta.nlink()));
    }
    if meta.len() > max_message + MAX_REQUEST_LINE as u64 {
        return Err(format!("{} bytes, over the limit", meta.len()));
    }
    let mut input = BufReader::new(file);
    let request = protocol::read_head(&mut input).map_err(|e| e.summary())?;
    let Request::Submit(submission) = &request else {
        return Err("not a submission".into());
    };
    let mut new_file = crate::message::input::spill_in_queue(spill);
    // One drop file at a time: on a full disk its body may wait in memory for the queue.
    let no_room = crate::message::input::NoRoom::InMemory;
    let message = protocol::read_body(&mut input, submission, max_message, &mut new_file, no_room)
        .map_err(|e| e.summary())?;
    if input.read(&mut [0u8; 1]).map_err(|e| e.to_string())? != 0 {
        return Err("bytes after the message".into());
    }
    Ok(Dropped {
        owner: meta.uid(),
        owner_gid: meta.gid(),
        request,
        message,
    })
}

/// Moves a drop file to the quarantine directory, with why.
fn set_aside(path: &Path, quarantine: &Path, why: &str) {
    let Some(name) = path.file_name() else {
        return;
    };
    let target = quarantine.join(name);
    let moved = crate::sys::files::ensure_private_dir(quarantine)
        .map_err(|e| e.summary())
        .and_then(|()| fs::rename(path, &target).map_err(|e| e.to_string()));
    match moved {
        Ok(()) => {
            let note = quarantine.join(format!("{}.why", name.to_string_lossy()));
            let _ = File::create(note).and_then(|mut f| writeln!(f, "{why}"));
            eprintln!(
                "oauth-sendmail: drop file {} quarantined in {}: {why}",
                name.to_string_lossy(),
                quarantine.display()
            );
        }
        Err(e) => eprintln!(
            "oauth-sendmail: drop file {} is bad ({why}) and cannot be quarantined: {e}",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::protocol::Submission;

    fn submission(size: usize) -> Request {
        Request::Submit(Submission {
            recipients: vec!["a@example.com".into()],
            size: size as u64,
            ..Submission::default()
        })
    }

    #[test]
    fn a_left_message_is_picked_up_once_with_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let (drop, quarantine) = (dir.path().join("drop"), dir.path().join("q"));
        fs::create_dir(&drop).unwrap();
        leave(&drop, &submission(5), Raw::from(&b"abc\r\n"[..])).unwrap();
        leave(&drop, &submission(4), Raw::from(&b"de\r\n"[..])).unwrap();
        let mut seen = Vec::new();
        let taken = pick_up(
            &drop,
            &quarantine,
            dir.path(),
            100,
            &mut HashSet::new(),
            |d| {
                assert_eq!(d.owner, crate::sys::users::effective_uid());
                seen.push(d.message.raw().memory().to_vec());
                Taken::Done
            },
        );
        assert_eq!(taken, 2);
        seen.sort();
        assert_eq!(seen, [b"abc\r\n".to_vec(), b"de\r\n".to_vec()]);
        assert_eq!(fs::read_dir(&drop).unwrap().count(), 0);
        assert_eq!(
            pick_up(
                &drop,
                &quarantine,
                dir.path(),
                100,
                &mut HashSet::new(),
                |_| { Taken::Done }
            ),
            0
        );
    }

    #[test]
    fn bad_files_are_quarantined_and_the_rest_still_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (drop, quarantine) = (dir.path().join("drop"), dir.path().join("q"));
        fs::create_dir(&drop).unwrap();
        fs::write(drop.join("garbage"), b"\x00\x01 not a request").unwrap();
        let mut short = Vec::new();
        protocol::write_request(&mut short, &submission(10), b"abc").unwrap();
        fs::write(drop.join("short"), short).unwrap();
        fs::write(dir.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), drop.join("link")).unwrap();
        fs::hard_link(dir.path().join("secret"), drop.join("hard")).unwrap();
        leave(&drop, &submission(4), Raw::from(&b"ok\r\n"[..])).unwrap();
        leave(&drop, &submission(4), Raw::from(&b"no\r\n"[..])).unwrap();
        let taken = pick_up(
            &drop,
            &quarantine,
            dir.path(),
            100,
            &mut HashSet::new(),
            |d| match d.message.raw().memory() {
                b"ok\r\n" => Taken::Done,
                _ => Taken::Refused(Error::new(Kind::AuthRefused, "refused", "policy")),
            },
        );
        assert_eq!(taken, 1);
        assert_eq!(fs::read_dir(&drop).unwrap().count(), 0);
        let notes = fs::read_dir(&quarantine)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "why")
            })
            .count();
        assert_eq!(notes, 5, "garbage, short, link, hard and the refused one");
        let why = fs::read_to_string(quarantine.join("hard.why")).unwrap();
        assert!(why.contains("2 links"), "{why}");
    }
}
