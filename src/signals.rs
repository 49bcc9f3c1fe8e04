//! SIGTERM, SIGINT and SIGHUP while mail is in flight: remembered, not obeyed at once, so
//! the message on the wire and its bookkeeping finish before the process stops (a kill
//! between the server's 250 and our record of it would send the message twice).

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked us to stop, 0 for none yet.
static STOP: AtomicI32 = AtomicI32::new(0);

const HANDLED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

extern "C" fn remember(signal: libc::c_int) {
    // Only an atomic store: nothing else is async-signal-safe here.
    STOP.store(signal, Ordering::SeqCst);
}

/// From now on a stop signal only sets the flag that [`stop_requested`] reads. SA_RESTART:
/// a read from the server that the signal interrupts carries on instead of failing.
pub fn defer_stop() {
    for signal in HANDLED {
        // SAFETY: a zeroed sigaction with a handler that only stores an atomic, installed
        // for signals whose default action is to terminate.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = remember as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The name of the stop signal received since [`defer_stop`], if any.
pub fn stop_requested() -> Option<&'static str> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGTERM => Some("SIGTERM"),
        libc::SIGINT => Some("SIGINT"),
        libc::SIGHUP => Some("SIGHUP"),
        _ => Some("a signal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deferred_signal_is_remembered_not_obeyed() {
        defer_stop();
        assert_eq!(stop_requested(), None);
        // SAFETY: raising a signal whose handler was just installed.
        unsafe { libc::raise(libc::SIGHUP) };
        assert_eq!(stop_requested(), Some("SIGHUP"));
    }
}
