//! `login`: the OAuth2 authorization-code flow for installed apps (a loopback redirect on
//! 127.0.0.1, PKCE S256, a `state` check), the browser opened for the user or the
//! redirected address pasted back on stdin, and the device code flow where the provider
//! allows it (Microsoft). Interactive by nature: the send path never comes here.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;

use crate::auth::endpoint::{self, TokenResponse};
use crate::auth::store::{self, Item, Store};
use crate::auth::token;
use crate::config::{Account, Grant, OAuth, Provider, StoreKind};
use crate::error::{Error, Kind, Result};
use crate::secret::Secret;

/// A request from the browser larger than this is not our redirect.
const MAX_REQUEST: usize = 16 * 1024;

/// How to log in: what `oauth-sendmail login` was asked for, less the account to choose.
#[derive(Debug)]
pub struct LoginOptions {
    /// The loopback port for the redirect; `None`: a random one.
    pub port: Option<u16>,
    /// Print the address and take the redirect pasted on stdin, opening no browser.
    pub no_browser: bool,
    /// The device code flow instead of a browser on this machine.
    pub device: bool,
    /// Seconds to wait for an answer.
    pub timeout: u64,
    /// Keep the client secret read from the first line of stdin first.
    pub client_secret_stdin: bool,
}

/// Logs `account` in and keeps its refresh token; with `--client-secret-stdin`, first keeps
/// the client secret read from stdin.
pub fn login(account: &Account, opts: &LoginOptions) -> Result<()> {
    let name = &account.name;
    let oauth = account.oauth.as_ref().ok_or_else(|| {
        Error::new(
            Kind::Config,
            format!("account `{name}` has no [oauth] table"),
            "its secret comes from `secret`, so there is nothing to log in to",
        )
        .hint(format!(
            "add [accounts.{name}.oauth] with client_id (see the README)"
        ))
    })?;
    // Refused before anything is opened or stored: such an account has nothing to keep.
    match oauth.grant {
        Grant::User | Grant::ClientCredentials if opts.client_secret_stdin => {}
        Grant::User => {}
        Grant::ServiceAccount { .. } | Grant::ClientCredentials => {
            return Err(Error::new(
                Kind::Usage,
                format!("account `{name}` needs no login"),
                "it gets its tokens with its own credentials (a service account key or client credentials)",
            )
            .hint(format!("check it with `oauth-sendmail status --check --account {name}`")))
        }
    }
    let input = StdinLines::start();
    let store = choose_store(account, oauth)?;
    if opts.client_secret_stdin {
        let line = input
            .next_line(Duration::from_secs(opts.timeout))
            .ok_or_else(|| {
                Error::new(
                    Kind::Usage,
                    "no client secret",
                    "--client-secret-stdin found no line on stdin",
                )
            })?;
        store.set(Item::ClientSecret, &Secret::new(line.trim()))?;
        token::remember_store(account, store.kind())?;
        eprintln!(
            "oauth-sendmail: the client secret of account `{name}` is in {}",
            store.describe(Item::ClientSecret)?
        );
    }
    if oauth.grant == Grant::ClientCredentials {
        // Its client secret was all there was to keep.
        return Ok(());
    }
    let client_secret = token::client_secret(oauth, Some(&store))?;
    let deadline = Instant::now() + Duration::from_secs(opts.timeout);
    let response = match opts.device {
        true => device_flow(account, oauth, client_secret.as_ref(), deadline)?,
        false => code_flow(
            account,
            oauth,
            client_secret.as_ref(),
            opts,
            &input,
            deadline,
        )?,
    };
    token::save_login(account, &store, &response)?;
    println!(
        "Logged in: account `{name}` ({}); its refresh token is in {}.",
        account.user,
        store.describe(Item::RefreshToken)?
    );
    Ok(())
}

/// The configured store, or the keyring when one answers, else a file. Checked before the
/// browser opens: a login whose token cannot be kept is wasted.
fn choose_store(account: &Account, oauth: &OAuth) -> Result<Store> {
    let kind = match oauth.store {
        Some(StoreKind::Keyring) => {
            store::keyring_reachable(&account.name)?;
            StoreKind::Keyring
        }
        Some(StoreKind::File) => StoreKind::File,
        None => match store::keyring_reachable(&account.name) {
            Ok(()) => StoreKind::Keyring,
            Err(err) => {
                let why = err.to_string();
                eprintln!(
                    "oauth-sendmail: {}\n  so the tokens go to a file (mode 0600); set store = \"keyring\" or \"file\" in [accounts.{}.oauth] to decide yourself",
                    why.lines().next().unwrap_or_default(),
                    account.name
                );
                StoreKind::File
            }
        },
    };
    Ok(Store::new(kind, &account.name))
}

/// The authorization-code flow with a loopback redirect and PKCE (RFC 8252, RFC 7636).
fn code_flow(
    account: &Account,
    oauth: &OAuth,
    client_secret: Option<&Secret>,
    opts: &LoginOptions,
    input: &StdinLines,
    deadline: Instant,
) -> Result<TokenResponse> {
    let port = opts.port.unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
        Error::new(
            Kind::Temporary,
            format!("cannot listen on 127.0.0.1:{port}"),
            e,
        )
        .hint("choose another --port, or leave it out for a random one")
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::new(Kind::Internal, "cannot read the listening port", e))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/");
    let verifier = random_token(32)?;
    let challenge = B64URL.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let state = random_token(16)?;
    let url = authorization_url(account, oauth, &redirect_uri, &challenge, &state)?;
    eprintln!(
        "To log in account `{}` ({}), open this address in a browser:\n\n  {url}\n",
        account.name, account.user
    );
    if opts.no_browser {
        eprintln!(
            "After you sign in, the browser is sent to {redirect_uri}?code=...: on another machine that page fails to load. Copy its whole address from the address bar and paste it here.\nOr forward the port first: ssh -L {port}:127.0.0.1:{port} THIS-HOST (use --port to fix the port)."
        );
    } else if !open_browser(&url) {
        eprintln!("No browser could be started: open the address yourself, or paste the address the browser ends up at here.");
    }
    eprintln!("Waiting up to {}...", time_left(deadline));
    let redirect = wait_for_redirect(&listener, input, deadline)?;
    if let Some(error) = &redirect.error {
        let why = match &redirect.error_description {
            Some(description) => format!("{error} ({description})"),
            None => error.clone(),
        };
        return Err(Error::new(Kind::AuthRefused, "the login was refused", why));
    }
    if redirect.state.as_deref() != Some(state.as_str()) {
        return Err(Error::new(
            Kind::AuthRefused,
            "the login answer does not belong to this login",
            "its state differs (an old browser tab, or a redirect that someone else started)",
        )
        .hint("run login again and use the address it prints"));
    }
    let code = redirect.code.unwrap_or_default();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("client_id", oauth.client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    if let Some(secret) = client_secret {
        form.push(("client_secret", secret.expose()));
    }
    endpoint::request_token(token::token_uri(oauth)?, &form, account.timeout)
        .map_err(|f| f.error.within("cannot complete the login"))
}

fn authorization_url(
    account: &Account,
    oauth: &OAuth,
    redirect_uri: &str,
    challenge: &str,
    state: &str,
) -> Result<String> {
    let Some(auth_uri) = &oauth.auth_uri else {
        return Err(Error::new(
            Kind::Config,
            format!("account `{}` has no auth_uri", account.name),
            "the browser login needs the provider's authorization endpoint",
        )
        .hint("set auth_uri in its [oauth] table, or use `login --device`"));
    };
    let scope = oauth.scopes.join(" ");
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", &oauth.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &scope)
        .append_pair("state", state)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("login_hint", &account.user);
    if account.provider == Provider::Gmail {
        // Without both, Google gives a refresh token only on the very first consent.
        query
            .append_pair("access_type", "offline")
            .append_pair("prompt", "consent");
    }
    let separator = if auth_uri.contains('?') { '&' } else { '?' };
    Ok(format!("{auth_uri}{separator}{}", query.finish()))
}

/// What the provider sent the browser back with.
#[derive(Default)]
struct Redirect {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl Redirect {
    /// The parameters of a query string; `None` unless it holds a code or an error.
    fn from_query(query: &str) -> Option<Redirect> {
        let mut redirect = Redirect::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let value: String = value
                .chars()
                .filter(|c| !c.is_control())
                .take(2048)
                .collect();
            match key.as_ref() {
                "code" => redirect.code = Some(value),
                "state" => redirect.state = Some(value),
                "error" => redirect.error = Some(value),
                "error_description" => redirect.error_description = Some(value),
                _ => {}
            }
        }
        (redirect.code.is_some() || redirect.error.is_some()).then_some(redirect)
    }

    /// A pasted address (`http://127.0.0.1:PORT/?code=...&state=...`), or just its query.
    fn from_pasted(line: &str) -> Option<Redirect> {
        let line = line.trim();
        let line = line.split('#').next().unwrap_or_default();
        let query = match line.split_once('?') {
            Some((_, query)) => query,
            None => line,
        };
        Redirect::from_query(query)
    }
}

/// Waits for the browser's redirect on the loopback port or a pasted address on stdin,
/// until `deadline`.
fn wait_for_redirect(
    listener: &TcpListener,
    input: &StdinLines,
    deadline: Instant,
) -> Result<Redirect> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::new(Kind::Internal, "cannot poll the loopback port", e))?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Some(redirect) = serve_redirect(stream) {
                    return Ok(redirect);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                return Err(Error::new(
                    Kind::Io,
                    "cannot accept the browser's connection",
                    e,
                ))
            }
        }
        if let Some(line) = input.try_line() {
            match Redirect::from_pasted(&line) {
                Some(redirect) => return Ok(redirect),
                None if line.trim().is_empty() => {}
                None => eprintln!("That is not the address the browser was sent to (it has no code=...): paste the whole address from the address bar."),
            }
        }
        if Instant::now() >= deadline {
            return Err(
                timed_out("no answer came from the browser, and no address was pasted")
                    .hint("on a machine without a browser, use --no-browser and paste the address"),
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Answers one browser request on the loopback port; the redirect if it was that.
fn serve_redirect(mut stream: TcpStream) -> Option<Redirect> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut chunk = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request);
    let target = head
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("GET "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let redirect = (path == "/").then(|| Redirect::from_query(query)).flatten();
    let (status, text) = match &redirect {
        Some(r) if r.error.is_some() => (
            "200 OK",
            "The login was refused. You can close this tab; the terminal says more.",
        ),
        Some(_) => (
            "200 OK",
            "Logged in. You can close this tab and go back to the terminal.",
        ),
        None => ("404 Not Found", "This is not the login redirect."),
    };
    let body = format!("<!doctype html><title>oauth-sendmail</title><p>{text}</p>\n");
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
    redirect
}

/// The device authorization grant (RFC 8628): a code to enter on another device.
fn device_flow(
    account: &Account,
    oauth: &OAuth,
    client_secret: Option<&Secret>,
    deadline: Instant,
) -> Result<TokenResponse> {
    let Some(device_uri) = &oauth.device_uri else {
        let why = match account.provider {
            Provider::Gmail => "Google's device flow does not allow the Gmail scope",
            _ => "the account has no device_uri",
        };
        return Err(Error::new(Kind::Usage, "cannot log in with --device", why).hint(format!(
            "log in with the browser: `oauth-sendmail login --account {0} --no-browser` and paste the address, or forward the port with ssh -L PORT:127.0.0.1:PORT and `login --account {0} --port PORT`",
            account.name
        )));
    };
    let scope = oauth.scopes.join(" ");
    let form = [
        ("client_id", oauth.client_id.as_str()),
        ("scope", scope.as_str()),
    ];
    let what = "cannot start the device login";
    let json = endpoint::post_form(device_uri, &form, account.timeout)
        .map_err(|f| f.error.within(what))?;
    let field = |key: &str| {
        endpoint::text(&json, key)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let bad = |key: &str| {
        Error::new(
            Kind::Protocol,
            what,
            format!("the device endpoint's answer has no {key}"),
        )
    };
    let device_code = field("device_code").ok_or_else(|| bad("device_code"))?;
    let user_code = field("user_code").ok_or_else(|| bad("user_code"))?;
    let verification = field("verification_uri")
        .or_else(|| field("verification_url"))
        .ok_or_else(|| bad("verification_uri"))?;
    let mut interval = endpoint::number(&json, "interval").unwrap_or(5).max(1);
    let expires =
        Instant::now() + Duration::from_secs(endpoint::number(&json, "expires_in").unwrap_or(900));
    let deadline = deadline.min(expires);
    eprintln!(
        "To log in account `{}` ({}), open {verification} on any device and enter the code {user_code}",
        account.name, account.user
    );
    eprintln!("Waiting up to {}...", time_left(deadline));
    let token_uri = token::token_uri(oauth)?;
    loop {
        thread::sleep(Duration::from_secs(interval));
        if Instant::now() >= deadline {
            return Err(timed_out("the code was not entered in time"));
        }
        let mut form = vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
            ("client_id", oauth.client_id.as_str()),
        ];
        if let Some(secret) = client_secret {
            form.push(("client_secret", secret.expose()));
        }
        match endpoint::request_token(token_uri, &form, account.timeout) {
            Ok(response) => return Ok(response),
            Err(f) if f.code.as_deref() == Some("authorization_pending") => {}
            Err(f) if f.code.as_deref() == Some("slow_down") => interval += 5,
            Err(f) => return Err(f.error.within("the device login failed")),
        }
    }
}

/// "5 seconds" for a deadline 4.99 s away: what --timeout said, not one less.
fn time_left(deadline: Instant) -> String {
    let left = deadline.saturating_duration_since(Instant::now());
    let seconds = u64::try_from(left.as_millis().div_ceil(1000)).unwrap_or(u64::MAX);
    crate::sys::clock::count(seconds, "second")
}

fn timed_out(why: &str) -> Error {
    Error::new(Kind::Temporary, "the login timed out", why)
        .hint("run login again (--timeout SECONDS allows longer)")
}

/// Opens `url` with $BROWSER (a `:`-separated list; `%s` stands for the address), else
/// xdg-open, else open (macOS). Does not wait for the browser.
fn open_browser(url: &str) -> bool {
    let mut commands: Vec<String> = std::env::var("BROWSER")
        .unwrap_or_default()
        .split(':')
        .filter(|c| !c.trim().is_empty())
        .map(String::from)
        .collect();
    for fallback in ["xdg-open", "open"] {
        if on_path(fallback) {
            commands.push(fallback.to_string());
        }
    }
    for command in commands {
        // The address goes in as "$1", never into the shell text.
        let script = match command.contains("%s") {
            true => command.replace("%s", "\"$1\""),
            false => format!("{command} \"$1\""),
        };
        let spawned = Command::new("/bin/sh")
            .args(["-c", &script, "sh", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = spawned {
            // Reaped in the background: a browser may run for as long as it likes.
            thread::spawn(move || child.wait());
            return true;
        }
    }
    false
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| Path::new(&dir).join(program).is_file())
    })
}

/// URL-safe random text from `bytes` random bytes (PKCE verifier, state).
fn random_token(bytes: usize) -> Result<String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| {
            Error::new(
                Kind::Internal,
                "cannot get random bytes",
                "the system's generator failed",
            )
        })?;
    Ok(B64URL.encode(buf))
}

/// Lines of stdin, read by a thread so that the loopback port can be watched meanwhile.
struct StdinLines(Receiver<String>);

impl StdinLines {
    fn start() -> StdinLines {
        let (send, receive) = mpsc::channel();
        thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        StdinLines(receive)
    }

    fn try_line(&self) -> Option<String> {
        // Empty or closed (stdin at EOF): nothing pasted, keep watching the port.
        self.0.try_recv().ok()
    }

    fn next_line(&self, wait: Duration) -> Option<String> {
        self.0.recv_timeout(wait).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_address_query_or_garbage() {
        let r =
            Redirect::from_pasted("  http://127.0.0.1:8080/?state=s1&code=4%2F0Ab&scope=x#frag\n")
                .unwrap();
        assert_eq!(r.code.as_deref(), Some("4/0Ab"));
        assert_eq!(r.state.as_deref(), Some("s1"));
        let r = Redirect::from_pasted("code=c&state=s").unwrap();
        assert_eq!(r.code.as_deref(), Some("c"));
        let r = Redirect::from_pasted("http://127.0.0.1:1/?error=access_denied&state=s").unwrap();
        assert_eq!(r.error.as_deref(), Some("access_denied"));
        assert!(Redirect::from_pasted("hello").is_none());
        assert!(Redirect::from_pasted("http://127.0.0.1:1/").is_none());
        assert!(Redirect::from_pasted("?%ff%fe=\u{0}&code").is_some());
    }

    #[test]
    fn random_tokens_are_url_safe_and_differ() {
        let a = random_token(32).unwrap();
        let b = random_token(32).unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn loopback_server_answers_and_parses_the_redirect() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /?code=abc&state=xyz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        });
        let (stream, _) = listener.accept().unwrap();
        let redirect = serve_redirect(stream).unwrap();
        assert_eq!(redirect.code.as_deref(), Some("abc"));
        assert!(client.join().unwrap().starts_with("HTTP/1.1 200 OK"));
    }
}
