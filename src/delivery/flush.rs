//! Delivering the queue: one flusher at a time, each message locked while in flight, one
//! connection per account reused for consecutive messages, retries with exponential
//! backoff, and a bounce when a recipient is refused or the message grows too old.

use std::time::{Duration, Instant};

use crate::config::{Account, Config, QueueSettings};
use crate::delivery::bounce::{self, Failure};
use crate::delivery::dead_letter;
use crate::delivery::log::{DeliveryLog, Outcome, Record, Status};
use crate::delivery::queue::{Entry, Intake, Queue, RecipientState};
use crate::error::{Error, Kind, Result};
use crate::smtp::client::{Delivery, Session};
use crate::{auth::token, sys::signals};

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
    session: Option<(String, Session)>,
    /// Accounts that could not be reached in this flush, with why: not tried again for
    /// each of their messages.
    unreachable: Vec<(String, Error)>,
}

impl<'a> Flusher<'a> {
    /// `session` is a connection already open (after a direct send) to reuse.
    pub fn new(
        config: &'a Config,
        queue: &'a Queue,
        verbose: bool,
        session: Option<(String, Session)>,
    ) -> Flusher<'a> {
        Flusher {
            config,
            queue,
            log: DeliveryLog::new(&config.queue.log_file),
            verbose,
            session,
            unreachable: Vec::new(),
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
        entries.retain(|entry| match &selection {
            Selection::Due => entry.is_due(now),
            Selection::DueFor(account) => entry.is_due(now) && &entry.account == account,
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
            match self.attempt(&entry.id, &mut report)? {
                Some(Status::Sent) => report.delivered += 1,
                Some(Status::Bounced) => report.bounced += 1,
                Some(_) => report.deferred += 1,
                None => {}
            }
        }
        self.close();
        Ok(report)
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
        self.log(&record);
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
            .and_then(|entry| Ok((entry, self.queue.message(id)?)));
        let (mut entry, data) = match loaded {
            Ok((Some(entry), data)) => (entry, data),
            Ok((None, _)) => return Ok(None),
            Err(err) => {
                self.quarantine(id, &err.summary());
                return Ok(None);
            }
        };
        if let Some(intake) = entry.intake.take() {
            return self.prepare_held(entry, intake, &data, report);
        }
        let started = Instant::now();
        let message = entry.prepared(&data);
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

        let mut failures: Vec<Failure> = Vec::new();
        let mut refusal = None;
        match result {
            Ok(delivery) => {
                record_delivery(&mut entry, &delivery, &mut failures);
                refusal = delivery
                    .failure()
                    .filter(|e| !delivery.refused.is_empty() && e.is_permanent());
            }
            Err(err) if err.is_permanent() => {
                let reason = err.summary();
                for recipient in entry
                    .recipients
                    .iter_mut()
                    .filter(|r| r.state == RecipientState::Pending)
                {
                    recipient.state = RecipientState::Bounced;
                    recipient.reply = Some(reason.clone());
                    failures.push(Failure::refused(&recipient.address, &reason));
                }
                refusal = Some(err);
            }
            Err(err) => {
                let reason = err.summary();
                for recipient in entry
                    .recipients
                    .iter_mut()
                    .filter(|r| r.state == RecipientState::Pending)
                {
                    recipient.reply = Some(reason.clone());
                }
                entry.last_error = Some(reason);
            }
        }
        entry.attempts += 1;
        let now = crate::sys::clock::now();
        if entry.pending().next().is_some() {
            if now.saturating_sub(entry.arrival) >= self.config.queue.max_age.as_secs() {
                expire(&mut entry, &self.config.queue, &mut failures);
            } else {
                entry.next_try = now + backoff(&self.config.queue, entry.attempts).as_secs();
            }
        }
        // What the server accepted is on disk (fsync'd) before anything else happens:
        // before the bounce, the log, the next message. A crash or kill from here on
        // cannot send the message again to recipients that have it.
        match entry.pending().next() {
            None => self.queue.remove(id)?,
            Some(_) => self.queue.save(&entry)?,
        }
        if !failures.is_empty() {
            let told = self.bounce(&entry, account.as_ref(), &failures, &data);
            if let Some(err) = refusal {
                report.refused.push((entry.id.clone(), err.hint(told)));
            }
        }
        let outcomes: Vec<Outcome> = attempted
            .iter()
            .filter_map(|address| entry.recipients.iter().find(|r| &r.address == address))
            .map(|r| Outcome {
                address: r.address.clone(),
                status: match r.state {
                    RecipientState::Delivered => Status::Sent,
                    RecipientState::Bounced => Status::Bounced,
                    RecipientState::Pending => Status::Deferred,
                },
                reply: r.reply.clone(),
            })
            .collect();
        let record = Record::new(
            Some(entry.id.clone()),
            entry.message_id.clone(),
            &entry.account,
            &entry.sender,
            outcomes,
            entry.size,
            started,
        );
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
        &mut self,
        mut held: Entry,
        intake: Intake,
        data: &[u8],
        report: &mut Report,
    ) -> Result<Option<Status>> {
        let invocation = crate::cli::Invocation {
            extract_recipients: intake.extract_recipients,
            sender: intake.sender.clone(),
            full_name: intake.full_name.clone(),
            recipients: intake.recipients.clone(),
            account: intake.account.clone(),
            ..Default::default()
        };
        let err = match crate::delivery::send::prepare(self.config, &invocation, data) {
            Ok((account, prepared)) => {
                let mut ready = Entry::new(&account.name, &prepared, &prepared.envelope.recipients);
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
                held.next_try = now + backoff(&self.config.queue, held.attempts).as_secs();
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

    /// A log that cannot be written must not stop the flush: a warning instead.
    fn log(&self, record: &Record) {
        if let Err(err) = self.log.append(record) {
            eprintln!("oauth-sendmail: warning: {}", err.summary());
        }
    }

    /// Sends through the open session for `account`, opening one when needed.
    fn send(
        &mut self,
        account: &Account,
        message: &crate::message::intake::Prepared,
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
            let verbose = self.verbose;
            let opened = token::with_secret(account, verbose, |secret| {
                Session::open(account, secret, verbose)
            });
            match opened {
                Ok(session) => self.session = Some((account.name.clone(), session)),
                Err(err) => {
                    self.unreachable.push((account.name.clone(), err.clone()));
                    return Err(err);
                }
            }
        }
        let (_, session) = self.session.as_mut().expect("a session was just opened");
        session.send(message)
    }

    /// Tells the sender which recipients will not get the message, and returns what was
    /// done. A null sender gets no bounce (that would loop), and a bounce that cannot be
    /// sent: the message goes to dead.letter instead, so someone can still read it.
    fn bounce(
        &mut self,
        entry: &Entry,
        account: Option<&Account>,
        failures: &[Failure],
        original: &[u8],
    ) -> String {
        let told = entry.notify.as_deref().unwrap_or(&entry.sender);
        let sent = match (told.is_empty(), account) {
            (false, Some(account)) => {
                let data = bounce::build(entry, failures, account.address(), original);
                let notice = crate::message::intake::Prepared {
                    envelope: crate::message::intake::Envelope {
                        sender: String::new(),
                        recipients: vec![told.to_string()],
                    },
                    eight_bit: !data.is_ascii(),
                    head: data,
                    body: &[],
                    message_id: None,
                };
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

fn failed_addresses(failures: &[Failure]) -> Vec<String> {
    failures.iter().map(|f| f.address.clone()).collect()
}

/// Marks what the server said of each recipient.
fn record_delivery(entry: &mut Entry, delivery: &Delivery, failures: &mut Vec<Failure>) {
    for recipient in entry.recipients.iter_mut() {
        if delivery.accepted.contains(&recipient.address) {
            recipient.state = RecipientState::Delivered;
            recipient.reply = delivery.reply.clone();
        } else if let Some((_, reply)) = delivery
            .refused
            .iter()
            .find(|(a, _)| a == &recipient.address)
        {
            recipient.state = RecipientState::Bounced;
            recipient.reply = Some(reply.clone());
            failures.push(Failure::refused(&recipient.address, reply));
        } else if let Some((_, reply)) = delivery
            .deferred
            .iter()
            .find(|(a, _)| a == &recipient.address)
        {
            recipient.reply = Some(reply.clone());
            entry.last_error = Some(reply.clone());
        }
    }
}

/// Gives up on the recipients still pending.
fn expire(entry: &mut Entry, settings: &QueueSettings, failures: &mut Vec<Failure>) {
    let last = entry
        .last_error
        .clone()
        .unwrap_or_else(|| "no reason recorded".into());
    let why = format!(
        "gave up after {} attempts over {}: {last}",
        entry.attempts,
        human(settings.max_age)
    );
    for recipient in entry
        .recipients
        .iter_mut()
        .filter(|r| r.state == RecipientState::Pending)
    {
        recipient.state = RecipientState::Bounced;
        recipient.reply = Some(why.clone());
        failures.push(Failure {
            address: recipient.address.clone(),
            reason: why.clone(),
            status: "4.4.7".into(),
        });
    }
}

/// The wait after the `attempts`-th failure: the initial delay, doubled each time, capped.
pub fn backoff(settings: &QueueSettings, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    settings
        .retry_initial
        .saturating_mul(1 << doublings)
        .min(settings.retry_max)
}

/// "5 days", "4 hours", "90 seconds": the largest unit that divides the duration.
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (count, unit) = [(86400, "day"), (3600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| seconds >= *size && seconds.is_multiple_of(*size))
        .map_or((seconds, "second"), |(size, unit)| (seconds / size, unit));
    format!("{count} {unit}{}", if count == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(5 * 86400)), "5 days");
        assert_eq!(human(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human(Duration::from_secs(90)), "90 seconds");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let settings = QueueSettings::default();
        let minutes = |n| backoff(&settings, n).as_secs() / 60;
        assert_eq!(
            [minutes(1), minutes(2), minutes(3), minutes(9)],
            [1, 2, 4, 240]
        );
        assert_eq!(minutes(1000), 240);
    }

    #[test]
    fn delivery_marks_each_recipient() {
        let message = crate::message::intake::Prepared {
            envelope: crate::message::intake::Envelope {
                sender: "s@x.org".into(),
                recipients: vec![],
            },
            head: vec![],
            body: &[],
            eight_bit: false,
            message_id: None,
        };
        let all = [
            "a@x.org".to_string(),
            "b@x.org".to_string(),
            "c@x.org".to_string(),
        ];
        let mut entry = Entry::new("acct", &message, &all);
        let delivery = Delivery {
            accepted: vec!["a@x.org".into()],
            refused: vec![("b@x.org".into(), "550 5.1.1 unknown".into())],
            deferred: vec![("c@x.org".into(), "451 4.3.0 later".into())],
            reply: Some("250 2.0.0 Ok: queued as 1A".into()),
        };
        let mut failures = Vec::new();
        record_delivery(&mut entry, &delivery, &mut failures);
        let states: Vec<RecipientState> = entry.recipients.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [
                RecipientState::Delivered,
                RecipientState::Bounced,
                RecipientState::Pending
            ]
        );
        assert_eq!(failures, [Failure::refused("b@x.org", "550 5.1.1 unknown")]);
        let replies: Vec<Option<&str>> = entry
            .recipients
            .iter()
            .map(|r| r.reply.as_deref())
            .collect();
        assert_eq!(
            replies,
            [
                Some("250 2.0.0 Ok: queued as 1A"),
                Some("550 5.1.1 unknown"),
                Some("451 4.3.0 later")
            ]
        );
        assert_eq!(failures[0].status, "5.1.1");
        expire(&mut entry, &QueueSettings::default(), &mut failures);
        assert_eq!(entry.recipients[2].state, RecipientState::Bounced);
        assert_eq!(failures[1].status, "4.4.7");
    }
}
