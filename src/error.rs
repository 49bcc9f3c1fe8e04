//! The one error type of the program, and the one place that maps it to a sysexits.h code.
//!
//! Every failure carries a `Kind` chosen where it happened; `main` turns it into the exit
//! status through [`Error::exit_code`] and nowhere else. Callers ask predicates
//! (`is_transient`) instead of matching message text. An error another library returned
//! is kept as the source, and printed once, after our reason.

use std::fmt;
use std::sync::Arc;

/// What went wrong, at the granularity a caller of sendmail can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Bad command line, or no recipients (EX_USAGE).
    Usage,
    /// The message or an address in it cannot be used (EX_DATAERR).
    BadInput,
    /// A recipient was refused or cannot be resolved (EX_NOUSER).
    RecipientRefused,
    /// The server refused the message for good (EX_UNAVAILABLE).
    Unavailable,
    /// A bug or an impossible state (EX_SOFTWARE).
    Internal,
    /// A spool or output file could not be created (EX_CANTCREAT).
    CannotCreate,
    /// Reading stdin or a local file failed (EX_IOERR).
    Io,
    /// Try again later: 4xx, network down, timeout (EX_TEMPFAIL).
    Temporary,
    /// The server said something that is not SMTP (EX_PROTOCOL).
    Protocol,
    /// The server or token endpoint refused our credentials (EX_NOPERM).
    AuthRefused,
    /// The configuration is missing or wrong (EX_CONFIG).
    Config,
    /// The server's TLS certificate cannot be trusted (unknown CA, wrong host name, a
    /// machine in the middle): not a passing fault but one a person must look at, so a
    /// queued message waits and the exit status says so (EX_CONFIG: the fix is usually
    /// `ca_file` or `host`).
    Certificate,
    /// `status --check` found something to look at soon: mail deferred, an account held
    /// by its quota. Exit 1, as a Nagios plugin's WARNING: the one exception to
    /// sysexits, because monitoring defines these codes.
    CheckWarning,
    /// `status --check` found something to fix now: an account that needs a login, a
    /// send that would fail. Exit 2, a Nagios plugin's CRITICAL.
    CheckCritical,
}

/// A cause kept as it came (an `Arc`, so that `Error` stays `Clone`).
type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// A failure: what happened, why (our words, then the error that caused it, if any), and
/// (when there is one) what to do next.
#[derive(Clone)]
pub struct Error {
    kind: Kind,
    what: String,
    why: String,
    cause: Option<Cause>,
    hint: Option<String>,
    message_kept: bool,
    /// A wait the failure asks for, in seconds, 0 for none: the server's `Retry-After` for
    /// this message, or, with `wait_is_the_accounts`, a hold on the account's whole queue
    /// (a provider's sending quota). A u32 and a bool fit where the padding was, so the
    /// `Result`s every function returns grow no larger.
    wait: u32,
    wait_is_the_accounts: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Kind {
    /// Every kind, for whoever must go from an exit status back to a kind (`setup` runs
    /// its steps as commands and exits as the one that failed did).
    pub const ALL: [Kind; 14] = [
        Kind::Usage,
        Kind::BadInput,
        Kind::RecipientRefused,
        Kind::Unavailable,
        Kind::Internal,
        Kind::CannotCreate,
        Kind::Io,
        Kind::Temporary,
        Kind::Protocol,
        Kind::AuthRefused,
        Kind::Config,
        Kind::Certificate,
        Kind::CheckWarning,
        Kind::CheckCritical,
    ];
}

impl Error {
    pub fn new(kind: Kind, what: impl Into<String>, why: impl fmt::Display) -> Error {
        Error {
            kind,
            what: what.into(),
            why: why.to_string(),
            cause: None,
            hint: None,
            message_kept: false,
            wait: 0,
            wait_is_the_accounts: false,
        }
    }

    /// A failure whose reason is `cause` itself: "what: cause: its cause...".
    pub fn from_cause(
        kind: Kind,
        what: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::new(kind, what, "").caused_by(cause)
    }

    /// Keeps `cause` as the source of this failure: its text, and its own causes', follow
    /// the reason ("what: why: cause: ..."), each one left out where the text before it
    /// already says it.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// Why, in full: our reason, then each cause down the chain that adds something. A
    /// cause's documentation link (rustls appends them: ": https://docs.rs/...") is left
    /// out: one line for a person, not a reference.
    fn reason(&self) -> String {
        let mut text = self.why.clone();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            let own = cause.to_string();
            let own = own.split(": https://").next().unwrap_or_default();
            if text.is_empty() {
                text = own.to_string();
            } else if !text.contains(own) {
                text = format!("{text}: {own}");
            }
            next = cause.source();
        }
        text
    }

    /// Adds a next step a person can take, printed after the reason (several stack up).
    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        let hint = hint.into();
        self.hint = Some(match self.hint.take() {
            Some(earlier) => format!("{earlier}\n  {hint}"),
            None => hint,
        });
        self
    }

    /// The same failure as the reason for a larger one: "what: (old what: old why)". The
    /// cause stays the source.
    pub fn within(self, what: impl Into<String>) -> Error {
        Error {
            why: match self.why.is_empty() {
                true => self.what,
                false => format!("{}: {}", self.what, self.why),
            },
            what: what.into(),
            ..self
        }
    }

    /// Worth retrying later with the same message and configuration.
    pub fn is_transient(&self) -> bool {
        self.kind == Kind::Temporary
    }

    /// Retrying the same message will fail the same way: the server refused it or it
    /// cannot be sent as it is. (Credentials and configuration can be fixed, so a
    /// queued message waits for them.)
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.kind,
            Kind::BadInput | Kind::RecipientRefused | Kind::Unavailable
        )
    }

    /// A failure a queued message can wait out: it passes (4xx, no network) or a person
    /// can fix it (a refused login). Decides what sendmail queues instead of refusing.
    pub fn can_wait(&self) -> bool {
        matches!(
            self.kind,
            Kind::Temporary | Kind::AuthRefused | Kind::Certificate
        )
    }

    /// A failure a queued message waits out only once a person acts (log in again, fix
    /// the certificate or the configuration): sendmail keeps the message and still exits
    /// non-zero, so cron and scripts see it.
    pub fn needs_a_person(&self) -> bool {
        matches!(self.kind, Kind::AuthRefused | Kind::Certificate)
    }

    /// Marks a failure after which the message is safe (queued): nothing more to save.
    pub fn message_kept(mut self) -> Error {
        self.message_kept = true;
        self
    }

    pub fn is_message_kept(&self) -> bool {
        self.message_kept
    }

    /// The server asked to be tried again no earlier than `wait` from now.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Error {
        self.wait = wait.as_secs().min(u32::MAX.into()) as u32;
        self.wait_is_the_accounts = false;
        self
    }

    /// What `retry_after` recorded: the next try of a queued message waits at least this.
    pub fn wait_asked(&self) -> Option<std::time::Duration> {
        (self.wait > 0 && !self.wait_is_the_accounts)
            .then(|| std::time::Duration::from_secs(self.wait.into()))
    }

    /// Marks a failure that is the account's, not the message's (a provider's sending
    /// quota used up): every message of the account waits `hold`, not this one alone.
    pub fn holds_account(mut self, hold: std::time::Duration) -> Error {
        self.wait = hold.as_secs().clamp(1, u32::MAX.into()) as u32;
        self.wait_is_the_accounts = true;
        self
    }

    /// How long the account's queue waits after this failure, when it is the account's.
    pub fn account_hold(&self) -> Option<std::time::Duration> {
        self.wait_is_the_accounts
            .then(|| std::time::Duration::from_secs(self.wait.into()))
    }

    /// What happened and why, without the hints: one line for notices and logs.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.what, self.reason())
    }

    /// What kind of failure this is, for a caller that answers in another protocol than
    /// exit statuses: `sendmail -bs` picks its SMTP reply codes from it.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The server or the token endpoint refused the credentials: a fresh token may help.
    pub fn is_auth_refused(&self) -> bool {
        self.kind == Kind::AuthRefused
    }

    /// The sysexits.h status for this failure: the only mapping in the program.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Usage => 64,
            Kind::BadInput => 65,
            Kind::RecipientRefused => 67,
            Kind::Unavailable => 69,
            Kind::Internal => 70,
            Kind::CannotCreate => 73,
            Kind::Io => 74,
            Kind::Temporary => 75,
            Kind::Protocol => 76,
            Kind::AuthRefused => 77,
            Kind::Config | Kind::Certificate => 78,
            Kind::CheckWarning => 1,
            Kind::CheckCritical => 2,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary())?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  {hint}")?;
        }
        Ok(())
    }
}

/// The causes as they print, not their Debug form: a library's error may hold what it
/// failed to decode (keyring_core's BadEncoding holds the secret's bytes).
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("what", &self.what)
            .field("why", &self.reason())
            .field("hint", &self.hint)
            .field("message_kept", &self.message_kept)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_all_lists_every_kind_once() {
        for kind in Kind::ALL {
            // A kind added to the enum and not to ALL fails to compile this match.
            match kind {
                Kind::Usage
                | Kind::BadInput
                | Kind::RecipientRefused
                | Kind::Unavailable
                | Kind::Internal
                | Kind::CannotCreate
                | Kind::Io
                | Kind::Temporary
                | Kind::Protocol
                | Kind::AuthRefused
                | Kind::Config
                | Kind::Certificate
                | Kind::CheckWarning
                | Kind::CheckCritical => {}
            }
            assert_eq!(Kind::ALL.iter().filter(|k| **k == kind).count(), 1);
        }
    }

    #[test]
    fn exit_codes_follow_sysexits() {
        let code = |kind| Error::new(kind, "x", "y").exit_code();
        assert_eq!(code(Kind::Usage), 64);
        assert_eq!(code(Kind::RecipientRefused), 67);
        assert_eq!(code(Kind::Temporary), 75);
        assert_eq!(code(Kind::AuthRefused), 77);
        assert_eq!(code(Kind::Config), 78);
    }

    #[test]
    fn display_is_what_then_why_then_hint() {
        let e =
            Error::new(Kind::Config, "cannot read /etc/x", "permission denied").hint("run as root");
        assert_eq!(
            e.to_string(),
            "cannot read /etc/x: permission denied\n  run as root"
        );
    }

    #[test]
    fn kind_is_the_one_the_error_was_made_with() {
        assert_eq!(
            Error::new(Kind::BadInput, "a", "b").hint("c").kind(),
            Kind::BadInput
        );
        assert_eq!(
            Error::new(Kind::Temporary, "a", "b").kind(),
            Kind::Temporary
        );
    }

    #[test]
    fn within_keeps_kind_and_hint() {
        let e = Error::new(Kind::Temporary, "cannot reach x", "refused")
            .hint("later")
            .within("cannot refresh");
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "cannot refresh: cannot reach x: refused\n  later"
        );
    }

    /// An error with a cause of its own, as io::Error and rustls' errors have.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    fn layers(texts: &[&'static str]) -> Layer {
        let mut chain = None;
        for text in texts.iter().rev() {
            chain = Some(Layer(text, chain.map(Box::new)));
        }
        chain.unwrap()
    }

    #[test]
    fn the_cause_chain_is_printed_once_after_the_reason() {
        let e = Error::new(Kind::Temporary, "cannot send", "TLS failed")
            .caused_by(layers(&["handshake", "bad record"]))
            .hint("later");
        assert_eq!(
            e.to_string(),
            "cannot send: TLS failed: handshake: bad record\n  later"
        );
        assert_eq!(
            e.summary(),
            "cannot send: TLS failed: handshake: bad record"
        );
        // A cause whose text is already there is not said twice; nor are doc links.
        let e = Error::from_cause(
            Kind::Temporary,
            "cannot send",
            layers(&[
                "invalid peer certificate: BadEncoding",
                "BadEncoding",
                "x: https://docs.rs/x",
            ]),
        );
        assert_eq!(
            e.to_string(),
            "cannot send: invalid peer certificate: BadEncoding: x"
        );
        let e = Error::new(Kind::Config, "a", "b").caused_by(layers(&["b"]));
        assert_eq!(e.to_string(), "a: b");
    }

    #[test]
    fn the_cause_is_the_source_and_survives_within_and_clone() {
        use std::error::Error as _;
        let e = Error::from_cause(
            Kind::Temporary,
            "cannot reach x",
            layers(&["refused", "reset"]),
        )
        .within("cannot refresh")
        .clone();
        assert_eq!(
            e.to_string(),
            "cannot refresh: cannot reach x: refused: reset"
        );
        let source = e.source().expect("a source");
        assert_eq!(source.to_string(), "refused");
        assert_eq!(source.source().unwrap().to_string(), "reset");
        assert!(Error::new(Kind::Config, "a", "b").source().is_none());
        assert!(e.is_transient());
    }

    #[test]
    fn debug_shows_a_cause_as_it_prints_not_its_insides() {
        #[derive(Debug)]
        struct Undecodable(#[allow(dead_code)] Vec<u8>);
        impl fmt::Display for Undecodable {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("not UTF-8")
            }
        }
        impl std::error::Error for Undecodable {}
        let e = Error::from_cause(
            Kind::Internal,
            "cannot read",
            Undecodable(b"hunter2".to_vec()),
        );
        let debug = format!("{e:?}");
        assert!(debug.contains("not UTF-8"), "{debug}");
        assert!(!debug.contains("104"), "{debug}");
    }

    #[test]
    fn only_auth_refused_is_auth_refused() {
        assert!(Error::new(Kind::AuthRefused, "a", "b").is_auth_refused());
        assert!(!Error::new(Kind::Unavailable, "a", "b").is_auth_refused());
        assert!(!Error::new(Kind::Temporary, "a", "b").is_auth_refused());
    }

    #[test]
    fn only_temporary_failures_are_transient() {
        assert!(Error::new(Kind::Temporary, "a", "b").is_transient());
        assert!(!Error::new(Kind::AuthRefused, "a", "b").is_transient());
        assert!(Error::new(Kind::Unavailable, "a", "b").is_permanent());
        assert!(!Error::new(Kind::AuthRefused, "a", "b").is_permanent());
        assert!(!Error::new(Kind::Temporary, "a", "b").is_permanent());
        assert!(Error::new(Kind::AuthRefused, "a", "b").can_wait());
        assert!(Error::new(Kind::Temporary, "a", "b").can_wait());
        assert!(!Error::new(Kind::Config, "a", "b").can_wait());
        assert!(!Error::new(Kind::Unavailable, "a", "b").can_wait());
        assert!(Error::new(Kind::Certificate, "a", "b").can_wait());
        assert!(Error::new(Kind::Certificate, "a", "b").needs_a_person());
        assert!(!Error::new(Kind::Temporary, "a", "b").needs_a_person());
        assert_eq!(Error::new(Kind::Certificate, "a", "b").exit_code(), 78);
    }
}
