#!/usr/bin/env python3
# A real SMTP server not written by us (aiosmtpd) for tests/real_mta.rs: STARTTLS and XOAUTH2 required, mail delivered into a Maildir.
"""Mailbox server for the real-MTA test.

Listens on HOST (default 127.0.0.1) on --port (default: a free port), prints
that port alone on a line on stdout once it accepts connections, and serves
until SIGTERM or SIGINT (or, with --stop-on-stdin-eof, until its stdin closes,
so it dies with the test that started it).

The session must STARTTLS (certificate and key from --cert/--key) and then
AUTH XOAUTH2 with --user and --token before MAIL; PLAIN and LOGIN are not
offered. A wrong token is refused the way Gmail does it: a 334 challenge
carrying a base64 JSON error, then 535 5.7.8 once the client answers.

Each message is stored with the stdlib mailbox.Maildir in MAILDIR/new/KEY,
byte for byte as received (CRLF line ends, dot-unstuffed, without the final
"."). Its envelope goes into a sidecar file MAILDIR/envelope/KEY, one
"name value" pair a line (values never hold a newline):

    mail_from ADDR          (empty value for the null sender <>)
    mail_option OPTION      (each MAIL FROM parameter, e.g. BODY=8BITMIME)
    rcpt_to ADDR            (one line per accepted RCPT TO, in order)
    auth_user USER
    tls VERSION             (e.g. TLSv1.3)
    header_from ADDR        (addresses of the From/To/Cc headers, as parsed
    header_to ADDR           by Python's email package: a second opinion,
    header_cc ADDR           independent of the Rust parser)
    header_defect TEXT      (each defect Python's email parser reports)

Both files are in place before the server answers 250 to the final ".".

With --data-delay SECONDS the reply to each final "." comes that long after
the message is stored (tests/queue_faults.rs stops a flusher while it waits:
the message is delivered, the 250 not yet read).

With --sessions FILE each connection appends "open N" to FILE when it is made
and "close N" when it ends, N being how many are open just after (a STARTTLS
upgrade is the same connection): tests/parallel_drain.rs reads how many
sessions a client had open at once. With --max-sessions N too, a connection
beyond N open at once is greeted "432 4.3.2 Concurrent connections limit
exceeded" (Exchange Online's words) and closed; it appends "refused N".

With --count-only FILE (bench/run uses it) nothing is stored or parsed: each
accepted message appends one line "SIZE RCPT[,RCPT...]" to FILE, unsynced, so
that the server's own work per message stays small.
"""

import argparse
import asyncio
import base64
import email
import email.policy
import email.utils
import json
import logging
import mailbox
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult

HOSTNAME = "mta.test"


class MaildirHandler:
    """aiosmtpd handler: checks XOAUTH2 credentials and delivers to a Maildir."""

    def __init__(self, maildir_path, user, token, count_only=None, data_delay=0.0):
        self.user = user
        self.token = token
        self.data_delay = data_delay
        self.count_only = count_only and open(count_only, "a", buffering=1, encoding="utf-8")
        if self.count_only:
            return
        self.maildir = mailbox.Maildir(maildir_path, create=True)
        self.envelope_dir = os.path.join(maildir_path, "envelope")
        os.makedirs(self.envelope_dir, exist_ok=True)

    # aiosmtpd offers every `auth_<MECH>` method of the handler as an AUTH
    # mechanism and calls it as method(server, args), args = ["XOAUTH2", blob?].
    async def auth_XOAUTH2(self, server, args):
        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except ValueError:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)

        # "user=" USER ^A "auth=Bearer " TOKEN ^A ^A
        fields = blob.split(b"\x01")
        user = token = None
        for field in fields:
            if field.startswith(b"user="):
                user = field[len(b"user="):].decode("utf-8", "replace")
            elif field.startswith(b"auth=Bearer "):
                token = field[len(b"auth=Bearer "):].decode("utf-8", "replace")
        well_formed = len(fields) >= 3 and fields[-2:] == [b"", b""]

        if well_formed and user == self.user and token == self.token:
            return AuthResult(success=True, auth_data=user)

        # Gmail's way of refusing a token: a challenge with a JSON error,
        # an empty line from the client, then 535.
        error = json.dumps(
            {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
        )
        answer = await server.challenge_auth(error)
        if not isinstance(answer, bytes):
            return AuthResult(success=False, handled=True)
        return AuthResult(
            success=False,
            handled=False,
            message="535 5.7.8 Username and Password not accepted",
        )

    async def handle_DATA(self, server, session, envelope):
        if self.count_only:
            size = len(envelope.original_content)
            self.count_only.write("%d %s\n" % (size, ",".join(envelope.rcpt_tos)))
            reply = "250 2.0.0 OK"
        else:
            reply = "250 2.0.0 OK: queued as " + self.deliver(session, envelope)
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        return reply

    def deliver(self, session, envelope):
        """Store the message and its envelope sidecar; return the Maildir key."""
        content = envelope.original_content
        lines = ["mail_from " + (envelope.mail_from or "")]
        lines += ["mail_option " + option for option in envelope.mail_options]
        lines += ["rcpt_to " + rcpt for rcpt in envelope.rcpt_tos]
        lines.append("auth_user " + str(session.auth_data or ""))
        lines.append("tls " + tls_version(session))
        lines += header_lines(content)

        key = self.maildir.add(content)
        path = os.path.join(self.envelope_dir, key)
        with open(path + ".part", "w", encoding="utf-8") as sidecar:
            sidecar.write("\n".join(lines) + "\n")
        os.rename(path + ".part", path)
        return key


class SessionCounter:
    """Appends "open N" / "close N" to a file as connections come and go."""

    def __init__(self, path, limit=None):
        self.file = open(path, "a", buffering=1, encoding="utf-8")
        self.open_now = 0
        self.limit = limit

    def refused(self):
        self.file.write("refused %d\n" % self.open_now)

    def opened(self):
        self.open_now += 1
        self.file.write("open %d\n" % self.open_now)

    def closed(self):
        self.open_now -= 1
        self.file.write("close %d\n" % self.open_now)


class CountedSMTP(SMTP):
    """aiosmtpd's SMTP, each connection counted once (STARTTLS calls connection_made
    a second time, on the same connection)."""

    counter = None

    def connection_made(self, transport):
        if self._original_transport is None and not getattr(self, "_counted", False):
            limit = self.counter.limit
            if limit is not None and self.counter.open_now >= limit:
                self._refused = True
                self.counter.refused()
                transport.write(b"432 4.3.2 Concurrent connections limit exceeded\r\n")
                transport.close()
                return
            self._counted = True
            self.counter.opened()
        super().connection_made(transport)

    def connection_lost(self, error):
        if getattr(self, "_refused", False):
            return
        if getattr(self, "_counted", False):
            self._counted = False
            self.counter.closed()
        super().connection_lost(error)


def tls_version(session):
    """The TLS protocol version of the session, or "none"."""
    info = session.ssl
    if not info:
        return "none"
    ssl_object = info.get("ssl_object") if isinstance(info, dict) else None
    if ssl_object is not None:
        return ssl_object.version() or "unknown"
    return "unknown"


def header_lines(content):
    """Sidecar lines holding the From/To/Cc addresses and parser defects."""
    lines = []
    message = email.message_from_bytes(content, policy=email.policy.compat32)
    for name in ("from", "to", "cc"):
        values = message.get_all(name, [])
        for _display, address in email.utils.getaddresses(values):
            lines.append("header_" + name + " " + address)
    for defect in message.defects:
        lines.append("header_defect " + type(defect).__name__ + ": " + str(defect))
    strict = email.message_from_bytes(content, policy=email.policy.default)
    for name in ("from", "to", "cc", "date", "message-id"):
        header = strict.get(name)
        for defect in getattr(header, "defects", ()):
            text = str(defect).replace("\n", " ")
            lines.append("header_defect " + name + ": " + text)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument("--user", required=True, help="the only XOAUTH2 user accepted")
    parser.add_argument("--token", required=True, help="the only bearer token accepted")
    parser.add_argument("--maildir", help="Maildir to deliver into")
    parser.add_argument(
        "--count-only",
        metavar="FILE",
        help="store nothing: append 'SIZE RCPTS' to FILE for each message",
    )
    parser.add_argument(
        "--data-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long after storing a message before replying to its final dot",
    )
    parser.add_argument(
        "--sessions",
        metavar="FILE",
        help="append 'open N' / 'close N' to FILE as connections come and go",
    )
    parser.add_argument(
        "--max-sessions",
        type=int,
        metavar="N",
        help="with --sessions: greet a connection beyond N open at once with 432 and close it",
    )
    parser.add_argument(
        "--no-size-limit",
        action="store_true",
        help="accept a message of any size (aiosmtpd's default limit is 32 MiB)",
    )
    parser.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes (the parent test died or is done)",
    )
    args = parser.parse_args()
    if not (args.maildir or args.count_only):
        parser.error("one of --maildir and --count-only is required")

    logging.basicConfig(stream=sys.stderr, level=logging.ERROR)

    tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_context.load_cert_chain(args.cert, args.key)

    handler = MaildirHandler(
        args.maildir, args.user, args.token, args.count_only, args.data_delay
    )
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    server_class = SMTP
    if args.sessions:
        CountedSMTP.counter = SessionCounter(args.sessions, args.max_sessions)
        server_class = CountedSMTP

    def new_session():
        return server_class(
            handler,
            hostname=HOSTNAME,
            tls_context=tls_context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            auth_exclude_mechanism=["PLAIN", "LOGIN"],
            loop=loop,
            **({"data_size_limit": None} if args.no_size_limit else {}),
        )

    server = loop.run_until_complete(loop.create_server(new_session, args.host, args.port))
    port = server.sockets[0].getsockname()[1]

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, loop.stop)
    if args.stop_on_stdin_eof:
        stdin = sys.stdin.buffer

        def on_stdin():
            if not os.read(stdin.fileno(), 4096):
                loop.stop()

        loop.add_reader(stdin.fileno(), on_stdin)

    print(port, flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


if __name__ == "__main__":
    main()
