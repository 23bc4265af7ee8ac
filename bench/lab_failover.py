"""Failover and hand-over as a client sees them, in the network lab (prints figures, asserts nothing).

    sudo python3 bench/lab_failover.py [--rounds 10] [--timings fast,default] [--faults kill,stop,...]
                                       [--other on|off] [--loss [--loss-seconds 60 --loss-trials 3]]
                                       [--cost] [--keep DIR] [--quiet]

Three real hado daemons in network namespaces (tests/lab/netlab.py, the LabCluster of
tests/test_lab_cluster.py), the app ``web`` one ``ipaddr`` VIP. Timing sets:

- ``fast``: heartbeat 0.05 s, dead_after 0.3 s, VIP ``"lease": 0.2`` (the nftables gate
  of plugins/ipaddr.py enforces sub-second leases): takeover_after 0.3 s;
- ``default``: heartbeat 0.5 s, dead_after 2.0 s, lease 1 s: takeover_after 2.0 s.

If this ipaddr refuses a lease below 1 s, the fast set runs with lease 1 and says so.
For the whole of each timing set three recorders run: a client asking http://VIP:8080/
every 10 ms (``VipProbe``), the netlink sampler recording every 20 ms which nodes hold
the VIP (``HolderSampler``), and an ARP prober asking who-has VIP every 20 ms from the
client and recording every MAC that answers (``ArpProbe``). ``--rounds`` rounds; each
round runs every fault of ``--faults`` once on the active node:

- ``kill``: kill -9 of its hado (restarted after the failover);
- ``stop``: SIGSTOP of its hado (SIGCONT after the failover);
- ``linkdown``: its bridge port down (NO-CARRIER; restored after);
- ``cut``: a silent cut (its port leaves the bridge, its link stays up; restored after);
- ``term``: SIGTERM, the graceful hand-over (hado stops its apps, says goodbye, exits;
  started again after);
- ``move``: ``POST /v1/apps/web/move`` to the next node, sent on the active node with
  the admin token;
- ``standby``: ``POST /v1/node/standby`` on the active node (``/v1/node/online`` after).

After each round the bench waits for calm (one active node holding the VIP, all
agreeing), and then until the new holder's announcements are over (2.5 s after it
served) and at least dead_after more. Figures per fault and timing set:

- *fault -> served*: from the fault to the first client answer from another node
  (request send times): median, p95, max;
- *client outage*: from the old node's last answer to the new node's first
  (``netlab.client_outage``);
- *dual holding*, over the whole timing set, every fault, restart and loss trial
  included, in BOTH recorders: samples with two nodes holding the VIP (netlink; with
  the gate, a node holds it while its address is there and its gate open), and probe
  windows in which two MACs answered for it (ARP). Both must be 0 ms;
- *other() before start*: what ipaddr's other() adds to each start, from the
  daemons' ``checked: web/vip: ... (0.071 s)`` lines; ``--other off`` runs without it.

``--loss``: after the rounds, 20 % and 30 % random loss both ways on the active node
(``lab.loss``) for ``--loss-seconds`` (60), ``--loss-trials`` (3) trials each, and 20 %
on a standby node: role changes (role lines in the daemons' logs, and every 0.25 s the
daemons' states: any node whose role for web is not what it was), samples with the VIP
on another node than the active one (must be 0), samples without it, the lossy node's
quorum, what the client got.

``--cost``: one idle cluster at the fast profile: CPU of each daemon over 20 s (utime +
stime of the daemon and of its waited-for children, /proc/PID/stat), and the heartbeat
datagrams for 1, 10 and 50 apps on 3 nodes (bench/scale.py's steady-state report and
the real ``hado.peers.pack``): answer and request sizes against ``wire.MTU_PAYLOAD``.

The table comes first (fault x timing set, median fault -> served), then the details.
Needs root, iproute2 and nftables; everything stays inside the lab's namespaces, and
the lab is torn down at the end, also on failure or Ctrl-C.
"""

import argparse
import collections
import contextlib
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH.parent))
from helpers import wait_for  # noqa: E402
from lab import netlab  # noqa: E402
from lab.netlab import Lab  # noqa: E402
import test_lab_cluster as labtests  # noqa: E402  (LabCluster and friends)

Timing = collections.namedtuple("Timing", "heartbeat dead_after lease")
TIMINGS = {"fast": Timing(0.05, 0.3, 0.2), "default": Timing(0.5, 2.0, 1)}
FAULTS = {"kill": "kill -9", "stop": "SIGSTOP", "linkdown": "link down", "cut": "silent cut",
          "term": "SIGTERM", "move": "hado move", "standby": "standby"}
APP, WEB_PORT, API_PORT = labtests.APP, labtests.WEB_PORT, labtests.API_PORT
PROBE_EVERY, SAMPLE_EVERY, ARP_EVERY = 0.01, 0.02, 0.02
GARP_SPAN = 2.5          # ipaddr's announcements after a start: 5, 0.5 s apart
POLL = 0.25              # loss trials: the daemons' states every POLL s
CHECKED = re.compile(r"checked: \S+: other\(\) of \S+ finds no other holder before the \w+ \((\d+\.\d+) s\)")
# A role change in a daemon's log ("INFO [MainThread] elected: web: ...", "changed: web:
# role active -> stopping"); not a "decided: ... (elected: node-b ...) because ..." line,
# which is a node that elected itself and waits (its claim unconfirmed: nothing changed).
ROLE_LINE = re.compile(r"\] (elected|stepping down): |: role \w+ -> \w+")
ATTEMPT_LINE = re.compile(r"\] decided: \S+ waiting on \S+ \(elected: ")


# -- small helpers ----------------------------------------------------------------------------

def quantiles(values, unit="s", digits=3):
    values = sorted(values)
    if not values:
        return "no rounds"
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return (f"n={len(values):2}  median {statistics.median(values):.{digits}f} {unit}  "
            f"p95 {p95:.{digits}f} {unit}  max {values[-1]:.{digits}f} {unit}")


def median_cell(values):
    return f"{statistics.median(values):.3f} s" if values else "-"


def workdir(args):
    """A temporary directory, or a fresh one under --keep (the daemons' logs stay there)."""
    if not args.keep:
        return tempfile.TemporaryDirectory(prefix="hado-lab-bench-")
    Path(args.keep).mkdir(parents=True, exist_ok=True)
    kept = tempfile.mkdtemp(prefix="hado-lab-bench-", dir=args.keep)
    print(f"  logs in {kept}", flush=True)
    return contextlib.nullcontext(kept)


def check_config(c):
    """(exit code, check-config's output) for node-a of the cluster's config."""
    proc = subprocess.run([sys.executable, "-m", "hado", "check-config", str(c.config_path), "--node", c.names[0]],
                          cwd=labtests.REPO, env=c.env, capture_output=True, text=True, timeout=60)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def set_lease(c, lease):
    for resource in c.config["apps"][APP]["resources"]:
        resource["args"]["lease"] = lease
    c.config_path.write_text(json.dumps(c.config, indent=2))


def other_times(c):
    """Seconds each other() took right before a start, from every daemon's log."""
    found = []
    for node in c.names:
        path = c.dir / f"{node}.out"
        if path.exists():
            found += [float(m.group(1)) for m in CHECKED.finditer(path.read_text(errors="replace"))]
    return found


def log_offsets(c):
    return {n: (c.dir / f"{n}.out").stat().st_size for n in c.names if (c.dir / f"{n}.out").exists()}


def log_lines_since(c, offsets, pattern):
    """[(node, line)] of the daemons' log lines matching pattern, written after offsets."""
    found = []
    for node in c.names:
        path = c.dir / f"{node}.out"
        if path.exists():
            with open(path, "rb") as log:
                log.seek(offsets.get(node, 0))
                text = log.read().decode(errors="replace")
            found += [(node, line) for line in text.splitlines() if pattern.search(line)]
    return found


class Recordings:
    """The three recorders of a timing set, read incrementally (netlab.Follow)."""

    def __init__(self, probe, sampler, arp):
        self.recorders = (probe, sampler, arp)
        self.answers, self.samples, self.arp = (r.follow() for r in self.recorders)
        self.addresses = []   # the sampler's address column, read at the end (addresses())

    def poll(self):
        for follow in (self.answers, self.samples, self.arp):
            follow.new()
        return self

    def mark(self):
        """Where the client's answers read so far end: answers sent after now come later."""
        return len(self.poll().answers.all)

    def first_answer(self, mark, after_ns, predicate):
        """The earliest sent answer after ``mark`` (and after_ns) whose answerer passes predicate."""
        self.poll()
        return min((a for a in self.answers.all[mark:] if a.sent_ns >= after_ns and a.answer and predicate(a.answer)),
                   default=None)

    def answers_since(self, t0_ns, t1_ns=None):
        return sorted(a for a in self.answers.all if a.sent_ns >= t0_ns and (t1_ns is None or a.sent_ns < t1_ns))

    def samples_between(self, t0_ns, t1_ns):
        return [s for s in self.samples.all if t0_ns <= s.t_ns < t1_ns]

    def arp_between(self, t0_ns, t1_ns):
        return [r for r in self.arp.all if t0_ns <= r.t_ns < t1_ns]


# -- one fault ----------------------------------------------------------------------------------

class Faults:
    """Applies and undoes the faults on one LabCluster; admin requests from each node's namespace."""

    def __init__(self, c):
        self.c = c
        self.http = {n: netlab.HttpClient(c.lab, n) for n in c.names}

    def admin(self, node, path, body=None):
        token = (self.c.dir / "admin.token").read_text().strip()
        answer = self.http[node].request(f"http://{self.c.lab.addr(node)}:{API_PORT}{path}",
                                         {} if body is None else body, token=token)
        if not answer or answer[0] != 200:
            raise RuntimeError(f"POST {path} on {node}: {answer}")
        return answer

    def next_node(self, node):
        runners = self.c.runners
        return runners[(runners.index(node) + 1) % len(runners)]

    def apply(self, fault, old):
        c = self.c
        if fault == "kill":
            c.kill(old)
        elif fault == "stop":
            c.signal(old, signal.SIGSTOP)
        elif fault == "linkdown":
            c.lab.cut(old, "down")
        elif fault == "cut":
            c.lab.cut(old, "silent")
        elif fault == "term":
            c.signal(old, signal.SIGTERM)
        elif fault == "move":
            self.admin(old, f"/v1/apps/{APP}/move", {"node": self.next_node(old)})
        elif fault == "standby":
            self.admin(old, "/v1/node/standby")

    def undo(self, fault, old):
        """Bring the old node back; returns a note (the SIGTERM exit) or None."""
        c = self.c
        if fault in ("kill", "term"):
            note = None
            if fault == "term":
                proc = c.procs[old]
                try:
                    proc.wait(20)
                    note = f"exit {proc.returncode}"
                except subprocess.TimeoutExpired:
                    note = "still running 20 s after SIGTERM: killed"
                    c.kill(old)
            c.start(old)
            return note
        if fault == "stop":
            c.signal(old, signal.SIGCONT)
        elif fault in ("linkdown", "cut"):
            c.lab.restore(old)
        elif fault == "standby":
            self.admin(old, "/v1/node/online")
        return None


Round = collections.namedtuple("Round", "fault old new t0_ns served_ns outage note")


def one_round(c, faults, rec, fault, verbose):
    old = c.wait_calm(timeout=30)
    mark, since = rec.mark(), time.monotonic_ns()
    wait_for(lambda: rec.first_answer(mark, since, lambda who: who == old), 10, 0.02,
             what=f"an answer from {old}\n{c.tails()}")
    time.sleep(0.1)
    t0 = time.monotonic_ns()
    faults.apply(fault, old)
    served = wait_for(lambda: rec.first_answer(mark, t0, lambda who: who != old), 30, 0.01,
                      what=f"an answer from another node than {old} after {FAULTS[fault]}\n{c.tails()}")
    c.wait_calm(names=[n for n in c.runners if n != old], timeout=30)
    note = faults.undo(fault, old)
    c.wait_calm(timeout=30)
    outage = netlab.client_outage(sorted(a for a in rec.poll().answers.all[mark:] if a.sent_ns >= since),
                                  old, served.answer)
    result = Round(fault, old, served.answer, t0, served.sent_ns, outage, note)
    if verbose:
        print(f"    {FAULTS[fault]:10} {old} -> {served.answer}: served {(served.sent_ns - t0) / 1e9:.3f} s "
              f"after the fault, outage {outage if outage is None else round(outage, 3)} s"
              + (f" ({note})" if note else ""), flush=True)
    # Calm, then the new holder's announcements end, and dead_after more.
    left = GARP_SPAN - (time.monotonic_ns() - served.sent_ns) / 1e9
    time.sleep(max(c.dead_after, left))
    return result


# -- loss -----------------------------------------------------------------------------------------

def loss_trial(c, rec, where, percent, seconds):
    """``percent`` % loss both ways on the active node (where="active") or a standby one."""
    active = c.wait_calm(timeout=30)
    target = active if where == "active" else next(n for n in c.runners if n != active)
    expected = {n: "active" if n == active else "standby" for n in c.runners}
    offsets = log_offsets(c)
    polls, off_roles, no_quorum, votes = 0, [], 0, []
    t0 = time.monotonic_ns()
    c.lab.loss(target, percent)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            states = c.states()
            polls += 1
            roles = {n: s["apps"][APP]["role"] for n, s in states.items() if s}
            wrong = {n: r for n, r in roles.items() if r != expected.get(n)}
            if wrong:
                off_roles.append(((time.monotonic_ns() - t0) / 1e9, wrong))
            lossy = states.get(target)
            if lossy:
                votes.append(lossy["quorum"]["votes"])
                no_quorum += not lossy["quorum"]["ok"]
            rec.poll()
            time.sleep(POLL)
    finally:
        c.lab.clear_loss(target)
    t1 = time.monotonic_ns()
    rec.poll()
    lines = log_lines_since(c, offsets, ROLE_LINE)
    attempts = log_lines_since(c, offsets, ATTEMPT_LINE)
    samples = rec.samples_between(t0, t1)
    elsewhere = [s for s in samples if s.holders - {active}]
    without = [s for s in samples if not s.holders]
    active_mac = c.lab.mac(active)
    foreign_arp = [r for r in rec.arp_between(t0, t1) if r.mac != active_mac]
    answers = rec.answers_since(t0, t1)
    c.wait_calm(timeout=30)
    time.sleep(c.dead_after)
    return {"where": where, "target": target, "active": active, "percent": percent, "seconds": (t1 - t0) / 1e9,
            "role_lines": lines, "attempts": attempts, "polls": polls, "off_roles": off_roles, "samples": len(samples),
            "elsewhere": len(elsewhere), "without": len(without), "foreign_arp": len(foreign_arp),
            "no_quorum": no_quorum, "votes": votes, "answers": netlab.answers_by_node(answers)}


def print_loss(trial):
    by = trial["answers"]
    total = sum(by.values()) or 1
    votes = trial["votes"]
    changes = len(trial["role_lines"]) + len(trial["off_roles"])
    print(f"    {trial['percent']:2} % on the {trial['where']} node {trial['target']}, {trial['seconds']:.0f} s: "
          f"role changes {changes}, VIP elsewhere {trial['elsewhere']} of {trial['samples']} samples", flush=True)
    print(f"      role lines in the logs {len(trial['role_lines'])}, state polls off {len(trial['off_roles'])} of "
          f"{trial['polls']}; takeovers begun and held back {len(trial['attempts'])}; samples without holder "
          f"{trial['without']}; ARP frames from other MACs {trial['foreign_arp']}")
    print(f"      lossy node's votes {min(votes, default=0)}-{max(votes, default=0)} ({trial['needed']} needed), "
          f"without quorum in {trial['no_quorum']} polls; client answered "
          f"{100 * (total - by.get(None, 0)) / total:.0f} % "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(by.items(), key=str))})", flush=True)
    for node, line in trial["role_lines"][:6]:
        print(f"      {node}: {line.strip()[:200]}")
    for at, wrong in trial["off_roles"][:6]:
        print(f"      +{at:.2f} s: {wrong}")


# -- a timing set ------------------------------------------------------------------------------------

def make_cluster(lab, tmp, timing, other, log_level="info"):
    """A LabCluster with the timing's lease (lease 1 if this ipaddr refuses it); (cluster, note)."""
    c = labtests.LabCluster(lab, tmp, heartbeat=timing.heartbeat, dead_after=timing.dead_after, log_level=log_level,
                            resource=lambda vip: dict(labtests.ipaddr_vip(vip, lease=timing.lease), other=other))
    rc, out = check_config(c)
    note = None
    if rc != 0 and timing.lease < 1:
        set_lease(c, 1)
        refused = next((line.strip() for line in out.splitlines() if "lease" in line), out[-200:])
        note = f"lease {timing.lease} refused ({refused}): ran with lease 1"
        rc, out = check_config(c)
    if rc != 0:
        raise RuntimeError(f"check-config refuses the lab config:\n{out}")
    summary = next((line for line in out.splitlines() if line.startswith(f"{APP}:")), "")
    return c, note, summary


def run_timing(name, timing, args, faults):
    print(f"{name}: heartbeat {timing.heartbeat} s, dead_after {timing.dead_after} s, lease {timing.lease} s, "
          f"other {args.other}", flush=True)
    out = {"name": name, "timing": timing, "rounds": collections.defaultdict(list), "loss": []}
    with workdir(args) as tmp, Lab(3) as lab:
        c, note, summary = make_cluster(lab, tmp, timing, args.other == "on")
        out["note"] = note
        if note:
            print(f"  NOTE: {note}", flush=True)
        print(f"  check-config: {summary}", flush=True)
        try:
            c.start()
            c.wait_calm(timeout=30)
            out["takeover"] = c.takeover_after()
            print(f"  takeover_after {out['takeover']:.2f} s", flush=True)
            tool = Faults(c)
            with netlab.HolderSampler(lab, c.vip, interval=SAMPLE_EVERY, gate=True) as sampler, \
                    netlab.VipProbe(lab, c.vip, WEB_PORT, interval=PROBE_EVERY) as probe, \
                    netlab.ArpProbe(lab, c.vip, interval=ARP_EVERY) as arp:
                rec = Recordings(probe, sampler, arp)
                for number in range(args.rounds):
                    if not args.quiet:
                        print(f"  round {number + 1}", flush=True)
                    for fault in faults:
                        out["rounds"][fault].append(one_round(c, tool, rec, fault, not args.quiet))
                if args.loss:
                    needed = c.state(c.names[0])["quorum"]["needed"]
                    print(f"  loss, {args.loss_seconds:.0f} s a trial:", flush=True)
                    plan = [("active", p) for p in (20, 30) for _ in range(args.loss_trials)]
                    plan += [("standby", 20)] * args.loss_trials
                    for where, percent in plan:
                        trial = loss_trial(c, rec, where, percent, args.loss_seconds)
                        trial["needed"] = needed
                        out["loss"].append(trial)
                        if not args.quiet:
                            print_loss(trial)
                for recorder in (sampler, probe, arp):
                    recorder.proc.terminate()
                    recorder.proc.wait(10)
                rec.poll()
                out["arp_probes"] = len(arp.probes())
                rec.addresses = sampler.addresses()
            out["other"] = other_times(c)
        except BaseException:
            print(c.tails(), file=sys.stderr)
            raise
        finally:
            c.stop_all()
        out["macs"] = {lab.mac(n): n for n in c.names}
    samples, arps = rec.samples.all, rec.arp.all
    out["span"] = (samples[-1].t_ns - samples[0].t_ns) / 1e9 if len(samples) > 1 else 0.0
    out["rate"] = netlab.sample_rate(samples)
    out["dual"] = netlab.dual_holding(samples)
    out["dual_samples"] = [s for s in samples if len(s.holders) > 1]
    out["address_dual"] = netlab.dual_holding(rec.addresses)
    out["arp_dual"] = netlab.arp_dual_holding(arps, int(ARP_EVERY * 1e9))
    out["arp_replies"] = len(arps)
    out["answers"] = len(rec.answers.all)
    out["when"] = where_in_rounds(out["rounds"])
    return out


def where_in_rounds(rounds):
    """t_ns -> 'SIGSTOP of node-a, +0.31 s' (the last fault before it), for dual-holding reports."""
    starts = sorted((r.t0_ns, r) for runs in rounds.values() for r in runs)

    def describe(t_ns):
        before = [r for t, r in starts if t <= t_ns]
        if not before:
            return "before the first fault"
        r = before[-1]
        return f"{FAULTS[r.fault]} of {r.old}, +{(t_ns - r.t0_ns) / 1e9:.2f} s"
    return describe


def print_details(out, args):
    timing = out["timing"]
    print(f"{out['name']}: heartbeat {timing.heartbeat} s, dead_after {timing.dead_after} s, lease {timing.lease} s"
          + (f" (NOTE: {out['note']})" if out["note"] else "") + f"; takeover_after {out['takeover']:.2f} s")
    print(f"  recorders over {out['span']:.0f} s: sampler {out['rate']:.0f} samples/s, "
          f"{out['arp_probes']} ARP who-has, {out['arp_replies']} ARP frames for the VIP, {out['answers']} client requests")
    for fault, runs in out["rounds"].items():
        served = [(r.served_ns - r.t0_ns) / 1e9 for r in runs]
        outages = [r.outage for r in runs if r.outage is not None]
        print(f"  {FAULTS[fault]:10} fault -> served {quantiles(served)}")
        print(f"  {'':10} client outage   {quantiles(outages)}")
        notes = collections.Counter(r.note for r in runs if r.note)
        moves = collections.Counter(f"{r.old} -> {r.new}" for r in runs)
        print(f"  {'':10} {', '.join(f'{k} x{v}' for k, v in sorted(moves.items()))}"
              + (f"; {', '.join(f'{k} x{v}' for k, v in notes.items())}" if notes else ""))
    count, seconds = out["dual"]
    arp_seconds, windows = out["arp_dual"]
    print(f"  dual holding, netlink sampler: {seconds * 1000:.0f} ms ({count} samples with two holders; a node "
          f"holds the VIP while its address is there and its gate open)")
    for sample in out["dual_samples"][:10]:
        print(f"      {', '.join(sorted(sample.holders))}: {out['when'](sample.t_ns)}")
    print(f"  dual holding, ARP prober:      {arp_seconds * 1000:.0f} ms ({len(windows)} windows with two MACs)")
    for start, _, macs in windows[:10]:
        print(f"      {', '.join(sorted(out['macs'].get(m, m) for m in macs))} in one window: {out['when'](start)}")
    count, seconds = out["address_dual"]
    print(f"  address configured on two nodes: {seconds * 1000:.0f} ms ({count} samples; with the gate a dead or "
          f"frozen holder's address outlives its lease by up to 1.3 s, its gate shut)")
    if args.other == "on":
        print(f"  other() before start   {quantiles(out['other'])}  (each start, failovers included)")
    else:
        print("  other() before start   off (\"other\": false): compare fault -> served with --other on")
    if out["loss"]:
        print(f"  loss trials ({out['loss'][0]['seconds']:.0f} s each):")
        for trial in out["loss"]:
            print_loss(trial)
    sys.stdout.flush()


def print_table(results, faults):
    heads = [f"{r['name']} {r['timing'].heartbeat:g}/{r['timing'].dead_after:g} lease {r['timing'].lease:g}"
             + (" (ran lease 1)" if r.get("note") else "") for r in results]
    width = max([24] + [len(h) + 2 for h in heads])
    label = 30
    print()
    print("fault -> served, median".ljust(label) + "".join(h.ljust(width) for h in heads))
    for fault in faults:
        cells = [median_cell([(x.served_ns - x.t0_ns) / 1e9 for x in r["rounds"][fault]]) for r in results]
        print(f"  {FAULTS[fault]}".ljust(label) + "".join(cell.ljust(width) for cell in cells).rstrip())
    cells = [f"{r['dual'][1] * 1000:.0f} ms / {r['arp_dual'][0] * 1000:.0f} ms" for r in results]
    print("  dual holding (netlink/ARP)".ljust(label) + "".join(cell.ljust(width) for cell in cells).rstrip())
    if any(r["loss"] for r in results):
        cells = []
        for r in results:
            changes = sum(len(t["role_lines"]) + len(t["off_roles"]) for t in r["loss"])
            elsewhere = sum(t["elsewhere"] for t in r["loss"])
            cells.append(f"{changes} changes, {elsewhere} elsewhere")
        print("  loss trials".ljust(label) + "".join(cell.ljust(width) for cell in cells).rstrip())
    cells = [f"{r['takeover']:.2f} s" for r in results]
    print("  takeover_after".ljust(label) + "".join(cell.ljust(width) for cell in cells).rstrip())
    print(flush=True)


# -- cost -----------------------------------------------------------------------------------------------

def phase_cost(args):
    import scale   # bench/scale.py: the steady-state report and the real packing function
    import test_scale as ts
    from hado import wire

    timing = TIMINGS["fast"]
    idle = args.cost_seconds
    print(f"cost at the fast profile (heartbeat {timing.heartbeat} s, dead_after {timing.dead_after} s, "
          f"lease {timing.lease} s), 3 nodes, one VIP:", flush=True)
    with workdir(args) as tmp, Lab(3) as lab:
        c, note, _ = make_cluster(lab, tmp, timing, args.other == "on")
        if note:
            print(f"  NOTE: {note}")
        try:
            c.start()
            active = c.wait_calm(timeout=30)
            time.sleep(3)
            pids = {n: c.procs[n].pid for n in c.names}
            before = {n: ts.cpu_seconds(p) for n, p in pids.items()}
            w0 = time.monotonic()
            time.sleep(idle)
            after = {n: ts.cpu_seconds(p) for n, p in pids.items()}
            wall = time.monotonic() - w0
        finally:
            c.stop_all()
    print(f"  idle {wall:.0f} s, no API requests (CPU in % of one core, /proc/PID/stat):")
    for node in c.names:
        own = (after[node][0] - before[node][0]) / wall * 100
        kids = (after[node][1] - before[node][1]) / wall * 100
        print(f"    {node} ({'active' if node == active else 'standby'}): hado {own:5.1f} % + children "
              f"{kids:4.1f} % = {own + kids:5.1f} %")
    print(f"  heartbeat datagrams, 3 nodes (UDP payload; budget wire.MTU_PAYLOAD = {wire.MTU_PAYLOAD} B, a "
          f"{wire.MTU} B MTU over IPv6), steady state as bench/scale.py builds it:")
    for apps in (1, 10, 50):
        report, names = scale.synthetic_report(3, apps)
        answer = scale.answer_size(report, "lab", names[0], names[1])
        request = scale.request_size("lab", names[0], names[1], [])
        claim = scale.request_size("lab", names[0], names[1], [f"app-{i:02}" for i in range(apps)])
        rate = 2 * (answer + request) / timing.heartbeat   # per node: a request to and an answer from 2 peers
        print(f"    {apps:2} app(s): answer {answer} B ({'fits' if answer <= wire.MTU_PAYLOAD else 'EXCEEDS'}), "
              f"request {request} B ({'fits' if request <= wire.MTU_PAYLOAD else 'EXCEEDS'}), claiming every "
              f"app {claim} B ({'fits' if claim <= wire.MTU_PAYLOAD else 'EXCEEDS'}); each node sends about "
              f"{rate / 1000:.1f} kB/s at heartbeat {timing.heartbeat} s")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds per timing set (each runs every fault once)")
    parser.add_argument("--timings", default="fast,default", help="comma-separated: " + ", ".join(TIMINGS))
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated: " + ", ".join(FAULTS))
    parser.add_argument("--quiet", action="store_true", help="no line per round")
    parser.add_argument("--other", choices=("on", "off"), default="on",
                        help="ask ipaddr's other() before each start (the default) or not")
    parser.add_argument("--loss", action="store_true", help="the loss trials after the rounds")
    parser.add_argument("--loss-seconds", type=float, default=60)
    parser.add_argument("--loss-trials", type=int, default=3)
    parser.add_argument("--cost", action="store_true", help="CPU of idle nodes and heartbeat sizes (fast profile)")
    parser.add_argument("--cost-seconds", type=float, default=20)
    parser.add_argument("--keep", metavar="DIR", help="keep the daemons' logs in a new directory under DIR")
    args = parser.parse_args()
    if not 0 <= args.rounds <= 200:
        parser.error("--rounds must be 0..200")
    if not 1 <= args.loss_seconds <= 3600 or not 1 <= args.loss_trials <= 20 or not 1 <= args.cost_seconds <= 600:
        parser.error("--loss-seconds 1..3600, --loss-trials 1..20, --cost-seconds 1..600")
    names = [t.strip() for t in args.timings.split(",") if t.strip()]
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [t for t in names if t not in TIMINGS] + [f for f in faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown timing set(s) or fault(s) {', '.join(unknown)}; timings: {', '.join(TIMINGS)}; "
                     f"faults: {', '.join(FAULTS)}")
    reason = netlab.skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    results = [run_timing(name, TIMINGS[name], args, faults) for name in names]
    if results and (args.rounds or args.loss):
        print_table(results, faults if args.rounds else [])
        for out in results:
            print_details(out, args)
    if args.cost:
        phase_cost(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
