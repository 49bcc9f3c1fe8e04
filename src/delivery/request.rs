//! What a sendmail command line (or one `-bs` transaction) asks of delivery: the
//! envelope options as sendmail defines them, reduced to what delivery acts on. `cli`
//! builds them; delivery never sees argv.

use std::path::PathBuf;

/// A sendmail command line, reduced to what the rest of the program acts on.
#[derive(Debug, Default, PartialEq)]
pub struct Invocation {
    /// `-t`: take recipients from the message headers too.
    pub extract_recipients: bool,
    /// `-i`/`-oi`: a line holding only "." does not end the message.
    pub ignore_dots: bool,
    /// `-f`/`-r`: the envelope sender as given (`Some("")` is the null sender `<>`).
    pub sender: Option<String>,
    /// `-F`: the sender's full name for a From header we build.
    pub full_name: Option<String>,
    pub recipients: Vec<String>,
    /// `-bv`: resolve and print recipients, send nothing.
    pub verify_only: bool,
    pub verbose: bool,
    pub dry_run: bool,
    pub account: Option<String>,
    pub config: Option<PathBuf>,
    /// Do not let due queued messages follow a successful send on its connection: a
    /// `-bs` client waits for each reply, and its next message should not wait on ours.
    pub alone: bool,
}

/// The options that still mean something under `-bs`, where the envelope comes from the
/// SMTP dialogue (MAIL FROM, RCPT TO) and the message ends at its final dot.
#[derive(Debug, Default, PartialEq)]
pub struct SessionOptions {
    pub verbose: bool,
    pub account: Option<String>,
    pub config: Option<PathBuf>,
}
