//! Delivering the queue: one flusher at a time, each message locked while in flight, up to
//! the account's `connections` at once for its messages (each connection reused for the
//! messages it takes), retries with exponential backoff, and a bounce when a recipient is
//! refused or the message grows too old.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{Account, Config};
use crate::delivery::attempt::{self, Route};
use crate::delivery::bounce::{self, FailedRecipient};
use crate::delivery::dead_letter;
use crate::delivery::hold::{self, Hold, Holds};
use crate::delivery::log::{DeliveryLog, Outcome, Record, Status};
use crate::delivery::queue::{Intake, Queue, QueueEntry};
use crate::delivery::transport::Transport;
use crate::error::{Error, Kind, Result};
use crate::message::envelope::Body;
use crate::message::input::{self, Raw};
use crate::smtp::client::Delivery;
use crate::sys::signals;

/// Which messages a flush tries.
pub enum Selection {
    /// Those whose retry time has come.
    Due,
    /// Those whose retry time has come, of one account only (after a direct send).
    DueFor(String),
    /// These, whatever their retry time (`queue retry`, `queue = "always"`).
    Ids(Vec<String>),
    /// All of them, whatever their retry time (`sendmail -q`, as Postfix's).
    All,
}

/// What one flush did.
#[derive(Debug, Default)]
pub struct Report {
    pub delivered: usize,
    pub deferred: usize,
    pub bounced: usize,
    /// Another flusher holds the queue.
    pub busy: bool,
    /// The signal that stopped the flush after the message in flight.
    pub stopped: Option<&'static str>,
    /// The messages (queue id) refused for good, for some or all recipients, each with
    /// the refusal and what became of the message (a bounce, dead.letter).
    pub refused: Vec<(String, Error)>,
}

pub struct Flusher<'a> {
    core: Core<'a>,
    /// A connection already open (after a direct send), and its account's name.
    handed: Option<(String, Transport)>,
}

/// What the connections of one flush share: the queue, the log, and what the flush has
/// learnt about each account so far.
struct Core<'a> {
    config: &'a Config,
    queue: &'a Queue,
    /// Behind a lock: two records are never appended at once (the log rotates).
    log: Mutex<DeliveryLog>,
    verbose: bool,
    holds: Holds,
    state: Mutex<State>,
    /// Held while a message is appended to dead.letter: one at a time, since an append
    /// that fails is cut back to the length the file had before it, and another append
    /// meanwhile would be cut with it.
    dead_letter: Mutex<()>,
    /// A worker met an error that ends the flush (the queue cannot be written): the
    /// others take no further message.
    failed: AtomicBool,
}

struct State {
    /// Accounts that could not be reached in this flush, with why: not tried again for
    /// each of their messages.
    unreachable: Vec<(String, Error)>,
    /// Accounts whose whole queue waits (see `hold`), as recorded when the flush began.
    held: Vec<Hold>,
    /// Accounts this flush held (or held again): their hold is in `held`.
    held_now: Vec<String>,
    /// Accounts a message went out through in this flush: reachable now.
    reached: Vec<String>,
}

/// One connection's share of a flush: its session (and its account's name), and what
/// the messages it took became.
#[derive(Default)]
struct Worker {
    session: Option<(String, Transport)>,
    report: Report,
}

impl Worker {
    fn close(&mut self) {
        if let Some((_, session)) = self.session.take() {
            session.close();
        }
    }

    /// Has a connection to `account` that can take another message.
    fn is_open_to(&self, account: &str) -> bool {
        matches!(&self.session, Some((name, session)) if name == account && session.is_usable())
    }
}

impl Report {
    /// Adds what another connection of the same flush did.
    fn merge(&mut self, other: Report) {
        self.delivered += other.delivered;
        self.deferred += other.deferred;
        self.bounced += other.bounced;
        self.busy |= other.busy;
        self.stopped = self.stopped.or(other.stopped);
        self.refused.extend(other.refused);
    }
}

/// The ids of one account's messages still to take, shared by its connections.
type Work = Mutex<VecDeque<String>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked left nothing half-done that the others could not use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a> Flusher<'a> {
    /// `session` is a connection already open (after a direct send) to reuse.
    pub fn new(
        config: &'a Config,
        queue: &'a Queue,
        verbose: bool,
        session: Option<(String, Transport)>,
    ) -> Flusher<'a> {
        Flusher {
            core: Core {
                config,
                queue,
                log: Mutex::new(DeliveryLog::new(&config.queue.log_file)),
                verbose,
                holds: Holds::of_queue(&config.queue.dir),
                state: Mutex::new(State {
                    unreachable: Vec::new(),
                    held: Vec::new(),
                    held_now: Vec::new(),
                    // A session handed over has just delivered a message.
                    reached: session.iter().map(|(name, _)| name.clone()).collect(),
                }),
                dead_letter: Mutex::new(()),
                failed: AtomicBool::new(false),
            },
            handed: session,
        }
    }

    /// Tries the selected messages until done, `deadline`, or a stop signal (the messages
    /// in flight are finished first: see `signals`).
    pub fn run(self, selection: Selection, deadline: Option<Instant>) -> Result<Report> {
        let Flusher { core, handed } = self;
        let mut lead = Worker {
            session: handed,
            report: Report::default(),
        };
        let result = core.run(&mut lead, selection, deadline);
        lead.close();
        result.map(|()| lead.report)
    }
}

impl Core<'_> {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn log(&self, record: &Record) {
        lock(&self.log).append_or_warn(record);
    }

    fn run(
        &self,
        lead: &mut Worker,
        selection: Selection,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let Some(_flusher) = self.queue.lock_flusher()? else {
            lead.report.busy = true;
            return Ok(());
        };
        // No writer takes an hour between its two renames.
        self.queue.remove_leftovers(Duration::from_secs(3600));
        let now = crate::sys::clock::now();
        let (mut entries, unreadable) = self.queue.scan()?;
        for bad in unreadable.iter().filter(|bad| !bad.quarantined) {
            self.quarantine(&bad.id, &bad.why);
        }
        let waiting = entries.clone();
        self.state().held = self.holds.all();
        // A held account's messages wait, unless a person forces them (`sendmail -q`,
        // `queue retry`): the first one then probes the account.
        let held = |account: &str| self.is_held(account, now);
        entries.retain(|entry| match &selection {
            Selection::Due => entry.is_due(now) && !held(&entry.account),
            Selection::DueFor(account) => {
                entry.is_due(now) && &entry.account == account && !held(account)
            }
            Selection::Ids(ids) => ids.contains(&entry.id),
            Selection::All => true,
        });
        self.drain(lead, entries, deadline)?;
        // Retry early: an account a message just went out through is reachable again,
        // so its mail waiting for a retry time goes now, not minutes later; a message
        // tried at most once per `retry_initial` so (a recipient the server keeps
        // deferring is not hammered by every new submission).
        if matches!(selection, Selection::Due | Selection::DueFor(_)) {
            let now = crate::sys::clock::now();
            let settings = &self.config.queue;
            let rested = |e: &QueueEntry| {
                let tried = e
                    .next_try
                    .saturating_sub(attempt::backoff(settings, e.attempts).as_secs());
                now >= tried + settings.retry_initial.as_secs()
            };
            let reached = self.state().reached.clone();
            let early: Vec<QueueEntry> = waiting
                .into_iter()
                .filter(|e| !e.is_due(now) && rested(e) && reached.contains(&e.account))
                .filter(|e| !self.is_held(&e.account, now))
                .collect();
            self.drain(lead, early, deadline)?;
        }
        Ok(())
    }

    fn is_held(&self, account: &str, now: u64) -> bool {
        self.state()
            .held
            .iter()
            .any(|h| h.account == account && h.is_active(now))
    }

    /// Delivers `entries` an account after the other, each account's messages through up
    /// to its `connections` at once. The lead's connection comes first and alone: it
    /// proves the account (its login, its token refreshed once) before any other opens,
    /// so a server that is down or refuses the login costs one attempt, not one per
    /// connection.
    fn drain(
        &self,
        lead: &mut Worker,
        mut entries: Vec<QueueEntry>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        entries.sort_by(|a, b| (&a.account, &a.id).cmp(&(&b.account, &b.id)));
        let mut entries = entries.into_iter().peekable();
        while let Some(first) = entries.next() {
            let account = first.account;
            let mut ids = VecDeque::from([first.id]);
            while let Some(next) = entries.next_if(|e| e.account == account) {
                ids.push_back(next.id);
            }
            let work = Mutex::new(ids);
            // One message after another until the lead has a connection to the account.
            while !lead.is_open_to(&account) && self.next_message(&work, deadline, lead)? {}
            let connections = self
                .config
                .accounts
                .get(&account)
                .map_or(1, |a| a.connections);
            // A connection costs about what two messages do (a TLS handshake, a login):
            // another opens only while at least two more messages wait for it.
            let waiting = lock(&work).len();
            let extra = connections.saturating_sub(1).min(waiting / 2);
            if extra == 0 || !lead.is_open_to(&account) {
                while self.next_message(&work, deadline, lead)? {}
                continue;
            }
            let (account, work) = (&self.config.accounts[&account], &work);
            // With -v, each line says whose it is while several connections talk at once.
            crate::transcript::label(Some(1));
            let outcomes = std::thread::scope(|scope| {
                let others: Vec<_> = (0..extra)
                    .map(|n| {
                        scope.spawn(move || {
                            crate::transcript::label(Some(n + 2));
                            self.extra_connection(account, work, deadline)
                        })
                    })
                    .collect();
                let mut outcomes = vec![self.keep_taking(work, deadline, lead)];
                for other in others {
                    // A worker's panic is the flusher's: it ends the flush as it would.
                    let (report, result) = other
                        .join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p));
                    lead.report.merge(report);
                    outcomes.push(result);
                }
                outcomes
            });
            crate::transcript::label(None);
            if let Some(err) = outcomes.into_iter().find_map(Result::err) {
                return Err(err);
            }
        }
        Ok(())
    }

    /// A connection beyond the lead's: opened before it takes a message, and given up
    /// quietly when the server will not have it (a provider's limit on sessions at
    /// once: the lead and the others deliver the messages). Closed when the work is done.
    fn extra_connection(
        &self,
        account: &Account,
        work: &Work,
        deadline: Option<Instant>,
    ) -> (Report, Result<()>) {
        let mut worker = Worker::default();
        // Nothing left for it, or the account held or unreachable meanwhile: its
        // messages need no connection to be told so.
        let idle = lock(work).is_empty() || self.unreachable(&account.name).is_some();
        if idle || !self.may_go_on(deadline) {
            return (worker.report, Ok(()));
        }
        match Transport::open(account, self.verbose) {
            Ok(session) => worker.session = Some((account.name.clone(), session)),
            Err(err) => {
                if self.verbose {
                    eprintln!(
                        "oauth-sendmail: one more connection for account `{}` not opened ({}): the others carry on",
                        account.name,
                        err.summary()
                    );
                }
                return (worker.report, Ok(()));
            }
        }
        let result = self.keep_taking(work, deadline, &mut worker);
        worker.close();
        (worker.report, result)
    }

    /// Takes messages from `work` until there are none, the deadline, a stop signal or
    /// another worker's failure.
    fn keep_taking(
        &self,
        work: &Work,
        deadline: Option<Instant>,
        worker: &mut Worker,
    ) -> Result<()> {
        let result = (|| {
            while self.next_message(work, deadline, worker)? {}
            Ok(())
        })();
        if result.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        result
    }

    /// Whether a worker may start another message: no stop signal, deadline or failure.
    fn may_go_on(&self, deadline: Option<Instant>) -> bool {
        signals::stop_requested().is_none()
            && deadline.is_none_or(|d| Instant::now() < d)
            && !self.failed.load(Ordering::SeqCst)
    }

    /// Takes the next message of `work` and attempts it; false when there is none to
    /// take (or a stop signal, the deadline, another worker's failure says stop).
    fn next_message(
        &self,
        work: &Work,
        deadline: Option<Instant>,
        worker: &mut Worker,
    ) -> Result<bool> {
        if let Some(signal) = signals::stop_requested() {
            worker.report.stopped = Some(signal);
            return Ok(false);
        }
        if !self.may_go_on(deadline) {
            return Ok(false);
        }
        // Taken out of the list: no other worker of this flush is given it (and its
        // lock, below, keeps other processes off it).
        let Some(id) = lock(work).pop_front() else {
            return Ok(false);
        };
        match self.attempt(&id, worker)? {
            Some(Status::Sent) => worker.report.delivered += 1,
            Some(Status::Bounced) => worker.report.bounced += 1,
            Some(_) => worker.report.deferred += 1,
            None => {}
        }
        Ok(true)
    }

    /// Moves an entry that cannot be read out of the way, says so once (stderr and the
    /// delivery log), and lets the flush go on.
    fn quarantine(&self, id: &str, why: &str) {
        let moved = match self.queue.quarantine(id, why) {
            Ok(dir) => dir,
            Err(err) => {
                eprintln!("oauth-sendmail: warning: {}", err.summary());
                return;
            }
        };
        let note = format!("unreadable, moved to {}: {why}", moved.display());
        eprintln!("oauth-sendmail: warning: queued message {id} is {note}");
        let mut record = Record::new(
            Some(id.to_string()),
            None,
            "",
            "",
            Vec::new(),
            0,
            Instant::now(),
        );
        record.result = Status::Quarantined;
        record.note = Some(note);
        self.log(&record);
    }

    /// One delivery attempt of one message: what became of it (`Sent` when every
    /// recipient has it, `Bounced` when the rest were refused, else `Deferred`), or `None`
    /// when another process has it or it has left the queue.
    fn attempt(&self, id: &str, worker: &mut Worker) -> Result<Option<Status>> {
        let Some(_lock) = self.queue.lock(id)? else {
            return Ok(None);
        };
        // Loaded again under the lock: another flusher may have finished it meanwhile.
        let loaded = self
            .queue
            .load(id)
            .and_then(|entry| Ok((entry, self.queue.message_file(id)?)));
        let (mut entry, (file, len)) = match loaded {
            Ok((Some(entry), file)) => (entry, file),
            Ok((None, _)) => return Ok(None),
            Err(err) => {
                self.quarantine(id, &err.summary());
                return Ok(None);
            }
        };
        // Sent from the file a chunk at a time: a large message is never held whole.
        let data = Body::File { file: &file, len };
        if let Some(intake) = entry.intake.take() {
            // A held message: read again as it was when it came (its lines are CRLF
            // already), so intake has its header and a large body stays in a file.
            let reader = io::BufReader::new(ReadAt { file: &file, at: 0 }.take(len));
            let dir = self.config.queue.dir.clone();
            return match input::read(reader, true, &mut input::spill_in_queue(&dir)) {
                Ok(text) => self.prepare_held(entry, intake, text.raw(), worker),
                Err(e) => {
                    self.quarantine(id, &e.to_string());
                    Ok(None)
                }
            };
        }
        let started = Instant::now();
        let message = entry.prepared(data);
        let attempted: Vec<String> = message.envelope.recipients.clone();
        let account = self.config.accounts.get(&entry.account).cloned();
        let result = match &account {
            None => Err(Error::new(
                Kind::Config,
                format!("account `{}` is not in the configuration", entry.account),
                "the message waits until it is back",
            )),
            Some(account) => self.send(worker, account, &message),
        };

        // Refused for good, for some or all recipients: in the report, with what the
        // sender was told.
        let refusal = match &result {
            Ok(delivery) => delivery
                .failure()
                .filter(|e| !delivery.refused.is_empty() && e.is_permanent()),
            Err(err) => Some(err.clone()).filter(Error::is_permanent),
        };
        let mut failures = attempt::record(&mut entry, &result);
        attempt::schedule(&mut entry, &self.config.queue, &mut failures);
        // An account's hold sets the next try; a server's Retry-After may push it later.
        self.update_hold(&result, &mut entry);
        attempt::not_before(&mut entry, &result, crate::sys::clock::now());
        // What the server accepted is on disk (fsync'd) before anything else happens:
        // before the bounce, the log, the next message. A crash or kill from here on
        // cannot send the message again to recipients that have it.
        match entry.pending().next() {
            None => self.queue.remove(id)?,
            Some(_) => self.queue.save(&entry)?,
        }
        if !failures.is_empty() {
            let told = self.bounce(worker, &entry, account.as_ref(), &failures, data);
            if let Some(err) = refusal {
                worker
                    .report
                    .refused
                    .push((entry.id.clone(), err.hint(told)));
            }
        }
        let record =
            attempt::log_record(&entry, &attempted, Some(&entry.id), Route::Queue, started);
        self.log(&record);
        let bounced = record
            .recipients
            .iter()
            .any(|r| r.status == Status::Bounced);
        let waiting = entry.pending().next().is_some();
        Ok(Some(match (waiting, bounced) {
            (true, _) => Status::Deferred,
            (false, true) => Status::Bounced,
            (false, false) => Status::Sent,
        }))
    }

    /// A message queued before intake (the setup was not finished): intake now, with the
    /// options it came with. Once that works it becomes an ordinary entry (written whole
    /// under an id of its own before the held one goes, so a crash leaves one or the
    /// other) and is tried at once; while the setup is still unfinished it waits.
    fn prepare_held(
        &self,
        mut held: QueueEntry,
        intake: Intake,
        data: Raw,
        worker: &mut Worker,
    ) -> Result<Option<Status>> {
        let invocation = crate::delivery::request::Invocation {
            extract_recipients: intake.extract_recipients,
            sender: intake.sender.clone(),
            full_name: intake.full_name.clone(),
            recipients: intake.recipients.clone(),
            account: intake.account.clone(),
            ..Default::default()
        };
        let err = match crate::delivery::send::prepare(self.config, &invocation, data) {
            Ok((account, prepared)) => {
                let mut ready =
                    QueueEntry::new(&account.name, &prepared, &prepared.envelope.recipients);
                // Derived from the held id: after a crash between the two steps the
                // entry made then is found, not made a second time.
                ready.id = format!("{}00", held.id);
                ready.arrival = held.arrival;
                if self.queue.load(&ready.id)?.is_none() {
                    self.queue.add(&ready, &prepared)?;
                }
                self.queue.remove(&held.id)?;
                return self.attempt(&ready.id, worker);
            }
            Err(err) => err,
        };
        let started = Instant::now();
        let why = err.summary();
        held.attempts += 1;
        held.last_error = Some(why.clone());
        let now = crate::sys::clock::now();
        let too_old = now.saturating_sub(held.arrival) >= self.config.queue.max_age.as_secs();
        let status = match !crate::delivery::send::awaits_setup(&err) || too_old {
            // It cannot ever be prepared (bad input, no recipients), or nobody fixed the
            // setup in time: nobody can be told but the user, through dead.letter.
            true => {
                let kept = self.to_dead_letter(data, &held.sender, &intake.recipients);
                self.queue.remove(&held.id)?;
                eprintln!(
                    "oauth-sendmail: queued message {} cannot be sent: {why}; {kept}",
                    held.id
                );
                Status::Failed
            }
            false => {
                attempt::retry_later(&mut held, &self.config.queue, now);
                held.intake = Some(intake.clone());
                self.queue.save(&held)?;
                // Every flush says it: the timer's journal and cron are where it is seen.
                eprintln!(
                    "oauth-sendmail: queued message {} waits for the setup: {why}",
                    held.id
                );
                Status::Deferred
            }
        };
        let outcomes = intake
            .recipients
            .iter()
            .map(|address| Outcome {
                address: address.clone(),
                status,
                reply: Some(why.clone()),
            })
            .collect();
        let mut record = Record::new(
            Some(held.id.clone()),
            None,
            &held.account,
            &held.sender,
            outcomes,
            held.size,
            started,
        );
        // With -t alone the recipients are not known yet: the record says why by itself.
        record.note = Some(why);
        if record.recipients.is_empty() {
            record.result = status;
        }
        self.log(&record);
        Ok(Some(match status {
            Status::Failed => Status::Bounced,
            other => other,
        }))
    }

    /// Holds the account after a failure that is the account's (the rest of its messages
    /// wait with it, and this one until the hold is over), or ends its hold after a
    /// delivery. Under the state's lock, hold file included: the account's connections
    /// learn of a hold one at a time, and every one after the first finds it set.
    fn update_hold(&self, result: &Result<Delivery>, entry: &mut QueueEntry) {
        let account = entry.account.clone();
        let account = account.as_str();
        let mut state = self.state();
        let state = &mut *state;
        let held_in_this_flush = state.held_now.iter().any(|n| n == account);
        match result {
            Ok(_) => {
                if !state.reached.iter().any(|n| n == account) {
                    state.reached.push(account.to_string());
                }
                // A message another connection had in flight when this flush held the
                // account does not end that hold: only one from an earlier flush.
                let earlier = state.held.iter().position(|h| h.account == account);
                if let Some(at) = earlier.filter(|_| !held_in_this_flush) {
                    self.holds.clear(account);
                    state.held.remove(at);
                }
            }
            Err(err) => {
                let hold = match held_in_this_flush {
                    // Already held in this flush: the rest of the account's messages.
                    true => state.held.iter().find(|h| h.account == account).cloned(),
                    false => self
                        .holds
                        .after_failure(account, err, self.config.queue.quota_hold),
                };
                if let Some(hold) = hold {
                    // The account's wait, not the message's backoff: it goes when the
                    // account may send again.
                    if entry.pending().next().is_some() {
                        entry.next_try = hold.until;
                    }
                    // What the rest of its messages meet in this flush: the hold (in
                    // place of the failure `send` put there to stop the others at once).
                    state.unreachable.retain(|(n, _)| n != account);
                    state
                        .unreachable
                        .push((account.to_string(), hold.as_error()));
                    state.held.retain(|h| h.account != account);
                    state.held.push(hold);
                    if !held_in_this_flush {
                        state.held_now.push(account.to_string());
                    }
                }
            }
        }
    }

    /// Sends through the worker's session for `account`, opening one when needed.
    fn send(
        &self,
        worker: &mut Worker,
        account: &Account,
        message: &crate::message::envelope::Prepared,
    ) -> Result<Delivery> {
        if let Some(err) = self.unreachable(&account.name) {
            return Err(err);
        }
        if !worker.is_open_to(&account.name) {
            worker.close();
            match Transport::open(account, self.verbose) {
                Ok(session) => worker.session = Some((account.name.clone(), session)),
                Err(err) => {
                    self.set_unreachable(&account.name, &err);
                    return Err(err);
                }
            }
        }
        let (_, session) = worker.session.as_mut().expect("a session was just opened");
        let result = session.send(message);
        if let Err(err) = &result {
            // An API that asked for a pause is not asked again in this flush; nor is an
            // account whose failure holds it, and the account's other connections learn
            // it now, before this one's bookkeeping (see `update_hold`).
            let holds = hold::for_failure(err, self.config.queue.quota_hold).is_some();
            if holds || err.wait_asked().is_some() {
                self.set_unreachable(&account.name, err);
            }
        }
        result
    }

    /// Why the account cannot be sent through in this flush, if it cannot.
    fn unreachable(&self, account: &str) -> Option<Error> {
        let state = self.state();
        let found = state.unreachable.iter().find(|(name, _)| name == account);
        found.map(|(_, err)| err.clone())
    }

    fn set_unreachable(&self, account: &str, err: &Error) {
        let mut state = self.state();
        if !state.unreachable.iter().any(|(name, _)| name == account) {
            state.unreachable.push((account.to_string(), err.clone()));
        }
    }

    /// Saves a message no one else can be given, and says where it went.
    fn to_dead_letter<'m>(
        &self,
        message: impl Into<Raw<'m>>,
        sender: &str,
        recipients: &[String],
    ) -> String {
        let _one = lock(&self.dead_letter);
        match dead_letter::save(message, sender, recipients) {
            Ok(Some(path)) => format!("saved to {}", path.display()),
            Ok(None) => "not saved (it was empty)".into(),
            Err(err) => format!("LOST: {err}"),
        }
    }

    /// Tells the sender which recipients will not get the message, and returns what was
    /// done. A null sender gets no bounce (that would loop), and a bounce that cannot be
    /// sent: the message goes to dead.letter instead, so someone can still read it.
    fn bounce(
        &self,
        worker: &mut Worker,
        entry: &QueueEntry,
        account: Option<&Account>,
        failures: &[FailedRecipient],
        original: Body,
    ) -> String {
        // Read whole only here, for a refusal: the notice quotes its header, and
        // dead.letter keeps all of it.
        let original = match original.whole() {
            Ok(original) => original,
            Err(e) => {
                let why = crate::message::envelope::unreadable(e).summary();
                eprintln!(
                    "oauth-sendmail: cannot bounce queued message {}: {why}",
                    entry.id
                );
                return format!("the sender could not be told ({why})");
            }
        };
        let original = &original[..];
        let told = entry.notify.as_deref().unwrap_or(&entry.sender);
        let sent = match (told.is_empty(), account) {
            (false, Some(account)) => {
                let notice = bounce::build(entry, failures, account.address(), original);
                self.send(worker, account, &notice)
                    .and_then(|delivery| delivery.failure().map_or(Ok(()), Err))
                    .map_err(|err| err.summary())
            }
            _ => Err("the message has no sender to tell".to_string()),
        };
        if let Err(why) = sent {
            let kept = self.to_dead_letter(original, &entry.sender, &failed_addresses(failures));
            eprintln!(
                "oauth-sendmail: cannot bounce queued message {}: {why}; {kept}",
                entry.id
            );
            return format!("the sender could not be told ({why}): the message was {kept}");
        }
        format!("the sender <{told}> was sent a bounce")
    }
}

fn failed_addresses(failures: &[FailedRecipient]) -> Vec<String> {
    failures.iter().map(|f| f.address.clone()).collect()
}

/// A file read from a position on, leaving the file's own position alone.
struct ReadAt<'f> {
    file: &'f File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}
