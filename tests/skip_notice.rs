//! tests/common/skip.rs, the one way a test skips: the notice reaches stderr in a plain
//! `cargo test` run (libtest captures `eprintln!` of a passing test), and under CI=true the
//! test fails instead. Checked by running this test binary again on a test that skips.

mod common;

use std::process::{Command, Output};

use common::skip::skip;

const SKIPPING: &str = "a_test_that_cannot_run";

/// Run only by `a_skip_is_shown_and_fails_under_ci`, in a child process.
#[test]
#[ignore = "run by a_skip_is_shown_and_fails_under_ci"]
fn a_test_that_cannot_run() {
    skip(SKIPPING, "it is made to skip");
}

fn run_skipping(ci: bool) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args(["--ignored", "--exact", SKIPPING, "--test-threads=1"]);
    match ci {
        true => cmd.env("CI", "true"),
        false => cmd.env_remove("CI"),
    };
    cmd.output().expect("run this test binary again")
}

#[test]
fn a_skip_is_shown_and_fails_under_ci() {
    let out = run_skipping(false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("a_test_that_cannot_run: SKIPPED: it is made to skip"),
        "the skip is not on stderr without --nocapture: {err}"
    );

    let out = run_skipping(true);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a skip passed under CI=true: {text}");
    assert!(
        text.contains("it is made to skip; CI must run this test"),
        "{text}"
    );
}
