//! Intake through the real binary and the strict in-process SMTP server (it refuses lines
//! over 998 octets): header runs with no whitespace up to 200 KB and NUL bytes in a body
//! reach the server within the limits and decode back to what was written; what cannot be
//! made to fit is refused with 65; sender names are qualified, not aliased.

mod common;

use common::harness::{code, stderr, stdout, Harness};
use common::smtp_server::ServerOptions;

/// Why `data` must not be sent: a line over 998 octets or a NUL.
fn wire_problem(data: &[u8]) -> Option<String> {
    (1..)
        .zip(data.split(|&b| b == b'\n'))
        .find_map(|(n, line)| {
            let text = line.strip_suffix(b"\r").unwrap_or(line);
            match (text.len() > 998, text.contains(&0)) {
                (true, _) => Some(format!("line {n} has {} octets", text.len())),
                (_, true) => Some(format!("line {n} has a NUL")),
                _ => None,
            }
        })
}

/// The one message the server stored, after checking the run went well.
fn delivered(h: &Harness, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let o = h.sendmail(args, stdin);
    assert_eq!(
        code(&o),
        0,
        "stderr:\n{}\ntranscript:\n{}",
        stderr(&o),
        h.server.transcript()
    );
    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", h.server.transcript());
    let data = received[0].data.clone();
    if let Some(problem) = wire_problem(&data) {
        panic!("{problem}");
    }
    data
}

#[test]
fn long_whitespace_less_headers_arrive_folded_and_decode_back() {
    let h = Harness::new(ServerOptions::default());
    let token: String = (0..200_000u32)
        .map(|i| b"abcdefXYZ0123456789+/=_?"[(i * 7919 % 24) as usize] as char)
        .collect();
    let subject = format!("Backup of /srv/{}", "p\u{e9}riode".repeat(500));
    let ids: String = (0..400)
        .map(|i| format!("<{i}.thread@example.org>"))
        .collect();
    let recipients: Vec<String> = (0..120).map(|i| format!("user{i}@example.org")).collect();
    let message = format!(
        "From: Reports <reports@example.com>\nTo: {}\nSubject: {subject}\nReferences: {ids}\nX-Token: {token}\n\nbody line\n",
        recipients.join(",")
    );
    let data = delivered(&h, &["-t", "-i"], message.as_bytes());

    let parsed = mail_parser::MessageParser::default().parse(&data).unwrap();
    assert_eq!(parsed.subject(), Some(subject.as_str()));
    // mail-parser decodes encoded-words in an X- field only when told it is text.
    let with_token = mail_parser::MessageParser::new()
        .header_text(mail_parser::HeaderName::Other("X-Token".into()))
        .parse(&data)
        .unwrap();
    let token_back = with_token
        .header("X-Token")
        .and_then(|v| v.as_text())
        .map(str::trim);
    assert_eq!(token_back, Some(token.as_str()), "X-Token changed");
    let to: Vec<&str> = parsed
        .to()
        .unwrap()
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(to, recipients);
    let references: Vec<String> = parsed
        .references()
        .as_text_list()
        .unwrap()
        .iter()
        .map(|id| format!("<{id}>"))
        .collect();
    assert_eq!(references.concat(), ids);
    assert_eq!(parsed.body_text(0).as_deref(), Some("body line\r\n"));
    let mut rcpt = h.server.received()[0].rcpt_to.clone();
    rcpt.sort();
    let mut want = recipients.clone();
    want.sort();
    assert_eq!(rcpt, want);
}

#[test]
fn nul_bytes_in_a_body_are_encoded_and_decode_back() {
    // A single-part message.
    let h = Harness::new(ServerOptions::default());
    let body = b"col1\0col2\r\n\0\0\r\nend\r\n";
    let message = [&b"Subject: dump\nTo: a@example.org\n\n"[..], body].concat();
    let data = delivered(&h, &["-t", "-i"], &message);
    let parsed = mail_parser::MessageParser::default().parse(&data).unwrap();
    assert_eq!(parsed.parts[0].contents(), body);

    // A multipart message: only the part with the NUL is re-encoded.
    let h = Harness::new(ServerOptions::default());
    let message = b"Subject: s\nTo: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XX\"\n\n--XX\nContent-Type: text/plain\n\nplain text\n--XX\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"core\"\n\n\x7fELF\0\0\0\x01\n--XX--\n";
    let data = delivered(&h, &["-t", "-i"], message);
    let text = String::from_utf8_lossy(&data);
    assert!(
        text.contains("Content-Type: text/plain\r\n\r\nplain text\r\n"),
        "{text}"
    );
    let parsed = mail_parser::MessageParser::default().parse(&data).unwrap();
    let attachment = parsed.attachment(0).expect("the attachment");
    assert_eq!(attachment.contents(), b"\x7fELF\0\0\0\x01");
}

#[test]
fn what_cannot_fit_is_refused_with_65_and_the_reason() {
    let mut h = Harness::new(ServerOptions::default());
    h.server.expect_unused();
    let message = format!("To: a@example.org\nDate: {}\n\nbody\n", "x".repeat(3000));
    let o = h.sendmail(&["-t", "-i"], message.as_bytes());
    assert_eq!(code(&o), 65, "{}", stderr(&o));
    assert!(stderr(&o).contains("header `Date`"), "{}", stderr(&o));
    assert!(stderr(&o).contains("998"), "{}", stderr(&o));

    let o = h.sendmail(&["-t", "-i"], b"To: a@example.org\nSubject: a\0b\n\nbody\n");
    assert_eq!(code(&o), 65, "{}", stderr(&o));
    assert!(stderr(&o).contains("header `Subject`"), "{}", stderr(&o));
    assert!(stderr(&o).contains("NUL"), "{}", stderr(&o));
    assert!(h.server.received().is_empty());
}

/// Postfix's rule: aliases say where mail to a name goes; a sender name is qualified.
#[test]
fn sender_names_are_qualified_while_recipients_follow_aliases() {
    let h = Harness::new(ServerOptions::default());
    let o = h.sendmail(
        &["--dry-run", "-t", "-f", "root"],
        b"From: root\nTo: root\nSubject: s\n\nb\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Envelope sender: <root@example.com>"), "{out}");
    assert!(
        out.contains("Envelope recipients: <admin@example.com>"),
        "{out}"
    );
    assert!(out.contains("From: <root@example.com>\r\n"), "{out}");
    assert!(out.contains("\r\nTo: <admin@example.com>\r\n"), "{out}");

    let data = delivered(&h, &["-i", "-f", "root", "root"], b"From: root\n\nb\n");
    let received = &h.server.received()[0];
    assert_eq!(received.mail_from, "root@example.com");
    assert_eq!(received.rcpt_to, ["admin@example.com"]);
    assert!(String::from_utf8_lossy(&data).starts_with("From: <root@example.com>\r\n"));
}
