//! SIGHUP for the service: a request to re-read the configuration, remembered for the
//! main loop to act on (the handler itself only stores an atomic).

use std::sync::atomic::{AtomicBool, Ordering};

static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn remember(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// From now on SIGHUP asks for a reload instead of a stop (install after
/// `signals::defer_stop`, which takes SIGHUP as a stop).
pub fn hangup_reloads() {
    // SAFETY: a zeroed sigaction with a handler that only stores an atomic.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = remember as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGHUP, &action, std::ptr::null_mut());
    }
}

/// Whether a SIGHUP came since the last call.
pub fn reload_requested() -> bool {
    RELOAD.swap(false, Ordering::SeqCst)
}
