//! SMTP replies (RFC 5321 section 4.2): parsed line by line with bounds, errors rather
//! than panics on anything else, and turned into text only after the secrets we sent in
//! AUTH are taken out of them.

use std::fmt;

/// RFC 5321 allows 512 octets per reply line; real servers go beyond it (long enhanced
/// texts, URLs). Lines longer than this are not SMTP.
pub const MAX_LINE: usize = 4096;
/// A reply of more lines than this is not SMTP either (EHLO answers have about 15).
pub const MAX_LINES: usize = 128;

/// One complete reply: its code and the text of each line, as the server sent it apart
/// from control characters and our own secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text after "NNN-" / "NNN " of each line (may be empty).
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The first line's text (a 334 challenge, the greeting).
    pub fn first(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
    }

    /// The lines as they were on the wire: "250-first", ..., "250 last".
    pub fn wire_lines(&self) -> impl Iterator<Item = String> + '_ {
        let last = self.lines.len().saturating_sub(1);
        self.lines.iter().enumerate().map(move |(i, text)| {
            let sep = if i == last { ' ' } else { '-' };
            format!("{}{sep}{text}", self.code).trim_end().to_string()
        })
    }
}

/// "550 5.1.1 no such user": the code and every line's text, on one line.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for line in self.lines.iter().filter(|l| !l.trim().is_empty()) {
            write!(f, " {}", line.trim())?;
        }
        Ok(())
    }
}

/// Collects the lines of one reply. Feed it each line without its line end.
#[derive(Default)]
pub struct Parser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl Parser {
    /// `Ok(Some(reply))` when `line` was the last of a reply, `Ok(None)` when more follow,
    /// `Err(why)` when it is not an SMTP reply line.
    pub fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, String> {
        if line.len() > MAX_LINE {
            return Err(format!("a reply line of over {MAX_LINE} octets"));
        }
        let code = match line.get(..3) {
            Some(&[a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9']) => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(format!("not a reply line: {:?}", printable(line, 40))),
        };
        if self.code.is_some_and(|first| first != code) {
            return Err(format!(
                "reply code {code} inside a {} reply",
                self.code.unwrap_or_default()
            ));
        }
        let (last, text) = match line.get(3) {
            None => (true, &line[3..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(format!("not a reply line: {:?}", printable(line, 40))),
        };
        if self.lines.len() >= MAX_LINES {
            return Err(format!("a reply of over {MAX_LINES} lines"));
        }
        self.code = Some(code);
        self.lines.push(printable(text, MAX_LINE));
        if !last {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        self.code = None;
        Ok(Some(Reply { code, lines }))
    }
}

/// Text safe for a terminal and a log: invalid UTF-8 and control characters (an escape
/// sequence in a reply would reach the user's terminal with `-v`) become U+FFFD.
fn printable(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)])
        .chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// The secrets this connection sent (SASL responses, the token or password inside them),
/// taken out of every reply: a server that echoes its input ("535 bad token <base64>")
/// must not put them into stderr, the queue or the log.
#[derive(Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

/// Shorter runs are too common to say they came from a secret.
const MIN_FRAGMENT: usize = 12;

impl Redactor {
    pub fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
        }
    }

    /// `text` with each secret, and each word that holds part of one (an echo cut at a
    /// line limit), replaced by "(redacted)".
    pub fn apply(&self, text: &str) -> String {
        if self.secrets.is_empty() {
            return text.to_string();
        }
        let mut out = text.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "(redacted)");
        }
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(start) = rest.find(is_word) {
            result.push_str(&rest[..start]);
            let word = &rest[start..];
            let end = word.find(|c: char| !is_word(c)).unwrap_or(word.len());
            let word = &word[..end];
            let leaks = word.len() >= MIN_FRAGMENT && self.secrets.iter().any(|s| s.contains(word));
            result.push_str(if leaks { "(redacted)" } else { word });
            rest = &rest[start + end..];
        }
        result.push_str(rest);
        result
    }
}

/// Characters of base64, tokens (JWTs, `ya29.`) and passwords without spaces.
fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+/=._-~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&[u8]]) -> Result<Option<Reply>, String> {
        let mut parser = Parser::default();
        let mut last = Ok(None);
        for line in lines {
            last = parser.line(line);
            if last.is_err() {
                break;
            }
        }
        last
    }

    #[test]
    fn multi_line_replies_keep_every_line() {
        let reply = parse(&[b"250-localhost", b"250-8BITMIME", b"250 AUTH PLAIN"])
            .unwrap()
            .unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines, ["localhost", "8BITMIME", "AUTH PLAIN"]);
        assert_eq!(
            reply.wire_lines().collect::<Vec<_>>(),
            ["250-localhost", "250-8BITMIME", "250 AUTH PLAIN"]
        );
        assert_eq!(reply.to_string(), "250 localhost 8BITMIME AUTH PLAIN");
    }

    #[test]
    fn bare_codes_and_empty_challenges_are_replies() {
        assert_eq!(parse(&[b"334 "]).unwrap().unwrap().first(), "");
        assert_eq!(parse(&[b"235"]).unwrap().unwrap().code, 235);
    }

    #[test]
    fn what_is_not_a_reply_is_an_error() {
        for bad in [
            &b""[..],
            b"25",
            b"hello",
            b"250x",
            b"650 no",
            b"199 no",
            b"2a0 no",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad:?}");
        }
        assert!(parse(&[b"250-a", b"550 b"]).is_err());
        assert!(parse(&[&[b'2'; MAX_LINE + 1]]).is_err());
        let many: Vec<&[u8]> = vec![&b"250-x"[..]; MAX_LINES + 1];
        assert!(parse(&many).is_err());
    }

    #[test]
    fn control_characters_do_not_reach_the_terminal() {
        let reply = parse(&[b"550 \x1b[31mred\xff"]).unwrap().unwrap();
        assert!(!reply.lines[0].contains('\x1b'), "{:?}", reply.lines);
    }

    /// Garbage of every kind ends in a reply or an error, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"2345 -\r\n\x00\xff\xc3a0";
        for _ in 0..20_000 {
            let mut parser = Parser::default();
            for _ in 0..(next() % 8) {
                let len = (next() % 12) as usize;
                let line: Vec<u8> = (0..len)
                    .map(|_| match next() % 3 {
                        0 => next() as u8,
                        _ => alphabet[(next() % alphabet.len() as u64) as usize],
                    })
                    .collect();
                let _ = parser.line(&line);
            }
        }
    }

    #[test]
    fn secrets_and_their_fragments_are_redacted() {
        let mut redactor = Redactor::default();
        redactor.add("dXNlcj1zZW5kZXJAZXhhbXBsZS5jb20BYXV0aD1CZWFyZXIgeWEyOS5URVNU");
        redactor.add("ya29.TEST-token");
        let text = redactor.apply(
            "535 5.7.8 bad dXNlcj1zZW5kZXJAZXhhbXBsZS5jb20BYXV0aD1CZWFyZXIgeWEyOS5URVNU and \
             dXNlcj1zZW5kZXJAZXhhbXBs (cut) for ya29.TEST-token, from sender@example.com",
        );
        assert_eq!(
            text,
            "535 5.7.8 bad (redacted) and (redacted) (cut) for (redacted), from sender@example.com"
        );
        assert_eq!(Redactor::default().apply("250 ok"), "250 ok");
    }
}
