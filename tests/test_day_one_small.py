"""Day-one papercuts: the demo's clean stop (signals, --duration), HEAD without a body,
a broken validate() named as the plugin's bug, UTC log times, and bin/hado from any
directory. Real processes and servers on 127.0.0.1, polled with deadlines."""

import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from http.client import HTTPConnection
from pathlib import Path

import pytest

from hado import systemd
from hado.plugin import Registry
from hado.state import wall
from helpers import REPO, Daemon, free_port, http, wait_for, write_config

LAUNCHER = REPO / "bin" / "hado"


# --- the demo: a clean stop on SIGTERM, SIGHUP, a closed terminal, --duration ------------

def processes_naming(text):
    """pid -> command line of every live (not zombie) process whose argv contains ``text``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and text.encode() in cmdline:
            found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


class Output:
    """What a child writes to ``fd`` (a pipe or a pty master), read with deadlines."""

    def __init__(self, fd):
        self.fd, self.text, self.eof = fd, "", False

    def read(self, timeout):
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:          # EIO: the pty's other side is closed
            chunk = b""
        self.eof = not chunk
        self.text += chunk.decode(errors="replace")

    def wait_for(self, pattern, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            match = re.search(pattern, self.text)
            if match:
                return match
            self.read(max(0.0, min(0.2, deadline - time.monotonic())))
        match = re.search(pattern, self.text)
        assert match, f"no {pattern!r} in the demo's output within {timeout} s:\n{self.text}"
        return match

    def read_to_end(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self.read(max(0.0, min(0.2, deadline - time.monotonic())))
        return self.text


# A session leader whose controlling terminal is the pty on its stdin, then the demo in
# the same process: closing the pty's master hangs the terminal up (SIGHUP from the kernel).
ON_A_TERMINAL = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                 "os.execv(sys.executable, [sys.executable, '-m', 'hado', 'demo'])")


def start_demo(how):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "NOTIFY_SOCKET", "JOURNAL_STREAM")}
    if how == "terminal closed":
        master, slave = os.openpty()
        proc = subprocess.Popen([sys.executable, "-c", ON_A_TERMINAL], cwd=REPO, env=env, stdin=slave,
                                stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        return proc, Output(master), master
    proc = subprocess.Popen([sys.executable, "-m", "hado", "demo"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, Output(proc.stdout.fileno()), None


SAYS = {"SIGTERM": "SIGTERM", "SIGHUP": r"SIGHUP \(terminal closed\?\)", "SIGINT": "Ctrl-C"}


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "terminal closed", "SIGINT"])
def test_demo_stops_its_daemons_and_removes_its_files_on_sigterm_and_sighup(how):
    proc, out, master = start_demo(how)
    try:
        workdir = out.wait_for(r"files in (\S+)").group(1)
        urls = [m.group(1) for m in re.finditer(r"node-[abc]: (http://127\.0\.0\.1:\d+)/", out.wait_for(
            r"node-c: http://\S+/").string)]
        assert len(urls) == 3
        daemons, answered = {}, set()

        def all_answered():
            """Every daemon answered once (the demo kills node-a ~2 s after it runs 'web')."""
            daemons.update(processes_naming(os.path.join(workdir, "config.json")))
            for url in set(urls) - answered:
                try:
                    if http(url + "/v1/state", timeout=1.0)[0] == 200:
                        answered.add(url)
                except OSError:
                    pass
            return len(answered) == 3
        wait_for(all_answered, timeout=20, what="the demo's three daemons to answer")
        assert len(daemons) >= 3, daemons
        assert all(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1] == str(proc.pid)
                   for pid in daemons if alive(pid)), "the daemons are the demo's children"
        if how == "terminal closed":
            os.close(master)
            master = None
        else:
            proc.send_signal(getattr(signal, how))
        assert proc.wait(timeout=10) == 0, out.read_to_end()
        if how != "terminal closed":
            text = out.read_to_end()
            assert re.search(rf"^{SAYS[how]}: stopping the demo cluster$", text, re.M), text
            assert f"demo over: its daemons are stopped and {workdir} is removed" in text, text
        assert [pid for pid in daemons if alive(pid)] == []
        assert processes_naming(workdir) == {}
        assert not os.path.exists(workdir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if master is not None:
            os.close(master)
        if proc.stdout:
            proc.stdout.close()


def test_demo_duration_caps_the_whole_demo_even_before_the_failover():
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "hado", "demo", "--duration", "1"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stdout + out.stderr
    assert took < 4.0, f"demo --duration 1 took {took:.1f} s:\n{out.stdout}"
    assert "--duration 1 s is over before the demo showed the failover: stopping the demo cluster" in out.stdout
    assert "*** restart" not in out.stdout
    workdir = re.search(r"files in (\S+)", out.stdout).group(1)
    assert f"demo over: its daemons are stopped and {workdir} is removed" in out.stdout
    assert not os.path.exists(workdir)
    assert processes_naming(workdir) == {}


# --- HEAD: the headers a GET gets, never a body ------------------------------------------

def raw_request(port, method, path, headers=()):
    """(status, headers, bytes after the header block) of one request on its own
    connection (Connection: close, so the server's EOF ends what it sent)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall("\r\n".join(lines).encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, data[:300]
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), fields, rest


@pytest.fixture(scope="module")
def api_node(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("head")
    port = free_port()
    cfg = {"cluster": {"nodes": {"solo": {"url": f"http://127.0.0.1:{port}"}}},
           "apps": {"web": {"resources": [{"name": "r", "plugin": "dummy", "interval": 0.2,
                                           "args": {"path": str(workdir / "r"), "node": "solo"}}]}}}
    daemon = Daemon(write_config(workdir / "config.json", cfg), "solo", port, workdir).start()
    try:
        daemon.wait_ready()
        wait_for(lambda: daemon.app("web")["role"] == "active", what="web active")
        yield daemon
    finally:
        daemon.kill()


@pytest.mark.parametrize("path, headers", [
    ("/metrics", ()), ("/", ()), ("/v1/state", ()), ("/?pretty", ()), ("/", ("Accept: text/html",)),
    ("/health", ()), ("/v1/view", ()), ("/v1/apps/web", ()), ("/v1/apps/web/active", ()),
    ("/v1/apps/nope", ()), ("/no/such/path", ()),
    ("/", ("X-Long: " + "x" * 70000,)),            # http.server's own error (431), sent as JSON
])
def test_head_sends_the_headers_of_a_get_and_no_body(api_node, path, headers):
    def same_as_get():
        head_status, head_fields, head_rest = raw_request(api_node.port, "HEAD", path, headers)
        get_status, get_fields, get_body = raw_request(api_node.port, "GET", path, headers)
        assert head_rest == b"", f"HEAD {path} got a body: {head_rest[:200]!r}"
        assert int(get_fields["Content-Length"]) == len(get_body) > 0
        assert (head_status, head_fields["Content-Type"]) == (get_status, get_fields["Content-Type"])
        # the state moves on (uptime, events) between the two: retry until they match
        return head_fields["Content-Length"] == get_fields["Content-Length"]
    wait_for(same_as_get, timeout=10, what=f"HEAD {path} to announce the Content-Length of the GET")


def test_head_then_get_on_one_keep_alive_connection(api_node):
    """A body after a HEAD would be read as the next response's status line."""
    conn = HTTPConnection("127.0.0.1", api_node.port, timeout=5)
    try:
        for path in ("/metrics", "/v1/state", "/nope"):
            conn.request("HEAD", path)
            resp = conn.getresponse()
            assert resp.read() == b"" and int(resp.headers["Content-Length"]) > 0
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status in (200, 404) and len(body) == int(resp.headers["Content-Length"])
            assert body.startswith(b"# HELP" if path == "/metrics" else b"{")
    finally:
        conn.close()


# --- validate(): the plugin's own bug, or a problem in the config ------------------------

PLUGIN = '''"""A resource whose validate() is buggy or strict, depending on {mode!r}."""


def start(path, limit=3):
    pass


def stop(path, limit=3):
    pass


def alive(path, limit=3):
    return False


{validate}
'''

VALIDATES = {
    "bad_compare": 'def validate(path, limit=3):\n    return ["too low"] if limit < path else []\n',
    "bad_signature": 'def validate(path):\n    return []\n',
    "returns_true": 'def validate(path, limit=3):\n    return True\n',
    "strict": 'def validate(path, limit=3):\n    return [] if limit >= 1 else [f"limit must be >= 1, not {limit}"]\n',
    "generator": 'def validate(path, limit=3):\n    if limit < 1:\n        yield "limit must be >= 1"\n',
}


@pytest.fixture
def registry(tmp_path):
    for mode, validate in VALIDATES.items():
        (tmp_path / f"{mode}.py").write_text(PLUGIN.format(mode=mode, validate=validate))
    return Registry([tmp_path])


@pytest.mark.parametrize("mode, args, what", [
    ("bad_compare", {"path": "/x"}, "raised TypeError: '<' not supported between instances of 'int' and 'str'"),
    ("bad_signature", {"path": "/x", "limit": 2},
     "raised TypeError: validate() got an unexpected keyword argument 'limit'"),
    ("returns_true", {"path": "/x"}, "returned True instead of a list of problems"),
])
def test_a_validate_that_breaks_is_named_as_the_plugins_bug(registry, tmp_path, mode, args, what):
    errors = registry.get(mode).check_args("resource", args)
    assert errors == [(None, f"plugin '{mode}' ({tmp_path / (mode + '.py')}): its validate() {what}; "
                             f"this is a bug in the plugin, not in your config")]


def test_problems_that_validate_returns_stay_config_errors(registry):
    assert registry.get("strict").check_args("resource", {"path": "/x", "limit": 5}) == []
    assert registry.get("strict").check_args("resource", {"path": "/x", "limit": 0}) == [
        (None, "limit must be >= 1, not 0")]
    assert registry.get("generator").check_args("resource", {"path": "/x", "limit": 0}) == [
        (None, "limit must be >= 1")]
    assert registry.get("generator").check_args("resource", {"path": "/x"}) == []


def test_check_config_names_the_broken_plugin_file(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text(PLUGIN.format(mode="broken", validate=VALIDATES["bad_compare"]))
    cfg = write_config(tmp_path / "config.json", {
        "node": {"plugin_dirs": [str(plugins)]},
        "apps": {"web": {"resources": [{"name": "r", "plugin": "broken", "args": {"path": "/x"}}]}}})
    out = subprocess.run([sys.executable, "-m", "hado", "check-config", str(cfg)], cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2, out.stdout + out.stderr
    assert (f"apps.web.resources[0].args: plugin 'broken' ({plugins / 'broken.py'}): its validate() raised "
            f"TypeError: ") in out.stdout
    assert "this is a bug in the plugin, not in your config" in out.stdout


# --- log lines: UTC with a Z, as the events; the journal format has no time --------------

FORMAT_IN_ANOTHER_ZONE = """
import logging, sys, time
from hado import systemd
handler = systemd.setup_logging("info", stream=sys.stdout, journal=False)
record = logging.LogRecord("hado.test", logging.INFO, "x.py", 1, "elected node-a", None, None)
record.created, record.msecs, record.threadName = 1796223845.123, 123.0, "peers"
print(time.strftime("%z"))
print(handler.format(record))
logging.getLogger("hado.peers").warning("peer node-b: no answer")
"""


def test_foreground_log_lines_carry_utc_times_marked_z_whatever_the_zone():
    env = dict(os.environ, TZ="Asia/Kolkata")        # UTC+05:30: local time would show 20:34
    env.pop("JOURNAL_STREAM", None)
    out = subprocess.run([sys.executable, "-c", FORMAT_IN_ANOTHER_ZONE], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    zone, line, live = out.stdout.splitlines()
    assert zone == "+0530"
    assert line == "2026-12-02T15:04:05.123Z INFO [peers] elected node-a"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING \[MainThread\] peer node-b: no answer", live)


def test_log_time_is_the_format_of_the_state_events():
    formatter = systemd.PlainFormatter()
    for created in (0.0, 1796223845.123, 1796223845.9999, time.time()):
        record = logging.LogRecord("hado.test", logging.INFO, __file__, 1, "x", None, None)
        record.created = created
        assert formatter.formatTime(record) == wall(created)
    journal = systemd.JournalFormatter().format(logging.LogRecord("hado.t", logging.INFO, __file__, 1, "x",
                                                                  None, None))
    assert journal == "<6>[MainThread] x"          # journald adds the time itself


# --- bin/hado: from any directory, through a symlink; hado.service uses it --------------

def run_launcher(argv, cwd="/"):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)


def test_bin_hado_runs_from_any_directory_and_through_a_symlink(tmp_path):
    from hado import __version__
    assert os.access(LAUNCHER, os.X_OK), "bin/hado must be executable"
    link_dir = tmp_path / "usr-local-bin"
    link_dir.mkdir()
    (link_dir / "hado").symlink_to(LAUNCHER)
    relative = tmp_path / "relative-hado"
    relative.symlink_to(os.path.relpath(LAUNCHER, tmp_path))
    port = free_port()
    cfg = write_config(tmp_path / "config.json", {
        "cluster": {"nodes": {"n1": {"url": f"http://127.0.0.1:{port}"}}}, "node": {"name": "n1"},
        "apps": {"web": {"resources": [{"name": "r", "plugin": "dummy", "args": {"path": str(tmp_path / "r")}}]}}})
    for launcher in (str(LAUNCHER), str(link_dir / "hado"), str(relative)):
        for argv in ([launcher], [sys.executable, launcher]):     # its shebang, and as ExecStart runs it
            version = run_launcher(argv + ["--version"])
            assert (version.returncode, version.stdout.strip()) == (0, f"hado {__version__}"), version.stderr
            checked = run_launcher(argv + ["check-config", str(cfg)], cwd=tmp_path)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert f"{cfg}: ok (1 node(s), 1 app(s)" in checked.stdout
            plugins = run_launcher(argv + ["plugins", "--config", str(cfg)])
            assert re.search(r"^dummy\s+resource: ", plugins.stdout, re.M), plugins.stdout + plugins.stderr


def test_hado_service_runs_the_launcher_and_needs_no_working_directory():
    service = (REPO / "hado.service").read_text()
    settings = [line.split("=", 1) for line in service.splitlines() if "=" in line and not line.startswith("#")]
    exec_start = [value for key, value in settings if key == "ExecStart"]
    assert exec_start == ["/usr/bin/python3 /opt/hado/bin/hado --config /etc/hado/config.json"]
    assert "WorkingDirectory" not in dict(settings)
    assert not any(key == "Environment" and "PYTHONPATH" in value for key, value in settings)
    # the installed tree is this one copied to /opt/hado: the launcher is part of it
    assert exec_start[0].split()[1].replace("/opt/hado", str(REPO)) == str(LAUNCHER)


def test_demo_started_through_the_launcher_from_elsewhere_stops_on_its_duration():
    out = run_launcher([str(LAUNCHER), "demo", "--duration", "0.5"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "--duration 0.5 s is over" in out.stdout
    assert not os.path.exists(re.search(r"files in (\S+)", out.stdout).group(1))
