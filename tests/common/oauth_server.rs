//! In-process fake OAuth2 provider for tests, over plain http on 127.0.0.1: an
//! authorization endpoint that redirects to the client's loopback port, a token endpoint
//! for the code grant (PKCE S256 verified), refresh (with rotation and revocation), the
//! device code grant, the JWT bearer grant of a service account (signature verified with
//! the test key's public half) and client credentials; it counts every call and checks in
//! `Drop` that it was used.
//!
//! Every token it issues contains "MUST-NOT-LEAK", so a test can look for any of them in
//! what the binary prints.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Value};

use super::config::TestConfig;
use super::smtp_server::TEST_TOKEN;

pub const CLIENT_ID: &str = "test-client.apps.example.com";
pub const CLIENT_SECRET: &str = "client-secret-MUST-NOT-LEAK";
pub const SERVICE_ACCOUNT_EMAIL: &str = "mailer@test-project.iam.gserviceaccount.com";
/// A 2048-bit RSA key made for these tests only (PKCS#8 PEM, as Google's JSON keys hold).
pub const SERVICE_ACCOUNT_KEY_PEM: &str = include_str!("service-account-test-key.pem");
pub const USER_CODE: &str = "WDJB-MJHT";
/// What every issued secret contains.
pub const LEAK_MARKER: &str = "MUST-NOT-LEAK";

#[derive(Clone, Debug)]
pub struct OAuthOptions {
    /// Access tokens, issued in this order; the last one is repeated.
    pub access_tokens: Vec<String>,
    /// Lifetimes (expires_in) of the issued access tokens, in order; the last is repeated.
    pub lifetimes: Vec<u64>,
    /// Every refresh issues a new refresh token and voids the old one (Microsoft).
    pub rotate: bool,
    /// Device-code polls answered authorization_pending before the token comes.
    pub device_pending: usize,
    /// The client secret the token endpoint requires; `None`: a public client.
    pub client_secret: Option<String>,
    /// The authorization endpoint answers error=access_denied (the user declined).
    pub deny: bool,
    /// How long a refresh takes to answer: long enough, clients running at once all
    /// reach the endpoint while the first refresh is still in flight.
    pub refresh_delay: std::time::Duration,
}

impl Default for OAuthOptions {
    fn default() -> Self {
        OAuthOptions {
            access_tokens: vec![TEST_TOKEN.to_string()],
            lifetimes: vec![3600],
            rotate: false,
            device_pending: 1,
            client_secret: Some(CLIENT_SECRET.to_string()),
            deny: false,
            refresh_delay: std::time::Duration::ZERO,
        }
    }
}

struct Grant {
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct State {
    calls: HashMap<String, usize>,
    log: String,
    codes: HashMap<String, Grant>,
    refresh_tokens: HashMap<String, bool>,
    device_codes: HashMap<String, usize>,
    issued: Vec<String>,
    access_issued: usize,
    authorize_params: Vec<HashMap<String, String>>,
    jwt_claims: Vec<Value>,
    counter: usize,
    /// Set by `fail_token_requests`: the HTTP status and OAuth2 error of every token answer.
    token_failure: Option<(&'static str, String)>,
}

struct Shared {
    opts: OAuthOptions,
    port: u16,
    state: Mutex<State>,
    revoked: AtomicBool,
    stop: AtomicBool,
}

pub struct OAuthServer {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    unused_ok: bool,
}

impl OAuthServer {
    pub fn start(opts: OAuthOptions) -> OAuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared {
            opts,
            port,
            state: Mutex::new(State::default()),
            revoked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("oauth-accept-{port}"))
                .spawn(move || {
                    for stream in listener.incoming() {
                        if shared.stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(stream) = stream else {
                            thread::sleep(Duration::from_millis(10));
                            continue;
                        };
                        let shared = shared.clone();
                        let _ = thread::Builder::new()
                            .name("oauth-conn".into())
                            .spawn(move || serve(stream, &shared));
                    }
                })
                .expect("spawn acceptor")
        };
        OAuthServer {
            port,
            shared,
            acceptor: Some(acceptor),
            unused_ok: false,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Calls of one kind: "authorize", "devicecode", or a grant: "authorization_code",
    /// "refresh_token", "device_code", "jwt_bearer", "client_credentials".
    pub fn calls(&self, kind: &str) -> usize {
        self.state().calls.get(kind).copied().unwrap_or(0)
    }

    /// Token requests of every grant.
    pub fn token_requests(&self) -> usize {
        [
            "authorization_code",
            "refresh_token",
            "device_code",
            "jwt_bearer",
            "client_credentials",
        ]
        .iter()
        .map(|kind| self.calls(kind))
        .sum()
    }

    /// From now on every refresh token is refused with invalid_grant (revoked by the user).
    pub fn revoke_all(&self) {
        self.shared.revoked.store(true, Ordering::SeqCst);
    }

    /// The refresh tokens issued so far are refused with invalid_grant from now on (the
    /// user revoked the app, or they expired); a new login gets a good one.
    pub fn revoke_issued(&self) {
        for live in self.state().refresh_tokens.values_mut() {
            *live = false;
        }
    }

    /// Every secret this server handed out (codes, access and refresh tokens).
    pub fn issued(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    /// The refresh tokens that are still good.
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        let state = self.state();
        let mut live: Vec<String> = state
            .refresh_tokens
            .iter()
            .filter(|(_, live)| **live)
            .map(|(t, _)| t.clone())
            .collect();
        live.sort();
        live
    }

    /// The query parameters of each authorization request.
    pub fn authorize_params(&self) -> Vec<HashMap<String, String>> {
        self.state().authorize_params.clone()
    }

    /// The claims of each verified service-account JWT.
    pub fn jwt_claims(&self) -> Vec<Value> {
        self.state().jwt_claims.clone()
    }

    /// One line per request and answer, for failure messages.
    pub fn log(&self) -> String {
        self.state().log.clone()
    }

    /// From now on every token request is answered `status` with `{"error": code}`, as a
    /// provider under load may (a 503 that says invalid_grant).
    pub fn fail_token_requests(&self, status: &'static str, code: &str) {
        self.state().token_failure = Some((status, code.to_string()));
    }

    pub fn expect_unused(&mut self) {
        self.unused_ok = true;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let used = self.state().calls.values().sum::<usize>() > 0;
        if !thread::panicking() && !self.unused_ok && !used {
            panic!(
                "fake OAuth server on port {} was never called: the test did not exercise what \
                 it meant to (call expect_unused() if that is intended)",
                self.port
            );
        }
    }
}

/// An HTTP answer.
struct Answer {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(status: &'static str, body: Value) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    fn error(code: &str, description: &str) -> Answer {
        let status = if code == "invalid_client" {
            "401 Unauthorized"
        } else {
            "400 Bad Request"
        };
        Answer::json(
            status,
            json!({"error": code, "error_description": description}),
        )
    }

    fn text(status: &'static str, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.to_string(),
        }
    }
}

fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Some((method, target, body)) = read_request(&mut stream) else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let answer = match (method.as_str(), path) {
        ("GET", "/authorize") => authorize(shared, &parse_form(query)),
        ("POST", "/token") => token(shared, &parse_form(&body)),
        ("POST", "/devicecode") => device_code(shared, &parse_form(&body)),
        ("POST", "/introspect") => introspect(shared, &parse_form(&body)),
        _ => Answer::text("404 Not Found", "no such endpoint"),
    };
    {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.log.push_str(&format!(
            "{method} {path} -> {} {}\n",
            answer.status, answer.body
        ));
    }
    let mut head = format!("HTTP/1.1 {}\r\n", answer.status);
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        answer.body.len()
    ));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(answer.body.as_bytes());
    let _ = stream.flush();
}

/// Method, target and body of one request (Content-Length bodies only, as clients send forms).
fn read_request(stream: &mut TcpStream) -> Option<(String, String, String)> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if data.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?.to_string();
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned();
    Some((method, target, body))
}

fn parse_form(text: &str) -> HashMap<String, String> {
    form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn count(state: &mut State, kind: &str) {
    *state.calls.entry(kind.to_string()).or_insert(0) += 1;
}

fn authorize(shared: &Shared, params: &HashMap<String, String>) -> Answer {
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    count(&mut state, "authorize");
    state.authorize_params.push(params.clone());
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    let redirect_uri = get("redirect_uri");
    let problems = [
        (get("response_type") != "code", "response_type is not code"),
        (get("client_id") != CLIENT_ID, "unknown client_id"),
        (
            !redirect_uri.starts_with("http://127.0.0.1:"),
            "redirect_uri is not a loopback address",
        ),
        (
            get("code_challenge_method") != "S256",
            "code_challenge_method is not S256",
        ),
        (
            get("code_challenge").len() != 43,
            "code_challenge is not a SHA-256 in base64url",
        ),
        (get("state").is_empty(), "no state"),
        (get("scope").is_empty(), "no scope"),
    ];
    if let Some((_, why)) = problems.iter().find(|(bad, _)| *bad) {
        // A real provider shows an error page and never redirects a bad request.
        return Answer::text("400 Bad Request", why);
    }
    let query = if shared.opts.deny {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("error", "access_denied")
            .append_pair("state", get("state"))
            .finish()
    } else {
        let code = next_secret(&mut state, "code");
        state.codes.insert(
            code.clone(),
            Grant {
                challenge: get("code_challenge").to_string(),
                redirect_uri: redirect_uri.to_string(),
            },
        );
        form_urlencoded::Serializer::new(String::new())
            .append_pair("state", get("state"))
            .append_pair("code", &code)
            .append_pair("scope", get("scope"))
            .finish()
    };
    Answer {
        status: "302 Found",
        headers: vec![("Location".into(), format!("{redirect_uri}?{query}"))],
        body: String::new(),
    }
}

fn device_code(shared: &Shared, params: &HashMap<String, String>) -> Answer {
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    count(&mut state, "devicecode");
    if params.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return Answer::error("invalid_client", "unknown client");
    }
    if params.get("scope").is_none_or(|s| s.is_empty()) {
        return Answer::error("invalid_scope", "no scope");
    }
    let device_code = next_secret(&mut state, "device");
    state.device_codes.insert(device_code.clone(), 0);
    Answer::json(
        "200 OK",
        json!({
            "device_code": device_code,
            "user_code": USER_CODE,
            "verification_uri": format!("http://127.0.0.1:{}/device", shared.port),
            "expires_in": 600,
            "interval": 1,
        }),
    )
}

fn token(shared: &Shared, params: &HashMap<String, String>) -> Answer {
    if params.get("grant_type").map(String::as_str) == Some("refresh_token") {
        std::thread::sleep(shared.opts.refresh_delay);
    }
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    let grant = get("grant_type");
    let kind = match grant {
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => "jwt_bearer",
        "urn:ietf:params:oauth:grant-type:device_code" => "device_code",
        other => other,
    };
    count(&mut state, kind);
    if let Some((status, code)) = &state.token_failure {
        return Answer::json(
            status,
            json!({"error": code, "error_description": "failing on purpose"}),
        );
    }
    if kind == "jwt_bearer" {
        return match verify_jwt(
            get("assertion"),
            &format!("http://127.0.0.1:{}/token", shared.port),
        ) {
            Ok(claims) => {
                state.jwt_claims.push(claims);
                issue(shared, &mut state, false)
            }
            Err(why) => Answer::error("invalid_grant", &why),
        };
    }
    if get("client_id") != CLIENT_ID {
        return Answer::error("invalid_client", "The OAuth client was not found.");
    }
    if let Some(secret) = &shared.opts.client_secret {
        if get("client_secret") != secret {
            return Answer::error("invalid_client", "Unauthorized");
        }
    }
    match kind {
        "authorization_code" => {
            let Some(code) = state.codes.remove(get("code")) else {
                return Answer::error("invalid_grant", "Malformed auth code.");
            };
            if code.redirect_uri != get("redirect_uri") {
                return Answer::error("invalid_grant", "redirect_uri_mismatch");
            }
            let digest =
                ring::digest::digest(&ring::digest::SHA256, get("code_verifier").as_bytes());
            if B64URL.encode(digest) != code.challenge {
                return Answer::error("invalid_grant", "PKCE verification failed");
            }
            issue(shared, &mut state, true)
        }
        "refresh_token" => {
            let live = state.refresh_tokens.get(get("refresh_token")).copied();
            if live != Some(true) || shared.revoked.load(Ordering::SeqCst) {
                return Answer::error("invalid_grant", "Token has been expired or revoked.");
            }
            if shared.opts.rotate {
                state
                    .refresh_tokens
                    .insert(get("refresh_token").to_string(), false);
            }
            issue(shared, &mut state, shared.opts.rotate)
        }
        "device_code" => {
            let Some(polls) = state.device_codes.get_mut(get("device_code")) else {
                return Answer::error("invalid_grant", "unknown device code");
            };
            *polls += 1;
            if *polls <= shared.opts.device_pending {
                return Answer::error("authorization_pending", "waiting for the user");
            }
            let code = get("device_code").to_string();
            state.device_codes.remove(&code);
            issue(shared, &mut state, true)
        }
        "client_credentials" => {
            if !get("scope").ends_with("/.default") {
                return Answer::error("invalid_scope", "client credentials need a /.default scope");
            }
            issue(shared, &mut state, false)
        }
        _ => Answer::error("unsupported_grant_type", grant),
    }
}

/// An access token (and a refresh token if `with_refresh`), as a token endpoint answers.
fn issue(shared: &Shared, state: &mut State, with_refresh: bool) -> Answer {
    let n = state.access_issued;
    state.access_issued += 1;
    let pick = |list: &[String]| list[n.min(list.len() - 1)].clone();
    let access = pick(&shared.opts.access_tokens);
    let lifetime = shared.opts.lifetimes[n.min(shared.opts.lifetimes.len() - 1)];
    state.issued.push(access.clone());
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": "https://mail.google.com/",
    });
    if with_refresh {
        let refresh = next_secret(state, "1//refresh");
        state.refresh_tokens.insert(refresh.clone(), true);
        body["refresh_token"] = Value::from(refresh);
    }
    Answer::json("200 OK", body)
}

fn next_secret(state: &mut State, prefix: &str) -> String {
    state.counter += 1;
    let secret = format!("{prefix}-{}-{LEAK_MARKER}", state.counter);
    state.issued.push(secret.clone());
    secret
}

/// Token introspection (RFC 7662), as a resource server (Dovecot's oauth2 passdb) asks it:
/// `token=...` is active, for TEST_USER, when it is TEST_TOKEN, one of the configured
/// `access_tokens` or a token this server issued.
fn introspect(shared: &Shared, params: &HashMap<String, String>) -> Answer {
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    count(&mut state, "introspect");
    let token = params.get("token").map(String::as_str).unwrap_or_default();
    let known = token == TEST_TOKEN
        || shared.opts.access_tokens.iter().any(|t| t == token)
        || state.issued.iter().any(|t| t == token);
    if token.is_empty() || !known {
        return Answer::json("200 OK", json!({"active": false}));
    }
    Answer::json(
        "200 OK",
        json!({
            "active": true,
            "username": super::smtp_server::TEST_USER,
            "client_id": CLIENT_ID,
            "scope": "https://mail.google.com/",
            "token_type": "Bearer",
        }),
    )
}

/// Verifies an RS256 JWT from the test service account and returns its claims.
fn verify_jwt(jwt: &str, audience: &str) -> Result<Value, String> {
    use ring::signature::KeyPair;
    use rustls::pki_types::pem::PemObject;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("the assertion is not a JWT".into());
    };
    let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(SERVICE_ACCOUNT_KEY_PEM.as_bytes())
        .expect("test key");
    let rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8) = der else {
        panic!("test key is not PKCS#8");
    };
    let pair = ring::signature::RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der()).expect("test key");
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        pair.public_key().as_ref(),
    );
    let signature = B64URL
        .decode(signature)
        .map_err(|_| "bad signature encoding")?;
    public
        .verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| "Invalid JWT Signature.")?;
    let decode = |part: &str| -> Result<Value, String> {
        let bytes = B64URL.decode(part).map_err(|_| "bad JWT encoding")?;
        serde_json::from_slice(&bytes).map_err(|_| "JWT part is not JSON".to_string())
    };
    let header = decode(header)?;
    let claims = decode(claims)?;
    if header["alg"] != "RS256" {
        return Err("alg is not RS256".into());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let number = |key: &str| claims[key].as_u64().ok_or(format!("no {key}"));
    let (iat, exp) = (number("iat")?, number("exp")?);
    let checks = [
        (
            claims["iss"] == SERVICE_ACCOUNT_EMAIL,
            "iss is not the service account",
        ),
        (claims["aud"] == audience, "aud is not the token endpoint"),
        (
            claims["scope"]
                .as_str()
                // SMTP's scope, or the Gmail API's send-only one.
                .is_some_and(|s| {
                    s.split(' ').any(|s| {
                        s == "https://mail.google.com/"
                            || s == "https://www.googleapis.com/auth/gmail.send"
                    })
                }),
            "scope lacks https://mail.google.com/ (or gmail.send)",
        ),
        (
            claims["sub"].as_str().is_some_and(|s| s.contains('@')),
            "no sub (the mailbox)",
        ),
        (iat <= now + 60 && exp > now, "the JWT is not valid now"),
        (exp - iat <= 3600, "the JWT lives over an hour"),
    ];
    if let Some((_, why)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(why.to_string());
    }
    Ok(claims)
}

/// Account "test" of `config` with, instead of its `secret`, an `[accounts.test.oauth]`
/// table that uses `server` (as provider "gmail", whose endpoints it overrides), keeping
/// tokens in a file (`oauth("store", ..)` or `oauth_unset("store")` to change that).
pub fn use_oauth(config: TestConfig, server: &OAuthServer) -> TestConfig {
    config
        .account_unset("secret")
        .account_field("provider", "gmail")
        .oauth("client_id", CLIENT_ID)
        .oauth("client_secret", CLIENT_SECRET)
        .oauth("auth_uri", server.url("/authorize"))
        .oauth("token_uri", server.url("/token"))
        .oauth("store", "file")
}

/// Account "test" of `config` as the test Google service account (key file `key`, see
/// `write_service_account_key`) acting for TEST_USER, its tokens from `server`: no client,
/// no store, no login.
pub fn use_service_account(config: TestConfig, server: &OAuthServer, key: &Path) -> TestConfig {
    config
        .account_unset("secret")
        .account_field("provider", "gmail")
        .oauth_cleared()
        .oauth("service_account", key)
        .oauth("subject", super::smtp_server::TEST_USER)
        .oauth("token_uri", server.url("/token"))
}

/// The test service account's key file, as Google hands it out, readable by its owner only.
pub fn write_service_account_key(path: &Path) {
    let json = serde_json::json!({
        "type": "service_account",
        "client_email": SERVICE_ACCOUNT_EMAIL,
        "private_key_id": "0123abcd",
        "private_key": SERVICE_ACCOUNT_KEY_PEM,
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    super::harness::write_private(path, &json.to_string());
}

/// A scripted browser (python3): fetches the address it is given, follows the provider's
/// redirect to the loopback port, and appends the final status and page to `<script>.log`.
pub fn write_browser(dir: &Path) -> PathBuf {
    let path = dir.join("browser");
    std::fs::write(
        &path,
        "#!/usr/bin/env python3\n\
         import sys, urllib.request\n\
         with urllib.request.urlopen(sys.argv[1], timeout=20) as answer:\n\
         \x20   page = answer.read().decode()\n\
         \x20   with open(sys.argv[0] + '.log', 'a') as log:\n\
         \x20       log.write(f'{answer.status} {answer.url}\\n{page}\\n')\n",
    )
    .expect("write the scripted browser");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the scripted browser");
    }
    path
}

/// `oauth-sendmail login --account test ARGS` in the harness, with the scripted browser
/// as $BROWSER.
pub fn login(h: &super::harness::Harness, args: &[&str]) -> std::process::Output {
    let browser = write_browser(h.home.path());
    let mut cmd = std::process::Command::new(super::harness::BIN);
    cmd.args(["login", "--account", "test", "--timeout", "20"])
        .args(args)
        .env("BROWSER", browser);
    h.run(cmd, b"")
}

/// A fresh provider with `opts` and a harness whose account "test" uses it (see `use_oauth`),
/// with `edit` applied after that.
pub fn harness_with_oauth(
    opts: OAuthOptions,
    edit: impl FnOnce(TestConfig) -> TestConfig,
) -> (OAuthServer, super::harness::Harness) {
    let oauth = OAuthServer::start(opts);
    let h =
        super::harness::Harness::with_config(super::smtp_server::ServerOptions::default(), |c| {
            edit(use_oauth(c, &oauth))
        });
    (oauth, h)
}

/// Everything a failing assertion should show: exit code, both streams, both servers' logs.
pub fn explain(
    h: &super::harness::Harness,
    oauth: &OAuthServer,
    o: &std::process::Output,
) -> String {
    use super::harness::{stderr, stdout};
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- oauth log ---\n{}--- smtp transcript ---\n{}",
        o.status,
        stdout(o),
        stderr(o),
        oauth.log(),
        h.server.transcript()
    )
}

/// Fails if any secret the server issued, or the client secret, is in the child's stdout
/// or stderr.
pub fn assert_no_oauth_secrets(server: &OAuthServer, o: &std::process::Output) {
    use super::harness::{stderr, stdout};
    for (what, text) in [("stdout", stdout(o)), ("stderr", stderr(o))] {
        assert!(
            !text.contains(LEAK_MARKER),
            "a secret leaked to {what}:\n{text}"
        );
        for secret in server.issued() {
            assert!(
                !text.contains(&secret),
                "{secret} leaked to {what}:\n{text}"
            );
        }
        assert!(
            !text.contains(CLIENT_SECRET),
            "the client secret leaked to {what}"
        );
    }
}
