//! One delivery attempt of one message, whether sendmail sent it itself or the queue did:
//! what the server said of each recipient recorded in its queue entry (state, reply,
//! attempts, last error, next try, expiry), and the delivery log's record of it.

use std::time::{Duration, Instant};

use crate::config::QueueSettings;
use crate::delivery::bounce::FailedRecipient;
use crate::delivery::log::{Outcome, Record, Status};
use crate::delivery::queue::{QueueEntry, RecipientState};
use crate::error::Result;
use crate::smtp::client::Delivery;

/// Who made the attempt, which decides what the log calls a recipient's state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Route {
    /// sendmail itself; `queued` when what is still pending went to the queue.
    Direct { queued: bool },
    /// A flush of the queue.
    Queue,
}

impl Route {
    pub fn status(self, state: RecipientState) -> Status {
        match (self, state) {
            (_, RecipientState::Delivered) => Status::Sent,
            // The caller of a direct send got the refusal; from the queue, a bounce.
            (Route::Direct { .. }, RecipientState::Bounced) => Status::Failed,
            (Route::Queue, RecipientState::Bounced) => Status::Bounced,
            (Route::Direct { queued: true }, RecipientState::Pending) => Status::Queued,
            (Route::Direct { queued: false }, RecipientState::Pending) => Status::Failed,
            (Route::Queue, RecipientState::Pending) => Status::Deferred,
        }
    }
}

/// Records one attempt at `entry`'s recipients and counts it: the server's answer for
/// each (delivered, refused, or still pending with its words), or the failure that
/// stopped the whole message, the same for every pending recipient: refused when it is
/// permanent, else they wait. Returns the recipients refused now, for a bounce.
pub fn record(entry: &mut QueueEntry, result: &Result<Delivery>) -> Vec<FailedRecipient> {
    let mut failures = Vec::new();
    match result {
        Ok(delivery) => mark_answers(entry, delivery, &mut failures),
        Err(err) => {
            let reason = err.summary();
            let permanent = err.is_permanent();
            for recipient in entry
                .recipients
                .iter_mut()
                .filter(|r| r.state == RecipientState::Pending)
            {
                recipient.reply = Some(reason.clone());
                if permanent {
                    recipient.state = RecipientState::Bounced;
                    failures.push(FailedRecipient::refused(&recipient.address, &reason));
                }
            }
            if !permanent {
                entry.last_error = Some(reason);
            }
        }
    }
    entry.attempts += 1;
    failures
}

/// Marks what the server said of each recipient.
fn mark_answers(entry: &mut QueueEntry, delivery: &Delivery, failures: &mut Vec<FailedRecipient>) {
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
            failures.push(FailedRecipient::refused(&recipient.address, reply));
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

/// After an attempt from the queue that left recipients pending: the next try, or, once
/// the message is as old as the queue keeps one, the end for them (refused, 4.4.7).
pub fn schedule(
    entry: &mut QueueEntry,
    settings: &QueueSettings,
    failures: &mut Vec<FailedRecipient>,
) {
    if entry.pending().next().is_none() {
        return;
    }
    let now = crate::sys::clock::now();
    match now.saturating_sub(entry.arrival) >= settings.max_age.as_secs() {
        true => expire(entry, settings, failures),
        false => retry_later(entry, settings, now),
    }
}

/// The next try after the attempts counted so far, from `now` (unix seconds).
pub fn retry_later(entry: &mut QueueEntry, settings: &QueueSettings, now: u64) {
    entry.next_try = now + backoff(settings, entry.attempts).as_secs();
}

/// A server that asked not to be tried before some time (HTTP `Retry-After`) is not:
/// the next try of what is still pending waits at least that long from `now`.
pub fn not_before(entry: &mut QueueEntry, result: &Result<Delivery>, now: u64) {
    let asked = result.as_ref().err().and_then(|err| err.wait_asked());
    if let Some(wait) = asked.filter(|_| entry.pending().next().is_some()) {
        entry.next_try = entry.next_try.max(now + wait.as_secs());
    }
}

/// Gives up on the recipients still pending.
fn expire(entry: &mut QueueEntry, settings: &QueueSettings, failures: &mut Vec<FailedRecipient>) {
    let last = entry
        .last_error
        .clone()
        .unwrap_or_else(|| "no reason recorded".into());
    let why = format!(
        "gave up after {} attempts over {}: {last}",
        entry.attempts,
        crate::sys::clock::exactly(settings.max_age)
    );
    for recipient in entry
        .recipients
        .iter_mut()
        .filter(|r| r.state == RecipientState::Pending)
    {
        recipient.state = RecipientState::Bounced;
        recipient.reply = Some(why.clone());
        failures.push(FailedRecipient {
            address: recipient.address.clone(),
            reason: why.clone(),
            status: "4.4.7".into(),
        });
    }
}

/// The delivery log's record of an attempt at `entry` begun at `started`: one outcome
/// per recipient `tried`, in that order, as `route` names its state now.
pub fn log_record(
    entry: &QueueEntry,
    tried: &[String],
    queue_id: Option<&str>,
    route: Route,
    started: Instant,
) -> Record {
    let outcomes = tried
        .iter()
        .filter_map(|address| entry.recipients.iter().find(|r| &r.address == address))
        .map(|r| Outcome {
            address: r.address.clone(),
            status: route.status(r.state),
            reply: r.reply.clone(),
        })
        .collect();
    Record::new(
        queue_id.map(str::to_string),
        entry.message_id.clone(),
        &entry.account,
        &entry.sender,
        outcomes,
        entry.size,
        started,
    )
}

/// The wait after the `attempts`-th failure: the initial delay, doubled each time, capped.
pub fn backoff(settings: &QueueSettings, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    settings
        .retry_initial
        .saturating_mul(1 << doublings)
        .min(settings.retry_max)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let message = crate::message::envelope::Prepared {
            envelope: crate::message::envelope::Envelope {
                sender: "s@x.org".into(),
                recipients: vec![],
            },
            head: vec![],
            body: crate::message::envelope::Body::Bytes(&[]),
            eight_bit: false,
            message_id: None,
        };
        let all = [
            "a@x.org".to_string(),
            "b@x.org".to_string(),
            "c@x.org".to_string(),
        ];
        let mut entry = QueueEntry::new("acct", &message, &all);
        let delivery = Delivery {
            accepted: vec!["a@x.org".into()],
            refused: vec![("b@x.org".into(), "550 5.1.1 unknown".into())],
            deferred: vec![("c@x.org".into(), "451 4.3.0 later".into())],
            reply: Some("250 2.0.0 Ok: queued as 1A".into()),
        };
        let mut failures = record(&mut entry, &Ok(delivery));
        let states: Vec<RecipientState> = entry.recipients.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [
                RecipientState::Delivered,
                RecipientState::Bounced,
                RecipientState::Pending
            ]
        );
        assert_eq!(
            failures,
            [FailedRecipient::refused("b@x.org", "550 5.1.1 unknown")]
        );
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
