//! Delivering the queue: one flusher at a time, each message locked while in flight, one
//! connection per account reused for consecutive messages, retries with exponential
//! backoff, and a bounce when a recipient is refused or the message grows too old.

use std::time::{Duration, Instant};

use crate::config::{Account, Config};
use crate::delivery::attempt::{self, Route};
use crate::delivery::bounce::{self, FailedRecipient};
use crate::delivery::dead_letter;
use crate::delivery::hold::{Hold, Holds};
use crate::delivery::log::{DeliveryLog, Outcome, Record, Status};
use crate::delivery::queue::{Intake, Queue, QueueEntry};
use crate::delivery::transport::Transport;
use crate::error::{Error, Kind, Result};
use crate::message::envelope::Body;
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
    config: &'a Config,
    queue: &'a Queue,
    log: DeliveryLog,
    verbose: bool,
    /// The open connection, and its account's name.
    session: Option<(String, Transport)>,
    /// Accounts that could not be reached in this flush, with why: not tried again for
    /// each of their messages.
    unreachable: Vec<(String, Error)>,
    /// Accounts whose whole queue waits (see `hold`), as recorded when the flush began.
    holds: Holds,
    held: Vec<Hold>,
    /// Accounts a message went out through in this flush: reachable now.
    reached: Vec<String>,
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
            config,
            queue,
            log: DeliveryLog::new(&config.queue.log_file),
            verbose,
            unreachable: Vec::new(),
            holds: Holds::of_queue(&config.queue.dir),
            held: Vec::new(),
            // A session handed over has just delivered a message.
            reached: session.iter().map(|(name, _)| name.clone()).collect(),
            session,
        }
    }

    /// Tries the selected messages until done, `deadline`, or a stop signal (the message
    /// in flight is finished first: see `signals`).
    pub fn run(mut self, selection: Selection, deadline: Option<Instant>) -> Result<Report> {
        let mut report = Report::default();
        let Some(_flusher) = self.queue.lock_flusher()? else {
            report.busy = true;
            self.close();
            return Ok(report);
        };
        // No writer takes an hour between its two renames.
        self.queue.remove_leftovers(Duration::from_secs(3600));
        let now = crate::sys::clock::now();
        let (mut entries, unreadable) = self.queue.scan()?;
        for bad in unreadable.iter().filter(|bad| !bad.quarantined) {
            self.quarantine(&bad.id, &bad.why);
        }
        let waiting = entries.clone();
        self.held = self.holds.all();
        // A held account's messages wait, unless a person forces them (`sendmail -q`,
        // `queue retry`): the first one then probes the account.
        let held = |account: &str| {
            self.held
                .iter()
                .any(|h| h.account == account && h.is_active(now))
        };
        entries.retain(|entry| match &selection {
            Selection::Due => entry.is_due(now) && !held(&entry.account),
            Selection::DueFor(account) => {
                entry.is_due(now) && &entry.account == account && !held(account)
            }
            Selection::Ids(ids) => ids.contains(&entry.id),
            Selection::All => true,
        });
        // Consecutive messages of one account share a connection.
        entries.sort_by(|a, b| (&a.account, &a.id).cmp(&(&b.account, &b.id)));
        for entry in entries {
            if let Some(signal) = signals::stop_requested() {
                report.stopped = Some(signal);
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            self.count(&entry.id, &mut report)?;
        }
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
            let early: Vec<String> = waiting
                .into_iter()
                .filter(|e| !e.is_due(now) && rested(e) && self.reached.contains(&e.account))
                .filter(|e| {
                    !self
                        .held
                        .iter()
                        .any(|h| h.account == e.account && h.is_active(now))
                })
                .map(|e| e.id)
                .collect();
            for id in early {
                if signals::stop_requested().is_some()
                    || deadline.is_some_and(|d| Instant::now() >= d)
                {
                    break;
                }
                self.count(&id, &mut report)?;
            }
        }
        self.close();
        Ok(report)
    }

    /// One attempt, counted in the report.
    fn count(&mut self, id: &str, report: &mut Report) -> Result<()> {
        match self.attempt(id, report)? {
            Some(Status::Sent) => report.delivered += 1,
            Some(Status::Bounced) => report.bounced += 1,
            Some(_) => report.deferred += 1,
            None => {}
        }
        Ok(())
    }

    fn close(&mut self) {
        if let Some((_, session)) = self.session.take() {
            session.close();
        }
    }

    /// Moves an entry that cannot be read out of the way, says so once (stderr and the
    /// delivery log), and lets the flush go on.
    fn quarantine(&mut self, id: &str, why: &str) {
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
        self.log.append_or_warn(&record);
    }

    /// One delivery attempt of one message: what became of it (`Sent` when every
    /// recipient has it, `Bounced` when the rest were refused, else `Deferred`), or `None`
    /// when another process has it or it has left the queue.
    fn attempt(&mut self, id: &str, report: &mut Report) -> Result<Option<Status>> {
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
            // Intake needs the text whole, as it did when it came (a held message).
            return match data.whole() {
                Ok(text) => self.prepare_held(entry, intake, &text, report),
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
            Some(account) => self.send(account, &message),
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
            let told = self.bounce(&entry, account.as_ref(), &failures, data);
            if let Some(err) = refusal {
                report.refused.push((entry.id.clone(), err.hint(told)));
            }
        }
        let record =
            attempt::log_record(&entry, &attempted, Some(&entry.id), Route::Queue, started);
        self.log.append_or_warn(&record);
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
        &mut self,
        mut held: QueueEntry,
        intake: Intake,
        data: &[u8],
        report: &mut Report,
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
                return self.attempt(&ready.id, report);
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
                let kept = to_dead_letter(data, &held.sender, &intake.recipients);
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
        self.log.append_or_warn(&record);
        Ok(Some(match status {
            Status::Failed => Status::Bounced,
            other => other,
        }))
    }

    /// Holds the account after a failure that is the account's (the rest of its messages
    /// wait with it, and this one until the hold is over), or ends its hold after a
    /// delivery.
    fn update_hold(&mut self, result: &Result<Delivery>, entry: &mut QueueEntry) {
        let account = entry.account.clone();
        let account = account.as_str();
        match result {
            Ok(_) => {
                if !self.reached.iter().any(|n| n == account) {
                    self.reached.push(account.to_string());
                }
                if let Some(at) = self.held.iter().position(|h| h.account == account) {
                    self.holds.clear(account);
                    self.held.remove(at);
                }
            }
            Err(err) => {
                let known = self
                    .held
                    .iter()
                    .position(|h| h.account == account && h.is_active(crate::sys::clock::now()));
                let hold = match known {
                    // Already held in this flush: the rest of the account's messages.
                    Some(at) if self.unreachable.iter().any(|(n, _)| n == account) => {
                        Some(self.held[at].clone())
                    }
                    _ => self
                        .holds
                        .after_failure(account, err, self.config.queue.quota_hold),
                };
                if let Some(hold) = hold {
                    // The account's wait, not the message's backoff: it goes when the
                    // account may send again.
                    if entry.pending().next().is_some() {
                        entry.next_try = hold.until;
                    }
                    if !self.unreachable.iter().any(|(n, _)| n == account) {
                        self.unreachable
                            .push((account.to_string(), hold.as_error()));
                    }
                    self.held.retain(|h| h.account != account);
                    self.held.push(hold);
                }
            }
        }
    }

    /// Sends through the open session for `account`, opening one when needed.
    fn send(
        &mut self,
        account: &Account,
        message: &crate::message::envelope::Prepared,
    ) -> Result<Delivery> {
        if let Some((_, err)) = self
            .unreachable
            .iter()
            .find(|(name, _)| name == &account.name)
        {
            return Err(err.clone());
        }
        let reusable = matches!(&self.session, Some((name, session)) if name == &account.name && session.is_usable());
        if !reusable {
            self.close();
            match Transport::open(account, self.verbose) {
                Ok(session) => self.session = Some((account.name.clone(), session)),
                Err(err) => {
                    self.unreachable.push((account.name.clone(), err.clone()));
                    return Err(err);
                }
            }
        }
        let (_, session) = self.session.as_mut().expect("a session was just opened");
        let result = session.send(message);
        if let Err(err) = &result {
            // An API that asked for a pause is not asked again in this flush.
            if err.wait_asked().is_some() {
                self.unreachable.push((account.name.clone(), err.clone()));
            }
        }
        result
    }

    /// Tells the sender which recipients will not get the message, and returns what was
    /// done. A null sender gets no bounce (that would loop), and a bounce that cannot be
    /// sent: the message goes to dead.letter instead, so someone can still read it.
    fn bounce(
        &mut self,
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
                self.send(account, &notice)
                    .and_then(|delivery| delivery.failure().map_or(Ok(()), Err))
                    .map_err(|err| err.summary())
            }
            _ => Err("the message has no sender to tell".to_string()),
        };
        if let Err(why) = sent {
            let kept = to_dead_letter(original, &entry.sender, &failed_addresses(failures));
            eprintln!(
                "oauth-sendmail: cannot bounce queued message {}: {why}; {kept}",
                entry.id
            );
            return format!("the sender could not be told ({why}): the message was {kept}");
        }
        format!("the sender <{told}> was sent a bounce")
    }
}

/// Saves a message no one else can be given, and says where it went.
fn to_dead_letter(message: &[u8], sender: &str, recipients: &[String]) -> String {
    match dead_letter::save(message, sender, recipients) {
        Ok(Some(path)) => format!("saved to {}", path.display()),
        Ok(None) => "not saved (it was empty)".into(),
        Err(err) => format!("LOST: {err}"),
    }
}

fn failed_addresses(failures: &[FailedRecipient]) -> Vec<String> {
    failures.iter().map(|f| f.address.clone()).collect()
}
