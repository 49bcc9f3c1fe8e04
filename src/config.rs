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
    pub queue: QueueSettings,
}

/// When messages are spooled, where, and how long they are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    pub mode: QueueMode,
    pub dir: PathBuf,
    /// The delivery log (JSON Lines).
    pub log_file: PathBuf,
    /// The first retry comes this long after a failure; each next one twice as long...
    pub retry_initial: Duration,
    /// ...but never longer than this.
    pub retry_max: Duration,
    /// A message still undelivered after this long is bounced.
    pub max_age: Duration,
}

impl Default for QueueSettings {
    fn default() -> QueueSettings {
        let state = state_dir();
        QueueSettings {
            mode: QueueMode::OnFailure,
            dir: state.join("queue"),
            log_file: state.join("delivery.log"),
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(4 * 3600),
            max_age: Duration::from_secs(5 * 86400),
        }
    }
}

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

/// `$XDG_STATE_HOME/oauth-sendmail`, by default `~/.local/state/oauth-sendmail`.
fn state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/spool"));
    base.join("oauth-sendmail")
}

/// "90s", "15m", "4h", "5d", "1w", or plain seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return None,
    };
    number
        .parse::<u64>()
        .ok()?
        .checked_mul(seconds)
        .map(Duration::from_secs)
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
    queue: Option<QueueMode>,
    queue_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    max_age: Option<String>,
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
        let defaults = QueueSettings::default();
        let duration = |key: &str, value: Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => parse_duration(&text).ok_or_else(|| {
                bad(format!(
                    "{key} = \"{text}\" is not a duration like \"90s\", \"15m\", \"4h\" or \"5d\""
                ))
            }),
        };
        let queue = QueueSettings {
            mode: file.queue.unwrap_or(defaults.mode),
            dir: file.queue_dir.unwrap_or(defaults.dir),
            log_file: file.log_file.unwrap_or(defaults.log_file),
            retry_initial: duration("retry_initial", file.retry_initial, defaults.retry_initial)?,
            retry_max: duration("retry_max", file.retry_max, defaults.retry_max)?,
            max_age: duration("max_age", file.max_age, defaults.max_age)?,
        };
        Ok(Config {
            path: Some(path.to_path_buf()),
            domain: file.domain,
            aliases,
            accounts,
            default_account: file.default_account,
            queue,
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
    fn queue_settings_default_and_override() {
        let config = parse("").unwrap();
        assert_eq!(config.queue.mode, QueueMode::OnFailure);
        assert_eq!(config.queue.max_age, Duration::from_secs(5 * 86400));
        let config = parse("queue = \"never\"\nqueue_dir = \"/var/spool/x\"\nretry_initial = \"30s\"\nretry_max = \"2h\"\nmax_age = \"1d\"\n").unwrap();
        assert_eq!(config.queue.mode, QueueMode::Never);
        assert_eq!(config.queue.dir, PathBuf::from("/var/spool/x"));
        assert_eq!(config.queue.retry_initial, Duration::from_secs(30));
        assert_eq!(config.queue.retry_max, Duration::from_secs(7200));
        assert_eq!(config.queue.max_age, Duration::from_secs(86400));
        assert_eq!(
            parse("queue = \"on-failure\"\n").unwrap().queue.mode,
            QueueMode::OnFailure
        );
        assert_eq!(
            parse("queue = \"always\"\n").unwrap().queue.mode,
            QueueMode::Always
        );
        let err = parse("max_age = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("max_age"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1w"), Some(Duration::from_secs(604800)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }

    #[test]
    fn default_account_must_exist() {
        assert!(parse("default_account = \"x\"\n").is_err());
    }

    #[test]
    fn a_named_file_that_is_missing_is_an_error() {
        let missing = Path::new("/nonexistent/oauth-sendmail.toml");
        assert_eq!(Config::load(Some(missing)).unwrap_err().exit_code(), 78);
    }
}
