#!/usr/bin/env python3
"""oauth-sendmail against msmtp: the figures of issue 6, as one table of medians.

Run through bench/run, which installs what this needs, builds the release binary and
the `measure` helper, then starts this with their paths. Everything lives in a
temporary directory (HOME of both clients, their configurations, the test CA, the
queue) that is removed at the end.

Two targets, one after the other, both on 127.0.0.1 with STARTTLS + XOAUTH2 required:
tests/mta/mailbox_server.py (aiosmtpd, --count-only: nothing stored, no PIPELINING) and
the test suite's real Postfix 3.7 + Dovecot instance (tests/mta/postfix/: XOAUTH2 through
Dovecot's oauth2 passdb, which asks an introspection endpoint served here; PIPELINING
offered; mail delivered into a Maildir). Against each, both clients run in turns (A B A
B ...) so that the machine's drift cancels in the ratios. Wall time and peak RSS of each
client process come from bench/measure.c (fork, exec, wait4).
"""

import argparse
import base64
import os
import platform
import random
import shutil
import smtplib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

USER = "bench@example.com"
RECIPIENT = "admin@example.com"
TOKEN = "ya29.bench-cached-access-token"

# Runs per figure. Small ones are cheap; the 20 MiB message costs a second or more a run.
RUNS_SMALL = 30
RUNS_1MIB = 15
RUNS_BIG = 5
RUNS_STARTUP = 100
# Ours drains each size; msmtp sends the smaller one, one process a message.
QUEUE_SIZES = (200, 1000)
QUEUE_REPEATS = 3
# `connections =` of the account for the drains, in turns.
DRAIN_CONNECTIONS = (1, 4)
# Runs of each client are made in this many turns, alternating.
TURNS = 5
# The large message: a 20 MiB attachment, about 27 MiB in base64.
BIG = 27 << 20
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# Debian cron's command line (see /work/shared/DESIGN.md), recipient `root` aliased.
CRON_ARGS = ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]
CRON_MESSAGE = b"""From: root (Cron Daemon)
To: root
Subject: Cron <root@bench> /usr/local/sbin/nightly-backup
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit
X-Cron-Env: <SHELL=/bin/sh>
X-Cron-Env: <HOME=/root>
X-Cron-Env: <PATH=/usr/bin:/bin>
X-Cron-Env: <LOGNAME=root>

backup: 1423 files, 212 MiB, done in 14 s
rsync: warning: some files vanished before they could be transferred
"""


class Samples:
    """The runs of one command: wall times (ms) and peak RSS (MiB)."""

    def __init__(self, runs):
        self.runs = runs

    @property
    def wall_ms(self):
        return statistics.median(r[0] / 1000 for r in self.runs)

    @property
    def rss_mib(self):
        return statistics.median(r[1] / 1024 for r in self.runs)

    @property
    def total_s(self):
        return sum(r[0] for r in self.runs) / 1e6


class Bench:
    def __init__(self, root, binary, measure):
        self.root = root
        self.binary = binary
        self.measure_bin = measure
        self.home = os.path.join(root, "home")
        self.errors = os.path.join(root, "stderr.log")
        self.accepted = os.path.join(root, "accepted.log")
        self.target = None
        self.port = free_port()
        os.makedirs(self.home)
        # Under the name `sendmail`, as cron, mailx and PHP start it.
        self.sendmail = os.path.join(root, "bin", "sendmail")
        os.makedirs(os.path.dirname(self.sendmail))
        os.symlink(binary, self.sendmail)
        self.make_pki()
        self.write_configs()
        self.cron_message = self.path("cron.eml")
        with open(self.cron_message, "wb") as f:
            f.write(CRON_MESSAGE)
        # What cron gives a job: no SSL_CERT_FILE/DIR, XDG_* or locale from a login shell.
        self.env = {"HOME": self.home, "LOGNAME": "root", "SHELL": "/bin/sh",
                    "PATH": "/usr/bin:/bin"}

    # --- set-up ---------------------------------------------------------------------
    def make_pki(self):
        """A test CA and a server certificate for 127.0.0.1 and localhost (openssl CLI)."""
        d = self.path("pki")
        os.makedirs(d)
        run = lambda *argv: subprocess.run(argv, check=True, cwd=d, capture_output=True)
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
        with open(os.path.join(d, "ext.cnf"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                    "authorityKeyIdentifier=keyid\n")
        run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")

    def write_configs(self):
        token_file = self.path("token")
        write_private(token_file, TOKEN + "\n")
        ca = self.path("pki", "ca.pem")
        self.common_config = common = f"""domain = "example.com"
queue_dir = "{self.path('queue')}"
log_file = "{self.path('delivery.log')}"

[aliases]
root = "{RECIPIENT}"

[accounts.bench]
provider = "custom"
host = "127.0.0.1"
port = {self.port}
tls = "starttls"
ca_file = "{ca}"
auth = "xoauth2"
from = "{USER}"
"""
        # The default configuration ($HOME/.config/...): the token from a command, exactly
        # what msmtp's passwordeval runs.
        config_dir = os.path.join(self.home, ".config", "oauth-sendmail")
        os.makedirs(config_dir)
        write_private(os.path.join(config_dir, "config.toml"),
                      common + f'secret = {{ command = "cat {token_file}" }}\n')
        # The same account reading the token file itself (no shell, no fork).
        self.file_config = self.path("config-file-secret.toml")
        write_private(self.file_config, common + f'secret = {{ file = "{token_file}" }}\n')
        # For the drains: the default configuration with `connections = N`.
        self.drain_configs = {}
        for n in DRAIN_CONNECTIONS:
            self.drain_configs[n] = self.path(f"config-{n}-connections.toml")
            write_private(self.drain_configs[n], common + f"connections = {n}\n"
                          + f'secret = {{ command = "cat {token_file}" }}\n')
        # The same account at a port where nothing listens: each send queues its message.
        self.down_config = self.path("config-down.toml")
        write_private(self.down_config,
                      common.replace(f"port = {self.port}\n", f"port = {free_port()}\n")
                      + f'secret = {{ file = "{token_file}" }}\n')

        write_private(self.path("aliases"), f"root: {RECIPIENT}\n")
        write_private(os.path.join(self.home, ".msmtprc"), f"""defaults
tls on
tls_starttls on
tls_trust_file {ca}
aliases {self.path('aliases')}

account bench
host 127.0.0.1
port {self.port}
auth xoauth2
user {USER}
from {USER}
passwordeval cat {token_file}

account default : bench
""")

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    # --- the server -----------------------------------------------------------------
    def start_server(self):
        self.target.start()

    def stop_server(self):
        if self.target:
            self.target.stop()

    # --- measuring ------------------------------------------------------------------
    def measure(self, runs, message, argv, env=None, expect_delivered=True):
        """Runs argv `runs` times with `message` (a path, or None) on stdin."""
        before = self.target.delivered() if expect_delivered else 0
        out = subprocess.run(
            [self.measure_bin, str(runs), message or "-", self.errors, "--", *argv],
            env=env or self.env, capture_output=True, text=True, check=True)
        rows = [tuple(int(x) for x in line.split()) for line in out.stdout.splitlines()]
        failed = [r for r in rows if r[2] != 0]
        if failed or len(rows) != runs:
            sys.exit(f"bench: {argv[0]} failed {len(failed)} of {runs} runs "
                     f"(exit {failed[0][2] if failed else '?'}); see {self.errors}")
        delivered = self.target.delivered() - before
        if expect_delivered and delivered != runs:
            sys.exit(f"bench: {runs} runs of {argv[0]} but the server got {delivered} messages")
        return Samples(rows)

    def turns(self, runs, message, commands, expect_delivered=True):
        """`runs` of each of `commands` (argv, env), in TURNS alternating turns."""
        samples = [Samples([]) for _ in commands]
        for turn in range(TURNS):
            share = runs // TURNS + (1 if turn < runs % TURNS else 0)
            for (argv, env), sample in zip(commands, samples):
                if share:
                    sample.runs += self.measure(share, message, argv, env,
                                                expect_delivered).runs
        return samples


class Aiosmtpd:
    """The test suite's aiosmtpd server (tests/mta), storing nothing, on the bench's port."""

    name = "aiosmtpd"

    def __init__(self, b):
        self.b = b
        self.server = None
        self.cleared = 0

    def start(self):
        b = self.b
        script = os.path.join(REPO, "tests", "mta", "mailbox_server.py")
        self.server = subprocess.Popen(
            [sys.executable, script, "--port", str(b.port), "--count-only", b.accepted,
             "--cert", b.path("pki", "server.pem"), "--key", b.path("pki", "server.key"),
             "--user", USER, "--token", TOKEN, "--stop-on-stdin-eof"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(b.path("server.log"), "a"))
        if self.server.stdout.readline().strip() != str(b.port).encode():
            sys.exit("bench: the SMTP server did not start; see " + b.path("server.log"))

    def stop(self):
        if self.server:
            self.server.stdin.close()
            self.server.wait(timeout=30)
            self.server = None

    def all_sizes(self):
        if not os.path.exists(self.b.accepted):
            return []
        with open(self.b.accepted) as f:
            return [int(line.split()[0]) for line in f if line.strip()]

    def sizes(self):
        """The sizes of the messages accepted since the last `clear`."""
        return self.all_sizes()[self.cleared:]

    def delivered(self):
        return len(self.sizes())

    def clear(self):
        self.cleared = len(self.all_sizes())


def json_server(path, answer):
    """A JSON endpoint on 127.0.0.1 (Python's http.server, plain http, as the tests use):
    `answer(form)` gives the status and body for each POSTed form. Returns the server
    (`shutdown()` stops it) and its URL."""
    import http.server
    import threading
    import urllib.parse

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            status, body = answer(urllib.parse.parse_qs(self.rfile.read(length).decode()))
            body = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}{path}"


class Introspection:
    """RFC 7662 token introspection for Dovecot's oauth2 passdb: the bench's token (the
    one scenario 2's endpoint issues too) is active, for USER."""

    def __init__(self):
        def answer(form):
            if form.get("token") == [TOKEN]:
                return 200, f'{{"active": true, "username": "{USER}", "token_type": "Bearer"}}'
            return 200, '{"active": false}'

        self.server, self.url = json_server("/introspect", answer)

    def stop(self):
        self.server.shutdown()


class Postfix:
    """The test suite's Postfix + Dovecot instance (tests/mta/postfix/, as
    tests/common/postfix.rs lays it out) on the bench's port, its XOAUTH2 tokens checked at
    an Introspection endpoint here, mail for admin@example.com delivered into a Maildir.
    Needs root, postfix and dovecot-core (scripts/install-test-deps)."""

    name = "Postfix + Dovecot"
    PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
    QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
    # Appended to main.cf: for experiments (e.g. "in_flow_delay = 0s"), empty in a run.
    EXTRA_MAIN_CF = ""

    def __init__(self, b):
        self.b = b
        self.script = None
        self.dir = None

    @staticmethod
    def unavailable():
        if os.geteuid() != 0:
            return "needs root"
        for daemon in ("/usr/sbin/postfix", "/usr/sbin/dovecot"):
            if not os.path.exists(daemon):
                return f"no {daemon} (scripts/install-test-deps installs it)"
        return None

    def start(self):
        b = self.b
        self.introspection = Introspection()
        # Postfix's and Dovecot's users must reach it: not below the bench's 0700 directory.
        d = self.dir = tempfile.mkdtemp(prefix="oauth-sendmail-bench-postfix.")
        os.chmod(d, 0o755)
        for sub in ("postfix", "dovecot", "queue", "mail"):
            os.mkdir(os.path.join(d, sub))
        os.chown(os.path.join(d, "mail"), 65534, 65534)
        templates = os.path.join(REPO, "tests", "mta", "postfix")
        for name, to in (("main.cf", "postfix"), ("master.cf", "postfix"),
                         ("mailboxes", "postfix"), ("refused", "postfix"),
                         ("dovecot.conf", "dovecot"), ("oauth2.conf.ext", "dovecot")):
            with open(os.path.join(templates, name)) as f:
                text = (f.read().replace("@DIR@", d).replace("@PORT@", str(b.port))
                        .replace("@INTROSPECTION_URL@", self.introspection.url))
            if name == "main.cf":
                text += self.EXTRA_MAIN_CF
            with open(os.path.join(d, to, name), "w") as f:
                f.write(text)
        shutil.copy(b.path("pki", "server.pem"), os.path.join(d, "server-cert.pem"))
        with open(b.path("pki", "server.key")) as f:
            write_private(os.path.join(d, "server-key.pem"), f.read())
        self.script = subprocess.Popen(
            [os.path.join(templates, "instance"), d], env={"PATH": self.PATH},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(os.path.join(d, "instance.log"), "w"))
        if self.script.stdout.readline().strip() != b"started":
            sys.exit(f"bench: the Postfix instance did not start; see {d}")
        deadline = time.monotonic() + 60
        socket_path = os.path.join(d, "dovecot", "run", "auth-postfix")
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", b.port), timeout=2) as c:
                    if c.recv(512).startswith(b"220 ") and os.path.exists(socket_path):
                        c.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit(f"bench: Postfix did not answer on {b.port} within 60 s; see {d}")

    def stop(self):
        if self.script:
            # End of file on its stdin: the script stops both daemons and removes the dir.
            self.script.stdin.close()
            self.script.wait(timeout=60)
            self.script = None
            self.introspection.stop()

    def maildir(self):
        return os.path.join(self.dir, "mail", "example.com", RECIPIENT.split("@")[0], "new")

    def idle(self, limit=300):
        """Waits until Postfix has delivered (or bounced) all it accepted."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            busy = any(files for queue in self.QUEUES
                       for _, _, files in os.walk(os.path.join(self.dir, "queue", queue)))
            if not busy:
                return
            time.sleep(0.05)
        sys.exit(f"bench: Postfix did not deliver within {limit} s; see {self.dir}")

    def sizes(self):
        self.idle()
        try:
            names = os.listdir(self.maildir())
        except FileNotFoundError:
            return []
        paths = [os.path.join(self.maildir(), n) for n in names]
        return [os.path.getsize(p) for p in sorted(paths, key=os.path.getmtime)]

    def delivered(self):
        self.idle()
        try:
            return len(os.listdir(self.maildir()))
        except FileNotFoundError:
            return 0

    def clear(self):
        """Empties the Maildir (27 MiB messages add up); `delivered` counts from zero."""
        self.idle()
        for name in os.listdir(self.maildir()) if os.path.isdir(self.maildir()) else []:
            os.unlink(os.path.join(self.maildir(), name))


def smtplib_times(b, message, runs, reuse):
    """The server's side of the work, timed in this process with Python's smtplib (one
    write for the text and its final dot, like ours): a whole session per run
    (connect, STARTTLS, AUTH XOAUTH2, MAIL, RCPT, DATA, QUIT) or, with `reuse`, DATA alone
    on a connection already open. Returns the median in ms."""
    # smtplib sends bytes as they are: give it CRLF lines, as the clients make them.
    message = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    context = ssl.create_default_context(cafile=b.path("pki", "ca.pem"))
    blob = base64.b64encode(f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode()).decode()
    session = None
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        if session is None:
            session = smtplib.SMTP("127.0.0.1", b.port)
            session.starttls(context=context)
            session.ehlo()
            session.docmd("AUTH", "XOAUTH2 " + blob)
        if reuse:
            session.mail(USER)
            session.rcpt(RECIPIENT)
            started = time.perf_counter()
            code, reply = session.data(message)
            if code != 250:
                sys.exit(f"bench: the server refused smtplib's message: {code} {reply}")
        else:
            session.sendmail(USER, [RECIPIENT], message)
            session.quit()
            session = None
        times.append((time.perf_counter() - started) * 1000)
    if session is not None:
        session.quit()
    return statistics.median(times)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def big_message(path, size):
    """A MIME message of about `size` bytes: a short text part and a base64 attachment of
    seeded random bytes (76-column lines, LF ends, as a mail client would pipe it)."""
    header = (f"From: {USER}\nTo: {RECIPIENT}\nSubject: {size // 1024} KiB attachment\n"
              "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n"
              "--b\nContent-Type: text/plain\n\nThe report is attached.\n"
              "--b\nContent-Type: application/octet-stream; name=\"report.bin\"\n"
              "Content-Transfer-Encoding: base64\n\n").encode()
    trailer = b"\n--b--\n"
    room = size - len(header) - len(trailer)
    raw = random.Random(6).randbytes(room * 3 // 4 * 76 // 77)
    encoded = base64.encodebytes(raw)  # 76 characters and "\n" a line
    with open(path, "wb") as f:
        f.write(header + encoded[:room].rstrip(b"\n") + trailer)
    return os.path.getsize(path)


# --- the table ------------------------------------------------------------------------
ROWS = []
NOTES = []


TARGET = ["—"]


def row(scenario, figure, ours, theirs, target="", met=None):
    ROWS.append((TARGET[0], scenario, figure, ours, theirs, target, met))


def fmt(value, unit):
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "s":
        return f"{value:.2f} s"
    return str(value)


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}x" if ours is not None and theirs else "—"


def print_table(out):
    header = ("server", "scenario", "figure (median)", "oauth-sendmail", "msmtp", "ours/msmtp",
              "target")
    lines = []
    for server, scenario, figure, ours, theirs, target, met in ROWS:
        unit = figure.rsplit(" ", 1)[-1].strip("()")
        verdict = "" if met is None else (" met" if met else " MISSED")
        lines.append((server, scenario, figure, fmt(ours, unit), fmt(theirs, unit),
                      ratio(ours, theirs), target + verdict))
    widths = [max(len(r[i]) for r in lines + [header]) for i in range(len(header))]
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    emit = lambda r: out.write("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |\n")
    emit(header)
    out.write(sep + "\n")
    for r in lines:
        emit(r)
    out.write("\n")
    for note in NOTES:
        out.write(note + "\n")


# --- scenarios --------------------------------------------------------------------------
def scenario_cached_token(b):
    """1. One cron mail per process, valid cached token."""
    message = b.cron_message
    env_file = dict(b.env, OAUTH_SENDMAIL_CONFIG=b.file_config)
    ours, theirs, ours_file = b.turns(RUNS_SMALL, message, [
        ([b.sendmail, *CRON_ARGS], None), (["msmtp", *CRON_ARGS], None),
        ([b.sendmail, *CRON_ARGS], env_file)])
    floor = smtplib_times(b, CRON_MESSAGE, RUNS_SMALL, reuse=False)
    name = "1. cron mail, cached token"
    note(f"1: a {len(CRON_MESSAGE)}-byte message as Debian cron pipes it "
         f"(sendmail {' '.join(CRON_ARGS)}), {RUNS_SMALL} runs each in {TURNS} turns; the "
         "token comes from a command for both: ours secret = { command = \"cat FILE\" }, "
         "msmtp passwordeval cat FILE. 1b: ours reading the file itself, secret = { file }.")
    row(name, "wall (ms)", ours.wall_ms, theirs.wall_ms, "≤ 0.08x",
        ours.wall_ms <= 0.08 * theirs.wall_ms)
    row(name, "peak RSS (MiB)", ours.rss_mib, theirs.rss_mib, "≤ 1.5x",
        ours.rss_mib <= 1.5 * theirs.rss_mib)
    name = "1b. the same, secret = { file }"
    row(name, "wall (ms)", ours_file.wall_ms, theirs.wall_ms, "≤ 2x floor",
        ours_file.wall_ms <= 2 * floor)
    row(name, "peak RSS (MiB)", ours_file.rss_mib, theirs.rss_mib)
    row("   floor: session alone, smtplib", "wall (ms)", floor, None)
    note("floor: connect, STARTTLS, AUTH XOAUTH2, MAIL, RCPT, DATA, QUIT from Python's "
         "smtplib inside the benchmark: the server's and the protocol's share, with no "
         "process start.")


def note(text):
    if text not in NOTES:
        NOTES.append(text)


class TokenEndpoint:
    """A fake OAuth2 token endpoint on 127.0.0.1 (plain http, as the tests use): answers a
    refresh_token grant with TOKEN, valid for 1 second (so the next run must refresh
    again), and counts the refreshes."""

    REFRESH_TOKEN = "1//bench-refresh-token"

    def __init__(self):
        self.refreshes = 0

        def answer(form):
            if (form.get("grant_type") == ["refresh_token"]
                    and form.get("refresh_token") == [TokenEndpoint.REFRESH_TOKEN]):
                self.refreshes += 1
                return 200, (f'{{"access_token": "{TOKEN}", "expires_in": 1, '
                             '"token_type": "Bearer"}')
            return 400, '{"error": "invalid_grant"}'

        self.server, self.url = json_server("/token", answer)

    def stop(self):
        self.server.shutdown()


def scenario_token_refresh(b):
    """2. Token expired, one refresh needed per message."""
    endpoint = TokenEndpoint()
    # Ours: the token engine, refresh token in the file store, every cached access token
    # already expired (1 s lifetime, and the engine refreshes a minute ahead).
    state = os.path.join(b.home, ".local", "state", "oauth-sendmail")
    os.makedirs(state, mode=0o700, exist_ok=True)
    write_private(os.path.join(state, "bench.refresh-token"), TokenEndpoint.REFRESH_TOKEN + "\n")
    config = b.path("config-oauth.toml")
    # Gmail's preset (its scope and login endpoint), the token endpoint pointed here.
    write_private(config, b.common_config.replace('provider = "custom"', 'provider = "gmail"') + f"""
[accounts.bench.oauth]
client_id = "bench-client"
client_secret = "bench-secret"
token_uri = "{endpoint.url}"
store = "file"
""")
    # msmtp: its passwordeval refreshes through the same endpoint (curl and sed: no
    # interpreter to start, the cheapest a shell script gets).
    refresh = b.path("refresh-token.sh")
    with open(refresh, "w") as f:
        f.write(f"""#!/bin/sh
curl -s -d grant_type=refresh_token -d refresh_token={TokenEndpoint.REFRESH_TOKEN} \\
  -d client_id=bench-client -d client_secret=bench-secret {endpoint.url} |
  sed -n 's/.*"access_token": *"\\([^"]*\\)".*/\\1/p'
""")
    os.chmod(refresh, 0o700)
    msmtprc = b.path("msmtprc-refresh")
    with open(os.path.join(b.home, ".msmtprc")) as f:
        write_private(msmtprc, f.read().replace(f"passwordeval cat {b.path('token')}",
                                                f"passwordeval {refresh}"))
    before = endpoint.refreshes
    ours, theirs = b.turns(RUNS_SMALL, b.cron_message, [
        ([b.sendmail, *CRON_ARGS], dict(b.env, OAUTH_SENDMAIL_CONFIG=config)),
        (["msmtp", "-C", msmtprc, *CRON_ARGS], None)])
    refreshes = endpoint.refreshes - before
    endpoint.stop()
    if refreshes != 2 * RUNS_SMALL:
        sys.exit(f"bench: expected one refresh per run, got {refreshes} for "
                 f"{RUNS_SMALL} runs of each client")
    name = "2. cron mail, token expired"
    note("2: the same cron mail with the access token expired, so each run makes one "
                 "refresh_token request to a token endpoint on 127.0.0.1 (plain http, Python's "
                 "http.server): ours through its token engine (refresh token in the file "
                 "store), msmtp through a passwordeval script running curl and sed; the "
                 "endpoint counted exactly one refresh per run for each.")
    row(name, "wall (ms)", ours.wall_ms, theirs.wall_ms)
    row(name, "peak RSS (MiB)", ours.rss_mib, theirs.rss_mib)


def scenario_big_messages(b):
    """3. A 1 MiB and a 27 MiB message (20 MiB attachment): wall time and peak RSS."""
    for size, runs in ((1 << 20, RUNS_1MIB), (BIG, RUNS_BIG)):
        message = b.path(f"{size >> 20}mib.eml")
        if not os.path.exists(message):
            big_message(message, size)
        actual = os.path.getsize(message)
        argv = ["-i", "-f", USER, RECIPIENT]
        b.target.clear()
        ours, theirs = b.turns(runs, message, [([b.sendmail, *argv], None),
                                               (["msmtp", *argv], None)])
        with open(message, "rb") as f:
            server = smtplib_times(b, f.read(), runs, reuse=True)
        # Every run must have delivered the whole message (CRLF or added headers make it
        # larger).
        short = [s for s in b.target.sizes() if s < actual]
        if short:
            sys.exit(f"bench: the server got a truncated message ({short[0]} < {actual} bytes)")
        b.target.clear()
        name = f"3. {size >> 20} MiB message"
        row(name, "wall (ms)", ours.wall_ms, theirs.wall_ms)
        target = "≤ 12 MiB" if size == BIG else ""
        row(name, "peak RSS (MiB)", ours.rss_mib, theirs.rss_mib, target,
            ours.rss_mib <= 12 if target else None)
        row("   smtplib, DATA alone", "wall (ms)", server, None)
    note(f"3: MIME with a base64 attachment, `sendmail -i -f FROM TO`, {RUNS_1MIB} runs "
         f"(1 MiB) and {RUNS_BIG} (27 MiB: a 20 MiB attachment) each, in turns. smtplib, "
         "DATA alone: the same message sent by Python's smtplib on a connection already "
         "open, about what the server takes to read it (smtplib's own work included).")


def scenario_queue_drain(b):
    """4. Queued messages drained by `sendmail -q` over 1 and 4 connections, and msmtp.

    The drains of each count alternate (1, 4, 1, 4 ...); msmtp runs once a message."""
    message = b.cron_message
    down = dict(b.env, OAUTH_SENDMAIL_CONFIG=b.down_config)
    small = min(QUEUE_SIZES)
    for size in QUEUE_SIZES:
        drains = {n: [] for n in DRAIN_CONNECTIONS}
        for _ in range(QUEUE_REPEATS):
            for n in DRAIN_CONNECTIONS:
                # Nothing listens where the down config points: every run queues its message.
                shutil.rmtree(b.path("queue"), ignore_errors=True)
                b.measure(size, message, [b.sendmail, *CRON_ARGS], env=down,
                          expect_delivered=False)
                queued = len([n for n in os.listdir(b.path("queue")) if n.endswith(".json")])
                if queued != size:
                    sys.exit(f"bench: {queued} messages queued, expected {size}")
                before = b.target.delivered()
                env = dict(b.env, OAUTH_SENDMAIL_CONFIG=b.drain_configs[n])
                drains[n].append(b.measure(1, None, [b.sendmail, "-q"], env=env,
                                           expect_delivered=False))
                delivered = b.target.delivered() - before
                if delivered != size:
                    sys.exit(f"bench: sendmail -q ({n} connections) delivered {delivered} "
                             f"of {size}")
                b.target.clear()
        theirs = None
        if size == small:
            # msmtp in turns with a drain of the same size, A B A B.
            theirs = Samples([])
            for _ in range(QUEUE_REPEATS):
                theirs.runs += b.measure(size // QUEUE_REPEATS, message,
                                         ["msmtp", *CRON_ARGS]).runs
            b.target.clear()
        theirs_s = theirs.total_s * size / len(theirs.runs) if theirs else None
        for n in DRAIN_CONNECTIONS:
            ours_s = statistics.median(d.total_s for d in drains[n])
            name = f"4. {size} queued: sendmail -q, {n} conn."
            target = "≤ 2 s" if size == 1000 else ""
            row(name, "total (s)", ours_s, theirs_s, target, ours_s <= 2 if target else None)
            row(name, "per message (ms)", ours_s * 1000 / size,
                theirs_s * 1000 / size if theirs else None)
            row(name, "peak RSS (MiB)", statistics.median(d.rss_mib for d in drains[n]),
                theirs.rss_mib if theirs else None)
            if size == max(QUEUE_SIZES):
                every = ", ".join(f"{d.total_s:.2f}" for d in drains[n])
                note(f"4: {size} queued, {n} connection(s), each drain (s): {every}")
    note(f"4: ours drains cron mails queued while the account pointed at a closed port "
         f"(`sendmail -q` with connections = {' and '.join(map(str, DRAIN_CONNECTIONS))}, "
         f"in turns; median of {QUEUE_REPEATS} drains of each size and count); msmtp sends "
         f"{small} one process each, in {QUEUE_REPEATS} turns.")


def scenario_startup(b):
    """5. Start-up alone: `send --dry-run` on a small message (no network)."""
    message = b.cron_message
    # In turns, so that both see the same load from whatever else runs on the machine.
    ours, floor = Samples([]), Samples([])
    for _ in range(10):
        ours.runs += b.measure(RUNS_STARTUP // 10, message,
                               [b.binary, "send", "--dry-run", *CRON_ARGS],
                               expect_delivered=False).runs
        floor.runs += b.measure(RUNS_STARTUP // 10, message, ["/bin/true"],
                                expect_delivered=False).runs
    name = "5. start-up: send --dry-run"
    note(f"5: `oauth-sendmail send --dry-run` of the cron mail, no network, "
                 f"{RUNS_STARTUP} runs, in turns with /bin/true (the cost of fork, exec and "
                 "wait alone).")
    row(name, "wall (ms)", ours.wall_ms, None, "< 5 ms", ours.wall_ms < 5)
    row(name, "peak RSS (MiB)", ours.rss_mib, None)
    row("   floor: /bin/true", "wall (ms)", floor.wall_ms, None)


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    msmtp = subprocess.run(["msmtp", "--version"], capture_output=True, text=True).stdout
    return (f"machine: {os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
            f"load {os.getloadavg()[0]:.2f}; {msmtp.splitlines()[0]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="the release oauth-sendmail")
    parser.add_argument("--measure", required=True, help="the measure helper")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--only", help="comma-separated scenario numbers, e.g. 1,5")
    parser.add_argument("--no-postfix", action="store_true",
                        help="the aiosmtpd server only (no root, or no Postfix here)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None

    root = tempfile.mkdtemp(prefix="oauth-sendmail-bench.")
    b = Bench(root, os.path.abspath(args.binary), os.path.abspath(args.measure))
    started = time.monotonic()
    print(machine(), flush=True)
    targets = [Aiosmtpd(b)]
    why = Postfix.unavailable()
    if why and not args.no_postfix:
        sys.exit(f"bench: cannot run the Postfix target: {why} (or pass --no-postfix)")
    if not args.no_postfix:
        targets.append(Postfix(b))
    # Against each server: 1, 3, 4; 2 and 5 against aiosmtpd only (5 uses no server).
    scenarios = [("1", scenario_cached_token, True), ("2", scenario_token_refresh, False),
                 ("3", scenario_big_messages, True), ("4", scenario_queue_drain, True),
                 ("5", scenario_startup, False)]
    try:
        for target in targets:
            b.target = target
            TARGET[0] = target.name
            target.start()
            print(f"server: {target.name}", flush=True)
            try:
                for number, scenario, every in scenarios:
                    if (only is None or number in only) and (every or target is targets[0]):
                        print(f"running: {scenario.__doc__.splitlines()[0]}", flush=True)
                        scenario(b)
            finally:
                target.stop()
    finally:
        if args.keep:
            print("work directory kept:", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n({time.monotonic() - started:.0f} s in all; medians of each client's runs)\n")
    print_table(sys.stdout)


if __name__ == "__main__":
    main()
