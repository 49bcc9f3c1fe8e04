//! The programs that call `sendmail`, as data: argv, stdin exactly as each writes it, and
//! what must reach the SMTP server; shared by tests/callers.rs and tests/real_mta.rs, with
//! `check` judging one delivered message against those expectations.
//!
//! Every caller runs with the harness config: domain "example.com", alias root ->
//! admin@example.com, one account sending as sender@example.com. So an unqualified recipient
//! goes through the aliases, then gets "@example.com"; an unqualified sender (`-f root`,
//! `From: root`) only gets "@example.com", as Postfix does; without `-f` the envelope sender
//! is the account's address; a missing From is built from the envelope sender (and `-F`).
#![allow(dead_code)]

/// One row of the caller table.
pub struct Caller {
    /// Test name: the program, in snake case.
    pub name: &'static str,
    /// argv after argv[0] (which is `sendmail`), exactly as the program passes it.
    pub argv: &'static [&'static str],
    /// stdin exactly as the program writes it (LF, CRLF or both, as the program does).
    pub stdin: &'static str,
    pub expect: Expect,
}

/// What the SMTP server must receive.
pub struct Expect {
    /// MAIL FROM address.
    pub mail_from: &'static str,
    /// RCPT TO addresses, in any order, each once.
    pub rcpt_to: &'static [&'static str],
    /// The one address of the (only) From header.
    pub from: &'static str,
    /// A display name the From header must keep (decoded), if the input had one.
    pub from_name: Option<&'static str>,
    /// Addresses of the To header, in order.
    pub to: &'static [&'static str],
    /// Addresses of the Cc header, in order (empty: no Cc header).
    pub cc: &'static [&'static str],
    /// The message body (after the blank line) as it must arrive.
    pub body: Body,
    /// The body has 8-bit bytes: MAIL FROM must carry BODY=8BITMIME.
    pub eight_bit: bool,
}

pub enum Body {
    /// The body of `stdin`, each line ending made CRLF, nothing else changed.
    AsInput,
    /// These exact bytes (CRLF line ends).
    Exact(&'static str),
}

/// A message as an SMTP server received it: envelope and DATA (dot-unstuffed, CRLF, without
/// the final ".").
pub struct Delivery<'a> {
    pub mail_from: &'a str,
    pub mail_params: &'a [String],
    pub rcpt_to: &'a [String],
    pub data: &'a [u8],
}

/// Headers the sender may rewrite (address qualification) or must remove; every other input
/// header must arrive unchanged.
const REWRITTEN_HEADERS: &[&str] = &["from", "to", "cc", "bcc", "resent-bcc"];

pub static CALLERS: &[Caller] = &[
    DEBIAN_CRON,
    CRONIE,
    SYSTEMD_CRON,
    BSD_MAILX,
    S_NAIL,
    PHP_MAIL,
    GIT_SEND_EMAIL,
    MUTT,
    LOGWATCH,
    MDADM,
    FAIL2BAN,
    UNATTENDED_UPGRADES,
];

/// The caller named `name` (panics on a typo).
pub fn caller(name: &str) -> &'static Caller {
    CALLERS
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no caller named {name}"))
}

// Debian's cron (package `cron`, 3.0pl1): config.h has
// MAILARGS "%s -FCronDaemon -i -B8BITMIME -oem %s"; do_command.c child_process() writes
// From/To/Subject/Content-Type (charset from the locale) and one X-Cron-Env per variable.
// The job runs as root with no MAILTO, so the recipient is the bare user "root". Its output
// here is UTF-8: the 8-bit caller whose bytes must pass unchanged.
pub const DEBIAN_CRON: Caller = Caller {
    name: "debian_cron",
    argv: &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
    stdin: concat!(
        "From: root (Cron Daemon)\n",
        "To: root\n",
        "Subject: Cron <root@web1> /usr/local/bin/backup-report\n",
        "Content-Type: text/plain; charset=UTF-8\n",
        "X-Cron-Env: <SHELL=/bin/sh>\n",
        "X-Cron-Env: <HOME=/root>\n",
        "X-Cron-Env: <PATH=/usr/bin:/bin>\n",
        "X-Cron-Env: <LOGNAME=root>\n",
        "\n",
        "Sauvegarde terminée : 3 fichiers copiés vers /srv/archive\n",
        "Größe: 1,2 GiB — durée 00:04:12\n",
        "Prüfsumme: ✓\n",
    ),
    expect: Expect {
        mail_from: "sender@example.com",
        rcpt_to: &["admin@example.com"],
        from: "root@example.com",
        from_name: Some("Cron Daemon"),
        to: &["admin@example.com"],
        cc: &[],
        body: Body::AsInput,
        eight_bit: true,
    },
};

// cronie, src/do_command.c child_process(): popen of
// "%s -FCronDaemon -i -odi -oem -oi -t -f %s" with MAILFROM (default: the crontab owner),
// then From: "(Cron Daemon)" <mailfrom>, To, Subject, MIME-Version, Content-Type,
// Content-Transfer-Encoding, Auto-Submitted, Precedence, X-Cron-Env lines. Both the -f and
// the headers hold the bare "root".
pub const CRONIE: Caller = Caller {
    name: "cronie",
    argv: &[
        "-FCronDaemon",
        "-i",
        "-odi",
        "-oem",
        "-oi",
        "-t",
        "-f",
        "root",
    ],
    stdin: concat!(
        "From: \"(Cron Daemon)\" <root>\n",
        "To: root\n",
        "Subject: Cron <root@db1> /usr/sbin/logrotate /etc/logrotate.conf\n",
        "MIME-Version: 1.0\n",
        "Content-Type: text/plain; charset=UTF-8\n",
        "Content-Transfer-Encoding: 8bit\n",
        "Auto-Submitted: auto-generated\n",
        "Precedence: bulk\n",
        "X-Cron-Env: <XDG_SESSION_ID=c4>\n",
        "X-Cron-Env: <SHELL=/bin/sh>\n",
        "X-Cron-Env: <HOME=/root>\n",
        "X-Cron-Env: <LOGNAME=root>\n",
        "X-Cron-Env: <USER=root>\n",
        "\n",
        "error: skipping \"/var/log/nginx/access.log\" because parent directory has insecure permissions (It's world writable or writable by group which is not \"root\") Set \"su\" directive in config file to tell logrotate which user/group should be used for rotation.\n",
        "error: error setting owner of /var/log/app/app.log.1 to uid 998 and gid 998: Operation not permitted\n",
    ),
    expect: Expect {
        mail_from: "root@example.com",
        rcpt_to: &["admin@example.com"],
        from: "root@example.com",
        from_name: Some("Cron Daemon"),
        to: &["admin@example.com"],
        cc: &[],
        body: Body::AsInput,
        eight_bit: false,
    },
};

// systemd-cron, src/bin/mail_for_job.sh: printf of Content-Type/MIME-Version/
// Content-Transfer-Encoding: binary/Date/From: "$mailfrom (systemd-cron)"/To/Subject/
// X-Mailer/Auto-Submitted, then `systemctl status` and `journalctl` output, piped to
// `"$sendmail" -i -B 8BITMIME "$mailto"` (mailto = the unit's User=, a bare user name).
// systemctl status draws with UTF-8 symbols: 8-bit.
pub const SYSTEMD_CRON: Caller = Caller {
    name: "systemd_cron",
    argv: &["-i", "-B", "8BITMIME", "alice"],
    stdin: concat!(
        "Content-Type: text/plain; charset=\"utf-8\"\n",
        "MIME-Version: 1.0\n",
        "Content-Transfer-Encoding: binary\n",
        "Date: Sat, 04 Jan 2025 06:30:02 +0100\n",
        "From: root (systemd-cron)\n",
        "To: alice\n",
        "Subject: [web1] Failure: alice's crontab \"30 6 * * * ~/bin/sync-photos\"\n",
        "X-Mailer: systemd-cron 2.5.1\n",
        "Auto-Submitted: auto-generated\n",
        "\n",
        "× cron-alice-sync-photos-0.service - [Cron] \"30 6 * * * ~/bin/sync-photos\"\n",
        "     Loaded: loaded (/var/spool/cron/crontabs/alice; generated)\n",
        "     Active: failed (Result: exit-code) since Sat 2025-01-04 06:30:02 CET; 14ms ago\n",
        "    Process: 8123 ExecStart=/bin/sh -c ~/bin/sync-photos (code=exited, status=23)\n",
        "   Main PID: 8123 (code=exited, status=23)\n",
        "        CPU: 1.204s\n",
        "2025-01-04T06:30:00+01:00 web1 systemd[1]: Started cron-alice-sync-photos-0.service - [Cron] \"30 6 * * * ~/bin/sync-photos\".\n",
        "2025-01-04T06:30:02+01:00 web1 sync-photos[8123]: rsync: connexion fermée — nouvel essai…\n",
        "2025-01-04T06:30:02+01:00 web1 systemd[1]: cron-alice-sync-photos-0.service: Failed with result 'exit-code'.\n",
    ),
    expect: Expect {
        mail_from: "sender@example.com",
        rcpt_to: &["alice@example.com"],
        from: "root@example.com",
        from_name: None,
        to: &["alice@example.com"],
        cc: &[],
        body: Body::AsInput,
        eight_bit: true,
    },
};

// bsd-mailx (Debian's OpenBSD mail): send.c mail1() runs `sendmail -i -t` and puthead()
// writes To/Subject/Cc/Bcc, no From, Date or Message-ID; it leaves the Bcc header in and
// relies on the MTA to remove it. A body line starting with "." checks dot-stuffing.
pub const BSD_MAILX: Caller = Caller {
    name: "bsd_mailx",
    argv: &["-i", "-t"],
    stdin: concat!(
        "To: ops@example.org\n",
        "Subject: Disk usage on web1\n",
        "Cc: carol\n",
        "Bcc: auditor@example.net\n",
        "\n",
        "Filesystem      Size  Used Avail Use% Mounted on\n",
        "/dev/sda1        40G   37G  1.2G  97% /\n",
        ".cache alone takes 11G.\n",
        ".\n",
        "(the line above is a lone dot: with -i it is text)\n",
    ),
    expect: Expect {
        mail_from: "sender@example.com",
        rcpt_to: &[
            "ops@example.org",
            "carol@example.com",
            "auditor@example.net",
        ],
        from: "sender@example.com",
        from_name: None,
        to: &["ops@example.org"],
        cc: &["carol@example.com"],
        body: Body::AsInput,
        eight_bit: false,
    },
};

// s-nail (mailx of Debian/Arch): mta_prepare_args() in mta.c gives `-i`, `-f` from the
// `from`/-r setting with mta-arguments, then `--` and the receivers; it writes a full header
// block itself (Date, From, To, Subject, Message-ID, User-Agent, MIME headers). "dave" is a
// bare user typed on the command line.
pub const S_NAIL: Caller = Caller {
    name: "s_nail",
    argv: &[
        "-i",
        "-f",
        "reports@example.org",
        "--",
        "dave",
        "erin@example.org",
    ],
    stdin: concat!(
        "Date: Sat, 04 Jan 2025 07:00:01 +0100\n",
        "From: reports@example.org\n",
        "To: dave, erin@example.org\n",
        "Subject: Weekly backup report\n",
        "Message-ID: <20250104060001.Xk3Fq7pB%reports@example.org>\n",
        "User-Agent: s-nail v14.9.24\n",
        "MIME-Version: 1.0\n",
        "Content-Type: text/plain; charset=us-ascii\n",
        "Content-Transfer-Encoding: 7bit\n",
        "\n",
        "All 14 hosts backed up.\n",
        "Slowest: db1 (41 min).\n",
    ),
    expect: Expect {
        mail_from: "reports@example.org",
        rcpt_to: &["dave@example.com", "erin@example.org"],
        from: "reports@example.org",
        from_name: None,
        to: &["dave@example.com", "erin@example.org"],
        cc: &[],
        body: Body::AsInput,
        eight_bit: false,
    },
};

// PHP mail(), ext/standard/mail.c php_mail(): popen of sendmail_path (default
// "/usr/sbin/sendmail -t -i") plus the 5th parameter ("-fwebmaster@example.com"), then
// "To: %s\n", "Subject: %s\n", the X-PHP-Originating-Script header (mail.add_x_header), the
// script's additional headers joined by "\r\n" as the PHP manual tells, "\n", the message
// (CRLF lines from the script) and a final "\n". Mixed LF/CRLF is what PHP really sends.
pub const PHP_MAIL: Caller = Caller {
    name: "php_mail",
    argv: &["-t", "-i", "-fwebmaster@example.com"],
    stdin: concat!(
        "To: visitor@example.org\n",
        "Subject: Your message to Example Shop\n",
        "X-PHP-Originating-Script: 33:contact.php\n",
        "From: Example Shop <webmaster@example.com>\r\n",
        "Reply-To: support@example.com\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: text/plain; charset=UTF-8\n",
        "\n",
        "Hello,\r\n",
        "\r\n",
        "thank you for your message. We will answer within two working days.\r\n",
        "\r\n",
        "Example Shop\r\n",
        "\n",
    ),
    expect: Expect {
        mail_from: "webmaster@example.com",
        rcpt_to: &["visitor@example.org"],
        from: "webmaster@example.com",
        from_name: Some("Example Shop"),
        to: &["visitor@example.org"],
        cc: &[],
        body: Body::AsInput,
        eight_bit: false,
    },
};

// git send-email, git-send-email.perl send_message(): with sendmail as the transport it
// execs it with ('-i', @recipients) and unshifts ('-f', $raw_from): every To/Cc/Bcc is on
// argv (the Bcc only there). The header block is git's own, the From name RFC 2047-encoded;
// the patch is UTF-8 (8-bit) and must arrive byte for byte, trailing spaces included.
pub const GIT_SEND_EMAIL: Caller = Caller {
    name: "git_send_email",
    argv: &[
        "-f",
        "jose@example.org",
        "-i",
        "maintainer@example.org",
        "list@vger.example.org",
        "reviewer@example.org",
    ],
    stdin: concat!(
        "From: =?UTF-8?q?Jos=C3=A9=20Garc=C3=ADa?= <jose@example.org>\n",
        "To: maintainer@example.org\n",
        "Cc: list@vger.example.org\n",
        "Subject: [PATCH v2] docs: fix typo in README\n",
        "Date: Sat,  4 Jan 2025 10:15:42 +0100\n",
        "Message-ID: <20250104091542.12345-1-jose@example.org>\n",
        "X-Mailer: git-send-email 2.39.5\n",
        "MIME-Version: 1.0\n",
        "Content-Type: text/plain; charset=UTF-8\n",
        "Content-Transfer-Encoding: 8bit\n",
        "\n",
        "The word \"recieve\" was misspelled.\n",
        "\n",
        "Signed-off-by: José García <jose@example.org>\n",
        "---\n",
        " README | 2 +-\n",
        " 1 file changed, 1 insertion(+), 1 deletion(-)\n",
        "\n",
        "diff --git a/README b/README\n",
        "index 3b18e51..a2c4f2e 100644\n",
        "--- a/README\n",
        "+++ b/README\n",
        "@@ -1,3 +1,3 @@\n",
        " Mail tools\n",
        "-Programs that recieve mail.  \n",
        "+Programs that receive mail.\n",
        " \n",
        "-- \n",
        "2.39.5\n",
        "\n",
    ),
    expect: Expect {
        mail_from: "jose@example.org",
        rcpt_to: &[
            "maintainer@example.org",
            "list@vger.example.org",
            "reviewer@example.org",
        ],
        from: "jose@example.org",
        from_name: Some("José García"),
        to: &["maintainer@example.org"],
        cc: &["list@vger.example.org"],
        body: Body::AsInput,
        eight_bit: true,
    },
};

// Mutt, sendlib.c mutt_invoke_sendmail(): $sendmail ("/usr/sbin/sendmail -oem -oi"), then
// "-f from" ($use_envelope_from), "-N" ($dsn_notify), "-R" ($dsn_return), "--" and every
// To/Cc/Bcc recipient. Mutt before 2.0 ($write_bcc=yes) also writes the Bcc header: it must
// be removed even without -t. A multipart message with a base64 attachment.
pub const MUTT: Caller = Caller {
    name: "mutt",
    argv: &[
        "-oem",
        "-oi",
        "-f",
        "kim@example.org",
        "-N",
        "failure,delay",
        "-R",
        "hdrs",
        "--",
        "lee@example.org",
        "pat@example.net",
    ],
    stdin: concat!(
        "Date: Sat, 4 Jan 2025 11:02:33 +0100\n",
        "From: Kim Park <kim@example.org>\n",
        "To: Lee Chan <lee@example.org>\n",
        "Bcc: pat@example.net\n",
        "Subject: Quarterly numbers\n",
        "Message-ID: <Z3kHGQ4mYb2pLx7a@laptop.example.org>\n",
        "MIME-Version: 1.0\n",
        "Content-Type: multipart/mixed; boundary=\"wJ3xTq0bNn2vY8Rk\"\n",
        "Content-Disposition: inline\n",
        "User-Agent: Mutt/1.14.6 (2020-07-11)\n",
        "\n",
        "\n",
        "--wJ3xTq0bNn2vY8Rk\n",
        "Content-Type: text/plain; charset=us-ascii\n",
        "Content-Disposition: inline\n",
        "\n",
        "Hi Lee,\n",
        "\n",
        "the numbers are attached.\n",
        "\n",
        "Kim\n",
        "\n",
        "--wJ3xTq0bNn2vY8Rk\n",
        "Content-Type: text/csv; charset=us-ascii\n",
        "Content-Disposition: attachment; filename=\"q4.csv\"\n",
        "Content-Transfer-Encoding: base64\n",
        "\n",
        "cXVhcnRlcixyZXZlbnVlCjEsMTAwCjIsMTIwCjMsOTAKNCwxNTAK\n",
        "\n",
        "--wJ3xTq0bNn2vY8Rk--\n",
    ),
    expect: Expect {
        mail_from: "kim@example.org",
        rcpt_to: &["lee@example.org", "pat@example.net"],
        from: "kim@example.org",
        from_name: Some("Kim Park"),
        to: &["lee@example.org"],
        cc: &[],
        body: Body::AsInput,
        eight_bit: false,
    },
};

// logwatch, scripts/logwatch.pl: $Config{'mailer'} = "/usr/sbin/sendmail -t" (no -i), and
// it prints To: $Config{'mailto'} (default "root"), From: $Config{'mailfrom'} (default
// "Logwatch", no domain), Subject, Auto-Submitted and MIME headers. Report lines keep their
// leading and trailing spaces.
pub const LOGWATCH: Caller = Caller {
    name: "logwatch",
    argv: &["-t"],
    stdin: concat!(
        "To: root\n",
        "From: Logwatch\n",
        "Subject: Logwatch for web1 (Linux)\n",
        "Auto-Submitted: auto-generated\n",
        "MIME-Version: 1.0\n",
        "Content-Transfer-Encoding: 7bit\n",
        "Content-Type: text/plain; charset=\"iso-8859-1\"\n",
        "\n",
        " \n",
        " ################### Logwatch 7.8 (01/22/23) #################### \n",
        "        Processing Initiated: Sat Jan  4 06:25:02 2025\n",
        "        Date Range Processed: yesterday\n",
        "                              ( 2025-Jan-03 )\n",
        "                              Period is day.\n",
        "        Detail Level of Output: 0\n",
        "        Type of Output/Format: mail / text\n",
        "        Logfiles for Host: web1\n",
        " ################################################################## \n",
        " \n",
        " --------------------- SSHD Begin ------------------------ \n",
        " \n",
        " Users logging in through sshd:\n",
        "    deploy:\n",
        "       198.51.100.23: 4 times\n",
        " \n",
        " ---------------------- SSHD End ------------------------- \n",
        " \n",
        " \n",
        " ###################### Logwatch End ######################### \n",
        "\n",
    ),
    expect: Expect {
        mail_from: "sender@example.com",
        rcpt_to: &["admin@example.com"],
        from: "Logwatch@example.com",
        from_name: None,
        to: &["admin@example.com"],
        cc: &[],
        body: Body::AsInput,
        eight_bit: false,
    },
};

// mdadm, Monitor.c send_event_email(): popen of Sendmail ("/usr/lib/sendmail -t", no -i),
// then "From: mdadm monitoring <root>" (no MAILFROM set), "To: <MAILADDR>", the Subject line
// and the text with /proc/mdstat.
pub const MDADM: Caller = Caller {
    name: "mdadm",
    argv: &["-t"],
    stdin: concat!(
        "From: mdadm monitoring <root>\n",
        "To: root\n",
        "Subject: DegradedArray event on /dev/md0:nas\n",
        "\n",
        "This is an automatically generated mail message from mdadm\n",
        "running on nas\n",
        "\n",
        "A DegradedArray event had been detected on md device /dev/md0.\n",
        "\n",
        "Faithfully yours, etc.\n",
        "\n",
        "P.S. The /proc/mdstat file currently contains the following:\n",
        "\n",
        "Personalities : [raid1] [linear] [multipath] [raid0] [raid6] [raid5] [raid4] [raid10] \n",
        "md0 : active raid1 sdb1[1]\n",
        "      976630464 blocks super 1.2 [2/1] [_U]\n",
        "      bitmap: 3/8 pages [12KB], 65536KB chunk\n",
        "\n",
        "unused devices: <none>\n",
    ),
    expect: Expect {
        mail_from: "sender@example.com",
        rcpt_to: &["admin@example.com"],
        from: "root@example.com",
        from_name: Some("mdadm monitoring"),
        to: &["admin@example.com"],
        cc: &[],
        body: Body::AsInput,
        eight_bit: false,
    },
};

// fail2ban, config/action.d/sendmail-common.conf: mailcmd = /usr/sbin/sendmail -f "<sender>"
// "<dest>" (sender and dest default to "root"; no -i), fed by sendmail-whois.conf's
// actionban printf: Subject, Date, From: <sendername> <<sender>>, To, text and whois output.
// That output holds a line with only ".": without -i, input ends there (the lone-dot rule),
// and the rest is dropped; ".well-known ..." is not a lone dot.
pub const FAIL2BAN: Caller = Caller {
    name: "fail2ban",
    argv: &["-f", "root", "root"],
    stdin: concat!(
        "Subject: [Fail2Ban] sshd: banned 203.0.113.45 from web1.example.com\n",
        "Date: Sat, 04 Jan 2025 06:31:17 +0100\n",
        "From: Fail2Ban <root>\n",
        "To: root\n",
        "\n",
        "Hi,\n",
        "\n",
        "The IP 203.0.113.45 has just been banned by Fail2Ban after\n",
        "5 attempts against sshd.\n",
        "\n",
        "\n",
        "Here is more information about 203.0.113.45 :\n",
        "\n",
        "% This is the RIPE Database query service.\n",
        ".well-known probes: 12\n",
        "inetnum:        203.0.113.0 - 203.0.113.255\n",
        "netname:        EXAMPLE-NET\n",
        ".\n",
        "% This query was served by the RIPE Database Query Service version 1.114 (SHETLAND)\n",
        "\n",
        "Regards,\n",
        "\n",
        "Fail2Ban\n",
    ),
    expect: Expect {
        mail_from: "root@example.com",
        rcpt_to: &["admin@example.com"],
        from: "root@example.com",
        from_name: Some("Fail2Ban"),
        to: &["admin@example.com"],
        cc: &[],
        body: Body::Exact(concat!(
            "Hi,\r\n",
            "\r\n",
            "The IP 203.0.113.45 has just been banned by Fail2Ban after\r\n",
            "5 attempts against sshd.\r\n",
            "\r\n",
            "\r\n",
            "Here is more information about 203.0.113.45 :\r\n",
            "\r\n",
            "% This is the RIPE Database query service.\r\n",
            ".well-known probes: 12\r\n",
            "inetnum:        203.0.113.0 - 203.0.113.255\r\n",
            "netname:        EXAMPLE-NET\r\n",
        )),
        eight_bit: false,
    },
};

// unattended-upgrades, unattended-upgrade send_summary_mail() ->
// _send_mail_using_sendmail(): Popen([SENDMAIL_BINARY, "-oi", "-t"]) fed with
// email.message.Message().as_string(): Subject, From ("root", Unattended-Upgrade::Sender's
// default), To ("root"), Auto-Submitted, and a UTF-8 quoted-printable body.
pub const UNATTENDED_UPGRADES: Caller = Caller {
    name: "unattended_upgrades",
    argv: &["-oi", "-t"],
    stdin: concat!(
        "Subject: [reboot required] unattended-upgrades result for web1.example.com: SUCCESS\n",
        "From: root\n",
        "To: root\n",
        "Auto-Submitted: auto-generated\n",
        "MIME-Version: 1.0\n",
        "Content-Type: text/plain; charset=\"utf-8\"\n",
        "Content-Transfer-Encoding: quoted-printable\n",
        "\n",
        "Unattended upgrade result: All upgrades installed\n",
        "\n",
        "Warning: A reboot is required to complete this upgrade, or a previous one.\n",
        "\n",
        "Packages that were upgraded:\n",
        " libssl3 openssl=20\n",
        "\n",
        "Package installation log:\n",
        "Log started: 2025-01-04  06:41:13\n",
        "Preparing to unpack .../libssl3_3.0.15-1~deb12u1_amd64.deb ...\n",
        "Unpacking libssl3:amd64 (3.0.15-1~deb12u1) over (3.0.14-1~deb12u2) =E2=80=A6\n",
        "Setting up libssl3:amd64 (3.0.15-1~deb12u1) ...\n",
        "Log ended: 2025-01-04  06:41:19\n",
        "\n",
        "Unattended-upgrades log:\n",
        "Starting unattended upgrades script\n",
        "Allowed origins are: origin=3DDebian,codename=3Dbookworm,label=3DDebian-Sec=\n",
        "urity\n",
        "Packages that will be upgraded: libssl3 openssl\n",
        "All upgrades installed\n",
    ),
    expect: Expect {
        mail_from: "sender@example.com",
        rcpt_to: &["admin@example.com"],
        from: "root@example.com",
        from_name: None,
        to: &["admin@example.com"],
        cc: &[],
        body: Body::AsInput,
        eight_bit: false,
    },
};

/// Judges one delivered message against the caller's expectations. Returns every problem
/// found (empty: all good), so a failure report shows them all at once.
pub fn check(caller: &Caller, got: &Delivery) -> Vec<String> {
    let want = &caller.expect;
    let mut problems = Vec::new();

    // Envelope.
    if got.mail_from != want.mail_from {
        problems.push(format!(
            "MAIL FROM is <{}>, expected <{}>",
            got.mail_from, want.mail_from
        ));
    }
    let mut rcpt_got: Vec<&str> = got.rcpt_to.iter().map(String::as_str).collect();
    let mut rcpt_want: Vec<&str> = want.rcpt_to.to_vec();
    rcpt_got.sort_unstable();
    rcpt_want.sort_unstable();
    if rcpt_got != rcpt_want {
        problems.push(format!("RCPT TO are {rcpt_got:?}, expected {rcpt_want:?}"));
    }
    let has_8bitmime = got
        .mail_params
        .iter()
        .any(|p| p.eq_ignore_ascii_case("BODY=8BITMIME"));
    if want.eight_bit && !has_8bitmime {
        problems.push(format!(
            "8-bit body but MAIL FROM parameters are {:?}, without BODY=8BITMIME",
            got.mail_params
        ));
    }

    // Wire form: CRLF only, no line over 998 octets.
    problems.extend(wire_problems(got.data));

    let Some((head, body)) = split_message(got.data) else {
        problems.push("no blank line between header and body".to_string());
        return problems;
    };
    let headers = parse_header_block(head);

    // Headers that must not be there, and those that must be there once.
    for name in ["Bcc", "Resent-Bcc"] {
        if count(&headers, name) != 0 {
            problems.push(format!("a {name} header was transmitted"));
        }
    }
    for name in ["Date", "Message-ID", "From"] {
        let n = count(&headers, name);
        if n != 1 {
            problems.push(format!("{n} {name} headers, expected exactly 1"));
        }
    }
    if let Some(id) = value(&headers, "Message-ID") {
        let id = id.trim();
        if !(id.starts_with('<') && id.ends_with('>') && id.contains('@')) {
            problems.push(format!("Message-ID {id:?} is not <left@right>"));
        }
    }

    // Address headers, as an independent parser (mail-parser) reads them.
    match mail_parser::MessageParser::default().parse(got.data) {
        None => problems.push("mail-parser cannot parse the message".to_string()),
        Some(message) => {
            if value(&headers, "Date").is_some() && message.date().is_none() {
                problems.push(format!(
                    "Date {:?} does not parse",
                    value(&headers, "Date").unwrap_or_default()
                ));
            }
            let from = addresses(message.from());
            if from.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>() != [want.from] {
                problems.push(format!(
                    "From addresses are {from:?}, expected [{:?}]",
                    want.from
                ));
            }
            if let Some(name) = want.from_name {
                let kept = from
                    .first()
                    .and_then(|(_, n)| n.as_deref())
                    .is_some_and(|n| n.contains(name));
                if !kept {
                    problems.push(format!("From {from:?} lost the display name {name:?}"));
                }
            }
            let to = addresses(message.to());
            if to.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>() != want.to {
                problems.push(format!("To addresses are {to:?}, expected {:?}", want.to));
            }
            let cc = addresses(message.cc());
            if cc.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>() != want.cc {
                problems.push(format!("Cc addresses are {cc:?}, expected {:?}", want.cc));
            }
        }
    }

    // Every other input header arrives unchanged.
    let input = to_crlf(caller.stdin.as_bytes());
    let (input_head, input_body) = split_message(&input).expect("caller stdin has a header block");
    let mut unmatched: Vec<&(String, String)> = headers.iter().collect();
    for (name, val) in parse_header_block(input_head) {
        if REWRITTEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        let found = unmatched
            .iter()
            .position(|(n, v)| n.eq_ignore_ascii_case(&name) && v.trim() == val.trim());
        match found {
            Some(i) => {
                unmatched.remove(i);
            }
            None => problems.push(format!(
                "input header {name}: {val} did not arrive unchanged"
            )),
        }
    }

    // Body, byte for byte.
    let want_body: Vec<u8> = match want.body {
        Body::AsInput => input_body.to_vec(),
        Body::Exact(text) => text.as_bytes().to_vec(),
    };
    if body != want_body.as_slice() {
        problems.push(format!(
            "body differs\n--- expected ---\n{}\n--- received ---\n{}",
            String::from_utf8_lossy(&want_body).escape_debug(),
            String::from_utf8_lossy(body).escape_debug()
        ));
    }

    problems
}

/// Panics with every problem and the received message when `check` finds any.
pub fn assert_delivered(caller: &Caller, got: &Delivery) {
    let problems = check(caller, got);
    if !problems.is_empty() {
        panic!(
            "{}: {} problem(s):\n- {}\n\nenvelope: MAIL FROM:<{}> {:?} RCPT TO:{:?}\nreceived message:\n{}",
            caller.name,
            problems.len(),
            problems.join("\n- "),
            got.mail_from,
            got.mail_params,
            got.rcpt_to,
            String::from_utf8_lossy(got.data)
        );
    }
}

/// (address, display name) of each mailbox of an address header, groups flattened. An entry
/// the parser found no address in (a bare `root` reads as a name) shows as "(no address)".
fn addresses(header: Option<&mail_parser::Address>) -> Vec<(String, Option<String>)> {
    header
        .map(|list| {
            list.iter()
                .map(|addr| {
                    let address = addr.address().unwrap_or("(no address)").to_string();
                    (address, addr.name().map(str::to_string))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Problems with the wire form of DATA: bare CR or LF, CR CR LF, lines over 998 octets.
fn wire_problems(data: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    if !data.ends_with(b"\r\n") {
        problems.push("DATA does not end with CRLF".to_string());
    }
    for (i, line) in data.split_inclusive(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let Some(text) = line.strip_suffix(b"\r\n") else {
            if line.ends_with(b"\n") {
                problems.push(format!("line {n} ends with a bare LF"));
            }
            continue;
        };
        if text.contains(&b'\r') {
            problems.push(format!("line {n} holds a bare CR (CR CR LF?)"));
        }
        if text.len() > 998 {
            problems.push(format!("line {n} is {} octets long (max 998)", text.len()));
        }
    }
    problems
}

/// Splits a CRLF message at its first empty line: (header block with its last CRLF, body).
fn split_message(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&data[..at + 2], &data[at + 4..]))
}

/// Header fields of a CRLF header block, unfolded: (name, value without the leading space).
fn parse_header_block(head: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(head);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.trim_start().to_string()));
        } else {
            fields.push((line.to_string(), String::new()));
        }
    }
    fields
}

fn count(headers: &[(String, String)], name: &str) -> usize {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .count()
}

fn value<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Each line ending made CRLF: a lone LF gets a CR, an existing CRLF stays as it is.
pub fn to_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 16);
    for (i, &b) in input.iter().enumerate() {
        if b == b'\n' && (i == 0 || input[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}
