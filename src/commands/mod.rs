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

pub fn stdout_error(e: io::Error) -> Error {
    Error::new(Kind::Io, "cannot write to stdout", e)
}
