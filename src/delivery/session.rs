//! `sendmail -bs`: each SMTP transaction on stdin/stdout delivered as a piped-in message,
//! and what became of it turned into the reply to its final dot.

use std::io;

use crate::config::Config;
use crate::delivery::request::{Invocation, SessionOptions};
use crate::delivery::send;
use crate::error::{Kind, Result};
use crate::message::address::Resolver;
use crate::message::input::{self, Raw};
use crate::smtp::server::{self, Settings, Transaction};
use crate::sys::signals;

/// Serves one SMTP session. Each message goes through `send::deliver` as if it had been
/// piped in with `-i`, and the reply to its final dot says how that went: the client keeps
/// the message unless it got a 250, so nothing goes to dead.letter. A message the queue
/// took is safe, so it gets its 250.
pub fn serve(options: &SessionOptions) -> Result<()> {
    let mut settings = settings();
    let config = Config::load(options.config.as_deref())
        .map_err(|err| server::refuse(io::stdout().lock(), &settings, err))?;
    // A large message's body beside the queue, as a piped-in one's.
    let dir = config.queue.dir.clone();
    settings.spill = Box::new(move || input::spill_in_queue(&dir)());
    let resolver = Resolver::new(&config.aliases, config.domain.as_deref());
    serve_with(
        options,
        &settings,
        &resolver,
        |invocation, data| match send::deliver(&config, invocation, data) {
            Ok(_) => Ok(()),
            Err(err) if err.is_message_kept() && err.kind() != Kind::RecipientRefused => Ok(()),
            Err(err) => Err(err),
        },
    )
}

/// Our EHLO name upstream, so both sides of the relay give the same name.
pub fn settings() -> Settings {
    Settings::new(crate::smtp::client::default_hello_name())
}

/// Serves one SMTP session, handing each transaction, as the sendmail invocation it
/// stands for, to `hand` (`send::deliver` here; the service's client in system mode).
pub fn serve_with(
    options: &SessionOptions,
    settings: &Settings,
    resolver: &Resolver,
    hand: impl Fn(&Invocation, Raw) -> Result<()>,
) -> Result<()> {
    // A stop signal ends the session at once while we wait for the client, and after the
    // reply to the message in flight otherwise.
    signals::defer_stop();
    let (input, output) = (signals::ClientInput::new(io::stdin()), io::stdout().lock());
    server::serve(
        input,
        output,
        settings,
        resolver,
        |message: &Transaction| hand(&invocation(options, message), message.data.raw()),
    )
}

/// The sendmail invocation a transaction stands for: its envelope, dots already undone,
/// and no flush of the queue behind it (the client is waiting for the next reply).
fn invocation(options: &SessionOptions, message: &Transaction) -> Invocation {
    Invocation {
        sender: Some(message.sender.clone()),
        recipients: message.recipients.clone(),
        ignore_dots: true,
        verbose: options.verbose,
        account: options.account.clone(),
        config: options.config.clone(),
        alone: true,
        ..Invocation::default()
    }
}
