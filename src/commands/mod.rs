//! The commands other than sending and what they print: the queue, the delivery log,
//! `status`, `newaliases` and `setup`, rendered from what the domain modules report, so that
//! `main` keeps one short function per command.

pub mod aliases;
pub mod log;
pub mod queue;
pub mod setup;
pub mod status;

use std::io;

use crate::error::{Error, Kind};

/// `logout`: forgets an account's tokens and says which there were.
pub fn logout(account: &crate::config::Account) -> crate::error::Result<()> {
    let removed = crate::auth::token::forget(account)?;
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

/// The refusal of `queue remove` for the messages a flush has in hand.
pub fn busy(ids: &[&str]) -> crate::error::Result<()> {
    match ids.is_empty() {
        true => Ok(()),
        false => Err(Error::new(
            Kind::Temporary,
            format!("cannot remove {}", ids.join(", ")),
            "being delivered right now",
        )),
    }
}

pub fn stdout_error(e: io::Error) -> Error {
    Error::new(Kind::Io, "cannot write to stdout", e)
}
