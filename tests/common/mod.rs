//! Shared test support: the test PKI, the scripted SMTP server, the fake OAuth2 provider, a real
//! Postfix + Dovecot instance and the harness that runs the binary against them. Each test crate uses only part of it, hence the dead_code allowance.
#![allow(dead_code)]

pub mod config;
pub mod harness;
pub mod mail_api;
#[cfg(unix)]
pub mod mailbox;
pub mod oauth_server;
#[cfg(unix)]
pub mod postfix;
#[cfg(unix)]
pub mod service;
pub mod skip;
pub mod smtp_server;
pub mod tls;
pub mod tmpfs;
