//! oauth-sendmail: a drop-in /usr/sbin/sendmail that submits mail over SMTP with OAuth2.
//!
//! Where things are: argv in `cli`, configuration and accounts in `config`, address
//! aliases and qualification in `address`, header rewriting in `intake`, secrets in
//! `credential`, the SMTP client in `smtp`, exit codes in `error`.
//! `sendmail -bs` (SMTP on stdin/stdout) is served by `smtp_session`.

mod address;
mod cli;
mod config;
mod credential;
mod dead_letter;
mod error;
mod intake;
mod smtp;
mod smtp_session;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use address::Resolver;
use cli::{Action, Invocation, SessionOptions};
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
        Action::SmtpSession(options) => serve_smtp(&options),
        Action::ListQueue => list_queue(),
        Action::FlushQueue => flush_queue(),
        Action::CheckAliases { config } => check_aliases(config.as_deref()),
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

/// `sendmail -bs`: an SMTP session on stdin/stdout. Each message goes through `deliver` as
/// if it had been piped in with `-i`, and the reply to its final dot says how that went:
/// the client keeps the message unless it got a 250, so nothing goes to dead.letter.
fn serve_smtp(options: &SessionOptions) -> Result<()> {
    // Our EHLO name upstream, so both sides of the relay give the same name.
    let settings = smtp_session::Settings::new(
        lettre::transport::smtp::extension::ClientId::default().to_string(),
    );
    let config = Config::load(options.config.as_deref())
        .map_err(|err| smtp_session::refuse(io::stdout().lock(), &settings, err))?;
    let resolver = Resolver::new(&config.aliases, config.domain.as_deref());
    let deliver_one = |message: &smtp_session::Transaction| {
        let invocation = Invocation {
            sender: Some(message.sender.clone()),
            recipients: message.recipients.clone(),
            ignore_dots: true,
            verbose: options.verbose,
            account: options.account.clone(),
            config: options.config.clone(),
            ..Invocation::default()
        };
        deliver(&invocation, &message.data)
    };
    let (input, output) = (io::stdin().lock(), io::stdout().lock());
    smtp_session::serve(input, output, &settings, &resolver, deliver_one)
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
    let secret = account
        .secret
        .as_ref()
        .map(|source| source.fetch())
        .transpose()?;
    let delivery = smtp::submit(account, secret.as_ref(), &prepared, invocation.verbose)?;
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
