//! `oauth-sendmail setup`: the configuration written from a few answers (asked on a
//! terminal, or given as flags), with the right owner and modes, then the login and a test
//! message, each run as the program's own command so that they go the way every caller's
//! would; and a list of what was done.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::sys::{files, host, terminal};

/// The configuration every caller on the machine reads (and the system service).
const SYSTEM_CONFIG: &str = "/etc/oauth-sendmail/config.toml";
/// The system service's user and group: the only one besides root that reads the system
/// configuration, and the owner of the secrets it uses.
const SERVICE_USER: &str = "oauth-sendmail";

/// What `setup` was asked (cli.rs's flags; on a terminal, the rest is asked).
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    /// Where to write (default: the system's as root, else the user's).
    pub config: Option<PathBuf>,
    pub non_interactive: bool,
    pub provider: Option<Provider>,
    pub address: Option<String>,
    pub account: Option<String>,
    pub client_id: Option<String>,
    /// Read the client secret from stdin's first line.
    pub client_secret_stdin: bool,
    pub service_account: Option<PathBuf>,
    pub tenant: Option<String>,
    pub store: Option<Store>,
    pub domain: Option<String>,
    pub root_alias: Option<String>,
    pub test_to: Option<String>,
    pub no_login: bool,
    pub force: bool,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub ca_file: Option<PathBuf>,
    pub auth_uri: Option<String>,
    pub token_uri: Option<String>,
    /// The OAuth scopes, separated by spaces (a custom provider has no preset).
    pub scopes: Option<String>,
    /// Passed on to `login`.
    pub device: bool,
    pub no_browser: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Provider {
    Gmail,
    Outlook,
    Custom,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Store {
    Keyring,
    File,
}

/// What the configuration is made of.
#[derive(Debug, Default, PartialEq)]
struct Answers {
    provider: Option<Provider>,
    account: String,
    address: String,
    client_id: Option<String>,
    tenant: Option<String>,
    service_account: Option<PathBuf>,
    store: Option<Store>,
    domain: String,
    root_alias: String,
    host: Option<String>,
    port: Option<u16>,
    ca_file: Option<PathBuf>,
    auth_uri: Option<String>,
    token_uri: Option<String>,
    scopes: Vec<String>,
    /// Where the client secret goes, when there is one.
    client_secret_file: Option<PathBuf>,
}

pub fn run(args: &Options) -> Result<()> {
    let mut ask = Asker {
        interactive: !args.non_interactive && terminal::stdin_is_terminal(),
    };
    let system = args.config.is_none() && host::effective_uid() == 0;
    let path = match &args.config {
        Some(path) => path.clone(),
        None if system => PathBuf::from(SYSTEM_CONFIG),
        None => files::xdg_base("XDG_CONFIG_HOME", ".config")
            .map(|dir| dir.join("oauth-sendmail/config.toml"))
            .ok_or_else(|| {
                Error::new(
                    Kind::Usage,
                    "no place for the configuration",
                    "HOME is not set",
                )
                .hint("name the file with -C FILE")
            })?,
    };
    refuse_to_replace(&path, args.force)?;
    if ask.interactive {
        eprintln!(
            "oauth-sendmail setup: writes {}{}; Enter takes the [default].",
            path.display(),
            if system {
                " (read by every caller on this machine)"
            } else {
                ""
            }
        );
    }
    let (answers, client_secret) = gather(args, &mut ask, system, &path)?;
    let text = render(&answers);
    // Never written unless the program itself loads it.
    Config::parse(&text, &path).map_err(|err| err.within("the configuration setup made"))?;
    let service_ids = match system {
        true => service_ids(),
        false => None,
    };

    let mut done = Vec::new();
    if let (Some(file), Some(secret)) = (&answers.client_secret_file, &client_secret) {
        // Read by whoever sends: the service's user for the system configuration.
        let owner = service_ids.map(|(uid, gid)| (Some(uid), Some(gid)));
        write_file(
            file,
            format!("{}\n", secret.expose()).as_bytes(),
            0o600,
            owner,
        )?;
        done.push(format!(
            "wrote the client secret to {} (mode 0600{})",
            file.display(),
            if owner.is_some() {
                ", owner oauth-sendmail"
            } else {
                ""
            }
        ));
    }
    let (mode, owner) = match service_ids {
        Some((_, gid)) => (0o640, Some((Some(0), Some(gid)))),
        None => (0o600, None),
    };
    write_file(&path, text.as_bytes(), mode, owner)?;
    done.push(format!(
        "wrote {} (mode {mode:o}{})",
        path.display(),
        if owner.is_some() {
            ", root:oauth-sendmail"
        } else {
            ""
        }
    ));

    // A running service reads its configuration again (ExecReload: SIGHUP); a stopped
    // one reads it when it starts.
    if system && Path::new("/run/systemd/system").exists() {
        let mut reload = Command::new("systemctl");
        reload.args(["try-reload-or-restart", "oauth-sendmail.service"]);
        if run_step(
            reload,
            Some(b""),
            "the service did not take the new configuration",
        )
        .is_ok()
        {
            done.push("had the system service (if running) read it again".to_string());
        }
    }

    // The same command line a person would type, so that the login and the test go where
    // every caller's mail goes (the system service, once installed) and not around it.
    let config_args: Vec<&std::ffi::OsStr> = match &args.config {
        Some(path) => vec!["-C".as_ref(), path.as_os_str()],
        None => vec![],
    };
    let needs_login = answers.service_account.is_none();
    if !args.no_login && needs_login {
        let mut login = own_command()?;
        login
            .arg("login")
            .args(&config_args)
            .args(["--account", &answers.account]);
        if args.device {
            login.arg("--device");
        }
        if args.no_browser {
            login.arg("--no-browser");
        }
        run_step(login, None, "the login failed")?;
        done.push(format!(
            "logged in account `{}` ({})",
            answers.account, answers.address
        ));
    }
    let test_to = match (&args.test_to, args.no_login) {
        (Some(to), _) => Some(to.clone()),
        (None, false) => ask.optional(
            "Send a test message to (empty: none)",
            Some(&answers.address),
        )?,
        (None, true) => None,
    };
    if let Some(to) = test_to {
        let mut send = own_command()?;
        send.arg("send").args(&config_args).args(["-i", "--", &to]);
        let message = test_message(&to, &answers.address);
        run_step(
            send,
            Some(message.as_bytes()),
            "the test message was not sent",
        )?;
        done.push(format!(
            "sent a test message to {to} (sendmail took it; `oauth-sendmail log` shows its delivery)"
        ));
    }

    let mut out = std::io::stdout().lock();
    let mut report = String::from("oauth-sendmail setup:\n");
    for line in &done {
        let _ = writeln!(report, "  {line}");
    }
    if system {
        report.push_str(
            "  every caller of /usr/sbin/sendmail on this machine now sends through it; \
             after a change: systemctl reload oauth-sendmail\n",
        );
    }
    out.write_all(report.as_bytes())
        .map_err(super::stdout_error)
}

/// An existing configuration with an account is kept unless `--force`: the package's
/// (all comments) is not.
fn refuse_to_replace(path: &Path, force: bool) -> Result<()> {
    let Ok(existing) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let has_account = Config::parse(&existing, path)
        .map(|config| !config.accounts.is_empty())
        .unwrap_or(true);
    match has_account && !force {
        true => Err(Error::new(
            Kind::CannotCreate,
            format!("{} exists", path.display()),
            "it already configures an account",
        )
        .hint("run again with --force to replace it, or edit it")),
        false => Ok(()),
    }
}

/// Each answer from its flag, else asked (on a terminal), else its default; the client
/// secret apart, never in `Answers` (which Debug could print).
fn gather(
    args: &Options,
    ask: &mut Asker,
    system: bool,
    path: &Path,
) -> Result<(Answers, Option<crate::secret::Secret>)> {
    let provider = match args.provider {
        Some(provider) => provider,
        None => match ask
            .optional("Provider (gmail, outlook, custom)", Some("gmail"))?
            .as_deref()
        {
            Some("gmail") | None => Provider::Gmail,
            Some("outlook") => Provider::Outlook,
            Some("custom") => Provider::Custom,
            Some(other) => {
                return Err(Error::new(
                    Kind::Usage,
                    format!("unknown provider `{other}`"),
                    "the choices are gmail, outlook and custom",
                ))
            }
        },
    };
    let name = match provider {
        Provider::Gmail => "gmail",
        Provider::Outlook => "outlook",
        Provider::Custom => "custom",
    };
    let address = ask.required(
        args.address.clone(),
        "Address of the account (login and sender)",
    )?;
    if !address.contains('@') {
        return Err(Error::new(
            Kind::Usage,
            format!("`{address}` is not an address"),
            "it has no @domain",
        ));
    }
    let mut answers = Answers {
        provider: Some(provider),
        account: args.account.clone().unwrap_or_else(|| name.to_string()),
        address: address.clone(),
        host: args.host.clone(),
        port: args.port,
        ca_file: args.ca_file.clone(),
        auth_uri: args.auth_uri.clone(),
        token_uri: args.token_uri.clone(),
        scopes: args.scopes.as_deref().map(words).unwrap_or_default(),
        ..Answers::default()
    };
    if provider == Provider::Custom {
        answers.host = Some(ask.required(answers.host.take(), "SMTP server")?);
        answers.auth_uri = Some(ask.required(answers.auth_uri.take(), "Authorization URL")?);
        answers.token_uri = Some(ask.required(answers.token_uri.take(), "Token URL")?);
        if answers.scopes.is_empty() {
            let scopes = ask.required(None, "OAuth scopes (separated by spaces)")?;
            answers.scopes = words(&scopes);
        }
    }
    answers.service_account = match (&args.service_account, provider) {
        (Some(key), _) => Some(key.clone()),
        (None, Provider::Gmail) if args.client_id.is_none() && !args.client_secret_stdin => ask
            .optional(
                "Google service account key file (empty: log in with an OAuth client)",
                None,
            )?
            .map(PathBuf::from),
        (None, _) => None,
    };
    let mut client_secret = None;
    if answers.service_account.is_none() {
        answers.client_id = Some(ask.required(args.client_id.clone(), "OAuth client id")?);
        if provider == Provider::Outlook {
            answers.tenant = match &args.tenant {
                Some(tenant) => Some(tenant.clone()),
                None => {
                    ask.optional("Microsoft tenant (directory id or domain)", Some("common"))?
                }
            };
        }
        let secret = match args.client_secret_stdin {
            true => Some(
                terminal::read_line(true)
                    .map_err(stdin_error)?
                    .unwrap_or_default(),
            ),
            false => ask.secret("OAuth client secret (empty: none)")?,
        };
        client_secret = secret
            .map(|line| line.trim().to_string())
            .filter(|line| !line.is_empty())
            .map(|line| crate::secret::Secret::new(&line));
        if client_secret.is_some() {
            let dir = path.parent().unwrap_or(Path::new("."));
            answers.client_secret_file =
                Some(dir.join(format!("{}-client-secret", answers.account)));
        }
        answers.store = Some(match (args.store, system) {
            (Some(store), _) => store,
            // A service has no keyring to reach.
            (None, true) => Store::File,
            (None, false) => match ask
                .optional("Token store (keyring, file)", Some("keyring"))?
                .as_deref()
            {
                Some("file") => Store::File,
                _ => Store::Keyring,
            },
        });
    }
    let address_domain = address.rsplit('@').next().unwrap_or_default().to_string();
    answers.domain = match &args.domain {
        Some(domain) => domain.clone(),
        None => ask
            .optional(
                "Domain for unqualified recipients (cron's root)",
                Some(&address_domain),
            )?
            .unwrap_or(address_domain),
    };
    answers.root_alias = match &args.root_alias {
        Some(alias) => alias.clone(),
        None => ask
            .optional("Where mail to root goes", Some(&address))?
            .unwrap_or(address),
    };
    Ok((answers, client_secret))
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// The configuration's text: commented, every value quoted as TOML wants it.
fn render(a: &Answers) -> String {
    let mut t = String::from(
        "# Written by `oauth-sendmail setup`; every key is described in oauth-sendmail.toml(5).\n\n",
    );
    let _ = writeln!(
        t,
        "# Unqualified recipients (cron's \"root\") get this domain."
    );
    let _ = writeln!(t, "domain = {}", quote(&a.domain));
    let _ = writeln!(t, "default_account = {}\n", quote(&a.account));
    let _ = writeln!(t, "[aliases]\nroot = {}\n", quote(&a.root_alias));
    let provider = match a.provider {
        Some(Provider::Outlook) => "outlook",
        Some(Provider::Custom) => "custom",
        _ => "gmail",
    };
    let _ = writeln!(t, "[accounts.{}]", quote(&a.account));
    let _ = writeln!(t, "provider = {}", quote(provider));
    let _ = writeln!(t, "from = {}", quote(&a.address));
    if let Some(host) = &a.host {
        let _ = writeln!(t, "host = {}", quote(host));
    }
    if let Some(port) = a.port {
        let _ = writeln!(t, "port = {port}");
    }
    if let Some(ca_file) = &a.ca_file {
        let _ = writeln!(t, "ca_file = {}", quote(&ca_file.to_string_lossy()));
    }
    let _ = writeln!(t, "\n[accounts.{}.oauth]", quote(&a.account));
    if let Some(key) = &a.service_account {
        let _ = writeln!(t, "service_account = {}", quote(&key.to_string_lossy()));
    }
    if let Some(id) = &a.client_id {
        let _ = writeln!(t, "client_id = {}", quote(id));
    }
    if let Some(file) = &a.client_secret_file {
        let _ = writeln!(
            t,
            "client_secret = {{ file = {} }}",
            quote(&file.to_string_lossy())
        );
    }
    if let Some(tenant) = &a.tenant {
        let _ = writeln!(t, "tenant = {}", quote(tenant));
    }
    for (key, value) in [("auth_uri", &a.auth_uri), ("token_uri", &a.token_uri)] {
        if let Some(value) = value {
            let _ = writeln!(t, "{key} = {}", quote(value));
        }
    }
    if !a.scopes.is_empty() {
        let scopes: Vec<String> = a.scopes.iter().map(|scope| quote(scope)).collect();
        let _ = writeln!(t, "scopes = [{}]", scopes.join(", "));
    }
    match a.store {
        Some(Store::File) => t.push_str("store = \"file\"\n"),
        Some(Store::Keyring) => t.push_str("store = \"keyring\"\n"),
        None => {}
    }
    t
}

/// A TOML basic string.
fn quote(value: &str) -> String {
    let mut quoted = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04X}", c as u32);
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The uid and gid of the service's user, when the package made it.
fn service_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [name, _, uid, gid, ..] if *name == SERVICE_USER => {
                Some((uid.parse().ok()?, gid.parse().ok()?))
            }
            _ => None,
        }
    })
}

/// Replaces `path` with `bytes` at `mode`, owned by `owner`: never readable by others in
/// between (the temporary file is 0600 until its owner and mode are set), whole or not at
/// all after a crash. The directory is made 0755 when missing (/etc/oauth-sendmail).
fn write_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(Option<u32>, Option<u32>)>,
) -> Result<()> {
    let cannot = |e: std::io::Error| {
        Error::new(
            Kind::CannotCreate,
            format!("cannot write {}", path.display()),
            e,
        )
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(cannot)?;
    let temporary = dir.join(format!(".setup.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(&file, uid, gid)?;
            }
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path))
        .and_then(|()| files::sync_dir(dir));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(cannot(e));
    }
    Ok(())
}

/// This program, to run one of its commands.
fn own_command() -> Result<Command> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::new(Kind::Internal, "cannot find this program", e))?;
    Ok(Command::new(exe))
}

/// Runs a command of ours on our terminal (stdin inherited, unless `input` is given) and
/// fails with its exit status, which it has explained on stderr.
fn run_step(mut command: Command, input: Option<&[u8]>, what: &str) -> Result<()> {
    let failed = |e: std::io::Error| Error::new(Kind::Internal, what.to_string(), e);
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().map_err(failed)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).map_err(failed)?;
    }
    let status = child.wait().map_err(failed)?;
    match status.code() {
        Some(0) => Ok(()),
        code => Err(Error::new(
            code.map_or(Kind::Internal, kind_of_exit),
            what.to_string(),
            format!(
                "it exited with {}, saying why above",
                code.map_or("a signal".to_string(), |c| c.to_string())
            ),
        )),
    }
}

/// The kind whose exit status the command exited with (error.rs alone maps kinds to
/// statuses), so that setup exits as the step that failed did.
fn kind_of_exit(code: i32) -> Kind {
    Kind::ALL
        .into_iter()
        .find(|&kind| i32::from(Error::new(kind, "", "").exit_code()) == code)
        .unwrap_or(Kind::Internal)
}

fn test_message(to: &str, from: &str) -> String {
    let host = host::name().unwrap_or_else(|| "this machine".to_string());
    format!(
        "From: {from}\nTo: {to}\nSubject: oauth-sendmail setup test from {host}\n\n\
         This message was sent by `oauth-sendmail setup` on {host}: mail from this machine \
         goes out through {from}.\n"
    )
}

fn stdin_error(e: std::io::Error) -> Error {
    Error::new(Kind::Usage, "cannot read stdin", e)
}

/// The questions, asked only on a terminal; without one, a missing answer is an error
/// naming the flag.
struct Asker {
    interactive: bool,
}

impl Asker {
    /// The answer, or `default` when none is typed (or no terminal).
    fn optional(&mut self, question: &str, default: Option<&str>) -> Result<Option<String>> {
        if !self.interactive {
            return Ok(default.map(str::to_string));
        }
        match default {
            Some(default) => eprint!("{question} [{default}]: "),
            None => eprint!("{question}: "),
        }
        let line = terminal::read_line(false)
            .map_err(stdin_error)?
            .unwrap_or_default();
        let line = line.trim();
        Ok(match line.is_empty() {
            true => default.map(str::to_string),
            false => Some(line.to_string()),
        })
    }

    /// The flag's value, else the answer, asked until there is one.
    fn required(&mut self, flag: Option<String>, question: &str) -> Result<String> {
        if let Some(value) = flag {
            return Ok(value);
        }
        if !self.interactive {
            let flag = question_flag(question);
            return Err(Error::new(
                Kind::Usage,
                format!("setup needs {flag}"),
                "stdin is not a terminal (or --non-interactive), so nothing is asked",
            ));
        }
        loop {
            eprint!("{question}: ");
            match terminal::read_line(false).map_err(stdin_error)? {
                None => return Err(Error::new(Kind::Usage, "setup stopped", "end of input")),
                Some(line) if !line.trim().is_empty() => return Ok(line.trim().to_string()),
                Some(_) => {}
            }
        }
    }

    /// A secret, typed with the echo off; `None` without a terminal.
    fn secret(&mut self, question: &str) -> Result<Option<String>> {
        if !self.interactive {
            return Ok(None);
        }
        eprint!("{question} (not shown): ");
        terminal::read_line(true).map_err(stdin_error)
    }
}

/// The flag that answers a required question, for the error without a terminal.
fn question_flag(question: &str) -> &'static str {
    match question {
        "SMTP server" => "--host",
        "Authorization URL" => "--auth-uri",
        "Token URL" => "--token-uri",
        "OAuth scopes (separated by spaces)" => "--scopes",
        "OAuth client id" => "--client-id (or --service-account)",
        _ => "--address",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn answers() -> Answers {
        Answers {
            provider: Some(Provider::Outlook),
            account: "outlook".into(),
            address: "me@contoso.com".into(),
            client_id: Some("00000000-0000".into()),
            tenant: Some("contoso.com".into()),
            store: Some(Store::File),
            domain: "contoso.com".into(),
            root_alias: "ops \"on call\"@contoso.com".into(),
            client_secret_file: Some("/etc/oauth-sendmail/outlook-client-secret".into()),
            ..Answers::default()
        }
    }

    #[test]
    fn what_setup_writes_loads_as_asked() {
        let text = render(&answers());
        let config = Config::parse(&text, Path::new("/etc/oauth-sendmail/config.toml")).unwrap();
        let account = config.choose_account(None, None).unwrap();
        assert_eq!(account.name, "outlook");
        assert_eq!(account.addresses, vec!["me@contoso.com"]);
        assert_eq!(account.host, "smtp.office365.com");
        assert_eq!(config.domain.as_deref(), Some("contoso.com"));
        assert_eq!(
            config.aliases.get("root").map(|to| to.as_slice()),
            Some(&["ops \"on call\"@contoso.com".to_string()][..])
        );
        assert!(
            text.contains(
                "client_secret = { file = \"/etc/oauth-sendmail/outlook-client-secret\" }"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_service_account_has_no_client() {
        let text = render(&Answers {
            provider: Some(Provider::Gmail),
            client_id: None,
            tenant: None,
            store: None,
            client_secret_file: None,
            service_account: Some("/etc/oauth-sendmail/sa-key.json".into()),
            ..answers()
        });
        Config::parse(&text, Path::new("/c.toml")).unwrap();
        assert!(!text.contains("client_id"), "{text}");
    }

    #[test]
    fn a_custom_provider_gets_its_endpoints_and_scopes() {
        let text = render(&Answers {
            provider: Some(Provider::Custom),
            account: "custom".into(),
            tenant: None,
            host: Some("smtp.example.net".into()),
            auth_uri: Some("https://login.example.net/authorize".into()),
            token_uri: Some("https://login.example.net/token".into()),
            scopes: words("smtp.send offline_access"),
            ..answers()
        });
        let config = Config::parse(&text, Path::new("/c.toml")).unwrap();
        let account = config.choose_account(None, None).unwrap();
        assert_eq!(account.host, "smtp.example.net");
        assert!(
            text.contains("scopes = [\"smtp.send\", \"offline_access\"]"),
            "{text}"
        );
    }

    #[test]
    fn quoting_survives_what_toml_escapes() {
        for value in ["plain", "a\"b", "back\\slash", "tab\there", "new\nline"] {
            let parsed: toml::Value = toml::from_str(&format!("v = {}", quote(value))).unwrap();
            assert_eq!(parsed["v"].as_str(), Some(value));
        }
    }

    /// The package's /etc/oauth-sendmail/config.toml loads as it is (no account yet), so
    /// setup may replace it without --force.
    #[test]
    fn the_packaged_system_configuration_loads_and_may_be_replaced() {
        let text = include_str!("../../contrib/config.system.toml");
        let config = Config::parse(text, Path::new(SYSTEM_CONFIG)).unwrap();
        assert!(config.accounts.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        refuse_to_replace(&path, false).unwrap();
        std::fs::write(&path, render(&answers())).unwrap();
        assert!(refuse_to_replace(&path, false).is_err());
        refuse_to_replace(&path, true).unwrap();
    }

    #[test]
    fn files_get_their_mode_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        write_file(&path, b"x = 1\n", 0o640, None).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o640);
        assert_eq!(metadata.uid(), host::effective_uid());
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }
}
