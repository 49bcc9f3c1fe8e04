//! Files only their owner may read, written whole: the per-user state directory, private
//! directories, and atomic replacement (temp file, fsync, rename, fsync of the directory),
//! for the queue, the token cache and the file store alike; and the one way we lock a
//! file.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Kind, Result};

/// `$XDG_STATE_HOME/oauth-sendmail` (default `~/.local/state/oauth-sendmail`): per user,
/// as cron jobs run as their owner and find it there without a desktop session.
pub fn state_dir() -> Result<PathBuf> {
    let base = xdg_base("XDG_STATE_HOME", ".local/state").ok_or_else(|| {
        Error::new(
            Kind::Config,
            "cannot find the state directory",
            "neither XDG_STATE_HOME nor HOME is set",
        )
    })?;
    Ok(base.join("oauth-sendmail"))
}

/// An XDG base directory: `$VAR` when it is an absolute path (the specification says to
/// ignore a relative one), else `$HOME/default`; `None` without either.
pub fn xdg_base(var: &str, default: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(default)))
}

/// Creates `dir` (mode 0700: it holds messages and secrets) if needed, and makes it 0700
/// if it is ours and others may look in: one made by an older version, or by hand under a
/// umask of 022. Only `dir` itself: a parent (`/var/spool` of `/var/spool/oauth-sendmail`)
/// is the administrator's.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    let failed = |e: std::io::Error| {
        Error::new(
            Kind::CannotCreate,
            format!("cannot create {}", dir.display()),
            e,
        )
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed)?;
    // `dir`, and within the state directory every directory down to it (the queue's
    // default place is in it).
    let state = state_dir().ok();
    let within_state = |d: &Path| state.as_deref().is_some_and(|s| d.starts_with(s));
    let mut ancestors = dir.ancestors();
    let ours = ancestors
        .next()
        .into_iter()
        .chain(ancestors.take_while(|d| within_state(d)));
    for path in ours {
        make_private(path)?;
    }
    Ok(())
}

/// chmod 700 a directory of ours that others may look in.
fn make_private(dir: &Path) -> Result<()> {
    let failed = |e: std::io::Error| {
        Error::new(
            Kind::CannotCreate,
            format!("cannot make {} private (chmod 700)", dir.display()),
            e,
        )
    };
    let metadata = std::fs::metadata(dir).map_err(failed)?;
    let ours = metadata.uid() == super::host::effective_uid();
    if ours && metadata.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    }
    Ok(())
}

/// The prefix of the temporary files `write_private` leaves if killed: a reader of the
/// directory skips them (the queue removes old ones).
pub const TEMPORARY_PREFIX: &str = ".tmp.";

/// Replaces `path` with `bytes`, readable by its owner only: after a crash the file is the
/// old one or the new one, whole, and once this returns the new one survives a power cut.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_private_parts(path, &[bytes])
}

/// `write_private` of `parts` one after the other, so a caller holding a message in two
/// pieces (rewritten header, body from the input buffer) need not join them.
pub fn write_private_parts(path: &Path, parts: &[&[u8]]) -> Result<()> {
    write_private_with(path, |file| {
        parts.iter().try_for_each(|part| file.write_all(part))
    })
}

/// `write_private` of what `write` writes into the new file (a message copied from a
/// file, never held whole).
pub fn write_private_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::new(
            Kind::Internal,
            format!("cannot write {}", path.display()),
            "not a file path",
        ));
    };
    ensure_private_dir(dir)?;
    let cannot = |e: std::io::Error| {
        Error::new(
            Kind::CannotCreate,
            format!("cannot write {}", path.display()),
            e,
        )
    };
    let temporary = dir.join(format!(
        "{TEMPORARY_PREFIX}{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            write(&mut file)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(cannot(e));
    }
    Ok(())
}

/// A new file in `dir` that has no name (O_TMPFILE), read-write, owner only: gone when
/// closed, and nothing is left behind by a crash. Where the file system cannot make one,
/// a named file (`TEMPORARY_PREFIX`, which the queue removes when old) unlinked at once.
pub fn anonymous_file(dir: &Path) -> std::io::Result<File> {
    match unnamed_file(dir) {
        Ok(file) => return Ok(file),
        // Not a kind of file system (or kernel) that has them: a name, for an instant.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) => {}
        Err(e) => return Err(e),
    }
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(
        "{TEMPORARY_PREFIX}spill.{}.{n}",
        std::process::id()
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// A new file in `dir` without a name (O_TMPFILE), read-write, owner only; an error
/// where the file system cannot make one.
pub fn unnamed_file(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

/// Makes a rename or a removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Takes the exclusive lock on `file` (flock(2) on Unix, held until the file is closed,
/// so a killed holder frees it) without waiting: `Ok(false)` when another process holds
/// it.
pub fn try_lock(file: &File) -> std::io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_existing_dir_of_ours_is_made_private_but_not_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("spool");
        let ours = parent.join("oauth-sendmail");
        std::fs::create_dir_all(&ours).unwrap();
        for path in [dir.path(), &parent, &ours] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        ensure_private_dir(&ours).unwrap();
        assert_eq!(mode(&ours), 0o700);
        assert_eq!(mode(&parent), 0o755);
        // New ones, parents included, are 0700 from the start.
        let new = dir.path().join("a/b");
        ensure_private_dir(&new).unwrap();
        assert_eq!((mode(&dir.path().join("a")), mode(&new)), (0o700, 0o700));
    }

    #[test]
    fn write_private_is_0600_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/token.json");
        write_private(&path, b"old").unwrap();
        write_private(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(dir.path().join("sub"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }

    #[test]
    fn an_anonymous_file_leaves_no_name_behind() {
        use std::io::{Read, Seek};
        let dir = tempfile::tempdir().unwrap();
        let mut file = anonymous_file(dir.path()).unwrap();
        file.write_all(b"spilled").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut back = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut back).unwrap();
        assert_eq!(back, "spilled");
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert!(anonymous_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn try_lock_is_exclusive_until_the_holder_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let open = || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap()
        };
        let held = open();
        assert!(try_lock(&held).unwrap());
        // A second open file description, as another process would have.
        let other = open();
        assert!(!try_lock(&other).unwrap());
        // Read-only is enough (the queue locks a `.msg` it only reads).
        assert!(!try_lock(&File::open(&path).unwrap()).unwrap());
        drop(held);
        assert!(try_lock(&other).unwrap());
    }
}
