//! The `[relay]` table: the SMTP listeners the service opens for printers, scanners and
//! appliances on the LAN, and the devices that may submit through them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::service::{parse_rate_limit, RateLimit};

/// `[relay]`: no listener, no relay.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// `[[relay.listener]]`, each one address and port.
    #[serde(default)]
    pub listener: Vec<Listener>,
    /// `[relay.devices.NAME]`.
    #[serde(default)]
    pub devices: BTreeMap<String, Device>,
}

/// How a listener talks TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    /// Plain first, STARTTLS offered; AUTH only after it (port 587, 25).
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS at all, for old devices on a trusted LAN; AUTH in the clear, logged loudly.
    None,
}

/// One `[[relay.listener]]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// The address to bind (`0.0.0.0`, `192.168.1.5`, `::`).
    #[serde(default = "default_address")]
    pub address: String,
    pub port: u16,
    #[serde(default = "default_tls")]
    pub tls: ListenerTls,
    /// PEM certificate chain and key; both absent: one generated on first start and kept
    /// in the service's state directory.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The largest message taken, in bytes (advertised as SIZE).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    /// The account devices relay through when theirs names none (default: the default
    /// account).
    pub account: Option<String>,
}

/// One `[relay.devices.NAME]`: a password verifier, a network, or both.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The verifier `device add` wrote (`hmac-sha256$SALT$MAC`); never the password.
    pub password_hash: Option<String>,
    /// Addresses (CIDR) the device may send from; with no password it is let in by
    /// address alone, with one it must come from there too.
    #[serde(default, deserialize_with = "one_or_many")]
    pub network: Vec<String>,
    /// The account its mail goes out through (default: the listener's).
    pub account: Option<String>,
    /// The address its mail is sent as (envelope and From); default the account's.
    pub sender: Option<String>,
    /// Where its bounces go (default: nowhere but the log).
    pub notify: Option<String>,
    /// Messages per window; absent: "100/h".
    #[serde(
        default = "default_rate_limit",
        deserialize_with = "super::service::rate_limit"
    )]
    pub rate_limit: Option<RateLimit>,
}

fn default_address() -> String {
    "0.0.0.0".into()
}

fn default_tls() -> ListenerTls {
    ListenerTls::Starttls
}

fn default_max_message_size() -> u64 {
    35 * 1024 * 1024
}

fn default_rate_limit() -> Option<RateLimit> {
    parse_rate_limit("100/h")
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_and_devices_parse_with_defaults() {
        let relay: RelaySettings = toml::from_str(
            "[[listener]]\nport = 587\n[[listener]]\naddress = \"127.0.0.1\"\nport = 465\ntls = \"implicit\"\n\
             [devices.printer]\nnetwork = \"192.168.1.0/24\"\nsender = \"printer@example.com\"\n",
        )
        .unwrap();
        assert_eq!(relay.listener[0].address, "0.0.0.0");
        assert_eq!(relay.listener[0].tls, ListenerTls::Starttls);
        assert_eq!(relay.listener[1].tls, ListenerTls::Implicit);
        let printer = &relay.devices["printer"];
        assert_eq!(printer.network, ["192.168.1.0/24"]);
        assert_eq!(printer.rate_limit, default_rate_limit());
        assert!(
            toml::from_str::<RelaySettings>("[[listener]]\nport = 25\ntls = \"ssl3\"\n").is_err()
        );
        assert!(toml::from_str::<RelaySettings>("[devices.x]\npassword = \"p\"\n").is_err());
    }

    #[test]
    fn every_key_is_documented() {
        crate::config::assert_documented(&[
            "[[relay.listener]]",
            "address",
            "port",
            "tls",
            "cert_file",
            "key_file",
            "max_message_size",
            "account",
            "[relay.devices.",
            "password_hash",
            "network",
            "sender",
            "notify",
            "rate_limit",
        ]);
    }
}
