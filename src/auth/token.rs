//! The send path's token engine, never interactive: a cached access token while it is
//! valid (a cron mail costs no token request and no keyring access), else a new one from
//! the refresh token, the service account key or the client credentials, under a lock so
//! that two senders do not both refresh and lose a rotated refresh token.
//!
//! Per account, in the state directory: `NAME.json` (mode 0600) caches the access token
//! with its expiry and keeps what `status` shows (last refresh, last error, the store
//! `login` chose); `NAME.lock` serialises refreshes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::auth::credential::read_private_text;
use crate::auth::endpoint::{self, Failure, TokenResponse};
use crate::auth::store::{self, Item, Store};
use crate::auth::{login_command, login_hint};
use crate::config::{Account, ClientSecret, Grant, OAuth, Provider, SecretSource, StoreKind};
use crate::error::{Error, Kind, Result};
use crate::secret::Secret;

/// A token this close to its expiry is not used: it could expire during the SMTP dialogue.
const EXPIRY_MARGIN: u64 = 60;
/// When the endpoint does not say how long a token lives (Google and Microsoft: 1 hour).
const DEFAULT_LIFETIME: u64 = 3600;
/// How long a sender waits for another one's refresh before giving up for now.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// What is kept between runs for one account. No `Debug`: it holds the access token.
#[derive(Default, Serialize, Deserialize)]
pub struct Cache {
    /// The store `login` chose when the configuration names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_token: Option<Secret>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<u64>,
    /// The last failure to get a token (never a secret), cleared by the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<u64>,
}

impl Cache {
    /// The cached access token while it has more than the margin to live.
    fn valid_token(&self, now: u64) -> Option<&Secret> {
        let expires_at = self.expires_at?;
        (expires_at > now + EXPIRY_MARGIN)
            .then_some(self.access_token.as_ref())
            .flatten()
    }

    /// Reads the cache; a missing or unparseable one is empty (it is only a cache).
    pub fn load(account: &str) -> Result<Cache> {
        let path = cache_file(account)?;
        if !path.exists() {
            return Ok(Cache::default());
        }
        let text = read_private_text(&path, "token cache")?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    }

    fn save(&self, account: &str) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::new(Kind::Internal, "cannot encode the token cache", e))?;
        crate::sys::files::write_private(&cache_file(account)?, text.as_bytes())
    }

    fn record_token(&mut self, response: &TokenResponse, now: u64) {
        self.access_token = Some(response.access_token.clone());
        self.expires_at = Some(now + response.expires_in.unwrap_or(DEFAULT_LIFETIME));
        self.refreshed_at = Some(now);
        self.last_error = None;
        self.last_error_at = None;
    }
}

/// Runs `attempt` (an SMTP session) with the account's secret. When the server refuses an
/// access token this program got itself, the cached token is dropped, a new one fetched and
/// the attempt made once more: once, so a server that refuses every token is not looped on.
pub fn with_secret<T>(
    account: &Account,
    verbose: bool,
    mut attempt: impl FnMut(Option<&Secret>) -> Result<T>,
) -> Result<T> {
    let secret = secret_for(account, None, verbose)?;
    match attempt(secret.as_ref()) {
        Err(err) if err.is_auth_refused() && account.oauth.is_some() => {
            note(
                verbose,
                "the server refused the access token: getting a new one",
            );
            let fresh = secret_for(account, secret.as_ref(), verbose)?;
            attempt(fresh.as_ref()).map_err(|err| match err.is_auth_refused() {
                true => err.hint(format!(
                    "a newly issued token was refused too: check that user = \"{}\" is the mailbox that logged in (or the service account's subject), and that SMTP AUTH is enabled for it",
                    account.user
                )),
                false => err,
            })
        }
        result => result,
    }
}

/// The secret to authenticate with: the configured `secret`, or an OAuth2 access token
/// (cached, else fetched). `rejected` is a token the server just refused: it is not
/// returned again, and a new one is fetched unless another process already did.
pub fn secret_for(
    account: &Account,
    rejected: Option<&Secret>,
    verbose: bool,
) -> Result<Option<Secret>> {
    let Some(oauth) = &account.oauth else {
        return account.secret.as_ref().map(|s| s.fetch()).transpose();
    };
    let now = crate::sys::clock::now();
    if rejected.is_none() {
        if let Some(token) = Cache::load(&account.name)?.valid_token(now) {
            note(verbose, "using the cached access token");
            return Ok(Some(token.clone()));
        }
    }
    let _lock = Lock::take(&account.name)?;
    // Read again under the lock: another sender may have refreshed while we waited.
    // And with the time read again: the wait for the lock can be long.
    let cache = Cache::load(&account.name)?;
    if let Some(token) = cache.valid_token(crate::sys::clock::now()) {
        if Some(token) != rejected {
            note(
                verbose,
                "using the access token another process just fetched",
            );
            return Ok(Some(token.clone()));
        }
    }
    refresh(account, oauth, cache, verbose).map(Some)
}

/// Fetches a new access token (under the account's lock) and records the outcome in the
/// cache: the token, or the failure for `status`.
fn refresh(account: &Account, oauth: &OAuth, mut cache: Cache, verbose: bool) -> Result<Secret> {
    cache.access_token = None;
    cache.expires_at = None;
    note(verbose, "fetching a new access token");
    match fetch(account, oauth, &cache, verbose) {
        Ok(response) => {
            cache.record_token(&response, crate::sys::clock::now());
            // Only a cache: the token in hand still sends this message.
            if let Err(err) = cache.save(&account.name) {
                eprintln!(
                    "oauth-sendmail: the access token is used but not cached: {}\n  the next send fetches a new one",
                    err.summary()
                );
            }
            Ok(response.access_token)
        }
        Err(err) => {
            cache.last_error = Some(err.summary());
            cache.last_error_at = Some(crate::sys::clock::now());
            // The failure itself matters more than recording it.
            let _ = cache.save(&account.name);
            Err(err)
        }
    }
}

/// Uses a Microsoft account's refresh token when it was last used `max_idle` ago or more:
/// Entra ID voids one unused for 90 days (AADSTS700082), so the machine's service keeps
/// it alive though no mail goes. `Ok(true)` when it refreshed; nothing for an account not
/// logged in (there is nothing to keep) or of another provider or grant.
pub fn keep_alive(account: &Account, max_idle: Duration) -> Result<bool> {
    let Some(oauth) = &account.oauth else {
        return Ok(false);
    };
    if account.provider != Provider::Outlook || !matches!(oauth.grant, Grant::User) {
        return Ok(false);
    }
    let fresh = |cache: &Cache| {
        let now = crate::sys::clock::now();
        cache
            .refreshed_at
            .is_some_and(|at| now.saturating_sub(at) < max_idle.as_secs())
    };
    let cache = Cache::load(&account.name)?;
    let logged_in = recorded_store(account, oauth, &cache)
        .is_some_and(|store| matches!(store.get(Item::RefreshToken), Ok(Some(_))));
    if fresh(&cache) || !logged_in {
        return Ok(false);
    }
    let _lock = Lock::take(&account.name)?;
    let cache = Cache::load(&account.name)?;
    if fresh(&cache) {
        return Ok(false);
    }
    refresh(account, oauth, cache, false).map(|_| true)
}

/// A new access token by the account's grant (storing a rotated refresh token).
fn fetch(account: &Account, oauth: &OAuth, cache: &Cache, verbose: bool) -> Result<TokenResponse> {
    let what = format!("cannot get an access token for account `{}`", account.name);
    match &oauth.grant {
        Grant::User => {
            let store = user_store(account, oauth, cache)?;
            let refresh = store
                .get(Item::RefreshToken)?
                .ok_or_else(|| not_logged_in(account, &store))?;
            let client_secret = client_secret(oauth, Some(&store))?;
            // Before the endpoint is asked: it may void `refresh` for a new one.
            store
                .reserve_for_rotation()
                .map_err(|e| e.within(what.clone()))?;
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.expose()),
                ("client_id", oauth.client_id.as_str()),
            ];
            if let Some(secret) = &client_secret {
                form.push(("client_secret", secret.expose()));
            }
            let response = endpoint::request_token(token_uri(oauth)?, &form, account.timeout)
                .map_err(|f| refresh_failure(account, f, &what))?;
            if let Some(rotated) = &response.refresh_token {
                if *rotated != refresh {
                    // Before the new access token is used: the old refresh token may be void now.
                    store.set_rotated(rotated)?;
                    note(verbose, "stored the new (rotated) refresh token");
                }
            }
            Ok(response)
        }
        Grant::ServiceAccount { key_file, subject } => {
            service_account_token(account, oauth, key_file, subject).map_err(|e| e.within(what))
        }
        Grant::ClientCredentials => {
            let store = recorded_store(account, oauth, cache);
            let secret = client_secret(oauth, store.as_ref())?
                .ok_or_else(|| no_client_secret(account, what.clone()))?;
            let scope = oauth.scopes.join(" ");
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", oauth.client_id.as_str()),
                ("client_secret", secret.expose()),
                ("scope", scope.as_str()),
            ];
            endpoint::request_token(token_uri(oauth)?, &form, account.timeout)
                .map_err(|f| f.error.within(what))
        }
    }
}

fn no_client_secret(account: &Account, what: String) -> Error {
    Error::new(
        Kind::Config,
        what,
        "client_credentials needs a client secret",
    )
    .hint(format!(
        "set client_secret in [accounts.{}.oauth], or save it with `{} --client-secret-stdin`",
        account.name,
        login_command(&account.name)
    ))
}

/// The guidance for a refresh the token endpoint refused.
fn refresh_failure(account: &Account, failure: Failure, what: &str) -> Error {
    let error = failure.error.within(what);
    if failure.code.as_deref() != Some("invalid_grant") {
        return error;
    }
    let error = error.hint(format!(
        "the refresh token was revoked or expired; {}",
        login_hint(&account.name)
    ));
    match account.provider {
        Provider::Gmail => error.hint(
            "Google apps left in Testing status lose their tokens after 7 days: publish the app on the OAuth consent screen to keep them",
        ),
        _ => error,
    }
}

fn not_logged_in(account: &Account, store: &Store) -> Error {
    let place = store
        .describe(Item::RefreshToken)
        .unwrap_or_else(|e| e.to_string());
    Error::new(
        Kind::Config,
        format!("account `{}` is not logged in", account.name),
        format!("there is no refresh token in {place}"),
    )
    .hint(login_hint(&account.name))
}

/// The store of a user login: the configured one, else the one `login` chose.
fn user_store(account: &Account, oauth: &OAuth, cache: &Cache) -> Result<Store> {
    recorded_store(account, oauth, cache).ok_or_else(|| no_login_yet(account))
}

fn no_login_yet(account: &Account) -> Error {
    Error::new(
        Kind::Config,
        format!("account `{}` is not logged in", account.name),
        "no login has stored a refresh token yet",
    )
    .hint(login_hint(&account.name))
}

fn recorded_store(account: &Account, oauth: &OAuth, cache: &Cache) -> Option<Store> {
    oauth
        .store
        .or(cache.store)
        .map(|kind| Store::new(kind, &account.name))
}

/// The OAuth client's secret: from the configuration, else from the store (where
/// `login --client-secret-stdin` puts it), else none (a public client).
pub fn client_secret(oauth: &OAuth, store: Option<&Store>) -> Result<Option<Secret>> {
    match &oauth.client_secret {
        Some(ClientSecret::Value(secret)) => Ok(Some(secret.clone())),
        Some(ClientSecret::Source(source)) => source.fetch().map(Some),
        None => match store {
            Some(store) => store.get(Item::ClientSecret),
            None => Ok(None),
        },
    }
}

pub fn token_uri(oauth: &OAuth) -> Result<&str> {
    oauth.token_uri.as_deref().ok_or_else(|| {
        Error::new(
            Kind::Config,
            "no token endpoint",
            "set token_uri in the [oauth] table",
        )
    })
}

/// Saves what a login obtained: the refresh token in `store`, the access token in the cache,
/// and the store itself when the configuration does not name one.
pub fn save_login(account: &Account, store: &Store, response: &TokenResponse) -> Result<()> {
    let refresh = response.refresh_token.as_ref().ok_or_else(|| {
        Error::new(
            Kind::AuthRefused,
            "the login gave no refresh token",
            "the provider issued only an access token, which would stop working within the hour",
        )
        .hint("for Google the request asks for access_type=offline and prompt=consent; for Microsoft the scopes must include offline_access")
    })?;
    store.set(Item::RefreshToken, refresh)?;
    // Room for the first rotation now; the first refresh tries again if there is none.
    let _ = store.reserve_for_rotation();
    let mut cache = Cache::load(&account.name).unwrap_or_default();
    cache.store = Some(store.kind());
    cache.record_token(response, crate::sys::clock::now());
    cache.save(&account.name)
}

/// Remembers the store `login` chose, for the send path when the configuration names none.
pub fn remember_store(account: &Account, kind: StoreKind) -> Result<()> {
    let mut cache = Cache::load(&account.name).unwrap_or_default();
    cache.store = Some(kind);
    cache.save(&account.name)
}

/// Forgets the account's tokens: the refresh token in its store and the cache. Returns what
/// was removed, for the message.
pub fn forget(account: &Account) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let cache = Cache::load(&account.name).unwrap_or_default();
    if let Some(oauth) = &account.oauth {
        if let Some(store) = recorded_store(account, oauth, &cache) {
            // The client secret too (login --client-secret-stdin): once the cache that
            // records the store is gone, nothing would ever find it again.
            for (item, what) in [
                (Item::RefreshToken, "the refresh token"),
                (Item::ClientSecret, "the client secret"),
            ] {
                if store.delete(item)? {
                    removed.push(format!("{what} in {}", store.describe(item)?));
                }
            }
        }
    }
    let path = cache_file(&account.name)?;
    // The file may hold only the store's name or the last error: no token to speak of.
    let had_token = cache.access_token.is_some();
    match std::fs::remove_file(&path) {
        Ok(()) if had_token => {
            removed.push(format!("the cached access token ({})", path.display()))
        }
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::new(
                Kind::Io,
                format!("cannot remove {}", path.display()),
                e,
            ))
        }
    }
    Ok(removed)
}

/// What `status` learns about an account, short of the network: what its credentials are,
/// and the checks a send makes (the secret can be read, the account is logged in, the
/// client secret is there), each failure kept as the error a send would meet. Never a
/// secret. `commands::status` renders it.
pub struct State<'a> {
    pub credentials: Credential<'a>,
    /// For an account with an `[oauth]` table: what its token cache says.
    pub tokens: Option<Tokens>,
}

/// An account's credentials, with the result of reading them.
pub enum Credential<'a> {
    /// None: the server trusts this host.
    None,
    /// A ready token or password from the configured `secret`.
    Secret {
        source: &'a SecretSource,
        read: Result<()>,
    },
    /// An OAuth2 login kept in a store.
    Login {
        /// Where the refresh token is kept; `None`: no login chose a store yet.
        store: Option<String>,
        refresh_token: RefreshToken,
        /// The client secret from a configured source, when there is one.
        client_secret: Option<Result<()>>,
    },
    ServiceAccount {
        key_file: &'a Path,
        subject: &'a str,
        read: Result<()>,
    },
    ClientCredentials {
        client_id: &'a str,
        secret: Result<()>,
    },
}

pub enum RefreshToken {
    Present,
    /// Not logged in: the error a send would meet.
    Missing(Error),
    /// The store could not be asked.
    Unknown(Error),
}

/// The token cache as `status` shows it (Unix seconds).
pub struct Tokens {
    /// The cache could not be read, and is taken as empty.
    pub unreadable: Option<Error>,
    /// When the cached access token expires, if one is cached.
    pub access_token_expires: Option<u64>,
    pub refreshed_at: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
}

pub fn status(account: &Account) -> State<'_> {
    let Some(oauth) = &account.oauth else {
        let credentials = match &account.secret {
            // What a send does first: read the file, or run the command.
            Some(source) => Credential::Secret {
                source,
                read: source.fetch().map(drop),
            },
            None => Credential::None,
        };
        return State {
            credentials,
            tokens: None,
        };
    };
    let (cache, unreadable) = match Cache::load(&account.name) {
        Ok(cache) => (cache, None),
        Err(err) => (Cache::default(), Some(err)),
    };
    let credentials = match &oauth.grant {
        Grant::User => {
            let store = recorded_store(account, oauth, &cache);
            let refresh_token = match &store {
                None => RefreshToken::Missing(no_login_yet(account)),
                Some(store) => match store.get(Item::RefreshToken) {
                    Ok(Some(_)) => RefreshToken::Present,
                    Ok(None) => RefreshToken::Missing(not_logged_in(account, store)),
                    Err(err) => RefreshToken::Unknown(err),
                },
            };
            let client_secret = match &oauth.client_secret {
                Some(ClientSecret::Source(_)) => {
                    Some(client_secret(oauth, store.as_ref()).map(drop))
                }
                _ => None,
            };
            Credential::Login {
                store: store.map(|store| {
                    store
                        .describe(Item::RefreshToken)
                        .unwrap_or_else(|e| e.to_string())
                }),
                refresh_token,
                client_secret,
            }
        }
        Grant::ServiceAccount { key_file, subject } => Credential::ServiceAccount {
            key_file,
            subject,
            read: read_private_text(key_file, "service account key file").map(drop),
        },
        Grant::ClientCredentials => {
            let store = recorded_store(account, oauth, &cache);
            let secret = client_secret(oauth, store.as_ref()).and_then(|secret| {
                secret
                    .map(drop)
                    .ok_or_else(|| no_client_secret(account, format!("account `{}`", account.name)))
            });
            Credential::ClientCredentials {
                client_id: &oauth.client_id,
                secret,
            }
        }
    };
    let tokens = Tokens {
        unreadable,
        access_token_expires: cache.access_token.as_ref().and(cache.expires_at),
        refreshed_at: cache.refreshed_at,
        last_error: cache.last_error,
        last_error_at: cache.last_error_at,
    };
    State {
        credentials,
        tokens: Some(tokens),
    }
}

/// A Google service account with domain-wide delegation: a JWT signed with its key,
/// exchanged for an access token for the mailbox `subject` (RFC 7523).
fn service_account_token(
    account: &Account,
    oauth: &OAuth,
    key_file: &Path,
    subject: &str,
) -> Result<TokenResponse> {
    let text = read_private_text(key_file, "service account key file")?;
    let bad = |why: &str| {
        Error::new(
            Kind::Config,
            format!(
                "cannot use the service account key file {}",
                key_file.display()
            ),
            why.to_string(),
        )
    };
    let key: Map<String, Value> =
        serde_json::from_str(&text).map_err(|_| bad("it is not a JSON object"))?;
    let field = |name: &str| {
        endpoint::text(&key, name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                bad(&format!(
                    "it has no `{name}` (download a JSON key of a service account)"
                ))
            })
    };
    let email = field("client_email")?;
    let pem = field("private_key")?;
    let token_uri = match (&oauth.token_uri, endpoint::text(&key, "token_uri")) {
        (Some(uri), _) => uri.clone(),
        (None, Some(uri)) => uri.to_string(),
        (None, None) => "https://oauth2.googleapis.com/token".to_string(),
    };
    let now = crate::sys::clock::now();
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = endpoint::text(&key, "private_key_id") {
        header["kid"] = Value::from(kid);
    }
    let claims = json!({
        "iss": email,
        "sub": subject,
        "scope": oauth.scopes.join(" "),
        "aud": token_uri,
        "iat": now,
        "exp": now + DEFAULT_LIFETIME,
    });
    let assertion = sign_jwt(&header, &claims, pem).map_err(|why| bad(&why))?;
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion.as_str()),
    ];
    endpoint::request_token(&token_uri, &form, account.timeout).map_err(|failure| {
        let refused = matches!(
            failure.code.as_deref(),
            Some("invalid_grant" | "unauthorized_client")
        );
        match refused {
            true => failure.error.hint(format!(
                "check the domain-wide delegation: in the Workspace admin console (Security > API controls) the service account's client id must be allowed the scope {}, and {subject} must be a mailbox of the domain",
                oauth.scopes.join(" ")
            )),
            false => failure.error,
        }
    })
}

/// header.claims.signature, RS256 with the PKCS#8 PEM key.
fn sign_jwt(header: &Value, claims: &Value, pem: &str) -> std::result::Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "its private_key is not a PEM private key".to_string())?;
    let PrivateKeyDer::Pkcs8(pkcs8) = der else {
        return Err("its private_key is not PKCS#8 (BEGIN PRIVATE KEY)".to_string());
    };
    let key = ring::signature::RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der())
        .map_err(|e| format!("its private_key is not a usable RSA key ({e})"))?;
    let signing_input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "signing with its private_key failed".to_string())?;
    Ok(format!("{signing_input}.{}", B64URL.encode(signature)))
}

/// An exclusive lock on `NAME.lock`, released when dropped (or when the process dies).
struct Lock(#[allow(dead_code)] File);

impl Lock {
    fn take(account: &str) -> Result<Lock> {
        let path =
            crate::sys::files::state_dir()?.join(format!("{}.lock", store::file_stem(account)));
        if let Some(dir) = path.parent() {
            crate::sys::files::ensure_private_dir(dir)?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                Error::new(
                    Kind::CannotCreate,
                    format!("cannot open {}", path.display()),
                    e,
                )
            })?;
        let started = Instant::now();
        loop {
            match crate::sys::files::try_lock(&file) {
                Ok(true) => return Ok(Lock(file)),
                Ok(false) => {}
                Err(err) => {
                    return Err(Error::new(
                        Kind::Io,
                        format!("cannot lock {}", path.display()),
                        err,
                    ))
                }
            }
            if started.elapsed() > LOCK_WAIT {
                return Err(Error::new(
                    Kind::Temporary,
                    format!("cannot lock {}", path.display()),
                    format!("another oauth-sendmail has been fetching a token for account `{account}` for over {} seconds", LOCK_WAIT.as_secs()),
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn cache_file(account: &str) -> Result<PathBuf> {
    Ok(crate::sys::files::state_dir()?.join(format!("{}.json", store::file_stem(account))))
}

fn note(verbose: bool, text: &str) {
    if verbose {
        eprintln!("-- {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_near_its_expiry_is_not_used() {
        let cache = Cache {
            access_token: Some(Secret::new("t")),
            expires_at: Some(1000 + EXPIRY_MARGIN + 1),
            ..Cache::default()
        };
        assert!(cache.valid_token(1000).is_some());
        assert!(cache.valid_token(1001).is_none());
        assert!(Cache::default().valid_token(0).is_none());
    }

    #[test]
    fn cache_json_round_trips_and_tolerates_garbage() {
        let cache = Cache {
            store: Some(StoreKind::File),
            access_token: Some(Secret::new("tok")),
            expires_at: Some(5),
            ..Cache::default()
        };
        let text = serde_json::to_string(&cache).unwrap();
        let back: Cache = serde_json::from_str(&text).unwrap();
        assert_eq!(back.store, Some(StoreKind::File));
        assert_eq!(back.access_token.unwrap().expose(), "tok");
        assert!(serde_json::from_str::<Cache>("{\"expires_at\": \"soon\"}").is_err());
    }

    #[test]
    fn jwt_is_signed_rs256_and_verifies() {
        // Test-only key, made for this test.
        let pem = include_str!("../../tests/common/service-account-test-key.pem");
        let jwt = sign_jwt(&json!({"alg": "RS256"}), &json!({"sub": "a@b.c"}), pem).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        let rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8) = der else {
            panic!()
        };
        let pair = ring::signature::RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der()).unwrap();
        use ring::signature::KeyPair;
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            pair.public_key().as_ref(),
        );
        let signature = B64URL.decode(parts[2]).unwrap();
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
        assert!(sign_jwt(&json!({}), &json!({}), "not a key").is_err());
    }
}
