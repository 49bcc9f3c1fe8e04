//! Delivery through a real submission server written by nobody here: Debian's Postfix 3.7
//! with STARTTLS required and SASL XOAUTH2 through Dovecot's oauth2 passdb, which checks each
//! token at the fake OAuth server's introspection endpoint (tests/common/postfix.rs,
//! tests/mta/postfix/). It caught what the suite's own servers did not: Postfix cuts command
//! lines at 2048 octets (line_length_limit), so a long token must not go inline with AUTH.
//!
//! One instance (and one OAuth server) for the whole file, each test with its own mailbox
//! address. Needs root, postfix and dovecot-core (scripts/install-test-deps); without them
//! the tests say why and pass, except under CI=true, where that is a failure.

#[path = "common/callers.rs"]
mod callers;
mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::config::TestConfig;
use common::harness::{code, isolate, run_with_limit, stderr, stdout, write_private, BIN};
use common::oauth_server::{
    assert_no_oauth_secrets, use_service_account, write_service_account_key, OAuthOptions,
    OAuthServer,
};
use common::postfix::{self, Postfix};
use common::smtp_server::{TEST_TOKEN, TEST_USER};
use common::tls;

/// How long one run of the binary may take (the 20 MiB message has its own).
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// How long Postfix may take to deliver what it accepted.
const DELIVERY_LIMIT: Duration = Duration::from_secs(60);

/// The shared instance and the OAuth server its Dovecot asks about tokens.
struct Server {
    oauth: OAuthServer,
    postfix: Postfix,
}

/// The instance shared by this file's tests, started by the first that asks; `None` (the
/// test returns) when it cannot run here outside CI.
fn server(test: &str) -> Option<&'static Server> {
    if !postfix::available(test) {
        return None;
    }
    static SERVER: OnceLock<Server> = OnceLock::new();
    Some(SERVER.get_or_init(|| {
        // The first token issued goes to the service account test; Dovecot's introspection
        // takes every one of them.
        let oauth = OAuthServer::start(OAuthOptions {
            access_tokens: vec![
                SERVICE_ACCOUNT_TOKEN.to_string(),
                TEST_TOKEN.to_string(),
                long_token(),
            ],
            ..OAuthOptions::default()
        });
        let postfix = Postfix::start(&oauth.url("/introspect"));
        Server { oauth, postfix }
    }))
}

/// What the fake provider issues for the service account.
const SERVICE_ACCOUNT_TOKEN: &str = "ya29.c.service-account-token-MUST-NOT-LEAK";

/// A 2.4 KB access token, the size of a Microsoft one: its XOAUTH2 response in base64 is
/// about 3.3 KB, more than Postfix takes on one command line.
fn long_token() -> String {
    let mut token = String::from("EwBIA8l6BAAU-MUST-NOT-LEAK-");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut n: u32 = 7;
    while token.len() < 2400 {
        n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        token.push(alphabet[(n >> 16) as usize % alphabet.len()] as char);
    }
    token
}

/// One sender: a private HOME with the config (account "test" at the instance, XOAUTH2 with
/// `token` in a secret file, alias root -> admin@example.com as tests/common/callers.rs
/// expects) and `bin/sendmail`.
struct Client {
    server: &'static Server,
    home: tempfile::TempDir,
    /// What `<home>/config.toml` was written from.
    config: TestConfig,
    token: String,
}

impl Client {
    fn new(server: &'static Server, token: &str) -> Client {
        let home = tempfile::tempdir().expect("tempdir for HOME");
        let ca_file = tls::write_ca_file(home.path());
        let secret = home.path().join("secret");
        write_private(&secret, &format!("{token}\n"));
        let config = TestConfig::new(server.postfix.port, &ca_file)
            .account_field("timeout", 30)
            .xoauth2(TEST_USER, &secret);
        write_private(&home.path().join("config.toml"), &config.render());
        std::fs::create_dir(home.path().join("bin")).expect("create <home>/bin");
        std::os::unix::fs::symlink(BIN, home.path().join("bin/sendmail")).expect("symlink");
        Client {
            server,
            home,
            config,
            token: token.to_string(),
        }
    }

    /// A sender whose account is a Google service account (JWT bearer grant at the fake
    /// provider, no login), acting as TEST_USER: its token comes from the provider.
    fn with_service_account(server: &'static Server) -> Client {
        let mut client = Client::new(server, "unused");
        client.token = SERVICE_ACCOUNT_TOKEN.to_string();
        let key = client.home.path().join("service-account.json");
        write_service_account_key(&key);
        client.config = use_service_account(client.config.clone(), &server.oauth, &key);
        write_private(&client.config_path(), &client.config.render());
        client
    }

    fn config_path(&self) -> PathBuf {
        self.home.path().join("config.toml")
    }

    /// `<home>/bin/sendmail ARGS` with `stdin`, killed after `limit`.
    fn sendmail(&self, args: &[&str], stdin: &[u8], limit: Duration) -> Output {
        let mut cmd = Command::new(self.home.path().join("bin/sendmail"));
        cmd.args(args);
        isolate(&mut cmd, self.home.path(), &self.config_path());
        let out = run_with_limit(cmd, stdin, limit);
        assert_no_oauth_secrets(&self.server.oauth, &out);
        for (what, text) in [("stdout", stdout(&out)), ("stderr", stderr(&out))] {
            assert!(
                !text.contains(&self.token),
                "the access token leaked to {what}:\n{text}"
            );
        }
        out
    }
}

/// Everything a failing assertion should show: the run and both daemons' logs.
fn explain(server: &Server, out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}--- oauth log ---\n{}",
        out.status,
        stdout(out),
        stderr(out),
        server.postfix.logs(),
        server.oauth.log()
    )
}

/// The messages in `local`@example.com's Maildir once Postfix has delivered all it accepted.
fn delivered(server: &Server, local: &str) -> Vec<Vec<u8>> {
    assert!(
        server.postfix.wait_until_idle(DELIVERY_LIMIT),
        "Postfix did not deliver within {DELIVERY_LIMIT:?}\n{}",
        server.postfix.logs()
    );
    server.postfix.messages(local)
}

/// Header block and body of a stored message (LF line ends, as Postfix writes a Maildir).
fn split(message: &[u8]) -> (String, &[u8]) {
    let at = message
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or_else(|| panic!("no end of header in:\n{}", String::from_utf8_lossy(message)));
    (
        String::from_utf8_lossy(&message[..at + 1]).into_owned(),
        &message[at + 2..],
    )
}

/// The body of `stdin` as a sender writes it: after the first blank line.
fn input_body(stdin: &[u8]) -> &[u8] {
    split(stdin).1
}

/// The first (topmost) Received header, unfolded: the one Postfix's smtpd wrote.
fn first_received(head: &str) -> String {
    let mut lines = head.lines().skip_while(|l| !l.starts_with("Received:"));
    let mut field = lines.next().unwrap_or_default().to_string();
    for line in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        field.push(' ');
        field.push_str(line.trim());
    }
    field
}

/// What is wrong with how `message` came in: it must have arrived over TLS, after SASL
/// XOAUTH2 as TEST_USER, according to the Received header and to Postfix's own log.
fn authentication_problems(server: &Server, message: &[u8]) -> Vec<String> {
    let (head, _) = split(message);
    let received = first_received(&head);
    let mut problems = Vec::new();
    for (needle, meaning) in [
        ("(using TLSv1.", "over TLS"),
        (
            &format!("(Authenticated sender: {TEST_USER})") as &str,
            "authenticated as the account",
        ),
        (" with ESMTPSA id ", "ESMTP, TLS and SASL"),
    ] {
        if !received.contains(needle) {
            problems.push(format!(
                "the Received header lacks {needle:?} ({meaning}): {received}"
            ));
        }
    }
    // "... with ESMTPSA id QUEUEID ...": that queue id's smtpd line names the mechanism.
    let queue_id = received
        .split(" with ESMTPSA id ")
        .nth(1)
        .and_then(|rest| rest.split([' ', ';']).next())
        .unwrap_or("?");
    let logged = format!(
        "{queue_id}: client=localhost[127.0.0.1], sasl_method=XOAUTH2, sasl_username={TEST_USER}"
    );
    if !server.postfix.postfix_log().contains(&logged) {
        problems.push(format!("Postfix's log has no line {logged:?}"));
    }
    problems
}

/// The run `out` succeeded and `local`@example.com got exactly one message, over TLS after
/// XOAUTH2 as the account: that message.
fn the_one_authenticated(server: &Server, out: &Output, local: &str) -> Vec<u8> {
    assert_eq!(code(out), 0, "{}", explain(server, out));
    let mut messages = delivered(server, local);
    assert_eq!(
        messages.len(),
        1,
        "{} messages for {local}@example.com, expected 1\n{}",
        messages.len(),
        explain(server, out)
    );
    let message = messages.remove(0);
    let problems = authentication_problems(server, &message);
    assert!(
        problems.is_empty(),
        "{problems:#?}\n{}",
        explain(server, out)
    );
    message
}

/// A header line `name: ...` of `head` (the first), without the name.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l[name.len()..].starts_with(':')
        })
        .map(|l| l[name.len() + 1..].trim())
}

/// Debian's cron mailing a job's output (its exact argv and message, from
/// tests/common/callers.rs): to root, aliased to admin@example.com, arrives once, over TLS,
/// after XOAUTH2, its 8-bit UTF-8 body unchanged.
#[test]
fn cron_mail_arrives_over_tls_after_xoauth2() {
    let Some(server) = server("cron_mail_arrives_over_tls_after_xoauth2") else {
        return;
    };
    let client = Client::new(server, TEST_TOKEN);
    let cron = callers::caller("debian_cron");
    assert_eq!(
        cron.argv,
        ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]
    );

    let out = client.sendmail(cron.argv, cron.stdin.as_bytes(), RUN_LIMIT);

    let message = the_one_authenticated(server, &out, "admin");
    assert!(out.stderr.is_empty(), "{}", explain(server, &out));
    let (head, body) = split(&message);
    assert_eq!(
        header(&head, "Return-Path"),
        Some(&format!("<{}>", cron.expect.mail_from) as &str),
        "{head}"
    );
    assert_eq!(
        header(&head, "Delivered-To"),
        Some("admin@example.com"),
        "{head}"
    );
    assert_eq!(
        header(&head, "Subject"),
        Some("Cron <root@web1> /usr/local/bin/backup-report"),
        "{head}"
    );
    assert!(
        header(&head, "From").is_some_and(|from| from.contains("Cron Daemon")),
        "{head}"
    );
    assert_eq!(
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(input_body(cron.stdin.as_bytes())),
        "the body changed on its way"
    );
}

/// A 2.4 KB access token (Microsoft's are 1.5-2.5 KB): the message must arrive. Sent inline
/// (`AUTH XOAUTH2 <3.3 KB>`), the line is cut at Postfix's line_length_limit of 2048 and
/// Postfix answers `535 5.7.8 Error: authentication failed: Invalid base64 data in initial
/// response`; RFC 4954 §4 has the client send it after an empty 334 instead.
#[test]
fn long_access_token_authenticates() {
    let Some(server) = server("long_access_token_authenticates") else {
        return;
    };
    let token = long_token();
    assert!(token.len() >= 2400);
    let client = Client::new(server, &token);
    let message = "From: sender@example.com\n\
                   To: long-token@example.com\n\
                   Subject: sent with a long access token\n\
                   \n\
                   This one authenticated with a 2.4 KB token.\n";

    let out = client.sendmail(
        &["-i", "long-token@example.com"],
        message.as_bytes(),
        RUN_LIMIT,
    );

    let delivered = the_one_authenticated(server, &out, "long-token");
    assert_eq!(
        split(&delivered).1,
        input_body(message.as_bytes()),
        "the body changed on its way"
    );
}

/// A token the provider never issued: Dovecot's introspection says inactive, Postfix answers
/// 535, exit 77, nothing delivered. (What makes the other tests' "authenticated" mean
/// something: this server does check tokens.)
#[test]
fn unknown_token_is_refused_exit_77() {
    let Some(server) = server("unknown_token_is_refused_exit_77") else {
        return;
    };
    let client = Client::new(server, "ya29.a-token-the-provider-never-issued");
    let message = "Subject: must not arrive\n\nThe token is not the provider's.\n";

    let out = client.sendmail(
        &["-i", "unknown-token@example.com"],
        message.as_bytes(),
        RUN_LIMIT,
    );

    assert_eq!(code(&out), 77, "{}", explain(server, &out));
    assert!(
        stderr(&out).contains("535"),
        "stderr does not show the server's refusal\n{}",
        explain(server, &out)
    );
    assert!(
        delivered(server, "unknown-token").is_empty(),
        "delivered with a token the provider never issued\n{}",
        explain(server, &out)
    );
}

/// A service account (JWT bearer grant, no login) gets its token from the provider, and
/// Dovecot, asking the same provider, takes it: the message arrives, authenticated.
#[test]
fn service_account_token_from_the_provider_is_accepted() {
    let Some(server) = server("service_account_token_from_the_provider_is_accepted") else {
        return;
    };
    let client = Client::with_service_account(server);
    let message = "Subject: sent as a service account\n\nThe provider issued this token.\n";

    let out = client.sendmail(
        &["-i", "service@example.com"],
        message.as_bytes(),
        RUN_LIMIT,
    );

    the_one_authenticated(server, &out, "service");
    assert_eq!(
        server.oauth.calls("jwt_bearer"),
        1,
        "{}",
        server.oauth.log()
    );
}

/// Two recipients, Postfix refuses one at RCPT TO (550 from check_recipient_access): exit 67,
/// and the other one gets the message, exactly once.
#[test]
fn refused_recipient_is_exit_67_and_the_other_gets_it_once() {
    let Some(server) = server("refused_recipient_is_exit_67_and_the_other_gets_it_once") else {
        return;
    };
    let client = Client::new(server, TEST_TOKEN);
    let message = "From: sender@example.com\n\
                   To: partial@example.com, refused@example.com\n\
                   Subject: one of two recipients is refused\n\
                   \n\
                   Only partial@example.com can have this.\n";

    let out = client.sendmail(
        &["-i", "partial@example.com", "refused@example.com"],
        message.as_bytes(),
        RUN_LIMIT,
    );

    assert_eq!(code(&out), 67, "{}", explain(server, &out));
    assert!(
        stderr(&out).contains("refused@example.com") && stderr(&out).contains("550"),
        "stderr does not say which recipient was refused and how\n{}",
        explain(server, &out)
    );
    assert!(
        server
            .postfix
            .postfix_log()
            .contains("<refused@example.com>: Recipient address rejected"),
        "Postfix did not refuse the recipient\n{}",
        explain(server, &out)
    );
    let messages = delivered(server, "partial");
    assert_eq!(
        messages.len(),
        1,
        "partial@example.com got {} copies\n{}",
        messages.len(),
        explain(server, &out)
    );
    assert_eq!(split(&messages[0]).1, input_body(message.as_bytes()));
    assert!(server.postfix.messages("refused").is_empty());
}

/// A 20 MiB message (a 15 MiB attachment in base64) arrives with its body byte-identical.
#[test]
fn twenty_mib_message_arrives_byte_identical() {
    let Some(server) = server("twenty_mib_message_arrives_byte_identical") else {
        return;
    };
    let client = Client::new(server, TEST_TOKEN);
    let message = big_message(15 << 20);
    assert!(message.len() >= 20 << 20, "{} bytes", message.len());

    let out = client.sendmail(
        &["-i", "big@example.com"],
        &message,
        Duration::from_secs(300),
    );

    assert_eq!(code(&out), 0, "{}", explain(server, &out));
    let messages = delivered(server, "big");
    assert_eq!(messages.len(), 1, "{}", explain(server, &out));
    let (got, want) = (split(&messages[0]).1, input_body(&message));
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "the body arrived changed: {} bytes, expected {}; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// A multipart message whose attachment is `size` pseudo-random bytes in base64, LF line ends.
fn big_message(size: usize) -> Vec<u8> {
    use base64::Engine as _;
    let mut bytes = Vec::with_capacity(size);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while bytes.len() < size {
        // xorshift64: deterministic, incompressible enough, no dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let mut message = String::with_capacity(encoded.len() * 77 / 76 + 1024);
    message.push_str(
        "From: sender@example.com\n\
         To: big@example.com\n\
         Subject: a 20 MiB message\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"=-boundary-20MiB\"\n\
         \n\
         --=-boundary-20MiB\n\
         Content-Type: text/plain; charset=us-ascii\n\
         \n\
         The attachment is 15 MiB of noise.\n\
         \n\
         --=-boundary-20MiB\n\
         Content-Type: application/octet-stream\n\
         Content-Disposition: attachment; filename=\"noise.bin\"\n\
         Content-Transfer-Encoding: base64\n\
         \n",
    );
    for line in encoded.as_bytes().chunks(76) {
        message.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        message.push('\n');
    }
    message.push_str("--=-boundary-20MiB--\n");
    message.into_bytes()
}

/// The lines of a `-v` transcript that went out (`-> `) and came in (`<- `), in order,
/// marked `>` and `<`.
fn directions(stderr: &str) -> String {
    stderr
        .lines()
        .filter_map(|l| match &l.get(..3) {
            Some("-> ") => Some('>'),
            Some("<- ") => Some('<'),
            _ => None,
        })
        .collect()
}

/// RFC 2920 against Postfix, which offers PIPELINING: three recipients, the middle one
/// refused. MAIL, the three RCPTs and DATA go out before the first of their replies comes
/// back, each recipient keeps its own answer (exit 67, the refused one named), and the two
/// others get the message once each.
#[test]
fn pipelined_envelope_with_one_refused_recipient_arrives_right() {
    let Some(server) = server("pipelined_envelope_with_one_refused_recipient_arrives_right") else {
        return;
    };
    let client = Client::new(server, TEST_TOKEN);
    let message = "From: sender@example.com\n\
                   Subject: pipelined to three, one refused\n\
                   \n\
                   For pipelined-1 and pipelined-2 only.\n";
    let out = client.sendmail(
        &[
            "-v",
            "-i",
            "pipelined-1@example.com",
            "refused@example.com",
            "pipelined-2@example.com",
        ],
        message.as_bytes(),
        RUN_LIMIT,
    );
    assert_eq!(code(&out), 67, "{}", explain(server, &out));
    let err = stderr(&out);
    assert!(
        err.contains("recipient refused@example.com refused: 550 5.1.1"),
        "{}",
        explain(server, &out)
    );
    // After AUTH's 235: MAIL, RCPT x3, DATA sent, then their five replies, then the text.
    let mail = err.find("-> MAIL FROM:").expect("MAIL in the transcript");
    assert!(
        directions(&err[mail..]).starts_with(">>>>><<<<<"),
        "not pipelined:\n{}",
        &err[mail..]
    );
    for local in ["pipelined-1", "pipelined-2"] {
        let messages = delivered(server, local);
        assert_eq!(messages.len(), 1, "{local}: {}", explain(server, &out));
        assert_eq!(split(&messages[0]).1, input_body(message.as_bytes()));
    }
    assert!(server.postfix.messages("refused").is_empty());
}

/// Every recipient refused: Postfix answers the pipelined DATA "554 5.5.1 Error: no valid
/// recipients", and the message text is not sent (RFC 2920 section 3.1).
#[test]
fn pipelined_envelope_with_no_recipient_accepted_sends_no_text() {
    let Some(server) = server("pipelined_envelope_with_no_recipient_accepted_sends_no_text") else {
        return;
    };
    let client = Client::new(server, TEST_TOKEN);
    let message = "Subject: nobody takes this\n\nnever sent\n";
    let out = client.sendmail(
        &["-v", "-i", "refused@example.com"],
        message.as_bytes(),
        RUN_LIMIT,
    );
    assert_eq!(code(&out), 67, "{}", explain(server, &out));
    let err = stderr(&out);
    assert!(
        err.contains("<- 554 5.5.1 Error: no valid recipients"),
        "{}",
        explain(server, &out)
    );
    assert!(
        !err.contains("bytes of message text") && err.contains("-> RSET"),
        "{}",
        explain(server, &out)
    );
    assert!(server.postfix.messages("refused").is_empty());
}
