//! oauth-sendmail: a drop-in /usr/sbin/sendmail that submits mail over SMTP with OAuth2.
//!
//! Where things are: argv in `cli`, configuration and accounts in `config`, address
//! aliases and qualification in `address`, header rewriting in `intake`, secrets in
//! `credential`, the SMTP client in `smtp`, exit codes in `error`; OAuth2: `login` in
//! `oauth`, tokens on the send path in `token`, the token endpoint in `endpoint`, refresh
//! tokens in `store` (keyring or file).

mod address;
mod cli;
mod config;
mod credential;
mod dead_letter;
mod endpoint;
mod error;
mod intake;
mod oauth;
mod smtp;
mod store;
mod token;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use address::Resolver;
use cli::{Action, Invocation};
use config::{Account, Config};
use error::{Error, Kind, Result};
use intake::Prepared;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match cli::parse(&argv).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("oauth-sendmail: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(action: Action) -> Result<()> {
    match action {
        Action::Send(invocation) if invocation.verify_only => verify(&invocation),
        Action::Send(invocation) => send(&invocation),
        Action::ListQueue => list_queue(),
        Action::FlushQueue => flush_queue(),
        Action::CheckAliases { config } => check_aliases(config.as_deref()),
        Action::Login(options) => login(&options),
        Action::Logout(options) => logout(&options),
        Action::Status(options) => status(&options),
    }
}

/// sendmail's main mode: read the message, then deliver it or keep it in dead.letter.
fn send(invocation: &Invocation) -> Result<()> {
    let raw = intake::read_message(io::stdin().lock(), invocation.ignore_dots)
        .map_err(|e| Error::new(Kind::Io, "cannot read the message from stdin", e))?;
    deliver(invocation, &raw).map_err(|err| match invocation.dry_run {
        true => err,
        false => keep(err, &raw),
    })
}

fn deliver(invocation: &Invocation, raw: &[u8]) -> Result<()> {
    let config = Config::load(invocation.config.as_deref())?;
    let resolver = Resolver::new(&config.aliases, config.domain.as_deref());
    let sender_hint = invocation
        .sender
        .as_deref()
        .map(|s| resolver.sender(s, ""))
        .filter(|s| !s.is_empty());
    let account = config.choose_account(invocation.account.as_deref(), sender_hint.as_deref());
    if invocation.dry_run {
        // A dry run needs no account: it shows what intake makes of the message.
        let account = account.ok();
        let default_sender = account.map_or_else(local_sender, |a| a.address().to_string());
        let prepared =
            intake::prepare(raw, &intake_options(invocation, &resolver, &default_sender))?;
        return print_dry_run(account, &prepared);
    }
    let account = account?;
    let prepared = intake::prepare(
        raw,
        &intake_options(invocation, &resolver, account.address()),
    )?;
    let delivery = token::with_secret(account, invocation.verbose, |secret| {
        smtp::submit(account, secret, &prepared, invocation.verbose)
    })?;
    delivery.failure().map_or(Ok(()), Err)
}

fn intake_options<'a>(
    invocation: &'a Invocation,
    resolver: &'a Resolver,
    default_sender: &'a str,
) -> intake::Options<'a> {
    intake::Options {
        extract_recipients: invocation.extract_recipients,
        sender: invocation.sender.as_deref(),
        full_name: invocation.full_name.as_deref(),
        recipients: &invocation.recipients,
        resolver,
        default_sender,
    }
}

/// Saves a message that could not be sent, and says where in the error.
fn keep(err: Error, raw: &[u8]) -> Error {
    let temporary = err.is_transient();
    let err = match dead_letter::save(raw) {
        Ok(path) => err.hint(format!("the message was saved to {}", path.display())),
        Err(save_err) => return err.hint(format!("the message was LOST: {save_err}")),
    };
    match temporary {
        true => err.hint("the failure is temporary: sending it again later should work"),
        false => err,
    }
}

fn print_dry_run(account: Option<&Account>, prepared: &Prepared) -> Result<()> {
    let envelope = &prepared.envelope;
    let recipients: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| format!("<{r}>"))
        .collect();
    let via = match account {
        Some(a) => format!("{} ({}:{})", a.name, a.host, a.port),
        None => "none (no account configured; nothing would be sent)".into(),
    };
    let mut out = io::stdout().lock();
    let body = if prepared.eight_bit {
        "8BITMIME"
    } else {
        "7BIT"
    };
    let written = write!(
        out,
        "Account: {via}\nEnvelope sender: <{}>\nEnvelope recipients: {}\nBody: {body}\nMessage ({} bytes):\n",
        envelope.sender,
        recipients.join(", "),
        prepared.data.len()
    )
    .and_then(|()| out.write_all(&prepared.data))
    .and_then(|()| out.flush());
    written.map_err(|e| Error::new(Kind::Io, "cannot write to stdout", e))
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
    let mut failed = 0;
    for recipient in &invocation.recipients {
        match resolver.recipient(recipient) {
            Ok(addresses) => println!("{recipient}... deliverable: {}", addresses.join(", ")),
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

/// `mailq`: messages are not queued yet (a failed message goes to dead.letter), so the
/// queue is always empty.
fn list_queue() -> Result<()> {
    println!("Mail queue is empty");
    Ok(())
}

/// `sendmail -q`: nothing is ever queued yet, so there is nothing to deliver.
fn flush_queue() -> Result<()> {
    Ok(())
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
    oauth::login(account, options)
}

/// `oauth-sendmail logout`: forgets an account's tokens.
fn logout(options: &cli::Logout) -> Result<()> {
    let config = Config::load(options.config.as_deref())?;
    let account = config.choose_account(options.account.as_deref(), None)?;
    let removed = token::forget(account)?;
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

/// `oauth-sendmail status`: each account's state, never a secret; with `--check`, an SMTP
/// login to each that sends nothing.
fn status(options: &cli::Status) -> Result<()> {
    let config = Config::load(options.config.as_deref())?;
    let accounts: Vec<&Account> = match &options.account {
        Some(name) => vec![config.choose_account(Some(name), None)?],
        None => config.accounts.values().collect(),
    };
    if accounts.is_empty() {
        // The error names the file and says what to add.
        config.choose_account(None, None)?;
    }
    let mut failed: Option<Error> = None;
    let mut out = io::stdout().lock();
    for account in &accounts {
        let mut lines = vec![
            (
                "server",
                format!("{}:{} ({:?})", account.host, account.port, account.provider)
                    .to_lowercase(),
            ),
            ("user", account.user.clone()),
        ];
        lines.extend(token::status(account));
        if options.check {
            let checked = token::with_secret(account, options.verbose, |secret| {
                smtp::check(account, secret, options.verbose)
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
        out.write_all(text.as_bytes())
            .map_err(|e| Error::new(Kind::Io, "cannot write to stdout", e))?;
    }
    match failed {
        Some(err) => Err(err.within("the check failed")),
        None => Ok(()),
    }
}

/// user@host for a dry run without an account, as a local sendmail would use.
fn local_sender() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!(
        "{user}@{}",
        if host.is_empty() { "localhost" } else { host }
    )
}
