//! Reading secrets (access tokens, passwords) from their sources: a 0600 file or a
//! command's stdout (as msmtp's passwordeval: oama, pass, vault CLIs). The sources are
//! the configuration's (`config::SecretSource`); the value is a `secret::Secret`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::SecretSource;
use crate::error::{Error, Kind, Result};
use crate::secret::Secret;

// The type is the configuration's (what `secret =` says); reading it is ours.
impl SecretSource {
    pub fn fetch(&self) -> Result<Secret> {
        match self {
            SecretSource::File(path) => read_private_file(path),
            SecretSource::Command(command) => run_command(command),
        }
    }
}

/// The first line of a file only its owner may read.
fn read_private_file(path: &Path) -> Result<Secret> {
    let text = read_private_text(path, "secret file")?;
    first_line(text).ok_or_else(|| {
        Error::new(
            Kind::Config,
            format!("cannot use the secret file {}", path.display()),
            "it is empty",
        )
    })
}

/// The whole text of a file only its owner may read (secret files, the file store, key
/// files): one readable by group or others is refused, with the chmod that fixes it.
pub fn read_private_text(path: &Path, what_it_is: &str) -> Result<String> {
    let what = || format!("cannot use the {what_it_is} {}", path.display());
    let metadata = std::fs::metadata(path).map_err(|e| Error::new(Kind::Config, what(), e))?;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::new(
            Kind::Config,
            what(),
            format!("it is readable by others (mode {:o})", mode & 0o777),
        )
        .hint(format!("run: chmod 600 {}", path.display())));
    }
    std::fs::read_to_string(path).map_err(|e| Error::new(Kind::Config, what(), e))
}

fn run_command(command: &str) -> Result<Secret> {
    let what = || format!("secret command `{command}` failed");
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::new(Kind::Config, what(), e))?;
    if !output.status.success() {
        // 126/127: the command cannot run at all, which no retry will fix.
        let kind = match output.status.code() {
            Some(126 | 127) => Kind::Config,
            _ => Kind::Temporary,
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why = match stderr.lines().next() {
            Some(line) => format!("{}: {line}", output.status),
            None => output.status.to_string(),
        };
        return Err(Error::new(kind, what(), why));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|_| Error::new(Kind::Config, what(), "its output is not UTF-8"))?;
    first_line(text).ok_or_else(|| Error::new(Kind::Config, what(), "it printed nothing"))
}

fn first_line(text: String) -> Option<Secret> {
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| Secret::new(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_stdout_first_line_is_the_secret() {
        let secret = SecretSource::Command("printf 'tok123\\nignored\\n'".into())
            .fetch()
            .unwrap();
        assert_eq!(secret.expose(), "tok123");
    }

    #[test]
    fn failing_command_is_temporary_missing_command_is_config() {
        let failed = SecretSource::Command("echo no network >&2; exit 1".into())
            .fetch()
            .unwrap_err();
        assert!(failed.is_transient());
        assert!(failed.to_string().contains("no network"), "{failed}");
        let missing = SecretSource::Command("/nonexistent/oama".into())
            .fetch()
            .unwrap_err();
        assert_eq!(missing.exit_code(), 78);
    }

    #[test]
    fn file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tok456\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretSource::File(path.clone()).fetch().unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!err.to_string().contains("tok456"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(SecretSource::File(path).fetch().unwrap().expose(), "tok456");
    }
}
