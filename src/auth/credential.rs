//! Secrets (access tokens, passwords) and the sources they are read from: a 0600 file or
//! a command's stdout (as msmtp's passwordeval: oama, pass, vault CLIs).

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Kind, Result};

/// A secret value. Its `Debug` and `Display` never show it; only [`Secret::expose`] does,
/// at the one place it goes on the wire.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

/// As a plain JSON/TOML string: the token cache and the file store keep secrets this way.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Where an account's secret comes from: `secret = { file = "..." }` or `{ command = "..." }`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretSource {
    /// A file readable by its owner only; its first line is the secret.
    File(PathBuf),
    /// A shell command whose stdout (first line) is the secret.
    Command(String),
}

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
    fn debug_and_display_redact() {
        let secret = Secret::new("ya29.very-secret");
        assert_eq!(format!("{secret:?} {secret}"), "(redacted) (redacted)");
        assert_eq!(secret.expose(), "ya29.very-secret");
    }

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
