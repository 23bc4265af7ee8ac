"""The middle layer in-process, on a fake clock: Node turns, real AppSupervisors, State.

No subprocess, no socket, no wall-clock bound. A Node is built from a validated config
with ``dummy`` resources and never started: its supervisors are the real AppSupervisor
with its thread left unstarted, and the test calls ``turn()`` itself; peers are made up
by feeding ``State.peer_answer`` the reports their hado would send. Time is a
:class:`fakeclock.FakeClock` that moves only when a test moves it, so every "exactly
when" below is exact. Plugin calls still run through hado.plugin.Caller (threads with
real timeouts): the dummy plugin answers in microseconds.

Each test asserts what an admin relies on; several are the in-process equivalent of a
wall-clock bound of tests/test_cluster.py or tests/test_node.py (named in the test).
"""

import math
import os

import pytest

from hado import config as config_mod
from hado import election
from hado import node as node_mod
from hado.monitor import Monitor
from hado.plugin import Registry
from hado.resource import AppSupervisor
from hado.state import State

HB, DEAD = 0.2, 1.0            # the cluster tests' timings (tests/test_cluster.py)
NAMES = ("node-a", "node-b", "node-c")
PRIORITY = {"node-a": 100, "node-b": 90, "node-c": 80, "node-d": 70, "node-e": 60}
INTERVAL = 1.0                 # alive() interval of the dummy resources


class Driven(AppSupervisor):
    """The real AppSupervisor whose thread is never started: the test calls turn()."""

    def start(self):
        pass


# ----- building a node ---------------------------------------------------------------

def dummy(tmp_path, name, me, **extra):
    return {"name": name, "plugin": "dummy", "args": {"path": str(tmp_path / f"{name}-{me}"), "node": me},
            "interval": INTERVAL, "timeout": 0.5, "start_timeout": 0.5, "stop_timeout": 0.5, **extra}


def make_config(tmp_path, me, names, apps, monitors=None, witness=(), **cluster):
    raw = {"cluster": {"heartbeat": HB, "dead_after": DEAD, **cluster}, "apps": apps, "monitors": monitors or {}}
    if len(names) > 1:
        raw["cluster"]["secret_file"] = str(tmp_path / "secret")   # not read: the node is not started
        raw["cluster"]["nodes"] = {n: {"url": f"http://127.0.0.1:{7001 + i}", "priority": PRIORITY.get(n, 0),
                                       "witness": n in witness} for i, n in enumerate(names)}
    cfg, errors, _ = config_mod.validate(raw, me)
    assert errors == [], errors
    return cfg


@pytest.fixture
def build(tmp_path, clock, monkeypatch):
    """build(apps=..., me=..., names=...) -> a Node on the fake clock, set up as Node.start()
    would before any I/O: quorum configured, apps registered, resources probed, supervisors
    made (Driven: the real AppSupervisor, its thread not started)."""
    monkeypatch.setattr(node_mod, "AppSupervisor", Driven)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)

    def make(apps=None, me="solo", names=("solo",), monitors=None, witness=(), **cluster):
        apps = apps if apps is not None else {"web": {"resources": [dummy(tmp_path, "r", me)]}}
        cfg = make_config(tmp_path, me, names, apps, monitors, witness, **cluster)
        node = node_mod.Node(cfg, clock=clock)
        peers = [n for n in cfg["cluster"]["nodes"] if n != me]
        needed = election.quorum(0, len(cfg["cluster"]["nodes"]), cfg["cluster"]["quorum"])["needed"]
        node.state.configure_quorum(peers, needed, node.dead_after / 2)   # as Node.start() does
        node.register_apps()
        node.start_apps(probe=True)
        return node

    return make


def path_of(tmp_path, name, me):
    return tmp_path / f"{name}-{me}"


def events_of(tmp_path, name, me):
    """start/stop lines the dummy resource logged: ['start', 'stop', ...]."""
    log = tmp_path / f"{name}-{me}.log"
    return [line.split()[1] for line in log.read_text().splitlines()] if log.exists() else []


def kind(decisions, app="web"):
    assert decisions, "node.turn() did not call election.decide()"
    return decisions[-1][app]["kind"]


def reason(decisions, app="web"):
    return decisions[-1][app]["reason"]


def entry(node, app="web"):
    return node.state.app_entry(app)


def shown(node, app="web"):
    """The app as the state document (/v1/state, hado status) shows it."""
    return node.state.snapshot(node.dead_after)["apps"][app]


def reported(node, app="web"):
    """The role our heartbeat answers tell the peers."""
    return node.my_report()["apps"][app]["role"]


def settle(node, rounds=5):
    """Every supervisor turns until it is not woken again (a restart wakes it once more)."""
    for _ in range(rounds):
        woken = [sup for sup in node.supervisors.values() if sup.wake.is_set()]
        if not woken:
            return
        for sup in woken:
            sup.wake.clear()
            sup.turn()
    raise AssertionError("a supervisor keeps waking itself")


def cycle(node):
    """One turn of the election loop, then of every supervisor it woke."""
    node.turn()
    settle(node)


# ----- made-up peers -----------------------------------------------------------------

def peer_report(name, nodes, role="standby", eligible=True, epoch=0, active_node=None, claims=(), claim=False,
                why_not=None, move_to=None, peers=None, silent=None, app="web"):
    """A report as a peer's hado sends it (election.py's REPORT)."""
    return {"node": name, "cluster": "hado", "standby": False, "maintenance": False, "healthy": True,
            "why_unhealthy": None,
            "peers": peers if peers is not None else {n: "up" for n in nodes if n != name},
            "silent": silent if silent is not None else {n: 0.0 for n in nodes if n != name},
            "apps": {app: {"role": role, "eligible": eligible, "why_not": why_not, "epoch": epoch,
                           "active_node": active_node, "claim": claim, "claims": sorted(claims),
                           "move_to": move_to}}}


def our_claim(node, app="web"):
    """The claims a peer sees for ``app`` from our requests: [us] while we claim it."""
    return [node.me] if app in node.state.my_claims() else []


def hear(node, peer, sent_at=None, **report):
    """An answer from ``peer`` to our request sent at ``sent_at`` (default: now). It lists
    our claims as the claims it sees: our request told it."""
    report.setdefault("claims", our_claim(node))
    sent_at = node.clock() if sent_at is None else sent_at
    node.state.peer_answer(peer, sent_at, peer_report(peer, list(node.config["cluster"]["nodes"]), **report))


def heartbeats(node, clock, seconds, peers=("node-b", "node-c")):
    """For ``seconds``: the peers answer every heartbeat, the node and supervisors turn."""
    end = clock() + seconds
    while clock() < end - 1e-9:
        clock.advance(HB)
        for peer in peers:
            hear(node, peer)
        cycle(node)


def become_active(node, clock, peers=("node-b", "node-c"), past_hold=True):
    """Peers answer every heartbeat (standby, eligible) until this node runs the app, and
    (``past_hold``) on until it has run for dead_after, past the start-up hold."""
    for _ in range(6):
        for peer in peers:
            hear(node, peer)
        cycle(node)
        if entry(node)["role"] == "active":
            break
        clock.advance(HB)
    else:
        raise AssertionError(f"never became active: {entry(node)['reason']}")
    if past_hold:
        heartbeats(node, clock, node.state.started + DEAD - clock(), peers)
        assert entry(node)["role"] == "active"
    return clock()


class Peers:
    """Made-up peers that answer every heartbeat the way their hado would.

    Each has a role, eligibility, epoch and move_to for ``web``; ``alive`` False makes it
    silent (killed). What they believe (who is up, who is active, how long each node has
    been silent) comes from what was said at the previous tick, as over a real network.
    """

    def __init__(self, node, **roles):
        self.node, self.clock = node, node.clock
        self.names = list(node.config["cluster"]["nodes"])
        self.info = {p: dict(role="standby", eligible=True, why_not=None, epoch=0, move_to=None, alive=True)
                     for p in self.names if p != node.me}
        for peer, fields in roles.items():
            self.info[peer.replace("_", "-")].update(fields)
        now = self.clock()
        self.heard = {n: now for n in self.names}        # when the peers last heard each node
        self.said = {}                                   # node -> (role, epoch) at the previous tick

    def tick(self):
        now, me = self.clock(), self.node.me
        mine = self.node.my_report()["apps"]["web"]
        for p, info in self.info.items():
            if info["alive"]:
                self.heard[p] = now
        self.heard[me] = now
        said = self.said or {p: (i["role"], i["epoch"]) for p, i in self.info.items()}
        up = {n for n in self.names if now - self.heard[n] < DEAD}
        running = [n for n in up if said.get(n, (None,))[0] in ("active", "starting")]
        believed = max(running, key=lambda n: said[n][1]) if running else None
        claims = our_claim(self.node)
        for p, info in self.info.items():
            if not info["alive"]:
                continue
            others = [n for n in self.names if n != p]
            hear(self.node, p, sent_at=now, role=info["role"], eligible=info["eligible"], why_not=info["why_not"],
                 epoch=info["epoch"], move_to=info["move_to"], active_node=believed, claims=claims,
                 peers={n: "up" if n in up else "down" for n in others},
                 silent={n: round(now - self.heard[n], 2) for n in others})
        # a silent node's last word stands until it is down in their view
        self.said.update({p: (i["role"], i["epoch"]) for p, i in self.info.items() if i["alive"]})
        self.said[me] = (mine["role"], mine["epoch"])


class Halt(Exception):
    """Ends Loop.run (raised by its last scheduled event)."""


class Loop:
    """The node's election loop and its supervisors on the fake clock, scheduled the way
    Node.run and AppSupervisor.run schedule themselves: the node turns when its
    next_wait() is up or the state changed (State.changed is its wakeup), a supervisor
    when woken or when its next_wait() is up; the peers answer every heartbeat. Runs on
    a sched.scheduler whose time is the fake clock."""

    def __init__(self, node, decisions, peers):
        self.node, self.clock, self.decisions, self.peers = node, node.clock, decisions, peers
        self.sched = node.clock.scheduler()
        self.node_wake = None
        self.sup_wake = {}
        self.timeline = []     # (time, decision kind, role in the state) after every node turn
        self.running = False

    def tick(self):
        self.peers.tick()
        self.sched.enter(HB, 0, self.tick)
        self.poll()

    def poll(self, node_due=False, due=()):
        for _ in range(50):
            if node_due or self.node.wakeup.is_set():
                node_due = False
                self.node.wakeup.clear()
                self.node.turn()
                self.timeline.append((self.clock(), kind(self.decisions), entry(self.node)["role"]))
                self.reschedule("node", self.node.next_wait())
            woken = [a for a, s in self.node.supervisors.items() if s.wake.is_set() or a in due]
            due = ()
            for app in woken:
                sup = self.node.supervisors[app]
                sup.wake.clear()
                sup.turn()
                self.reschedule(app, sup.next_wait())
            if not woken and not self.node.wakeup.is_set():
                return
        raise AssertionError(f"the loop never settles at {self.clock()}: a busy loop")

    def reschedule(self, who, wait):
        old = self.node_wake if who == "node" else self.sup_wake.get(who)
        if old is not None:
            try:
                self.sched.cancel(old)
            except ValueError:
                pass   # already ran
        if who == "node":
            self.node_wake = self.sched.enter(wait, 1, self.poll, kwargs={"node_due": True})
        else:
            self.sup_wake[who] = self.sched.enter(wait, 1, self.poll, kwargs={"due": (who,)})

    def run(self, seconds):
        """Run for ``seconds`` of fake time; the next run goes on where this one stopped."""
        if not self.running:
            self.running = True
            self.sched.enter(0, 0, self.tick)
            self.sched.enter(0, 1, self.poll, kwargs={"node_due": True, "due": tuple(self.node.supervisors)})
        self.sched.enter(seconds, -1, self.halt)
        try:
            self.sched.run()
        except Halt:
            pass   # the rest of the queue stays for the next run

    def halt(self):
        raise Halt()

    def first(self, predicate):
        """The first (time, kind, role) of the timeline that matches, else None."""
        return next((t for t in self.timeline if predicate(*t)), None)


# ----- start-up: hold, then no quorum --------------------------------------------------

def test_a_node_that_never_hears_its_peers_holds_for_dead_after_then_stops_without_quorum(
        build, clock, decisions, tmp_path):
    """hado restarted while the app ran: the probe finds it running, and for dead_after the
    node neither starts nor stops anything (its peers may just not have answered yet);
    then, still alone, it has no quorum and stops the app."""
    Registry().get("dummy").module.start(path=str(path_of(tmp_path, "r", "node-a")), node="node-a")
    node = build(me="node-a", names=NAMES)
    started = node.state.started
    assert entry(node)["role"] == "active", "the probe adopts what runs"
    for at in (0.0, DEAD / 2, DEAD - 0.01):
        clock.advance_to(started + at)
        cycle(node)
        assert kind(decisions) == "hold", (at, reason(decisions))
        assert reason(decisions).startswith("web: holding on node-a: started")
        assert entry(node)["desired"] is None
        assert path_of(tmp_path, "r", "node-a").exists() and events_of(tmp_path, "r", "node-a") == ["start"]
        assert reported(node) == "stopping", "without quorum it never tells peers it is active"
    clock.advance_to(started + DEAD)
    cycle(node)
    assert kind(decisions) == "no_quorum"
    assert reason(decisions) == "web: stopped on node-a because it has no quorum (1 vote, 2 needed)"
    assert not path_of(tmp_path, "r", "node-a").exists()
    assert events_of(tmp_path, "r", "node-a") == ["start", "stop"]
    app = shown(node)
    assert app["role"] == "standby" and app["resources"]["r"]["state"] == "stopped"
    assert node.my_report()["peers"] == {"node-b": "down", "node-c": "down"}


def test_a_node_that_has_nothing_running_starts_nothing_while_it_holds(build, clock, decisions, tmp_path):
    node = build(me="node-a", names=NAMES)
    for at in (0.0, DEAD - 0.01, DEAD, 2 * DEAD):
        clock.advance_to(node.state.started + at)
        cycle(node)
        assert kind(decisions) == ("hold" if at < DEAD else "no_quorum")
        assert entry(node)["role"] == "standby" and events_of(tmp_path, "r", "node-a") == []


def test_the_loop_wakes_when_the_start_up_hold_ends(build, clock):
    node = build(me="node-a", names=NAMES)
    clock.advance_to(node.state.started + DEAD - 0.1)
    node.turn()
    assert node.next_wait() <= 0.1 + 0.005



def test_the_start_up_hold_lasts_until_dead_after_to_the_millisecond(build, clock, decisions):
    node = build(me="node-a", names=NAMES)
    clock.advance_to(node.state.started + DEAD - 0.004)
    node.turn()
    assert node.observe()["status"]["node-b"][0] == "unknown", "the peers are not down yet..."
    assert kind(decisions) == "hold", "... so the node still holds"


# ----- one node: restarts, giving up, failure_timeout ------------------------------------

def one_node_web(tmp_path, **res):
    return {"web": {"failure_timeout": 30,
                    "resources": [dummy(tmp_path, "a", "solo", **res), dummy(tmp_path, "b", "solo")]}}


def kill(tmp_path, name, me="solo"):
    os.remove(path_of(tmp_path, name, me))


def test_one_node_restarts_a_dying_resource_max_restarts_times_then_fails_until_failure_timeout(
        build, clock, decisions, tmp_path):
    node = build(apps=one_node_web(tmp_path, max_restarts=2, restart_window=60))
    sup = node.supervisors["web"]
    cycle(node)
    assert kind(decisions) == "active", "a one-node cluster starts the app on its first turn"
    assert reason(decisions).startswith("web: active on solo because")
    assert shown(node)["role"] == "active"
    assert events_of(tmp_path, "a", "solo") == ["start"] and events_of(tmp_path, "b", "solo") == ["start"]
    assert sup.next_wait() == pytest.approx(INTERVAL), "the next alive() check is due after interval"

    for count in (1, 2):
        kill(tmp_path, "a")
        clock.advance(sup.next_wait())
        sup.turn()                      # alive() says no: restart (stop, then start on the next turn)
        res = shown(node)["resources"]["a"]
        assert res["fail_count"] == count
        assert shown(node)["role"] == "starting"
        assert any(e["what"] == "web: restarting a" and f"(restart {count} of 2 within 60 s)" in e["why"]
                   for e in node.state.snapshot()["events"])
        settle(node)
        assert shown(node)["role"] == "active" and path_of(tmp_path, "a", "solo").exists()

    kill(tmp_path, "a")
    clock.advance(sup.next_wait())
    sup.turn()
    failed_at = clock()
    cycle(node)
    app = shown(node)
    assert app["role"] == "failed" and app["eligible"] is False
    assert app["failure"]["reason"] == ("gave up: a died: alive() says it is not running; 3 failures within 60 s "
                                        "(max_restarts 2)")
    assert app["failure"]["expires_in_s"] == 30.0
    assert kind(decisions) == "no_candidate"
    assert "solo has a failure: gave up: a died" in reason(decisions)
    assert not path_of(tmp_path, "b", "solo").exists(), "the rest of a failed app is stopped"
    assert events_of(tmp_path, "b", "solo") == ["start", "stop"]

    clock.advance_to(failed_at + 30 - 0.01)
    cycle(node)
    assert shown(node)["role"] == "failed" and kind(decisions) == "no_candidate"
    clock.advance_to(failed_at + 30)
    cycle(node)
    snap = node.state.snapshot()
    assert any(e["what"] == "web: failure expired" and "gave up" in e["why"] for e in snap["events"])
    assert kind(decisions) == "active"
    app = shown(node)
    assert app["role"] == "active" and app["failure"] is None
    assert path_of(tmp_path, "a", "solo").exists() and path_of(tmp_path, "b", "solo").exists()


def test_after_failure_timeout_the_app_has_its_restarts_again(build, clock, decisions, tmp_path):
    node = build(apps=one_node_web(tmp_path, max_restarts=1, restart_window=60))
    sup = node.supervisors["web"]
    cycle(node)
    for _ in range(2):
        kill(tmp_path, "a")
        clock.advance(sup.next_wait())
        sup.turn()
        settle(node)
    cycle(node)
    assert shown(node)["role"] == "failed"
    clock.advance(30)
    cycle(node)
    assert shown(node)["role"] == "active"
    kill(tmp_path, "a")
    clock.advance(sup.next_wait())
    sup.turn()
    settle(node)
    assert shown(node)["role"] == "active", shown(node)["failure"]


def test_deaths_further_apart_than_restart_window_never_fail_the_app(build, clock, decisions, tmp_path):
    node = build(apps=one_node_web(tmp_path, max_restarts=1, restart_window=5))
    sup = node.supervisors["web"]
    cycle(node)
    for count in range(1, 5):
        clock.advance(5)                 # the previous restart is out of the window
        kill(tmp_path, "a")
        clock.advance(sup.next_wait())
        sup.turn()
        settle(node)
        cycle(node)
        app = shown(node)
        assert app["role"] == "active" and app["failure"] is None
        assert app["resources"]["a"]["fail_count"] == count


def test_on_fail_failover_fails_the_app_at_once(build, clock, decisions, tmp_path):
    node = build(apps=one_node_web(tmp_path, on_fail="failover"))
    sup = node.supervisors["web"]
    cycle(node)
    kill(tmp_path, "a")
    clock.advance(sup.next_wait())
    sup.turn()
    cycle(node)
    app = shown(node)
    assert app["role"] == "failed"
    assert app["failure"]["reason"] == "a died: alive() says it is not running (on_fail failover)"
    assert events_of(tmp_path, "a", "solo") == ["start"], "failover: no restart here"


def test_maintenance_leaves_a_dead_resource_dead_and_resumes_after(build, clock, decisions, tmp_path):
    """In-process form of test_node's maintenance test (no sleep-then-assert-nothing)."""
    node = build(apps={"web": {"resources": [dummy(tmp_path, "a", "solo")]}})
    sup = node.supervisors["web"]
    cycle(node)
    node.set_maintenance(True)
    cycle(node)
    kill(tmp_path, "a")
    for _ in range(5):
        clock.advance(sup.next_wait())
        sup.turn()
        cycle(node)
    app = shown(node)
    assert app["resources"]["a"]["state"] == "unmanaged" and app["resources"]["a"]["alive"] is False
    assert app["reason"].startswith("MAINTENANCE: ")
    assert events_of(tmp_path, "a", "solo") == ["start"], "maintenance starts and stops nothing"
    node.set_maintenance(False)
    cycle(node)
    sup.turn()
    settle(node)
    assert shown(node)["role"] == "active" and events_of(tmp_path, "a", "solo") == ["start", "start"]


# ----- monitors gate eligibility ----------------------------------------------------------

MONITOR = {"plugin": "command", "args": {"check": ["true"]}}   # never run: the test writes results


def test_app_monitors_gate_the_app_with_the_sentence_an_admin_reads(build, clock, decisions, tmp_path):
    apps = {"web": {"resources": [dummy(tmp_path, "a", "solo")],
                    "monitors": {"db": MONITOR, "extra": dict(MONITOR, vital=False)}}}
    node = build(apps=apps)
    cycle(node)
    app = entry(node)
    assert app["eligible"] is False and app["why_not"] == "waits for the first result of app monitor db"
    assert kind(decisions) == "no_candidate" and "solo waits for the first result of app monitor db" in \
        reason(decisions)
    assert events_of(tmp_path, "a", "solo") == [], "nothing starts before its vital monitors passed once"

    node.state.update_monitor("web", "db", ok=True, message="ok")
    node.state.update_monitor("web", "extra", ok=False, message="slow disk")
    cycle(node)
    assert kind(decisions) == "active", "a failing non-vital monitor decides nothing"
    assert shown(node)["role"] == "active"

    node.state.update_monitor("web", "db", ok=False, message="connection refused")
    cycle(node)
    app = entry(node)
    assert app["eligible"] is False and app["why_not"] == "fails app monitor db: connection refused"
    assert "solo fails app monitor db: connection refused" in reason(decisions)
    assert shown(node)["role"] == "standby" and events_of(tmp_path, "a", "solo") == ["start", "stop"]


def test_a_failed_system_monitor_makes_the_node_unhealthy_for_every_app(build, clock, decisions, tmp_path):
    node = build(apps={"web": {"resources": [dummy(tmp_path, "a", "solo")]}}, monitors={"disk": MONITOR})
    node.state.set_monitors(node.config["monitors"])
    cycle(node)
    assert entry(node)["why_not"] == "is unhealthy (monitor disk has no result yet)"
    node.state.update_monitor(None, "disk", ok=False, message="/var 99% full")
    cycle(node)
    assert entry(node)["why_not"] == "is unhealthy (monitor disk: /var 99% full)"
    assert node.my_report()["healthy"] is False and events_of(tmp_path, "a", "solo") == []


FLAG_PLUGIN = '''"""A monitor that passes while a file exists (for tests)."""
import os


def check(path):
    return (True, "flag present") if os.path.exists(path) else (False, "flag missing")
'''


@pytest.fixture
def flag_monitor(tmp_path, clock):
    """monitor(fall, rise) -> (Monitor on the fake clock, flag path, state)."""
    (tmp_path / "flag.py").write_text(FLAG_PLUGIN)
    plugin = Registry([tmp_path]).get("flag")
    flag = tmp_path / "healthy"

    def make(fall=3, rise=2, interval=2.0):
        state = State("solo", "hado", clock=clock)
        spec = {"plugin": "flag", "args": {"path": str(flag)}, "interval": interval, "timeout": 1.0,
                "fall": fall, "rise": rise, "vital": True}
        state.set_monitors({"flag": spec})
        return Monitor(state, None, "flag", spec, plugin, clock.event(), clock), flag, state

    return make


def test_monitor_run_once_fails_after_fall_failures_and_recovers_after_rise_passes(flag_monitor):
    monitor, flag, _ = flag_monitor(fall=3, rise=2)
    checks = [True, False, False, True, False, False, False, True, True]
    expected = [True, True, True, True, True, True, False, False, True]
    ok, passes, fails, seen = None, 0, 0, []
    for passing in checks:
        flag.touch() if passing else flag.unlink(missing_ok=True)
        ok, passes, fails, message = monitor.run_once(ok, passes, fails)
        assert message == ("flag present" if passing else "flag missing")
        seen.append(ok)
    assert seen == expected


def test_monitor_first_result_counts_at_once(flag_monitor):
    monitor, flag, _ = flag_monitor(fall=3, rise=2)
    assert monitor.run_once(None, 0, 0)[0] is False, "a first failing check fails at once"
    flag.touch()
    assert monitor.run_once(None, 0, 0)[0] is True


def test_monitor_thread_loop_fails_fall_intervals_after_the_cause_and_says_so(flag_monitor, clock):
    """Monitor.run() on the test thread: its stopping event is a FakeEvent whose wait()
    advances the fake clock by the interval; each wait is one check done."""
    monitor, flag, state = flag_monitor(fall=3, rise=2, interval=2.0)
    flag.touch()
    script = {1: "unlink", 6: "touch"}       # before check n (0-based): the world changes
    record = []

    def step(event, timeout):
        entry_ = dict(state.monitors["flag"])
        record.append((clock() - timeout, entry_["ok"], entry_["message"]))   # when that check ran
        n = len(record)
        if script.get(n) == "unlink":
            flag.unlink()
        elif script.get(n) == "touch":
            flag.touch()
        if n == 9:
            event.set()

    monitor.stopping.hooks.append(step)
    t0 = clock()
    monitor.run()
    assert monitor.stopping.waits == [2.0] * 9, "one check every interval"
    oks = [ok for _, ok, _ in record]
    assert oks == [True, True, True, False, False, False, False, True, True]
    assert record[1] == (t0 + 2.0, True, "flag missing (1 failure(s) in a row, fails at 3)")
    assert record[3][0] - record[1][0] == 2 * 2.0, "failed at the 3rd failing check in a row, (fall - 1) x interval " \
                                                   "after the first one"
    assert record[6][2] == "flag present (1 pass(es) in a row, recovers at 2)"
    events = [(e["what"], e["why"]) for e in state.snapshot()["events"]]
    assert ("monitor flag failed", "flag missing (3 failures in a row (fall 3))") in events
    assert ("monitor flag ok", "flag present (2 passes in a row (rise 2))") in events


# ----- quorum: exactly D/2 after the freshest answer ------------------------------------------

def test_quorum_lapses_half_dead_after_after_the_freshest_answer_and_the_role_turns_stopping(
        build, clock, decisions, tmp_path):
    node = build(me="node-a", names=NAMES)
    become_active(node, clock)
    clock.advance(HB)
    hear(node, "node-b")
    clock.advance(0.1)
    freshest = clock()
    hear(node, "node-c")
    cycle(node)
    lapse = freshest + DEAD / 2
    assert node.state.quorum_until == lapse
    clock.advance_to(lapse - 1e-6)
    assert not node.state.holding_lapsed()
    assert reported(node) == "active" and shown(node)["role"] == "active"
    clock.advance_to(lapse)
    assert node.state.holding_lapsed()
    assert reported(node) == "stopping", "from the lapse on, peers are told it may still run, never active"
    assert shown(node)["role"] == "stopping"
    node.supervisors["web"].turn()      # the supervisor alone renews nothing and announces nothing
    assert reported(node) == "stopping"
    cycle(node)
    assert kind(decisions) == "no_quorum"
    assert not path_of(tmp_path, "r", "node-a").exists() and shown(node)["role"] == "standby"


def test_a_node_that_loses_quorum_soon_after_start_stops_at_the_lapse(build, clock, decisions, tmp_path):
    node = build(me="node-a", names=NAMES)
    become_active(node, clock, past_hold=False)
    lapse = node.state.quorum_until
    assert lapse - node.state.started < DEAD
    clock.advance_to(lapse)
    cycle(node)
    assert kind(decisions) == "no_quorum", reason(decisions)
    assert not path_of(tmp_path, "r", "node-a").exists()


def test_in_five_nodes_the_quorum_lapses_half_dead_after_after_the_second_freshest_answer(clock):
    state = State("node-a", "hado", clock=clock)
    state.configure_quorum(["node-b", "node-c", "node-d", "node-e"], 3, DEAD / 2)
    t0 = clock()
    for offset, peer in ((0.0, "node-b"), (0.1, "node-c"), (0.2, "node-d")):
        state.peer_answer(peer, t0 + offset, peer_report(peer, []))
    assert state.quorum_until == t0 + 0.1 + DEAD / 2
    assert not state.holding_lapsed(t0 + 0.1 + DEAD / 2 - 1e-6) and state.holding_lapsed(t0 + 0.1 + DEAD / 2)


def test_a_frozen_holder_stops_on_its_first_turn_after_waking_and_never_says_active(
        build, clock, decisions, tmp_path):
    """In-process form of test_cluster's frozen-node test, whose bound is
    ``stop - wake <= HB + 0.15`` of wall time: here the stop happens in the first turn
    after waking, at the same fake instant, and the loop wakes 5 ms after the freeze."""
    node = build(me="node-a", names=NAMES)
    become_active(node, clock)
    last_sent = clock()
    cycle(node)
    clock.advance(5.0)                  # SIGSTOP ... SIGCONT: nothing ran meanwhile
    assert node.next_wait() == pytest.approx(0.005), "the loop's wait is long over: it turns at once"
    for peer in ("node-b", "node-c"):   # late answers to requests sent before the freeze
        hear(node, peer, sent_at=last_sent)
    assert node.state.holding_lapsed() and reported(node) == "stopping"
    node.turn()
    assert kind(decisions) == "no_quorum"
    assert node.supervisors["web"].wake.is_set(), "the supervisor is woken, not left to its next check"
    settle(node)
    assert not path_of(tmp_path, "r", "node-a").exists() and events_of(tmp_path, "r", "node-a") == ["start", "stop"]
    assert reported(node) == "standby"


# ----- next_wait: the loop wakes at the right instant ----------------------------------------

def test_next_wait_is_the_time_to_the_quorum_lapse(build, clock, decisions, tmp_path):
    node = build(me="node-a", names=NAMES)
    become_active(node, clock)
    sent = clock()
    clock.advance_to(sent + DEAD / 2 - 0.15)
    cycle(node)
    assert node.next_wait() == pytest.approx(0.15 + 0.001)
    clock.sleep(node.next_wait())
    assert node.state.holding_lapsed()
    cycle(node)
    assert kind(decisions) == "no_quorum" and clock() - (sent + DEAD / 2) == pytest.approx(0.001)


def test_next_wait_is_the_time_to_a_peer_turning_down_and_to_its_takeover(build, clock, decisions, tmp_path):
    node = build(me="node-a", names=NAMES)
    become_active(node, clock)
    c_last = clock()
    takeover = node.timing["web"]["takeover_after"]
    assert takeover > DEAD
    for deadline in (c_last + DEAD, c_last + takeover):
        clock.advance_to(deadline - 0.1)
        hear(node, "node-b")            # node-b keeps the quorum, node-c is silent
        cycle(node)
        assert node.next_wait() == pytest.approx(0.1 + 0.002)
        clock.sleep(node.next_wait())
        hear(node, "node-b")
        assert node.observe()["status"]["node-c"][0] == "down"
    assert node.next_wait() == pytest.approx(HB), "no deadline left: the next heartbeat"


def test_a_running_supervisor_sleeps_until_its_next_check(build, clock, decisions, tmp_path):
    node = build(apps={"web": {"resources": [dummy(tmp_path, "a", "solo")]}})
    cycle(node)
    sup = node.supervisors["web"]
    assert sup.next_wait() == pytest.approx(INTERVAL)
    clock.advance(0.4)
    assert sup.next_wait() == pytest.approx(INTERVAL - 0.4)


def test_a_standby_supervisor_sleeps_until_woken(build, clock, decisions, tmp_path):
    node = build(me="node-a", names=NAMES)
    cycle(node)
    assert entry(node)["role"] == "standby"
    assert node.supervisors["web"].next_wait() >= 1.0


# ----- a pending move expires ----------------------------------------------------------------

def test_a_move_that_does_not_complete_expires_after_its_ttl(build, clock, decisions, tmp_path):
    node = build(me="node-a", names=NAMES)
    become_active(node, clock)
    node.move("web", "node-b", ttl=5.0)
    asked = clock()
    for peer in ("node-b", "node-c"):
        hear(node, peer)
    cycle(node)
    assert kind(decisions) == "standby"
    assert "an admin moved it to node-b (requested on node-a)" in reason(decisions)
    assert not path_of(tmp_path, "r", "node-a").exists(), "the holder stops at once for the move"
    while clock() < asked + 5.0 - HB:       # node-b never starts it (it is broken, say)
        clock.advance(HB)
        for peer in ("node-b", "node-c"):
            hear(node, peer)
        cycle(node)
        assert entry(node)["move"]["to"] == "node-b" and node.my_report()["apps"]["web"]["move_to"] == "node-b"
    clock.advance_to(asked + 5.0 - 0.001)
    cycle(node)
    assert shown(node)["move"]["expires_in_s"] == 0.0 and entry(node)["move"] is not None
    clock.advance_to(asked + 5.0)
    cycle(node)
    assert entry(node)["move"] is None and shown(node)["move"] is None
    assert node.my_report()["apps"]["web"]["move_to"] is None
    assert "moved it" not in reason(decisions), "once expired, the election is the usual one again"


# ----- failovers seen from the taking node (the decision side of test_cluster's bounds) ------------

def test_after_a_kill_9_the_next_node_takes_over_after_takeover_after_and_within_two_heartbeats(
        build, clock, decisions, tmp_path):
    """In-process form of test_cluster's kill -9 test (``took < DEAD + 2.0`` of wall time):
    node-b starts the app no sooner than takeover_after of node-a's silence, and at most
    two heartbeats later (one for node-c's report to say node-a down long enough, one for
    node-c to answer after seeing node-b's claim)."""
    node = build(me="node-b", names=NAMES)
    peers = Peers(node, node_a=dict(role="active", epoch=1))
    loop = Loop(node, decisions, peers)
    loop.run(1.0)
    assert kind(decisions) == "standby" and entry(node)["active_node"] == "node-a"
    assert events_of(tmp_path, "r", "node-b") == []
    peers.info["node-a"]["alive"] = False          # kill -9: it answers no more
    last_heard = peers.heard["node-a"]
    takeover = node.timing["web"]["takeover_after"]
    loop.run(takeover + 3 * HB)
    active = loop.first(lambda t, k, role: k == "active")
    assert active is not None, entry(node)["reason"]
    took = active[0] - last_heard
    assert takeover <= took <= takeover + 2 * HB + 1e-6, took
    assert loop.first(lambda t, k, role: k == "active" and t - last_heard < takeover) is None
    app = shown(node)
    assert app["role"] == "active" and events_of(tmp_path, "r", "node-b") == ["start"]
    assert "node-a is down (silent for" in app["reason"] and "quorum 2/3" in app["reason"]


def test_no_takeover_before_takeover_after_of_silence_to_the_millisecond(build, clock, decisions, tmp_path):
    node = build(me="node-b", names=NAMES)
    a_last = clock()
    hear(node, "node-a", role="active", epoch=1, active_node="node-a")
    takeover = node.timing["web"]["takeover_after"]
    c_sees_a_gone = dict(peers={"node-a": "down", "node-b": "up"}, silent={"node-a": 99.0, "node-b": 0.0})
    for at in (DEAD + 0.1, DEAD + 0.3, takeover - 0.004):   # node-c lost node-a long ago
        clock.advance_to(a_last + at)
        hear(node, "node-c", **c_sees_a_gone)
        cycle(node)
    assert kind(decisions) == "waiting", f"started {takeover - (clock() - a_last):.3f} s early"
    assert events_of(tmp_path, "r", "node-b") == []


def test_a_failed_app_moves_without_waiting_for_dead_after(build, clock, decisions, tmp_path):
    """In-process form of test_cluster's on_fail failover test (``< DEAD + 1.0`` of wall
    time): node-b starts the app within three heartbeats of node-a reporting it failed."""
    node = build(me="node-b", names=NAMES)
    peers = Peers(node, node_a=dict(role="active", epoch=1))
    loop = Loop(node, decisions, peers)
    loop.run(1.0)
    failed_at = clock()
    peers.info["node-a"].update(role="failed", eligible=False,
                                why_not="has a failure: r died (on_fail failover) (cleared by hado cleanup web "
                                        "or failure_timeout)")
    loop.run(DEAD)
    active = loop.first(lambda t, k, role: k == "active")
    assert active is not None, entry(node)["reason"]
    assert active[0] - failed_at <= 3 * HB + 1e-6 < DEAD
    assert shown(node)["role"] == "active" and "quorum 3/3" in shown(node)["reason"], "node-a is still up"
    waited = [w["kind"] for d in decisions if d["web"]["kind"] == "waiting" for w in d["web"]["waits"]]
    assert "silence_short" not in waited and "not_down_everywhere" not in waited


def test_an_admin_move_reaches_its_target_within_two_heartbeats_of_the_holder_stopping(
        build, clock, decisions, tmp_path):
    """In-process form of test_cluster's switchover bound (``took < 2.0`` of wall time),
    seen from the target: the move is requested on node-c; node-a stops at its next turn."""
    node = build(me="node-b", names=NAMES)
    peers = Peers(node, node_a=dict(role="active", epoch=1))
    loop = Loop(node, decisions, peers)
    loop.run(1.0)
    peers.info["node-c"]["move_to"] = "node-b"
    loop.run(HB)
    assert kind(decisions) == "waiting" and "node-a reports it active" in reason(decisions)
    peers.info["node-a"]["role"] = "standby"
    stopped_at = clock()
    loop.run(3 * HB)
    active = loop.first(lambda t, k, role: k == "active")
    assert active is not None, entry(node)["reason"]
    assert active[0] - stopped_at <= 2 * HB + 1e-6
    assert "an admin moved it to node-b (requested on node-c)" in shown(node)["reason"]
    assert events_of(tmp_path, "r", "node-b") == ["start"]


def test_no_quorum_no_takeover_ever(build, clock, decisions, tmp_path):
    """In-process form of test_cluster's witness test tail (``sleep(DEAD)`` then "node-b does
    not hold it"): with both peers gone, node-b never starts the app, however long."""
    node = build(me="node-b", names=NAMES)
    peers = Peers(node, node_a=dict(role="active", epoch=1))
    loop = Loop(node, decisions, peers)
    loop.run(1.0)
    peers.info["node-a"]["alive"] = peers.info["node-c"]["alive"] = False
    loop.run(20 * DEAD)
    assert loop.first(lambda t, k, role: k == "active" or role in ("active", "starting")) is None
    assert kind(decisions) == "no_quorum" and events_of(tmp_path, "r", "node-b") == []
    assert math.isclose(loop.first(lambda t, k, role: k == "no_quorum")[0], peers.heard["node-a"] + DEAD / 2,
                        abs_tol=0.002)


def test_losing_the_witness_moves_nothing_and_losing_both_peers_stops_the_app(build, clock, decisions, tmp_path):
    """In-process form of test_cluster's witness test (its ``sleep(DEAD * 2)`` and
    ``sleep(DEAD)`` negatives), from the start of node-a's loop: it starts the app, keeps
    it with 2 votes of 3 when the witness goes, and stops it D/2 after node-b's last answer."""
    node = build(me="node-a", names=("node-a", "node-b", "witness"), witness=("witness",))
    peers = Peers(node, witness=dict(eligible=False, why_not="is a witness"))
    loop = Loop(node, decisions, peers)
    loop.run(2 * DEAD)
    assert kind(decisions) == "active" and entry(node)["role"] == "active"
    peers.info["witness"]["alive"] = False
    went = clock()
    loop.run(4 * DEAD)
    assert all(k == "active" for t, k, _ in loop.timeline if t >= went), "losing the witness moves nothing"
    assert node.my_report()["peers"]["witness"] == "down" and node.state.quorum["votes"] == 2
    assert events_of(tmp_path, "r", "node-a") == ["start"]
    peers.info["node-b"]["alive"] = False
    loop.run(2 * DEAD)
    stopped = loop.first(lambda t, k, role: k == "no_quorum")
    assert stopped is not None and stopped[0] - peers.heard["node-b"] == pytest.approx(DEAD / 2 + 0.001)
    assert events_of(tmp_path, "r", "node-a") == ["start", "stop"] and entry(node)["role"] == "standby"


def test_a_peer_that_stays_down_is_logged_and_notified_once_not_every_turn(build, clock, decisions, caplog):
    """After a takeover the sentence says "node-a is down (silent for 6.1 s ...)", a
    number that grows every turn: the decision is logged ("elected:", "decided:") and
    notified once, not at every turn while node-a stays down (before: a line and a
    notification per app per turn)."""
    node = build(me="node-b", names=NAMES)
    notified = []
    node.actor.notify = lambda app, decision, reason: notified.append(reason)
    peers = Peers(node, node_a=dict(role="active", epoch=1))
    loop = Loop(node, decisions, peers)
    loop.run(1.0)
    peers.info["node-a"]["alive"] = False          # kill -9
    caplog.set_level("INFO", logger="hado")
    loop.run(node.timing["web"]["takeover_after"] + 3 * HB)
    assert kind(decisions) == "active"
    caplog.clear()
    notified.clear()
    loop.run(20 * HB)                              # node-a stays down, its silence grows
    assert "node-a is down (silent for" in shown(node)["reason"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("decided:", "elected:"))]
    assert lines == [] and notified == [], (lines[:3], notified[:3])
