//! The configuration as the program uses it: the accounts, aliases and queue settings, and
//! which account a message goes through. Where the file is looked for and who may have
//! written it is `file`; what it may hold, `schema`; the providers' servers, endpoints and
//! scopes filled in, `presets`.

mod file;
mod presets;
mod schema;

pub use file::search_path;
pub use presets::check_endpoint;
pub use schema::{
    AuthMethod, ClientSecret, Provider, QueueMode, SecretSource, StoreKind, Tls, Transport,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Kind, Result};
use schema::ConfigFile;

pub mod relay;
pub mod service;

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
    /// `[service]`: used by the machine-wide service only.
    pub service: service::ServiceSettings,
    /// `[relay]`: the service's SMTP listeners for devices on the LAN.
    pub relay: relay::RelaySettings,
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
    /// The longest an account's queue waits after its provider says the sending quota is
    /// used up (a rate-limit reply holds it for less: see `smtp::client::QUOTAS`).
    pub quota_hold: Duration,
}

impl Default for QueueSettings {
    fn default() -> QueueSettings {
        // Without HOME (some cron setups), a system-wide place rather than no queue at all.
        let state = crate::sys::files::state_dir()
            .unwrap_or_else(|_| PathBuf::from("/var/spool/oauth-sendmail"));
        QueueSettings {
            mode: QueueMode::OnFailure,
            dir: state.join("queue"),
            log_file: state.join("delivery.log"),
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(4 * 3600),
            max_age: Duration::from_secs(5 * 86400),
            quota_hold: Duration::from_secs(3600),
        }
    }
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
    /// How many connections a queue drain may open at once for this account's messages
    /// (`connections`; providers limit concurrent sessions per mailbox).
    pub connections: usize,
    /// Addresses this account sends as; the first is the default envelope sender.
    pub addresses: Vec<String>,
    pub user: String,
    pub auth: AuthMethod,
    /// A ready token or password from a file or a command (oama, pass...).
    pub secret: Option<SecretSource>,
    /// Or: tokens this program gets and refreshes itself (`[accounts.NAME.oauth]`).
    pub oauth: Option<OAuth>,
    pub provider: Provider,
    /// SMTP (host, port, tls) or an HTTPS API (`api_uri`).
    pub transport: Transport,
    /// The API's base address (`https://gmail.googleapis.com`...); empty for SMTP.
    pub api_uri: String,
}

/// How an account gets its OAuth2 access tokens, presets filled in.
#[derive(Debug, Clone)]
pub struct OAuth {
    pub grant: Grant,
    /// Empty for a service account (its key file names it).
    pub client_id: String,
    /// `None`: a public client, unless `login --client-secret-stdin` saved one in the store.
    pub client_secret: Option<ClientSecret>,
    /// The authorization endpoint for `login` (none: device flow only, or no login at all).
    pub auth_uri: Option<String>,
    /// `None` only for a service account, whose key file names its token endpoint.
    pub token_uri: Option<String>,
    /// The device authorization endpoint for `login --device`, where the provider has one.
    pub device_uri: Option<String>,
    pub scopes: Vec<String>,
    /// Where the refresh token lives; `None`: chosen at login (the keyring where one is
    /// reachable, else a file) and remembered.
    pub store: Option<StoreKind>,
}

/// Who the tokens are for, and so how they are obtained.
#[derive(Debug, Clone, PartialEq)]
pub enum Grant {
    /// A person logs in once (`login`); the refresh token is kept in the store.
    User,
    /// A Google Workspace service account with domain-wide delegation acting as `subject`.
    ServiceAccount { key_file: PathBuf, subject: String },
    /// Microsoft's client credentials: the app itself (SMTP.SendAsApp), no login.
    ClientCredentials,
}

impl Config {
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
            quota_hold: duration("quota_hold", file.quota_hold, defaults.quota_hold)?,
        };
        Ok(Config {
            path: Some(path.to_path_buf()),
            domain: file.domain,
            aliases,
            accounts,
            default_account: file.default_account,
            queue,
            service: file.service,
            relay: file.relay,
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
            (None, _) => {
                let hint = match &self.path {
                    Some(path) => format!("add an [accounts.NAME] table to {}: contrib/config.example.toml in the sources shows every key", path.display()),
                    None => format!(
                        "start from the commented example contrib/config.example.toml in the sources: copy it to {} and fill in an account",
                        search_path()
                            .first()
                            .map_or("/etc/oauth-sendmail/config.toml".into(), |p| p.display().to_string())
                    ),
                };
                Err(Error::new(
                    Kind::Config,
                    "no account to send with",
                    self.where_accounts_are(),
                )
                .hint(hint))
            }
            (Some(_), Some(_)) => Err(Error::new(
                Kind::Config,
                "several accounts and no default",
                self.where_accounts_are(),
            )
            .hint("set default_account, or pass --account NAME")),
        }
    }

    /// The accounts whose secrets are written in the file itself (`client_secret = "..."`).
    fn inline_secrets(&self) -> Vec<&str> {
        self.accounts
            .values()
            .filter(|a| {
                a.oauth
                    .as_ref()
                    .is_some_and(|o| matches!(o.client_secret, Some(ClientSecret::Value(_))))
            })
            .map(|a| a.name.as_str())
            .collect()
    }

    fn where_accounts_are(&self) -> String {
        match &self.path {
            Some(path) => format!("{} defines {}", path.display(), self.account_names()),
            None => {
                // Without a file, neither -C nor $OAUTH_SENDMAIL_CONFIG named one (a named
                // file that is missing is an error of its own).
                let mut searched = vec![
                    "-C/--config FILE (not given)".to_string(),
                    "$OAUTH_SENDMAIL_CONFIG (not set)".to_string(),
                ];
                searched.extend(search_path().iter().map(|p| p.display().to_string()));
                format!(
                    "no configuration file (looked at, in order: {})",
                    searched.join(", ")
                )
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

/// For the tests of each part of the schema: every key is in the shipped example
/// configuration (commented or not) and in the manual page.
#[cfg(test)]
pub(crate) fn assert_documented(keys: &[&str]) {
    let example = include_str!("../../contrib/config.example.toml");
    let manual = include_str!("../../man/oauth-sendmail.toml.5");
    for key in keys {
        assert!(
            example
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(key)),
            "the example lacks {key}"
        );
        assert!(manual.contains(key), "the manual lacks {key}");
    }
}

#[cfg(test)]
mod tests {
    use super::presets::{GOOGLE_AUTH_URI, GOOGLE_TOKEN_URI};
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
    fn connections_default_per_provider_and_out_of_range_is_refused_naming_the_key() {
        let account = |provider: &str, extra: &str| {
            parse(&format!(
                "[accounts.me]\nprovider = \"{provider}\"\nhost = \"h\"\nfrom = \"a@x.org\"\nsecret = {{ file = \"/s\" }}\n{extra}"
            ))
        };
        let connections =
            |provider, extra| account(provider, extra).unwrap().accounts["me"].connections;
        assert_eq!(connections("gmail", ""), 4);
        assert_eq!(connections("outlook", ""), 3);
        assert_eq!(connections("outlook", "transport = \"graph\"\n"), 4);
        assert_eq!(connections("custom", ""), 2);
        assert_eq!(connections("outlook", "connections = 1\n"), 1);
        assert_eq!(connections("custom", "connections = 16\n"), 16);
        for bad in ["0", "17", "-1"] {
            let err = account("custom", &format!("connections = {bad}\n")).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!(
                    "account `me`: connections = {bad} is out of range"
                )) && text.contains("16"),
                "{text}"
            );
        }
        let err = account("custom", "connections = \"4\"\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("a number of connections from 1 to 16"),
            "{err}"
        );
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
        assert!(err.to_string().contains("[oauth]"), "{err}");
    }

    fn oauth_account(table: &str) -> Result<Config> {
        parse(&format!(
            "[accounts.me]\nprovider = \"gmail\"\nfrom = \"me@gmail.com\"\n[accounts.me.oauth]\n{table}"
        ))
    }

    #[test]
    fn gmail_oauth_gets_google_endpoints_and_scope() {
        let config = oauth_account("client_id = \"id\"\nclient_secret = \"s\"\n").unwrap();
        let account = &config.accounts["me"];
        assert_eq!(account.auth, AuthMethod::Xoauth2);
        let oauth = account.oauth.as_ref().unwrap();
        assert_eq!(oauth.grant, Grant::User);
        assert_eq!(oauth.auth_uri.as_deref(), Some(GOOGLE_AUTH_URI));
        assert_eq!(oauth.token_uri.as_deref(), Some(GOOGLE_TOKEN_URI));
        assert_eq!(
            oauth.device_uri, None,
            "Google's device flow refuses the Gmail scope"
        );
        assert_eq!(oauth.scopes, ["https://mail.google.com/"]);
        assert_eq!(oauth.store, None);
        assert!(matches!(&oauth.client_secret, Some(ClientSecret::Value(s)) if s.expose() == "s"));
    }

    #[test]
    fn outlook_oauth_uses_the_tenant_and_offline_access() {
        let config = parse("[accounts.o]\nprovider = \"outlook\"\nfrom = \"a@contoso.com\"\n[accounts.o.oauth]\nclient_id = \"id\"\ntenant = \"contoso.com\"\nstore = \"file\"\n").unwrap();
        let oauth = config.accounts["o"].oauth.clone().unwrap();
        let base = "https://login.microsoftonline.com/contoso.com/oauth2/v2.0";
        assert_eq!(oauth.auth_uri, Some(format!("{base}/authorize")));
        assert_eq!(oauth.token_uri, Some(format!("{base}/token")));
        assert_eq!(oauth.device_uri, Some(format!("{base}/devicecode")));
        assert!(oauth.scopes.contains(&"offline_access".to_string()));
        assert_eq!(oauth.store, Some(StoreKind::File));
        assert!(oauth.client_secret.is_none());
    }

    #[test]
    fn microsoft_client_credentials_need_a_tenant_and_use_default_scope() {
        let table = "client_id = \"id\"\nclient_secret = { command = \"pass x\" }\nclient_credentials = true\n";
        let text = |extra: &str| {
            format!("[accounts.o]\nprovider = \"outlook\"\nfrom = \"a@contoso.com\"\n[accounts.o.oauth]\n{table}{extra}")
        };
        let err = parse(&text("")).unwrap_err();
        assert!(err.to_string().contains("tenant"), "{err}");
        let config = parse(&text("tenant = \"t\"\n")).unwrap();
        let oauth = config.accounts["o"].oauth.clone().unwrap();
        assert_eq!(oauth.grant, Grant::ClientCredentials);
        assert_eq!(oauth.scopes, ["https://outlook.office365.com/.default"]);
        assert!(matches!(
            oauth.client_secret,
            Some(ClientSecret::Source(SecretSource::Command(_)))
        ));
    }

    #[test]
    fn service_account_subject_defaults_to_user() {
        let config = oauth_account("service_account = \"/etc/k.json\"\n").unwrap();
        let oauth = config.accounts["me"].oauth.clone().unwrap();
        assert_eq!(
            oauth.grant,
            Grant::ServiceAccount {
                key_file: PathBuf::from("/etc/k.json"),
                subject: "me@gmail.com".into()
            }
        );
        assert_eq!(oauth.token_uri, None, "the key file names it");
        let err = oauth_account("service_account = \"/k\"\nstore = \"file\"\n").unwrap_err();
        assert!(
            err.to_string().contains("key file is the credential"),
            "{err}"
        );
        let err = oauth_account("client_id = \"i\"\nsubject = \"x@y.z\"\n").unwrap_err();
        assert!(
            err.to_string().contains("only for a service_account"),
            "{err}"
        );
    }

    #[test]
    fn oauth_and_secret_exclude_each_other() {
        let err = parse("[accounts.me]\nprovider = \"gmail\"\nfrom = \"me@gmail.com\"\nsecret = { file = \"/s\" }\n[accounts.me.oauth]\nclient_id = \"i\"\n").unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn oauth_needs_a_client_id_and_custom_needs_endpoints() {
        let err = oauth_account("client_secret = \"s\"\n").unwrap_err();
        assert!(err.to_string().contains("client_id"), "{err}");
        let custom = |table: &str| {
            parse(&format!("[accounts.c]\nhost = \"h\"\nfrom = \"a@x.org\"\n[accounts.c.oauth]\nclient_id = \"i\"\n{table}"))
        };
        let err = custom("scopes = \"s\"\n").unwrap_err();
        assert!(err.to_string().contains("token_uri"), "{err}");
        let err = custom("token_uri = \"https://t/\"\n").unwrap_err();
        assert!(err.to_string().contains("scopes"), "{err}");
        let config = custom(
            "token_uri = \"https://t/\"\nauth_uri = \"https://a/\"\nscopes = [\"s1\", \"s2\"]\n",
        )
        .unwrap();
        assert_eq!(config.accounts["c"].auth, AuthMethod::Xoauth2);
    }

    #[test]
    fn endpoints_must_be_https_except_on_loopback() {
        let err =
            oauth_account("client_id = \"i\"\ntoken_uri = \"http://auth.example.com/token\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("in clear"), "{err}");
        assert!(
            oauth_account("client_id = \"i\"\ntoken_uri = \"http://127.0.0.1:8080/token\"\n")
                .is_ok()
        );
        assert!(check_endpoint("http://localhost/x").is_ok());
        assert!(check_endpoint("http://[::1]:9/x").is_ok());
        assert!(check_endpoint("http://127.0.0.1.evil.com/x").is_err());
        assert!(check_endpoint("http://127.0.0.1:8080@evil.example/token").is_err());
        assert!(check_endpoint("ftp://x").is_err());
    }

    #[test]
    fn unknown_oauth_key_is_an_error() {
        let err = oauth_account("client_id = \"i\"\nclient_secrte = \"s\"\n").unwrap_err();
        assert!(err.to_string().contains("client_secrte"), "{err}");
        let err = oauth_account("client_id = \"i\"\nstore = \"vault\"\n").unwrap_err();
        assert_eq!(err.exit_code(), 78);
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
    fn the_shipped_example_parses_and_holds_no_secret() {
        let text = include_str!("../../contrib/config.example.toml");
        let config = parse(text).unwrap();
        assert!(config.inline_secrets().is_empty());
        assert!(config.accounts.len() >= 7);
        assert_eq!(config.choose_account(None, None).unwrap().name, "gmail");
        let grants: Vec<Grant> = config
            .accounts
            .values()
            .filter_map(|a| a.oauth.as_ref().map(|o| o.grant.clone()))
            .collect();
        assert!(grants.contains(&Grant::User));
        assert!(grants.contains(&Grant::ClientCredentials));
        assert!(grants
            .iter()
            .any(|g| matches!(g, Grant::ServiceAccount { .. })));
        // Every key the loader knows is shown (set, or commented out with its meaning).
        for key in [
            "domain",
            "default_account",
            "[aliases]",
            "queue",
            "queue_dir",
            "log_file",
            "retry_initial",
            "retry_max",
            "max_age",
            "quota_hold",
            "provider",
            "transport",
            "api_uri",
            "host",
            "port",
            "tls",
            "ca_file",
            "hello_name",
            "timeout",
            "connections",
            "from",
            "user",
            "auth",
            "secret",
            "client_id",
            "client_secret",
            "tenant",
            "auth_uri",
            "token_uri",
            "device_uri",
            "scopes",
            "store",
            "service_account",
            "subject",
            "client_credentials",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(key)),
                "the example lacks {key}"
            );
        }
    }

    #[test]
    fn an_api_transport_presets_its_endpoint_provider_and_send_only_scopes() {
        let gmail = oauth_account("client_id = \"id\"\n")
            .map(|c| c.accounts["me"].transport)
            .unwrap();
        assert_eq!(gmail, Transport::Smtp);
        let config = parse("[accounts.g]\ntransport = \"gmail-api\"\nfrom = \"me@gmail.com\"\n[accounts.g.oauth]\nclient_id = \"id\"\n").unwrap();
        let account = &config.accounts["g"];
        assert_eq!(account.provider, Provider::Gmail);
        assert_eq!(account.api_uri, "https://gmail.googleapis.com");
        assert_eq!(
            account.oauth.as_ref().unwrap().scopes,
            ["https://www.googleapis.com/auth/gmail.send"]
        );
        let graph = |oauth: &str| {
            parse(&format!("[accounts.m]\ntransport = \"graph\"\nfrom = \"a@contoso.com\"\napi_uri = \"http://127.0.0.1:9/v1.0/\"\n[accounts.m.oauth]\nclient_id = \"id\"\n{oauth}"))
        };
        let config = graph("").unwrap();
        let account = &config.accounts["m"];
        assert_eq!(account.api_uri, "http://127.0.0.1:9/v1.0");
        assert_eq!(
            account.oauth.as_ref().unwrap().scopes,
            ["https://graph.microsoft.com/Mail.Send", "offline_access"]
        );
        let config =
            graph("tenant = \"t\"\nclient_secret = { file = \"/s\" }\nclient_credentials = true\n")
                .unwrap();
        assert_eq!(
            config.accounts["m"].oauth.as_ref().unwrap().scopes,
            ["https://graph.microsoft.com/.default"]
        );
    }

    #[test]
    fn an_api_transport_refuses_what_does_not_fit_it() {
        for (text, says) in [
            (
                "transport = \"graph\"\nprovider = \"gmail\"\n",
                "provider = \"outlook\"",
            ),
            (
                "transport = \"gmail-api\"\napi_uri = \"http://api.example.com\"\n",
                "in clear",
            ),
            (
                "host = \"h\"\napi_uri = \"https://x\"\n",
                "only for transport",
            ),
            (
                "transport = \"gmail-api\"\nauth = \"password\"\n",
                "access token",
            ),
        ] {
            let err = parse(&format!(
                "[accounts.a]\nfrom = \"a@x.org\"\nsecret = {{ file = \"/s\" }}\n{text}"
            ))
            .unwrap_err();
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn an_inline_client_secret_is_found() {
        let config = oauth_account("client_id = \"i\"\nclient_secret = \"s\"\n").unwrap();
        assert_eq!(config.inline_secrets(), ["me"]);
        let config =
            oauth_account("client_id = \"i\"\nclient_secret = { file = \"/s\" }\n").unwrap();
        assert!(config.inline_secrets().is_empty());
    }
}
