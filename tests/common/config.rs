//! The config file a test writes (per tests/CONTRACT.md), built from typed parts and
//! rendered as TOML with every string escaped, so that a test names the key it changes
//! instead of editing text.

use std::path::{Path, PathBuf};

use super::smtp_server::TEST_USER;

/// A TOML value, as far as the config uses them.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    /// An inline table (`{ file = "..." }`), keys in order.
    Table(Vec<(String, Value)>),
}

impl Value {
    /// `{ file = "PATH" }`: a secret read from a file.
    pub fn file(path: &Path) -> Value {
        Value::Table(vec![("file".into(), path.into())])
    }

    /// `{ command = "CMD" }`: a secret a command prints.
    pub fn command(command: &str) -> Value {
        Value::Table(vec![("command".into(), command.into())])
    }

    fn render(&self) -> String {
        match self {
            Value::Str(s) => quote(s),
            Value::Int(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Table(pairs) => {
                let inner: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{} = {}", key(k), v.render()))
                    .collect();
                format!("{{ {} }}", inner.join(", "))
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::Str(s.clone())
    }
}

impl From<&Path> for Value {
    fn from(p: &Path) -> Value {
        Value::Str(p.to_string_lossy().into_owned())
    }
}

impl From<&PathBuf> for Value {
    fn from(p: &PathBuf) -> Value {
        p.as_path().into()
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Value {
        Value::Int(n.into())
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Value {
        Value::Int(n.into())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

/// Keys in order; setting a key that is there replaces its value in place.
#[derive(Clone, Debug, Default, PartialEq)]
struct Table(Vec<(String, Value)>);

impl Table {
    fn set(&mut self, name: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    /// Removes `name`, which must be there: removing what is not there is a test that no
    /// longer tests what it says.
    fn unset(&mut self, name: &str) {
        let before = self.0.len();
        self.0.retain(|(k, _)| k != name);
        assert_ne!(
            self.0.len(),
            before,
            "no key {name:?} to remove from the test config"
        );
    }

    fn render(&self, out: &mut String) {
        for (k, v) in &self.0 {
            out.push_str(&format!("{} = {}\n", key(k), v.render()));
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Account {
    name: String,
    fields: Table,
    /// `[accounts.NAME.oauth]`, when there is one.
    oauth: Option<Table>,
}

/// A whole config file: top-level keys, `[aliases]`, then each `[accounts.NAME]` (and its
/// `.oauth` table). The methods that name no account change account "test".
/// Removing a key that is not there panics.
#[derive(Clone, Debug, PartialEq)]
pub struct TestConfig {
    top: Table,
    aliases: Table,
    accounts: Vec<Account>,
}

/// The account the methods without an account name change.
const TEST: &str = "test";

impl TestConfig {
    /// The harness's config: domain "example.com", alias root -> admin@example.com, and one
    /// account "test" (provider "custom") at 127.0.0.1:`port`, STARTTLS trusting `ca_file`,
    /// timeout 20, from TEST_USER, with no `auth` yet (see `xoauth2`, `password`, `no_auth`).
    pub fn new(port: u16, ca_file: &Path) -> TestConfig {
        let mut account = Table::default();
        account.set("provider", "custom".into());
        account.set("host", "127.0.0.1".into());
        account.set("port", port.into());
        account.set("tls", "starttls".into());
        account.set("ca_file", ca_file.into());
        account.set("timeout", 20i64.into());
        account.set("from", TEST_USER.into());
        TestConfig {
            top: Table::default(),
            aliases: Table::default(),
            accounts: vec![Account {
                name: TEST.to_string(),
                fields: account,
                oauth: None,
            }],
        }
        .domain("example.com")
        .alias("root", "admin@example.com")
    }

    /// A file with nothing in it.
    pub fn empty() -> TestConfig {
        TestConfig {
            top: Table::default(),
            aliases: Table::default(),
            accounts: Vec::new(),
        }
    }

    /// A top-level key (`queue`, `retry_initial`, `default_account`...).
    pub fn set(mut self, name: &str, value: impl Into<Value>) -> TestConfig {
        self.top.set(name, value.into());
        self
    }

    /// Top-level string keys, in order.
    pub fn settings(self, settings: &[(&str, &str)]) -> TestConfig {
        settings
            .iter()
            .fold(self, |config, (name, value)| config.set(name, *value))
    }

    pub fn unset(mut self, name: &str) -> TestConfig {
        self.top.unset(name);
        self
    }

    pub fn domain(self, domain: &str) -> TestConfig {
        self.set("domain", domain)
    }

    pub fn no_domain(self) -> TestConfig {
        self.unset("domain")
    }

    /// `queue = MODE` (always, never, ...).
    pub fn queue(self, mode: &str) -> TestConfig {
        self.set("queue", mode)
    }

    pub fn alias(mut self, name: &str, to: &str) -> TestConfig {
        self.aliases.set(name, to.into());
        self
    }

    /// No `[aliases]` table at all.
    pub fn no_aliases(mut self) -> TestConfig {
        self.aliases = Table::default();
        self
    }

    /// A key of account "test" (`port`, `timeout`, `provider`, `secret`...).
    pub fn account_field(mut self, name: &str, value: impl Into<Value>) -> TestConfig {
        self.account_mut(TEST).fields.set(name, value.into());
        self
    }

    pub fn account_unset(mut self, name: &str) -> TestConfig {
        self.account_mut(TEST).fields.unset(name);
        self
    }

    pub fn port(self, port: u16) -> TestConfig {
        self.account_field("port", port)
    }

    /// XOAUTH2 as `user` with the token in the file `secret`.
    pub fn xoauth2(self, user: &str, secret: &Path) -> TestConfig {
        self.account_field("user", user)
            .account_field("auth", "xoauth2")
            .account_field("secret", Value::file(secret))
    }

    /// A password login as `user` with the password in the file `secret`.
    pub fn password(self, user: &str, secret: &Path) -> TestConfig {
        self.account_field("user", user)
            .account_field("auth", "password")
            .account_field("secret", Value::file(secret))
    }

    /// `auth = "none"` (a relay that takes mail without a login).
    pub fn no_auth(self) -> TestConfig {
        self.account_field("auth", "none")
    }

    /// A key of `[accounts.test.oauth]`, made (empty) first if there is none.
    pub fn oauth(mut self, name: &str, value: impl Into<Value>) -> TestConfig {
        self.account_mut(TEST)
            .oauth
            .get_or_insert_with(Table::default)
            .set(name, value.into());
        self
    }

    pub fn oauth_unset(mut self, name: &str) -> TestConfig {
        self.account_mut(TEST)
            .oauth
            .as_mut()
            .expect("no [accounts.test.oauth] table in the test config")
            .unset(name);
        self
    }

    /// An empty `[accounts.test.oauth]` table, in place of the one there was.
    pub fn oauth_cleared(mut self) -> TestConfig {
        self.account_mut(TEST).oauth = Some(Table::default());
        self
    }

    /// Account `from` again, as `to` (after the others).
    pub fn copy_account(mut self, from: &str, to: &str) -> TestConfig {
        let mut copy = self.account_mut(from).clone();
        copy.name = to.to_string();
        self.accounts.push(copy);
        self
    }

    /// No account at all.
    pub fn no_accounts(mut self) -> TestConfig {
        self.accounts.clear();
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.top.render(&mut out);
        if !self.aliases.0.is_empty() {
            out.push_str("\n[aliases]\n");
            self.aliases.render(&mut out);
        }
        for account in &self.accounts {
            out.push_str(&format!("\n[accounts.{}]\n", key(&account.name)));
            account.fields.render(&mut out);
            if let Some(oauth) = &account.oauth {
                out.push_str(&format!("\n[accounts.{}.oauth]\n", key(&account.name)));
                oauth.render(&mut out);
            }
        }
        out
    }

    /// Writes the text to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.render())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn account_mut(&mut self, name: &str) -> &mut Account {
        self.accounts
            .iter_mut()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("the test config has no account {name:?}"))
    }
}

/// A TOML key: bare when it may be, else quoted.
fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match bare {
        true => k.to_string(),
        false => quote(k),
    }
}

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
