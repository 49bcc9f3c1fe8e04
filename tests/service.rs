//! The machine-wide service end to end, as root on this machine: the daemon drops to its
//! own user, root, a www-data-like user with no home and an ordinary user submit, each
//! attributed by the kernel's word; the drop directory while it is down; kill -9; the
//! sender policy and the rate limit; SIGHUP and readiness.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::harness::{code, stderr, stdout};
use common::service::{require, System, User};
use common::smtp_server::{Fault, ServerOptions, TEST_USER};

fn message(subject: &str) -> Vec<u8> {
    format!("Subject: {subject}\n\nhello from {subject}\n").into_bytes()
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The uid the daemon runs as, from /proc.
fn running_uid(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn every_user_submits_and_is_attributed_and_none_reads_the_service() {
    let Some(users) = require() else { return };
    let mut system = System::install(users, ServerOptions::default(), "");
    system.start();
    let service_uid = users.service.uid;
    assert_eq!(
        running_uid(system.pid()),
        vec![service_uid; 4],
        "dropped to the service user"
    );

    let senders: [(Option<&User>, u32, &str); 3] = [
        (None, 0, "root"),
        (Some(&users.www), users.www.uid, &users.www.name),
        (Some(&users.person), users.person.uid, &users.person.name),
    ];
    for (user, _, name) in &senders {
        let out = system.run(*user, &["send", "-i", "dest@example.net"], &message(name));
        assert_eq!(code(&out), 0, "{name}: {}\n{}", stderr(&out), system.log());
    }
    // -t and -bs from the ordinary user too.
    let out = system.run(
        Some(&users.person),
        &["send", "-t"],
        b"To: other@example.net\nSubject: by-t\n\nbody\n",
    );
    assert_eq!(code(&out), 0, "-t: {}", stderr(&out));
    let session = b"EHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<bs@example.net>\r\nDATA\r\nSubject: by-bs\r\n\r\nbody\r\n.\r\nQUIT\r\n";
    let out = system.run(Some(&users.person), &["send", "-bs"], session);
    assert_eq!(code(&out), 0, "-bs: {}", stderr(&out));
    assert!(stdout(&out).contains("250 2.0.0"), "{}", stdout(&out));

    let received = system.wait_received(5, Duration::from_secs(20));
    assert_eq!(received.len(), 5, "{}", system.log());
    for (_, uid, name) in &senders {
        let got = received
            .iter()
            .find(|r| text(&r.data).contains(&format!("Subject: {name}")))
            .unwrap_or_else(|| panic!("{name}'s message not delivered"));
        let data = text(&got.data);
        assert!(
            data.starts_with(&format!("Received: from uid {uid} ({name}) by ")),
            "{data}"
        );
        assert_eq!(got.mail_from, TEST_USER, "the account's own address");
        assert_eq!(got.rcpt_to, ["dest@example.net"]);
        assert!(
            system
                .delivery_log()
                .contains(&format!("submitted by uid {uid} ({name})")),
            "{}",
            system.delivery_log()
        );
    }
    let www = received
        .iter()
        .find(|r| text(&r.data).contains(&format!("Subject: {}", users.www.name)))
        .unwrap();
    assert!(
        text(&www.data).contains(&format!("From: \"{} on ", users.www.name)),
        "the local user shows in From: {}",
        text(&www.data)
    );
    let bs = received
        .iter()
        .find(|r| text(&r.data).contains("Subject: by-bs"))
        .unwrap();
    assert!(
        text(&bs.data).contains(&format!(
            "from uid {} ({})",
            users.person.uid, users.person.name
        )),
        "{}",
        text(&bs.data)
    );

    // What the users cannot read or list.
    for user in [&users.www, &users.person] {
        for path in [
            "var/lib/oauth-sendmail/token",
            "var/lib/oauth-sendmail/delivery.log",
            "etc/oauth-sendmail/config.toml",
        ] {
            let out = system.run_as(user, &["cat", &system.path(path).to_string_lossy()]);
            assert!(!out.status.success(), "{} read {path}", user.name);
        }
        for dir in [
            "var/lib/oauth-sendmail",
            "var/spool/oauth-sendmail/queue",
            "var/spool/oauth-sendmail/maildrop",
        ] {
            let out = system.run_as(user, &["ls", &system.path(dir).to_string_lossy()]);
            assert!(!out.status.success(), "{} listed {dir}", user.name);
        }
    }
    let (status, took) = system.stop();
    assert!(status.success(), "{status}: {}", system.log());
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
}

#[test]
fn fifty_messages_wait_in_the_drop_directory_while_the_service_is_down() {
    let Some(users) = require() else { return };
    let mut system = System::install(users, ServerOptions::default(), "");
    system.start();
    let (status, _) = system.stop();
    assert!(status.success(), "{}", system.log());
    let who = [None, Some(&users.www), Some(&users.person)];
    for n in 0..50 {
        let user = who[n % 3];
        let out = system.run(
            user,
            &["send", "-i", "dest@example.net"],
            &message(&format!("drop-{n:02}")),
        );
        assert_eq!(code(&out), 0, "{n}: {}", stderr(&out));
        assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
    }
    assert!(system.server.received().is_empty());
    system.start();
    let received = system.wait_received(50, Duration::from_secs(60));
    // A little longer: nothing more may come.
    std::thread::sleep(Duration::from_secs(1));
    let received = if received.len() == 50 {
        system.server.received()
    } else {
        received
    };
    assert_eq!(received.len(), 50, "{}", system.log());
    for n in 0..50 {
        let subject = format!("Subject: drop-{n:02}\r\n");
        let copies = received
            .iter()
            .filter(|r| text(&r.data).contains(&subject))
            .count();
        assert_eq!(copies, 1, "drop-{n:02}");
        let uid = who[n % 3].map_or(0, |u| u.uid);
        let got = received
            .iter()
            .find(|r| text(&r.data).contains(&subject))
            .unwrap();
        assert!(
            text(&got.data).starts_with(&format!("Received: from uid {uid} (")),
            "{n}"
        );
    }
    let left = std::fs::read_dir(system.path("var/spool/oauth-sendmail/maildrop"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "the drop directory is emptied");
}

#[test]
fn kill_9_mid_delivery_loses_nothing() {
    let Some(users) = require() else { return };
    let opts = ServerOptions {
        fault: Fault::StallData(Duration::from_secs(5)),
        ..ServerOptions::default()
    };
    let mut system = System::install(users, opts, "");
    system.start();
    let out = system.run(
        Some(&users.person),
        &["send", "-i", "dest@example.net"],
        &message("killed"),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !system.server.transcript_now().contains("DATA") {
        assert!(
            std::time::Instant::now() < until,
            "no DATA: {}",
            system.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    system.kill9();
    assert_eq!(system.queued().len(), 1, "still spooled");
    system.server.set_fault(Fault::None);
    system.start();
    let received = system.wait_received(1, Duration::from_secs(20));
    assert_eq!(received.len(), 1, "{}", system.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(system.server.received().len(), 1, "delivered once");
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !system.queued().is_empty() {
        assert!(std::time::Instant::now() < until, "{}", system.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_forged_sender_is_refused_and_an_allowed_one_honoured() {
    let Some(users) = require() else { return };
    let policy = format!(
        "[service.senders]\n\"@{}\" = [\"shop@example.com\"]\n\
         [service.accounts]\n\"{}\" = [\"other\"]\n",
        users.www.name, users.person.name
    );
    let mut system = System::install(users, ServerOptions::default(), &policy);
    // A second account on the same server, for the ordinary user only.
    let config = std::fs::read_to_string(system.config_path()).unwrap();
    let at = config.find("[accounts.test]").unwrap();
    let end = config[at..].find("\n\n").map_or(config.len(), |n| at + n);
    let other = config[at..end]
        .replace("[accounts.test]", "[accounts.other]")
        .replace(
            &format!("from = \"{TEST_USER}\""),
            "from = [\"other@example.com\", \"sender@example.com\"]",
        );
    std::fs::write(system.config_path(), format!("{config}\n{other}\n")).unwrap();
    system.start();
    let out = system.run(
        Some(&users.www),
        &["send", "-i", "--account", "other", "dest@example.net"],
        &message("other-www"),
    );
    assert_eq!(code(&out), 77, "{}\n{}", stderr(&out), system.log());
    assert!(
        stderr(&out).contains("may not send through account `other`"),
        "{}",
        stderr(&out)
    );
    let out = system.run(
        Some(&users.person),
        &["send", "-i", "-f", "other@example.com", "dest@example.net"],
        &message("other-person"),
    );
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), system.log());
    let www = Some(&users.www);
    let out = system.run(
        www,
        &["send", "-i", "-f", "boss@example.com", "dest@example.net"],
        &message("forged"),
    );
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("may not send as <boss@example.com>"),
        "{}",
        stderr(&out)
    );
    assert!(system.log_shows("refused"), "{}", system.log());
    assert!(
        system.delivery_log().contains("refused: submitted by uid"),
        "{}",
        system.delivery_log()
    );
    // The ordinary user may not use the shop's address either.
    let out = system.run(
        Some(&users.person),
        &["send", "-i", "-f", "shop@example.com", "dest@example.net"],
        &message("not-yours"),
    );
    assert_eq!(code(&out), 77, "{}", stderr(&out));

    let out = system.run(
        www,
        &["send", "-i", "-f", "shop@example.com", "dest@example.net"],
        &message("allowed"),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A From it may not use is replaced, the original kept.
    let out = system.run(
        www,
        &["send", "-i", "dest@example.net"],
        b"From: The Boss <boss@example.com>\nSubject: from-header\n\nbody\n",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let received = system.wait_received(3, Duration::from_secs(20));
    assert_eq!(received.len(), 3, "{}", system.log());
    let other = received
        .iter()
        .find(|r| text(&r.data).contains("Subject: other-person"))
        .unwrap();
    assert_eq!(
        other.mail_from, "other@example.com",
        "through account `other`"
    );
    let allowed = received
        .iter()
        .find(|r| text(&r.data).contains("Subject: allowed"))
        .unwrap();
    assert_eq!(allowed.mail_from, "shop@example.com");
    let header = received
        .iter()
        .find(|r| text(&r.data).contains("Subject: from-header"))
        .unwrap();
    let data = text(&header.data);
    assert!(
        data.contains(&format!("From: \"{} on ", users.www.name)),
        "{data}"
    );
    assert!(data.contains(&format!("<{TEST_USER}>")), "{data}");
    assert!(
        data.contains("X-Original-From: The Boss <boss@example.com>"),
        "{data}"
    );
    assert_eq!(header.mail_from, TEST_USER);
}

#[test]
fn over_the_rate_limit_mail_is_held_and_each_user_sees_only_their_own() {
    let Some(users) = require() else { return };
    let mut system = System::install(users, ServerOptions::default(), "rate_limit = \"2/h\"\n");
    system.start();
    let person = Some(&users.person);
    for n in 0..3 {
        let out = system.run(
            person,
            &["send", "-i", "dest@example.net"],
            &message(&format!("rate-{n}")),
        );
        assert_eq!(code(&out), 0, "{n}: {}", stderr(&out));
        if n == 2 {
            assert!(
                stderr(&out).contains("held by the rate limit"),
                "{}",
                stderr(&out)
            );
        }
    }
    let received = system.wait_received(2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(system.server.received().len(), 2, "{received:?}");
    let held = system.queued();
    assert_eq!(held.len(), 1, "the third is held, not refused");
    let id = &held[0];
    assert!(
        system.log_shows("held by the rate limit"),
        "logged: {}",
        system.log()
    );

    // mailq: the owner and root see it, another user does not.
    let out = system.run(person, &["queue", "list"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains(id.as_str()), "{}", stdout(&out));
    let out = system.run(Some(&users.www), &["queue", "list"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stdout(&out).contains(id.as_str()), "{}", stdout(&out));
    let out = system.run(None, &["queue", "list"], b"");
    assert!(stdout(&out).contains(id.as_str()), "{}", stdout(&out));
    // Nor may it remove it; the owner may.
    let out = system.run(Some(&users.www), &["queue", "remove", id], b"");
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert_eq!(system.queued().len(), 1);
    let out = system.run(person, &["log"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains(id.as_str()), "{}", stdout(&out));
    let out = system.run(Some(&users.www), &["log"], b"");
    assert!(!stdout(&out).contains(id.as_str()), "{}", stdout(&out));
    let out = system.run(person, &["status"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("mode:             system"),
        "{}",
        stdout(&out)
    );
    // `sendmail -q` from a user does not force held mail out; from root it does.
    let out = system.run(person, &["send", "-q"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(system.server.received().len(), 2);
    let out = system.run(None, &["send", "-q"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(system.wait_received(3, Duration::from_secs(20)).len(), 3);
    // The owner may remove its own.
    let out = system.run(
        person,
        &["send", "-i", "dest@example.net"],
        &message("rate-3"),
    );
    assert!(
        stderr(&out).contains("held by the rate limit"),
        "{}",
        stderr(&out)
    );
    let held = system.queued();
    assert_eq!(held.len(), 1, "{held:?}");
    let out = system.run(person, &["queue", "remove", &held[0]], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(system.queued().is_empty());
}

#[test]
fn readiness_is_notified_and_a_bad_new_configuration_is_refused() {
    let Some(users) = require() else { return };
    let mut system = System::install(users, ServerOptions::default(), "");
    let notify = system.path("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    std::os::unix::fs::chown(&notify, Some(users.service.uid), None).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    system.start_with(&[("NOTIFY_SOCKET", &notify)]);
    let mut buffer = [0u8; 64];
    let n = listener.recv(&mut buffer).expect("READY=1");
    assert_eq!(&buffer[..n], b"READY=1");

    std::fs::write(system.config_path(), "this is = = not toml").unwrap();
    system.signal("HUP");
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !system.log().contains("the old one kept") {
        assert!(std::time::Instant::now() < until, "{}", system.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = system.run(
        Some(&users.person),
        &["send", "-i", "dest@example.net"],
        &message("after-hup"),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        system.wait_received(1, Duration::from_secs(20)).len(),
        1,
        "{}",
        system.log()
    );
    let (status, took) = system.stop();
    assert!(
        status.success() && took < Duration::from_secs(10),
        "{status} {took:?}"
    );
}

#[test]
fn socket_activation_hands_the_first_connection_to_the_daemon() {
    let Some(users) = require() else { return };
    let mut system = System::install(users, ServerOptions::default(), "");
    system.start_activated();
    let out = system.run(
        Some(&users.www),
        &["send", "-i", "dest@example.net"],
        &message("activated"),
    );
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), system.log());
    assert!(!stderr(&out).contains("not running"), "{}", stderr(&out));
    let received = system.wait_received(1, Duration::from_secs(20));
    assert_eq!(received.len(), 1, "{}", system.log());
    assert!(text(&received[0].data).starts_with(&format!("Received: from uid {} (", users.www.uid)));
    system.wait_ready();
    let (status, _) = system.stop();
    assert!(status.success(), "{status}: {}", system.log());
    assert!(
        system.path("run/oauth-sendmail/submit.sock").exists(),
        "the socket is systemd's: left in place"
    );
}

/// The shipped units pass systemd's own checks, and the shipped tmpfiles.d layout is one
/// the daemon runs in, run by "systemd" as its user (User=) with the socket handed over.
#[test]
fn the_shipped_units_verify_and_their_layout_runs() {
    let Some(users) = require() else { return };
    let contrib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let units = tempfile::tempdir().unwrap();
    for name in ["oauth-sendmail.service", "oauth-sendmail.socket"] {
        let text = std::fs::read_to_string(contrib.join(name))
            .unwrap()
            .replace("/usr/sbin/oauth-sendmail", common::harness::BIN);
        std::fs::write(units.path().join(name), text).unwrap();
    }
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(units.path().join("oauth-sendmail.service"))
        .arg(units.path().join("oauth-sendmail.socket"))
        .output()
        .expect("systemd-analyze");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("Unknown") && !said.contains("rror"),
        "{said}"
    );

    let mut system = System::install(users, ServerOptions::default(), "");
    let spool = system.path("var/spool/oauth-sendmail");
    std::fs::remove_dir_all(&spool).unwrap();
    let state = system.path("var/lib/oauth-sendmail");
    let token = std::fs::read(state.join("token")).unwrap();
    std::fs::remove_dir_all(&state).unwrap();
    let tmpfiles = std::fs::read_to_string(contrib.join("oauth-sendmail.tmpfiles"))
        .unwrap()
        .replace(
            "oauth-sendmail oauth-sendmail",
            &format!("{} {}", users.service.uid, users.service.gid),
        );
    let conf = units.path().join("tmpfiles.conf");
    std::fs::write(&conf, tmpfiles).unwrap();
    let out = std::process::Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", system.root.display()))
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let maildrop = std::fs::metadata(spool.join("maildrop")).unwrap();
    assert_eq!(maildrop.permissions().mode() & 0o7777, 0o1733);
    assert_eq!(maildrop.uid(), users.service.uid);
    std::fs::write(state.join("token"), token).unwrap();
    std::os::unix::fs::chown(
        state.join("token"),
        Some(users.service.uid),
        Some(users.service.gid),
    )
    .unwrap();
    std::fs::set_permissions(state.join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // What the units do: the socket root's, the daemon as User= (setpriv), no root at all.
    let mut cmd = std::process::Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(system.path("run/oauth-sendmail/submit.sock"))
        .arg("-E")
        .arg(format!("OAUTH_SENDMAIL_ROOT={}", system.root.display()))
        .args(users.service.setpriv())
        .arg(&system.bin)
        .arg("daemon");
    system.start_command(cmd);
    let out = system.run(
        Some(&users.person),
        &["send", "-i", "dest@example.net"],
        &message("units"),
    );
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), system.log());
    assert_eq!(
        system.wait_received(1, Duration::from_secs(20)).len(),
        1,
        "{}",
        system.log()
    );
}

/// One user holding many idle connections neither blocks the others nor gets more than
/// its share: the service answers its next submission "busy", and that message waits in
/// the drop directory, which the service empties on its own (it went to dead.letter
/// with exit 75 before: a cron job's mail lost to the queue).
#[test]
fn one_user_cannot_take_every_connection() {
    let Some(users) = require() else { return };
    let mut system = System::install(users, ServerOptions::default(), "");
    system.start();
    let socket = system.path("run/oauth-sendmail/submit.sock");
    let holder = "import socket, sys, time\n\
                  held = []\n\
                  for _ in range(20):\n\
                  \x20   s = socket.socket(socket.AF_UNIX)\n\
                  \x20   s.connect(sys.argv[1])\n\
                  \x20   held.append(s)\n\
                  print('holding', flush=True)\n\
                  time.sleep(60)\n";
    let mut idle = users
        .www
        .command("/usr/bin/python3")
        .args(["-c", holder])
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(idle.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "holding");
    let started = std::time::Instant::now();
    let out = system.run(
        Some(&users.person),
        &["send", "-i", "dest@example.net"],
        &message("not-blocked"),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let out = system.run(
        Some(&users.www),
        &["send", "-i", "dest@example.net"],
        &message("one-too-many"),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the mail service is busy (too many connections from uid")
            && stderr(&out).contains("the message waits for it in"),
        "{}",
        stderr(&out)
    );
    // Picked up from the drop directory while the idle connections are still held.
    let received = system.wait_received(2, Duration::from_secs(20));
    assert_eq!(received.len(), 2);
    assert!(
        received
            .iter()
            .any(|m| text(&m.data).contains("one-too-many")),
        "{}",
        system.log()
    );
    let _ = idle.kill();
    let _ = idle.wait();
}

/// `login` in system mode: refused to a user; run by root, the refresh token goes to the
/// service's store, owned by the service, and mail waiting for it goes out.
#[test]
fn login_in_system_mode_fills_the_service_store() {
    use common::oauth_server::{write_browser, OAuthOptions, OAuthServer};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(users) = require() else { return };
    let oauth = OAuthServer::start(OAuthOptions::default());
    let mut system = System::install(users, ServerOptions::default(), "");
    system.use_oauth(&oauth, "");
    system.start();
    // Before any login the message is taken and waits.
    let out = system.run(
        Some(&users.www),
        &["send", "-i", "dest@example.net"],
        &message("before-login"),
    );
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), system.log());

    let out = system.run(Some(&users.person), &["login", "--account", "test"], b"");
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sudo oauth-sendmail login"),
        "{}",
        stderr(&out)
    );

    let browser = write_browser(&system.path("bin"));
    let mut cmd = system.command(None, &["login", "--account", "test", "--timeout", "20"]);
    cmd.env("BROWSER", &browser);
    let out = common::harness::run_with_limit(cmd, b"", Duration::from_secs(30));
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), oauth.log());
    let stored = system.path("var/lib/oauth-sendmail/test.refresh-token");
    let meta = std::fs::metadata(&stored).expect("the refresh token in the service's store");
    assert_eq!(meta.uid(), users.service.uid, "given to the service");
    assert_eq!(meta.permissions().mode() & 0o077, 0);
    for user in [&users.www, &users.person] {
        let out = system.run_as(user, &["cat", &stored.to_string_lossy()]);
        assert!(!out.status.success());
    }
    let received = system.wait_received(1, Duration::from_secs(20));
    assert_eq!(received.len(), 1, "{}", system.log());
    assert_eq!(received[0].auth_mechanism.as_deref(), Some("XOAUTH2"));
    let out = system.run(
        Some(&users.person),
        &["send", "-i", "dest@example.net"],
        &message("after-login"),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        system.wait_received(2, Duration::from_secs(20)).len(),
        2,
        "{}",
        system.log()
    );
    // logout too is root's, on the service's store.
    let out = system.run(Some(&users.person), &["logout", "--account", "test"], b"");
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    assert!(stored.exists());
    let out = system.run(None, &["logout", "--account", "test"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("removed"), "{}", stdout(&out));
    assert!(!stored.exists(), "the service's refresh token is gone");
}

/// Hostile input: a submission cut short is refused whole (nothing spooled), garbage
/// gets an answer and leaves the service running, a drop file that does not parse is
/// quarantined, a hard link to someone else's file is not taken as theirs.
#[test]
fn hostile_input_is_refused_whole_or_quarantined() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let Some(users) = require() else { return };
    let mut system = System::install(
        users,
        ServerOptions::default(),
        "max_message_size = 50000\n",
    );
    system.start();
    // Over the size cap: refused with 65 and the reason, even while the client still writes.
    let big = format!(
        "Subject: big\n\n{}",
        format!("{}\n", "x".repeat(900)).repeat(2000)
    );
    let out = system.run(
        Some(&users.www),
        &["send", "-i", "dest@example.net"],
        big.as_bytes(),
    );
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("over the service's limit of 50000"),
        "{}",
        stderr(&out)
    );
    let socket = system.path("run/oauth-sendmail/submit.sock");
    let answer = |bytes: &[u8]| {
        let mut stream = UnixStream::connect(&socket).unwrap();
        stream.write_all(bytes).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    };
    let cut = answer(
        b"{\"request\":\"submit\",\"recipients\":[\"a@example.net\"],\"size\":100}\nSubject: x\n\n",
    );
    assert!(
        cut.contains("\"failed\"") && cut.contains("cut short"),
        "{cut}"
    );
    let garbage = answer(b"\x00\xffnot json at all\n");
    assert!(
        garbage.contains("\"failed\"") && garbage.contains("bad request"),
        "{garbage}"
    );
    assert!(system.queued().is_empty(), "nothing half-accepted");

    let drop = system.path("var/spool/oauth-sendmail/maildrop");
    let out = system.run_as(
        &users.person,
        &[
            "sh",
            "-c",
            &format!("echo garbage > {}/feedbeef", drop.display()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // root's private file, hard-linked in by nobody but root here (protected_hardlinks
    // stops users): still not taken as root's mail.
    let private = system.path("private");
    std::fs::write(
        &private,
        b"{\"request\":\"submit\",\"recipients\":[\"a@example.net\"],\"size\":2}\nhi",
    )
    .unwrap();
    std::fs::hard_link(&private, drop.join("linked")).unwrap();
    let quarantine = system.path("var/spool/oauth-sendmail/quarantine");
    let until = std::time::Instant::now() + Duration::from_secs(15);
    // Moved, then logged: both, for each.
    let done = |name: &str| {
        quarantine.join(name).exists()
            && system
                .log()
                .contains(&format!("drop file {name} quarantined"))
    };
    while !(done("feedbeef") && done("linked")) {
        assert!(std::time::Instant::now() < until, "{}", system.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let why = std::fs::read_to_string(quarantine.join("linked.why")).unwrap();
    assert!(why.contains("2 links"), "{why}");
    assert!(system.server.received().is_empty());
    // Still serving.
    let out = system.run(
        Some(&users.person),
        &["send", "-i", "dest@example.net"],
        &message("still"),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(system.wait_received(1, Duration::from_secs(20)).len(), 1);
}

/// The mode rule, end to end: with the service installed, a user without a configuration
/// of its own is in system mode; the same user with one (XDG_CONFIG_HOME) is in user
/// mode, and sends with its own configuration, not through the service.
#[test]
fn a_configuration_of_its_own_puts_a_call_in_user_mode() {
    let Some(users) = require() else { return };
    let mut system = System::install(users, ServerOptions::default(), "");
    system.start();
    let person = &users.person;
    let out = system.run(Some(person), &["status"], b"");
    assert!(
        stdout(&out).contains("mode:             system"),
        "{}",
        stdout(&out)
    );

    let own = system.path("person-config");
    std::fs::create_dir_all(own.join("oauth-sendmail")).unwrap();
    let config = own.join("oauth-sendmail/config.toml");
    std::fs::write(
        &config,
        format!(
            "[accounts.mine]\nprovider = \"custom\"\nhost = \"127.0.0.1\"\nport = {}\n\
             tls = \"none\"\nauth = \"none\"\nfrom = \"mine@example.org\"\n",
            system.server.port
        ),
    )
    .unwrap();
    for path in [own.clone(), own.join("oauth-sendmail"), config.clone()] {
        std::os::unix::fs::chown(&path, Some(person.uid), Some(person.gid)).unwrap();
    }
    let mut cmd = system.command(Some(person), &["status"]);
    cmd.env("XDG_CONFIG_HOME", &own);
    let out = common::harness::run_with_limit(cmd, b"", Duration::from_secs(30));
    assert!(
        stdout(&out).contains("mode:             user"),
        "{}",
        stdout(&out)
    );
    // Its dry run shows its own account: the service is not asked.
    let mut cmd = system.command(
        Some(person),
        &["send", "--dry-run", "-i", "dest@example.net"],
    );
    cmd.env("XDG_CONFIG_HOME", &own);
    let out = common::harness::run_with_limit(cmd, &message("own"), Duration::from_secs(30));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("Account: mine"), "{}", stdout(&out));
    assert!(
        !system.log().contains(&format!("uid {}", person.uid)),
        "{}",
        system.log()
    );
    system.server.expect_unused();
}

/// PHP's `mail()` on a web server, as the web user with no home of its own: it runs
/// `sendmail -t -i` (php.ini's sendmail_path), which hands the message to the service.
/// Real PHP, not a stand-in for it (php-cli from scripts/install-test-deps).
#[test]
fn php_mail_as_the_web_user_goes_through_the_service() {
    let Some(users) = require() else { return };
    let php_runs = std::process::Command::new("php")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !php_runs {
        return common::skip::skip(
            "php_mail_as_the_web_user_goes_through_the_service",
            "php is not installed (scripts/install-test-deps installs php-cli)",
        );
    }
    let mut system = System::install(users, ServerOptions::default(), "");
    system.start();
    // The name `sendmail`, in a directory the web user may traverse.
    let dir = tempfile::Builder::new()
        .prefix("php-sendmail")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sendmail = dir.path().join("sendmail");
    std::os::unix::fs::symlink(&users.bin, &sendmail).unwrap();
    let script = "exit(mail('dest@example.net', 'from php', \"a web shop's order\\n\", \
                  'From: shop') ? 0 : 1);";
    let out = users
        .www
        .command("php")
        .arg("-d")
        .arg(format!("sendmail_path={} -t -i", sendmail.display()))
        .args(["-r", script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("OAUTH_SENDMAIL_ROOT", system.path(""))
        .current_dir("/")
        .output()
        .expect("php");
    assert!(
        out.status.success(),
        "php mail(): {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        system.log()
    );
    let received = system.wait_received(1, Duration::from_secs(20));
    let got = received
        .iter()
        .find(|r| text(&r.data).contains("Subject: from php"))
        .unwrap_or_else(|| panic!("PHP's message not delivered: {}", system.log()));
    let data = text(&got.data);
    assert!(
        data.starts_with(&format!(
            "Received: from uid {} ({}) by ",
            users.www.uid, users.www.name
        )),
        "{data}"
    );
    assert_eq!(got.rcpt_to, ["dest@example.net"]);
    assert_eq!(got.mail_from, TEST_USER, "the account's own address");
}

/// An entry of the service's queue that cannot be read is quarantined; root sees where,
/// why and what is left of it with `queue show`, and deletes it with `queue remove`; a
/// user, who cannot be shown to own it, is told there is no such message.
#[test]
fn a_quarantined_entry_is_shown_and_removed_by_root_only() {
    let Some(users) = require() else { return };
    let mut system = System::install(users, ServerOptions::default(), "");
    system.start();
    let queue = system.path("var/spool/oauth-sendmail/queue");
    let id = "0000000AB00000000000001";
    std::fs::write(
        queue.join(format!("{id}.msg")),
        b"Subject: lost\r\n\r\nbody\r\n",
    )
    .unwrap();
    std::fs::write(queue.join(format!("{id}.json")), b"{\"id\": tru").unwrap();
    let out = system.run(None, &["send", "-q"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let why = queue.join(format!("corrupt/{id}.why"));
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !why.exists() {
        assert!(
            std::time::Instant::now() < until,
            "not quarantined: {}",
            system.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let person = Some(&users.person);
    let out = system.run(person, &["queue", "show", id], b"");
    assert_eq!(code(&out), 64, "{}{}", stdout(&out), stderr(&out));
    let out = system.run(person, &["queue", "remove", id], b"");
    assert_eq!(code(&out), 64, "{}{}", stdout(&out), stderr(&out));
    assert!(why.exists(), "a user removed it");

    let out = system.run(None, &["queue", "show", id], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("{id}: quarantined in "))
            && stdout(&out).contains("Subject: lost"),
        "{}",
        stdout(&out)
    );
    let out = system.run(None, &["queue", "remove", id], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{id}: removed (it was quarantined)\n")
    );
    assert!(!why.exists() && !queue.join(format!("corrupt/{id}.msg")).exists());
    system.server.expect_unused();
}

/// `queue show` through the service gives the queued message byte for byte, also when
/// it is not UTF-8 (a Latin-1 cron mail), as it does in user mode.
#[test]
fn queue_show_through_the_service_keeps_8_bit_bytes() {
    let Some(users) = require() else { return };
    let opts = ServerOptions {
        fault: Fault::Data451,
        ..ServerOptions::default()
    };
    let mut system = System::install(users, opts, "");
    system.start();
    let person = Some(&users.person);
    let out = system.run(
        person,
        &["send", "-i", "dest@example.net"],
        b"Subject: latin-1\n\ncaf\xe9 cr\xe8me\n",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let id = loop {
        let listing = stdout(&system.run(person, &["queue", "list"], b""));
        if let Some(id) = common::harness::queue_ids(&listing).into_iter().next() {
            break id;
        }
        assert!(std::time::Instant::now() < until, "not queued: {listing}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let stored =
        std::fs::read(system.path(&format!("var/spool/oauth-sendmail/queue/{id}.msg"))).unwrap();
    assert!(
        stored.windows(10).any(|w| w == b"caf\xe9 cr\xe8me"),
        "the spool holds it changed: {:?}",
        String::from_utf8_lossy(&stored)
    );
    let out = system.run(person, &["queue", "show", &id], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        out.stdout.windows(10).any(|w| w == b"caf\xe9 cr\xe8me"),
        "the 8-bit bytes changed: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A full disk under the service's queue: a large submission's body is refused as it
/// comes ("busy"), not held in memory (what many submitters at once could fill); the
/// client leaves it in the drop directory, and it goes out once there is room.
#[test]
fn a_large_submission_on_a_full_disk_waits_in_the_drop_directory() {
    let Some(users) = require() else { return };
    let mut system = System::install(users, ServerOptions::default(), "");
    let queue = system.path("var/spool/oauth-sendmail/queue");
    let tmpfs = match common::tmpfs::Tmpfs::mount(&queue, "8m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            return common::skip::skip("a_large_submission_on_a_full_disk", &why);
        }
    };
    system.start();
    let filler = tmpfs.fill();
    let body = "a line of a large report\n".repeat(120_000);
    let out = system.run(
        Some(&users.person),
        &["send", "-i", "dest@example.net"],
        format!("Subject: large\n\n{body}").as_bytes(),
    );
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), system.log());
    assert!(
        stderr(&out).contains("the mail service is busy")
            && stderr(&out).contains("waits for it in"),
        "{}",
        stderr(&out)
    );
    assert!(!system.log().contains("held in memory"), "{}", system.log());
    std::fs::remove_file(filler).unwrap();
    let received = system.wait_received(1, Duration::from_secs(30));
    assert_eq!(received.len(), 1, "{}", system.log());
    assert!(text(&received[0].data).contains("Subject: large"));
    system.stop();
    drop(tmpfs);
}
