//! The terminal a person answers `setup` on: lines read from stdin one byte at a time (so
//! that what follows is left for the commands setup runs after it), and secrets read with
//! the terminal's echo off (termios), which only libc can do.

use std::io;

/// Whether stdin is a terminal a person types on.
pub fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal;
    io::stdin().is_terminal()
}

/// The next line of stdin without its line end; `None` at end of input. With `hidden` and
/// a terminal on stdin, what is typed is not shown (only the newline, so the next prompt
/// starts on a line of its own).
pub fn read_line(hidden: bool) -> io::Result<Option<String>> {
    let _echo_off = match hidden && stdin_is_terminal() {
        true => Some(EchoOff::new()?),
        false => None,
    };
    read_raw_line()
}

/// Unbuffered, so nothing past the line is taken from stdin: std's Stdin would read ahead
/// and keep what a login run after us must read.
fn read_raw_line() -> io::Result<Option<String>> {
    let mut bytes = Vec::new();
    loop {
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into a valid one-byte buffer.
        let n = unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) };
        match n {
            0 if bytes.is_empty() => return Ok(None),
            0 => break,
            1 if byte == b'\n' => break,
            1 => bytes.push(byte),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
        }
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the line is not UTF-8"))
}

/// The terminal's echo turned off until dropped, when its settings are put back (also
/// when the read fails).
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    fn new() -> io::Result<EchoOff> {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0 or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut quiet = saved;
        // Still line by line (ICANON), with the newline echoed: only the characters hidden.
        quiet.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK);
        quiet.c_lflag |= libc::ECHONL;
        // TCSANOW, not TCSAFLUSH: an answer typed ahead of the prompt is kept, not lost.
        // SAFETY: a termios obtained from tcgetattr, changed in its flags only.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EchoOff { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: puts back the settings tcgetattr gave for the same fd.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}
