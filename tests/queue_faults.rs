//! The queue under faults (issue 9): a flusher or sender stopped by SIGTERM mid-flush, an
//! unreadable entry among good ones, a full disk under dead.letter, a setup that is not
//! finished when mail comes, and what the delivery log and the caller are told.
//!
//! The SIGTERM tests run against aiosmtpd (tests/mta/mailbox_server.py), which waits a
//! little before each reply to the final dot; under CI=true a missing aiosmtpd fails them.
//! The disk-full test mounts a 64 KiB tmpfs (root only); under CI=true it must mount.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::harness::{
    code, explain, free_port, isolate, run_with_limit, stderr, stdout, Harness, BIN,
};
use common::mailbox::{self, Home};
use common::oauth_server::{use_oauth, OAuthOptions, OAuthServer};
use common::skip::{self, skip};
use common::smtp_server::{Fault, ServerOptions, TEST_USER};
use common::tmpfs::Tmpfs;

/// A run of the binary, or a wait for a server, that takes longer is hung: the test fails.
const HANG: Duration = Duration::from_secs(60);

/// A harness whose server has `fault` and whose config has the top-level `settings`.
fn harness(fault: Fault, settings: &[(&str, &str)]) -> Harness {
    let opts = ServerOptions {
        fault,
        ..ServerOptions::default()
    };
    Harness::with_config(opts, |config| config.settings(settings))
}

// --- item 2: SIGTERM -----------------------------------------------------------------

/// aiosmtpd on a port chosen before it starts (messages are queued while nothing listens
/// there), replying to each final dot `delay` after storing the message.
type SlowMailbox = mailbox::OnPort;

/// Starts it, or says why it cannot (no aiosmtpd).
fn start_slow(dir: &Path, port: u16, delay: Duration) -> Result<SlowMailbox, String> {
    if let Some(why) = skip::aiosmtpd_missing() {
        return Err(why);
    }
    let args = ["--data-delay".to_string(), delay.as_secs_f64().to_string()];
    Ok(SlowMailbox::start(dir, port, &args))
}

/// A HOME whose account points at aiosmtpd replying `delay` late; `None` (after
/// `skip`) without aiosmtpd.
fn slow_mailbox(test: &str, delay: Duration) -> Option<(Home, SlowMailbox)> {
    let port = free_port();
    // One message in flight at a time (several: tests/parallel_drain.rs).
    let home = Home::new(port, 1, HANG);
    match start_slow(home.dir.path(), port, delay) {
        Ok(server) => Some((home, server)),
        Err(why) => {
            skip(test, why);
            None
        }
    }
}

fn message(i: usize) -> String {
    format!("To: rcpt@example.com\nSubject: number {i}\nMessage-ID: <n{i}@queue-faults.test>\n\nmessage {i}\n")
}

fn sigterm(child: &Child) {
    // SAFETY: a signal to our own child, which has not been waited for yet.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "kill -TERM");
}

/// SIGTERM to `child`, which must then finish what it does and exit 0, not die of it.
fn stops_by_itself(child: Child) -> Output {
    sigterm(&child);
    let out = wait(child);
    assert_eq!(
        out.status.code(),
        Some(0),
        "it must stop by itself, not die of the signal: {}\n{}",
        out.status,
        stderr(&out)
    );
    out
}

/// Waits for `child` to end by itself (it is killed and the test fails if it hangs).
fn wait(child: Child) -> Output {
    common::harness::wait_for_exit(child, HANG)
}

/// `systemctl stop` or `timeout` sends SIGTERM to a flush in progress: the message in
/// flight is finished and recorded, nothing more is started, and the next flush sends the
/// rest: every message arrives exactly once.
#[test]
fn sigterm_mid_flush_finishes_the_message_in_flight_and_each_arrives_once() {
    const MESSAGES: usize = 12;
    let port = free_port();
    // One message in flight at a time (several: tests/parallel_drain.rs).
    let home = Home::new(port, 1, HANG);
    home.queue_while_down((0..MESSAGES).map(message));
    let server = match start_slow(home.dir.path(), port, Duration::from_millis(400)) {
        Ok(server) => server,
        Err(why) => return skip("sigterm_mid_flush", why),
    };

    let flusher = home.spawn(&["-q"]);
    server.wait_for(3);
    // Mid-flush, most likely while the server holds back a 250.
    let before = server.delivered();
    let out = stops_by_itself(flusher);
    let after = server.delivered();
    assert!(stderr(&out).contains("SIGTERM"), "{}", stderr(&out));
    assert!(
        after <= before + 1,
        "only the message in flight goes out after the signal ({before} then {after})"
    );
    assert!(
        after < MESSAGES,
        "the flush went on to the end after SIGTERM"
    );
    assert_eq!(
        home.queued(),
        MESSAGES - after,
        "the queue knows what was delivered"
    );

    let o = home.run(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let arrivals = server.arrivals();
    assert_eq!(arrivals.len(), MESSAGES, "{arrivals:?}");
    assert!(
        arrivals.values().all(|&n| n == 1),
        "each message exactly once: {arrivals:?}"
    );
    assert_eq!(home.queued(), 0);
}

/// A direct send that gets SIGTERM while the server holds back its 250 finishes: exit 0,
/// the message delivered once, nothing queued, nothing in dead.letter.
#[test]
fn sigterm_during_a_direct_send_finishes_the_send() {
    let Some((home, server)) =
        slow_mailbox("sigterm_during_a_direct_send", Duration::from_millis(1500))
    else {
        return;
    };
    let mut sender = home.spawn(&["-i", "rcpt@example.com"]);
    sender
        .stdin
        .take()
        .unwrap()
        .write_all(message(1).as_bytes())
        .unwrap();
    server.wait_for(1);
    stops_by_itself(sender);
    assert_eq!(home.queued(), 0, "sent, so not queued");
    assert!(!home.dir.path().join("dead.letter").exists());
    assert_eq!(server.delivered(), 1);
}

/// `sendmail -bs` (Symfony Mailer, Laravel) stopped while a message is delivered: the
/// client still gets its 250, then the session ends (exit 0). Stopped while it waits for
/// the client, it ends at once, as before. (`wait` fails the test if either hangs.)
#[test]
fn sigterm_during_bs_answers_the_message_in_flight_then_ends() {
    let Some((home, server)) = slow_mailbox("sigterm_during_bs", Duration::from_millis(1500))
    else {
        return;
    };
    let mut session = home.spawn(&["-bs"]);
    // Kept open: the session must end because of the signal, not of the input's end.
    let mut client = session.stdin.take().unwrap();
    let data = message(7).replace('\n', "\r\n");
    write!(
        client,
        "EHLO client\r\nMAIL FROM:<{TEST_USER}>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n{data}.\r\n"
    )
    .unwrap();
    server.wait_for(1);
    let out = stops_by_itself(session);
    drop(client);
    let replies = stdout(&out);
    assert!(
        replies
            .trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("250 ")),
        "the message in flight is answered: {replies}"
    );
    assert_eq!(server.delivered(), 1);
    assert_eq!(home.queued(), 0);

    // Idle: nothing in flight, so the signal acts at once.
    let mut session = home.spawn(&["-bs"]);
    let client = session.stdin.take().unwrap();
    let mut greeting = String::new();
    BufReader::new(session.stdout.take().unwrap())
        .read_line(&mut greeting)
        .unwrap();
    assert!(greeting.starts_with("220 "), "{greeting}");
    sigterm(&session);
    let out = wait(session);
    drop(client);
    // Killed by it, or (when it came between the greeting and the first read) ended as at
    // the end of input: either way at once, not when the client goes.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.signal() == Some(libc::SIGTERM) || out.status.code() == Some(0),
        "{}",
        out.status
    );
}

// --- item 3: an unreadable entry --------------------------------------------------------

/// `n` messages queued while the server answers 421, the queue directory, their ids.
fn queued_while_down(n: usize) -> (Harness, PathBuf, Vec<String>) {
    let h = harness(Fault::Greeting421, &[]);
    for i in 0..n {
        let o = h.send(&["-i", "rcpt@example.com"], message(i).as_bytes());
        assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    }
    let queue = h.home.path().join(".local/state/oauth-sendmail/queue");
    let (ids, _) = h.queue_listing();
    assert_eq!(ids.len(), n);
    (h, queue, ids)
}

/// One entry whose JSON is garbage among good ones: mailq lists all and says which is
/// unreadable, the flush quarantines it in `corrupt/` (both files), logs that once, and
/// delivers the rest.
#[test]
fn an_unreadable_entry_is_quarantined_and_the_rest_goes_out() {
    let (h, queue, ids) = queued_while_down(3);
    let bad = ids[1].clone();
    std::fs::write(queue.join(format!("{bad}.json")), b"{\"id\": tru").unwrap();

    let mailq = h.own(&["queue", "list"]);
    assert_eq!(code(&mailq), 0, "{}", stderr(&mailq));
    let listing = stdout(&mailq);
    assert!(
        listing.contains(&bad) && listing.contains("unreadable"),
        "{listing}"
    );
    assert!(listing.contains("2 Requests."), "{listing}");

    h.server.set_fault(Fault::None);
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    assert!(stderr(&o).contains(&bad), "said once: {}", stderr(&o));
    assert_eq!(h.server.received().len(), 2, "{}", h.server.transcript());
    let corrupt = queue.join("corrupt");
    for suffix in ["json", "msg"] {
        assert!(
            corrupt.join(format!("{bad}.{suffix}")).exists(),
            "{bad}.{suffix} kept"
        );
    }
    let listing = stdout(&h.own(&["queue", "list"]));
    assert!(
        listing.contains(&bad)
            && listing.contains(&format!("quarantined in {}", corrupt.display())),
        "{listing}"
    );

    // Another flush has nothing to say about it, and the log holds it once.
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    assert!(!stderr(&o).contains(&bad), "{}", stderr(&o));
    let log = stdout(&h.own(&["log", "--format", "json"]));
    let quarantined: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"quarantined\""))
        .collect();
    assert_eq!(quarantined.len(), 1, "{log}");
    assert!(quarantined[0].contains(&bad), "{log}");

    // It can be looked at and removed by its id, as a queued message is.
    let o = h.own(&["queue", "show", &bad]);
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    assert!(
        stdout(&o).starts_with(&format!("{bad}: quarantined in {}: ", corrupt.display()))
            && stdout(&o).contains("Subject: "),
        "{}",
        stdout(&o)
    );
    let o = h.own(&["queue", "remove", &bad]);
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    assert_eq!(stdout(&o), format!("{bad}: removed (it was quarantined)\n"));
    assert!(!stdout(&h.own(&["queue", "list"])).contains(&bad));
    assert_eq!(
        std::fs::read_dir(&corrupt).unwrap().count(),
        0,
        "its files are gone"
    );
    assert_eq!(code(&h.own(&["queue", "show", &bad])), 64, "no more");
}

/// A `.msg` that is gone makes its entry unreadable too: quarantined, the rest delivered.
#[test]
fn an_entry_without_its_message_does_not_block_the_queue() {
    let (h, queue, ids) = queued_while_down(2);
    std::fs::remove_file(queue.join(format!("{}.msg", ids[0]))).unwrap();
    h.server.set_fault(Fault::None);
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    assert_eq!(h.server.received().len(), 1, "{}", h.server.transcript());
    assert!(queue.join(format!("corrupt/{}.json", ids[0])).exists());
}

// --- item 11: dead.letter ------------------------------------------------------------

/// `echo | sendmail` has no recipients (64) and nothing to keep: no dead.letter entry.
#[test]
fn an_empty_message_is_not_written_to_dead_letter() {
    let mut h = harness(Fault::None, &[]);
    h.server.expect_unused();
    let o = h.sendmail(&[], b"\n");
    assert_eq!(code(&o), 64, "{}", explain(&h, &o));
    assert_eq!(h.dead_letter(), None, "an empty entry was written");
}

/// dead.letter keeps the envelope recipients (they may be in no header) on an
/// `X-Envelope-To:` line after the `From ` line.
#[test]
fn dead_letter_keeps_the_envelope_recipients() {
    let port = free_port();
    let mut h = harness(Fault::None, &[("queue", "never")]);
    h.write_config(|c| c.port(port));
    h.server.expect_unused();
    let o = h.sendmail(
        &["-i", "-f", "cron@example.com", "hidden@example.com", "root"],
        b"Subject: s\n\nbody\n",
    );
    assert_eq!(code(&o), 75, "{}", explain(&h, &o));
    let dead = String::from_utf8(h.dead_letter().expect("dead.letter")).unwrap();
    let mut lines = dead.lines();
    assert!(
        lines.next().unwrap().starts_with("From cron@example.com "),
        "{dead}"
    );
    assert_eq!(
        lines.next().unwrap(),
        "X-Envelope-To: <hidden@example.com>, <root>",
        "{dead}"
    );
}

/// The disk under HOME fills up while a message is appended to dead.letter: the entries
/// already there stay whole, and no half entry is left at the end.
#[test]
fn a_failed_dead_letter_append_leaves_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let tmpfs = match Tmpfs::mount(dir.path(), "64k") {
        Ok(tmpfs) => tmpfs,
        Err(why) => return skip("a_failed_dead_letter_append", format!("{why}: run as root")),
    };
    let home = dir.path();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = elsewhere.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "queue = \"never\"\n[accounts.test]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             auth = \"none\"\nfrom = \"me@example.com\"\n",
            free_port()
        ),
    )
    .unwrap();
    let send = |body: &str| {
        let mut cmd = Command::new(BIN);
        cmd.args(["send", "-i", "rcpt@example.com"]);
        isolate(&mut cmd, home, &config);
        // The delivery log elsewhere: only dead.letter competes for the space.
        cmd.env("XDG_STATE_HOME", elsewhere.path());
        run_with_limit(cmd, format!("Subject: s\n\n{body}").as_bytes(), HANG)
    };
    let o = send("the first message\n");
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    let before = std::fs::read(home.join("dead.letter")).expect("the first entry");

    tmpfs.fill_leaving(8192);
    let o = send(&"forty kilobytes of cron output\n".repeat(1400));
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("LOST"),
        "the caller is told: {}",
        stderr(&o)
    );
    let after = std::fs::read(home.join("dead.letter")).unwrap();
    assert_eq!(
        after.len(),
        before.len(),
        "a partial entry was left at the end of dead.letter"
    );
    assert_eq!(after, before);
}

// --- item 12: the delivery log -----------------------------------------------------------

fn log_json(h: &Harness) -> Vec<serde_json::Value> {
    let out = h.own(&["log", "--format", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Each sent recipient's row carries the server's reply to the final dot, for a direct
/// send and for a queued message alike (not the error of the attempt before).
#[test]
fn a_sent_row_carries_the_servers_final_reply() {
    let h = harness(Fault::Greeting421, &[]);
    let o = h.send(&["-i", "later@example.com"], message(1).as_bytes());
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    h.server.set_fault(Fault::None);
    let o = h.own(&["queue", "retry", "--all"]);
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    let o = h.send(&["-i", "now@example.com"], message(2).as_bytes());
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));

    let log = log_json(&h);
    assert_eq!(log.len(), 3, "{log:?}");
    for record in &log[1..] {
        let recipient = &record["recipients"][0];
        assert_eq!(recipient["status"], "sent", "{record}");
        assert_eq!(
            recipient["reply"], "250 2.0.0 OK, message accepted - gsmtp",
            "{record}"
        );
    }
}

/// One recipient refused, one delivered: no row says `sent` next to `result=failed`.
#[test]
fn a_partly_delivered_message_is_partial_not_failed() {
    let h = harness(Fault::Rcpt550("bad@example.com".into()), &[]);
    let o = h.send(
        &["-i", "good@example.com", "bad@example.com"],
        message(1).as_bytes(),
    );
    assert_eq!(code(&o), 67, "{}", explain(&h, &o));
    let csv = stdout(&h.own(&["log", "--format", "csv"]));
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    for row in rows {
        let cells: Vec<&str> = row.split(',').collect();
        let (status, result) = (cells[6], cells[cells.len() - 1]);
        assert_eq!(result, "partial", "{row}");
        assert!(status == "sent" || status == "failed", "{row}");
    }
}

// --- item 13: queue = "always" and a refusal ---------------------------------------------

/// With `queue = "always"` a refused recipient is not "queued": the caller hears that it
/// was refused and that the sender got a bounce, with the exit status of a refusal.
#[test]
fn queue_always_reports_a_refusal_as_a_refusal() {
    let h = harness(
        Fault::Rcpt550("bad@example.com".into()),
        &[("queue", "always")],
    );
    let o = h.send(&["-i", "bad@example.com"], message(1).as_bytes());
    assert_eq!(code(&o), 67, "{}", explain(&h, &o));
    let err = stderr(&o);
    assert!(!err.contains("queued as"), "{err}");
    assert!(err.contains("refused") && err.contains("550"), "{err}");
    assert!(
        err.contains(&format!("<{TEST_USER}> was sent a bounce")),
        "{err}"
    );
    assert!(h.queue_listing().0.is_empty());
    assert_eq!(h.dead_letter(), None, "the bounce has it");
}

// --- item 14: mail while the setup is unfinished -----------------------------------------

/// Several accounts and no default: the message is queued (exit 78, saying so), with its
/// -t and -F options; once default_account is set, `sendmail -q` sends it as intake would
/// have.
#[test]
fn a_message_sent_before_the_setup_is_done_goes_out_once_it_is() {
    let mut h = harness(Fault::None, &[]);
    h.write_config(|c| c.copy_account("test", "other"));
    let o = h.sendmail(
        &["-t", "-i", "-F", "Night Job"],
        b"To: root\nCc: ops@example.com\nSubject: setup\n\nbody\n",
    );
    assert_eq!(code(&o), 78, "{}", explain(&h, &o));
    let err = stderr(&o);
    assert!(
        err.contains("several accounts") && err.contains("queued as"),
        "{err}"
    );
    assert_eq!(h.dead_letter(), None, "{err}");
    let (ids, listing) = h.queue_listing();
    assert_eq!(ids.len(), 1, "{listing}");

    // Still unfinished: it waits, and says why.
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    assert!(h.server.received().is_empty());
    assert!(stderr(&o).contains("waits for the setup"), "{}", stderr(&o));
    assert!(h.queue_listing().1.contains("several accounts"));

    h.write_config(|c| c.set("default_account", "test"));
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", h.server.transcript());
    assert_eq!(
        received[0].rcpt_to,
        ["admin@example.com", "ops@example.com"]
    );
    assert_eq!(received[0].mail_from, TEST_USER);
    let data = String::from_utf8_lossy(&received[0].data);
    assert!(data.contains("From: \"Night Job\" <"), "{data}");
    assert!(h.queue_listing().0.is_empty());
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0);
    assert_eq!(h.server.received().len(), 1, "exactly once");
}

/// An account not logged in yet is for a person to fix: the message waits in the queue
/// (exit 78), and the delivery log says `queued` for it, as the queue does, not `failed`.
#[test]
fn a_send_for_an_account_not_logged_in_is_logged_as_queued() {
    let mut oauth = OAuthServer::start(OAuthOptions::default());
    oauth.expect_unused();
    let mut h = Harness::with_config(ServerOptions::default(), |c| use_oauth(c, &oauth));
    h.server.expect_unused();
    let o = h.sendmail(&["-i", "a@example.com"], message(1).as_bytes());
    assert_eq!(code(&o), 78, "{}", explain(&h, &o));
    assert!(stderr(&o).contains("is not logged in"), "{}", stderr(&o));
    let (ids, listing) = h.queue_listing();
    assert_eq!(ids.len(), 1, "{listing}");
    let log = log_json(&h);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["queue_id"], ids[0].as_str(), "{}", log[0]);
    assert_eq!(log[0]["result"], "queued", "{}", log[0]);
    assert_eq!(log[0]["recipients"][0]["status"], "queued", "{}", log[0]);
}

/// No configuration file at all, then one with a syntax error: the message waits in the
/// default queue (exit 78), and goes out once a good configuration is in place.
#[test]
fn no_or_broken_configuration_queues_the_message() {
    let h = harness(Fault::None, &[]);
    let good = h.config.render();
    let xdg_config = h.home.path().join(".config/oauth-sendmail/config.toml");
    let run = |args: &[&str], stdin: &[u8]| {
        let mut cmd = Command::new(h.home.path().join("bin/sendmail"));
        cmd.args(args);
        isolate(&mut cmd, h.home.path(), &h.config_path);
        // Found through the search path, as on a new machine.
        cmd.env_remove("OAUTH_SENDMAIL_CONFIG");
        run_with_limit(cmd, stdin, HANG)
    };
    if Path::new("/etc/oauth-sendmail/config.toml").exists() {
        return skip(
            "no_or_broken_configuration",
            "/etc/oauth-sendmail/config.toml exists here",
        );
    }
    let o = run(&["-i", "first@example.com"], b"Subject: one\n\nbody\n");
    assert_eq!(code(&o), 78, "{}", explain(&h, &o));
    assert!(stderr(&o).contains("queued as"), "{}", stderr(&o));

    std::fs::create_dir_all(xdg_config.parent().unwrap()).unwrap();
    std::fs::write(&xdg_config, format!("{good}\n[accounts.test\n")).unwrap();
    let o = run(&["-i", "second@example.com"], b"Subject: two\n\nbody\n");
    assert_eq!(code(&o), 78, "{}", explain(&h, &o));
    assert!(stderr(&o).contains("queued as"), "{}", stderr(&o));
    assert_eq!(h.dead_letter(), None);

    std::fs::write(&xdg_config, &good).unwrap();
    let o = run(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    let mut to: Vec<String> = h
        .server
        .received()
        .iter()
        .map(|m| m.rcpt_to.join(","))
        .collect();
    to.sort();
    assert_eq!(
        to,
        ["first@example.com", "second@example.com"],
        "{}",
        h.server.transcript()
    );
    assert!(h.queue_listing().0.is_empty());
}

/// A held message that intake refuses once the setup is fixed (here `-t` with no
/// recipient in its headers) cannot ever go: the flush saves it to dead.letter and says so.
#[test]
fn a_held_message_that_cannot_be_prepared_goes_to_dead_letter() {
    let mut h = harness(Fault::None, &[]);
    h.server.expect_unused();
    let mut cmd = Command::new(h.home.path().join("bin/sendmail"));
    cmd.args(["-t", "-i"]);
    isolate(&mut cmd, h.home.path(), &h.home.path().join("not-yet.toml"));
    let o = run_with_limit(cmd, b"Subject: to nobody\n\nbody\n", HANG);
    assert_eq!(code(&o), 78, "{}", explain(&h, &o));
    assert!(stderr(&o).contains("queued as"), "{}", stderr(&o));

    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    assert!(stderr(&o).contains("cannot be sent"), "{}", stderr(&o));
    let dead = String::from_utf8(h.dead_letter().expect("dead.letter")).unwrap();
    assert!(dead.contains("Subject: to nobody"), "{dead}");
    assert!(h.queue_listing().0.is_empty());
}

// --- issue 15: a large message is sent from its queue file --------------------------------

/// About 8 MiB of MIME: a text part whose lines often start with "." (and one that is a
/// lone dot), and a part with a NUL and a line too long for SMTP (intake re-encodes it).
fn large_message() -> Vec<u8> {
    let mut text = String::from(
        "From: s@example.com\nTo: rcpt@example.com\nBcc: hidden@example.com\n\
         Subject: large\nDate: Tue, 1 Dec 2026 22:09:23 +0000\n\
         Message-ID: <large@queue-faults.test>\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\n",
    );
    for i in 0..100_000 {
        let lead = if i % 7 == 0 { "." } else { "" };
        text.push_str(&format!("{lead}line {i:06} {}\n", "x".repeat(60)));
    }
    text.push_str(".\n--b\nContent-Type: application/octet-stream\n\n");
    text.push_str(&"y".repeat(5_000));
    text.push_str("\0\n");
    for i in 0..10_000 {
        text.push_str(&format!("..{i:06} {}\n", "z".repeat(70)));
    }
    text.push_str("--b--\n");
    text.into_bytes()
}

/// The queue's `.msg` files, by name, with their contents.
fn queue_files(h: &Harness) -> BTreeMap<String, Vec<u8>> {
    let queue = h.home.path().join(".local/state/oauth-sendmail/queue");
    std::fs::read_dir(&queue)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?.to_string();
            name.ends_with(".msg")
                .then(|| (name, std::fs::read(&path).unwrap()))
        })
        .collect()
}

/// A large message queued after a connection lost mid-DATA, flushed into a connection lost
/// mid-DATA again, stays queued whole; flushed once the server is well, it arrives byte
/// for byte as the direct path sent it (the flush sends from the queue file a chunk at a
/// time, dot-stuffing as it goes).
#[test]
fn a_large_message_lost_mid_data_stays_queued_whole_and_goes_out_the_same_from_the_queue() {
    let h = harness(Fault::None, &[]);
    let text = large_message();
    let o = h.send(&["-i", "rcpt@example.com"], &text);
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    let direct = h.server.received()[0].data.clone();
    assert!(direct.len() > 8_000_000, "{}", direct.len());
    assert!(!String::from_utf8_lossy(&direct).contains("hidden@"));

    h.server.set_fault(Fault::DropMidData(1 << 20));
    let o = h.send(&["-i", "rcpt@example.com"], &text);
    assert_eq!(code(&o), 0, "queued: {}", explain(&h, &o));
    let queued = queue_files(&h);
    assert_eq!(queued.len(), 1, "{:?}", queued.keys());
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    assert_eq!(queue_files(&h), queued, "still queued, whole");
    assert_eq!(h.server.received().len(), 1);

    h.server.set_fault(Fault::None);
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    let received = h.server.received();
    assert_eq!(received.len(), 2, "{}", stderr(&o));
    assert!(
        received[1].data == direct,
        "the same text from the queue file"
    );
    assert!(queue_files(&h).is_empty());
}

/// A message queued while the configuration could not be read waits in the default
/// queue; once the configuration is fixed, and it names a `queue_dir` of its own, `mailq`
/// and `sendmail -q` take it into that queue and it goes out once (it waited there
/// unseen before: the flush looked only in the configured queue).
#[test]
fn a_message_queued_without_a_configuration_reaches_the_configured_queue() {
    let mut h = harness(Fault::None, &[]);
    let custom = h.home.path().join("spool/mine");
    let good = h.config.clone().set("queue_dir", custom.as_path());
    std::fs::write(&h.config_path, "[accounts.test\n").unwrap();
    let o = h.sendmail(&["-i", "late@example.com"], b"Subject: waiting\n\nbody\n");
    assert_eq!(code(&o), 78, "{}", explain(&h, &o));
    assert!(stderr(&o).contains("queued as"), "{}", stderr(&o));

    h.write_config(|_| good);
    let o = h.sendmail(&["-bp"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    assert!(
        stdout(&o).contains("late@example.com"),
        "{}",
        explain(&h, &o)
    );
    assert!(
        stderr(&o).contains("moved 1 message(s)"),
        "{}",
        explain(&h, &o)
    );
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &o));
    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", h.server.transcript());
    assert_eq!(received[0].rcpt_to, ["late@example.com"]);
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0);
    assert_eq!(h.server.received().len(), 1, "exactly once");
    assert!(std::fs::read_dir(&custom)
        .unwrap()
        .flatten()
        .all(|f| !f.file_name().to_string_lossy().ends_with(".json")));
}
