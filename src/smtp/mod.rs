//! SMTP both ways: the client that submits to the account's server (over our own wire with deadlines and redaction), and the server side that `sendmail -bs` speaks on stdin/stdout.

pub mod client;
mod reply;
pub mod server;
mod wire;
