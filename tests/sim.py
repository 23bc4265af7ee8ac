"""A deterministic message-passing simulator over the real observe/decide/act code.

Every node is a real ``hado.node.Node`` (its State, local.observe, election.decide,
act.Actor, bounds) built from a config that ``hado.config.validate`` accepted; what is
simulated is what lies around it:

- *time*: one virtual clock (``Sim.now``); each node reads it through ``Node(clock=)``
  plus an offset of its own (monotonic clocks of different machines never agree, and
  hado must never compare them);
- *threads*: an event queue (heapq) stands for the election loop (a turn every
  ``Node.next_wait()`` and soon after any state change, as ``Node.run`` wakes on
  ``State.changed``), the peers thread (:class:`SimHeartbeats`: the real
  ``hado.peers.Heartbeats`` with its datagrams, MACs, rounds, re-sends, pokes and
  message ordering, only its sockets and its loop replaced), the app supervisors
  (:class:`SimSupervisor`, a copy of the role logic of ``hado/resource.py``) and, for
  leased resources, the ``leases`` thread (:class:`SimLeases`, a copy too);
- *the network*: per directed link a drop probability, a delay range (so messages
  reorder), duplicates; cuts of any set of directed links (partitions, one-way cuts);
- *the machines*: a node may crash (its hado stops, its state is lost, its resources run
  on; a restart is a fresh Node that probes them as they are) or freeze (stops, keeps
  its state, resumes later with its clock jumped ahead), and each app's resource lives
  in the world, outside any Node (:class:`WorldResource`), unleased (it runs until its
  node stops it) or leased (it also ends by itself ``lease + LEASE_SLACK`` after its
  last renewal).

The invariant, checked after every event: for each app, at most one node's resource
runs at any instant, counting crashed and frozen nodes. In unleased mode a resource
left running by a crashed or frozen hado is a gap that docs/cluster.rst names ("a hado
that is frozen or killed while the machine runs on: its unleased resources run on ...
only fencing closes that window"); such an overlap is counted apart as a *gap* while
that hado is down and for ``grace`` seconds after it is back (time to see its quorum
lapsed or to lose the election, and stop), and is a violation after that. Beyond
that, only the marks that ``excuse`` names (below) are exempt, in either mode.

Liveness: :meth:`Sim.run` heals everything at the end of the fault window and then
requires every app to run on exactly one eligible node, reporting it active, within
:meth:`Sim.liveness_bound` seconds.

``Sim(bug=...)`` reintroduces a known race in the simulator, never in hado/: between
the real Heartbeats and the node's State (:class:`BuggyState`),
``evidence_at_arrival`` (an answer is evidence from its arrival, not from the first
sending of its request) and ``no_claim_echo`` (a request's claims are not recorded);
in the node's timings, ``no_stop_budget`` (takeovers do not wait for the stop budget
of unleased resources). tests/test_sim.py shows hypothesis finding the first and the
third; ``no_claim_echo`` is no race here: without the echo a peer learns a claim and
the role that ends it from the same answer.

Engine gaps the simulator found in hado/ are listed in KNOWN, all closed since, and
replayed by the ``test_engine_gap_*`` tests (they were strict xfails until each fix
landed). ``Sim(excuse=...)`` names the world-resource marks that do not count, by
default only ``frozen_start`` of an unleased resource (the documented frozen-hado gap).
"""

import contextlib
import copy
import heapq
import logging
import os
import pickle
import random
import threading

import hado.peers
import hado.state
from hado import config as config_mod
from hado import election, peers, states
from hado.bounds import LEASE_SLACK
from hado.node import Node

BUGS = ("no_claim_echo", "evidence_at_arrival", "no_stop_budget")
CLUSTERS = {"3": (["a", "b", "c"], ()), "5": (["a", "b", "c", "d", "e"], ()), "2+w": (["a", "b", "w"], ("w",))}
CALM = (0.0, 0.0002, 0.005, 0.0)          # drop, min delay, max delay, duplicate probability
# Engine gaps the simulator found, all closed since (tests/test_sim.py
# test_engine_gap_N replays gap N; each failed before its fix). The first two had a
# mechanical signature that marked the world resource: ``Sim(excuse=...)`` lists the
# marks that do not count as violations ("frozen_start" of an *unleased* resource is the
# documented frozen-hado gap that only fencing closes; the orphan grace covers it).
KNOWN = {
    "lapsed_start": "gap 2 (closed: plugin.cut_off): a start() begun before the quorum lapse returned after it "
                    "and created the resource with a fresh lease",
    "frozen_start": "gap 3 (closed for leased resources: plugin.cut_off): a start() in flight when its hado "
                    "froze completed when it woke, after the takeover; unleased: the documented gap",
    1: "closed (election.blockers: a claim as the last word): a node whose last report was 'standby, claim' "
       "was not waited for once down, yet its start may have begun right after that report",
    4: "closed with gap 2 (it was the same start in flight, reached through slow round trips)",
    5: "closed (requests carry 'holds', reports 'holders'): a request without the claim erased the claim "
       "at the common peer before an answer told it the sender runs the app",
    6: "closed (reports list 'holders', stopping included): a stopping holder was invisible across a "
       "non-transitive partition",
}

# trigger target -> (what arms it, delay in heartbeats)
TRIGGERS = {"starter": ("start", 0.0), "starter+": ("start", 0.5), "claimer": ("claim", 0.0)}
SECRET = b"sim-secret-0123456789abcdef012345"
PORT = 6185
EPS = 1e-6                                 # timers fire just after their instant (float rounding)


class SimError(AssertionError):
    """The engine did something the simulator refuses (an illegal role edge, a crash)."""


class Link:
    __slots__ = ("drop", "dmin", "dmax", "dup")

    def __init__(self, drop=0.0, dmin=0.0002, dmax=0.005, dup=0.0):
        self.drop, self.dmin, self.dmax, self.dup = drop, dmin, dmax, dup


class WorldResource:
    """One app's resource on one machine: outside hado, survives its crashes."""

    def __init__(self, node, app, lease):
        self.node, self.app, self.lease = node, app, lease
        self.running = False
        self.deadline = None         # leased: ends by itself at this sim time unless renewed
        self.orphan = False          # left running (or starting) by a crashed/frozen hado (unleased)
        self.grace_until = None      # ... tolerated until then once that hado is back
        self.marks = set()           # engine gaps this incarnation of the resource shows (KNOWN)

    def alive(self, now):
        if self.running and self.deadline is not None and now >= self.deadline:
            self.running, self.deadline, self.marks = False, None, set()     # the lease ran out
        return self.running

    def start(self, now, marks=(), orphan_grace=None):
        """Running from now; ``orphan_grace``: the start was in flight while its hado was
        frozen (unleased: an orphan, tolerated until then)."""
        self.running = True
        self.deadline = now + self.lease + LEASE_SLACK if self.lease else None
        self.marks = set(marks)
        self.orphan, self.grace_until = orphan_grace is not None, orphan_grace

    def stop(self):
        self.running, self.deadline, self.orphan, self.grace_until = False, None, False, None
        self.marks = set()

    def renew(self, now):
        """dummy.renew: push the deadline; never revives (False when it is gone)."""
        if not self.alive(now):
            return False
        self.deadline = now + self.lease + LEASE_SLACK
        return True


class SimSupervisor:
    """The role logic of hado/resource.py's AppSupervisor, one active-standby resource,
    its calls taking simulated time. The world resource runs from the end of a start
    (the dummy plugin writes its file then) until the end of a stop."""

    def __init__(self, sim, sn, app):
        self.sim, self.sn, self.app = sim, sn, app
        self.state = sn.node.state
        self.world = sim.world[(sn.name, app)]
        self.spec = sn.node.config["apps"][app]["resources"][0]
        self.wake = threading.Event()       # set by the Actor when the desired role changes
        self.res = "stopped"                # our resource entry: stopped|starting|started|stopping
        self.busy = None                    # "start" | "stop" while a plugin call runs
        self.frozen_during = self.lapsed_at_start = False   # of the start call in progress
        self.scheduled = False
        self.next_check = None              # leased: when alive() is due
        self.revoked_for = None

    # --- as AppSupervisor ---
    def role(self):
        return self.state.app_entry(self.app)["role"]

    def holding(self):
        return self.res != "stopped"

    def transition(self, role, probing=False):
        old = self.role()
        if role == old:
            return
        allowed = (states.PROBE_EDGES if probing else states.ROLE_EDGES)[old]
        if role not in allowed:
            raise SimError(f"{self.sn.name}: app {self.app}: illegal role change {old} -> {role} "
                           f"(allowed: {', '.join(sorted(allowed))})")
        self.sim.trace(self.sn.name, f"{self.app} {old}->{role}")
        self.state.update_app(self.app, role=role)

    def probe(self):
        self.res = "started" if self.world.alive(self.sim.now) else "stopped"
        if self.res == "started":
            self.schedule_check()
        self.publish_role(probing=True)

    def turn(self):
        """One supervisor turn: woken by the Actor, a finished call, or an alive() check."""
        self.scheduled = False
        if self.busy:
            return
        self.wake.clear()
        desired = self.state.app_entry(self.app)["desired"]
        if desired == states.ACTIVE:
            self.bring_up()
        elif desired == states.STANDBY:
            self.bring_down()
        if not self.busy:
            self.observe()
        self.publish_role()

    def bring_up(self):
        if self.role() not in states.RUNNING:
            self.transition(states.STARTING)
        if self.res == "started":
            return
        if self.state.holding_lapsed():
            return     # quorum lapsed under us: the next decision stops the app
        self.res, self.busy = "starting", "start"
        self.frozen_during, self.lapsed_at_start = False, self.state.holding_lapsed()
        self.mark = self.state.quorum_mark()     # a leased start is cut off once it lapses (plugin.cut_off)
        self.sim.on_start(self.sn, self.app)
        delay = self.sim.rng.uniform(*self.sim.delays(self.sn.name, "start"))
        self.sim.node_at(self.sim.now + delay, self.sn, self.done_start)

    def done_start(self):
        self.busy = None
        if self.world.lease and self.state.lapsed_since(self.mark):
            # hado/resource.py start_resource with its cut-off: the plugin (dummy.start
            # checks right before it writes its lease) creates nothing once the quorum
            # the start began under has lapsed, also when hado was frozen meanwhile.
            self.sim.trace(self.sn.name, f"{self.app} start cut off: the quorum lapsed during start()")
            self.res = "stopped"
            self.turn()
            return
        marks, orphan_grace = set(), None
        if self.frozen_during and not self.world.lease:
            marks.add("frozen_start")     # unleased: the documented frozen-hado gap
            orphan_grace = self.sn.back_at + self.sim.grace
        if self.state.holding_lapsed() and not self.lapsed_at_start:
            marks.add("lapsed_start")     # unleased: within the stop budget's in-flight call
        self.world.start(self.sim.now, marks, orphan_grace)
        self.sim.trace(self.sn.name, f"{self.app} resource started")
        self.res = "started"
        self.schedule_check()
        self.turn()

    def bring_down(self):
        if self.holding() and self.role() != states.STOPPING:
            self.transition(states.STOPPING)
        if self.res == "stopped":
            return
        self.res, self.busy = "stopping", "stop"
        delay = self.sim.rng.uniform(*self.sim.delays(self.sn.name, "stop")) if self.world.alive(self.sim.now) else 0.0
        self.sim.node_at(self.sim.now + delay, self.sn, self.done_stop)

    def done_stop(self):
        self.busy = None
        self.world.stop()
        self.sim.trace(self.sn.name, f"{self.app} resource stopped")
        self.res = "stopped"
        self.turn()

    def schedule_check(self):
        if self.world.lease:
            self.next_check = self.sim.now + self.spec["interval"]
            self.sim.node_at(self.next_check, self.sn, self.check_due, self.next_check)

    def check_due(self, due):
        if due == self.next_check and not self.busy:
            self.turn()

    def observe(self):
        """alive() of a started resource (leased only: an unleased one never dies here)."""
        if self.res != "started" or not self.world.lease:
            return
        if self.next_check is not None and self.sim.now + EPS < self.next_check:
            return
        if self.world.alive(self.sim.now):
            self.schedule_check()
            return
        self.next_check = None
        if self.state.holding_lapsed():
            self.res = "stopped"       # dropped at quorum loss, or its lease ran out: as designed
            return
        # died while we have quorum (a lease that ran out during a freeze): on_fail restart
        self.sim.trace(self.sn.name, f"{self.app} resource died: restart")
        self.res = "stopped"
        self.wake.set()

    def publish_role(self, probing=False):
        desired = self.state.app_entry(self.app)["desired"]
        failure = self.state.app_entry(self.app).get("failure")
        if probing or desired is None:
            role = states.ACTIVE if self.res == "started" else states.STOPPING if self.holding() else states.STANDBY
        elif desired == states.ACTIVE:
            role = states.ACTIVE if self.res == "started" else states.STARTING
        elif self.holding():
            role = states.STOPPING
        elif failure:
            role = states.FAILED
        else:
            role = states.STANDBY
        self.transition(role, probing=probing or desired is None)


class SimLeases:
    """hado/resource.py's Leases thread: renew every heartbeat while desired active with
    quorum; at the quorum lapse drop every leased resource at once (``revoke``)."""

    def __init__(self, sim, sn):
        self.sim, self.sn = sim, sn
        self.token = 0

    def start(self):
        self.tick(self.token)

    def tick(self, token):
        if token != self.token:
            return
        sim, node = self.sim, self.sn.node
        state = node.state
        lapsed = state.holding_lapsed()
        for app, sup in self.sn.node.supervisors.items():
            if lapsed:
                if sim.revoke and sup.revoked_for != state.quorum_until and sup.res in ("started", "starting"):
                    sup.revoked_for = state.quorum_until
                    if sup.world.alive(sim.now):
                        sup.world.stop()
                        sim.trace(self.sn.name, f"{app} revoked at quorum loss")
                    sup.wake.set()
                continue
            if state.app_entry(app)["desired"] == states.ACTIVE and sup.res == "started":
                if not sup.world.renew(sim.now):
                    sup.next_check = sim.now
                    sup.wake.set()
        wait = node.heartbeat
        until = state.quorum_until
        if until is not None and until > node.clock():
            wait = min(wait, until - node.clock() + 0.001)
        self.token += 1
        sim.node_at(sim.now + max(wait, EPS), self.sn, self.tick, self.token)


class SimHeartbeats(peers.Heartbeats):
    """The real hado/peers.py Heartbeats (requests, answers, re-sends, pokes, the ordering
    of a run's messages, every check of a datagram) without its thread and sockets:
    ``send`` puts a datagram on the simulated network, a delivery calls ``handle``, and
    ``loop`` is the body of ``Heartbeats.run`` on a timer."""

    def __init__(self, sim, sn):
        node = sn.node
        cluster = node.config["cluster"]
        state = node.state if sim.bug in (None, "no_stop_budget") else BuggyState(node.state, sim.bug, node.clock)
        super().__init__(state, node.me, cluster["name"], cluster["nodes"], SECRET, node.heartbeat,
                         node.my_report, node.clock, node.state.my_claims, node.state.my_holds)
        self.wake_r.close()     # no thread to wake: poke() schedules the loop
        self.wake_w.close()
        self.addresses = {peer: (peer, PORT) for peer in self.peers}
        self.origins = {(peer, PORT): peer for peer in self.peers}
        self.sim, self.sn = sim, sn
        self.next_round = None
        self.token = 0
        self.tick_at = None

    def start(self):            # not a thread here
        self.next_round = self.clock()
        self.wake_at(self.sim.now)

    def poke(self):
        super().poke()
        self.wake_at(self.sim.now)

    def send(self, peer, datagram, address):
        self.sim.send(self.me, peer, datagram)

    def receive_datagram(self, sender, datagram):
        self.handle(datagram, (sender, PORT), self.clock(), sender)
        self.loop_pass()    # as the real loop after a datagram (keeps an earlier timer)

    def wake_at(self, t):
        """The loop's next wake-up: the earliest asked for wins."""
        if self.tick_at is not None and self.tick_at <= t:
            return
        self.tick_at = t
        self.token += 1
        self.sim.node_at(t, self.sn, self.loop, self.token)

    def loop(self, token):
        """One pass of Heartbeats.run: a round when due or poked, re-sends, then wait until
        the next round or a quarter heartbeat (datagrams and pokes wake it sooner)."""
        if token != self.token:
            return
        self.tick_at = None
        self.loop_pass()

    def loop_pass(self):
        if self.leaving:
            return   # saying goodbye (Sim.leave sends it): no more rounds, as Heartbeats.run
        now = self.clock()
        with self.poke_lock:
            poll_me, self.poked = self.poked, False
        if poll_me or now >= self.next_round:
            self.new_round(now, poll_me)
            self.next_round = now + self.heartbeat
        self.resend(now)
        self.ask_deferred(now)
        wake = min([self.next_round, now + self.heartbeat / 4] + list(self.deferred.values()))
        wait = max(0.0, wake - self.clock())
        self.wake_at(self.sim.now + wait + EPS)


class BuggyState:
    """The node's State as the message layer sees it, with a known race put back
    (``Sim(bug=...)``); everything else goes to the real State."""

    def __init__(self, state, bug, clock):
        self._state, self._bug, self._clock = state, bug, clock

    def __getattr__(self, name):
        return getattr(self._state, name)

    def peer_request(self, name, at, claims=None, holds=None):
        self._state.peer_request(name, at, None if self._bug == "no_claim_echo" else claims,
                                 None if self._bug == "no_claim_echo" else holds)

    def peer_answer(self, name, sent_at, report):
        self._state.peer_answer(name, self._clock() if self._bug == "evidence_at_arrival" else sent_at, report)


class SimNode:
    """One machine: its current hado (a Node, or none while crashed) and its timers."""

    def __init__(self, sim, name, config):
        self.sim, self.name, self.config = sim, name, config
        self.offset = sim.rng.uniform(0, 10000) if sim.clock_offsets else 0.0
        self.inc = 0
        self.status = "down"        # up | frozen | crashed | down (not started yet)
        self.node = None
        self.deferred = []          # events that came due while frozen
        self.turn_at = None
        self.turn_token = 0
        self.hb = self.leases = None
        self.claimed = False
        self.started_at = None
        self.frozen_until = None
        self.back_at = None          # when it last came back from a crash or freeze

    def clock(self):
        return self.sim.now + self.offset

    def boot(self):
        """Node.start without threads or sockets: quorum, apps and probe, a first turn, then
        heartbeats and leases."""
        sim = self.sim
        self.inc += 1
        self.status, self.deferred, self.turn_at, self.claimed = "up", [], None, False
        self.started_at = sim.now
        node = self.node = Node(self.config, clock=self.clock)
        if sim.bug == "no_stop_budget":
            for app, t in node.timing.items():
                lease_wait = (t["lease"] + LEASE_SLACK + node.heartbeat) if t["lease"] else 0.0
                t.update(peer_silence=node.dead_after, takeover_after=round(max(node.dead_after, lease_wait), 3))
        cluster = self.config["cluster"]
        peers = [n for n in cluster["nodes"] if n != self.name]
        needed = election.quorum(0, len(cluster["nodes"]), cluster["quorum"])["needed"]
        node.state.configure_quorum(peers, needed, node.dead_after / 2)
        self.hb = node.heartbeats = SimHeartbeats(sim, self)
        node.register_apps()
        if not node.witness:
            for app in node.apps_config():
                node.state.update_app(app, desired=None)
                sup = SimSupervisor(sim, self, app)
                sup.probe()
                node.supervisors[app] = sup
        node.turn()
        self.after_turn()
        self.hb.start()
        if sim.leased and node.supervisors:
            self.leases = SimLeases(sim, self)
            self.leases.start()
        self.settle()

    def schedule_turn(self, t):
        if self.turn_at is not None and self.turn_at <= t:
            return
        self.turn_at = t
        self.turn_token += 1
        self.sim.node_at(t, self, self.turn, self.turn_token)

    def turn(self, token):
        if token != self.turn_token:
            return
        self.turn_at = None
        self.node.wakeup.clear()
        try:
            self.node.turn()
        except SimError:
            raise
        except Exception as exc:
            raise SimError(f"{self.name}: Node.turn() raised {type(exc).__name__}: {exc}") from exc
        self.after_turn()

    def after_turn(self):
        self.schedule_turn(self.sim.now + max(self.node.next_wait(), EPS))
        claims = bool(self.node.state.my_claims())
        if claims and not self.claimed:
            self.sim.on_claim(self)
        self.claimed = claims

    def settle(self):
        """After anything ran on this node: wake the loop and the supervisors, as the
        threading.Events of the real daemon would."""
        if self.status != "up":
            return
        node = self.node
        if node.wakeup.is_set():
            self.schedule_turn(self.sim.now + self.sim.rng.uniform(0.0002, 0.002))
        for sup in node.supervisors.values():
            if sup.wake.is_set() and not sup.busy and not sup.scheduled:
                sup.scheduled = True
                self.sim.node_at(self.sim.now + self.sim.rng.uniform(0.0001, 0.001), self, sup.turn)


class Result:
    def __init__(self, sim):
        self.sim = sim
        self.violations = sim.violations
        self.gaps = sim.gaps
        self.live = sim.live
        self.settled_after = sim.settled_after
        self.bound = sim.liveness_bound()

    def describe(self):
        s = self.sim
        lines = [f"seed={s.seed} params={s.params!r}", f"schedule={s.schedule!r}"]
        for v in self.violations[:3]:
            lines.append(f"VIOLATION at t={v['t']:.4f}: app {v['app']} runs on {v['nodes']} "
                         f"(status {v['status']}; marks {v['marks']})")
        if self.live is False:
            lines.append(f"NOT LIVE: {s.liveness_problem} (bound {self.bound:.2f} s after the heal at "
                         f"t={s.heal_at:.2f})")
        lines.append("last trace:")
        lines.extend(f"  {t:9.4f} {n:2} {what}" for t, n, what in s.tracebuf[-60:])
        return "\n".join(lines)


class Sim:
    """A cluster of real Nodes on a simulated network; see the module docstring.

    Parameters: ``cluster`` "3", "5" or "2+w"; ``heartbeat``/``dead_after``;
    ``leased`` (resources with ``lease``); ``apps``; ``start_timeout``/``stop_timeout``
    (config timeouts; each call takes a random time up to them, nearly all of it on the
    nodes named in ``slow``); ``seed``; ``bug`` (BUGS); ``excuse`` (marks of KNOWN that do
    not count); ``revoke`` (False: the leases thread's revoke at quorum loss hangs);
    ``clock_offsets`` (each node's monotonic clock its own); ``fast_copy``.
    """

    def __init__(self, cluster="3", heartbeat=0.5, dead_after=2.0, leased=False, lease=1.0, apps=("web",),
                 start_timeout=0.5, stop_timeout=0.5, seed=0, bug=None, revoke=True, clock_offsets=True,
                 stop_on_violation=True, trace=False, excuse=("frozen_start",),
                 fast_copy=True, slow=()):
        if bug is not None and bug not in BUGS:
            raise ValueError(f"unknown bug {bug!r} (known: {', '.join(BUGS)})")
        self.params = dict(cluster=cluster, heartbeat=heartbeat, dead_after=dead_after, leased=leased,
                           apps=tuple(apps), start_timeout=start_timeout, stop_timeout=stop_timeout, bug=bug)
        if not leased:
            self.params.pop("leased")
        self.seed, self.bug, self.leased, self.revoke = seed, bug, leased, revoke
        self.excuse = tuple(excuse)
        self.fast_copy = fast_copy
        self.os = _SeededOs(random.Random(f"{seed}-nonces"))
        self.rng = random.Random(seed)
        self.clock_offsets = clock_offsets
        self.stop_on_violation = stop_on_violation
        self.tracing = trace
        self.tracebuf = []
        self.now = 0.0
        self.queue = []
        self.seq = 0
        self.steps = self.checks = self.faults_applied = self.messages = 0
        self.start_delay = (0.05 * start_timeout, start_timeout)
        self.stop_delay = (0.05 * stop_timeout, stop_timeout)
        self.slow = set(slow)           # nodes whose starts and stops take (almost) their whole timeout
        names, witnesses = CLUSTERS[cluster]
        self.names = names
        self.apps = list(apps)
        raw = {"cluster": {"name": "sim", "secret_file": "/nonexistent/secret", "heartbeat": heartbeat,
                           "dead_after": dead_after,
                           "nodes": {n: {"url": f"http://10.0.0.{i + 1}:6185", "priority": 100 - 10 * i,
                                         "witness": n in witnesses} for i, n in enumerate(names)}},
               "apps": {app: {"resources": [{"name": "r", "plugin": "dummy",
                                             "args": {"path": f"/nonexistent/{app}-{{node}}", "node": "{node}",
                                                      **({"lease": lease} if leased else {})},
                                             "interval": min(0.2, heartbeat), "timeout": 0.5,
                                             "start_timeout": start_timeout, "stop_timeout": stop_timeout}]}
                        for app in apps}}
        self.configs = {}
        for n in names:
            cfg, errors, _ = config_mod.validate(raw, n)
            if errors:
                raise ValueError(f"config refused: {errors}")
            self.configs[n] = cfg
        self.heartbeat, self.dead_after = heartbeat, dead_after
        self.witnesses = set(witnesses)
        self.world = {(n, app): WorldResource(n, app, lease if leased else None)
                      for n in names if n not in witnesses for app in apps}
        self.nodes = {n: SimNode(self, n, self.configs[n]) for n in names}
        self.links = {(a, b): Link(*CALM) for a in names for b in names if a != b}
        self.cut = set()
        self.violations, self.gaps = [], []
        self.gap_time = 0.0
        self.triggers = []          # (kind "start"|"claim", fault) armed faults
        self.schedule = []
        self.heal_at = None
        self.live = None
        self.settled_after = None
        self.settled_since = None
        self.liveness_problem = None
        self.fault_log = []
        self.max_delay_seen = CALM[2]
        # the grace of an orphaned unleased resource once its hado is back (module docstring)
        self.grace = dead_after + 2 * heartbeat + stop_timeout + 0.1
        probe = Node(self.configs[names[0]], clock=lambda: 0.0)
        self.timing = probe.timing
        if bug == "no_stop_budget":
            self.timing = {a: dict(t, takeover_after=max(dead_after, (t["lease"] + LEASE_SLACK + heartbeat)
                                                          if t["lease"] else 0.0))
                           for a, t in probe.timing.items()}

    def delays(self, name, call):
        """The range a start or stop call of node ``name`` takes (up to its timeout)."""
        lo, hi = self.start_delay if call == "start" else self.stop_delay
        return (0.95 * hi, hi) if name in self.slow else (lo, hi)

    # ----- bounds -------------------------------------------------------------------

    def liveness_bound(self):
        """Seconds from the heal until every app runs on exactly one node (docs/cluster.rst,
        "Worst-case takeover after a crash or freeze"): the app's takeover_after of silence,
        up to one heartbeat for the other peers' reports to say "down", one for the claim's
        round, one more for the quorum of a node just restarted or resumed; then a stop
        elsewhere (a healed partition leaves two holders, the older epoch stops) and the
        start; plus network and loop latencies."""
        takeover = max(t["takeover_after"] for t in self.timing.values())
        return (takeover + 3 * self.heartbeat + self.params["stop_timeout"] + self.params["start_timeout"]
                + 6 * CALM[2] + 0.05)

    # ----- events -------------------------------------------------------------------

    def at(self, t, fn, *args):
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, fn, args))

    def node_at(self, t, sn, fn, *args):
        """An event of one hado process: dropped if it crashed since, deferred while frozen."""
        self.at(t, self._node_event, sn, sn.inc, fn, args)

    def _node_event(self, sn, inc, fn, args):
        if sn.inc != inc or sn.status == "crashed":
            return
        if sn.status == "frozen":
            sn.deferred.append((fn, args))
            return
        fn(*args)
        sn.settle()

    def trace(self, node, what):
        self.tracebuf.append((self.now, node, what))
        if len(self.tracebuf) > 400:
            del self.tracebuf[:200]
        if self.tracing:
            print(f"{self.now:9.4f} {node:2} {what}")

    def step(self):
        t, _, fn, args = heapq.heappop(self.queue)
        self.now = max(self.now, t)
        fn(*args)
        self.steps += 1
        self.check()

    def run_until(self, t):
        with patched(self):
            while self.queue and self.queue[0][0] <= t:
                if self.violations and self.stop_on_violation:
                    return
                self.step()
        self.now = max(self.now, t)

    # ----- the network ----------------------------------------------------------------

    def send(self, src, dst, body):
        """A datagram from ``src`` to ``dst`` through the link's loss, delay and duplicates."""
        self.messages += 1
        if (src, dst) in self.cut:
            return
        link = self.links[(src, dst)]
        rng = self.rng
        if link.drop and rng.random() < link.drop:
            return
        copies = 2 if link.dup and rng.random() < link.dup else 1
        for _ in range(copies):
            self.at(self.now + rng.uniform(link.dmin, link.dmax), self._deliver, dst, src, body)

    def _deliver(self, dst, src, datagram):
        sn = self.nodes[dst]
        if sn.status in ("crashed", "down"):
            return
        if sn.status == "frozen":
            sn.deferred.append((self._receive, (sn, src, datagram)))   # the socket buffer holds it
            return
        self._receive(sn, src, datagram)
        sn.settle()

    def _receive(self, sn, src, datagram):
        sn.hb.receive_datagram(src, datagram)

    # ----- faults ---------------------------------------------------------------------

    def node_name(self, target):
        """A fault's target: a node index, or "holder" (the node running the first app now)."""
        if target == "holder":
            holders = [n for n in self.names if n not in self.witnesses
                       and self.world[(n, self.apps[0])].alive(self.now)]
            return holders[0] if holders else self.names[0]
        return self.names[target % len(self.names)]

    def apply(self, fault):
        """Apply one fault now. Kinds (node targets: an index, "holder", or a trigger:
        "starter" / "claimer" arm the fault, applied to the next node that begins a start /
        makes a claim, at that moment; "starter+" half a heartbeat after it, once its report
        says "starting"):

        - ("isolate", node, "both"|"in"|"out")  cut every link of the node (one way or both)
        - ("split", mask)          symmetric partition: nodes whose bit is set vs the rest
        - ("cut", i, j, oneway)    the link i->j (and j->i unless oneway)
        - ("heal",)                every cut removed
        - ("net", drop, dmax, dup) every link's profile
        - ("crash", node), ("restart", node), ("freeze", node, seconds)
        - ("standby", node), ("online", node), ("move", node)  admin requests
        - ("leave", node)          SIGTERM: Node.hand_over, then the goodbye, then gone
                                   (a "restart" boots it again)
        """
        with patched(self):
            self._apply(fault)

    def _apply(self, fault):
        kind, args = fault[0], list(fault[1:])
        if args and args[0] in TRIGGERS:
            self.triggers.append((TRIGGERS[args[0]], fault))
            return
        self.faults_applied += 1
        self.fault_log.append((self.now, fault))
        names = self.names
        if kind == "isolate":
            n = self.node_name(args[0])
            way = args[1] if len(args) > 1 else "both"
            for o in names:
                if o != n:
                    if way in ("both", "out"):
                        self.cut.add((n, o))
                    if way in ("both", "in"):
                        self.cut.add((o, n))
        elif kind == "split":
            side = {n for i, n in enumerate(names) if args[0] >> i & 1}
            for a in names:
                for b in names:
                    if a != b and (a in side) != (b in side):
                        self.cut.add((a, b))
        elif kind == "cut":
            a, b = self.node_name(args[0]), self.node_name(args[1])
            if a != b:
                self.cut.add((a, b))
                if not (len(args) > 2 and args[2]):
                    self.cut.add((b, a))
        elif kind == "heal":
            self.cut.clear()
        elif kind == "net":
            drop, dmax, dup = args
            for link in self.links.values():
                link.drop, link.dmin, link.dmax, link.dup = drop, min(CALM[1], dmax), dmax, dup
            self.max_delay_seen = max(self.max_delay_seen, dmax)
        elif kind == "crash":
            self.crash(self.node_name(args[0]))
        elif kind == "restart":
            n = self.node_name(args[0])
            if self.nodes[n].status == "crashed":
                self.restart(n)
        elif kind == "freeze":
            self.freeze(self.node_name(args[0]), args[1])
        elif kind == "leave":
            self.leave(self.node_name(args[0]))
        elif kind in ("standby", "online"):
            sn = self.nodes[self.node_name(args[0])]
            if sn.status == "up":
                sn.node.set_standby(kind == "standby")
                sn.settle()
        elif kind == "move":
            target = self.node_name(args[0])
            up = [n for n in names if self.nodes[n].status == "up"]
            if up:
                sn = self.nodes[up[0]]
                for app in self.apps:
                    try:
                        sn.node.move(app, target)
                    except ValueError:
                        pass
                sn.settle()
        else:
            raise ValueError(f"unknown fault {fault!r}")
        self.trace("--", f"fault {fault!r}")

    def fire(self, what, name):
        for trigger in [t for t in self.triggers if t[0][0] == what]:
            self.triggers.remove(trigger)
            (_, later), fault = trigger
            now = (fault[0], self.names.index(name), *fault[2:])
            if later:
                self.at(self.now + later * self.heartbeat, self.apply, now)
            else:
                self.apply(now)

    def on_start(self, sn, app):
        if self.triggers:
            self.fire("start", sn.name)

    def on_claim(self, sn):
        if self.triggers:
            self.fire("claim", sn.name)

    def crash(self, name):
        sn = self.nodes[name]
        if sn.status not in ("up", "frozen"):
            return
        self.orphan_resources(name)
        sn.inc += 1
        sn.status, sn.node, sn.deferred, sn.turn_at = "crashed", None, [], None

    def restart(self, name):
        sn = self.nodes[name]
        self.back(name)
        sn.boot()

    def leave(self, name):
        """SIGTERM as Node.stop does it: not eligible with the election running, until
        nothing is held or claimed (every h/4, at most the app's stop budget + 5 s), then
        the goodbye (Heartbeats.say_goodbye: re-sent every min(h/4, 50 ms) for 0.5 s to
        the peers that have not answered it), then the process is gone."""
        sn = self.nodes[name]
        if sn.status != "up" or sn.node.state.leaving:
            return
        sn.node.state.set_flag("leaving", True)
        sn.settle()
        limit = self.now + max(sum(r["stop_timeout"] for r in a["resources"]) for a in sn.config["apps"].values()) + 5
        self.node_at(self.now + self.heartbeat / 4, sn, self._leaving, sn, limit, None)

    def _leaving(self, sn, limit, goodbye_until):
        node, hb = sn.node, sn.hb
        if goodbye_until is None:
            busy = any(getattr(sup, "busy", None) for sup in node.supervisors.values())
            if (node.state.my_holds() or node.state.my_claims() or busy) and self.now < limit:
                self.node_at(self.now + self.heartbeat / 4, sn, self._leaving, sn, limit, None)
                return
            if node.state.my_holds() or node.state.my_claims() or busy:
                self.trace(sn.name, "left without a goodbye (an app did not stop)")
                self.crash(sn.name)
                return
            hb.leaving = True
            hb.pending.clear()
            goodbye_until = self.now + peers.GOODBYE_FOR
            self.trace(sn.name, "says goodbye")
        waiting = [p for p in hb.peers if p not in hb.acked]
        if waiting and self.now < goodbye_until:
            now = hb.clock()
            for peer in waiting:
                hb.ask(peer, now, bye=True)
            self.node_at(self.now + min(self.heartbeat / 4, 0.05), sn, self._leaving, sn, limit, goodbye_until)
            return
        self.trace(sn.name, f"gone after its goodbye ({len(hb.acked)} of {len(hb.peers)} peers answered)")
        self.crash(sn.name)

    def freeze(self, name, seconds):
        sn = self.nodes[name]
        if sn.status != "up":
            return
        self.orphan_resources(name)
        sn.status = "frozen"
        sn.frozen_until = self.now + seconds
        self.at(self.now + seconds, self.resume, name, sn.inc)

    def resume(self, name, inc):
        sn = self.nodes[name]
        if sn.inc != inc or sn.status != "frozen":
            return
        sn.status, sn.frozen_until = "up", None
        self.back(name)
        deferred, sn.deferred = sn.deferred, []
        for fn, args in deferred:      # timers that came due and datagrams queued, in order
            self.at(self.now, self._run_deferred, sn, sn.inc, fn, args)

    def _run_deferred(self, sn, inc, fn, args):
        self._node_event(sn, inc, fn, args)

    def orphan_resources(self, name):
        sn = self.nodes[name]
        for app in self.apps:
            res = self.world.get((name, app))
            if res is None:
                continue
            sup = sn.node.supervisors.get(app) if sn.node else None
            if sup is not None and sup.busy == "start":
                sup.frozen_during = True        # done_start marks what it creates
            if not self.leased and res.alive(self.now):
                res.orphan, res.grace_until = True, None

    def back(self, name):
        self.nodes[name].back_at = self.now
        for app in self.apps:
            res = self.world.get((name, app))
            if res is not None and res.orphan:
                res.grace_until = self.now + self.grace

    # ----- the invariant and liveness --------------------------------------------------

    def check(self):
        self.checks += 1
        now = self.now
        for app in self.apps:
            running = [n for n in self.names if n not in self.witnesses and self.world[(n, app)].alive(now)]
            if len(running) < 2:
                continue
            why = {n: self.excused(n, app) for n in running}
            entry = {"t": now, "app": app, "nodes": running,
                     "status": {n: self.nodes[n].status for n in running},
                     "marks": {n: sorted(self.world[(n, app)].marks) for n in running if self.world[(n, app)].marks},
                     "excused": {n: w for n, w in why.items() if w}}
            if len(running) - len(entry["excused"]) <= 1:
                if not self.gaps or self.gaps[-1]["nodes"] != running or self.gaps[-1]["app"] != app:
                    self.gaps.append(entry)
            else:
                self.violations.append(entry)
                self.trace("!!", f"VIOLATION: {app} runs on {running}")
        if self.heal_at is not None and now >= self.heal_at:
            ok = self.settled()
            if ok and self.settled_since is None:
                self.settled_since = now
            elif not ok:
                self.settled_since = None

    def excused(self, name, app):
        """Why this node's running resource does not count (None: it counts): an unleased
        resource left running by a crashed or frozen hado (module docstring), or a mark of
        a known engine gap that ``excuse`` lists (KNOWN)."""
        res = self.world[(name, app)]
        if res.orphan and (self.nodes[name].status in ("crashed", "frozen") or
                           (res.grace_until is not None and self.now < res.grace_until)):
            return "orphan"
        for mark in sorted(res.marks):
            if mark in self.excuse:
                return mark
        return None

    def settled(self):
        """Every app runs on exactly one eligible node, which reports it active."""
        for app in self.apps:
            running = [n for n in self.names if n not in self.witnesses and self.world[(n, app)].alive(self.now)]
            if len(running) != 1:
                self.liveness_problem = f"{app} runs on {running or 'no node'}"
                return False
            sn = self.nodes[running[0]]
            if sn.status != "up":
                self.liveness_problem = f"{app} runs on {sn.name}, which is {sn.status}"
                return False
            entry = sn.node.state.app_entry(app)
            if entry["role"] != states.ACTIVE or not entry["eligible"]:
                self.liveness_problem = f"{app} runs on {sn.name}, whose role is {entry['role']}"
                return False
        return True

    # ----- scenarios ------------------------------------------------------------------

    def start(self, stagger=0.3):
        for name in self.names:
            self.at(self.rng.uniform(0, stagger), self._boot, name)

    def _boot(self, name):
        if self.nodes[name].status == "down":
            self.nodes[name].boot()

    def heal(self):
        """Faults stop: links calm and whole, frozen nodes resume, crashed ones restart, all online."""
        self.apply(("heal",))
        self.apply(("net",) + (CALM[0], CALM[2], CALM[3]))
        self.triggers.clear()
        for name, sn in self.nodes.items():
            if sn.status == "frozen":
                self.resume(name, sn.inc)
            elif sn.status == "crashed":
                self.restart(name)
        for name, sn in self.nodes.items():
            if sn.status == "up" and sn.node.state.standby:
                sn.node.set_standby(False)
                sn.settle()

    def run(self, schedule=(), window=20.0, liveness=True):
        """Start the cluster, apply ``schedule`` ([(t, fault...)]) within ``window`` sim
        seconds, heal, then check liveness (unless ``liveness`` is False: the run ends at
        ``window``). Returns a :class:`Result`."""
        try:
            return self._run(schedule, window, liveness)
        except SimError as exc:
            raise SimError(f"{exc}\n" + Result(self).describe()) from None

    def _run(self, schedule, window, liveness):
        self.schedule = sorted(schedule, key=lambda f: f[0])
        self.settled_since = None
        self.start()
        for item in self.schedule:
            self.at(min(item[0], window), self.apply, tuple(item[1:]))
        self.run_until(window)
        if not liveness:
            return Result(self)
        self.heal_at = self.now
        self.heal()
        bound = self.liveness_bound()
        if self.violations and self.stop_on_violation:
            return Result(self)
        self.run_until(self.heal_at + bound + 2 * self.heartbeat)
        if not self.violations or not self.stop_on_violation:
            ok = self.settled()
            self.live = ok and self.settled_since is not None and self.settled_since <= self.heal_at + bound
            self.settled_after = None if self.settled_since is None else self.settled_since - self.heal_at
            if ok and not self.live:
                self.liveness_problem = f"settled only {self.settled_after:.2f} s after the heal"
        return Result(self)


class _PickleCopy:
    """``copy`` for hado.state while the simulator runs: State.inputs() and peer_records()
    deep-copy plain JSON-like data (three quarters of the simulator's time); a pickle
    round trip gives the same copy four times faster. The engine's code is unchanged."""

    copy = staticmethod(copy.copy)

    @staticmethod
    def deepcopy(value):
        return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


class _SeededOs:
    """``os`` for hado.peers while the simulator runs: nonces and boot ids from the
    simulation's seed, so that a run is reproducible to the byte."""

    def __init__(self, rng):
        self.rng = rng

    def urandom(self, n):
        return self.rng.getrandbits(8 * n).to_bytes(n, "big")

    def __getattr__(self, name):
        return getattr(os, name)


@contextlib.contextmanager
def patched(sim):
    """While the simulator runs: faster deep copies in hado.state (``fast_copy``), seeded
    randomness in hado.peers. Nested runs (one Sim at a time) leave them as they are."""
    if hado.peers.os is not os:
        yield
        return
    hado.peers.os = sim.os
    if sim.fast_copy:
        hado.state.copy = _PickleCopy
    try:
        yield
    finally:
        hado.peers.os = os
        hado.state.copy = copy


def quiet():
    """hado logs every decision at INFO: too much for thousands of simulated turns."""
    logging.getLogger("hado").setLevel(logging.WARNING)


# ----- random schedules (bench/sim.py; tests/test_sim.py draws its own with hypothesis) -----

TARGETS = ("holder", "starter", "starter+", "claimer")


def random_fault(rng, n, max_delay=0.2):
    """One fault of :meth:`Sim.apply`, targets drawn for a cluster of ``n`` nodes; link
    delays up to ``max_delay``."""
    def target():
        return rng.choice(TARGETS) if rng.random() < 0.5 else rng.randrange(n)
    kind = rng.choice(["isolate", "isolate", "split", "cut", "cut", "heal", "net", "crash", "restart",
                       "freeze", "freeze", "standby", "online", "move", "leave"])
    if kind == "isolate":
        return (kind, target(), rng.choice(["both", "in", "out"]))
    if kind == "split":
        return (kind, rng.randrange(1, 2 ** n - 1))
    if kind == "cut":
        return (kind, target(), rng.randrange(n), rng.random() < 0.5)
    if kind == "heal":
        return (kind,)
    if kind == "net":
        return (kind, rng.choice([0.0, 0.05, 0.2, 0.5]), round(rng.choice([0.02, 0.25, 1.0]) * max_delay, 4),
                rng.choice([0.0, 0.1]))
    if kind == "freeze":
        return (kind, target(), round(rng.uniform(0.1, 6.0), 1))
    if kind in ("restart", "online", "move"):
        return (kind, rng.randrange(n))
    return (kind, target())


def random_schedule(rng, n, window, faults=8, max_delay=0.2):
    """[(t, fault...)] with 1 to ``faults`` faults in [0, window)."""
    return sorted([(round(rng.uniform(0, window), 1),) + random_fault(rng, n, max_delay)
                   for _ in range(rng.randint(1, faults))], key=lambda f: f[0])
