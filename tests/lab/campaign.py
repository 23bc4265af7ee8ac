"""A fault campaign in the network lab: a seeded nemesis, recorders, and a checker of the
whole history (issue 10, part 1).

    result = run_campaign(n_nodes=5, seconds=120, seed=7, workdir=tmp)
    print(result.report())
    assert not result.violations

The cluster. ``n_nodes`` nodes (``node-a`` ...) run real ``python3 -m hado`` daemons in
their own network namespaces (``LabCluster`` of tests/test_lab_cluster.py), heartbeat
0.2 s, dead_after 1.0 s; ``witness=True`` makes the last node a witness (2 nodes +
witness: ``n_nodes=3, witness=True``). Two apps:

- ``web``: the VIP (``ipaddr``, lease 1 s) and the lab's HTTP service (``Lab.serve_name``
  on every runner answers its name on every address, so the client learns who holds the
  VIP);
- ``jobs``: one ``dummy`` resource (timeouts 0.5 s, no lease) whose start/stop append
  ``<monotonic_ns> start|stop <node>`` to ``jobs-<node>.log``. Its stop budget is 1 s, so
  ``takeover_after`` is D + B - (D/2 - h) = 1.7 s (hado/bounds.py).

The recorders. ``HolderSampler`` (which namespaces hold the VIP, every 20 ms, netlink),
``VipProbe`` (the client asks http://VIP:8080/ every 20 ms), the dummy's lines, a
``StatePoller`` (every node's /v1/state twice a second, condensed) and the nemesis's own
history (what it did, when, with what result). All times are ``time.monotonic_ns()``:
one clock for every namespace.

The nemesis. :func:`make_schedule` turns a seed into a list of *episodes*: one fault, or
two that overlap (the second starts while the first is in force), then a full heal and a
quiet period of the liveness bound plus 1-3 s. Fault kinds (:data:`KINDS`): ``kill``
(kill -9 of a daemon, restarted after 0.3-5 s), ``stop`` (SIGSTOP for 0.2-0.9 s or, longer
than dead_after, 1.2-5 s; then SIGCONT), ``linkdown`` (the bridge port down: NO-CARRIER),
``cut`` (silent: off the bridge, link up), ``oneway`` (a node's packets in or out dropped),
``split`` (the nodes in two random halves, the client on one side), ``nontransitive``
(A-B cut, both see everyone else), ``loss`` (20-30 % on one node or on every node), ``hog``
(one busy process per CPU in a node's namespace, bounded by its own deadline; namespaces
share the CPUs, so the whole machine is slowed), ``move`` (``hado move APP NODE`` asked on a
random node), ``standby`` (``hado standby``, later ``hado online``) and ``reload``
(SIGHUP, the same file). A target is a node or "the node holding web/jobs", resolved when
the fault is applied (from the latest sample); a target already under a fault of the same
layer (the daemon process: kill/stop/standby; the link: cut/linkdown; a hog) is replaced
by a free node chosen with a random generator seeded by the seed and the fault's id, so
the same seed gives the same schedule and the same choices in the same situations. An
episode starts when the previous one is healed plus its quiet period, so a slow restart
delays the rest but never shortens a quiet period.

The checker (:func:`check`, a pure function of the recorded data, so a saved
``data.json`` can be checked again):

- *Safety, web*: no VIP sample, ever, with two holders. The VIP is leased: a killed or
  frozen hado cannot leave it behind, so there is no exception.
- *Safety, jobs*: a node runs ``jobs`` from its ``start`` line until its next ``stop``
  line: the dummy's file exists exactly then (start is stamped before the file is
  written, stop after it is removed). A node whose hado was killed keeps its file, with no
  stop line, until its restarted hado's probe finds it and stops it; that node still
  "runs" jobs all that time. No two nodes may run jobs at the same time -- with one
  documented exception (docs/cluster.rst, "What no bound covers without fencing": the
  unleased resources of a hado that is killed or frozen run on): an overlap is *excused*
  when one of the two nodes was running jobs when its hado was killed or SIGSTOPped, the
  overlap began while that hado was dead or frozen, or before it was in control again
  (2 heartbeats after its SIGCONT or its restart being ready: decisions already made on
  the silence; for a restarted hado that could not reach a majority then, by the faults
  in force, D + 2 h: its start-up hold keeps what its probe found, election rule 0), and
  it ended within D + 5 h + B (3 s) of that hado being back (the restarted hado holds up
  to D, then stops its copy; a woken one stops at once). Excused overlaps are listed and
  counted, never hidden; any other overlap is a violation. The stop budget covers a node
  whose hado runs but is cut off (link down, cut, partitions, loss): no exception there.
- *Liveness*: after each episode's last heal (for a kill: the restarted daemon ready),
  each app runs on exactly one node within ``D + takeover_after(app) + 5 h + the app's
  start_timeouts`` (web 4.55 s, jobs 4.2 s; the start-up hold of a restarted node, a
  silent holder's wait, the claim round trips, the start) and stays on that node until
  the next episode; at the end of the quiet period that node reports the app active and
  eligible, every answering node names it active, and the client is answered by it only.
- *Availability*: the share of client probes answered, beside the share an ideal system
  would have answered given the faults in force: one that moves the VIP at once, at no
  cost, to any node that may serve it safely (its hado running and not frozen, not in
  standby, reachable both ways from the client, with a majority of running hados
  reachable both ways, itself included); under loss a probe counts (1 - p)^2 (its TCP
  handshake; a re-sent SYN comes after the probe's 0.3 s timeout).
- *Failover time per fault kind*: each period in which an app is not on exactly one node
  (for web: by the samples; for jobs: by the lines) is charged to the latest fault applied
  before it began (within its episode); the fault's failover time is from its apply to
  the end of the last such period (for move and standby: from the first period's start,
  as the CLI's own start-up takes seconds on a busy machine). Faults that moved nothing
  are counted apart.

On a violation, :func:`dump` writes one folder (its path is printed): README.txt (the
seed, how to run it again, the violations), schedule.txt, history.txt, per violation the
samples, dummy lines, client answers and state polls around it and the last minute of
every node's log, and data.json (everything the checker read).
"""

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lab import netlab
from lab.netlab import Lab

import test_lab_cluster as labtests

HB, DEAD = 0.2, 1.0
WEB, JOBS = "web", "jobs"
APPS = (WEB, JOBS)
WEB_PORT = labtests.WEB_PORT
KINDS = ("kill", "stop", "linkdown", "cut", "oneway", "split", "nontransitive", "loss", "hog",
         "move", "standby", "reload")
INSTANT = ("move", "reload")
LAYERS = {"kill": "process", "stop": "process", "standby": "process", "linkdown": "link", "cut": "link",
          "hog": "hog", "oneway": "oneway"}
WARMUP = 2.0            # seconds of calm, recorded, before the first episode
PLANNED_QUIET = 6.5     # seconds per quiet period assumed when planning how many episodes fit
QUIET_EXTRA = (1.0, 3.0)
HOG = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"
SECOND = 1_000_000_000


def s(ns):
    return ns / SECOND


# -- the cluster ------------------------------------------------------------------------------

def make_cluster(lab, workdir, witness=False, log_level="debug"):
    """A LabCluster with the apps web (VIP) and jobs (dummy), not started."""
    c = labtests.LabCluster(lab, workdir, heartbeat=HB, dead_after=DEAD,
                            witness=(lab.nodes[-1],) if witness else (), log_level=log_level)
    vip = dict(labtests.ipaddr_vip(c.vip), timeout=1, start_timeout=1, stop_timeout=1)
    job = {"name": "job", "plugin": "dummy", "interval": 0.2, "timeout": 0.5, "start_timeout": 0.5,
           "stop_timeout": 0.5, "args": {"path": str(Path(workdir) / "jobs-{node}"), "node": "{node}"}}
    c.config["apps"] = {WEB: {"resources": [vip]}, JOBS: {"resources": [job]}}
    c.config_path.write_text(json.dumps(c.config, indent=2))
    return c


class stderr_to:
    """Point this process's fd 2 at a file for a while: what it starts meanwhile inherits it."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        return False


def liveness_bounds(config, timings):
    """app -> seconds from the last heal to the app on exactly one node (module doc)."""
    return {app: round(DEAD + timings[app]["takeover_after"] + 5 * HB +
                       sum(r.get("start_timeout", 30) for r in config["apps"][app]["resources"]), 3)
            for app in APPS}


# -- the schedule -----------------------------------------------------------------------------

def make_schedule(seed, seconds, nodes, runners):
    """The episodes for ``seconds`` of campaign: a pure function of its arguments."""
    rng = random.Random(seed)
    episodes, planned = [], WARMUP
    while planned < seconds:
        index = len(episodes)
        first_kind = rng.choice(KINDS)
        faults = [new_fault(rng, first_kind, f"e{index}f0", 0.0, nodes, runners)]
        if rng.random() < 0.5:
            kind = rng.choice([k for k in KINDS if k != first_kind])
            at = rng.uniform(0.0, max(faults[0]["duration"], 1.0))
            faults.append(new_fault(rng, kind, f"e{index}f1", at, nodes, runners))
        span = max(f["at"] + f["duration"] for f in faults)
        episodes.append({"index": index, "faults": faults, "quiet_extra": round(rng.uniform(*QUIET_EXTRA), 2)})
        planned += span + PLANNED_QUIET
    return episodes


def new_fault(rng, kind, fid, at, nodes, runners):
    fault = {"id": fid, "kind": kind, "at": round(at, 2), "duration": 0.0}

    def target(runners_only=False):
        r = rng.random()
        if r < 0.25:
            return "holder:web"
        if r < 0.5:
            return "holder:jobs"
        return rng.choice(runners if runners_only else nodes)

    def lasting(low, high):
        return round(rng.uniform(low, high), 2)

    if kind == "kill":
        fault.update(target=target(), duration=lasting(0.3, 5.0))
    elif kind == "stop":
        longer = rng.random() < 0.5
        fault.update(target=target(), duration=lasting(1.2, 5.0) if longer else lasting(0.2, 0.9))
    elif kind in ("linkdown", "cut", "hog"):
        fault.update(target=target(), duration=lasting(1.0, 6.0) if kind != "hog" else lasting(2.0, 6.0))
    elif kind == "oneway":
        fault.update(target=target(), direction=rng.choice(["in", "out"]), duration=lasting(1.0, 6.0))
    elif kind == "split":
        order = rng.sample(list(nodes), len(nodes))
        half = len(nodes) // 2
        fault.update(side_a=sorted(order[:half]), side_b=sorted(order[half:]),
                     client_side=rng.choice(["a", "b"]), duration=lasting(2.0, 6.0))
    elif kind == "nontransitive":
        a, b = rng.sample(list(nodes), 2)
        fault.update(pair=sorted([a, b]), duration=lasting(2.0, 6.0))
    elif kind == "loss":
        scope = rng.choice(["one", "all"])
        fault.update(scope=scope, target=target() if scope == "one" else None, percent=rng.randint(20, 30),
                     duration=lasting(3.0, 8.0))
    elif kind == "move":
        fault.update(app=rng.choice(APPS))
    elif kind == "standby":
        fault.update(target=target(runners_only=True), duration=lasting(1.0, 5.0))
    elif kind == "reload":
        fault.update(target=target())
    else:
        raise ValueError(f"unknown fault kind {kind!r}")
    return fault


def describe_fault(f):
    what = {"kill": "kill -9 {target}, restart after {duration} s",
            "stop": "SIGSTOP {target} for {duration} s",
            "linkdown": "link of {target} down for {duration} s",
            "cut": "silent cut of {target} for {duration} s",
            "oneway": "one-way partition ({direction}) of {target} for {duration} s",
            "hog": "CPU hog in {target} for {duration} s",
            "move": "hado move {app} (target chosen then)",
            "standby": "hado standby {target} for {duration} s",
            "reload": "SIGHUP (reload, same file) to {target}"}
    if f["kind"] == "split":
        return (f"split {'+'.join(f['side_a'])} | {'+'.join(f['side_b'])} (client with side {f['client_side']}) "
                f"for {f['duration']} s")
    if f["kind"] == "nontransitive":
        return f"non-transitive: {f['pair'][0]} and {f['pair'][1]} cut from each other for {f['duration']} s"
    if f["kind"] == "loss":
        where = f["target"] if f["scope"] == "one" else "every node"
        return f"{f['percent']} % loss on {where} for {f['duration']} s"
    return what[f["kind"]].format(**f)


def schedule_text(seed, episodes):
    lines = [f"seed {seed}: {len(episodes)} episodes"]
    for ep in episodes:
        lines.append(f"episode {ep['index']} (then quiet: liveness bound + {ep['quiet_extra']} s)")
        for f in ep["faults"]:
            lines.append(f"  +{f['at']:5.2f} s  {f['id']:7} {describe_fault(f)}")
    return "\n".join(lines)


# -- recorders --------------------------------------------------------------------------------

def condense(state):
    """The part of a /v1/state the checker and the reports use."""
    if not state:
        return None
    return {"up": state.get("uptime_s"), "q": state["quorum"]["ok"], "votes": state["quorum"].get("votes"),
            "standby": state.get("standby"),
            "apps": {app: [e["role"], e["active_node"], e["eligible"], e["epoch"], e["decision"]]
                     for app, e in state.get("apps", {}).items()}}


class StatePoller(threading.Thread):
    """Every ``interval`` s, every node's /v1/state, condensed, with its own readers."""

    def __init__(self, lab, nodes, interval=0.5):
        super().__init__(name="state-poller", daemon=True)
        self.readers = {n: labtests.Reader(lab, n) for n in nodes}
        self.interval = interval
        self.records = []      # [t_ns, node, condensed or None]; appended by this thread only
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            t = time.monotonic_ns()
            try:
                got = labtests.ask(self.readers, "state", timeout=0.5)
            except (OSError, ValueError):   # a reader gone (teardown)
                return
            for node, state in got.items():
                self.records.append([t, node, condense(state)])
            self.halt.wait(max(0.0, self.interval - s(time.monotonic_ns() - t)))

    def stop(self):
        self.halt.set()
        self.join(5)
        return list(self.records)


def last_line(path, size=4096):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    complete = [line for line in lines[1:] or lines if line.strip()]
    return complete[-1] if complete else None


def engine_version():
    """The commit and the hado/ and plugins/ files changed since (others edit the tree)."""
    def git(*argv):
        proc = subprocess.run(["git", *argv], cwd=labtests.REPO, capture_output=True, text=True, timeout=30)
        return proc.stdout.strip() if proc.returncode == 0 else None
    import hashlib
    digest = hashlib.sha256()
    for path in sorted(list((labtests.REPO / "hado").glob("*.py")) + list((labtests.REPO / "plugins").glob("*.py"))):
        digest.update(path.name.encode() + path.read_bytes())
    return {"head": git("rev-parse", "--short", "HEAD"),
            "changed": (git("status", "--short", "--", "hado", "plugins") or "").splitlines(),
            "sha256": digest.hexdigest()[:16]}


def log_errors(workdir, nodes, wall_minus_mono_ns, t_begin_ns):
    """[node, seconds into the campaign or None, line]: tracebacks, crashed loops and
    ERROR lines in the daemons' logs (findings to read, not violations by themselves)."""
    out = []
    for node in nodes:
        path = Path(workdir) / f"{node}.out"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if "Traceback" in line or " ERROR " in line or "crashed" in line:
                mono = log_time(line, wall_minus_mono_ns)
                out.append([node, None if mono is None else round(s(mono - t_begin_ns), 2), line[:300]])
    return out


def log_time(line, wall_minus_mono_ns):
    """The monotonic ns of a daemon log line (its stamp is a UTC wall time), or None."""
    import datetime
    stamp = line[:24]
    if not (len(stamp) == 24 and stamp.endswith("Z") and stamp[4] == "-" and stamp[10] == "T"):
        return None
    try:
        wall = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None
    return int(wall * SECOND) - wall_minus_mono_ns


def jobs_file(workdir, node):
    """The start stamp in a node's dummy file, None when there is none."""
    try:
        return int((Path(workdir) / f"jobs-{node}").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def reconcile_jobs(lines, history):
    """The dummy's lines, completed at each kill -9: the dummy stamps its start before it
    writes the file and logs after, and its stop after the remove and logs after, so a
    kill between the two leaves a file with no start line, or a removed file with no stop
    line. The nemesis reads the file just after each kill; this adds the missing start
    (at the stamp in the file) or stop (at the kill: conservative)."""
    lines = sorted(lines)
    added = []
    for e in history:
        if e["what"] != "apply" or e["kind"] != "kill" or "jobs_file" not in e:
            continue
        node, t_kill, stamp = e["node"], e["t1_ns"], e["jobs_file"]
        mine = [x for x in lines + added if x[2] == node and x[0] <= t_kill]
        running = bool(mine) and max(mine)[1] == "start"
        if stamp is not None and not running:
            added.append([stamp, "start", node])
        elif stamp is None and running:
            added.append([t_kill, "stop", node])
    return sorted(lines + added)


def jobs_lines(workdir, nodes):
    """Every dummy line of every node: [t_ns, "start"|"stop", node], sorted."""
    out = []
    for node in nodes:
        path = Path(workdir) / f"jobs-{node}.log"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in ("start", "stop"):
                out.append([int(parts[0]), parts[1], parts[2]])
    return sorted(out)


# -- the nemesis --------------------------------------------------------------------------------

class Nemesis:
    """Runs the episodes against a started cluster, recording what it did in ``history``."""

    def __init__(self, c, seed, episodes, bounds, sampler, deadline, t_begin_ns, say=print):
        self.c, self.lab, self.seed, self.t_begin_ns = c, c.lab, seed, t_begin_ns
        self.episodes, self.bounds, self.sampler = episodes, bounds, sampler
        self.deadline = deadline            # monotonic s: no episode starts after it
        self.say = say
        self.history = []                   # dicts, in order
        self.ran = []                       # episodes run: index, start_ns, heal_end_ns, end_ns, snapshot
        self.active = {}                    # fault id -> (fault, resolved details)
        self.hogs = {}                      # fault id -> [Popen]

    # -- who holds what now --

    def holder(self, app):
        if app == WEB:
            line = last_line(self.sampler.path)
            if line and len(line.split()) == 2 and line.split()[1] != "-":
                return sorted(line.split()[1].split(","))[0]
            return None
        running = [n for n in self.c.runners if os.path.exists(self.c.dir / f"jobs-{n}")]
        return running[0] if running else None

    def busy(self, layer):
        return {d["node"] for f, d in self.active.values() if LAYERS.get(f["kind"]) == layer and d.get("node")}

    def resolve(self, fault, rng, runners_only=False):
        spec = fault.get("target")
        node = self.holder(spec.split(":", 1)[1]) if spec and spec.startswith("holder:") else spec
        pool = self.c.runners if runners_only else self.lab.nodes
        layer = LAYERS.get(fault["kind"])
        taken = self.busy(layer) if layer else set()
        if fault["kind"] in ("standby", "reload"):
            taken |= self.busy("process")
        if node is None or node in taken or node not in pool:
            free = [n for n in pool if n not in taken]
            node = rng.choice(free) if free else None
        return node

    def record(self, what, fault, t0, **fields):
        entry = {"t0_ns": t0, "t1_ns": time.monotonic_ns(), "what": what, "id": fault["id"], "kind": fault["kind"],
                 **fields}
        self.history.append(entry)
        rel = s(t0 - self.t_begin_ns)
        detail = ", ".join(f"{k}={v}" for k, v in fields.items() if k not in ("out",))
        self.say(f"  [{rel:7.2f} s] {what:5} {fault['id']:7} {fault['kind']}: {detail}")
        return entry

    # -- the hado command line in a node's namespace --

    def hado(self, node, *argv, timeout=15):
        proc = self.lab.run(node, [sys.executable, "-m", "hado", *argv, "--config", self.c.config_path,
                                   "--node", node], timeout=timeout, check=False, cwd=labtests.REPO,
                            env=self.c.env)
        return proc.returncode, (proc.stdout + proc.stderr).strip()[-300:]

    # -- faults --

    def apply(self, fault):
        rng = random.Random(f"{self.seed}/{fault['id']}")
        kind, t0 = fault["kind"], time.monotonic_ns()
        c, lab = self.c, self.lab
        detail = {}
        try:
            if kind in ("kill", "stop", "linkdown", "cut", "hog", "oneway", "reload"):
                node = self.resolve(fault, rng)
                if node is None:
                    return self.record("skip", fault, t0, why="no free target")
                detail["node"] = node
                if kind == "kill":
                    c.kill(node)
                    detail["jobs_file"] = jobs_file(c.dir, node)
                elif kind == "stop":
                    c.signal(node, signal.SIGSTOP)
                elif kind == "linkdown":
                    lab.cut(node, "down")
                elif kind == "cut":
                    lab.cut(node, "silent")
                elif kind == "hog":
                    procs = [lab.popen(node, [sys.executable, "-c", HOG, str(fault["duration"] + 1.0)])
                             for _ in range(os.cpu_count() or 1)]
                    self.hogs[fault["id"]] = procs
                    detail["procs"] = len(procs)
                elif kind == "oneway":
                    rest = [m for m in lab.members if m != node]
                    groups = ([node], rest) if fault["direction"] == "out" else (rest, [node])
                    lab.partition(*groups, oneway=True)
                    detail["groups"] = [sorted(g) for g in groups]
                elif kind == "reload":
                    if not c.alive(node):
                        return self.record("skip", fault, t0, node=node, why="its hado is not running")
                    c.signal(node, signal.SIGHUP)
            elif kind == "split":
                a = list(fault["side_a"]) + ([lab.client] if fault["client_side"] == "a" else [])
                b = list(fault["side_b"]) + ([lab.client] if fault["client_side"] == "b" else [])
                lab.partition(a, b)
                detail["groups"] = [sorted(a), sorted(b)]
            elif kind == "nontransitive":
                lab.partition([fault["pair"][0]], [fault["pair"][1]])
                detail["groups"] = [[fault["pair"][0]], [fault["pair"][1]]]
            elif kind == "loss":
                nodes = [self.resolve(fault, rng)] if fault["scope"] == "one" else list(lab.nodes)
                for node in nodes:
                    lab.loss(node, fault["percent"])
                detail.update(nodes=nodes, percent=fault["percent"])
            elif kind == "move":
                app = fault["app"]
                holder = self.holder(app)
                targets = [n for n in c.runners if n != holder]
                target = rng.choice(targets)
                vias = [n for n in lab.nodes if c.alive(n) and n not in self.busy("process")]
                if not vias:
                    return self.record("skip", fault, t0, why="no node to ask")
                via = rng.choice(vias)
                rc, out = self.hado(via, "move", app, target)
                detail.update(app=app, node=target, via=via, holder=holder, rc=rc, out=out)
            elif kind == "standby":
                node = self.resolve(fault, rng, runners_only=True)
                if node is None:
                    return self.record("skip", fault, t0, why="no free target")
                rc, out = self.hado(node, "standby")
                detail.update(node=node, rc=rc, out=out)
        except (netlab.LabError, OSError, subprocess.SubprocessError) as exc:
            detail["error"] = f"{type(exc).__name__}: {exc}"
        if kind not in INSTANT:
            self.active[fault["id"]] = (fault, detail)
        return self.record("apply", fault, t0, **detail)

    def heal(self, fault):
        if fault["id"] not in self.active:
            return None
        fault, detail = self.active.pop(fault["id"])
        kind, node, t0 = fault["kind"], detail.get("node"), time.monotonic_ns()
        c, lab = self.c, self.lab
        fields = {"node": node} if node else {}
        try:
            if kind == "kill":
                for attempt in range(2):
                    try:
                        c.start(node)
                        break
                    except AssertionError as exc:
                        fields[f"error{attempt}"] = str(exc).splitlines()[0]
                        c.kill(node)
                fields["ready"] = c.alive(node)
            elif kind == "stop":
                c.signal(node, signal.SIGCONT)
            elif kind in ("linkdown", "cut"):
                lab.restore(node)
            elif kind == "hog":
                for proc in self.hogs.pop(fault["id"], []):
                    if proc.poll() is None:
                        proc.kill()
                    proc.wait(5)
            elif kind in ("oneway", "split", "nontransitive"):
                netlab.remove_partition(lab, *detail["groups"], oneway=(kind == "oneway"))
            elif kind == "loss":
                for n in detail["nodes"]:
                    lab.clear_loss(n)
            elif kind == "standby":
                for attempt in range(10):      # bounded: 10 tries, about 15 s at most
                    rc, out = self.hado(node, "online", timeout=5)
                    if rc == 0:
                        break
                    time.sleep(0.5)
                fields.update(rc=rc, out=out, attempts=attempt + 1)
        except (netlab.LabError, OSError, subprocess.SubprocessError) as exc:
            fields["error"] = f"{type(exc).__name__}: {exc}"
        return self.record("heal", fault, t0, **fields)

    def heal_all(self):
        for fault, _ in list(self.active.values()):
            self.heal(fault)

    def sleep_until(self, t):
        delay = t - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def run(self):
        for ep in self.episodes:
            if time.monotonic() >= self.deadline:
                break
            start = time.monotonic()
            start_ns = time.monotonic_ns()
            self.say(f"episode {ep['index']}: " + "; ".join(describe_fault(f) for f in ep["faults"]))
            events = sorted([(f["at"], 0, i, "apply", f) for i, f in enumerate(ep["faults"])] +
                            [(f["at"] + f["duration"], 1, i, "heal", f) for i, f in enumerate(ep["faults"])
                             if f["kind"] not in INSTANT])
            try:
                for offset, _, _, what, fault in events:
                    self.sleep_until(start + offset)
                    (self.apply if what == "apply" else self.heal)(fault)
            finally:
                self.heal_all()
            heal_end_ns = time.monotonic_ns()
            self.sleep_until(s(heal_end_ns) + max(self.bounds.values()) + ep["quiet_extra"])
            snapshot = {n: condense(st) for n, st in self.c.states().items()}
            # A daemon the nemesis did not kill has no business being gone: a crash.
            gone = {n: self.c.procs[n].poll() for n in self.c.names if not self.c.alive(n)}
            self.ran.append({"index": ep["index"], "start_ns": start_ns, "heal_end_ns": heal_end_ns,
                             "end_ns": time.monotonic_ns(), "snapshot": snapshot, "gone": gone,
                             "load": round(os.getloadavg()[0], 2)})
            for node in gone:
                self.say(f"  {node}'s hado exited by itself (exit code {gone[node]}); starting it again")
                try:
                    self.c.start(node)
                except AssertionError as exc:
                    self.say(f"  {node} did not start again: {str(exc).splitlines()[0]}")


# -- running a campaign -------------------------------------------------------------------------

def run_campaign(n_nodes=5, seconds=120, seed=None, workdir=None, witness=False, report_dir=None,
                 say=print, log_level="debug", keep=False):
    """Build the lab and the cluster, run the nemesis for ``seconds``, check, and return a
    :class:`Result`. On violations (or with ``keep``) the report folder is written (and
    printed). Everything is torn down at the end, also on failure and Ctrl-C."""
    seed = random.SystemRandom().randrange(1, 10**9) if seed is None else seed
    own_workdir = workdir is None
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"hado-campaign-{seed}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"campaign: seed {seed}, {n_nodes} nodes{' (the last a witness)' if witness else ''}, {seconds:g} s; "
        f"workdir {workdir}; run it again with seed {seed}")
    result = None
    try:
        data = record_campaign(n_nodes, seconds, seed, workdir, witness, say, log_level)
        result = check(data)
        if result.violations or keep:
            result.folder = dump(data, result, workdir, report_dir)
            say(f"{'VIOLATIONS: ' if result.violations else ''}report folder {result.folder}")
        return result
    finally:
        if own_workdir and result is not None and not result.violations and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif own_workdir:
            say(f"kept {workdir} (daemon logs, dummy lines)")


def record_campaign(n_nodes, seconds, seed, workdir, witness, say, log_level):
    """The lab, the cluster, the recorders and the nemesis: the recorded data (a dict)."""
    engine = engine_version()
    with Lab(n_nodes) as lab:
        with stderr_to(Path(workdir) / "servers.err"):   # the name servers' broken pipes
            c = make_cluster(lab, workdir, witness=witness, log_level=log_level)
        episodes = make_schedule(seed, seconds, lab.nodes, c.runners)
        say(schedule_text(seed, episodes))
        poller = sampler = probe = nemesis = None
        try:
            c.start()
            c.wait_calm(timeout=30)
            state = next(st for st in c.states().values() if st)
            timings, takeover = state["timings"], state["takeover_after_s"]
            bounds = liveness_bounds(c.config, timings)
            say(f"timings {timings}; liveness bounds {bounds}")
            wall_minus_mono = time.time_ns() - time.monotonic_ns()
            sampler = netlab.HolderSampler(lab, c.vip).start()
            probe = netlab.VipProbe(lab, c.vip, WEB_PORT).start()
            poller = StatePoller(lab, lab.nodes)
            poller.start()
            t_begin = time.monotonic_ns()
            time.sleep(WARMUP)
            nemesis = Nemesis(c, seed, episodes, bounds, sampler, time.monotonic() + seconds, t_begin, say=say)
            nemesis.run()
            t_end = time.monotonic_ns()
        finally:
            if nemesis is not None:
                nemesis.heal_all()
            polls = poller.stop() if poller else []
            samples = sampler.stop() if sampler else []
            answers = probe.stop() if probe else []
            c.stop_all()
        return {
            "seed": seed, "nodes": lab.nodes, "runners": c.runners, "witness": sorted(c.witness),
            "heartbeat": HB, "dead_after": DEAD, "timings": timings, "takeover_after_s": takeover,
            "bounds": bounds, "vip": c.vip, "schedule": episodes, "history": nemesis.history,
            "episodes": nemesis.ran, "t_begin_ns": t_begin, "t_end_ns": t_end,
            "wall_minus_mono_ns": wall_minus_mono,
            "samples": [[x.t_ns, sorted(x.holders)] for x in samples],
            "answers": [[a.sent_ns, a.done_ns, a.answer] for a in answers],
            "jobs": jobs_lines(workdir, lab.nodes), "polls": polls,
            "log_errors": log_errors(workdir, lab.nodes, wall_minus_mono, t_begin),
            "engine": engine, "engine_end": engine_version(), "cpus": os.cpu_count(),
        }


# -- the checker --------------------------------------------------------------------------------

class Result:
    def __init__(self, data):
        self.data = data
        self.violations = []       # dicts: kind, t_ns, end_ns, text
        self.excused = []          # jobs overlaps of a killed/frozen hado (documented)
        self.liveness = []         # per episode and app: dict
        self.availability = {}
        self.failovers = {}        # kind -> {"applied", "web": [s], "jobs": [s], "client": [s]}
        self.folder = None

    def report(self):
        d = self.data
        loads = [ep["load"] for ep in d["episodes"] if "load" in ep]
        engine = d.get("engine") or {}
        lines = [f"engine {engine.get('head')} (hado/ and plugins/ sha256 {engine.get('sha256')}, changed since: "
                 f"{', '.join(x.split()[-1] for x in engine.get('changed', [])) or 'none'}); "
                 f"{d.get('cpus')} CPUs, load average {min(loads or [0]):.1f}-{max(loads or [0]):.1f} "
                 f"(median {statistics.median(loads or [0]):.1f}) at the episodes' ends"]
        if d.get("engine_end") and d["engine_end"].get("sha256") != engine.get("sha256"):
            lines.append(f"NOTE: hado/ or plugins/ changed during the run (sha256 {d['engine_end']['sha256']} "
                         "at the end): daemons restarted late ran newer code")
        lines += [f"seed {d['seed']}: {len(d['episodes'])} episodes over {s(d['t_end_ns'] - d['t_begin_ns']):.0f} s, "
                 f"{len(d['samples'])} VIP samples ({netlab.sample_rate(samples_of(d)):.0f}/s), "
                 f"{len(d['answers'])} client probes, {len(d['jobs'])} dummy lines"]
        lines.append("faults applied per kind:")
        for kind in KINDS:
            f = self.failovers.get(kind)
            if f:
                lines.append(f"  {kind:14} {f['applied']:4} applied, {f['skipped']} skipped")
        lines.append(f"safety violations: {sum(1 for v in self.violations if v['kind'].startswith('safety'))}")
        lines.append(f"liveness violations: {sum(1 for v in self.violations if v['kind'].startswith('liveness'))} "
                     f"(of {len(self.liveness)} checks)")
        ex = self.excused
        lines.append(f"excused jobs overlaps (killed/frozen hado, docs/cluster.rst): {len(ex)}, "
                     f"{sum(e['seconds'] for e in ex):.2f} s in total, longest "
                     f"{max([e['seconds'] for e in ex] + [0]):.2f} s")
        for e in ex:
            lines.append(f"  excused: {e['text']}")
        for v in self.violations:
            lines.append(f"  VIOLATION {v['kind']}: {v['text']}")
        errors = d.get("log_errors") or []
        lines.append(f"tracebacks, crashes and ERROR lines in the daemon logs: {len(errors)}")
        for node, at, line in errors[:20]:
            lines.append(f"  {node} at {at} s: {line[:200]}")
        a = self.availability
        if a.get("probes"):
            lines.append(f"availability: {a['answered']} of {a['probes']} probes answered ({a['real']:.2%}); "
                         f"an ideal system {a['ideal']:.2%}; ratio {a['ratio']:.3f}")
        lines.append("failover time per fault kind, over the faults that unsettled the app (from the fault "
                     "to the app on exactly one node whose hado runs; client: the longest run of unanswered "
                     "probes):")
        for kind in KINDS:
            f = self.failovers.get(kind)
            if not f:
                continue
            parts = []
            for what in ("web", "jobs", "client"):
                parts.append(f"{what} {figures(f[what])}")
            lines.append(f"  {kind:14} " + "; ".join(parts))
        if self.folder:
            lines.append(f"report folder: {self.folder}")
        return "\n".join(lines)


def figures(values):
    if not values:
        return "-"
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return f"n={len(values)} median {statistics.median(values):.2f} p95 {p95:.2f} max {values[-1]:.2f} s"


def samples_of(data):
    return [netlab.Sample(t, frozenset(h)) for t, h in data["samples"]]


def spans_out_of_control(history):
    """node -> [(out_ns, back_ns, "kill"|"stop")]: its hado killed (until the restart is
    ready) or frozen (until SIGCONT); back_ns None if it never came back."""
    spans, opened = {}, {}
    for e in history:
        if e["kind"] not in ("kill", "stop") or "node" not in e:
            continue
        if e["what"] == "apply" and "error" not in e:
            opened[e["id"]] = (e["node"], e["t0_ns"], e["kind"])
        elif e["what"] == "heal" and e["id"] in opened:
            node, out, kind = opened.pop(e["id"])
            spans.setdefault(node, []).append((out, e["t1_ns"], kind))
    for node, out, kind in opened.values():
        spans.setdefault(node, []).append((out, None, kind))
    return spans


def jobs_intervals(lines, end_ns):
    """node -> [(start_ns, stop_ns)]: while its dummy file existed (open ones end at end_ns)."""
    intervals, started = {}, {}
    for t, event, node in lines:
        if event == "start" and node not in started:
            started[node] = t
        elif event == "stop" and node in started:
            intervals.setdefault(node, []).append((started.pop(node), t))
    for node, t in started.items():
        intervals.setdefault(node, []).append((t, end_ns))
    return intervals


def running_steps(intervals):
    """[(t_ns, frozenset of nodes running jobs from t on)], at every change."""
    events = sorted([(a, 1, n) for n, ivs in intervals.items() for a, b in ivs] +
                    [(b, 0, n) for n, ivs in intervals.items() for a, b in ivs])
    steps, running = [], set()
    for t, kind, node in events:
        (running.add if kind else running.discard)(node)
        if steps and steps[-1][0] == t:
            steps[-1] = (t, frozenset(running))
        else:
            steps.append((t, frozenset(running)))
    return steps


def check(data):
    """Safety, liveness, availability and failover times over the whole history: a Result."""
    result = Result(data)
    h, dead = data["heartbeat"], data["dead_after"]
    budget = data["timings"][JOBS]["budget"]
    grace = dead + 5 * h + budget
    samples = data["samples"]
    history = data["history"]
    t_end = data["t_end_ns"]

    # -- safety: the VIP ------------------------------------------------------------------
    run = None
    for i, (t, holders) in enumerate(samples + [[t_end, []]]):
        if len(holders) > 1:
            run = run or {"start": t, "holders": set()}
            run["holders"] |= set(holders)
        elif run:
            result.violations.append({"kind": "safety-web", "t_ns": run["start"], "end_ns": t,
                                      "text": f"two VIP holders {'+'.join(sorted(run['holders']))} from "
                                              f"{rel(data, run['start'])} for {s(t - run['start']):.3f} s"})
            run = None

    # -- safety: jobs -----------------------------------------------------------------------
    intervals = jobs_intervals(reconcile_jobs(data["jobs"], history), t_end)
    spans = spans_out_of_control(history)
    timeline = FaultTimeline(data)

    def regained(node, back, kind):
        """ns after ``back`` until the hado is in control again: a woken or reachable
        restarted hado acts on its next turns (2 h); a restarted one that cannot reach a
        majority holds what its probe found for up to D (the start-up hold, election
        rule 0) and only then stops it."""
        if kind == "kill" and any(not timeline.has_majority(node, back + i * SECOND // 10)
                                  for i in range(int(dead * 10) + 1)):
            return int((dead + 2 * h) * SECOND)
        return int(2 * h * SECOND)
    steps = running_steps(intervals)
    overlaps, current = [], None
    for (t, running), nxt in zip(steps, steps[1:] + [(t_end, frozenset())]):
        if len(running) > 1:
            if current is None:
                current = {"start": t, "nodes": set(running), "end": nxt[0]}
            current["nodes"] |= running
            current["end"] = nxt[0]
        elif current is not None:
            overlaps.append(current)
            current = None
    if current is not None:
        overlaps.append(current)
    for ov in overlaps:
        excuses = {}
        for node in ov["nodes"]:
            began = max((a for a, b in intervals.get(node, []) if a <= ov["start"]), default=None)
            for out, back, kind in spans.get(node, []):
                back_or_end = back if back is not None else t_end
                if (began is not None and began <= out <= ov["start"] <= back_or_end + regained(node, back_or_end, kind)
                        and ov["end"] <= back_or_end + grace * SECOND):
                    excuses[node] = (out, back)
        text = (f"jobs on {'+'.join(sorted(ov['nodes']))} at once from {rel(data, ov['start'])} "
                f"for {s(ov['end'] - ov['start']):.3f} s")
        if len(excuses) >= len(ov["nodes"]) - 1:
            why = "; ".join(f"{n}'s hado out from {rel(data, o)} to "
                            f"{rel(data, b) if b else 'the end'}" for n, (o, b) in sorted(excuses.items()))
            result.excused.append({"t_ns": ov["start"], "end_ns": ov["end"], "seconds": s(ov["end"] - ov["start"]),
                                   "nodes": sorted(ov["nodes"]), "text": f"{text} (excused: {why})"})
        else:
            result.violations.append({"kind": "safety-jobs", "t_ns": ov["start"], "end_ns": ov["end"],
                                      "text": text})

    # -- daemons that exited by themselves ------------------------------------------------
    for ep in data["episodes"]:
        for node, code in (ep.get("gone") or {}).items():
            result.violations.append({"kind": "crash", "t_ns": ep["start_ns"], "end_ns": ep["end_ns"],
                                      "text": f"episode {ep['index']}: {node}'s hado exited by itself "
                                              f"(exit code {code})"})

    # -- liveness after each episode ------------------------------------------------------
    answers = data["answers"]
    for ep in data["episodes"]:
        heal, end = ep["heal_end_ns"], ep["end_ns"]
        for app in APPS:
            bound = data["bounds"][app]
            if app == WEB:
                series = [(t, frozenset(hs)) for t, hs in samples if heal <= t <= end]
            else:
                series = [(max(t, heal), r) for t, r in steps_in(steps, heal, end)]
            entry = {"episode": ep["index"], "app": app, "bound": bound}
            problem = None
            if not series:
                problem = "no samples after the heal"
            else:
                final = series[-1][1]
                ok_from = heal
                for t, holders in series:
                    if holders != final:
                        ok_from = None
                    elif ok_from is None:
                        ok_from = t
                if len(final) != 1:
                    problem = f"on {'+'.join(sorted(final)) or 'no node'} at the end of the quiet period"
                else:
                    node = next(iter(final))
                    took = s(ok_from - heal)
                    entry.update(node=node, took=took)
                    snap = ep["snapshot"]
                    mine = (snap.get(node) or {}).get("apps", {}).get(app)
                    others = {n: st["apps"][app][1] for n, st in snap.items() if st and app in st["apps"]}
                    if took > bound:
                        problem = f"on one node ({node}) only {took:.2f} s after the last heal (bound {bound} s)"
                    elif not mine or mine[0] != "active" or not mine[2]:
                        problem = f"{node} runs it but reports {mine and mine[:3]}"
                    elif any(v != node for v in others.values()):
                        problem = f"{node} runs it but the nodes name {others}"
                    elif app == WEB:
                        last = [a[2] for a in answers if end - SECOND <= a[0] and a[1] <= end]
                        if not last or node not in last or any(x and x != node for x in last):
                            problem = (f"{node} holds the VIP but the client's last second got "
                                       f"{dict(_count(last))}")
            entry["ok"] = problem is None
            result.liveness.append(entry)
            if problem:
                result.violations.append({"kind": f"liveness-{app}", "t_ns": heal, "end_ns": end,
                                          "text": f"episode {ep['index']}: {app} {problem}"})

    # -- availability ---------------------------------------------------------------------
    first = data["episodes"][0]["start_ns"] if data["episodes"] else t_end
    probes = [a for a in answers if first <= a[0] <= t_end]
    ideal = sum(timeline.ideal_weight(a[0]) for a in probes)
    answered = sum(1 for a in probes if a[2])
    if probes:
        result.availability = {"probes": len(probes), "answered": answered, "real": answered / len(probes),
                               "ideal": ideal / len(probes), "ratio": answered / ideal if ideal else 0.0}

    # -- failover time per fault kind -----------------------------------------------------
    result.failovers = failover_times(data)
    return result


def _count(values):
    out = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def steps_in(steps, start, end):
    """The running sets from ``start`` to ``end``: the one in force at start, then changes."""
    before = [st for st in steps if st[0] <= start]
    out = [(start, before[-1][1] if before else frozenset())]
    out += [st for st in steps if start < st[0] <= end]
    return out


def rel(data, t_ns):
    return f"{s(t_ns - data['t_begin_ns']):.2f} s"


class FaultTimeline:
    """Which faults were in force when, from the nemesis's history, for the ideal system."""

    def __init__(self, data):
        self.data = data
        self.nodes, self.runners = data["nodes"], data["runners"]
        self.spans = []    # (from_ns, to_ns, kind, detail)
        opened = {}
        for e in data["history"]:
            if e["what"] == "apply" and e["kind"] not in INSTANT and "error" not in e:
                opened[e["id"]] = e
            elif e["what"] == "heal" and e["id"] in opened:
                a = opened.pop(e["id"])
                self.spans.append((a["t1_ns"], e["t1_ns"] if a["kind"] == "kill" else e["t0_ns"], a["kind"], a))
        for a in opened.values():
            self.spans.append((a["t1_ns"], data["t_end_ns"], a["kind"], a))
        self.spans.sort(key=lambda x: x[0])

    def in_force(self, t):
        return [(kind, d) for a, b, kind, d in self.spans if a <= t < b]

    def world(self, t):
        """(hados down, cut nodes, nodes in standby, loss per node, connected(x, y)) at t."""
        down, cut, standby, loss, drops = set(), set(), set(), {}, []
        for kind, d in self.in_force(t):
            node = d.get("node")
            if kind in ("kill", "stop"):
                down.add(node)
            elif kind in ("linkdown", "cut"):
                cut.add(node)
            elif kind == "standby" and d.get("rc") == 0:
                standby.add(node)
            elif kind == "loss":
                for n in d["nodes"]:
                    loss[n] = d["percent"] / 100
            elif kind in ("oneway", "split", "nontransitive"):
                a, b = d["groups"]
                drops.append((set(a), set(b), kind == "oneway"))

        def dropped(x, y):
            return any((x in a and y in b) or (not oneway and x in b and y in a) for a, b, oneway in drops)

        def connected(x, y):
            return x not in cut and y not in cut and not dropped(x, y) and not dropped(y, x)

        return down, cut, standby, loss, connected

    def votes(self, n, t, down, connected):
        return 1 + sum(1 for m in self.nodes if m != n and m not in down and connected(n, m))

    def has_majority(self, n, t):
        """Whether n reaches (both ways) a majority of running hados, itself included."""
        down, _cut, _standby, _loss, connected = self.world(t)
        return self.votes(n, t, down - {n}, connected) >= len(self.nodes) // 2 + 1

    def ideal_weight(self, t):
        if not self.in_force(t):
            return 1.0
        down, _cut, standby, loss, connected = self.world(t)
        needed = len(self.nodes) // 2 + 1
        best = 0.0
        for n in self.runners:
            if n in down or n in standby or not connected("client", n):
                continue
            if self.votes(n, t, down, connected) >= needed:
                best = max(best, (1 - loss.get(n, 0.0)) ** 2)
        return best


def failover_times(data):
    """kind -> {"applied", "skipped", "web": [s], "jobs": [s], "client": [s]} (module doc).

    An app is *settled* while exactly one node whose hado is in control runs it: the VIP
    or the dummy of a node whose hado is killed or frozen does not count (from the kill
    or SIGSTOP to the restart or SIGCONT), nor does a dummy such a node left behind and
    stops within the grace period after it is back (see check())."""
    t_end = data["t_end_ns"]
    h, dead = data["heartbeat"], data["dead_after"]
    grace = (dead + 5 * h + data["timings"][JOBS]["budget"]) * SECOND
    spans = spans_out_of_control(data["history"])
    out = {}
    applies = [e for e in data["history"] if e["what"] == "apply"]
    for e in data["history"]:
        if e["what"] == "skip":
            out.setdefault(e["kind"], new_failover())["skipped"] += 1
    # Each applied fault is charged what begins between its apply and the next apply of
    # its episode (or the episode's end).
    windows = []
    for ep in data["episodes"]:
        mine = [e for e in applies if ep["start_ns"] <= e["t0_ns"] <= ep["end_ns"]]
        for i, e in enumerate(mine):
            until = mine[i + 1]["t0_ns"] if i + 1 < len(mine) else ep["end_ns"]
            windows.append((e, until))

    def in_control(node, t):
        return not any(a <= t <= (b if b is not None else t_end) for a, b, _ in spans.get(node, []))

    web = [(t, frozenset(n for n in hs if in_control(n, t))) for t, hs in data["samples"]]
    cut = {}
    for node, ivs in jobs_intervals(reconcile_jobs(data["jobs"], data["history"]), t_end).items():
        for a, b in ivs:
            pieces = [(a, b)]
            for out_ns, back, _kind in spans.get(node, []):
                back = back if back is not None else t_end
                upto = b if b <= back + grace else back    # a leftover stopped after the return
                pieces = [p for x, y in pieces for p in ((x, min(y, out_ns)), (max(x, upto), y)) if p[0] < p[1]]
            cut.setdefault(node, []).extend(pieces)
    periods = {WEB: bad_periods(web, t_end), JOBS: bad_periods(running_steps(cut), t_end)}
    client = client_gaps(data["answers"])
    for e, until in windows:
        entry = out.setdefault(e["kind"], new_failover())
        entry["applied"] += 1
        t0 = e["t0_ns"]
        for app in APPS:
            mine = [(a, b) for a, b in periods[app] if t0 <= a < until]
            if mine:
                # An admin command counts from the app's first unsettled moment: the CLI's
                # own start-up (seconds on a busy machine) is not the cluster's.
                since = min(a for a, _ in mine) if e["kind"] in ("move", "standby") else t0
                entry[app].append(s(max(b for _, b in mine) - since))
        gaps = [b - a for a, b in client if t0 <= a < until]
        if gaps:
            entry["client"].append(s(max(gaps)))
    return out


def new_failover():
    return {"applied": 0, "skipped": 0, "web": [], "jobs": [], "client": []}


def bad_periods(series, t_end):
    """[(from, to)] while not exactly one node (a change of holder between two samples
    counts as a period from the one to the other)."""
    periods, bad_since, last = [], None, None
    for t, holders in series:
        good = len(holders) == 1
        if good and bad_since is not None:
            periods.append((bad_since, t))
            bad_since = None
        elif good and last is not None and holders != last[1]:
            periods.append((last[0], t))
        elif not good and bad_since is None:
            bad_since = t
        if good:
            last = (t, holders)
    if bad_since is not None:
        periods.append((bad_since, t_end))
    return periods


def client_gaps(answers, least=0.1):
    """[(from, to)]: runs of unanswered probes, from the first failed one's send to the
    next answered one's send, at least ``least`` s long."""
    gaps, since = [], None
    for sent, _done, answer in answers:
        if answer is None and since is None:
            since = sent
        elif answer is not None and since is not None:
            if s(sent - since) >= least:
                gaps.append((since, sent))
            since = None
    return gaps


# -- the report folder ------------------------------------------------------------------------

def dump(data, result, workdir, report_dir=None):
    """Write the report folder for the violations; returns its path."""
    folder = Path(report_dir or Path(workdir) / "report")
    folder.mkdir(parents=True, exist_ok=True)
    seed = data["seed"]
    (folder / "schedule.txt").write_text(schedule_text(seed, data["schedule"]) + "\n")
    (folder / "history.txt").write_text("\n".join(history_lines(data)) + "\n")
    (folder / "data.json").write_text(json.dumps(data))
    readme = [f"seed {seed}; nodes {', '.join(data['nodes'])}; witness {data['witness'] or 'none'}",
              f"run it again: python3 bench/campaign.py --seed {seed} --nodes "
              f"{len(data['runners'])}{'+w' if data['witness'] else ''} --minutes "
              f"{s(data['t_end_ns'] - data['t_begin_ns']) / 60:.1f}",
              f"check the saved data again: python3 -c 'import sys; sys.path.insert(0, \"tests\"); "
              f"from lab import campaign; print(campaign.recheck(\"{folder / 'data.json'}\"))'",
              "", result.report(), ""]
    for i, v in enumerate(result.violations, 1):
        name = f"violation-{i:02}"
        readme.append(f"{name}: {v['kind']}: {v['text']}")
        (folder / f"{name}.txt").write_text(around(data, v))
        logs = folder / f"{name}-logs"
        logs.mkdir(exist_ok=True)
        for node in data["nodes"]:
            (logs / f"{node}.log").write_text(log_window(data, Path(workdir) / f"{node}.out",
                                                         v["t_ns"] - 60 * SECOND, v["end_ns"] + 5 * SECOND))
    (folder / "README.txt").write_text("\n".join(readme) + "\n")
    return folder


def recheck(path):
    """Run the checker again on a saved data.json (after a fix of the checker)."""
    with open(path) as f:
        return check(json.load(f)).report()


def history_lines(data):
    out = []
    for e in data["history"]:
        fields = {k: v for k, v in e.items() if k not in ("t0_ns", "t1_ns", "what", "id", "kind")}
        out.append(f"{rel(data, e['t0_ns']):>10} .. {rel(data, e['t1_ns']):>10}  {e['what']:5} {e['id']:7} "
                   f"{e['kind']:13} {json.dumps(fields)}")
    for ep in data["episodes"]:
        out.append(f"episode {ep['index']}: start {rel(data, ep['start_ns'])}, healed {rel(data, ep['heal_end_ns'])}, "
                   f"end {rel(data, ep['end_ns'])}; snapshot {json.dumps(ep['snapshot'])}")
    return out


def around(data, v, before=5 * SECOND, after=5 * SECOND):
    a, b = v["t_ns"] - before, v["end_ns"] + after
    out = [f"{v['kind']}: {v['text']}", "", "nemesis history (60 s before to 5 s after):"]
    out += [line for e, line in zip(data["history"], history_lines(data))
            if v["t_ns"] - 60 * SECOND <= e["t0_ns"] <= v["end_ns"] + 5 * SECOND]
    out += ["", "VIP holders (changes):"]
    last = None
    for t, hs in data["samples"]:
        if a <= t <= b and hs != last:
            out.append(f"  {rel(data, t):>10}  {'+'.join(hs) or '-'}")
            last = hs
    out += ["", "jobs lines (30 s before to 5 s after):"]
    out += [f"  {rel(data, t):>10}  {event} {node}" for t, event, node in data["jobs"]
            if v["t_ns"] - 30 * SECOND <= t <= b]
    out += ["", "client answers (changes of who answers):"]
    last = object()
    for sent, done, answer in data["answers"]:
        if a <= sent <= b and answer != last:
            out.append(f"  {rel(data, sent):>10}  {answer or '-'}")
            last = answer
    out += ["", "state polls (role, active_node, eligible, epoch, decision per app; quorum):"]
    for t, node, st in data["polls"]:
        if a - 5 * SECOND <= t <= b:
            out.append(f"  {rel(data, t):>10}  {node}: " + ("no answer" if not st else
                       f"q={st['q']} standby={st['standby']} " + json.dumps(st["apps"])))
    return "\n".join(out) + "\n"


def log_window(data, path, a_ns, b_ns):
    """The lines of a daemon log between two monotonic times (its stamps are UTC wall times)."""
    if not path.exists():
        return "(no log)\n"
    out, keep = [], False
    for line in path.read_text(errors="replace").splitlines():
        mono = log_time(line, data["wall_minus_mono_ns"])
        if mono is None and line.startswith("---- started at monotonic"):
            mono = int(float(line.split()[-1]) * SECOND)
        if mono is not None:
            keep = a_ns <= mono <= b_ns
            if keep and '"GET /v1/state' not in line:
                out.append(f"[{rel(data, mono):>10}] {line}")
        elif keep:
            out.append(line)
    return "\n".join(out) + "\n"
