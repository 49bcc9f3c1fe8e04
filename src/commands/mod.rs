//! The commands' own output: what `status` and `newaliases` print, rendered from what the
//! domain modules report, so that `main` keeps one short function per command.

pub mod aliases;
pub mod status;

use std::io;

use crate::error::{Error, Kind};

pub fn stdout_error(e: io::Error) -> Error {
    Error::new(Kind::Io, "cannot write to stdout", e)
}
