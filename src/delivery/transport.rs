//! How an account's messages leave: an SMTP session or an HTTPS API session behind one
//! face, so that the direct send, the queue, the log, bounces and retries are one path
//! whichever the account uses. Both get their secret from the same token engine
//! (`token::with_secret`: the cache, one refresh when the server refuses a token).

use crate::config::{Account, Transport as Kind};
use crate::error::Result;
use crate::message::envelope::Prepared;
use crate::smtp::client::{Delivery, Session};
use crate::{auth::token, http};

/// An open way to send an account's messages.
pub enum Transport {
    Smtp(Box<Session>),
    /// The API authenticates each request, so the account comes along for its token.
    Http {
        session: Box<http::Session>,
        account: Box<Account>,
        verbose: bool,
    },
}

impl Transport {
    /// SMTP: connected, secured and logged in (a refused token refreshed once). An API:
    /// ready, nothing sent yet.
    pub fn open(account: &Account, verbose: bool) -> Result<Transport> {
        match account.transport {
            Kind::Smtp => token::with_secret(account, verbose, |secret| {
                Session::open(account, secret, verbose)
            })
            .map(|session| Transport::Smtp(Box::new(session))),
            Kind::GmailApi | Kind::Graph => Ok(Transport::Http {
                session: Box::new(http::Session::open(account, verbose)?),
                account: Box::new(account.clone()),
                verbose,
            }),
        }
    }

    /// Sends one message. An API takes it for every recipient or for none.
    pub fn send(&mut self, message: &Prepared) -> Result<Delivery> {
        match self {
            Transport::Smtp(session) => session.send(message),
            Transport::Http {
                session,
                account,
                verbose,
            } => {
                let sent = token::with_secret(account, *verbose, |secret| {
                    session.send(message, needs_token(secret)?)
                })?;
                Ok(Delivery {
                    accepted: message.envelope.recipients.clone(),
                    reply: Some(sent.reply),
                    ..Delivery::default()
                })
            }
        }
    }

    /// Still fit for another message.
    pub fn is_usable(&self) -> bool {
        match self {
            Transport::Smtp(session) => session.is_usable(),
            Transport::Http { .. } => true,
        }
    }

    pub fn close(self) {
        if let Transport::Smtp(session) = self {
            session.close();
        }
    }
}

/// `status --check`: logs in (SMTP) or asks the API who the token is for, sending
/// nothing. What the check found, for its line.
pub fn check(account: &Account, verbose: bool) -> Result<Option<String>> {
    match account.transport {
        Kind::Smtp => token::with_secret(account, verbose, |secret| {
            crate::smtp::client::check(account, secret, verbose)
        })
        .map(|()| None),
        Kind::GmailApi | Kind::Graph => {
            let mut session = http::Session::open(account, verbose)?;
            token::with_secret(account, verbose, |secret| {
                session.check(needs_token(secret)?)
            })
            .map(Some)
        }
    }
}

/// The configuration makes sure an API account has a token source; this says so anyway.
fn needs_token(secret: Option<&crate::secret::Secret>) -> Result<&crate::secret::Secret> {
    secret.ok_or_else(|| {
        crate::error::Error::new(
            crate::error::Kind::Config,
            "no access token",
            "an API transport needs `secret` or an [oauth] table",
        )
    })
}
