"""The built-in plugins against real files, processes, sockets and HTTP servers.

Every plugin is loaded and called the way the engine does it: through
``Registry().get(name)``, ``plugin.check_args(kind, args)`` and ``plugin.bind(fname, args)()``.
"""

import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from hado.plugin import PluginError, Registry

REGISTRY = Registry()


def call(name, fname, args):
    return REGISTRY.get(name).bind(fname, args)()


def errors(name, kind, args):
    """The error messages check_args gives, without their keys.

    check_args gives (key, message) pairs, but a bare string for a plugin of the wrong
    kind (reported to the lead engineer); accept both.
    """
    return [error if isinstance(error, str) else error[1]
            for error in REGISTRY.get(name).check_args(kind, args)]


def wait_for(condition, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# --- loading ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, kinds", [
    ("dummy", ["resource"]),
    ("command", ["monitor", "resource"]),
    ("process", ["monitor", "resource"]),
    ("tcp_port", ["monitor"]),
    ("http", ["monitor"]),
    ("disk_space", ["monitor"]),
])
def test_builtin_has_its_kinds_and_a_one_line_summary(name, kinds):
    plugin = REGISTRY.get(name)
    assert plugin.kinds == kinds
    assert plugin.summary != "(no docstring)" and plugin.summary.endswith((".", ")"))
    assert len(plugin.doc.splitlines()) > 3, "the help text names the arguments"


# --- dummy -----------------------------------------------------------------------------

def log_lines(path):
    with open(f"{path}.log") as f:
        return [line.split() for line in f]


def test_dummy_start_writes_monotonic_time_and_logs_it(tmp_path):
    path = str(tmp_path / "res")
    before = time.monotonic_ns()
    call("dummy", "start", {"path": path, "node": "node-a"})
    after = time.monotonic_ns()
    with open(path) as f:
        content = f.read()
    assert content.endswith("\n")
    assert before <= int(content) <= after
    assert log_lines(path) == [[content.strip(), "start", "node-a"]]
    assert call("dummy", "alive", {"path": path}) is True


def test_dummy_start_of_a_running_resource_changes_nothing(tmp_path):
    path = str(tmp_path / "res")
    call("dummy", "start", {"path": path, "node": "n"})
    first = open(path).read()
    call("dummy", "start", {"path": path, "node": "n"})
    assert open(path).read() == first
    assert [line[1] for line in log_lines(path)] == ["start"]


def test_dummy_stop_is_idempotent_and_logs_only_a_real_stop(tmp_path):
    path = str(tmp_path / "res")
    args = {"path": path, "node": "node-b"}
    call("dummy", "stop", args)                       # never started: fine, no log
    assert not os.path.exists(f"{path}.log")
    call("dummy", "start", args)
    call("dummy", "stop", args)
    call("dummy", "stop", args)
    assert not os.path.exists(path)
    assert call("dummy", "alive", args) is False
    lines = log_lines(path)
    assert [(line[1], line[2]) for line in lines] == [("start", "node-b"), ("stop", "node-b")]
    assert int(lines[0][0]) < int(lines[1][0])


def test_dummy_node_defaults_to_the_host_name(tmp_path):
    path = str(tmp_path / "res")
    call("dummy", "start", {"path": path})
    assert log_lines(path)[0][2] == socket.gethostname()


def test_dummy_delays_slow_down_start_and_stop(tmp_path):
    path = str(tmp_path / "res")
    args = {"path": path, "start_delay": 0.2, "stop_delay": 0.3}
    begin = time.monotonic()
    call("dummy", "start", args)
    assert time.monotonic() - begin >= 0.2
    begin = time.monotonic()
    call("dummy", "stop", args)
    assert time.monotonic() - begin >= 0.3


def test_dummy_alive_changes_nothing(tmp_path):
    path = str(tmp_path / "res")
    assert call("dummy", "alive", {"path": path}) is False
    assert os.listdir(tmp_path) == []


def test_dummy_promote_demote_and_stop_of_a_promoted_resource(tmp_path):
    path = str(tmp_path / "res")
    args = {"path": path, "node": "n1"}
    with pytest.raises(PluginError, match="not started"):
        call("dummy", "promote", args)
    call("dummy", "start", args)
    call("dummy", "promote", args)
    assert os.path.exists(f"{path}.promoted")
    call("dummy", "demote", args)
    call("dummy", "demote", args)
    assert not os.path.exists(f"{path}.promoted")
    call("dummy", "promote", args)
    call("dummy", "stop", args)                      # demotes first, and says so
    assert not os.path.exists(f"{path}.promoted")
    assert [line[1] for line in log_lines(path)] == ["start", "promote", "demote", "promote",
                                                      "demote", "stop"]


def test_dummy_start_creates_its_directory_and_an_impossible_path_names_the_file(tmp_path):
    call("dummy", "start", {"path": str(tmp_path / "new" / "res")})
    assert (tmp_path / "new" / "res").exists()
    (tmp_path / "afile").write_text("")
    path = str(tmp_path / "afile" / "res")   # a directory that cannot exist
    with pytest.raises(PluginError, match=re.escape(path)):
        call("dummy", "start", {"path": path})


def test_dummy_args_typo_missing_and_bad_values():
    typo = errors("dummy", "resource", {"path": "/tmp/x", "strat_delay": 1})
    assert len(typo) == 1 and "unknown argument" in typo[0]
    missing = errors("dummy", "resource", {})
    assert len(missing) == 1 and "missing argument 'path'" in missing[0]
    assert errors("dummy", "resource", {"path": "/tmp/x", "stop_delay": -1}) == [
        "stop_delay must be a number of seconds >= 0, not -1"]
    assert errors("dummy", "monitor", {"path": "/tmp/x"}) == [
        "plugin 'dummy' is not a monitor plugin (a monitor defines check())"]
    assert errors("dummy", "resource", {"path": "/tmp/x", "start_delay": 0.5, "node": "a"}) == []


# --- command ---------------------------------------------------------------------------

def test_command_resource_start_alive_stop(tmp_path):
    flag = str(tmp_path / "flag")
    args = {"start": ["touch", flag], "stop": ["rm", "-f", flag], "alive": ["test", "-e", flag]}
    assert errors("command", "resource", args) == []
    assert call("command", "alive", args) is False
    call("command", "start", args)
    assert os.path.exists(flag)
    assert call("command", "alive", args) is True
    call("command", "stop", args)
    call("command", "stop", args)
    assert call("command", "alive", args) is False


def test_command_start_failure_carries_exit_code_and_stderr():
    args = {"start": ["sh", "-c", "echo starting; echo 'no such config' >&2; exit 3"]}
    with pytest.raises(PluginError, match="exit code 3: no such config"):
        call("command", "start", args)


def test_command_promote_and_demote_run_their_commands_or_nothing(tmp_path):
    marker = str(tmp_path / "primary")
    call("command", "promote", {})                   # none configured: no-op
    call("command", "promote", {"promote": ["touch", marker]})
    assert os.path.exists(marker)
    call("command", "demote", {"demote": ["rm", marker]})
    assert not os.path.exists(marker)


def test_command_check_message_is_last_line_of_output():
    ok = call("command", "check", {"check": ["sh", "-c", "echo warming up; echo 3 connections; echo 'deprecated flag' >&2"]})
    assert ok == (True, "3 connections")
    bad = call("command", "check", {"check": ["sh", "-c", "echo partial; echo 'disk full' >&2; exit 2"]})
    assert bad == (False, "exit code 2: disk full")


def test_command_env_and_cwd_reach_the_command(tmp_path):
    args = {"check": ["sh", "-c", 'test "$HADO_TEST" = yes && pwd'],
            "env": {"HADO_TEST": "yes"}, "cwd": str(tmp_path)}
    assert call("command", "check", args) == (True, os.path.realpath(tmp_path))
    args["env"] = {"HADO_TEST": "no"}
    assert call("command", "check", args)[0] is False


def test_command_is_killed_after_its_timeout():
    begin = time.monotonic()
    with pytest.raises(PluginError, match="killed after timeout of 0.3 s"):
        call("command", "check", {"check": ["sleep", "10"], "timeout": 0.3})
    assert time.monotonic() - begin < 5


def test_command_missing_program_is_named():
    with pytest.raises(PluginError, match="hado-no-such-program: command not found"):
        call("command", "alive", {"alive": ["hado-no-such-program"]})


def test_command_args_by_kind():
    resource = {"start": ["true"], "stop": ["true"], "alive": ["true"]}
    missing = errors("command", "resource", {"start": ["true"], "stop": ["true"]})
    assert len(missing) == 1 and "missing argument 'alive'" in missing[0]
    typo = errors("command", "monitor", {"chek": ["true"]})
    assert any("unknown argument" in e for e in typo)
    assert any("missing argument 'check'" in e for e in typo)
    assert any("unknown argument" in e for e in errors("command", "monitor", {"check": ["true"], **resource}))
    assert errors("command", "resource", {**resource, "start": "systemctl start x"}) == [
        "start must be a non-empty list of strings (argv, no shell), not 'systemctl start x'"]
    assert errors("command", "monitor", {"check": ["true"], "env": {"A": 1}, "timeout": 0}) == [
        "env must be an object of strings, not {'A': 1}",
        "timeout must be a number of seconds > 0, not 0"]
    assert errors("command", "resource", {**resource, "promote": None, "timeout": 5}) == []


# --- process ---------------------------------------------------------------------------

@pytest.fixture
def spawn():
    """spawn(argv, executable=None) -> Popen; every process is killed at the end."""
    procs = []

    def start(argv, executable=None, **kwargs):
        proc = subprocess.Popen(argv, executable=executable, stdin=subprocess.DEVNULL, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def unique_name(prefix):
    return f"{prefix}{uuid.uuid4().hex}"


def state_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


def test_process_by_pidfile(tmp_path, spawn):
    pidfile = str(tmp_path / "app.pid")
    args = {"pidfile": pidfile}
    assert call("process", "check", args) == (False, f"no pidfile {pidfile}")
    proc = spawn(["sleep", "300"])
    with open(pidfile, "w") as f:
        f.write(f"{proc.pid}\n")
    assert call("process", "check", args) == (True, f"pid {proc.pid} running")
    assert call("process", "alive", args) is True
    proc.kill()
    proc.wait()
    assert call("process", "check", args) == (False, f"pid {proc.pid} from {pidfile} not running")
    assert call("process", "alive", args) is False


def test_process_pidfile_with_garbage_is_an_error(tmp_path):
    pidfile = tmp_path / "app.pid"
    pidfile.write_text("hello\n")
    with pytest.raises(PluginError, match="not a process ID"):
        call("process", "check", {"pidfile": str(pidfile)})


def test_process_by_comm(tmp_path, spawn):
    """/proc/PID/comm is the executable's file name, whatever argv[0] says."""
    name = unique_name("hado-")[:15]                  # comm holds at most 15 characters
    link = tmp_path / name
    link.symlink_to(shutil.which("sleep"))
    assert call("process", "check", {"name": name}) == (False, f"no process named {name}")
    proc = spawn(["something-else", "300"], executable=str(link))
    wait_for(lambda: call("process", "alive", {"name": name}), what=f"{name} to appear")
    assert call("process", "check", {"name": name}) == (True, f"pid {proc.pid} running")


def test_process_by_argv0_longer_than_comm(spawn):
    name = unique_name("hado-argv0-")
    assert len(name) > 15
    proc = spawn([name, "300"], executable=shutil.which("sleep"))
    wait_for(lambda: call("process", "alive", {"name": name}), what=f"{name} to appear")
    assert call("process", "check", {"name": name}) == (True, f"pid {proc.pid} running")
    assert call("process", "check", {"name": name[:15]})[0] is False, "exact names only"


def test_process_zombie_counts_as_gone(spawn):
    name = unique_name("hado-zombie-")
    proc = spawn([name, "300"], executable=shutil.which("sleep"))
    wait_for(lambda: call("process", "alive", {"name": name}), what=f"{name} to appear")
    os.kill(proc.pid, signal.SIGKILL)                # not reaped: stays a zombie
    wait_for(lambda: state_of(proc.pid) == "Z", what="the zombie")
    assert call("process", "alive", {"name": name}) is False


def test_process_never_matches_hado_itself():
    with open("/proc/self/comm") as f:
        own_name = f.read().strip()
    found = REGISTRY.get("process").module._find(None, own_name)
    assert os.getpid() not in found


def test_process_stop_sends_sigterm(spawn):
    name = unique_name("hado-term-")
    proc = spawn([name, "300"], executable=shutil.which("sleep"))
    wait_for(lambda: call("process", "alive", {"name": name}), what=f"{name} to appear")
    call("process", "stop", {"name": name, "stop_timeout": 5})
    assert proc.wait(timeout=5) == -signal.SIGTERM
    call("process", "stop", {"name": name})          # nothing left: still fine


def test_process_stop_escalates_to_sigkill(spawn):
    name = unique_name("hado-stubborn-")
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(300)")
    proc = spawn([name, "-c", code], executable=sys.executable, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    begin = time.monotonic()
    call("process", "stop", {"name": name, "stop_timeout": 0.3})
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert time.monotonic() - begin >= 0.3, "SIGTERM got its stop_timeout first"


def test_process_start_runs_the_command_and_waits_for_the_process(tmp_path):
    pidfile = str(tmp_path / "daemon.pid")
    start = ["sh", "-c", f"sleep 300 >/dev/null 2>&1 & echo $! > {pidfile}"]
    args = {"pidfile": pidfile, "start": start, "stop_timeout": 5}
    assert errors("process", "resource", args) == []
    try:
        call("process", "start", args)
        assert call("process", "alive", args) is True
        first_pid = open(pidfile).read()
        call("process", "start", args)                # already running: no second copy
        assert open(pidfile).read() == first_pid
        call("process", "stop", args)
        assert call("process", "alive", args) is False
    finally:
        if os.path.exists(pidfile) and state_of(int(open(pidfile).read())) not in (None, "Z"):
            os.kill(int(open(pidfile).read()), signal.SIGKILL)


def test_process_start_without_start_command_explains(tmp_path):
    with pytest.raises(PluginError, match="no 'start' command"):
        call("process", "start", {"pidfile": str(tmp_path / "x.pid")})


def test_process_start_fails_when_the_process_does_not_appear(tmp_path):
    args = {"pidfile": str(tmp_path / "x.pid"), "start": ["true"], "timeout": 0.3}
    with pytest.raises(PluginError, match="did not appear within 0.3 s"):
        call("process", "start", args)


def test_process_args_need_exactly_one_of_pidfile_and_name():
    assert errors("process", "monitor", {}) == ["give exactly one of 'pidfile' and 'name'"]
    assert errors("process", "monitor", {"pidfile": "/run/x.pid", "name": "x"}) == [
        "give exactly one of 'pidfile' and 'name'"]
    typo = errors("process", "monitor", {"nmae": "x"})
    assert any("unknown argument" in e for e in typo)
    assert any("unknown argument" in e for e in errors("process", "monitor", {"name": "x", "stop_timeout": 1}))
    assert errors("process", "resource", {"name": "x", "start": "nginx"}) == [
        "start must be a non-empty list of strings (argv, no shell), not 'nginx'"]


# --- tcp_port --------------------------------------------------------------------------

def test_tcp_port_open_and_closed():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert call("tcp_port", "check", {"host": "127.0.0.1", "port": port}) == (
            True, f"127.0.0.1:{port} accepts connections")
    ok, message = call("tcp_port", "check", {"host": "127.0.0.1", "port": port, "timeout": 1})
    assert not ok and message == f"127.0.0.1:{port}: Connection refused"


def test_tcp_port_args():
    typo = errors("tcp_port", "monitor", {"host": "127.0.0.1", "prot": 80})
    assert any("unknown argument" in e for e in typo)
    assert any("missing argument 'port'" in e for e in typo)
    assert errors("tcp_port", "monitor", {"host": "127.0.0.1", "port": 70000}) == [
        "port must be a port number (1-65535), not 70000"]


# --- http ------------------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    release = threading.Event()                      # lets /slow answer at last

    def do_GET(self):
        if self.path == "/slow":
            self.release.wait(10)
        status, body, headers = {
            "/ok": (200, b"all good here", {}),
            "/down": (503, b"maintenance", {}),
            "/moved": (302, b"", {"Location": "/ok"}),
        }.get(self.path, (404, b"not found", {}))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def base_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    Handler.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)
    Handler.release.clear()


def test_http_status_and_body(base_url):
    url = f"{base_url}/ok"
    assert call("http", "check", {"url": url}) == (True, f"{url}: status 200")
    assert call("http", "check", {"url": url, "expect_body": "good"}) == (True, f"{url}: status 200")
    assert call("http", "check", {"url": url, "expect_body": "bad"}) == (
        False, f"{url}: status 200 but the body lacks 'bad'")


def test_http_error_status_is_an_answer_not_an_exception(base_url):
    url = f"{base_url}/down"
    assert call("http", "check", {"url": url}) == (False, f"{url}: status 503, expected 200")
    assert call("http", "check", {"url": url, "expect_status": 503, "expect_body": "maint"})[0] is True


def test_http_redirect_is_not_followed(base_url):
    url = f"{base_url}/moved"
    assert call("http", "check", {"url": url}) == (False, f"{url}: status 302, expected 200")
    assert call("http", "check", {"url": url, "expect_status": 302})[0] is True


def test_http_ignores_proxy_variables(base_url, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert call("http", "check", {"url": f"{base_url}/ok"})[0] is True


def test_http_timeout(base_url):
    begin = time.monotonic()
    url = f"{base_url}/slow"
    assert call("http", "check", {"url": url, "timeout": 0.3}) == (False, f"{url}: no answer within 0.3 s")
    assert time.monotonic() - begin < 3


def test_http_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]                 # bound, never listening: refused
        ok, message = call("http", "check", {"url": f"http://127.0.0.1:{port}/", "timeout": 1})
    assert not ok and "Connection refused" in message


def test_http_args():
    assert errors("http", "monitor", {"url": "ftp://127.0.0.1/"}) == [
        "url must start with http:// or https://, not 'ftp://127.0.0.1/'"]
    typo = errors("http", "monitor", {"url": "http://127.0.0.1/", "expect_staus": 200})
    assert len(typo) == 1 and "unknown argument" in typo[0]
    assert any("missing argument 'url'" in e for e in errors("http", "monitor", {}))


# --- disk_space ------------------------------------------------------------------------

def test_disk_space_percent(tmp_path):
    ok, message = call("disk_space", "check", {"path": str(tmp_path), "min_free_percent": 0})
    assert ok
    assert re.fullmatch(re.escape(str(tmp_path)) + r": \d+\.\d% free \(\d+(\.\d)? [KMGT]?B\), need 0%",
                        message), message


def test_disk_space_mb_above_the_size_fails(tmp_path):
    st = os.statvfs(tmp_path)
    total_mb = st.f_blocks * st.f_frsize // (1024 * 1024)
    ok, message = call("disk_space", "check", {"path": str(tmp_path), "min_free_mb": total_mb + 1})
    assert not ok and message.endswith(f"need {total_mb + 1} MB")
    assert call("disk_space", "check", {"path": str(tmp_path), "min_free_mb": 0})[0] is True


def test_disk_space_missing_path_is_named(tmp_path):
    path = str(tmp_path / "missing")
    with pytest.raises(PluginError, match=re.escape(path) + ": No such file"):
        call("disk_space", "check", {"path": path, "min_free_mb": 1})


def test_disk_space_args_need_exactly_one_threshold():
    one = ["give exactly one of 'min_free_percent' and 'min_free_mb'"]
    assert errors("disk_space", "monitor", {"path": "/"}) == one
    assert errors("disk_space", "monitor", {"path": "/", "min_free_percent": 5, "min_free_mb": 5}) == one
    assert errors("disk_space", "monitor", {"path": "/", "min_free_percent": 150}) == [
        "min_free_percent must be a number from 0 to 100, not 150"]
    typo = errors("disk_space", "monitor", {"path": "/", "min_free_pct": 5})
    assert len(typo) == 1 and "unknown argument" in typo[0]
