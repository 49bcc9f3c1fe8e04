//! Who may send as whom, and how much: the submitter as the kernel names it, the
//! `[service.senders]` rules for `-f` and `From`, the rewriting of a `From` the policy
//! does not allow, and the per-user rate limit (over it, mail is held, not refused).

use std::collections::{HashMap, VecDeque};

use crate::config::service::{RateLimit, ServiceSettings};
use crate::config::Account;
use crate::message::address;
use crate::sys::users;

/// The local user who handed a message in: from SO_PEERCRED or a drop file's owner.
#[derive(Clone, Debug, PartialEq)]
pub struct Submitter {
    pub uid: u32,
    /// The passwd name, or `#UID` for an id passwd does not know.
    pub name: String,
    pub groups: Vec<u32>,
}

impl Submitter {
    pub fn from_ids(uid: u32, gid: u32) -> Submitter {
        match users::by_uid(uid) {
            Some(user) => Submitter {
                uid,
                groups: users::groups_of(&user),
                name: user.name,
            },
            None => Submitter {
                uid,
                name: format!("#{uid}"),
                groups: vec![gid],
            },
        }
    }

    /// Root, or a member of `admin_group`: sees and manages everyone's mail.
    pub fn is_admin(&self, settings: &ServiceSettings) -> bool {
        self.uid == 0
            || users::group_id(&settings.admin_group).is_some_and(|gid| self.groups.contains(&gid))
    }

    /// "uid 33 (www-data)", as the trace header and the log name it.
    pub fn describe(&self) -> String {
        format!("uid {}", self.describe_tail())
    }

    /// "33 (www-data)": what follows "uid " in [`Submitter::describe`].
    pub fn describe_tail(&self) -> String {
        format!("{} ({})", self.uid, self.name)
    }

    fn in_group(&self, group: &str) -> bool {
        users::group_id(group).is_some_and(|gid| self.groups.contains(&gid))
    }
}

/// May `submitter` use `address` as envelope sender or `From`? The account's own
/// addresses always; others where `[service.senders]` lists them (or "*") for the user
/// or one of its groups.
pub fn may_send_as(
    settings: &ServiceSettings,
    account: &Account,
    submitter: &Submitter,
    address: &str,
) -> bool {
    if address.is_empty()
        || account
            .addresses
            .iter()
            .any(|a| a.eq_ignore_ascii_case(address))
    {
        return true;
    }
    allowed_by(&settings.senders, submitter, address)
}

/// Whether a rule of `table` for the submitter or one of its groups lists `value` (or "*").
fn allowed_by(
    table: &std::collections::BTreeMap<String, Vec<String>>,
    submitter: &Submitter,
    value: &str,
) -> bool {
    table.iter().any(|(who, allowed)| {
        let applies = match who.strip_prefix('@') {
            Some(group) => submitter.in_group(group),
            None => *who == submitter.name,
        };
        applies
            && allowed
                .iter()
                .any(|a| a == "*" || a.eq_ignore_ascii_case(value))
    })
}

/// May `submitter` send through the account named `account`? Every account when
/// `[service.accounts]` is empty; else the default account, and those listed for the
/// user or one of its groups.
pub fn may_use_account(
    settings: &ServiceSettings,
    default_account: Option<&str>,
    submitter: &Submitter,
    account: &str,
) -> bool {
    settings.accounts.is_empty()
        || default_account == Some(account)
        || allowed_by(&settings.accounts, submitter, account)
}

/// The display name that shows the local user: "www-data on HOST".
pub fn display_name(submitter: &Submitter, host: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || "._-+#".contains(*c))
            .collect()
    };
    format!("{} on {}", clean(&submitter.name), clean(host))
}

/// Replaces a `From` whose addresses the policy does not allow with one of the account's
/// address and the local user's name, keeping the original in `X-Original-From:`. `head`
/// is the header block intake made (CRLF lines, ending in an empty line). Returns whether
/// it changed anything.
pub fn enforce_from(head: &mut Vec<u8>, allowed: impl Fn(&str) -> bool, replacement: &str) -> bool {
    let Some((start, end)) = find_field(head, b"from") else {
        return false;
    };
    let value = &head[start + 5..end];
    let entries = address::parse_list(value);
    let mailboxes: Vec<&address::Mailbox> = entries.iter().flat_map(|e| e.mailboxes()).collect();
    if !mailboxes.is_empty() && mailboxes.iter().all(|m| allowed(&m.address)) {
        return false;
    }
    let mut original = b"X-Original-From:".to_vec();
    original.extend_from_slice(value);
    let mut field = format!("From: {replacement}\r\n").into_bytes();
    field.extend_from_slice(&original);
    head.splice(start..end, field);
    true
}

/// The byte range of the first header field named `name` (lower case), continuation
/// lines included, up to and including its last CRLF.
fn find_field(head: &[u8], name: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    while at < head.len() {
        let line_end =
            memchr::memmem::find(&head[at..], b"\r\n").map_or(head.len(), |n| at + n + 2);
        let line = &head[at..line_end];
        if line == b"\r\n" {
            return None;
        }
        let named = line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':';
        if named {
            let mut end = line_end;
            while end < head.len() && matches!(head[end], b' ' | b'\t') {
                end =
                    memchr::memmem::find(&head[end..], b"\r\n").map_or(head.len(), |n| end + n + 2);
            }
            return Some((at, end));
        }
        at = line_end;
    }
    None
}

/// What the rate limit says about one more message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Admission {
    Now,
    /// Accepted, but not tried before this Unix time; `first` for the first message held
    /// in this window (the one that is logged).
    Held {
        until: u64,
        first: bool,
    },
    /// Far over the limit: refused, the window resets then.
    Refused {
        reset: u64,
    },
}

/// Messages accepted per user in the sliding window, in memory (a restart forgets it:
/// the worst case is one more window's worth).
#[derive(Default)]
pub struct RateLimiter {
    accepted: HashMap<u32, VecDeque<u64>>,
}

/// A user with this many times the limit waiting is refused.
const REFUSE_FACTOR: usize = 10;

impl RateLimiter {
    /// Counts one more message of `uid` at `now`. Root is not limited: its mail is the
    /// machine's own (cron, smartd, mdadm).
    pub fn admit(&mut self, uid: u32, now: u64, limit: Option<RateLimit>) -> Admission {
        let Some(limit) = limit.filter(|_| uid != 0) else {
            return Admission::Now;
        };
        let window = limit.window.as_secs();
        let count = limit.count as usize;
        let times = self.accepted.entry(uid).or_default();
        // Each entry is when that message may go; those whose window is over are done.
        while times.front().is_some_and(|t| t + window <= now) {
            times.pop_front();
        }
        if times.len() >= count * (REFUSE_FACTOR + 1) {
            let reset = times[times.len() - count] + window;
            return Admission::Refused { reset };
        }
        if times.len() < count {
            times.push_back(now);
            return Admission::Now;
        }
        // The slot of the message `count` places before this one, one window later.
        let until = times[times.len() - count] + window;
        let first = times.back().is_none_or(|last| *last <= now);
        times.push_back(until.max(now));
        Admission::Held { until, first }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn account() -> Account {
        let config = crate::config::Config::parse(
            "[accounts.a]\nprovider = \"custom\"\nhost = \"h\"\nport = 25\ntls = \"none\"\nauth = \"none\"\nfrom = \"box@example.com\"\n",
            std::path::Path::new("/c.toml"),
        )
        .unwrap();
        config.accounts["a"].clone()
    }

    fn someone(name: &str) -> Submitter {
        Submitter {
            uid: 1234,
            name: name.into(),
            groups: vec![0],
        }
    }

    #[test]
    fn senders_follow_the_policy() {
        let mut settings = ServiceSettings::default();
        settings
            .senders
            .insert("alice".into(), vec!["alice@example.com".into()]);
        settings.senders.insert("@root".into(), vec!["*".into()]);
        let account = account();
        let alice = Submitter {
            groups: vec![999_999],
            ..someone("alice")
        };
        assert!(may_send_as(&settings, &account, &alice, "BOX@example.com"));
        assert!(may_send_as(
            &settings,
            &account,
            &alice,
            "Alice@Example.com"
        ));
        assert!(!may_send_as(
            &settings,
            &account,
            &alice,
            "boss@example.com"
        ));
        // In group root (gid 0): anything.
        assert!(may_send_as(&settings, &account, &someone("bob"), "x@y.z"));
    }

    #[test]
    fn accounts_follow_the_policy() {
        let mut settings = ServiceSettings::default();
        let alice = someone("alice");
        assert!(may_use_account(&settings, Some("main"), &alice, "shop"));
        settings
            .accounts
            .insert("@root".into(), vec!["shop".into()]);
        settings.accounts.insert("bob".into(), vec!["*".into()]);
        let outsider = Submitter {
            groups: vec![999_999],
            ..someone("carol")
        };
        assert!(may_use_account(&settings, Some("main"), &outsider, "main"));
        assert!(!may_use_account(&settings, Some("main"), &outsider, "shop"));
        assert!(may_use_account(&settings, Some("main"), &alice, "shop"));
        assert!(!may_use_account(&settings, Some("main"), &alice, "other"));
        assert!(may_use_account(&settings, None, &someone("bob"), "other"));
    }

    #[test]
    fn a_from_not_allowed_is_replaced_and_kept() {
        let mut head =
            b"Subject: hi\r\nFrom: Boss <boss@example.com>,\r\n  x@y.z\r\nTo: a@b.c\r\n\r\n"
                .to_vec();
        let changed = enforce_from(
            &mut head,
            |a| a == "box@example.com",
            "\"www-data on h\" <box@example.com>",
        );
        assert!(changed);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "Subject: hi\r\nFrom: \"www-data on h\" <box@example.com>\r\nX-Original-From: Boss <boss@example.com>,\r\n  x@y.z\r\nTo: a@b.c\r\n\r\n"
        );
        let mut allowed = b"From: box@example.com\r\n\r\nFrom: body\r\n".to_vec();
        let before = allowed.clone();
        assert!(!enforce_from(&mut allowed, |a| a == "box@example.com", "x"));
        assert_eq!(allowed, before);
        // The body's "From:" is not a header.
        let mut none = b"Subject: x\r\n\r\nFrom: boss@example.com\r\n".to_vec();
        assert!(!enforce_from(&mut none, |_| false, "x"));
    }

    #[test]
    fn over_the_limit_mail_is_held_then_refused() {
        let limit = Some(RateLimit {
            count: 2,
            window: Duration::from_secs(100),
        });
        let mut limiter = RateLimiter::default();
        assert_eq!(limiter.admit(7, 1000, limit), Admission::Now);
        assert_eq!(limiter.admit(7, 1010, limit), Admission::Now);
        assert_eq!(
            limiter.admit(7, 1020, limit),
            Admission::Held {
                until: 1100,
                first: true
            }
        );
        assert_eq!(
            limiter.admit(7, 1021, limit),
            Admission::Held {
                until: 1110,
                first: false
            }
        );
        // Others and root are not counted with uid 7.
        assert_eq!(limiter.admit(8, 1021, limit), Admission::Now);
        for _ in 0..100 {
            limiter.admit(0, 1021, limit);
        }
        assert_eq!(limiter.admit(0, 1021, limit), Admission::Now);
        let refused = (0..30)
            .map(|_| limiter.admit(7, 1030, limit))
            .find(|a| matches!(a, Admission::Refused { .. }));
        assert!(refused.is_some());
        // A window later the user may send again.
        assert_eq!(limiter.admit(7, 100_000, limit), Admission::Now);
    }
}
