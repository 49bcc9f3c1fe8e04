//! Accounts whose whole queue waits: a provider's sending quota used up (until the window
//! is likely over), or a login a person must renew (until someone logs in again; probed
//! hourly). One small file per account under the queue's `holds/`, written durably, so
//! every flusher, a direct send and `status` see the same state.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind, Result};
use crate::sys::clock::when;
use crate::sys::files;

/// A held account is probed again (one message tried) this often while it needs a login:
/// a Conditional Access block can lift by itself. Also the most a login hold is logged.
pub const LOGIN_PROBE: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The provider's sending quota (or rate) for the account is used up.
    Quota,
    /// The refresh token was refused (revoked, expired): `login` again.
    NeedsLogin,
}

/// One account's hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub account: String,
    pub cause: Cause,
    /// Unix seconds: since when the account is held (kept across renewals).
    pub since: u64,
    /// Unix seconds: no message of the account is tried before then (unless forced).
    pub until: u64,
    /// What the server or token endpoint said.
    pub reason: String,
}

impl Hold {
    pub fn is_active(&self, now: u64) -> bool {
        now < self.until
    }

    /// The failure a send through the held account meets without connecting: temporary
    /// for a quota, a refused login (exit 77, the message queued) for a login.
    pub fn as_error(&self) -> Error {
        let now = crate::sys::clock::now();
        let (kind, why) = match self.cause {
            Cause::Quota => (Kind::Temporary, "its sending quota is used up"),
            Cause::NeedsLogin => (Kind::AuthRefused, "it needs a login"),
        };
        let err = Error::new(
            kind,
            format!(
                "account `{}` is held until {}",
                self.account,
                when(self.until, now)
            ),
            format!("{why}: {}", self.reason),
        );
        match self.cause {
            Cause::Quota => err,
            Cause::NeedsLogin => err.hint(crate::auth::login_hint(&self.account)),
        }
    }

    /// The line the service's journal (or a flush's stderr) gets when the hold is set.
    pub fn describe(&self) -> String {
        let now = crate::sys::clock::now();
        let what = match self.cause {
            Cause::Quota => "the provider's sending quota is used up",
            Cause::NeedsLogin => "it needs a login (run `oauth-sendmail login`)",
        };
        format!(
            "account `{}` held until {}: {what}: {}",
            self.account,
            when(self.until, now),
            self.reason
        )
    }
}

/// The holds of one queue directory.
pub struct Holds {
    dir: PathBuf,
}

impl Holds {
    pub fn of_queue(queue_dir: &Path) -> Holds {
        Holds {
            dir: queue_dir.join("holds"),
        }
    }

    fn file(&self, account: &str) -> PathBuf {
        // Account names are the configuration's keys: anything but a plain name escaped.
        let name: String = account
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.dir.join(format!("{name}.json"))
    }

    /// The account's hold, active or run out; `None` when there is none (or it cannot be
    /// read: a hold is an optimisation of retries, never a reason to lose mail).
    pub fn get(&self, account: &str) -> Option<Hold> {
        let bytes = fs::read(self.file(account)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The account's hold while it lasts at `now`.
    pub fn active(&self, account: &str, now: u64) -> Option<Hold> {
        self.get(account).filter(|hold| hold.is_active(now))
    }

    /// Every hold recorded, active or not.
    pub fn all(&self) -> Vec<Hold> {
        let Ok(read) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut holds: Vec<Hold> = read
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
            .collect();
        holds.sort_by(|a, b| a.account.cmp(&b.account));
        holds
    }

    /// Holds `account` for `wait` from `now` because of `cause`; a hold of the same cause
    /// already there keeps its `since` (a renewal).
    pub fn set(
        &self,
        account: &str,
        cause: Cause,
        wait: Duration,
        reason: &str,
        now: u64,
    ) -> Result<Hold> {
        let earlier = self.get(account).filter(|h| h.cause == cause);
        let hold = Hold {
            account: account.to_string(),
            cause,
            since: earlier.as_ref().map_or(now, |h| h.since),
            until: now + wait.as_secs().max(1),
            reason: reason.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&hold).expect("a hold always serializes");
        files::write_private(&self.file(account), &bytes)
            .map_err(|e| e.within(format!("cannot hold account `{account}`")))?;
        Ok(hold)
    }

    /// Ends the account's hold (a delivery went through, a login was made).
    pub fn clear(&self, account: &str) {
        let _ = fs::remove_file(self.file(account));
    }

    /// After `err` stopped a send through `account`: holds the account when the failure
    /// is the account's, and says so once per hold on stderr (the journal; a login hold
    /// is renewed at most hourly, so said at most hourly).
    pub fn after_failure(&self, account: &str, err: &Error, quota_hold: Duration) -> Option<Hold> {
        let (cause, wait) = for_failure(err, quota_hold)?;
        let now = crate::sys::clock::now();
        match self.set(account, cause, wait, &err.summary(), now) {
            Ok(hold) => {
                eprintln!("oauth-sendmail: {}", hold.describe());
                Some(hold)
            }
            Err(e) => {
                eprintln!("oauth-sendmail: warning: {}", e.summary());
                None
            }
        }
    }
}

/// The hold a failure to deliver calls for, if any: the provider's quota (as long as the
/// reply says, at most `quota_hold`), or a refused login (probed hourly).
pub fn for_failure(err: &Error, quota_hold: Duration) -> Option<(Cause, Duration)> {
    if let Some(wait) = err.account_hold() {
        return Some((Cause::Quota, wait.min(quota_hold)));
    }
    err.is_auth_refused()
        .then_some((Cause::NeedsLogin, LOGIN_PROBE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_is_kept_per_account_and_renewals_keep_since() {
        let dir = tempfile::tempdir().unwrap();
        let holds = Holds::of_queue(dir.path());
        let wait = Duration::from_secs(60);
        let quota = |now| {
            holds
                .set("a/b", Cause::Quota, wait, "550 5.4.5", now)
                .unwrap()
        };
        let hold = quota(100);
        assert!(hold.is_active(159) && !hold.is_active(160));
        let hold = quota(150);
        assert_eq!((hold.since, hold.until), (100, 210));
        assert!(holds.active("a/b", 200).is_some() && holds.active("other", 0).is_none());
        assert_eq!(holds.all().len(), 1);
        holds.clear("a/b");
        assert!(holds.get("a/b").is_none());
    }

    #[test]
    fn quota_and_refused_logins_hold_the_account() {
        let hour = Duration::from_secs(3600);
        let quota = Error::new(Kind::Temporary, "x", "y").holds_account(hour);
        let cap = Duration::from_secs(2);
        assert_eq!(for_failure(&quota, cap), Some((Cause::Quota, cap)));
        let refused = Error::new(Kind::AuthRefused, "x", "invalid_grant");
        assert_eq!(
            for_failure(&refused, cap),
            Some((Cause::NeedsLogin, LOGIN_PROBE))
        );
        assert_eq!(
            for_failure(&Error::new(Kind::Temporary, "x", "y"), cap),
            None
        );
    }
}
