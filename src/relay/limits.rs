//! What bounds the relay under load and abuse: connections in total and per client
//! address, deadlines per command and per session, the bytes of messages held in
//! memory, and the delay and per-address limit on failed logins.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Connections served at once; more are told 421 and closed.
pub const MAX_CONNECTIONS: usize = 200;
/// From one client address at once (a busy office behind one NAT stays well under).
pub const MAX_PER_ADDRESS: usize = 32;
/// A command line must arrive whole within this (a slowloris client is dropped).
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// A whole session, however it trickles.
pub const SESSION_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// A message gets this long plus a second per [`BYTES_PER_SECOND`].
pub const DATA_DEADLINE: Duration = Duration::from_secs(60);
pub const BYTES_PER_SECOND: u64 = 64 * 1024;
/// Message bytes held in memory by all connections at once, counted as they arrive (a
/// slow client holds only what it sent); a message that would go over waits for room,
/// then gets 452.
pub const MESSAGE_BYTES: u64 = 256 * 1024 * 1024;
/// Room is taken from [`MESSAGE_BYTES`] this much at a time.
const CHUNK: u64 = 64 * 1024;
/// Each failed login is answered this much later (successes are not delayed).
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Failed logins from one address within [`FAILURE_WINDOW`] before AUTH is refused to
/// it. Counted per client address, not per device: a guesser elsewhere cannot lock the
/// real device out.
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared counters.
#[derive(Default)]
pub struct Limits {
    connections: Mutex<HashMap<IpAddr, usize>>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
    in_memory: (Mutex<u64>, Condvar),
}

/// A connection's place, given back when dropped.
pub struct Slot<'a> {
    limits: &'a Limits,
    ip: IpAddr,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.limits.connections);
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// The memory one message holds, grown as it arrives, given back when dropped.
pub struct Budget<'a> {
    limits: &'a Limits,
    held: u64,
}

impl Drop for Budget<'_> {
    fn drop(&mut self) {
        let (bytes, freed) = &self.limits.in_memory;
        *lock(bytes) -= self.held;
        freed.notify_all();
    }
}

impl Budget<'_> {
    /// Room for `size` more bytes, waiting (until `until`) while others hold it all.
    pub fn grow(&mut self, size: u64, until: Instant) -> bool {
        let (bytes, freed) = &self.limits.in_memory;
        let mut held = lock(bytes);
        while *held + size > MESSAGE_BYTES && *held > self.held {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            held = freed
                .wait_timeout(held, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *held += size;
        self.held += size;
        true
    }
}

/// A reader that takes room from a [`Budget`] for every byte it hands on: what reads a
/// message through it holds no more than the budget allows.
pub struct Metered<'a, 'b, R> {
    pub inner: &'a mut R,
    pub budget: Budget<'b>,
    pub until: Instant,
    used: u64,
    /// What is read past this stays out of memory (a message's body spilled to a file):
    /// the budget is charged no more.
    charge_at_most: u64,
    /// The budget had no room: the message is refused, not cut off.
    pub exhausted: bool,
}

impl<'a, 'b, R: io::BufRead> Metered<'a, 'b, R> {
    pub fn new(inner: &'a mut R, budget: Budget<'b>, until: Instant) -> Self {
        Metered {
            inner,
            budget,
            until,
            used: 0,
            charge_at_most: u64::MAX,
            exhausted: false,
        }
    }

    /// Charges the budget for at most `bytes` of what is read.
    pub fn charging_at_most(mut self, bytes: u64) -> Self {
        self.charge_at_most = bytes;
        self
    }
}

impl<R: io::BufRead> Read for Metered<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = io::BufRead::fill_buf(self)?;
            let n = available.len().min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            n
        };
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl<R: io::BufRead> io::BufRead for Metered<'_, '_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let buffer = self.inner.fill_buf()?;
        let need = (self.used + buffer.len() as u64).min(self.charge_at_most);
        if need > self.budget.held {
            let more = (need - self.budget.held).max(CHUNK);
            if !self.budget.grow(more, self.until) {
                self.exhausted = true;
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "no room for the message",
                ));
            }
        }
        Ok(buffer)
    }

    fn consume(&mut self, amount: usize) {
        self.used += amount as u64;
        self.inner.consume(amount);
    }
}

impl Limits {
    /// Connections held now, from every address.
    pub fn open_connections(&self) -> usize {
        lock(&self.connections).values().sum()
    }

    /// A place for a connection from `ip`, or why not.
    pub fn connect(&self, ip: IpAddr) -> std::result::Result<Slot<'_>, &'static str> {
        let mut held = lock(&self.connections);
        if held.values().sum::<usize>() >= MAX_CONNECTIONS {
            return Err("too many connections");
        }
        let mine = held.entry(ip).or_default();
        if *mine >= MAX_PER_ADDRESS {
            return Err("too many connections from your address");
        }
        *mine += 1;
        Ok(Slot { limits: self, ip })
    }

    /// Whether `ip` has used up its failed logins.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let mut failures = lock(&self.failures);
        let Some(times) = failures.get_mut(&ip) else {
            return false;
        };
        times.retain(|t| t.elapsed() < FAILURE_WINDOW);
        times.len() >= MAX_FAILURES
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut failures = lock(&self.failures);
        // Bounded: a flood of addresses keeps at most this many records.
        if failures.len() > 100_000 {
            failures.retain(|_, times| times.iter().any(|t| t.elapsed() < FAILURE_WINDOW));
        }
        failures.entry(ip).or_default().push(Instant::now());
    }

    /// An empty budget for one message.
    pub fn budget(&self) -> Budget<'_> {
        Budget {
            limits: self,
            held: 0,
        }
    }

    /// Bytes of messages held now.
    #[cfg(test)]
    fn in_memory(&self) -> u64 {
        *lock(&self.in_memory.0)
    }
}

/// A TCP stream whose every read must finish before the current deadline (the command's
/// or the message's) and the session's.
pub struct Timed {
    pub stream: TcpStream,
    session_until: Instant,
    pub until: Instant,
}

impl Timed {
    pub fn new(stream: TcpStream) -> Timed {
        let now = Instant::now();
        let _ = stream.set_write_timeout(Some(COMMAND_DEADLINE));
        Timed {
            stream,
            session_until: now + SESSION_DEADLINE,
            until: now + COMMAND_DEADLINE,
        }
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self
            .until
            .min(self.session_until)
            .saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "too slow"));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_address_and_given_back() {
        let limits = Limits::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..MAX_PER_ADDRESS)
            .map(|_| limits.connect(ip).unwrap())
            .collect();
        assert!(limits.connect(ip).is_err());
        assert!(limits.connect("10.0.0.2".parse().unwrap()).is_ok());
        drop(slots);
        assert!(limits.connect(ip).is_ok());
    }

    #[test]
    fn failures_block_one_address_only() {
        let limits = Limits::default();
        let guesser: IpAddr = "10.0.0.66".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(!limits.blocked(guesser));
            limits.failed(guesser);
        }
        assert!(limits.blocked(guesser));
        assert!(!limits.blocked("10.0.0.7".parse().unwrap()));
    }

    #[test]
    fn a_client_that_trickles_a_command_is_cut_off_at_its_deadline() {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let trickler = std::thread::spawn(move || {
            let mut client = TcpStream::connect(address).unwrap();
            // A byte every 20 ms: each read is quick, the line never ends.
            for _ in 0..100 {
                if client.write_all(b"H").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (stream, _) = listener.accept().unwrap();
        let mut timed = Timed::new(stream);
        let started = Instant::now();
        timed.until = started + Duration::from_millis(200);
        let mut line = String::new();
        let err = io::BufReader::new(timed).read_line(&mut line).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{err}"
        );
        // Cut off long before the trickle's 100 bytes (2 s) were in.
        assert!(line.len() < 50, "not the whole trickle: {line}");
        trickler.join().unwrap();
    }

    /// A message read into a spill file costs the budget what stays in memory only.
    #[test]
    fn what_goes_to_a_file_is_not_charged() {
        use std::io::Read;
        let limits = Limits::default();
        let text = vec![b'x'; 10 * CHUNK as usize];
        let mut input = io::BufReader::with_capacity(CHUNK as usize, &text[..]);
        let mut metered =
            Metered::new(&mut input, limits.budget(), Instant::now()).charging_at_most(2 * CHUNK);
        let mut read = Vec::new();
        metered.read_to_end(&mut read).unwrap();
        assert_eq!(read.len(), text.len());
        assert_eq!(limits.in_memory(), 2 * CHUNK);
        drop(metered);
        assert_eq!(limits.in_memory(), 0);
    }

    #[test]
    fn memory_is_taken_as_bytes_arrive_and_given_back() {
        use std::io::BufRead;
        let limits = Limits::default();
        let mut big = limits.budget();
        assert!(big.grow(MESSAGE_BYTES - CHUNK, Instant::now()));
        let mut input = io::BufReader::with_capacity(16, &b"line one\r\nline two\r\n"[..]);
        let mut metered = Metered::new(&mut input, limits.budget(), Instant::now());
        let mut line = String::new();
        metered.read_line(&mut line).unwrap();
        assert_eq!(line, "line one\r\n");
        assert_eq!(limits.in_memory(), MESSAGE_BYTES, "one chunk taken for it");
        drop(metered);
        assert_eq!(limits.in_memory(), MESSAGE_BYTES - CHUNK);
        // Full: the next message waits until its deadline, then is refused.
        assert!(big.grow(CHUNK, Instant::now()));
        let mut input = io::BufReader::new(&b"more\r\n"[..]);
        let soon = Instant::now() + Duration::from_millis(50);
        let mut metered = Metered::new(&mut input, limits.budget(), soon);
        let err = metered.read_line(&mut String::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        assert!(metered.exhausted);
        drop(metered);
        drop(big);
        assert_eq!(limits.in_memory(), 0, "all given back");
    }
}
