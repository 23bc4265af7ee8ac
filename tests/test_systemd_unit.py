"""hado.systemd, the systemd plugin and hado.service: against real sockets and a real systemd.

The tests marked ``systemd`` boot one throw-away container (tests/nspawn.py) for the
module and skip with the reason when this machine cannot (not root, no systemd-nspawn,
no debootstrap, no tree).
"""

import logging
import os
import re
import secrets
import socket
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from hado import systemd
from hado.plugin import PluginError, Registry
import nspawn

REPO = Path(__file__).resolve().parent.parent


# --- sd_notify against real datagram sockets -------------------------------------------

@pytest.fixture
def clean_env(monkeypatch):
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def receiver(address):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_notify_without_notify_socket_does_nothing(clean_env):
    assert systemd.notify("READY=1") is False


def test_notify_sends_one_datagram_to_a_socket_path(clean_env, tmp_path):
    path = str(tmp_path / "notify")
    with receiver(path) as sock:
        clean_env.setenv("NOTIFY_SOCKET", path)
        assert systemd.notify("READY=1\nSTATUS=web active on node-ä") is True
        assert sock.recv(4096) == "READY=1\nSTATUS=web active on node-ä".encode()


def test_notify_reaches_an_abstract_socket_named_with_at(clean_env):
    name = f"hado-test-{secrets.token_hex(6)}"
    with receiver("\0" + name) as sock:
        clean_env.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("WATCHDOG=1") is True
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_to_a_missing_socket_returns_false_and_logs_at_debug(clean_env, tmp_path, caplog):
    clean_env.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    with caplog.at_level(logging.DEBUG, logger="hado.systemd"):
        assert systemd.notify("READY=1") is False
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "could not send 'READY=1'" in caplog.text


@pytest.mark.parametrize("value", ["relative/path", "vsock:2:1234"])
def test_notify_ignores_an_address_it_cannot_use(clean_env, value):
    clean_env.setenv("NOTIFY_SOCKET", value)
    assert systemd.notify("READY=1") is False


def test_notify_never_raises_on_unencodable_text(clean_env, tmp_path):
    path = str(tmp_path / "notify")
    with receiver(path):
        clean_env.setenv("NOTIFY_SOCKET", path)
        assert systemd.notify("STATUS=\udcff") is False


@pytest.mark.parametrize("usec, pid, expected", [
    (None, None, None),
    ("10000000", None, 5.0),
    ("10000000", "self", 5.0),
    ("10000000", "1", None),          # inherited from a parent that systemd watches
    ("3000000", "self", 1.5),
    ("0", None, None),
    ("ten", None, None),
    ("10000000", "x", None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(clean_env, usec, pid, expected):
    if usec is not None:
        clean_env.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        clean_env.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert systemd.watchdog_interval() == expected


# --- log format ------------------------------------------------------------------------

@pytest.fixture
def root_logger():
    """Restore the root logger's handlers and level after a test changed them."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield root
    root.handlers[:], level = saved
    root.setLevel(level)


def make_record(level, msg, thread="peers", exc_info=None):
    record = logging.LogRecord("hado.test", level, __file__, 1, msg, None, exc_info)
    record.threadName = thread
    return record


@pytest.mark.parametrize("level, prefix", [
    (logging.CRITICAL, "<3>"), (logging.ERROR, "<3>"), (logging.WARNING, "<4>"),
    (logging.INFO, "<6>"), (logging.DEBUG, "<7>"),
])
def test_journal_formatter_prefixes_the_syslog_priority_and_thread(level, prefix):
    line = systemd.JournalFormatter().format(make_record(level, "elected node-a for web"))
    assert line == f"{prefix}[peers] elected node-a for web"


def test_journal_formatter_keeps_the_prefix_on_every_line_of_a_traceback():
    try:
        raise RuntimeError("plugin exploded")
    except RuntimeError:
        record = make_record(logging.ERROR, "failed: web/vip\nsecond line", "resource:web/vip",
                             exc_info=sys.exc_info())
    lines = systemd.JournalFormatter().format(record).split("\n")
    assert lines[0] == "<3>[resource:web/vip] failed: web/vip"
    assert lines[1] == "<3>[resource:web/vip] second line"
    assert lines[2] == "<3>[resource:web/vip] Traceback (most recent call last):"
    assert lines[-1] == "<3>[resource:web/vip] RuntimeError: plugin exploded"
    assert all(line.startswith("<3>[resource:web/vip] ") for line in lines)


def test_setup_logging_uses_journal_format_when_journal_stream_is_our_stdout(
        clean_env, root_logger, tmp_path):
    out = open(tmp_path / "log", "w+")
    info = os.fstat(out.fileno())
    clean_env.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    systemd.setup_logging("info", stream=out)
    threading.current_thread().name, saved = "peers", threading.current_thread().name
    try:
        logging.getLogger("hado.peers").info("elected node-a")
        logging.getLogger("hado.peers").debug("not shown at info")
        logging.getLogger("hado.peers").warning("peer node-b: bad signature")
    finally:
        threading.current_thread().name = saved
    out.seek(0)
    assert out.read() == "<6>[peers] elected node-a\n<4>[peers] peer node-b: bad signature\n"


@pytest.mark.parametrize("journal_stream", [None, "1:2"])
def test_setup_logging_writes_plain_timestamped_lines_elsewhere(
        clean_env, root_logger, tmp_path, journal_stream):
    """Plain lines when JOURNAL_STREAM is unset or names another file (a redirected child)."""
    if journal_stream:
        clean_env.setenv("JOURNAL_STREAM", journal_stream)
    out = open(tmp_path / "log", "w+")
    systemd.setup_logging("DEBUG", stream=out)
    logging.getLogger("hado.x").debug("probing web/vip")
    out.seek(0)
    text = out.read()
    assert text.endswith(f" DEBUG [{threading.current_thread().name}] probing web/vip\n")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z DEBUG \[\S+\] probing web/vip\n", text)


def test_setup_logging_again_replaces_its_handler_and_refuses_unknown_levels(root_logger, tmp_path):
    first = systemd.setup_logging("info", stream=open(tmp_path / "a", "w"), journal=False)
    second = systemd.setup_logging("warning", stream=open(tmp_path / "b", "w"), journal=True)
    assert first not in root_logger.handlers and second in root_logger.handlers
    assert root_logger.level == logging.WARNING
    assert isinstance(second.formatter, systemd.JournalFormatter)
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        systemd.setup_logging("loud")


# --- the systemd plugin: loading and arguments (no systemd needed) ----------------------

def plugin():
    return Registry().get("systemd")


def test_systemd_plugin_is_a_resource_with_a_reload_action():
    loaded = plugin()
    assert loaded.kinds == ["resource"]
    assert loaded.actions() == ["reload"]
    assert loaded.summary.startswith("A systemd unit:")


def test_systemd_plugin_arguments_are_checked():
    assert plugin().check_args("resource", {"unit": "nginx.service"}) == []
    assert plugin().check_args("resource", {"unit": "x.service", "systemctl": ["systemctl", "--user"],
                                            "timeout": 5}) == []
    problems = [message for _key, message in plugin().check_args("resource", {"unti": "nginx"})]
    assert any("unknown argument" in p for p in problems)
    assert any("missing argument 'unit'" in p for p in problems)
    for args, fragment in (({"unit": "--force"}, "not a unit name"),
                           ({"unit": ""}, "unit must be a unit name"),
                           ({"unit": "a", "systemctl": "systemctl"}, "argv list"),
                           ({"unit": "a", "timeout": 0}, "positive number")):
        problems = [message for _key, message in plugin().check_args("resource", args)]
        assert any(fragment in p for p in problems), (args, problems)


def test_systemd_plugin_reports_a_missing_systemctl():
    with pytest.raises(PluginError, match="no-such-systemctl: command not found"):
        plugin().bind("alive", {"unit": "x.service", "systemctl": ["no-such-systemctl"]})()


# --- against a real systemd in a container ----------------------------------------------

@pytest.fixture(scope="module")
def box():
    reason = nspawn.skip_reason()
    if reason:
        pytest.skip(f"no container: {reason}")
    with nspawn.Container("hado-unit", REPO) as container:
        yield container


@pytest.fixture
def unit_in(box):
    """Call the plugin from the host with systemctl pointed into the container."""
    def call(fname, unit):
        return plugin().bind(fname, {"unit": unit, "systemctl": box.nsenter + ["systemctl"],
                                     "timeout": 30})()
    return call


@pytest.mark.systemd
def test_plugin_starts_checks_and_stops_a_real_unit(box, unit_in):
    box.install_unit("sleeper.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    assert unit_in("alive", "sleeper.service") is False
    unit_in("start", "sleeper.service")
    assert unit_in("alive", "sleeper.service") is True
    assert box.show("sleeper.service")["SubState"] == "running"
    unit_in("stop", "sleeper.service")
    assert unit_in("alive", "sleeper.service") is False
    assert box.show("sleeper.service")["ActiveState"] == "inactive"
    unit_in("stop", "sleeper.service")          # already stopped: still a success


@pytest.mark.systemd
def test_plugin_stop_of_a_unit_that_does_not_exist_succeeds(unit_in):
    unit_in("stop", "no-such-thing.service")
    assert unit_in("alive", "no-such-thing.service") is False


@pytest.mark.systemd
def test_plugin_start_failure_carries_systemctl_exit_code_message_and_result(box, unit_in):
    box.install_unit("broken.service", "[Service]\nType=notify\nExecStart=/bin/sh -c 'exit 3'\n")
    with pytest.raises(PluginError) as failure:
        unit_in("start", "broken.service")
    message = str(failure.value)
    assert message.startswith("systemctl start broken.service: exit code 1: Job for broken.service "
                              "failed because the control process exited with error code.")
    assert message.endswith("(unit now failed, result exit-code)")
    with pytest.raises(PluginError, match=r"exit code 5: .*Unit missing\.service not found\. "
                                          r"\(unit not-found\)"):
        unit_in("start", "missing.service")


@pytest.mark.systemd
def test_plugin_start_is_not_blocked_by_systemd_start_rate_limit(box, unit_in):
    """hado counts restarts itself (max_restarts); systemd's StartLimitBurst must not win."""
    box.install_unit("flaky.service", "[Unit]\nStartLimitBurst=1\nStartLimitIntervalSec=1h\n"
                                      "[Service]\nType=oneshot\nExecStart=/bin/false\n")
    for _attempt in range(3):
        with pytest.raises(PluginError, match=r"result exit-code\)$"):
            unit_in("start", "flaky.service")


@pytest.mark.systemd
def test_plugin_reload_runs_execreload(box, unit_in):
    box.install_unit("reloadable.service", "[Service]\nExecStart=/bin/sleep infinity\n"
                                           "ExecReload=/bin/sh -c 'echo reloaded >> /run/reloads'\n")
    unit_in("start", "reloadable.service")
    try:
        plugin().bind("reload", {"unit": "reloadable.service",
                                 "systemctl": box.nsenter + ["systemctl"]})()
        assert box.read("/run/reloads") == "reloaded\n"
    finally:
        unit_in("stop", "reloadable.service")
    box.install_unit("noreload.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    unit_in("start", "noreload.service")
    try:
        with pytest.raises(PluginError, match="systemctl reload noreload.service: exit code 3: "
                                              ".*reload is not applicable"):
            unit_in("reload", "noreload.service")
    finally:
        unit_in("stop", "noreload.service")


@pytest.mark.systemd
def test_plugin_runs_inside_the_container_with_plain_systemctl(box):
    """The way hado uses it: the plugin file from /opt/hado, systemctl from PATH."""
    box.install_unit("inner.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, "/opt/hado")
        from hado.plugin import Registry
        systemd = Registry().get("systemd")
        args = {"unit": "inner.service"}
        systemd.bind("start", args)()
        print(systemd.bind("alive", args)())
        systemd.bind("stop", args)()
        print(systemd.bind("alive", args)())
    """)
    assert box.run(["python3", "-c", script]).stdout.split() == ["True", "False"]


@pytest.mark.systemd
def test_hado_service_passes_systemd_analyze_verify(box):
    """verify exits 0 even when it ignores a bad line, so its stderr must be empty."""
    proc = box.run(["systemd-analyze", "verify", "/opt/hado/hado.service"], check=False)
    assert (proc.returncode, proc.stderr) == (0, "")
    # ... and the check would notice a bad line:
    box.write("/run/bad-hado.service", "[Service]\nType=notify\nWatchdogSec=ten\n"
                                       "ExecStart=/usr/bin/python3 -m hado\n")
    bad = box.run(["systemd-analyze", "verify", "/run/bad-hado.service"], check=False)
    assert (bad.returncode, bad.stderr) == (
        0, "/run/bad-hado.service:3: Failed to parse sec value, ignoring: ten\n")


NOTIFYING_DAEMON = """
import logging, os, sys, time
sys.path.insert(0, "/opt/hado")
from hado import systemd
systemd.setup_logging("debug")
log = logging.getLogger("hado.test")
interval = systemd.watchdog_interval()
log.debug("watchdog every %s s", interval)
log.info("started: probe done")
log.warning("peer node-b: no answer")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed: web/vip")
systemd.notify("READY=1\\nSTATUS=web active")
while True:
    time.sleep(interval)
    systemd.notify("WATCHDOG=1")
"""


@pytest.mark.systemd
def test_notify_watchdog_and_journal_levels_under_real_systemd(box):
    """Type=notify waits for our READY=1; our pings keep WatchdogSec=1 happy; journald
    reads our <N> prefixes, traceback lines included."""
    box.write("/run/notifying.py", NOTIFYING_DAEMON)
    box.install_unit("notifying.service", "[Service]\nType=notify\nNotifyAccess=main\nWatchdogSec=1\n"
                                          "ExecStart=/usr/bin/python3 /run/notifying.py\n")
    box.systemctl("start", "notifying.service")     # returns only after READY=1
    try:
        assert box.show("notifying.service", props=("StatusText",)) == {"StatusText": "web active"}
        before = box.show("notifying.service")
        box.run(["sleep", "2.5"])                     # > WatchdogSec: alive only if pings arrive
        after = box.show("notifying.service")
        assert (after["ActiveState"], after["MainPID"], after["NRestarts"]) == \
               ("active", before["MainPID"], "0")
        errors = box.journal("notifying.service", priority="err").splitlines()
        assert errors[0] == "[MainThread] failed: web/vip"
        assert errors[1] == "[MainThread] Traceback (most recent call last):"
        assert errors[-1] == "[MainThread] ZeroDivisionError: division by zero"
        everything = box.journal("notifying.service", output="with-unit")
        assert "[MainThread] watchdog every 0.5 s" in everything
        warnings = box.journal("notifying.service", priority="warning..warning")
        assert warnings == "[MainThread] peer node-b: no answer\n"
        assert "<6>" not in everything and "<3>" not in everything
    finally:
        box.systemctl("stop", "notifying.service")


# --- the container helper's own guard --------------------------------------------------

def test_skip_reason_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(nspawn.os, "geteuid", lambda: 1000)
    assert nspawn.skip_reason() == "needs root (systemd-nspawn and debootstrap)"
    monkeypatch.setattr(nspawn.os, "geteuid", lambda: 0)
    monkeypatch.setattr(nspawn.shutil, "which", lambda tool: None if tool == "systemd-nspawn" else "/x")
    assert nspawn.skip_reason() == ("systemd-nspawn not found "
                                    "(apt-get install --no-install-recommends systemd-container)")
