//! The envelope and a message ready to transmit: what intake makes, the queue stores and
//! the SMTP client sends.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Who the message is from and to, as given to the server in MAIL FROM and RCPT TO.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// Empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
}

/// A message's body: borrowed from memory (the input, a bounce), or read from a queue
/// file in chunks as it is sent, so a large queued message is never held whole.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    Bytes(&'a [u8]),
    File { file: &'a File, len: u64 },
}

impl<'a> Body<'a> {
    pub fn len(&self) -> usize {
        match self {
            Body::Bytes(bytes) => bytes.len(),
            Body::File { len, .. } => *len as usize,
        }
    }

    /// The whole body in memory: borrowed when it is there already, else read in (for
    /// the paths that need it whole: an HTTP upload, a held message's intake).
    pub fn whole(&self) -> io::Result<Cow<'a, [u8]>> {
        match *self {
            Body::Bytes(bytes) => Ok(Cow::Borrowed(bytes)),
            Body::File { .. } => {
                let mut whole = Vec::with_capacity(self.len());
                self.each_chunk(&mut |chunk| {
                    whole.extend_from_slice(chunk);
                    Ok(())
                })?;
                Ok(Cow::Owned(whole))
            }
        }
    }

    /// Gives `each` the body in order, in pieces of at most `CHUNK` bytes when it comes
    /// from a file (read at offsets: the file's position is not used). A file shorter
    /// than `len` is an error: the message must never go out cut.
    pub fn each_chunk(&self, each: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        match *self {
            Body::Bytes(bytes) => each(bytes),
            Body::File { file, len } => {
                let mut buf = vec![0; CHUNK.min(len as usize)];
                let mut at = 0;
                while at < len {
                    let want = buf.len().min((len - at) as usize);
                    let n = file.read_at(&mut buf[..want], at)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the queue file is shorter than it was",
                        ));
                    }
                    each(&buf[..n])?;
                    at += n as u64;
                }
                Ok(())
            }
        }
    }
}

/// Reading a file-backed body failed (the queue file went away, a disk error): the
/// message is not sent, and stays where it is.
pub fn unreadable(e: io::Error) -> crate::error::Error {
    crate::error::Error::new(crate::error::Kind::Io, "cannot read the queued message", e)
}

/// How much of a file-backed body is read at a time.
pub const CHUNK: usize = 64 << 10;

/// A message ready to transmit.
#[derive(Debug)]
pub struct Prepared<'a> {
    pub envelope: Envelope,
    /// The message is `head` followed by `body`: CRLF line ends, ending in CRLF, not
    /// dot-stuffed. `head` holds what was made in memory (the rewritten header block, or
    /// a whole bounce); `body` is borrowed as it is from the input (or the queue file), so
    /// a large message is held once.
    pub head: Vec<u8>,
    pub body: Body<'a>,
    /// Has bytes above 127: goes out with BODY=8BITMIME.
    pub eight_bit: bool,
    /// The Message-ID header's value, for the delivery log.
    pub message_id: Option<String>,
}

impl Prepared<'_> {
    /// The whole message, head and body, in one buffer (for tests: the paths that send
    /// read it as it goes).
    #[cfg(test)]
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut whole = Vec::with_capacity(self.len());
        whole.extend_from_slice(&self.head);
        self.body.each_chunk(&mut |chunk| {
            whole.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(whole)
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// What `each_chunk` gives, and the size of its largest piece.
    fn chunks(body: Body) -> io::Result<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        let mut largest = 0;
        body.each_chunk(&mut |chunk| {
            out.extend_from_slice(chunk);
            largest = largest.max(chunk.len());
            Ok(())
        })?;
        Ok((out, largest))
    }

    /// A body in a file comes out as the same bytes, a chunk at a time, whatever the
    /// file's position; a file that became shorter than its length is an error, never a
    /// message cut short.
    #[test]
    fn a_file_body_is_read_in_chunks_and_whole() {
        let text: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&text).unwrap();
        let body = Body::File {
            file: &file,
            len: text.len() as u64,
        };
        assert_eq!(body.len(), text.len());
        let (read, largest) = chunks(body).unwrap();
        assert!(read == text);
        assert_eq!(largest, CHUNK);
        assert!(body.whole().unwrap() == text);
        assert!(chunks(Body::Bytes(&text)).unwrap().0 == text);

        file.set_len(CHUNK as u64 + 1).unwrap();
        let err = chunks(body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
