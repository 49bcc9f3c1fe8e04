//! The queue drained over several connections at once (`connections = N`, issue 15): each
//! message sent by one connection only and exactly once, no more sessions at once than
//! N, one with N = 1; a SIGTERM lets every connection finish its message in flight and
//! start no other; a quota reply on one connection holds the account for all of them;
//! an expired token is refreshed once, not once per connection.
//!
//! Against aiosmtpd (tests/mta/mailbox_server.py, `--sessions` reports how many sessions
//! were open at once; under CI=true a missing aiosmtpd fails), the suite's in-process
//! server for the quota replies and the token endpoint, and the real Postfix + Dovecot
//! (tests/common/postfix.rs: root; under CI=true it must run).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::config::TestConfig;
use common::harness::{
    code, explain, free_port, isolate, queue_ids, run_with_limit, stderr, stdout, write_private,
    Harness, BIN,
};
use common::mailbox::{self, Home};
use common::oauth_server::{self, harness_with_oauth, OAuthOptions, OAuthServer};
use common::postfix::{self, Postfix};
use common::skip::{self, skip};
use common::smtp_server::{Fault, QuotaReply, ServerOptions, TEST_TOKEN, TEST_USER};
use common::tls;

/// A run of the binary, or a wait for a server, that takes longer is hung: the test fails.
const HANG: Duration = Duration::from_secs(60);

fn message(i: usize) -> String {
    format!(
        "To: rcpt@example.com\nSubject: number {i}\nMessage-ID: <p{i}@parallel-drain.test>\n\nmessage {i}\n"
    )
}

/// aiosmtpd on a port chosen before it starts, counting its sessions into `sessions`.
struct Mailbox {
    server: mailbox::OnPort,
    sessions: PathBuf,
}

impl std::ops::Deref for Mailbox {
    type Target = mailbox::OnPort;

    fn deref(&self) -> &mailbox::OnPort {
        &self.server
    }
}

impl Mailbox {
    /// `None` (after `skip`, which fails under CI=true) without aiosmtpd.
    fn start(test: &str, dir: &Path, port: u16, data_delay: Duration) -> Option<Mailbox> {
        Mailbox::start_with(test, dir, port, data_delay, &[])
    }

    /// `start`, with more arguments for mailbox_server.py (`--max-sessions N`).
    fn start_with(
        test: &str,
        dir: &Path,
        port: u16,
        data_delay: Duration,
        more: &[&str],
    ) -> Option<Mailbox> {
        if let Some(why) = skip::aiosmtpd_missing() {
            skip(test, why);
            return None;
        }
        let sessions = dir.join("sessions");
        let mut args = vec![
            "--data-delay".to_string(),
            data_delay.as_secs_f64().to_string(),
            "--sessions".to_string(),
            sessions.display().to_string(),
        ];
        args.extend(more.iter().map(|a| a.to_string()));
        Some(Mailbox {
            server: mailbox::OnPort::start(dir, port, &args),
            sessions,
        })
    }

    /// Connections the server turned away (`--max-sessions`).
    fn refused(&self) -> usize {
        let text = std::fs::read_to_string(&self.sessions).unwrap_or_default();
        text.lines().filter(|l| l.starts_with("refused ")).count()
    }

    /// (sessions opened, most open at once), from the server's `--sessions` file.
    fn sessions(&self) -> (usize, usize) {
        let text = std::fs::read_to_string(&self.sessions).unwrap_or_default();
        let opened = text.lines().filter(|l| l.starts_with("open ")).count();
        let most = text
            .lines()
            .filter_map(|l| l.strip_prefix("open "))
            .filter_map(|n| n.parse().ok())
            .max()
            .unwrap_or(0);
        (opened, most)
    }

    /// Every Message-ID of 0..n arrived exactly once, and nothing else.
    fn assert_each_once(&self, n: usize) {
        let arrivals = self.arrivals();
        let expected: Vec<String> = {
            let mut ids: Vec<String> = (0..n)
                .map(|i| format!("<p{i}@parallel-drain.test>"))
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(
            arrivals.keys().cloned().collect::<Vec<_>>(),
            expected,
            "every message arrived"
        );
        let twice: Vec<_> = arrivals.iter().filter(|(_, &n)| n != 1).collect();
        assert!(twice.is_empty(), "each exactly once: {twice:?}");
    }
}

/// A HOME with `n` messages queued for aiosmtpd (started after), `connections` at once.
fn queued_for_mailbox(
    test: &str,
    n: usize,
    connections: i64,
    data_delay: Duration,
) -> Option<(Home, Mailbox)> {
    let port = free_port();
    let home = Home::new(port, connections, HANG);
    home.queue_while_down((0..n).map(message));
    let server = Mailbox::start(test, home.dir.path(), port, data_delay)?;
    Some((home, server))
}

#[test]
fn four_connections_deliver_each_message_once_with_several_sessions_at_once() {
    const MESSAGES: usize = 40;
    let Some((home, server)) =
        queued_for_mailbox("four_connections", MESSAGES, 4, Duration::from_millis(50))
    else {
        return;
    };
    let o = home.run(&["-q", "-v"], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    server.assert_each_once(MESSAGES);
    assert_eq!(home.queued(), 0, "the queue knows what was delivered");
    let (opened, most) = server.sessions();
    assert!(opened <= 4, "at most 4 sessions: {opened}");
    assert!(most > 1, "several sessions at once: at most {most} were");
    // -v: while they talk at once, each line says which connection's it is.
    let transcript = stderr(&o);
    let labelled = |n: usize| transcript.contains(&format!("[{n}] -> MAIL FROM:"));
    assert!(
        labelled(1) && labelled(2),
        "the connections' lines are not told apart:\n{transcript}"
    );
}

/// A server that allows two sessions at once (Exchange Online allows three) and greets a
/// third with 432: the connections it refuses are given up quietly, the two it took
/// deliver everything, and nothing is deferred for it.
#[test]
fn connections_the_server_refuses_are_given_up_and_the_others_deliver_all() {
    const MESSAGES: usize = 40;
    let port = free_port();
    let home = Home::new(port, 4, HANG);
    home.queue_while_down((0..MESSAGES).map(message));
    let Some(server) = Mailbox::start_with(
        "connections_the_server_refuses",
        home.dir.path(),
        port,
        Duration::from_millis(20),
        &["--max-sessions", "2"],
    ) else {
        return;
    };
    let o = home.run(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "a refused extra connection is no error");
    server.assert_each_once(MESSAGES);
    assert_eq!(home.queued(), 0, "nothing deferred");
    let (opened, most) = server.sessions();
    assert!(server.refused() >= 1, "the server turned one away");
    assert_eq!((opened, most), (2, 2), "two sessions did the work");
}

#[test]
fn one_connection_is_one_session() {
    const MESSAGES: usize = 10;
    let Some((home, server)) =
        queued_for_mailbox("one_connection", MESSAGES, 1, Duration::from_millis(20))
    else {
        return;
    };
    let o = home.run(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    server.assert_each_once(MESSAGES);
    assert_eq!(server.sessions(), (1, 1), "one session, reused for all");
}

/// `systemctl stop` while four connections drain: each finishes the message it has in
/// flight (the server holds back its 250) and records it, none starts another; the next
/// flush sends the rest, and every message arrives exactly once.
#[test]
fn sigterm_mid_drain_finishes_each_connections_message_and_none_goes_twice() {
    const MESSAGES: usize = 40;
    let Some((home, server)) =
        queued_for_mailbox("sigterm_mid_drain", MESSAGES, 4, Duration::from_millis(300))
    else {
        return;
    };
    let mut flusher = home.sendmail(&["-q"]);
    let flusher = flusher
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server.wait_for(4);
    let before = server.delivered();
    // SAFETY: a signal to our own child, which has not been waited for yet.
    assert_eq!(
        unsafe { libc::kill(flusher.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let out = wait(flusher);
    assert_eq!(
        out.status.code(),
        Some(0),
        "it stops by itself: {}\n{}",
        out.status,
        stderr(&out)
    );
    assert!(stderr(&out).contains("SIGTERM"), "{}", stderr(&out));
    let after = server.delivered();
    assert!(
        after <= before + 4,
        "only the messages in flight go out after the signal ({before} then {after})"
    );
    assert!(
        after < MESSAGES,
        "the drain went on to the end after SIGTERM"
    );
    assert_eq!(
        home.queued(),
        MESSAGES - after,
        "what was delivered left the queue, nothing else did"
    );
    let o = home.run(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    server.assert_each_once(MESSAGES);
    assert_eq!(home.queued(), 0);
}

/// Waits for `child` to end by itself (it is killed and the test fails if it hangs).
fn wait(child: Child) -> Output {
    common::harness::wait_for_exit(child, HANG)
}

/// `n` messages queued in `h` while its server refuses every session at the greeting.
fn queue_while_refused(h: &Harness, n: usize) {
    h.server.set_fault(Fault::Greeting421);
    for i in 0..n {
        let o = h.send(&["-i", "rcpt@example.com"], message(i).as_bytes());
        assert_eq!(code(&o), 0, "{}", explain(h, &o));
    }
    assert_eq!(h.queue_listing().0.len(), n);
}

/// Gmail's daily limit reached in the middle of a drain over four connections, told to
/// the first connection that meets it: that one holds the account, and the others send
/// nothing more but the message each had in flight (whose 250 does not end the hold);
/// what was not sent waits in the queue, nothing bounced.
#[test]
fn a_quota_reply_on_one_connection_holds_the_account_for_all() {
    const MESSAGES: usize = 40;
    let h = Harness::with_config(ServerOptions::default(), |c| {
        c.account_field("connections", 4)
    });
    queue_while_refused(&h, MESSAGES);
    // Slow enough that the test sees the drain under way.
    h.server
        .set_fault(Fault::SlowReplies(Duration::from_millis(10)));
    let connected = h.server.connections();
    let mut flusher = h.spawn_sendmail(&["-q"]);
    drop(flusher.stdin.take());
    let deadline = Instant::now() + HANG;
    while h.server.received().len() < 8 {
        assert!(Instant::now() < deadline, "{}", h.server.transcript_now());
        thread::sleep(Duration::from_millis(2));
    }
    h.server.set_fault(Fault::Quota(QuotaReply::GmailDaily));
    // Only the first connection to meet the quota is told so: the server takes mail
    // again at once, and the other connections would go on if the hold did not stop them.
    let quota = " S: 550-5.4.5 Daily user sending limit exceeded";
    while !h.server.transcript_now().contains(quota) {
        assert!(Instant::now() < deadline, "{}", h.server.transcript_now());
        thread::sleep(Duration::from_millis(1));
    }
    let at_hold = h.server.received().len();
    h.server
        .set_fault(Fault::SlowReplies(Duration::from_millis(10)));
    let out = wait(flusher);
    assert_eq!(code(&out), 0, "{}", explain(&h, &out));

    let transcript = h.server.transcript();
    let quota_replies = transcript.lines().filter(|l| l.contains(quota)).count();
    let mails = transcript
        .lines()
        .filter(|l| l.contains(" C: MAIL FROM:"))
        .count();
    let delivered = h.server.received();
    let connections = h.server.connections() - connected;
    assert!(connections <= 4, "{connections} sessions");
    assert!(
        (1..=connections).contains(&quota_replies),
        "each connection meets the quota at most once: {quota_replies} times over {connections}\n{transcript}"
    );
    assert!(
        delivered.len() <= at_hold + 3,
        "after the hold only the messages the 3 others had in flight went: {} then {}\n{transcript}",
        at_hold,
        delivered.len()
    );
    assert_eq!(
        mails,
        delivered.len() + quota_replies,
        "no message tried after the hold but those in flight\n{transcript}"
    );
    let mut ids: Vec<String> = delivered
        .iter()
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_string))
        })
        .collect();
    let sent = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), sent, "none delivered twice");
    assert_eq!(sent, delivered.len());
    assert_eq!(
        h.queue_listing().0.len(),
        MESSAGES - sent,
        "the rest waits in the queue"
    );
    assert!(h.dead_letter().is_none(), "nothing bounced or lost");
    let status = h.own(&["status", "--check"]);
    assert!(
        stdout(&status).contains("held until"),
        "{}",
        explain(&h, &status)
    );
}

/// The cached token has expired when a drain over four connections starts: one refresh
/// reaches the token endpoint (slow to answer, so refreshes at once would overlap), and
/// every connection logs in with the token it issued.
#[test]
fn an_expired_token_is_refreshed_once_for_all_connections() {
    const MESSAGES: usize = 12;
    // 30 s is inside the safety margin: expired at once. The login and the refresh of
    // each queued send get such tokens; the drain's refresh gets one that lasts.
    let mut lifetimes = vec![30; 1 + MESSAGES];
    lifetimes.push(3600);
    let (oauth, h) = harness_with_oauth(
        OAuthOptions {
            lifetimes,
            refresh_delay: Duration::from_millis(300),
            ..OAuthOptions::default()
        },
        |c| c.account_field("connections", 4),
    );
    let o = oauth_server::login(&h, &[]);
    assert_eq!(code(&o), 0, "login: {}", stderr(&o));
    queue_while_refused(&h, MESSAGES);
    let refreshes = oauth.calls("refresh_token");
    assert_eq!(refreshes, MESSAGES, "one per queued send: {}", oauth.log());

    h.server
        .set_fault(Fault::SlowReplies(Duration::from_millis(5)));
    let connected = h.server.connections();
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", oauth_server::explain(&h, &oauth, &o));
    assert_eq!(h.server.received().len(), MESSAGES);
    assert!(
        h.server.connections() - connected > 1,
        "the drain used several connections"
    );
    assert_eq!(
        oauth.calls("refresh_token") - refreshes,
        1,
        "one refresh for all connections: {}",
        oauth.log()
    );
}

/// Into the real Postfix (PIPELINING, a smtpd process per session): 40 queued messages
/// drained over 4 connections arrive once each, through more than one session.
#[test]
fn four_connections_into_postfix_deliver_each_message_once() {
    const MESSAGES: usize = 40;
    if !postfix::available("four_connections_into_postfix") {
        return;
    }
    let oauth = OAuthServer::start(OAuthOptions::default());
    let postfix = Postfix::start(&oauth.url("/introspect"));
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::write_ca_file(dir.path());
    let secret = dir.path().join("secret");
    write_private(&secret, &format!("{TEST_TOKEN}\n"));
    let config = |port: u16| {
        TestConfig::new(port, &ca)
            .no_aliases()
            .xoauth2(TEST_USER, &secret)
            .account_field("timeout", 30)
            .account_field("connections", 4)
            .write(&dir.path().join("config.toml"))
    };
    let run = |args: &[&str], stdin: &[u8]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        isolate(&mut cmd, dir.path(), &dir.path().join("config.toml"));
        run_with_limit(cmd, stdin, HANG)
    };
    config(free_port());
    for i in 0..MESSAGES {
        let text = message(i).replace("rcpt@example.com", "admin@example.com");
        let o = run(&["send", "-i", "admin@example.com"], text.as_bytes());
        assert_eq!(code(&o), 0, "queued: {}", stderr(&o));
    }
    config(postfix.port);
    let logged = postfix.postfix_log().len();
    let o = run(&["queue", "retry", "--all"], b"");
    assert_eq!(code(&o), 0, "{}\n{}", stderr(&o), postfix.logs());
    assert!(postfix.wait_until_idle(HANG), "{}", postfix.logs());
    let mut ids: Vec<String> = postfix
        .messages("admin")
        .iter()
        .filter_map(|m| {
            String::from_utf8_lossy(m)
                .lines()
                .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_string))
        })
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..MESSAGES)
        .map(|i| format!("<p{i}@parallel-drain.test>"))
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "each message once");
    let sessions = postfix.postfix_log()[logged..]
        .lines()
        .filter(|l| l.contains("postfix/smtpd") && l.contains(" connect from "))
        .count();
    assert!(
        (2..=4).contains(&sessions),
        "more than one session, at most 4: {sessions}\n{}",
        postfix.postfix_log()
    );
    let o = run(&["queue", "list"], b"");
    assert!(queue_ids(&stdout(&o)).is_empty(), "{}", stdout(&o));
}
