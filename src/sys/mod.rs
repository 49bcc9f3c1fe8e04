//! What the operating system gives us: private state files and directories, the clock, and stop signals.

pub mod clock;
pub mod files;
pub mod peer;
pub mod reload;
pub mod signals;
pub mod users;
