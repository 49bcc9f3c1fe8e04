//! What the operating system gives us: private state files and directories, the clock, the
//! host name and our user id, and stop signals.

pub mod clock;
pub mod files;
pub mod host;
pub mod signals;
