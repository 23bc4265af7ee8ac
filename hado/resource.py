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

Another holder (``other()``, class Guard): right before it starts a resource that runs
on one node only, or promotes one, the supervisor asks that plugin's ``other()`` (and,
before the app's first such step here, the ``other()`` of each app monitor with
``"other": true``) whether someone else runs it. A sentence (or a failure) refuses the
step and goes into the app's entry as ``other``; local.py then counts the node as not
eligible for the app, so the election may pick another node. The supervisor asks again
every ``interval`` of that resource or monitor, whatever the election decides meanwhile,
and drops the record at the first None.
"""

import logging
import threading
import time

from . import bounds, states
from .plugin import Caller, short
from .state import wall

log = logging.getLogger("hado.resource")

OTHER_TIMEOUT = 2.0   # seconds at most for one other() call (less when the entry's timeout is shorter)


class Guard:
    """One ``other()`` to ask before this node takes the app: a resource's, or an app
    monitor's. ``by`` names it in sentences (``vip``, ``monitor http``); ``enabled`` is
    the config's ``other`` key; ``interval`` is how often a refusal is asked again."""

    def __init__(self, app, by, plugin, spec, enabled):
        self.by, self.plugin, self.args, self.enabled = by, plugin, spec["args"], enabled
        self.timeout = min(OTHER_TIMEOUT, spec["timeout"])
        self.interval = spec["interval"]
        self.caller = Caller(f"{app}/{by}:other")   # its own slot: a hung other() blocks no stop()

    def ask(self):
        """(record or None, seconds it took): None when nobody else runs it; else the
        record for the app's entry: ``by``, ``message`` and ``failed`` (other() raised,
        hung or returned something else than None or a sentence)."""
        began = time.monotonic()
        ok, value = self.caller.call(self.plugin.bind("other", self.args), self.timeout)
        took = time.monotonic() - began
        if ok and value is None:
            return None, took
        if ok and isinstance(value, str) and value.strip():
            return {"by": self.by, "message": short(value.strip(), 300), "failed": False}, took
        why = value if not ok else f"it returned {value!r:.60}, expected None or a sentence"
        return {"by": self.by, "message": f"other() failed: {why}", "failed": True}, took


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
        # Asked before start (active-standby) or promote (promotable); a clone runs everywhere.
        self.guard = (Guard(app, self.name, plugin, spec, spec.get("other", True))
                      if plugin.function("other") and self.kind != states.CLONE else None)

    def call(self, action, timeout, function=None, cutoff=None):
        """Call plugin function ``function`` (default: ``action``) through the Caller of
        ``action``: each action has its own, so a hung alive() never blocks a stop().
        ``cutoff``: see plugin.cut_off."""
        caller = self.callers.setdefault(action, Caller(f"{self.app}/{self.name}:{action}"))
        return caller.call(self.plugin.bind(function or action, self.spec["args"]), timeout, cutoff)


class AppSupervisor(threading.Thread):
    def __init__(self, state, app, spec, registry, clock):
        super().__init__(name=f"resource:{app}", daemon=True)
        self.state, self.app, self.spec, self.clock = state, app, spec, clock
        self.resources = [Resource(app, r, registry.get(r["plugin"])) for r in spec["resources"]]
        self.monitor_guards = []            # app monitors with "other": true, asked before the app's first step
        for name, mon in (spec.get("monitors") or {}).items():
            if mon.get("other"):
                plugin = registry.get(mon["plugin"])
                if plugin.function("other"):
                    self.monitor_guards.append(Guard(app, f"monitor {name}", plugin, mon, True))
                else:
                    log.warning("config: apps.%s.monitors.%s.other is true, but plugin %s has no other(): "
                                "nothing to ask", app, name, plugin.name)
        self.other_next = None              # clock() when the refusal in the app's "other" is asked again
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
        if self.other_next is not None:
            due = min(due, self.other_next)
        return max(0.05, due - now)

    def turn(self):
        app = self.state.app_entry(self.app)
        desired = app["desired"]
        if self.state.flags()[1]:   # maintenance
            self.observe(unmanaged=True)
            return
        self.adopt()
        self.recheck_other(desired)
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
                if res.kind == states.ACTIVE_STANDBY and not self.nobody_else(res, "start"):
                    return
                if not self.start_resource(res) and res.spec["on_fail"] != states.IGNORE:
                    return
            if promote and res.kind == states.PROMOTABLE and not self.entry(res)["promoted"]:
                if not self.nobody_else(res, "promote"):
                    return
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

    # ----- another holder (other()) ------------------------------------------------

    def nobody_else(self, res, action):
        """Right before ``action`` (start or promote) of ``res``: True when no other() says
        that someone else runs it. Asks the app monitors' guards first when nothing of the
        app holds here yet, then the resource's own. A refusal is recorded (refused())
        and asked again once its interval has passed, not at every turn."""
        guards = ([] if self.holding() else list(self.monitor_guards)) + ([res.guard] if res.guard else [])
        for guard in guards:
            if not guard.enabled:
                log.warning("unchecked: %s/%s: %s without asking other() (\"other\": false in its config)",
                            self.app, res.name, action)
                continue
            record = self.state.app_entry(self.app).get("other")
            if record and record["by"] == guard.by and self.other_next is not None \
                    and self.clock() < self.other_next:
                return False   # refused less than an interval ago
            found, took = guard.ask()
            if found is not None:
                self.refused(guard, res, action, found)
                return False
            log.info("checked: %s/%s: other() of %s finds no other holder before the %s (%.3f s)",
                     self.app, res.name, guard.by, action, took)
            if record and record["by"] == guard.by:
                self.cleared(record)
        return True

    def refused(self, guard, res, action, found):
        """Record that ``guard`` refused ``action`` of ``res``: the app's entry (which makes
        the node ineligible, local.py), the resource's message, one log line and event per
        change of the sentence."""
        self.other_next = self.clock() + guard.interval
        found = dict(found, resource=res.name, action=action)
        old = self.state.app_entry(self.app).get("other")
        self.state.update_app(self.app, other=found)
        about = "" if guard.by == res.name else f"{guard.by}: "
        self.set(res, message=f"{action} refused: {about}{found['message']} (asked again every {guard.interval:g} s)")
        if old is None or (old["by"], old["message"]) != (found["by"], found["message"]):
            log.warning("refused: %s/%s: no %s, other() of %s says: %s; asked again every %g s, and this node "
                        "is not eligible for %s meanwhile%s", self.app, res.name, action, guard.by, found["message"],
                        guard.interval, self.app,
                        "" if found["failed"] else " (a false positive? \"other\": false turns the check off)")
            self.state.event(f"{self.app}: {action} of {res.name} refused", f"{guard.by}: {found['message']}")

    def cleared(self, record):
        """The guard that refused now finds nobody: forget the refusal (eligible again)."""
        self.other_next = None
        self.state.update_app(self.app, other=None)
        log.info("cleared: %s: other() of %s finds no other holder any more (was: %s); this node is eligible "
                 "for %s again", self.app, record["by"], record["message"], self.app)
        self.state.event(f"{self.app}: other holder gone", f"{record['by']}: was: {record['message']}")
        res = next((r for r in self.resources if r.name == record.get("resource")), None)
        if res is not None and self.entry(res)["state"] != states.STARTED:
            self.set(res, message=f"no other holder any more (was: {record['message']})")

    def recheck_other(self, desired):
        """While the app is not desired here, ask a refusing guard again every interval (when
        it is desired, bring_up asks before the start anyway)."""
        record = self.state.app_entry(self.app).get("other")
        if not record:
            self.other_next = None   # none, or dropped by a reload
            return
        if desired == states.ACTIVE or (self.other_next is not None and self.clock() < self.other_next):
            return
        res = next((r for r in self.resources if r.name == record.get("resource")), None)
        guard = next((g for g in self.monitor_guards + [r.guard for r in self.resources if r.guard]
                      if g.by == record["by"]), None)
        if res is None or guard is None or not guard.enabled:   # a reload changed the config
            self.cleared(record)
            return
        found, _ = guard.ask()
        if found is None:
            self.cleared(record)
        else:
            self.refused(guard, res, record.get("action", "start"), found)

    # ----- start and stop ------------------------------------------------------------

    def start_resource(self, res):
        self.set(res, state=states.R_STARTING, message="start() running")
        cutoff = None
        if res.leased:
            # A leased resource must not come into being after the quorum it was started
            # under lapsed: the takers' wait counts its lease from our last word, not
            # from when a slow start returns (plugin.cut_off; engine gaps 2 and 3).
            mark = self.state.quorum_mark()
            cutoff = lambda: self.state.lapsed_since(mark)   # noqa: E731
        ok, value = res.call("start", res.spec["start_timeout"], cutoff=cutoff)
        if cutoff is not None and cutoff():
            # Whatever the start did (an address added just before the lapse) goes at
            # once; no failure is counted: the app did nothing wrong.
            with res.lease_lock:
                stopped, why = res.call("stop", res.spec["stop_timeout"])
            self.set(res, state=states.STOPPED if stopped else states.R_FAILED, alive=False if stopped else None,
                     stop_failed=not stopped,
                     message="start cut off: the quorum lapsed during start()" + ("" if stopped else
                                                                                 f"; stop failed: {why}"))
            self.say(logging.WARNING, "cut off", res, "the quorum lapsed during start(): stopped again at once"
                     + ("" if stopped else f" (stop failed: {why}; its lease ends it)"))
            return False
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
        began = time.monotonic()
        with res.lease_lock:
            self.set(res, state=states.R_STOPPING, message="stop() running")
            ok, value = res.call("stop", res.spec["stop_timeout"])
        if ok:   # stop() says done: believe it once alive() no longer says it runs
            value = self.still_runs(res, began)
            ok = value is None
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

    def still_runs(self, res, began):
        """After a stop() that returned: None once alive() does not say True (asked every
        0.1 s until stop_timeout after the stop began, each call within the resource's
        timeout), else why the stop failed. An alive() that fails or hangs does not fail
        the stop: stop() said it worked and nothing says otherwise."""
        deadline = began + res.spec["stop_timeout"]
        while True:
            ok, value = res.call("alive", min(res.spec["timeout"], max(deadline - time.monotonic(), 0.5)))
            if not (ok and value is True):
                return None
            if time.monotonic() >= deadline:
                return (f"stop() returned, but alive() says it still runs {res.spec['stop_timeout']:g} s after "
                        "the stop began")
            time.sleep(0.1)

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
        """One round: every app's renewals (or revocations) at once, one short-lived
        thread per app that has leased resources, and wait for them all. One after
        another, a round of many leases took longer than a lease on a loaded machine
        (tests/test_scale.py: 15 apps on one node, leases of 2 s): the last ones ran out."""
        lapsed = self.state.holding_lapsed()
        work = [(app, sup) for app, sup in list(self.supervisors.items())
                if any(res.plugin.function("renew") for res in sup.resources) and (lapsed or self.desired(app))]
        if len(work) <= 1:
            for app, sup in work:
                self.renew_app(app, sup, lapsed)
            return
        threads = [threading.Thread(target=self.renew_app_safely, args=(app, sup, lapsed), name=f"leases:{app}",
                                    daemon=True) for app, sup in work]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()   # each renew() and stop() is bounded by its Caller's timeout

    def desired(self, app):
        try:
            return self.state.app_entry(app)["desired"] == states.ACTIVE
        except KeyError:
            return False   # removed by a reload

    def renew_app_safely(self, app, sup, lapsed):
        try:
            self.renew_app(app, sup, lapsed)
        except Exception:  # thread boundary
            log.exception("failed: lease renewal of app %s; going on", app)

    def renew_app(self, app, sup, lapsed):
        try:
            entry = self.state.app_entry(app)
        except KeyError:
            return     # removed by a reload
        if lapsed:
            self.revoke(app, sup)
            return
        if entry["desired"] != states.ACTIVE:
            return
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
        mark = self.state.quorum_mark()
        if self.state.app_entry(app)["desired"] != states.ACTIVE or self.state.holding_lapsed():
            return True, None
        # With the same cut-off as a leased start: a renewal that reaches the kernel
        # after the quorum lapsed (the call's thread was slow to run, hado froze in
        # between) must not extend the lease; a plugin that renews in Python checks it
        # right before the kernel call (plugin.check_cut_off), run() before each program.
        return res.call("renew", min(res.spec["timeout"], max(2 * self.heartbeat, 1.0)),
                        cutoff=lambda: self.state.lapsed_since(mark))

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
