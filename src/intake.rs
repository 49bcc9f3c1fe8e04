//! Message intake: the bytes a caller writes on stdin become an envelope and the exact
//! bytes to transmit, following sendmail's rules (lone dot, -t, Bcc removal, added
//! Date/Message-ID/From, qualified addresses, no line over 998 octets).
//!
//! Everything here is pure and works on bytes: no UTF-8 is assumed of the message.

use std::borrow::Cow;
use std::io::{self, BufRead};

use mail_builder::headers::address::Address as BuiltAddress;
use mail_builder::headers::date::Date;
use mail_builder::headers::Header;
use mail_parser::{Encoding, MessageParser, PartType};

use crate::address::{self, Entry, Mailbox, Resolver};
use crate::error::{Error, Kind, Result};

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

/// What intake needs to know beyond the message itself.
pub struct Options<'a> {
    /// `-t`.
    pub extract_recipients: bool,
    /// `-f` as given; `Some("")` or `Some("<>")` is the null sender.
    pub sender: Option<&'a str>,
    /// `-F`.
    pub full_name: Option<&'a str>,
    /// Recipients from argv.
    pub recipients: &'a [String],
    pub resolver: &'a Resolver<'a>,
    /// The account's address: the sender when none is given or a local one can't be
    /// qualified.
    pub default_sender: &'a str,
}

/// RFC 5322's limit on a line, CRLF excluded.
const MAX_LINE: usize = 998;

/// Reads the message: to EOF with `-i`, else up to a line holding only "." (sendmail's
/// rule; a trailing CR is ignored for that test), which is not part of the message.
/// Line ends become CRLF as the lines come in (as [`crlf_lines`] makes them), so that
/// [`prepare`] can send the body from this one buffer.
pub fn read_message(mut input: impl BufRead, ignore_dots: bool) -> io::Result<Vec<u8>> {
    let mut message = Vec::new();
    loop {
        let start = message.len();
        if input.read_until(b'\n', &mut message)? == 0 {
            return Ok(message);
        }
        let end = start + trim_line_end(&message[start..]).len();
        if !ignore_dots && &message[start..end] == b"." {
            message.truncate(start);
            return Ok(message);
        }
        if memchr::memchr(b'\r', &message[start..end]).is_some() {
            let line = message[start..end].to_vec();
            message.truncate(start);
            push_crlf_line(&mut message, &line);
        } else {
            message.truncate(end);
            message.extend_from_slice(b"\r\n");
        }
    }
}

/// Turns raw input into the envelope and the bytes to send. The body is borrowed from
/// `raw` when its lines already end in CRLF (as [`read_message`] leaves them).
pub fn prepare<'a>(raw: &'a [u8], options: &Options) -> Result<Prepared<'a>> {
    let lines = crlf_lines(raw);
    let (fields, body) = split_header(&lines);
    let body_start = lines.len() - body.len();

    let sender = match options
        .sender
        .map(|s| s.trim().trim_start_matches('<').trim_end_matches('>'))
    {
        Some("") => String::new(),
        Some(given) => {
            let sender = options.resolver.sender(given, options.default_sender);
            address::check_syntax(&sender)?;
            sender
        }
        None => options.default_sender.to_string(),
    };
    let recipients = envelope_recipients(&fields, options)?;

    let mut header = Vec::with_capacity(body_start + 256);
    let mut has = HasFields::default();
    for field in &fields {
        has.note(&field.name);
        if field.is("Bcc") || field.is("Resent-Bcc") {
            continue;
        }
        match rewrite_addresses(field, options) {
            Some(rewritten) => header.extend_from_slice(&rewritten),
            None => write_folded(&mut header, &field.raw),
        }
    }
    let from_address = if sender.is_empty() {
        options.default_sender
    } else {
        &sender
    };
    if !has.from {
        let name = options.full_name.map(|n| n.replace(['\r', '\n'], " "));
        write_header(
            &mut header,
            "From",
            &BuiltAddress::new_address(name, from_address),
        );
    }
    if !has.date {
        write_header(&mut header, "Date", &Date::now());
    }
    let message_id = match fields.iter().find(|f| f.is("Message-ID")) {
        Some(field) => Some(String::from_utf8_lossy(field.value()).trim().to_string()),
        None => {
            let id = new_message_id(from_address);
            header.extend_from_slice(format!("Message-ID: {id}\r\n").as_bytes());
            Some(id)
        }
    };

    header.extend_from_slice(b"\r\n");
    let (head, body) = match lines {
        Cow::Borrowed(text) => (header, &text[body_start..]),
        Cow::Owned(text) => {
            header.extend_from_slice(&text[body_start..]);
            (header, &[][..])
        }
    };
    let (head, body) = reencode_long_lines(head, body);
    let eight_bit = !head.is_ascii() || !body.is_ascii();
    Ok(Prepared {
        envelope: Envelope { sender, recipients },
        head,
        body,
        eight_bit,
        message_id,
    })
}

/// The recipients: argv, plus with `-t` the To/Cc/Bcc headers (Resent-To/Cc/Bcc when
/// the message has Resent- headers), resolved and without duplicates.
fn envelope_recipients(fields: &[Field], options: &Options) -> Result<Vec<String>> {
    let mut given: Vec<Mailbox> = Vec::new();
    for argument in options.recipients {
        let parsed = address::parse_list(argument.as_bytes());
        if parsed.is_empty() {
            // A bare word mail-parser does not see as an address: still a recipient.
            given.push(Mailbox {
                name: None,
                address: argument.trim().to_string(),
            });
        }
        given.extend(parsed.iter().flat_map(Entry::mailboxes).cloned());
    }
    if options.extract_recipients {
        let resent = fields
            .iter()
            .any(|f| f.name.len() > 7 && f.name[..7].eq_ignore_ascii_case("Resent-"));
        let names: &[&str] = if resent {
            &["Resent-To", "Resent-Cc", "Resent-Bcc"]
        } else {
            &["To", "Cc", "Bcc"]
        };
        for field in fields.iter().filter(|f| names.iter().any(|n| f.is(n))) {
            given.extend(
                address::parse_list(field.value())
                    .iter()
                    .flat_map(Entry::mailboxes)
                    .cloned(),
            );
        }
    }
    let mut recipients: Vec<String> = Vec::new();
    for mailbox in given.iter().filter(|m| !m.address.is_empty()) {
        for resolved in options.resolver.recipient(&mailbox.address)? {
            if !recipients.iter().any(|r| r.eq_ignore_ascii_case(&resolved)) {
                recipients.push(resolved);
            }
        }
    }
    if recipients.is_empty() {
        return Err(Error::new(
            Kind::Usage,
            "no recipients",
            "none on the command line and -t found none in the headers",
        )
        .hint("name recipients as arguments, or use -t with To:, Cc: or Bcc: headers"));
    }
    Ok(recipients)
}

/// Rebuilds an address header whose addresses are not all qualified; `None` keeps it.
fn rewrite_addresses(field: &Field, options: &Options) -> Option<Vec<u8>> {
    const SENDERS: [&str; 5] = ["From", "Sender", "Reply-To", "Resent-From", "Resent-Sender"];
    const RECIPIENTS: [&str; 4] = ["To", "Cc", "Resent-To", "Resent-Cc"];
    let is_sender = SENDERS.iter().any(|n| field.is(n));
    if !is_sender && !RECIPIENTS.iter().any(|n| field.is(n)) {
        return None;
    }
    let entries = address::parse_list(field.value());
    let all_qualified = entries
        .iter()
        .flat_map(Entry::mailboxes)
        .all(|m| address::is_qualified(&m.address));
    if all_qualified {
        return None;
    }
    // A header name that resolves nowhere (no alias, no domain; not a recipient, or -t
    // would have refused it) is qualified with the sender's domain, as an MTA qualifies
    // with its own: never sent as it is.
    let sender_domain = options
        .default_sender
        .rsplit_once('@')
        .map_or("localhost", |(_, d)| d);
    let resolve = |mailbox: &Mailbox| -> Vec<BuiltAddress<'static>> {
        let addresses = match is_sender {
            true => vec![options
                .resolver
                .sender(&mailbox.address, options.default_sender)],
            false => options
                .resolver
                .recipient(&mailbox.address)
                .unwrap_or_else(|_| vec![format!("{}@{sender_domain}", mailbox.address)]),
        };
        addresses
            .into_iter()
            .enumerate()
            .map(|(i, a)| BuiltAddress::new_address(mailbox.name.clone().filter(|_| i == 0), a))
            .collect()
    };
    let mut list = Vec::new();
    for entry in &entries {
        match entry {
            Entry::Mailbox(mailbox) => list.extend(resolve(mailbox)),
            Entry::Group { name, members } => {
                let mut resolved = Vec::new();
                for member in members {
                    resolved.extend(resolve(member));
                }
                list.push(BuiltAddress::new_group(Some(name.clone()), resolved));
            }
        }
    }
    let mut out = Vec::new();
    write_header(&mut out, &field.name, &BuiltAddress::new_list(list));
    Some(out)
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &impl Header) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    value.write_header(out, name.len() + 2);
}

/// `<time.pid.random@domain>`, the domain taken from the sender as most MUAs do.
fn new_message_id(sender: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // RandomState is seeded from the OS per process: enough to keep two ids apart.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let domain = sender.rsplit_once('@').map_or("localhost", |(_, d)| d);
    format!(
        "<{}.{:09}.{}.{random:016x}@{domain}>",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id()
    )
}

/// One header field: its name and its raw lines (continuations included, CRLF ends).
struct Field {
    name: String,
    raw: Vec<u8>,
}

impl Field {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The value after "Name:", continuation lines included.
    fn value(&self) -> &[u8] {
        &self.raw[self.name.len() + 1..]
    }
}

#[derive(Default)]
struct HasFields {
    from: bool,
    date: bool,
}

impl HasFields {
    fn note(&mut self, name: &str) {
        self.from |= name.eq_ignore_ascii_case("From");
        self.date |= name.eq_ignore_ascii_case("Date");
    }
}

/// The input with every line ending in exactly one CRLF (LF, CRLF and stray CRs before
/// the LF all become CRLF), a missing final line end added; borrowed when it already is so.
fn crlf_lines(raw: &[u8]) -> Cow<'_, [u8]> {
    let normal = |line: &[u8]| {
        line.ends_with(b"\r\n") && memchr::memchr(b'\r', &line[..line.len() - 2]).is_none()
    };
    if split_lines(raw).all(normal) {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    for line in split_lines(raw) {
        push_crlf_line(&mut out, trim_line_end(line));
    }
    Cow::Owned(out)
}

/// Appends a line without its line end, then CRLF. A CR alone inside it is a line break
/// too (old Mac text): servers refuse bare CRs since the SMTP smuggling fixes.
fn push_crlf_line(out: &mut Vec<u8>, line: &[u8]) {
    for piece in line.split(|&b| b == b'\r') {
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    if end > 0 && line[end - 1] == b'\n' {
        end -= 1;
    }
    while end > 0 && line[end - 1] == b'\r' {
        end -= 1;
    }
    &line[..end]
}

/// Splits CRLF text into header fields and body. Input whose first line is not a header
/// field is all body; a header block that runs into a non-field line ends there (the
/// blank line is added on output). A leading mbox "From " line is dropped.
fn split_header(text: &[u8]) -> (Vec<Field>, &[u8]) {
    let mut fields: Vec<Field> = Vec::new();
    let mut offset = 0;
    if text.starts_with(b"From ") {
        offset = split_lines(text).next().map_or(0, <[u8]>::len);
    }
    for line in split_lines(&text[offset..]) {
        let content = without_crlf(line);
        if content.is_empty() {
            return (fields, &text[offset + line.len()..]);
        }
        let continues = matches!(content[0], b' ' | b'\t');
        match (continues, fields.last_mut(), field_name(content)) {
            (true, Some(field), _) => field.raw.extend_from_slice(line),
            (false, _, Some(name)) => fields.push(Field {
                name: name.to_string(),
                raw: line.to_vec(),
            }),
            _ => break,
        }
        offset += line.len();
    }
    (fields, &text[offset..])
}

/// The lines of CRLF text, without their CRLF.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    split_lines(text).map(without_crlf)
}

fn without_crlf(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r\n").unwrap_or(line)
}

/// The name of a header field line: printable ASCII up to a colon, no spaces.
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let valid = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b));
    valid.then(|| std::str::from_utf8(name).ok()).flatten()
}

fn long_line(text: &[u8]) -> bool {
    split_lines(text).any(|line| line.strip_suffix(b"\n").unwrap_or(line).len() > MAX_LINE + 1)
}

/// The lines of `text`, each with its LF (the last may have none), as `split_inclusive`
/// would give them, but found with memchr: byte by byte, the passes over a 20 MiB body
/// cost more than all the rest of intake.
fn split_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |at| at + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        (!line.is_empty()).then_some(line)
    })
}

/// Writes a header field, refolding it at spaces when a line is too long. A field with
/// no space to fold at is left whole: cutting it would change its meaning.
fn write_folded(out: &mut Vec<u8>, raw: &[u8]) {
    if !long_line(raw) {
        out.extend_from_slice(raw);
        return;
    }
    let unfolded: Vec<u8> = lines(raw).collect::<Vec<_>>().concat();
    let mut line_len = 0;
    for (i, word) in unfolded.split(|&b| b == b' ').enumerate() {
        if i > 0 {
            if line_len + 1 + word.len() > 78 && line_len > 0 {
                out.extend_from_slice(b"\r\n ");
                line_len = 1;
            } else {
                out.push(b' ');
                line_len += 1;
            }
        }
        out.extend_from_slice(word);
        line_len += word.len();
    }
    out.extend_from_slice(b"\r\n");
}

/// Re-encodes as quoted-printable every MIME leaf part that has a line over 998 octets
/// and no transfer encoding of its own; a reader decodes it back to the same bytes, so
/// nothing is cut. Parts already in base64 or quoted-printable cannot have such lines.
/// The message is `head` then `body`; when nothing needs re-encoding both come back as
/// they are, else the whole new message comes back as the head.
fn reencode_long_lines(head: Vec<u8>, body: &[u8]) -> (Vec<u8>, &[u8]) {
    if !long_line(&head) && !long_line(body) {
        return (head, body);
    }
    let message = [&head[..], body].concat();
    drop(head);
    let Some(parsed) = MessageParser::new().parse(&message) else {
        return (message, &[]);
    };
    let span = |from: u32, to: u32| from as usize..to as usize;
    let mut edits: Vec<_> = parsed
        .parts
        .iter()
        .filter(|part| !matches!(part.body, PartType::Multipart(_) | PartType::Message(_)))
        .filter(|part| part.encoding == Encoding::None)
        .map(|part| {
            (
                span(part.offset_header, part.offset_body),
                span(part.offset_body, part.offset_end),
            )
        })
        .filter(|(_, body)| long_line(&message[body.clone()]))
        .collect();
    drop(parsed);
    edits.sort_by_key(|(header, _)| header.start);
    // One pass from the start: each part's header and body replaced, the rest copied once.
    let mut out = Vec::with_capacity(message.len() + message.len() / 8);
    let mut copied = 0;
    for (header, body) in edits {
        out.extend_from_slice(&message[copied..header.start]);
        out.extend(declare_quoted_printable(
            &message[header.clone()],
            header.start == 0,
        ));
        out.extend(quoted_printable(&message[body.clone()]));
        copied = body.end;
    }
    out.extend_from_slice(&message[copied..]);
    (out, &[])
}

/// A part's header block (blank line included) saying quoted-printable; the message's
/// own header also gets MIME-Version when it lacks one.
fn declare_quoted_printable(header: &[u8], top_level: bool) -> Vec<u8> {
    let (fields, _) = split_header(header);
    let mut out = Vec::with_capacity(header.len() + 64);
    for field in fields.iter().filter(|f| !f.is("Content-Transfer-Encoding")) {
        out.extend_from_slice(&field.raw);
    }
    if top_level && !fields.iter().any(|f| f.is("MIME-Version")) {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    out.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    out
}

/// Quoted-printable (RFC 2045 6.7) of CRLF text: line breaks stay hard breaks, long
/// lines get soft breaks before 76 characters.
fn quoted_printable(text: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(text.len() + text.len() / 8);
    for piece in split_lines(text) {
        let line = without_crlf(piece);
        let mut column = 0;
        for (i, &byte) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let literal =
                matches!(byte, 33..=60 | 62..=126) || (matches!(byte, b' ' | b'\t') && !last);
            let width = if literal { 1 } else { 3 };
            if column + width > 75 {
                out.extend_from_slice(b"=\r\n");
                column = 0;
            }
            if literal {
                out.push(byte);
            } else {
                out.extend_from_slice(&[
                    b'=',
                    HEX[(byte >> 4) as usize],
                    HEX[(byte & 15) as usize],
                ]);
            }
            column += width;
        }
        if line.len() < piece.len() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn aliases() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([("root".to_string(), vec!["admin@example.com".to_string()])])
    }

    fn prep<'a>(
        raw: &'a [u8],
        t: bool,
        recipients: &[&str],
        sender: Option<&str>,
    ) -> Result<Prepared<'a>> {
        let aliases = aliases();
        let resolver = Resolver::new(&aliases, Some("example.com"));
        let recipients: Vec<String> = recipients.iter().map(|s| s.to_string()).collect();
        prepare(
            raw,
            &Options {
                extract_recipients: t,
                sender,
                full_name: Some("Cron Daemon"),
                recipients: &recipients,
                resolver: &resolver,
                default_sender: "me@example.org",
            },
        )
    }

    fn text_of(p: &Prepared) -> Vec<u8> {
        p.pieces().concat()
    }

    fn header_of(p: &Prepared) -> String {
        let text = String::from_utf8_lossy(&text_of(p)).into_owned();
        text.split("\r\n\r\n").next().unwrap().to_string()
    }

    fn body_of(p: &Prepared) -> Vec<u8> {
        let text = text_of(p);
        let at = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        text[at + 4..].to_vec()
    }

    #[test]
    fn lone_dot_ends_input_without_i() {
        let input = b"Subject: x\n\nline\n.\nafter\n";
        assert_eq!(
            read_message(&input[..], false).unwrap(),
            b"Subject: x\r\n\r\nline\r\n"
        );
        assert_eq!(read_message(&b"a\r\n.\r\nb"[..], false).unwrap(), b"a\r\n");
        assert_eq!(
            read_message(&input[..], true).unwrap(),
            b"Subject: x\r\n\r\nline\r\n.\r\nafter\r\n"
        );
        assert_eq!(
            read_message(&b"..\nx\n"[..], false).unwrap(),
            b"..\r\nx\r\n"
        );
    }

    #[test]
    fn split_lines_is_split_inclusive_on_lf() {
        for text in [
            &b""[..],
            b"\n",
            b"a",
            b"a\n",
            b"a\r\nb",
            b"\n\nx\r\n\n",
            b"ab\ncd\n",
        ] {
            let ours: Vec<&[u8]> = split_lines(text).collect();
            let std: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
            assert_eq!(ours, std, "{text:?}");
        }
        assert!(long_line(&[b'x'; MAX_LINE + 2]));
        assert!(!long_line(&[&[b'x'; MAX_LINE][..], b"\r\n"].concat()));
    }

    #[test]
    fn line_ends_become_crlf_never_cr_cr_lf() {
        let raw = b"a\nb\r\nc\r\r\nd";
        assert_eq!(&*crlf_lines(raw), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(&*crlf_lines(b""), b"");
        assert_eq!(&*crlf_lines(b"mac\rtext\n"), b"mac\r\ntext\r\n");
        assert_eq!(
            read_message(&b"mac\rtext\n"[..], true).unwrap(),
            b"mac\r\ntext\r\n"
        );
        // What stdin gives prepare() is already so: its body is sent from that buffer.
        let read = read_message(&raw[..], true).unwrap();
        assert_eq!(read, &*crlf_lines(raw));
        assert!(matches!(crlf_lines(&read), Cow::Borrowed(_)));
        let p = prep(&read, false, &["a@x.org"], None).unwrap();
        assert_eq!(p.body, read.as_slice());
    }

    #[test]
    fn bcc_removed_recipients_from_headers_and_argv() {
        let p = prep(
            b"To: a@x.org\nCc: b@x.org\nBcc: c@x.org\nSubject: s\n\nbody\n",
            true,
            &["d@x.org"],
            None,
        )
        .unwrap();
        assert_eq!(
            p.envelope.recipients,
            ["d@x.org", "a@x.org", "b@x.org", "c@x.org"]
        );
        assert!(!header_of(&p).to_ascii_lowercase().contains("bcc"));
        assert_eq!(body_of(&p), b"body\r\n");
    }

    #[test]
    fn resent_headers_take_over_with_t() {
        let raw = b"To: old@x.org\nResent-To: new@x.org\nResent-Bcc: hidden@x.org\n\nb\n";
        let p = prep(raw, true, &[], None).unwrap();
        assert_eq!(p.envelope.recipients, ["new@x.org", "hidden@x.org"]);
        assert!(!header_of(&p).contains("hidden"));
    }

    #[test]
    fn without_t_headers_are_not_recipients() {
        let p = prep(b"To: a@x.org\n\nb\n", false, &["z@x.org"], None).unwrap();
        assert_eq!(p.envelope.recipients, ["z@x.org"]);
        assert_eq!(
            prep(b"To: a@x.org\n\nb\n", false, &[], None)
                .unwrap_err()
                .exit_code(),
            64
        );
    }

    #[test]
    fn missing_date_message_id_and_from_are_added_with_encoded_name() {
        let p = prep(b"Subject: hi\n\nbody\n", false, &["root"], Some("root")).unwrap();
        let header = header_of(&p);
        assert!(
            header.contains("From: \"Cron Daemon\" <root@example.com>"),
            "{header}"
        );
        assert!(header.contains("\r\nDate: "), "{header}");
        assert!(header.contains("\r\nMessage-ID: <"), "{header}");
        assert_eq!(p.envelope.sender, "root@example.com");
        assert_eq!(p.envelope.recipients, ["admin@example.com"]);
    }

    #[test]
    fn full_name_cannot_inject_a_header() {
        let aliases = aliases();
        let resolver = Resolver::new(&aliases, None);
        let p = prepare(
            b"body\n",
            &Options {
                extract_recipients: false,
                sender: None,
                full_name: Some("Evil\r\nBcc: victim@x.org"),
                recipients: &["a@x.org".to_string()],
                resolver: &resolver,
                default_sender: "me@example.org",
            },
        )
        .unwrap();
        let header = header_of(&p);
        assert!(!header.lines().any(|l| l.starts_with("Bcc")), "{header}");
    }

    #[test]
    fn body_only_input_gets_a_header_block() {
        let p = prep(b"just a body line\nsecond\n", false, &["a@x.org"], None).unwrap();
        assert_eq!(body_of(&p), b"just a body line\r\nsecond\r\n");
        assert!(header_of(&p).starts_with("From: "));
    }

    #[test]
    fn empty_input_is_an_empty_body() {
        let p = prep(b"", false, &["a@x.org"], None).unwrap();
        assert_eq!(body_of(&p), b"");
        assert!(text_of(&p).ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn unqualified_header_addresses_are_qualified() {
        let raw =
            b"From: \"(Cron Daemon)\" <root>\nTo: root, bob\nCc: team: carol;\nSubject: x\n\nb\n";
        let p = prep(raw, true, &[], Some("root")).unwrap();
        let header = header_of(&p);
        assert!(
            header.contains("From: \"(Cron Daemon)\" <root@example.com>"),
            "{header}"
        );
        assert!(
            header.contains("To: <admin@example.com>, <bob@example.com>"),
            "{header}"
        );
        assert!(
            header.contains("Cc: \"team\": <carol@example.com>;"),
            "{header}"
        );
        assert_eq!(
            p.envelope.recipients,
            ["admin@example.com", "bob@example.com", "carol@example.com"]
        );
    }

    /// Postfix's rule: aliases are for recipients; a sender name is only qualified.
    #[test]
    fn senders_are_qualified_not_aliased() {
        let raw = b"From: root\nSender: root\nReply-To: Ops <root>\nTo: root\n\nb\n";
        let p = prep(raw, true, &[], Some("root")).unwrap();
        let header = header_of(&p);
        assert!(header.contains("From: <root@example.com>\r\n"), "{header}");
        assert!(
            header.contains("Sender: <root@example.com>\r\n"),
            "{header}"
        );
        assert!(
            header.contains("Reply-To: \"Ops\" <root@example.com>\r\n"),
            "{header}"
        );
        assert!(header.contains("To: <admin@example.com>\r\n"), "{header}");
        assert_eq!(p.envelope.sender, "root@example.com");
        assert_eq!(p.envelope.recipients, ["admin@example.com"]);
    }

    #[test]
    fn a_header_name_that_resolves_nowhere_gets_the_sender_domain() {
        let aliases = aliases();
        let resolver = Resolver::new(&aliases, None);
        let p = prepare(
            b"To: bob, a@x.org\nSubject: s\n\nb\n",
            &Options {
                extract_recipients: false,
                sender: None,
                full_name: None,
                recipients: &["a@x.org".to_string()],
                resolver: &resolver,
                default_sender: "me@example.org",
            },
        )
        .unwrap();
        let header = header_of(&p);
        assert!(
            header.contains("To: <bob@example.org>, <a@x.org>"),
            "{header}"
        );
    }

    #[test]
    fn qualified_headers_are_kept_byte_for_byte() {
        let raw = b"From: A <a@x.org>\nTo: b@x.org (Bob)\nSubject: =?UTF-8?Q?h=C3=A9?=\n\nb\n";
        let p = prep(raw, true, &[], None).unwrap();
        assert!(header_of(&p).starts_with(
            "From: A <a@x.org>\r\nTo: b@x.org (Bob)\r\nSubject: =?UTF-8?Q?h=C3=A9?=\r\n"
        ));
    }

    #[test]
    fn eight_bit_bodies_are_flagged_and_kept() {
        let raw = "Subject: x\n\nGrüße \u{2713}\n".as_bytes();
        let p = prep(raw, false, &["a@x.org"], None).unwrap();
        assert!(p.eight_bit);
        assert_eq!(body_of(&p), "Grüße \u{2713}\r\n".as_bytes());
        let latin1 = prep(b"Subject: x\n\n\xe9t\xe9\n", false, &["a@x.org"], None).unwrap();
        assert_eq!(body_of(&latin1), b"\xe9t\xe9\r\n");
        assert!(!prep(b"x\n", false, &["a@x.org"], None).unwrap().eight_bit);
    }

    #[test]
    fn long_body_lines_are_reencoded_without_loss() {
        let long = "x".repeat(3000) + "=y\u{e9}";
        let raw = format!("Subject: s\nContent-Transfer-Encoding: 8bit\n\n{long}\nshort\n");
        let p = prep(raw.as_bytes(), false, &["a@x.org"], None).unwrap();
        let header = header_of(&p);
        assert!(
            header.contains("Content-Transfer-Encoding: quoted-printable"),
            "{header}"
        );
        assert!(!header.contains("8bit"), "{header}");
        assert!(header.contains("MIME-Version: 1.0"));
        assert!(text_of(&p).split(|&b| b == b'\n').all(|l| l.len() <= 78));
        assert_eq!(
            decode_qp(&body_of(&p)),
            format!("{long}\r\nshort\r\n").as_bytes()
        );
    }

    #[test]
    fn long_lines_in_a_multipart_part_are_reencoded_there_only() {
        let long = "y".repeat(2000);
        let raw = format!(
            "Subject: s\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n--B\nContent-Type: text/plain\n\nshort\n--B\nContent-Type: text/csv\nContent-Transfer-Encoding: 8bit\n\n{long}\nend\n--B--\n"
        );
        let p = prep(raw.as_bytes(), false, &["a@x.org"], None).unwrap();
        let text = String::from_utf8(text_of(&p)).unwrap();
        assert!(
            text_of(&p).split(|&b| b == b'\n').all(|l| l.len() <= 78),
            "{text}"
        );
        assert!(
            text.contains("--B\r\nContent-Type: text/plain\r\n\r\nshort\r\n--B\r\n"),
            "{text}"
        );
        let part = text.split("Content-Type: text/csv\r\n").nth(1).unwrap();
        assert!(
            part.starts_with("Content-Transfer-Encoding: quoted-printable\r\n\r\n"),
            "{text}"
        );
        let encoded = part
            .split("\r\n\r\n")
            .nth(1)
            .unwrap()
            .split("\r\n--B--")
            .next()
            .unwrap();
        assert_eq!(
            decode_qp(encoded.as_bytes()),
            format!("{long}\r\nend").as_bytes()
        );
        assert_eq!(text.matches("MIME-Version").count(), 1, "{text}");
    }

    #[test]
    fn long_header_lines_are_folded_at_spaces() {
        let subject = vec!["word"; 400].join(" ");
        let raw = format!("Subject: {subject}\n\nb\n");
        let p = prep(raw.as_bytes(), false, &["a@x.org"], None).unwrap();
        assert!(text_of(&p)
            .split(|&b| b == b'\n')
            .all(|l| l.len() <= MAX_LINE + 1));
        let unfolded = header_of(&p).replace("\r\n ", " ");
        assert!(unfolded.contains(&format!("Subject: {subject}\r\n")));
    }

    #[test]
    fn mbox_from_line_is_dropped() {
        let p = prep(
            b"From someone Mon Jan  1 00:00:00 2024\nSubject: s\n\nb\n",
            false,
            &["a@x.org"],
            None,
        )
        .unwrap();
        assert!(!String::from_utf8_lossy(&text_of(&p)).contains("From someone"));
    }

    #[test]
    fn null_sender() {
        assert_eq!(
            prep(b"x\n", false, &["a@x.org"], Some("<>"))
                .unwrap()
                .envelope
                .sender,
            ""
        );
        assert_eq!(
            prep(b"x\n", false, &["a@x.org"], Some(""))
                .unwrap()
                .envelope
                .sender,
            ""
        );
    }

    #[test]
    fn bad_addresses_are_errors_not_panics() {
        assert_eq!(
            prep(b"x\n", false, &["a b@x.org"], None)
                .unwrap_err()
                .exit_code(),
            65
        );
        assert_eq!(
            prep(b"x\n", false, &["a@x.org"], Some("bad sender@x"))
                .unwrap_err()
                .exit_code(),
            65
        );
        for junk in [
            &b"\xff\xfe:\n\n"[..],
            b":\n",
            b"To: <<<\n\n",
            b"\r\r\r",
            b"To:\n \n\n",
        ] {
            let _ = prep(junk, true, &["a@x.org"], None);
        }
    }

    /// Pseudo-random messages made of the pieces that trip parsers (folding, colons,
    /// groups, encoded words, bare CRs, 8-bit bytes, long runs): intake returns a message
    /// or an error, never panics, and what it returns has only CRLF line ends (no bare CR
    /// or LF) and ends in one. (Line length is not claimed: a long line in a multipart
    /// preamble is not re-encoded.)
    #[test]
    fn no_input_makes_intake_panic() {
        const PIECES: &[&[u8]] = &[
            b"To: ",
            b"Cc: ",
            b"Bcc: ",
            b"From: ",
            b"Resent-To: ",
            b"Subject: ",
            b"\n",
            b"\r\n",
            b"\r",
            b" ",
            b"\t",
            b":",
            b";",
            b",",
            b"<",
            b">",
            b"\"",
            b"(",
            b")",
            b"@",
            b"root",
            b"a@x.org",
            b"g: a@x.org, b;",
            b"=?UTF-8?Q?=C3=A9?=",
            b"=?",
            b"\xff\xfe",
            b"\xc3\xa9",
            b".",
            b"\n.\n",
            b"Content-Type: multipart/mixed; boundary=B\n",
            b"--B\n",
            b"--B--\n",
            b"Content-Transfer-Encoding: 8bit\n",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..next() % 40 {
                let piece = PIECES[(next() % PIECES.len() as u64) as usize];
                let repeat = if next() % 50 == 0 { 1200 } else { 1 };
                for _ in 0..repeat {
                    input.extend_from_slice(piece);
                }
            }
            if let Ok(p) = prep(&input, next() % 2 == 0, &["a@x.org"], None) {
                let data = p.pieces().concat();
                let shown = String::from_utf8_lossy(&input);
                assert!(data.ends_with(b"\r\n"), "{shown:?}");
                let bare_cr = data.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n');
                let bare_lf = data.windows(2).any(|w| w[0] != b'\r' && w[1] == b'\n');
                assert!(!bare_cr && !bare_lf, "{shown:?}");
            }
        }
    }

    fn decode_qp(text: &[u8]) -> Vec<u8> {
        let joined: Vec<u8> = String::from_utf8_lossy(text)
            .replace("=\r\n", "")
            .into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < joined.len() {
            if joined[i] == b'=' {
                out.push(
                    u8::from_str_radix(std::str::from_utf8(&joined[i + 1..i + 3]).unwrap(), 16)
                        .unwrap(),
                );
                i += 3;
            } else {
                out.push(joined[i]);
                i += 1;
            }
        }
        out
    }
}
