//! A full disk under the state directory, for real: a small tmpfs mounted as the test's
//! XDG_STATE_HOME (the tests run as root) and filled to the last byte. A rotated refresh
//! token is never lost (the provider voids the old one), and a cache that cannot be
//! written does not stop a send that can succeed.
//!
//! Under CI=true a tmpfs that cannot be mounted fails the test; elsewhere the test is
//! skipped with a message.

mod common;

use std::process::Output;

use common::harness::{code, stderr, Harness};
use common::oauth_server::{
    assert_no_oauth_secrets, explain, harness_with_oauth, login, OAuthOptions, OAuthServer,
};
use common::skip::skip;
use common::tmpfs::Tmpfs;

const MESSAGE: &[u8] = b"To: rcpt@example.com\nSubject: disk full\n\nBody of the disk-full test.\n";

/// 30 s is inside the safety margin: every send refreshes, and every refresh rotates.
fn rotating() -> OAuthOptions {
    OAuthOptions {
        lifetimes: vec![30],
        rotate: true,
        ..OAuthOptions::default()
    }
}

/// A logged-in account whose state directory is a 1 MB tmpfs, with the queue and the
/// delivery log elsewhere (so that what is tested is the token engine alone).
fn logged_in_on_tmpfs(opts: OAuthOptions) -> Option<(OAuthServer, Harness, Tmpfs)> {
    let (oauth, h) = harness_with_oauth(opts, |c| c);
    let state = h.home.path().join(".local/state");
    let tmpfs = match Tmpfs::mount(&state, "1m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            skip("disk_full", format!("{why}: run as root"));
            let mut oauth = oauth;
            oauth.expect_unused();
            let mut h = h;
            h.server.expect_unused();
            return None;
        }
    };
    let mut h = h;
    let home = h.home.path().to_path_buf();
    h.write_config(|c| {
        c.set("queue_dir", &home.join("queue"))
            .set("log_file", &home.join("delivery.log"))
    });
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
    let Some((oauth, h, tmpfs)) = logged_in_on_tmpfs(rotating()) else {
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
    let Some((oauth, h, tmpfs)) = logged_in_on_tmpfs(rotating()) else {
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
