//! The queue against the real binary and the in-process SMTP server: a message that cannot
//! go now is spooled and exits 0, goes out exactly once later, bounces with a readable DSN
//! when refused or too old, survives a writer or flusher killed at any point, and every
//! attempt is in the delivery log.

mod common;

use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::harness::{assert_no_secrets, code, explain, free_port, stderr, stdout, Harness, BIN};
use common::smtp_server::{Fault, ServerOptions, TestServer, TEST_USER};

const MESSAGE: &[u8] = b"To: rcpt@example.com\nSubject: queue test\n\nnightly report\n";

fn with_fault(fault: Fault) -> ServerOptions {
    ServerOptions {
        fault,
        ..ServerOptions::default()
    }
}

/// A harness whose config has the top-level `settings` (`queue`, `retry_initial`...).
fn harness(opts: ServerOptions, settings: &[(&str, &str)]) -> Harness {
    Harness::with_config(opts, |config| config.settings(settings))
}

fn ok(h: &Harness, o: &Output) {
    assert_eq!(code(o), 0, "{}", explain(h, o));
    assert_no_secrets(o);
}

/// The delivery log as JSON records.
fn log_records(h: &Harness) -> Vec<String> {
    let out = h.own(&["log", "--format", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    stdout(&out).lines().map(str::to_string).collect()
}

/// A harness whose account points at `port`, where no server listens (yet): the
/// harness's own server stays unused.
fn harness_on_port(port: u16, settings: &[(&str, &str)]) -> Harness {
    let mut h = Harness::with_config(ServerOptions::default(), |config| {
        config.settings(settings).port(port)
    });
    h.server.expect_unused();
    h
}

/// The "done when": server stopped, a cron pipe exits 0 and shows in mailq; the
/// server starts, `sendmail -q` delivers exactly once, the log shows both attempts.
#[test]
fn server_down_then_up_the_cron_mail_goes_out_once() {
    let port = free_port();
    let h = harness_on_port(port, &[]);

    // Debian cron's argv; the server is not there at all (connection refused).
    let o = h.sendmail(
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        MESSAGE,
    );
    ok(&h, &o);
    assert!(stderr(&o).contains("queued as"), "{}", explain(&h, &o));
    let mailq = {
        let link = h.home.path().join("bin/mailq");
        std::os::unix::fs::symlink(BIN, &link).unwrap();
        h.run(Command::new(link), b"")
    };
    assert!(
        stdout(&mailq).contains("admin@example.com"),
        "mailq: {}",
        stdout(&mailq)
    );
    assert!(
        stdout(&mailq).contains("1 Request."),
        "mailq: {}",
        stdout(&mailq)
    );

    let server = TestServer::start_on(ServerOptions::default(), port);
    let o = h.sendmail(&["-q"], b"");
    ok(&h, &o);
    let received = server.received();
    assert_eq!(received.len(), 1, "{}", server.transcript());
    assert_eq!(received[0].rcpt_to, ["admin@example.com"]);
    assert!(String::from_utf8_lossy(&received[0].data).ends_with("\r\n\r\nnightly report\r\n"));
    assert!(h.queue_listing().0.is_empty());

    // A second flush finds nothing: exactly once.
    ok(&h, &h.sendmail(&["-q"], b""));
    assert_eq!(server.received().len(), 1);

    let log = log_records(&h);
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].contains("\"result\":\"queued\""), "{}", log[0]);
    assert!(log[1].contains("\"result\":\"sent\""), "{}", log[1]);
    let id = h_first_queue_id(&log[0]);
    assert!(log[1].contains(&id), "both attempts name the queue id {id}");
}

fn h_first_queue_id(record: &str) -> String {
    let start = record.find("\"queue_id\":\"").expect("a queue id") + 12;
    record[start..].split('"').next().unwrap().to_string()
}

/// What the shipped timer runs (`queue flush`) leaves a message alone until its retry
/// time, then delivers it.
#[test]
fn greeting_421_then_success_delivers_on_the_next_flush() {
    let h = harness(with_fault(Fault::Greeting421), &[("retry_initial", "2s")]);
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    ok(&h, &o);
    assert_eq!(h.queue_listing().0.len(), 1);
    h.server.set_fault(Fault::None);
    ok(&h, &h.own(&["queue", "flush"]));
    assert!(
        h.server.received().is_empty(),
        "tried before its retry time"
    );
    thread::sleep(Duration::from_millis(2100));
    ok(&h, &h.own(&["queue", "flush"]));
    assert_eq!(h.server.received().len(), 1, "{}", h.server.transcript());
    assert!(h.queue_listing().0.is_empty());
    ok(&h, &h.own(&["queue", "flush"]));
    assert_eq!(h.server.received().len(), 1, "exactly once");
}

/// Recipients a server already accepted never get the message again: only the deferred
/// one is tried on the next flush.
#[test]
fn accepted_recipients_are_not_sent_the_message_again() {
    let h = harness(with_fault(Fault::Rcpt451("slow@example.com".into())), &[]);
    let o = h.send(&["-i", "a@example.com", "slow@example.com"], MESSAGE);
    ok(&h, &o);
    assert!(stderr(&o).contains("queued as"), "{}", explain(&h, &o));
    assert_eq!(h.queue_listing().0.len(), 1);
    h.server.set_fault(Fault::None);
    ok(&h, &h.own(&["queue", "retry", "--all"]));
    let received = h.server.received();
    let to: Vec<&[String]> = received.iter().map(|m| m.rcpt_to.as_slice()).collect();
    assert_eq!(
        to,
        [
            &["a@example.com".to_string()][..],
            &["slow@example.com".to_string()][..]
        ]
    );
    assert!(h.queue_listing().0.is_empty());
}

#[test]
fn one_refused_recipient_of_three_bounces_once_the_others_get_it_once() {
    let h = harness(with_fault(Fault::Greeting421), &[]);
    let o = h.send(
        &["-i", "a@example.com", "bad@example.com", "c@example.com"],
        MESSAGE,
    );
    ok(&h, &o);
    h.server.set_fault(Fault::Rcpt550("bad@example.com".into()));
    ok(&h, &h.own(&["queue", "retry", "--all"]));
    ok(&h, &h.own(&["queue", "retry", "--all"]));

    let received = h.server.received();
    let originals: Vec<_> = received
        .iter()
        .filter(|m| m.mail_from == TEST_USER)
        .collect();
    assert_eq!(originals.len(), 1, "{}", h.server.transcript());
    assert_eq!(originals[0].rcpt_to, ["a@example.com", "c@example.com"]);
    let bounces: Vec<_> = received.iter().filter(|m| m.mail_from.is_empty()).collect();
    assert_eq!(
        bounces.len(),
        1,
        "one bounce, from the null sender\n{}",
        h.server.transcript()
    );
    assert_eq!(bounces[0].rcpt_to, [TEST_USER]);
    let dsn = String::from_utf8_lossy(&bounces[0].data);
    assert!(dsn.contains("multipart/report"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; bad@example.com"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(
        !dsn.contains("Final-Recipient: rfc822; a@example.com"),
        "{dsn}"
    );
    assert!(h.queue_listing().0.is_empty());
}

#[test]
fn a_message_past_its_maximum_age_bounces_with_a_readable_dsn() {
    let h = harness(
        with_fault(Fault::Rcpt451("slow@example.com".into())),
        &[("max_age", "1s")],
    );
    let o = h.send(&["-i", "slow@example.com"], MESSAGE);
    ok(&h, &o);
    assert_eq!(
        h.queue_listing().0.len(),
        1,
        "deferred by the 451: {}",
        explain(&h, &o)
    );
    thread::sleep(Duration::from_millis(1100));
    ok(&h, &h.own(&["queue", "retry", "--all"]));

    assert!(
        h.queue_listing().0.is_empty(),
        "expired, so no longer queued"
    );
    let received = h.server.received();
    assert_eq!(
        received.len(),
        1,
        "only the bounce\n{}",
        h.server.transcript()
    );
    assert_eq!(received[0].mail_from, "");
    let dsn = String::from_utf8_lossy(&received[0].data);
    assert!(
        dsn.contains("Subject: Undelivered Mail Returned to Sender"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Final-Recipient: rfc822; slow@example.com"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 4.4.7"), "{dsn}");
    assert!(dsn.contains("gave up after 2 attempts"), "{dsn}");
    assert!(dsn.contains("451"), "the last error is in the DSN: {dsn}");
    assert!(
        dsn.contains("Subject: queue test"),
        "original headers attached: {dsn}"
    );
    let failed = h.own(&["log", "--status", "bounced", "--format", "csv"]);
    assert_eq!(
        stdout(&failed).lines().count(),
        2,
        "header + one row: {}",
        stdout(&failed)
    );
}

/// A null-sender message that bounces cannot be returned: it goes to dead.letter.
#[test]
fn a_bounce_with_no_sender_goes_to_dead_letter() {
    let h = harness(with_fault(Fault::Greeting421), &[]);
    ok(&h, &h.send(&["-i", "-f", "<>", "bad@example.com"], MESSAGE));
    h.server.set_fault(Fault::Rcpt550("bad@example.com".into()));
    let o = h.own(&["queue", "retry", "--all"]);
    ok(&h, &o);
    assert!(stderr(&o).contains("cannot bounce"), "{}", explain(&h, &o));
    let dead = String::from_utf8_lossy(&h.dead_letter().expect("dead.letter")).into_owned();
    assert!(dead.contains("nightly report"), "{dead}");
}

#[test]
fn queue_never_keeps_the_old_exit_75() {
    let h = harness(with_fault(Fault::Greeting421), &[("queue", "never")]);
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_eq!(code(&o), 75, "{}", explain(&h, &o));
    assert!(h.queue_listing().0.is_empty());
}

#[test]
fn queue_always_spools_first_then_delivers() {
    let h = harness(ServerOptions::default(), &[("queue", "always")]);
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    ok(&h, &o);
    assert_eq!(h.server.received().len(), 1);
    assert!(h.queue_listing().0.is_empty());
    assert!(
        log_records(&h)[0].contains("\"queue_id\":\""),
        "delivered from the queue"
    );
    assert!(
        stderr(&o).is_empty(),
        "sent: nothing to say\n{}",
        explain(&h, &o)
    );

    // When the first attempt fails, the caller hears the message is queued, and why.
    let h = harness(with_fault(Fault::Greeting421), &[("queue", "always")]);
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    ok(&h, &o);
    assert!(
        stderr(&o).contains("queued as") && stderr(&o).contains("421"),
        "{}",
        explain(&h, &o)
    );
    assert_eq!(h.queue_listing().0.len(), 1);
}

/// Queues `n` distinct messages (message i says "message i"), one send after another.
fn enqueue_many(h: &Harness, n: usize) {
    for i in 0..n {
        let body = format!("To: rcpt@example.com\nSubject: number {i}\n\nmessage {i}\n");
        let o = h.send(&["-i", "rcpt@example.com"], body.as_bytes());
        assert_eq!(code(&o), 0, "{}", explain(h, &o));
    }
}

fn spawn_flush(h: &Harness) -> std::process::Child {
    h.command(&["queue", "retry", "--all"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn several_flushers_deliver_each_of_200_messages_exactly_once() {
    let h = harness(with_fault(Fault::Greeting421), &[]);
    enqueue_many(&h, 200);
    assert_eq!(h.queue_listing().0.len(), 200);
    h.server.set_fault(Fault::None);
    let flushers: Vec<_> = (0..3).map(|_| spawn_flush(&h)).collect();
    for flusher in flushers {
        let out = flusher.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One flusher held the queue and drained it; the others found it busy.
    assert!(
        h.queue_listing().0.is_empty(),
        "the flushers left messages behind"
    );
    let mut bodies: Vec<String> = h
        .server
        .received()
        .iter()
        .map(|m| {
            String::from_utf8_lossy(&m.data)
                .rsplit("\r\n\r\n")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(bodies.len(), 200, "each message once");
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 200, "no message twice");
    assert!(h.queue_listing().0.is_empty());
    // 200 refused connections while queueing, then one per flush run: messages of one
    // account share a connection.
    assert!(
        h.server.connections() <= 200 + 4,
        "{} connections",
        h.server.connections()
    );
}

/// A writer killed with SIGKILL at many points of spooling a 4 MiB message never leaves a
/// half message that a flush would send.
#[test]
fn a_writer_killed_at_any_point_leaves_no_half_message() {
    let port = free_port();
    let h = harness_on_port(port, &[("queue", "always")]);
    // 4 MiB in 64-byte lines (a long line would be re-encoded, which is not the point).
    let line = "0123456789abcdef".repeat(4);
    let message = format!(
        "To: rcpt@example.com\nSubject: big\n\n{}",
        format!("{line}\n").repeat(65536)
    );
    let body = format!("{line}\r\n").repeat(65536);
    // Sends the message; kills the sender after `kill_after` if it is still running.
    let send = |kill_after: Option<Duration>| -> bool {
        let mut child = h
            .command(&["send", "-i", "rcpt@example.com"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = {
            let message = message.clone();
            thread::spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(message.as_bytes());
            })
        };
        let mut killed = false;
        if let Some(delay) = kill_after {
            thread::sleep(delay);
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                killed = true;
            }
        }
        child.wait().unwrap();
        let _ = writer.join();
        killed
    };
    // How long one whole send takes here, to spread the kills over it.
    let started = Instant::now();
    assert!(!send(None));
    let whole = started.elapsed();
    let killed = (0..24u32).filter(|&i| send(Some(whole * i / 20))).count();
    assert!(killed > 0, "no writer was killed mid-way");

    let server = TestServer::start_on(ServerOptions::default(), port);
    ok(&h, &h.own(&["queue", "retry", "--all"]));
    let received = server.received();
    assert!(
        !received.is_empty(),
        "the send that was not killed was queued"
    );
    for message in &received {
        let data = String::from_utf8_lossy(&message.data);
        assert!(
            data.ends_with(&format!("\r\n\r\n{body}")),
            "a partial message was sent ({} bytes)",
            data.len()
        );
    }
    assert!(h.queue_listing().0.is_empty());
}

/// A flusher killed while the server holds its DATA never loses the message: the next
/// flush delivers it.
#[test]
fn a_flusher_killed_mid_delivery_loses_nothing() {
    let h = harness(with_fault(Fault::Greeting421), &[]);
    ok(&h, &h.send(&["-i", "rcpt@example.com"], MESSAGE));
    h.server.set_fault(Fault::StallData(Duration::from_secs(3)));
    let mut flusher = spawn_flush(&h);
    let started = Instant::now();
    while !h.server.transcript_now().contains("C: DATA")
        && started.elapsed() < Duration::from_secs(10)
    {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        h.server.transcript_now().contains("C: DATA"),
        "the flusher never reached DATA"
    );
    assert!(
        flusher.try_wait().unwrap().is_none(),
        "the flusher ended before the kill"
    );
    flusher.kill().unwrap();
    flusher.wait().unwrap();
    assert!(h.server.received().is_empty());
    assert_eq!(h.queue_listing().0.len(), 1, "still queued after the kill");

    h.server.set_fault(Fault::None);
    ok(&h, &h.own(&["queue", "retry", "--all"]));
    assert_eq!(h.server.received().len(), 1, "{}", h.server.transcript());
    assert!(h.queue_listing().0.is_empty());
}

#[test]
fn log_csv_parses_with_the_expected_columns_and_rows() {
    let h = harness(with_fault(Fault::Rcpt550("bad@example.com".into())), &[]);
    let o = h.send(&["-i", "good@example.com", "bad@example.com"], MESSAGE);
    assert_eq!(code(&o), 67, "{}", explain(&h, &o));
    ok(&h, &h.send(&["-i", "rcpt@example.com"], MESSAGE));
    let csv = stdout(&h.own(&["log", "--format", "csv"]));
    // Parsed by Python's csv module, not by us.
    let script = "import csv, json, sys; print(json.dumps(list(csv.DictReader(sys.stdin))))";
    let parsed = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(csv.as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3");
    let rows = String::from_utf8(parsed.stdout).unwrap();
    let header = csv.lines().next().unwrap();
    assert_eq!(
        header,
        "time,queue_id,message_id,account,sender,recipient,status,reply,size,duration_ms,result"
    );
    assert!(
        rows.matches("\"recipient\"").count() == 3,
        "three rows: {rows}"
    );
    assert!(
        rows.contains("\"recipient\": \"bad@example.com\", \"status\": \"failed\""),
        "{rows}"
    );
    assert!(
        rows.contains("\"recipient\": \"good@example.com\", \"status\": \"sent\""),
        "{rows}"
    );
    assert!(
        rows.contains("\"recipient\": \"rcpt@example.com\", \"status\": \"sent\""),
        "{rows}"
    );
    assert!(rows.contains("550 5.1.1"), "the reply is kept: {rows}");
    let table = stdout(&h.own(&["log", "--status", "sent"]));
    assert_eq!(
        table.lines().count(),
        2,
        "header + the one sent message: {table}"
    );
}

/// After a successful send, what waits for the same account follows on that connection.
#[test]
fn a_successful_send_takes_due_queued_messages_along() {
    let h = harness(with_fault(Fault::Greeting421), &[("retry_initial", "1s")]);
    ok(&h, &h.send(&["-i", "first@example.com"], MESSAGE));
    h.server.set_fault(Fault::None);
    thread::sleep(Duration::from_millis(1100));
    let before = h.server.connections();
    ok(&h, &h.send(&["-i", "second@example.com"], MESSAGE));
    let received = h.server.received();
    let to: Vec<&str> = received.iter().map(|m| m.rcpt_to[0].as_str()).collect();
    assert_eq!(
        to,
        ["second@example.com", "first@example.com"],
        "{}",
        h.server.transcript()
    );
    assert_eq!(
        h.server.connections(),
        before + 1,
        "one connection for both"
    );
    assert!(h.queue_listing().0.is_empty());
}
