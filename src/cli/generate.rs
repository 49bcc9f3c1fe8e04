//! What man/ and completions/ hold, made from the clap definition so that they cannot
//! drift from it: `generated_files_are_current` compares and, with UPDATE_GENERATED=1,
//! rewrites them. Only tests build this.

use std::path::{Path, PathBuf};

use clap::{ArgAction, CommandFactory};
use clap_complete::Shell;

use super::{command, mailq_command, newaliases_command, SendmailCli};
use crate::error::{Error, Kind};

/// Every generated file under `root`, with the bytes it must hold.
pub fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = man_pages(root);
    for (shell, file) in [
        (Shell::Bash, "oauth-sendmail.bash"),
        (Shell::Zsh, "_oauth-sendmail"),
        (Shell::Fish, "oauth-sendmail.fish"),
    ] {
        files.push((root.join("completions").join(file), completion(shell)));
    }
    files
}

/// The completion script for `shell`.
fn completion(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    if shell != Shell::Bash {
        clap_complete::generate(shell, &mut command(), "oauth-sendmail", &mut script);
        return script;
    }
    // clap_complete (4.6.12 still, clap-rs/clap#6421) spells the state of a hyphenated
    // name one way in its loop (`oauth__sendmail__subcmd__queue`) and another in its case
    // arms (`oauth__subcmd__sendmail__subcmd__queue`), so nothing past the command name
    // completes. Made for a name without a hyphen, the script is consistent; only the
    // `complete` lines, which bind it to the command, need the real name.
    clap_complete::generate(shell, &mut command(), PLACEHOLDER, &mut script);
    let script = String::from_utf8(script).unwrap();
    let binding = format!(" -o default {PLACEHOLDER}\n");
    assert_eq!(script.matches(&binding).count(), 2, "{script}");
    script
        .replace(&binding, " -o default oauth-sendmail\n")
        .into_bytes()
}

const PLACEHOLDER: &str = "oauth_sendmail";

/// The manual pages: one per command and name, from the clap definitions, with the
/// sections clap knows nothing of written once below.
fn man_pages(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let own = built(command());
    let sub = |name: &str| own.find_subcommand(name).unwrap().clone();
    let pages = [
        Page {
            file: "oauth-sendmail",
            cmd: own.clone(),
            configuration: true,
            examples: &[EXAMPLES_MAIN, EXAMPLE_CRONTAB],
            see_also: &[
                "oauth-sendmail.toml(5)",
                "sendmail(8)",
                "mailq(8)",
                "newaliases(8)",
                "crontab(5)",
            ],
        },
        Page {
            file: "oauth-sendmail-send",
            cmd: sub("send"),
            configuration: true,
            examples: &[EXAMPLES_SEND],
            see_also: &["oauth-sendmail(8)", "sendmail(8)", "oauth-sendmail.toml(5)"],
        },
        Page {
            file: "oauth-sendmail-queue",
            cmd: sub("queue"),
            configuration: false,
            examples: &[EXAMPLES_QUEUE, EXAMPLE_CRONTAB],
            see_also: &["oauth-sendmail(8)", "mailq(8)", "sendmail(8)", "crontab(5)"],
        },
        Page {
            file: "oauth-sendmail-log",
            cmd: sub("log"),
            configuration: false,
            examples: &[EXAMPLES_LOG],
            see_also: &["oauth-sendmail(8)", "oauth-sendmail-queue(8)"],
        },
        Page {
            file: "oauth-sendmail-login",
            cmd: sub("login"),
            configuration: true,
            examples: &[EXAMPLES_LOGIN],
            see_also: &[
                "oauth-sendmail(8)",
                "oauth-sendmail-status(8)",
                "oauth-sendmail-logout(8)",
                "oauth-sendmail.toml(5)",
                "ssh(1)",
            ],
        },
        Page {
            file: "oauth-sendmail-logout",
            cmd: sub("logout"),
            configuration: false,
            examples: &[EXAMPLES_LOGOUT],
            see_also: &["oauth-sendmail(8)", "oauth-sendmail-login(8)"],
        },
        Page {
            file: "oauth-sendmail-status",
            cmd: sub("status"),
            configuration: true,
            examples: &[EXAMPLES_STATUS],
            see_also: &[
                "oauth-sendmail(8)",
                "oauth-sendmail-login(8)",
                "oauth-sendmail.toml(5)",
            ],
        },
        Page {
            file: "oauth-sendmail-daemon",
            cmd: sub("daemon"),
            configuration: true,
            examples: &[EXAMPLES_DAEMON],
            see_also: &[
                "oauth-sendmail(8)",
                "oauth-sendmail.toml(5)",
                "systemctl(1)",
            ],
        },
        Page {
            file: "oauth-sendmail-setup",
            cmd: sub("setup"),
            configuration: true,
            examples: &[EXAMPLES_SETUP],
            see_also: &[
                "oauth-sendmail(8)",
                "oauth-sendmail-login(8)",
                "oauth-sendmail.toml(5)",
            ],
        },
        Page {
            file: "oauth-sendmail-device",
            cmd: sub("device"),
            configuration: true,
            examples: &[EXAMPLES_DEVICE],
            see_also: &["oauth-sendmail-daemon(8)", "oauth-sendmail.toml(5)"],
        },
        Page {
            file: "sendmail",
            cmd: built(SendmailCli::command()),
            configuration: true,
            examples: &[EXAMPLES_SEND],
            see_also: &[
                "oauth-sendmail(8)",
                "mailq(8)",
                "newaliases(8)",
                "oauth-sendmail.toml(5)",
            ],
        },
        Page {
            file: "mailq",
            cmd: built(mailq_command()),
            configuration: false,
            examples: &[EXAMPLES_MAILQ],
            see_also: &[
                "oauth-sendmail-queue(8)",
                "sendmail(8)",
                "oauth-sendmail(8)",
            ],
        },
        Page {
            file: "newaliases",
            cmd: built(newaliases_command()),
            configuration: true,
            examples: &[EXAMPLES_NEWALIASES],
            see_also: &["oauth-sendmail.toml(5)", "sendmail(8)", "oauth-sendmail(8)"],
        },
    ];
    pages
        .into_iter()
        .map(|page| {
            let file = root.join(format!("man/{}.8", page.file));
            (file, page.render().into_bytes())
        })
        .collect()
}

fn built(mut cmd: clap::Command) -> clap::Command {
    cmd.build();
    cmd
}

/// One page of section 8: a command, or one of the names the binary answers to.
struct Page {
    /// The page's name (`oauth-sendmail-queue`), its file without `.8`.
    file: &'static str,
    /// Built, so that the global options are in each subcommand.
    cmd: clap::Command,
    /// Whether the page has a CONFIGURATION section (commands that send or read accounts).
    configuration: bool,
    /// Raw roff, one piece after the other.
    examples: &'static [&'static str],
    see_also: &'static [&'static str],
}

impl Page {
    fn render(&self) -> String {
        let cmd = &self.cmd;
        // As typed: `oauth-sendmail queue`, `sendmail`.
        let typed = match self.file.strip_prefix("oauth-sendmail-") {
            Some(sub) => format!("oauth-sendmail {sub}"),
            None => self.file.to_string(),
        };
        let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
        let mut page = format!(
            "{AQ}.TH {} 8 \"\" \"oauth-sendmail {VERSION}\" \"System Manager's Manual\"\n\
             .SH NAME\n{} \\- {}\n.SH SYNOPSIS\n",
            esc(&self.file.to_uppercase()),
            esc(self.file),
            esc(&about)
        );
        let subcommands: Vec<&clap::Command> = cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
            .collect();
        if self.file == "oauth-sendmail" {
            page.push_str(&format!(
                "{} \\fICOMMAND\\fR [\\fIOPTIONS\\fR]\n.br\n\
                 \\fBsendmail\\fR [\\fIOPTIONS\\fR] [\\fIRECIPIENT\\fR...]\n.br\n\
                 \\fBmailq\\fR\n.br\n\\fBnewaliases\\fR\n",
                synopsis(&typed, cmd)
            ));
        } else if subcommands.is_empty() {
            page.push_str(&synopsis(&typed, cmd));
            page.push('\n');
        } else {
            let lines: Vec<String> = subcommands
                .iter()
                .map(|s| synopsis(&format!("{typed} {}", s.get_name()), s))
                .collect();
            page.push_str(&lines.join("\n.br\n"));
            page.push('\n');
        }
        page.push_str(".SH DESCRIPTION\n");
        let description = cmd.get_long_about().or(cmd.get_about());
        page.push_str(&paragraphs(
            &description.map(|d| d.to_string()).unwrap_or_default(),
        ));
        if self.file == "oauth-sendmail" {
            page.push_str(&options(cmd));
            page.push_str(".SH COMMANDS\n");
            for sub in &subcommands {
                page.push_str(&format!(
                    ".TP\n.BR oauth\\-sendmail\\-{} (8)\n{}\n",
                    esc(sub.get_name()),
                    esc(&sub.get_about().unwrap_or_default().to_string())
                ));
            }
            page.push_str(
                ".PP\nStarted as \\fBsendmail\\fR, \\fBmailq\\fR or \\fBnewaliases\\fR \
                 (through a symbolic link) it speaks their command lines: see\n\
                 .BR sendmail (8),\n.BR mailq (8)\nand\n.BR newaliases (8).\n",
            );
        } else if subcommands.is_empty() {
            page.push_str(&options(cmd));
        } else {
            page.push_str(&options(cmd));
            page.push_str(".SH COMMANDS\n");
            for sub in &subcommands {
                page.push_str(&format!(".SS \"{typed} {}\"\n", sub.get_name()));
                let about = sub.get_long_about().or(sub.get_about());
                page.push_str(&paragraphs(
                    &about.map(|d| d.to_string()).unwrap_or_default(),
                ));
                // The options of a subcommand under its own heading, less those of
                // every subcommand (-C, --help), listed once above.
                let own = (*sub).clone().mut_args(|arg| {
                    let shared = cmd.get_arguments().any(|a| a.get_id() == arg.get_id());
                    arg.hide(shared)
                });
                let options = options(&own);
                page.push_str(options.strip_prefix(".SH OPTIONS\n").unwrap_or(&options));
            }
        }
        if self.configuration {
            page.push_str(CONFIGURATION);
        }
        page.push_str(FILES);
        page.push_str(ENVIRONMENT);
        page.push_str(&exit_status());
        page.push_str(".SH EXAMPLES\n");
        page.push_str(&self.examples.concat());
        page.push_str(".SH SEE ALSO\n");
        let refs: Vec<String> = self
            .see_also
            .iter()
            .map(|r| {
                let (name, section) = r.trim_end_matches(')').split_once('(').unwrap();
                format!(".BR {} ({section})", esc(name))
            })
            .collect();
        page.push_str(&refs.join(",\n"));
        page.push('\n');
        page
    }
}

/// Text for roff: hyphens as such (not breakable dashes), backslashes printed, no line
/// that starts with a control character.
fn esc(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    text.lines()
        .map(|line| match line.starts_with(['.', '\'']) {
            true => format!("\\&{line}"),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Text with blank lines as paragraphs; an indented line is shown as it is (a command).
fn paragraphs(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            out.push_str(".PP\n");
        } else if line.starts_with(' ') {
            out.push_str(&format!(".RS\n.nf\n{}\n.fi\n.RE\n", esc(line.trim())));
        } else {
            out.push_str(&esc(line));
            out.push('\n');
        }
    }
    out
}

/// The OPTIONS section(s) as clap_mangen writes them.
fn options(cmd: &clap::Command) -> String {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render_options_section(&mut out)
        .unwrap();
    // Without the string definition that roff puts before every piece (once per page).
    let out = String::from_utf8(out).unwrap();
    out.strip_prefix(AQ).unwrap_or(&out).to_string()
}

/// `name [-t] [-f ADDRESS] ... [RECIPIENT...]`: the options worth a synopsis (not help,
/// version or the ones accepted and ignored), each with its value.
fn synopsis(name: &str, cmd: &clap::Command) -> String {
    let mut words = vec![format!("\\fB{}\\fR", esc(name))];
    for arg in cmd.get_arguments() {
        let action = arg.get_action();
        if arg.is_hide_set()
            || matches!(
                action,
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong
            )
            || matches!(action, ArgAction::Version)
            || arg.get_help_heading().is_some()
        {
            continue;
        }
        let values = arg.get_num_args().expect("built");
        let value = arg
            .get_value_names()
            .map(|names| names.join(" "))
            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
        let value = format!("\\fI{}\\fR", esc(&value));
        let word = if arg.is_positional() {
            let many = if values.max_values() > 1 { "..." } else { "" };
            match arg.is_required_set() {
                true => format!("{value}{many}"),
                false => format!("[{value}{many}]"),
            }
        } else {
            let flags: Vec<String> = arg
                .get_short()
                .map(|s| format!("\\fB\\-{}\\fR", esc(&s.to_string())))
                .into_iter()
                .chain(arg.get_long().map(|l| format!("\\fB\\-\\-{}\\fR", esc(l))))
                .collect();
            let flags = flags.join("|");
            match (values.takes_values(), values.min_values()) {
                (false, _) => format!("[{flags}]"),
                (true, 0) => format!("[{flags}[{value}]]"),
                (true, _) => format!("[{flags} {value}]"),
            }
        };
        words.push(word);
    }
    if cmd.get_arguments().any(|a| a.get_help_heading().is_some()) {
        words.push("[\\fIignored sendmail options\\fR]".into());
    }
    words.join(" ")
}

/// EXIT STATUS, from the one mapping (`Error::exit_code`).
fn exit_status() -> String {
    let mut by_code: std::collections::BTreeMap<u8, Vec<&str>> = Default::default();
    for kind in Kind::ALL {
        let code = Error::new(kind, "", "").exit_code();
        by_code.entry(code).or_default().push(meaning(kind));
    }
    let mut out = String::from(
        ".SH EXIT STATUS\nThe codes of sysexits.h, but for status \\-\\-check (1 and 2, as Nagios plugins):\n.TP\n.B 0\n\
         Done: sent, or queued after a temporary failure (it goes out with the next flush).\n",
    );
    for (code, meanings) in by_code {
        let text = meanings.join("; or ");
        let mut text = text.chars();
        let first = text.next().unwrap().to_uppercase();
        out.push_str(&format!(".TP\n.B {code}\n{first}{}.\n", esc(text.as_str())));
    }
    out
}

/// Exhaustive, so that a new kind cannot go undocumented (lower case: they are joined).
fn meaning(kind: Kind) -> &'static str {
    match kind {
        Kind::Usage => "a bad command line, or no recipients",
        Kind::BadInput => "the message or an address in it cannot be used",
        Kind::RecipientRefused => {
            "a recipient was refused (5xx) or does not resolve; the others got the message"
        }
        Kind::Unavailable => "the server refused the message for good",
        Kind::Internal => "an internal error",
        Kind::CannotCreate => "a file (spool, state, output) cannot be created",
        Kind::Io => "reading the message or a local file failed",
        Kind::Temporary => {
            "a temporary failure (a 4xx reply, no connection, a timeout) and the message was \
             not queued (queue = \"never\"), or a queue command cannot go on now"
        }
        Kind::Protocol => "the server does not speak SMTP as it should",
        Kind::AuthRefused => {
            "the server or the token endpoint refused the credentials (log in again); \
             a queued message waits"
        }
        Kind::Config => "the configuration is missing or wrong",
        Kind::Certificate => {
            "the server's TLS certificate cannot be trusted (set ca_file or host); \
             a queued message waits"
        }
        Kind::CheckWarning => {
            "for status --check only, as a Nagios plugin: WARNING (mail deferred, an account \
             held by its provider's quota)"
        }
        Kind::CheckCritical => {
            "for status --check only, as a Nagios plugin: CRITICAL (an account needs a login, \
             a send would fail)"
        }
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How roff (for clap_mangen) defines `\*(Aq`, the apostrophe it writes.
const AQ: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

const CONFIGURATION: &str = r#".SH CONFIGURATION
The configuration is read from the first of: the file named with
\fB\-C\fR \fIFILE\fR (or \fB\-\-config\fR \fIFILE\fR),
\fB$OAUTH_SENDMAIL_CONFIG\fR,
\fI$XDG_CONFIG_HOME/oauth\-sendmail/config.toml\fR and
\fI/etc/oauth\-sendmail/config.toml\fR.
It names the accounts to send through (server, addresses, credentials), the
aliases and domain of local addresses, and the queue's settings; see
.BR oauth\-sendmail.toml (5).
"#;

const FILES: &str = r#".SH FILES
.TP
.I ~/.config/oauth\-sendmail/config.toml
The user's configuration (\fI$XDG_CONFIG_HOME/oauth\-sendmail/config.toml\fR).
.TP
.I /etc/oauth\-sendmail/config.toml
The machine's configuration, read when the user has none.
.TP
.I ~/.local/state/oauth\-sendmail/
The state directory (\fI$XDG_STATE_HOME/oauth\-sendmail\fR, or
\fI/var/spool/oauth\-sendmail\fR without a home), private to its user.
.TP
.I ~/.local/state/oauth\-sendmail/queue/
The queue (\fBqueue_dir\fR): each message as \fIID\fR.msg, its state as
\fIID\fR.json.
.TP
.I ~/.local/state/oauth\-sendmail/delivery.log
The delivery log (\fBlog_file\fR): one JSON line per attempt, rotated to
\fIdelivery.log.1\fR at 10 MiB.
.TP
.IR ~/.local/state/oauth\-sendmail/ NAME .json
The cached access token of account \fINAME\fR.
.TP
.IR ~/.local/state/oauth\-sendmail/ NAME .refresh\-token
The refresh token of account \fINAME\fR, with \fBstore = "file"\fR.
.TP
.I ~/dead.letter
Messages that could be neither sent nor queued, appended in mbox format.
"#;

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
.B OAUTH_SENDMAIL_CONFIG
The configuration file when no \fB\-C\fR is given; no other place is searched then.
.TP
.B XDG_CONFIG_HOME
Where the user's configuration is (default \fI~/.config\fR).
.TP
.B XDG_STATE_HOME
Where the state directory is (default \fI~/.local/state\fR).
.TP
.B HOME
The home directory: the defaults above, and \fI~/dead.letter\fR.
.TP
.B BROWSER
The browser that \fBlogin\fR opens (a colon\-separated list, \fB%s\fR standing
for the address); without it \fBxdg\-open\fR, else \fBopen\fR.
.TP
.BR DBUS_SESSION_BUS_ADDRESS ", " XDG_RUNTIME_DIR
The session bus that leads to the keyring (\fBstore = "keyring"\fR):
\fB$DBUS_SESSION_BUS_ADDRESS\fR, else \fI$XDG_RUNTIME_DIR/bus\fR.
.TP
.BR USER ", " LOGNAME
The sender (\fIuser@host\fR) of a dry run without an account.
"#;

const EXAMPLES_MAIN: &str = r#"Install it as the machine's sendmail:
.PP
.RS
.nf
ln \-s "$(command \-v oauth\-sendmail)" /usr/sbin/sendmail
.fi
.RE
.PP
Log in once, check the account, send a message:
.PP
.RS
.nf
oauth\-sendmail login \-\-account gmail
oauth\-sendmail status \-\-check
printf \(aqSubject: test\en\enIt works.\en\(aq | sendmail \-i you@example.com
.fi
.RE
"#;

const EXAMPLES_SEND: &str = r#"A message whose headers name its recipients, as mail programs send it:
.PP
.RS
.nf
sendmail \-t \-i < message.eml
.fi
.RE
.PP
What would be sent, and to whom, without sending (no account needed):
.PP
.RS
.nf
sendmail \-\-dry\-run \-t < message.eml
.fi
.RE
.PP
Where each recipient goes, after the aliases:
.PP
.RS
.nf
sendmail \-bv root ops@example.com
.fi
.RE
.PP
Deliver every queued message now:
.PP
.RS
.nf
sendmail \-q
.fi
.RE
"#;

const EXAMPLES_QUEUE: &str = r#".RS
.nf
oauth\-sendmail queue list
oauth\-sendmail queue show 18f3a2c4e5b6d7a8
oauth\-sendmail queue retry \-\-all
oauth\-sendmail queue remove 18f3a2c4e5b6d7a8
.fi
.RE
"#;

const EXAMPLE_CRONTAB: &str = r#".PP
Deliver what is due every five minutes, from a crontab:
.PP
.RS
.nf
*/5 * * * * oauth\-sendmail queue flush
.fi
.RE
"#;

const EXAMPLES_LOG: &str = r#".RS
.nf
oauth\-sendmail log \-\-since 1d
oauth\-sendmail log \-\-status failed \-\-format csv > failures.csv
oauth\-sendmail log \-\-format json | jq .
.fi
.RE
"#;

const EXAMPLES_SETUP: &str = r#"As root after installing the package, the questions on the terminal:
.PP
.RS
.nf
oauth\-sendmail setup
.fi
.RE
.PP
From a script (the client secret on stdin, never on the command line):
.PP
.RS
.nf
printf '%s\\n' "$SECRET" | oauth\-sendmail setup \-\-provider gmail \\
    \-\-address server@example.com \-\-client\-id 1234\-abc.apps.googleusercontent.com \\
    \-\-client\-secret\-stdin \-\-root\-alias admin@example.com \\
    \-\-test\-to admin@example.com
.fi
.RE
"#;

const EXAMPLES_LOGIN: &str = r#".RS
.nf
oauth\-sendmail login \-\-account gmail
oauth\-sendmail login \-\-account office \-\-device
.fi
.RE
.PP
On a server without a browser, forward the port from a desktop
(\fBssh \-L 8765:127.0.0.1:8765 server\fR), then on the server:
.PP
.RS
.nf
oauth\-sendmail login \-\-account gmail \-\-no\-browser \-\-port 8765
.fi
.RE
"#;

const EXAMPLES_LOGOUT: &str = r#".RS
.nf
oauth\-sendmail logout \-\-account gmail
.fi
.RE
"#;

const EXAMPLES_DAEMON: &str = r#".RS
.nf
systemctl enable \-\-now oauth\-sendmail.socket oauth\-sendmail.service
systemctl reload oauth\-sendmail
.fi
.RE
"#;

const EXAMPLES_DEVICE: &str = r#".RS
.nf
oauth\-sendmail device add printer \-\-network 192.168.1.0/24 \-\-sender scans@example.com
oauth\-sendmail device list
oauth\-sendmail device remove printer
.fi
.RE
"#;

const EXAMPLES_STATUS: &str = r#".RS
.nf
oauth\-sendmail status
oauth\-sendmail status \-\-check \-v
oauth\-sendmail status \-\-json
.fi
.RE
.PP
As a Nagios (or Icinga, Zabbix) check, whose first line is the verdict
(\fBOK: 2 accounts ready, queue 0\fR, \fBWARNING: 3 messages deferred,
oldest 2 hours\fR, \fBCRITICAL: account gmail needs login since ...\fR)
and whose exit status is 0, 1 or 2:
.PP
.RS
.nf
command_line  /usr/bin/oauth\-sendmail status \-\-check
.fi
.RE
"#;

const EXAMPLES_MAILQ: &str = r#".RS
.nf
mailq
mailq \-C /etc/oauth\-sendmail/config.toml
.fi
.RE
"#;

const EXAMPLES_NEWALIASES: &str = r#".RS
.nf
newaliases
.fi
.RE
"#;

/// Pages written by hand (and tested below), not generated.
const HAND_WRITTEN: &[&str] = &["oauth-sendmail.toml.5"];

/// Pages of other packages that ours may name (they are on any system that has cron or
/// ssh); every other reference must be a page in man/.
const SYSTEM_PAGES: &[&str] = &["crontab(5)", "ssh(1)", "systemctl(1)"];

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
}

fn man_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(man_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Runs a formatter on `page`: `None` (the test skips) when it is not installed and this
/// is not CI, where scripts/install-test-deps installs it.
fn format(program: &str, args: &[&str], page: &Path) -> Option<std::process::Output> {
    let run = std::process::Command::new(program)
        .args(args)
        .arg(page)
        .env("MANWIDTH", "80")
        .output();
    match run {
        Ok(out) => Some(out),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: cannot run {program} ({e}); scripts/install-test-deps installs it");
            None
        }
        Err(e) => panic!("cannot run {program} ({e}): run scripts/install-test-deps"),
    }
}

/// `page` as plain text, as groff renders it for a terminal.
fn plain_text(page: &Path) -> Option<String> {
    let out = format("groff", &["-man", "-Tascii", "-P-cbou", "-rLL=200n"], page)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn every_page_in_man_is_generated_or_hand_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated: Vec<PathBuf> = man_pages(root).into_iter().map(|(p, _)| p).collect();
    for file in man_files() {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            generated.contains(&file) || HAND_WRITTEN.contains(&name),
            "{name} is neither generated nor hand-written: a leftover?"
        );
    }
}

#[test]
fn every_man_page_reference_resolves() {
    let reference = |text: &str| -> Vec<String> {
        // Font changes and escaped hyphens out, `.BR name (8)` joined: `name(8)`.
        let text = text
            .replace("\\-", "-")
            .replace("\\fB", "")
            .replace("\\fI", "")
            .replace("\\fR", "")
            .replace(".BR ", "")
            .replace(".IR ", "");
        let mut found = Vec::new();
        let bytes = text.as_bytes();
        for (at, _) in text.match_indices('(') {
            let section = text[at + 1..].split(')').next().unwrap();
            if section.len() != 1 || !section.as_bytes()[0].is_ascii_digit() {
                continue;
            }
            let mut start = at;
            while start > 0 && bytes[start - 1] == b' ' {
                start -= 1;
            }
            let end = start;
            while start > 0
                && (bytes[start - 1].is_ascii_alphanumeric() || b"-_.".contains(&bytes[start - 1]))
            {
                start -= 1;
            }
            if start < end {
                found.push(format!("{}({section})", &text[start..end]));
            }
        }
        found
    };
    let mut checked = 0;
    for file in man_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in reference(&text) {
            let (page, section) = name.trim_end_matches(')').split_once('(').unwrap();
            let exists = man_dir().join(format!("{page}.{section}")).exists();
            assert!(
                exists || SYSTEM_PAGES.contains(&name.as_str()),
                "{} refers to {name}, which is no page",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "found only {checked} references: is the parser broken?"
    );
}

#[test]
fn man_pages_render_without_warnings() {
    for file in man_files() {
        for (program, args) in [
            ("groff", &["-man", "-Tutf8", "-ww", "-z"][..]),
            ("man", &["--warnings", "-l"][..]),
        ] {
            let Some(out) = format(program, args, &file) else {
                return;
            };
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stderr.is_empty(),
                "{program} {}: {stderr}",
                file.display()
            );
        }
    }
}

#[test]
fn man_pages_have_the_sections_a_reader_looks_for() {
    for file in man_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_str().unwrap();
        let mut wanted = vec![
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "FILES",
            "EXAMPLES",
            "SEE ALSO",
        ];
        if name.ends_with(".8") {
            wanted.extend(["OPTIONS", "ENVIRONMENT", "EXIT STATUS"]);
        }
        for section in wanted {
            let heading = format!("\n.SH {section}\n");
            let quoted = format!("\n.SH \"{section}\"\n");
            assert!(
                text.contains(&heading) || text.contains(&quoted),
                "{name} has no {section} section"
            );
        }
    }
    for page in ["oauth-sendmail.8", "sendmail.8", "oauth-sendmail-send.8"] {
        let text = std::fs::read_to_string(man_dir().join(page)).unwrap();
        assert!(text.contains("\n.SH CONFIGURATION\n"), "{page}");
    }
}

/// clap_mangen wrote `[-t ] [-i ] [-f ] [-F ]`: flags with a stray space, options without
/// their value.
#[test]
fn the_send_synopsis_shows_flags_and_values() {
    for page in ["oauth-sendmail-send.8", "sendmail.8"] {
        let Some(text) = plain_text(&man_dir().join(page)) else {
            return;
        };
        let synopsis = text
            .split("SYNOPSIS")
            .nth(1)
            .and_then(|rest| rest.split("DESCRIPTION").next())
            .unwrap();
        let synopsis = synopsis.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in [
            "[-t] [-i] [-f ADDRESS] [-F NAME]",
            "[-C|--config FILE]",
            "[RECIPIENT...]",
        ] {
            assert!(
                synopsis.contains(want),
                "{page}: {want} missing from {synopsis}"
            );
        }
        assert!(!synopsis.contains(" ]"), "{page}: {synopsis}");
    }
}

/// The keys that the configuration accepts, from its source: the fields of the structs
/// the TOML is read into (config/schema.rs).
fn config_keys() -> Vec<String> {
    let source = [
        include_str!("../config/schema.rs"),
        include_str!("../config/service.rs"),
        include_str!("../config/relay.rs"),
    ]
    .concat();
    let mut keys = Vec::new();
    for table in [
        "struct ConfigFile {",
        "struct AccountFile {",
        "struct OAuthFile {",
        "pub struct ServiceSettings {",
        "pub struct RelaySettings {",
        "pub struct Listener {",
        "pub struct Device {",
    ] {
        let body = source
            .split(table)
            .nth(1)
            .unwrap()
            .split("\n}")
            .next()
            .unwrap();
        for line in body.lines() {
            let line = line.trim_start();
            let line = line.strip_prefix("pub(super) ").unwrap_or(line);
            let line = line.strip_prefix("pub ").unwrap_or(line);
            if let Some((key, _)) = line.split_once(':') {
                if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    keys.push(key.to_string());
                }
            }
        }
    }
    keys
}

#[test]
fn the_configuration_page_documents_every_key_and_no_other() {
    let page = std::fs::read_to_string(man_dir().join("oauth-sendmail.toml.5")).unwrap();
    let lines: Vec<&str> = page.lines().collect();
    // Keys are `.TP` then `.B key`, tables `.SH [key]` or `.SH [accounts.NAME.key]`.
    let mut documented: Vec<String> = lines
        .windows(2)
        .filter(|pair| pair[0] == ".TP")
        .filter_map(|pair| pair[1].strip_prefix(".B "))
        .map(|key| key.replace("\\-", "-"))
        .collect();
    for line in &lines {
        if let Some(table) = line.strip_prefix(".SH [").and_then(|t| t.strip_suffix(']')) {
            let key = table.rsplit('.').find(|part| *part != "NAME").unwrap();
            documented.push(key.to_string());
        }
    }
    let keys = config_keys();
    assert!(keys.len() > 25, "config/schema.rs parsed badly: {keys:?}");
    for key in &keys {
        assert!(
            documented.contains(key),
            "oauth-sendmail.toml.5 does not document `{key}`"
        );
    }
    for key in &documented {
        assert!(
            keys.contains(key),
            "oauth-sendmail.toml.5 documents `{key}`, no key of config/schema.rs"
        );
    }
}
