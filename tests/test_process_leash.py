"""The process plugin's lease: a process started with ``lease`` dies with hado or with its lease.

Real processes, no mocks. An "owner" subprocess imitates hado: it loads the plugin
through hado.plugin.Registry (as the daemon does), calls start(), then renew() every
0.1 s (a heartbeat), and stop() when told on stdin. The process it starts is a shell
that writes its PID to the pidfile, leaves a "worker" behind in its process group (as
nginx's master leaves its workers) and execs ``sleep``, so the tests see both the
process the pidfile names and the rest of its group go.

The leash (hado/leash.py) must kill the group at once when the owner is killed (within
0.5 s here), and within lease + 0.35 s of the last renewal when the owner is frozen
(SIGSTOP) and renews no more; while renewals go on, nothing happens.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hado import config as config_mod
from hado.node import Node
from hado.plugin import PluginError, Registry

REPO = Path(__file__).resolve().parent.parent
LEASE = 1.0
PLUGIN = Registry().get("process")

OWNER = textwrap.dedent("""
    import json, select, sys, time
    from hado.plugin import Registry
    plugin = Registry().get("process")
    args = json.loads(sys.argv[1])
    plugin.bind("start", args)()
    print("started", plugin.bind("alive", args)(), flush=True)
    renew = plugin.bind("renew", args)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if select.select([sys.stdin], [], [], 0.1)[0]:
            if sys.stdin.readline().strip() != "stop":
                break
            plugin.bind("stop", args)()
            print("stopped", flush=True)
            break
        renew()
    sys.stdin.read()   # stay until the test closes stdin (or kills us)
""")


def start_time(pid):
    """/proc/PID/stat start time of a live process; None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


class Started:
    """What one owner started: the owner, the process, its worker and the leash, each with
    its start time, so that a PID the kernel reuses is never taken for ours."""

    def __init__(self, owner, pid, worker, leash):
        self.owner = owner
        self.procs = {"process": pid, "worker": worker, "leash": leash}
        self.started = {name: start_time(pid) for name, pid in self.procs.items()}

    def running(self, name):
        pid = self.procs[name]
        return self.started[name] is not None and start_time(pid) == self.started[name]

    def wait_gone(self, names, timeout):
        """Seconds until none of names runs (polled every 5 ms), or None after timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not any(self.running(n) for n in names):
                return time.monotonic() - t0
            time.sleep(0.005)
        return None

    def kill_all(self):
        for name in ("leash", "worker", "process"):
            if self.running(name):
                try:
                    os.kill(self.procs[name], signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def leashed(tmp_path):
    """start(lease=LEASE) -> Started: the owner started the process under a leash."""
    made = []
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def start(lease=LEASE):
        pidfile = tmp_path / "app.pid"
        workerfile = tmp_path / "worker.pid"
        script = (f"sleep 60 & echo $! > {workerfile}; "
                  f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 61")
        args = {"pidfile": str(pidfile), "start": ["sh", "-c", script], "lease": lease, "timeout": 10}
        # cwd is not the repository: the leash is found by its path, from anywhere.
        owner = subprocess.Popen([sys.executable, "-c", OWNER, json.dumps(args)], cwd=tmp_path, env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        made.append(owner)
        line = owner.stdout.readline()
        assert line == "started True\n", f"owner said {line!r}; leash output: {read(tmp_path / 'app.pid.out')}"
        pid = int(pidfile.read_text())
        worker = int(workerfile.read_text())
        leash = parent(pid)
        started = Started(owner, pid, worker, leash)
        made.append(started)
        assert all(started.running(n) for n in started.procs), started.procs
        return started

    yield start
    for thing in made:
        if isinstance(thing, Started):
            thing.kill_all()
        else:
            if thing.poll() is None:
                thing.send_signal(signal.SIGCONT)
                thing.kill()
            thing.wait(5)
            thing.stdin.close()
            thing.stdout.close()


def read(path):
    return path.read_text() if path.exists() else "(none)"


def test_the_leash_is_the_parent_of_the_process_and_holds_the_lease_file(leashed, tmp_path):
    s = leashed()
    with open(f"/proc/{s.procs['leash']}/comm") as f:
        assert f.read().strip() == "hado-leash"
    assert parent(s.procs["leash"]) == s.owner.pid, "the owner (hado) started the leash"
    assert os.getsid(s.procs["leash"]) == s.procs["leash"], "the leash has a session of its own"
    deadline = float((tmp_path / "app.pid.lease").read_text())
    assert 0 < deadline - time.monotonic() <= LEASE, "an absolute CLOCK_MONOTONIC deadline, renewed"
    assert "started pid" in read(tmp_path / "app.pid.out")


def test_kill_9_of_the_owner_kills_the_process_group_within_half_a_second(leashed, tmp_path):
    s = leashed()
    s.owner.kill()
    took = s.wait_gone(["process", "worker"], 3)
    assert took is not None, f"the process outlived its owner by 3 s; {read(tmp_path / 'app.pid.out')}"
    assert took <= 0.5, f"gone {took:.3f} s after the owner's kill -9 (bound 0.5 s)"
    assert s.wait_gone(["leash"], 2) is not None, "the leash exits after its process"
    assert "owner pid" in read(tmp_path / "app.pid.out")
    print(f"kill -9 of the owner: process group gone after {took:.3f} s")


def test_frozen_owner_loses_its_process_when_the_lease_runs_out(leashed, tmp_path):
    s = leashed()
    s.owner.send_signal(signal.SIGSTOP)
    time.sleep(0.05)   # a renewal being written when the signal came is done by now
    deadline = float((tmp_path / "app.pid.lease").read_text())   # the last renewal + LEASE
    time.sleep(max(0.0, deadline - 0.2 - time.monotonic()))
    assert s.running("process") and s.running("worker"), \
        f"killed before lease - 0.2 s; {read(tmp_path / 'app.pid.out')}"
    assert s.wait_gone(["process", "worker"], LEASE + 3) is not None
    late = time.monotonic() - deadline   # an upper bound: the test polls every 5 ms
    assert late <= 0.35, f"gone {late:.3f} s after the deadline (lease + {late:.3f} s after the last " \
                         f"renewal; bound lease + 0.35 s); {read(tmp_path / 'app.pid.out')}"
    assert s.wait_gone(["leash"], 2) is not None
    assert "the lease ran out" in read(tmp_path / "app.pid.out")
    print(f"SIGSTOP of the owner: process group gone {late:.3f} s after the lease ran out")


def test_renewals_keep_the_process_running(leashed, tmp_path):
    s = leashed()
    time.sleep(3 * LEASE)
    assert all(s.running(n) for n in s.procs), read(tmp_path / "app.pid.out")
    args = {"pidfile": str(tmp_path / "app.pid"), "lease": LEASE}
    assert PLUGIN.bind("alive", args)() is True


def test_stop_stops_the_process_and_its_leash(leashed, tmp_path):
    s = leashed()
    s.owner.stdin.write("stop\n")
    s.owner.stdin.flush()
    assert s.owner.stdout.readline() == "stopped\n"
    assert not s.running("process")
    assert s.wait_gone(["worker", "leash"], 0.1) is not None, "stop returns once the leash is gone"
    assert not (tmp_path / "app.pid.lease").exists()
    args = {"pidfile": str(tmp_path / "app.pid"), "lease": LEASE}
    assert PLUGIN.bind("alive", args)() is False
    with pytest.raises(PluginError, match="no lease file"):
        PLUGIN.bind("renew", args)()
    PLUGIN.bind("stop", args)()   # again: nothing left, still a success


def test_stop_during_a_slow_start_ends_it_at_once(tmp_path):
    """hado stops a leased resource from its leases thread when quorum is lost, also while
    its start() still waits for the process: the start gives up and the process goes."""
    pidfile, early = tmp_path / "slow.pid", tmp_path / "early.pid"
    args = {"pidfile": str(pidfile), "lease": LEASE, "timeout": 20,
            "start": ["sh", "-c", f"echo $$ > {early}; sleep 10; echo $$ > {pidfile}; exec sleep 60"]}
    failed = []

    def starting():
        try:
            PLUGIN.bind("start", args)()
        except PluginError as exc:
            failed.append(str(exc))

    thread = threading.Thread(target=starting)
    thread.start()
    deadline = time.monotonic() + 5
    while not (early.exists() and early.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.01)
    pid = int(early.read_text())
    t0 = time.monotonic()
    PLUGIN.bind("stop", args)()
    took = time.monotonic() - t0
    thread.join(5)
    assert not thread.is_alive() and failed and "given up" in failed[0], failed
    assert start_time(pid) is None, "the leash ended the half-started command"
    assert took < 1.0, f"stop took {took:.2f} s"
    assert not (tmp_path / "slow.pid.lease").exists(), "start did not re-create the lease stop removed"


def test_a_command_that_does_not_stay_in_the_foreground_is_a_start_error(tmp_path):
    """It "daemonizes": leaves a process behind and exits 0. The leash ends the rest."""
    pidfile, background = tmp_path / "d.pid", tmp_path / "bg.pid"
    args = {"pidfile": str(pidfile), "lease": LEASE, "timeout": 5,
            "start": ["sh", "-c", f"sleep 30 & echo $! > {background}; echo daemonized; exit 0"]}
    with pytest.raises(PluginError, match=r"ended before .* appeared \(exit code 0\): daemonized; "
                                          r"with a lease the command must stay in the foreground"):
        PLUGIN.bind("start", args)()
    pid = int(background.read_text())
    deadline = time.monotonic() + 2
    while start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert start_time(pid) is None, "the leash killed what the command left behind"


def test_a_missing_command_is_a_start_error_with_the_reason(tmp_path):
    args = {"pidfile": str(tmp_path / "m.pid"), "lease": LEASE, "start": ["/nonexistent/nginx"]}
    with pytest.raises(PluginError, match=r"\(exit code 127\): cannot start /nonexistent/nginx: "
                                          r"No such file or directory$"):
        PLUGIN.bind("start", args)()


def test_a_process_running_without_its_leash_is_not_adopted(tmp_path):
    pidfile = tmp_path / "hand.pid"
    proc = subprocess.Popen(["sleep", "30"])
    try:
        pidfile.write_text(f"{proc.pid}\n")
        args = {"pidfile": str(pidfile), "lease": LEASE, "start": ["sleep", "30"]}
        assert PLUGIN.bind("alive", {"pidfile": str(pidfile)})() is True
        assert PLUGIN.bind("alive", args)() is False, "runs, but nothing would kill it if hado died"
        with pytest.raises(PluginError, match="not under hado's leash"):
            PLUGIN.bind("start", args)()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("lease", [-1, 0, "x", True, float("inf")])
def test_a_bad_lease_is_a_config_error_naming_the_argument(lease):
    raw = {"apps": {"web": {"resources": [{"name": "nginx", "plugin": "process", "args": {
        "pidfile": "/run/hado/nginx.pid", "start": ["nginx", "-g", "daemon off;"], "lease": lease}}]}}}
    _, errors, _ = config_mod.validate(raw)
    assert errors == [f"apps.web.resources[0].args: lease must be a number of seconds > 0, "
                      f"or null for no lease, not {lease!r}"]


def test_a_lease_without_a_start_command_is_a_config_error():
    raw = {"apps": {"web": {"resources": [{"name": "p", "plugin": "process",
                                           "args": {"name": "sleep", "lease": 1}}]}}}
    _, errors, _ = config_mod.validate(raw)
    assert len(errors) == 1 and "lease needs a 'start' command" in errors[0], errors


def test_takeover_waits_for_the_process_lease_and_none_means_no_lease():
    """Peers wait lease + 0.35 s + heartbeat of silence for a leased process (docs/cluster.rst)."""
    assert PLUGIN.module.DEFAULT_LEASE is None

    def takeover(args):
        raw = {"cluster": {"heartbeat": 0.5, "dead_after": 2.0},
               "apps": {"web": {"resources": [{"name": "p", "plugin": "process", "args": args}]}}}
        config, errors, _ = config_mod.validate(raw)
        assert errors == []
        return Node(config).state.notes["takeover_after_s"]

    base = {"pidfile": "/run/hado/x.pid", "start": ["x"]}
    assert takeover(dict(base, lease=3)) == pytest.approx(3 + 0.35 + 0.5)
    assert takeover(dict(base, lease=None)) == takeover(base), "null is the default: no lease"
