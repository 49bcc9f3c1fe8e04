//! SIGTERM, SIGINT and SIGHUP while mail is in flight: remembered, not obeyed at once, so
//! the message on the wire and its bookkeeping finish before the process stops (a kill
//! between the server's 250 and our record of it would send the message twice). Only
//! while we wait for a `-bs` client (see [`ClientInput`]) does a stop signal act at once.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The signal that asked us to stop, 0 for none yet.
static STOP: AtomicI32 = AtomicI32::new(0);

/// False while nothing is in flight: a stop signal then ends the process as it would
/// without a handler.
static DEFERRING: AtomicBool = AtomicBool::new(true);

const HANDLED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

extern "C" fn remember(signal: libc::c_int) {
    // Atomics, signal() and raise() only: all async-signal-safe.
    if DEFERRING.load(Ordering::SeqCst) {
        STOP.store(signal, Ordering::SeqCst);
    } else {
        // SAFETY: back to the default action (terminate), then the same signal again.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
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

/// Stdin of `sendmail -bs`: a stop signal that comes while we wait for the client ends the
/// process at once (nothing is in flight); one that came while a message was delivered
/// lets its reply go out, then reads as the end of input, so the session ends there.
pub struct ClientInput<R> {
    inner: BufReader<R>,
}

impl<R: Read> ClientInput<R> {
    pub fn new(inner: R) -> ClientInput<R> {
        ClientInput {
            inner: BufReader::new(inner),
        }
    }
}

impl<R: Read> Read for ClientInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for ClientInput<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if !self.inner.buffer().is_empty() {
            return self.inner.fill_buf();
        }
        // The order matters: a signal before the store is seen by the check, one after
        // it ends the process.
        DEFERRING.store(false, Ordering::SeqCst);
        if stop_requested().is_some() {
            DEFERRING.store(true, Ordering::SeqCst);
            return Ok(&[]);
        }
        let read = self.inner.fill_buf();
        DEFERRING.store(true, Ordering::SeqCst);
        read
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
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
        // After a stop, a -bs client's next command reads as the end of its input.
        let mut input = ClientInput::new(&b"QUIT\r\n"[..]);
        let mut line = String::new();
        assert_eq!(
            input.read_line(&mut line).unwrap(),
            0,
            "nothing read after a stop"
        );
    }
}
