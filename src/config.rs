//! The TOML configuration: where it is looked for, what it may hold, and the accounts it
//! defines with their provider presets filled in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::credential::SecretSource;
use crate::error::{Error, Kind, Result};

/// The configuration as the rest of the program uses it.
#[derive(Debug, Default)]
pub struct Config {
    /// The file it was read from; `None` when no file exists (dry runs still work).
    pub path: Option<PathBuf>,
    /// Domain for unqualified addresses (`root` -> `root@domain`).
    pub domain: Option<String>,
    /// Local name (lower case) -> addresses; `*` is the catch-all.
    pub aliases: BTreeMap<String, Vec<String>>,
    pub accounts: BTreeMap<String, Account>,
    default_account: Option<String>,
}

/// One way of submitting mail: a server, who we are there, and how we prove it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub ca_file: Option<PathBuf>,
    pub hello_name: Option<String>,
    pub timeout: Duration,
    /// Addresses this account sends as; the first is the default envelope sender.
    pub addresses: Vec<String>,
    pub user: String,
    pub auth: AuthMethod,
    pub secret: Option<SecretSource>,
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

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Provider {
    Gmail,
    Outlook,
    Custom,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    domain: Option<String>,
    default_account: Option<String>,
    #[serde(default)]
    aliases: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    accounts: BTreeMap<String, AccountFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountFile {
    provider: Option<Provider>,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<Tls>,
    ca_file: Option<PathBuf>,
    hello_name: Option<String>,
    /// Seconds.
    timeout: Option<u64>,
    from: OneOrMany,
    user: Option<String>,
    auth: Option<AuthMethod>,
    secret: Option<SecretSource>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The places searched, in order, when no file is named on the command line.
pub fn search_path() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(path) = std::env::var_os("OAUTH_SENDMAIL_CONFIG") {
        paths.push(PathBuf::from(path));
        return paths;
    }
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")));
    if let Some(dir) = xdg {
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
                Ok(text) => return Config::parse(&text, &path),
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

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let bad = |why: String| {
            Error::new(
                Kind::Config,
                format!("bad configuration in {}", path.display()),
                why,
            )
        };
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| bad(describe_toml_error(&e, text)))?;
        let mut accounts = BTreeMap::new();
        for (name, account) in file.accounts {
            let account = Account::from_file(&name, account)
                .map_err(|why| bad(format!("account `{name}`: {why}")))?;
            accounts.insert(name, account);
        }
        if let Some(default) = &file.default_account {
            if !accounts.contains_key(default) {
                return Err(bad(format!(
                    "default_account `{default}` is not one of the [accounts]"
                )));
            }
        }
        let aliases = file
            .aliases
            .into_iter()
            .map(|(name, targets)| (name.to_ascii_lowercase(), targets.into_vec()))
            .collect();
        Ok(Config {
            path: Some(path.to_path_buf()),
            domain: file.domain,
            aliases,
            accounts,
            default_account: file.default_account,
        })
    }

    /// Picks the account: by name, else the one that sends as `sender`, else the default.
    pub fn choose_account(&self, name: Option<&str>, sender: Option<&str>) -> Result<&Account> {
        if let Some(name) = name {
            return self.accounts.get(name).ok_or_else(|| {
                Error::new(
                    Kind::Config,
                    format!("no account `{name}`"),
                    self.where_accounts_are(),
                )
            });
        }
        if let Some(sender) = sender {
            let sends_as = |a: &&Account| {
                a.addresses
                    .iter()
                    .any(|addr| addr.eq_ignore_ascii_case(sender))
            };
            if let Some(account) = self.accounts.values().find(sends_as) {
                return Ok(account);
            }
        }
        if let Some(default) = &self.default_account {
            return Ok(&self.accounts[default]);
        }
        let mut all = self.accounts.values();
        match (all.next(), all.next()) {
            (Some(only), None) => Ok(only),
            (None, _) => Err(Error::new(
                Kind::Config,
                "no account to send with",
                self.where_accounts_are(),
            )
            .hint("add an [accounts.NAME] table; see the README's quick start")),
            (Some(_), Some(_)) => Err(Error::new(
                Kind::Config,
                "several accounts and no default",
                self.where_accounts_are(),
            )
            .hint("set default_account, or pass --account NAME")),
        }
    }

    fn where_accounts_are(&self) -> String {
        match &self.path {
            Some(path) => format!("{} defines {}", path.display(), self.account_names()),
            None => {
                let searched: Vec<String> = search_path()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                format!("no configuration file (looked for {})", searched.join(", "))
            }
        }
    }

    fn account_names(&self) -> String {
        if self.accounts.is_empty() {
            return "no accounts".into();
        }
        let names: Vec<&str> = self.accounts.keys().map(String::as_str).collect();
        format!("accounts {}", names.join(", "))
    }
}

impl Account {
    fn from_file(name: &str, file: AccountFile) -> std::result::Result<Account, String> {
        let provider = file.provider.unwrap_or(Provider::Custom);
        let (preset_host, preset_tls) = match provider {
            Provider::Gmail => (Some("smtp.gmail.com"), Tls::Starttls),
            Provider::Outlook => (Some("smtp.office365.com"), Tls::Starttls),
            Provider::Custom => (None, Tls::Starttls),
        };
        let host = file.host.or(preset_host.map(String::from)).ok_or(
            "`host` is needed when provider is custom (or set provider = \"gmail\" or \"outlook\")",
        )?;
        let tls = file.tls.unwrap_or(preset_tls);
        let port = file.port.unwrap_or(match tls {
            Tls::Starttls => 587,
            Tls::Implicit => 465,
            Tls::None => 25,
        });
        let addresses = file.from.into_vec();
        let first = addresses
            .first()
            .ok_or("`from` needs at least one address")?;
        if let Some(bad) = addresses.iter().find(|a| !a.contains('@')) {
            return Err(format!("`from` address `{bad}` has no domain"));
        }
        let user = file.user.unwrap_or_else(|| first.clone());
        let auth = file.auth.unwrap_or(match provider {
            Provider::Gmail | Provider::Outlook => AuthMethod::Xoauth2,
            Provider::Custom if file.secret.is_some() => AuthMethod::Password,
            Provider::Custom => AuthMethod::None,
        });
        if auth != AuthMethod::None && file.secret.is_none() {
            return Err("`secret` is needed to authenticate: secret = { file = \"PATH\" } or { command = \"CMD\" }".into());
        }
        if tls == Tls::None && auth != AuthMethod::None {
            return Err(
                "tls = \"none\" would send the secret in clear: use starttls or implicit".into(),
            );
        }
        Ok(Account {
            name: name.to_string(),
            host,
            port,
            tls,
            ca_file: file.ca_file,
            hello_name: file.hello_name,
            timeout: file.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs),
            addresses,
            user,
            auth,
            secret: file.secret,
        })
    }

    /// The default envelope sender.
    pub fn address(&self) -> &str {
        &self.addresses[0]
    }
}

/// toml's message with the line number spelled out first, so it reads "line 3: ...".
fn describe_toml_error(err: &toml::de::Error, text: &str) -> String {
    let message = err.message().trim_end();
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/oauth-sendmail/config.toml"))
    }

    #[test]
    fn gmail_preset_fills_host_port_tls_auth() {
        let config = parse(
            "[accounts.me]\nprovider = \"gmail\"\nfrom = \"me@gmail.com\"\nsecret = { command = \"oama access me@gmail.com\" }\n",
        )
        .unwrap();
        let account = &config.accounts["me"];
        assert_eq!(
            (account.host.as_str(), account.port, account.tls),
            ("smtp.gmail.com", 587, Tls::Starttls)
        );
        assert_eq!(account.auth, AuthMethod::Xoauth2);
        assert_eq!(account.user, "me@gmail.com");
    }

    #[test]
    fn any_field_overrides_the_preset() {
        let config = parse(
            "[accounts.me]\nprovider = \"outlook\"\nport = 465\ntls = \"implicit\"\nfrom = [\"a@x.org\", \"b@x.org\"]\nuser = \"login\"\nsecret = { file = \"/s\" }\n",
        )
        .unwrap();
        let account = &config.accounts["me"];
        assert_eq!(
            (account.host.as_str(), account.port, account.tls),
            ("smtp.office365.com", 465, Tls::Implicit)
        );
        assert_eq!(account.addresses, ["a@x.org", "b@x.org"]);
        assert_eq!(account.user, "login");
    }

    #[test]
    fn relay_without_auth_needs_no_secret() {
        let config =
            parse("[accounts.relay]\nhost = \"smtp-relay.gmail.com\"\nfrom = \"cron@x.org\"\n")
                .unwrap();
        assert_eq!(config.accounts["relay"].auth, AuthMethod::None);
    }

    #[test]
    fn unknown_key_names_the_key_the_file_and_the_line() {
        let err = parse(
            "domain = \"x.org\"\n\n[accounts.me]\nfrom = \"a@x.org\"\nhots = \"smtp.x.org\"\n",
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 78);
        let text = err.to_string();
        assert!(text.contains("/etc/oauth-sendmail/config.toml"), "{text}");
        assert!(text.contains("hots"), "{text}");
        assert!(text.contains("line 5"), "{text}");
    }

    #[test]
    fn secret_in_clear_text_is_refused() {
        let err = parse("[accounts.me]\nhost = \"h\"\ntls = \"none\"\nfrom = \"a@x.org\"\nauth = \"password\"\nsecret = { file = \"/s\" }\n")
            .unwrap_err();
        assert!(err.to_string().contains("clear"), "{err}");
    }

    #[test]
    fn auth_without_secret_is_refused() {
        let err =
            parse("[accounts.me]\nprovider = \"gmail\"\nfrom = \"a@gmail.com\"\n").unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn aliases_take_one_or_many_and_are_case_insensitive() {
        let config =
            parse("[aliases]\nRoot = \"a@x.org\"\nops = [\"b@x.org\", \"c@x.org\"]\n").unwrap();
        assert_eq!(config.aliases["root"], ["a@x.org"]);
        assert_eq!(config.aliases["ops"], ["b@x.org", "c@x.org"]);
    }

    const TWO: &str = "default_account = \"home\"\n[accounts.home]\nhost = \"h\"\nfrom = \"me@home.org\"\n[accounts.work]\nhost = \"w\"\nfrom = [\"me@work.com\", \"boss@work.com\"]\n";

    #[test]
    fn account_chosen_by_name_then_sender_then_default() {
        let config = parse(TWO).unwrap();
        assert_eq!(
            config.choose_account(Some("work"), None).unwrap().name,
            "work"
        );
        assert_eq!(
            config
                .choose_account(None, Some("Boss@Work.com"))
                .unwrap()
                .name,
            "work"
        );
        assert_eq!(
            config
                .choose_account(None, Some("other@x.org"))
                .unwrap()
                .name,
            "home"
        );
        assert_eq!(config.choose_account(None, None).unwrap().name, "home");
        assert_eq!(
            config
                .choose_account(Some("nope"), None)
                .unwrap_err()
                .exit_code(),
            78
        );
    }

    #[test]
    fn several_accounts_without_default_is_an_error_with_a_hint() {
        let config = parse(&TWO.replace("default_account = \"home\"\n", "")).unwrap();
        let err = config.choose_account(None, None).unwrap_err();
        assert!(err.to_string().contains("default_account"), "{err}");
    }

    #[test]
    fn default_account_must_exist() {
        assert!(parse("default_account = \"x\"\n").is_err());
    }

    #[test]
    fn missing_file_is_an_empty_config_unless_named() {
        let missing = Path::new("/nonexistent/oauth-sendmail.toml");
        assert_eq!(Config::load(Some(missing)).unwrap_err().exit_code(), 78);
    }
}
