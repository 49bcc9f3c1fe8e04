//! Addresses: parsing the address lists of headers and argv, and resolving unqualified
//! names (`root`, `Logwatch`): a recipient through the aliases, then the configured
//! domain; a sender through the domain only (Postfix's rule: aliases are for recipients).

use std::collections::BTreeMap;

use mail_parser::{Address, MessageParser};

use crate::error::{Error, Kind, Result};

/// One mailbox of an address list: an optional display name and the address.
#[derive(Clone, Debug, PartialEq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

/// An entry of an address list; groups (`undisclosed:;`) keep their name.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Mailbox(Mailbox),
    Group { name: String, members: Vec<Mailbox> },
}

impl Entry {
    pub fn mailboxes(&self) -> &[Mailbox] {
        match self {
            Entry::Mailbox(mailbox) => std::slice::from_ref(mailbox),
            Entry::Group { members, .. } => members,
        }
    }
}

/// Parses an RFC 5322 address list (a header's value, or an argv recipient such as
/// `a@x.org, Bob <b@x.org>`), comments, groups and RFC 2047 names included.
pub fn parse_list(value: &[u8]) -> Vec<Entry> {
    let mut field = Vec::with_capacity(value.len() + 8);
    field.extend_from_slice(b"To: ");
    field.extend_from_slice(value);
    field.extend_from_slice(b"\r\n\r\n");
    let Some(message) = MessageParser::new().parse_headers(&field) else {
        return Vec::new();
    };
    let mailbox = |addr: &mail_parser::Addr| {
        let name = addr
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        match addr
            .address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            Some(address) => Some(Mailbox {
                name: name.map(str::to_string),
                address: address.to_string(),
            }),
            // mail-parser reads a bare local name (`To: root`) as a display name.
            None => name
                .filter(|word| !word.contains(char::is_whitespace))
                .map(|word| Mailbox {
                    name: None,
                    address: word.to_string(),
                }),
        }
    };
    match message.to() {
        None => Vec::new(),
        Some(Address::List(list)) => list
            .iter()
            .filter_map(mailbox)
            .map(Entry::Mailbox)
            .collect(),
        Some(Address::Group(groups)) => groups
            .iter()
            .flat_map(|group| {
                let members: Vec<Mailbox> = group.addresses.iter().filter_map(mailbox).collect();
                match &group.name {
                    Some(name) => vec![Entry::Group {
                        name: name.to_string(),
                        members,
                    }],
                    None => members.into_iter().map(Entry::Mailbox).collect(),
                }
            })
            .collect(),
    }
}

pub fn is_qualified(address: &str) -> bool {
    address.contains('@')
}

/// Turns the addresses people and programs write into ones a server accepts.
pub struct Resolver<'a> {
    aliases: &'a BTreeMap<String, Vec<String>>,
    domain: Option<&'a str>,
}

/// Aliases pointing at aliases: deeper than this is a loop.
const MAX_ALIAS_DEPTH: usize = 8;

impl<'a> Resolver<'a> {
    pub fn new(
        aliases: &'a BTreeMap<String, Vec<String>>,
        domain: Option<&'a str>,
    ) -> Resolver<'a> {
        Resolver { aliases, domain }
    }

    /// The addresses a recipient stands for: itself when qualified, else its alias, else
    /// the catch-all alias `*`, else itself at the configured domain.
    pub fn recipient(&self, address: &str) -> Result<Vec<String>> {
        self.expand(address, 0)
    }

    fn expand(&self, address: &str, depth: usize) -> Result<Vec<String>> {
        if is_qualified(address) {
            check_syntax(address)?;
            return Ok(vec![address.to_string()]);
        }
        if depth >= MAX_ALIAS_DEPTH {
            return Err(Error::new(
                Kind::Config,
                format!("alias `{address}`"),
                "aliases refer to each other in a loop",
            ));
        }
        let local = address.to_ascii_lowercase();
        if let Some(targets) = self.aliases.get(&local).or_else(|| self.aliases.get("*")) {
            let mut out = Vec::new();
            for target in targets {
                out.extend(self.expand(target, depth + 1)?);
            }
            return Ok(out);
        }
        match self.domain {
            Some(domain) => {
                let qualified = format!("{address}@{domain}");
                check_syntax(&qualified)?;
                Ok(vec![qualified])
            }
            None => Err(Error::new(
                Kind::RecipientRefused,
                format!("recipient `{address}` has no domain"),
                "it is not an alias and no `domain` is configured",
            )
            .hint(format!(
                "add it under [aliases] ({local} = \"you@example.com\") or set domain = \"example.com\" in the configuration"
            ))),
        }
    }

    /// The address to send as for a sender name (`-f root`, `From: root`): itself when
    /// qualified, else itself at the configured domain, else `fallback` (the account's own
    /// address), since a local user has no mailbox out there. Aliases are not applied:
    /// they say where mail *to* a name goes, not who a name is (Postfix's rule too), so
    /// `root` sends as `root@domain` even when mail to root goes to admin@example.com.
    pub fn sender(&self, address: &str, fallback: &str) -> String {
        if is_qualified(address) {
            return address.to_string();
        }
        match self.domain {
            Some(domain) => {
                let qualified = format!("{address}@{domain}");
                match check_syntax(&qualified) {
                    Ok(()) => qualified,
                    Err(_) => fallback.to_string(),
                }
            }
            None => fallback.to_string(),
        }
    }
}

/// Rejects what no server would take: no local part, no domain, spaces, control bytes.
pub fn check_syntax(address: &str) -> Result<()> {
    address
        .parse::<lettre::Address>()
        .map(drop)
        .map_err(|e| Error::new(Kind::BadInput, format!("bad address `{address}`"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases() -> BTreeMap<String, Vec<String>> {
        let mut map = BTreeMap::new();
        map.insert("root".to_string(), vec!["admin@example.com".to_string()]);
        map.insert(
            "ops".to_string(),
            vec!["root".to_string(), "b@example.com".to_string()],
        );
        map.insert("loop".to_string(), vec!["loop".to_string()]);
        map
    }

    #[test]
    fn parses_names_comments_groups_and_encoded_words() {
        let list = parse_list(
            b"\"(Cron Daemon)\" <root>, =?UTF-8?Q?J=C3=B6rg?= <j@x.org>, a@b.c (comment)",
        );
        let boxes: Vec<&Mailbox> = list.iter().flat_map(Entry::mailboxes).collect();
        assert_eq!(boxes[0].address, "root");
        assert_eq!(boxes[0].name.as_deref(), Some("(Cron Daemon)"));
        assert_eq!(boxes[1].name.as_deref(), Some("Jörg"));
        assert_eq!(boxes[2].address, "a@b.c");
        let group = parse_list(b"undisclosed-recipients:;");
        assert!(group.iter().all(|e| e.mailboxes().is_empty()));
        let team = parse_list(b"team: a@x.org, b@x.org;");
        assert_eq!(
            team[0],
            Entry::Group {
                name: "team".into(),
                members: vec![
                    Mailbox {
                        name: None,
                        address: "a@x.org".into()
                    },
                    Mailbox {
                        name: None,
                        address: "b@x.org".into()
                    }
                ]
            }
        );
    }

    #[test]
    fn garbage_parses_to_nothing_rather_than_panicking() {
        for input in [&b""[..], b"<<<", b":;:;", b"\xff\xfe", b"\"unterminated"] {
            let _ = parse_list(input);
        }
    }

    #[test]
    fn aliases_then_domain_then_error() {
        let aliases = aliases();
        let with_domain = Resolver::new(&aliases, Some("example.com"));
        assert_eq!(
            with_domain.recipient("root").unwrap(),
            ["admin@example.com"]
        );
        assert_eq!(
            with_domain.recipient("ROOT").unwrap(),
            ["admin@example.com"]
        );
        assert_eq!(
            with_domain.recipient("ops").unwrap(),
            ["admin@example.com", "b@example.com"]
        );
        assert_eq!(
            with_domain.recipient("alice").unwrap(),
            ["alice@example.com"]
        );
        assert_eq!(with_domain.recipient("x@y.org").unwrap(), ["x@y.org"]);
        let without = Resolver::new(&aliases, None);
        let err = without.recipient("alice").unwrap_err();
        assert_eq!(err.exit_code(), 67);
        assert!(err.to_string().contains("[aliases]"), "{err}");
        assert!(without.recipient("loop").is_err());
    }

    #[test]
    fn catch_all_alias() {
        let mut aliases = aliases();
        aliases.insert("*".into(), vec!["all@example.com".into()]);
        let resolver = Resolver::new(&aliases, None);
        assert_eq!(resolver.recipient("nobody").unwrap(), ["all@example.com"]);
        assert_eq!(resolver.recipient("root").unwrap(), ["admin@example.com"]);
    }

    #[test]
    fn senders_are_qualified_not_aliased() {
        let aliases = aliases();
        let resolver = Resolver::new(&aliases, None);
        assert_eq!(resolver.sender("root", "me@gmail.com"), "me@gmail.com");
        assert_eq!(resolver.sender("Logwatch", "me@gmail.com"), "me@gmail.com");
        assert_eq!(resolver.sender("ops", "me@gmail.com"), "me@gmail.com");
        assert_eq!(resolver.sender("a@x.org", "me@gmail.com"), "a@x.org");
        let qualified = Resolver::new(&aliases, Some("example.com"));
        assert_eq!(
            qualified.sender("Logwatch", "me@gmail.com"),
            "Logwatch@example.com"
        );
        // An alias says where mail to root goes, not who root is.
        assert_eq!(qualified.sender("root", "me@gmail.com"), "root@example.com");
        assert_eq!(qualified.sender("ops", "me@gmail.com"), "ops@example.com");
        assert_eq!(qualified.sender("a b", "me@gmail.com"), "me@gmail.com");
    }

    #[test]
    fn bad_syntax_is_bad_input() {
        assert_eq!(
            Resolver::new(&aliases(), None)
                .recipient("a b@x.org")
                .unwrap_err()
                .exit_code(),
            65
        );
        assert_eq!(check_syntax("@x.org").unwrap_err().exit_code(), 65);
    }
}
