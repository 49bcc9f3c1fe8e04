//! `oauth-sendmail status`: each account's state, never a secret, rendered as `label:
//! value` lines from what `auth::token` reports, and the checks a send makes (which account
//! it picks, that its secret can be read, that it is logged in). When one fails, status
//! says what and exits with that failure's status. With `--check`, for monitoring: a
//! one-line verdict first (held accounts, deferred mail, failing accounts), an SMTP login
//! to each account (or the API's profile request for an HTTPS one) that sends nothing,
//! and a Nagios plugin's exit status; with `--json`,
//! the same state as one object for scripts.

use std::io::{self, Write};

use crate::auth::token::{self, Credential, RefreshToken, State};
use crate::commands::stdout_error;
use crate::config::{Account, AuthMethod, Config, SecretSource, Transport};
use crate::delivery::hold::{Cause, Hold, Holds};
use crate::delivery::queue::Queue;
use crate::error::{Error, Kind, Result};
use crate::sys::clock::{about, count, readable, when};

/// What `status` was asked for.
pub struct Options<'a> {
    /// Which mode a sendmail call is in (user or system), shown first.
    pub mode: &'a str,
    /// Only this account; `None`: every account, and which one is the default.
    pub account: Option<&'a str>,
    /// For monitoring: a one-line verdict first, an SMTP login to each account, and the
    /// exit status of a Nagios plugin (see [`Health`]).
    pub check: bool,
    /// Why the SMTP login is not run for this caller (the service runs it only for root
    /// and its admin group), shown in its place.
    pub check_refused: Option<&'a str>,
    /// With `check`: the SMTP dialogue on stderr.
    pub verbose: bool,
    /// The state as one JSON object instead of the text, for scripts.
    pub json: bool,
    /// What the service says of itself, after the verdict and before the rest.
    pub preamble: Option<String>,
}

/// The verdict of `status --check`, worst first wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Ok,
    Warning,
    Critical,
}

impl Health {
    fn name(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Warning => "WARNING",
            Health::Critical => "CRITICAL",
        }
    }

    /// How `status --check` ends: Nagios plugins exit 0, 1, 2 (error.rs maps the kinds).
    fn outcome(self, summary: &str) -> Result<()> {
        let kind = match self {
            Health::Ok => return Ok(()),
            Health::Warning => Kind::CheckWarning,
            Health::Critical => Kind::CheckCritical,
        };
        Err(Error::new(kind, "status --check", summary))
    }
}

/// Prints the status on stdout.
pub fn show(config: &Config, options: &Options) -> Result<()> {
    render(config, options, &mut io::stdout().lock())
}

/// One account as status found it.
struct Seen<'c> {
    account: &'c Account,
    text: String,
    problems: Vec<Error>,
    hold: Option<Hold>,
    check: Option<Result<()>>,
    last_error: Option<String>,
}

impl Seen<'_> {
    /// "ready", "held" (its quota), "needs_login", or "failing" (a send would fail).
    fn state(&self) -> &'static str {
        match (&self.hold, self.failing()) {
            (Some(h), _) if h.cause == Cause::NeedsLogin => "needs_login",
            (_, true) => "failing",
            (Some(_), false) => "held",
            (None, false) => "ready",
        }
    }

    fn failing(&self) -> bool {
        !self.problems.is_empty() || matches!(self.check, Some(Err(_)))
    }
}

/// The status as text (or JSON), for stdout or for the service to send back.
pub fn render(config: &Config, options: &Options, out: &mut impl Write) -> Result<()> {
    let accounts: Vec<&Account> = match options.account {
        Some(name) => vec![config.choose_account(Some(name), None)?],
        None => config.accounts.values().collect(),
    };
    if accounts.is_empty() {
        // The error names the file and says what to add.
        config.choose_account(None, None)?;
    }
    let now = crate::sys::clock::now();
    let holds = Holds::of_queue(&config.queue.dir);
    let mut problems: Vec<Error> = Vec::new();
    let mut text = format!("{:<18}{}\n", "mode:", options.mode);
    let mut default = None;
    if options.account.is_none() {
        // What a send that names no account, and no sender of one, goes through.
        let shown = match config.choose_account(None, None) {
            Ok(account) => {
                default = Some(account.name.clone());
                account.name.clone()
            }
            Err(err) => {
                let shown = format!("none: {}", err.summary());
                problems.push(err);
                shown
            }
        };
        text.push_str(&format!("{:<18}{shown}\n", "default account:"));
    }
    let mut seen = Vec::new();
    for account in &accounts {
        let one = look_at(account, options, holds.active(&account.name, now), now);
        text.push_str(&one.text);
        seen.push(one);
    }
    let queue = QueueState::of(config, now);
    let (health, summary) = verdict(&problems, &seen, &queue);
    if options.json {
        let object = json(options, &default, &seen, &queue, health, &summary);
        writeln!(out, "{object}").map_err(stdout_error)?;
    } else {
        if options.check {
            writeln!(out, "{}: {summary}", health.name()).map_err(stdout_error)?;
        }
        if let Some(preamble) = &options.preamble {
            out.write_all(preamble.as_bytes()).map_err(stdout_error)?;
        }
        out.write_all(text.as_bytes()).map_err(stdout_error)?;
    }
    if options.check {
        return health.outcome(&summary);
    }
    let mut failed = None;
    for one in seen {
        problems.extend(one.problems);
        if let Some(Err(err)) = one.check {
            failed.get_or_insert(err);
        }
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

/// One account's lines, problems, hold, and (with `--check`) its SMTP login.
fn look_at<'c>(account: &'c Account, options: &Options, hold: Option<Hold>, now: u64) -> Seen<'c> {
    let server = match account.transport {
        Transport::Smtp => {
            format!("{}:{} ({:?})", account.host, account.port, account.provider).to_lowercase()
        }
        other => format!("{} ({})", account.api_uri, other.name()),
    };
    let mut lines = vec![("server", server), ("from", account.addresses.join(", "))];
    if account.auth != AuthMethod::None {
        lines.push(("user", account.user.clone()));
    }
    let state = token::status(account);
    let last_error = state.tokens.as_ref().and_then(|t| t.last_error.clone());
    let report = Report::of(account, state);
    lines.extend(report.lines);
    if let Some(hold) = &hold {
        let shown = match hold.cause {
            Cause::NeedsLogin => format!(
                "needs login since {} (mail held; tried again {}): {}",
                readable(hold.since),
                when(hold.until, now),
                hold.reason
            ),
            Cause::Quota => format!(
                "mail held until {}: the provider's sending quota is used up: {}",
                when(hold.until, now),
                hold.reason
            ),
        };
        lines.push(("hold", shown));
    }
    let mut check = None;
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
        check = Some(checked.map(drop));
    }
    let mut text = format!("account {}\n", account.name);
    for (label, value) in lines {
        text.push_str(&format!("  {:<16}{value}\n", format!("{label}:")));
    }
    Seen {
        account,
        text,
        problems: report.problems,
        hold,
        check,
        last_error,
    }
}

/// The queue as monitoring sees it.
#[derive(Default)]
struct QueueState {
    messages: usize,
    /// Tried and not delivered yet.
    deferred: usize,
    /// Seconds since the oldest deferred message came.
    oldest: Option<u64>,
    unreadable: usize,
    /// The newest deferred message's last error.
    last_error: Option<String>,
}

impl QueueState {
    fn of(config: &Config, now: u64) -> QueueState {
        let Some(queue) = Queue::existing(&config.queue.dir) else {
            return QueueState::default();
        };
        let Ok((entries, unreadable)) = queue.scan() else {
            return QueueState::default();
        };
        let deferred: Vec<_> = entries.iter().filter(|e| e.attempts > 0).collect();
        QueueState {
            messages: entries.len(),
            deferred: deferred.len(),
            oldest: deferred.iter().map(|e| now.saturating_sub(e.arrival)).max(),
            unreadable: unreadable.len(),
            // Ids sort by arrival: the last is the newest.
            last_error: deferred.iter().rev().find_map(|e| e.last_error.clone()),
        }
    }
}

/// The worst of what was found, and a line that says it (every finding of that level).
fn verdict(problems: &[Error], seen: &[Seen], queue: &QueueState) -> (Health, String) {
    let mut found: Vec<(Health, String)> = problems
        .iter()
        .map(|p| (Health::Critical, p.summary()))
        .collect();
    for one in seen {
        let name = &one.account.name;
        if let Some(hold) = &one.hold {
            found.push(match hold.cause {
                Cause::NeedsLogin => (
                    Health::Critical,
                    format!("account {name} needs login since {}", readable(hold.since)),
                ),
                Cause::Quota => (
                    Health::Warning,
                    format!("account {name} held until {} (quota)", readable(hold.until)),
                ),
            });
        }
        if let Some(problem) = one.problems.first() {
            found.push((
                Health::Critical,
                format!("account {name}: {}", problem.summary()),
            ));
        }
        if let Some(Err(err)) = &one.check {
            let level = match err.is_transient() {
                true => Health::Warning,
                false => Health::Critical,
            };
            found.push((
                level,
                format!("account {name}: check failed: {}", err.summary()),
            ));
        }
    }
    if queue.deferred > 0 {
        let oldest = about(queue.oldest.unwrap_or_default());
        let deferred = count(queue.deferred as u64, "message");
        found.push((
            Health::Warning,
            format!("{deferred} deferred, oldest {oldest}"),
        ));
    }
    if queue.unreadable > 0 {
        let unreadable = count(queue.unreadable as u64, "unreadable queue entry");
        found.push((Health::Warning, format!("{unreadable} (see mailq)")));
    }
    let Some(worst) = found.iter().map(|(level, _)| *level).max() else {
        let ready = count(seen.len() as u64, "account");
        return (
            Health::Ok,
            format!("{ready} ready, queue {}", queue.messages),
        );
    };
    let line: Vec<String> = found
        .into_iter()
        .filter(|(level, _)| *level == worst)
        .map(|(_, text)| text)
        .collect();
    (worst, line.join("; "))
}

/// `status --json`: a stable object for scripts.
fn json(
    options: &Options,
    default: &Option<String>,
    seen: &[Seen],
    queue: &QueueState,
    health: Health,
    summary: &str,
) -> serde_json::Value {
    let accounts: Vec<serde_json::Value> = seen
        .iter()
        .map(|one| {
            serde_json::json!({
                "name": one.account.name,
                "state": one.state(),
                "hold": one.hold.as_ref().map(|h| serde_json::json!({
                    "cause": h.cause,
                    "since": h.since,
                    "until": h.until,
                    "reason": h.reason,
                })),
                "problem": one.problems.first().map(Error::summary),
                "check": one.check.as_ref().map(|c| match c {
                    Ok(()) => "ok".to_string(),
                    Err(err) => format!("failed: {}", err.summary()),
                }),
                "last_error": one.last_error,
            })
        })
        .collect();
    let last_error = queue
        .last_error
        .clone()
        .or_else(|| seen.iter().find_map(|one| one.last_error.clone()));
    serde_json::json!({
        "mode": options.mode.split_whitespace().next().unwrap_or_default(),
        "health": health.name().to_ascii_lowercase(),
        "summary": summary,
        "default_account": default,
        "accounts": accounts,
        "queue": {
            "messages": queue.messages,
            "deferred": queue.deferred,
            "oldest_deferred_seconds": queue.oldest,
            "unreadable": queue.unreadable,
        },
        "last_error": last_error,
    })
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
