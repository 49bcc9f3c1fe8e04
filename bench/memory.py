"""Peak RSS of one large message (issue 15, target 1): 1, 27 and 100 MiB, sent directly
(`sendmail -i -f FROM TO`) and through the queue (queued while nothing listens, then
`sendmail -q`) and as one `sendmail -bs` session (1 and 27 MiB: -bs takes at most 35
MiB), against the test suite's aiosmtpd server with no size limit; and in
system mode (bench/service.py's set-up: the daemon under a root of its own), the
client's peak RSS and the service's (VmHWM of a daemon started for that size, after it
took and delivered the 3 messages); and the relay: that daemon's peak RSS once a LAN
device (Python's smtplib, let in by its address) relayed the message to it 3 times,
at once over 3 connections.

    cargo build --release && cc -O2 -o target/bench/measure bench/measure.c
    python3 bench/memory.py target/release/oauth-sendmail target/bench/measure

Prints one line a size: the medians of 3 runs (bench.py's set-up, server and message)."""
import os
import shutil
import smtplib
import sys
import tempfile
import threading

import bench
import service

RUNS = 3


class Unlimited(bench.Aiosmtpd):
    """The bench's aiosmtpd server, taking messages over its default 32 MiB."""

    def start(self):
        b = self.b
        script = os.path.join(bench.REPO, "tests", "mta", "mailbox_server.py")
        self.server = bench.subprocess.Popen(
            [sys.executable, script, "--port", str(b.port), "--count-only", b.accepted,
             "--cert", b.path("pki", "server.pem"), "--key", b.path("pki", "server.key"),
             "--user", bench.USER, "--token", bench.TOKEN, "--no-size-limit",
             "--stop-on-stdin-eof"],
            stdin=bench.subprocess.PIPE, stdout=bench.subprocess.PIPE,
            stderr=open(b.path("server.log"), "a"))
        if self.server.stdout.readline().strip() != str(b.port).encode():
            sys.exit("memory: the SMTP server did not start; see " + b.path("server.log"))


def system_mode(b, binary, message, mib):
    """RUNS submissions of `message` through a daemon of its own: the client's samples,
    and the daemon's peak RSS (MiB) once they are delivered."""
    system = service.Service(b, binary)
    # One root per size (Service makes its directories), a limit the 100 MiB message fits.
    config = os.path.join(system.root, "etc", "oauth-sendmail", "config.toml")
    with open(config, "a") as f:
        f.write(f"max_message_size = {(mib + 8) << 20}\n")
    system.start()
    try:
        before = b.target.delivered()
        argv = [b.sendmail, "-i", "-f", bench.USER, bench.RECIPIENT]
        client = b.measure(RUNS, message, argv, env=system.env, expect_delivered=False)
        service.wait_delivered(b.target, before + RUNS, limit=600)
        peak = system.rss_kib("VmHWM") / 1024
    finally:
        system.stop()
        shutil.rmtree(system.root, ignore_errors=True)
        shutil.rmtree(system.home, ignore_errors=True)
    return client, peak


def relay_mode(b, binary, message, mib):
    """The daemon's peak RSS (MiB) after relaying `message` from a device RUNS times at
    once (a listener without TLS on 127.0.0.1, the device known by its address)."""
    system = service.Service(b, binary)
    port = bench.free_port()
    config = os.path.join(system.root, "etc", "oauth-sendmail", "config.toml")
    with open(config, "a") as f:
        f.write(f"max_message_size = {(mib + 8) << 20}\n\n"
                f"[[relay.listener]]\naddress = \"127.0.0.1\"\nport = {port}\n"
                f"tls = \"none\"\nmax_message_size = {(mib + 8) << 20}\n\n"
                "[relay.devices.bench]\nnetwork = \"127.0.0.1/32\"\n")
    with open(message, "rb") as f:
        # As a device sends it: CRLF lines.
        data = f.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    system.start()
    try:
        before = b.target.delivered()
        errors = []

        def relay_once():
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=600) as s:
                    s.sendmail(bench.USER, [bench.RECIPIENT], data)
            except Exception as e:  # reported below: the figure would be wrong
                errors.append(e)

        threads = [threading.Thread(target=relay_once) for _ in range(RUNS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit(f"memory: relaying failed: {errors[0]}; see {b.path('daemon.log')}")
        service.wait_delivered(b.target, before + RUNS, limit=600)
        return system.rss_kib("VmHWM") / 1024
    finally:
        system.stop()
        shutil.rmtree(system.root, ignore_errors=True)
        shutil.rmtree(system.home, ignore_errors=True)


def bs_session(message, path):
    """`message` as one `sendmail -bs` session in the file `path`: CRLF, dot-stuffed."""
    with open(message, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    text = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)
    envelope = f"EHLO bench\r\nMAIL FROM:<{bench.USER}>\r\nRCPT TO:<{bench.RECIPIENT}>\r\nDATA\r\n"
    with open(path, "wb") as f:
        f.write(envelope.encode() + text + b".\r\nQUIT\r\n")
    return path


def main():
    binary, measure = (os.path.abspath(a) for a in sys.argv[1:3])
    root = tempfile.mkdtemp(prefix="oauth-sendmail-memory.")
    b = bench.Bench(root, binary, measure)
    b.target = Unlimited(b)
    b.target.start()
    try:
        for mib in (1, 27, 100):
            message = b.path(f"{mib}mib.eml")
            bench.big_message(message, mib << 20)
            argv = [b.sendmail, "-i", "-f", bench.USER, bench.RECIPIENT]
            direct = b.measure(RUNS, message, argv)
            down = dict(b.env, OAUTH_SENDMAIL_CONFIG=b.down_config)
            flushes = []
            for _ in range(RUNS):
                b.measure(1, message, argv, env=down, expect_delivered=False)
                flushes += b.measure(1, None, [b.sendmail, "-q"]).runs
            queue = bench.Samples(flushes)
            bs = "-"
            if mib < 35:
                session = bs_session(message, b.path(f"{mib}mib.bs"))
                bs = f"{b.measure(RUNS, session, [b.sendmail, '-bs']).rss_mib:.1f} MiB"
            client, daemon = system_mode(b, binary, message, mib)
            relayed = relay_mode(b, binary, message, mib)
            print(f"{mib} MiB: peak RSS direct {direct.rss_mib:.1f} MiB, "
                  f"sendmail -q {queue.rss_mib:.1f} MiB, -bs {bs}, "
                  f"system mode client {client.rss_mib:.1f} MiB, service {daemon:.1f} MiB, "
                  f"relay (3 at once) {relayed:.1f} MiB "
                  f"(wall {direct.wall_ms:.0f} / {queue.wall_ms:.0f} / "
                  f"{client.wall_ms:.0f} ms)", flush=True)
    finally:
        b.target.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
