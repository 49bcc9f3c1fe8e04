//! oauth-sendmail: a drop-in /usr/sbin/sendmail that submits mail over SMTP with OAuth2.
//!
//! Where things are, one folder a concern, each importing only from the ones below it:
//! `cli` (argv and personalities) and this file (one function per command) on top;
//! `delivery` (send now, the queue, its flush, bounces, the delivery log, dead.letter);
//! `smtp` (the client, and the `sendmail -bs` server) and `auth` (login, tokens, stores,
//! secrets); `config` (the TOML file and accounts); `message` (addresses and intake, pure);
//! `sys` (state files, clock, signals). `error` holds the one error type and the only
//! mapping to exit codes.

mod auth;
mod cli;
mod config;
mod delivery;
mod error;
mod message;
mod relay;
mod service;
mod smtp;
mod sys;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use cli::{Action, Invocation, QueueCommand, SessionOptions};
use config::{Account, Config};
use delivery::flush::{Flusher, Selection};
use delivery::log::{DeliveryLog, Format, Status};
use delivery::queue::{Entry, Queue};
use error::{Error, Kind, Result};
use message::address::Resolver;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let result = cli::parse(&argv).map_err(|rejected| {
        // clap's explanation first, our one line last, where a reader's eye ends.
        if let Some(explanation) = rejected.explanation {
            eprintln!("{}", explanation.trim_end());
        }
        rejected.error
    });
    match result.and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("oauth-sendmail: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(action: Action) -> Result<()> {
    // System mode (see service::mode): the service does it.
    if let Some(result) = service::client::dispatch(&action) {
        return result;
    }
    match action {
        Action::Daemon => service::daemon::run(),
        Action::Device { config, command } => {
            let path = config.unwrap_or_else(|| service::Paths::system().config());
            relay::devices::command(&path, command, &mut std::io::stdout().lock())
        }
        Action::Send(invocation) if invocation.verify_only => verify(&invocation),
        Action::Send(invocation) => delivery::send::send(&invocation),
        Action::ListQueue { config } => list_queue(config.as_deref()),
        Action::FlushQueue {
            config,
            verbose,
            all,
        } => {
            let selection = if all { Selection::All } else { Selection::Due };
            flush_queue(config.as_deref(), selection, verbose)
        }
        Action::Queue {
            config,
            command: QueueCommand::Show(id),
        } => show_queued(config.as_deref(), &id),
        Action::Queue {
            config,
            command: QueueCommand::Retry(ids),
        } => retry_queued(config.as_deref(), ids),
        Action::Queue {
            config,
            command: QueueCommand::Remove(ids),
        } => remove_queued(config.as_deref(), &ids),
        Action::Queue {
            config,
            command: QueueCommand::RemoveAll,
        } => remove_all_queued(config.as_deref()),
        Action::Log {
            config,
            since,
            status,
            format,
        } => show_log(config.as_deref(), since, status, format),
        Action::SmtpSession(options) => serve_smtp(&options),
        Action::CheckAliases { config } => check_aliases(config.as_deref()),
        Action::Login(options) => login(&options),
        Action::Logout(options) => logout(&options),
        Action::Status(options) => status(&options),
    }
}

/// `sendmail -bs`: an SMTP session on stdin/stdout. Each message goes through
/// `delivery::send::deliver` as if it had been piped in with `-i`, and the reply to its final dot
/// says how that went: the client keeps the message unless it got a 250, so nothing goes
/// to dead.letter. A message the queue took is safe, so it gets its 250.
fn serve_smtp(options: &SessionOptions) -> Result<()> {
    // Our EHLO name upstream, so both sides of the relay give the same name.
    let settings = smtp::server::Settings::new(smtp::client::default_hello_name());
    // In system mode each message goes to the service, which resolves its recipients.
    let system = service::mode(options.config.as_deref()) == service::Mode::System;
    let config = match system {
        true => Config::default(),
        false => Config::load(options.config.as_deref())
            .map_err(|err| smtp::server::refuse(io::stdout().lock(), &settings, err))?,
    };
    let domain = if system {
        Some("localhost")
    } else {
        config.domain.as_deref()
    };
    let resolver = Resolver::new(&config.aliases, domain);
    let deliver_one = |message: &smtp::server::Transaction| {
        let invocation = Invocation {
            sender: Some(message.sender.clone()),
            recipients: message.recipients.clone(),
            ignore_dots: true,
            verbose: options.verbose,
            account: options.account.clone(),
            config: options.config.clone(),
            alone: true,
            ..Invocation::default()
        };
        if system {
            return service::client::hand_over(&invocation, &message.data).map(|_| ());
        }
        match delivery::send::deliver(&config, &invocation, &message.data) {
            Ok(_) => Ok(()),
            Err(err) if err.is_message_kept() && err.kind() != Kind::RecipientRefused => Ok(()),
            Err(err) => Err(err),
        }
    };
    // A stop signal ends the session at once while we wait for the client, and after the
    // reply to the message in flight otherwise.
    sys::signals::defer_stop();
    let (input, output) = (
        sys::signals::ClientInput::new(io::stdin()),
        io::stdout().lock(),
    );
    smtp::server::serve(input, output, &settings, &resolver, deliver_one)
}

/// `sendmail -bv`: how each recipient resolves, without reading or sending a message.
fn verify(invocation: &Invocation) -> Result<()> {
    let config = Config::load(invocation.config.as_deref())?;
    let resolver = Resolver::new(&config.aliases, config.domain.as_deref());
    if invocation.recipients.is_empty() {
        return Err(Error::new(
            Kind::Usage,
            "nothing to verify",
            "no recipients given",
        ));
    }
    // Deliverable means through an account: the one a send would choose.
    let sender = invocation
        .sender
        .as_deref()
        .map(|s| resolver.sender(s, ""))
        .filter(|s| !s.is_empty());
    let account = config.choose_account(invocation.account.as_deref(), sender.as_deref())?;
    let mut failed = 0;
    for recipient in &invocation.recipients {
        match resolver.recipient(recipient) {
            Ok(addresses) => println!(
                "{recipient}... deliverable: {} (through account `{}`)",
                addresses.join(", "),
                account.name
            ),
            Err(err) => {
                failed += 1;
                println!("{recipient}... undeliverable: {err}");
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(Error::new(
            Kind::RecipientRefused,
            "verification failed",
            format!(
                "{n} of {} recipients cannot be delivered",
                invocation.recipients.len()
            ),
        )),
    }
}

/// `mailq`: the queue in the layout of Postfix's mailq.
fn list_queue(config_path: Option<&Path>) -> Result<()> {
    let config = Config::load(config_path)?;
    let (entries, unreadable) = match Queue::existing(&config.queue.dir) {
        Some(queue) => queue.scan()?,
        None => Default::default(),
    };
    let mut out = io::stdout().lock();
    delivery::queue::render_listing(&entries, &unreadable, &mut out).map_err(stdout_error)
}

/// `sendmail -q`, `queue flush`, `queue retry`: deliver what is selected.
fn flush_queue(config_path: Option<&Path>, selection: Selection, verbose: bool) -> Result<()> {
    let config = Config::load(config_path)?;
    let Some(queue) = Queue::existing(&config.queue.dir) else {
        return Ok(());
    };
    // `systemctl stop`, `timeout`, ^C: the message in flight and its bookkeeping finish,
    // then the flush stops.
    sys::signals::defer_stop();
    let report = Flusher::new(&config, &queue, verbose, None).run(selection, None)?;
    if let Some(signal) = report.stopped {
        eprintln!(
            "oauth-sendmail: stopped by {signal}; the rest of the queue waits for the next flush"
        );
    } else if report.busy {
        eprintln!("oauth-sendmail: another flush is running; it will deliver the queue");
    } else if verbose {
        eprintln!(
            "delivered {}, deferred {}, bounced {}",
            report.delivered, report.deferred, report.bounced
        );
    }
    Ok(())
}

/// `queue retry`: those messages now (all of them when none is named), whatever their
/// retry time.
fn retry_queued(config_path: Option<&Path>, ids: Vec<String>) -> Result<()> {
    let selection = match ids.is_empty() {
        true => Selection::All,
        false => Selection::Ids(ids),
    };
    flush_queue(config_path, selection, true)
}

/// `queue show ID`: the state, then the message.
fn show_queued(config_path: Option<&Path>, id: &str) -> Result<()> {
    let (queue, entry) = find_queued(config_path, id)?;
    let message = queue.message(id)?;
    let mut out = io::stdout().lock();
    delivery::queue::render_entry(&entry, &mut out)
        .and_then(|()| out.write_all(&message))
        .map_err(stdout_error)
}

/// `queue remove ID...`: out of the queue, unsent (a message being delivered is left).
fn remove_queued(config_path: Option<&Path>, ids: &[String]) -> Result<()> {
    for id in ids {
        let (queue, _) = find_queued(config_path, id)?;
        if !remove_one(&queue, id)? {
            return Err(Error::new(
                Kind::Temporary,
                format!("cannot remove {id}"),
                "it is being delivered right now",
            ));
        }
    }
    Ok(())
}

/// `queue remove --all`: every message not being delivered right now.
fn remove_all_queued(config_path: Option<&Path>) -> Result<()> {
    let config = Config::load(config_path)?;
    let empty = || {
        println!("the queue is empty");
        Ok(())
    };
    let Some(queue) = Queue::existing(&config.queue.dir) else {
        return empty();
    };
    let ids = queue.ids()?;
    if ids.is_empty() {
        return empty();
    }
    let mut busy = Vec::new();
    for id in &ids {
        if !remove_one(&queue, id)? {
            busy.push(id.as_str());
        }
    }
    match busy.is_empty() {
        true => Ok(()),
        false => Err(Error::new(
            Kind::Temporary,
            format!("cannot remove {}", busy.join(", ")),
            "being delivered right now",
        )),
    }
}

/// Removes `id` unless a flusher holds it; false when it does.
fn remove_one(queue: &Queue, id: &str) -> Result<bool> {
    let Some(_lock) = queue.lock(id)? else {
        return Ok(false);
    };
    queue.remove(id)?;
    println!("{id}: removed");
    Ok(true)
}

fn find_queued(config_path: Option<&Path>, id: &str) -> Result<(Queue, Entry)> {
    let config = Config::load(config_path)?;
    let not_queued = || {
        Error::new(
            Kind::Usage,
            format!("no queued message {id}"),
            "see `oauth-sendmail queue list`",
        )
    };
    let queue = Queue::existing(&config.queue.dir).ok_or_else(not_queued)?;
    let entry = queue.load(id)?.ok_or_else(not_queued)?;
    Ok((queue, entry))
}

/// `oauth-sendmail log`: the delivery attempts, newest last.
fn show_log(
    config_path: Option<&Path>,
    since: Option<Duration>,
    status: Option<Status>,
    format: Format,
) -> Result<()> {
    let config = Config::load(config_path)?;
    let oldest = since.map_or(0, |age| {
        crate::sys::clock::now().saturating_sub(age.as_secs())
    });
    let log_file = &config.queue.log_file;
    let mut records = DeliveryLog::new(log_file).read()?;
    let logged = records.len();
    records.retain(|r| r.unix >= oldest && status.is_none_or(|s| r.result == s));
    let mut out = io::stdout().lock();
    delivery::log::render(&records, format, &mut out).map_err(stdout_error)?;
    // On stderr, so that CSV and JSON on stdout stay just that.
    match (records.is_empty(), logged) {
        (false, _) => {}
        (true, 0) => eprintln!("no deliveries logged in {}", log_file.display()),
        (true, n) => eprintln!(
            "none of the {n} deliveries logged in {} match",
            log_file.display()
        ),
    }
    Ok(())
}

fn stdout_error(e: io::Error) -> Error {
    Error::new(Kind::Io, "cannot write to stdout", e)
}

/// `newaliases`: every alias must resolve to qualified addresses.
fn check_aliases(config_path: Option<&Path>) -> Result<()> {
    let config = Config::load(config_path)?;
    let resolver = Resolver::new(&config.aliases, config.domain.as_deref());
    for name in config.aliases.keys().filter(|name| *name != "*") {
        resolver
            .recipient(name)
            .map_err(|e| Error::new(Kind::Config, format!("alias `{name}` does not resolve"), e))?;
    }
    let source = config
        .path
        .as_deref()
        .map_or("no configuration file".into(), |p| p.display().to_string());
    println!("{source}: {} aliases", config.aliases.len());
    Ok(())
}

/// `oauth-sendmail login`: OAuth2 login for one account, its refresh token kept in its store.
fn login(options: &cli::Login) -> Result<()> {
    let config = Config::load(options.config.as_deref())?;
    let account = config.choose_account(options.account.as_deref(), None)?;
    auth::login::login(account, options)
}

/// `oauth-sendmail logout`: forgets an account's tokens.
fn logout(options: &cli::Logout) -> Result<()> {
    let config = Config::load(options.config.as_deref())?;
    let account = config.choose_account(options.account.as_deref(), None)?;
    let removed = auth::token::forget(account)?;
    match removed.is_empty() {
        true => println!("Account `{}` had no tokens to forget.", account.name),
        false => println!(
            "Account `{}`: removed {}.",
            account.name,
            removed.join(" and ")
        ),
    }
    Ok(())
}

/// `oauth-sendmail status`: each account's state, never a secret, and the checks a send
/// makes (which account it picks, that its secret can be read, that it is logged in):
/// when one fails, status says what and exits with that failure's status. With `--check`,
/// also an SMTP login to each that sends nothing.
fn status(options: &cli::StatusArgs) -> Result<()> {
    let config = Config::load(options.config.as_deref())?;
    let accounts: Vec<&Account> = match &options.account {
        Some(name) => vec![config.choose_account(Some(name), None)?],
        None => config.accounts.values().collect(),
    };
    if accounts.is_empty() {
        // The error names the file and says what to add.
        config.choose_account(None, None)?;
    }
    let mut problems: Vec<Error> = Vec::new();
    let mut out = io::stdout().lock();
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
        let mode = service::mode(options.config.as_deref());
        writeln!(out, "{:<18}{}", "mode:", mode.describe()).map_err(stdout_error)?;
    }
    let mut failed: Option<Error> = None;
    for account in &accounts {
        let mut lines = vec![
            (
                "server",
                format!("{}:{} ({:?})", account.host, account.port, account.provider)
                    .to_lowercase(),
            ),
            ("from", account.addresses.join(", ")),
        ];
        if account.auth != config::AuthMethod::None {
            lines.push(("user", account.user.clone()));
        }
        let report = auth::token::status(account);
        lines.extend(report.lines);
        problems.extend(report.problems);
        if options.check {
            let checked = auth::token::with_secret(account, options.verbose, |secret| {
                smtp::client::check(account, secret, options.verbose)
            });
            let result = match &checked {
                Ok(()) => "ok: authenticated and quit".to_string(),
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
