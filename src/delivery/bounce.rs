//! Bounces: the delivery status notification (RFC 3464, multipart/report) that tells a
//! sender which recipients did not get their message, and why.

use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;

use crate::delivery::queue::QueueEntry;
use crate::message::envelope::{Envelope, Prepared};
use crate::sys::clock::rfc3339;

/// A recipient that will not get the message, with the reason.
#[derive(Clone, Debug, PartialEq)]
pub struct FailedRecipient {
    pub address: String,
    /// The server's reply or our own explanation (e.g. expiry).
    pub reason: String,
    /// An RFC 3463 status such as 5.1.1 (4.4.7 for a message that expired).
    pub status: String,
}

impl FailedRecipient {
    /// Refused by a server: the status is the one in its reply.
    pub fn refused(address: &str, reply: &str) -> FailedRecipient {
        FailedRecipient {
            address: address.to_string(),
            reason: reply.to_string(),
            status: status_of(reply),
        }
    }
}

/// Builds the bounce for `entry` from `from` (the account's address) to its sender, ready
/// to send from the null sender. `original` is the queued message; only its header block
/// is returned to the sender.
pub fn build(
    entry: &QueueEntry,
    failures: &[FailedRecipient],
    from: &str,
    original: &[u8],
) -> Prepared<'static> {
    // A relayed device's bounces go to its `notify` address, not to its sender.
    let told = entry.notify.as_deref().unwrap_or(&entry.sender);
    let hostname = hostname();
    let mut explanation = format!(
        "This is the mail system at host {hostname} (oauth-sendmail).\r\n\r\n\
         Your message could not be delivered to one or more recipients.\r\n\
         It was sent {}; the details follow.\r\n\r\n",
        rfc3339(entry.arrival)
    );
    for failure in failures {
        explanation.push_str(&format!("<{}>: {}\r\n", failure.address, failure.reason));
    }

    let mut status = format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        entry.id,
        arrival_date(entry.arrival)
    );
    for failure in failures {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\nDiagnostic-Code: smtp; {}\r\n",
            failure.address,
            failure.status,
            one_line(&failure.reason)
        ));
    }

    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", explanation),
            MimePart::new(
                ContentType::new("message/delivery-status"),
                status.into_bytes(),
            )
            .transfer_encoding("7bit"),
            MimePart::new(
                ContentType::new("text/rfc822-headers"),
                header_block(original).to_vec(),
            )
            .transfer_encoding("8bit"),
        ],
    );
    let data = MessageBuilder::new()
        .from(Address::new_address(Some("Mail Delivery System"), from))
        .to(Address::new_address(None::<&str>, told))
        .subject("Undelivered Mail Returned to Sender")
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(report)
        .write_to_vec()
        .expect("writing to a Vec cannot fail");
    Prepared {
        // The null sender: a bounce is never bounced (RFC 5321 4.5.5).
        envelope: Envelope {
            sender: String::new(),
            recipients: vec![told.to_string()],
        },
        eight_bit: !data.is_ascii(),
        head: data,
        body: crate::message::envelope::Body::Bytes(&[]),
        message_id: None,
    }
}

/// The status code for a server reply: its enhanced code when it has one ("550 5.1.1 ..."),
/// else 5.0.0.
pub fn status_of(reply: &str) -> String {
    reply
        .split_whitespace()
        .find(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "4" | "5")
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .unwrap_or("5.0.0")
        .to_string()
}

/// RFC 3464 §2.2.5: Arrival-Date is an RFC 5322 date-time ("Tue, 1 Dec 2026 22:09:23
/// +0000"), not the RFC 3339 of our logs.
fn arrival_date(unix: u64) -> String {
    mail_builder::headers::date::Date::new(unix as i64).to_rfc822()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn header_block(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &message[..end + 2],
        None => message,
    }
}

/// This host's name, as bounces and a local sender name it ("localhost" when unknown).
pub fn hostname() -> String {
    crate::sys::host::name().unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_names_each_failed_recipient_and_returns_the_headers() {
        let message = Prepared {
            envelope: Envelope {
                sender: "cron@x.org".into(),
                recipients: vec!["bad@y.org".into()],
            },
            head: b"Subject: nightly backup\r\nFrom: cron@x.org\r\n\r\nsecret body\r\n".to_vec(),
            body: crate::message::envelope::Body::Bytes(&[]),
            eight_bit: false,
            message_id: None,
        };
        let entry = QueueEntry::new("acct", &message, &message.envelope.recipients);
        let failures = [FailedRecipient::refused(
            "bad@y.org",
            "550 5.1.1 no such user",
        )];
        let notice = build(&entry, &failures, "me@x.org", &message.head);
        assert_eq!(notice.envelope.sender, "", "from the null sender");
        assert_eq!(notice.envelope.recipients, ["cron@x.org"]);
        let bounce = String::from_utf8(notice.head).unwrap();
        assert!(
            bounce.contains("Content-Type: multipart/report"),
            "{bounce}"
        );
        assert!(
            bounce.contains("report-type=\"delivery-status\"")
                || bounce.contains("report-type=delivery-status"),
            "{bounce}"
        );
        assert!(
            bounce
                .contains("Final-Recipient: rfc822; bad@y.org\r\nAction: failed\r\nStatus: 5.1.1"),
            "{bounce}"
        );
        assert!(bounce.contains("Subject: nightly backup"), "{bounce}");
        assert!(!bounce.contains("secret body"), "the body is not returned");
        assert!(bounce.contains("To: <cron@x.org>"), "{bounce}");
        let arrival = bounce
            .lines()
            .find_map(|l| l.strip_prefix("Arrival-Date: "))
            .expect("an Arrival-Date");
        // Parsed by mail-parser as an RFC 5322 date-time, to the second.
        let parsed = mail_parser::MessageParser::new()
            .parse(format!("Date: {arrival}\r\n\r\n").as_bytes())
            .and_then(|m| m.date().map(|d| d.to_timestamp()));
        assert_eq!(parsed, Some(entry.arrival as i64), "{arrival}");
        let parsed = mail_parser::MessageParser::new()
            .parse(bounce.as_bytes())
            .unwrap();
        assert_eq!(parsed.parts.len(), 4, "report + three parts");
    }

    #[test]
    fn status_from_reply() {
        assert_eq!(
            status_of("permanent error (550): 5.1.1 user unknown"),
            "5.1.1"
        );
        assert_eq!(status_of("550 no such user"), "5.0.0");
        assert_eq!(status_of("4.4.7 expired"), "4.4.7");
        assert_eq!(status_of("version 1.2.3 of x"), "5.0.0");
        assert_eq!(status_of("relay 1.2.3 said 5.1.1 no such user"), "5.1.1");
    }
}
