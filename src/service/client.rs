//! `sendmail` and the commands in system mode: the message or the command goes to the
//! service over its socket, and the caller exits as the service says. When no service
//! answers, a message is left in the drop directory instead. Never needs a home, never
//! reads a token.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::auth::login::LoginOptions;
use crate::delivery::request::Invocation;
use crate::delivery::request::SessionOptions;
use crate::error::{Error, Kind, Result};
use crate::message::address::Resolver;
use crate::message::input::{self, Raw};
use crate::service::protocol::{self, Request, Response, Submission};
use crate::service::{dropdir, Paths};
use crate::sys::{self, users};

/// How long a client waits for the service's answer (a spool write is milliseconds; a
/// `status --check` logs in to every account).
const ANSWER_WITHIN: Duration = Duration::from_secs(300);

fn not_running(socket: &Path, e: io::Error) -> Error {
    Error::new(
        Kind::Temporary,
        format!("cannot reach the mail service at {}", socket.display()),
        e,
    )
    .hint("start it: systemctl start oauth-sendmail")
}

/// Sends a command and prints what the service answers.
pub fn command(request: &Request) -> Result<()> {
    let socket = Paths::system().socket();
    let stream = UnixStream::connect(&socket).map_err(|e| not_running(&socket, e))?;
    match exchange(&stream, request, Raw::from(&b""[..]))? {
        Response::Output {
            stdout,
            stderr,
            failure,
            stdout_bytes,
        } => {
            eprint!("{stderr}");
            io::stdout()
                .lock()
                .write_all(&protocol::output_bytes(&stdout, stdout_bytes.as_deref()))
                .map_err(|e| Error::new(Kind::Io, "cannot write to stdout", e))?;
            match failure {
                Some(failure) => Err(failure.to_error()),
                None => Ok(()),
            }
        }
        Response::Failed(failure) | Response::Busy(failure) => Err(failure.to_error()),
        Response::Accepted { .. } => Err(strange()),
    }
}

fn strange() -> Error {
    Error::new(
        Kind::Protocol,
        "the mail service answered something else",
        "a reply that does not fit the request",
    )
}

/// One request on a connection; the answer. An answer that came although our writing
/// failed (the service refused early) is still the answer.
fn exchange(stream: &UnixStream, request: &Request, message: Raw) -> Result<Response> {
    let _ = stream.set_read_timeout(Some(ANSWER_WITHIN));
    let sent = write_submission(&mut &*stream, request, message);
    let answer = protocol::read_response(&mut BufReader::new(stream));
    match (answer, sent) {
        (Ok(response), _) => Ok(response),
        (Err(_), Err(e)) => Err(Error::new(
            Kind::Temporary,
            "cannot hand the message to the mail service",
            e,
        )),
        (Err(err), Ok(())) => Err(err),
    }
}

/// The request line, then the message a chunk at a time (from its spill file past the
/// threshold): the framing `protocol::read_request` reads.
pub fn write_submission(out: &mut impl Write, request: &Request, message: Raw) -> io::Result<()> {
    protocol::write_request(out, request, message.memory())?;
    if let Some(spill) = message.spill() {
        spill.body().each_chunk(&mut |chunk| out.write_all(chunk))?;
        out.flush()?;
    }
    Ok(())
}

/// `sendmail` in system mode: reads the message, hands it over, exits as the service says.
/// A large body is spilled beside the drop directory (its file system, not a tmpfs).
pub fn submit(invocation: &Invocation) -> Result<()> {
    let maildrop = Paths::system().maildrop();
    let input = input::read_stdin(invocation.ignore_dots, &mut input::spill_beside(&maildrop))?;
    let raw = input.raw();
    sys::signals::defer_stop();
    match hand_over(invocation, raw) {
        Ok(notice) => {
            if let Some(notice) = notice {
                eprintln!("oauth-sendmail: {notice}");
            }
            Ok(())
        }
        Err(err) => Err(keep(err, raw, invocation)),
    }
}

/// The message was refused or could not be handed over: dead.letter, as in user mode.
fn keep(err: Error, raw: Raw, invocation: &Invocation) -> Error {
    let sender = invocation.sender.as_deref().unwrap_or("");
    match crate::delivery::dead_letter::save(raw, sender, &invocation.recipients) {
        Ok(Some(path)) => err.hint(format!("the message was saved to {}", path.display())),
        Ok(None) => err,
        Err(save) => err.hint(format!("the message was not kept: {}", save.summary())),
    }
}

/// `sendmail -bs` in system mode: each transaction goes to the service, which resolves
/// its recipients (so no aliases here, and unqualified names stay as the caller gave them).
pub fn serve_session(options: &SessionOptions) -> Result<()> {
    let aliases = Default::default();
    let resolver = Resolver::new(&aliases, Some("localhost"));
    let mut settings = crate::delivery::session::settings();
    // A large message's body beside the drop directory, as a piped-in one's.
    let maildrop = Paths::system().maildrop();
    settings.spill = Box::new(move || input::spill_beside(&maildrop)());
    crate::delivery::session::serve_with(options, &settings, &resolver, |invocation, data| {
        hand_over(invocation, data).map(|_| ())
    })
}

/// Hands one message to the service (the drop directory when no service answers): what
/// `sendmail` and each message of `sendmail -bs` do in system mode. `Ok` once the
/// message is durably spooled (or dropped), with a notice for the caller if any.
pub fn hand_over<'m>(invocation: &Invocation, raw: impl Into<Raw<'m>>) -> Result<Option<String>> {
    let raw = raw.into();
    let paths = Paths::system();
    let request = Request::Submit(Submission {
        sender: invocation.sender.clone(),
        recipients: invocation.recipients.clone(),
        extract_recipients: invocation.extract_recipients,
        full_name: invocation.full_name.clone(),
        account: invocation.account.clone(),
        size: raw.len(),
    });
    // The drop directory, which the service empties on its own, when it cannot take the
    // message now.
    let leave = |why: &str| {
        let dir = paths.maildrop();
        dropdir::leave(&dir, &request, raw)?;
        Ok(Some(format!(
            "{why}; the message waits for it in {}",
            dir.display()
        )))
    };
    let socket = paths.socket();
    let stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return leave("the mail service is not running");
        }
        Err(e) => return Err(not_running(&socket, e)),
    };
    match exchange(&stream, &request, raw)? {
        Response::Accepted { notice, .. } => Ok(notice),
        Response::Failed(failure) => Err(failure.to_error()),
        Response::Busy(failure) => {
            leave(&format!("the mail service is busy ({})", failure.summary))
        }
        Response::Output { .. } => Err(strange()),
    }
}

/// The service's configuration and state, for root only: `login` and `logout` in system
/// mode act on the service's tokens. A keyring is per login session, so the file store.
fn as_the_service(
    what: &str,
    command: &str,
) -> Result<(Paths, crate::config::Config, users::User)> {
    if users::effective_uid() != 0 {
        return Err(Error::new(
            Kind::AuthRefused,
            format!("cannot {what}"),
            "its tokens are the service's: only root may change them",
        )
        .hint(format!("run it as root: sudo oauth-sendmail {command}")));
    }
    let paths = Paths::system();
    std::env::set_var("XDG_STATE_HOME", paths.state_home());
    std::env::remove_var("DBUS_SESSION_BUS_ADDRESS");
    std::env::remove_var("XDG_RUNTIME_DIR");
    let config = crate::config::Config::load(Some(&paths.config()))?;
    let user = users::by_name(&config.service.user).ok_or_else(|| {
        Error::new(
            Kind::Config,
            format!("no user `{}` to give the tokens to", config.service.user),
            "the service runs as that user",
        )
    })?;
    Ok((paths, config, user))
}

/// `login` in system mode: root logs the service's account in with the service's
/// configuration; the refresh token goes to the service's state directory, and the
/// files are given to the service's user.
pub fn login(account: Option<&str>, how: &LoginOptions) -> Result<()> {
    let (paths, config, user) = as_the_service("log the mail service in", "login")?;
    let account = config.choose_account(account, None)?;
    let logged_in = crate::auth::login::login(account, how);
    give_away(&paths.state(), &user)?;
    logged_in?;
    crate::delivery::hold::Holds::of_queue(&paths.queue()).clear(&account.name);
    // Mail that waited for the login goes now, if the service runs.
    if let Ok(stream) = UnixStream::connect(paths.socket()) {
        let _ = exchange(
            &stream,
            &Request::Flush {
                all: true,
                ids: Vec::new(),
            },
            Raw::from(&b""[..]),
        );
    }
    Ok(())
}

/// `logout` in system mode: forgets the service's tokens of an account.
pub fn logout(account: Option<&str>) -> Result<()> {
    let (_, config, _) = as_the_service("log the mail service out", "logout")?;
    let account = config.choose_account(account, None)?;
    crate::commands::logout(account)
}

/// chown -R of the service's state directory (what root just wrote in it).
fn give_away(dir: &Path, user: &users::User) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    users::chown(dir, user.uid, user.gid)?;
    let listing = std::fs::read_dir(dir)
        .map_err(|e| Error::new(Kind::Io, format!("cannot read {}", dir.display()), e))?;
    for entry in listing.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => give_away(&path, user)?,
            Ok(kind) if kind.is_file() => users::chown(&path, user.uid, user.gid)?,
            _ => {}
        }
    }
    Ok(())
}
