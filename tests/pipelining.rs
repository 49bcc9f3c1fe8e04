//! RFC 2920 pipelining against the in-process SMTP server: where PIPELINING is offered,
//! MAIL, every RCPT and DATA go in one write (the server sees them in one read) and each
//! recipient keeps its own answer; where it is not, one command at a time, as before. When
//! no recipient is accepted the server refuses the pipelined DATA and the text is not sent.

mod common;

use std::process::Output;

use common::harness::{code, stderr, stdout, Harness};
use common::smtp_server::{Fault, ServerOptions};

const MESSAGE: &[u8] = b"To: a@example.com\nSubject: pipelining\n\nthe pipelined body\n";
const BODY_LINE: &str = "the pipelined body";

fn explain(h: &Harness, o: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- server ---\n{}",
        o.status,
        stdout(o),
        stderr(o),
        h.server.transcript()
    )
}

fn server(pipelining: bool, fault: Fault) -> Harness {
    Harness::new(ServerOptions {
        pipelining,
        fault,
        ..ServerOptions::default()
    })
}

/// Three recipients, the middle one refused: the other two get the message, the refused
/// one is named, exit 67 (EX_NOUSER) as without pipelining.
fn one_refused_of_three(pipelining: bool) {
    let h = server(pipelining, Fault::Rcpt550("bad@example.com".into()));
    let o = h.send(
        &["-i", "a@example.com", "bad@example.com", "c@example.com"],
        MESSAGE,
    );
    assert_eq!(code(&o), 67, "{}", explain(&h, &o));
    assert!(
        stderr(&o).contains("recipient bad@example.com refused: 550 5.1.1"),
        "{}",
        explain(&h, &o)
    );
    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", explain(&h, &o));
    assert_eq!(received[0].rcpt_to, ["a@example.com", "c@example.com"]);
    assert!(String::from_utf8_lossy(&received[0].data).contains(BODY_LINE));
    assert_eq!(
        received[0].pipelined,
        pipelining,
        "MAIL, RCPTs and DATA in one read: {}, PIPELINING offered: {pipelining}\n{}",
        received[0].pipelined,
        explain(&h, &o)
    );
}

#[test]
fn offered_pipelining_sends_the_envelope_in_one_flight() {
    one_refused_of_three(true);
}

#[test]
fn without_pipelining_one_command_at_a_time() {
    one_refused_of_three(false);
}

#[test]
fn every_recipient_refused_the_pipelined_data_is_refused_and_no_text_sent() {
    let h = server(true, Fault::Rcpt550("bad@example.com".into()));
    let o = h.send(&["-i", "bad@example.com"], MESSAGE);
    assert_eq!(code(&o), 67, "{}", explain(&h, &o));
    assert!(h.server.received().is_empty());
    let transcript = h.server.transcript();
    // The server answered the DATA that came with the RCPT, then the client reset.
    let data = transcript.find("C: DATA").expect("DATA was pipelined");
    let after = &transcript[data..];
    assert!(after.contains("S: 503"), "{transcript}");
    assert!(
        !after.contains(BODY_LINE),
        "the text was sent: {transcript}"
    );
    assert!(after.contains("C: RSET"), "{transcript}");
}

#[test]
fn several_messages_in_one_session_each_pipelined() {
    let h = server(true, Fault::None);
    // Queued while the server refuses for now, then drained in one session.
    h.server.set_fault(Fault::Data451);
    for n in 0..3 {
        let o = h.sendmail(&["-i", &format!("r{n}@example.com")], MESSAGE);
        assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    }
    h.server.set_fault(Fault::None);
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    let received = h.server.received();
    assert_eq!(received.len(), 3, "{}", explain(&h, &o));
    assert!(received.iter().all(|r| r.pipelined), "{}", explain(&h, &o));
}
