//! The one error type of the program, and the one place that maps it to a sysexits.h code.
//!
//! Every failure carries a `Kind` chosen where it happened; `main` turns it into the exit
//! status through [`Error::exit_code`] and nowhere else. Callers ask predicates
//! (`is_transient`) instead of matching message text.

use std::fmt;

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
}

/// A failure: what happened, why, and (when there is one) what to do next.
#[derive(Clone, Debug)]
pub struct Error {
    kind: Kind,
    what: String,
    why: String,
    hint: Option<String>,
    message_kept: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, what: impl Into<String>, why: impl fmt::Display) -> Error {
        Error {
            kind,
            what: what.into(),
            why: why.to_string(),
            hint: None,
            message_kept: false,
        }
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

    /// The same failure as the reason for a larger one: "what: (old what: old why)".
    pub fn within(self, what: impl Into<String>) -> Error {
        Error {
            kind: self.kind,
            why: format!("{}: {}", self.what, self.why),
            what: what.into(),
            hint: self.hint,
            message_kept: self.message_kept,
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

    /// What happened and why, without the hints: one line for notices and logs.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.what, self.why)
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
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

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
