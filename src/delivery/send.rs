//! The sendmail mode: one message from stdin, sent now, queued when it cannot go now (or
//! before intake, when the setup is not finished), or kept in dead.letter when it cannot
//! go at all; each attempt in the delivery log.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::config::{Account, Config, QueueMode, QueueSettings};
use crate::delivery::attempt::{self, Route};
use crate::delivery::flush::{Flusher, Selection};
use crate::delivery::hold::Holds;
use crate::delivery::log::DeliveryLog;
use crate::delivery::queue::{Queue, QueueEntry, RecipientState};
use crate::delivery::request::Invocation;
use crate::delivery::transport::Transport;
use crate::delivery::{bounce, dead_letter};
use crate::error::{Error, Kind, Result};
use crate::message::address::Resolver;
use crate::message::envelope::{Envelope, Prepared};
use crate::message::input::{self, Raw};
use crate::message::intake;
use crate::smtp::client::Delivery;
use crate::sys::signals;

/// After a message went out, queued ones of the same account may follow on the same
/// connection, but the caller (cron, PHP) is waiting: this long at most.
const OPPORTUNISTIC_FLUSH: Duration = Duration::from_secs(10);

/// How a message that is safe got there.
#[derive(Debug, PartialEq)]
pub enum Accepted {
    /// The server has it (or it was a dry run).
    Sent,
    /// The queue has it, for all or some recipients; the notice says which and why.
    Queued { notice: String },
}

/// Reads the message, then delivers it or keeps it.
pub fn send(invocation: &Invocation) -> Result<()> {
    // The configuration first, for where a large body is spilled (the queue's file
    // system); an error in it counts once the message is read, and keeps it, as always.
    let config = Config::load(invocation.config.as_deref());
    let spill_dir = match &config {
        Ok(config) => config.queue.dir.clone(),
        Err(_) => QueueSettings::default().dir,
    };
    let input = input::read_stdin(
        invocation.ignore_dots,
        &mut input::spill_in_queue(&spill_dir),
    )?;
    let raw = input.raw();
    // The message is ours now: a stop signal waits until it is sent or queued.
    signals::defer_stop();
    let result = match &config {
        Ok(config) => deliver(config, invocation, raw),
        Err(err) => Err(err.clone()),
    };
    match result {
        Ok(Accepted::Sent) => Ok(()),
        // One line: cron and scripts log stderr, and the message is safe.
        Ok(Accepted::Queued { notice }) => {
            eprintln!("oauth-sendmail: {notice}");
            Ok(())
        }
        Err(err) if invocation.dry_run || err.is_message_kept() => Err(err),
        Err(err) if awaits_setup(&err) => match hold(config.as_ref().ok(), invocation, raw, &err) {
            Ok(Some(id)) => Err(err
                .hint(format!(
                    "the message is queued as {id} and goes out with `sendmail -q` once this is fixed"
                ))
                .message_kept()),
            Ok(None) => Err(keep(err, raw, invocation)),
            Err(queue_err) => Err(keep(err, raw, invocation)
                .hint(format!("it could not be queued: {}", queue_err.summary()))),
        },
        Err(err) => Err(keep(err, raw, invocation)),
    }
}

/// A failure of the setup (no configuration, no account chosen, not logged in): a person
/// fixes it, and the message waits in the queue for that instead of being refused.
pub fn awaits_setup(err: &Error) -> bool {
    err.kind() == Kind::Config
}

/// Queues input that could not be prepared because the setup is not finished, with the
/// options it came with; intake runs at flush time. The queue is the configured one, or
/// the default one when the configuration does not load. `None` with `queue = "never"`,
/// and for a message that could never be sent (no recipients, nothing in it).
fn hold(
    config: Option<&Config>,
    invocation: &Invocation,
    raw: Raw,
    why: &Error,
) -> Result<Option<String>> {
    let settings = config.map_or_else(Default::default, |c| c.queue.clone());
    let no_recipients = invocation.recipients.is_empty() && !invocation.extract_recipients;
    if settings.mode == QueueMode::Never || no_recipients || raw.is_blank() {
        return Ok(None);
    }
    // As read: the spill file after what is in memory, copied into the queue as it is.
    let [first, rest] = raw.parts();
    let (head, body) = match raw.spill() {
        None => (Vec::new(), first),
        Some(_) => (raw.memory().to_vec(), rest),
    };
    let input = Prepared {
        envelope: Envelope {
            sender: invocation.sender.clone().unwrap_or_default(),
            recipients: Vec::new(),
        },
        head,
        body,
        eight_bit: raw.eight_bit(),
        message_id: None,
    };
    let options = crate::delivery::queue::Intake {
        extract_recipients: invocation.extract_recipients,
        sender: invocation.sender.clone(),
        full_name: invocation.full_name.clone(),
        recipients: invocation.recipients.clone(),
        account: invocation.account.clone(),
    };
    let entry = QueueEntry::held(&input, options, &why.summary());
    Queue::open(&settings.dir)?.add(&entry, &input)?;
    Ok(Some(entry.id))
}

/// The account for this message and the message as it goes out (aliases, qualification,
/// the headers intake adds): what a send needs, now or at flush time for a held message.
pub fn prepare<'c, 'm>(
    config: &'c Config,
    invocation: &Invocation,
    raw: impl Into<Raw<'m>>,
) -> Result<(&'c Account, Prepared<'m>)> {
    let raw = raw.into();
    let resolver = Resolver::new(&config.aliases, config.domain.as_deref());
    let account = choose_account(config, invocation, &resolver)?;
    let prepared = run_intake(invocation, &resolver, account.address(), raw)?;
    Ok((account, prepared))
}

/// `--account`, else the account that sends as `-f`, else the default.
fn choose_account<'c>(
    config: &'c Config,
    invocation: &Invocation,
    resolver: &Resolver,
) -> Result<&'c Account> {
    let sender_hint = invocation
        .sender
        .as_deref()
        .map(|s| resolver.sender(s, ""))
        .filter(|s| !s.is_empty());
    config.choose_account(invocation.account.as_deref(), sender_hint.as_deref())
}

/// Delivers one message as sendmail would: `Ok` once it is sent or safely queued.
pub fn deliver<'m>(
    config: &Config,
    invocation: &Invocation,
    raw: impl Into<Raw<'m>>,
) -> Result<Accepted> {
    let raw = raw.into();
    if invocation.dry_run {
        return dry_run(config, invocation, raw);
    }
    let (account, prepared) = prepare(config, invocation, raw)?;
    match config.queue.mode {
        QueueMode::Always => spool_first(config, account, &prepared, invocation.verbose),
        _ => send_now(config, account, &prepared, invocation),
    }
}

/// `--dry-run`: what intake makes of the message, sent nowhere. It needs no account;
/// without one the sender is the local user's, as a local sendmail would use.
fn dry_run(config: &Config, invocation: &Invocation, raw: Raw) -> Result<Accepted> {
    let resolver = Resolver::new(&config.aliases, config.domain.as_deref());
    let account = choose_account(config, invocation, &resolver).ok();
    let default_sender = account.map_or_else(local_sender, |a| a.address().to_string());
    let prepared = run_intake(invocation, &resolver, &default_sender, raw)?;
    print_dry_run(account, &prepared).map(|()| Accepted::Sent)
}

/// Sends now; what the server defers (or the whole message, when the failure is one a
/// queued message can wait out) goes to the queue unless `queue = "never"`. The attempt
/// is in the delivery log either way.
fn send_now(
    config: &Config,
    account: &Account,
    prepared: &Prepared,
    invocation: &Invocation,
) -> Result<Accepted> {
    let started = Instant::now();
    let holds = Holds::of_queue(&config.queue.dir);
    // A held account's mail waits with the rest of its queue, without a connection.
    let held = holds.active(&account.name, crate::sys::clock::now());
    let (result, session) = match &held {
        Some(hold) => (Err(hold.as_error()), None),
        None => match connect_and_send(account, prepared, invocation.verbose) {
            Ok((delivery, session)) => (Ok(delivery), Some(session)),
            Err(err) => (Err(err), None),
        },
    };
    let hold = match (&result, held) {
        (_, Some(hold)) => Some(hold),
        (Err(err), None) => holds.after_failure(&account.name, err, config.queue.quota_hold),
        (Ok(_), None) => None,
    };
    let queue_it = config.queue.mode != QueueMode::Never
        && match &result {
            Ok(delivery) => !delivery.deferred.is_empty(),
            Err(err) => err.can_wait() || awaits_setup(err),
        };
    let mut entry = QueueEntry::new(&account.name, prepared, &prepared.envelope.recipients);
    // The caller hears of refusals from us: no bounce.
    attempt::record(&mut entry, &result);
    let queued = match queue_it {
        false => None,
        true => {
            let mut waiting = entry.clone();
            waiting
                .recipients
                .retain(|r| r.state == RecipientState::Pending);
            let now = crate::sys::clock::now();
            attempt::retry_later(&mut waiting, &config.queue, now);
            // An account's hold decides the next try, not the message's own backoff...
            if let Some(hold) = &hold {
                waiting.next_try = hold.until;
            }
            // ...but never before a server's Retry-After.
            attempt::not_before(&mut waiting, &result, now);
            spool(config, &waiting, prepared)?;
            Some(waiting)
        }
    };
    let record = attempt::log_record(
        &entry,
        &prepared.envelope.recipients,
        queued.as_ref().map(|e| e.id.as_str()),
        Route::Direct {
            queued: queued.is_some(),
        },
        started,
    );
    DeliveryLog::new(&config.queue.log_file).append_or_warn(&record);
    let delivery = match (result, queued.as_ref()) {
        (Ok(delivery), _) => delivery,
        (Err(err), Some(entry)) if err.needs_a_person() || awaits_setup(&err) => {
            // A refused login, an untrusted certificate, an account not logged in yet
            // are for a person to fix: say so with the exit code too.
            return Err(err.hint(format!("the message is queued as {} and goes out with `sendmail -q` once this is fixed", entry.id)).message_kept());
        }
        (Err(err), Some(entry)) => {
            return Ok(Accepted::Queued {
                notice: format!("queued as {}: {}", entry.id, err.summary()),
            })
        }
        (Err(err), None) => return Err(err),
    };
    if let Some(session) = session {
        match invocation.alone || signals::stop_requested().is_some() {
            true => session.close(),
            false => flush_behind(config, account, session, invocation.verbose),
        }
    }
    match (delivery.failure(), queued) {
        (Some(err), None) => Err(err),
        (Some(err), Some(_)) if !delivery.refused.is_empty() => Err(err.message_kept()),
        (_, Some(entry)) => Ok(Accepted::Queued {
            notice: format!(
                "queued as {} for {} recipient(s) the server deferred",
                entry.id,
                entry.recipients.len()
            ),
        }),
        (None, None) => Ok(Accepted::Sent),
    }
}

/// `queue = "always"`: the message is spooled, then the queue delivers it. What the
/// caller hears is what happened: sent, queued (and why), or refused (and what became of
/// it: a bounce to the sender, or dead.letter), with the exit status a refusal has.
fn spool_first(
    config: &Config,
    account: &Account,
    prepared: &Prepared,
    verbose: bool,
) -> Result<Accepted> {
    let entry = QueueEntry::new(&account.name, prepared, &prepared.envelope.recipients);
    spool(config, &entry, prepared)?;
    let queue = Queue::open(&config.queue.dir)?;
    let report = Flusher::new(config, &queue, verbose, None)
        .run(Selection::Ids(vec![entry.id.clone()]), None)?;
    if let Some((_, refusal)) = report.refused.into_iter().find(|(id, _)| id == &entry.id) {
        // Any bounce or dead.letter copy is made: the message needs no saving.
        let refusal = match queue.load(&entry.id)? {
            Some(_) => refusal.hint(format!(
                "queued as {} for the recipients still to be tried",
                entry.id
            )),
            None => refusal,
        };
        return Err(refusal.message_kept());
    }
    if report.delivered == 1 {
        return Ok(Accepted::Sent);
    }
    let why = match (
        queue.load(&entry.id)?.and_then(|e| e.last_error),
        report.stopped,
    ) {
        (Some(error), _) => error,
        (None, Some(signal)) => format!("stopped by {signal} before sending"),
        (None, None) => "another flush is delivering the queue".into(),
    };
    Ok(Accepted::Queued {
        notice: format!("queued as {}: {why}", entry.id),
    })
}

/// Connects and sends; the open session comes back for queued messages to follow.
/// A refused token is refreshed and tried once more (token::with_secret).
fn connect_and_send(
    account: &Account,
    prepared: &Prepared,
    verbose: bool,
) -> Result<(Delivery, Transport)> {
    let mut session = Transport::open(account, verbose)?;
    match session.send(prepared) {
        Ok(delivery) => Ok((delivery, session)),
        Err(err) => {
            session.close();
            Err(err)
        }
    }
}

/// Writes the message and its entry to the queue; once this returns, the message is safe.
fn spool(config: &Config, entry: &QueueEntry, prepared: &Prepared) -> Result<()> {
    Queue::open(&config.queue.dir)?.add(entry, prepared)
}

/// Delivers what waits for the same account over the connection just used, if anything
/// is due and within a bounded time; a slow queue must not hold up the caller.
fn flush_behind(config: &Config, account: &Account, session: Transport, verbose: bool) {
    let Some(queue) = Queue::existing(&config.queue.dir) else {
        return session.close();
    };
    // An empty queue (the usual case) costs one readdir; the flusher reads the entries.
    if queue.ids().map_or(true, |ids| ids.is_empty()) {
        return session.close();
    }
    let deadline = Instant::now() + OPPORTUNISTIC_FLUSH;
    let flusher = Flusher::new(
        config,
        &queue,
        verbose,
        Some((account.name.clone(), session)),
    );
    if let Err(err) = flusher.run(Selection::DueFor(account.name.clone()), Some(deadline)) {
        eprintln!(
            "oauth-sendmail: warning: flushing the queue: {}",
            err.summary()
        );
    }
}

/// Intake with the options of this invocation: the one place a message is prepared.
fn run_intake<'m>(
    invocation: &Invocation,
    resolver: &Resolver,
    default_sender: &str,
    raw: Raw<'m>,
) -> Result<Prepared<'m>> {
    let options = intake::Options {
        extract_recipients: invocation.extract_recipients,
        sender: invocation.sender.as_deref(),
        full_name: invocation.full_name.as_deref(),
        recipients: &invocation.recipients,
        resolver,
        default_sender,
    };
    intake::prepare(raw, &options)
}

/// Saves a message that could not be sent, and says where in the error.
fn keep(err: Error, raw: Raw, invocation: &Invocation) -> Error {
    let temporary = err.is_transient();
    let sender = invocation.sender.as_deref().unwrap_or("");
    let err = match dead_letter::save(raw, sender, &invocation.recipients) {
        Ok(Some(path)) => err.hint(format!("the message was saved to {}", path.display())),
        // Nothing to lose: the message was empty.
        Ok(None) => return err,
        Err(save_err) => return err.hint(format!("the message was LOST: {save_err}")),
    };
    match temporary {
        true => err.hint("the failure is temporary: sending it again later should work"),
        false => err,
    }
}

fn print_dry_run(account: Option<&Account>, prepared: &Prepared) -> Result<()> {
    let envelope = &prepared.envelope;
    let recipients: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| format!("<{r}>"))
        .collect();
    let via = match account {
        Some(a) if a.transport != crate::config::Transport::Smtp => {
            format!("{} ({}, {})", a.name, a.api_uri, a.transport.name())
        }
        Some(a) => format!("{} ({}:{})", a.name, a.host, a.port),
        None => "none (no account configured; nothing would be sent)".into(),
    };
    let mut out = io::stdout().lock();
    let body = if prepared.eight_bit {
        "8BITMIME"
    } else {
        "7BIT"
    };
    let written = write!(
        out,
        "Account: {via}\nEnvelope sender: <{}>\nEnvelope recipients: {}\nBody: {body}\nMessage ({} bytes):\n",
        envelope.sender,
        recipients.join(", "),
        prepared.len()
    )
    .and_then(|()| out.write_all(&prepared.head))
    .and_then(|()| prepared.body.each_chunk(&mut |chunk| out.write_all(chunk)))
    .and_then(|()| out.flush());
    written.map_err(|e| Error::new(Kind::Io, "cannot write to stdout", e))
}

/// user@host for a dry run without an account, as a local sendmail would use.
fn local_sender() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into());
    format!("{user}@{}", bounce::hostname())
}
