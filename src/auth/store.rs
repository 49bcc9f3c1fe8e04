//! Where long-lived OAuth secrets (refresh tokens, client secrets) are kept, per account:
//! the OS keyring (the Secret Service, through keyring-core) or a 0600 file in the state
//! directory. Short-lived access tokens are not kept here: see `token`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::auth::credential::read_private_text;
use crate::config::StoreKind;
use crate::error::{Error, Kind, Result};
use crate::secret::Secret;

/// The secrets an account may keep in its store.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Item {
    RefreshToken,
    ClientSecret,
}

impl Item {
    fn name(self) -> &'static str {
        match self {
            Item::RefreshToken => "refresh-token",
            Item::ClientSecret => "client-secret",
        }
    }
}

/// The room kept for a rotated refresh token: Microsoft's are 1-2 KB.
const RESERVATION: usize = 64 * 1024;

/// The keyring service name every entry is filed under; the user part is
/// "ACCOUNT ITEM", e.g. "gmail refresh-token".
pub const KEYRING_SERVICE: &str = "oauth-sendmail";

/// One account's store.
pub struct Store {
    kind: StoreKind,
    account: String,
}

impl Store {
    pub fn new(kind: StoreKind, account: &str) -> Store {
        Store {
            kind,
            account: account.to_string(),
        }
    }

    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Where the secrets are, for messages: "the OS keyring (Secret Service)" or the file.
    /// Where `item` is kept, for people.
    pub fn describe(&self, item: Item) -> Result<String> {
        Ok(match self.kind {
            StoreKind::Keyring => "the OS keyring (Secret Service)".to_string(),
            StoreKind::File => format!("the file {} (mode 0600)", self.file(item)?.display()),
        })
    }

    /// The secret, or `None` when none was ever stored.
    pub fn get(&self, item: Item) -> Result<Option<Secret>> {
        match self.kind {
            StoreKind::Keyring if item == Item::RefreshToken => {
                // Newer than the keyring's, when there is one (see `set_rotated`).
                match read_token_file(&self.rescued()?)? {
                    Some(rescued) => Ok(Some(rescued)),
                    None => keyring::get(&self.account, item),
                }
            }
            StoreKind::Keyring => keyring::get(&self.account, item),
            StoreKind::File => read_token_file(&self.file(item)?),
        }
    }

    pub fn set(&self, item: Item, secret: &Secret) -> Result<()> {
        match self.kind {
            StoreKind::Keyring => {
                keyring::set(&self.account, item, secret)?;
                if item == Item::RefreshToken {
                    // The keyring holds the newest now: a rescued one would shadow it.
                    remove_if_there(&self.rescued()?)?;
                }
                Ok(())
            }
            StoreKind::File => {
                let path = self.file(item)?;
                crate::sys::files::write_private(&path, format!("{}\n", secret.expose()).as_bytes())
            }
        }
    }

    /// Makes sure a rotated refresh token can be written whatever the disk holds by then:
    /// a file of [`RESERVATION`] bytes, written out and synced, waits next to the token
    /// file, and [`Store::set_rotated`] overwrites it in place (no new blocks) and renames
    /// it. Called before the token endpoint is asked: when the room cannot be had, the
    /// refresh is not made (a temporary failure), rather than the provider voiding the old
    /// token for a new one that cannot be kept. (On a copy-on-write file system, btrfs or
    /// ZFS, even an overwrite may need room: there this narrows the risk, no more.)
    pub fn reserve_for_rotation(&self) -> Result<()> {
        let path = self.reservation()?;
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= RESERVATION as u64) {
            return Ok(());
        }
        crate::sys::files::write_private(&path, &[b'\n'; RESERVATION]).map_err(|e| {
            Error::new(
                Kind::Temporary,
                "cannot reserve room for a rotated refresh token, so no refresh was asked for",
                e.summary(),
            )
            .hint(format!(
                "free some space on the file system of {}",
                path.parent().unwrap_or(&path).display()
            ))
        })
    }

    /// Stores a refresh token the provider just rotated (the old one may be void already):
    /// into the reservation, so lack of space cannot lose it. In the keyring, when the
    /// keyring cannot take it, it is kept in the state directory instead (see `rescued`),
    /// and `get` finds it there.
    pub fn set_rotated(&self, secret: &Secret) -> Result<()> {
        match self.kind {
            StoreKind::File => {
                self.fill_reservation(secret, &self.file(Item::RefreshToken)?)?;
                // Room for the next rotation; when there is none now, the next refresh
                // waits until there is.
                let _ = self.reserve_for_rotation();
                Ok(())
            }
            StoreKind::Keyring => match self.set(Item::RefreshToken, secret) {
                Ok(()) => Ok(()),
                Err(err) => {
                    let rescued = self.rescued()?;
                    self.fill_reservation(secret, &rescued)
                        .map_err(|e| e.within(err.summary()))?;
                    let _ = self.reserve_for_rotation();
                    eprintln!(
                        "oauth-sendmail: cannot store the rotated refresh token in the OS keyring: {}\n  it is kept in {} (mode 0600) and used from there; it moves to the keyring at the next rotation or login",
                        err.summary(),
                        rescued.display()
                    );
                    Ok(())
                }
            },
        }
    }

    /// Writes `secret` over the start of the reservation and renames it to `target`: no
    /// block is allocated, so a full disk cannot stop it.
    fn fill_reservation(&self, secret: &Secret, target: &Path) -> Result<()> {
        let reservation = self.reservation()?;
        let line = format!("{}\n", secret.expose());
        let cannot = |e: std::io::Error| {
            Error::new(
                Kind::CannotCreate,
                "the provider rotated the refresh token, and the new one cannot be stored",
                format!("{}: {e}", target.display()),
            )
            .hint("the old refresh token may be void now: if the next send says so, log in again")
        };
        let mut file = match OpenOptions::new().write(true).open(&reservation) {
            Ok(file) if line.len() <= RESERVATION => file,
            // No reservation (made before this version), or a token larger than it: the
            // ordinary write, which needs room.
            _ => {
                return crate::sys::files::write_private(target, line.as_bytes())
                    .map_err(|e| e.within("cannot store the rotated refresh token"))
            }
        };
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&reservation, target))
            .and_then(|()| crate::sys::files::sync_dir(target.parent().unwrap_or(Path::new("."))))
            .map_err(cannot)?;
        // The padding after the line is harmless (readers take the first line); cutting it
        // frees the room for the next reservation.
        let _ = file
            .set_len(line.len() as u64)
            .and_then(|()| file.sync_all());
        Ok(())
    }

    /// Removes the secret; `false` when there was none.
    pub fn delete(&self, item: Item) -> Result<bool> {
        if item == Item::RefreshToken {
            remove_if_there(&self.reservation()?)?;
        }
        match self.kind {
            StoreKind::Keyring if item == Item::RefreshToken => {
                let rescued = remove_if_there(&self.rescued()?)?;
                Ok(keyring::delete(&self.account, item)? || rescued)
            }
            StoreKind::Keyring => keyring::delete(&self.account, item),
            StoreKind::File => remove_if_there(&self.file(item)?),
        }
    }

    /// The room kept for the next rotated refresh token (see `reserve_for_rotation`).
    fn reservation(&self) -> Result<PathBuf> {
        self.named("refresh-token.reserved")
    }

    /// A keyring account's rotated refresh token that the keyring could not take.
    fn rescued(&self) -> Result<PathBuf> {
        self.named("refresh-token.rescued")
    }

    fn file(&self, item: Item) -> Result<PathBuf> {
        self.named(item.name())
    }

    /// `STATE/ACCOUNT.suffix`.
    fn named(&self, suffix: &str) -> Result<PathBuf> {
        Ok(crate::sys::files::state_dir()?.join(format!("{}.{suffix}", file_stem(&self.account))))
    }
}

/// The first line of a private token file; `None` when there is no such file.
fn read_token_file(path: &Path) -> Result<Option<Secret>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = read_private_text(path, "token file")?;
    let line = text.lines().next().unwrap_or_default().trim();
    Ok((!line.is_empty()).then(|| Secret::new(line)))
}

/// Removes `path`; `false` when it was not there.
fn remove_if_there(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::new(
            Kind::Io,
            format!("cannot remove {}", path.display()),
            e,
        )),
    }
}

/// Fails unless the keyring can be used now, with the reason and the way to a file store.
pub fn keyring_reachable(account: &str) -> Result<()> {
    keyring::open(account).map(|_| ())
}

/// A file name for an account: its name when that is plain, else hex (names are TOML
/// keys and may hold `/` or `..`).
pub fn file_stem(account: &str) -> String {
    let plain = !account.is_empty()
        && !account.starts_with('.')
        && account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if plain {
        return account.to_string();
    }
    let hex: String = account.bytes().map(|b| format!("{b:02x}")).collect();
    format!("x-{hex}")
}

#[cfg(target_os = "linux")]
mod keyring {
    //! The Secret Service over D-Bus, opened only when a secret is read or written (never
    //! on the send path while a cached access token is valid).

    use std::path::Path;
    use std::sync::{Arc, OnceLock};

    use keyring_core::{CredentialStore, Entry};

    use super::{Item, KEYRING_SERVICE};
    use crate::error::{Error, Kind, Result};
    use crate::secret::Secret;

    pub fn get(account: &str, item: Item) -> Result<Option<Secret>> {
        match entry(account, item)?.get_password() {
            Ok(password) => Ok(Some(Secret::new(password))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(failure(account, "cannot read from the OS keyring", e)),
        }
    }

    pub fn set(account: &str, item: Item, secret: &Secret) -> Result<()> {
        entry(account, item)?
            .set_password(secret.expose())
            .map_err(|e| failure(account, "cannot write to the OS keyring", e))
    }

    pub fn delete(account: &str, item: Item) -> Result<bool> {
        match entry(account, item)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring_core::Error::NoEntry) => Ok(false),
            Err(e) => Err(failure(account, "cannot delete from the OS keyring", e)),
        }
    }

    fn entry(account: &str, item: Item) -> Result<Entry> {
        let store = open(account)?;
        Entry::new_in_store(
            &store,
            KEYRING_SERVICE,
            &format!("{account} {}", item.name()),
        )
        .map_err(|e| failure(account, "cannot use the OS keyring", e))
    }

    /// The Secret Service store, connected once per process.
    pub fn open(account: &str) -> Result<Arc<CredentialStore>> {
        static STORE: OnceLock<Arc<CredentialStore>> = OnceLock::new();
        if let Some(store) = STORE.get() {
            return Ok(store.clone());
        }
        find_session_bus().map_err(|why| unreachable(account, why))?;
        let store: Arc<CredentialStore> =
            dbus_secret_service_keyring_store::Store::new().map_err(|e| {
                unreachable(
                    account,
                    "no Secret Service answers on the D-Bus session bus",
                )
                .caused_by(e)
            })?;
        Ok(STORE.get_or_init(|| store).clone())
    }

    /// libdbus finds the session bus through DBUS_SESSION_BUS_ADDRESS only; systemd puts it
    /// at $XDG_RUNTIME_DIR/bus, which cron jobs of a logged-in user can reach too. Without
    /// either, libdbus would try to start a bus of its own: say so instead.
    fn find_session_bus() -> std::result::Result<(), String> {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|a| !a.is_empty()) {
            return Ok(());
        }
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty());
        if let Some(bus) = runtime.map(|dir| Path::new(&dir).join("bus")) {
            if bus.exists() {
                // Set before libdbus reads it, while only this thread runs D-Bus code.
                std::env::set_var(
                    "DBUS_SESSION_BUS_ADDRESS",
                    format!("unix:path={}", bus.display()),
                );
                return Ok(());
            }
        }
        Err("there is no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set and there is no $XDG_RUNTIME_DIR/bus), as in cron jobs, ssh logins and servers without a desktop".into())
    }

    fn unreachable(account: &str, why: impl std::fmt::Display) -> Error {
        Error::new(Kind::Config, "cannot reach the OS keyring", why).hint(format!(
            "to keep the tokens in a file (mode 0600) instead, set store = \"file\" in [accounts.{account}.oauth], then {}",
            crate::auth::login_hint(account)
        ))
    }

    fn failure(account: &str, what: &str, err: keyring_core::Error) -> Error {
        let kind = match err {
            // Locked: the desktop session may unlock it later.
            keyring_core::Error::NoStorageAccess(_) => Kind::Temporary,
            keyring_core::Error::PlatformFailure(_) => Kind::Temporary,
            _ => Kind::Internal,
        };
        let locked = kind == Kind::Temporary;
        let error = Error::from_cause(kind, what, err);
        match locked {
            true => error.hint(format!("unlock the keyring (log in to the desktop), or set store = \"file\" in [accounts.{account}.oauth] and log in again")),
            false => error,
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod keyring {
    //! Keychain and Credential Manager stores are not wired in yet.

    use super::Item;
    use crate::error::{Error, Kind, Result};
    use crate::secret::Secret;

    fn unsupported(account: &str) -> Error {
        Error::new(
            Kind::Config,
            "cannot use the OS keyring",
            "only the Linux Secret Service is supported so far",
        )
        .hint(format!(
            "set store = \"file\" in [accounts.{account}.oauth]"
        ))
    }

    pub fn get(account: &str, _: Item) -> Result<Option<Secret>> {
        Err(unsupported(account))
    }

    pub fn set(account: &str, _: Item, _: &Secret) -> Result<()> {
        Err(unsupported(account))
    }

    pub fn delete(account: &str, _: Item) -> Result<bool> {
        Err(unsupported(account))
    }

    pub fn open(account: &str) -> Result<()> {
        Err(unsupported(account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_account_names_are_file_names_others_are_hex() {
        assert_eq!(file_stem("gmail"), "gmail");
        assert_eq!(file_stem("me@work.com"), "me@work.com");
        assert_eq!(file_stem("../etc"), "x-2e2e2f657463");
        assert_eq!(file_stem(".hidden"), "x-2e68696464656e");
        assert_eq!(file_stem("a b"), "x-612062");
    }
}
