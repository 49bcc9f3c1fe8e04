//! What the operating system gives us: private state files and directories, the clock, the
//! host name and our user id, stop signals, the trust anchors TLS checks against, and the
//! terminal (echo off for secrets).

pub mod clock;
pub mod files;
pub mod host;
pub mod peer;
pub mod reload;
pub mod signals;
pub mod terminal;
pub mod trust;
pub mod users;
