"""One supervisor thread per app: drive its resources toward the role the election set.

Resources start in list order and stop in reverse order, so one thread per app owns
them all (two threads could not keep that order without a lock around both). The
thread checks ``alive()`` of each running resource every ``interval``, handles deaths
by ``on_fail``, and re-announces (``announce()``) when the node re-confirms itself
active. Leases are the ``leases`` thread's (class Leases, below): it renews them every
heartbeat and drops them at quorum loss, so no slow call of a supervisor delays them.
The app's role has one writer, ``AppSupervisor.transition`` (states.ROLE_EDGES).

The election writes ``desired`` into the app's entry: ``active``, ``standby`` or
``None`` (hold: observe only, used before the first decision after start-up).
"""

import logging
import threading

from . import bounds, states
from .plugin import Caller
from .state import wall

log = logging.getLogger("hado.resource")


class Resource:
    """One configured resource: its spec, plugin and call guard."""

    def __init__(self, app, spec, plugin):
        self.app, self.name, self.spec, self.plugin = app, spec["name"], spec, plugin
        self.kind = spec["kind"]
        self.leased = bool(bounds.plugin_lease(plugin, spec["args"]))   # ends by itself unless renewed
        self.revoked_for = None   # the quorum lapse (monotonic) it was dropped for; leases thread only
        # Held around stop() (supervisor or leases thread) and around renew() with its
        # checks (leases thread): a renewal decided before a stop must not land after it
        # (ipaddr's `ip addr change` re-creates a missing IPv4 address, with a new lease).
        self.lease_lock = threading.Lock()
        self.callers = {}   # action -> Caller: a hung alive() must not stop a stop()
        self.next_check = 0.0
        self.announced = 0

    def call(self, action, timeout, function=None):
        """Call plugin function ``function`` (default: ``action``) through the Caller of
        ``action``: each action has its own, so a hung alive() never blocks a stop()."""
        caller = self.callers.setdefault(action, Caller(f"{self.app}/{self.name}:{action}"))
        return caller.call(self.plugin.bind(function or action, self.spec["args"]), timeout)


class AppSupervisor(threading.Thread):
    def __init__(self, state, app, spec, registry, clock):
        super().__init__(name=f"resource:{app}", daemon=True)
        self.state, self.app, self.spec, self.clock = state, app, spec, clock
        self.resources = [Resource(app, r, registry.get(r["plugin"])) for r in spec["resources"]]
        self.wake = threading.Event()       # set by the node when the desired role changes
        self.exit = threading.Event()       # set to end the thread
        self.stop_on_exit = True            # False when a reload hands the resources over

    # ----- small helpers ---------------------------------------------------------

    def entry(self, res):
        return self.state.resource_entry(self.app, res.name)

    def set(self, res, **fields):
        self.state.update_resource(self.app, res.name, **fields)

    def say(self, level, verb, res, message):
        log.log(level, "%s: %s/%s: %s", verb, self.app, res.name, message)
        if level >= logging.INFO:
            self.state.event(f"{self.app}: {verb} {res.name}", message)

    # ----- start-up probe --------------------------------------------------------

    def probe(self):
        """Call alive() on every resource; record what runs, and publish the role it means."""
        for res in self.resources:
            ok, value = res.call("alive", res.spec["timeout"])
            if ok and isinstance(value, bool):
                self.set(res, state=states.STARTED if value else states.STOPPED, alive=value,
                         message=f"probe: {'running' if value else 'not running'}")
            else:
                message = value if not ok else f"alive() returned {value!r:.60}, expected True/False"
                self.set(res, state=states.R_FAILED, alive=None, message=f"probe failed: {message}")
            entry = self.entry(res)
            log.log(logging.WARNING if entry["state"] == states.R_FAILED else logging.INFO,
                    "probed: %s/%s: %s", self.app, res.name, entry["message"])
        self.publish_role(probing=True)

    # ----- the loop ----------------------------------------------------------------

    def run(self):
        while True:
            self.wake.clear()
            if self.exit.is_set():
                if self.stop_on_exit:
                    self.state.update_app(self.app, desired=states.STANDBY)
                    self.bring_down(keep_clones=False)
                    self.publish_role()
                return
            try:
                self.turn()
            except Exception:  # loop boundary: record, keep supervising
                log.exception("failed: supervisor of app %s crashed in its turn; going on", self.app)
            self.wake.wait(self.next_wait())

    def next_wait(self):
        """Until the next alive() check is due; the node wakes us sooner on any new decision."""
        now = self.clock()
        # Only resources that observe() checks (running, failed, unmanaged) have a due check.
        checked = (states.STARTED, states.R_FAILED, states.UNMANAGED)
        due = min([r.next_check for r in self.resources if self.entry(r)["state"] in checked] + [now + 5.0])
        return max(0.05, due - now)

    def turn(self):
        app = self.state.app_entry(self.app)
        desired = app["desired"]
        if self.state.flags()[1]:   # maintenance
            self.observe(unmanaged=True)
            return
        self.adopt()
        if desired == states.ACTIVE:
            self.bring_up(promote=True)
        elif desired == states.STANDBY:
            self.bring_down(keep_clones=app["run_clones"])
        self.observe()
        if desired == states.ACTIVE and not self.state.holding_lapsed():
            self.announce(app.get("announce", 0))
        self.publish_role()

    def bring_up(self, promote, only_clones=False):
        if not only_clones and self.role() not in states.RUNNING:
            self.transition(states.STARTING, "elected: starting its resources")
        for res in self.resources:
            if only_clones and res.kind == states.ACTIVE_STANDBY:
                continue
            if self.state.holding_lapsed() and not only_clones:
                return  # quorum lapsed under us: the next decision stops the app
            entry = self.entry(res)
            if entry["state"] != states.STARTED and not (entry["state"] == states.R_FAILED and
                                                         res.spec["on_fail"] == states.IGNORE):
                if not self.start_resource(res) and res.spec["on_fail"] != states.IGNORE:
                    return
            if promote and res.kind == states.PROMOTABLE and not self.entry(res)["promoted"]:
                if not self.action(res, "promote"):
                    return

    def bring_down(self, keep_clones):
        if self.holding() and self.role() != states.STOPPING:
            self.transition(states.STOPPING, "stopping its resources")
        for res in reversed(self.resources):
            entry = self.entry(res)
            if res.kind == states.PROMOTABLE and entry["promoted"]:
                self.action(res, "demote")
            if res.kind == states.ACTIVE_STANDBY or not keep_clones:
                if entry["state"] != states.STOPPED:
                    self.stop_resource(res)
        if keep_clones:
            self.bring_up(promote=False, only_clones=True)

    def start_resource(self, res):
        self.set(res, state=states.R_STARTING, message="start() running")
        ok, value = res.call("start", res.spec["start_timeout"])
        if ok:
            ok, value = res.call("alive", res.spec["timeout"])
            if ok and value is not True:
                ok, value = False, "start() returned but alive() says it is not running"
        if not ok:
            self.set(res, state=states.R_FAILED, alive=None, message=f"start failed: {value}")
            self.say(logging.WARNING, "failed", res, f"start failed: {value}")
            self.failure(res, f"start failed: {value}")
            return False
        res.next_check = self.clock() + res.spec["interval"]
        self.set(res, state=states.STARTED, alive=True, message="started")
        self.say(logging.INFO, "started", res, f"alive() confirms it runs (app {self.app} on this node)")
        return True

    def stop_resource(self, res):
        again = self.entry(res)["stop_failed"]
        with res.lease_lock:
            self.set(res, state=states.R_STOPPING, message="stop() running")
            ok, value = res.call("stop", res.spec["stop_timeout"])
        if not ok:
            self.set(res, state=states.R_FAILED, alive=None, stop_failed=True,
                     message=f"stop failed: {value} (retrying)")
            if not again:  # say it once, not at every retry
                self.say(logging.ERROR, "failed", res, f"stop failed: {value}; it may still run, so the app "
                                                        "stays 'stopping' here and no other node takes it")
            res.next_check = self.clock() + res.spec["interval"]
            return False
        self.set(res, state=states.STOPPED, alive=False, promoted=False, stop_failed=False, message="stopped")
        self.say(logging.INFO, "stopped", res, "stop() succeeded")
        return True

    def action(self, res, name):
        ok, value = res.call(name, res.spec["timeout"])
        if not ok:
            self.say(logging.WARNING, "failed", res, f"{name} failed: {value}")
            self.set(res, message=f"{name} failed: {value}")
            self.failure(res, f"{name} failed: {value}")
            return False
        self.set(res, promoted=(name == "promote"), message=f"{name}d")
        self.say(logging.INFO, f"{name}d", res, f"{name}() succeeded")
        return True

    def adopt(self):
        """After maintenance: take each unmanaged resource back as it is now."""
        for res in self.resources:
            if self.entry(res)["state"] == states.UNMANAGED:
                ok, value = res.call("alive", res.spec["timeout"])
                running = ok and value is True
                self.set(res, state=states.STARTED if running else states.STOPPED, alive=running,
                         message=f"managed again after maintenance ({'running' if running else 'not running'})")

    def observe(self, unmanaged=False):
        """alive() on every running resource whose interval is due; deaths go to on_fail."""
        now = self.clock()
        for res in self.resources:
            entry = self.entry(res)
            if now < res.next_check:
                continue
            if not unmanaged and entry["state"] not in (states.STARTED, states.R_FAILED, states.UNMANAGED):
                continue
            res.next_check = now + res.spec["interval"]
            ok, value = res.call("alive", res.spec["timeout"])
            if ok and not isinstance(value, bool):
                ok, value = False, f"alive() returned {value!r:.60}, expected True/False"
            if unmanaged:
                self.set(res, state=states.UNMANAGED, alive=value if ok else None,
                         message=f"maintenance: {'running' if ok and value else 'not running' if ok else value}")
                continue
            if ok and value:
                if entry["state"] == states.R_FAILED and entry["alive"] is False:
                    self.set(res, state=states.STARTED, alive=True, message="running again")
                continue
            if entry["state"] == states.STARTED and res.leased and ok and self.state.holding_lapsed():
                # Dropped by the leases thread at quorum loss, or its lease ran out: as designed.
                self.set(res, state=states.STOPPED, alive=False, message="dropped at quorum loss (leased)")
                continue
            if entry["state"] == states.STARTED:
                why = "alive() says it is not running" if ok else f"alive() failed: {value}"
                self.set(res, state=states.R_FAILED, alive=False, message=f"died: {why}")
                self.say(logging.WARNING, "failed", res, f"died: {why}")
                self.failure(res, f"died: {why}")

    def failure(self, res, why):
        """Count a failure and apply on_fail."""
        entry = self.entry(res)
        now = self.clock()
        on_fail = res.spec["on_fail"]
        self.set(res, fail_count=entry["fail_count"] + 1)
        if on_fail == states.IGNORE:
            return
        if on_fail == states.RESTART:
            window = res.spec["restart_window"]
            recent = [t for t in entry["restarts"] if now - t < window]
            if len(recent) < res.spec["max_restarts"]:
                recent.append(now)
                self.set(res, restarts=recent)
                self.say(logging.INFO, "restarting", res, f"{why} (restart {len(recent)} of "
                                                          f"{res.spec['max_restarts']} within {window:g} s)")
                self.stop_resource(res)   # clean up what is left before starting again
                self.wake.set()
                return
            why = (f"gave up: {res.name} {why}; {len(recent) + 1} failures within {window:g} s "
                   f"(max_restarts {res.spec['max_restarts']})")
        else:
            why = f"{res.name} {why} (on_fail failover)"
        self.fail_app(why)

    def fail_app(self, why):
        timeout = self.spec["failure_timeout"]
        until = self.clock() + timeout if timeout else None
        record = {"reason": why, "at": wall(), "until": until}
        self.state.update_app(self.app, failure=record, desired=states.STANDBY)
        log.error("gave up: app %s failed on this node: %s; it stays stopped here until "
                  "'hado cleanup %s'%s", self.app, why, self.app,
                  f" or {timeout:g} s pass (failure_timeout)" if timeout else "")
        self.state.event(f"{self.app}: failed on this node", why)
        self.wake.set()

    def announce(self, announce_seq):
        """Re-announce running resources (ipaddr's gratuitous ARP) when the node asks."""
        for res in self.resources:
            if self.entry(res)["state"] != states.STARTED:
                continue
            if res.plugin.function("announce") and res.announced != announce_seq:
                res.announced = announce_seq
                ok, value = res.call("announce", res.spec["timeout"])
                if not ok:
                    self.say(logging.WARNING, "failed", res, f"announce failed: {value}")

    # ----- the app's role, from its resources ------------------------------------

    def role(self):
        return self.state.app_entry(self.app)["role"]

    def holding(self):
        """True while any part of the app that must run on one node only may run here."""
        for res in self.resources:
            entry = self.entry(res)
            if res.kind == states.ACTIVE_STANDBY and (entry["state"] != states.STOPPED and entry["alive"] is not False):
                return True
            if res.kind == states.PROMOTABLE and entry["promoted"]:
                return True
        return False

    def publish_role(self, probing=False):
        app = self.state.app_entry(self.app)
        desired = app["desired"]
        exclusive = [r for r in self.resources if r.kind != states.CLONE]
        if probing or desired is None:
            running = [r for r in exclusive if self.entry(r)["state"] == states.STARTED]
            if not running:
                # a probe that failed leaves the resource maybe running: say so to peers
                role = states.STOPPING if self.holding() else states.STANDBY
            else:
                role = states.ACTIVE if len(running) == len(exclusive) else states.STARTING
        elif desired == states.ACTIVE:
            done = all(self.entry(r)["state"] == states.STARTED and
                       (r.kind != states.PROMOTABLE or self.entry(r)["promoted"]) for r in exclusive)
            role = states.ACTIVE if done else states.STARTING
        elif self.holding():
            role = states.STOPPING
        elif app["failure"]:
            role = states.FAILED
        else:
            role = states.STANDBY
        self.transition(role, app["reason"], probing=probing or desired is None)

    def transition(self, role, why, probing=False):
        """The one writer of the app's role (states.ROLE_EDGES; PROBE_EDGES while probing)."""
        old = self.role()
        if role == old:
            return
        allowed = (states.PROBE_EDGES if probing else states.ROLE_EDGES)[old]
        if role not in allowed:
            raise ValueError(f"app {self.app}: illegal role change {old} -> {role} "
                             f"(allowed: {', '.join(sorted(allowed))})")
        log.info("%s: %s: role %s -> %s", "elected" if role == states.ACTIVE else "changed", self.app, old, role)
        self.state.event(f"{self.app}: {old} -> {role}", why)
        self.state.update_app(self.app, role=role)


class Leases(threading.Thread):
    """The ``leases`` thread: renews every lease (``renew()``) every heartbeat.

    A resource with a kernel-enforced lease (ipaddr's ``valid_lft``) vanishes by itself
    unless renewed, so renewals must not wait behind a slow start or stop in the app's
    supervisor: they have this thread of their own. Renewals happen only while the app
    is desired active here and our quorum holds; a failed renewal wakes the supervisor,
    whose alive() check then handles the resource like any other failure.
    """

    def __init__(self, state, supervisors, heartbeat, clock):
        super().__init__(name="leases", daemon=True)
        self.state, self.supervisors, self.heartbeat, self.clock = state, supervisors, heartbeat, clock
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            started = self.clock()
            try:
                self.renew_all()
            except Exception:  # loop boundary
                log.exception("failed: lease renewal loop; going on")
            wait = self.heartbeat - (self.clock() - started)
            until = self.state.quorum_info()[1]
            if until is not None and until > self.clock():
                wait = min(wait, until - self.clock() + 0.001)   # wake when quorum lapses, to revoke
            self.stopping.wait(max(0.0, wait))

    def renew_all(self):
        lapsed = self.state.holding_lapsed()
        for app, sup in list(self.supervisors.items()):
            try:
                entry = self.state.app_entry(app)
            except KeyError:
                continue   # removed by a reload
            if lapsed:
                self.revoke(app, sup)
                continue
            if entry["desired"] != states.ACTIVE:
                continue
            for res in sup.resources:
                if not res.plugin.function("renew"):
                    continue
                # Never wait behind a stop (it may take stop_timeout; other apps' leases
                # must not run out meanwhile): a resource being stopped is not renewed.
                if not res.lease_lock.acquire(blocking=False):
                    continue
                try:
                    ok, value = self.renew_one(app, sup, res)
                finally:
                    res.lease_lock.release()
                if not ok:
                    log.warning("failed: %s/%s: renew failed: %s", app, res.name, value)
                    res.next_check = 0.0
                    sup.wake.set()

    def renew_one(self, app, sup, res):
        """Renew under res.lease_lock, after checking again that it may be renewed."""
        entry = sup.entry(res)
        # UNMANAGED (maintenance): hado starts and stops nothing, so it must not let a
        # lease run out either, which would stop the resource all the same.
        if not (entry["state"] == states.STARTED or (entry["state"] == states.UNMANAGED and entry["alive"])):
            return True, None
        if self.state.app_entry(app)["desired"] != states.ACTIVE or self.state.holding_lapsed():
            return True, None
        return res.call("renew", min(res.spec["timeout"], max(2 * self.heartbeat, 1.0)))

    def revoke(self, app, sup):
        """Quorum lapsed: drop every leased resource of ``app`` at once, from this thread,
        which no slow start, stop or alive() of the app's supervisor can block (the
        supervisor stops the rest, and these again, in order). A hung stop() here is
        covered by the lease itself: without renewals it ends within lease + slack."""
        lapse = self.state.quorum_info()[1]
        for res in reversed(sup.resources):
            if not res.leased or res.revoked_for == lapse or sup.entry(res)["state"] not in (
                    states.STARTED, states.R_STARTING, states.R_FAILED):
                continue
            if not res.lease_lock.acquire(blocking=False):
                continue   # the supervisor is stopping it right now
            try:
                res.revoked_for = lapse
                ok, value = res.call("revoke", res.spec["stop_timeout"], function="stop")
            finally:
                res.lease_lock.release()
            if ok:
                log.warning("revoked: %s/%s: quorum lost; dropped at once (leased resource)", app, res.name)
            else:
                log.error("failed: %s/%s: revoke at quorum loss failed: %s; its lease ends it", app, res.name, value)
            sup.wake.set()
