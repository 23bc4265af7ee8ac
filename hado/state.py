"""The one locked table every thread writes its observations into.

Monitors, resource supervisors and the heartbeat thread write here through small
methods that each update one entry; the election loop and the API read consistent
copies (``snapshot()``, ``report()``). Every entry says what and why: a status, since
when (wall clock, for humans), a message. Decisions use monotonic times only.
"""

import collections
import copy
import datetime
import threading
import time

from . import __version__, states
from .local import not_passing, peer_status

EVENTS_KEPT = 200


def wall(ts=None):
    """An ISO-8601 UTC time for humans (never used in decisions)."""
    dt = datetime.datetime.fromtimestamp(time.time() if ts is None else ts, datetime.timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class State:
    """The state table of one node.

    ``node``, ``cluster`` and ``started`` are written once here and read by any thread
    without the lock. ``_lock`` guards every other attribute: every method takes it,
    every reader gets a copy, and no code outside this class touches them (node.py's
    thread table says who calls which writer). ``changed`` is set after any update that
    may alter a decision, and wakes the election loop.
    """

    def __init__(self, node, cluster, clock=time.monotonic):
        self.clock = clock
        self.changed = threading.Event()
        self.node = node              # constant
        self.cluster = cluster        # constant
        self.started = clock()        # constant: monotonic time the node started
        self._lock = threading.Lock()  # nothing below re-enters it (helpers named _x assume it is held)
        # --- guarded by _lock ---
        self.standby = False
        self.maintenance = False
        self.leaving = False          # SIGTERM: hado hands its apps over, then says goodbye (Node.stop)
        self.quorum = {"ok": False, "votes": 0, "needed": 1}
        self.quorum_until = None      # monotonic time when our quorum lapses (None: never lapses)
        self.lapses = 0               # quorum lapses seen so far (quorum_mark / lapsed_since)
        self.ever_quorum = False      # had quorum at least once since start (ends the start-up hold)
        self.voters = []              # peer names whose answers count as votes
        self.needed = 1               # votes needed, ours included
        self.fresh_for = 1.0          # an answer counts as a vote this long after its request was sent
        self.rejected = {}            # kind -> count, for messages from unknown senders
        self.last_rejection = None
        self.monitors = {}            # system monitors: name -> entry
        self.apps = {}                # name -> app entry
        self.peers = {}               # name -> peer entry (with the last report, kept apart)
        self.events = collections.deque(maxlen=EVENTS_KEPT)
        self.config_error = None
        self.notes = {}               # free-form facts for the status (e.g. "witness": True)

    # ----- writers -------------------------------------------------------------

    def _touch(self):
        self.changed.set()

    def event(self, what, why=""):
        with self._lock:
            self.events.append({"at": wall(), "what": what, "why": why})

    def set_flag(self, name, value):
        """standby / maintenance / leaving"""
        with self._lock:
            setattr(self, name, bool(value))
            self._touch()

    def set_note(self, key, value):
        """A fact for the state document (``witness``, ``timings``...)."""
        with self._lock:
            self.notes[key] = value

    def set_config_error(self, message):
        with self._lock:
            self.config_error = message

    def configure_quorum(self, voters, needed, fresh_for):
        with self._lock:
            self.voters, self.needed, self.fresh_for = list(voters), needed, fresh_for
            self._recompute_quorum(self.clock())

    def _recompute_quorum(self, now):
        """Votes = us + peers whose answer came to a request sent less than fresh_for ago.

        quorum_until is when the votes will drop below needed unless new answers come.
        It is computed on every answer, so readers in any thread see it exact.
        """
        # A peer that said goodbye has no vote: it answers nobody any more.
        counted = [p for p in self.voters if p in self.peers and self.peers[p]["evidence"] is not None
                   and self.peers[p].get("left") is None]
        sent = sorted((self.peers[p]["evidence"] for p in counted), reverse=True)
        fresh = [t for t in sent if now - t < self.fresh_for]
        votes = 1 + len(fresh)
        voters = sorted(p for p in counted if now - self.peers[p]["evidence"] < self.fresh_for)
        self.quorum = {"ok": votes >= self.needed, "votes": votes, "needed": self.needed, "voters": voters}
        self.ever_quorum = self.ever_quorum or self.quorum["ok"]
        if self.quorum_until is not None and now >= self.quorum_until:
            self.lapses += 1          # it lapsed since the last computation (maybe it comes back now)
        if self.needed <= 1:
            self.quorum_until = None
        elif len(sent) >= self.needed - 1:
            self.quorum_until = sent[self.needed - 2] + self.fresh_for
        else:
            self.quorum_until = self.started  # never had quorum: lapsed from the start

    def refresh_quorum(self):
        with self._lock:
            old = self.quorum["ok"]
            self._recompute_quorum(self.clock())
            if self.quorum["ok"] != old:
                self._touch()
            return dict(self.quorum)

    def add_app(self, name, resources, monitors):
        with self._lock:
            old = self.apps.get(name, {})
            entry = {
                "role": old.get("role", states.STANDBY), "active_node": old.get("active_node"),
                "eligible": old.get("eligible", False), "why_not": old.get("why_not"),
                "reason": old.get("reason", f"{name}: waiting for the first decision"),
                "decision": old.get("decision"),   # the kind of the last decision (election.KINDS)
                "epoch": old.get("epoch", 0), "desired": old.get("desired", states.STANDBY),
                "run_clones": old.get("run_clones", False),
                "failure": old.get("failure"), "move": old.get("move"), "claim_since": old.get("claim_since"),
                "monitors": {m: old.get("monitors", {}).get(m, new_monitor(vital(monitors, m))) for m in monitors},
                "resources": {r: old.get("resources", {}).get(r, new_resource()) for r in resources},
            }
            self.apps[name] = entry

    def expire_failure(self, app):
        """failure_timeout passed: forget the failure and the restart history that led to
        it (else the first death after expiry would fail the app again at once); the
        fail counts stay, for the record, until cleanup."""
        with self._lock:
            entry = self.apps[app]
            entry["failure"] = None
            for res in entry["resources"].values():
                res["restarts"] = []
            self._touch()

    def cleanup(self, app):
        """Forget the app's failure record, fail counts and restart history."""
        with self._lock:
            entry = self.apps[app]
            entry["failure"] = None
            for res in entry["resources"].values():
                res["fail_count"] = 0
                res["restarts"] = []
            self._touch()

    def remove_app(self, name):
        with self._lock:
            self.apps.pop(name, None)

    def set_monitors(self, names):
        with self._lock:
            self.monitors = {m: self.monitors.get(m, new_monitor(vital(names, m))) for m in names}

    def update_monitor(self, app, name, **fields):
        """Record a monitor's state; ``app`` None for a system monitor."""
        with self._lock:
            if app is not None and app not in self.apps:
                return   # the app was removed by a reload while its monitor's last check ran
            table = self.monitors if app is None else self.apps[app]["monitors"]
            entry = table.setdefault(name, new_monitor())
            if "ok" in fields and fields["ok"] != entry["ok"]:
                entry["since"] = wall()
                self._touch()
            entry.update(fields)

    def update_resource(self, app, name, **fields):
        with self._lock:
            entry = self.apps[app]["resources"][name]
            new = fields.get("state")
            if new is not None and new != entry["state"]:
                allowed = states.RESOURCE_EDGES[entry["state"]]
                if new not in allowed:
                    raise ValueError(f"resource {app}/{name}: illegal transition {entry['state']} -> {new} "
                                     f"(allowed: {', '.join(sorted(allowed))})")
                entry["since"] = wall()
                self._touch()
            entry.update(fields)

    def update_app(self, app, **fields):
        with self._lock:
            entry = self.apps[app]
            if any(entry.get(k) != v for k, v in fields.items()):
                self._touch()
            entry.update(fields)

    def peer_answer(self, name, sent_at, report):
        """A valid, signed answer from ``name`` to our request sent at ``sent_at``."""
        with self._lock:
            peer = self.peers.setdefault(name, new_peer())
            peer["evidence"] = max(peer["evidence"] or 0, sent_at)
            peer["left"] = None   # an answer from a live run: it is back
            if peer["report"] != report:
                self._touch()
            peer["report"] = report
            peer["claims"] = sorted(app for app, entry in report["apps"].items()
                                    if isinstance(entry, dict) and entry.get("claim")
                                    and entry.get("role") not in states.RUNNING)
            peer["holds"] = sorted(app for app, entry in report["apps"].items()
                                   if isinstance(entry, dict) and entry.get("role") in states.HOLDING)
            peer["error"] = None
            old = self.quorum["ok"]
            self._recompute_quorum(self.clock())
            if self.quorum["ok"] != old:
                self._touch()

    def peer_request(self, name, at, claims=None, holds=None):
        """A valid, signed request from ``name``: shown in the state, never evidence.

        Only answers to our own requests make a peer up: a peer whose requests reach
        us but whose answers do not (a one-way cut) must not look alive with a report
        that goes stale, or nobody would ever take its app over. The apps it claims
        and holds are its newest word, though: we pass them on in our own reports
        (``claims``, ``holders``), to nodes that may not hear it themselves.
        """
        with self._lock:
            peer = self.peers.setdefault(name, new_peer())
            peer["last_request"] = at
            if claims is not None:
                peer["claims"] = sorted(str(c) for c in claims)
            if holds is not None:
                peer["holds"] = sorted(str(c) for c in holds)

    def peer_goodbye(self, name, at):
        """``name`` said goodbye (a signed request of its live run, newer than anything
        it sent before): every resource of it is stopped and this run of it starts
        nothing any more. It is *left*: no vote, no candidate, and no holder to wait
        for (election.py); an answer from it, of a new run, makes it up again."""
        with self._lock:
            peer = self.peers.setdefault(name, new_peer())
            first = peer.get("left") is None
            peer["left"] = at
            peer["claims"], peer["holds"] = [], []
            self._recompute_quorum(self.clock())
            self._touch()
            return first

    def peer_error(self, name, kind, message):
        """An invalid message claiming to come from ``name``; None for an unknown sender."""
        with self._lock:
            if name is None:
                self.rejected[kind] = self.rejected.get(kind, 0) + 1
                self.last_rejection = message
                return
            peer = self.peers.setdefault(name, new_peer())
            peer["rejected"][kind] = peer["rejected"].get(kind, 0) + 1
            peer["error"] = message

    def peer_unreachable(self, name, message):
        with self._lock:
            self.peers.setdefault(name, new_peer())["error"] = message

    # ----- readers -------------------------------------------------------------

    def flags(self):
        """(standby, maintenance)"""
        with self._lock:
            return self.standby, self.maintenance

    def quorum_info(self):
        """(quorum as last computed, monotonic time it lapses or None)"""
        with self._lock:
            return dict(self.quorum), self.quorum_until

    def had_quorum(self):
        """True once this node has had quorum since it started."""
        with self._lock:
            return self.ever_quorum

    def holding_lapsed(self, now=None):
        """True when our quorum has lapsed: we must not claim to run anything."""
        with self._lock:
            now = self.clock() if now is None else now
            return self.quorum_until is not None and now >= self.quorum_until

    def quorum_mark(self):
        """A token for lapsed_since(): the quorum as it stands now."""
        with self._lock:
            return self.lapses

    def lapsed_since(self, mark):
        """True if our quorum lapsed at any moment since ``quorum_mark()`` returned
        ``mark``, even if new answers brought it back since: a start of a leased
        resource begun under that quorum must not take effect (plugin.cut_off)."""
        with self._lock:
            now = self.clock()
            return self.lapses != mark or (self.quorum_until is not None and now >= self.quorum_until)

    def _reported_role(self, app, now):
        """The role we tell others (and show): states.reported_role of the stored one."""
        lapsed = self.quorum_until is not None and now >= self.quorum_until
        return states.reported_role(self.apps[app]["role"], self.apps[app]["desired"], lapsed)

    def _claims_seen(self, app, peer_status):
        """Nodes claiming ``app`` as far as we know: us, and up peers whose last report claims."""
        seen = [self.node] if self.apps[app].get("claim_since") is not None else []
        for peer, status in peer_status.items():
            # the newest word wins: its last request (which lists its claims) or answer
            if status == "up" and app in ((self.peers.get(peer) or {}).get("claims") or ()):
                seen.append(peer)
        return sorted(seen)

    def _holders_seen(self, app, peer_status, now):
        """Nodes that hold ``app`` by their newest word to us (a request or an answer):
        us when we report it active, starting or stopping, and peers whose word said so,
        up or not; and, for a peer that is no longer up, a claim as its last word (its
        start may have begun right after it). A node that does not hear the holder
        itself must wait for it as for a holder of its own knowledge (election.py)."""
        seen = [self.node] if self._reported_role(app, now) in states.HOLDING else []
        for peer, status in peer_status.items():
            record = self.peers.get(peer) or {}
            if app in (record.get("holds") or ()) or (status != "up" and app in (record.get("claims") or ())):
                seen.append(peer)
        return sorted(seen)

    def my_claims(self):
        with self._lock:
            return sorted(app for app, entry in self.apps.items() if entry.get("claim_since") is not None)

    def my_holds(self):
        """The apps we hold as we report them (active, starting, stopping): every request says so."""
        with self._lock:
            now = self.clock()
            return sorted(app for app in self.apps if self._reported_role(app, now) in states.HOLDING)

    def report(self, peer_status, healthy, why_unhealthy, silent=None):
        """The compact, signed-heartbeat view of this node (see election.py).

        ``silent``: peer -> seconds since our last evidence of it (known peers only)."""
        with self._lock:
            now = self.clock()
            return {
                "node": self.node, "cluster": self.cluster, "standby": self.standby,
                "maintenance": self.maintenance, "healthy": healthy, "why_unhealthy": why_unhealthy,
                "peers": dict(peer_status), "silent": dict(silent or {}),
                "apps": {name: {"role": self._reported_role(name, now), "eligible": app["eligible"],
                                "why_not": app["why_not"], "epoch": app["epoch"],
                                "active_node": app["active_node"],
                                "claim": app.get("claim_since") is not None,
                                "claims": self._claims_seen(name, peer_status),
                                "holders": self._holders_seen(name, peer_status, now),
                                "move_to": (app["move"] or {}).get("to")}
                         for name, app in self.apps.items()},
            }

    def peer_records(self):
        with self._lock:
            return copy.deepcopy(self.peers)

    def snapshot(self, dead_after=None):
        """The state document (GET /v1/state; docs/admin.rst "Reading the state"), a deep copy."""
        with self._lock:
            now = self.clock()
            healthy = not_passing(self.monitors) is None
            status = peer_status(self.voters, self.peers, now, self.started, dead_after) if dead_after else {}
            peers = {}
            for name in sorted(set(self.voters) | set(self.peers)):
                peer = self.peers.get(name) or new_peer()
                seen = None if not peer["evidence"] else round(now - peer["evidence"], 2)
                asked = None if not peer["last_request"] else round(now - peer["last_request"], 2)
                word = status.get(name, ("unknown", None))[0]
                peers[name] = {"status": word, "up": word == "up",
                               "last_seen_s": seen, "last_request_s": asked, "error": peer["error"],
                               "rejected": dict(peer["rejected"]),
                               "left_s": None if peer.get("left") is None else round(now - peer["left"], 2)}
            apps = {}
            for name, app in self.apps.items():
                apps[name] = {
                    "role": self._reported_role(name, now), "active_node": app["active_node"],
                    "eligible": app["eligible"], "reason": app["reason"], "decision": app["decision"],
                    "epoch": app["epoch"],
                    "failure": public_expiry(app["failure"], now), "move": public_expiry(app["move"], now),
                    "monitors": {m: public_monitor(e) for m, e in app["monitors"].items()},
                    "resources": {r: public_resource(e) for r, e in app["resources"].items()},
                }
            return {
                "node": self.node, "cluster": self.cluster, "version": __version__,
                "uptime_s": round(now - self.started, 1), "healthy": healthy,
                "standby": self.standby, "maintenance": self.maintenance, "leaving": self.leaving,
                "quorum": dict(self.quorum), "peers": peers,
                "monitors": {m: public_monitor(e) for m, e in self.monitors.items()},
                "apps": apps, "events": list(self.events),
                "config_error": self.config_error,
                "rejected": {"counts": dict(self.rejected), "last": self.last_rejection},
                **copy.deepcopy(self.notes),
            }

    def app_entry(self, app):
        """A copy of one app's entry without its monitors and resources."""
        with self._lock:
            return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.apps[app].items()
                    if k not in ("monitors", "resources")}   # its values are flat but for failure/move

    def resource_entry(self, app, name):
        with self._lock:
            entry = self.apps[app]["resources"][name]
            return dict(entry, restarts=list(entry["restarts"]))   # flat but for one list

    def moves(self):
        """app -> its pending move record (this node's admin requests)."""
        with self._lock:
            return {app: dict(e["move"]) for app, e in self.apps.items() if e.get("move")}

    def inputs(self):
        """What observing needs (local.observe), one consistent copy under the lock."""
        with self._lock:
            return {
                "started": self.started, "standby": self.standby, "maintenance": self.maintenance,
                "leaving": self.leaving,
                # observe reads a peer's evidence only: copying its whole last report
                # (every app) cost 3.6 ms a call at 50 apps and 6 peers, per answer sent
                "peers": {p: {"evidence": e["evidence"], "left": e.get("left")} for p, e in self.peers.items()},
                "monitors": copy.deepcopy(self.monitors),
                "apps": {app: {"failure": copy.copy(e["failure"]), "move": copy.copy(e["move"]),
                               "other": copy.copy(e.get("other")),   # resource.py: another holder seen
                               "monitors": copy.deepcopy(e["monitors"])} for app, e in self.apps.items()},
            }


def vital(monitors, name):
    """Whether monitor ``name`` is vital, given a list of names or a dict of specs."""
    spec = monitors.get(name) if isinstance(monitors, dict) else None
    return spec.get("vital", True) if isinstance(spec, dict) else True


def new_monitor(is_vital=True):
    return {"ok": None, "since": wall(), "message": "not checked yet", "passes": 0, "fails": 0,
            "vital": is_vital, "last_check": None}


def new_resource():
    return {"state": states.STOPPED, "alive": None, "fail_count": 0, "since": wall(),
            "message": "not probed yet", "restarts": [], "promoted": False, "stop_failed": False}


def new_peer():
    return {"evidence": None, "last_request": None, "report": None, "error": None,
            "rejected": {}, "claims": [], "holds": [], "left": None}


def public_monitor(entry):
    return {"ok": entry["ok"], "since": entry["since"], "message": entry["message"],
            "vital": entry.get("vital", True)}


def public_resource(entry):
    return {"state": entry["state"], "alive": entry["alive"], "fail_count": entry["fail_count"],
            "since": entry["since"], "message": entry["message"], "promoted": entry.get("promoted", False)}


def public_expiry(record, now):
    """A failure or move record with its expiry in seconds from now."""
    if not record:
        return None
    out = {k: v for k, v in record.items() if k != "until"}
    if record.get("until") is not None:
        out["expires_in_s"] = round(max(0.0, record["until"] - now), 1)
    return out
