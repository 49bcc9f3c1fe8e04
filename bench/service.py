#!/usr/bin/env python3
"""The machine-wide service's figures (issue 11), printed beside the issue's targets.

Run through bench/run-service, which builds the release binary and bench/measure.c and
installs aiosmtpd, then starts this with their paths. It installs the service under a
temporary root (OAUTH_SENDMAIL_ROOT), runs `oauth-sendmail daemon` there as this user,
and submits as `sendmail` in system mode (no configuration of its own: the drop
directory exists), against the test suite's aiosmtpd server (STARTTLS + XOAUTH2
required, --count-only) on 127.0.0.1, as bench/bench.py sets it up. Figures:

  1. a `sendmail -t` submission's cost to the caller (median wall time, measure.c);
  2. submission to delivered (median: from the start of sendmail to the server's count);
  3. 8 parallel submitters' sustained messages per minute into the spool;
  4. 1,000 spooled messages delivered (server back, `sendmail -q`), and the service's
     peak RSS meanwhile (VmRSS sampled, and VmHWM);
  5. a message queued while the server was down: how soon it goes out once it is back.

Nothing is asserted: figures are printed, the targets beside them.
"""

import argparse
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the set-up of bench/bench.py: PKI, aiosmtpd, measure)

RUNS = 50
LATENCY_RUNS = 30
PARALLEL = 8
PER_SUBMITTER = 150
DRAIN = 1000
MESSAGE = b"""From: root (Cron Daemon)
To: root
Subject: Cron <root@bench> /usr/local/sbin/nightly-backup

backup: 1423 files, 212 MiB, done in 14 s
"""


class Service:
    """The daemon under a root of its own, its clients in system mode."""

    def __init__(self, b, binary):
        self.b = b
        self.binary = binary
        self.root = b.path("sys")
        self.daemon = None
        etc = os.path.join(self.root, "etc", "oauth-sendmail")
        os.makedirs(etc)
        user = pwd.getpwuid(os.geteuid()).pw_name
        # bench.py's account, its token read from the file; the service's own queue.
        bench.write_private(os.path.join(etc, "config.toml"), b.common_config
                            + f'secret = {{ file = "{b.path("token")}" }}\n'
                            + f'\n[service]\nuser = "{user}"\nrate_limit = "none"\n')
        self.home = b.path("client-home")
        os.makedirs(self.home)
        self.env = {"OAUTH_SENDMAIL_ROOT": self.root, "HOME": self.home,
                    "LOGNAME": user, "PATH": "/usr/bin:/bin"}
        self.socket = os.path.join(self.root, "run", "oauth-sendmail", "submit.sock")
        self.message = b.path("service.eml")
        with open(self.message, "wb") as f:
            f.write(MESSAGE)

    def start(self):
        log = open(self.b.path("daemon.log"), "a")
        self.daemon = subprocess.Popen([self.binary, "daemon"], env=self.env,
                                       stdin=subprocess.DEVNULL, stderr=log)
        until = time.monotonic() + 10
        while time.monotonic() < until:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.socket)
                return
            except OSError:
                time.sleep(0.01)
        sys.exit("bench: the service did not start; see " + self.b.path("daemon.log"))

    def stop(self):
        if self.daemon:
            self.daemon.terminate()
            self.daemon.wait(timeout=30)
            self.daemon = None

    def rss_kib(self, field="VmRSS"):
        with open(f"/proc/{self.daemon.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def queued(self):
        queue = os.path.join(self.root, "var", "spool", "oauth-sendmail", "queue")
        return sum(1 for n in os.listdir(queue) if n.endswith(".json"))

    def submit(self, runs):
        """`runs` submissions of `sendmail -t` through measure.c: per run (wall us, rss kib)."""
        out = subprocess.run(
            [self.b.measure_bin, str(runs), self.message, self.b.errors, "--",
             self.b.sendmail, "-t"],
            env=self.env, capture_output=True, text=True, check=True)
        rows = [tuple(int(x) for x in line.split()) for line in out.stdout.splitlines()]
        failed = [r for r in rows if r[2] != 0]
        if failed:
            sys.exit(f"bench: {len(failed)} of {runs} submissions failed; see {self.b.errors}")
        return rows

    def flush(self):
        subprocess.run([self.b.sendmail, "-q"], env=self.env, check=True,
                       capture_output=True)


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    return (f"{os.cpu_count()} cores ({cpu}), Linux {os.uname().release}, "
            f"load {os.getloadavg()[0]:.2f}")


def wait_delivered(target, n, limit=120):
    until = time.monotonic() + limit
    while target.delivered() < n:
        if time.monotonic() > until:
            sys.exit(f"bench: {target.delivered()} of {n} delivered after {limit} s")
        time.sleep(0.0005)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--measure", required=True)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    root = tempfile.mkdtemp(prefix="oauth-sendmail-service-bench-")
    b = bench.Bench(root, binary, os.path.abspath(args.measure))
    target = bench.Aiosmtpd(b)
    b.target = target
    service = Service(b, binary)
    results = []
    try:
        target.start()
        service.start()
        service.submit(5)  # warm-up: page cache, first connection
        wait_delivered(target, 5)
        target.clear()

        rows = service.submit(RUNS)
        cost = statistics.median(r[0] for r in rows) / 1000
        rss = statistics.median(r[1] for r in rows) / 1024
        wait_delivered(target, RUNS)
        results.append(("a sendmail -t submission, cost to the caller", f"{cost:.2f} ms",
                        "<= 3 ms", f"14.6 ms; client peak RSS {rss:.1f} MiB"))
        target.clear()

        latencies = []
        for i in range(LATENCY_RUNS):
            start = time.monotonic()
            subprocess.run([b.sendmail, "-t"], input=MESSAGE, env=service.env, check=True,
                           capture_output=True)
            wait_delivered(target, i + 1)
            latencies.append((time.monotonic() - start) * 1000)
        latency = statistics.median(latencies)
        results.append(("submission to delivered (median)", f"{latency:.1f} ms", "<= 20 ms",
                        "68 ms"))
        target.clear()

        start = time.monotonic()
        threads = [threading.Thread(target=service.submit, args=(PER_SUBMITTER,))
                   for _ in range(PARALLEL)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        total = PARALLEL * PER_SUBMITTER
        rate = total / elapsed * 60
        results.append((f"{PARALLEL} parallel submitters into the spool",
                        f"{rate:,.0f}/min ({total} in {elapsed:.1f} s)", ">= 20,000/min",
                        "~5,600/min (4 submitters)"))
        wait_delivered(target, total, limit=300)
        target.clear()

        # 1,000 spooled while the server is down, then it is back and the queue forced.
        target.stop()
        threads = [threading.Thread(target=service.submit, args=(DRAIN // PARALLEL,))
                   for _ in range(PARALLEL)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(3)
        spooled = service.queued()
        target.start()
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], service.rss_kib())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.monotonic()
        service.flush()
        wait_delivered(target, spooled, limit=300)
        drain = time.monotonic() - start
        done.set()
        sampler.join()
        hwm = service.rss_kib("VmHWM")
        results.append((f"{spooled} spooled messages delivered", f"{drain:.2f} s", "< 3 s",
                        "200 in 3.5 s"))
        results.append(("the service's RSS while delivering them",
                        f"{peak[0] / 1024:.1f} MiB (VmHWM {hwm / 1024:.1f} MiB)", "< 20 MiB",
                        "37-44 MiB PSS"))
        target.clear()

        # One message while the server is down; how soon after its return it goes out.
        target.stop()
        subprocess.run([b.sendmail, "-t"], input=MESSAGE, env=service.env, check=True,
                       capture_output=True)
        time.sleep(5)
        target.start()
        back = time.monotonic()
        wait_delivered(target, 1, limit=300)
        results.append(("queued while the server was down: out after its return",
                        f"{time.monotonic() - back:.2f} s", "within seconds",
                        "305 s (Postfix's own retry)"))
    finally:
        service.stop()
        target.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\nissue 11: the machine-wide service ({machine()})\n")
    width = max(len(r[0]) for r in results)
    print(f"{'figure':<{width}}  {'oauth-sendmail':<34}  {'target':<16}  Postfix 3.7 + sasl-xoauth2 (issue)")
    for name, ours, goal, theirs in results:
        print(f"{name:<{width}}  {ours:<34}  {goal:<16}  {theirs}")


if __name__ == "__main__":
    main()
