"""Scale in the network lab: 7 nodes and 50 apps, placement, a node failure, loss.

Seven real ``python3 -m hado`` daemons in node namespaces (tests/lab/netlab.py), 50
apps, each one resource: even-numbered apps a VIP (``ipaddr`` with its 1 s kernel
lease), odd-numbered ones a ``dummy`` resource with a 1 s lease (a state file per
node, every start and stop logged with its monotonic time). App *i* prefers node
*i* mod 7, so node-a (apps 0, 7, ..., 49) holds 8 apps and the others 7.

What must hold (and is checked here, in about 2 minutes):

- *placement*: from the start of all daemons at once, every app becomes active on
  exactly one node, every node agreeing which, and the VIP / state file is there and
  nowhere else;
- *a node failure*: kill -9 of the node holding the most apps: every one of its apps
  runs on another node within ``takeover_after + heartbeat + SLACK`` of the kill
  (``takeover_after`` of silence, up to one heartbeat for the other peers' reports
  to say "down", SLACK for starting 8 apps at once on a loaded 2-core machine);
- *never on two nodes*: a sampler (one process, one netlink dump per node every
  20 ms) records every change of every VIP's holders; the dummies' logs give each
  holding interval (a killed node's interval ends when its lease ran out, the deadline
  in its state file): no two intervals of one app overlap;
- *idle*: over IDLE_S seconds, each daemon's CPU (its own and its children's, the
  ``ip`` of the VIPs) and RSS stay under CPU_MAX and RSS_MAX_MB;
- *one packet per datagram*: every node's answer, computed from the reports its peers
  received (``GET /v1/view``) with the real ``hado.peers.pack``, fits
  ``hado.wire.MTU_PAYLOAD`` (1352 B: a 1400-byte MTU over IPv6), and no node's kernel
  fragments anything (``Ip: FragCreates`` of each namespace stays put) while idle and
  under loss;
- *20 % loss* on the node holding the most apps for LOSS_S (30; bench/scale.py: 60) s: no role change
  anywhere (the daemons' logs), the VIPs never move.

``bench/scale.py`` imports :class:`ScaleCluster` from here and prints the figures
(start to placed, failover per app, CPU and RSS, datagram sizes against the MTU,
60 s of loss, and the step-up to where heartbeats start to miss).

Timings: heartbeat 1.0 s, dead_after 4.0 s, leases 2 s, so ``takeover_after`` =
max(4.0, lease 2 + 0.35 + 1.0) = 4.0 s and the failover bound is 6.0 s. Not the
0.5 s / 2.0 s defaults: seven daemons with 50 apps need about 1.2 of this machine's 2
cores at the defaults (answers re-sent every h/4 = 125 ms pile up once answers take
longer than that, and every duplicate request costs a full report), and with the
other work on the machine the cluster then never converges (bench/scale.py
measures it: ``--heartbeat 0.5 --dead-after 2.0 --lease 1``). At 1.0 s it needs about
0.75 of a core (protocol 2; about 0.7 with protocol 3, most of it the VIPs' ``ip``
calls and plugin threads: 6-7 % per daemon and 3-4 % for its children). The leases grow with the heartbeat: a lease of 1 s renewed every 1 s
would run out between renewals (hado renews once per heartbeat).

Protocol 2 failed the loss part (issue 10, part 3): answers of 50 apps were about
7.2 KB of JSON, 5 IPv4 fragments on a 1500 B MTU, so an exchange with the lossy node
succeeded with probability 0.8^6 per try instead of 0.8^2, and it lost its quorum
within seconds. Protocol 3 sends the report compact and deflated (hado/wire.py):
about 400 B for these 50 apps, one packet.

With other heavy work on this 2-core machine (other lab tests, campaigns) seven
daemons can be starved of CPU; the failure messages give the load average.

This file is also a small script: ``python3 tests/test_scale.py vips OUT INTERVAL
ADDRS NODE=NETNS_PATH...`` is the VIP holder sampler the lab runs.
"""

import collections
import ipaddress
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402

from helpers import wait_for  # noqa: E402
from lab import netlab  # noqa: E402
from lab.netlab import Lab  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SKIP = netlab.skip_reason()
pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

HB, DEAD, LEASE = 1.0, 4.0, 2     # see the module doc: why not the 0.5 / 2.0 defaults
N_NODES, N_APPS = 7, 50
API_PORT = 6185
SECRET = b"lab-scale-secret-0123456789abcdef"
SLACK = 1.0          # starting a node's worth of apps at once on a loaded 2-core machine
LOSS_S = float(os.environ.get("HADO_SCALE_LOSS_S", 30))   # CI; bench/scale.py runs 60 s (--loss-seconds)
IDLE_S = 10
CPU_MAX = 0.25       # of one core per daemon, idle, its children included (measured: about 0.1)
RSS_MAX_MB = 80      # per daemon (measured: about 35)
ROLE_LINE = re.compile(r"\b(elected|stepping down): |: role \w+ -> \w+")

# -- reading a node from inside its namespace ------------------------------------------------

READER = r"""
import json, sys, urllib.request
base = sys.argv[1]
for line in sys.stdin:
    request = json.loads(line)
    answer = {"id": request["id"]}
    try:
        path = "/v1/view" if request["op"] == "view" else "/v1/state"
        with urllib.request.urlopen(base + path, timeout=request["timeout"]) as response:
            doc = json.loads(response.read())
        if request["op"] == "brief":
            doc = {"apps": {a: [e["role"], e["active_node"]] for a, e in doc["apps"].items()},
                   "quorum": doc["quorum"], "uptime_s": doc["uptime_s"],
                   "takeover_after_s": doc.get("takeover_after_s"),
                   "peers": {p: [e["status"], e["last_seen_s"]] for p, e in doc["peers"].items()}}
        answer["value"] = doc
    except Exception as exc:
        answer["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(answer), flush=True)
"""


class Reader(netlab.Reader):
    """A process in a node's namespace asking the daemon's API: "brief" (roles, quorum,
    peers from /v1/state), "state" (all of it) or "view" (/v1/view)."""

    def __init__(self, lab, node):
        super().__init__(lab, node, READER, [f"http://{lab.addr(node)}:{API_PORT}"])


def ask(readers, op, timeout=2.0):
    return netlab.ask(readers, op, timeout)


# -- /proc figures ----------------------------------------------------------------------------

def cpu_seconds(pid):
    """(utime + stime, cutime + cstime) of pid in seconds: its own CPU, and that of its
    waited-for children (the ``ip`` and ``sh`` the ipaddr plugin runs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def status_kb(pid, name):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return None


# -- the cluster --------------------------------------------------------------------------------

class ScaleCluster:
    """hado daemons in a lab's node namespaces, ``n_apps`` one-resource apps spread by
    ``preferred`` (app i prefers node i mod n). Every ``vip_every``-th app is an ipaddr
    VIP (0: none), the others leased dummies. Logs go to WORKDIR/<node>.out."""

    def __init__(self, lab, workdir, n_apps=N_APPS, heartbeat=HB, dead_after=DEAD, vip_every=2,
                 interval=2.0, lease=LEASE, log_level="info", command=None):
        """``lease``: seconds, of the VIPs and the dummies; ``command``: the argv that runs
        hado (default ``python3 -m hado``; the bench runs it under a counting wrapper)."""
        self.lab, self.dir = lab, Path(workdir)
        self.command = list(command or [sys.executable, "-m", "hado"])
        self.names = list(lab.nodes)
        self.heartbeat, self.dead_after = heartbeat, dead_after
        self.log_level = log_level
        self.res_dir = self.dir / "res"
        self.res_dir.mkdir(exist_ok=True)
        secret = self.dir / "secret"
        secret.write_bytes(SECRET)
        secret.chmod(0o600)
        self.apps = {}    # name -> {"kind": "vip" | "dummy", "vip": address or None, "preferred": node}
        apps = {}
        free = [h for h in range(30, 200)]   # lab hosts: nodes .1-.26, client .200
        for i in range(n_apps):
            name = f"app-{i:02}"
            preferred = self.names[i % len(self.names)]
            fast = {"interval": interval, "timeout": 2, "start_timeout": 2, "stop_timeout": 2}
            if vip_every and i % vip_every == 0 and free:
                vip = lab.vip(free.pop(0))
                res = {"name": "vip", "plugin": "ipaddr", **fast,
                       "args": {"address": f"{vip}/{lab.prefixlen}", "interface": "eth0", "lease": lease}}
                self.apps[name] = {"kind": "vip", "vip": vip, "preferred": preferred}
            else:
                res = {"name": "svc", "plugin": "dummy", **fast,
                       "args": {"path": str(self.res_dir / f"{name}@{{node}}"), "node": "{node}", "lease": lease}}
                self.apps[name] = {"kind": "dummy", "vip": None, "preferred": preferred}
            apps[name] = {"preferred": preferred, "resources": [res]}
        self.config = {
            "cluster": {"name": "scale", "secret_file": str(secret), "heartbeat": heartbeat,
                        "dead_after": dead_after,
                        "nodes": {n: {"url": f"http://{lab.addr(n)}:{API_PORT}", "priority": 100 - 3 * i}
                                  for i, n in enumerate(self.names)}},
            "apps": apps,
        }
        self.config_path = self.dir / "config.json"
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self.env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        for name in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID"):
            self.env.pop(name, None)
        self.procs = {}
        self.readers = {n: Reader(lab, n) for n in self.names}

    @property
    def vips(self):
        return {app: a["vip"] for app, a in self.apps.items() if a["kind"] == "vip"}

    # -- daemons --

    def start(self, *names):
        """Start the daemons all at once (no waiting); returns the monotonic start time."""
        t0 = time.monotonic()
        for node in names or self.names:
            with open(self.dir / f"{node}.out", "ab") as log:
                log.write(f"---- started at monotonic {time.monotonic():.3f}\n".encode())
                log.flush()
                self.procs[node] = self.lab.popen(
                    node, [*self.command, "--foreground", "--config", self.config_path,
                           "--node", node, "--log-level", self.log_level],
                    cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return t0

    def alive(self, node):
        proc = self.procs.get(node)
        return proc is not None and proc.poll() is None

    def live(self):
        return [n for n in self.names if self.alive(n)]

    def pid(self, node):
        """The daemon's pid (ip netns exec execs it: the Popen's own pid)."""
        return self.procs[node].pid

    def kill(self, node):
        """kill -9, and reap it."""
        proc = self.procs[node]
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def stop_all(self):
        for node in list(self.procs):
            self.kill(node)

    def tail(self, node, lines=30):
        path = self.dir / f"{node}.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        return f"---- {path} (last {lines} lines)\n" + "\n".join(text.splitlines()[-lines:])

    def tails(self, lines=15):
        return "\n".join(self.tail(n, lines) for n in self.names)

    # -- observing --

    def ask(self, op="brief", names=None, timeout=2.0):
        names = [n for n in (names or self.names) if self.alive(n)]
        return ask({n: self.readers[n] for n in names}, op, timeout)

    def placement(self, briefs=None, holders=None):
        """{app: node} when every app is active on exactly one live node, every live node
        agrees, and (given ``holders``: app -> set of nodes really holding it) it is held
        there only; else (None, why)."""
        briefs = briefs if briefs is not None else self.ask()
        if not briefs or not all(briefs.values()):
            return None, f"no answer from {sorted(n for n, b in briefs.items() if not b)}"
        where = {}
        for app in self.apps:
            active = [n for n, b in briefs.items() if b["apps"][app][0] == "active"]
            seen = {b["apps"][app][1] for b in briefs.values()}
            if len(active) != 1:
                return None, f"{app} active on {active}"
            if seen != set(active):
                return None, f"{app}: active on {active[0]}, the nodes see {sorted(map(str, seen))}"
            if holders is not None and holders.get(app) != set(active):
                return None, f"{app}: active on {active[0]}, held by {sorted(holders.get(app) or ())}"
            where[app] = active[0]
        return where, "placed"

    def dummy_holders(self):
        """app -> nodes whose state file says the dummy runs now (alive() of the plugin)."""
        now = time.monotonic_ns()
        out = collections.defaultdict(set)
        for path in self.res_dir.glob("*@*"):
            if "." in path.name:
                continue
            app, node = path.name.split("@")
            try:
                lines = path.read_text().split()
            except FileNotFoundError:
                continue
            if lines and (len(lines) < 2 or now < int(lines[1])):
                out[app].add(node)
        return {app: out.get(app, set()) for app, a in self.apps.items() if a["kind"] == "dummy"}

    def dummy_intervals(self):
        """app -> [(start_ns, end_ns, node)] from the dummies' logs: every holding interval.

        An interval without a logged stop ends at the lease deadline in the state file
        when the file is still there (a killed node: its lease runs out), else now."""
        now = time.monotonic_ns()
        out = collections.defaultdict(list)
        for log in self.res_dir.glob("*@*.log"):
            app, node = log.name[:-len(".log")].split("@")
            opened = None
            for line in log.read_text().splitlines():
                ns, event, _ = line.split()
                if event == "start":
                    opened = int(ns)
                elif event == "stop" and opened is not None:
                    out[app].append((opened, int(ns), node))
                    opened = None
            if opened is not None:
                state = self.res_dir / f"{app}@{node}"
                try:
                    lines = state.read_text().split()
                except FileNotFoundError:
                    lines = []
                end = int(lines[1]) if len(lines) >= 2 and int(lines[0]) == opened else now
                out[app].append((opened, end, node))
        return {app: sorted(v) for app, v in out.items()}

    def log_offsets(self):
        return {n: (self.dir / f"{n}.out").stat().st_size for n in self.names if (self.dir / f"{n}.out").exists()}

    def log_lines_since(self, offsets, pattern=ROLE_LINE):
        """{node: [log lines matching pattern written after offsets]}."""
        out = {}
        for node in self.names:
            path = self.dir / f"{node}.out"
            if not path.exists():
                continue
            with open(path, "rb") as f:
                f.seek(offsets.get(node, 0))
                text = f.read().decode(errors="replace")
            out[node] = [line for line in text.splitlines() if pattern.search(line)]
        return out


# -- the VIP holder sampler ---------------------------------------------------------------------

class VipSampler(netlab._Recorder):
    """Every ``interval`` s, which node namespaces hold each of the VIPs (one process,
    one RTM_GETADDR dump per node per sample). A line is written only when the holders
    of some VIP changed, so every moment of dual holding is in the records."""

    def __init__(self, lab, vips, nodes=None, interval=0.02):
        super().__init__(lab)
        self.vips = list(vips)
        self.nodes = list(nodes or lab.nodes)
        self.interval = interval

    def _spawn(self):
        targets = [f"{node}=/run/netns/{self.lab.ns(node)}" for node in self.nodes]
        proc = self.lab._popen([sys.executable, __file__, "vips", self.path, str(self.interval),
                                ",".join(self.vips), *targets], stdout=subprocess.PIPE, text=True)
        if not proc.stdout.readline().startswith("sampling"):
            raise netlab.LabError(f"the VIP sampler did not start (exit {proc.poll()})")
        return proc

    def records(self):
        """[(t_ns, {vip: frozenset(nodes)})] at each change, and the number of samples."""
        changes, samples = [], 0
        with open(self.path) as file:
            for line in file:
                if not line.endswith("\n"):
                    continue
                t, _, rest = line.rstrip("\n").partition(" ")
                if t == "end":
                    samples = int(rest.split()[1])
                    continue
                held = json.loads(rest)
                changes.append((int(t), {v: frozenset(held.get(v, ())) for v in self.vips}))
        return changes, samples

    def current(self):
        changes, _ = self.records()
        return changes[-1][1] if changes else None


def dual_vips(changes):
    """[(t_ns, vip, holders)] of every record where a VIP had more than one holder."""
    return [(t, v, sorted(h)) for t, held in changes for v, h in held.items() if len(h) > 1]


def overlaps(intervals):
    """[(app, a, b)] of holding intervals of one app on two nodes that overlap."""
    bad = []
    for app, spans in intervals.items():
        spans = sorted(spans)
        for a, b in zip(spans, spans[1:]):
            if b[0] < a[1]:
                bad.append((app, a, b))
    return bad


def first_vip_on(changes, vip, node, after_ns):
    return next((t for t, held in changes if t >= after_ns and node in held[vip]), None)


def moved_times(c, sampler, t_kill_ns, moved_to):
    """app -> seconds from the kill to the app's start on its new node (sampler for the
    VIPs, the dummy's log for the others)."""
    changes, _ = sampler.records()
    intervals = c.dummy_intervals()
    out = {}
    for app, node in moved_to.items():
        if c.apps[app]["kind"] == "vip":
            t = first_vip_on(changes, c.apps[app]["vip"], node, t_kill_ns)
        else:
            t = next((s for s, _, n in intervals.get(app, []) if n == node and s >= t_kill_ns), None)
        out[app] = None if t is None else (t - t_kill_ns) / 1e9
    return out


def holders_now(c, sampler):
    held = dict(c.dummy_holders())
    current = sampler.current() or {}
    for app, vip in c.vips.items():
        held[app] = set(current.get(vip, ()))
    return held


def wait_placed(c, sampler, timeout, names=None):
    """Wait until placement() holds with the real holders; returns {app: node}."""
    last = [None]

    def placed():
        where, why = c.placement(c.ask(names=names), holders_now(c, sampler))
        last[0] = why
        return where
    try:
        return wait_for(placed, timeout, 0.5, what="every app active on one node, all agreeing")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {last[0]}\n{c.tails()}") from None


# -- the test --------------------------------------------------------------------------------------

@pytest.fixture
def scale_cluster(tmp_path):
    made = []

    def make(n_nodes=N_NODES, **kwargs):
        lab = Lab(n_nodes)
        made.append((lab, None))
        cluster = ScaleCluster(lab, tmp_path, **kwargs)
        made[-1] = (lab, cluster)
        return cluster

    yield make
    for lab, cluster in made:
        try:
            if cluster is not None:
                cluster.stop_all()
        finally:
            lab.teardown()


def loadavg():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def frag_creates(c):
    """node -> IPv4 fragments its kernel has made (/proc/net/snmp of its namespace)."""
    out = {}
    for node in c.live():
        lines = c.lab.run(node, ["cat", "/proc/net/snmp"]).stdout.splitlines()
        head, row = next((h.split(), r.split()) for h, r in zip(lines[::2], lines[1::2]) if h.startswith("Ip:"))
        out[node] = int(row[head.index("FragCreates")])
    return out


def answer_sizes(c, via):
    """node -> bytes of its heartbeat answer, from the reports ``via`` received
    (``GET /v1/view``; its own report as the peers thread sends it), with hado's pack."""
    sys.path.insert(0, str(REPO))
    from hado import peers, wire
    view = c.ask("view", names=[via], timeout=5)[via]
    assert view, f"no /v1/view from {via}"
    key = peers.heartbeat_key(SECRET)
    out = {}
    for name, node in view["nodes"].items():
        if node.get("report"):
            report = wire.for_peers(node["report"], 3 * c.heartbeat) if name == via else node["report"]
            body = {"cluster": "scale", "from": name, "to": via, "boot": "0" * 16, "seq": 10 ** 9, "report": report}
            out[name] = len(peers.pack(key, peers.ANSWER, os.urandom(peers.NONCE_BYTES), body))
    return out


def idle_figures(c, seconds):
    """node -> (CPU in % of one core, own + children, RSS MB) over ``seconds``."""
    pids = {n: c.pid(n) for n in c.live()}
    before, t0 = {n: sum(cpu_seconds(p)) for n, p in pids.items()}, time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return {n: ((sum(cpu_seconds(p)) - before[n]) / wall * 100, status_kb(p, "VmRSS") / 1024)
            for n, p in pids.items()}


def test_7_nodes_50_apps_placement_failover_and_loss(scale_cluster):
    """7 nodes, 50 apps: all placed once; idle CPU and RSS bounded, every answer one
    packet; kill -9 of the node holding the most apps moves each of them within
    takeover_after + h + SLACK, never onto two nodes; 20 % loss on the busiest node
    for LOSS_S s changes no role anywhere, and nothing is fragmented."""
    began = time.monotonic()
    c = scale_cluster()
    load = loadavg()
    with VipSampler(c.lab, c.vips.values()) as sampler:
        t_start = c.start()
        try:
            where = wait_placed(c, sampler, 60)
        except AssertionError as exc:
            raise AssertionError(f"load average at the start {load}, now {loadavg()}: {exc}") from None
        placed_s = time.monotonic() - t_start
        takeover = next(b for b in c.ask().values() if b)["takeover_after_s"]
        assert takeover == pytest.approx(max(DEAD, LEASE + 0.35 + HB))
        by_node = collections.Counter(where.values())

        # -- idle: CPU, RSS; every answer one packet, no fragments
        frags0 = frag_creates(c)
        idle = idle_figures(c, IDLE_S)
        sizes = answer_sizes(c, c.names[0])
        frags = {n: v - frags0[n] for n, v in frag_creates(c).items()}
        from hado import wire
        print(f"\nidle {IDLE_S} s: CPU % of a core, RSS MB per node "
              f"{ {n: (round(cpu, 1), round(rss)) for n, (cpu, rss) in idle.items()} }; answers {sizes} B; "
              f"fragments made {frags}; load average {loadavg()}")
        assert max(sizes.values()) <= wire.MTU_PAYLOAD, f"answers {sizes} B, one packet holds {wire.MTU_PAYLOAD}"
        assert not any(frags.values()), f"IP fragments made while idle: {frags}"
        hungry = {n: round(cpu, 1) for n, (cpu, _) in idle.items() if cpu > CPU_MAX * 100}
        assert not hungry, f"idle CPU above {CPU_MAX:.0%} of a core: {hungry} (load average {loadavg()})"
        fat = {n: round(rss) for n, (_, rss) in idle.items() if rss > RSS_MAX_MB}
        assert not fat, f"RSS above {RSS_MAX_MB} MB: {fat}"

        # -- kill -9 of the node holding the most apps
        victim = by_node.most_common(1)[0][0]
        victims_apps = sorted(a for a, n in where.items() if n == victim)
        t_kill_ns = time.monotonic_ns()
        c.kill(victim)
        bound = takeover + HB + SLACK
        survivors = [n for n in c.names if n != victim]
        after = wait_placed(c, sampler, bound + 10, names=survivors)
        others_moved = {a: (where[a], after[a]) for a in where if a not in victims_apps and after[a] != where[a]}
        assert not others_moved, f"only the dead node's apps may move: {others_moved}"
        moved = moved_times(c, sampler, t_kill_ns, {a: after[a] for a in victims_apps})
        assert all(t is not None for t in moved.values()), moved
        late = {a: round(t, 2) for a, t in moved.items() if t > bound}
        assert not late, f"apps moved later than {bound:.2f} s after the kill: {late}\n{c.tails()}"

        # -- 20 % loss on the node now holding the most apps, for LOSS_S
        lossy = collections.Counter(after.values()).most_common(1)[0][0]
        offsets = c.log_offsets()
        frags0 = frag_creates(c)
        t_loss_ns = time.monotonic_ns()
        c.lab.loss(lossy, 20)
        roles_seen = []
        deadline = time.monotonic() + LOSS_S
        while time.monotonic() < deadline:
            where_now, why = c.placement(c.ask(names=survivors, timeout=3))
            roles_seen.append(True if where_now == after else why)
            time.sleep(1.0)
        c.lab.clear_loss(lossy)
        loss_frags = {n: v - frags0[n] for n, v in frag_creates(c).items()}
        changes = {n: lines for n, lines in c.log_lines_since(offsets).items() if lines}
        assert not changes, (f"role changes under 20 % loss on {lossy} (answers {sizes} B, fragments "
                             f"{loss_frags}; load average {loadavg()}): "
                             f"{ {n: len(v) for n, v in changes.items()} } lines, the first: "
                             f"{[v[0] for v in changes.values()][:3]}")
        moved_under_loss = [(t, held) for t, held in sampler.records()[0] if t >= t_loss_ns]
        assert not moved_under_loss, f"VIPs changed hands under loss: {moved_under_loss[:3]}"
        assert all(r is True for r in roles_seen), [r for r in roles_seen if r is not True][:3]
        assert not any(loss_frags.values()), f"IP fragments made under loss: {loss_frags}"
        records, samples = sampler.stop()

    duals = dual_vips(records)
    assert not duals, f"VIPs held by two nodes: {duals[:5]}"
    assert samples > 0
    bad = overlaps(c.dummy_intervals())
    assert not bad, f"dummies held on two nodes at once: {bad[:5]}"
    cpus, rsss = [v[0] for v in idle.values()], [v[1] for v in idle.values()]
    print(f"7 nodes, 50 apps: placed {placed_s:.2f} s after the start; idle {IDLE_S} s: CPU per daemon "
          f"{min(cpus):.1f}-{max(cpus):.1f} % of a core, RSS {min(rsss):.0f}-{max(rsss):.0f} MB; answers "
          f"{min(sizes.values())}-{max(sizes.values())} B (one packet: {wire.MTU_PAYLOAD}), 0 fragments; "
          f"kill -9 of {victim} "
          f"({len(victims_apps)} apps): moved in {min(moved.values()):.2f}-{max(moved.values()):.2f} s "
          f"(bound {bound:.2f} s); 20 % loss on {lossy} for {LOSS_S:g} s: no role change, 0 fragments; "
          f"{samples} VIP samples, never two holders; load average {load} -> {loadavg()}; "
          f"test {time.monotonic() - began:.0f} s")


# -- the sampler script ------------------------------------------------------------------------------

def _addresses(sock, seq):
    """The IPv4 addresses (packed) of the netlink socket's namespace: one RTM_GETADDR dump."""
    request = struct.pack("=IHHII", 24, netlab.RTM_GETADDR, netlab.NLM_F_REQUEST | netlab.NLM_F_DUMP, seq, 0)
    sock.send(request + struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0))
    found = set()
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, msg_type, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
            if length < 16 or msg_type == netlab.NLMSG_DONE:
                return found
            if msg_type == netlab.NLMSG_ERROR:
                raise OSError("netlink dump failed")
            if msg_type == netlab.RTM_NEWADDR:
                attr = offset + 24
                while attr + 4 <= offset + length:
                    attr_len, attr_type = struct.unpack_from("=HH", data, attr)
                    if attr_len < 4:
                        break
                    if attr_type == netlab.IFA_LOCAL:
                        found.add(bytes(data[attr + 4:attr + attr_len]))
                    attr += (attr_len + 3) & ~3
            offset += (length + 3) & ~3


def _vips_main(out_path, interval, addresses, *targets):
    interval = float(interval)
    vips = {ipaddress.ip_address(a).packed: a for a in addresses.split(",") if a}
    sockets = [(name, netlab._netlink_socket_in(path)) for name, path in (t.split("=", 1) for t in targets)]
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    print("sampling", flush=True)
    last, samples = None, 0
    with open(out_path, "a", buffering=1) as out:
        seq, next_time = 0, time.monotonic()
        while not stopping:
            seq += 1
            now = time.monotonic_ns()
            held = collections.defaultdict(list)
            for name, sock in sockets:
                for packed in _addresses(sock, seq) & vips.keys():
                    held[vips[packed]].append(name)
            samples += 1
            if held != last:
                out.write(f"{now} {json.dumps(held, sort_keys=True)}\n")
                last = held
            next_time += interval
            delay = next_time - time.monotonic()
            if delay < 0:
                next_time, delay = time.monotonic(), 0
            time.sleep(delay)
        out.write(f"end {time.monotonic_ns()} {samples}\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "vips":
        _vips_main(*sys.argv[2:])
    else:
        print(f"usage: {sys.argv[0]} vips OUT INTERVAL ADDRS NODE=NETNS_PATH...", file=sys.stderr)
        sys.exit(2)
