"""One thread per monitor: call check() every interval, with a timeout, rise and fall."""

import logging
import threading

from .plugin import Caller, PluginError, monitor_result

log = logging.getLogger("hado.monitor")


class Monitor(threading.Thread):
    """Runs one monitor and records its verdict in the state table.

    The first result is taken as it is (so a node knows its health at start-up);
    after that a passing monitor fails only after ``fall`` failures in a row and a
    failed one recovers only after ``rise`` passes in a row (flap damping).
    """

    def __init__(self, state, app, name, spec, plugin, stopping, clock):
        label = f"{app}/{name}" if app else name
        super().__init__(name=f"monitor:{label}", daemon=True)
        self.state, self.app, self.key, self.spec = state, app, name, spec
        self.label = label
        self.stopping = stopping          # an Event: set when this generation of monitors ends
        self.clock = clock
        self.check = plugin.bind("check", spec["args"])
        self.caller = Caller(self.name)
        self.first_done = threading.Event()

    def run_once(self, ok_before, passes, fails):
        """One check: returns (ok, passes, fails, message)."""
        called, value = self.caller.call(self.check, self.spec["timeout"])
        if called:
            try:
                passed, message = monitor_result(value)
            except PluginError as exc:
                passed, message = False, str(exc)
        else:
            passed, message = False, value
        passes, fails = (passes + 1, 0) if passed else (0, fails + 1)
        if ok_before is None:
            ok = passed
        elif ok_before and fails >= self.spec["fall"]:
            ok = False
        elif not ok_before and passes >= self.spec["rise"]:
            ok = True
        else:
            ok = ok_before
        return ok, passes, fails, message

    def run(self):
        ok, passes, fails = None, 0, 0
        interval = self.spec["interval"]
        while not self.stopping.is_set():
            started = self.clock()
            try:
                new_ok, passes, fails, message = self.run_once(ok, passes, fails)
                if new_ok is not ok:
                    self.report_change(ok, new_ok, message, passes, fails)
                ok = new_ok
                shown = message
                if ok and fails:
                    shown += f" ({fails} failure(s) in a row, fails at {self.spec['fall']})"
                elif not ok and passes:
                    shown += f" ({passes} pass(es) in a row, recovers at {self.spec['rise']})"
                self.state.update_monitor(self.app, self.key, ok=ok, message=shown, passes=passes,
                                          fails=fails, vital=self.spec["vital"], last_check=self.clock())
            except Exception:  # loop boundary: never let the thread die
                log.exception("failed: monitor %s crashed in its loop; going on", self.label)
            self.first_done.set()
            self.stopping.wait(max(0.0, interval - (self.clock() - started)))

    def report_change(self, old, new, message, passes, fails):
        where = f"app {self.app} monitor {self.key}" if self.app else f"monitor {self.key}"
        if new:
            verb, why = ("ok", "first check passed") if old is None else ("recovered", f"{passes} passes in a row (rise {self.spec['rise']})")
            log.info("%s: %s: %s (%s)", verb, where, message, why)
        else:
            why = "first check failed" if old is None else f"{fails} failures in a row (fall {self.spec['fall']})"
            log.warning("failed: %s: %s (%s)", where, message, why)
        self.state.event(f"{where} {'ok' if new else 'failed'}", f"{message} ({why})")
