"""The install story end to end, against a real systemd (PID 1 of a container).

One container for the whole module; the tests run in file order and each one starts
from "hado installed and running, managing its unit" (the ``running`` fixture makes
that so when a test is run alone). What they do is what docs/admin.rst tells an admin
to do: the repository is bound at ``/opt/hado``, ``/etc/hado/config.json`` names an
app whose only resource is a real unit (``hado-demo-web.service``, a small web
server) driven by the ``systemd`` plugin, and ``systemctl enable --now
/opt/hado/hado.service`` installs hado. A drop-in lowers ``WatchdogSec=`` to 3 s so
the watchdog test takes seconds, not tens of seconds.

The figures (start-up, restart after kill -9, watchdog kill to active again, the
unit restarted by hado) are printed at the end of the module.
"""

import contextlib
import json
import re
import time
from pathlib import Path

import pytest

import nspawn

pytestmark = pytest.mark.systemd

REPO = Path(__file__).resolve().parent.parent
HADO = "hado.service"
WEB, API = "hado-demo-web.service", "hado-demo-api.service"
WEB_PORT, API_PORT = 8099, 8098
CONFIG = "/etc/hado/config.json"
WATCHDOG_SEC = 3
INTERVAL = 1.0
FIGURES = {}          # name -> seconds, printed when the module is done

UNIT_PROPS = ("ActiveState", "SubState", "Result", "MainPID", "NRestarts",
              "ActiveEnterTimestampMonotonic", "ExecMainStartTimestampMonotonic")


def demo_unit(port):
    """A unit for hado to manage. Restart=no: restarting it is hado's job, not systemd's;
    no [Install] section: hado alone starts it, it is never enabled."""
    return (f"[Unit]\nDescription=HA-DO demo web server on port {port}\n"
            f"[Service]\nExecStart=/usr/bin/python3 -m http.server {port} --bind 127.0.0.1\n"
            "Restart=no\n")


def app(unit, interval=INTERVAL):
    return {"resources": [{"name": "svc", "plugin": "systemd", "args": {"unit": unit},
                           "interval": interval}]}


def config(**apps):
    return {"cluster": {"nodes": {"n1": {"url": "http://127.0.0.1:6185"}}},
            "node": {"name": "n1"},
            "apps": apps}


BASE_CONFIG = config(web=app(WEB))


def config_text(cfg):
    return json.dumps(cfg, indent=2) + "\n"


# --- helpers ---------------------------------------------------------------------------

STATE_SCRIPT = """
import sys, urllib.request
try:
    print(urllib.request.urlopen("http://127.0.0.1:6185/v1/state", timeout=3).read().decode())
except OSError as exc:
    sys.exit(f"no answer: {exc}")
"""


def state(box):
    """hado's /v1/state from inside the container (no curl there), or None if no answer."""
    proc = box.run(["python3", "-c", STATE_SCRIPT], check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def resource(snap, app_name="web"):
    return snap["apps"][app_name]["resources"]["svc"]


def app_running(snap, app_name="web"):
    """The state document says: app active here, its resource started."""
    return (snap is not None and app_name in snap["apps"]
            and snap["apps"][app_name]["role"] == "active"
            and resource(snap, app_name)["state"] == "started")


def wait_state(box, predicate, timeout=15.0, what="hado's state"):
    """Poll /v1/state until ``predicate(snap)``; return that snap. On timeout the
    error carries the last state and the tail of hado's journal."""
    seen = {}

    def check():
        seen["snap"] = state(box)
        return seen["snap"] if seen["snap"] is not None and predicate(seen["snap"]) else None
    try:
        return box.wait_until(check, timeout=timeout, interval=0.1, what=what)
    except nspawn.ContainerError as exc:
        snap = seen.get("snap")
        brief = None if snap is None else {"apps": snap["apps"], "config_error": snap["config_error"]}
        raise AssertionError(f"{exc}\nlast state: {json.dumps(brief)[:1500]}\n"
                             f"journal:\n{box.journal(HADO, lines=30)}") from None


def props(box, unit):
    return box.show(unit, props=UNIT_PROPS)


def seconds(usec):
    return int(usec) / 1_000_000


def since(t0, usec, observed):
    """Seconds from host time ``t0`` to a systemd monotonic timestamp (host and container
    share CLOCK_MONOTONIC); the polled ``observed`` figure if the timestamp is not sane."""
    value = seconds(usec) - t0
    return value if 0 < value <= observed + 0.5 else observed


def admin(box, command, check=True):
    """A shell command as an admin types it, from / with the documented symlink
    (ln -s /opt/hado/bin/hado /usr/local/bin/hado; docs/admin.rst "Install")."""
    return box.run(["sh", "-c", f"ln -sf /opt/hado/bin/hado /usr/local/bin/hado && cd / && {command}"],
                   check=check)


def count(text, fragment):
    return text.count(fragment)


# --- fixtures --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def box(request):
    reason = nspawn.skip_reason()
    if reason:
        pytest.skip(f"no container: {reason}")
    with nspawn.Container("hado-e2e", REPO) as container:
        container.install_unit(WEB, demo_unit(WEB_PORT), reload=False)
        container.install_unit(API, demo_unit(API_PORT), reload=False)
        # what "systemctl edit hado" would write (under /etc); /run keeps it with the container
        container.write("/run/systemd/system/hado.service.d/override.conf",
                        f"[Service]\nWatchdogSec={WATCHDOG_SEC}\n")
        container.systemctl("daemon-reload")
        container.write(CONFIG, config_text(BASE_CONFIG))
        yield container
    report_figures(request.config)


def report_figures(config):
    """Print FIGURES on the terminal, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if not (reporter and FIGURES):
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_line("systemd end-to-end figures (seconds):")
        for name, value in FIGURES.items():
            reporter.write_line(f"  {name}: {value:.2f}")


@pytest.fixture
def running(box):
    """hado installed, active, managing the running web unit with the base config."""
    if box.systemctl("is-enabled", "--quiet", HADO, check=False).returncode != 0:
        box.systemctl("enable", "--now", "/opt/hado/hado.service")
    box.systemctl("start", HADO)
    snap = wait_state(box, app_running, what="web active, its unit started")
    assert box.show(WEB)["ActiveState"] == "active"
    return snap


# --- the tests, in the order an admin meets them ----------------------------------------

def test_enable_now_starts_hado_and_hado_starts_the_unit(box):
    checked = admin(box, f"hado check-config {CONFIG}")
    assert checked.returncode == 0 and "this node: n1 (from node.name)" in checked.stdout
    assert box.show(WEB)["ActiveState"] == "inactive"

    t0 = time.monotonic()
    box.systemctl("enable", "--now", "/opt/hado/hado.service")   # returns after READY=1
    enable_took = time.monotonic() - t0
    hado = props(box, HADO)
    assert (hado["ActiveState"], hado["SubState"]) == ("active", "running")
    assert box.systemctl("is-enabled", HADO).stdout.strip() == "enabled"
    assert box.show(HADO, props=("Type", "WatchdogUSec")) == {"Type": "notify",
                                                              "WatchdogUSec": f"{WATCHDOG_SEC}s"}
    FIGURES["enable --now returned (hado active)"] = enable_took
    FIGURES["hado exec to READY=1 (systemd timestamps)"] = \
        seconds(hado["ActiveEnterTimestampMonotonic"]) - seconds(hado["ExecMainStartTimestampMonotonic"])

    snap = wait_state(box, app_running, what="web active, its unit started")
    FIGURES["enable --now to web active in /v1/state"] = time.monotonic() - t0
    web = props(box, WEB)
    assert (web["ActiveState"], web["SubState"]) == ("active", "running")
    assert snap["node"] == "n1" and snap["config_error"] is None
    assert resource(snap)["fail_count"] == 0
    # the managed unit serves, and the admin's status command sees the app
    served = box.run(["python3", "-c", "import urllib.request; print(urllib.request.urlopen("
                                       f"'http://127.0.0.1:{WEB_PORT}/').status)"])
    assert served.stdout.strip() == "200"
    status = admin(box, "hado status")
    assert "web" in status.stdout and "active" in status.stdout
    journal = box.journal(HADO)
    assert "started: node n1 is ready" in journal
    assert "started: web/svc" in journal


def test_stop_hado_stops_the_unit_and_start_starts_it_again(box, running):
    box.systemctl("stop", HADO)           # returns once hado has stopped its apps and exited
    hado = props(box, HADO)
    assert (hado["ActiveState"], hado["Result"]) == ("inactive", "success")
    assert box.show(WEB)["ActiveState"] == "inactive"
    assert "stopped: web/svc: stop() succeeded" in box.journal(HADO)

    box.systemctl("start", HADO)
    assert props(box, HADO)["ActiveState"] == "active"
    snap = wait_state(box, app_running, what="web active again after systemctl start hado")
    assert resource(snap)["message"] == "started"
    assert box.show(WEB)["ActiveState"] == "active"


def test_unit_killed_behind_hados_back_is_restarted_within_its_interval(box, running):
    before = props(box, WEB)
    assert resource(running)["fail_count"] == 0
    t0 = time.monotonic()
    box.systemctl("kill", "-s", "KILL", WEB)    # Restart=no: systemd leaves it dead
    snap = wait_state(box, lambda s: resource(s)["fail_count"] == 1 and app_running(s),
                      timeout=10, what="web/svc restarted by hado (fail_count 1)")
    observed = time.monotonic() - t0
    after = props(box, WEB)
    assert after["ActiveState"] == "active" and after["MainPID"] != before["MainPID"]
    took = since(t0, after["ActiveEnterTimestampMonotonic"], observed)
    assert took < INTERVAL + 2.0, f"hado took {took:.2f} s to restart the unit (interval {INTERVAL} s)"
    FIGURES["unit killed to restarted by hado"] = took
    journal = box.journal(HADO)
    assert "failed: web/svc: died: alive() says it is not running" in journal
    assert "restarting: web/svc: died: alive() says it is not running (restart 1 of 3" in journal


def test_kill_9_of_hado_restarts_it_and_it_keeps_the_running_unit(box, running):
    hado, web = props(box, HADO), props(box, WEB)
    t0 = time.monotonic()
    box.run(["kill", "-9", hado["MainPID"]])
    box.wait_for(HADO, timeout=15, ActiveState="active", NRestarts=str(int(hado["NRestarts"]) + 1))
    observed = time.monotonic() - t0
    after = props(box, HADO)
    assert after["MainPID"] != hado["MainPID"]
    FIGURES["kill -9 of hado to active again"] = since(t0, after["ActiveEnterTimestampMonotonic"], observed)

    snap = wait_state(box, app_running, what="web active after hado's restart")
    assert resource(snap)["message"] == "probe: running"    # adopted, not started
    assert resource(snap)["fail_count"] == 0
    time.sleep(INTERVAL * 1.5)                                   # a check or two later
    web_after = props(box, WEB)
    for key in ("ActiveState", "MainPID", "ActiveEnterTimestampMonotonic"):
        assert web_after[key] == web[key], f"{WEB} was bounced: {key} {web[key]} -> {web_after[key]}"
    journal = box.journal(HADO, lines=40)
    assert "probed: web/svc: probe: running" in journal
    assert "Failed with result 'signal'" in journal


def test_a_frozen_hado_is_killed_by_the_watchdog_and_restarted(box, running):
    hado, web = props(box, HADO), props(box, WEB)
    journal = box.journal(HADO)
    fired, dumped = count(journal, "Failed with result 'watchdog'"), count(journal, "Fatal Python error: Aborted")
    t0 = time.monotonic()
    box.run(["kill", "-STOP", hado["MainPID"]])
    box.wait_for(HADO, timeout=WATCHDOG_SEC + 15, ActiveState="active",
                 NRestarts=str(int(hado["NRestarts"]) + 1))
    observed = time.monotonic() - t0
    after = props(box, HADO)
    assert after["MainPID"] != hado["MainPID"]
    took = since(t0, after["ActiveEnterTimestampMonotonic"], observed)
    FIGURES["SIGSTOP of hado to active again (watchdog)"] = took
    assert WATCHDOG_SEC / 2 < took < WATCHDOG_SEC + 10
    journal = box.journal(HADO)
    assert f"hado.service: Watchdog timeout (limit {WATCHDOG_SEC}s)!" in journal
    assert count(journal, "Failed with result 'watchdog'") == fired + 1
    assert re.search(rf"Killing process {hado['MainPID']} \(python3\) with signal SIGABRT", journal)
    # Environment=PYTHONFAULTHANDLER=1: the SIGABRT prints every thread's stack first; the
    # main loop's is the one with run_daemon (any thread may be "Current thread"). Best
    # effort: the other threads run on (SIGCONT) while it is written, and now and then
    # reading one of their frames crashes the dump ("Segmentation fault", status=11/SEGV).
    assert count(journal, "Fatal Python error: Aborted") == dumped + 1
    dump = journal[journal.rfind("Fatal Python error: Aborted"):]
    if "Fatal Python error: Segmentation fault" not in dump:
        assert re.search(r'  File "/opt/hado/hado/node.py", line \d+ in run\n'
                         r'  File "/opt/hado/hado/cli.py", line \d+ in run_daemon\n', dump), dump[:3000]
    assert "hado.service: Watchdog timeout" in box.journal(HADO, priority="err")

    snap = wait_state(box, app_running, what="web active after the watchdog restart")
    assert resource(snap)["message"] == "probe: running"
    web_after = props(box, WEB)
    assert (web_after["MainPID"], web_after["ActiveEnterTimestampMonotonic"]) == \
           (web["MainPID"], web["ActiveEnterTimestampMonotonic"])


def test_reload_applies_a_changed_config_and_refuses_a_broken_one(box, running):
    hado_pid = box.main_pid(HADO)
    web = props(box, WEB)
    try:
        # 1. a second app, and a changed interval for the first: applied, nothing bounced
        box.write(CONFIG, config_text(config(web=app(WEB, interval=2.0), api=app(API))))
        assert admin(box, f"hado check-config {CONFIG}").returncode == 0
        box.systemctl("reload", HADO)
        snap = wait_state(box, lambda s: app_running(s, "api") and app_running(s, "web"),
                          what="the second app active after the reload")
        assert snap["config_error"] is None
        assert any(e["what"] == "config reloaded" for e in snap["events"])
        assert box.show(API)["ActiveState"] == "active"
        assert box.main_pid(HADO) == hado_pid                   # reloaded, not restarted
        assert props(box, WEB)["MainPID"] == web["MainPID"]     # web kept running through it

        # 2. a broken config: check-config names the mistake; reload keeps the old config
        broken = config_text(config(web=app(WEB, interval=2.0), api=app(API))).replace(
            '"interval"', '"intervall"', 1)
        box.write(CONFIG, broken)
        checked = admin(box, f"hado check-config {CONFIG}", check=False)
        assert checked.returncode == 2
        assert "apps.web.resources[0].intervall: unknown key" in checked.stdout
        box.systemctl("reload", HADO)
        snap = wait_state(box, lambda s: s["config_error"] is not None, what="config_error after the reload")
        assert snap["config_error"].startswith(f"reload of {CONFIG} refused, still running the previous config")
        assert "apps.web.resources[0].intervall: unknown key" in snap["config_error"]
        assert app_running(snap, "web") and app_running(snap, "api")
        assert props(box, HADO)["ActiveState"] == "active" and box.main_pid(HADO) == hado_pid
        errors = box.run(["journalctl", "-u", "hado", "-p", "err", "--no-pager", "-q", "-o", "cat"]).stdout
        assert f"failed: reload of {CONFIG} refused" in errors
        assert "CONFIG ERROR: reload of" in admin(box, "hado status").stdout
    finally:
        # 3. back to the first config: the api app goes (hado stops its unit), the error clears
        box.write(CONFIG, config_text(BASE_CONFIG))
        box.systemctl("reload", HADO)
    snap = wait_state(box, lambda s: s["config_error"] is None and "api" not in s["apps"] and app_running(s),
                      what="the base config applied again")
    box.wait_for(API, timeout=10, ActiveState="inactive")
    assert props(box, WEB)["MainPID"] == web["MainPID"]
    assert box.main_pid(HADO) == hado_pid



def test_a_broken_config_at_start_fails_at_once_and_says_why(box, running):
    """hado exits 2 on a config error; RestartPreventExitStatus=2: no pointless restarts
    (which would end in "start request repeated too quickly"); fixed, it starts at once."""
    box.systemctl("stop", HADO)
    restarts = count(box.journal(HADO), "Scheduled restart job")
    broken = config_text(BASE_CONFIG).replace('"interval"', '"intervall"', 1)
    box.write(CONFIG, broken)
    try:
        failed = box.systemctl("start", HADO, check=False)
        assert failed.returncode != 0 and "Job for hado.service failed" in failed.stderr
        time.sleep(1.5)                                      # > RestartSec: no restart comes
        hado = box.show(HADO, props=("ActiveState", "SubState", "Result", "ExecMainStatus"))
        assert hado == {"ActiveState": "failed", "SubState": "failed", "Result": "exit-code",
                        "ExecMainStatus": "2"}
        assert count(box.journal(HADO), "Scheduled restart job") == restarts
        errors = box.journal(HADO, priority="err")
        assert f"failed: config {CONFIG} has 1 error(s); not starting:" in errors
        assert "  apps.web.resources[0].intervall: unknown key" in errors
        assert box.show(WEB)["ActiveState"] == "inactive"   # stopped with hado, not started
    finally:
        box.write(CONFIG, config_text(BASE_CONFIG))
    box.systemctl("start", HADO)                             # no reset-failed needed
    wait_state(box, app_running, what="web active once the config is fixed")



SLOW_UNIT = "hado-demo-slow.service"
SLOW_START = 2 * WATCHDOG_SEC + 1        # seconds its ExecStartPre takes


def install_slow_unit(box):
    box.install_unit(SLOW_UNIT, f"[Service]\nExecStartPre=/bin/sleep {SLOW_START}\n"
                                "ExecStart=/bin/sleep infinity\nRestart=no\n")


def test_a_unit_left_starting_is_not_taken_for_stopped_after_a_restart(box, running):
    """hado killed while its unit was starting: systemd finishes that start job. The new
    hado's probe must not record the unit as stopped (is-active says "activating", exit
    3), or it would never stop it when the app is to run elsewhere or hado stops."""
    install_slow_unit(box)
    try:
        box.systemctl("stop", HADO)
        box.write(CONFIG, config_text(config(web=app(WEB), slow=app(SLOW_UNIT))))
        box.systemctl("start", "--no-block", SLOW_UNIT)       # the start job left behind
        assert box.show(SLOW_UNIT)["ActiveState"] == "activating"
        box.systemctl("start", HADO)
        box.systemctl("stop", HADO)                # stops whatever may run: the slow unit too
        assert box.show(SLOW_UNIT)["ActiveState"] in ("inactive", "failed")   # failed: SIGTERM in start-pre
        probed = [line for line in box.journal(HADO).splitlines() if "probed: slow/svc" in line]
        assert probed and probed[-1].endswith(f"probe failed: systemctl is-active {SLOW_UNIT}: the unit is "
                                   "activating (start-pre), neither running nor stopped"), probed
    finally:
        box.write(CONFIG, config_text(BASE_CONFIG))
        box.systemctl("start", HADO)
    wait_state(box, app_running, what="web active with the base config again")


# --- the watchdog and the main thread: fed while it waits, never starved ----------------

def hado_stays_up(box, pid, restarts, seconds_):
    """hado keeps its main PID and restart count for ``seconds_``; else AssertionError."""
    deadline = time.monotonic() + seconds_
    while time.monotonic() < deadline:
        now = props(box, HADO)
        assert (now["MainPID"], now["NRestarts"]) == (pid, restarts), \
            f"hado was restarted:\n{box.journal(HADO, lines=12)}"
        time.sleep(0.2)


def test_a_slow_heartbeat_does_not_starve_the_watchdog(box, running):
    """The loop pings at least every WatchdogSec/2 even when cluster.heartbeat is longer."""
    slow = config(web=app(WEB))
    slow["cluster"].update(heartbeat=WATCHDOG_SEC + 1, dead_after=3 * (WATCHDOG_SEC + 1))
    try:
        box.write(CONFIG, config_text(slow))
        box.systemctl("restart", HADO)                # cluster settings apply at a restart
        wait_state(box, app_running, what="web active with the slow heartbeat")
        hado = props(box, HADO)
        hado_stays_up(box, hado["MainPID"], hado["NRestarts"], 2 * WATCHDOG_SEC + 1)
    finally:
        box.write(CONFIG, config_text(BASE_CONFIG))
        box.systemctl("restart", HADO)
        wait_state(box, app_running, what="web active with the base config again")


def test_reload_during_a_slow_start_does_not_trip_the_watchdog(box, running):
    """A reload that changes an app waits on the main thread for the app's supervisor to
    finish its current start() (up to start_timeout); it keeps pinging meanwhile. Before
    that fix systemd killed hado mid-reload, and a hado killed while removing an app
    forgot the app but left its unit running."""
    start_takes = SLOW_START
    install_slow_unit(box)
    try:
        box.write(CONFIG, config_text(config(web=app(WEB), slow=app(SLOW_UNIT))))
        box.systemctl("reload", HADO)
        wait_state(box, lambda s: "slow" in s["apps"] and resource(s, "slow")["state"] == "starting",
                   what="the slow app starting")
        hado = props(box, HADO)
        # change the slow app while its start() runs: hado must wait for it, pinging
        box.write(CONFIG, config_text(config(web=app(WEB), slow=app(SLOW_UNIT, interval=2.0))))
        box.systemctl("reload", HADO)
        hado_stays_up(box, hado["MainPID"], hado["NRestarts"], start_takes + 1)
        wait_state(box, lambda s: app_running(s, "slow"), what="the slow app active")
    finally:
        # once the start is over, so that a failure above does not repeat in the clean-up
        box.wait_until(lambda: box.show(SLOW_UNIT)["ActiveState"] != "activating",
                       timeout=start_takes + 5, what=f"{SLOW_UNIT} started")
        box.wait_for(HADO, timeout=15, ActiveState="active")    # in case it was restarted
        box.write(CONFIG, config_text(BASE_CONFIG))
        box.systemctl("reload", HADO)
        wait_state(box, lambda s: "slow" not in s["apps"] and app_running(s),
                   timeout=start_takes + 10, what="the base config applied again")
        box.wait_for(SLOW_UNIT, timeout=10, ActiveState="inactive")
