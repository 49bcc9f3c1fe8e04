//! `oauth-sendmail daemon`: the machine-wide service. One process: it binds the socket
//! (or takes it from systemd), drops from root to its own user, takes submissions (the
//! submitter from SO_PEERCRED) and drop files, spools them fsync'd before it answers, and
//! delivers the queue itself with the existing flush machinery (backoff, bounces,
//! expiry). Bounded: connections, per-connection deadlines, message size. SIGTERM
//! finishes the work in flight; SIGHUP re-reads the configuration.

use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder};
use std::io::{self, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
#[cfg(test)]
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use mail_builder::headers::date::Date;

use crate::commands::queue::{render_entry, render_listing};
use crate::config::Config;
use crate::delivery::flush::{Flusher, Selection};
use crate::delivery::hold::Holds;
use crate::delivery::log::{DeliveryLog, Outcome, Record, Status};
use crate::delivery::queue::{Queue, QueueEntry as Entry};
use crate::delivery::request::Invocation;
use crate::error::{Error, Kind, Result};
use crate::message::input::{self, Raw};
use crate::service::dropdir::{self, Taken};
use crate::service::policy::{self, Admission, RateLimiter, Submitter};
use crate::service::protocol::{self, Failure, Request, Response, Submission};
use crate::service::{Mode, Paths};
use crate::sys::{self, users};

/// More connections than this wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// One user (root aside) holding this many at once gets a temporary refusal for more,
/// so that a stuck or hostile client cannot take every slot.
const MAX_PER_USER: usize = 16;
/// For the request line, and the base for the message.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// The message gets a second more per this many bytes.
const BYTES_PER_SECOND: u64 = 256 * 1024;
const PICKUP_EVERY: Duration = Duration::from_secs(3);
/// How long a stop waits for connections and the delivery in flight.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A server found down is probed this often while mail waits for it.
const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The delivery thread looks at the queue at least this often.
const IDLE_WAKE: Duration = Duration::from_secs(60);

/// Connections hold at most this many bytes of messages at once (a message's header and
/// the start of its body; the rest is spilled to a file as it is read, see
/// [`input::HELD_AT_MOST`]); a submission that would go over waits within its deadline.
const MESSAGE_BYTES: u64 = 256 * 1024 * 1024;

/// The delivery log's note on a message the service accepted; `log` filters on it.
const SUBMITTED_BY: &str = "submitted by uid ";

#[derive(Default)]
struct Wake {
    pending: bool,
    all: bool,
}

struct Shared {
    paths: Paths,
    host: String,
    config: RwLock<Arc<Config>>,
    queue: Queue,
    limiter: Mutex<RateLimiter>,
    wake: (Mutex<Wake>, Condvar),
    active: AtomicUsize,
    per_user: Mutex<HashMap<u32, usize>>,
    /// Drop files left for later, already logged.
    drops_waiting: Mutex<HashSet<String>>,
    /// Bytes of messages held in memory by connections now; see [`MESSAGE_BYTES`].
    in_memory: (Mutex<u64>, Condvar),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wakes the delivery thread; `all`: every message, not only those due.
    fn wake(&self, all: bool) {
        let (state, signal) = &self.wake;
        let mut wake = lock(state);
        wake.pending = true;
        wake.all |= all;
        signal.notify_all();
    }
}

/// The service's configuration: its file, its queue.
fn load(paths: &Paths) -> Result<Config> {
    let mut config = Config::load(Some(&paths.config()))?;
    config.queue.dir = paths.queue();
    Ok(config)
}

pub fn run() -> Result<()> {
    let paths = Paths::system();
    // Before anything reads the state directory: the token cache, the file store and the
    // delivery log are the service's, and dead.letter goes there too.
    std::env::set_var("XDG_STATE_HOME", paths.state_home());
    std::env::set_var("HOME", paths.state());
    std::env::remove_var("OAUTH_SENDMAIL_CONFIG");
    let config = load(&paths)?;
    let root = users::effective_uid() == 0;
    let user = match root {
        true => Some(users::by_name(&config.service.user).ok_or_else(|| {
            Error::new(
                Kind::Config,
                format!("no user `{}` to run the service as", config.service.user),
                "root does not run it itself",
            )
            .hint("useradd --system --no-create-home --home-dir /nonexistent oauth-sendmail, or set user in [service]")
        })?),
        false => None,
    };
    prepare_dirs(&paths, user.as_ref())?;
    let inherited = sys::peer::listeners_from_systemd();
    let (listener, bound) = match inherited.unix {
        Some(listener) => (listener, false),
        None => (bind(&paths, user.as_ref())?, true),
    };
    // Relay hook (issue 13): privileged ports are bound before the drop to the user,
    // unless systemd holds them (a .socket unit with the same addresses).
    let relay = crate::relay::bind(&config, inherited.tcp)?;
    if let Some(user) = &user {
        users::become_user(user)?;
    }
    let queue = Queue::open(&paths.queue())?;
    sys::signals::defer_stop();
    sys::reload::hangup_reloads();
    let shared = Arc::new(Shared {
        host: crate::smtp::client::default_hello_name(),
        config: RwLock::new(Arc::new(config)),
        queue,
        limiter: Mutex::new(RateLimiter::default()),
        wake: (Mutex::new(Wake::default()), Condvar::new()),
        active: AtomicUsize::new(0),
        per_user: Mutex::default(),
        drops_waiting: Mutex::default(),
        in_memory: (Mutex::new(0), Condvar::new()),
        paths,
    });
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::new(Kind::Io, "cannot use the socket", e))?;
    pick_up(&shared);
    let (waker, paths) = (shared.clone(), &shared.paths);
    let relay = crate::relay::start(
        relay,
        crate::relay::Hooks {
            config_file: paths.config(),
            queue_dir: paths.queue(),
            state_dir: paths.state(),
            wake: Box::new(move || waker.wake(false)),
            enforce_from: |head, allowed, by| policy::enforce_from(head, allowed, by),
        },
    )?;
    let delivery = {
        let shared = shared.clone();
        thread::Builder::new()
            .name("delivery".into())
            .spawn(move || deliver(&shared))
            .map_err(|e| Error::new(Kind::Internal, "cannot start the delivery thread", e))?
    };
    sys::peer::notify("READY=1");
    eprintln!(
        "oauth-sendmail: service ready on {} as uid {} (pid {})",
        shared.paths.socket().display(),
        users::effective_uid(),
        std::process::id()
    );
    let mut next_pickup = Instant::now() + PICKUP_EVERY;
    let stopped_by = loop {
        if let Some(signal) = sys::signals::stop_requested() {
            break signal;
        }
        if sys::reload::reload_requested() {
            reload(&shared);
        }
        if Instant::now() >= next_pickup {
            pick_up(&shared);
            next_pickup = Instant::now() + PICKUP_EVERY;
        }
        if shared.active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        if !sys::peer::wait_readable(listener.as_raw_fd(), Duration::from_millis(500)) {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => take(&shared, stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                eprintln!("oauth-sendmail: accepting a connection: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    };
    sys::peer::notify("STOPPING=1");
    eprintln!("oauth-sendmail: stopping ({stopped_by}): finishing the work in flight");
    // Clients that come now leave their mail in the drop directory.
    if bound {
        let _ = fs::remove_file(shared.paths.socket());
    }
    drop(listener);
    let until = Instant::now() + STOP_GRACE;
    // Local submissions and devices' sessions alike: what was accepted gets its answer.
    while (shared.active.load(Ordering::SeqCst) > 0 || relay.in_flight() > 0)
        && Instant::now() < until
    {
        thread::sleep(Duration::from_millis(20));
    }
    shared.wake(false);
    while !delivery.is_finished() && Instant::now() < until + STOP_GRACE {
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("oauth-sendmail: stopped");
    Ok(())
}

/// Starts a thread for one connection, within the caps.
fn take(shared: &Arc<Shared>, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(REQUEST_DEADLINE));
    let peer = match sys::peer::credentials(&stream) {
        Ok(peer) => peer,
        Err(e) => {
            eprintln!("oauth-sendmail: a connection without credentials: {e}");
            return;
        }
    };
    {
        let mut per_user = lock(&shared.per_user);
        let held = per_user.entry(peer.uid).or_default();
        if *held >= MAX_PER_USER && peer.uid != 0 {
            drop(per_user);
            let err = Error::new(
                Kind::Temporary,
                format!("too many connections from uid {} at once", peer.uid),
                format!("the service serves at most {MAX_PER_USER} per user"),
            );
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ =
                protocol::write_response(&mut &stream, &Response::Busy(Failure::from_error(&err)));
            return;
        }
        *held += 1;
    }
    shared.active.fetch_add(1, Ordering::SeqCst);
    let started = {
        let shared = shared.clone();
        thread::Builder::new().spawn(move || {
            serve(&shared, stream, peer);
            shared.active.fetch_sub(1, Ordering::SeqCst);
            let mut per_user = lock(&shared.per_user);
            if let Some(held) = per_user.get_mut(&peer.uid) {
                *held -= 1;
                if *held == 0 {
                    per_user.remove(&peer.uid);
                }
            }
        })
    };
    if let Err(e) = started {
        // The closure (and with it the stream) is gone: undo the counts.
        shared.active.fetch_sub(1, Ordering::SeqCst);
        if let Some(held) = lock(&shared.per_user).get_mut(&peer.uid) {
            *held = held.saturating_sub(1);
        }
        eprintln!("oauth-sendmail: cannot take a connection: {e}");
    }
}

/// The directories the service owns, made (or corrected) with their modes; given to
/// the service's user when root starts it.
fn prepare_dirs(paths: &Paths, user: Option<&users::User>) -> Result<()> {
    let dirs = [
        (paths.state(), 0o700),
        (paths.spool(), 0o755),
        (paths.queue(), 0o700),
        (paths.maildrop(), 0o1733),
        (paths.quarantine(), 0o700),
        (paths.run_dir(), 0o755),
    ];
    for (dir, mode) in dirs {
        let failed = |e: io::Error| {
            Error::new(
                Kind::CannotCreate,
                format!("cannot prepare {}", dir.display()),
                e,
            )
        };
        DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&dir)
            .map_err(failed)?;
        if let Some(user) = user {
            users::chown(&dir, user.uid, user.gid)?;
        }
        // Run by systemd as its user, a directory made for it by someone else (the
        // socket's, under ProtectSystem=strict) is left as it is.
        let ours = fs::metadata(&dir).is_ok_and(|m| m.uid() == users::effective_uid());
        if user.is_some() || ours {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(failed)?;
        }
    }
    Ok(())
}

/// Binds the socket (0666: any local user may submit), unless a service answers there.
fn bind(paths: &Paths, user: Option<&users::User>) -> Result<UnixListener> {
    let path = paths.socket();
    if UnixStream::connect(&path).is_ok() {
        return Err(Error::new(
            Kind::Temporary,
            format!("cannot listen on {}", path.display()),
            "another service answers there",
        ));
    }
    let failed = |e: io::Error| {
        Error::new(
            Kind::CannotCreate,
            format!("cannot listen on {}", path.display()),
            e,
        )
    };
    let _ = fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(failed)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).map_err(failed)?;
    if let Some(user) = user {
        users::chown(&path, user.uid, user.gid)?;
    }
    Ok(listener)
}

/// SIGHUP: the new configuration replaces the old only if it loads.
fn reload(shared: &Shared) {
    sys::peer::notify("RELOADING=1");
    match load(&shared.paths) {
        Ok(config) => {
            *shared.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
            eprintln!("oauth-sendmail: configuration reloaded");
        }
        Err(err) => eprintln!(
            "oauth-sendmail: the new configuration is refused, the old one kept: {}",
            err.summary()
        ),
    }
    sys::peer::notify("READY=1");
    shared.wake(false);
}

/// Drop files: each one's owner is its submitter.
fn pick_up(shared: &Shared) {
    let config = shared.config();
    let max = config.service.max_message_size;
    let paths = &shared.paths;
    let mut waiting = lock(&shared.drops_waiting);
    dropdir::pick_up(
        &paths.maildrop(),
        &paths.quarantine(),
        &paths.queue(),
        max,
        &mut waiting,
        |dropped| {
            let Request::Submit(submission) = &dropped.request else {
                return Taken::Refused(Error::new(Kind::Protocol, "not a submission", "dropped"));
            };
            let submitter = Submitter::from_ids(dropped.owner, dropped.owner_gid);
            match accept(
                shared,
                &config,
                &submitter,
                submission,
                dropped.message.raw(),
            ) {
                Ok(_) => Taken::Done,
                Err(err) if err.is_transient() || err.kind() == Kind::CannotCreate => {
                    Taken::Later(err)
                }
                Err(err) => Taken::Refused(err),
            }
        },
    );
}

/// Reads through a deadline: each read may take what is left of it.
struct Deadline<'a> {
    stream: &'a UnixStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "too slow"));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

fn serve(shared: &Shared, stream: UnixStream, peer: sys::peer::Peer) {
    let submitter = Submitter::from_ids(peer.uid, peer.gid);
    let config = shared.config();
    let mut input = BufReader::new(Deadline {
        stream: &stream,
        until: Instant::now() + REQUEST_DEADLINE,
    });
    let response = match protocol::read_head(&mut input) {
        Err(err) => failed(&err),
        Ok(Request::Submit(submission)) => {
            let extra = Duration::from_secs(submission.size / BYTES_PER_SECOND);
            input.get_mut().until = Instant::now() + REQUEST_DEADLINE + extra;
            let max = config.service.max_message_size;
            let until = input.get_ref().until;
            // Memory only for what a message holds in it: a large body is spilled into
            // the queue directory as it is read.
            let in_memory = submission.size.min(max).min(input::HELD_AT_MOST);
            let queue = shared.paths.queue();
            match reserve(shared, in_memory, until) {
                Err(busy) => Response::Busy(Failure::from_error(&busy)),
                Ok(_held) => {
                    let mut new_file = input::spill_in_queue(&queue);
                    // Many submitters at once: a body the disk has no room for is refused
                    // (busy: the client leaves it in the drop directory), not held.
                    let no_room = input::NoRoom::Refuse;
                    let read =
                        protocol::read_body(&mut input, &submission, max, &mut new_file, no_room);
                    match read {
                        Err(err) if err.kind() == Kind::Temporary => {
                            Response::Busy(Failure::from_error(&err))
                        }
                        Err(err) => failed(&err),
                        Ok(message) => {
                            match accept(shared, &config, &submitter, &submission, message.raw()) {
                                Ok((id, notice)) => Response::Accepted { id, notice },
                                Err(err) => failed(&err),
                            }
                        }
                    }
                }
            }
        }
        Ok(request) => control(shared, &config, &submitter, request),
    };
    if let Err(e) = protocol::write_response(&mut &stream, &response) {
        eprintln!(
            "oauth-sendmail: cannot answer {} (pid {}): {e}",
            submitter.describe(),
            peer.pid
        );
    }
}

/// Memory for a message of `size` bytes, given back when dropped.
struct Reserved<'a> {
    shared: &'a Shared,
    size: u64,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let (bytes, freed) = &self.shared.in_memory;
        *lock(bytes) -= self.size;
        freed.notify_all();
    }
}

/// Waits (until `until`) for room for `size` more bytes of messages in memory.
fn reserve(shared: &Shared, size: u64, until: Instant) -> Result<Reserved<'_>> {
    let (bytes, freed) = &shared.in_memory;
    let mut held = lock(bytes);
    while *held + size > MESSAGE_BYTES && *held > 0 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::new(
                Kind::Temporary,
                "the mail service is busy",
                "too many large messages arrive at once",
            ));
        }
        held = freed
            .wait_timeout(held, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    *held += size;
    Ok(Reserved { shared, size })
}

fn failed(err: &Error) -> Response {
    Response::Failed(Failure::from_error(err))
}

/// Intake with the service's configuration and policy, then the spool (fsync'd), then
/// the delivery thread is woken. Returns the queue id and a notice for the caller.
fn accept(
    shared: &Shared,
    config: &Config,
    submitter: &Submitter,
    submission: &Submission,
    raw: Raw,
) -> Result<(String, Option<String>)> {
    let started = Instant::now();
    let settings = &config.service;
    let name = policy::display_name(submitter, &shared.host);
    let invocation = Invocation {
        sender: submission.sender.clone(),
        recipients: submission.recipients.clone(),
        extract_recipients: submission.extract_recipients,
        full_name: submission.full_name.clone().or_else(|| Some(name.clone())),
        account: submission.account.clone(),
        ignore_dots: true,
        alone: true,
        ..Invocation::default()
    };
    let (account, mut prepared) = crate::delivery::send::prepare(config, &invocation, raw)?;
    let refuse = |err: Error| {
        eprintln!("oauth-sendmail: refused: {}", err.summary());
        let summary = err.summary();
        let note = format!("refused: {SUBMITTED_BY}{}", submitter.describe_tail());
        let outcome = (Status::Failed, Some(summary.as_str()));
        log_submission(config, None, account, &prepared, outcome, note, started);
        Err(err)
    };
    let default_account = config
        .choose_account(None, None)
        .ok()
        .map(|a| a.name.as_str());
    if !policy::may_use_account(settings, default_account, submitter, &account.name) {
        return refuse(
            Error::new(
                Kind::AuthRefused,
                format!(
                    "{} may not send through account `{}`",
                    submitter.describe(),
                    account.name
                ),
                "the service's [service.accounts] does not allow it",
            )
            .hint("leave out --account and -f, or ask the administrator to allow it"),
        );
    }
    let allowed = |address: &str| policy::may_send_as(settings, account, submitter, address);
    if submission.sender.is_some() && !allowed(&prepared.envelope.sender) {
        return refuse(
            Error::new(
                Kind::AuthRefused,
                format!(
                    "{} may not send as <{}>",
                    submitter.describe(),
                    prepared.envelope.sender
                ),
                "the service's [service.senders] does not allow that address",
            )
            .hint(format!(
                "leave out -f (the mail goes out as {} with your name), or ask the administrator to allow it",
                account.address()
            )),
        );
    }
    let replacement = format!("\"{name}\" <{}>", account.address());
    if policy::enforce_from(&mut prepared.head, allowed, &replacement) {
        eprintln!(
            "oauth-sendmail: From of {} replaced: an address it may not use",
            submitter.describe()
        );
    }
    let now = sys::clock::now();
    let admission = lock(&shared.limiter).admit(submitter.uid, now, settings.rate_limit);
    if let Admission::Refused { reset } = admission {
        return Err(Error::new(
            Kind::Temporary,
            format!("too much mail from {}", submitter.describe()),
            format!(
                "far over the rate limit; the window resets at {}",
                sys::clock::readable(reset)
            ),
        ));
    }
    let recipients = prepared.envelope.recipients.clone();
    let mut entry = Entry::new(&account.name, &prepared, &recipients);
    entry.uid = Some(submitter.uid);
    entry.user = Some(submitter.name.clone());
    let trace = format!(
        "Received: from {} by {} (oauth-sendmail) with local id {};\r\n\t{}\r\n",
        submitter.describe(),
        shared.host,
        entry.id,
        Date::now().to_rfc822()
    );
    prepared.head.splice(0..0, trace.into_bytes());
    entry.size = prepared.len() as u64;
    let mut note = format!("{SUBMITTED_BY}{}", submitter.describe_tail());
    let mut notice = None;
    if let Admission::Held { until, first } = admission {
        entry.next_try = until;
        let held = format!(
            "held by the rate limit until {}",
            sys::clock::readable(until)
        );
        if first {
            eprintln!("oauth-sendmail: mail of {} {held}", submitter.describe());
        }
        note = format!("{note}; {held}");
        notice = Some(format!("queued as {}: {held}", entry.id));
    }
    shared.queue.add(&entry, &prepared)?;
    let outcome = (Status::Queued, None);
    log_submission(
        config,
        Some(&entry.id),
        account,
        &prepared,
        outcome,
        note,
        started,
    );
    eprintln!(
        "oauth-sendmail: {} from {} for {} recipient(s)",
        entry.id,
        submitter.describe(),
        recipients.len()
    );
    shared.wake(false);
    Ok((entry.id, notice))
}

/// The delivery log's record of a submission: every recipient `outcome`, the submitter
/// in its note.
fn log_submission(
    config: &Config,
    id: Option<&str>,
    account: &crate::config::Account,
    prepared: &crate::message::envelope::Prepared,
    (status, reply): (Status, Option<&str>),
    note: String,
    started: Instant,
) {
    let recipients = prepared
        .envelope
        .recipients
        .iter()
        .map(|address| Outcome {
            address: address.clone(),
            status,
            reply: reply.map(str::to_string),
        })
        .collect();
    let mut record = Record::new(
        id.map(str::to_string),
        prepared.message_id.clone(),
        &account.name,
        &prepared.envelope.sender,
        recipients,
        prepared.len() as u64,
        started,
    );
    record.note = Some(note);
    if let Err(err) = DeliveryLog::new(&config.queue.log_file).append(&record) {
        eprintln!("oauth-sendmail: warning: {}", err.summary());
    }
}

/// The uid a delivery log record was submitted by, if the service wrote it.
fn submitted_by(record: &Record) -> Option<u32> {
    let note = record.note.as_deref()?;
    let rest = &note[note.find(SUBMITTED_BY)? + SUBMITTED_BY.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The delivery thread: the due part of the queue (all of it after `sendmail -q`), then
/// sleep until the next message is due or a submission comes.
fn deliver(shared: &Shared) {
    let mut kept_alive: HashMap<String, Instant> = HashMap::new();
    let mut probes = Probes::default();
    loop {
        let all = {
            let mut wake = lock(&shared.wake.0);
            wake.pending = false;
            std::mem::take(&mut wake.all)
        };
        if sys::signals::stop_requested().is_some() {
            return;
        }
        let config = shared.config();
        let selection = match all {
            true => Selection::All,
            false => Selection::Due,
        };
        flush(shared, &config, selection);
        keep_alive(&config, &mut kept_alive);
        let now = sys::clock::now();
        // A held account's messages are due when its hold ends.
        let holds = Holds::of_queue(&config.queue.dir).all();
        let held = |e: &Entry| {
            holds
                .iter()
                .find(|h| h.account == e.account && h.is_active(now))
        };
        let due = |e: &Entry| held(e).map_or(e.next_try, |h| e.next_try.max(h.until));
        let entries = shared.queue.scan().map(|(e, _)| e).unwrap_or_default();
        let waiting: Vec<&Entry> = entries.iter().filter(|e| held(e).is_none()).collect();
        let back = probes.run(&config, &waiting, now);
        if !back.is_empty() {
            flush(shared, &config, Selection::Ids(back));
            continue;
        }
        let next = entries.iter().map(due).min();
        let mut idle = IDLE_WAKE.min(config.service.keep_alive);
        if !probes.down.is_empty() {
            idle = idle.min(PROBE_EVERY);
        }
        let wait = next.map_or(idle, |at| {
            Duration::from_secs(at.saturating_sub(now)).clamp(Duration::from_secs(1), idle)
        });
        let until = Instant::now() + wait;
        let (state, signal) = &shared.wake;
        let mut wake = lock(state);
        while !wake.pending && sys::signals::stop_requested().is_none() && Instant::now() < until {
            let step = until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250));
            wake = signal
                .wait_timeout(wake, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// One run of the flush machinery, its outcome in the journal.
fn flush(shared: &Shared, config: &Config, selection: Selection) {
    match Flusher::new(config, &shared.queue, false, None).run(selection, None) {
        Ok(report) if report.delivered + report.deferred + report.bounced > 0 => eprintln!(
            "oauth-sendmail: delivered {}, deferred {}, bounced {}",
            report.delivered, report.deferred, report.bounced
        ),
        Ok(_) => {}
        Err(err) => eprintln!(
            "oauth-sendmail: warning: delivering the queue: {}",
            err.summary()
        ),
    }
}

/// Mail waiting for its retry time is not left waiting once its server is back: the
/// server of each account with such mail is probed (a TCP connection, nothing said) every
/// [`PROBE_EVERY`]; one found unreachable and then reachable again gets its mail tried at
/// once. Only that change of state retries, so a server that answers but defers is not
/// hammered.
#[derive(Default)]
struct Probes {
    /// Accounts whose server did not answer the last probe.
    down: HashSet<String>,
    last: Option<Instant>,
}

impl Probes {
    /// The messages to try now: those of accounts whose server is back.
    fn run(&mut self, config: &Config, waiting: &[&Entry], now: u64) -> Vec<String> {
        let accounts: HashSet<&str> = waiting
            .iter()
            .filter(|e| !e.is_due(now))
            .map(|e| e.account.as_str())
            .collect();
        self.down.retain(|name| accounts.contains(name.as_str()));
        if accounts.is_empty() || self.last.is_some_and(|at| at.elapsed() < PROBE_EVERY) {
            return Vec::new();
        }
        self.last = Some(Instant::now());
        let mut back = Vec::new();
        for name in accounts {
            let Some(account) = config.accounts.get(name) else {
                continue;
            };
            let answers =
                std::net::ToSocketAddrs::to_socket_addrs(&(account.host.as_str(), account.port))
                    .ok()
                    .and_then(|mut addresses| addresses.next())
                    .is_some_and(|address| {
                        std::net::TcpStream::connect_timeout(&address, PROBE_TIMEOUT).is_ok()
                    });
            match answers {
                false => {
                    self.down.insert(name.to_string());
                }
                true if self.down.remove(name) => back.push(name.to_string()),
                true => {}
            }
        }
        waiting
            .iter()
            .filter(|e| back.contains(&e.account))
            .map(|e| e.id.clone())
            .collect()
    }
}

/// Uses each Microsoft login's refresh token once it has been idle for `keep_alive`, so
/// that it does not expire unused (90 days); an account held is left alone, and each is
/// tried at most once an hour (or `keep_alive`) whatever the outcome.
fn keep_alive(config: &Config, tried: &mut HashMap<String, Instant>) {
    let every = config.service.keep_alive;
    let holds = Holds::of_queue(&config.queue.dir);
    let now = sys::clock::now();
    for account in config.accounts.values() {
        let recent = tried
            .get(&account.name)
            .is_some_and(|at| at.elapsed() < every.min(Duration::from_secs(3600)));
        if recent || holds.active(&account.name, now).is_some() {
            continue;
        }
        match crate::auth::token::keep_alive(account, every) {
            Ok(false) => continue,
            Ok(true) => eprintln!(
                "oauth-sendmail: account `{}`: refresh token used to keep the login alive",
                account.name
            ),
            Err(err) => {
                let quota = config.queue.quota_hold;
                if holds.after_failure(&account.name, &err, quota).is_none() {
                    eprintln!(
                        "oauth-sendmail: warning: keeping account `{}` logged in: {}",
                        account.name,
                        err.summary()
                    );
                }
            }
        }
        tried.insert(account.name.clone(), Instant::now());
    }
}

/// The commands in system mode: the output they print, limited to the caller's own mail
/// unless the caller is root or in the admin group.
fn control(shared: &Shared, config: &Config, who: &Submitter, request: Request) -> Response {
    let admin = who.is_admin(&config.service);
    let mut out = Vec::new();
    let mut err = String::new();
    let result = match request {
        Request::Submit(_) => Ok(()),
        Request::List => list(shared, who, admin, &mut out),
        Request::Show { id } => show(shared, who, admin, &id, &mut out),
        Request::Remove { ids, all } => remove(shared, who, admin, ids, all, &mut out),
        Request::Flush { all, ids } => {
            // Everything now, whatever the backoff: for those who manage the queue only,
            // or a user could hammer the provider in a loop.
            shared.wake(admin && (all || !ids.is_empty()));
            err.push_str("the mail service is delivering the queue\n");
            Ok(())
        }
        Request::Log {
            since,
            status,
            format,
        } => show_log(
            config, who, admin, since, status, &format, &mut out, &mut err,
        ),
        Request::Status { check, json } => {
            status(shared, config, who, admin, (check, json), &mut out)
        }
    };
    let (stdout, stdout_bytes) = protocol::output_of(out);
    Response::Output {
        stdout,
        stderr: err,
        failure: result.err().map(|e| Failure::from_error(&e)),
        stdout_bytes,
    }
}

fn written(e: io::Error) -> Error {
    Error::new(Kind::Internal, "cannot render the answer", e)
}

fn mine(entry: &Entry, who: &Submitter, admin: bool) -> bool {
    admin || entry.uid == Some(who.uid)
}

fn list(shared: &Shared, who: &Submitter, admin: bool, out: &mut Vec<u8>) -> Result<()> {
    let (mut entries, unreadable) = shared.queue.scan()?;
    entries.retain(|e| mine(e, who, admin));
    let unreadable = if admin { unreadable } else { Vec::new() };
    render_listing(&entries, &unreadable, out).map_err(written)
}

/// The caller's entry `id`; another's is as unknown as a missing one.
fn find(shared: &Shared, who: &Submitter, admin: bool, id: &str) -> Result<Entry> {
    let unknown = || {
        Error::new(
            Kind::Usage,
            format!("no queued message {id}"),
            "see `oauth-sendmail queue list`",
        )
    };
    if !crate::delivery::queue::valid_id(id) {
        return Err(unknown());
    }
    match shared.queue.load(id)? {
        Some(entry) if mine(&entry, who, admin) => Ok(entry),
        _ => Err(unknown()),
    }
}

fn show(shared: &Shared, who: &Submitter, admin: bool, id: &str, out: &mut Vec<u8>) -> Result<()> {
    // A quarantined entry's owner may be unreadable with it: for those who manage the
    // queue only.
    if let Some((bad, message)) = shared.queue.quarantined_one(id).filter(|_| admin) {
        return crate::commands::queue::render_quarantined(&bad, message.as_deref(), out)
            .map_err(written);
    }
    let entry = find(shared, who, admin, id)?;
    let message = shared.queue.message(id)?;
    render_entry(&entry, out).map_err(written)?;
    out.extend_from_slice(&message);
    Ok(())
}

fn remove(
    shared: &Shared,
    who: &Submitter,
    admin: bool,
    ids: Vec<String>,
    all: bool,
    out: &mut Vec<u8>,
) -> Result<()> {
    let ids = match all {
        true => {
            let (entries, _) = shared.queue.scan()?;
            entries
                .into_iter()
                .filter(|e| mine(e, who, admin))
                .map(|e| e.id)
                .collect()
        }
        false => ids,
    };
    if all && ids.is_empty() {
        out.extend_from_slice(b"the queue is empty\n");
    }
    let mut busy = Vec::new();
    for id in &ids {
        if admin && shared.queue.remove_quarantined(id)? {
            out.extend_from_slice(format!("{id}: removed (it was quarantined)\n").as_bytes());
            eprintln!(
                "oauth-sendmail: quarantined {id} removed by {}",
                who.describe()
            );
            continue;
        }
        find(shared, who, admin, id)?;
        match shared.queue.lock(id)? {
            Some(_lock) => {
                shared.queue.remove(id)?;
                out.extend_from_slice(format!("{id}: removed\n").as_bytes());
                eprintln!("oauth-sendmail: {id} removed by {}", who.describe());
            }
            None => busy.push(id.as_str()),
        }
    }
    crate::commands::busy(&busy)
}

#[allow(clippy::too_many_arguments)]
fn show_log(
    config: &Config,
    who: &Submitter,
    admin: bool,
    since: Option<u64>,
    status: Option<Status>,
    format: &str,
    out: &mut Vec<u8>,
    err: &mut String,
) -> Result<()> {
    let format = crate::commands::log::Format::from_str(format, true)
        .map_err(|why| Error::new(Kind::Usage, "bad log format", why))?;
    let mut records = DeliveryLog::new(&config.queue.log_file).read()?;
    if !admin {
        let ids: HashSet<String> = records
            .iter()
            .filter(|r| submitted_by(r) == Some(who.uid))
            .filter_map(|r| r.queue_id.clone())
            .collect();
        records.retain(|r| {
            r.queue_id.as_ref().is_some_and(|id| ids.contains(id))
                || (r.queue_id.is_none() && submitted_by(r) == Some(who.uid))
        });
    }
    let oldest = since.map_or(0, |age| sys::clock::now().saturating_sub(age));
    records.retain(|r| r.unix >= oldest && status.is_none_or(|s| r.result == s));
    if records.is_empty() {
        err.push_str("no deliveries of yours logged that match\n");
    }
    crate::commands::log::render(&records, format, out).map_err(written)
}

fn status(
    shared: &Shared,
    config: &Config,
    who: &Submitter,
    admin: bool,
    (check, json): (bool, bool),
    out: &mut Vec<u8>,
) -> Result<()> {
    let (entries, _) = shared.queue.scan()?;
    let yours = entries.iter().filter(|e| e.uid == Some(who.uid)).count();
    let mut text = format!(
        "{:<18}running as uid {} (pid {}), {}\n{:<18}{} message(s) waiting, {yours} of them yours\n",
        "service:",
        users::effective_uid(),
        std::process::id(),
        shared.paths.config().display(),
        "queue:",
        entries.len(),
    );
    text.push_str(&crate::relay::status(config, &shared.paths.state()));
    let options = crate::commands::status::Options {
        mode: Mode::System.describe(),
        account: None,
        check,
        check_refused: (!admin).then_some("only root and the admin group may log in to the server"),
        verbose: false,
        json,
        preamble: Some(text),
    };
    crate::commands::status::render(config, &options, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(dir: &Path) -> Shared {
        Shared {
            paths: Paths {
                root: dir.to_path_buf(),
            },
            host: "h".into(),
            config: RwLock::new(Arc::new(Config::default())),
            queue: Queue::open(&dir.join("queue")).unwrap(),
            limiter: Mutex::default(),
            wake: (Mutex::default(), Condvar::new()),
            active: AtomicUsize::new(0),
            per_user: Mutex::default(),
            drops_waiting: Mutex::default(),
            in_memory: (Mutex::new(0), Condvar::new()),
        }
    }

    #[test]
    fn messages_in_memory_are_bounded_and_wait_their_turn() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let big = MESSAGE_BYTES / 2 + 1;
        let soon = || Instant::now() + Duration::from_millis(50);
        let first = reserve(&shared, big, soon()).unwrap();
        let err = reserve(&shared, big, soon()).err().expect("no room");
        assert_eq!(err.kind(), Kind::Temporary);
        // A small one fits beside it; the big one once the first is given back.
        drop(reserve(&shared, 1024, soon()).unwrap());
        thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                reserve(&shared, big, Instant::now() + Duration::from_secs(10)).map(|_| ())
            });
            thread::sleep(Duration::from_millis(50));
            drop(first);
            assert!(waiter.join().unwrap().is_ok());
        });
        assert_eq!(*lock(&shared.in_memory.0), 0);
    }

    #[test]
    fn the_submitter_is_read_back_from_the_log_note() {
        let mut record = Record::new(None, None, "a", "s", Vec::new(), 0, Instant::now());
        record.note = Some(format!(
            "{SUBMITTED_BY}33 (www-data); held by the rate limit"
        ));
        assert_eq!(submitted_by(&record), Some(33));
        record.note = Some(format!("refused: {SUBMITTED_BY}0 (root)"));
        assert_eq!(submitted_by(&record), Some(0));
        record.note = Some("moved to corrupt/".into());
        assert_eq!(submitted_by(&record), None);
    }
}
