//! The `[service]` table: what the machine-wide service needs beyond the accounts (its
//! own user, who administers it, who may send as whom, how much each user may send).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `[service]` as the service uses it, defaults filled in.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// The Unix user the service runs as (root drops to it after binding).
    #[serde(default = "default_user")]
    pub user: String,
    /// Members see and manage everyone's queue and may run `login`.
    #[serde(default = "default_admin_group")]
    pub admin_group: String,
    /// Messages per local user per window; `None` ("none"): no limit.
    #[serde(default = "default_rate_limit", deserialize_with = "rate_limit")]
    pub rate_limit: Option<RateLimit>,
    /// The largest message the service takes, in bytes.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    /// A local user, or `@group`, -> the addresses it may use as `-f` or `From` ("*": any).
    #[serde(default)]
    pub senders: BTreeMap<String, Vec<String>>,
    /// A local user, or `@group`, -> the accounts it may use ("*": any); empty: every
    /// user may use every account. The default account is always allowed.
    #[serde(default)]
    pub accounts: BTreeMap<String, Vec<String>>,
    /// A Microsoft account's refresh token unused this long is used (a refresh): Entra ID
    /// voids one after 90 days without use.
    #[serde(default = "default_keep_alive", deserialize_with = "duration")]
    pub keep_alive: Duration,
}

/// `N/h`: at most `count` messages in any `window`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub count: u32,
    pub window: Duration,
}

impl Default for ServiceSettings {
    fn default() -> ServiceSettings {
        ServiceSettings {
            user: default_user(),
            admin_group: default_admin_group(),
            rate_limit: default_rate_limit(),
            max_message_size: default_max_message_size(),
            senders: BTreeMap::new(),
            accounts: BTreeMap::new(),
            keep_alive: default_keep_alive(),
        }
    }
}

fn default_user() -> String {
    "oauth-sendmail".into()
}

fn default_admin_group() -> String {
    "adm".into()
}

fn default_rate_limit() -> Option<RateLimit> {
    parse_rate_limit("100/h")
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    super::parse_duration(&text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "keep_alive = \"{text}\" is not a duration like \"12h\" or \"1d\""
            ))
        })
}

fn default_max_message_size() -> u64 {
    35 * 1024 * 1024
}

/// "100/h", "20/m", "1000/d", "50/10m"; "none" is no limit.
pub fn parse_rate_limit(text: &str) -> Option<RateLimit> {
    let (count, per) = text.trim().split_once('/')?;
    let count = count.trim().parse::<u32>().ok().filter(|n| *n > 0)?;
    let per = per.trim();
    let window = match per.starts_with(|c: char| c.is_ascii_digit()) {
        true => super::parse_duration(per)?,
        false => super::parse_duration(&format!("1{per}"))?,
    };
    (!window.is_zero()).then_some(RateLimit { count, window })
}

pub fn rate_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RateLimit>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim() == "none" {
        return Ok(None);
    }
    parse_rate_limit(&text).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "rate_limit = \"{text}\" is not a limit like \"100/h\", \"20/m\" or \"none\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_and_nonsense_does_not() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            parse_rate_limit("100/h"),
            Some(RateLimit {
                count: 100,
                window: hour
            })
        );
        assert_eq!(
            parse_rate_limit("5 / 10m").map(|l| l.window),
            Some(Duration::from_secs(600))
        );
        for bad in ["", "100", "0/h", "x/h", "10/x", "10/0s", "-1/h"] {
            assert_eq!(parse_rate_limit(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_table_has_defaults_and_refuses_unknown_keys() {
        let empty: ServiceSettings = toml::from_str("").unwrap();
        assert_eq!(empty, ServiceSettings::default());
        let set: ServiceSettings = toml::from_str(
            "user = \"mail\"\nrate_limit = \"none\"\n[senders]\n\"@www-data\" = [\"shop@example.com\"]\n",
        )
        .unwrap();
        assert_eq!(set.user, "mail");
        assert_eq!(set.rate_limit, None);
        assert_eq!(set.senders["@www-data"], ["shop@example.com"]);
        assert!(toml::from_str::<ServiceSettings>("usr = \"x\"\n").is_err());
        assert!(toml::from_str::<ServiceSettings>("rate_limit = \"lots\"\n").is_err());
    }

    #[test]
    fn every_key_is_documented() {
        crate::config::assert_documented(&[
            "[service]",
            "user",
            "admin_group",
            "rate_limit",
            "max_message_size",
            "keep_alive",
            "[service.senders]",
            "[service.accounts]",
        ]);
    }
}
