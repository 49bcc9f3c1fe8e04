//! The queue commands (`mailq`, `sendmail -q`, `queue show|retry|remove`) and how the
//! queue is shown: the spool itself is delivery::queue's.

use std::io::{self, Write};
use std::path::Path;

use crate::commands::stdout_error;
use crate::config::Config;
use crate::delivery::flush::{Flusher, Selection};
use crate::delivery::queue::{Queue, QueueEntry, RecipientState, Unreadable, CORRUPT};
use crate::error::{Error, Kind, Result};

/// The configured queue, with what waits in the default queue moved into it first (a
/// message sent while the configuration could not be read is queued there); `None` when
/// nothing was ever queued.
fn configured_queue(config: &Config) -> Result<Option<Queue>> {
    let default = crate::config::QueueSettings::default().dir;
    if default != config.queue.dir {
        if let Some(strays) = Queue::existing(&default) {
            if !strays.ids()?.is_empty() {
                let moved = Queue::open(&config.queue.dir)?.adopt(&strays)?;
                if moved > 0 {
                    eprintln!(
                        "oauth-sendmail: moved {moved} message(s) from {} into the queue {}",
                        default.display(),
                        config.queue.dir.display()
                    );
                }
            }
        }
    }
    Ok(Queue::existing(&config.queue.dir))
}

/// `mailq`: the queue in the layout of Postfix's mailq.
pub fn list_queue(config_path: Option<&Path>) -> Result<()> {
    let config = Config::load(config_path)?;
    let (entries, unreadable) = match configured_queue(&config)? {
        Some(queue) => queue.scan()?,
        None => Default::default(),
    };
    let mut out = io::stdout().lock();
    render_listing(&entries, &unreadable, &mut out).map_err(stdout_error)
}

/// `sendmail -q`, `queue flush`, `queue retry`: deliver what is selected.
pub fn flush_queue(config_path: Option<&Path>, selection: Selection, verbose: bool) -> Result<()> {
    let config = Config::load(config_path)?;
    let Some(queue) = configured_queue(&config)? else {
        return Ok(());
    };
    // `systemctl stop`, `timeout`, ^C: the message in flight and its bookkeeping finish,
    // then the flush stops.
    crate::sys::signals::defer_stop();
    let report = Flusher::new(&config, &queue, verbose, None).run(selection, None)?;
    if let Some(signal) = report.stopped {
        eprintln!(
            "oauth-sendmail: stopped by {signal}; the rest of the queue waits for the next flush"
        );
    } else if report.busy {
        eprintln!("oauth-sendmail: another flush is running; it will deliver the queue");
    } else if verbose {
        eprintln!(
            "delivered {}, deferred {}, bounced {}",
            report.delivered, report.deferred, report.bounced
        );
    }
    Ok(())
}

/// `queue retry`: those messages now (all of them when none is named), whatever their
/// retry time.
pub fn retry_queued(config_path: Option<&Path>, ids: Vec<String>) -> Result<()> {
    let selection = match ids.is_empty() {
        true => Selection::All,
        false => Selection::Ids(ids),
    };
    flush_queue(config_path, selection, true)
}

/// `queue show ID`: the state, then the message (a quarantined one: why, and what is
/// left of its message).
pub fn show_queued(config_path: Option<&Path>, id: &str) -> Result<()> {
    let config = Config::load(config_path)?;
    let mut out = io::stdout().lock();
    if let Some((bad, message)) = quarantined(&config, id) {
        return render_quarantined(&bad, message.as_deref(), &mut out).map_err(stdout_error);
    }
    let (queue, entry) = find_queued(&config, id)?;
    let message = queue.message(id)?;
    render_entry(&entry, &mut out)
        .and_then(|()| out.write_all(&message))
        .map_err(stdout_error)
}

/// A quarantined entry of the configured queue, and its message if it has one.
fn quarantined(config: &Config, id: &str) -> Option<(Unreadable, Option<Vec<u8>>)> {
    Queue::existing(&config.queue.dir)?.quarantined_one(id)
}

/// What `queue show` says of a quarantined entry: where and why, then its message.
pub fn render_quarantined(
    bad: &Unreadable,
    message: Option<&[u8]>,
    out: &mut impl Write,
) -> io::Result<()> {
    writeln!(
        out,
        "{}: quarantined in {}: {}
(`oauth-sendmail queue remove {}` deletes it)",
        bad.id,
        bad.dir.display(),
        bad.why,
        bad.id
    )?;
    match message {
        Some(message) => {
            writeln!(out)?;
            out.write_all(message)
        }
        None => writeln!(out, "(its message file is gone)"),
    }
}

/// `queue remove ID...`: out of the queue, unsent (a message being delivered is left).
pub fn remove_queued(config_path: Option<&Path>, ids: &[String]) -> Result<()> {
    let config = Config::load(config_path)?;
    for id in ids {
        if let Some(queue) = Queue::existing(&config.queue.dir) {
            if queue.remove_quarantined(id)? {
                println!("{id}: removed (it was quarantined)");
                continue;
            }
        }
        let (queue, _) = find_queued(&config, id)?;
        if !remove_one(&queue, id)? {
            return Err(Error::new(
                Kind::Temporary,
                format!("cannot remove {id}"),
                "it is being delivered right now",
            ));
        }
    }
    Ok(())
}

/// `queue remove --all`: every message not being delivered right now.
pub fn remove_all_queued(config_path: Option<&Path>) -> Result<()> {
    let config = Config::load(config_path)?;
    let empty = || {
        println!("the queue is empty");
        Ok(())
    };
    let Some(queue) = Queue::existing(&config.queue.dir) else {
        return empty();
    };
    let ids = queue.ids()?;
    if ids.is_empty() {
        return empty();
    }
    let mut busy = Vec::new();
    for id in &ids {
        if !remove_one(&queue, id)? {
            busy.push(id.as_str());
        }
    }
    super::busy(&busy)
}

/// Removes `id` unless a flusher holds it; false when it does.
fn remove_one(queue: &Queue, id: &str) -> Result<bool> {
    let Some(_lock) = queue.lock(id)? else {
        return Ok(false);
    };
    queue.remove(id)?;
    println!("{id}: removed");
    Ok(true)
}

fn find_queued(config: &Config, id: &str) -> Result<(Queue, QueueEntry)> {
    let not_queued = || {
        Error::new(
            Kind::Usage,
            format!("no queued message {id}"),
            "see `oauth-sendmail queue list`",
        )
    };
    let queue = Queue::existing(&config.queue.dir).ok_or_else(not_queued)?;
    let entry = queue.load(id)?.ok_or_else(not_queued)?;
    Ok((queue, entry))
}

/// The queue as Postfix's mailq shows it: first the entries that cannot be read, and where
/// they are; then id, size, arrival, sender, the last error in parentheses and the
/// recipients still waiting.
pub fn render_listing(
    entries: &[QueueEntry],
    unreadable: &[Unreadable],
    out: &mut impl Write,
) -> io::Result<()> {
    for bad in unreadable {
        let state = match bad.quarantined {
            true => "quarantined in",
            false => "unreadable, moves at the next flush to",
        };
        let corrupt = match bad.quarantined {
            true => bad.dir.clone(),
            false => bad.dir.join(CORRUPT),
        };
        writeln!(
            out,
            "{:<24} ({state} {}): {}",
            bad.id,
            corrupt.display(),
            bad.why
        )?;
    }
    if entries.is_empty() {
        return writeln!(out, "Mail queue is empty");
    }
    writeln!(
        out,
        "{:<24} {:>8} {:<20}  Sender/Recipient",
        "-Queue ID-", "--Size--", "---Arrival Time---"
    )?;
    let mut total = 0;
    for entry in entries {
        total += entry.size;
        let sender = match (entry.sender.is_empty(), &entry.intake) {
            (true, Some(_)) => "(sender chosen at delivery)",
            (true, None) => "MAILER-DAEMON",
            (false, _) => &entry.sender,
        };
        writeln!(
            out,
            "{:<24} {:>8} {:<20}  {sender}",
            entry.id,
            entry.size,
            crate::sys::clock::rfc3339(entry.arrival)
        )?;
        let error = entry.last_error.as_deref().unwrap_or("not tried yet");
        writeln!(
            out,
            "{:56}(attempts: {}, next try: {}) {error}",
            "",
            entry.attempts,
            crate::sys::clock::rfc3339(entry.next_try)
        )?;
        for recipient in entry.pending() {
            writeln!(out, "{:56}{}", "", recipient.address)?;
        }
        if let Some(intake) = &entry.intake {
            for recipient in &intake.recipients {
                writeln!(out, "{:56}{recipient}", "")?;
            }
            if intake.extract_recipients {
                writeln!(out, "{:56}(and those in its headers: -t)", "")?;
            }
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "-- {} Kbytes in {} Request{}.",
        total.div_ceil(1024),
        entries.len(),
        if entries.len() == 1 { "" } else { "s" }
    )
}

/// `queue show`: the entry's state, one field a line, then a blank line.
pub fn render_entry(entry: &QueueEntry, out: &mut impl Write) -> io::Result<()> {
    let time = crate::sys::clock::rfc3339;
    writeln!(out, "Queue-ID: {}", entry.id)?;
    writeln!(out, "Account: {}", entry.account)?;
    writeln!(out, "Sender: <{}>", entry.sender)?;
    for recipient in &entry.recipients {
        let state = match recipient.state {
            RecipientState::Pending => "pending",
            RecipientState::Delivered => "delivered",
            RecipientState::Bounced => "bounced",
        };
        let reply = recipient
            .reply
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        writeln!(out, "Recipient: <{}> {state}{reply}", recipient.address)?;
    }
    if let Some(intake) = &entry.intake {
        // Held before intake: what it was given, to be prepared at delivery.
        let mut given: Vec<String> = intake.recipients.clone();
        if intake.extract_recipients {
            given.insert(0, "-t".into());
        }
        writeln!(out, "Held-Until-Setup: {}", given.join(" "))?;
    }
    writeln!(out, "Arrival: {}", time(entry.arrival))?;
    writeln!(out, "Attempts: {}", entry.attempts)?;
    writeln!(out, "Next-Try: {}", time(entry.next_try))?;
    if let Some(error) = &entry.last_error {
        writeln!(out, "Last-Error: {error}")?;
    }
    writeln!(out, "Size: {}", entry.size)?;
    writeln!(out)
}
