"""A node: wires the threads together, runs the election loop, stops in reverse.

Start order: API, heartbeats socket, app entries, monitors (first results of the vital
ones awaited), start-up probe of every resource, app supervisors, one turn, heartbeats,
leases, then READY=1. Stop order (SIGTERM): hand over (not eligible, the election runs
on while the apps stop, resources in reverse), monitors, leases, a signed goodbye to the
peers (only once nothing is held or claimed here), heartbeats, API.

One turn of the election loop (each heartbeat, or sooner when anything changed) is
three steps, each in its own module: *observe* (local.py: peer status, health,
eligibility, expiries, from one copy of the state), *decide* (election.py: every rule,
the start-up hold included, one ``kind`` and one sentence per app) and *act* (act.py:
desired role, claim, term, announce, pokes, logs, notifications). This module decides
nothing; it builds the view and runs the threads.

Who owns what. Every thread reads the state table through copies (``State`` methods,
one lock); the table below says who calls which writer. Nothing else is shared, except
where a comment at the field says what guards it.

=====================  ==================================================================
thread                 reads / writes
=====================  ==================================================================
main (election loop)   Node.run/turn/reload/stop. Writes, through act.Actor: apps'
                       desired, reason, active_node, claim_since, epoch, announce,
                       eligible, why_not, expired failure and move records; the notes
                       (set_note). Owns Node.config, supervisors, monitors (replaced on
                       reload), Actor's last_* fields. Starts fence/notify threads.
api (and one thread    Reads snapshot() and view(). Admin requests call set_standby,
per request)           set_maintenance, move, cancel_move, cleanup (State writers) and
                       resource_action (a plugin call on a Caller of its own).
peers                  Writes peer records: peer_answer (evidence, report, claims,
                       quorum), peer_request, peer_error, peer_unreachable. Reads
                       my_report() (observe() on a copy), my_claims() and my_holds().
monitor:NAME           Writes its own monitor entry (update_monitor).
resource:APP           Writes its app's resource entries (update_resource), role (only
                       through AppSupervisor.transition), failure and desired=standby
                       on failure (fail_app) or exit, and the app's "other" record (a
                       holder outside hado that other() found). Owns its Resource objects, except
                       Resource.next_check, which the leases thread may set to 0 (check
                       at once; a lost race costs one interval) and Resource.revoked_for
                       (the leases thread's alone).
leases                 Calls renew() and, at quorum loss, stop() ("revoke") of leased
(leases:APP)           resources through Callers of their own, every app at once on a
                       short-lived thread of its own each round; writes no state.
fence:NODE             Runs the fence plugin; adds to Actor.fenced under Actor.lock.
notify:PLUGIN          Runs one notify plugin call; writes nothing.
call:LABEL             One plugin call with a timeout (plugin.Caller); writes nothing.
=====================  ==================================================================
"""

import logging
import signal
import threading
import time

from . import bounds
from . import config as config_mod
from . import election, local, systemd
from .act import Actor
from .monitor import Monitor
from .peers import GOODBYE_FOR, Heartbeats
from .plugin import Caller, Registry
from .resource import AppSupervisor, Leases
from .state import State, wall

log = logging.getLogger("hado.node")


# Resource functions that only the supervisor calls (renew and announce are harmless
# to repeat, so an admin may call them too).
LIFECYCLE = ("start", "stop", "alive", "promote", "demote", "other", "validate")


class StartError(Exception):
    """The node cannot start (a port taken, an address not here); the message says what to change."""


class Node:
    def __init__(self, config, clock=time.monotonic):
        self.config = config
        self.clock = clock
        self.me = config["node"]["name"]
        cluster = config["cluster"]
        self.heartbeat = cluster["heartbeat"]
        self.dead_after = cluster["dead_after"]
        self.entry = cluster["nodes"][self.me]
        self.witness = self.entry.get("witness", False)
        self.state = State(self.me, cluster["name"], clock=clock)
        self.state.set_note("witness", self.witness)
        self.registry = Registry(config["node"]["plugin_dirs"])
        self.monitors = []
        self.monitor_stop = threading.Event()
        self.supervisors = {}
        self.heartbeats = None
        self.leases = None
        self.api = None
        self.flags = {"stop": False, "reload": False}
        self.wakeup = self.state.changed
        self.actor = Actor(self)
        self.set_timings()
        self.watchdog = systemd.watchdog_interval()   # seconds between WATCHDOG=1, or None
        self.last_ping = 0.0
        self.secret = b""
        self.token = None
        self.token_file = None

    # ----- start -------------------------------------------------------------------

    def start(self):
        cluster = self.config["cluster"]
        peers = [n for n in cluster["nodes"] if n != self.me]
        if peers:
            self.secret = config_mod.read_secret(cluster["secret_file"])
        self.read_admin_token()
        total = len(cluster["nodes"])
        needed = election.quorum(0, total, cluster["quorum"])["needed"]
        # An answer counts as a vote for D/2 after its request was sent: the timing argument
        # (docs/cluster.rst) gives an isolated node D/2 - h to stop before others start.
        self.state.configure_quorum(peers, needed, self.dead_after / 2)
        for warning in self.config.get("_warnings", []):
            log.warning("config: %s", warning)

        from .api import Api
        host, port = split_listen(self.config["node"]["listen"])
        key = self.config.get("_listen_key", "node.listen")
        try:
            self.api = Api(self, host, port)
        except OSError as exc:
            raise StartError(bind_message("the API (HTTP over TCP)", host, port, exc, key)) from None
        self.api.start()
        log.info("started: API on http://%s:%s/ (node %s, cluster %s)", host, self.api.port, self.me, cluster["name"])
        if peers:
            self.heartbeats = Heartbeats(self.state, self.me, cluster["name"], cluster["nodes"], self.secret,
                                         self.heartbeat, self.my_report, self.clock, self.state.my_claims,
                                         self.state.my_holds)
            try:
                self.heartbeats.bind(host, self.api.port)
            except OSError as exc:
                raise StartError(bind_message("heartbeats (UDP)", host, self.api.port, exc, key)) from None
        # Apps first, so that the first result of every app monitor has an entry to go to;
        # no resource starts before every vital monitor of its app has passed once.
        self.register_apps()
        self.start_monitors()
        self.start_apps(probe=True)
        # Peers hear from us only once our report is true: apps probed, eligibility known.
        # (Earlier, an empty or all-ineligible report would make them elect another node.)
        self.turn()
        if self.heartbeats:
            self.heartbeats.start()
        self.leases = Leases(self.state, self.supervisors, self.heartbeat, self.clock)
        self.leases.start()
        systemd.notify("READY=1\nSTATUS=" + self.summary())
        log.info("started: node %s is ready (%d app(s), %d peer(s))", self.me, len(self.supervisors), len(peers))

    def read_admin_token(self):
        """The admin token admin requests must carry (made at the first start when it is
        the default file), or none at all with node.admin_open, said at every start."""
        self.token_file, default = config_mod.token_file(self.config)
        self.state.set_note("admin_open", self.token_file is None)
        if self.token_file is None:
            self.token = None
            log.warning("config: node.admin_open is true: admin requests need no token; any local user can "
                        "put this node in standby or move its apps (set it to false to require %s)",
                        config_mod.token_file({**self.config, "node": {**self.config["node"], "admin_open": False}})[0])
            return
        self.token, made = config_mod.ensure_token(self.token_file) if default else \
            (config_mod.read_token(self.token_file), False)
        if made:
            log.info("started: made the admin token %s (mode 0600); admin commands (hado standby, move, ...) "
                     "read it, so they need root or read access to it", self.token_file)

    def start_monitors(self):
        self.monitor_stop = threading.Event()
        self.state.set_monitors(self.config["monitors"])
        self.monitors = []
        for name, spec in self.config["monitors"].items():
            self.monitors.append(Monitor(self.state, None, name, spec, self.registry.get(spec["plugin"]),
                                         self.monitor_stop, self.clock))
        for app, spec in self.apps_config().items():
            for name, mspec in spec["monitors"].items():
                self.monitors.append(Monitor(self.state, app, name, mspec, self.registry.get(mspec["plugin"]),
                                             self.monitor_stop, self.clock))
        for monitor in self.monitors:
            monitor.start()
        # Wait for the first result of the vital ones only: they decide what may run here.
        # Every second spent here is a second the peers do not hear from us (heartbeats
        # start after this), so a non-vital monitor, which decides nothing, is not awaited.
        vital = [m for m in self.monitors if m.spec["vital"]]
        # A check times out after its timeout; 0.5 s more lets its result reach the state.
        deadline = self.clock() + max([m.spec["timeout"] for m in vital] + [0]) + 0.5
        for monitor in vital:
            monitor.first_done.wait(max(0.0, deadline - self.clock()))

    def apps_config(self):
        return {} if self.witness else self.config["apps"]

    def register_apps(self, names=None):
        """An entry in the state table for every app (before its monitors start)."""
        if self.witness:
            # A witness runs nothing, but it reports who it believes active and which
            # claims it sees, like every node: the others count on that (election.py).
            for app in self.config["apps"]:
                self.state.add_app(app, [], [])
                self.state.update_app(app, why_not="is a witness")
            return
        for app, spec in self.apps_config().items():
            if names is None or app in names:
                self.state.add_app(app, [r["name"] for r in spec["resources"]], spec["monitors"])

    def start_apps(self, probe, names=None):
        if self.witness:
            return
        for app, spec in self.apps_config().items():
            if names is not None and app not in names:
                continue
            self.state.add_app(app, [r["name"] for r in spec["resources"]], spec["monitors"])
            self.state.update_app(app, desired=None)
            supervisor = AppSupervisor(self.state, app, spec, self.registry, self.clock)
            if probe:
                supervisor.probe()
            self.supervisors[app] = supervisor
            supervisor.start()

    # ----- the loop ----------------------------------------------------------------

    def run(self):
        """The election loop, on the main thread, until SIGTERM."""
        while not self.flags["stop"]:
            if self.flags["reload"]:
                self.flags["reload"] = False
                try:
                    self.reload()
                except Exception:  # loop boundary: a reload's bug must not end the daemon
                    log.exception("failed: reload crashed; going on")
            self.wakeup.clear()
            try:
                self.turn()
            except Exception:  # loop boundary: record it, keep electing
                log.exception("failed: election turn crashed; going on")
            self.keepalive()
            self.wakeup.wait(self.next_wait())
        self.stop()

    def keepalive(self):
        """WATCHDOG=1 to systemd, but only while every hado thread is alive."""
        if self.watchdog and self.clock() - self.last_ping >= self.watchdog and self.threads_alive():
            systemd.notify("WATCHDOG=1\nSTATUS=" + self.summary())
            self.last_ping = self.clock()

    def join(self, thread, timeout):
        """Join ``thread`` from the main thread without starving systemd's watchdog."""
        deadline = self.clock() + timeout
        while thread.is_alive() and self.clock() < deadline:
            thread.join(timeout=min(0.2, max(0.0, deadline - self.clock())))
            self.keepalive()

    def next_wait(self):
        """Sleep until the next heartbeat, or exactly until our quorum would lapse."""
        wait = self.heartbeat
        if self.watchdog:
            wait = min(wait, self.watchdog)
        now = self.clock()
        quorum, until = self.state.quorum_info()
        if until is not None and quorum["ok"]:
            # 1 ms past the lapse, so that the turn sees it lapsed (never just before it)
            wait = min(wait, max(0.005, until - now + 0.001))
        # ... and exactly when a peer turns down or a silent holder may be taken over
        # ... and when the start-up hold ends (never-heard peers turn down then too)
        hold_ends = self.state.started + self.dead_after
        if hold_ends > now:
            wait = min(wait, hold_ends - now + 0.002)
        waits = {self.dead_after} | {t["takeover_after"] for t in self.timing.values()}
        for record in self.state.peer_records().values():
            seen = record.get("evidence")
            if seen is None:
                continue
            for deadline in (seen + w for w in waits):
                if deadline > now:
                    # 2 ms past it: the peer is down / the holder taken over at that turn
                    wait = min(wait, deadline - now + 0.002)
        return wait

    def threads_alive(self):
        threads = list(self.monitors) + list(self.supervisors.values()) + [self.api.thread, self.leases]
        if self.heartbeats:
            threads.append(self.heartbeats)
        dead = [t.name for t in threads if not t.is_alive()]
        if dead:
            log.error("failed: thread(s) %s died; withholding the watchdog ping so systemd restarts hado",
                      ", ".join(dead))
        return not dead

    def observe(self, now=None):
        """local.observe() on one copy of the state, at ``now``."""
        now = self.clock() if now is None else now
        peers = [n for n in self.config["cluster"]["nodes"] if n != self.me]
        return local.observe(self.state.inputs(), now, peers, self.dead_after, self.witness)

    def my_report(self, obs=None):
        """Our signed-heartbeat report (election.py's REPORT), for the peers thread too."""
        obs = obs or self.observe()
        uptime = obs["now"] - self.state.started
        # Seconds without news of each peer; never heard of: all our uptime.
        silent = {peer: uptime if t is None else t for peer, (_, t) in obs["status"].items()}
        return self.state.report({peer: s for peer, (s, _) in obs["status"].items()}, obs["healthy"],
                                 obs["why_unhealthy"], silent=silent)

    def view(self, obs=None):
        """The election's input (election.py's VIEW), from one observation."""
        obs = obs or self.observe()
        now, status = obs["now"], obs["status"]
        cluster = self.config["cluster"]
        records = self.state.peer_records()
        nodes = {}
        for name, entry in cluster["nodes"].items():
            node = {"priority": entry["priority"], "witness": entry["witness"]}
            if name == self.me:
                node.update(status="up", silent_s=0.0, report=self.my_report(obs))
            else:
                node.update(status=status[name][0], silent_s=status[name][1],
                            report=(records.get(name) or {}).get("report"))
            nodes[name] = node
        apps = {app: {"stickiness": spec["stickiness"], "preferred": spec["preferred"], "preempt": spec["preempt"],
                      "takeover_after": self.timing[app]["takeover_after"],
                      "peer_silence": self.timing[app]["peer_silence"], "budget": self.timing[app]["budget"]}
                for app, spec in self.config["apps"].items()}
        confirmed = {}
        for app in apps:
            since = self.state.app_entry(app).get("claim_since") if app in self.supervisors else None
            confirmed[app] = sorted(p for p, r in records.items()
                                    if since is not None and (r.get("evidence") or 0) > since)
        return {"me": self.me, "quorum": self.state.refresh_quorum(), "had_quorum": self.state.had_quorum(),
                "dead_after": self.dead_after,
                "takeover_after": self.takeover, "uptime_s": now - self.state.started,
                "nodes": nodes, "apps": apps, "confirmed": confirmed}

    def set_timings(self):
        """Per app, how long a silent holder is waited for (hado/bounds.py, docs/cluster.rst)."""
        self.timing = bounds.timings(self.config)
        self.takeover = max([t["takeover_after"] for t in self.timing.values()] + [self.dead_after])
        self.state.set_note("takeover_after_s", round(self.takeover, 2))
        self.state.set_note("timings", {app: {k: t[k] for k in ("takeover_after", "peer_silence", "budget")}
                                        for app, t in self.timing.items()})

    def turn(self):
        """Observe (local.py), decide (election.py), act (act.py): one turn of the loop."""
        obs = self.observe()
        self.actor.record(obs)
        view = self.view(obs)
        self.actor.report_changed(view)
        self.actor.finish_moves(view)
        decisions = election.decide(view, fence_configured=self.config["cluster"]["fence"] is not None,
                                    fenced=self.actor.fenced_nodes())
        self.actor.apply_all(decisions, view)

    # ----- admin requests (called by the API thread) --------------------------------

    def set_standby(self, on):
        self.state.set_flag("standby", on)
        log.info("%s: node %s by admin request", "standby" if on else "online", self.me)
        self.state.event(f"node {'standby' if on else 'online'}", "admin request")

    def set_maintenance(self, on):
        self.state.set_flag("maintenance", on)
        log.warning("maintenance: %s on node %s by admin request", "on" if on else "off", self.me)
        self.state.event(f"maintenance {'on' if on else 'off'}", "admin request")
        for sup in self.supervisors.values():
            sup.wake.set()

    def move(self, app, target, ttl=60.0):
        """A one-off switchover request, published to every peer until done or expired."""
        view = self.view()
        if target not in view["nodes"]:
            raise ValueError(f"unknown node {target!r} (nodes: {', '.join(view['nodes'])})")
        why = election.why_not_candidate(view, target, app)
        if why:
            raise ValueError(f"cannot move {app} to {target}: {target} {why}")
        running = election.believed_active(view, app)
        if running == target or election.app_report(view["nodes"][target], app).get("role") in election.RUNNING:
            raise ValueError(f"{app} already runs on {target}; nothing to move")
        epoch = max((election.app_report(n, app).get("epoch") or 0) for n in view["nodes"].values())
        self.state.update_app(app, move={"to": target, "at": wall(), "epoch": epoch,
                                         "until": self.clock() + ttl})
        log.info("move: %s to %s by admin request (expires in %g s unless done)", app, target, ttl)
        self.state.event(f"{app}: move to {target}", "admin request")

    def cancel_move(self, app):
        """Forget this node's pending move of ``app``; returns the target it had."""
        move = self.state.app_entry(app).get("move")
        if not move:
            view = self.view()
            elsewhere = [f"{name} (to {election.app_report(node, app)['move_to']})"
                         for name, node in view["nodes"].items()
                         if name != self.me and election.app_report(node, app).get("move_to")]
            if elsewhere:
                raise ValueError(f"no move of {app} was requested on {self.me}; the pending one was requested on "
                                 f"{', '.join(elsewhere)}: cancel it there (hado move {app} --cancel --node NODE)")
            raise ValueError(f"no move of {app} is pending")
        self.state.update_app(app, move=None)
        log.info("move: %s to %s cancelled by admin request", app, move["to"])
        self.state.event(f"{app}: move to {move['to']} cancelled", "admin request")
        return move["to"]

    def cleanup(self, app):
        self.state.cleanup(app)
        log.info("cleanup: %s: failures and fail counts reset by admin request", app)
        self.state.event(f"{app}: cleanup", "admin request")
        self.supervisors[app].wake.set()

    def resource_action(self, app, res_name, action):
        """Call a plugin's own action (reload, ...) on a resource. The life-cycle functions
        are the supervisor's alone: called from here they would bypass it."""
        spec = next((r for r in self.config["apps"][app]["resources"] if r["name"] == res_name), None)
        if spec is None:
            names = ", ".join(r["name"] for r in self.config["apps"][app]["resources"])
            raise KeyError(f"no resource {res_name!r} in app {app!r} (resources: {names})")
        plugin = self.registry.get(spec["plugin"])
        actions = [a for a in plugin.actions() if a not in LIFECYCLE]
        if action in LIFECYCLE:
            raise ValueError(f"{action} is not an admin action: hado runs {action}() itself; use standby, "
                             f"move or maintenance instead (actions of plugin {plugin.name}: "
                             f"{', '.join(actions) or 'none'})")
        if action not in actions:
            raise ValueError(f"plugin {plugin.name} has no action {action!r} (actions: {', '.join(actions) or 'none'})")
        return Caller(f"{app}/{res_name}:{action}").call(plugin.bind(action, spec["args"]), spec["timeout"])

    # ----- reload and stop ------------------------------------------------------------

    def reload(self):
        """SIGHUP: apply the config file again, between RELOADING=1 and READY=1 (so that
        `systemctl reload hado` returns when it is done, refused or applied)."""
        # MONOTONIC_USEC: systemd 253 and newer want it with RELOADING=1; older ones ignore it.
        systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            self.apply_config_file()
        finally:
            systemd.notify("READY=1\nSTATUS=" + self.summary())

    def apply_config_file(self):
        path = self.config.get("_path")
        try:
            new = config_mod.load(path, self.me)
        except Exception as exc:   # ConfigError; anything else is a bug in load(), refused all the same
            if isinstance(exc, config_mod.ConfigError):
                errors = exc.errors
            else:
                log.exception("failed: loading %s for the reload crashed", path)
                errors = [f"{path}: cannot be loaded: {type(exc).__name__}: {exc}"]
            message = f"reload of {path} refused, still running the previous config: " + "; ".join(errors)
            log.error("failed: %s", message)
            self.state.set_config_error(message)
            self.state.event("reload refused", "; ".join(errors))
            return
        if new["cluster"] != self.config["cluster"] or new["node"] != self.config["node"]:
            log.warning("reload: cluster and node settings changed; they apply at the next restart "
                        "(systemctl restart hado); apps and monitors are applied now")
            new["cluster"], new["node"] = self.config["cluster"], self.config["node"]
        old_apps = self.apps_config()
        self.config = new
        self.registry = Registry(new["node"]["plugin_dirs"])
        self.set_timings()
        self.monitor_stop.set()
        for monitor in self.monitors:
            self.join(monitor, 1.0)
        self.register_apps(names=[a for a in self.apps_config() if a not in old_apps])
        self.start_monitors()
        new_apps = self.apps_config()
        changed = [a for a in old_apps if old_apps[a] != new_apps.get(a)]
        for app in changed:
            sup = self.supervisors.pop(app)
            sup.stop_on_exit = app not in new_apps
            sup.exit.set()
            sup.wake.set()
            self.join(sup, sum(r["stop_timeout"] + r["start_timeout"] for r in old_apps[app]["resources"]) + 5)
            if app not in new_apps:
                self.state.remove_app(app)
        self.start_apps(probe=True, names=[a for a in new_apps if a in changed or a not in old_apps])
        self.state.set_config_error(None)
        log.info("reloaded: %s (%d app(s) changed or added, %d removed)", path,
                 len([a for a in new_apps if a in changed or a not in old_apps]),
                 len([a for a in old_apps if a not in new_apps]))
        self.state.event("config reloaded", path)

    def exit_budget(self, app):
        """Seconds a stop of hado waits for ``app``'s resources to stop: every stop_timeout, + 5."""
        return sum(r["stop_timeout"] for r in self.config["apps"][app]["resources"]) + 5

    def hand_over(self):
        """SIGTERM, first step: leave as a node in standby does, with the election still
        running. The node says it is shutting down (not eligible), so its peers elect
        another node and claim while it stops its apps; each role change pokes them, so
        the new node starts the moment this one reports an app stopped. Returns when
        nothing is held here any more, or after the longest stop budget (then the
        supervisors' own exit path stops what is left, as before)."""
        if self.state.flags()[1] or not self.supervisors:
            return   # maintenance: hado stops nothing by election; no apps: nothing to hand over
        self.state.set_flag("leaving", True)
        log.info("stopping: node %s hands its apps over (not eligible from now on)", self.me)
        deadline = self.clock() + max(self.exit_budget(app) for app in self.supervisors)
        while True:
            self.wakeup.clear()
            try:
                self.turn()
            except Exception:  # loop boundary, as in run()
                log.exception("failed: election turn crashed while handing over; going on")
            self.keepalive()
            if not self.state.my_holds() or self.clock() >= deadline:
                return
            self.wakeup.wait(min(self.next_wait(), max(0.0, deadline - self.clock())))

    def stop(self):
        log.info("stopping: node %s stops its apps (resources in reverse order)", self.me)
        systemd.notify("STOPPING=1")
        self.hand_over()
        for sup in self.supervisors.values():
            sup.exit.set()
            sup.wake.set()
        for app, sup in self.supervisors.items():
            budget = self.exit_budget(app)
            self.join(sup, budget)
            if sup.is_alive():
                log.error("failed: app %s did not stop within %g s", app, budget)
        self.monitor_stop.set()
        self.leases.stopping.set()
        self.join(self.leases, 2 * self.heartbeat + 1)   # no renewal after the goodbye
        if self.heartbeats:
            held, claimed = self.state.my_holds(), self.state.my_claims()
            if held or claimed or any(sup.is_alive() for sup in self.supervisors.values()):
                log.warning("stopping: no goodbye to the peers: %s; they wait for our silence as after a crash",
                            f"{', '.join(held + claimed)} still held or claimed here" if held or claimed
                            else "an app did not stop")
            else:
                self.heartbeats.farewell.set()
            self.heartbeats.stopping.set()
            self.heartbeats.join(timeout=2 + GOODBYE_FOR)
        self.api.stop()
        log.info("stopped: node %s", self.me)

    def summary(self):
        snap = self.state.snapshot(self.dead_after)
        up = 1 + sum(1 for p in snap["peers"].values() if p["up"])
        parts = [f"{app} {entry['role']}" for app, entry in sorted(snap["apps"].items())]
        return f"{', '.join(parts) or 'no apps'}; {up}/{len(self.config['cluster']['nodes'])} nodes, " \
               f"quorum {'ok' if snap['quorum']['ok'] else 'lost'}"

    def install_signals(self):
        def on_term(signum, frame):
            self.flags["stop"] = True
            self.wakeup.set()

        def on_hup(signum, frame):
            self.flags["reload"] = True
            self.wakeup.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)


def bind_message(what, host, port, exc, key):
    """A bind error that names the address, the port, the protocol and the key to change."""
    causes = {98: "something else already listens there (another hado? ss -tulpn shows who)",
              99: f"{host} is not an address of this machine"}
    cause = causes.get(exc.errno, exc.strerror or str(exc))
    return (f"cannot listen for {what} on {host}:{port}: {cause} [errno {exc.errno}]; "
            f"change {key} in the config")


def split_listen(listen):
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)
