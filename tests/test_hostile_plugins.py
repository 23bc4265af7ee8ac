"""Hostile plugins: they hang, flood stdout, allocate 1 GB, leave processes behind.

Issue 10. Whatever a plugin does, the node stays responsive (its API answers within
1 s, its heartbeats and decisions go on) and the state says what happened: a timeout,
a kill after a timeout, an exit code, output that was cut. Two kinds of tests:

- in-process, on hado.plugin itself: run() with 100 MB of output (memory, time, the
  stall of other threads, the disk used), a timeout that kills the whole process
  group, a call's timeout that bounds the run() inside it, print() inside a plugin
  call, messages of any size, a call that hangs and later returns, the process
  plugin's SIGKILL after stop_timeout for a process that ignores SIGTERM;
- real daemons (tests/helpers.Daemon): a node whose stdout drains slowly (a busy
  journald) running every hostile plugin at once next to a witness, sampled all along.

Memory: the 1 GB plugin allocates exactly 1 GiB once per check; nothing else here
allocates more than a few hundred MB, and the in-process measurements run in
subprocesses so that their peak RSS is their own.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hado import plugin as plugin_mod
from hado.plugin import Caller, PluginError, Registry, monitor_result, run
from helpers import REPO, Daemon, free_port, http, wait_for, write_config

MB = 1_000_000
LINES_100MB = ["sh", "-c", "yes | head -c 100000000; exit 3"]             # 50 million lines of "y"
ONE_LINE_100MB = ["sh", "-c", "head -c 100000000 /dev/zero | tr '\\0' x; exit 3"]   # one line


def raiser(exc):
    def fn():
        raise exc
    return fn


def pid_gone(pid):
    """True when ``pid`` has exited (gone, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


def ignores_sigterm(pid):
    """True once ``pid`` runs with SIGTERM ignored (a shell's "trap '' TERM" takes a moment)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            ignored = next(line for line in f if line.startswith("SigIgn:")).split()[1]
    except (OSError, StopIteration):
        return False
    return bool(int(ignored, 16) & (1 << (signal.SIGTERM - 1)))


def kill_pidfiles(*paths):
    """Clean-up: SIGKILL every process named by these pidfiles."""
    for path in paths:
        try:
            pid = int(Path(path).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# ----- run(): 100 MB of output ----------------------------------------------------------

MEASURE = r"""
import json, resource, sys, threading, time
sys.path.insert(0, sys.argv[1])
from hado.plugin import Caller, Registry
argv = json.loads(sys.argv[2])
command = Registry().get("command")
stall, stop = [0.0], threading.Event()

def tick():   # another thread, as the API's: how long does it wait for the GIL?
    while not stop.is_set():
        t = time.monotonic()
        time.sleep(0.01)
        stall[0] = max(stall[0], time.monotonic() - t - 0.01)

threading.Thread(target=tick, daemon=True).start()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.monotonic()
ok, value = Caller("measure").call(command.bind("check", {"check": argv, "timeout": 60}), 60)
took = time.monotonic() - t
stop.set()
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"ok": ok, "value": value, "took": took, "grew_mb": grew, "stall": stall[0]}))
"""


@pytest.mark.parametrize("argv", [LINES_100MB, ONE_LINE_100MB], ids=["50M-lines", "one-line"])
def test_run_keeps_only_the_tail_of_100_mb_of_output(argv):
    """Before: the whole output was read and split into lines: 50 M lines of "y" took
    6.4 s, 873 MB of RSS and stalled other threads for 1.25 s (the API's 1 s bound)."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(REPO), json.dumps(argv)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    ok, message = result["ok"], result["value"]
    assert ok is True and message[0] is False, result
    assert message[1].startswith("exit code 3: "), message
    # What is written while the file is emptied is lost, so the count may be a bit short.
    assert re.search(r" \(output truncated: (9\d\.\d|100\.0) MB or more on stdout, only the last 1024 KB kept\)$",
                     message[1]), message
    assert result["grew_mb"] < 60, result
    assert result["stall"] < 0.5, result
    assert result["took"] < 10, result


def test_run_output_is_cut_to_whole_lines_and_says_so():
    proc = run(["sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' x; echo; echo 'the last line'"])
    assert proc.stdout == "the last line\n"
    assert proc.truncated == ("stdout",) and proc.output_bytes == {"stdout": 5000015, "stderr": 0}
    with pytest.raises(PluginError, match=r"exit code 4: the last line \(output truncated: 5.0 MB or more"):
        run(["sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'the last line' >&2; exit 4"])
    small = run(["sh", "-c", "echo one; echo two >&2"])
    assert (small.stdout, small.stderr, small.truncated) == ("one\n", "two\n", ())


def test_run_does_not_fill_the_disk_with_output():
    """The output file is emptied (its tail kept) while the program runs: 200 MB written
    leave a file of a few MB. Before: all 200 MB stayed in the temporary file."""
    script = ("for i in $(seq 40); do head -c 5000000 /dev/zero; sleep 0.02; done; "
              "echo; stat -L -c %s /proc/self/fd/1")
    proc = run(["sh", "-c", script], timeout=30)
    size_seen_by_the_program = int(proc.stdout.split()[-1])
    assert size_seen_by_the_program < 40 * MB, proc.stdout[-200:]
    assert proc.truncated == ("stdout",) and proc.output_bytes["stdout"] > 150 * MB


def test_run_kills_the_whole_process_group_at_its_timeout(tmp_path):
    """Before: only the direct child was killed; a grandchild (here one that ignores
    SIGTERM, in the background of a shell) lived on after every timeout."""
    pidfile = tmp_path / "grandchild"
    try:
        begin = time.monotonic()
        with pytest.raises(PluginError, match="killed after timeout of 0.5 s"):
            run(["sh", "-c", f"(trap '' TERM; exec sleep 60) & echo $! > {pidfile}; wait"], timeout=0.5)
        assert time.monotonic() - begin < 3
        pid = int(pidfile.read_text())
        wait_for(lambda: pid_gone(pid), timeout=2, what="the grandchild killed with its group")
    finally:
        kill_pidfiles(pidfile)


def test_a_run_inside_a_plugin_call_ends_at_the_calls_timeout(tmp_path):
    """run()'s own timeout (20 s) is longer than the call's (0.5 s): the program is
    killed when the call times out, and the message says so. Before: the call said
    "timeout after 0.5 s" and the program ran on for its 20 s."""
    pidfile = tmp_path / "pid"
    try:
        ok, message = Caller("t").call(lambda: run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 20"],
                                                   timeout=20), 0.5)
        assert ok is False and "killed after timeout of" in message and "the call's timeout of 0.5 s" in message
        wait_for(lambda: pid_gone(int(pidfile.read_text())), timeout=2, what="the program killed")
    finally:
        kill_pidfiles(pidfile)


# ----- Caller: print(), messages, hung calls ------------------------------------------

def test_print_inside_a_plugin_call_does_not_reach_stdout_and_is_logged_in_short(capfd, caplog):
    """Before: 100 MB went to the daemon's stdout, which is its log (journald): while
    that drained, every thread that logs (the API at debug level) waited for it."""
    def chatty():
        print("x" * (100 * MB))
        print("the end of a long print")
        sys.stderr.write("and a word on stderr\n")
        return True

    caplog.set_level("INFO", logger="hado.plugin")
    begin = time.monotonic()
    assert Caller("web/chatty:check").call(chatty, 10) == (True, True)
    assert time.monotonic() - begin < 3
    out, err = capfd.readouterr()
    assert "xxxx" not in out and "the end" not in out and "a word" not in err
    wait_for(lambda: any("web/chatty:check" in r.getMessage() for r in caplog.records), timeout=2,
             what="the print logged")   # after the call's answer, by its thread
    said = [r.getMessage() for r in caplog.records if "web/chatty:check" in r.getMessage()]
    assert len(said) == 1 and len(said[0]) < 6000, said
    assert "100.0 MB" in said[0] and said[0].rstrip().endswith("the end of a long print\nand a word on stderr")
    # Outside a plugin call, printing works as ever.
    print("hado itself prints")
    assert "hado itself prints" in capfd.readouterr().out


def test_messages_of_any_size_are_cut():
    ok, message = Caller("t").call(raiser(PluginError("e" * (10 * MB))), 5)
    assert ok is False and len(message) < 1200 and "characters, cut" in message
    ok, message = Caller("t").call(raiser(ValueError("v" * (10 * MB))), 5)
    assert ok is False and message.startswith("ValueError: vvv") and len(message) < 1200
    passed, message = monitor_result((False, "m" * (10 * MB)))
    assert passed is False and len(message) < 1200
    ok, message = Caller("t").call(raiser(MemoryError()), 5)
    assert (ok, message) == (False, "MemoryError")   # before: "MemoryError: "


def test_a_plugin_that_exits_or_has_no_sane_timeout_still_gives_an_answer():
    """sys.exit() in a plugin, or a timeout of inf/NaN that a config let through:
    before, Caller.call raised (KeyError, OverflowError) instead of answering."""
    assert Caller("t").call(lambda: sys.exit(3), 5) == (False, "SystemExit: 3")
    assert Caller("t").call(lambda: time.sleep(0.05) or True, float("inf")) == (True, True)
    ok, message = Caller("t").call(lambda: True, float("nan"))
    assert isinstance(ok, bool) and isinstance(message, (bool, str))


def test_a_hung_call_is_logged_once_and_so_is_its_late_return(caplog):
    caplog.set_level("INFO", logger="hado.plugin")
    caller = Caller("web/slow:alive")
    assert caller.call(lambda: time.sleep(0.6) or True, 0.2) == (False, "timeout after 0.2 s")
    ok, message = caller.call(lambda: True, 0.2)
    assert ok is False and message.startswith("previous call still running (hung for ")
    wait_for(lambda: any("returned after" in r.getMessage() for r in caplog.records), timeout=3,
             what="the late return logged")
    assert caller.call(lambda: True, 0.2) == (True, True)
    said = [r.getMessage() for r in caplog.records if "web/slow:alive" in r.getMessage()]
    assert len(said) == 2, said
    # slept 0.6 s: under load the thread may wake a little later, never sooner
    late = re.search(r"returned after ([\d.]+) s", said[1])
    assert "no answer within 0.2 s" in said[0] and late and 0.6 <= float(late.group(1)) < 2.0, said


def test_a_validate_or_an_import_that_hangs_is_cut_off(tmp_path, monkeypatch):
    """Config checks run on the daemon's main thread at a reload: before, a plugin whose
    validate() or import never returned hung check-config, start and every reload."""
    (tmp_path / "slow_validate.py").write_text(
        "import time\ndef check(a=1): return True\ndef validate(a=1):\n    time.sleep(5)\n")
    (tmp_path / "slow_import.py").write_text("import time\ntime.sleep(5)\ndef check(): return True\n")
    monkeypatch.setattr(plugin_mod, "VALIDATE_TIMEOUT", 0.3)
    registry = Registry([tmp_path])
    begin = time.monotonic()
    [(key, message)] = registry.get("slow_validate").check_args("monitor", {})
    assert key is None and "its validate() did not return within 0.3 s; this is a bug in the plugin" in message
    with pytest.raises(PluginError, match=r"slow_import.py\) failed to load: its import did not finish within 0.3 s"):
        registry.get("slow_import")
    assert time.monotonic() - begin < 3


# ----- the process plugin: a process that ignores SIGTERM -------------------------------

def test_process_plugin_kills_a_process_that_ignores_sigterm_after_stop_timeout(tmp_path):
    process = Registry().get("process")
    pidfile = tmp_path / "pid"
    args = {"pidfile": str(pidfile), "stop_timeout": 0.5, "timeout": 5,
            "start": ["sh", "-c", f"(trap '' TERM; exec sleep 60) >/dev/null 2>&1 & echo $! > {pidfile}"]}
    try:
        assert Caller("t").call(process.bind("start", args), 10) == (True, None)
        pid = int(pidfile.read_text())
        wait_for(lambda: ignores_sigterm(pid), timeout=5, what="the process ignoring SIGTERM")
        assert Caller("t").call(process.bind("alive", args), 5) == (True, True)
        begin = time.monotonic()
        assert Caller("t").call(process.bind("stop", args), 10) == (True, None)
        took = time.monotonic() - begin
        assert 0.5 <= took < 3, took
        assert pid_gone(pid)
    finally:
        kill_pidfiles(pidfile)


# ----- real daemons ----------------------------------------------------------------------

HOSTILE = '''"""Hostile plugins (for tests): a monitor by mode, a resource hanging in one function."""
import os
import sys
import time

from hado.plugin import run


def check(mode, size=100_000_000):
    if mode == "hang":
        time.sleep(3600)
    if mode == "print":   # 100 prints of 1 MB, then a line
        for _ in range(size // 1_000_000):
            print("x" * 1_000_000, end="")
        print()
        print("the end of a long print")
        return True, f"printed {size} characters and a line"
    if mode == "alloc":   # 1 GiB in 1 MiB blocks, every page written
        blocks = [bytearray(1 << 20) for _ in range(size >> 20)]
        for block in blocks:
            block[::4096] = b"\\1" * 256
        return True, f"allocated {len(blocks)} MiB"
    if mode == "run":
        proc = run(["sh", "-c", f"yes | head -c {size}"])
        return True, f"run() kept {len(proc.stdout)} characters"
    return True


def start(path, hang=""):
    if hang == "start":
        time.sleep(3600)
    open(path, "w").close()


def stop(path, hang=""):
    if hang == "stop":
        time.sleep(3600)
    if os.path.exists(path):
        os.remove(path)


def alive(path, hang=""):
    if hang == "alive":
        time.sleep(3600)
    return os.path.exists(path)
'''


class SlowStdoutDaemon(Daemon):
    """A Daemon whose stdout is a pipe drained at about 1 MB/s, as a busy journald:
    whatever the daemon writes there beyond the pipe's 64 KB waits for the reader."""

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "hado", "--foreground", "--config", self.config_path,
                                      "--node", self.node, "--log-level", self.log_level],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env)
        self.drainer = threading.Thread(target=self.drain, args=(self.proc.stdout,), daemon=True)
        self.drainer.start()
        return self

    def drain(self, pipe):
        with open(self.log_path, "ab") as log:
            while True:
                chunk = pipe.read1(65536)
                if not chunk:
                    return
                log.write(chunk)
                log.flush()
                time.sleep(0.06)


class Sampler(threading.Thread):
    """GET /v1/state of both nodes every 0.1 s; records latency, quorum, peer silence."""

    def __init__(self, hostile, witness):
        super().__init__(daemon=True)
        self.hostile, self.witness = hostile, witness
        self.samples, self.errors = [], []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            began = time.monotonic()
            try:
                a = self.hostile.state(timeout=2.0)
                took = time.monotonic() - began
                b = self.witness.state(timeout=2.0)
                self.samples.append({"took": took, "quorum": a["quorum"]["ok"],
                                     "a_sees_b": a["peers"]["node-b"]["last_seen_s"],
                                     "b_sees_a": b["peers"]["node-a"]["last_seen_s"]})
            except (OSError, AssertionError, ValueError) as exc:
                self.errors.append(f"{time.monotonic() - began:.2f} s: {exc!r}")
            self.halt.wait(0.1)


@pytest.fixture
def cleanup():
    daemons, pidfiles = [], []
    yield daemons, pidfiles
    for d in daemons:
        d.kill()
    kill_pidfiles(*pidfiles)


def hostile_pair(tmp_path, daemons, pidfiles):
    """node-a runs every hostile plugin, its stdout drained slowly; node-b is a witness
    (it runs no app: the quorum of 2 needs both, so node-a's heartbeats must go on)."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hostile.py").write_text(HOSTILE)
    secret = tmp_path / "secret"
    secret.write_bytes(b"0123456789abcdef0123456789abcdef")
    secret.chmod(0o600)
    ports = {"node-a": free_port(), "node-b": free_port()}
    pidfile = tmp_path / "pterm.pid"
    pidfiles.append(pidfile)

    def res(name, hang="", **extra):
        return {"name": name, "plugin": "hostile", "args": {"path": str(tmp_path / name), "hang": hang},
                "interval": 0.3, "timeout": 0.5, "start_timeout": 0.5, "stop_timeout": 0.5, **extra}

    def mon(mode, args=None, **extra):
        return {"plugin": "hostile", "args": {"mode": mode, **(args or {})}, "vital": False, "interval": 3,
                "timeout": 10, **extra}

    cfg = {
        "cluster": {"name": "t", "secret_file": str(secret), "heartbeat": 0.2, "dead_after": 2.0,
                    "nodes": {"node-a": {"url": f"http://127.0.0.1:{ports['node-a']}", "priority": 100},
                              "node-b": {"url": f"http://127.0.0.1:{ports['node-b']}", "witness": True}}},
        "node": {"plugin_dirs": [str(plugins)]},
        "apps": {
            "web": {"resources": [res("web")],
                    "monitors": {"hang": mon("hang", interval=0.5, timeout=0.5),
                                 "print": mon("print"), "alloc": mon("alloc", {"size": 1 << 30}, interval=60, timeout=60),
                                 "run": mon("run"),
                                 "flood": {"plugin": "command", "vital": False, "interval": 3, "timeout": 10,
                                           "args": {"check": ["sh", "-c", "yes | head -c 100000000; exit 3"]}}}},
            "hs": {"resources": [res("hs", hang="start", max_restarts=1)]},
            "ha": {"resources": [res("ha", hang="alive", max_restarts=1)]},
            "hp": {"resources": [res("hp", hang="stop")]},
            "pterm": {"resources": [{
                "name": "p", "plugin": "process", "stop_timeout": 5, "interval": 0.3,
                "args": {"pidfile": str(pidfile), "stop_timeout": 1,
                         "start": ["sh", "-c", f"(trap '' TERM; exec sleep 120) >/dev/null 2>&1 & "
                                               f"echo $! > {pidfile}"]}}]},
        },
    }
    path = write_config(tmp_path / "config.json", cfg)
    witness = Daemon(path, "node-b", ports["node-b"], tmp_path, log_level="info")
    hostile = SlowStdoutDaemon(path, "node-a", ports["node-a"], tmp_path)   # debug: the API logs each request
    daemons += [witness, hostile]
    witness.start()
    hostile.start()
    witness.wait_ready()
    hostile.wait_ready()
    wait_for(lambda: hostile.state()["quorum"]["ok"] and witness.state()["quorum"]["ok"], timeout=10,
             what="both nodes with quorum")
    return hostile, witness, pidfile


def test_a_node_running_every_hostile_plugin_at_once_stays_responsive_and_says_what_happened(tmp_path, cleanup):
    hostile, witness, pidfile = hostile_pair(tmp_path, *cleanup)
    sampler = Sampler(hostile, witness)
    sampler.start()
    try:
        def monitors():
            return hostile.app("web")["monitors"]

        # Each hostile monitor has run and its state says what happened.
        wait_for(lambda: "printed" in (monitors().get("print") or {}).get("message", ""), timeout=15,
                 what="the printing monitor answered")
        mons = wait_for(lambda: (m := monitors()) and all(m.get(k, {}).get("ok") is not None for k in
                                                           ("run", "flood")) and m,
                        timeout=20, what="every monitor checked once")
        assert "timeout after 0.5 s" in mons["hang"]["message"] or \
               "previous call still running (hung for" in mons["hang"]["message"], mons["hang"]
        assert mons["run"]["message"].startswith("run() kept "), mons["run"]
        assert int(mons["run"]["message"].split()[2]) <= 1 << 20, mons["run"]
        # the count misses what the program writes while hado empties the file: "or more"
        flood = re.match(r"exit code 3: y \(output truncated: ([\d.]+) MB or more on stdout", mons["flood"]["message"])
        assert flood and 80 <= float(flood.group(1)) <= 100.0, mons["flood"]

        # Resources that hang in start() and alive() fail their app, and say why.
        hs = wait_for(lambda: (a := hostile.app("hs"))["role"] == "failed" and a, timeout=10, what="hs failed")
        assert "start failed: " in hs["failure"]["reason"]
        ha = wait_for(lambda: (a := hostile.app("ha"))["role"] == "failed" and a, timeout=10, what="ha failed")
        assert "previous call still running (hung for" in ha["failure"]["reason"] or \
               "timeout after 0.5 s" in ha["failure"]["reason"], ha["failure"]
        events = " | ".join(e["why"] for e in hostile.state()["events"])
        assert "start failed: timeout after 0.5 s" in events
        wait_for(lambda: all(hostile.app(a)["role"] == "active" for a in ("web", "hp", "pterm")),
                 timeout=10, what="web, hp and pterm active")
        pid = int(pidfile.read_text())
        wait_for(lambda: ignores_sigterm(pid), timeout=5, what="pterm's process ignoring SIGTERM")

        # Decisions go on: standby takes every app off this node (the witness runs none)...
        assert http(hostile.url + "/v1/node/standby", {})[0] == 200
        wait_for(lambda: hostile.app("web")["role"] == "standby", timeout=5, what="web stopped by standby")
        hp = wait_for(lambda: (a := hostile.app("hp"))["role"] == "stopping" and
                      "stop failed: " in a["resources"]["hp"]["message"] and a, timeout=5, what="hp stuck stopping")
        assert "stop failed: timeout after 0.5 s" in hp["resources"]["hp"]["message"] or \
               "stop failed: previous call still running" in hp["resources"]["hp"]["message"], hp
        # ... and the process that ignores SIGTERM is SIGKILLed after the plugin's stop_timeout.
        wait_for(lambda: hostile.app("pterm")["role"] == "standby", timeout=8, what="pterm stopped")
        assert pid_gone(pid)
        assert http(hostile.url + "/v1/node/online", {})[0] == 200
        wait_for(lambda: hostile.app("web")["role"] == "active" and hostile.app("pterm")["role"] == "active",
                 timeout=8, what="web and pterm back after online")
        # The 1 GiB: about 1 s on an idle machine; first-touch page faults in a busy VM take far longer.
        alloc = wait_for(lambda: monitors()["alloc"]["ok"] is not None and monitors()["alloc"], timeout=45,
                         what="the 1 GiB monitor answered")
        assert alloc["message"].startswith("allocated 1024 MiB"), alloc
        wait_for(lambda: len(sampler.samples) >= 30, timeout=10, what="30 samples")
    finally:
        sampler.halt.set()
        sampler.join(timeout=5)
    took = sorted(s["took"] for s in sampler.samples)
    assert not sampler.errors, sampler.errors[:5]
    assert len(took) >= 30 and took[-1] < 1.0, took[-5:]
    lost = [s for s in sampler.samples if not s["quorum"]]
    assert not lost, f"node-a lost its quorum (dead_after 2 s): heartbeats stopped: {lost[:5]}"
    worst = max((s["b_sees_a"] or 0.0) for s in sampler.samples)
    assert worst < 1.0, f"the witness heard nothing from node-a for {worst} s (heartbeat 0.2 s)"
    status_line = [line for line in open(f"/proc/{hostile.proc.pid}/status") if line.startswith("VmHWM")]
    assert int(status_line[0].split()[1]) > 1_000_000, status_line   # the 1 GiB was really allocated

    # Stopping: hp's stop still hangs, pterm's process is killed again; exit 0 all the same.
    pid = int(pidfile.read_text())
    assert hostile.terminate(timeout=20) == 0
    assert pid_gone(pid)
    hostile.drainer.join(timeout=10)
    log = hostile.log_path.read_bytes()
    assert len(log) < 5 * MB, f"the log got {len(log)} bytes: the plugin's print() reached it"
    text = log.decode(errors="replace")
    assert "web/print" in text and "the end of a long print" in text
    assert "no answer within 0.5 s" in text      # the hung calls, logged


FORKER = '''"""A resource whose stop() sends SIGTERM and returns at once (for tests)."""
import os
import signal
import subprocess


def start(pidfile):
    if alive(pidfile):
        return
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; exec sleep 120"], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(pidfile, "w") as f:
        f.write(str(proc.pid))


def stop(pidfile):
    pid = _pid(pidfile)
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def alive(pidfile):
    pid = _pid(pidfile)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, TypeError):
        return False


def _pid(pidfile):
    try:
        with open(pidfile) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None
'''


def test_a_stop_that_leaves_its_process_running_is_a_failed_stop(tmp_path, cleanup):
    """A plugin's stop() that returns while its child (ignoring SIGTERM) lives on, and a
    command resource whose stop command sends a SIGTERM that is ignored: the state must
    not say "stopped", and the app must stay "stopping" (so no other node takes it)."""
    daemons, pidfiles = cleanup
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "forker.py").write_text(FORKER)
    fork_pid, cmd_pid = tmp_path / "fork.pid", tmp_path / "cmd.pid"
    pidfiles += [fork_pid, cmd_pid]
    alive_cmd = (f"p=$(cat {cmd_pid} 2>/dev/null) && [ -n \"$p\" ] && kill -0 $p 2>/dev/null && "
                 f"! grep -q '^State:.*[ZX]' /proc/$p/status")
    port = free_port()
    cfg = {"cluster": {"nodes": {"solo": {"url": f"http://127.0.0.1:{port}"}}},
           "node": {"plugin_dirs": [str(plugins)]},
           "apps": {"fork": {"resources": [{"name": "f", "plugin": "forker", "args": {"pidfile": str(fork_pid)},
                                            "interval": 0.3, "stop_timeout": 2}]},
                    "cmd": {"resources": [{"name": "c", "plugin": "command", "interval": 0.3, "stop_timeout": 2,
                                           "args": {"start": ["sh", "-c", f"(trap '' TERM; exec sleep 120) "
                                                                          f">/dev/null 2>&1 & echo $! > {cmd_pid}"],
                                                    "stop": ["sh", "-c", f"kill $(cat {cmd_pid})"],
                                                    "alive": ["sh", "-c", alive_cmd]}}]}}}
    d = Daemon(write_config(tmp_path / "config.json", cfg), "solo", port, tmp_path)
    daemons.append(d)
    d.start()
    d.wait_ready()
    wait_for(lambda: d.app("fork")["role"] == "active" and d.app("cmd")["role"] == "active", what="both active")
    for pidfile in (fork_pid, cmd_pid):
        wait_for(lambda: ignores_sigterm(int(pidfile.read_text())), timeout=5, what="the process ignoring SIGTERM")
    assert http(d.url + "/v1/node/standby", {})[0] == 200
    for app, res in (("fork", "f"), ("cmd", "c")):
        entry = wait_for(lambda: (r := d.app(app)["resources"][res])["state"] in ("stopped", "failed") and r,
                         timeout=5, what=f"{app} stop done")
        assert entry["state"] != "stopped" and "still runs" in entry["message"], (app, entry)
        assert d.app(app)["role"] == "stopping"


HUNG_LEASE = '''"""A leased resource whose lease() hangs (for tests)."""
import time


def start(path): pass
def stop(path): pass
def alive(path): return False
def renew(path): pass


def lease(path):
    time.sleep(120)
'''


def test_a_lease_that_hangs_is_cut_off_and_counts_as_unleased(tmp_path, monkeypatch):
    """bounds.plugin_lease() calls lease() within LEASE_TIMEOUT: a hung one makes the
    resource unleased (the stop budget covers it), check-config warns naming the plugin."""
    from hado import bounds, config as config_mod
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hung_lease.py").write_text(HUNG_LEASE)
    monkeypatch.setattr(bounds, "LEASE_TIMEOUT", 0.3)
    plugin = Registry([str(plugins)]).get("hung_lease")
    began = time.monotonic()
    problems = []
    assert bounds.plugin_lease(plugin, {"path": "/x"}, problems) is None
    assert bounds.plugin_lease(plugin, {"path": "/x"}, problems) is None   # still hung: fails at once
    assert time.monotonic() - began < 2
    assert len(problems) == 2 and all("plugin 'hung_lease'" in p and "unleased" in p for p in problems), problems
    secret = tmp_path / "secret"
    secret.write_bytes(b"0123456789abcdef0123456789abcdef")
    secret.chmod(0o600)
    cfg = {"cluster": {"secret_file": str(secret), "nodes": {"a": {"url": "http://127.0.0.1:1"},
                                                             "b": {"url": "http://127.0.0.1:2"}}},
           "node": {"plugin_dirs": [str(plugins)], "admin_open": True},
           "apps": {"web": {"resources": [{"name": "r", "plugin": "hung_lease", "args": {"path": "/x"}}]}}}
    path = write_config(tmp_path / "config.json", cfg)
    began = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "hado", "check-config", "--node", "a", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert time.monotonic() - began < 30
    warning = [line for line in out.stdout.splitlines() if line.startswith("WARNING: apps.web.resources[0].plugin")]
    assert warning and "plugin 'hung_lease'" in warning[0] and "timeout" in warning[0], out.stdout
    assert "r is stopped within the app's" in out.stdout, out.stdout   # unleased: the stop budget covers it
