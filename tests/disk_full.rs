//! A full disk under the state directory, for real: a small tmpfs mounted as the test's
//! XDG_STATE_HOME (the tests run as root) and filled to the last byte. A rotated refresh
//! token is never lost (the provider voids the old one), and a cache that cannot be
//! written does not stop a send that can succeed.
//!
//! Under CI=true a tmpfs that cannot be mounted fails the test; elsewhere the test is
//! skipped with a message.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::harness::{code, stderr, Harness};
use common::oauth_server::{
    assert_no_oauth_secrets, explain, harness_with_oauth, login, OAuthOptions, OAuthServer,
};

const MESSAGE: &[u8] = b"To: rcpt@example.com\nSubject: disk full\n\nBody of the disk-full test.\n";

/// A tmpfs mounted on a directory, unmounted when dropped (declare it after the harness
/// whose HOME holds it, so that it goes first).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: "1m") on `dir`; `None` (skipped) when
    /// that is impossible outside CI.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let result = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        let why = match result {
            Ok(o) if o.status.success() => {
                return Some(Tmpfs {
                    dir: dir.to_path_buf(),
                })
            }
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "cannot mount a tmpfs on {} (run as root): {why}",
                dir.display()
            );
        }
        eprintln!(
            "SKIPPED: cannot mount a tmpfs on {} (needs root): {why}",
            dir.display()
        );
        None
    }

    /// Fills the file system to the last byte; returns the filler file.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // The last partial block, byte by byte.
        while let Ok(1) = file.write(&[0]) {}
        let probe = std::fs::write(self.dir.join("probe"), b"x");
        assert!(probe.is_err(), "the file system is not full");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A logged-in account whose state directory is a 1 MB tmpfs, with the queue and the
/// delivery log elsewhere (so that what is tested is the token engine alone).
fn logged_in_on_tmpfs(opts: OAuthOptions) -> Option<(OAuthServer, Harness, Tmpfs)> {
    let (oauth, h) = harness_with_oauth(opts, "");
    let state = h.home.path().join(".local/state");
    let Some(tmpfs) = Tmpfs::mount(&state, "1m") else {
        let mut oauth = oauth;
        oauth.expect_unused();
        let mut h = h;
        h.server.expect_unused();
        return None;
    };
    let config = std::fs::read_to_string(&h.config_path).unwrap();
    let home = h.home.path().display().to_string();
    std::fs::write(
        &h.config_path,
        format!("queue_dir = \"{home}/queue\"\nlog_file = \"{home}/delivery.log\"\n{config}"),
    )
    .unwrap();
    let o = login(&h, &[]);
    assert_eq!(code(&o), 0, "login: {}", explain(&h, &oauth, &o));
    Some((oauth, h, tmpfs))
}

fn send(h: &Harness, oauth: &OAuthServer) -> Output {
    let o = h.send(&["-v", "-i", "rcpt@example.com"], MESSAGE);
    assert_no_oauth_secrets(oauth, &o);
    o
}

fn stored_refresh_token(h: &Harness) -> String {
    let path = h
        .home
        .path()
        .join(".local/state/oauth-sendmail/test.refresh-token");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines().next().unwrap_or_default().trim().to_string()
}

#[test]
fn a_rotated_refresh_token_is_kept_on_a_full_disk() {
    // 30 s is inside the safety margin: every send refreshes, and every refresh rotates.
    let Some((oauth, h, tmpfs)) = logged_in_on_tmpfs(OAuthOptions {
        lifetimes: vec![30],
        rotate: true,
        ..OAuthOptions::default()
    }) else {
        return;
    };
    let filler = tmpfs.fill();
    let o = send(&h, &oauth);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_eq!(oauth.calls("refresh_token"), 1, "{}", oauth.log());
    assert_eq!(h.server.received().len(), 1, "sent, not queued");
    // The provider voided the login's token: the one on disk must be its replacement.
    assert_eq!(
        vec![stored_refresh_token(&h)],
        oauth.live_refresh_tokens(),
        "{}",
        explain(&h, &oauth, &o)
    );
    // Room again: the next sends refresh with the stored token, and rotate it again.
    std::fs::remove_file(filler).unwrap();
    for n in 2..=3 {
        let o = send(&h, &oauth);
        assert_eq!(code(&o), 0, "send {n}: {}", explain(&h, &oauth, &o));
    }
    assert_eq!(oauth.calls("refresh_token"), 3);
    assert_eq!(vec![stored_refresh_token(&h)], oauth.live_refresh_tokens());
}

#[test]
fn without_room_for_a_rotated_token_no_refresh_is_asked_for() {
    let Some((oauth, h, tmpfs)) = logged_in_on_tmpfs(OAuthOptions {
        lifetimes: vec![30],
        rotate: true,
        ..OAuthOptions::default()
    }) else {
        return;
    };
    // A state directory from before reservations existed, on a full disk.
    let state = h.home.path().join(".local/state/oauth-sendmail");
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".reserved") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let live = oauth.live_refresh_tokens();
    let filler = tmpfs.fill();
    let o = send(&h, &oauth);
    // Queued (the queue is on another disk), and said why.
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert!(
        stderr(&o).contains("cannot reserve room for a rotated refresh token"),
        "{}",
        explain(&h, &oauth, &o)
    );
    assert_eq!(oauth.calls("refresh_token"), 0, "{}", oauth.log());
    assert_eq!(
        oauth.live_refresh_tokens(),
        live,
        "the login's token is intact"
    );
    let (ids, listing) = h.queue_listing();
    assert_eq!(ids.len(), 1, "{listing}");
    // With room again, the queue goes out with the login's token.
    std::fs::remove_file(filler).unwrap();
    let o = h.sendmail(&["-q"], b"");
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_eq!(h.server.received().len(), 1, "{}", explain(&h, &oauth, &o));
    assert_eq!(vec![stored_refresh_token(&h)], oauth.live_refresh_tokens());
}

#[test]
fn an_access_token_cache_that_cannot_be_written_does_not_stop_the_send() {
    // No rotation: the refresh token stays, only the cache write fails.
    let Some((oauth, h, tmpfs)) = logged_in_on_tmpfs(OAuthOptions {
        lifetimes: vec![30],
        ..OAuthOptions::default()
    }) else {
        return;
    };
    let _filler = tmpfs.fill();
    let o = send(&h, &oauth);
    assert_eq!(code(&o), 0, "{}", explain(&h, &oauth, &o));
    assert_eq!(h.server.received().len(), 1, "sent, not queued");
    let err = stderr(&o);
    assert!(
        err.contains("oauth-sendmail: the access token is used but not cached:")
            && err.contains("No space left on device"),
        "{err}"
    );
}
