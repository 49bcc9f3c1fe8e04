//! The OAuth2 token and device endpoints: form POSTs over synchronous HTTP (ureq) with TLS
//! verified against the system's CAs, JSON answers parsed without trusting them, and
//! failures sorted into what a caller can act on (unreachable: try later; `invalid_grant`:
//! log in again; a wrong client: fix the configuration).
//!
//! Only called when a token must be fetched: a send with a valid cached token never gets
//! here, so no TLS is set up for it.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::check_endpoint;
use crate::error::{Error, Kind};
use crate::secret::Secret;

/// A token endpoint's successful answer.
pub struct TokenResponse {
    pub access_token: Secret,
    /// Seconds; `None` when the endpoint did not say.
    pub expires_in: Option<u64>,
    /// A new refresh token (after login, or rotated on refresh).
    pub refresh_token: Option<Secret>,
}

/// A failed call: the error to report, and the OAuth2 error code when the endpoint gave one
/// (`invalid_grant`, `authorization_pending`...), so callers can add their own guidance.
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub code: Option<String>,
}

impl Failure {
    fn new(error: Error) -> Failure {
        Failure { error, code: None }
    }
}

/// Form fields whose values may be shown in messages; every other value is a secret.
const PUBLIC_FIELDS: &[&str] = &["grant_type", "client_id", "scope", "redirect_uri"];

/// An answer larger than this is not a token response.
const MAX_BODY: u64 = 256 * 1024;

/// POSTs `form` to the token endpoint `url` and reads the token it answers.
pub fn request_token(
    url: &str,
    form: &[(&str, &str)],
    timeout: Duration,
) -> Result<TokenResponse, Failure> {
    let json = post_form(url, form, timeout)?;
    let bad = |why: &str| {
        Failure::new(Error::new(
            Kind::Protocol,
            format!("bad answer from the token endpoint {url}"),
            why,
        ))
    };
    let access_token = match json.get("access_token") {
        Some(Value::String(token)) if !token.is_empty() => Secret::new(token.as_str()),
        _ => return Err(bad("it holds no access_token")),
    };
    if let Some(Value::String(kind)) = json.get("token_type") {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(bad(&format!("token_type is {kind:?}, not Bearer")));
        }
    }
    let refresh_token = match json.get("refresh_token") {
        Some(Value::String(token)) if !token.is_empty() => Some(Secret::new(token.as_str())),
        _ => None,
    };
    Ok(TokenResponse {
        access_token,
        expires_in: number(&json, "expires_in"),
        refresh_token,
    })
}

/// A non-negative integer field; some endpoints send numbers as strings.
pub fn number(json: &Map<String, Value>, key: &str) -> Option<u64> {
    match json.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A string field.
pub fn text<'a>(json: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    json.get(key)?.as_str()
}

/// POSTs `form` to `url` and returns the JSON object of a 2xx answer; anything else is a
/// `Failure` whose text holds none of the form's secrets.
pub fn post_form(
    url: &str,
    form: &[(&str, &str)],
    timeout: Duration,
) -> Result<Map<String, Value>, Failure> {
    let unusable = |why: String| {
        Failure::new(Error::new(
            Kind::Config,
            format!("cannot use the endpoint {url}"),
            why,
        ))
    };
    check_endpoint(url).map_err(unusable)?;
    let agent = agent(url, timeout).map_err(Failure::new)?;
    let mut response = agent
        .post(url)
        .header("Accept", "application/json")
        .send_form(form.iter().copied())
        .map_err(|e| Failure::new(transport(url, e)))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(|e| Failure::new(transport(url, e)))?;
    let json = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        });
    match (status, json) {
        (200..=299, Some(json)) => Ok(json),
        (200..=299, None) => Err(Failure::new(Error::new(
            Kind::Protocol,
            format!("bad answer from {url}"),
            format!("HTTP {status} without a JSON object"),
        ))),
        // A busy or failing endpoint says nothing about the grant, whatever its `error`
        // reads (some answer a 503 with invalid_grant): only a 4xx refuses a login.
        (429 | 500..=599, json) => {
            let said = json.as_ref().and_then(|json| text(json, "error"));
            let why = match said {
                Some(code) => format!("HTTP {status} ({})", clean(code, form)),
                None => format!("HTTP {status}"),
            };
            Err(Failure::new(Error::new(
                Kind::Temporary,
                format!("the endpoint {url} failed"),
                why,
            )))
        }
        (_, Some(json)) if text(&json, "error").is_some() => Err(oauth_error(url, &json, form)),
        (_, _) => Err(Failure::new(Error::new(
            Kind::Protocol,
            format!("bad answer from {url}"),
            format!("HTTP {status} without an OAuth2 error"),
        ))),
    }
}

/// An RFC 6749 5.2 error answer, sorted by what fixes it.
fn oauth_error(url: &str, json: &Map<String, Value>, form: &[(&str, &str)]) -> Failure {
    let code = text(json, "error").unwrap_or_default();
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    let kind = match code.as_str() {
        "invalid_client" | "unauthorized_client" | "invalid_scope" | "unsupported_grant_type" => {
            Kind::Config
        }
        "temporarily_unavailable" | "server_error" | "slow_down" => Kind::Temporary,
        _ => Kind::AuthRefused,
    };
    let mut why = format!("it answered {code}");
    if let Some(description) = text(json, "error_description") {
        why = format!("{why} ({})", clean(description, form));
    }
    let mut error = Error::new(kind, format!("the token endpoint {url} refused"), why);
    if kind == Kind::Config && code != "invalid_scope" {
        error = error.hint("check client_id and client_secret in the account's [oauth] table");
    }
    Failure {
        error,
        code: Some(code),
    }
}

/// Server text for a message: one line, bounded, and never one of our secrets (a server
/// could echo what it was sent).
fn clean(text: &str, form: &[(&str, &str)]) -> String {
    let mut text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    for (key, value) in form {
        if !PUBLIC_FIELDS.contains(key) && value.len() >= 4 {
            text = text.replace(value, "(redacted)");
        }
    }
    text
}

fn transport(url: &str, err: ureq::Error) -> Error {
    let kind = match err {
        ureq::Error::BadUri(_) | ureq::Error::InvalidProxyUrl => Kind::Config,
        ureq::Error::Protocol(_) | ureq::Error::BodyExceedsLimit(_) => Kind::Protocol,
        // Unreachable, refused, timed out, TLS cut short: the next attempt may work.
        _ => Kind::Temporary,
    };
    Error::new(kind, format!("cannot reach the token endpoint {url}"), err)
}

/// An agent for one call: no redirects (they would resend the form), http only to
/// loopback, no proxy for loopback, TLS with the system's CA certificates.
fn agent(url: &str, timeout: Duration) -> Result<ureq::Agent, Error> {
    let https = url.starts_with("https://");
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent(concat!("oauth-sendmail/", env!("CARGO_PKG_VERSION")));
    if https {
        config = config.tls_config(tls_config()?);
    } else {
        config = config.proxy(None);
    }
    Ok(ureq::Agent::new_with_config(config.build()))
}

/// rustls with ring and the system's CA certificates (`sys::trust`, read once per
/// process), made on the first https call: a send with a cached token makes none.
fn tls_config() -> Result<ureq::tls::TlsConfig, Error> {
    static CONFIG: OnceLock<Result<ureq::tls::TlsConfig, String>> = OnceLock::new();
    match CONFIG.get_or_init(|| crate::sys::trust::ureq_tls(&[])) {
        Ok(config) => Ok(config.clone()),
        Err(problem) => Err(Error::new(
            Kind::Config,
            "cannot load the system's CA certificates",
            problem,
        )
        .hint("install the ca-certificates package")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_never_shows_a_secret_of_the_form() {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", "1//refresh-SECRET"),
            ("client_id", "abc"),
        ];
        let json: Map<String, Value> = serde_json::from_str(
            r#"{"error":"invalid_grant","error_description":"token 1//refresh-SECRET is revoked\nbye"}"#,
        )
        .unwrap();
        let failure = oauth_error("https://x/token", &json, &form);
        assert_eq!(failure.code.as_deref(), Some("invalid_grant"));
        assert_eq!(failure.error.exit_code(), 77);
        let text = failure.error.to_string();
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("(redacted) is revoked bye"), "{text}");
    }

    #[test]
    fn errors_are_sorted_by_what_fixes_them() {
        let code = |body: &str| {
            let json: Map<String, Value> = serde_json::from_str(body).unwrap();
            oauth_error("https://x/token", &json, &[]).error.exit_code()
        };
        assert_eq!(code(r#"{"error":"invalid_client"}"#), 78);
        assert_eq!(code(r#"{"error":"temporarily_unavailable"}"#), 75);
        assert_eq!(code(r#"{"error":"access_denied"}"#), 77);
        assert_eq!(
            code(r#"{"error":"invalid_grant","error_description":7}"#),
            77
        );
    }

    #[test]
    fn numbers_may_be_strings() {
        let json: Map<String, Value> =
            serde_json::from_str(r#"{"a":3599,"b":"3600","c":-1,"d":[1]}"#).unwrap();
        assert_eq!(number(&json, "a"), Some(3599));
        assert_eq!(number(&json, "b"), Some(3600));
        assert_eq!(number(&json, "c"), None);
        assert_eq!(number(&json, "d"), None);
        assert_eq!(number(&json, "e"), None);
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        let failure = post_form("http://example.com/token", &[], Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(failure.error.exit_code(), 78);
    }

    #[test]
    fn unreachable_endpoint_is_temporary() {
        // A port that was free a moment ago: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let failure = request_token(
            &format!("http://127.0.0.1:{port}/token"),
            &[("grant_type", "refresh_token")],
            Duration::from_secs(5),
        )
        .err()
        .unwrap();
        assert!(failure.error.is_transient(), "{}", failure.error);
    }
}
