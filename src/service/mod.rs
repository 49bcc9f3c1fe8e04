//! The machine-wide mail service: where its files are, the one rule that decides whether
//! a call is in user or system mode, the wire protocol, the daemon, its client, the drop
//! directory and the sender policy. Above `delivery`, which it drives.

pub mod client;
pub mod daemon;
pub mod dropdir;
pub mod policy;
pub mod protocol;

use std::path::{Path, PathBuf};

/// Replaces `/` as the root of every system path (tests, a chroot). A client that sets
/// it only misleads itself: the daemon decides what it accepts.
pub const ROOT_VARIABLE: &str = "OAUTH_SENDMAIL_ROOT";

/// The service's files, all under one root.
#[derive(Clone, Debug, PartialEq)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    /// Under `$OAUTH_SENDMAIL_ROOT`, else `/`.
    pub fn system() -> Paths {
        let root = std::env::var_os(ROOT_VARIABLE)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| PathBuf::from("/"));
        Paths { root }
    }

    fn under(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// The service's configuration (root:oauth-sendmail 0640).
    pub fn config(&self) -> PathBuf {
        self.under("etc/oauth-sendmail/config.toml")
    }

    /// What `$XDG_STATE_HOME` is for the service: its state directory is
    /// `oauth-sendmail` in it (token cache, file store, delivery log; 0700).
    pub fn state_home(&self) -> PathBuf {
        self.under("var/lib")
    }

    pub fn state(&self) -> PathBuf {
        self.state_home().join("oauth-sendmail")
    }

    /// `/var/spool/oauth-sendmail`, the parent of the queue and the drop directory.
    pub fn spool(&self) -> PathBuf {
        self.under("var/spool/oauth-sendmail")
    }

    /// The service's own queue (0700).
    pub fn queue(&self) -> PathBuf {
        self.spool().join("queue")
    }

    /// Where clients leave messages while the service is down (1733). Its existence is
    /// what says that the service is installed.
    pub fn maildrop(&self) -> PathBuf {
        self.spool().join("maildrop")
    }

    /// Drop files that did not parse, for a person to look at (0700).
    pub fn quarantine(&self) -> PathBuf {
        self.spool().join("quarantine")
    }

    /// The directory of the socket (0755).
    pub fn run_dir(&self) -> PathBuf {
        self.under("run/oauth-sendmail")
    }

    /// The submission socket (0666).
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("submit.sock")
    }
}

/// Who handles a call: this process with its own configuration and state, or the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    User,
    System,
}

impl Mode {
    pub fn describe(self) -> &'static str {
        match self {
            Mode::User => "user (this user's own configuration, queue and tokens)",
            Mode::System => "system (the machine's mail service handles it)",
        }
    }
}

/// The rule: a call that has a configuration of its own (`-C FILE`,
/// `$OAUTH_SENDMAIL_CONFIG`, `$XDG_CONFIG_HOME/oauth-sendmail/config.toml`) is in user
/// mode; else it is in system mode when the service is installed (its drop directory
/// exists); else user mode with `/etc/oauth-sendmail/config.toml`, as without a service.
pub fn mode(explicit_config: Option<&Path>) -> Mode {
    let own_config = explicit_config.is_some()
        || std::env::var_os("OAUTH_SENDMAIL_CONFIG").is_some()
        || user_config_exists();
    decide(own_config, Paths::system().maildrop().is_dir())
}

/// The user's own file of the search path (every place but the system one).
fn user_config_exists() -> bool {
    let system = Path::new("/etc/oauth-sendmail/config.toml");
    crate::config::search_path()
        .iter()
        .filter(|path| path.as_path() != system)
        .any(|path| path.exists())
}

fn decide(own_config: bool, service_installed: bool) -> Mode {
    match (own_config, service_installed) {
        (false, true) => Mode::System,
        _ => Mode::User,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_of_its_own_means_user_mode() {
        assert_eq!(decide(true, true), Mode::User);
        assert_eq!(decide(true, false), Mode::User);
        assert_eq!(decide(false, true), Mode::System);
        assert_eq!(decide(false, false), Mode::User);
    }

    #[test]
    fn every_system_path_hangs_off_the_root() {
        let paths = Paths {
            root: PathBuf::from("/srv/chroot"),
        };
        for path in [
            paths.config(),
            paths.state(),
            paths.queue(),
            paths.maildrop(),
            paths.quarantine(),
            paths.socket(),
        ] {
            assert!(path.starts_with("/srv/chroot/"), "{}", path.display());
        }
        assert_eq!(
            paths.socket(),
            Path::new("/srv/chroot/run/oauth-sendmail/submit.sock")
        );
        let real = Paths {
            root: PathBuf::from("/"),
        };
        assert_eq!(
            real.maildrop(),
            Path::new("/var/spool/oauth-sendmail/maildrop")
        );
        assert_eq!(real.state(), Path::new("/var/lib/oauth-sendmail"));
    }

    #[test]
    fn the_shipped_units_run_the_daemon_on_the_system_socket() {
        let service = include_str!("../../contrib/systemd/oauth-sendmail.service");
        let exec = service
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        // What ExecStart runs is checked against the command line in cli's tests.
        assert!(exec.ends_with(" daemon"), "{exec}");
        assert!(service.lines().any(|l| l == "Type=notify"));
        let socket = include_str!("../../contrib/systemd/oauth-sendmail.socket");
        let listen = socket
            .lines()
            .find_map(|l| l.strip_prefix("ListenStream="))
            .unwrap();
        let system = Paths {
            root: PathBuf::from("/"),
        };
        assert_eq!(Path::new(listen), system.socket());
        let tmpfiles = include_str!("../../contrib/systemd/oauth-sendmail.tmpfiles");
        assert!(tmpfiles.contains(&format!("{}   1733", system.maildrop().display())));
    }

    #[test]
    fn an_explicit_configuration_is_user_mode_whatever_is_installed() {
        assert_eq!(mode(Some(Path::new("/c.toml"))), Mode::User);
    }
}
