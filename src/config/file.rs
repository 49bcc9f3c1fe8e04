//! Finding the configuration file and deciding it may be used: the search path, and
//! ssh's rules for who may have written it and who may read the secrets in it.

use std::path::{Path, PathBuf};

use super::Config;
use crate::error::{Error, Kind, Result};

/// The places searched, in order, when no file is named on the command line.
pub fn search_path() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(path) = std::env::var_os("OAUTH_SENDMAIL_CONFIG") {
        paths.push(PathBuf::from(path));
        return paths;
    }
    if let Some(dir) = crate::sys::files::xdg_base("XDG_CONFIG_HOME", ".config") {
        paths.push(dir.join("oauth-sendmail/config.toml"));
    }
    paths.push(PathBuf::from("/etc/oauth-sendmail/config.toml"));
    paths
}

impl Config {
    /// Loads the named file, or the first of [`search_path`] that exists, or none.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let candidates = match explicit {
            Some(path) => vec![path.to_path_buf()],
            None => search_path(),
        };
        let explicitly_named =
            explicit.is_some() || std::env::var_os("OAUTH_SENDMAIL_CONFIG").is_some();
        for path in candidates {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    // Before anything in it is used: its commands would run as us.
                    let safe = check_not_writable_by_others(&path)?;
                    let config = Config::parse(&text, &path)?;
                    config.check_inline_secrets_private(&safe)?;
                    return Ok(config);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicitly_named => continue,
                Err(e) => {
                    return Err(Error::new(
                        Kind::Config,
                        format!("cannot read {}", path.display()),
                        e,
                    ))
                }
            }
        }
        Ok(Config::default())
    }

    /// A file that holds a secret must not be readable by others: ssh's rule for keys.
    fn check_inline_secrets_private(&self, file: &SafeFile) -> Result<()> {
        let inline = self.inline_secrets();
        if inline.is_empty() || !file.readable_by_others {
            return Ok(());
        }
        let path = file.path.display();
        Err(Error::new(
            Kind::Config,
            format!("cannot use the configuration {path}"),
            format!(
                "it holds the client_secret of account `{}` in clear and others can read it (mode {:o}, and every directory up to it lets them through)",
                inline.join("`, `"),
                file.mode & 0o777
            ),
        )
        .hint(format!(
            "run: chmod 600 {path} (or move the secret out: client_secret = {{ file = \"...\" }})"
        )))
    }
}

/// A configuration file that passed [`check_not_writable_by_others`].
struct SafeFile {
    /// With symbolic links resolved: the file that was checked.
    path: PathBuf,
    mode: u32,
    /// Its mode lets group or others read it, and every directory up to it lets someone
    /// other than its owner through.
    readable_by_others: bool,
}

/// ssh's rule for files whose contents it acts on: the file, and every directory from `/`
/// down to it, belongs to root or to us and is writable by nobody else, or another user
/// could put a `secret = { command = ... }` in it that runs as us (as root, too). A
/// directory like /tmp (root's, sticky) is fine: there nobody can replace what is ours.
fn check_not_writable_by_others(path: &Path) -> Result<SafeFile> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String, hint: String| {
        Error::new(
            Kind::Config,
            format!("cannot use the configuration {}", path.display()),
            why,
        )
        .hint(hint)
    };
    let real = std::fs::canonicalize(path)
        .map_err(|e| Error::new(Kind::Config, format!("cannot read {}", path.display()), e))?;
    let me = crate::sys::host::effective_uid();
    let ours = |uid: u32| uid == 0 || uid == me;
    let stat = |p: &Path| {
        std::fs::metadata(p)
            .map_err(|e| Error::new(Kind::Config, format!("cannot read {}", p.display()), e))
    };
    let file = stat(&real)?;
    let shown = real.display();
    if !file.is_file() {
        return Err(refuse(
            "it is not a regular file".into(),
            "name the configuration file itself".into(),
        ));
    }
    if !ours(file.uid()) {
        return Err(refuse(
            format!(
                "{shown} belongs to user id {}, neither to you nor to root",
                file.uid()
            ),
            format!("run: chown {me} {shown} (or use a configuration of your own)"),
        ));
    }
    if file.mode() & 0o022 != 0 {
        return Err(refuse(
            format!(
                "others may write to it (mode {:o}), and its commands run as you",
                file.mode() & 0o777
            ),
            format!("run: chmod go-w {shown}"),
        ));
    }
    let mut reachable = true;
    for dir in real.ancestors().skip(1) {
        let meta = stat(dir)?;
        let mode = meta.mode();
        let sticky_roots = mode & 0o1000 != 0 && meta.uid() == 0;
        if !ours(meta.uid()) {
            return Err(refuse(
                format!(
                    "the directory {} belongs to user id {}, neither to you nor to root",
                    dir.display(),
                    meta.uid()
                ),
                "keep the configuration in a directory of yours or root's".into(),
            ));
        }
        if mode & 0o022 != 0 && !sticky_roots {
            return Err(refuse(
                format!(
                    "others may write to the directory {} (mode {:o}), and so replace the file",
                    dir.display(),
                    mode & 0o777
                ),
                format!("run: chmod go-w {}", dir.display()),
            ));
        }
        reachable &= mode & 0o011 != 0;
    }
    Ok(SafeFile {
        path: real.clone(),
        mode: file.mode(),
        readable_by_others: reachable && file.mode() & 0o044 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_file_that_is_missing_is_an_error() {
        let missing = Path::new("/nonexistent/oauth-sendmail.toml");
        assert_eq!(Config::load(Some(missing)).unwrap_err().exit_code(), 78);
    }
}
