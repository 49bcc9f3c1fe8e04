//! Shared test support: the test PKI, the scripted SMTP server and the harness that runs the
//! binary against it. Each test crate uses only part of it, hence the dead_code allowance.
#![allow(dead_code)]

pub mod harness;
pub mod smtp_server;
pub mod tls;
