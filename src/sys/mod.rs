//! What the operating system gives us: private state files and directories, the clock, the
//! host name and our user id, stop signals, and the trust anchors TLS checks against.

pub mod clock;
pub mod files;
pub mod host;
pub mod peer;
pub mod reload;
pub mod signals;
pub mod trust;
pub mod users;
