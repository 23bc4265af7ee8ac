"""``hado demo``: a 3-node cluster on loopback that shows a failover live.

No root and no config needed: three daemons on 127.0.0.1 with free ports, a temporary
directory with a generated secret and dummy resources (state files). The demo kills
the active node, shows who takes over, how fast and why, restarts the killed node,
and leaves nothing behind when it ends: on Ctrl-C, SIGTERM or SIGHUP (a closed
terminal), or when ``--duration`` seconds have passed since it began, whichever step
it is in (so a short duration ends it before the failover, and the demo says so).
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

NODES = {"node-a": 100, "node-b": 50, "node-c": 10}
HEARTBEAT, DEAD_AFTER = 0.2, 1.0


def free_port():
    for _ in range(100):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def fetch(url, timeout=0.5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


class Stop(Exception):
    """Ends the demo early: Ctrl-C, SIGTERM, SIGHUP (a closed terminal) or --duration."""

    def __init__(self, why):
        super().__init__(why)
        self.why = why


SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP (terminal closed?)",
                signal.SIGALRM: "duration"}
STOP_GRACE = 5.0   # seconds a daemon gets to stop cleanly (SIGTERM) before kill -9


def say(text):
    """print() that flushes (a pipe shows the demo live) and survives a closed terminal
    or pipe: from then on the output goes nowhere, and the clean stop goes on."""
    try:
        print(text, flush=True)
    except OSError:                     # EIO from a hung-up terminal, EPIPE from `| head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class Demo:
    """The demo cluster. Signals and the end of ``--duration`` raise :class:`Stop` in
    the main thread wherever the demo is, except while it starts a daemon (which must
    be recorded to be stopped) or stops them (cleanup runs to its end)."""

    def __init__(self, out=say):
        self.out = out
        self.dir = None
        self.procs = {}
        self.holding = 0          # > 0: a signal waits in self.pending
        self.pending = None
        self.stopping = False     # a Stop was raised or cleanup began: signals change nothing
        self.failover_shown = False

    # ----- stopping wherever the demo is -------------------------------------------------

    def on_signal(self, signum, frame):
        why = SIGNAL_NAMES.get(signum, f"signal {signum}")
        if self.stopping:
            return
        if self.holding:
            self.pending = self.pending or why
            return
        self.stopping = True
        raise Stop(why)

    @contextlib.contextmanager
    def held(self):
        """No Stop inside: a signal that arrives meanwhile raises it at the end."""
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
            if not self.holding and self.pending and not self.stopping:
                self.stopping = True
                raise Stop(self.pending)

    # ----- the cluster ----------------------------------------------------------------------

    def setup(self):
        self.dir = tempfile.mkdtemp(prefix="hado-demo-")
        self.ports = {name: free_port() for name in NODES}
        secret = os.path.join(self.dir, "secret")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        self.config = os.path.join(self.dir, "config.json")
        state = os.path.join(self.dir, "{node}")
        with open(self.config, "w") as f:
            json.dump({
                "cluster": {"name": "demo", "secret_file": secret, "heartbeat": HEARTBEAT, "dead_after": DEAD_AFTER,
                            "nodes": {n: {"url": f"http://127.0.0.1:{self.ports[n]}", "priority": p}
                                      for n, p in NODES.items()}},
                "apps": {"web": {"resources": [
                    # like a VIP: a lease that ends by itself unless renewed (hado/bounds.py)
                    {"name": "address", "plugin": "dummy", "interval": 0.5, "timeout": 0.3, "start_timeout": 0.3,
                     "stop_timeout": 0.3, "args": {"path": f"{state}-address", "node": "{node}", "lease": 1}},
                    # like a service without a lease: short timeouts make a short stop budget
                    {"name": "server", "plugin": "dummy", "interval": 0.5, "timeout": 0.3, "start_timeout": 0.5,
                     "stop_timeout": 0.3,
                     "args": {"path": f"{state}-server", "node": "{node}", "start_delay": 0.1}}]}},
            }, f, indent=2)

    def url(self, name):
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name):
        with self.held():
            log = open(os.path.join(self.dir, f"{name}.log"), "ab")
            try:
                # A session of its own: Ctrl-C and a closed terminal reach the demo only,
                # which stops the daemons in order (a daemon would take SIGHUP for a reload).
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "hado", "--config", self.config, "--node", name, "--log-level", "info"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            finally:
                log.close()

    def states(self):
        return {n: fetch(self.url(n) + "/v1/state") for n, p in self.procs.items() if p.poll() is None}

    def active(self, names=None):
        # s["apps"] may lack "web" for a moment while a daemon starts
        found = [n for n, s in self.states().items() if s and s["apps"].get("web", {}).get("role") == "active"
                 and (names is None or n in names)]
        return found[0] if len(found) == 1 else None

    def wait(self, condition, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        return None

    def show(self, title):
        self.out(f"\n--- {title}")
        for name, state in sorted(self.states().items()):
            app = state and state["apps"].get("web")
            if not app:
                self.out(f"  {name:7} (not answering)" if not state else f"  {name:7} (starting)")
                continue
            self.out(f"  {name:7} {app['role']:9} quorum {state['quorum']['votes']}/{len(NODES)}  {app['reason']}")

    def run(self, duration=None):
        """The demo, until Ctrl-C (Stop) or, with ``duration``, until that many seconds
        after it began (Stop("duration"), whichever step it is in). 1 if the cluster
        never elected a node."""
        if duration is not None:
            # > 0: setitimer(0) would switch the timer off; <= 0 means "over at once"
            signal.setitimer(signal.ITIMER_REAL, min(max(duration, 0.001), 1e8))
        with self.held():
            self.setup()
        self.out(f"HA-DO demo: 3 nodes on 127.0.0.1 (heartbeat {HEARTBEAT} s, dead_after {DEAD_AFTER} s), "
                 f"files in {self.dir}")
        for name in NODES:
            self.start(name)
        for name in NODES:
            self.out(f"  {name}: {self.url(name)}/   (open in a browser; /metrics, /health too)")
        first = self.wait(self.active, 15)
        if not first:
            self.out("the cluster did not elect an active node within 15 s; see the logs in " + self.dir)
            self.stopping = True
            return 1
        self.show(f"{first} runs the app 'web'")
        time.sleep(2)
        self.out(f"\n*** kill -9 {first} (pid {self.procs[first].pid}) ***")
        killed_ns = time.monotonic_ns()
        self.procs[first].kill()
        self.procs[first].wait()
        rest = [n for n in NODES if n != first]
        second = self.wait(lambda: self.active(rest), 15)
        if second:
            with open(os.path.join(self.dir, f"{second}-server")) as f:
                started_ns = int(f.read().split()[0])
            self.out(f"failover: {second} runs 'web' {(started_ns - killed_ns) / 1e9:.2f} s after the kill "
                     f"(its last resource started then)")
            self.show("after the failover")
        else:
            self.out("no node took over within 15 s; see the logs in " + self.dir)
        self.failover_shown = True
        self.out(f"\n*** restart {first} ***")
        self.start(first)
        time.sleep(2.5)
        self.show(f"{first} is back and stays standby: a running app stays where it is (stickiness)")
        self.out("\nCtrl-C ends the demo" + (f" (or it ends {duration:g} s after it began)" if duration else "") +
                 f"; try: python3 -m hado status --url {self.url(rest[0])}")
        while True:
            time.sleep(3600)            # until Stop: Ctrl-C, SIGTERM, SIGHUP or the duration

    def stopped(self, stop, duration):
        """The line that says why the demo ends now."""
        if stop.why != "duration":
            return f"\n{stop.why}: stopping the demo cluster"
        if self.failover_shown:
            return f"\n--duration {duration:g} s is over: stopping the demo cluster"
        return (f"\n--duration {duration:g} s is over before the demo showed the failover: stopping the demo "
                f"cluster (the whole demo takes about 7 s; leave --duration out to run it until Ctrl-C)")

    def cleanup(self):
        """Stop every daemon (SIGTERM, kill -9 after STOP_GRACE s) and remove the files.
        Returns the names of the daemons that had to be killed."""
        self.stopping = True
        signal.setitimer(signal.ITIMER_REAL, 0)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        killed = []
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed.append(name)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        return killed


def main(duration=None):
    demo = Demo()
    previous = {signum: signal.signal(signum, demo.on_signal) for signum in SIGNAL_NAMES}
    killed = []
    try:
        return demo.run(duration)
    except Stop as stop:
        demo.out(demo.stopped(stop, duration))
        return 0
    finally:
        try:
            killed = demo.cleanup()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        how = f" ({', '.join(killed)} killed after {STOP_GRACE:g} s)" if killed else ""
        demo.out(f"demo over: its daemons are stopped{how} and {demo.dir or 'its directory'} is removed")
