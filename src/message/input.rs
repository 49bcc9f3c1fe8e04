//! The message as read from the caller: held in memory up to a threshold, its body spilled to an unlinked temporary file past it, so that a message of any size costs the same memory.
//!
//! The reader applies intake's reading rules as the lines come in (the lone dot unless
//! `-i`, every line end made CRLF with the header/body distinction [`HeaderLines`] makes,
//! old-Mac CR text), and keeps the header block in memory, whole lines as today. Past
//! [`SPILL_AFTER`] bytes of body in memory, the body read so far goes into a file that
//! has no name (O_TMPFILE in the queue directory: nothing is left by a crash) and the rest
//! streams after it, a chunk at a time, never synced: the file is only ever a copy of
//! stdin for the time of the send. While it writes the file it notes what intake otherwise scans
//! the body for (a byte above 127, a NUL, a line over 998 octets). Below the threshold the
//! message is one buffer, exactly as it always was.
//!
//! Where the file cannot be made or written (a full disk), the body stays in memory as
//! it did before there was a spill, with a warning: the message is not lost for it.
//!
//! A header block over [`MAX_HEADER`] is still read (into the file) so that it can be
//! kept in dead.letter, and intake refuses it (65). One consequence: old-Mac text (CR
//! line ends only, no LF anywhere) is one line to a reader until its end, so such a
//! message over [`MAX_HEADER`] that begins with a header field is refused like a header
//! block that long; below it, it is read as before.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;

use crate::message::envelope::{Body, CHUNK};
use crate::message::intake::{push_crlf_line, trim_line_end, HeaderLines, MAX_LINE};
use crate::sys::files;

/// Past this many bytes of body read (as the caller wrote them), the body goes to a file.
pub const SPILL_AFTER: usize = 1 << 20;
/// The longest header block held in memory; a longer one is refused by intake.
pub const MAX_HEADER: usize = 1 << 20;
/// The most a message read here holds in memory, about: the header block, the body up to
/// the spill (its line ends made CRLF: twice as long at worst, every byte a CR), and a
/// read's worth more (what a service reserves for one submission).
pub const HELD_AT_MOST: u64 = (MAX_HEADER + 2 * SPILL_AFTER + 2 * CHUNK) as u64;

/// A message as read: all of it in memory, or its start in memory and its body in a file.
#[derive(Debug, Default)]
pub struct Input {
    memory: Vec<u8>,
    spill: Option<Spill>,
}

/// The body of a message past [`SPILL_AFTER`]: an unnamed file, CRLF lines as intake
/// makes them, and what intake needs to know of them without reading them again.
#[derive(Debug)]
pub struct Spill {
    file: File,
    len: u64,
    eight_bit: bool,
    unsendable: bool,
    header_over: bool,
    /// An empty file of the same kind, for the re-encoded body when `unsendable`.
    spare: Option<File>,
}

impl Spill {
    /// The file's bytes, from its start.
    pub fn body(&self) -> Body<'_> {
        Body::File {
            file: &self.file,
            len: self.len,
        }
    }

    /// Has a byte above 127.
    pub fn eight_bit(&self) -> bool {
        self.eight_bit
    }

    /// Has a NUL or a line over 998 octets: intake must re-encode (or refuse) it.
    pub fn unsendable(&self) -> bool {
        self.unsendable
    }

    /// Where the body re-encoded goes, when it must be and a file could be made.
    pub fn spare(&self) -> Option<&File> {
        self.spare.as_ref()
    }

    /// The header block went on past [`MAX_HEADER`]: the rest of it is in the file.
    pub fn header_over(&self) -> bool {
        self.header_over
    }
}

/// A message as read, borrowed: what intake, the queue and dead.letter take, from
/// [`Input`] or from bytes in memory (a `-bs` transaction, a queued message).
#[derive(Clone, Copy, Debug)]
pub struct Raw<'a> {
    memory: &'a [u8],
    spill: Option<&'a Spill>,
}

impl<'a> From<&'a [u8]> for Raw<'a> {
    fn from(memory: &'a [u8]) -> Raw<'a> {
        Raw {
            memory,
            spill: None,
        }
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Raw<'a> {
    fn from(memory: &'a [u8; N]) -> Raw<'a> {
        Raw::from(memory.as_slice())
    }
}

impl<'a> From<&'a Vec<u8>> for Raw<'a> {
    fn from(memory: &'a Vec<u8>) -> Raw<'a> {
        Raw::from(memory.as_slice())
    }
}

impl<'a> From<&'a Input> for Raw<'a> {
    fn from(input: &'a Input) -> Raw<'a> {
        Raw {
            memory: &input.memory,
            spill: input.spill.as_ref(),
        }
    }
}

impl Input {
    pub fn raw(&self) -> Raw<'_> {
        Raw::from(self)
    }
}

impl<'a> Raw<'a> {
    /// The whole message when there is no spill; else what came before it (the header
    /// block and the line that ended it).
    pub fn memory(&self) -> &'a [u8] {
        self.memory
    }

    pub fn spill(&self) -> Option<&'a Spill> {
        self.spill
    }

    pub fn len(&self) -> u64 {
        self.memory.len() as u64 + self.spill.map_or(0, |s| s.len)
    }

    /// The message in order: memory, then the file (empty without one).
    pub fn parts(&self) -> [Body<'a>; 2] {
        [
            Body::Bytes(self.memory),
            self.spill.map_or(Body::Bytes(&[]), Spill::body),
        ]
    }

    /// Nothing in it but white space (`echo | sendmail`): nothing to keep. A spilled
    /// message is taken as something.
    pub fn is_blank(&self) -> bool {
        self.spill.is_none() && self.memory.trim_ascii().is_empty()
    }

    pub fn eight_bit(&self) -> bool {
        !self.memory.is_ascii() || self.spill.is_some_and(|s| s.eight_bit)
    }

    /// Gives `each` the message in order, a chunk at a time.
    pub fn each_chunk(&self, each: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        self.parts()
            .iter()
            .try_for_each(|part| part.each_chunk(each))
    }

    /// The whole message in one buffer.
    #[cfg(test)]
    pub fn whole(&self) -> io::Result<std::borrow::Cow<'a, [u8]>> {
        match self.spill {
            None => Ok(std::borrow::Cow::Borrowed(self.memory)),
            Some(_) => {
                let mut whole = Vec::with_capacity(self.len() as usize);
                self.each_chunk(&mut |chunk| {
                    whole.extend_from_slice(chunk);
                    Ok(())
                })?;
                Ok(std::borrow::Cow::Owned(whole))
            }
        }
    }
}

/// Reads the message: to EOF with `-i`, else up to a line holding only "." (sendmail's
/// rule; a trailing CR is ignored for that test), which is not part of the message; line
/// ends made CRLF. A body past [`SPILL_AFTER`] goes into a file `new_file` makes.
pub fn read(
    input: impl BufRead,
    ignore_dots: bool,
    new_file: &mut dyn FnMut() -> io::Result<File>,
) -> io::Result<Input> {
    read_or(input, ignore_dots, new_file, NoRoom::InMemory)
}

/// [`read`], with `no_room` saying what a spill that cannot be written does.
pub fn read_or(
    input: impl BufRead,
    ignore_dots: bool,
    new_file: &mut dyn FnMut() -> io::Result<File>,
    no_room: NoRoom,
) -> io::Result<Input> {
    let limits = Limits {
        spill_after: SPILL_AFTER,
        max_header: MAX_HEADER,
        no_room,
    };
    read_with(input, ignore_dots, limits, new_file)
}

/// [`read`] of stdin, with the error a caller reports.
pub fn read_stdin(
    ignore_dots: bool,
    new_file: &mut dyn FnMut() -> io::Result<File>,
) -> crate::error::Result<Input> {
    read(io::stdin().lock(), ignore_dots, new_file).map_err(|e| {
        crate::error::Error::new(
            crate::error::Kind::Io,
            "cannot read the message from stdin",
            e,
        )
    })
}

/// The reader of old, for what needs the message in memory whatever its size: no spill.
#[cfg(test)]
pub fn read_message(input: impl BufRead, ignore_dots: bool) -> io::Result<Vec<u8>> {
    let limits = Limits {
        spill_after: usize::MAX,
        max_header: usize::MAX - 1,
        no_room: NoRoom::InMemory,
    };
    let mut no_file = || Err(io::Error::other("no spill"));
    Ok(read_with(input, ignore_dots, limits, &mut no_file)?.memory)
}

/// Spill files in a queue directory (created private, 0700, if missing): the same file
/// system as the queue, so a failed send copies the file into the queue in the kernel.
/// Where that directory cannot be used, the system's temporary directory.
pub fn spill_in_queue(dir: &Path) -> impl FnMut() -> io::Result<File> + '_ {
    move || match files::ensure_private_dir(dir) {
        Ok(()) => {
            files::anonymous_file(dir).or_else(|_| files::anonymous_file(&std::env::temp_dir()))
        }
        Err(_) => files::anonymous_file(&std::env::temp_dir()),
    }
}

/// Spill files in a directory that is not ours to change (the drop directory): unnamed
/// there (O_TMPFILE) when the file system has them, else in the temporary directory.
pub fn spill_beside(dir: &Path) -> impl FnMut() -> io::Result<File> + '_ {
    move || files::unnamed_file(dir).or_else(|_| files::anonymous_file(&std::env::temp_dir()))
}

#[derive(Clone, Copy)]
struct Limits {
    spill_after: usize,
    max_header: usize,
    no_room: NoRoom,
}

/// What a reader does when the spill file cannot be made or written (a full disk).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NoRoom {
    /// Keeps the body in memory, with a warning: the caller's stdin cannot be read again,
    /// so the message must not be lost for it.
    InMemory,
    /// Fails with `ErrorKind::StorageFull`: a server, whose client can send again, says
    /// so (4xx) rather than hold what many clients send at once in memory; the queue,
    /// on the same disk, could not take the message either.
    Refuse,
}

fn read_with(
    mut input: impl BufRead,
    ignore_dots: bool,
    limits: Limits,
    new_file: &mut dyn FnMut() -> io::Result<File>,
) -> io::Result<Input> {
    let mut memory = Vec::new();
    let mut header = HeaderLines::default();
    // The header block and the line that ends it: whole lines, as intake has read them.
    let (partial, header_over) = loop {
        let start = memory.len();
        if start > limits.max_header {
            break (Vec::new(), true);
        }
        let room = (limits.max_header - start) as u64 + 1;
        if input.by_ref().take(room).read_until(b'\n', &mut memory)? == 0 {
            return Ok(Input {
                memory,
                spill: None,
            });
        }
        if !memory.ends_with(b"\n") && !input.fill_buf()?.is_empty() {
            // A line longer than the header's room: the body's first line (read on as
            // body), or the header over its limit.
            let over = header.may_hold(&memory[start..]);
            break (memory.split_off(start), over);
        }
        let end = start + trim_line_end(&memory[start..]).len();
        if !ignore_dots && &memory[start..end] == b"." {
            memory.truncate(start);
            return Ok(Input {
                memory,
                spill: None,
            });
        }
        let in_header = header.holds(&memory[start..end]);
        if memchr::memchr(b'\r', &memory[start..end]).is_some() {
            let line = memory[start..end].to_vec();
            // A line with no LF at the very start is the whole input: old Mac text.
            let old_mac = start == 0 && !memory.ends_with(b"\n");
            memory.truncate(start);
            push_crlf_line(&mut memory, &line, in_header && !old_mac);
        } else {
            memory.truncate(end);
            memory.extend_from_slice(b"\r\n");
        }
        if !in_header {
            break (Vec::new(), false);
        }
    };
    // The body, streamed: into memory, then into the file past the threshold.
    let mut out = Out {
        head_len: memory.len(),
        memory,
        file: None,
        memory_only: false,
        no_room: limits.no_room,
    };
    if header_over {
        out.spill(new_file)?;
    }
    let mut lines = BodyLines {
        dots: !ignore_dots,
        at_start: true,
        dot: false,
        crs: 0,
    };
    // Counted as read, so that a message of 1 MiB as written stays in memory whatever
    // its line ends become.
    let mut body_read = partial.len();
    let mut ended = lines.feed(&partial, &mut out)?;
    drop(partial);
    loop {
        if out.may_spill() && body_read > limits.spill_after {
            out.spill(new_file)?;
        }
        if ended {
            break;
        }
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            lines.finish(&mut out)?;
            break;
        }
        let n = buf.len();
        ended = lines.feed(buf, &mut out)?;
        input.consume(n);
        body_read += n;
    }
    let mut message = out.finish(header_over)?;
    if let Some(spill) = message.spill.as_mut().filter(|spill| spill.unsendable) {
        // Somewhere for intake's re-encoding to write, made while there is the means to.
        spill.spare = new_file().ok();
    }
    Ok(message)
}

/// Where the body goes: memory after the header, then the file.
struct Out {
    memory: Vec<u8>,
    head_len: usize,
    file: Option<Writer>,
    /// The spill failed (no file, a full disk): the body stays in memory, as it did
    /// before there was a spill, rather than the message being lost for it.
    memory_only: bool,
    no_room: NoRoom,
}

/// The spill file and what is not written to it yet (written a chunk at a time, so that
/// what the file holds is known if a write fails).
struct Writer {
    file: File,
    pending: Vec<u8>,
    written: u64,
    scan: Scan,
}

impl Writer {
    fn write_pending(&mut self) -> io::Result<()> {
        self.file.write_all(&self.pending)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

impl Out {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(writer) = &mut self.file else {
            self.memory.extend_from_slice(bytes);
            return Ok(());
        };
        writer.scan.feed(bytes);
        writer.pending.extend_from_slice(bytes);
        if writer.pending.len() < CHUNK {
            return Ok(());
        }
        match writer.write_pending() {
            Ok(()) => Ok(()),
            Err(e) => self.back_to_memory(e),
        }
    }

    fn may_spill(&self) -> bool {
        self.file.is_none() && !self.memory_only
    }

    /// From now on into a file, the body in memory first.
    fn spill(&mut self, new_file: &mut dyn FnMut() -> io::Result<File>) -> io::Result<()> {
        let file = match new_file() {
            Ok(file) => file,
            Err(e) if self.no_room == NoRoom::Refuse => return Err(no_room(e)),
            Err(e) => {
                self.memory_only = true;
                warn_in_memory(&e);
                return Ok(());
            }
        };
        self.file = Some(Writer {
            file,
            pending: Vec::with_capacity(CHUNK + CHUNK / 2),
            written: 0,
            scan: Scan::default(),
        });
        let body = self.memory.split_off(self.head_len);
        self.memory.shrink_to_fit();
        self.put(&body)?;
        // Written: the megabyte it took is not kept for the rest of the read.
        if let Some(writer) = &mut self.file {
            writer.pending.shrink_to(CHUNK + CHUNK / 2);
        }
        Ok(())
    }

    /// The file could not be written: what it holds comes back into memory, and the rest
    /// of the body stays there. Only a failure to read it back loses the message.
    fn back_to_memory(&mut self, why: io::Error) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.no_room == NoRoom::Refuse {
            return Err(no_room(why));
        }
        let Some(writer) = self.file.take() else {
            return Ok(());
        };
        self.memory_only = true;
        warn_in_memory(&why);
        let start = self.memory.len();
        self.memory.resize(start + writer.written as usize, 0);
        writer
            .file
            .read_exact_at(&mut self.memory[start..], 0)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{} (reading its spill file back: {e})", spilling(why)),
                )
            })?;
        self.memory.extend_from_slice(&writer.pending);
        Ok(())
    }

    fn finish(mut self, header_over: bool) -> io::Result<Input> {
        if let Some(writer) = &mut self.file {
            if let Err(e) = writer.write_pending() {
                self.back_to_memory(e)?;
            }
        }
        let spill = self.file.map(|writer| Spill {
            file: writer.file,
            len: writer.written,
            eight_bit: writer.scan.eight_bit,
            unsendable: writer.scan.nul || writer.scan.long,
            header_over,
            spare: None,
        });
        Ok(Input {
            memory: self.memory,
            spill,
        })
    }
}

fn no_room(why: io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        format!("no room for the message's body on disk: {why}"),
    )
}

fn warn_in_memory(why: &io::Error) {
    eprintln!(
        "oauth-sendmail: warning: cannot write the message to a temporary file ({why}): it is \
         held in memory instead"
    );
}

fn spilling(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("writing its body to a temporary file: {e}"),
    )
}

/// What intake would find scanning the spilled body: bytes above 127, a NUL, a line of
/// more than 998 octets before its CRLF.
#[derive(Default)]
struct Scan {
    eight_bit: bool,
    nul: bool,
    long: bool,
    /// Bytes of the current line so far.
    column: usize,
}

impl Scan {
    fn feed(&mut self, bytes: &[u8]) {
        self.eight_bit |= !bytes.is_ascii();
        self.nul |= memchr::memchr(0, bytes).is_some();
        let mut from = 0;
        for at in memchr::memchr_iter(b'\n', bytes) {
            // The line's bytes before its LF, its CR included.
            self.long |= self.column + (at - from) > MAX_LINE + 1;
            self.column = 0;
            from = at + 1;
        }
        self.column += bytes.len() - from;
        self.long |= self.column > MAX_LINE + 1;
    }
}

/// Body lines as they stream past, made what intake's reading makes of each whole line:
/// CRLF at its end (the CRs before it dropped), a CR inside it a line break too, and
/// (unless `-i`) a line of only "." the end of the message. What cannot be decided yet
/// (a "." at the start of a line, CRs that may be the line's last) waits.
struct BodyLines {
    dots: bool,
    at_start: bool,
    /// The line so far is ".".
    dot: bool,
    /// CRs not yet written: a line break each, unless the line ends after them.
    crs: usize,
}

impl BodyLines {
    /// `true` once a lone dot ended the message.
    fn feed(&mut self, mut bytes: &[u8], out: &mut Out) -> io::Result<bool> {
        while !bytes.is_empty() {
            let at = memchr::memchr2(b'\r', b'\n', bytes).unwrap_or(bytes.len());
            let (mut run, rest) = bytes.split_at(at);
            if !run.is_empty() {
                if self.at_start && self.dots && run[0] == b'.' {
                    self.dot = true;
                    run = &run[1..];
                }
                self.at_start = false;
                if !run.is_empty() {
                    self.write_pending(out)?;
                    out.put(run)?;
                }
            }
            let Some((&end, rest)) = rest.split_first() else {
                break;
            };
            bytes = rest;
            match end {
                b'\r' => {
                    self.crs += 1;
                    self.at_start = false;
                }
                _ => {
                    if self.end_line(out)? {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    fn write_pending(&mut self, out: &mut Out) -> io::Result<()> {
        if std::mem::take(&mut self.dot) {
            out.put(b".")?;
        }
        for _ in 0..std::mem::take(&mut self.crs) {
            out.put(b"\r\n")?;
        }
        Ok(())
    }

    /// At an LF (or the end of input after some bytes); `true` for a lone dot.
    fn end_line(&mut self, out: &mut Out) -> io::Result<bool> {
        if self.dot {
            return Ok(true);
        }
        self.crs = 0;
        self.at_start = true;
        out.put(b"\r\n").map(|()| false)
    }

    /// The end of input: a last line without its LF is a line all the same.
    fn finish(&mut self, out: &mut Out) -> io::Result<()> {
        if !self.at_start {
            self.end_line(out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reader as it was before spilling (every line read whole, then made CRLF): what
    /// the new one must make of any input, spilled or not.
    fn old_reader(mut input: &[u8], ignore_dots: bool) -> Vec<u8> {
        let mut message = Vec::new();
        let mut header = HeaderLines::default();
        loop {
            let start = message.len();
            if input.read_until(b'\n', &mut message).unwrap() == 0 {
                return message;
            }
            let end = start + trim_line_end(&message[start..]).len();
            if !ignore_dots && &message[start..end] == b"." {
                message.truncate(start);
                return message;
            }
            let in_header = header.holds(&message[start..end]);
            if memchr::memchr(b'\r', &message[start..end]).is_some() {
                let line = message[start..end].to_vec();
                let old_mac = start == 0 && !message.ends_with(b"\n");
                message.truncate(start);
                push_crlf_line(&mut message, &line, in_header && !old_mac);
            } else {
                message.truncate(end);
                message.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Reads `input` with small limits, through a reader that gives `chunk` bytes at a
    /// time (so lines and CR runs are cut at every place).
    fn read_small(input: &[u8], ignore_dots: bool, spill_after: usize, chunk: usize) -> Input {
        read_limited(input, ignore_dots, spill_after, 64, chunk)
    }

    fn read_limited(
        input: &[u8],
        ignore_dots: bool,
        spill_after: usize,
        max_header: usize,
        chunk: usize,
    ) -> Input {
        let limits = Limits {
            spill_after,
            max_header,
            no_room: NoRoom::InMemory,
        };
        let reader = io::BufReader::with_capacity(chunk, input);
        let mut new_file = || tempfile::tempfile();
        read_with(reader, ignore_dots, limits, &mut new_file).unwrap()
    }

    fn whole(input: &Input) -> Vec<u8> {
        input.raw().whole().unwrap().into_owned()
    }

    #[test]
    fn below_the_threshold_the_message_is_one_buffer_as_before() {
        let text = b"Subject: x\nTo: a@x.org\n\nline\r\nmac\rline\r\r\n.\nafter\n";
        let mut no_file = || -> io::Result<File> { panic!("no spill below the threshold") };
        let input = read(&text[..], false, &mut no_file).unwrap();
        assert!(input.spill.is_none());
        assert_eq!(input.memory, old_reader(text, false));
        assert_eq!(
            input.memory,
            b"Subject: x\r\nTo: a@x.org\r\n\r\nline\r\nmac\r\nline\r\n"
        );
    }

    /// The threshold crossed exactly at a line's end and inside a line, CRs cut from
    /// their LF by the spill: the file holds the body, memory the header block.
    #[test]
    fn the_spill_holds_the_body_whatever_the_cut() {
        let text = b"Subject: x\r\n\r\n0123456789\r\nabcdefghi\r\r\r\nend\n";
        let expected = old_reader(text, false);
        let head = b"Subject: x\r\n\r\n".len();
        // The threshold counts the body as written.
        let body = text.len() - head;
        for spill_after in 0..body {
            for chunk in [1, 2, 3, 7, 64] {
                let input = read_small(text, false, spill_after, chunk);
                assert_eq!(whole(&input), expected, "{spill_after} {chunk}");
                let spill = input.spill.as_ref().expect("spilled");
                assert_eq!(input.memory.len(), head, "{spill_after} {chunk}");
                assert_eq!(spill.len as usize, expected.len() - head);
                assert!(!spill.eight_bit && !spill.unsendable && !spill.header_over);
            }
        }
        // Exactly at the threshold: no file.
        assert!(read_small(text, false, body, 5).spill.is_none());
    }

    #[test]
    fn a_lone_dot_after_the_spill_ends_the_message_unless_i() {
        let text = b"To: a@x.org\n\nfirst line\nsecond line\n.\r\r\nnot this\n";
        for chunk in [1, 4, 64] {
            let ended = read_small(text, false, 4, chunk);
            assert!(ended.spill.is_some());
            assert_eq!(
                whole(&ended),
                b"To: a@x.org\r\n\r\nfirst line\r\nsecond line\r\n"
            );
            let all = read_small(text, true, 4, chunk);
            assert_eq!(whole(&all), old_reader(text, true));
            assert!(whole(&all).ends_with(b".\r\nnot this\r\n"));
        }
        // At the end of input without its LF, and dot-led lines that are not lone.
        for text in [
            &b"To: a\n\nxxxxxxxx\n."[..],
            b"To: a\n\nxxxxxxxx\n..\n.x\n.\rx\n\r.\n",
        ] {
            for chunk in [1, 3, 64] {
                assert_eq!(
                    whole(&read_small(text, false, 2, chunk)),
                    old_reader(text, false)
                );
            }
        }
    }

    #[test]
    fn the_flags_are_those_of_the_spilled_body() {
        let long = [b'x'; MAX_LINE + 1];
        let exact = [b'y'; MAX_LINE];
        let cases: [(&[&[u8]], bool, bool); 5] = [
            (&[b"plain\n"], false, false),
            (&[b"caf\xc3\xa9\n"], true, false),
            (&[b"a\0b\n"], false, true),
            (&[&exact, b"\r\n", &exact, b"\n"], false, false),
            (&[&exact, b"\r", &long, b"\n"], false, true),
        ];
        for (body, eight_bit, unsendable) in cases {
            let text = [
                &b"To: a\n\n"[..],
                &b"filler line\n".repeat(3),
                &body.concat(),
            ]
            .concat();
            for chunk in [1, 10, 4096] {
                let input = read_small(&text, true, 8, chunk);
                let spill = input.spill.as_ref().unwrap();
                assert_eq!((spill.eight_bit, spill.unsendable), (eight_bit, unsendable));
                assert_eq!(whole(&input), old_reader(&text, true));
            }
        }
        // A long last line without LF counts too.
        let text = [&b"To: a\n\nfiller line\n"[..], &long].concat();
        assert!(read_small(&text, true, 4, 64).spill.unwrap().unsendable);
    }

    /// A header block over the limit: read on into the file, so dead.letter keeps it all,
    /// and marked for intake to refuse. A long first line of a body without a header is
    /// body, never mistaken for a header.
    #[test]
    fn a_header_over_its_limit_is_kept_and_marked() {
        let mut text = b"To: a@x.org\n".to_vec();
        for _ in 0..10 {
            text.extend_from_slice(b"X-Filler: 0123456789\n");
        }
        text.extend_from_slice(b"\nbody\n");
        let input = read_small(&text, true, 1 << 20, 16);
        let spill = input.spill.as_ref().expect("spilled");
        assert!(spill.header_over);
        assert_eq!(whole(&input), old_reader(&text, true));

        let one_long_field = [&b"Subject: "[..], &[b'x'; 200], b"\n\nbody\n"].concat();
        let input = read_small(&one_long_field, true, 1 << 20, 16);
        assert!(input.spill.as_ref().unwrap().header_over);
        assert_eq!(whole(&input), old_reader(&one_long_field, true));

        let body_only = [&b"no header here, "[..], &[b'x'; 200], b"\r\rmore\n"].concat();
        let input = read_small(&body_only, true, 1 << 20, 16);
        assert!(input.spill.is_none(), "a body in memory");
        assert_eq!(whole(&input), old_reader(&body_only, true));
        let input = read_small(&body_only, true, 100, 16);
        assert!(!input.spill.as_ref().unwrap().header_over);
        assert_eq!(whole(&input), old_reader(&body_only, true));
    }

    /// A spill that cannot be written (a full disk: /dev/full) leaves the body in memory,
    /// whole, rather than losing the message.
    #[test]
    fn a_spill_that_cannot_be_written_leaves_the_message_in_memory() {
        let text = [&b"To: a\n\n"[..], &b"a line of the body\n".repeat(20_000)].concat();
        let mut limits = Limits {
            spill_after: 1000,
            max_header: 1 << 20,
            no_room: NoRoom::Refuse,
        };
        let mut full = || File::options().read(true).write(true).open("/dev/full");
        // A server refuses instead: the error says there is no room.
        let refused = read_with(&text[..], true, limits, &mut full).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::StorageFull);
        let mut none = || Err(io::Error::other("no temporary directory"));
        let refused = read_with(&text[..], true, limits, &mut none).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::StorageFull);
        limits.no_room = NoRoom::InMemory;
        let input = read_with(&text[..], true, limits, &mut full).unwrap();
        assert!(input.spill.is_none());
        assert_eq!(input.memory, old_reader(&text, true));
        let mut none = || Err(io::Error::other("no file today"));
        let input = read_with(&text[..], true, limits, &mut none).unwrap();
        assert_eq!(
            (input.spill.is_none(), input.memory),
            (true, old_reader(&text, true))
        );
    }

    /// Intake makes the same message of a spilled input as of the same bytes in memory:
    /// the body sent from the file as it is, or (a long line) re-encoded from it into the
    /// spare file, never into memory.
    #[test]
    fn intake_makes_the_same_message_of_a_spilled_input() {
        use crate::message::intake::{prepare, Options};
        let aliases = Default::default();
        let resolver = crate::message::address::Resolver::new(&aliases, Some("x.org"));
        let options = Options {
            extract_recipients: true,
            sender: None,
            full_name: None,
            recipients: &[],
            resolver: &resolver,
            default_sender: "me@x.org",
        };
        let header = b"From: a@x.org\nTo: b@x.org\nBcc: c@x.org\n\
                       Date: Tue, 1 Dec 2026 22:09:23 +0000\nMessage-ID: <1@x.org>\n\n";
        let lines = b"caf\xc3\xa9 line\r\n.dot\n".repeat(20);
        for (last, as_it_is) in [(&b"end\n"[..], true), (&[b'z'; 1200][..], false)] {
            let text = [&header[..], &lines, last].concat();
            let spilled = read_limited(&text, true, 16, 1 << 20, 7);
            assert!(spilled.spill.is_some());
            let memory = whole(&spilled);
            let (a, b) = (
                prepare(&spilled, &options).unwrap(),
                prepare(&memory, &options).unwrap(),
            );
            assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
            assert_eq!((a.eight_bit, &a.envelope), (b.eight_bit, &b.envelope));
            // Re-encoded as quoted-printable, the 8-bit text is 7-bit.
            assert_eq!(a.eight_bit, as_it_is);
            let spill = spilled.spill.as_ref().unwrap();
            let sent_from = match a.body {
                Body::File { file, .. } => file,
                Body::Bytes(_) => panic!("the body went into memory"),
            };
            let expected = match as_it_is {
                true => &spill.file,
                false => spill.spare().expect("no spare file for the re-encoding"),
            };
            assert!(std::ptr::eq(sent_from, expected));
        }
        // A header over the limit is refused (65), not sent cut.
        let long = [&b"To: b@x.org\nX: "[..], &[b'y'; 100], b"\n\nbody\n"].concat();
        let over = read_limited(&long, true, 16, 32, 7);
        let err = prepare(&over, &options).unwrap_err();
        assert_eq!(err.kind(), crate::error::Kind::BadInput);
    }

    /// Any mix of the pieces that matter, read with every kind of cut, is what the old
    /// reader made of it.
    #[test]
    fn any_input_reads_as_the_old_reader_read_it() {
        const PIECES: &[&[u8]] = &[
            b"From me Mon\n",
            b"Subject: s",
            b"To: a@x.org",
            b" cont",
            b"\tx",
            b"\n",
            b"\r\n",
            b"\r",
            b"\r\r\n",
            b".",
            b"..",
            b"text",
            b"\xc3\xa9",
            b"\0",
            b"bad line",
            b":",
        ];
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..3000 {
            let mut text = Vec::new();
            for _ in 0..next() % 30 {
                text.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            let ignore_dots = next().is_multiple_of(2);
            let spill_after = (next() % 40) as usize;
            let chunk = 1 + (next() % 9) as usize;
            let input = read_limited(&text, ignore_dots, spill_after, 1 << 20, chunk);
            let expected = old_reader(&text, ignore_dots);
            assert_eq!(
                whole(&input),
                expected,
                "{:?}",
                String::from_utf8_lossy(&text)
            );
            if let Some(spill) = &input.spill {
                let body = &expected[input.memory.len()..];
                assert_eq!(spill.eight_bit, !body.is_ascii());
                assert_eq!(spill.unsendable, body.contains(&0));
            }
            assert_eq!(read_message(&text[..], ignore_dots).unwrap(), expected);
        }
    }
}
