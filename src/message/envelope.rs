//! The envelope and a message ready to transmit: what intake makes, the queue stores and
//! the SMTP client sends.

/// Who the message is from and to, as given to the server in MAIL FROM and RCPT TO.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// Empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
}

/// A message ready to transmit.
#[derive(Debug)]
pub struct Prepared<'a> {
    pub envelope: Envelope,
    /// The message is `head` followed by `body`: CRLF line ends, ending in CRLF, not
    /// dot-stuffed. `head` holds what was made in memory (the rewritten header block, or
    /// a whole bounce); `body` is borrowed as it is from the input (or the queue file), so
    /// a large message is held once.
    pub head: Vec<u8>,
    pub body: &'a [u8],
    /// Has bytes above 127: goes out with BODY=8BITMIME.
    pub eight_bit: bool,
    /// The Message-ID header's value, for the delivery log.
    pub message_id: Option<String>,
}

impl Prepared<'_> {
    /// The message's bytes, in order.
    pub fn pieces(&self) -> [&[u8]; 2] {
        [&self.head, self.body]
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }
}
