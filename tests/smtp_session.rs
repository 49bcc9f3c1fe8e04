//! `sendmail -bs` end to end: a Rust SMTP client speaks to the real binary over its stdin
//! and stdout, and the binary delivers to the in-process SMTP server. Symfony Mailer's
//! exact bytes are replayed, as they are with Laravel's `-bs -i`; failures upstream must
//! come back as SMTP replies, and a pipe closed in the middle of a message must send
//! nothing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ExitStatus};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::harness::Harness;
use common::smtp_server::{Fault, ServerOptions, TEST_USER};

/// Longer than any delivery to the local test server takes; a silent binary is hung.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One SMTP reply: its code and its lines as received, CRLF included.
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.concat()
    }
}

/// What the binary left behind once its stdin was closed.
struct Finished {
    status: ExitStatus,
    /// Lines it wrote to stdout after the last reply read (should be none).
    unread: Vec<String>,
    stderr: String,
}

/// An SMTP client on the child's stdin and stdout.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    /// Both directions so far, for failure messages.
    transcript: String,
}

impl Client {
    fn start(h: &Harness, args: &[&str]) -> Client {
        let mut child = h.spawn_sendmail(args);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout piped");
        let (sender, lines) = mpsc::channel();
        // A thread reads, so a hung binary fails the test by timeout instead of hanging it.
        thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match stdout.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if sender
                            .send(String::from_utf8_lossy(&line).into_owned())
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr piped");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Client {
            child,
            stdin,
            lines,
            stderr: Some(stderr),
            transcript: String::new(),
        }
    }

    /// Starts `sendmail ARGS`, takes its greeting and says EHLO.
    fn open(h: &Harness, args: &[&str]) -> Client {
        let mut client = Client::start(h, args);
        client.expect(220);
        client.command("EHLO client.example", 250);
        client
    }

    /// Sends one message from the account's address to `recipient` (`message` ends with its
    /// final dot) and returns the reply to that dot.
    fn send_message(&mut self, recipient: &str, message: &[u8]) -> Reply {
        self.command(&format!("MAIL FROM:<{TEST_USER}>"), 250);
        self.command(&format!("RCPT TO:<{recipient}>"), 250);
        self.command("DATA", 354);
        self.send(message);
        self.reply()
    }

    /// Writes bytes as they are, like a client writing its buffer.
    fn send(&mut self, bytes: &[u8]) {
        self.transcript
            .push_str(&format!("C: {}\n", String::from_utf8_lossy(bytes)));
        let stdin = self.stdin.as_mut().expect("stdin still open");
        if let Err(e) = stdin.write_all(bytes).and_then(|()| stdin.flush()) {
            panic!("writing to sendmail -bs: {e}\n{}", self.transcript);
        }
    }

    /// Reads one whole reply (all its lines).
    fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let line = match self.lines.recv_timeout(REPLY_TIMEOUT) {
                Ok(line) => line,
                Err(e) => panic!("no reply from sendmail -bs ({e})\n{}", self.transcript),
            };
            self.transcript.push_str(&format!("S: {line}"));
            assert!(
                line.ends_with("\r\n") && line.len() >= 6,
                "not a reply line: {line:?}\n{}",
                self.transcript
            );
            let last = line.as_bytes()[3] == b' ';
            let code = line[..3]
                .parse()
                .unwrap_or_else(|_| panic!("reply without a code: {line:?}\n{}", self.transcript));
            lines.push(line);
            if last {
                return Reply { code, lines };
            }
        }
    }

    /// Reads a reply and checks its code.
    fn expect(&mut self, code: u16) -> Reply {
        let reply = self.reply();
        assert_eq!(reply.code, code, "unexpected reply\n{}", self.transcript);
        reply
    }

    /// Sends one command line and checks the reply's code.
    fn command(&mut self, line: &str, code: u16) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.expect(code)
    }

    /// Closes stdin and waits for the binary to exit.
    fn finish(mut self) -> Finished {
        drop(self.stdin.take());
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for sendmail") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "sendmail -bs did not exit after its stdin was closed\n{}",
                self.transcript
            );
            thread::sleep(Duration::from_millis(10));
        };
        let unread = self.lines.iter().collect();
        let stderr = self.stderr.take().map(|t| t.join().unwrap_or_default());
        Finished {
            status,
            unread,
            stderr: stderr.unwrap_or_default(),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // A failed assertion must not leave the binary running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Checks a clean end: exit 0, nothing on stdout after the last reply, nothing on stderr.
fn assert_clean_exit(h: &Harness, done: &Finished) {
    assert_eq!(
        done.status.code(),
        Some(0),
        "stderr:\n{}\nserver:\n{}",
        done.stderr,
        h.server.transcript()
    );
    assert!(done.unread.is_empty(), "extra output: {:?}", done.unread);
    assert_eq!(
        done.stderr, "",
        "a session that went well is silent on stderr"
    );
}

#[test]
fn several_messages_in_one_session_are_each_delivered() {
    let h = Harness::new(ServerOptions::default());
    let mut c = Client::start(&h, &["-bs"]);
    c.expect(220);
    let ehlo = c.command("EHLO client.example", 250).text();
    for extension in [
        "PIPELINING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SIZE 36700160",
    ] {
        assert!(
            ehlo.contains(&format!("250-{extension}\r\n"))
                || ehlo.contains(&format!("250 {extension}\r\n")),
            "{ehlo}"
        );
    }
    assert!(
        !ehlo.contains("AUTH") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );

    // The first message one command at a time; "root" is an alias.
    let first = b"Subject: first\r\nBcc: hidden@example.com\r\n\r\nbody one\r\n..dot line\r\n.\r\n";
    assert_eq!(c.send_message("root", first).code, 250);
    // The 250 came after the delivery, not before it.
    assert_eq!(h.server.received().len(), 1);

    // The second pipelined, as a PIPELINING client may: envelope and DATA in one write.
    c.send(
        format!("MAIL FROM:<{TEST_USER}> BODY=8BITMIME\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
            .as_bytes(),
    );
    for code in [250, 250, 250, 354] {
        c.expect(code);
    }
    c.send("Subject: second\r\n\r\nbody two, caf\u{e9}\r\n.\r\n".as_bytes());
    c.expect(250);
    assert_eq!(h.server.received().len(), 2);

    let third = c.send_message(
        "c@example.com",
        b"Subject: third\r\n\r\nbody three\r\n.\r\n",
    );
    assert_eq!(third.code, 250);
    c.command("QUIT", 221);
    let done = c.finish();
    assert_clean_exit(&h, &done);

    let received = h.server.received();
    assert_eq!(received.len(), 3, "{}", h.server.transcript());
    let rcpts: Vec<Vec<String>> = received.iter().map(|m| m.rcpt_to.clone()).collect();
    assert_eq!(
        rcpts,
        [
            vec!["admin@example.com".to_string()],
            vec!["a@example.com".into(), "b@example.com".into()],
            vec!["c@example.com".into()],
        ]
    );
    for (message, subject) in received.iter().zip(["first", "second", "third"]) {
        let data = String::from_utf8_lossy(&message.data);
        assert_eq!(message.mail_from, TEST_USER);
        assert_eq!(message.auth_mechanism.as_deref(), Some("XOAUTH2"));
        assert!(data.contains(&format!("Subject: {subject}\r\n")), "{data}");
        // The same intake as a piped message: headers completed, Bcc removed.
        assert!(
            data.contains("Message-ID: <") && data.contains("Date: "),
            "{data}"
        );
        assert!(!data.contains("Bcc") && !data.contains("hidden"), "{data}");
    }
    assert!(
        String::from_utf8_lossy(&received[0].data).ends_with("\r\n\r\nbody one\r\n.dot line\r\n")
    );
    assert_eq!(received[1].mail_params, ["BODY=8BITMIME"]);
}

/// What Symfony Mailer 5.4 (Debian's php-symfony-mailer) wrote to `sendmail -bs` for an
/// Email with a text body "Hello\n.leading dot\nBye", captured from the pipe: its
/// SmtpTransport says HELO, dot-stuffs, and ends with "\r\n.\r\n" after the last line.
const SYMFONY_MESSAGE: &str = "From: sender@example.com\r\n\
    To: rcpt@example.com\r\n\
    Subject: Symfony test\r\n\
    Message-ID: <efa4473c282ec467e0496656c48b3c3a@example.com>\r\n\
    MIME-Version: 1.0\r\n\
    Date: Thu, 26 Nov 2026 05:03:50 +0000\r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    Content-Transfer-Encoding: quoted-printable\r\n\
    \r\n\
    Hello\r\n\
    ..leading dot\r\n\
    Bye";

/// Symfony's dialogue: each write, and the reply codes it accepts before the next one
/// (none after the message itself, which it writes without waiting).
fn symfony_dialogue() -> Vec<(String, &'static [u16])> {
    vec![
        (String::new(), &[220]),
        ("HELO [127.0.0.1]\r\n".into(), &[250]),
        ("MAIL FROM:<sender@example.com>\r\n".into(), &[250]),
        ("RCPT TO:<rcpt@example.com>\r\n".into(), &[250, 251, 252]),
        ("DATA\r\n".into(), &[354]),
        (SYMFONY_MESSAGE.into(), &[]),
        ("\r\n.\r\n".into(), &[250]),
        ("QUIT\r\n".into(), &[221]),
    ]
}

/// Replays Symfony's bytes to `sendmail ARGS` and checks that the message arrived as
/// Symfony meant it.
fn replay_symfony(args: &[&str]) {
    let h = Harness::new(ServerOptions::default());
    let mut c = Client::start(&h, args);
    for (bytes, codes) in symfony_dialogue() {
        if !bytes.is_empty() {
            c.send(bytes.as_bytes());
        }
        if !codes.is_empty() {
            let reply = c.reply();
            assert!(
                codes.contains(&reply.code),
                "Symfony would throw here: {}\n{}",
                reply.text(),
                c.transcript
            );
        }
    }
    let done = c.finish();
    assert_clean_exit(&h, &done);

    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", h.server.transcript());
    assert_eq!(received[0].mail_from, "sender@example.com");
    assert_eq!(received[0].rcpt_to, ["rcpt@example.com"]);
    // Complete headers are left alone; only the dot-stuffing is undone.
    let expected = format!("{}\r\n", SYMFONY_MESSAGE.replace("\r\n..", "\r\n."));
    assert_eq!(String::from_utf8_lossy(&received[0].data), expected);
}

#[test]
fn symfony_mailer_transcript_replayed_byte_for_byte() {
    replay_symfony(&["-bs"]);
}

#[test]
fn laravel_bs_i_behaves_the_same() {
    // Laravel's default sendmail path is "/usr/sbin/sendmail -bs -i".
    replay_symfony(&["-bs", "-i"]);
}

#[test]
fn a_refusal_by_the_real_server_comes_back_as_a_5xx() {
    let h = Harness::new(ServerOptions {
        fault: Fault::Rcpt550("nobody@example.com".into()),
        ..ServerOptions::default()
    });
    let mut c = Client::open(&h, &["-bs"]);
    // It resolves, so we take it; only the real server knows it has no such mailbox.
    let refused = c.send_message(
        "nobody@example.com",
        b"Subject: refused\r\n\r\nbody\r\n.\r\n",
    );
    assert_eq!(refused.code, 550, "{}", c.transcript);
    let refused = refused.text();
    assert!(
        refused.starts_with("550 5.1.1 ") || refused.starts_with("550-5.1.1 "),
        "{refused}"
    );
    assert!(refused.contains("nobody@example.com"), "{refused}");
    assert!(
        refused.contains("does not exist"),
        "the server's words: {refused}"
    );

    // The session goes on, and the next message goes through.
    let accepted = c.send_message(
        "rcpt@example.com",
        b"Subject: accepted\r\n\r\nbody\r\n.\r\n",
    );
    assert_eq!(accepted.code, 250, "{}", c.transcript);
    c.command("QUIT", 221);
    assert_clean_exit(&h, &c.finish());
    let received = h.server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt_to, ["rcpt@example.com"]);
    // The client was told and keeps the message: nothing goes to dead.letter.
    assert!(h.dead_letter().is_none());
}

/// A temporary failure upstream: the queue takes the message, so the client gets its 250
/// (the message is safe); without a queue the client gets the 4xx and keeps it.
#[test]
fn a_temporary_failure_is_queued_or_comes_back_as_a_4xx() {
    let h = Harness::new(ServerOptions {
        fault: Fault::Data451,
        ..ServerOptions::default()
    });
    let mut c = Client::open(&h, &["-bs"]);
    let queued = c.send_message("rcpt@example.com", b"Subject: later\r\n\r\nbody\r\n.\r\n");
    assert_eq!(queued.code, 250, "{}", c.transcript);
    c.command("QUIT", 221);
    assert_clean_exit(&h, &c.finish());
    assert!(h.server.received().is_empty());
    assert_eq!(
        h.queue_listing().0.len(),
        1,
        "the message waits in the queue"
    );

    let h = Harness::with_config(
        ServerOptions {
            fault: Fault::Data451,
            ..ServerOptions::default()
        },
        |config| config.queue("never"),
    );
    let mut c = Client::open(&h, &["-bs"]);
    let deferred = c.send_message("rcpt@example.com", b"Subject: later\r\n\r\nbody\r\n.\r\n");
    assert_eq!(deferred.code, 451, "{}", c.transcript);
    let deferred = deferred.text();
    assert!(
        deferred.contains("4.3.0") && deferred.contains("451"),
        "{deferred}"
    );
    c.command("QUIT", 221);
    assert_clean_exit(&h, &c.finish());
    assert!(h.server.received().is_empty());
}

#[test]
fn a_pipe_closed_in_the_middle_of_a_message_delivers_nothing() {
    let mut h = Harness::new(ServerOptions::default());
    h.server.expect_unused();
    let mut c = Client::open(&h, &["-bs"]);
    c.command(&format!("MAIL FROM:<{TEST_USER}>"), 250);
    c.command("RCPT TO:<rcpt@example.com>", 250);
    c.command("DATA", 354);
    c.send(b"Subject: cut off\r\n\r\nthe first half of the bo");
    let done = c.finish();
    assert_eq!(done.status.code(), Some(74), "stderr:\n{}", done.stderr);
    assert!(
        done.stderr
            .starts_with("oauth-sendmail: the SMTP client went away in the middle of a message"),
        "{}",
        done.stderr
    );
    assert!(done.unread.is_empty(), "{:?}", done.unread);
    assert_eq!(h.server.connections(), 0, "nothing half sent");
    assert!(h.dead_letter().is_none());
    assert!(
        h.queue_listing().0.is_empty(),
        "nothing half kept for later either"
    );
}

#[test]
fn verbose_output_stays_off_the_smtp_channel() {
    let h = Harness::new(ServerOptions::default());
    let mut c = Client::open(&h, &["-bs", "-v"]);
    let sent = c.send_message("rcpt@example.com", b"Subject: verbose\r\n\r\nbody\r\n.\r\n");
    assert_eq!(sent.code, 250, "{}", c.transcript);
    c.command("QUIT", 221);
    let done = c.finish();
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    // Every line read was a reply (Client::reply checks), and nothing came after QUIT.
    assert!(done.unread.is_empty(), "{:?}", done.unread);
    assert!(
        done.stderr.contains("-> DATA"),
        "the upstream dialogue: {}",
        done.stderr
    );
    assert_eq!(h.server.received().len(), 1);
}

#[test]
fn a_recipient_that_cannot_be_resolved_is_refused_at_rcpt() {
    // Without a domain, a local name that is not an alias has nowhere to go.
    let h = Harness::with_config(ServerOptions::default(), |config| {
        let edited = config.clone().no_domain();
        assert_ne!(config, edited, "no domain line in:\n{}", config.render());
        edited
    });
    let mut c = Client::open(&h, &["-bs"]);
    c.command(&format!("MAIL FROM:<{TEST_USER}>"), 250);
    let refused = c.command("RCPT TO:<nobody>", 550).text();
    assert!(
        refused.contains("5.1.1 recipient `nobody` has no domain"),
        "{refused}"
    );
    c.command("RCPT TO:<root>", 250);
    c.command("DATA", 354);
    c.send(b"Subject: alias\r\n\r\nbody\r\n.\r\n");
    c.expect(250);
    c.command("QUIT", 221);
    assert_clean_exit(&h, &c.finish());
    let received = h.server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt_to, ["admin@example.com"]);
}

#[test]
fn a_broken_configuration_gets_a_421_greeting_and_exit_78() {
    let mut h = Harness::with_config(ServerOptions::default(), |config| {
        config.account_field("no_such_key", 1)
    });
    h.server.expect_unused();
    let mut c = Client::start(&h, &["-bs"]);
    let refused = c.expect(421).text();
    assert!(refused.contains("no_such_key"), "the reason: {refused}");
    let done = c.finish();
    assert_eq!(done.status.code(), Some(78), "{}", done.stderr);
    assert!(
        done.stderr.starts_with("oauth-sendmail: "),
        "{}",
        done.stderr
    );
}

/// A `-bs` client waits for each reply: queued messages do not follow its message on the
/// connection (a piped send lets them), so its next message is not held up by ours.
#[test]
fn a_session_does_not_wait_on_the_queue() {
    let h = Harness::with_config(
        ServerOptions {
            fault: Fault::Greeting421,
            ..ServerOptions::default()
        },
        |config| config.set("retry_initial", "1s"),
    );
    let queued = h.send(&["-i", "early@example.com"], b"Subject: early\n\nqueued\n");
    assert_eq!(
        queued.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&queued.stderr)
    );
    h.server.set_fault(Fault::None);
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let mut c = Client::open(&h, &["-bs"]);
    let sent = c.send_message("rcpt@example.com", b"Subject: now\r\n\r\nbody\r\n.\r\n");
    assert_eq!(sent.code, 250, "{}", c.transcript);
    c.command("QUIT", 221);
    assert_clean_exit(&h, &c.finish());
    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", h.server.transcript());
    assert_eq!(received[0].rcpt_to, ["rcpt@example.com"]);
    assert_eq!(
        h.queue_listing().0.len(),
        1,
        "the queued one waits for a flush"
    );
}
