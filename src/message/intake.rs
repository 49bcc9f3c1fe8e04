//! Message intake: the bytes a caller writes on stdin become an envelope and the exact
//! bytes to transmit, following sendmail's rules (lone dot, -t, Bcc removal, added
//! Date/Message-ID/From, qualified addresses, no line over 998 octets) and what strict
//! servers such as Gmail require (one From with an address, one To, Cc and Reply-To).
//!
//! Everything here is pure and works on bytes: no UTF-8 is assumed of the message.
//!
//! Nothing leaves with a line over 998 octets or a NUL byte (RFC 5322 2.1.1 and 2.3;
//! strict servers refuse both). A header field that already fits is kept byte for byte;
//! one that does not is unfolded and folded again at its whitespace, and then by class:
//!
//! - unstructured fields (Subject, Comments, X-* and any field not known to be structured):
//!   a run too long for a line becomes RFC 2047 encoded-words (Q, UTF-8, or `unknown-8bit`
//!   when the bytes are not UTF-8) on folded lines, which a reader decodes to the same text;
//! - address lists (From, To, Cc, Reply-To, Sender, Resent-*, ...): also folded after a
//!   comma or before a `<`, between addresses;
//! - message-id lists (Message-ID, References, In-Reply-To): also folded between ids;
//! - other structured fields (Date, Received, Content-*, DKIM-Signature, List-*, ...):
//!   whitespace only, since nothing else is known to keep their meaning.
//!
//! What still does not fit (one address, id or name over 998 octets, a field name that
//! long) is refused with exit 65 naming the field: never cut, never sent too long. A NUL
//! in a header is refused (65) naming the field.
//!
//! In the body, a MIME leaf part with a long line or a NUL and no transfer encoding is
//! re-encoded as quoted-printable (a NUL becomes `=00`); a base64 or quoted-printable part
//! with long lines gets line breaks its decoder skips; a part header is fitted as above.
//! What is left (a NUL or long line in a multipart preamble or epilogue, in an attached
//! message/rfc822, or in a base64/quoted-printable part) is refused with exit 65.

use std::borrow::Cow;

use mail_builder::headers::address::Address as BuiltAddress;
use mail_builder::headers::date::Date;
use mail_builder::headers::Header;
use mail_parser::Encoding;
#[cfg(test)]
use mail_parser::{MessageParser, PartType};

use crate::error::{Error, Kind, Result};
use crate::message::address::{self, Entry, Mailbox, Resolver};
use crate::message::envelope::{Body, Envelope, Prepared};
use crate::message::input::{self, Raw, Spill};
use crate::message::reencode::{self, Outcome};

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
pub(super) const MAX_LINE: usize = 998;

/// Turns raw input into the envelope and the bytes to send. The body is borrowed from
/// `raw` when its lines already end in CRLF (as [`input::read`] leaves them). A message
/// spilled to a file (past [`input::SPILL_AFTER`]) has its header block in memory, made
/// as any other, and its body goes out from the file as it is, never read into memory,
/// unless it must be re-encoded ([`reencode_spilled`]).
pub fn prepare<'a>(raw: impl Into<Raw<'a>>, options: &Options) -> Result<Prepared<'a>> {
    let raw = raw.into();
    match raw.spill() {
        Some(spill) if spill.header_over() => Err(Error::new(
            Kind::BadInput,
            "the message's header block is too large",
            format!(
                "it is over {} MiB, the most a header is allowed here",
                input::MAX_HEADER >> 20
            ),
        )
        .hint("put the data in the body (as an attachment, for instance)")),
        spill => prepare_with(raw.memory(), spill, options),
    }
}

/// [`prepare`] of `raw`, followed by the body in `spill` when there is one.
fn prepare_with<'a>(
    raw: &'a [u8],
    spill: Option<&'a Spill>,
    options: &Options,
) -> Result<Prepared<'a>> {
    let lines = crlf_lines(raw);
    let (fields, body) = split_header(without_mbox_line(&lines));
    let body_start = lines.len() - body.len();
    if let Some(field) = fields.iter().find(|f| memchr::memchr(0, &f.raw).is_some()) {
        return Err(Error::new(
            Kind::BadInput,
            format!("header `{}` holds a NUL byte", field.name),
            "a header cannot carry a NUL (RFC 5322), nor can one be encoded there",
        )
        .hint("remove the NUL byte from what the program writes"));
    }

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
    let fields = one_of_each(fields);

    let mut header = Vec::with_capacity(body_start + 256);
    let mut has = HasFields::default();
    for field in &fields {
        // A From with no address in it is not RFC 5322's (Gmail refuses the message):
        // it goes, and the From made from the envelope sender takes its place.
        let no_address = || {
            address::parse_list(field.value())
                .iter()
                .all(|entry| entry.mailboxes().is_empty())
        };
        if field.is("Bcc") || field.is("Resent-Bcc") || (field.is("From") && no_address()) {
            continue;
        }
        has.note(&field.name);
        match rewrite_addresses(field, options) {
            Some(rewritten) => header.extend_from_slice(&rewritten),
            None => write_fitted(&mut header, field)?,
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
    let (head, body, eight_bit) = match spill {
        None if !unsendable(&head) && !unsendable(body) => {
            let eight_bit = !head.is_ascii() || !body.is_ascii();
            (head, Body::Bytes(body), eight_bit)
        }
        None => {
            let mut new_body = Vec::new();
            match reencode::reencode(&head, body, &mut new_body)? {
                Outcome::Unchanged { eight_bit } => (head, Body::Bytes(body), eight_bit),
                Outcome::Rewritten {
                    mut head,
                    eight_bit,
                    ..
                } => {
                    head.extend_from_slice(&new_body);
                    (head, Body::Bytes(&[]), eight_bit)
                }
            }
        }
        Some(spill) => {
            // What of the body is in memory (the line that ended the header block) goes
            // with the head; the file follows it as it is.
            let mut head = head;
            head.extend_from_slice(body);
            match spill.unsendable() || unsendable(&head) {
                true => reencode_spilled(head, spill)?,
                false => {
                    let eight_bit = !head.is_ascii() || spill.eight_bit();
                    (head, spill.body(), eight_bit)
                }
            }
        }
    };
    Ok(Prepared {
        envelope: Envelope { sender, recipients },
        head,
        body,
        eight_bit,
        message_id,
    })
}

/// A spilled body with a NUL or a line over 998 octets: re-encoded as it is read, into
/// the spare file the reader made for it, so even this message is never held whole.
/// Returns the head, the body and whether it has 8-bit bytes. Without a spare file (none
/// could be made) the re-encoded body is held in memory: the one case that is not
/// constant-memory.
fn reencode_spilled<'a>(head: Vec<u8>, spill: &'a Spill) -> Result<(Vec<u8>, Body<'a>, bool)> {
    let Body::File { file, len } = spill.body() else {
        unreachable!("a spill's body is its file")
    };
    let mut in_memory = Vec::new();
    let outcome = match spill.spare() {
        Some(mut spare) => reencode::reencode_file(&head, file, len, &mut spare),
        None => reencode::reencode_file(&head, file, len, &mut in_memory),
    }?;
    Ok(match outcome {
        Outcome::Unchanged { eight_bit } => (head, spill.body(), eight_bit),
        Outcome::Rewritten {
            head,
            body_len,
            eight_bit,
        } => match spill.spare() {
            Some(spare) => (
                head,
                Body::File {
                    file: spare,
                    len: body_len,
                },
                eight_bit,
            ),
            None => {
                let mut head = head;
                head.extend_from_slice(&in_memory);
                (head, Body::Bytes(&[]), eight_bit)
            }
        },
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
    // Lowercased, so that thousands of recipients are not compared with each other.
    let mut seen = std::collections::HashSet::new();
    for mailbox in given.iter().filter(|m| !m.address.is_empty()) {
        for resolved in options.resolver.recipient(&mailbox.address)? {
            if seen.insert(resolved.to_ascii_lowercase()) {
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

/// The fields RFC 5322 (3.6) allows once, made once: Gmail refuses a message with two
/// ("There are multiple Subject headers", "duplicate headers"), as PHP's mail() makes when
/// its caller also passes a To or a Subject header. A repeated To, Cc or Reply-To is
/// joined into the first (a list joins a list); a repeated From, Sender, Subject, Date,
/// Message-ID, In-Reply-To or References cannot be joined, so the first stays and each
/// repeat is kept as `X-Original-NAME`. Nothing is lost either way.
fn one_of_each(fields: Vec<Field>) -> Vec<Field> {
    const LISTS: [&str; 3] = ["To", "Cc", "Reply-To"];
    const SINGLE: [&str; 7] = [
        "From",
        "Sender",
        "Subject",
        "Date",
        "Message-ID",
        "In-Reply-To",
        "References",
    ];
    let repeated = |name: &str| fields.iter().filter(|f| f.is(name)).count() > 1;
    let merge: Vec<&str> = LISTS.into_iter().filter(|n| repeated(n)).collect();
    let single: Vec<&str> = SINGLE.into_iter().filter(|n| repeated(n)).collect();
    if merge.is_empty() && single.is_empty() {
        return fields;
    }
    let mut out: Vec<Field> = Vec::with_capacity(fields.len());
    for mut field in fields {
        if single.iter().any(|n| field.is(n)) && out.iter().any(|f| f.is(&field.name)) {
            field.raw.splice(..0, *b"X-Original-");
            field.name.insert_str(0, "X-Original-");
            out.push(field);
            continue;
        }
        let Some(name) = merge.iter().find(|n| field.is(n)) else {
            out.push(field);
            continue;
        };
        let value = field.value().strip_suffix(b"\r\n").unwrap_or(field.value());
        if value.iter().all(|&b| is_wsp(b) || b == b'\r' || b == b'\n') {
            continue;
        }
        match out.iter_mut().find(|f| f.is(name)) {
            Some(first) => {
                first.raw.truncate(first.raw.len() - 2);
                first.raw.push(b',');
                first.raw.extend_from_slice(value);
                first.raw.extend_from_slice(b"\r\n");
            }
            None => out.push(field),
        }
    }
    out
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
pub(super) struct Field {
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
    let mut header = HeaderLines::default();
    let old_mac = memchr::memchr(b'\n', raw).is_none();
    for line in split_lines(raw) {
        let line = trim_line_end(line);
        let in_header = header.holds(line);
        push_crlf_line(&mut out, line, in_header && !old_mac);
    }
    Cow::Owned(out)
}

/// Follows the lines of a message (without their line ends) to tell those of its header
/// block, as [`split_header`] will read it, from the body's.
pub(super) struct HeaderLines {
    first: bool,
    in_header: bool,
    fields: bool,
}

impl Default for HeaderLines {
    fn default() -> Self {
        HeaderLines {
            first: true,
            in_header: true,
            fields: false,
        }
    }
}

impl HeaderLines {
    /// Whether `line`, the next one, belongs to the header block.
    pub(super) fn holds(&mut self, line: &[u8]) -> bool {
        let mbox = self.first && line.starts_with(b"From ");
        self.first = false;
        if !self.in_header || mbox {
            return self.in_header;
        }
        let field = field_name(line).is_some();
        self.in_header = match line.first() {
            None => false,
            Some(&b) if is_wsp(b) => self.fields,
            Some(_) => field,
        };
        self.fields |= field;
        self.in_header
    }

    /// Whether a line that starts with `prefix` and goes on past it could belong to the
    /// header block; `false` only when nothing after the prefix could make it a header
    /// line (so a reader need not hold the rest of it to know).
    pub(super) fn may_hold(&self, prefix: &[u8]) -> bool {
        if !self.in_header || (self.first && prefix.starts_with(b"From ")) {
            return self.in_header;
        }
        match prefix.first() {
            None => true,
            Some(&b) if is_wsp(b) => self.fields,
            Some(_) => match memchr::memchr(b':', prefix) {
                Some(_) => field_name(prefix).is_some(),
                None => prefix.iter().all(|b| (33..=126).contains(b)),
            },
        }
    }
}

/// Appends a line without its line end, then CRLF. Servers refuse a CR alone since the
/// SMTP smuggling fixes: in the body it is a line break too (old Mac text); in a header
/// line it becomes a space, since breaking the line there would end the header block
/// early and send the fields after it (a `Bcc:`) as body text.
pub(super) fn push_crlf_line(out: &mut Vec<u8>, line: &[u8], in_header: bool) {
    if in_header {
        out.extend(line.iter().map(|&b| if b == b'\r' { b' ' } else { b }));
        out.extend_from_slice(b"\r\n");
        return;
    }
    for piece in line.split(|&b| b == b'\r') {
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
}

pub(super) fn trim_line_end(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    if end > 0 && line[end - 1] == b'\n' {
        end -= 1;
    }
    while end > 0 && line[end - 1] == b'\r' {
        end -= 1;
    }
    &line[..end]
}

/// The message without a leading mbox "From " line, which is dropped.
fn without_mbox_line(text: &[u8]) -> &[u8] {
    match text.starts_with(b"From ") {
        true => &text[split_lines(text).next().map_or(0, <[u8]>::len)..],
        false => text,
    }
}

/// Splits CRLF text into header fields and body. Input whose first line is not a header
/// field is all body; a header block that runs into a non-field line ends there (the
/// blank line is added on output).
fn split_header(text: &[u8]) -> (Vec<Field>, &[u8]) {
    let mut fields: Vec<Field> = Vec::new();
    let mut offset = 0;
    for line in split_lines(text) {
        let content = without_crlf(line);
        if content.is_empty() {
            return (fields, &text[offset + line.len()..]);
        }
        let continues = is_wsp(content[0]);
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

pub(super) fn without_crlf(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r\n").unwrap_or(line)
}

/// The name of a header field line: printable ASCII up to a colon, no spaces.
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let valid = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b));
    valid.then(|| std::str::from_utf8(name).ok()).flatten()
}

/// Has a line no server must be sent (RFC 5322 2.1.1) or a NUL (RFC 5322 2.3, 5321 4.5.2).
pub(super) fn unsendable(text: &[u8]) -> bool {
    memchr::memchr(0, text).is_some() || long_line(text)
}

/// The last guard before a message leaves: a line over 998 octets or a NUL byte that
/// folding and re-encoding could not remove is refused (65), never sent or cut.
/// The last guard before a message leaves: a line over 998 octets or a NUL byte that
/// folding and re-encoding could not remove is refused (65), never sent or cut.
#[cfg(test)]
pub(super) fn check_wire(head: &[u8], body: &[u8]) -> Result<()> {
    if !unsendable(head) && !unsendable(body) {
        return Ok(());
    }
    let lines = split_lines(head).chain(split_lines(body));
    let (number, line) = (1..)
        .zip(lines)
        .find(|(_, line)| unsendable(line))
        .unwrap_or((0, &[][..]));
    let what = match memchr::memchr(0, line) {
        Some(_) => "a NUL byte".to_string(),
        None => format!("a line of {} octets", without_crlf(line).len()),
    };
    Err(Error::new(
        Kind::BadInput,
        format!("line {number} of the message has {what}, which cannot be sent"),
        format!(
            "a line may hold at most {MAX_LINE} octets and no NUL (RFC 5322), and this one is \
             where it cannot be re-encoded: a part header, a multipart preamble or epilogue, \
             an attached message, or a part that already claims base64 or quoted-printable"
        ),
    )
    .hint("have the program encode that data in base64 (as an attachment, for instance)"))
}

pub(super) fn long_line(text: &[u8]) -> bool {
    split_lines(text).any(|line| line.strip_suffix(b"\n").unwrap_or(line).len() > MAX_LINE + 1)
}

/// The lines of `text`, each with its LF (the last may have none), as `split_inclusive`
/// would give them, but found with memchr: byte by byte, the passes over a 20 MiB body
/// cost more than all the rest of intake.
pub(super) fn split_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |at| at + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        (!line.is_empty()).then_some(line)
    })
}

/// How a header field with a line over 998 octets is made to fit (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq)]
enum FieldClass {
    /// Free text (Subject, Comments, X-* and every field not known to be structured): a
    /// run too long for a line becomes RFC 2047 encoded-words on folded lines.
    Unstructured,
    /// Address lists: folded at whitespace, and between addresses.
    Addresses,
    /// Message-ID, References, In-Reply-To: folded at whitespace, and between ids.
    MessageIds,
    /// Any other structured field (Date, Received, Content-*, DKIM-Signature, ...): folded
    /// at whitespace only, since nothing else is known to keep its meaning.
    Structured,
}

impl FieldClass {
    fn of(name: &str) -> FieldClass {
        const ADDRESSES: &[&str] = &[
            "From",
            "Sender",
            "Reply-To",
            "To",
            "Cc",
            "Bcc",
            "Resent-From",
            "Resent-Sender",
            "Resent-To",
            "Resent-Cc",
            "Resent-Bcc",
            "Mail-Followup-To",
            "Mail-Reply-To",
            "Disposition-Notification-To",
            "Return-Receipt-To",
            "Errors-To",
        ];
        const MESSAGE_IDS: &[&str] = &[
            "Message-ID",
            "Resent-Message-ID",
            "In-Reply-To",
            "References",
            "Content-ID",
        ];
        const STRUCTURED: &[&str] = &[
            "Date",
            "Resent-Date",
            "Received",
            "Return-Path",
            "MIME-Version",
            "Keywords",
            "DKIM-Signature",
            "Authentication-Results",
            "Received-SPF",
            "Auto-Submitted",
            "Autocrypt",
        ];
        const STRUCTURED_PREFIXES: &[&str] = &["Content-", "List-", "ARC-"];
        let is = |list: &[&str]| list.iter().any(|n| n.eq_ignore_ascii_case(name));
        let starts = |prefix: &&str| {
            name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
        };
        if is(ADDRESSES) {
            FieldClass::Addresses
        } else if is(MESSAGE_IDS) {
            FieldClass::MessageIds
        } else if is(STRUCTURED) || STRUCTURED_PREFIXES.iter().any(starts) {
            FieldClass::Structured
        } else {
            FieldClass::Unstructured
        }
    }
}

/// Where the folder may break a line that gets too long: before a whitespace byte that is
/// there (`inserted` false: unfolding gives the value back byte for byte), or at a place
/// where the field's grammar allows whitespace that is not there (`inserted` true: a space
/// is added, which a structured field ignores).
#[derive(Clone, Copy)]
struct Break {
    at: usize,
    inserted: bool,
}

/// Writes a header field so that no line exceeds 998 octets and none holds only
/// whitespace: kept byte for byte when it already is so, else unfolded and folded again at the places its class allows (see
/// [`FieldClass`]); a field that still cannot fit is refused, never cut or sent too long.
fn write_fitted(out: &mut Vec<u8>, field: &Field) -> Result<()> {
    // A continuation line of only whitespace is obsolete syntax (RFC 5322 4.2) that some
    // readers take for the end of the header block: folded again, it is gone.
    let blank_continuation = lines(&field.raw)
        .skip(1)
        .any(|line| line.iter().all(|&b| is_wsp(b)));
    if !long_line(&field.raw) && !blank_continuation {
        out.extend_from_slice(&field.raw);
        return Ok(());
    }
    let too_long = |why: String| {
        Error::new(
            Kind::BadInput,
            format!("header `{}` is too long to send", field.name),
            format!("{why}, and a line may hold at most {MAX_LINE} octets (RFC 5322)"),
        )
        .hint("shorten it, or send the data in the body")
    };
    // The name and its colon must fit on the first line with room for something.
    if field.name.len() + 2 > MAX_LINE {
        return Err(too_long(format!(
            "its name alone is {} octets",
            field.name.len()
        )));
    }
    let unfolded: Vec<u8> = lines(field.value()).collect::<Vec<_>>().concat();
    let class = FieldClass::of(&field.name);
    let (value, target) = match class {
        FieldClass::Unstructured => encode_long_words(&unfolded, field.name.len() + 1),
        _ => (unfolded, FOLD_TARGET),
    };
    let mut breaks = whitespace_breaks(&value);
    match class {
        FieldClass::Addresses => breaks.extend(address_breaks(&value)),
        FieldClass::MessageIds => breaks.extend(message_id_breaks(&value)),
        FieldClass::Unstructured | FieldClass::Structured => {}
    }
    breaks.sort_by_key(|b| b.at);
    breaks.dedup_by_key(|b| b.at);
    let mut folded = Vec::with_capacity(value.len() + value.len() / 32 + 8);
    folded.extend_from_slice(field.name.as_bytes());
    folded.push(b':');
    fold(&mut folded, &value, &breaks, target);
    if let Some(longest) = split_lines(&folded)
        .map(without_crlf)
        .map(<[u8]>::len)
        .max()
    {
        if longest > MAX_LINE {
            let what = match class {
                FieldClass::Addresses => "an address or name",
                FieldClass::MessageIds => "a message id",
                _ => "a run of text",
            };
            return Err(too_long(format!(
                "{what} in it has no place to fold: the shortest it can be made is a line of {longest} octets"
            )));
        }
    }
    out.extend_from_slice(&folded);
    Ok(())
}

/// RFC 5322's advice for a line, CRLF excluded.
const FOLD_TARGET: usize = 78;

/// Whitespace a header may fold at (WSP).
fn is_wsp(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t')
}

/// Appends `value` after the field name already in `out`, breaking lines at `breaks` so
/// they stay within `target` where they can, then CRLF.
fn fold(out: &mut Vec<u8>, value: &[u8], breaks: &[Break], target: usize) {
    let mut column = out.len();
    // A line is broken only once it holds something besides fold whitespace: a line of
    // only spaces is not allowed (RFC 5322 3.2.2).
    let mut line_holds = true;
    let mut from = 0;
    let ends = breaks.iter().map(|b| b.at).chain([value.len()]);
    for (i, to) in ends.enumerate() {
        let piece = &value[from..to];
        let has_text = !piece.iter().all(|&b| is_wsp(b));
        match i.checked_sub(1).map(|j| breaks[j]) {
            Some(before)
                if line_holds && column + piece.len() + usize::from(before.inserted) > target =>
            {
                out.extend_from_slice(b"\r\n");
                column = 0;
                if before.inserted {
                    out.push(b' ');
                    column = 1;
                }
                line_holds = has_text;
            }
            _ => line_holds |= has_text,
        }
        out.extend_from_slice(piece);
        column += piece.len();
        from = to;
    }
    out.extend_from_slice(b"\r\n");
}

/// Breaks before each whitespace run that something other than whitespace follows (a
/// break before trailing whitespace would leave a line of only spaces).
fn whitespace_breaks(value: &[u8]) -> Vec<Break> {
    let mut breaks = Vec::new();
    let mut i = 0;
    while i < value.len() {
        if !is_wsp(value[i]) {
            i += 1;
            continue;
        }
        let run = i;
        while i < value.len() && is_wsp(value[i]) {
            i += 1;
        }
        if i < value.len() {
            breaks.push(Break {
                at: run,
                inserted: false,
            });
        }
    }
    breaks
}

/// Places between the addresses of a list where folding whitespace may go (after a
/// comma, before `<`), outside quoted strings and comments.
fn address_breaks(value: &[u8]) -> Vec<Break> {
    let mut breaks = Vec::new();
    let (mut quoted, mut escaped, mut comment) = (false, false, 0usize);
    for (i, &byte) in value.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match byte {
            b'\\' if quoted || comment > 0 => escaped = true,
            b'"' if comment == 0 => quoted = !quoted,
            b'(' if !quoted => comment += 1,
            b')' if !quoted && comment > 0 => comment -= 1,
            b'<' if !quoted && comment == 0 && i > 0 => breaks.push(Break {
                at: i,
                inserted: true,
            }),
            b',' if !quoted && comment == 0 && i + 1 < value.len() => breaks.push(Break {
                at: i + 1,
                inserted: true,
            }),
            _ => {}
        }
    }
    breaks.retain(|b| !is_wsp(value[b.at]) && !is_wsp(value[b.at - 1]));
    breaks
}

/// Places between `<id>`s where folding whitespace may go.
fn message_id_breaks(value: &[u8]) -> Vec<Break> {
    (1..value.len())
        .filter(|&i| value[i - 1] == b'>' || value[i] == b'<')
        .filter(|&i| !is_wsp(value[i]) && !is_wsp(value[i - 1]))
        .map(|at| Break { at, inserted: true })
        .collect()
}

/// The value of an unstructured field with every word too long for a line (`first_line`
/// octets are taken on the first by the name and colon) turned into RFC 2047 encoded-words
/// separated by spaces, each short enough for a line of its own; the fold target for the
/// result (RFC 2047 keeps lines with encoded-words to 76). Decoders drop the whitespace
/// between two encoded-words, so whitespace next to one is moved inside it.
fn encode_long_words(value: &[u8], first_line: usize) -> (Vec<u8>, usize) {
    let is_space = |&b: &u8| is_wsp(b);
    // (whitespace before, word), in order; the value is their concatenation.
    let mut tokens: Vec<(&[u8], &[u8])> = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| !is_space(b)).unwrap_or(rest.len());
        let word = rest[space..]
            .iter()
            .position(is_space)
            .map_or(rest.len(), |w| space + w);
        tokens.push((&rest[..space], &rest[space..word]));
        rest = &rest[word..];
    }
    let encode: Vec<bool> = tokens
        .iter()
        .enumerate()
        .map(|(i, (space, word))| {
            let on_first = if i == 0 && space.is_empty() {
                first_line
            } else {
                0
            };
            on_first + space.len() + word.len() > MAX_LINE
        })
        .collect();
    if !encode.contains(&true) {
        return (value.to_vec(), FOLD_TARGET);
    }
    let shaped = |word: &[u8]| {
        word.starts_with(b"=?")
            && word.ends_with(b"?=")
            && word.iter().filter(|&&b| b == b'?').count() >= 4
    };
    let mut out = Vec::with_capacity(value.len() * 2);
    let mut taken_space = false;
    for (i, &(space, word)) in tokens.iter().enumerate() {
        if !encode[i] {
            if !taken_space {
                out.extend_from_slice(space);
            }
            taken_space = false;
            out.extend_from_slice(word);
            continue;
        }
        // The whitespace before goes inside too, but for one byte left to separate the
        // word from the text before it (all of it when that is an encoded-word, whose
        // separating whitespace a decoder drops): a long run then folds with the word.
        let mut text = Vec::with_capacity(space.len() + word.len() + 2);
        let after_encoded = i > 0 && (encode[i - 1] || shaped(tokens[i - 1].1));
        match (after_encoded, space.split_first()) {
            (true, _) | (false, None) => {
                out.push(b' ');
                text.extend_from_slice(space);
            }
            (false, Some((&separator, inside))) => {
                out.push(separator);
                text.extend_from_slice(inside);
            }
        }
        text.extend_from_slice(word);
        taken_space = false;
        if let Some(&(next_space, next_word)) = tokens.get(i + 1) {
            if !encode[i + 1] && shaped(next_word) && !next_space.is_empty() {
                text.extend_from_slice(next_space);
                taken_space = true;
            }
        }
        encoded_words(&mut out, &text);
        if taken_space {
            out.push(b' ');
        }
    }
    (out, 76)
}

/// `text` as Q-encoded RFC 2047 words of at most 75 characters, separated by spaces:
/// UTF-8 when it is, else `unknown-8bit` (RFC 1428), so no byte is lost; a character is
/// never split between two words.
fn encoded_words(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    const MAX_WORD: usize = 75;
    let charset: &[u8] = match std::str::from_utf8(text) {
        Ok(_) => b"UTF-8",
        Err(_) => b"unknown-8bit",
    };
    let room = MAX_WORD - charset.len() - 7;
    let utf8 = charset == b"UTF-8";
    let mut i = 0;
    let mut first = true;
    while i < text.len() {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(b"=?");
        out.extend_from_slice(charset);
        out.extend_from_slice(b"?Q?");
        let mut used = 0;
        while i < text.len() {
            // One character: its UTF-8 bytes, or one byte of unknown-8bit text.
            let len = match utf8 {
                true => utf8_char_len(text[i]),
                false => 1,
            };
            let char_bytes = &text[i..(i + len).min(text.len())];
            let width: usize = char_bytes
                .iter()
                .map(|&b| if q_literal(b) || b == b' ' { 1 } else { 3 })
                .sum();
            if used + width > room {
                break;
            }
            for &byte in char_bytes {
                match byte {
                    b' ' => out.push(b'_'),
                    b if q_literal(b) => out.push(b),
                    b => out.extend_from_slice(&[
                        b'=',
                        HEX[(b >> 4) as usize],
                        HEX[(b & 15) as usize],
                    ]),
                }
            }
            used += width;
            i += char_bytes.len();
        }
        out.extend_from_slice(b"?=");
    }
}

/// What RFC 2047 5(3) lets a Q-encoded word hold as itself, anywhere it appears.
fn q_literal(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'!' | b'*' | b'+' | b'-' | b'/')
}

fn utf8_char_len(first: u8) -> usize {
    match first {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// The in-memory re-encoder intake had before [`reencode`] (kept for the tests, which
/// compare the streaming one with it, byte for byte, on many messages; mail-parser's
/// whole parse of the message here is also why it cannot run on a message in a file).
///
/// Re-encodes as quoted-printable every MIME leaf part that has a line over 998 octets or
/// a NUL byte and no transfer encoding of its own; a reader decodes it back to the same
/// bytes, so nothing is cut (quoted-printable writes a NUL as `=00`). Parts already in
/// base64 or quoted-printable cannot have such lines or bytes; what is left is refused by
/// [`check_wire`]. The message is `head` then `body`; when nothing needs re-encoding both
/// come back as they are, else the whole new message comes back as the head.
/// The in-memory re-encoder intake had before [`reencode`] (kept for the tests, which
/// compare the streaming one with it, byte for byte, on many messages; mail-parser's
/// whole parse of the message here is also why it cannot run on a message in a file).
///
/// Re-encodes as quoted-printable every MIME leaf part that has a line over 998 octets or
/// a NUL byte and no transfer encoding of its own; a reader decodes it back to the same
/// bytes, so nothing is cut (quoted-printable writes a NUL as `=00`). Parts already in
/// base64 or quoted-printable cannot have such lines or bytes; what is left is refused by
/// [`check_wire`]. The message is `head` then `body`; when nothing needs re-encoding both
/// come back as they are, else the whole new message comes back as the head.
#[cfg(test)]
pub(super) fn reencode_unsendable(head: Vec<u8>, body: &[u8]) -> Result<(Vec<u8>, &[u8])> {
    if !unsendable(&head) && !unsendable(body) {
        return Ok((head, body));
    }
    let message = [&head[..], body].concat();
    drop(head);
    let Some(parsed) = MessageParser::new().parse(&message) else {
        return Ok((message, &[]));
    };
    let span = |from: u32, to: u32| from as usize..to as usize;
    // (what is replaced, by what), none overlapping: part headers and leaf bodies.
    let mut edits: Vec<(std::ops::Range<usize>, Vec<u8>)> = Vec::new();
    for (index, part) in parsed.parts.iter().enumerate() {
        let header = span(part.offset_header, part.offset_body);
        let body = span(part.offset_body, part.offset_end);
        let leaf = !matches!(part.body, PartType::Multipart(_) | PartType::Message(_));
        let (header_text, body_text) = (&message[header.clone()], &message[body.clone()]);
        if !only_fields(header_text) {
            // Not a header block this code can rewrite safely: left to check_wire.
            continue;
        }
        // As declared: mail-parser reports a base64 part it cannot decode as unencoded.
        let encoding = declared_encoding(header_text);
        if leaf && encoding == Encoding::None && unsendable(body_text) {
            edits.push((
                header.clone(),
                declare_quoted_printable(header_text, index == 0)?,
            ));
            edits.push((body, quoted_printable(body_text)));
            continue;
        }
        // The message's own header is fitted already; a part's is fitted here.
        if index > 0 && long_line(header_text) {
            edits.push((header, fit_header_block(header_text, |_| true)?));
        }
        if leaf && long_line(body_text) && memchr::memchr(0, body_text).is_none() {
            match encoding {
                Encoding::Base64 => edits.push((body, rewrap_base64(body_text))),
                Encoding::QuotedPrintable => edits.push((body, soft_break(body_text))),
                Encoding::None => {}
            }
        }
    }
    drop(parsed);
    edits.sort_by_key(|(replaced, _)| replaced.start);
    // One pass from the start: each edit made, the rest copied once.
    let mut out = Vec::with_capacity(message.len() + message.len() / 8);
    let mut copied = 0;
    for (replaced, by) in edits {
        out.extend_from_slice(&message[copied..replaced.start]);
        out.extend(by);
        copied = replaced.end;
    }
    out.extend_from_slice(&message[copied..]);
    Ok((out, &[]))
}

/// Whether a part's header block is header fields and then the blank line, nothing else.
pub(super) fn only_fields(header: &[u8]) -> bool {
    let (fields, _) = split_header(header);
    let consumed: usize = fields.iter().map(|f| f.raw.len()).sum();
    matches!(&header[consumed..], b"" | b"\r\n")
}

/// The Content-Transfer-Encoding a part's header block declares.
pub(super) fn declared_encoding(header: &[u8]) -> Encoding {
    let (fields, _) = split_header(header);
    let Some(field) = fields
        .iter()
        .rev()
        .find(|f| f.is("Content-Transfer-Encoding"))
    else {
        return Encoding::None;
    };
    let value = String::from_utf8_lossy(field.value())
        .trim()
        .to_ascii_lowercase();
    match value.as_str() {
        "base64" => Encoding::Base64,
        "quoted-printable" => Encoding::QuotedPrintable,
        _ => Encoding::None,
    }
}

/// A header block (blank line included) with each field that `keep` accepts fitted to
/// the line limit, the others left out; whatever follows the fields is kept as it is.
pub(super) fn fit_header_block(header: &[u8], keep: impl Fn(&Field) -> bool) -> Result<Vec<u8>> {
    let (fields, _) = split_header(header);
    let mut out = Vec::with_capacity(header.len() + 64);
    let mut consumed = 0;
    for field in &fields {
        consumed += field.raw.len();
        if keep(field) {
            write_fitted(&mut out, field)?;
        }
    }
    out.extend_from_slice(&header[consumed..]);
    Ok(out)
}

/// A part's header block (blank line included) saying quoted-printable; the message's
/// own header also gets MIME-Version when it lacks one.
pub(super) fn declare_quoted_printable(header: &[u8], top_level: bool) -> Result<Vec<u8>> {
    let (fields, _) = split_header(header);
    let mut out = fit_header_block(header, |f| !f.is("Content-Transfer-Encoding"))?;
    // What followed the fields (the blank line) goes back after the new ones.
    let consumed: usize = fields.iter().map(|f| f.raw.len()).sum();
    out.truncate(out.len() - (header.len() - consumed));
    if top_level && !fields.iter().any(|f| f.is("MIME-Version")) {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    out.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    Ok(out)
}

/// Base64 text with its long lines cut into lines of 76: decoders skip line breaks
/// (RFC 2045 6.8), so the data stays the same.
/// Base64 text with its long lines cut into lines of 76: decoders skip line breaks
/// (RFC 2045 6.8), so the data stays the same.
#[cfg(test)]
pub(super) fn rewrap_base64(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 38);
    for piece in split_lines(text) {
        let line = without_crlf(piece);
        if line.len() <= MAX_LINE {
            out.extend_from_slice(piece);
            continue;
        }
        for (i, chunk) in line.chunks(76).enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(chunk);
        }
        out.extend_from_slice(&piece[line.len()..]);
    }
    out
}

/// Quoted-printable text with its long lines cut by soft line breaks (`=` CRLF, RFC 2045
/// 6.7 rule 5), never inside an `=XX`, so the data stays the same.
/// Quoted-printable text with its long lines cut by soft line breaks (`=` CRLF, RFC 2045
/// 6.7 rule 5), never inside an `=XX`, so the data stays the same.
#[cfg(test)]
pub(super) fn soft_break(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 25);
    for piece in split_lines(text) {
        let mut line = without_crlf(piece);
        if line.len() <= MAX_LINE {
            out.extend_from_slice(piece);
            continue;
        }
        while line.len() > 76 {
            let mut cut = 75;
            if let Some(back) = line[cut - 2..cut].iter().position(|&b| b == b'=') {
                cut -= 2 - back;
            }
            out.extend_from_slice(&line[..cut]);
            out.extend_from_slice(b"=\r\n");
            line = &line[cut..];
        }
        out.extend_from_slice(line);
        out.extend_from_slice(&piece[without_crlf(piece).len()..]);
    }
    out
}

/// Quoted-printable (RFC 2045 6.7) of CRLF text: line breaks stay hard breaks, long
/// lines get soft breaks before 76 characters.
/// Quoted-printable (RFC 2045 6.7) of CRLF text: line breaks stay hard breaks, long
/// lines get soft breaks before 76 characters.
#[cfg(test)]
pub(super) fn quoted_printable(text: &[u8]) -> Vec<u8> {
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
    use crate::message::input::read_message;
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
        p.to_vec().unwrap()
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
        assert!(matches!(p.body, crate::message::envelope::Body::Bytes(b) if b == read.as_slice()));
    }

    /// A CR alone inside a header line must not end the header block there: the fields
    /// after it (a Bcc) would go out as body text, seen by every recipient.
    #[test]
    fn a_bare_cr_in_a_header_is_a_space_not_the_end_of_the_header() {
        let raw = b"Subject: report\rcopy\nBcc: boss@x.org\nTo: a@x.org\r\n\nbody\rmore\n";
        let read = read_message(&raw[..], true).unwrap();
        assert_eq!(read, &*crlf_lines(raw));
        let p = prep(&read, true, &[], None).unwrap();
        let text = String::from_utf8(text_of(&p)).unwrap();
        assert!(!text.contains("boss"), "{text}");
        assert_eq!(p.envelope.recipients, ["boss@x.org", "a@x.org"]);
        assert!(
            text.starts_with("Subject: report copy\r\nTo: a@x.org\r\n"),
            "{text}"
        );
        assert_eq!(body_of(&p), b"body\r\nmore\r\n");

        // Old Mac text (no LF anywhere) keeps CR as its line end, header included.
        let mac = b"Subject: x\rTo: a@x.org\r\rbody\r";
        let read = read_message(&mac[..], true).unwrap();
        assert_eq!(read, b"Subject: x\r\nTo: a@x.org\r\n\r\nbody\r\n");
        assert_eq!(read, &*crlf_lines(mac));
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

    /// A field RFC 5322 allows once and the caller gave twice (Gmail refuses the
    /// message): the first stays, the repeat is kept as X-Original-NAME.
    #[test]
    fn a_repeated_subject_from_or_date_stays_once_and_the_repeat_is_kept_aside() {
        let raw = b"Subject: first\nFrom: a@x.org\nDate: Tue, 1 Dec 2026 10:00:00 +0000\n\
                    Message-ID: <1@x.org>\nsubject: second\nFrom: b@x.org\n\
                    Date: Wed, 2 Dec 2026 10:00:00 +0000\nMessage-ID: <2@x.org>\n\
                    References: <0@x.org>\nReferences: <9@x.org>\nTo: t@x.org\n\nb\n";
        let p = prep(raw, true, &[], None).unwrap();
        let header = header_of(&p);
        let lines: Vec<&str> = header.split("\r\n").collect();
        for name in ["Subject:", "From:", "Date:", "Message-ID:", "References:"] {
            let count = lines
                .iter()
                .filter(|l| {
                    l.to_ascii_lowercase()
                        .starts_with(&name.to_ascii_lowercase())
                })
                .count();
            assert_eq!(count, 1, "{name} in {header}");
        }
        for kept in [
            "Subject: first",
            "From: a@x.org",
            "Message-ID: <1@x.org>",
            "X-Original-subject: second",
            "X-Original-From: b@x.org",
            "X-Original-Date: Wed, 2 Dec 2026 10:00:00 +0000",
            "X-Original-Message-ID: <2@x.org>",
            "X-Original-References: <9@x.org>",
        ] {
            assert!(lines.contains(&kept), "{kept} in {header}");
        }
        assert_eq!(p.message_id.as_deref(), Some("<1@x.org>"));
        assert_eq!(p.envelope.recipients, ["t@x.org"]);
    }

    #[test]
    fn repeated_address_lists_become_one() {
        let raw = b"To: a@x.org\nSubject: s\nCc: c@x.org\nTo: b@x.org,\n root\nCc:\nCc: d@x.org\nReply-To: r@x.org\n\nb\n";
        let p = prep(raw, true, &[], None).unwrap();
        let header = header_of(&p);
        for name in ["To:", "Cc:", "Reply-To:", "Subject:"] {
            let count = header.split("\r\n").filter(|l| l.starts_with(name)).count();
            assert_eq!(count, 1, "{name} in {header}");
        }
        let text = text_of(&p);
        let parsed = MessageParser::new().parse(&text).unwrap();
        let addresses = |list: Option<&mail_parser::Address>| -> Vec<String> {
            let list = list.unwrap().iter();
            list.filter_map(|a| a.address().map(str::to_string))
                .collect()
        };
        assert_eq!(
            addresses(parsed.to()),
            ["a@x.org", "b@x.org", "admin@example.com"]
        );
        assert_eq!(addresses(parsed.cc()), ["c@x.org", "d@x.org"]);
        assert_eq!(
            p.envelope.recipients,
            [
                "a@x.org",
                "c@x.org",
                "b@x.org",
                "admin@example.com",
                "d@x.org"
            ]
        );
        assert!(header.starts_with("To: "), "{header}");
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
    fn a_from_without_an_address_is_replaced() {
        for from in ["", " ", "<>", "(Cron Daemon)", "\"\""] {
            let raw = format!("From: {from}\nSubject: s\n\nb\n");
            let p = prep(raw.as_bytes(), false, &["a@x.org"], Some("root")).unwrap();
            let header = header_of(&p);
            assert_eq!(header.matches("From:").count(), 1, "{header}");
            assert!(
                header.contains("From: \"Cron Daemon\" <root@example.com>\r\n"),
                "{header}"
            );
        }
        let p = prep(b"From: root\n\nb\n", false, &["a@x.org"], None).unwrap();
        assert_eq!(header_of(&p).matches("From:").count(), 1);
    }

    /// Headers intake builds itself (From from -F, address lists it rewrites) keep to the
    /// limits too, whatever names they are given.
    #[test]
    fn built_headers_keep_to_the_limits() {
        let aliases = aliases();
        let resolver = Resolver::new(&aliases, Some("example.com"));
        let long = "n".repeat(3000);
        for name in [long.clone(), format!("a\0b{long}"), format!("é{long}")] {
            let p = prepare(
                b"body\n",
                &Options {
                    extract_recipients: false,
                    sender: None,
                    full_name: Some(&name),
                    recipients: &["a@x.org".to_string()],
                    resolver: &resolver,
                    default_sender: "me@example.org",
                },
            )
            .unwrap();
            sendable(&text_of(&p)).unwrap();
            let text = text_of(&p);
            let parsed = MessageParser::new().parse(&text).unwrap();
            let from = parsed.from().and_then(|f| f.first()).unwrap();
            assert_eq!(from.name(), Some(name.as_str()));
        }
        let raw = format!("From: {long} <root>\nTo: \"{long}\" <bob>, root\n\nb\n");
        let p = prep(raw.as_bytes(), true, &[], None).unwrap();
        sendable(&text_of(&p)).unwrap();
        assert_eq!(
            p.envelope.recipients,
            ["bob@example.com", "admin@example.com"]
        );
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
        assert_eq!(
            reencoded_part(&text, "text/csv"),
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
    /// groups, encoded words, bare CRs, NULs, 8-bit bytes, long runs): intake returns a
    /// message or an error, never panics, and what it returns has only CRLF line ends (no
    /// bare CR or LF), ends in one, and has no line over 998 octets and no NUL.
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
            b"X-Long: ",
            b"References: ",
            b"Date: ",
            b"xyz",
            b"\0",
            b"Content-Transfer-Encoding: base64\n",
            b"Content-Transfer-Encoding: quoted-printable\n",
            b"QUJD",
            b"=41",
            b"\\",
        ];
        let mut next = crate::testing::xorshift(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..next() % 40 {
                let piece = PIECES[(next() % PIECES.len() as u64) as usize];
                let repeat = if next().is_multiple_of(50) { 1200 } else { 1 };
                for _ in 0..repeat {
                    input.extend_from_slice(piece);
                }
            }
            // What stdin gives prepare() is what it would make of the same bytes.
            let read = read_message(&input[..], true).unwrap();
            assert_eq!(read, &*crlf_lines(&input), "{input:?}");
            if let Ok(p) = prep(&input, next().is_multiple_of(2), &["a@x.org"], None) {
                accepted += 1;
                let data = p.to_vec().unwrap();
                let shown = String::from_utf8_lossy(&input);
                assert!(data.ends_with(b"\r\n"), "{shown:?}");
                let bare_cr = data.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n');
                let bare_lf = data.windows(2).any(|w| w[0] != b'\r' && w[1] == b'\n');
                assert!(!bare_cr && !bare_lf, "{shown:?}");
                if let Err(problem) = sendable(&data) {
                    panic!("{problem} in {shown:?}");
                }
            }
        }
        // Refusing everything would pass the checks above: most of these must go out.
        assert!(accepted > 2000, "only {accepted} of 3000 accepted");
    }

    /// Why `data` must not be sent: a line over 998 octets or a NUL.
    fn sendable(data: &[u8]) -> std::result::Result<(), String> {
        for (n, line) in (1..).zip(data.split(|&b| b == b'\n')) {
            let text = line.strip_suffix(b"\r").unwrap_or(line);
            if text.len() > MAX_LINE {
                return Err(format!("line {n} has {} octets", text.len()));
            }
            if text.contains(&0) {
                return Err(format!("line {n} has a NUL"));
            }
        }
        Ok(())
    }

    /// A header's value as a reader sees it: unfolded, RFC 2047 encoded-words (Q or B, any
    /// charset, as bytes) decoded, the whitespace between two encoded-words dropped.
    fn decode_unstructured(value: &[u8]) -> Vec<u8> {
        let unfolded = String::from_utf8_lossy(value)
            .replace("\r\n", "")
            .into_bytes();
        let decode_word = |word: &[u8]| -> Option<Vec<u8>> {
            let text = std::str::from_utf8(word).ok()?;
            let inner = text.strip_prefix("=?")?.strip_suffix("?=")?;
            let mut parts = inner.splitn(3, '?');
            let (_charset, encoding, data) = (parts.next()?, parts.next()?, parts.next()?);
            match encoding {
                "Q" | "q" => Some(decode_qp(data.replace('_', " ").as_bytes())),
                "B" | "b" => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(data).ok()
                }
                _ => None,
            }
        };
        let mut out = Vec::new();
        let mut last_encoded = false;
        let mut rest = &unfolded[..];
        while !rest.is_empty() {
            let space = rest
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t'))
                .unwrap_or(rest.len());
            let end = rest[space..]
                .iter()
                .position(|b| matches!(b, b' ' | b'\t'))
                .map_or(rest.len(), |e| space + e);
            let (ws, word) = (&rest[..space], &rest[space..end]);
            match decode_word(word) {
                Some(decoded) => {
                    if !last_encoded {
                        out.extend_from_slice(ws);
                    }
                    out.extend_from_slice(&decoded);
                    last_encoded = true;
                }
                None => {
                    out.extend_from_slice(ws);
                    out.extend_from_slice(word);
                    last_encoded = false;
                }
            }
            rest = &rest[end..];
        }
        out
    }

    /// The raw value of the one header `name` of a prepared message (continuations kept).
    fn raw_value(p: &Prepared, name: &str) -> Vec<u8> {
        let text = text_of(p);
        let (fields, _) = split_header(&text);
        let found: Vec<&Field> = fields.iter().filter(|f| f.is(name)).collect();
        assert_eq!(found.len(), 1, "{name}: {}", header_of(p));
        let value = found[0].value();
        value.strip_suffix(b"\r\n").unwrap_or(value).to_vec()
    }

    /// Runs of up to 200 KB with no whitespace, in fields of each class: what comes out
    /// has no line over 998 octets, and a reader gets the same content back.
    #[test]
    fn long_headers_without_whitespace_fit_and_keep_their_content() {
        let mut next = crate::testing::xorshift(0x2545_F491_4F6C_DD1D);
        // Token bytes that a Q encoding must escape and ones it keeps.
        const ALPHABET: &[u8] = b"abcXYZ019+/=_?\"()<>,;:@.-!*";
        for size in [999, 1000, 1500, 4096, 20_000, 200_000] {
            let token: Vec<u8> = (0..size)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let token = String::from_utf8(token).unwrap();
            let utf8 = "\u{e9}\u{4e2d}\u{1f600}x".repeat(size / 10 + 1);
            let cases: Vec<(&str, String)> = vec![
                ("Subject", token.clone()),
                ("Subject", format!("Re: [cron] {token} done")),
                ("X-Trace", token.clone()),
                ("X-Trace", format!("{token} {token}")),
                (
                    "Comments",
                    format!("=?UTF-8?Q?=C3=A9?= {token} =?UTF-8?Q?=C3=A9t=C3=A9?= end"),
                ),
                ("Subject", format!("{utf8} tail")),
                ("X-Spaces", format!("a{}b", " ".repeat(size))),
            ];
            for (name, value) in &cases {
                let raw = format!("{name}: {value}\nTo: a@x.org\n\nbody\n");
                let p = prep(raw.as_bytes(), false, &["a@x.org"], None)
                    .unwrap_or_else(|e| panic!("{name} of {size}: {e}"));
                if let Err(problem) = sendable(&text_of(&p)) {
                    panic!("{name} of {size}: {problem}");
                }
                let got = decode_unstructured(&raw_value(&p, name));
                assert!(
                    got == decode_unstructured(format!(" {value}").as_bytes()),
                    "{name} of {size} came back as {:?}",
                    String::from_utf8_lossy(&got[..got.len().min(300)])
                );
                assert_eq!(body_of(&p), b"body\r\n");
            }
            // An independent reader (mail-parser) decodes the Subject to the same text.
            let raw = format!("Subject: {utf8}{token}\n\nb\n");
            let p = prep(raw.as_bytes(), false, &["a@x.org"], None).unwrap();
            let text = text_of(&p);
            let parsed = MessageParser::new().parse(&text).unwrap();
            assert_eq!(parsed.subject(), Some(format!("{utf8}{token}").as_str()));

            // Message ids without whitespace between them fold between the ids.
            let ids: String = (0..size / 20)
                .map(|i| format!("<{i}.{}@example.org>", size))
                .collect();
            let raw = format!("References: {ids}\nIn-Reply-To: {ids}\n\nb\n");
            let p = prep(raw.as_bytes(), false, &["a@x.org"], None).unwrap();
            sendable(&text_of(&p)).unwrap();
            for name in ["References", "In-Reply-To"] {
                let value = String::from_utf8(raw_value(&p, name)).unwrap();
                let joined: String = value.split_whitespace().collect();
                assert_eq!(joined, ids, "{name}");
            }

            // Addresses without whitespace between them fold between the addresses.
            let addresses: Vec<String> = (0..size / 16)
                .map(|i| format!("u{i}@example.org"))
                .collect();
            let raw = format!(
                "To: {}\nCc: {}\n\nb\n",
                addresses.join(","),
                addresses.join(",")
            );
            let p = prep(raw.as_bytes(), true, &[], None).unwrap();
            sendable(&text_of(&p)).unwrap();
            assert_eq!(p.envelope.recipients, addresses);
            let text = text_of(&p);
            let parsed = MessageParser::new().parse(&text).unwrap();
            for list in [parsed.to(), parsed.cc()] {
                let got: Vec<&str> = list.unwrap().iter().filter_map(|a| a.address()).collect();
                assert_eq!(got, addresses);
            }
        }
    }

    /// Structured fields with nowhere to fold are refused, naming the field; never cut.
    #[test]
    fn headers_that_cannot_fold_are_refused_by_name() {
        let run = "x".repeat(2000);
        for (raw, name) in [
            (format!("Date: {run}\n\nb\n"), "Date"),
            (format!("Message-ID: <{run}@x.org>\n\nb\n"), "Message-ID"),
            (
                format!("References: <a@x.org> <{run}@x.org>\n\nb\n"),
                "References",
            ),
            (
                format!("Content-Type: text/plain; name={run}\n\nb\n"),
                "Content-Type",
            ),
            (format!("Reply-To: {run}@x.org\n\nb\n"), "Reply-To"),
            (format!("X-{run}: v\n\nb\n"), "X-xxx"),
        ] {
            let err = prep(raw.as_bytes(), false, &["a@x.org"], None).unwrap_err();
            assert_eq!(err.exit_code(), 65, "{name}: {err}");
            let shown = err.to_string();
            assert!(
                shown.contains(&format!("header `{}", &name[..name.len().min(5)])),
                "{shown}"
            );
            assert!(shown.contains("998"), "{shown}");
        }
        // With whitespace to fold at, the same fields go out.
        let words = vec!["word"; 400].join(" ");
        let raw = format!("Received: {words}\n\nb\n");
        let p = prep(raw.as_bytes(), false, &["a@x.org"], None).unwrap();
        sendable(&text_of(&p)).unwrap();
    }

    #[test]
    fn a_nul_in_a_header_is_refused_naming_the_header() {
        for raw in [&b"Subject: a\0b\n\nbody\n"[..], b"Bcc: a@x.org\0\n\nbody\n"] {
            let err = prep(raw, true, &["a@x.org"], None).unwrap_err();
            assert_eq!(err.exit_code(), 65);
            assert!(err.to_string().contains("NUL"), "{err}");
            let name = if raw.starts_with(b"Bcc") {
                "`Bcc`"
            } else {
                "`Subject`"
            };
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn a_nul_in_a_body_is_encoded_and_decodes_back() {
        let body = b"before\0after\r\n\0\r\nend\r\n";
        let raw = [&b"Subject: s\n\n"[..], body].concat();
        let p = prep(&raw, false, &["a@x.org"], None).unwrap();
        sendable(&text_of(&p)).unwrap();
        let header = header_of(&p);
        assert!(
            header.contains("Content-Transfer-Encoding: quoted-printable"),
            "{header}"
        );
        assert!(String::from_utf8_lossy(&body_of(&p)).contains("=00"));
        assert_eq!(decode_qp(&body_of(&p)), body);

        // In a multipart message only the part with the NUL is re-encoded.
        let raw = b"Subject: s\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n--B\nContent-Type: text/plain\n\nclean\n--B\nContent-Type: application/octet-stream\n\nbin\0ary\n--B--\n";
        let p = prep(raw, false, &["a@x.org"], None).unwrap();
        sendable(&text_of(&p)).unwrap();
        let text = String::from_utf8(text_of(&p)).unwrap();
        assert!(text.contains("\r\n\r\nclean\r\n--B\r\n"), "{text}");
        assert_eq!(
            reencoded_part(&text, "application/octet-stream"),
            b"bin\0ary"
        );
        let parsed = MessageParser::new().parse(text.as_bytes()).unwrap();
        assert_eq!(
            parsed.attachment(0).map(|a| a.contents()),
            Some(&b"bin\0ary"[..])
        );
    }

    /// A part in base64 or quoted-printable with lines over 998 octets (a program that
    /// writes base64 on one line) gets line breaks its decoder skips: the data is the same.
    #[test]
    fn long_lines_in_encoded_parts_are_broken_without_changing_the_data() {
        use base64::Engine;
        let data: Vec<u8> = (0..6000u32).map(|i| (i * 7 % 251) as u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
        let text = "caf\u{e9} = ".repeat(400);
        let qp = String::from_utf8(quoted_printable(text.as_bytes()))
            .unwrap()
            .replace("=\r\n", "");
        assert!(qp.len() > MAX_LINE && qp.contains("=C3=A9"));
        let raw = format!(
            "Subject: s\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n--B\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n{qp}\n--B\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n{b64}\n--B--\n"
        );
        let p = prep(raw.as_bytes(), false, &["a@x.org"], None).unwrap();
        let out = text_of(&p);
        sendable(&out).unwrap();
        let parsed = MessageParser::new().parse(&out).unwrap();
        assert_eq!(parsed.body_text(0).as_deref(), Some(text.as_str()));
        assert_eq!(parsed.attachment(0).map(|a| a.contents()), Some(&data[..]));
    }

    /// A continuation line of only whitespace (obsolete syntax, which some readers take
    /// for the end of the header block) goes out folded away, the value unchanged.
    #[test]
    fn header_lines_of_only_whitespace_are_folded_away() {
        let raw = b"Subject: a\n   \n\t\n b\nX-Empty:\n \nTo: x@y.org\n\nbody\n";
        let p = prep(raw, true, &[], None).unwrap();
        let header = header_of(&p);
        assert!(
            !header.split("\r\n").any(|l| l.trim().is_empty()),
            "{header:?}"
        );
        assert_eq!(raw_value(&p, "Subject"), b" a   \t b");
        assert!(
            header.contains("\r\nX-Empty: \r\nTo: x@y.org\r\n"),
            "{header:?}"
        );
        assert_eq!(p.envelope.recipients, ["x@y.org"]);
        assert_eq!(body_of(&p), b"body\r\n");
    }

    /// A header block that the input ends in, with or without its line end or blank line,
    /// becomes a message with an empty body; its fields stay fields.
    #[test]
    fn a_header_block_without_a_body() {
        for raw in [
            &b"To: a@x.org\nSubject: s"[..],
            b"To: a@x.org\nSubject: s\n",
            b"To: a@x.org\r\nSubject: s\r\n\r\n",
            b"To: a@x.org\rSubject: s\r",
        ] {
            let p = prep(raw, true, &[], None).unwrap();
            let text = text_of(&p);
            sendable(&text).unwrap();
            assert!(text.ends_with(b"\r\n\r\n"), "{raw:?}");
            assert_eq!(body_of(&p), b"", "{raw:?}");
            assert_eq!(p.envelope.recipients, ["a@x.org"], "{raw:?}");
            assert!(header_of(&p).contains("\r\nSubject: s\r\n"), "{raw:?}");
        }
    }

    /// A part header that is not all fields is never rewritten (a line of it would be
    /// lost): with a NUL in its body, the message is refused instead.
    #[test]
    fn a_part_header_that_is_not_all_fields_is_not_rewritten() {
        let raw = b"Subject: s\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n--B\nFrom nobody\nContent-Type: text/plain\n\nnul\0\n--B--\n";
        match prep(raw, false, &["a@x.org"], None) {
            Ok(p) => {
                let text = String::from_utf8_lossy(&text_of(&p)).into_owned();
                assert!(text.contains("\r\nFrom nobody\r\n"), "{text}");
                sendable(&text_of(&p)).unwrap();
            }
            Err(err) => assert_eq!(err.exit_code(), 65, "{err}"),
        }
    }

    /// Where a NUL or a long line cannot be re-encoded, the message is refused (65).
    #[test]
    fn what_cannot_be_reencoded_is_refused() {
        let long = "z".repeat(1200);
        let multipart =
            "Subject: s\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n";
        for body in [
            format!("{multipart}preamble \0\n--B\n\nx\n--B--\n"),
            format!("{multipart}{long}\n--B\n\nx\n--B--\n"),
            format!("{multipart}--B\n\nx\n--B--\nepilogue\0\n"),
            "Subject: s\nContent-Transfer-Encoding: base64\n\nQUJD\0\n".to_string(),
            format!(
                "{multipart}--B\nContent-Type: message/rfc822\n\nSubject: inner\n\n{long}\n--B--\n"
            ),
        ] {
            let err = match prep(body.as_bytes(), false, &["a@x.org"], None) {
                Ok(p) => panic!(
                    "{body:?} went out as {:?}",
                    String::from_utf8_lossy(&text_of(&p))
                ),
                Err(err) => err,
            };
            assert_eq!(err.exit_code(), 65, "{err}");
            assert!(err.to_string().contains("cannot be sent"), "{err}");
        }
    }

    /// The decoded body of the last part, boundary "B", of type `content_type` (the
    /// first field of its header), which must say quoted-printable next.
    fn reencoded_part(text: &str, content_type: &str) -> Vec<u8> {
        let part = text
            .split(&format!("Content-Type: {content_type}\r\n"))
            .nth(1)
            .unwrap();
        assert!(
            part.starts_with("Content-Transfer-Encoding: quoted-printable\r\n\r\n"),
            "{text}"
        );
        let encoded = part.split("\r\n\r\n").nth(1).unwrap();
        decode_qp(encoded.split("\r\n--B--").next().unwrap().as_bytes())
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
