//! `oauth-sendmail log`: the delivery log read back, filtered, and shown as a table, CSV
//! or JSON lines; writing it is delivery::log's.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use crate::commands::stdout_error;
use crate::config::Config;
use crate::delivery::log::{DeliveryLog, Outcome, Record, Status};
use crate::error::Result;

/// `oauth-sendmail log`: the delivery attempts, newest last.
pub fn show_log(
    config_path: Option<&Path>,
    since: Option<Duration>,
    status: Option<Status>,
    format: Format,
) -> Result<()> {
    let config = Config::load(config_path)?;
    let oldest = since.map_or(0, |age| {
        crate::sys::clock::now().saturating_sub(age.as_secs())
    });
    let log_file = &config.queue.log_file;
    let mut records = DeliveryLog::new(log_file).read()?;
    let logged = records.len();
    records.retain(|r| r.unix >= oldest && status.is_none_or(|s| r.result == s));
    let mut out = io::stdout().lock();
    render(&records, format, &mut out).map_err(stdout_error)?;
    // On stderr, so that CSV and JSON on stdout stay just that.
    match (records.is_empty(), logged) {
        (false, _) => {}
        (true, 0) => eprintln!("no deliveries logged in {}", log_file.display()),
        (true, n) => eprintln!(
            "none of the {n} deliveries logged in {} match",
            log_file.display()
        ),
    }
    Ok(())
}

/// The output formats of `oauth-sendmail log`.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl Format {
    /// Its name on the command line (`--format csv`) and on the service's socket.
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// CSV and table rows are one per recipient of an attempt, so a spreadsheet can filter.
const COLUMNS: [&str; 11] = [
    "time",
    "queue_id",
    "message_id",
    "account",
    "sender",
    "recipient",
    "status",
    "reply",
    "size",
    "duration_ms",
    "result",
];

pub fn render(records: &[Record], format: Format, out: &mut impl Write) -> io::Result<()> {
    match format {
        Format::Json => {
            for record in records {
                serde_json::to_writer(&mut *out, record)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => {
            writeln!(out, "{}", COLUMNS.join(","))?;
            for row in rows(records) {
                let cells: Vec<String> = row.iter().map(|cell| csv_cell(cell)).collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
        Format::Table => {
            writeln!(
                out,
                "{:<20}  {:<8}  {:<22}  {:<30}  {:<30}  REPLY",
                "TIME", "STATUS", "QUEUE ID", "FROM", "TO"
            )?;
            for row in rows(records) {
                writeln!(
                    out,
                    "{:<20}  {:<8}  {:<22}  {:<30}  {:<30}  {}",
                    row[0], row[6], row[1], row[4], row[5], row[7]
                )?;
            }
        }
    }
    Ok(())
}

/// One row per recipient; a record without recipients (a quarantined entry) gets one row
/// of its own, its note as the reply.
fn rows(records: &[Record]) -> impl Iterator<Item = [String; 11]> + '_ {
    records.iter().flat_map(|r| {
        let alone = r.recipients.is_empty().then(|| Outcome {
            address: String::new(),
            status: r.result,
            reply: r.note.clone(),
        });
        r.recipients
            .iter()
            .cloned()
            .chain(alone)
            .map(move |recipient| {
                [
                    r.time.clone(),
                    r.queue_id.clone().unwrap_or_default(),
                    r.message_id.clone().unwrap_or_default(),
                    r.account.clone(),
                    r.sender.clone(),
                    recipient.address,
                    recipient.status.as_str().to_string(),
                    recipient.reply.unwrap_or_default(),
                    r.size.to_string(),
                    r.duration_ms.to_string(),
                    r.result.as_str().to_string(),
                ]
            })
    })
}

/// RFC 4180: quote a cell holding a comma, quote or line break; double inner quotes.
fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::log::tests::record;

    #[test]
    fn csv_quotes_what_needs_it() {
        let mut out = Vec::new();
        render(&[record(1, Status::Bounced)], Format::Csv, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), COLUMNS.join(","));
        assert_eq!(
            lines.next().unwrap(),
            "1970-01-01T00:00:01Z,ABC,<m@x>,gmail,me@x.org,a@x.org,bounced,\"250 2.0.0 OK, \"\"queued\"\"\",10,5,bounced"
        );
    }
}
