//! `transport = "gmail-api"` and `"graph"` through the real binary, against the fake APIs
//! of tests/common/mail_api.rs over HTTPS and the fake OAuth provider, with the SMTP
//! ports closed: cron mail, envelope-only and Bcc recipients (delivered, never visible),
//! a refused token refreshed once, 429 with Retry-After (queued, not retried early), a
//! 400 bounced in the API's words, the size limits, the queue drained over one
//! connection, `status --check`, and no secret in `-v`.

mod common;

use std::process::Output;

use common::config::TestConfig;
use common::harness::{code, free_port, stderr, stdout, Harness};
use common::mail_api::{Api, MailApi, Scripted};
use common::oauth_server::{
    assert_no_oauth_secrets, harness_with_oauth, login, OAuthOptions, OAuthServer,
};
use common::smtp_server::{TEST_TOKEN, TEST_USER};

const APIS: [Api; 2] = [Api::Gmail, Api::Graph];
/// An access token the fake APIs refuse (they take only TEST_TOKEN).
const REFUSED: &str = "ya29.refused-by-the-api-MUST-NOT-LEAK";

struct Setup {
    api: MailApi,
    oauth: OAuthServer,
    h: Harness,
}

/// Account "test" sending through `api`, logged in at the fake provider, its SMTP port
/// closed (the harness's SMTP server is never used); `settings` at the top level.
fn setup(api: Api, opts: OAuthOptions, settings: &[(&str, &str)]) -> Setup {
    let s = setup_with(api, opts, |c| c.settings(settings));
    let o = login(&s.h, &[]);
    assert_eq!(code(&o), 0, "login: {}", stderr(&o));
    s
}

/// The same, not logged in, with `edit` applied to the config.
fn setup_with(api: Api, opts: OAuthOptions, edit: impl FnOnce(TestConfig) -> TestConfig) -> Setup {
    let server = MailApi::start(api);
    let closed = free_port();
    let (oauth, mut h) = harness_with_oauth(opts, |c| {
        let c = edit(c)
            .port(closed)
            .account_field("transport", api.transport())
            .account_field("api_uri", server.base());
        match api {
            Api::Gmail => c,
            Api::Graph => c.account_field("provider", "outlook"),
        }
    });
    h.server.expect_unused();
    Setup {
        api: server,
        oauth,
        h,
    }
}

impl Setup {
    fn explain(&self, o: &Output) -> String {
        format!(
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- api log ---\n{}--- oauth log ---\n{}",
            o.status,
            stdout(o),
            stderr(o),
            self.api.log(),
            self.oauth.log()
        )
    }

    fn sendmail(&self, args: &[&str], message: &[u8]) -> Output {
        let o = self.h.sendmail(args, message);
        assert_no_oauth_secrets(&self.oauth, &o);
        o
    }

    fn own(&self, args: &[&str]) -> Output {
        let o = self.h.own(args);
        assert_no_oauth_secrets(&self.oauth, &o);
        o
    }

    fn queued(&self) -> Vec<String> {
        self.h.queue_listing().0
    }
}

const CRON: &[u8] =
    b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> backup\n\nbackup done\n";

#[test]
fn a_cron_mail_goes_out_through_each_api_with_the_send_only_scope() {
    for api in APIS {
        let s = setup(api, OAuthOptions::default(), &[]);
        let scope = &s.oauth.authorize_params()[0]["scope"];
        let wanted = match api {
            Api::Gmail => "https://www.googleapis.com/auth/gmail.send",
            Api::Graph => "https://graph.microsoft.com/Mail.Send offline_access",
        };
        assert_eq!(scope, wanted, "{api:?}: login asked for the wrong scopes");
        let o = s.sendmail(&["-v", "-FCronDaemon", "-i", "-oem", "root"], CRON);
        assert_eq!(code(&o), 0, "{api:?}: {}", s.explain(&o));
        // root is an alias of admin@example.com, in the header too.
        assert_eq!(s.api.recipients(), ["admin@example.com"], "{}", s.api.log());
        let got = &s.api.delivered()[0].message;
        assert!(got.contains("backup done"), "{got}");
        assert!(got.contains("To: <admin@example.com>"), "{got}");
        let verbose = stderr(&o);
        let path = match api {
            Api::Gmail => "-> POST /upload/gmail/v1/users/me/messages/send?uploadType=media",
            Api::Graph => "-> POST /me/sendMail",
        };
        assert!(verbose.contains(path), "{verbose}");
        assert!(
            verbose.contains("Authorization: Bearer (redacted)"),
            "{verbose}"
        );
        assert!(!verbose.contains(TEST_TOKEN), "{verbose}");
        let log = stdout(&s.own(&["log", "--format", "json"]));
        assert!(log.contains("\"sent\""), "{log}");
        let dry = stdout(&s.sendmail(&["--dry-run", "-i", "root"], CRON));
        assert!(
            dry.contains(&format!("({}, {})", s.api.base(), api.transport())),
            "{dry}"
        );
        assert!(log.contains("HTTP 20"), "{log}");
    }
}

#[test]
fn envelope_only_and_bcc_recipients_get_it_and_nobody_sees_them() {
    let message = b"To: Alice <alice@example.com>\nBcc: hidden@example.com\nSubject: s\n\nhello\n";
    for api in APIS {
        let s = setup(api, OAuthOptions::default(), &[]);
        let o = s.sendmail(&["-t", "-i", "extra@example.com"], message);
        assert_eq!(code(&o), 0, "{api:?}: {}", s.explain(&o));
        let mut recipients = s.api.recipients();
        recipients.sort();
        assert_eq!(
            recipients,
            [
                "alice@example.com",
                "extra@example.com",
                "hidden@example.com"
            ],
            "{api:?}"
        );
        for delivered in s.api.delivered() {
            let text = delivered.message.to_ascii_lowercase();
            assert!(
                !text.contains("hidden@") && !text.contains("extra@"),
                "{api:?}: {} sees a blind recipient:\n{}",
                delivered.recipient,
                delivered.message
            );
            assert!(text.contains("to: alice <alice@example.com>"), "{text}");
        }
    }
}

#[test]
fn a_to_field_naming_someone_outside_the_envelope_does_not_send_it_there() {
    // sendmail without -t: the envelope is the argument, whatever the header says.
    let s = setup(Api::Gmail, OAuthOptions::default(), &[]);
    let o = s.sendmail(
        &["-i", "me@example.com"],
        b"To: boss@example.com\nSubject: s\n\nb\n",
    );
    assert_eq!(code(&o), 0, "{}", s.explain(&o));
    assert_eq!(s.api.recipients(), ["me@example.com"], "{}", s.api.log());
    let got = &s.api.delivered()[0].message;
    assert!(got.contains("X-Original-To: boss@example.com"), "{got}");
}

#[test]
fn a_refused_token_is_refreshed_once_then_the_message_goes() {
    for api in APIS {
        let s = setup(
            api,
            OAuthOptions {
                access_tokens: vec![REFUSED.to_string(), TEST_TOKEN.to_string()],
                ..OAuthOptions::default()
            },
            &[],
        );
        let o = s.sendmail(&["-i", "rcpt@example.com"], b"Subject: s\n\nbody\n");
        assert_eq!(code(&o), 0, "{api:?}: {}", s.explain(&o));
        assert_eq!(s.oauth.calls("refresh_token"), 1, "{}", s.oauth.log());
        assert_eq!(s.api.tokens(), [REFUSED, TEST_TOKEN], "{}", s.api.log());
        assert_eq!(s.api.recipients(), ["rcpt@example.com"]);
    }
}

#[test]
fn a_revoked_login_is_exit_77_and_the_message_waits() {
    let s = setup(
        Api::Gmail,
        OAuthOptions {
            access_tokens: vec![REFUSED.to_string()],
            ..OAuthOptions::default()
        },
        &[],
    );
    s.oauth.revoke_all();
    let o = s.sendmail(&["-i", "rcpt@example.com"], b"Subject: s\n\nbody\n");
    assert_eq!(code(&o), 77, "{}", s.explain(&o));
    assert!(stderr(&o).contains("queued as"), "{}", stderr(&o));
    assert_eq!(s.queued().len(), 1);
    assert!(s.api.recipients().is_empty());
}

#[test]
fn a_429_with_retry_after_queues_and_is_not_retried_early() {
    for api in APIS {
        // Without the API's wish the next try would be due at once.
        let s = setup(api, OAuthOptions::default(), &[("retry_initial", "0s")]);
        s.api.script([
            Scripted::error(api, 429, "Too many requests").with_header("Retry-After", "3600")
        ]);
        let o = s.sendmail(&["-i", "rcpt@example.com"], b"Subject: s\n\nbody\n");
        assert_eq!(code(&o), 0, "{api:?}: {}", s.explain(&o));
        assert!(stderr(&o).contains("queued as"), "{}", stderr(&o));
        assert_eq!(s.queued().len(), 1);
        let o = s.own(&["queue", "flush"]);
        assert_eq!(code(&o), 0, "{}", s.explain(&o));
        assert_eq!(s.api.sends(), 1, "retried before the hour: {}", s.api.log());
        // Asked for by a person: it goes.
        let o = s.own(&["queue", "retry", "--all"]);
        assert_eq!(code(&o), 0, "{}", s.explain(&o));
        assert_eq!(s.api.recipients(), ["rcpt@example.com"]);
        assert!(s.queued().is_empty());
    }
}

#[test]
fn a_400_from_the_queue_bounces_with_the_apis_words() {
    for api in APIS {
        let s = setup(api, OAuthOptions::default(), &[("queue", "always")]);
        s.api
            .script([Scripted::error(api, 400, "Invalid To header")]);
        let o = s.sendmail(&["-i", "rcpt@example.com"], b"Subject: doomed\n\nbody\n");
        assert_eq!(code(&o), 69, "{api:?}: {}", s.explain(&o));
        assert!(stderr(&o).contains("Invalid To header"), "{}", stderr(&o));
        // The bounce went back to the sender through the same API.
        assert_eq!(
            s.api.recipients(),
            [TEST_USER.to_ascii_lowercase()],
            "{}",
            s.api.log()
        );
        let bounce = &s.api.delivered()[0].message;
        assert!(bounce.contains("Invalid To header"), "{bounce}");
        assert!(bounce.contains("rcpt@example.com"), "{bounce}");
        let log = stdout(&s.own(&["log", "--format", "json"]));
        assert!(log.contains("Invalid To header"), "{log}");
        assert!(s.queued().is_empty());
    }
}

/// A message of about `size` bytes: headers, then base64-like lines.
fn large_message(size: usize) -> Vec<u8> {
    let mut message = b"To: rcpt@example.com\nSubject: big\n\n".to_vec();
    let line = [b'A'; 76];
    while message.len() < size {
        message.extend_from_slice(&line);
        message.push(b'\n');
    }
    message
}

#[test]
fn a_20_mib_message_goes_through_gmail() {
    let s = setup(Api::Gmail, OAuthOptions::default(), &[]);
    let o = s.sendmail(&["-t", "-i"], &large_message(20 * 1024 * 1024));
    assert_eq!(code(&o), 0, "{}", s.explain(&o));
    let delivered = s.api.delivered();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].message.len() > 20 * 1024 * 1024);
}

#[test]
fn graph_takes_3_mb_and_refuses_more_before_sending() {
    let mut s = setup(Api::Graph, OAuthOptions::default(), &[]);
    let o = s.sendmail(&["-t", "-i"], &large_message(2900 * 1024));
    assert_eq!(code(&o), 0, "{}", s.explain(&o));
    assert_eq!(s.api.recipients(), ["rcpt@example.com"]);
    let o = s.sendmail(&["-t", "-i"], &large_message(20 * 1024 * 1024));
    assert_eq!(code(&o), 69, "{}", s.explain(&o));
    assert!(
        stderr(&o).contains("too large for Microsoft Graph"),
        "{}",
        stderr(&o)
    );
    assert_eq!(s.api.sends(), 1, "the large one was never uploaded");
    assert!(s.h.dead_letter().is_some(), "the refused message is kept");
    s.api.expect_unused();
}

#[test]
fn the_queue_drains_over_one_connection() {
    for api in APIS {
        // One connection, reused for each message (several at once: parallel_drain.rs).
        let s = setup_with(api, OAuthOptions::default(), |c| {
            c.settings(&[("retry_initial", "0s")])
                .account_field("connections", 1)
        });
        let o = login(&s.h, &[]);
        assert_eq!(code(&o), 0, "login: {}", stderr(&o));
        s.api
            .script((0..3).map(|_| Scripted::error(api, 503, "Backend Error")));
        for n in 0..3 {
            let o = s.sendmail(
                &["-i", &format!("r{n}@example.com")],
                b"Subject: s\n\nbody\n",
            );
            assert_eq!(code(&o), 0, "{}", s.explain(&o));
        }
        assert_eq!(s.queued().len(), 3);
        let before = s.api.connections();
        let o = s.own(&["queue", "flush"]);
        assert_eq!(code(&o), 0, "{}", s.explain(&o));
        let mut recipients = s.api.recipients();
        recipients.sort();
        assert_eq!(
            recipients,
            ["r0@example.com", "r1@example.com", "r2@example.com"]
        );
        assert_eq!(s.api.connections() - before, 1, "{api:?}: {}", s.api.log());
    }
}

#[test]
fn status_check_asks_the_api_and_sends_nothing() {
    for api in APIS {
        let s = setup(api, OAuthOptions::default(), &[]);
        let o = s.own(&["status", "--check", "-v"]);
        assert_eq!(code(&o), 0, "{api:?}: {}", s.explain(&o));
        let out = stdout(&o);
        assert!(
            out.contains("accepts the token for sender@example.com"),
            "{out}"
        );
        assert!(out.contains("nothing sent"), "{out}");
        assert_eq!((s.api.checks(), s.api.sends()), (1, 0));
    }
}

#[test]
fn graph_app_only_sends_as_the_mailbox_with_client_credentials() {
    let s = setup_with(Api::Graph, OAuthOptions::default(), |c| {
        c.oauth("client_credentials", true)
            .oauth("tenant", "contoso.example")
    });
    let o = s.sendmail(&["-i", "rcpt@example.com"], b"Subject: app\n\nbody\n");
    assert_eq!(code(&o), 0, "{}", s.explain(&o));
    assert_eq!(s.oauth.calls("client_credentials"), 1, "{}", s.oauth.log());
    assert!(
        s.api
            .log()
            .starts_with("POST /v1.0/users/sender%40example.com/sendMail"),
        "{}",
        s.api.log()
    );
    assert_eq!(s.api.recipients(), ["rcpt@example.com"]);
}

#[test]
fn an_untrusted_api_certificate_is_exit_78_and_the_message_waits() {
    let dir = tempfile::tempdir().unwrap();
    let unrelated = common::tls::write_unrelated_ca_file(dir.path());
    let mut s = setup(Api::Gmail, OAuthOptions::default(), &[]);
    s.h.write_config(|c| c.account_field("ca_file", &unrelated));
    let o = s.sendmail(&["-i", "rcpt@example.com"], b"Subject: s\n\nbody\n");
    assert_eq!(code(&o), 78, "{}", s.explain(&o));
    assert!(stderr(&o).contains("certificate"), "{}", stderr(&o));
    assert_eq!(s.queued().len(), 1, "the message waits for the fix");
    s.api.expect_unused();
}

#[test]
fn sendmail_bs_rcpt_only_recipients_get_it_unseen() {
    let s = setup(Api::Graph, OAuthOptions::default(), &[]);
    let dialogue = "EHLO client.example\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<quiet@example.com>\r\nDATA\r\nTo: a@example.com\r\nSubject: bs\r\n\r\nhi\r\n.\r\nQUIT\r\n";
    let o = s.sendmail(&["-bs"], dialogue.as_bytes());
    assert_eq!(code(&o), 0, "{}", s.explain(&o));
    assert!(stdout(&o).contains("221"), "{}", s.explain(&o));
    let mut recipients = s.api.recipients();
    recipients.sort();
    assert_eq!(
        recipients,
        ["a@example.com", "quiet@example.com"],
        "{}",
        s.api.log()
    );
    for delivered in s.api.delivered() {
        assert!(
            !delivered.message.contains("quiet@"),
            "{}",
            delivered.message
        );
    }
}

#[test]
fn a_service_account_sends_through_the_gmail_api_with_gmail_send_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.json");
    common::oauth_server::write_service_account_key(&key);
    let mut s = setup_with(Api::Gmail, OAuthOptions::default(), |c| c);
    let token_uri = s.oauth.url("/token");
    s.h.write_config(|c| {
        c.oauth_cleared()
            .oauth("service_account", &key)
            .oauth("subject", TEST_USER)
            .oauth("token_uri", token_uri)
    });
    let o = s.sendmail(&["-i", "rcpt@example.com"], b"Subject: sa\n\nbody\n");
    assert_eq!(code(&o), 0, "{}", s.explain(&o));
    let claims = s.oauth.jwt_claims();
    assert_eq!(
        claims[0]["scope"], "https://www.googleapis.com/auth/gmail.send",
        "{claims:?}"
    );
    assert_eq!(s.api.recipients(), ["rcpt@example.com"]);
}

#[test]
fn a_403_for_a_missing_permission_keeps_the_message_for_the_fix() {
    for api in APIS {
        let s = setup(api, OAuthOptions::default(), &[]);
        s.api.script([Scripted::error(
            api,
            403,
            "Request had insufficient authentication scopes.",
        )]);
        let o = s.sendmail(&["-i", "rcpt@example.com"], b"Subject: s\n\nbody\n");
        assert_eq!(code(&o), 78, "{api:?}: {}", s.explain(&o));
        let text = stderr(&o);
        assert!(
            text.contains("insufficient authentication scopes"),
            "{text}"
        );
        assert!(text.contains("queued as"), "{text}");
        assert_eq!(s.queued().len(), 1);
        assert!(s.h.dead_letter().is_none());
    }
}

/// Issue 15: a queued message goes to Gmail from its queue file, read as the upload goes
/// (a Content-Length upload, not the message held whole): a 6 MiB message queued by a
/// 503 arrives whole on the flush, its body byte for byte as it was given.
#[test]
fn a_large_queued_message_is_uploaded_from_its_file_whole() {
    let s = setup(
        Api::Gmail,
        OAuthOptions::default(),
        &[("retry_initial", "0s")],
    );
    let message = large_message(6 * 1024 * 1024);
    s.api
        .script([Scripted::error(Api::Gmail, 503, "Backend Error")]);
    let o = s.sendmail(&["-t", "-i"], &message);
    assert_eq!(code(&o), 0, "{}", s.explain(&o));
    assert_eq!(s.queued().len(), 1, "{}", s.explain(&o));
    assert!(s.api.delivered().is_empty());

    let o = s.own(&["queue", "flush"]);

    assert_eq!(code(&o), 0, "{}", s.explain(&o));
    assert!(s.queued().is_empty(), "{}", s.explain(&o));
    let delivered = s.api.delivered();
    assert_eq!(delivered.len(), 1);
    let given = String::from_utf8(message).unwrap();
    let body = given.split_once("\n\n").unwrap().1.replace('\n', "\r\n");
    let got = &delivered[0].message;
    assert!(got.contains("Subject: big\r\n"), "{}", &got[..200]);
    assert!(
        got.split_once("\r\n\r\n").map(|(_, b)| b) == Some(&body[..]),
        "the body arrived changed: {} bytes for {}",
        got.len(),
        body.len()
    );
}
