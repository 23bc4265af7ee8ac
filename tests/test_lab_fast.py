"""Issue 11 in the network lab: the fast profile and the graceful hand-over, as a client sees them.

The fast profile: heartbeat 0.05 s, dead_after 0.3 s, the VIP an ``ipaddr`` with
``"lease": 0.2``, which ipaddr enforces with its nftables gate (a lease below 1 s):
the address answers only while its lease element, renewed every heartbeat, is in
an nftables set whose elements time out by themselves. takeover_after is 0.3 s.

Each test runs three real daemons in network namespaces (``LabCluster`` of
tests/test_lab_cluster.py) and three recorders for its whole length: a client asking
http://VIP:8080/ every 10 ms (``VipProbe``), the netlink sampler every 20 ms
(``HolderSampler`` with ``gate=True``: a node holds the VIP while the address is there
and its gate open), and an ARP prober on the client asking who-has VIP every 20 ms
(``ArpProbe``: which MACs answer, as the LAN sees it). Neither may ever see two holders.

``bench/lab_failover.py`` measures the same faults over many rounds (and the loss trials
over 60 s); this file is the bounded form CI runs, about a minute.
"""

import collections
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import wait_for
from lab import netlab
from lab.netlab import ArpReply, Lab
from test_lab_cluster import APP, REPO, WEB_PORT, LabCluster, ipaddr_vip

SKIP = netlab.skip_reason()
pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

Timing = collections.namedtuple("Timing", "heartbeat dead_after lease")
FAST = Timing(0.05, 0.3, 0.2)
DEFAULT = Timing(0.5, 2.0, 1)
SERVED_WITHIN = 1.0      # s from the fault to the client's first answer from another node
ARP_SILENT_WITHIN = 0.3  # s from a kill/SIGSTOP to the old node's last ARP answer for the VIP
# A role change in a daemon's log ("INFO [MainThread] elected: web: ...", "changed: web:
# role active -> stopping"); not a "decided: ... (elected: node-b ...) because ..." line,
# which is a node that elected itself and waits (its claim unconfirmed: nothing changed).
ROLE_LINE = re.compile(r"\] (elected|stepping down): |: role \w+ -> \w+")
ATTEMPT_LINE = re.compile(r"\] decided: \S+ waiting on \S+ \(elected: ")
MS = 1_000_000


# -- the cluster and its recorders ----------------------------------------------------------------

def check_config(c):
    proc = subprocess.run([sys.executable, "-m", "hado", "check-config", str(c.config_path), "--node", c.names[0]],
                          cwd=REPO, env=c.env, capture_output=True, text=True, timeout=60)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


@pytest.fixture
def cluster(tmp_path):
    """make(timing) -> a started LabCluster in a fresh lab, its VIP with the timing's lease."""
    made = []

    def make(timing):
        lab = Lab(3)
        made.append((lab, None))
        c = LabCluster(lab, tmp_path, heartbeat=timing.heartbeat, dead_after=timing.dead_after, log_level="info",
                       resource=lambda vip: ipaddr_vip(vip, lease=timing.lease))
        made[-1] = (lab, c)
        rc, out = check_config(c)
        assert rc == 0, f"hado check-config refuses the {timing} config (is the gate of leases below 1 s there?):\n{out}"
        c.start()
        return c

    yield make
    for lab, c in made:
        try:
            if c is not None:
                c.stop_all()
        finally:
            lab.teardown()


class Recorders:
    """The three recorders of a test, started together, stopped together."""

    def __init__(self, c):
        self.c = c
        self.sampler = netlab.HolderSampler(c.lab, c.vip, gate=True)
        self.probe = netlab.VipProbe(c.lab, c.vip, WEB_PORT, interval=0.01)
        self.arp = netlab.ArpProbe(c.lab, c.vip)

    def __enter__(self):
        for recorder in (self.sampler, self.probe, self.arp):
            recorder.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        self.samples, self.answers, self.arps = self.sampler.stop(), self.probe.stop(), self.arp.stop()
        self.addresses = self.sampler.addresses()
        return self

    def answer(self, after_ns, predicate, timeout):
        """The first answer sent at or after after_ns whose answerer passes predicate."""
        def found():
            return next((a for a in self.probe.records() if a.sent_ns >= after_ns and a.answer
                         and predicate(a.answer)), None)
        return wait_for(found, timeout, 0.02, what=f"the client's answer\n{self.c.tails()}")

    def story(self, t0_ns):
        """Who held the VIP when (both samplers) and which MACs answered ARP, for messages."""
        def changes(samples):
            return ", ".join(f"{(t - t0_ns) / 1e9:+.2f}s {'+'.join(sorted(h)) or '-'}"
                             for t, h in netlab.holder_changes(samples))
        macs = {self.c.lab.mac(n): n for n in self.c.names}
        arp = []
        for record in self.arps:
            who = macs.get(record.mac, record.mac)
            if not arp or arp[-1][1] != who:
                arp.append([record.t_ns, who, record.t_ns])
            arp[-1][2] = record.t_ns
        spans = ", ".join(f"{who} {(a - t0_ns) / 1e9:+.2f}..{(b - t0_ns) / 1e9:+.2f}s" for a, who, b in arp)
        return (f"gated holders: {changes(self.samples)}; addresses: {changes(self.addresses)}; "
                f"ARP answers: {spans}; client: {dict(netlab.answers_by_node(self.answers))}")

    def assert_never_two_holders(self, t0_ns):
        count, seconds = netlab.dual_holding(self.samples)
        assert count == 0, f"netlink: {seconds * 1000:.0f} ms with two holders; {self.story(t0_ns)}"
        seconds, windows = netlab.arp_dual_holding(self.arps)
        assert not windows, (f"ARP: {seconds * 1000:.0f} ms with two MACs answering "
                             f"(first at {(windows[0][0] - t0_ns) / 1e9:+.2f} s); {self.story(t0_ns)}")
        assert len(self.arp.probes()) > 10 and self.arps, "the ARP prober must have asked and heard answers"


def fault_on_the_active_node(c, rec):
    """Calm, the client served by the active node; returns it and t0 just before the fault."""
    first = c.wait_calm()
    assert first == "node-a"
    rec.answer(0, lambda who: who == first, 5)
    time.sleep(0.3)
    return first, time.monotonic_ns()


def assert_gate_closed_by_itself(c, rec, node, t0_ns):
    """After t0, ``node`` stopped answering ARP for the VIP within ARP_SILENT_WITHIN, while
    its address was still configured (its lease ran out: nobody removed anything)."""
    mac = c.lab.mac(node)
    story = rec.story(t0_ns)
    last = max((r.t_ns for r in rec.arps if r.mac == mac and r.t_ns >= t0_ns), default=t0_ns)
    assert (last - t0_ns) / 1e9 <= ARP_SILENT_WITHIN, \
        f"{node} still answered ARP for the VIP {(last - t0_ns) / 1e9:.3f} s after the fault; {story}"
    asked = [t for t in rec.arp.probes() if t > last + 100 * MS]
    assert len(asked) > 10, f"the prober must have kept asking after {node}'s last answer; {story}"
    configured = [s.t_ns for s in rec.addresses if s.t_ns > last + 20 * MS and node in s.holders]
    assert configured, f"{node}'s address should still be configured after its ARP answers stopped; {story}"
    return (last - t0_ns) / 1e9, (max(configured) - t0_ns) / 1e9


# -- kill -9 and SIGSTOP at the fast profile ----------------------------------------------------------

def test_kill_9_of_the_active_hado_serves_the_client_elsewhere_within_1_s_and_its_gate_closes_by_itself(cluster):
    """kill -9 of the active hado: nobody renews its lease, its gate closes 0.2 s later
    although its address is still configured (1 s lifetime), the next node takes over
    after takeover_after 0.3 s: the client is served by another node within 1 s, and
    neither the netlink sampler nor the ARP prober ever sees two holders, the killed
    node's restart included."""
    c = cluster(FAST)
    assert c.takeover_after() == pytest.approx(0.3)
    with Recorders(c) as rec:
        first, t0 = fault_on_the_active_node(c, rec)
        c.kill(first)
        served = rec.answer(t0, lambda who: who != first, 10)
        second = c.wait_calm(names=[n for n in c.runners if n != first], timeout=10)
        c.start(first)
        time.sleep(1.0)
        assert c.wait_calm(timeout=5) == second, "the restarted node takes nothing back"
    took = (served.sent_ns - t0) / 1e9
    assert took < SERVED_WITHIN, f"the client waited {took:.3f} s for {served.answer}; {rec.story(t0)}"
    rec.assert_never_two_holders(t0)
    silent, configured = assert_gate_closed_by_itself(c, rec, first, t0)
    print(f"kill -9: served by {served.answer} {took:.3f} s after the kill; {first} silent on ARP after "
          f"{silent:.3f} s, its address there until {configured:.2f} s")


def test_sigstop_of_the_active_hado_serves_the_client_elsewhere_within_1_s_and_it_wakes_up_as_standby(cluster):
    """SIGSTOP of the active hado: as kill -9 (its gate closes by itself, the next node
    serves within 1 s, never two holders); after SIGCONT it does not come back as a
    second holder: its gate stays shut (a renewal never re-opens an expired lease), its
    announcements are not sent, and it reports standby."""
    c = cluster(FAST)
    with Recorders(c) as rec:
        first, t0 = fault_on_the_active_node(c, rec)
        c.signal(first, signal.SIGSTOP)
        served = rec.answer(t0, lambda who: who != first, 10)
        second = c.wait_calm(names=[n for n in c.runners if n != first], timeout=10)
        woken = time.monotonic_ns()
        c.signal(first, signal.SIGCONT)
        time.sleep(1.0)
        assert c.wait_calm(timeout=5) == second, "the woken node takes nothing back"
    took = (served.sent_ns - t0) / 1e9
    assert took < SERVED_WITHIN, f"the client waited {took:.3f} s for {served.answer}; {rec.story(t0)}"
    rec.assert_never_two_holders(t0)
    silent, configured = assert_gate_closed_by_itself(c, rec, first, t0)
    late = [a for a in rec.answers if a.sent_ns >= woken and a.answer == first]
    assert not late, f"{first} answered the client again after SIGCONT; {rec.story(t0)}"
    state = c.state(first)
    assert state["apps"][APP]["role"] == "standby", state["apps"][APP]
    print(f"SIGSTOP: served by {served.answer} {took:.3f} s after the stop; {first} silent on ARP after "
          f"{silent:.3f} s, its address there until {configured:.2f} s")


# -- the graceful hand-over at the default timings -------------------------------------------------------

def test_sigterm_of_the_active_hado_hands_over_well_before_dead_after_and_peers_count_it_left(cluster):
    """Default timings (0.5 / 2.0): SIGTERM of the active daemon. It stops its VIP, says
    goodbye, exits; the next node serves the client well before dead_after (under 1 s;
    the target is 0.15 s plus the VIP's stop and start), never two holders, and the
    peers show the old node as left, not down, also after dead_after of its silence."""
    c = cluster(DEFAULT)
    with Recorders(c) as rec:
        first, t0 = fault_on_the_active_node(c, rec)
        c.signal(first, signal.SIGTERM)
        served = rec.answer(t0, lambda who: who != first, 10)
        assert c.procs[first].wait(10) == 0, c.tail(first)
        second = c.wait_calm(names=[n for n in c.runners if n != first], timeout=10)
        states = {n: c.state(n) for n in c.runners if n != first}
        time.sleep(DEFAULT.dead_after + 0.5)
        later = {n: c.state(n) for n in c.runners if n != first}
    took = (served.sent_ns - t0) / 1e9
    assert took < SERVED_WITHIN, f"the client waited {took:.3f} s for {served.answer}; {rec.story(t0)}"
    rec.assert_never_two_holders(t0)
    for node in states:
        for when, state in (("at once", states[node]), (f"after {DEFAULT.dead_after + 0.5} s", later[node])):
            peer = state["peers"][first]
            assert peer["status"] == "left", f"{node} sees {first} {peer['status']} {when}, not left: {peer}"
    log = (c.dir / f"{second}.out").read_text(errors="replace")
    assert f"left: {first} said goodbye" in log, c.tail(second)
    print(f"SIGTERM: served by {served.answer} {took:.3f} s after the signal (dead_after {DEFAULT.dead_after} s); "
          f"outage {netlab.client_outage(rec.answers, first, served.answer):.3f} s")


# -- loss at the fast profile -------------------------------------------------------------------------------

def test_30_percent_loss_on_the_active_node_for_20_s_moves_nothing_at_the_fast_profile(cluster):
    """30 % of the active node's packets lost each way for 20 s, heartbeat 0.05 s and
    dead_after 0.3 s: no role changes anywhere (the daemons' logs and their states every
    0.25 s), and the VIP never seen on another node (bench/lab_failover.py --loss runs
    60 s trials)."""
    c = cluster(FAST)
    first = c.wait_calm()
    expected = {n: "active" if n == first else "standby" for n in c.runners}
    offsets = {n: (c.dir / f"{n}.out").stat().st_size for n in c.names}
    off, votes = [], []
    with Recorders(c) as rec:
        rec.answer(0, lambda who: who == first, 5)
        t0 = time.monotonic_ns()
        c.lab.loss(first, 30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = c.states()
            roles = {n: s["apps"][APP]["role"] for n, s in states.items() if s}
            if roles != {n: r for n, r in expected.items() if n in roles}:
                off.append((round((time.monotonic_ns() - t0) / 1e9, 2), roles))
            if states.get(first):
                votes.append(states[first]["quorum"]["votes"])
            time.sleep(0.25)
        c.lab.clear_loss(first)
        t1 = time.monotonic_ns()
    lines, attempts = {}, 0
    for node in c.names:
        with open(c.dir / f"{node}.out", "rb") as log:
            log.seek(offsets[node])
            text = log.read().decode(errors="replace").splitlines()
        lines[node] = [line for line in text if ROLE_LINE.search(line)]
        attempts += sum(1 for line in text if ATTEMPT_LINE.search(line))
    story = rec.story(t0)
    assert not any(lines.values()), f"role changes under 30 % loss: {lines}"
    assert not off, f"roles seen off during the loss: {off[:5]}"
    during = [s for s in rec.samples if t0 <= s.t_ns < t1]
    elsewhere = [s for s in during if s.holders - {first}]
    assert during and not elsewhere, f"{len(elsewhere)} samples with the VIP on another node; {story}"
    without = sum(1 for s in during if not s.holders)
    by_node = netlab.answers_by_node([a for a in rec.answers if t0 <= a.sent_ns < t1])
    print(f"30 % loss, 20 s: 0 role changes ({attempts} takeovers begun and held back), {len(during)} samples "
          f"({without} without holder), votes of {first} {min(votes)}-{max(votes)}; client {dict(by_node)}")


# -- the recorders themselves ---------------------------------------------------------------------------------

def test_arp_probe_sees_every_mac_that_answers_and_counts_windows_with_two():
    """Two namespaces with the same address both answer ARP: the prober sees both MACs
    in the same windows while both hold it, one MAC once the other dropped it."""
    with Lab(2) as lab:
        vip = lab.vip()
        lab.run("node-a", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
        with netlab.ArpProbe(lab, vip) as arp:
            wait_for(lambda: arp.records(), 5, what="an ARP answer")
            lab.run("node-b", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
            time.sleep(0.4)
            lab.run("node-a", ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"])
            gone = time.monotonic_ns()
            time.sleep(0.4)
            records = arp.stop()
        a, b = lab.mac("node-a"), lab.mac("node-b")
        seconds, windows = netlab.arp_dual_holding(records)
        assert set(netlab.arp_macs(records)) == {a, b}
        assert all(w[2] == {a, b} for w in windows) and 0.2 <= seconds <= 0.6, (seconds, len(windows))
        assert netlab.arp_macs(records, gone + 40 * MS) == {b: netlab.arp_macs(records, gone + 40 * MS)[b]}
        assert {r.kind for r in records} == {"reply"}
        assert 15 <= len(arp.probes()) / ((arp.probes()[-1] - arp.probes()[0]) / 1e9) <= 55


def test_gated_sampler_drops_a_node_whose_lease_element_timed_out():
    """HolderSampler(gate=True): an address whose gate has no lease element left is not
    held, though the address stays; an ungated address is held as before."""
    with Lab(2) as lab:
        vip = lab.vip()
        sets = (f"add table inet {netlab.GATE_TABLE}\n"
                f"add set inet {netlab.GATE_TABLE} gated4 {{ type ipv4_addr; }}\n"
                f"add set inet {netlab.GATE_TABLE} lease4 {{ type ipv4_addr; flags timeout; }}\n"
                f"add table arp {netlab.GATE_TABLE}\n"
                f"add set arp {netlab.GATE_TABLE} gated {{ type ipv4_addr; }}\n"
                f"add set arp {netlab.GATE_TABLE} lease {{ type ipv4_addr; flags timeout; }}\n"
                f"add element inet {netlab.GATE_TABLE} gated4 {{ {vip} }}\n"
                f"add element arp {netlab.GATE_TABLE} gated {{ {vip} }}\n"
                f"add element inet {netlab.GATE_TABLE} lease4 {{ {vip} timeout 300ms }}\n"
                f"add element arp {netlab.GATE_TABLE} lease {{ {vip} timeout 300ms }}\n")
        with netlab.HolderSampler(lab, vip, gate=True) as sampler:
            lab.run("node-b", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
            time.sleep(0.2)
            lab.run("node-a", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
            lab.run("node-a", ["nft", "-f", "-"], input=sets)
            lab.run("node-b", ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"])
            leased = time.monotonic_ns()
            time.sleep(0.6)
            samples = sampler.stop()
        held = [h for _, h in netlab.holder_changes(samples)]
        addresses = [h for _, h in netlab.holder_changes(sampler.addresses())]
        assert held[-1] == frozenset() and frozenset({"node-a"}) in held and frozenset({"node-b"}) in held, held
        assert addresses[-1] == {"node-a"}, addresses
        end = next(t for t, h in netlab.holder_changes(samples) if t > leased and not h)
        assert 0.15 < (end - leased) / 1e9 < 0.5, (end - leased) / 1e9
        assert netlab.sample_rate(samples) > 40


def test_arp_dual_holding_counts_probe_windows_with_two_macs():
    def r(t_ms, mac, window_ms):
        return ArpReply(int(t_ms * MS), mac, "reply", int(window_ms * MS))
    records = [r(1, "a", 0.5), r(21, "a", 20.5), r(21.2, "b", 20.5), r(41, "b", 40.5), r(42, "a", 40.5), r(61, "b", 60.5)]
    seconds, windows = netlab.arp_dual_holding(records)
    assert seconds == pytest.approx(0.04) and [w[0] for w in windows] == [20.5 * MS, 40.5 * MS]
    assert windows[0][2] == {"a", "b"}
    assert netlab.arp_dual_holding([r(1, "a", 0), r(21, "b", 0)]) == (0.0, []), "fixed slots without windows"
    assert netlab.arp_dual_holding([r(1, "a", 0), r(2, "b", 0)])[0] == pytest.approx(0.02)
    assert netlab.arp_dual_holding([])[1] == []
