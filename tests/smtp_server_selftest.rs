//! Proves the test SMTP server against a client we did not write (Python's smtplib and ssl),
//! so that a failure in the binary's tests means a bug in the binary, not in the server.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::harness::run_with_limit;
use common::smtp_server::{
    AuthCheck, Certificate, DripAt, Fault, ServerOptions, TestServer, TlsMode, TEST_PASSWORD,
    TEST_TOKEN, TEST_USER,
};

/// Shared by the scripts below: argv is port, CA file, then script-specific values.
const PRELUDE: &str = r#"
import base64, smtplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)

def xoauth2(user, token):
    raw = "user=%s\x01auth=Bearer %s\x01\x01" % (user, token)
    return base64.b64encode(raw.encode()).decode()

def expect(what, got, want):
    if got[0] != want:
        print("%s: expected %d, got %r" % (what, want, got), file=sys.stderr)
        sys.exit(1)

# A line that must be dot-stuffed on the wire, a lone dot, and bare LFs that smtplib turns
# into CRLF.
MESSAGE = (
    "From: sender@example.com\n"
    "To: rcpt@example.com\n"
    "Subject: selftest\n"
    "\n"
    "first line\n"
    ".hidden line\n"
    ".\n"
    "last line\n"
)
"#;

fn python(script: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(format!("{PRELUDE}\n{script}")).args(args);
    run_with_limit(cmd, b"", Duration::from_secs(30))
}

fn assert_ok(out: &Output, server: &TestServer) {
    assert!(
        out.status.success(),
        "python failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- transcript ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.transcript()
    );
}

const EXPECTED_BODY: &[u8] = b"first line\r\n.hidden line\r\n.\r\nlast line\r\n";

#[test]
fn starttls_xoauth2_message_with_dots() {
    let server = TestServer::start(ServerOptions::default());
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let out = python(
        r#"
user, token = sys.argv[3], sys.argv[4]
s = smtplib.SMTP("localhost", port, timeout=10)
s.ehlo()
if not s.has_extn("starttls"):
    sys.exit("STARTTLS not offered")
if s.has_extn("auth"):
    sys.exit("AUTH offered before TLS")
s.starttls(context=ctx)
s.ehlo()
if "XOAUTH2" not in s.esmtp_features.get("auth", ""):
    sys.exit("XOAUTH2 not offered after TLS")
expect("AUTH", s.docmd("AUTH", "XOAUTH2 " + xoauth2(user, token)), 235)
s.sendmail("sender@example.com", ["rcpt@example.com", "other@example.com"], MESSAGE)
s.quit()
"#,
        &[&port, &ca, TEST_USER, TEST_TOKEN],
    );
    assert_ok(&out, &server);

    let received = server.received();
    assert_eq!(received.len(), 1, "{}", server.transcript());
    let msg = &received[0];
    assert_eq!(msg.mail_from, "sender@example.com");
    assert_eq!(msg.rcpt_to, ["rcpt@example.com", "other@example.com"]);
    assert_eq!(msg.auth_mechanism.as_deref(), Some("XOAUTH2"));
    assert!(msg.tls);
    assert!(
        msg.data.starts_with(b"From: sender@example.com\r\n"),
        "{:?}",
        String::from_utf8_lossy(&msg.data)
    );
    assert!(
        msg.data.ends_with(EXPECTED_BODY),
        "dots not unstuffed or line ends wrong: {:?}",
        String::from_utf8_lossy(&msg.data)
    );

    // The wire carried the stuffed form.
    let transcript = server.transcript();
    assert!(transcript.contains("C: ..hidden line"), "{transcript}");
    assert!(transcript.contains("C: ..\n"), "{transcript}");
    assert!(transcript.contains("TLS established"), "{transcript}");
}

#[test]
fn implicit_tls_xoauth2_by_ip_address() {
    let server = TestServer::start(ServerOptions {
        tls: TlsMode::Implicit,
        ..ServerOptions::default()
    });
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    // By IP: checks the certificate's IP SAN, which is what the binary (host 127.0.0.1) uses.
    let out = python(
        r#"
user, token = sys.argv[3], sys.argv[4]
s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=10)
s.ehlo()
if s.has_extn("starttls"):
    sys.exit("STARTTLS offered inside implicit TLS")
expect("AUTH", s.docmd("AUTH", "XOAUTH2 " + xoauth2(user, token)), 235)
s.sendmail("sender@example.com", ["rcpt@example.com"], MESSAGE)
s.quit()
"#,
        &[&port, &ca, TEST_USER, TEST_TOKEN],
    );
    assert_ok(&out, &server);

    let received = server.received();
    assert_eq!(received.len(), 1, "{}", server.transcript());
    assert_eq!(received[0].rcpt_to, ["rcpt@example.com"]);
    assert!(received[0].tls);
    assert!(received[0].data.ends_with(EXPECTED_BODY));
}

#[test]
fn wrong_token_gets_535_and_mail_needs_auth() {
    let server = TestServer::start(ServerOptions::default());
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let out = python(
        r#"
user = sys.argv[3]
s = smtplib.SMTP("localhost", port, timeout=10)
s.starttls(context=ctx)
s.ehlo()
expect("AUTH", s.docmd("AUTH", "XOAUTH2 " + xoauth2(user, "wrong-token")), 535)
expect("MAIL", s.docmd("MAIL", "FROM:<sender@example.com>"), 530)
s.quit()
"#,
        &[&port, &ca, TEST_USER],
    );
    assert_ok(&out, &server);
    assert!(server.received().is_empty());
}

/// Gmail's refusal, after an initial response and after a response on its own line.
#[test]
fn gmail_style_xoauth2_rejection() {
    let server = TestServer::start(ServerOptions {
        fault: Fault::Xoauth2Reject,
        ..ServerOptions::default()
    });
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let out = python(
        r#"
import json
user, token = sys.argv[3], sys.argv[4]
for inline in (True, False):
    s = smtplib.SMTP("localhost", port, timeout=10)
    s.starttls(context=ctx)
    s.ehlo()
    if inline:
        code, challenge = s.docmd("AUTH", "XOAUTH2 " + xoauth2(user, token))
    else:
        expect("AUTH", s.docmd("AUTH", "XOAUTH2"), 334)
        code, challenge = s.docmd(xoauth2(user, token))
    expect("AUTH", (code, challenge), 334)
    err = json.loads(base64.b64decode(challenge))
    if err["status"] != "401" or err["scope"] != "https://mail.google.com/":
        sys.exit("unexpected error JSON %r" % err)
    expect("empty line", s.docmd(""), 535)
    s.quit()
"#,
        &[&port, &ca, TEST_USER, TEST_TOKEN],
    );
    assert_ok(&out, &server);
}

#[test]
fn plain_and_login_with_password() {
    let server = TestServer::start(ServerOptions {
        auth: AuthCheck::Plain {
            user: TEST_USER.to_string(),
            password: TEST_PASSWORD.to_string(),
        },
        ..ServerOptions::default()
    });
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let out = python(
        r#"
user, password = sys.argv[3], sys.argv[4]
# AUTH PLAIN with an initial response (smtplib's choice here).
s = smtplib.SMTP("localhost", port, timeout=10)
s.starttls(context=ctx)
s.login(user, password)
s.sendmail("sender@example.com", ["rcpt@example.com"], MESSAGE)
s.quit()
# AUTH PLAIN without an initial response: "334 " and then the credentials.
s = smtplib.SMTP("localhost", port, timeout=10)
s.starttls(context=ctx)
s.ehlo()
expect("AUTH PLAIN", s.docmd("AUTH", "PLAIN"), 334)
raw = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
expect("PLAIN response", s.docmd(raw), 235)
s.quit()
# AUTH LOGIN, challenge by challenge.
s = smtplib.SMTP("localhost", port, timeout=10)
s.starttls(context=ctx)
s.ehlo()
s.user, s.password = user, password
expect("AUTH LOGIN", s.auth("LOGIN", s.auth_login, initial_response_ok=False), 235)
s.sendmail("sender@example.com", ["rcpt@example.com"], MESSAGE)
s.quit()
# A wrong password.
s = smtplib.SMTP("localhost", port, timeout=10)
s.starttls(context=ctx)
s.ehlo()
raw = base64.b64encode(("\0%s\0wrong" % user).encode()).decode()
expect("wrong password", s.docmd("AUTH", "PLAIN " + raw), 535)
s.quit()
"#,
        &[&port, &ca, TEST_USER, TEST_PASSWORD],
    );
    assert_ok(&out, &server);
    let mechanisms: Vec<_> = server
        .received()
        .into_iter()
        .map(|r| r.auth_mechanism)
        .collect();
    assert_eq!(
        mechanisms,
        [Some("PLAIN".to_string()), Some("LOGIN".to_string())]
    );
}

#[test]
fn strictness_refusals() {
    let server = TestServer::start(ServerOptions {
        auth: AuthCheck::None,
        eight_bit_mime: false,
        ..ServerOptions::default()
    });
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let out = python(
        r#"
s = smtplib.SMTP("localhost", port, timeout=10)
s.ehlo()
# No MAIL in clear text when STARTTLS is on offer (a downgrade).
expect("MAIL before STARTTLS", s.docmd("MAIL", "FROM:<sender@example.com>"), 530)
s.starttls(context=ctx)
s.ehlo()
if s.has_extn("auth"):
    sys.exit("AUTH offered by a relay")
if s.has_extn("8bitmime"):
    sys.exit("8BITMIME offered though disabled")
expect("BODY not offered", s.docmd("MAIL", "FROM:<sender@example.com> BODY=8BITMIME"), 555)
expect("unqualified sender", s.docmd("MAIL", "FROM:<root>"), 553)
expect("MAIL", s.docmd("MAIL", "FROM:<sender@example.com>"), 250)
expect("unqualified rcpt", s.docmd("RCPT", "TO:<root>"), 553)
expect("DSN not offered", s.docmd("RCPT", "TO:<a@example.com> NOTIFY=NEVER"), 555)
expect("RCPT", s.docmd("RCPT", "TO:<a@example.com>"), 250)
expect("DATA", s.docmd("DATA"), 354)
# Raw bytes, bypassing smtplib's line-end fixing: a bare LF and an over-long line.
s.send(b"Subject: x\r\n\r\nbare\nlf\r\n" + b"x" * 999 + b"\r\n.\r\n")
expect("end of DATA", s.getreply(), 554)
expect("RSET", s.docmd("RSET"), 250)
expect("MAIL", s.docmd("MAIL", "FROM:<>"), 250)
expect("RCPT", s.docmd("RCPT", "TO:<a@example.com>"), 250)
expect("DATA", s.docmd("DATA"), 354)
s.send("Subject: 8bit\r\n\r\nd\u00e9j\u00e0 vu\r\n.\r\n".encode())
expect("undeclared 8-bit", s.getreply(), 554)
s.quit()
"#,
        &[&port, &ca],
    );
    assert_ok(&out, &server);
    assert!(server.received().is_empty());
    let transcript = server.transcript();
    assert!(transcript.contains("bare <LF> at line 3"), "{transcript}");
    assert!(
        transcript.contains("8-bit data without BODY=8BITMIME"),
        "{transcript}"
    );
}

#[test]
fn faults_greeting_451_550_drop() {
    for (fault, script) in [
        (
            Fault::Greeting421,
            r#"
try:
    smtplib.SMTP("localhost", port, timeout=10)
    sys.exit("connected despite 421")
except smtplib.SMTPConnectError as e:
    if e.smtp_code != 421: raise
"#,
        ),
        (
            Fault::Data451,
            r#"
s = smtplib.SMTP("localhost", port, timeout=10)
s.starttls(context=ctx)
s.ehlo()
expect("AUTH", s.docmd("AUTH", "XOAUTH2 " + xoauth2(sys.argv[3], sys.argv[4])), 235)
try:
    s.sendmail("sender@example.com", ["rcpt@example.com"], MESSAGE)
    sys.exit("sent despite 451")
except smtplib.SMTPDataError as e:
    if e.smtp_code != 451: raise
s.quit()
"#,
        ),
        (
            Fault::Rcpt550("bad@example.com".to_string()),
            r#"
s = smtplib.SMTP("localhost", port, timeout=10)
s.starttls(context=ctx)
s.ehlo()
expect("AUTH", s.docmd("AUTH", "XOAUTH2 " + xoauth2(sys.argv[3], sys.argv[4])), 235)
refused = s.sendmail("sender@example.com", ["good@example.com", "bad@example.com"], MESSAGE)
if list(refused) != ["bad@example.com"] or refused["bad@example.com"][0] != 550:
    sys.exit("unexpected refusals %r" % refused)
s.quit()
"#,
        ),
        (
            Fault::DropAfterMail,
            r#"
s = smtplib.SMTP("localhost", port, timeout=10)
s.starttls(context=ctx)
s.ehlo()
expect("AUTH", s.docmd("AUTH", "XOAUTH2 " + xoauth2(sys.argv[3], sys.argv[4])), 235)
try:
    s.sendmail("sender@example.com", ["rcpt@example.com"], MESSAGE)
    sys.exit("sent despite the drop")
except (smtplib.SMTPServerDisconnected, ConnectionError, ssl.SSLError):
    pass
"#,
        ),
    ] {
        let server = TestServer::start(ServerOptions {
            fault: fault.clone(),
            ..ServerOptions::default()
        });
        let port = server.port.to_string();
        let ca = server.ca_file.to_string_lossy().into_owned();
        let out = python(script, &[&port, &ca, TEST_USER, TEST_TOKEN]);
        assert_ok(&out, &server);
        let received = server.received();
        match fault {
            Fault::Rcpt550(_) => {
                assert_eq!(received.len(), 1, "{fault:?}");
                assert_eq!(received[0].rcpt_to, ["good@example.com"]);
            }
            _ => assert!(received.is_empty(), "{fault:?}"),
        }
    }
}

#[test]
fn plain_relay_without_tls() {
    let server = TestServer::start(ServerOptions {
        tls: TlsMode::Plain,
        auth: AuthCheck::None,
        ..ServerOptions::default()
    });
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let out = python(
        r#"
s = smtplib.SMTP("127.0.0.1", port, timeout=10)
s.ehlo()
if s.has_extn("starttls") or s.has_extn("auth"):
    sys.exit("plain relay offers STARTTLS or AUTH")
# Bytes are sent as they are (no line-end fixing), so make them CRLF here.
body = MESSAGE.replace("\n", "\r\n").replace("first", "caf\u00e9").encode()
s.sendmail("sender@example.com", ["rcpt@example.com"], body, mail_options=["BODY=8BITMIME"])
s.quit()
"#,
        &[&port, &ca],
    );
    assert_ok(&out, &server);
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert!(!received[0].tls);
    assert_eq!(received[0].auth_mechanism, None);
    // smtplib also sends size=N, since SIZE is advertised.
    assert!(
        received[0]
            .mail_params
            .contains(&"BODY=8BITMIME".to_string()),
        "{:?}",
        received[0].mail_params
    );
    assert!(String::from_utf8_lossy(&received[0].data).contains("caf\u{e9} line\r\n"));
}

#[test]
#[should_panic(expected = "never connected to")]
fn unused_server_fails_the_test() {
    let _server = TestServer::start(ServerOptions::default());
}

#[test]
fn expect_unused_opts_out() {
    let mut server = TestServer::start(ServerOptions::default());
    server.expect_unused();
    assert_eq!(server.connections(), 0);
}

/// Postfix's line limit as the binary's tests rely on it: an AUTH line over 2048 octets is
/// cut and its initial response refused as Postfix + Dovecot refuse it; the same response
/// on its own line after `AUTH XOAUTH2` (RFC 4954) is accepted; other over-long commands
/// get 500.
#[test]
fn postfix_line_limit_and_auth_without_initial_response() {
    let long_token = "x".repeat(2400);
    let server = TestServer::start(ServerOptions {
        auth: AuthCheck::Xoauth2 {
            user: TEST_USER.to_string(),
            token: long_token.clone(),
        },
        ..ServerOptions::default()
    });
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let out = python(
        r#"
user, token = sys.argv[3], sys.argv[4]
s = smtplib.SMTP("localhost", port, timeout=10)
s.starttls(context=ctx)
s.ehlo()
expect("NOOP too long", s.docmd("NOOP", "x" * 3000), 500)
code, text = s.docmd("AUTH", "XOAUTH2 " + xoauth2(user, token))
expect("AUTH inline", (code, text), 535)
if b"Invalid base64 data in initial response" not in text:
    sys.exit("unexpected refusal: %r" % text)
code, text = s.docmd("AUTH", "XOAUTH2")
if code != 334 or text.strip():
    sys.exit("AUTH without initial response: expected an empty 334, got %r" % ((code, text),))
expect("response line", s.docmd(xoauth2(user, token)), 235)
s.quit()
"#,
        &[&port, &ca, TEST_USER, &long_token],
    );
    assert_ok(&out, &server);
    let transcript = server.transcript();
    assert!(transcript.contains("cut at 2048"), "{transcript}");
}

/// The faults the binary's certificate, deadline and redaction tests rely on, seen by
/// Python: a certificate for another name fails verification, a dripped greeting never
/// completes, a refused AUTH echoes what was sent.
#[test]
fn other_name_certificate_drip_and_echo_faults() {
    let wrong_name = TestServer::start(ServerOptions {
        tls: TlsMode::Implicit,
        certificate: Certificate::OtherName,
        ..ServerOptions::default()
    });
    let dripping = TestServer::start(ServerOptions {
        fault: Fault::Drip(DripAt::Greeting),
        ..ServerOptions::default()
    });
    let echoing = TestServer::start(ServerOptions {
        fault: Fault::EchoAuth535,
        ..ServerOptions::default()
    });
    let ca = echoing.ca_file.to_string_lossy().into_owned();
    let out = python(
        r#"
import socket
user, token = sys.argv[3], sys.argv[4]
wrong_name, dripping = int(sys.argv[5]), int(sys.argv[6])
try:
    smtplib.SMTP_SSL("127.0.0.1", wrong_name, context=ctx, timeout=10)
    sys.exit("a certificate for other.example was accepted for 127.0.0.1")
except ssl.SSLCertVerificationError as e:
    if "other.example" not in str(e) and "match" not in str(e):
        sys.exit("unexpected verification error: %s" % e)
import time
c = socket.create_connection(("127.0.0.1", dripping), timeout=10)
got, end = b"", time.monotonic() + 3.5
while time.monotonic() < end:
    c.settimeout(max(0.01, end - time.monotonic()))
    try:
        b = c.recv(100)
    except socket.timeout:
        break
    if not b:
        break
    got += b
if len(got) < 2 or len(got) > 6 or b"\n" in got:
    sys.exit("not a drip of a byte a second: %r" % got)
c.close()
s = smtplib.SMTP("localhost", port, timeout=10)
s.starttls(context=ctx)
s.ehlo()
sent = xoauth2(user, token)
code, text = s.docmd("AUTH", "XOAUTH2 " + sent)
expect("AUTH", (code, text), 535)
if sent.encode() not in text or token.encode() not in text:
    sys.exit("the 535 does not echo: %r" % text)
s.quit()
"#,
        &[
            &echoing.port.to_string(),
            &ca,
            TEST_USER,
            TEST_TOKEN,
            &wrong_name.port.to_string(),
            &dripping.port.to_string(),
        ],
    );
    assert_ok(&out, &echoing);
}
