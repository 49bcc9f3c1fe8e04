//! `oauth-sendmail status`: each account's state, never a secret, rendered as `label:
//! value` lines from what `auth::token` reports, and the checks a send makes (which account
//! it picks, that its secret can be read, that it is logged in). When one fails, status
//! says what and exits with that failure's status. With `--check`, also an SMTP login to
//! each account, or the API's profile request for an HTTPS one, sending nothing.

use std::io::{self, Write};

use crate::auth::token::{self, Credential, RefreshToken, State};
use crate::commands::stdout_error;
use crate::config::{Account, AuthMethod, Config, SecretSource, Transport};
use crate::error::{Error, Result};
use crate::sys::clock::when;

/// What `status` was asked for.
pub struct Options<'a> {
    /// Which mode a sendmail call is in (user or system), shown first.
    pub mode: &'a str,
    /// Only this account; `None`: every account, and which one is the default.
    pub account: Option<&'a str>,
    /// Also an SMTP login to each.
    pub check: bool,
    /// Why the check is not run for this caller (the service runs it only for root and
    /// its admin group), shown in its place.
    pub check_refused: Option<&'a str>,
    /// With `check`: the SMTP dialogue on stderr.
    pub verbose: bool,
}

/// Prints the status on stdout.
pub fn show(config: &Config, options: &Options) -> Result<()> {
    render(config, options, &mut io::stdout().lock())
}

/// The status as text, for stdout or for the service to send back.
pub fn render(config: &Config, options: &Options, out: &mut impl Write) -> Result<()> {
    let accounts: Vec<&Account> = match options.account {
        Some(name) => vec![config.choose_account(Some(name), None)?],
        None => config.accounts.values().collect(),
    };
    if accounts.is_empty() {
        // The error names the file and says what to add.
        config.choose_account(None, None)?;
    }
    let mut problems: Vec<Error> = Vec::new();
    writeln!(out, "{:<18}{}", "mode:", options.mode).map_err(stdout_error)?;
    if options.account.is_none() {
        // What a send that names no account, and no sender of one, goes through.
        let default = match config.choose_account(None, None) {
            Ok(account) => account.name.clone(),
            Err(err) => {
                let text = format!("none: {}", err.summary());
                problems.push(err);
                text
            }
        };
        writeln!(out, "{:<18}{default}", "default account:").map_err(stdout_error)?;
    }
    let mut failed: Option<Error> = None;
    for account in &accounts {
        let mut lines = vec![
            (
                "server",
                match account.transport {
                    Transport::Smtp => {
                        format!("{}:{} ({:?})", account.host, account.port, account.provider)
                            .to_lowercase()
                    }
                    other => format!("{} ({})", account.api_uri, other.name()),
                },
            ),
            ("from", account.addresses.join(", ")),
        ];
        if account.auth != AuthMethod::None {
            lines.push(("user", account.user.clone()));
        }
        let report = Report::of(account, token::status(account));
        lines.extend(report.lines);
        problems.extend(report.problems);
        if let (true, Some(why)) = (options.check, options.check_refused) {
            lines.push(("check", format!("not run: {why}")));
        } else if options.check {
            let checked = crate::delivery::transport::check(account, options.verbose);
            let result = match &checked {
                Ok(None) => "ok: authenticated and quit".to_string(),
                Ok(Some(found)) => format!("ok: {found}, nothing sent"),
                Err(err) => format!(
                    "FAILED: {}",
                    err.to_string().replace('\n', "\n                  ")
                ),
            };
            lines.push(("check", result));
            if let Err(err) = checked {
                failed.get_or_insert(err);
            }
        }
        let mut text = format!("account {}\n", account.name);
        for (label, value) in lines {
            text.push_str(&format!("  {:<16}{value}\n", format!("{label}:")));
        }
        out.write_all(text.as_bytes()).map_err(stdout_error)?;
    }
    let mut problems = problems.into_iter();
    if let Some(first) = problems.next() {
        // The others were shown above; the first is the exit status, with its hint.
        let more = problems.count();
        let first = first.within("a send would fail");
        return Err(match more {
            0 => first,
            n => first.hint(format!("and {n} more problem(s): see above")),
        });
    }
    match failed {
        Some(err) => Err(err.within("the check failed")),
        None => Ok(()),
    }
}

/// One account's `label: value` lines, and what would make a send through it fail.
#[derive(Default)]
struct Report {
    lines: Vec<(&'static str, String)>,
    problems: Vec<Error>,
}

impl Report {
    fn of(account: &Account, state: State) -> Report {
        let mut report = Report::default();
        let mut tokens = state.tokens;
        if let Some(err) = tokens.as_mut().and_then(|t| t.unreadable.take()) {
            report.line("token cache", format!("unreadable: {}", first_line(&err)));
            report.problems.push(err);
        }
        match state.credentials {
            Credential::None => report.line("credentials", "none (the server trusts this host)"),
            Credential::Secret { source, read } => {
                let what = match source {
                    SecretSource::File(path) => {
                        format!("a ready token or password from the file {}", path.display())
                    }
                    SecretSource::Command(_) => {
                        "a ready token or password from a command".to_string()
                    }
                };
                report.checked("credentials", what, read);
            }
            Credential::Login {
                store,
                refresh_token,
                client_secret,
            } => {
                report.line("credentials", "OAuth2 login");
                if let Some(place) = store {
                    report.line("store", place);
                }
                let state = match refresh_token {
                    RefreshToken::Present => "present".to_string(),
                    RefreshToken::Missing(err) => {
                        report.problems.push(err);
                        format!("none: {}", crate::auth::login_hint(&account.name))
                    }
                    RefreshToken::Unknown(err) => {
                        let text = format!("cannot tell: {}", first_line(&err));
                        report.problems.push(err);
                        text
                    }
                };
                report.line("refresh token", state);
                if let Some(check) = client_secret {
                    report.checked(
                        "client secret",
                        "from the configuration's source".to_string(),
                        check,
                    );
                }
            }
            Credential::ServiceAccount {
                key_file,
                subject,
                read,
            } => report.checked(
                "credentials",
                format!(
                    "service account key {} acting as {subject}",
                    key_file.display()
                ),
                read,
            ),
            Credential::ClientCredentials { client_id, secret } => report.checked(
                "credentials",
                format!("client credentials of client {client_id}"),
                secret,
            ),
        }
        let Some(tokens) = tokens else {
            return report;
        };
        let now = crate::sys::clock::now();
        let expiry = match tokens.access_token_expires {
            Some(at) if at > now => format!("expires {}", when(at, now)),
            Some(at) => format!("expired {}", when(at, now)),
            None => "none cached".to_string(),
        };
        report.line("access token", expiry);
        if let Some(at) = tokens.refreshed_at {
            report.line("last refreshed", when(at, now));
        }
        let last_error = match (tokens.last_error, tokens.last_error_at) {
            // The time first: `when` has brackets of its own, and so may the error.
            (Some(error), Some(at)) => format!("{}: {error}", when(at, now)),
            (Some(error), None) => error,
            (None, _) => "none".to_string(),
        };
        report.line("last error", last_error);
        report
    }

    fn line(&mut self, label: &'static str, value: impl Into<String>) {
        self.lines.push((label, value.into()));
    }

    /// `value` when `check` passed, else "value: FAILED: why", and the failure is a problem.
    fn checked(&mut self, label: &'static str, value: String, check: Result<()>) {
        match check {
            Ok(()) => self.line(label, value),
            Err(err) => {
                self.line(label, format!("{value}: FAILED: {}", first_line(&err)));
                self.problems.push(err);
            }
        }
    }
}

fn first_line(err: &Error) -> String {
    err.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}
