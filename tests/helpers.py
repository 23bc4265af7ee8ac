"""Test helpers: real hado daemons as subprocesses on loopback, and polling with deadlines."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port(host="127.0.0.1"):
    """A port free for both TCP (API) and UDP (heartbeats) on ``host``."""
    for _ in range(50):
        tcp = socket.socket()
        tcp.bind((host, 0))
        port = tcp.getsockname()[1]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
    raise RuntimeError("no free port")


def wait_for(condition, timeout=10.0, interval=0.05, what="condition"):
    """Poll ``condition()`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


# "127.0.0.1:PORT" -> the config file of the Daemon there, for its admin token.
CONFIGS = {}
DAEMON_TOKEN = object()


def token_file(config_path):
    """The admin token file of a config: its node.token_file, else admin.token next to it
    (the daemon creates that one at its start)."""
    try:
        raw = json.loads(Path(config_path).read_text())
    except (OSError, ValueError):
        raw = {}
    node = raw.get("node") if isinstance(raw, dict) else None
    named = node.get("token_file") if isinstance(node, dict) else None
    return Path(named) if named else Path(config_path).resolve().parent / "admin.token"


def daemon_token(url):
    """The admin token of the Daemon listening at ``url``, or None (unknown, or not made yet)."""
    config = CONFIGS.get(urllib.parse.urlsplit(url).netloc)
    try:
        return token_file(config).read_text().strip() if config else None
    except OSError:
        return None


def http(url, body=None, token=DAEMON_TOKEN, timeout=2.0):
    """(status, parsed JSON) for a GET, or a POST when ``body`` is given. A POST carries
    the admin token of the Daemon at ``url`` unless ``token`` says otherwise (None: none)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if token is DAEMON_TOKEN:
        token = daemon_token(url) if body is not None else None
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw.decode()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


class Daemon:
    """One `python3 -m hado` process."""

    def __init__(self, config_path, node, port, workdir, log_level="debug", extra_env=None):
        self.config_path, self.node, self.port = str(config_path), node, port
        self.workdir = Path(workdir)
        self.log_path = self.workdir / f"{node}.out"
        self.log_level = log_level
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("JOURNAL_STREAM", None)
        self.proc = None
        CONFIGS[f"127.0.0.1:{port}"] = self.config_path

    def token(self):
        """The admin token this daemon wants (None before it made one)."""
        return daemon_token(self.url)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "hado", "--foreground", "--config", self.config_path,
                                      "--node", self.node, "--log-level", self.log_level],
                                     cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        return self

    def state(self, timeout=2.0):
        status, doc = http(self.url + "/v1/state", timeout=timeout)
        assert status == 200, doc
        return doc

    def try_state(self):
        try:
            return self.state(timeout=1.0)
        except (OSError, AssertionError, ValueError):
            return None

    def wait_ready(self, timeout=15.0):
        return wait_for(self.try_state, timeout, what=f"{self.node} API to answer")

    def app(self, name):
        return self.state()["apps"][name]

    def signal(self, signum):
        self.proc.send_signal(signum)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self, timeout=30.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            return self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def write_config(path, config):
    Path(path).write_text(json.dumps(config, indent=2))
    return path


def read_log(path):
    """Lines of a dummy resource's log: [(monotonic_ns, event, node)]."""
    path = Path(str(path) + ".log")
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        ns, event, node = line.split()
        out.append((int(ns), event, node))
    return out


def holding_intervals(logs, end_ns=None):
    """node -> [(start_ns, stop_ns)] from dummy logs (start ... stop pairs)."""
    end_ns = end_ns or time.monotonic_ns()
    intervals, open_at = {}, {}
    for ns, event, node in sorted(logs):
        if event == "start":
            open_at.setdefault(node, ns)
        elif event == "stop" and node in open_at:
            intervals.setdefault(node, []).append((open_at.pop(node), ns))
    for node, ns in open_at.items():
        intervals.setdefault(node, []).append((ns, end_ns))
    return intervals


def overlaps(logs, allowed=()):
    """Every time span during which two nodes held the resource at once.

    ``allowed`` is a list of (node, from_ns, to_ns) windows in which that node's holding
    does not count (a frozen node that was known to be killed or woken up).
    """
    intervals = holding_intervals(logs)
    spans = []
    nodes = sorted(intervals)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            for a0, a1 in intervals[a]:
                for b0, b1 in intervals[b]:
                    lo, hi = max(a0, b0), min(a1, b1)
                    if lo < hi and not any(n in (a, b) and f <= lo and hi <= t for n, f, t in allowed):
                        spans.append((a, b, lo, hi))
    return spans


class Cluster:
    """Several real daemons on 127.0.0.1, one config file, dummy resources that log."""

    def __init__(self, workdir, names=("node-a", "node-b", "node-c"), priorities=None, heartbeat=0.2,
                 dead_after=1.0, apps=None, witness=(), extra_cluster=None, secret=b"0123456789abcdef0123456789abcdef"):
        self.dir = Path(workdir)
        self.names = list(names)
        priorities = priorities or {n: 100 - 10 * i for i, n in enumerate(self.names)}
        self.ports = {n: free_port() for n in self.names}
        secret_file = self.dir / "secret"
        secret_file.write_bytes(secret)
        secret_file.chmod(0o600)
        self.res_path = self.dir / "res"   # one dummy state file per node: res-<node>
        self.config = {
            "cluster": {"name": "test", "secret_file": str(secret_file), "heartbeat": heartbeat,
                        "dead_after": dead_after,
                        "nodes": {n: {"url": f"http://127.0.0.1:{self.ports[n]}", "priority": priorities.get(n, 0),
                                      "witness": n in witness} for n in self.names},
                        **(extra_cluster or {})},
            "apps": apps if apps is not None else {"web": {"resources": [self.dummy("r")]}},
        }
        self.config_path = write_config(self.dir / "config.json", self.config)
        self.daemons = {n: Daemon(self.config_path, n, self.ports[n], self.dir) for n in self.names}
        self.kills = []   # (node, monotonic_ns) of kill -9s, for the overlap checker

    def dummy(self, name, lease=None, **extra):
        # "{node}" is replaced by each node's name: one state file and log per node. Short
        # timeouts, so that the app's stop budget (hado/bounds.py) is short too: 0.5 s in
        # flight + 0.5 s per resource stop.
        args = {"path": str(self.dir / f"{name}-{{node}}"), "node": "{node}"}
        if lease:
            args["lease"] = lease
        return {"name": name, "plugin": "dummy", "args": args, "interval": 0.2, "timeout": 0.5,
                "start_timeout": 0.5, "stop_timeout": 0.5, **extra}

    def start(self, *names):
        for n in names or self.names:
            self.daemons[n].start()
        for n in names or self.names:
            self.daemons[n].wait_ready()
        return self

    def __getitem__(self, name):
        return self.daemons[name]

    def states(self, names=None):
        return {n: self.daemons[n].try_state() for n in (names or self.names) if self.daemons[n].alive()}

    def active(self, app="web", names=None):
        """Nodes whose state says role active for ``app``."""
        return sorted(n for n, s in self.states(names).items() if s and s["apps"].get(app, {}).get("role") == "active")

    def wait_active(self, app="web", names=None, timeout=15.0, exclude=()):
        def one():
            act = self.active(app, names)
            return act[0] if len(act) == 1 and act[0] not in exclude else None
        return wait_for(one, timeout, what=f"exactly one active node for {app}")

    def wait_heard(self, names=None, timeout=10.0):
        """Wait until every running node reports every other one up (a fresh cluster
        elects with a majority, before the last node has heard all its peers)."""
        def all_up():
            states = self.states(names)
            return all(s and all(p.get("status") == "up" for p in s["peers"].values()) for s in states.values())
        return wait_for(all_up, timeout, what="every node hears every peer")

    def agree(self, app="web", names=None):
        states = self.states(names)
        seen = {s["apps"][app]["active_node"] for s in states.values() if s}
        return seen.pop() if len(seen) == 1 else None

    def kill(self, name):
        self.kills.append((name, time.monotonic_ns()))
        self.daemons[name].kill()

    def stop_all(self):
        for d in self.daemons.values():
            d.kill()

    def logs(self, name="r"):
        """Holding log of a dummy resource, per node."""
        out = []
        for path in self.dir.glob(f"{name}-*.log"):
            for line in path.read_text().splitlines():
                ns, event, node = line.split()
                out.append((int(ns), event, node))
        return sorted(out)

    def holds(self, name="r"):
        """Nodes whose dummy resource is alive now: its state file exists (and, with a
        lease, its deadline has not passed)."""
        def alive(path):
            try:
                lines = path.read_text().split()
            except FileNotFoundError:
                return False
            return len(lines) < 2 or int(lines[1]) > time.monotonic_ns()
        return sorted(n for n in self.names if alive(self.dir / f"{name}-{n}"))
