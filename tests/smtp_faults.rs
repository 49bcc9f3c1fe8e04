//! The real binary against the scripted SMTP server: the happy paths (STARTTLS, implicit
//! TLS, XOAUTH2, AUTH PLAIN, tokens too long for one command line), one test per server
//! fault (refusals, certificates that cannot be trusted, replies dripped past the deadline,
//! replies echoing the secret) with the exit code and message the contract promises, and no
//! secret ever on stdout, stderr or in the state files.

mod common;

use std::process::Output;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::config::Value;
use common::harness::{
    assert_no_secrets, assert_no_secrets_in_files, code, stderr, stdout, write_private, Harness,
};
use common::smtp_server::TEST_TOKEN;
use common::smtp_server::{
    AuthCheck, Certificate, DripAt, Fault, ServerOptions, TlsMode, TEST_PASSWORD, TEST_USER,
};

/// A small message a cron job could send; the body line is what we look for downstream.
const MESSAGE: &[u8] =
    b"To: rcpt@example.com\nSubject: fault test\n\nBody line of the fault test.\n";
const BODY_LINE: &str = "Body line of the fault test.";

/// A temporary failure, twice: with the default `queue = "on-failure"` the message is
/// spooled and sendmail exits 0 with a one-line notice; with `queue = "never"` it is exit 75
/// and dead.letter, as msmtp does.
fn assert_temporary(fault: Fault, needle: &str) {
    let h = Harness::new(with_fault(fault.clone()));
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_stderr_has(&h, &o, "queued as");
    assert_stderr_has(&h, &o, needle);
    assert_eq!(
        stderr(&o).lines().count(),
        1,
        "the notice is one line\n{}",
        explain(&h, &o)
    );
    assert!(h.server.received().is_empty());
    assert!(
        h.dead_letter().is_none(),
        "a queued message is not also a dead letter"
    );
    let (ids, listing) = h.queue_listing();
    assert_eq!(ids.len(), 1, "{listing}");
    assert!(listing.contains("rcpt@example.com"), "{listing}");

    let h = Harness::with_config(with_fault(fault), |config| config.queue("never"));
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 75);
    assert_stderr_has(&h, &o, needle);
    assert!(h.server.received().is_empty());
    assert_dead_letter(&h, &o);
    assert!(h.queue_listing().0.is_empty());
}

/// A refused login: exit 77 so the caller and the admin see it, and the message waits in
/// the queue for the fix (not in dead.letter).
fn assert_auth_refused_and_queued(h: &Harness, o: &Output) {
    assert_exit(h, o, 77);
    assert!(
        h.dead_letter().is_none(),
        "queued, so not a dead letter\n{}",
        explain(h, o)
    );
    assert_stderr_has(h, o, "queued as");
    let (ids, listing) = h.queue_listing();
    assert_eq!(ids.len(), 1, "{listing}");
    // The refusal is written down, in the queue entry and the delivery log, without the
    // secret that was refused.
    let log = stdout(&h.own(&["log", "--format", "json"]));
    assert!(log.contains("\"result\":\"queued\""), "{log}");
    assert_no_secrets_in_files(&h.home.path().join(".local/state"));
}

fn with_fault(fault: Fault) -> ServerOptions {
    ServerOptions {
        fault,
        ..ServerOptions::default()
    }
}

fn password_auth() -> ServerOptions {
    ServerOptions {
        auth: AuthCheck::Plain {
            user: TEST_USER.to_string(),
            password: TEST_PASSWORD.to_string(),
        },
        ..ServerOptions::default()
    }
}

/// Everything a failing assertion should show: the exit code, both streams, the server side.
fn explain(h: &Harness, o: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- server transcript ---\n{}",
        o.status,
        stdout(o),
        stderr(o),
        h.server.transcript()
    )
}

fn assert_exit(h: &Harness, o: &Output, expected: i32) {
    assert_eq!(code(o), expected, "wrong exit code\n{}", explain(h, o));
    assert_no_secrets(o);
}

fn assert_stderr_has(h: &Harness, o: &Output, needle: &str) {
    assert!(
        stderr(o).contains(needle),
        "stderr lacks {needle:?}\n{}",
        explain(h, o)
    );
}

/// The one message the server accepted, checked for what every successful send must have.
fn assert_delivered_once(h: &Harness, o: &Output, mechanism: &str) {
    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", explain(h, o));
    let msg = &received[0];
    assert_eq!(msg.mail_from, TEST_USER);
    assert_eq!(msg.rcpt_to, ["rcpt@example.com"]);
    assert_eq!(msg.auth_mechanism.as_deref(), Some(mechanism));
    assert!(msg.tls, "delivered without TLS");
    let data = String::from_utf8_lossy(&msg.data);
    assert!(data.contains("Subject: fault test\r\n"), "{data:?}");
    assert!(
        data.ends_with(&format!("\r\n\r\n{BODY_LINE}\r\n")),
        "body mangled: {data:?}"
    );
}

#[test]
fn happy_path_starttls_xoauth2() {
    let h = Harness::new(ServerOptions::default());
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "XOAUTH2");
    assert!(h.dead_letter().is_none(), "dead.letter written on success");
}

#[test]
fn happy_path_implicit_tls_xoauth2() {
    let h = Harness::new(ServerOptions {
        tls: TlsMode::Implicit,
        ..ServerOptions::default()
    });
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "XOAUTH2");
}

#[test]
fn happy_path_sendmail_personality() {
    let h = Harness::new(ServerOptions::default());
    let o = h.sendmail(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "XOAUTH2");
}

/// The text after DATA is written two ways (src/smtp/client.rs): in one write with its final dot
/// (up to 4 MiB) or in 64 KiB chunks (larger). Both dot-stuff, whatever the bytes (UTF-8
/// or not): lines starting with "." arrive as they were, in every case.
#[test]
fn dot_lines_arrive_intact_whichever_way_the_text_is_written() {
    let h = Harness::new(ServerOptions::default());
    let dots: &[u8] = b".\n..\n.leading\nmiddle.\n";
    let filler = "0123456789abcdef".repeat(4) + "\n";
    let cases: [(&str, Vec<u8>); 3] = [
        ("utf-8", [b"caf\xc3\xa9\n".as_slice(), dots].concat()),
        ("latin-1", [b"caf\xe9\n".as_slice(), dots].concat()),
        ("5 MiB", [filler.repeat(80_000).as_bytes(), dots].concat()),
    ];
    for (name, body) in &cases {
        let message = [b"To: rcpt@example.com\nSubject: dots\n\n".as_slice(), body].concat();
        let o = h.send(&["-i", "rcpt@example.com"], &message);
        assert_exit(&h, &o, 0);
        let received = h.server.received();
        let data = &received.last().expect("a message arrived").data;
        let expected: Vec<u8> = body
            .split_inclusive(|&b| b == b'\n')
            .flat_map(|line| [&line[..line.len() - 1], b"\r\n"].concat())
            .collect();
        assert!(
            data.ends_with(&[b"\r\n\r\n".as_slice(), &expected].concat()),
            "{name}: body mangled, {} bytes arrived",
            data.len()
        );
    }
    assert_eq!(h.server.received().len(), cases.len());
}

#[test]
fn happy_path_password_auth_plain() {
    let h = Harness::new(password_auth());
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "PLAIN");
}

#[test]
fn wrong_password_is_an_authentication_failure() {
    let mut h = Harness::new(password_auth());
    let wrong = h.home.path().join("wrong-secret");
    h.write_config(|config| {
        let edited = config.clone().account_field("secret", Value::file(&wrong));
        assert_ne!(
            config,
            edited,
            "secret path not found in the config:\n{}",
            config.render()
        );
        edited
    });
    write_private(
        &h.home.path().join("wrong-secret"),
        "not-the-app-password\n",
    );
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_stderr_has(&h, &o, "535");
    assert!(h.server.received().is_empty());
    assert!(
        h.server.transcript().contains("AUTH "),
        "the binary never tried to authenticate\n{}",
        explain(&h, &o)
    );
    assert_auth_refused_and_queued(&h, &o);
}

#[test]
fn greeting_421_is_temporary() {
    assert_temporary(Fault::Greeting421, "421");
}

#[test]
fn data_451_is_temporary() {
    assert_temporary(Fault::Data451, "451");
}

#[test]
fn rcpt_550_refuses_one_recipient_the_other_gets_the_message() {
    let h = Harness::new(with_fault(Fault::Rcpt550("bad@example.com".to_string())));
    let o = h.send(&["-i", "good@example.com", "bad@example.com"], MESSAGE);
    assert_exit(&h, &o, 67);
    // Issue 9 item 25: the address once, then the server's words.
    assert_stderr_has(&h, &o, "recipient bad@example.com refused: 550 5.1.1");
    assert_eq!(
        stderr(&o).matches("bad@example.com").count(),
        1,
        "the refused address is repeated\n{}",
        explain(&h, &o)
    );
    let received = h.server.received();
    assert_eq!(received.len(), 1, "{}", explain(&h, &o));
    assert_eq!(received[0].rcpt_to, ["good@example.com"]);
    assert!(String::from_utf8_lossy(&received[0].data).contains(BODY_LINE));
}

#[test]
fn connection_dropped_after_mail_is_temporary() {
    assert_temporary(Fault::DropAfterMail, "MAIL FROM");
}

#[test]
fn gmail_xoauth2_rejection_is_an_authentication_failure() {
    let h = Harness::new(with_fault(Fault::Xoauth2Reject));
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    let err = stderr(&o);
    let lower = err.to_lowercase();
    assert!(
        lower.contains("authentication")
            && ["refused", "rejected", "not accepted", "failed"]
                .iter()
                .any(|w| lower.contains(w)),
        "stderr does not say authentication was refused\n{}",
        explain(&h, &o)
    );
    // The decoded 334 challenge: {"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}
    assert!(
        err.contains("401") || err.contains("https://mail.google.com/"),
        "stderr lacks the decoded reason (401 / scope)\n{}",
        explain(&h, &o)
    );
    assert!(h.server.received().is_empty());
    assert_auth_refused_and_queued(&h, &o);
}

#[test]
fn verbose_shows_the_dialogue_with_auth_redacted() {
    let h = Harness::new(ServerOptions::default());
    let o = h.send(&["-v", "-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "XOAUTH2");
    assert_stderr_has(&h, &o, "-> MAIL FROM:");
    assert_stderr_has(&h, &o, "<- 250");
    let err = stderr(&o);
    let auth_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.trim_start().starts_with("-> AUTH"))
        .collect();
    assert!(
        !auth_lines.is_empty(),
        "no AUTH line in the -v dialogue\n{}",
        explain(&h, &o)
    );
    for line in auth_lines {
        assert!(
            line.contains("(redacted)"),
            "AUTH line not redacted: {line}"
        );
    }
}

/// The contract: a message that could not be sent is appended to $HOME/dead.letter (mbox).
fn assert_dead_letter(h: &Harness, o: &Output) {
    let Some(dead) = h.dead_letter() else {
        panic!("no dead.letter\n{}", explain(h, o));
    };
    let dead = String::from_utf8_lossy(&dead);
    assert!(dead.starts_with("From "), "not mbox: {dead:?}");
    assert!(dead.contains(BODY_LINE), "message missing: {dead:?}");
}

/// A token or password of `len` characters, none of them in `secret_forms()`.
fn long_secret(prefix: &str, len: usize) -> String {
    let mut secret = prefix.to_string();
    while secret.len() < len {
        secret.push_str("-LONG-SECRET-MUST-NOT-LEAK");
    }
    secret.truncate(len);
    secret
}

/// The forms in which `secret` (for TEST_USER) could leak: raw, and base64 as it goes
/// on the wire in XOAUTH2 and PLAIN.
fn forms_of(secret: &str) -> Vec<String> {
    vec![
        secret.to_string(),
        B64.encode(format!("user={TEST_USER}\x01auth=Bearer {secret}\x01\x01")),
        B64.encode(format!("\0{TEST_USER}\0{secret}")),
        B64.encode(secret),
    ]
}

fn assert_never_shown(h: &Harness, o: &Output, secret: &str) {
    let state = h.home.path().join(".local/state");
    let mut files = String::new();
    let mut dirs = vec![state];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.path().is_dir() {
                true => dirs.push(entry.path()),
                false => files.push_str(&String::from_utf8_lossy(
                    &std::fs::read(entry.path()).unwrap_or_default(),
                )),
            }
        }
    }
    let shown = [
        stdout(o),
        stderr(o),
        files,
        h.queue_listing().1,
        stdout(&h.own(&["log", "--format", "json"])),
    ];
    for form in forms_of(secret) {
        for (what, text) in ["stdout", "stderr", "state files", "queue list", "log"]
            .iter()
            .zip(&shown)
        {
            assert!(
                !text.contains(&form),
                "the secret leaked into {what}: {text}"
            );
        }
    }
}

/// Issue 9 item 1: a 2.4 KB access token (Microsoft's are 1.5-2.5 KB) makes an AUTH line
/// longer than Postfix takes (2048); RFC 4954: send `AUTH XOAUTH2`, then the response on
/// its own line after the empty 334.
#[test]
fn a_long_access_token_is_sent_after_the_334() {
    let token = long_secret("eyJ0eXAiOiJKV1QiLCJhbGciOi", 2400);
    let h = Harness::new(ServerOptions {
        auth: AuthCheck::Xoauth2 {
            user: TEST_USER.to_string(),
            token: token.clone(),
        },
        ..ServerOptions::default()
    });
    write_private(&h.home.path().join("secret"), &token);
    let o = h.send(&["-v", "-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "XOAUTH2");
    assert!(
        h.server.transcript().contains("C: AUTH XOAUTH2\n"),
        "the AUTH command did not go without its response\n{}",
        explain(&h, &o)
    );
    assert_stderr_has(&h, &o, "-> AUTH XOAUTH2\n");
    assert_stderr_has(&h, &o, "-> (redacted)\n");
    assert_never_shown(&h, &o, &token);
}

/// The same for AUTH PLAIN with a long password (API keys).
#[test]
fn a_long_password_is_sent_after_the_334() {
    let password = long_secret("key-", 1600);
    let h = Harness::new(ServerOptions {
        auth: AuthCheck::Plain {
            user: TEST_USER.to_string(),
            password: password.clone(),
        },
        ..ServerOptions::default()
    });
    write_private(&h.home.path().join("secret"), &password);
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_delivered_once(&h, &o, "PLAIN");
    assert_never_shown(&h, &o, &password);
}

/// Gmail's refusal (334 <base64 JSON>, then 535 after an empty line) comes the same way
/// after a response on its own line: exit 77 with the decoded reason.
#[test]
fn a_long_token_refused_with_the_gmail_challenge_is_an_authentication_failure() {
    let token = long_secret("ya29.", 2400);
    let h = Harness::new(ServerOptions {
        auth: AuthCheck::Xoauth2 {
            user: TEST_USER.to_string(),
            token: token.clone(),
        },
        fault: Fault::Xoauth2Reject,
        ..ServerOptions::default()
    });
    write_private(&h.home.path().join("secret"), &token);
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_stderr_has(&h, &o, "https://mail.google.com/");
    assert_stderr_has(&h, &o, "535 5.7.8");
    assert_auth_refused_and_queued(&h, &o);
    assert_never_shown(&h, &o, &token);
}

/// The contract for a certificate that cannot be trusted (issue 9 item 4): the message
/// waits in the queue, the exit status is 78 so cron and scripts see it, and stderr says
/// what is wrong with the certificate and what to set.
fn assert_certificate_refused(h: &Harness, o: &Output, problem: &str, fix: &str) {
    assert_exit(h, o, 78);
    assert_stderr_has(h, o, problem);
    assert_stderr_has(h, o, fix);
    assert_stderr_has(h, o, "queued as");
    assert!(h.server.received().is_empty());
    assert!(h.dead_letter().is_none(), "queued, so not a dead letter");
    let (ids, listing) = h.queue_listing();
    assert_eq!(ids.len(), 1, "{listing}");
    let mailq = h.sendmail(&["-bp"], b"");
    assert!(
        stdout(&mailq).contains(&ids[0]) && stdout(&mailq).contains("rcpt@example.com"),
        "mailq does not show the message\n{}",
        stdout(&mailq)
    );
}

#[test]
fn an_untrusted_certificate_keeps_the_message_and_exits_78() {
    let elsewhere = tempfile::tempdir().unwrap();
    let unrelated = common::tls::write_unrelated_ca_file(elsewhere.path());
    let h = Harness::with_config(ServerOptions::default(), |config| {
        config.account_field("ca_file", &unrelated)
    });
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_certificate_refused(
        &h,
        &o,
        "the certificate of 127.0.0.1 is not trusted: unknown issuer",
        "ca_file",
    );
}

#[test]
fn a_certificate_for_another_name_keeps_the_message_and_exits_78() {
    let h = Harness::new(ServerOptions {
        certificate: Certificate::OtherName,
        ..ServerOptions::default()
    });
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_certificate_refused(
        &h,
        &o,
        "the certificate of 127.0.0.1 is for other.example, not 127.0.0.1",
        "`host`",
    );
}

/// Issue 9 item 9: `timeout` bounds each step, not each read. The server drips a byte a
/// second, for ever; with timeout = 2 the send gives up (the harness would kill it after
/// 30 s), words it as a timeout and keeps the message.
fn assert_drip_times_out(at: DripAt, wording: &str) {
    let h = Harness::with_config(with_fault(Fault::Drip(at)), |config| {
        let edited = config.clone().account_field("timeout", 2);
        assert_ne!(
            config,
            edited,
            "no timeout in the config:\n{}",
            config.render()
        );
        edited
    });
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    assert_stderr_has(
        &h,
        &o,
        &format!("{wording} from 127.0.0.1:{}", h.server.port),
    );
    assert_stderr_has(&h, &o, "queued as");
    assert!(!stderr(&o).contains("os error"), "{}", explain(&h, &o));
    assert_eq!(h.queue_listing().0.len(), 1);
    assert!(h.server.received().is_empty());
}

#[test]
fn a_dripped_greeting_times_out() {
    assert_drip_times_out(DripAt::Greeting, "timed out waiting for the greeting");
}

#[test]
fn a_dripped_reply_to_rcpt_times_out() {
    assert_drip_times_out(DripAt::Rcpt, "timed out waiting for the reply to RCPT TO");
}

/// Each reply 3 seconds late, timeout = 4: every step is in time, but opening the session
/// (greeting, EHLO, STARTTLS, EHLO, AUTH) may take 3 x timeout in all, and does not get
/// more.
#[test]
fn a_session_slow_at_every_step_ends_at_its_bound() {
    let h = Harness::with_config(
        with_fault(Fault::SlowReplies(Duration::from_secs(3))),
        |c| {
            let edited = c.clone().account_field("timeout", 4);
            assert_ne!(c, edited, "no timeout in the config:\n{}", c.render());
            edited
        },
    );
    let o = h.send(&["-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 0);
    // Which step it is depends on the scheduler: the bound, not the step, ran out.
    assert_stderr_has(&h, &o, "timed out ");
    assert_stderr_has(&h, &o, "allowed 12 seconds in all");
    assert_stderr_has(&h, &o, "queued as");
    assert!(h.server.received().is_empty());
}

/// Issue 9 item 17: a server whose 535 quotes the AUTH argument (and what it decodes to)
/// must not get the token or password into stderr, the queue, mailq or the delivery log.
#[test]
fn a_refusal_that_echoes_the_auth_argument_shows_no_secret() {
    for opts in [ServerOptions::default(), password_auth()] {
        let h = Harness::new(ServerOptions {
            fault: Fault::EchoAuth535,
            ..opts
        });
        let o = h.send(&["-v", "-i", "rcpt@example.com"], MESSAGE);
        assert_stderr_has(&h, &o, "535 5.7.8 Authentication failed: AUTH");
        assert_stderr_has(&h, &o, "(redacted)");
        assert_auth_refused_and_queued(&h, &o);
        assert!(
            h.server
                .transcript()
                .contains("S: 535-5.7.8 Authentication failed: AUTH"),
            "the server did not echo\n{}",
            explain(&h, &o)
        );
        assert_never_shown(&h, &o, TEST_TOKEN);
        assert_never_shown(&h, &o, TEST_PASSWORD);
        let mailq = h.sendmail(&["-bp"], b"");
        assert_no_secrets(&mailq);
    }
}

/// Issue 9 item 24: `-v` shows the dialogue as it was: every line the server sent (the
/// greeting, each EHLO line, the 535), every command, the AUTH argument as "(redacted)",
/// and no Rust debug text.
#[test]
fn verbose_shows_every_line_of_the_dialogue_and_no_secret() {
    let mut h = Harness::new(password_auth());
    let wrong = h.home.path().join("wrong-secret");
    h.write_config(|config| config.account_field("secret", Value::file(&wrong)));
    write_private(
        &h.home.path().join("wrong-secret"),
        "not-the-app-password\n",
    );
    let o = h.send(&["-v", "-i", "rcpt@example.com"], MESSAGE);
    assert_exit(&h, &o, 77);
    let err = stderr(&o);
    let transcript = h.server.transcript();
    let mut server_lines = 0;
    for line in transcript.lines() {
        let Some((_, said)) = line.split_once(": ") else {
            continue;
        };
        let expected = match line.split_whitespace().nth(1) {
            Some("S:") => {
                server_lines += 1;
                format!("<- {said}")
            }
            Some("C:") if said.starts_with("AUTH PLAIN ") => "-> AUTH PLAIN (redacted)".into(),
            Some("C:") => format!("-> {said}"),
            _ => continue,
        };
        assert!(
            err.lines().any(|l| l == expected),
            "-v lacks {expected:?}\n{}",
            explain(&h, &o)
        );
    }
    assert!(server_lines >= 8, "{transcript}");
    assert!(err.contains("<- 220 localhost ESMTP"), "{err}");
    assert!(err.contains("<- 250-8BITMIME"), "{err}");
    assert!(err.contains("<- 535 5.7.8"), "{err}");
    for debug in ["{", "Some(", "SmtpUtfEight", "TLSv1_"] {
        assert!(!err.contains(debug), "debug text {debug:?} in -v\n{err}");
    }
    assert!(!err.contains("not-the-app-password"), "{err}");
    assert!(
        !err.contains(&B64.encode(format!("\0{TEST_USER}\0not-the-app-password"))),
        "{err}"
    );
}
