//! The one way a test says it cannot run here: under `CI=true` it fails (CI must run every
//! test, after scripts/install-test-deps, as root, inside scripts/test's keyring session),
//! elsewhere it is skipped, loudly.
//!
//! The notice goes straight to the process's stderr handle, not through `eprintln!`, which
//! libtest captures (and hides) for a passing test: a skip shows in a plain `cargo test`
//! run, among the test names, without `--nocapture`.

use std::fmt::Display;
use std::io::Write;

/// Whether this is CI, where no test may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// `test` cannot get what it needs, for `why` (which should say what installs or allows
/// it): under CI=true this panics; elsewhere it prints `<test>: SKIPPED: <why>` to stderr
/// and the caller returns.
pub fn skip(test: &str, why: impl Display) {
    if in_ci() {
        panic!("{test}: {why}; CI must run this test");
    }
    let _ = writeln!(std::io::stderr(), "{test}: SKIPPED: {why}");
}

/// `true` when `missing` is `None`; otherwise `skip`s with it and returns false, for
/// `if !skip::unless(test, missing) { return; }`.
pub fn unless(test: &str, missing: Option<impl Display>) -> bool {
    match missing {
        None => true,
        Some(why) => {
            skip(test, why);
            false
        }
    }
}

/// Why python3 cannot import aiosmtpd (tests/mta/mailbox_server.py needs it), or `None`.
pub fn aiosmtpd_missing() -> Option<String> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdin(std::process::Stdio::null())
        .output();
    match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "python3 cannot import aiosmtpd: {} (scripts/install-test-deps installs it)",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!(
            "cannot run python3: {e} (scripts/install-test-deps installs it)"
        )),
    }
}
