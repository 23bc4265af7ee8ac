"""Act: apply what the election decided, and what a turn observed, to the state table.

The election loop (main thread) is the only caller. ``Actor.record`` writes an
observation (eligibility, expired failures and moves); ``Actor.apply`` turns one
decision into the app's desired role, claim, term (epoch) and announce counter, wakes
the app's supervisor, pokes the peers, logs the sentence when it changes and tells the
notify plugins. Fencing and notifications run on threads of their own (never blocking
the loop); a fence's result comes back through ``fenced``, guarded by ``lock``.

Nothing here decides: every branch below is on a decision's ``kind`` or flags that
election.decide() set, never on a sentence.
"""

import logging
import re
import threading

from . import election, states
from .plugin import Caller, PluginError

log = logging.getLogger("hado.node")


class Actor:
    """Applies observations and decisions for one node.

    Uses of the node: ``state``, ``supervisors`` (app -> AppSupervisor, replaced on
    reload by the main thread), ``heartbeats`` (poke), ``config`` and ``registry`` (fence
    and notify plugins), ``clock``, ``wakeup``. Main thread only, except ``fenced``.
    """

    def __init__(self, node):
        self.node = node
        self.last_reason = {}        # app -> shape() of the last sentence logged; main thread only
        self.last_peer_status = {}   # peer -> up/down/unknown at the last turn; main thread only
        self.last_report = {}        # our report's apps at the last turn; main thread only
        self.lock = threading.Lock()   # guards fenced (fence threads add, the main thread reads/discards)
        self.fenced = set()          # nodes fenced since they were last up
        self.fencing = {}            # node -> thread running the fence; main thread only
        self.fence_tried = {}        # node -> monotonic time of the last attempt; main thread only

    # ----- observations ------------------------------------------------------------

    def record(self, obs):
        """Write what local.observe() found: eligibility, and forget expired records."""
        state = self.node.state
        for app, what, record in obs["expired"]:
            if what == "failure":
                state.expire_failure(app)
                state.event(f"{app}: failure expired", record["reason"])
                log.info("expired: %s: failure_timeout passed, the app may run here again", app)
            else:
                state.update_app(app, move=None)
                log.warning("expired: move of %s to %s did not complete within its time", app, record["to"])
                state.event(f"{app}: move to {record['to']} expired", "it did not complete within its time")
        for app, why in obs["why_not"].items():
            state.update_app(app, eligible=why is None, why_not=why)

    def report_changed(self, view):
        """Poke the peers when our report's apps changed: a node waiting on us (to stop,
        to see a holder gone) learns it at once, not a heartbeat later."""
        me = view["me"]
        mine = view["nodes"][me]["report"]["apps"]
        if mine != self.last_report and self.node.heartbeats:
            self.node.heartbeats.poke()
        self.last_report = mine

    def finish_moves(self, view):
        """A move is done once its target runs the app in a newer term than at the request."""
        state = self.node.state
        for app, record in state.moves().items():
            target = election.app_report(view["nodes"].get(record["to"], {}), app)
            if target.get("role") == states.ACTIVE and (target.get("epoch") or 0) > record["epoch"]:
                state.update_app(app, move=None)
                log.info("moved: %s now runs on %s", app, record["to"])
                state.event(f"{app}: moved to {record['to']}", "the admin's move is complete")

    # ----- decisions ---------------------------------------------------------------

    def apply_all(self, decisions, view):
        node = self.node
        status = {p: n["status"] for p, n in view["nodes"].items() if p != view["me"]}
        peers_changed = status != self.last_peer_status
        self.last_peer_status = status
        for app, decision in decisions.items():
            if app in node.supervisors:
                self.apply(app, decision, peers_changed)
            elif node.witness:
                node.state.update_app(app, reason=decision["reason"], decision=decision["kind"],
                                      active_node=decision["active_node"])
        if node.config["cluster"]["fence"] is not None:
            with self.lock:
                for peer in [n for n in self.fenced if status.get(n) == "up"]:
                    self.fenced.discard(peer)   # it is back: a new failure needs a new fence
            for decision in decisions.values():
                if decision.get("fence"):
                    self.fence(decision["fence"])

    def fenced_nodes(self):
        with self.lock:
            return set(self.fenced)

    def apply(self, app, decision, peers_changed):
        """One decision: desired role, claim, term and announce; wake, log, notify."""
        node, state = self.node, self.node.state
        entry = state.app_entry(app)
        kind = decision["kind"]
        desired = None if kind == "hold" else states.ACTIVE if decision["active"] else states.STANDBY
        reason = decision["reason"]
        standby, maintenance = state.flags()
        if maintenance:
            reason = f"MAINTENANCE: {reason} (resources are not started or stopped)"
        elif standby:
            reason = f"STANDBY: {reason}"
        fields = {"desired": desired, "reason": reason, "decision": kind, "active_node": decision["active_node"],
                  "run_clones": decision["run_clones"]}
        if decision["claim"] and not decision["active"]:
            if entry.get("claim_since") is None:
                fields["claim_since"] = node.clock()
                if node.heartbeats:
                    node.heartbeats.poke()
        elif entry.get("claim_since") is not None:
            fields["claim_since"] = None   # active now, or no longer the winner
        if decision["active"] and entry["desired"] != states.ACTIVE:
            fields["epoch"] = decision["epoch"]       # a new term as holder of the app
        if decision["active"] and (peers_changed or entry["desired"] != states.ACTIVE):
            fields["announce"] = entry.get("announce", 0) + 1
        state.update_app(app, **fields)
        if desired != entry["desired"] or fields.get("announce"):
            node.supervisors[app].wake.set()
        if shape(reason) != self.last_reason.get(app) or desired != entry["desired"]:
            # Only a new decision is logged and notified, not a number that grew: "node-a
            # is down (silent for 6.1 s ...)" changes every turn while node-a stays down.
            self.last_reason[app] = shape(reason)
            if desired != entry["desired"]:
                verb = ("elected" if desired == states.ACTIVE else
                        "stepping down" if entry["desired"] == states.ACTIVE else "decided")
                log.info("%s: %s", verb, reason)
                state.event(f"{app}: {verb}", reason)
            else:
                log.info("decided: %s", reason)
            self.notify(app, decision, reason)
        elif fields.get("announce"):
            self.notify(app, decision, reason)

    # ----- fencing and notifications (never block the loop) ------------------------

    def fence(self, target):
        """Run the fence plugin against ``target`` on a thread; retried every dead_after (>= 1 s)."""
        node = self.node
        with self.lock:
            if target in self.fenced:
                return
        if target in self.fencing and self.fencing[target].is_alive():
            return
        if node.clock() - self.fence_tried.get(target, -1e9) < max(1.0, node.dead_after):
            return
        self.fence_tried[target] = node.clock()
        spec = node.config["cluster"]["fence"]
        registry = node.registry

        def work():
            plugin = registry.get(spec["plugin"])
            ok, value = Caller(f"fence:{target}").call(plugin.bind("fence", spec["args"], node=target),
                                                      spec["timeout"])
            if ok and value is False:   # only raising signals failure, but False is no success either
                ok, value = False, "fence() returned False"
            if ok:
                log.warning("fenced: %s by plugin %s; it may be taken over now", target, spec["plugin"])
                node.state.event(f"fenced {target}", f"plugin {spec['plugin']} succeeded")
                with self.lock:
                    self.fenced.add(target)
            else:
                log.error("failed: fencing %s with plugin %s: %s; no takeover from it", target, spec["plugin"],
                          value)
                node.state.event(f"fencing {target} failed", str(value))
            node.wakeup.set()

        log.warning("fencing: %s stopped answering while it held an app; running %s", target, spec["plugin"])
        thread = threading.Thread(target=work, name=f"fence:{target}", daemon=True)
        self.fencing[target] = thread
        thread.start()

    def notify(self, app, decision, reason):
        node = self.node
        for spec in node.config["cluster"]["notify"]:
            event = {"app": app, "node": node.me, "active": decision["active"],
                     "active_node": decision["active_node"], "reason": reason, "cluster": node.state.cluster}
            registry = node.registry

            def work(spec=spec, event=event):
                try:
                    plugin = registry.get(spec["plugin"])
                    ok, value = Caller(f"notify:{spec['plugin']}").call(
                        plugin.bind("notify", spec["args"], event=event), spec["timeout"])
                except PluginError as exc:
                    ok, value = False, str(exc)
                if not ok:
                    log.warning("failed: notify plugin %s: %s", spec["plugin"], value)

            threading.Thread(target=work, name=f"notify:{spec['plugin']}", daemon=True).start()


def shape(reason):
    """A decision's sentence without its measured times (silences, uptimes: decimals),
    which grow every turn; names with digits (node-2, app-17) and counts stay."""
    return re.sub(r"\d+\.\d+", "#", reason)
