//! The commands other than sending (one function each) and how they show their results:
//! the queue and the delivery log.

use std::io;

use crate::error::{Error, Kind};

pub mod log;
pub mod queue;

pub fn stdout_error(e: io::Error) -> Error {
    Error::new(Kind::Io, "cannot write to stdout", e)
}
