//! Files only their owner may read, written whole: the per-user state directory, private
//! directories, and atomic replacement (temp file, fsync, rename, fsync of the directory),
//! for the queue, the token cache and the file store alike.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Kind, Result};

/// `$XDG_STATE_HOME/oauth-sendmail` (default `~/.local/state/oauth-sendmail`): per user,
/// as cron jobs run as their owner and find it there without a desktop session.
pub fn state_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/state")))
        .ok_or_else(|| {
            Error::new(
                Kind::Config,
                "cannot find the state directory",
                "neither XDG_STATE_HOME nor HOME is set",
            )
        })?;
    Ok(base.join("oauth-sendmail"))
}

/// Creates `dir` (mode 0700: it holds messages and secrets) if needed.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            Error::new(
                Kind::CannotCreate,
                format!("cannot create {}", dir.display()),
                e,
            )
        })
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
            for part in parts {
                file.write_all(part)?;
            }
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

/// Makes a rename or a removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
}
