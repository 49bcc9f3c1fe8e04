//! The configuration file as written: the structs TOML is read into, and the value types
//! of its keys (`secret =`, `store =`, `client_secret =`...). Every key the file may hold
//! is a field here; the man page test reads them from this file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueMode {
    /// Send now; spool only what fails for a temporary reason.
    OnFailure,
    /// Spool every message first, then deliver it.
    Always,
    /// Never spool: a temporary failure is exit 75 (what msmtp does).
    Never,
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

/// `store = "keyring" | "file"` in `[accounts.NAME.oauth]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The OS keyring: the Secret Service (gnome-keyring, KWallet, KeePassXC) on Linux.
    Keyring,
    /// A file only its owner may read, in the state directory: for servers.
    File,
}

/// `client_secret = "..."`, or `{ file = "..." }` / `{ command = "..." }`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ClientSecret {
    Value(Secret),
    Source(SecretSource),
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// Plain connection upgraded with STARTTLS, which the server must offer.
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS: only for IP-authenticated relays, never with a secret.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// SASL XOAUTH2 with an OAuth2 access token.
    Xoauth2,
    /// SASL PLAIN or LOGIN with a password (app passwords, relay API keys).
    Password,
    /// No AUTH: the server trusts our IP address.
    None,
}

/// `transport =`: how an account's messages leave: SMTP, or an HTTPS API where SMTP
/// cannot go (ports 587 and 465 closed, SMTP AUTH switched off).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    Smtp,
    /// Gmail's `users.messages.send`, the message uploaded as it is.
    GmailApi,
    /// Microsoft Graph's `sendMail`, the message as MIME.
    Graph,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Gmail,
    Outlook,
    Custom,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    pub(super) domain: Option<String>,
    pub(super) default_account: Option<String>,
    #[serde(default)]
    pub(super) aliases: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub(super) accounts: BTreeMap<String, AccountFile>,
    pub(super) queue: Option<QueueMode>,
    pub(super) queue_dir: Option<PathBuf>,
    pub(super) log_file: Option<PathBuf>,
    pub(super) retry_initial: Option<String>,
    pub(super) retry_max: Option<String>,
    pub(super) max_age: Option<String>,
    pub(super) quota_hold: Option<String>,
    #[serde(default)]
    pub(super) service: super::service::ServiceSettings,
    #[serde(default)]
    pub(super) relay: super::relay::RelaySettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccountFile {
    pub(super) provider: Option<Provider>,
    pub(super) transport: Option<Transport>,
    /// The API's base address, for `transport = "gmail-api"` or `"graph"`.
    pub(super) api_uri: Option<String>,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) tls: Option<Tls>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) hello_name: Option<String>,
    /// Seconds.
    pub(super) timeout: Option<u64>,
    /// How many connections a queue drain may use at once for the account (1 to 16);
    /// any integer is read, so that the range check (presets.rs) says what is allowed.
    #[serde(default, deserialize_with = "any_integer")]
    pub(super) connections: Option<i64>,
    pub(super) from: OneOrMany,
    pub(super) user: Option<String>,
    pub(super) auth: Option<AuthMethod>,
    pub(super) secret: Option<SecretSource>,
    pub(super) oauth: Option<OAuthFile>,
}

/// `[accounts.NAME.oauth]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OAuthFile {
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<ClientSecret>,
    /// Microsoft: the directory (tenant) id or domain; "common" for a personal login.
    pub(super) tenant: Option<String>,
    pub(super) auth_uri: Option<String>,
    pub(super) token_uri: Option<String>,
    pub(super) device_uri: Option<String>,
    pub(super) scopes: Option<OneOrMany>,
    pub(super) store: Option<StoreKind>,
    /// A Google service account's JSON key file.
    pub(super) service_account: Option<PathBuf>,
    /// The mailbox a service account acts as (default: `user`).
    pub(super) subject: Option<String>,
    #[serde(default)]
    pub(super) client_credentials: bool,
}

/// An integer key whose error, for another type, names what the key takes.
fn any_integer<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<i64>, D::Error> {
    struct Integer;
    impl serde::de::Visitor<'_> for Integer {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number of connections from 1 to 16, without quotes")
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<i64, E> {
            Ok(n)
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<i64, E> {
            Ok(i64::try_from(n).unwrap_or(i64::MAX))
        }
    }
    deserializer.deserialize_i64(Integer).map(Some)
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}
