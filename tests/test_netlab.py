"""The network lab itself: namespaces on a bridge, cuts, loss, partitions, teardown.

The lab tests need root, iproute2 and nftables; elsewhere they are skipped with the
reason. All traffic stays inside namespaces the lab creates.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import wait_for
from lab import netlab
from lab.netlab import Answer, Lab, Sample

REPO = Path(__file__).resolve().parent.parent
SKIP = netlab.skip_reason() if sys.platform == "linux" else "the network lab needs Linux"


def lab_test(test):
    """Mark a test as a lab test, skipped with the reason where the lab cannot run."""
    return pytest.mark.lab(pytest.mark.skipif(SKIP is not None, reason=SKIP or "")(test))


@pytest.fixture
def lab():
    with Lab(3) as built:
        yield built


def pings(lab, src, address, timeout=1):
    return lab.run(src, ["ping", "-n", "-q", "-c", "1", "-W", timeout, address], check=False).returncode == 0


UDP_RECEIVER = textwrap.dedent("""
    import socket, sys
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("0.0.0.0", int(sys.argv[1])))
    print("ready", flush=True)
    sock.settimeout(float(sys.argv[2]))
    count = 0
    try:
        while True:
            sock.recv(100)
            count += 1
    except socket.timeout:
        pass
    print(count, flush=True)
""")

UDP_SENDER = textwrap.dedent("""
    import socket, sys, time
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(int(sys.argv[3])):
        sock.sendto(b"x" * 64, (sys.argv[1], int(sys.argv[2])))
        if i % 20 == 19:
            time.sleep(0.002)
""")


def udp_delivered(lab, src, dst, count, port=9999):
    """How many of ``count`` datagrams sent from src to dst arrive (a bounded test)."""
    receiver = lab.popen(dst, [sys.executable, "-c", UDP_RECEIVER, port, 0.5],
                         stdout=subprocess.PIPE, text=True)
    assert receiver.stdout.readline().strip() == "ready"
    lab.run(src, [sys.executable, "-c", UDP_SENDER, lab.addr(dst), port, count])
    receiver.wait(timeout=30)
    return int(receiver.stdout.readline())


# -- building and basic reachability -------------------------------------------------------

@lab_test
def test_nodes_and_client_reach_each_other_over_ipv4_and_ipv6(lab):
    assert lab.nodes == ["node-a", "node-b", "node-c"]
    for src, dst in [("node-a", "node-b"), ("node-b", "node-c"), ("client", "node-a"), ("node-c", "client")]:
        assert pings(lab, src, lab.addr(dst)), f"{src} cannot ping {dst}"
    assert lab.run("node-a", ["ping", "-6", "-n", "-q", "-c", "1", "-W", "1", lab.addr6("node-c")]).returncode == 0
    assert lab.addr("node-a") == str(lab.subnet.network_address + 1)
    assert lab.addr("client").endswith(".200")


@lab_test
def test_every_member_has_its_own_namespace_with_loopback_up(lab):
    namespaces = netlab.lab_namespaces(lab.prefix)
    assert sorted(namespaces) == sorted(lab.ns(m) for m in lab.members + ["bridge"])
    for member in lab.members:
        link = json.loads(lab.run(member, ["ip", "-j", "link", "show", "dev", "lo"]).stdout)[0]
        assert "UP" in link["flags"], member
    assert pings(lab, "node-b", "127.0.0.1")


# -- faults ------------------------------------------------------------------------------

@lab_test
def test_silent_cut_isolates_a_node_whose_link_stays_up(lab):
    lab.cut("node-a")
    assert not pings(lab, "node-b", lab.addr("node-a"))
    assert not pings(lab, "node-a", lab.addr("client"))
    link = json.loads(lab.run("node-a", ["ip", "-j", "link", "show", "dev", "eth0"]).stdout)[0]
    assert "LOWER_UP" in link["flags"] and "NO-CARRIER" not in link["flags"]
    assert pings(lab, "node-b", lab.addr("node-c")), "the others must still reach each other"
    lab.restore("node-a")
    wait_for(lambda: pings(lab, "node-b", lab.addr("node-a")), what="node-a back")


@lab_test
def test_down_cut_shows_no_carrier_to_the_node(lab):
    lab.cut("node-b", mode="down")
    link = json.loads(lab.run("node-b", ["ip", "-j", "link", "show", "dev", "eth0"]).stdout)[0]
    assert "NO-CARRIER" in link["flags"]
    assert not pings(lab, "node-a", lab.addr("node-b"))
    lab.restore("node-b")
    wait_for(lambda: pings(lab, "node-a", lab.addr("node-b")), what="node-b back")


@lab_test
def test_loss_drops_about_the_given_share_of_datagrams(lab):
    assert pings(lab, "node-a", lab.addr("node-b"))  # resolve the neighbours before the loss
    lab.loss("node-b", 20)
    delivered = udp_delivered(lab, "node-a", "node-b", 2000)
    # 20 % of 2000 is 400 +- 18 (one sigma); the bounds are > 5 sigma wide.
    assert 1500 <= delivered <= 1700, f"{delivered} of 2000 delivered with 20 % loss\n{lab.rules()}"
    lab.clear_loss("node-b")
    assert udp_delivered(lab, "node-a", "node-b", 500) == 500


@lab_test
def test_partition_separates_two_groups_both_ways(lab):
    lab.partition(["node-a"], ["node-b", "node-c"])
    assert not pings(lab, "node-a", lab.addr("node-b"))
    assert not pings(lab, "node-c", lab.addr("node-a"))
    assert pings(lab, "node-b", lab.addr("node-c"))
    assert pings(lab, "client", lab.addr("node-a")), "the client is on no side"
    lab.heal()
    assert pings(lab, "node-a", lab.addr("node-b"))


@lab_test
def test_oneway_partition_drops_one_direction_only(lab):
    lab.partition("node-a", "node-b", oneway=True)
    assert udp_delivered(lab, "node-a", "node-b", 50) == 0
    assert udp_delivered(lab, "node-b", "node-a", 50) == 50
    lab.heal()
    assert udp_delivered(lab, "node-a", "node-b", 50) == 50


# -- teardown ----------------------------------------------------------------------------

@lab_test
def test_teardown_leaves_no_namespace_link_or_process_behind():
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count("\n")
    lab = Lab(2)
    tracked = lab.popen("node-a", ["sleep", "300"])
    untracked = subprocess.Popen(["ip", "netns", "exec", lab.ns("node-b"), "sleep", "300"])
    lab.teardown()
    assert netlab.lab_namespaces(lab.prefix) == []
    assert tracked.poll() is not None
    assert untracked.wait(timeout=5) is not None, "a process left inside a namespace must be killed"
    after = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count("\n")
    assert after == root_links
    lab.teardown()  # idempotent


@lab_test
def test_a_failed_build_removes_what_it_made(monkeypatch):
    real_ip, calls = netlab._ip, []

    def failing_ip(*argv, **kwargs):
        calls.append(argv)
        if len(calls) == 12:
            raise netlab.LabError("injected failure")
        return real_ip(*argv, **kwargs)

    monkeypatch.setattr(netlab, "_ip", failing_ip)
    prefix = f"hlab-{os.getpid()}-f41l"
    with pytest.raises(netlab.LabError, match="injected"):
        Lab(3, prefix=prefix)
    assert netlab.lab_namespaces(prefix) == []


@lab_test
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_killed_test_run_tears_its_lab_down(signum):
    """SIGTERM runs the lab's handler, Ctrl-C (SIGINT) unwinds through the with block."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO / "tests")!r})
        from lab.netlab import Lab
        with Lab(2) as lab:
            lab.popen("node-a", ["sleep", "300"])
            print(lab.prefix, flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    prefix = proc.stdout.readline().strip()
    assert prefix.startswith("hlab-")
    assert netlab.lab_namespaces(prefix)
    proc.send_signal(signum)
    proc.wait(timeout=15)
    assert netlab.lab_namespaces(prefix) == []


@lab_test
def test_reap_removes_labs_of_dead_runs_only(lab):
    stale = "hlab-4999999-dead-node-a"  # above pid_max: that run cannot be alive
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in netlab.reap_stale()
        assert netlab.lab_namespaces(stale) == []
        assert len(netlab.lab_namespaces(lab.prefix)) == len(lab.members) + 1, "a live lab stays"
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)


# -- measuring a failover ------------------------------------------------------------------

@lab_test
def test_probe_and_sampler_see_a_vip_move(lab):
    vip = lab.vip()
    lab.serve_name("node-a", 8080)
    lab.serve_name("node-b", 8080)
    lab.run("node-a", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
    with netlab.HolderSampler(lab, vip) as sampler, netlab.VipProbe(lab, vip, 8080) as probe:
        wait_for(lambda: any(a.answer == "node-a" for a in probe.records()), what="node-a answering")
        lab.run("node-b", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
        time.sleep(0.3)
        lab.run("node-a", ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"])
        # The client still has node-a's MAC (nobody announced): flush it, as an ARP
        # announcement would, so that the client finds node-b.
        lab.run("client", ["ip", "neigh", "flush", "dev", "eth0"])
        wait_for(lambda: any(a.answer == "node-b" for a in probe.records()), what="node-b answering")
        time.sleep(0.2)
        samples, answers = sampler.stop(), probe.stop()
    rate = netlab.sample_rate(samples)
    assert rate > 40, f"the sampler managed only {rate:.1f} samples/s"
    changes = [holders for _, holders in netlab.holder_changes(samples)]
    assert changes == [{"node-a"}, {"node-a", "node-b"}, {"node-b"}]
    count, seconds = netlab.dual_holding(samples)
    assert count >= 5 and 0.2 < seconds < 1.0
    by_node = netlab.answers_by_node(answers)
    assert by_node["node-a"] > 0 and by_node["node-b"] > 0
    outage = netlab.client_outage(answers, "node-a", "node-b")
    assert outage is not None and outage < 2.0
    print(f"sampler {rate:.1f}/s; dual holding {seconds:.2f} s; outage {outage:.3f} s; {dict(by_node)}")


@lab_test
def test_sampler_keeps_up_with_5_ms(lab):
    """The netlink sampler has headroom: 5 ms samples over 3 namespaces."""
    with netlab.HolderSampler(lab, lab.vip(), interval=0.005) as sampler:
        time.sleep(1.0)
        samples = sampler.stop()
    assert netlab.sample_rate(samples) > 150


# -- analysis helpers (pure) -------------------------------------------------------------

def s(t_ms, *holders):
    return Sample(t_ms * 1_000_000, frozenset(holders))


def a(t_ms, answer):
    return Answer(t_ms * 1_000_000, t_ms * 1_000_000 + 1, answer)


def test_dual_holding_counts_samples_with_two_holders_until_the_next_sample():
    samples = [s(0, "node-a"), s(20, "node-a", "node-b"), s(40, "node-a", "node-b"), s(60, "node-b")]
    count, seconds = netlab.dual_holding(samples)
    assert count == 2 and seconds == pytest.approx(0.04)
    assert netlab.dual_holding([]) == (0, 0.0)


def test_client_outage_runs_from_the_old_nodes_last_answer_to_the_new_nodes_first():
    answers = [a(0, "node-a"), a(20, "node-a"), a(40, None), a(60, None), a(80, "node-b"),
               a(100, "node-a"), a(120, "node-b")]
    assert netlab.client_outage(answers, "node-a", "node-b") == pytest.approx(0.06)
    assert netlab.client_outage(answers, "node-a", "node-c") is None
    assert netlab.longest_gap(answers) == pytest.approx(0.06)
    assert netlab.answers_by_node(answers) == {"node-a": 3, "node-b": 2, None: 2}
