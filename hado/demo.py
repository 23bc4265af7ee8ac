"""``hado demo``: a 3-node cluster on loopback that shows a failover live.

No root and no config needed: three daemons on 127.0.0.1 with free ports, a temporary
directory with a generated secret and dummy resources (state files). The demo kills
the active node, shows who takes over, how fast and why, restarts the killed node,
and leaves nothing behind when it ends (Ctrl-C or ``--duration``).
"""

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


class Demo:
    def __init__(self, out=print):
        self.out = out
        self.dir = tempfile.mkdtemp(prefix="hado-demo-")
        self.ports = {name: free_port() for name in NODES}
        self.procs = {}
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
                    {"name": "address", "plugin": "dummy", "args": {"path": f"{state}-address", "node": "{node}"},
                     "interval": 0.5, "stop_timeout": 0.3},
                    {"name": "server", "plugin": "dummy", "interval": 0.5, "stop_timeout": 0.3,
                     "args": {"path": f"{state}-server", "node": "{node}", "start_delay": 0.1}}]}},
            }, f, indent=2)

    def url(self, name):
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name):
        log = open(os.path.join(self.dir, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "hado", "--config", self.config, "--node", name, "--log-level", "info"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        log.close()

    def states(self):
        return {n: fetch(self.url(n) + "/v1/state") for n, p in self.procs.items() if p.poll() is None}

    def active(self, names=None):
        found = [n for n, s in self.states().items() if s and s["apps"]["web"]["role"] == "active"
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
            if not state:
                self.out(f"  {name:7} (not answering)")
                continue
            app = state["apps"]["web"]
            self.out(f"  {name:7} {app['role']:9} quorum {state['quorum']['votes']}/{len(NODES)}  {app['reason']}")

    def run(self, duration=None):
        started = time.monotonic()
        self.out(f"HA-DO demo: 3 nodes on 127.0.0.1 (heartbeat {HEARTBEAT} s, dead_after {DEAD_AFTER} s), "
                 f"files in {self.dir}")
        for name in NODES:
            self.start(name)
        for name in NODES:
            self.out(f"  {name}: {self.url(name)}/   (open in a browser; /metrics, /health too)")
        first = self.wait(self.active, 15)
        if not first:
            self.out("the cluster did not elect an active node within 15 s; see the logs in " + self.dir)
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
        self.out(f"\n*** restart {first} ***")
        self.start(first)
        time.sleep(2.5)
        self.show(f"{first} is back and stays standby: a running app stays where it is (stickiness)")
        self.out("\nCtrl-C ends the demo" + (f" (or it ends after {duration:g} s)" if duration else "") +
                 f"; try: python3 -m hado status --url {self.url(rest[0])}")
        while duration is None or time.monotonic() - started < duration:
            time.sleep(0.5)
        return 0

    def cleanup(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def main(duration=None):
    demo = Demo()
    try:
        return demo.run(duration)
    except KeyboardInterrupt:
        print("\nstopping the demo cluster")
        return 0
    finally:
        demo.cleanup()
        print(f"demo over: the 3 daemons are stopped and {demo.dir} is removed")
