//! oauth-sendmail: a drop-in /usr/sbin/sendmail that submits mail over SMTP with OAuth2.
//!
//! Where things are, one folder a concern, each importing only from the ones below it:
//! `cli` (argv and personalities), this file (one function per command) and `commands`
//! (the queue and log commands and their output) on top; `delivery` (send now or over
//! `-bs`, the queue, its flush, one attempt's bookkeeping, bounces, the delivery log,
//! dead.letter);
//! `smtp` (the client, and the `sendmail -bs` server) and `auth` (login, tokens, stores,
//! secrets); `config` (the TOML file and accounts); `message` (addresses and intake, pure);
//! `sys` (state files, clock, signals). `error` holds the one error type and the only
//! mapping to exit codes; `secret` the value type that never shows itself (both leaves).

mod auth;
mod cli;
mod commands;
mod config;
mod delivery;
mod error;
mod http;
#[cfg(test)]
mod layering;
mod message;
mod relay;
mod secret;
mod service;
mod smtp;
mod sys;
#[cfg(test)]
mod testing;
mod transcript;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use cli::{Action, Invocation, QueueCommand, SessionOptions};
use commands::log::show_log;
use commands::queue::{
    flush_queue, list_queue, remove_all_queued, remove_queued, retry_queued, show_queued,
};
use config::Config;
use delivery::flush::Selection;
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
    if let Some(result) = through_the_service(&action) {
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
        Action::Setup(options) => commands::setup::run(&options),
    }
}

/// Runs `action` through the machine's mail service when the call is in system mode and
/// the service handles that action; `None`: this process handles it itself.
fn through_the_service(action: &Action) -> Option<Result<()>> {
    use service::protocol::Request;
    if matches!(action, Action::Daemon) || service::mode(action.config()) != service::Mode::System {
        return None;
    }
    let request = match action {
        Action::Send(invocation) if invocation.verify_only || invocation.dry_run => return None,
        Action::Send(invocation) => return Some(service::client::submit(invocation)),
        Action::Login(options) => {
            let account = options.account.as_deref();
            return Some(service::client::login(account, &login_options(options)));
        }
        Action::Logout(options) => {
            return Some(service::client::logout(options.account.as_deref()))
        }
        Action::ListQueue { .. } => Request::List,
        Action::FlushQueue { all, .. } => Request::Flush {
            all: *all,
            ids: Vec::new(),
        },
        Action::Queue { command, .. } => match command {
            QueueCommand::Show(id) => Request::Show { id: id.clone() },
            QueueCommand::Retry(ids) => Request::Flush {
                all: ids.is_empty(),
                ids: ids.clone(),
            },
            QueueCommand::Remove(ids) => Request::Remove {
                ids: ids.clone(),
                all: false,
            },
            QueueCommand::RemoveAll => Request::Remove {
                ids: Vec::new(),
                all: true,
            },
        },
        Action::Log {
            since,
            status,
            format,
            ..
        } => Request::Log {
            since: since.map(|age| age.as_secs()),
            status: *status,
            format: format.name().into(),
        },
        Action::Status(options) => Request::Status {
            check: options.check,
            json: options.json,
        },
        _ => return None,
    };
    Some(service::client::command(&request))
}

/// `sendmail -bs`: an SMTP session on stdin/stdout (see `delivery::session`).
fn serve_smtp(options: &SessionOptions) -> Result<()> {
    match service::mode(options.config.as_deref()) {
        // Each message goes to the service, which resolves its recipients.
        service::Mode::System => service::client::serve_session(options),
        service::Mode::User => delivery::session::serve(options),
    }
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

/// `newaliases`: every alias must resolve to qualified addresses.
fn check_aliases(config_path: Option<&Path>) -> Result<()> {
    commands::aliases::check(&Config::load(config_path)?)
}

/// `oauth-sendmail login`: OAuth2 login for one account, its refresh token kept in its store.
fn login(options: &cli::Login) -> Result<()> {
    let config = Config::load(options.config.as_deref())?;
    let account = config.choose_account(options.account.as_deref(), None)?;
    auth::login::login(account, &login_options(options))?;
    // Mail held for the login goes with the next flush.
    delivery::hold::Holds::of_queue(&config.queue.dir).clear(&account.name);
    Ok(())
}

fn login_options(options: &cli::Login) -> auth::login::LoginOptions {
    auth::login::LoginOptions {
        port: options.port,
        no_browser: options.no_browser,
        device: options.device,
        timeout: options.timeout,
        client_secret_stdin: options.client_secret_stdin,
    }
}

/// `oauth-sendmail logout`: forgets an account's tokens.
fn logout(options: &cli::Logout) -> Result<()> {
    let config = Config::load(options.config.as_deref())?;
    let account = config.choose_account(options.account.as_deref(), None)?;
    commands::logout(account)
}

/// `oauth-sendmail status`: each account's state and the checks a send makes.
fn status(options: &cli::StatusArgs) -> Result<()> {
    let config = Config::load(options.config.as_deref())?;
    let how = commands::status::Options {
        mode: service::mode(options.config.as_deref()).describe(),
        account: options.account.as_deref(),
        check_refused: None,
        check: options.check,
        verbose: options.verbose,
        json: options.json,
        preamble: None,
    };
    commands::status::show(&config, &how)
}
