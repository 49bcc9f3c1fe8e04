//! The providers' presets: Gmail's and Microsoft's servers, OAuth2 endpoints and scopes
//! filled in where the file leaves them out, and the checks on what an account says.

use std::time::Duration;

use super::schema::{AccountFile, OAuthFile};
use super::{Account, AuthMethod, Grant, OAuth, Provider, Tls, Transport};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// `connections` may be set to at most this: more is no longer a mail client's share of
/// a server (and no provider allows it per mailbox).
pub const MAX_CONNECTIONS: i64 = 16;

impl Account {
    pub(super) fn from_file(name: &str, file: AccountFile) -> std::result::Result<Account, String> {
        let transport = file.transport.unwrap_or(Transport::Smtp);
        let provider = file.provider.unwrap_or(match transport {
            Transport::GmailApi => Provider::Gmail,
            Transport::Graph => Provider::Outlook,
            Transport::Smtp => Provider::Custom,
        });
        let api_uri = api_uri(transport, provider, file.api_uri)?;
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
        for address in &addresses {
            crate::message::address::check_syntax(address).map_err(|e| format!("`from`: {e}"))?;
        }
        let user = file.user.unwrap_or_else(|| first.clone());
        let auth = file.auth.unwrap_or(match provider {
            Provider::Gmail | Provider::Outlook => AuthMethod::Xoauth2,
            Provider::Custom if file.oauth.is_some() => AuthMethod::Xoauth2,
            Provider::Custom if file.secret.is_some() => AuthMethod::Password,
            Provider::Custom => AuthMethod::None,
        });
        if file.secret.is_some() && file.oauth.is_some() {
            return Err("use either `secret` (a ready token) or an [oauth] table (tokens this program gets itself), not both".into());
        }
        if file.oauth.is_some() && auth != AuthMethod::Xoauth2 {
            return Err("an [oauth] table needs auth = \"xoauth2\"".into());
        }
        if auth != AuthMethod::None && file.secret.is_none() && file.oauth.is_none() {
            return Err("`secret` or an [oauth] table is needed to authenticate: secret = { file = \"PATH\" } or { command = \"CMD\" }, or [accounts.NAME.oauth] with client_id (see the README)".into());
        }
        let oauth = file
            .oauth
            .map(|o| OAuth::from_file(o, provider, transport, &user))
            .transpose()
            .map_err(|why| format!("[oauth]: {why}"))?;
        if transport != Transport::Smtp && auth != AuthMethod::Xoauth2 {
            return Err(format!(
                "transport = \"{}\" sends with an OAuth2 access token: auth = \"xoauth2\" (the default), with an [oauth] table or a `secret` that prints a token",
                transport.name()
            ));
        }
        if tls == Tls::None && auth != AuthMethod::None {
            return Err(
                "tls = \"none\" would send the secret in clear: use starttls or implicit".into(),
            );
        }
        let connections = match file.connections {
            None => preset_connections(provider, transport),
            Some(n) if (1..=MAX_CONNECTIONS).contains(&n) => n as usize,
            Some(n) => {
                return Err(format!(
                    "connections = {n} is out of range: from 1 (one connection, messages one after another) to {MAX_CONNECTIONS}"
                ))
            }
        };
        Ok(Account {
            name: name.to_string(),
            host,
            port,
            tls,
            ca_file: file.ca_file,
            hello_name: file.hello_name,
            timeout: file.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs),
            connections,
            addresses,
            user,
            auth,
            secret: file.secret,
            oauth,
            provider,
            transport,
            api_uri,
        })
    }
}

/// How many connections a queue drain opens at once when `connections` is not set: what
/// each provider lets one mailbox have, with room to spare, else 2.
fn preset_connections(provider: Provider, transport: Transport) -> usize {
    match (provider, transport) {
        // Exchange Online: at most 3 concurrent SMTP AUTH submissions per mailbox, more
        // are refused with 432 4.3.2 ("Concurrent connections limit exceeded").
        (Provider::Outlook, Transport::Smtp) => 3,
        // Graph: 4 concurrent requests per app per mailbox (MailboxConcurrency).
        (Provider::Outlook, _) => 4,
        // Google documents no SMTP session limit per account (IMAP: 15); its throttling
        // is reported from about 16 logins at once, so 4 stays well below it.
        (Provider::Gmail, _) => 4,
        (Provider::Custom, _) => 2,
    }
}

impl Transport {
    /// As the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Smtp => "smtp",
            Transport::GmailApi => "gmail-api",
            Transport::Graph => "graph",
        }
    }
}

pub(super) const GMAIL_API: &str = "https://gmail.googleapis.com";
pub(super) const GRAPH_API: &str = "https://graph.microsoft.com/v1.0";

/// The API an HTTPS transport talks to: the provider's, or `api_uri` (tests, a proxy).
fn api_uri(
    transport: Transport,
    provider: Provider,
    given: Option<String>,
) -> std::result::Result<String, String> {
    let (preset, needs) = match transport {
        Transport::Smtp if given.is_some() => {
            return Err("`api_uri` is only for transport = \"gmail-api\" or \"graph\"".into())
        }
        Transport::Smtp => return Ok(String::new()),
        Transport::GmailApi => (GMAIL_API, Provider::Gmail),
        Transport::Graph => (GRAPH_API, Provider::Outlook),
    };
    if provider != needs {
        return Err(format!(
            "transport = \"{}\" is for provider = \"{}\"",
            transport.name(),
            match needs {
                Provider::Gmail => "gmail",
                _ => "outlook",
            }
        ));
    }
    let uri = given.unwrap_or_else(|| preset.to_string());
    check_endpoint(&uri).map_err(|why| format!("`api_uri` {why}"))?;
    Ok(uri.trim_end_matches('/').to_string())
}

pub(super) const GOOGLE_AUTH_URI: &str = "https://accounts.google.com/o/oauth2/v2/auth";
pub(super) const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const GMAIL_SCOPE: &str = "https://mail.google.com/";
/// Sending only: what the Gmail API needs, and not one of Google's restricted scopes.
const GMAIL_SEND_SCOPE: &str = "https://www.googleapis.com/auth/gmail.send";
const MICROSOFT_LOGIN: &str = "https://login.microsoftonline.com";
const OUTLOOK_USER_SCOPES: [&str; 2] = ["https://outlook.office.com/SMTP.Send", "offline_access"];
const OUTLOOK_APP_SCOPE: &str = "https://outlook.office365.com/.default";
const GRAPH_USER_SCOPES: [&str; 2] = ["https://graph.microsoft.com/Mail.Send", "offline_access"];
/// App-only: the Mail.Send application permission granted to the app in Entra.
const GRAPH_APP_SCOPE: &str = "https://graph.microsoft.com/.default";

impl OAuth {
    pub(super) fn from_file(
        file: OAuthFile,
        provider: Provider,
        transport: Transport,
        user: &str,
    ) -> std::result::Result<OAuth, String> {
        let gmail_scope = match transport {
            Transport::GmailApi => GMAIL_SEND_SCOPE,
            _ => GMAIL_SCOPE,
        };
        if file.subject.is_some() && file.service_account.is_none() {
            return Err("`subject` is only for a service_account".into());
        }
        let grant = match (file.service_account, file.client_credentials) {
            (Some(_), true) => {
                return Err("service_account and client_credentials exclude each other".into())
            }
            (Some(key_file), false) => Grant::ServiceAccount {
                key_file,
                subject: file.subject.unwrap_or_else(|| user.to_string()),
            },
            (None, true) => Grant::ClientCredentials,
            (None, false) => Grant::User,
        };
        if file.tenant.is_some() && provider != Provider::Outlook {
            return Err("`tenant` is only for provider = \"outlook\"".into());
        }
        let client_id = match (&grant, file.client_id) {
            (_, Some(id)) => id,
            (Grant::ServiceAccount { .. }, None) => String::new(),
            (_, None) => return Err(
                "`client_id` is needed (the OAuth client's id: see the README for creating one)"
                    .into(),
            ),
        };
        if matches!(grant, Grant::ServiceAccount { .. })
            && (file.store.is_some() || file.client_secret.is_some())
        {
            return Err("a service_account needs no `store` or `client_secret`: its key file is the credential".into());
        }
        // The provider's endpoints and scopes, each overridable.
        let (auth_uri, token_uri, device_uri, scopes) = match (provider, &grant) {
            (Provider::Gmail, Grant::ClientCredentials) => {
                return Err(
                    "Google has no client credentials for Gmail: use a service_account".into(),
                )
            }
            (Provider::Gmail, Grant::ServiceAccount { .. }) => {
                (None, None, None, vec![gmail_scope])
            }
            (Provider::Gmail, Grant::User) => (
                Some(GOOGLE_AUTH_URI.to_string()),
                Some(GOOGLE_TOKEN_URI.to_string()),
                // Google's device flow refuses the Gmail scope.
                None,
                vec![gmail_scope],
            ),
            (Provider::Outlook, Grant::ServiceAccount { .. }) => {
                return Err(
                    "service_account is Google's: for Microsoft use client_credentials = true"
                        .into(),
                )
            }
            (Provider::Outlook, _) => {
                let app = grant == Grant::ClientCredentials;
                let tenant = match file.tenant.as_deref() {
                    Some(tenant) => tenant,
                    None if app => return Err("client_credentials needs `tenant` (your directory's id or domain, e.g. contoso.onmicrosoft.com)".into()),
                    None => "common",
                };
                let base = format!("{MICROSOFT_LOGIN}/{tenant}/oauth2/v2.0");
                let scopes = match (app, transport) {
                    (true, Transport::Graph) => vec![GRAPH_APP_SCOPE],
                    (false, Transport::Graph) => GRAPH_USER_SCOPES.to_vec(),
                    (true, _) => vec![OUTLOOK_APP_SCOPE],
                    (false, _) => OUTLOOK_USER_SCOPES.to_vec(),
                };
                (
                    (!app).then(|| format!("{base}/authorize")),
                    Some(format!("{base}/token")),
                    (!app).then(|| format!("{base}/devicecode")),
                    scopes,
                )
            }
            (Provider::Custom, _) => (None, None, None, vec![]),
        };
        let scopes = match file.scopes {
            Some(scopes) => scopes.into_vec(),
            None => scopes.into_iter().map(String::from).collect(),
        };
        let oauth = OAuth {
            client_id,
            client_secret: file.client_secret,
            auth_uri: file.auth_uri.or(auth_uri),
            token_uri: file.token_uri.or(token_uri),
            device_uri: file.device_uri.or(device_uri),
            scopes,
            store: file.store,
            grant,
        };
        oauth.check()?;
        Ok(oauth)
    }

    /// What presets cannot fill in must be there, and every endpoint must be safe to send
    /// a secret to.
    fn check(&self) -> std::result::Result<(), String> {
        if self.scopes.is_empty() {
            return Err("`scopes` is needed when provider is custom".into());
        }
        let service_account = matches!(self.grant, Grant::ServiceAccount { .. });
        if self.token_uri.is_none() && !service_account {
            return Err("`token_uri` is needed when provider is custom".into());
        }
        if self.grant == Grant::User && self.auth_uri.is_none() && self.device_uri.is_none() {
            return Err(
                "`auth_uri` (or `device_uri`) is needed to log in when provider is custom".into(),
            );
        }
        let uris = [
            ("auth_uri", &self.auth_uri),
            ("token_uri", &self.token_uri),
            ("device_uri", &self.device_uri),
        ];
        for (key, uri) in uris {
            if let Some(uri) = uri {
                check_endpoint(uri).map_err(|why| format!("`{key}` {why}"))?;
            }
        }
        Ok(())
    }
}

/// An endpoint receives secrets: https, or plain http only to this machine (tests, and
/// local token brokers).
pub fn check_endpoint(uri: &str) -> std::result::Result<(), String> {
    if uri.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = uri.strip_prefix("http://") else {
        return Err(format!("`{uri}` is not an https:// address"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // "http://127.0.0.1:80@evil.example/" is a request to evil.example.
    if authority.contains('@') {
        return Err(format!("`{uri}` has a user part: give the address alone"));
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => authority,
    };
    match host {
        "127.0.0.1" | "localhost" | "[::1]" => Ok(()),
        _ => Err(format!(
            "`{uri}` would send secrets in clear: use https (plain http only to 127.0.0.1)"
        )),
    }
}
