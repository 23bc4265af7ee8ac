"""The start of a leased resource is cut off when the quorum it began under lapses
(hado.plugin.cut_off; docs/cluster.rst, "A leased start is cut off at the lapse").

Engine gaps 2 and 3 of tests/sim.py: a start in flight at the lapse (or across a freeze
of hado) that completed afterwards created the resource with a fresh lease while the
majority took over. Real programs, the real leash, real daemons on loopback.
"""

import os
import signal
import subprocess
import threading
import time

import pytest

from hado.plugin import Caller, Registry, run
from helpers import Cluster, http, wait_for

PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugins")


def after(seconds):
    """A cut-off that turns True ``seconds`` from now."""
    at = time.monotonic() + seconds
    return lambda: time.monotonic() >= at


def test_run_starts_nothing_once_cut_off_and_kills_the_running_program(tmp_path):
    marker = tmp_path / "ran"
    ok, why = Caller("t:start").call(lambda: run(["sh", "-c", f"touch {marker}"]), 5, cutoff=lambda: True)
    assert not ok and "not done: the node's quorum lapsed during the call" in why, why
    assert not marker.exists(), "run() started a program after the cut-off"

    t0 = time.monotonic()
    ok, why = Caller("t:start").call(
        lambda: run(["sh", "-c", f"sleep 5 & echo $! > {tmp_path / 'child'}; wait"]), 10, cutoff=after(0.3))
    took = time.monotonic() - t0
    assert not ok and "killed: the node's quorum lapsed during the call" in why, why
    assert took < 1.0, f"the program ran {took:.2f} s, past its cut-off at 0.3 s"
    child = int((tmp_path / "child").read_text())
    wait_for(lambda: not os.path.exists(f"/proc/{child}") or
             open(f"/proc/{child}/stat").read().split()[2] == "Z", 2.0, what="the program's child to be killed")


def test_a_leased_dummy_start_cut_off_during_its_delay_creates_nothing(tmp_path):
    dummy = Registry([PLUGINS]).get("dummy")
    path = tmp_path / "r"
    start = dummy.bind("start", {"path": str(path), "lease": 1, "start_delay": 0.5})
    ok, why = Caller("web/r:start").call(start, 3, cutoff=after(0.2))
    assert not ok and "not done: the node's quorum lapsed" in why, why
    assert not path.exists()
    # the same start without a cut-off, or before it, does create it
    ok, why = Caller("web/r:start").call(start, 3, cutoff=after(5))
    assert ok, why
    assert path.exists()


def test_a_renewal_cut_off_before_it_reaches_the_lease_extends_nothing(tmp_path):
    """The leases thread renews under the same cut-off: a renewal whose call runs after the
    quorum lapsed (its thread slow to run, hado frozen between check and call) is refused."""
    dummy = Registry([PLUGINS]).get("dummy")
    path = tmp_path / "r"
    assert Caller("web/r:start").call(dummy.bind("start", {"path": str(path), "lease": 0.5}), 3) == (True, None)
    before = path.read_text().split()[1]
    ok, why = Caller("web/r:renew").call(dummy.bind("renew", {"path": str(path), "lease": 5}), 3,
                                         cutoff=lambda: True)
    assert not ok and "not done: the node's quorum lapsed during the call" in why, why
    assert path.read_text().split()[1] == before, "the lease was extended after the cut-off"
    time.sleep(0.6)
    assert not dummy.bind("alive", {"path": str(path)})(), "it ran out as its last real renewal said"


def test_a_leased_process_start_cut_off_while_it_waits_ends_the_command(tmp_path):
    process = Registry([PLUGINS]).get("process")
    pidfile, early = tmp_path / "slow.pid", tmp_path / "early.pid"
    args = {"pidfile": str(pidfile), "lease": 1, "timeout": 20,
            "start": ["sh", "-c", f"echo $$ > {early}; sleep 3; echo $$ > {pidfile}; exec sleep 60"]}
    t0 = time.monotonic()
    ok, why = Caller("svc/p:start").call(process.bind("start", args), 10, cutoff=after(0.5))
    took = time.monotonic() - t0
    assert not ok and "given up" in why and "quorum lapsed" in why, why
    assert took < 1.5, f"start gave up after {took:.2f} s"
    pid = int(early.read_text())
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
             open(f"/proc/{pid}/stat").read().split()[2] == "Z", 3.0, what="the leash to end the half-started command")
    assert not pidfile.exists()


@pytest.fixture
def slow_leased(tmp_path):
    c = Cluster(tmp_path, apps={})
    c.config["apps"] = {"web": {"resources": [c.dummy("r", lease=1, start_timeout=4.0, timeout=0.5)]}}
    c.config["apps"]["web"]["resources"][0]["args"]["start_delay"] = 1.5
    from helpers import write_config
    write_config(c.config_path, c.config)
    yield c
    for d in c.daemons.values():
        if d.alive():
            d.signal(signal.SIGCONT)
    c.stop_all()


def test_a_node_that_loses_quorum_during_a_slow_leased_start_does_not_bring_it_up(slow_leased):
    """node-b is starting the app (a leased dummy that takes 1.5 s) when both its peers
    freeze: its quorum lapses 0.5 s later, mid-start. The start is cut off: the resource
    never appears on node-b, no failure is counted, and once the peers wake the app runs
    on exactly one node. (Before the cut-off, the dummy came up 1 s after the lapse with
    a fresh 1 s lease: a node without quorum held the app.)"""
    c = slow_leased.start()
    c.wait_active(timeout=20)
    holder = c.active()[0]
    target = next(n for n in c.names if n != holder)
    status, doc = http(c[target].url + "/v1/apps/web/move", {"node": target})
    assert status == 200, doc
    wait_for(lambda: (c[target].try_state() or {}).get("apps", {}).get("web", {}).get("role") == "starting",
             10, interval=0.01, what=f"{target} to begin its start")
    others = [n for n in c.names if n != target]
    frozen_at = time.monotonic()
    for n in others:
        c[n].signal(signal.SIGSTOP)
    try:
        held = []
        while time.monotonic() < frozen_at + 3.0:
            if target in c.holds():
                held.append(round(time.monotonic() - frozen_at, 2))
            time.sleep(0.02)
        state = c[target].state()
    finally:
        for n in others:
            c[n].signal(signal.SIGCONT)
    assert not held, f"{target} held the leased resource without quorum, at {held[:5]} s after its peers froze"
    res = state["apps"]["web"]["resources"]["r"]
    assert res["fail_count"] == 0, res
    assert "cut off" in c[target].log(), c[target].log()[-2000:]
    c.wait_active(timeout=20)
    assert len(c.active()) == 1
