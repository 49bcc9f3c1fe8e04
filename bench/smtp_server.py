#!/usr/bin/env python3
"""Benchmark SMTP server: aiosmtpd on 127.0.0.1, STARTTLS and XOAUTH2 required.

The same rules as tests/mta/mailbox_server.py (the session must STARTTLS, then
AUTH XOAUTH2 with --user and --token, before MAIL; PLAIN and LOGIN are not
offered), but nothing is stored: each accepted message appends one line
"SIZE RECIPIENTS" to --accepted (no fsync), so the benchmark can check that
every client run really delivered, and how many bytes arrived.

Prints "ready" on stdout once it accepts connections on --port; serves until
SIGTERM/SIGINT or until its stdin closes.
"""

import argparse
import asyncio
import base64
import logging
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult


class Handler:
    def __init__(self, user, token, accepted):
        self.user = user
        self.token = token
        self.accepted = open(accepted, "a", buffering=1, encoding="ascii")

    # aiosmtpd offers each handler method auth_<MECH> as an AUTH mechanism.
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
        expected = b"user=%s\x01auth=Bearer %s\x01\x01" % (
            self.user.encode(),
            self.token.encode(),
        )
        if blob == expected:
            return AuthResult(success=True, auth_data=self.user)
        # Gmail's refusal: a challenge carrying a JSON error, then 535.
        await server.challenge_auth('{"status":"401","schemes":"bearer"}')
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )

    async def handle_DATA(self, server, session, envelope):
        self.accepted.write("%d %s\n" % (len(envelope.original_content), ",".join(envelope.rcpt_tos)))
        return "250 2.0.0 OK"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--accepted", required=True, help="file to append a line to per message")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.ERROR)

    tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_context.load_cert_chain(args.cert, args.key)
    handler = Handler(args.user, args.token, args.accepted)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def new_session():
        return SMTP(
            handler,
            hostname="bench.test",
            tls_context=tls_context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            auth_exclude_mechanism=["PLAIN", "LOGIN"],
            data_size_limit=64 * 1024 * 1024,
            loop=loop,
        )

    server = loop.run_until_complete(
        loop.create_server(new_session, "127.0.0.1", args.port, reuse_address=True)
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, loop.stop)
    stdin = sys.stdin.buffer

    def on_stdin():
        if not os.read(stdin.fileno(), 4096):
            loop.stop()

    loop.add_reader(stdin.fileno(), on_stdin)
    print("ready", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()


if __name__ == "__main__":
    main()
