//! The command line: sendmail's options (each defined once, with its test), the program's
//! own subcommands, and the personality chosen by the name it was started under.
//!
//! Parsing is pure: argv in, an [`Action`] out, no I/O. Options that mean nothing to a
//! submission-only client are accepted and ignored in one place, [`IgnoredOptions`].

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::commands::log::Format;
// What a sendmail command line asks of delivery: defined there, built here.
use crate::config::parse_duration;
use crate::delivery::log::Status;
pub use crate::delivery::request::{Invocation, SessionOptions};
use crate::error::{Error, Kind, Result};
use crate::relay::devices::DeviceCommand;

/// What the process was asked to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Read a message on stdin and submit it (or verify its recipients, with `-bv`).
    Send(Invocation),
    /// `sendmail -bs`: speak SMTP on stdin/stdout, submitting each message received.
    SmtpSession(SessionOptions),
    /// `mailq`, `sendmail -bp`, `queue list`: list the queue.
    ListQueue { config: Option<PathBuf> },
    /// `sendmail -q`, `queue flush`: deliver what is due.
    FlushQueue {
        config: Option<PathBuf>,
        verbose: bool,
        /// Every message whatever its retry time (`sendmail -q`, as Postfix's), not only
        /// those due (`queue flush`, what a timer runs).
        all: bool,
    },
    /// `queue show|retry|remove`.
    Queue {
        config: Option<PathBuf>,
        command: QueueCommand,
    },
    /// `oauth-sendmail log`: the delivery log, filtered.
    Log {
        config: Option<PathBuf>,
        since: Option<Duration>,
        status: Option<Status>,
        format: Format,
    },
    /// `newaliases`, `sendmail -bi`: check the aliases of the configuration.
    CheckAliases { config: Option<PathBuf> },
    /// `oauth-sendmail login`: OAuth2 login in a browser (or with a device code).
    Login(Login),
    /// `oauth-sendmail logout`: forget an account's tokens.
    Logout(Logout),
    /// `oauth-sendmail status`: each account's credentials, never a secret.
    Status(StatusArgs),
    /// `oauth-sendmail daemon`: the machine-wide mail service (system mode).
    Daemon,
    /// `oauth-sendmail setup`: write a configuration, log in, send a test message.
    Setup(Box<crate::commands::setup::Options>),
    /// `oauth-sendmail device add|list|remove`: the LAN relay's devices.
    Device {
        config: Option<PathBuf>,
        command: DeviceCommand,
    },
}

impl Action {
    /// The configuration the command line names (`-C`/`--config`), if any.
    pub fn config(&self) -> Option<&Path> {
        match self {
            Action::Send(invocation) => invocation.config.as_deref(),
            Action::SmtpSession(options) => options.config.as_deref(),
            Action::ListQueue { config }
            | Action::FlushQueue { config, .. }
            | Action::Queue { config, .. }
            | Action::Log { config, .. }
            | Action::CheckAliases { config } => config.as_deref(),
            Action::Login(login) => login.config.as_deref(),
            Action::Logout(logout) => logout.config.as_deref(),
            Action::Status(status) => status.config.as_deref(),
            Action::Daemon => None,
            Action::Setup(setup) => setup.config.as_deref(),
            Action::Device { config, .. } => config.as_deref(),
        }
    }
}

/// `oauth-sendmail login`.
#[derive(Args, Debug, Default, PartialEq)]
pub struct Login {
    /// The account to log in (default: the configuration's default account)
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,

    /// Read the configuration from FILE instead of the default locations
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Listen for the browser's redirect on this port of 127.0.0.1 (default: a random
    /// one); fix it to forward it with ssh -L PORT:127.0.0.1:PORT
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Open no browser: print the address, then take the address the browser was sent to,
    /// pasted on stdin (or the redirect on the loopback port, e.g. through ssh -L)
    #[arg(long)]
    pub no_browser: bool,

    /// Log in with a code entered on any other device (Microsoft; Google refuses it for Gmail)
    #[arg(long, conflicts_with_all = ["port", "no_browser"])]
    pub device: bool,

    /// Give up after this many seconds without an answer
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub timeout: u64,

    /// Read the OAuth client secret from the first line of stdin and keep it in the
    /// account's store, instead of in the configuration file
    #[arg(long)]
    pub client_secret_stdin: bool,
}

/// `oauth-sendmail setup`: what the wizard asks, as flags for scripts.
#[derive(Args, Debug, Default, PartialEq)]
pub struct Setup {
    /// Write the configuration to FILE (default: /etc/oauth-sendmail/config.toml as root,
    /// the one read by every caller; else ~/.config/oauth-sendmail/config.toml)
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Ask nothing: every answer comes from the flags (the default when stdin is not a
    /// terminal)
    #[arg(long)]
    pub non_interactive: bool,

    /// The mail provider
    #[arg(long, value_enum)]
    pub provider: Option<SetupProvider>,

    /// The account's address: its login and the envelope sender of every message
    #[arg(long, value_name = "ADDRESS")]
    pub address: Option<String>,

    /// The account's name in the configuration (default: the provider's name)
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,

    /// The OAuth client id (from Google Cloud or the Entra admin center; see the README)
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    /// Read the OAuth client secret from the first line of stdin (never from the command
    /// line, where others could see it); kept in a file of mode 0600 beside the configuration
    #[arg(long)]
    pub client_secret_stdin: bool,

    /// A Google service account's JSON key file (domain-wide delegation: no client, no login)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["client_id", "client_secret_stdin"])]
    pub service_account: Option<PathBuf>,

    /// Microsoft: the directory (tenant) id or domain (default: common)
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,

    /// Where the refresh token is kept (default: a file for the system, else the keyring)
    #[arg(long, value_enum)]
    pub store: Option<SetupStore>,

    /// Domain for unqualified recipients such as cron's "root" (default: the address's)
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,

    /// Where mail to root goes (default: the account's address)
    #[arg(long, value_name = "ADDRESS")]
    pub root_alias: Option<String>,

    /// Send a test message to ADDRESS once logged in
    #[arg(long, value_name = "ADDRESS")]
    pub test_to: Option<String>,

    /// Write the configuration only: no login, no test message
    #[arg(long, conflicts_with = "test_to")]
    pub no_login: bool,

    /// Replace a configuration that already has accounts
    #[arg(long)]
    pub force: bool,

    /// The SMTP server (default: the provider's)
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// The SMTP server's port (default: the provider's, or 587)
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// An extra CA certificate (PEM) to trust for the SMTP server
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// The provider's authorization endpoint (default: the provider's)
    #[arg(long, value_name = "URL")]
    pub auth_uri: Option<String>,

    /// The provider's token endpoint (default: the provider's)
    #[arg(long, value_name = "URL")]
    pub token_uri: Option<String>,

    /// The OAuth scopes to ask for, separated by spaces (default: the provider's)
    #[arg(long, value_name = "SCOPES")]
    pub scopes: Option<String>,

    /// Log in with a code entered on any other device (Microsoft)
    #[arg(long)]
    pub device: bool,

    /// Open no browser at login: print the address and take the redirect pasted on stdin
    #[arg(long, conflicts_with = "device")]
    pub no_browser: bool,
}

impl From<Setup> for crate::commands::setup::Options {
    fn from(s: Setup) -> Self {
        use crate::commands::setup::{Provider, Store};
        crate::commands::setup::Options {
            config: s.config,
            non_interactive: s.non_interactive,
            provider: s.provider.map(|p| match p {
                SetupProvider::Gmail => Provider::Gmail,
                SetupProvider::Outlook => Provider::Outlook,
                SetupProvider::Custom => Provider::Custom,
            }),
            address: s.address,
            account: s.account,
            client_id: s.client_id,
            client_secret_stdin: s.client_secret_stdin,
            service_account: s.service_account,
            tenant: s.tenant,
            store: s.store.map(|store| match store {
                SetupStore::Keyring => Store::Keyring,
                SetupStore::File => Store::File,
            }),
            domain: s.domain,
            root_alias: s.root_alias,
            test_to: s.test_to,
            no_login: s.no_login,
            force: s.force,
            host: s.host,
            port: s.port,
            ca_file: s.ca_file,
            auth_uri: s.auth_uri,
            token_uri: s.token_uri,
            scopes: s.scopes,
            device: s.device,
            no_browser: s.no_browser,
        }
    }
}

/// The providers `setup` knows.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum SetupProvider {
    /// Gmail or Google Workspace (smtp.gmail.com)
    Gmail,
    /// Microsoft 365 or Outlook.com (smtp.office365.com)
    Outlook,
    /// Any other SMTP server with OAuth2 (give --host, --auth-uri and --token-uri)
    Custom,
}

/// The refresh-token stores `setup` offers.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum SetupStore {
    /// The desktop keyring (Secret Service)
    Keyring,
    /// A file of mode 0600 in the state directory
    File,
}

/// `oauth-sendmail logout`.
#[derive(Args, Debug, Default, PartialEq)]
pub struct Logout {
    /// The account whose tokens to forget (default: the configuration's default account)
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,

    /// Read the configuration from FILE instead of the default locations
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `oauth-sendmail status`.
#[derive(Args, Debug, Default, PartialEq)]
pub struct StatusArgs {
    /// Show only this account
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,

    /// Read the configuration from FILE instead of the default locations
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// For monitoring: a one-line verdict first, a login to each account's server or API
    /// (sending nothing), and exit 0 OK, 1 WARNING, 2 CRITICAL as a Nagios plugin
    #[arg(long)]
    pub check: bool,

    /// Print the state as one JSON object (mode, accounts, queue, last error)
    #[arg(long)]
    pub json: bool,

    /// With --check: print the SMTP dialogue or HTTP exchange on stderr (secrets redacted)
    #[arg(short = 'v')]
    pub verbose: bool,
}

/// What to do to queued messages.
#[derive(Debug, PartialEq)]
pub enum QueueCommand {
    Show(String),
    /// Try these again now (all of them when empty).
    Retry(Vec<String>),
    Remove(Vec<String>),
    /// `queue remove --all`: spelled out, so that no empty list can mean everything.
    RemoveAll,
}

/// The name we were started under decides which command line we speak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Personality {
    Sendmail,
    Mailq,
    Newaliases,
    Own,
}

impl Personality {
    pub fn from_argv0(argv0: &OsStr) -> Personality {
        let name = Path::new(argv0).file_name().unwrap_or(argv0);
        match name.to_str() {
            Some("sendmail") => Personality::Sendmail,
            Some("mailq") => Personality::Mailq,
            Some("newaliases") => Personality::Newaliases,
            _ => Personality::Own,
        }
    }
}

/// sendmail's options, shared by the `sendmail` personality and `oauth-sendmail send`.
///
/// `-h` and `-V` are sendmail's hop count and envelope id, so help and version are long
/// options only.
#[derive(Args, Debug, Default)]
pub struct SendmailArgs {
    /// Read recipients from the To, Cc and Bcc headers (Resent-To/Cc/Bcc when the message
    /// has Resent- headers), in addition to those on the command line
    #[arg(short = 't')]
    pub extract_recipients: bool,

    /// Read the message until end of input: a line holding only "." does not end it
    #[arg(short = 'i')]
    pub ignore_dots: bool,

    /// Envelope sender address; "<>" or "" for a null sender (bounces); -r is the same
    #[arg(
        short = 'f',
        short_alias = 'r',
        value_name = "ADDRESS",
        allow_hyphen_values = false
    )]
    pub sender: Option<String>,

    /// Full name of the sender, used when the message has no From header
    #[arg(short = 'F', value_name = "NAME")]
    pub full_name: Option<String>,

    /// Mode: m deliver (default), p list the queue, v verify recipients, i check aliases,
    /// s SMTP on stdin/stdout
    #[arg(short = 'b', value_name = "MODE", value_enum)]
    pub mode: Option<Mode>,

    /// Deliver every queued message now, whatever its retry time (an interval, as in
    /// -q30m, is ignored)
    #[arg(short = 'q', value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "")]
    pub queue: Option<String>,

    /// Set a sendmail option: -oi is -i; the others (-oem, -odi, -oQ...) are ignored
    #[arg(short = 'o', value_name = "OPTION")]
    pub option: Vec<String>,

    /// Read the configuration from FILE instead of the default locations
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the SMTP dialogue on stderr (secrets are redacted)
    #[arg(short = 'v')]
    pub verbose: bool,

    /// Print the envelope and the message as they would be sent; send nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Send through this account of the configuration
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,

    /// Recipient addresses; with -t, added to those in the headers
    #[arg(value_name = "RECIPIENT")]
    pub recipients: Vec<String>,

    /// Print help
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,

    /// Print version
    #[arg(long, action = ArgAction::Version)]
    version: Option<bool>,

    // Last: its help heading would otherwise go on to the options after it.
    #[command(flatten)]
    pub ignored: IgnoredOptions,
}

/// sendmail options accepted for compatibility and ignored: each means nothing to a
/// client that submits to one server (8-bit is detected, DSN is the server's business).
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Accepted and ignored")]
pub struct IgnoredOptions {
    /// Body type (7BIT, 8BITMIME): detected from the message instead
    #[arg(short = 'B', value_name = "TYPE")]
    body_type: Option<String>,
    /// Delivery status notification conditions
    #[arg(short = 'N', value_name = "DSN")]
    dsn_notify: Option<String>,
    /// What to return in a bounce (full, hdrs)
    #[arg(short = 'R', value_name = "RET")]
    dsn_return: Option<String>,
    /// Envelope id for delivery status notifications
    #[arg(short = 'V', value_name = "ENVID")]
    envelope_id: Option<String>,
    /// Syslog tag
    #[arg(short = 'L', value_name = "TAG")]
    log_tag: Option<String>,
    /// Traffic log file
    #[arg(short = 'X', value_name = "FILE")]
    traffic_log: Option<String>,
    /// Hop count
    #[arg(short = 'h', value_name = "N")]
    hop_count: Option<String>,
    /// Long-form sendmail option (option=value)
    #[arg(short = 'O', value_name = "OPTION=VALUE")]
    long_option: Vec<String>,
    /// Submission mode (-Ac, -Am)
    #[arg(short = 'A', value_name = "c|m")]
    submission_mode: Option<String>,
    /// Relay (gateway) submission
    #[arg(short = 'G')]
    gateway: bool,
    /// Initial user submission
    #[arg(short = 'U')]
    initial_submission: bool,
    /// Do not expand aliases (aliases are configured, not system-wide)
    #[arg(short = 'n')]
    no_aliasing: bool,
    /// Also send to the sender when in an alias expansion
    #[arg(short = 'm')]
    me_too: bool,
}

/// The `-b` modes.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum Mode {
    /// Deliver mail (the default)
    #[value(name = "m")]
    Deliver,
    /// List the queue
    #[value(name = "p")]
    ListQueue,
    /// Speak SMTP on stdin/stdout
    #[value(name = "s")]
    Smtp,
    /// Verify recipients without sending
    #[value(name = "v")]
    Verify,
    /// Check the aliases
    #[value(name = "i")]
    Aliases,
}

/// The `sendmail` personality: sendmail's command line, positionals are recipients.
#[derive(Parser, Debug)]
#[command(
    name = "sendmail",
    about = "Submit a message read from stdin (oauth-sendmail's sendmail interface)",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true,
    version
)]
struct SendmailCli {
    #[command(flatten)]
    args: SendmailArgs,
}

/// `mailq` (sendmail -bp) and `newaliases` (sendmail -bi) under their own names: all
/// they take is the configuration to use.
#[derive(Parser, Debug)]
#[command(disable_help_flag = true, disable_version_flag = true, version)]
struct NamedCli {
    /// Read the configuration from FILE instead of the default locations
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print help
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,

    /// Print version
    #[arg(long, action = ArgAction::Version)]
    version: Option<bool>,
}

fn mailq_command() -> clap::Command {
    NamedCli::command().name("mailq").about(
        "List the messages waiting in oauth-sendmail's queue (what sendmail -bp and \
         oauth-sendmail queue list show)",
    )
}

fn newaliases_command() -> clap::Command {
    NamedCli::command()
        .name("newaliases")
        .about("Check the aliases of oauth-sendmail's configuration (what sendmail -bi does)")
        .long_about(
            "Check the aliases of oauth-sendmail's configuration (what sendmail -bi does).\n\n\
             There is no aliases database to rebuild: the aliases are the [aliases] table of \
             the configuration file, read on every send. newaliases checks that each one \
             resolves to qualified addresses and prints how many there are.",
        )
}

/// oauth-sendmail under its own name.
#[derive(Parser, Debug)]
#[command(
    name = "oauth-sendmail",
    version,
    about = "A drop-in /usr/sbin/sendmail that submits mail over SMTP with OAuth2",
    long_about = "A drop-in /usr/sbin/sendmail that submits mail over SMTP with OAuth2 \
                  (XOAUTH2), app passwords or IP-authenticated relays.\n\n\
                  On Debian, the package (scripts/build-deb) makes it the machine's MTA: \
                  /usr/sbin/sendmail, mailq and newaliases are links to it. Elsewhere, install \
                  it in /usr/local/sbin and link those names to it, never to a copy in a home.\n\
                  Started as `sendmail` it takes sendmail's options; as `mailq` it lists the \
                  queue; as `newaliases` it checks the aliases."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Read the configuration from FILE instead of the default locations (before or
    /// after the command's name)
    #[arg(short = 'C', long = "config", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send a message read from stdin, with sendmail's options (what `sendmail` runs)
    #[command(
        disable_help_flag = true,
        disable_version_flag = true,
        args_override_self = true,
        version
    )]
    Send(Box<SendmailArgs>),

    /// Show and manage the messages waiting in the queue
    ///
    /// `queue flush` delivers the messages whose retry time has come: what a timer or a
    /// cron job runs every few minutes. `sendmail -q` and `queue retry --all` deliver
    /// every queued message now, whatever its retry time (as Postfix's sendmail -q).
    #[command(subcommand)]
    Queue(QueueArgs),

    /// Show the delivery log: what was sent, queued, deferred, bounced or failed
    Log(LogArgs),

    /// Log in to an account's OAuth2 provider and keep its refresh token
    #[command(
        after_help = "The browser is opened with $BROWSER, xdg-open or open; the address is printed on stderr as well. See the README for headless servers (ssh -L, or paste the address)."
    )]
    Login(Login),
    /// Forget an account's tokens (the refresh token in its store and the cached access token)
    Logout(Logout),
    /// Show each account's provider, store, tokens and last error (never a secret)
    Status(StatusArgs),
    /// Run the machine-wide mail service (what systemd starts)
    ///
    /// It listens on /run/oauth-sendmail/submit.sock (or the socket systemd passes),
    /// takes every local user's mail, spools it and delivers it with the configuration
    /// /etc/oauth-sendmail/config.toml and the state in /var/lib/oauth-sendmail. Started
    /// as root it runs as the [service] user. SIGHUP re-reads the configuration.
    Daemon,

    /// Write a configuration, log in and send a test message: interactive on a terminal
    ///
    /// Asks for the provider, the address, the OAuth client (or a Google service account
    /// key), the token store, the domain and root's alias; writes the configuration with
    /// the right modes (as root: /etc/oauth-sendmail/config.toml, root:oauth-sendmail 0640,
    /// read by every caller on the machine); runs `login`; sends a test message; prints
    /// what it did. Secrets are read without echo, or with --client-secret-stdin.
    Setup(Box<Setup>),
    /// Manage the devices (printers, scanners) that may send through the service's relay
    ///
    /// The devices are kept in the service's configuration
    /// (/etc/oauth-sendmail/config.toml, or -C FILE) as [relay.devices.NAME]; the relay
    /// takes a change with the next connection. Only a password's verifier is stored.
    #[command(subcommand)]
    Device(DeviceArgs),
}

#[derive(Subcommand, Debug)]
enum DeviceArgs {
    /// Add a device and print its generated password, once (only its verifier is kept)
    Add {
        /// The device's name: its login user name in AUTH, and in the log
        name: String,
        /// Also (or, without a password, only) the addresses it may send from, as CIDR
        #[arg(long, value_name = "CIDR")]
        network: Option<String>,
        /// The one address its mail goes out as (default: the account's)
        #[arg(long, value_name = "ADDRESS")]
        sender: Option<String>,
        /// No password: it sends from --network without logging in (for a device that
        /// cannot do SMTP AUTH)
        #[arg(long, requires = "network")]
        no_password: bool,
    },
    /// List the devices, their networks, senders and accounts (never a password)
    List,
    /// Remove a device: it can no longer send
    Remove {
        /// The device's name
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum QueueArgs {
    /// List the queued messages (what mailq shows)
    List,
    /// Show one queued message: its state, then its text (a quarantined one: why)
    Show {
        /// Queue id, as `queue list` shows it
        id: String,
    },
    /// Try messages again now, whatever their retry time
    Retry {
        /// Queue ids
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Every queued message
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Remove messages from the queue without sending them
    Remove {
        /// Queue ids (a quarantined one's files are deleted)
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Every queued message (those being delivered right now are left)
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Deliver the messages whose retry time has come, as a timer does (sendmail -q and
    /// queue retry --all deliver every message now)
    Flush {
        /// Print the SMTP dialogue on stderr (secrets are redacted)
        #[arg(short, long)]
        verbose: bool,
    },
}

#[derive(Args, Debug)]
struct LogArgs {
    /// Only attempts newer than this: 30m, 12h, 1d, 2w
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    since: Option<Duration>,
    /// Only attempts with this result
    #[arg(long, value_parser = log_status())]
    status: Option<Status>,
    /// Output format: a table to read, CSV for a spreadsheet, JSON Lines for scripts
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// `log --status`: the results the delivery log records, named as it writes them, each
/// with what it means (from the log's own list, so `--help` cannot drift from it).
fn log_status() -> impl clap::builder::TypedValueParser<Value = Status> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let values = Status::ALL.map(|s| PossibleValue::new(s.as_str()).help(s.meaning()));
    PossibleValuesParser::new(values).map(|name| {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .unwrap_or(Status::Sent) // the parser has accepted only these names
    })
}

fn parse_age(text: &str) -> std::result::Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("`{text}` is not an age like 30m, 12h, 1d or 2w"))
}

/// The clap definition of the program under its own name (for man page and completions).
#[cfg(test)]
fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod generate;

/// A command line that cannot be used: the error, and clap's whole explanation of it.
#[derive(Debug)]
pub struct Rejected {
    /// What clap says (the usage, the valid values, a tip) for a person at a terminal, to
    /// be printed before the error; `None` under the sendmail names, whose callers (cron,
    /// scripts) keep one line, so the error's own line says everything that helps.
    pub explanation: Option<String>,
    /// `bad command line: <what clap said, on one line>`, exit 64.
    pub error: Error,
}

impl From<Error> for Rejected {
    fn from(error: Error) -> Rejected {
        Rejected {
            explanation: None,
            error,
        }
    }
}

/// Parses a whole argv, argv[0] included.
pub fn parse(argv: &[OsString]) -> std::result::Result<Action, Rejected> {
    let argv0 = argv.first().map(OsString::as_os_str).unwrap_or_default();
    let terse = |err| usage(err, false);
    match Personality::from_argv0(argv0) {
        named @ (Personality::Mailq | Personality::Newaliases) => {
            let mailq = named == Personality::Mailq;
            let command = match mailq {
                true => mailq_command(),
                false => newaliases_command(),
            };
            let matches = command.try_get_matches_from(argv).map_err(terse)?;
            let config = NamedCli::from_arg_matches(&matches).map_err(terse)?.config;
            Ok(match mailq {
                true => Action::ListQueue { config },
                false => Action::CheckAliases { config },
            })
        }
        Personality::Sendmail => {
            let matches = SendmailCli::command()
                .try_get_matches_from(argv)
                .map_err(terse)?;
            let cli = SendmailCli::from_arg_matches(&matches).map_err(terse)?;
            Ok(action_for(cli.args)?)
        }
        Personality::Own => {
            let full = |err| usage(err, true);
            let matches = Cli::command().try_get_matches_from(argv).map_err(full)?;
            let cli = Cli::from_arg_matches(&matches).map_err(full)?;
            let config = cli.config;
            Ok(match cli.command {
                // clap gives the global -C/--config to the commands' own (they share the id).
                Command::Send(args) => return Ok(action_for(*args)?),
                Command::Queue(QueueArgs::List) => Action::ListQueue { config },
                Command::Queue(QueueArgs::Flush { verbose }) => Action::FlushQueue {
                    config,
                    verbose,
                    all: false,
                },
                Command::Queue(QueueArgs::Show { id }) => Action::Queue {
                    config,
                    command: QueueCommand::Show(id),
                },
                Command::Queue(QueueArgs::Retry { ids, .. }) => Action::Queue {
                    config,
                    command: QueueCommand::Retry(ids),
                },
                Command::Queue(QueueArgs::Remove { all: true, .. }) => Action::Queue {
                    config,
                    command: QueueCommand::RemoveAll,
                },
                Command::Queue(QueueArgs::Remove { ids, .. }) => Action::Queue {
                    config,
                    command: QueueCommand::Remove(ids),
                },
                Command::Login(login) => Action::Login(login),
                Command::Logout(logout) => Action::Logout(logout),
                Command::Status(status) => Action::Status(status),
                Command::Daemon => Action::Daemon,
                Command::Setup(setup) => Action::Setup(Box::new((*setup).into())),
                Command::Device(device) => Action::Device {
                    config,
                    command: match device {
                        DeviceArgs::Add {
                            name,
                            network,
                            sender,
                            no_password,
                        } => DeviceCommand::Add {
                            name,
                            network,
                            sender,
                            no_password,
                        },
                        DeviceArgs::List => DeviceCommand::List,
                        DeviceArgs::Remove { name } => DeviceCommand::Remove(name),
                    },
                },
                Command::Log(log) => Action::Log {
                    config,
                    since: log.since,
                    status: log.status,
                    format: log.format,
                },
            })
        }
    }
}

fn action_for(args: SendmailArgs) -> Result<Action> {
    if args.queue.is_some() {
        return Ok(Action::FlushQueue {
            config: args.config,
            verbose: args.verbose,
            all: true,
        });
    }
    let mut ignore_dots = args.ignore_dots;
    for option in &args.option {
        // -oi is the only -o option with a meaning here; see IgnoredOptions for why.
        if option == "i" {
            ignore_dots = true;
        }
    }
    let verify_only = match args.mode.unwrap_or(Mode::Deliver) {
        Mode::Deliver => false,
        Mode::Verify => true,
        Mode::ListQueue => {
            return Ok(Action::ListQueue {
                config: args.config,
            })
        }
        Mode::Aliases => {
            return Ok(Action::CheckAliases {
                config: args.config,
            })
        }
        Mode::Smtp => return session_for(args),
    };
    Ok(Action::Send(Invocation {
        extract_recipients: args.extract_recipients,
        ignore_dots,
        sender: args.sender,
        full_name: args.full_name,
        recipients: args.recipients,
        verify_only,
        verbose: args.verbose,
        dry_run: args.dry_run,
        account: args.account,
        config: args.config,
        alone: false,
    }))
}

/// `-bs`. Like Postfix, it refuses recipients on the command line (they would be silently
/// dropped) and `--dry-run` (stdout is the SMTP channel); `-t`, `-i`, `-f` and `-F` are
/// accepted and mean nothing, as the dialogue gives the envelope and ends each message.
fn session_for(args: SendmailArgs) -> Result<Action> {
    let refuse = |why: &str| Err(Error::new(Kind::Usage, "sendmail -bs", why));
    if !args.recipients.is_empty() {
        return refuse("recipients come from RCPT TO, not from the command line");
    }
    if args.dry_run {
        return refuse("--dry-run cannot be used: stdout is the SMTP dialogue");
    }
    Ok(Action::SmtpSession(SessionOptions {
        verbose: args.verbose,
        account: args.account,
        config: args.config,
    }))
}

/// A clap error as our usage error (exit 64), with clap's whole text when `explain`;
/// help and version print and exit 0.
fn usage(err: clap::Error, explain: bool) -> Rejected {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        err.exit();
    }
    let text = err.to_string();
    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // The text is the help, which lists the commands; its first line is no error.
        return Rejected {
            explanation: explain.then_some(text),
            error: Error::new(Kind::Usage, "bad command line", "no command given"),
        };
    }
    // The first paragraph is the error itself, with what it needs to be understood (the
    // missing argument, the valid values); the rest is usage and tips.
    let why = text
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let why = why.strip_prefix("error: ").unwrap_or(&why);
    let why = match why.is_empty() {
        true => "bad arguments",
        false => why,
    };
    // Under the sendmail names this line is all a caller keeps: say where help is.
    let see_help = if explain { "" } else { " (see --help)" };
    let error = Error::new(Kind::Usage, "bad command line", format!("{why}{see_help}"));
    Rejected {
        explanation: explain.then_some(text),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sendmail(args: &[&str]) -> Result<Action> {
        let argv: Vec<OsString> = std::iter::once("/usr/sbin/sendmail")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        parse(&argv).map_err(|rejected| rejected.error)
    }

    fn invocation(args: &[&str]) -> Invocation {
        match sendmail(args) {
            Ok(Action::Send(inv)) => inv,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn personality_follows_the_basename_of_argv0() {
        assert_eq!(
            Personality::from_argv0(OsStr::new("/usr/lib/sendmail")),
            Personality::Sendmail
        );
        assert_eq!(
            Personality::from_argv0(OsStr::new("sendmail")),
            Personality::Sendmail
        );
        assert_eq!(
            Personality::from_argv0(OsStr::new("/usr/bin/mailq")),
            Personality::Mailq
        );
        assert_eq!(
            Personality::from_argv0(OsStr::new("newaliases")),
            Personality::Newaliases
        );
        assert_eq!(
            Personality::from_argv0(OsStr::new("./oauth-sendmail")),
            Personality::Own
        );
    }

    #[test]
    fn mailq_and_newaliases_need_no_arguments() {
        assert_eq!(
            parse(&["mailq".into()]).unwrap(),
            Action::ListQueue { config: None }
        );
        assert_eq!(
            parse(&["newaliases".into()]).unwrap(),
            Action::CheckAliases { config: None }
        );
    }

    #[test]
    fn positionals_are_recipients_even_when_they_look_like_subcommands() {
        assert_eq!(invocation(&["login", "send"]).recipients, ["login", "send"]);
    }

    fn own(args: &[&str]) -> Result<Action> {
        let argv: Vec<OsString> = std::iter::once("oauth-sendmail")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        parse(&argv).map_err(|rejected| rejected.error)
    }

    fn login(args: &[&str]) -> Login {
        let args: Vec<&str> = std::iter::once("login")
            .chain(args.iter().copied())
            .collect();
        match own(&args) {
            Ok(Action::Login(login)) => login,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn setup_flags_for_scripts() {
        let setup = match own(&[
            "setup",
            "--non-interactive",
            "--provider",
            "outlook",
            "--address",
            "me@contoso.com",
            "--client-id",
            "abc",
            "--client-secret-stdin",
            "--tenant",
            "contoso.com",
            "--store",
            "file",
            "--test-to",
            "ops@contoso.com",
            "-C",
            "/tmp/c.toml",
        ]) {
            Ok(Action::Setup(setup)) => setup,
            other => panic!("{other:?}"),
        };
        use crate::commands::setup::{Provider, Store};
        assert_eq!(setup.provider, Some(Provider::Outlook));
        assert_eq!(setup.address.as_deref(), Some("me@contoso.com"));
        assert_eq!(setup.store, Some(Store::File));
        assert!(setup.client_secret_stdin && setup.non_interactive);
        assert_eq!(setup.config, Some(PathBuf::from("/tmp/c.toml")));
        // No secret on the command line, and a service account has no client.
        assert_eq!(
            own(&["setup", "--client-secret", "x"])
                .unwrap_err()
                .exit_code(),
            64
        );
        assert_eq!(
            own(&["setup", "--service-account", "/k.json", "--client-id", "x"])
                .unwrap_err()
                .exit_code(),
            64
        );
        assert_eq!(
            own(&["setup", "--no-login", "--test-to", "a@b.c"])
                .unwrap_err()
                .exit_code(),
            64
        );
    }

    #[test]
    fn login_defaults() {
        assert_eq!(
            login(&[]),
            Login {
                timeout: 300,
                ..Login::default()
            }
        );
    }

    #[test]
    fn login_account_and_config() {
        let l = login(&["--account", "gmail", "-C", "/tmp/c.toml"]);
        assert_eq!(l.account.as_deref(), Some("gmail"));
        assert_eq!(l.config, Some(PathBuf::from("/tmp/c.toml")));
        assert_eq!(login(&["--config", "/x"]).config, Some(PathBuf::from("/x")));
    }

    #[test]
    fn login_port_is_a_nonzero_port() {
        assert_eq!(login(&["--port", "8765"]).port, Some(8765));
        assert_eq!(own(&["login", "--port", "0"]).unwrap_err().exit_code(), 64);
        assert_eq!(
            own(&["login", "--port", "70000"]).unwrap_err().exit_code(),
            64
        );
    }

    #[test]
    fn login_no_browser() {
        assert!(login(&["--no-browser"]).no_browser);
    }

    #[test]
    fn login_device_excludes_the_loopback_options() {
        assert!(login(&["--device"]).device);
        assert_eq!(
            own(&["login", "--device", "--no-browser"])
                .unwrap_err()
                .exit_code(),
            64
        );
        assert_eq!(
            own(&["login", "--device", "--port", "1"])
                .unwrap_err()
                .exit_code(),
            64
        );
    }

    #[test]
    fn login_timeout_seconds() {
        assert_eq!(login(&["--timeout", "5"]).timeout, 5);
        assert_eq!(
            own(&["login", "--timeout", "0"]).unwrap_err().exit_code(),
            64
        );
    }

    #[test]
    fn login_client_secret_stdin() {
        assert!(login(&["--client-secret-stdin"]).client_secret_stdin);
    }

    #[test]
    fn logout_account_and_config() {
        assert_eq!(
            own(&["logout", "--account", "x", "-C", "/c"]).unwrap(),
            Action::Logout(Logout {
                account: Some("x".into()),
                config: Some(PathBuf::from("/c")),
            })
        );
    }

    #[test]
    fn status_check_verbose_account_config() {
        assert_eq!(
            own(&["status"]).unwrap(),
            Action::Status(StatusArgs::default())
        );
        assert_eq!(
            own(&[
                "status",
                "--check",
                "--json",
                "-v",
                "--account",
                "a",
                "--config",
                "/c"
            ])
            .unwrap(),
            Action::Status(StatusArgs {
                account: Some("a".into()),
                config: Some(PathBuf::from("/c")),
                check: true,
                json: true,
                verbose: true,
            })
        );
    }

    #[test]
    fn own_name_send_takes_the_same_options() {
        let argv: Vec<OsString> = ["oauth-sendmail", "send", "-ti", "-f", "a@b.c", "x@y.z"]
            .iter()
            .map(OsString::from)
            .collect();
        let Action::Send(inv) = parse(&argv).unwrap() else {
            panic!()
        };
        assert!(inv.extract_recipients && inv.ignore_dots);
        assert_eq!(inv.sender.as_deref(), Some("a@b.c"));
        assert_eq!(inv.recipients, ["x@y.z"]);
    }

    #[test]
    fn queue_subcommands() {
        let config = Some(PathBuf::from("/c.toml"));
        assert_eq!(
            own(&["queue", "list", "--config", "/c.toml"]).unwrap(),
            Action::ListQueue {
                config: config.clone()
            }
        );
        assert_eq!(
            own(&["queue", "flush", "-v"]).unwrap(),
            Action::FlushQueue {
                config: None,
                verbose: true,
                all: false
            }
        );
        assert_eq!(
            own(&["queue", "show", "AB12"]).unwrap(),
            Action::Queue {
                config: None,
                command: QueueCommand::Show("AB12".into())
            }
        );
        assert_eq!(
            own(&["queue", "retry", "--all"]).unwrap(),
            Action::Queue {
                config: None,
                command: QueueCommand::Retry(vec![])
            }
        );
        assert_eq!(
            own(&["queue", "retry", "A", "B"]).unwrap(),
            Action::Queue {
                config: None,
                command: QueueCommand::Retry(vec!["A".into(), "B".into()])
            }
        );
        assert_eq!(own(&["queue", "retry"]).unwrap_err().exit_code(), 64);
        assert_eq!(own(&["queue", "remove"]).unwrap_err().exit_code(), 64);
        assert_eq!(
            own(&["--config", "/c.toml", "queue", "remove", "A"]).unwrap(),
            Action::Queue {
                config,
                command: QueueCommand::Remove(vec!["A".into()])
            }
        );
    }

    /// `--status NAME` names a status as the log writes it, and every status has one.
    #[test]
    fn log_status_values_are_the_log_names() {
        // Status::ALL lists every status: a status added without it fails this match.
        for status in Status::ALL {
            match status {
                Status::Sent
                | Status::Queued
                | Status::Deferred
                | Status::Bounced
                | Status::Failed
                | Status::Partial
                | Status::Quarantined => {}
            }
            let parsed = own(&["log", "--status", status.as_str()]).unwrap();
            assert!(
                matches!(parsed, Action::Log { status: Some(s), .. } if s == status),
                "{status:?}"
            );
        }
        let names: std::collections::HashSet<&str> =
            Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names.len(), Status::ALL.len(), "a status listed twice");
        for (name, format) in [
            ("table", Format::Table),
            ("csv", Format::Csv),
            ("json", Format::Json),
        ] {
            assert_eq!(Format::from_str(name, false).unwrap(), format);
        }
    }

    #[test]
    fn log_options() {
        assert_eq!(
            own(&["log", "--since", "1d", "--status", "failed", "--format", "csv"]).unwrap(),
            Action::Log {
                config: None,
                since: Some(Duration::from_secs(86400)),
                status: Some(Status::Failed),
                format: Format::Csv
            }
        );
        assert_eq!(
            own(&["log"]).unwrap(),
            Action::Log {
                config: None,
                since: None,
                status: None,
                format: Format::Table
            }
        );
        assert_eq!(
            own(&["log", "--since", "yesterday"])
                .unwrap_err()
                .exit_code(),
            64
        );
    }

    #[test]
    fn send_takes_the_global_config_unless_c_is_given() {
        let Action::Send(inv) = own(&["--config", "/g.toml", "send", "x@y.z"]).unwrap() else {
            panic!()
        };
        assert_eq!(inv.config, Some(PathBuf::from("/g.toml")));
        let Action::Send(inv) =
            own(&["--config", "/g.toml", "send", "-C", "/c.toml", "x@y.z"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(inv.config, Some(PathBuf::from("/c.toml")));
    }

    #[test]
    fn option_t_extracts_recipients() {
        assert!(invocation(&["-t"]).extract_recipients);
        assert!(!invocation(&["root"]).extract_recipients);
    }

    #[test]
    fn option_i_and_oi_ignore_dots() {
        assert!(invocation(&["-i", "root"]).ignore_dots);
        assert!(invocation(&["-oi", "root"]).ignore_dots);
        assert!(!invocation(&["root"]).ignore_dots);
    }

    #[test]
    fn combined_flags_split() {
        let inv = invocation(&["-ti"]);
        assert!(inv.extract_recipients && inv.ignore_dots);
    }

    #[test]
    fn option_f_attached_separate_and_r() {
        assert_eq!(
            invocation(&["-f", "a@b.c", "x"]).sender.as_deref(),
            Some("a@b.c")
        );
        assert_eq!(
            invocation(&["-fa@b.c", "x"]).sender.as_deref(),
            Some("a@b.c")
        );
        assert_eq!(
            invocation(&["-r", "a@b.c", "x"]).sender.as_deref(),
            Some("a@b.c")
        );
        assert_eq!(invocation(&["-f", "<>", "x"]).sender.as_deref(), Some("<>"));
    }

    #[test]
    fn option_capital_f_attached_and_separate() {
        assert_eq!(
            invocation(&["-FCronDaemon", "x"]).full_name.as_deref(),
            Some("CronDaemon")
        );
        assert_eq!(
            invocation(&["-F", "Cron Daemon", "x"]).full_name.as_deref(),
            Some("Cron Daemon")
        );
    }

    #[test]
    fn option_b_modes() {
        assert!(!invocation(&["-bm", "x"]).verify_only);
        assert!(invocation(&["-bv", "x"]).verify_only);
        assert_eq!(
            sendmail(&["-bp"]).unwrap(),
            Action::ListQueue { config: None }
        );
        assert_eq!(
            sendmail(&["-bi"]).unwrap(),
            Action::CheckAliases { config: None }
        );
        assert_eq!(
            sendmail(&["-bs"]).unwrap(),
            Action::SmtpSession(SessionOptions::default())
        );
        assert_eq!(sendmail(&["-bt"]).unwrap_err().exit_code(), 64);
    }

    #[test]
    fn option_bs_keeps_account_config_and_verbose() {
        // Laravel's command line, and one with everything -bs still uses.
        assert_eq!(
            sendmail(&["-bs", "-i"]).unwrap(),
            Action::SmtpSession(SessionOptions::default())
        );
        assert_eq!(
            sendmail(&["-bs", "-v", "-C", "/tmp/c.toml", "--account", "work"]).unwrap(),
            Action::SmtpSession(SessionOptions {
                verbose: true,
                account: Some("work".into()),
                config: Some(PathBuf::from("/tmp/c.toml")),
            })
        );
    }

    #[test]
    fn option_bs_refuses_recipients_and_dry_run() {
        let err = sendmail(&["-bs", "root"]).unwrap_err();
        assert_eq!(err.exit_code(), 64);
        assert!(err.to_string().contains("RCPT TO"), "{err}");
        assert_eq!(sendmail(&["-bs", "--dry-run"]).unwrap_err().exit_code(), 64);
    }

    #[test]
    fn option_q_with_and_without_interval() {
        let flush = |verbose| Action::FlushQueue {
            config: None,
            verbose,
            all: true,
        };
        assert_eq!(sendmail(&["-q"]).unwrap(), flush(false));
        assert_eq!(sendmail(&["-q30m"]).unwrap(), flush(false));
        assert_eq!(sendmail(&["-v", "-q"]).unwrap(), flush(true));
    }

    #[test]
    fn option_o_values_are_accepted() {
        let inv = invocation(&["-oem", "-odi", "-oQ/var/spool/x", "root"]);
        assert_eq!(inv.recipients, ["root"]);
        assert!(!inv.ignore_dots);
    }

    #[test]
    fn option_capital_c_names_the_config() {
        assert_eq!(
            invocation(&["-C", "/tmp/c.toml", "x"]).config,
            Some(PathBuf::from("/tmp/c.toml"))
        );
    }

    #[test]
    fn option_v_is_verbose() {
        assert!(invocation(&["-v", "x"]).verbose);
    }

    #[test]
    fn long_dry_run_and_account() {
        let inv = invocation(&["--dry-run", "--account", "work", "x"]);
        assert!(inv.dry_run);
        assert_eq!(inv.account.as_deref(), Some("work"));
    }

    #[test]
    fn ignored_options_are_accepted_with_their_values() {
        let inv = invocation(&[
            "-B8BITMIME",
            "-N",
            "success,failure",
            "-R",
            "hdrs",
            "-V",
            "envid1",
            "-L",
            "tag",
            "-X",
            "/tmp/log",
            "-h",
            "5",
            "-O",
            "DeliveryMode=b",
            "-Ac",
            "-Am",
            "-G",
            "-U",
            "-n",
            "-m",
            "root",
        ]);
        assert_eq!(inv.recipients, ["root"]);
    }

    #[test]
    fn h_and_capital_v_are_not_help_and_version() {
        assert_eq!(invocation(&["-h", "3", "x"]).recipients, ["x"]);
        assert_eq!(invocation(&["-V", "id", "x"]).recipients, ["x"]);
    }

    #[test]
    fn double_dash_ends_options() {
        assert_eq!(
            invocation(&["-oi", "--", "-odd@x.y"]).recipients,
            ["-odd@x.y"]
        );
    }

    fn rejected(argv: &[&str]) -> Rejected {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        parse(&argv).unwrap_err()
    }

    #[test]
    fn own_usage_errors_keep_clap_whole_message_and_a_whole_summary() {
        let r = rejected(&["oauth-sendmail", "queue", "retry"]);
        let explanation = r.explanation.unwrap();
        assert!(explanation.contains("<IDS>"), "{explanation}");
        assert!(explanation.contains("Usage: "), "{explanation}");
        assert_eq!(r.error.exit_code(), 64);
        let summary = r.error.to_string();
        assert_eq!(summary.lines().count(), 1, "{summary}");
        assert!(
            summary.contains("not provided: <IDS>"),
            "the summary names what is missing: {summary}"
        );

        let r = rejected(&["oauth-sendmail", "log", "--status", "nope"]);
        assert!(r.explanation.unwrap().contains("[possible values: sent,"));
        let summary = r.error.to_string();
        assert_eq!(summary.lines().count(), 1, "{summary}");
        assert!(
            summary.contains("'nope'")
                && summary.contains("possible values: sent, queued, deferred, bounced, failed"),
            "{summary}"
        );
    }

    #[test]
    fn a_missing_command_is_said_so_after_the_list_of_commands() {
        let r = rejected(&["oauth-sendmail", "queue"]);
        assert!(r.explanation.unwrap().contains("flush"));
        assert_eq!(r.error.to_string(), "bad command line: no command given");
    }

    #[test]
    fn sendmail_usage_errors_are_one_line_that_keeps_the_valid_values() {
        let r = rejected(&["sendmail", "-bt"]);
        assert_eq!(r.explanation, None, "sendmail's callers keep one line");
        let summary = r.error.to_string();
        assert_eq!(summary.lines().count(), 1, "{summary}");
        assert!(
            summary.contains("possible values: m, p, s, v, i"),
            "{summary}"
        );
    }

    /// The configuration a parsed command line names, whatever the action.
    fn config_of(action: Action) -> Option<PathBuf> {
        match action {
            Action::Send(inv) => inv.config,
            Action::SmtpSession(options) => options.config,
            Action::ListQueue { config }
            | Action::FlushQueue { config, .. }
            | Action::Queue { config, .. }
            | Action::Log { config, .. }
            | Action::CheckAliases { config } => config,
            Action::Login(login) => login.config,
            Action::Logout(logout) => logout.config,
            Action::Status(status) => status.config,
            Action::Daemon => None,
            Action::Setup(setup) => setup.config,
            Action::Device { config, .. } => config,
        }
    }

    #[test]
    fn device_commands_parse_and_take_their_options() {
        assert_eq!(
            own(&[
                "device",
                "add",
                "printer",
                "--network",
                "192.168.1.0/24",
                "--sender",
                "scan@x.org"
            ])
            .unwrap(),
            Action::Device {
                config: None,
                command: DeviceCommand::Add {
                    name: "printer".into(),
                    network: Some("192.168.1.0/24".into()),
                    sender: Some("scan@x.org".into()),
                    no_password: false,
                },
            }
        );
        assert!(matches!(
            own(&[
                "device",
                "add",
                "old",
                "--network",
                "10.0.0.5/32",
                "--no-password"
            ])
            .unwrap(),
            Action::Device {
                command: DeviceCommand::Add {
                    no_password: true,
                    ..
                },
                ..
            }
        ));
        assert!(
            own(&["device", "add", "old", "--no-password"]).is_err(),
            "without a password, the network is what lets it in"
        );
        assert_eq!(
            own(&["device", "list"]).unwrap(),
            Action::Device {
                config: None,
                command: DeviceCommand::List
            }
        );
        assert_eq!(
            own(&["-C", "/c.toml", "device", "remove", "nas"]).unwrap(),
            Action::Device {
                config: Some(PathBuf::from("/c.toml")),
                command: DeviceCommand::Remove("nas".into())
            }
        );
        assert!(own(&["device", "add"]).is_err(), "a name is needed");
        assert!(own(&["device", "remove"]).is_err());
        assert!(
            own(&["device", "add", "p", "--password", "x"]).is_err(),
            "passwords are generated, never given"
        );
    }

    #[test]
    fn daemon_takes_no_options() {
        assert_eq!(own(&["daemon"]).unwrap(), Action::Daemon);
        assert!(own(&["daemon", "--foreground"]).is_err());
    }

    #[test]
    fn every_command_takes_c_and_config_before_or_after_its_name() {
        let commands: [&[&str]; 13] = [
            &["device", "list"],
            &["send", "x@y.z"],
            &["queue", "list"],
            &["queue", "flush"],
            &["queue", "show", "A"],
            &["queue", "retry", "--all"],
            &["queue", "remove", "A"],
            &["queue", "remove", "--all"],
            &["log"],
            &["login"],
            &["logout"],
            &["status"],
            &["setup"],
        ];
        let want = Some(PathBuf::from("/c.toml"));
        for command in commands {
            for flag in ["-C", "--config"] {
                // Before the command, after its first word, and at the end.
                let mut places = vec![[&[flag, "/c.toml"][..], command].concat()];
                places.push([&command[..1], &[flag, "/c.toml"], &command[1..]].concat());
                places.push([command, &[flag, "/c.toml"]].concat());
                for args in places {
                    match own(&args) {
                        Ok(action) => assert_eq!(config_of(action), want, "{args:?}"),
                        Err(err) => panic!("{args:?}: {err}"),
                    }
                }
            }
        }
        for name in ["sendmail", "mailq", "newaliases"] {
            for args in [&["-C", "/c.toml"][..], &["--config", "/c.toml"]] {
                let argv: Vec<OsString> = std::iter::once(&name)
                    .chain(args)
                    .map(OsString::from)
                    .collect();
                let want = want.clone();
                let action = parse(&argv).map_err(|r| r.error.to_string());
                assert_eq!(action.map(config_of), Ok(want), "{name} {args:?}");
            }
        }
    }

    #[test]
    fn mailq_and_newaliases_refuse_what_they_do_not_take() {
        for name in ["mailq", "newaliases"] {
            let r = rejected(&[name, "root"]);
            assert_eq!(r.error.exit_code(), 64);
            assert_eq!(r.explanation, None);
        }
    }

    #[test]
    fn queue_remove_all() {
        assert_eq!(
            own(&["queue", "remove", "--all"]).unwrap(),
            Action::Queue {
                config: None,
                command: QueueCommand::RemoveAll
            }
        );
        assert_eq!(
            own(&["queue", "remove", "--all", "A"])
                .unwrap_err()
                .exit_code(),
            64
        );
    }

    /// `queue flush` delivers what is due; `sendmail -q` everything now (as Postfix's):
    /// the help, and so the man page and completions made from it, must not equate them.
    #[test]
    fn flush_is_not_said_to_be_what_sendmail_q_does() {
        let line = |mut cmd: clap::Command, start: &str| {
            let help = cmd.render_help().to_string();
            let line = help.lines().find(|l| l.trim_start().starts_with(start));
            (line.unwrap().to_string(), help)
        };
        let (flush, help) = line(command().find_subcommand("queue").unwrap().clone(), "flush");
        assert!(flush.contains("retry time has come"), "{flush}");
        assert!(!help.contains("what sendmail -q does"), "{help}");
        let (q, _) = line(SendmailCli::command(), "-q");
        assert!(q.contains("every queued message"), "{q}");
    }

    #[test]
    fn unknown_option_is_a_one_line_usage_error() {
        let err = sendmail(&["-Z", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), 64);
        assert!(err.to_string().contains("-Z"), "{err}");
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
    }

    #[test]
    fn missing_option_value_is_a_usage_error() {
        assert_eq!(sendmail(&["-f"]).unwrap_err().exit_code(), 64);
    }

    /// man/ and completions/ are generated from the clap definition and committed, so
    /// packagers need no build step; this fails when they are stale.
    /// Regenerate with: UPDATE_GENERATED=1 cargo test generated_files
    #[test]
    fn generated_files_are_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let update = std::env::var_os("UPDATE_GENERATED").is_some();
        let mut stale = Vec::new();
        for (path, content) in generate::files(root) {
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &content).unwrap();
            } else if std::fs::read(&path).ok().as_deref() != Some(&content[..]) {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "stale: {stale:?}; run UPDATE_GENERATED=1 cargo test generated_files"
        );
    }

    /// The systemd unit we ship must run a command this program has.
    #[test]
    fn the_shipped_service_unit_runs_the_daemon() {
        let unit = include_str!("../contrib/systemd/oauth-sendmail.service");
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let argv: Vec<OsString> = exec.split_whitespace().map(Into::into).collect();
        assert_eq!(parse(&argv).unwrap(), Action::Daemon);
    }

    #[test]
    fn the_shipped_flush_service_runs_a_real_command() {
        let unit = include_str!("../contrib/systemd/oauth-sendmail-flush.service");
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let argv: Vec<OsString> = exec.split_whitespace().map(OsString::from).collect();
        assert_eq!(
            parse(&argv).unwrap(),
            Action::FlushQueue {
                config: None,
                verbose: false,
                all: false
            }
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
        SendmailCli::command().debug_assert();
    }
}
