"""Hostile input on the heartbeat port: a flood, fuzzing, replays (docs/cluster.rst, "Heartbeats").

Real daemons: one 3-node cluster on loopback (heartbeat 0.2 s, dead_after 1.0 s) for
the whole module. Nobody without the secret may move an app, or even lose a node its
quorum for a moment:

- *flood*: several processes send the active node's UDP port every kind of junk as
  fast as this machine can for 10 s; no role changes anywhere, the app stays put, the
  active node's quorum never lapses (``/v1/state`` of every node sampled every 50 ms),
  the rejected counters grow; the rate and the node's CPU are printed;
- *fuzz*: hypothesis and raw random bytes at a running node (truncated, oversized,
  non-UTF-8, deeply nested, replayed, reordered, cross-cluster), and the same at the
  parsing code: no traceback, nothing accepted, each datagram counted once;
- *replays*: each row of the table in docs/cluster.rst, unit-level on a fake clock, and
  datagrams captured off the loopback (root) replayed at the live nodes.
"""

import hmac
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hado import peers as peers_mod
from hado.peers import ANSWER, HEADER, KINDS, MAGIC, REQUEST, VERSION, Heartbeats, heartbeat_key, pack
from hado.state import State
from helpers import Cluster, free_port, wait_for

pytestmark = pytest.mark.cluster

HB, DEAD = 0.2, 1.0
SECRET = b"0123456789abcdef0123456789abcdef"   # helpers.Cluster's
KEY = heartbeat_key(SECRET)
FLOOD_S = 10.0
SENDERS = 4
NICE = int(os.environ.get("HADO_FLOOD_NICE", "10"))   # see test_a_flood_of_foreign_datagrams_moves_nothing


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("hostile"), heartbeat=HB, dead_after=DEAD)
    cluster.start()
    try:
        assert cluster.wait_active() == "node-a"
        wait_for(lambda: cluster.agree() == "node-a", what="every node agrees on node-a")
        wait_for(lambda: all(s["quorum"]["ok"] and all(p["up"] for p in s["peers"].values())
                             for s in cluster.states().values()), what="every node up with quorum")
        yield cluster
    finally:
        cluster.stop_all()
    for name in cluster.names:
        assert "Traceback" not in cluster[name].log(), f"{name} logged a traceback"


def total_rejected(snap):
    return sum(snap["rejected"]["counts"].values()) + sum(sum(p["rejected"].values()) for p in snap["peers"].values())


def steady(c):
    """What must not change: per node, the app's role, active node and epoch, and the events."""
    out = {}
    for name, snap in c.states().items():
        app = snap["apps"]["web"]
        out[name] = {"role": app["role"], "active_node": app["active_node"], "epoch": app["epoch"],
                     "events": snap["events"]}
    return out


def udp_drops(port):
    """Datagrams the kernel dropped on every socket bound to ``port`` (/proc/net/udp)."""
    drops = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                drops += int(fields[-1])
    return drops


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """GET /v1/state of one node every 50 ms: (sent at, answered at, state or None)."""

    def __init__(self, daemon):
        super().__init__(daemon=True)
        self.node, self.samples, self.stop = daemon, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            self.samples.append((t, self.node.try_state(), time.monotonic()))
            self.stop.wait(max(0.0, 0.05 - (time.monotonic() - t)))


# ----- the flood ---------------------------------------------------------------------

FLOOD = r'''
import hmac, json, os, random, socket, sys, time
port, start, seconds, names, cluster, seed, nice, version = json.loads(sys.argv[1])
os.nice(nice)
rnd = random.Random(seed)
wrong = hmac.digest(b"not-the-secret", b"x", "sha256")
def v2(kind, body, key=wrong, nonce=None):   # our protocol's header (version 3 now), a wrong MAC
    data = b"HADO" + bytes((version,)) + kind + (nonce or os.urandom(16)) + body
    return data + hmac.digest(key, data, "sha256")
def js(o):
    return json.dumps(o, separators=(",", ":")).encode()
def ping(sender, **kw):
    b = {"cluster": cluster, "from": sender, "to": names[0], "boot": os.urandom(8).hex(),
         "seq": rnd.randrange(1 << 40), "claims": ["web"], "poll_me": True}
    b.update(kw)
    return js(b)
nested = b"[" * 8000 + b"]" * 8000
made = []
for i in range(40):
    made.append(os.urandom(rnd.randrange(1, 1400)))                                       # garbage
    made.append(v2(b"Q", ping(names[1]))[: rnd.randrange(1, 120)])                        # truncated
    made.append(v2(b"Q", ping(names[1]))[:-rnd.randrange(1, 30)])                         # truncated, MAC cut
    made.append(v2(b"Q", ping(rnd.choice(names[1:]))))                                    # forged: wrong key
    made.append(v2(b"A", js({"cluster": cluster, "from": names[1], "to": names[0], "boot": "b", "seq": 1,
                             "report": {"apps": {"web": {"role": "active"}}}})))            # forged answer
    made.append(js({"type": "ping", "cluster": cluster, "from": names[1], "to": names[0], "nonce": "n"})
                + b"\n" + os.urandom(32).hex().encode())                                   # JSON, version-1 shape
    made.append(ping(names[2]))                                                            # JSON, no MAC at all
    made.append(v2(b"Q", b"\xff\xfe\xfd" + os.urandom(200)))                               # non-UTF-8
    made.append(b"\xff\xfe" + os.urandom(300))
    made.append(v2(b"Q", nested))                                                          # deeply nested
    made.append(nested)
    made.append(b'{"a":' * 4000 + b"1" + b"}" * 4000 + b"\n" + b"0" * 64)
    made.append(v2(b"Q", ping(names[1], claims=[]), nonce=b"\0" * 16))                     # claims a real name
    if i % 8 == 0:                                                                         # oversized, 60 KB
        made.append(os.urandom(60000))
        made.append(v2(b"Q", b"{" + b" " * 60000 + b"}"))
        made.append(v2(b"A", b"{" + os.urandom(60000) + b"}"))
rnd.shuffle(made)
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
for s in socks:
    s.setblocking(False)
address = ("127.0.0.1", port)
sent = errors = 0
time.sleep(max(0.0, start - time.monotonic()))   # CLOCK_MONOTONIC: the same in every process
end = start + seconds
while time.monotonic() < end:
    for s in socks:
        send = s.sendto
        for d in made:
            try:
                send(d, address)
                sent += 1
            except OSError:
                errors += 1
print(json.dumps({"sent": sent, "errors": errors, "seconds": time.monotonic() - start,
                  "kinds": len(made), "bytes": sum(map(len, made))}))
'''


def test_a_flood_of_foreign_datagrams_moves_nothing(c):
    """SENDERS processes send node-a's port every kind of junk as fast as they can for
    FLOOD_S: nothing moves, no quorum lapses, and the flood is counted.

    The senders run at nice 10 (HADO_FLOOD_NICE): they still take every CPU cycle the
    three daemons leave, but a real flood comes from other machines, and senders that
    took the daemons' CPU away on this 2-core box would test CPU starvation, not the
    heartbeat port. The kernel's own work of delivering the flood is done in the
    senders' context (loopback) either way."""
    victim = c.wait_active()
    port, pid = c.ports[victim], c[victim].proc.pid
    before = steady(c)
    snap0 = c[victim].state()
    drops0 = udp_drops(port)
    samplers = {n: Sampler(c[n]) for n in c.names}
    for sampler in samplers.values():
        sampler.start()
    start = time.monotonic() + 2.0   # the senders make their datagrams first
    senders = [subprocess.Popen([sys.executable, "-c", FLOOD,
                                 json.dumps([port, start, FLOOD_S, c.names, "test", i, NICE, VERSION])],
                                stdout=subprocess.PIPE, text=True) for i in range(SENDERS)]
    try:
        time.sleep(max(0.0, start - time.monotonic()))
        cpu0 = cpu_seconds(pid)
        time.sleep(FLOOD_S)
        cpu = (cpu_seconds(pid) - cpu0) / FLOOD_S
        results = [json.loads(p.communicate(timeout=30)[0]) for p in senders]
    finally:
        for p in senders:
            if p.poll() is None:
                p.kill()
                p.wait()
    drops = udp_drops(port) - drops0
    started, flood_s = start, max(r["seconds"] for r in results)
    time.sleep(DEAD + 0.5)   # anything the flood set off has happened by now
    for sampler in samplers.values():
        sampler.stop.set()
        sampler.join(5)
    after = steady(c)
    snap1 = c[victim].state()

    sent = sum(r["sent"] for r in results)
    read = total_rejected(snap1) - total_rejected(snap0)
    good = [(t, n, s) for n, sampler in samplers.items() for t, s, _ in sampler.samples if s]
    taken = sum(len(sampler.samples) for sampler in samplers.values())
    mine = [x for x in samplers[victim].samples if x[1]]
    freshest = max(sorted(p["last_seen_s"] for p in s["peers"].values())[0] for _, s, _ in mine)
    worst = {peer: max(s["peers"][peer]["last_seen_s"] for _, s, _ in mine) for peer in snap1["peers"]}
    seen_by = {n: max(s["peers"][victim]["last_seen_s"] for _, m, s in good if m == n) for n in c.names if n != victim}
    print(f"\nflood: {SENDERS} processes, {sent} datagrams in {flood_s:.1f} s = {sent / flood_s:,.0f}/s "
          f"({sum(r['errors'] for r in results)} send errors); {victim} read and rejected {read:,} "
          f"({read / flood_s:,.0f}/s), the kernel dropped {drops:,} on its port; {victim} CPU "
          f"{100 * cpu:.0f} % of one core; samples {len(good)}/{taken}; at any sample {victim}'s freshest vote "
          f"at most {freshest:.2f} s old (its quorum lapses at {DEAD / 2} s), each peer's at most {worst}; "
          f"{victim} as seen by its peers at most {seen_by} s silent; "
          f"rejected {snap1['rejected']['counts']}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    assert after == before, ("a role, the active node, an epoch or the events changed during the flood "
                             f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    assert len(good) >= 0.95 * taken and {n for _, n, _ in good} == set(c.names)
    for t, n, s in good:   # the active node keeps its quorum and the app; nobody else sees it down
        assert s["apps"]["web"]["role"] == ("active" if n == victim else "standby"), (t - started, n, s["apps"])
        assert s["apps"]["web"]["active_node"] == victim, (t - started, n, s["apps"])
        if n == victim:
            assert s["quorum"]["ok"] and all(p["up"] for p in s["peers"].values()), (t - started, s["peers"])
        else:
            assert s["peers"][victim]["up"], (t - started, n, s["peers"])
    assert freshest < DEAD / 2, f"at a sample, the active node's freshest vote was {freshest} s old"
    counts = snap1["rejected"]["counts"]
    for kind in ("unparsable", "version", "oversized", "bad_signature", "unknown_nonce"):
        assert counts.get(kind, 0) > snap0["rejected"]["counts"].get(kind, 0), kind
    assert read > 10000
    # a foreign sender cannot touch a peer's record, not even by naming it
    assert {p: e["rejected"] for p, e in snap1["peers"].items()} == {p: e["rejected"] for p, e in snap0["peers"].items()}
    assert drops > 0, f"no flood: {sent / flood_s:,.0f} datagrams/s, no more than {victim} reads (a busy machine?)"


# ----- fuzzing -------------------------------------------------------------------------

def capture(ports, seconds):
    """UDP payloads between ``ports`` on the loopback for ``seconds``: [(src, dst, payload)]."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    try:
        sock.bind(("lo", 0))
        sock.settimeout(0.05)
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                packet, where = sock.recvfrom(70000)
            except socket.timeout:
                continue
            if where[2] == socket.PACKET_OUTGOING or packet[9] != 17:
                continue
            ihl = (packet[0] & 15) * 4
            src, dst = struct.unpack_from("!HH", packet, ihl)
            if src in ports and dst in ports:
                out.append((src, dst, packet[ihl + 8:]))
        return out
    finally:
        sock.close()


def captured_by_kind(c, seconds=1.0):
    """node-b -> node-a requests and answers, captured off the loopback (root only)."""
    if os.geteuid() != 0:
        pytest.skip("capturing datagrams off the loopback needs root")
    port = {n: p for n, p in c.ports.items()}
    got = capture(set(port.values()), seconds)
    b_to_a = [d for s, t, d in got if s == port["node-b"] and t == port["node-a"]]
    requests = [d for d in b_to_a if d[5] == REQUEST]
    answers = [d for d in b_to_a if d[5] == ANSWER]
    assert len(requests) >= 3 and len(answers) >= 3, (len(requests), len(answers))
    return requests, answers


def signed(kind, body, key=KEY, nonce=None):
    return pack(key, kind, nonce or os.urandom(16), body)


def hostile(requests=(), answers=()):
    """Datagrams nobody without the secret could make valid, of every shape."""
    other_key = heartbeat_key(b"the neighbouring cluster's secret")
    nest = st.integers(1, 20000).map(lambda n: "[" * n + "]" * n)
    junk_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                             lambda ch: st.lists(ch, max_size=5) | st.dictionaries(st.text(max_size=8), ch, max_size=5),
                             max_leaves=8).map(lambda o: json.dumps(o).encode())
    head = st.builds(lambda m, v, k, n: m + bytes((v, k)) + n, st.sampled_from([MAGIC, b"HADX", b"{\"ty"]),
                     st.sampled_from([VERSION, 1, 2, 255]), st.sampled_from([REQUEST, ANSWER, 0, ord("P")]),
                     st.binary(min_size=16, max_size=16))
    body = st.one_of(st.binary(max_size=600), junk_json, nest.map(str.encode),
                     st.binary(max_size=200).map(lambda b: b"\xff\xfe" + b))
    valid = list(requests) + list(answers)
    shapes = [
        st.binary(max_size=2000),                                                       # raw
        st.integers(60000, 65000).map(os.urandom),                                      # oversized
        st.tuples(head, body, st.binary(min_size=32, max_size=32)).map(b"".join),      # a header, no MAC
        nest.map(str.encode),                                                           # deeply nested, bare
        st.builds(lambda k, o: signed(k, {"cluster": "other", "from": "node-b", "to": "node-a", "boot": "x",
                                          "seq": 1, "claims": [], "report": {"apps": {}}, "x": o}, key=other_key),
                  st.sampled_from([REQUEST, ANSWER]), junk_json.map(bytes.decode)),     # another cluster
        st.builds(lambda o: signed(REQUEST, {"cluster": "other", "from": "node-b", "to": "node-a", "boot": "x",
                                             "seq": 1, "claims": [], "x": o}),
                  junk_json.map(bytes.decode)),                                         # same secret, other name
        st.builds(lambda b: signed(REQUEST, {"from": "nobody", "x": b.hex()}), st.binary(max_size=50)),  # unknown name
    ]
    if valid:
        pick = st.sampled_from(valid)
        shapes += [
            st.builds(lambda d, n: d[:n], pick, st.integers(0, 400)),                    # truncated
            st.builds(lambda d, i, x: d[:i % len(d)] + bytes([d[i % len(d)] ^ x]) + d[i % len(d) + 1:],
                      pick, st.integers(0, 70000), st.integers(1, 255)),                 # one byte flipped
            st.builds(lambda d, e: d + e, pick, st.binary(min_size=1, max_size=100)),     # extended
        ]
    if requests:
        shapes.append(st.sampled_from(list(requests)))                                  # replayed, any order
    if answers:
        shapes.append(st.sampled_from(list(answers)))                                   # replayed answers
    return st.one_of(shapes)


def test_fuzz_at_a_running_node_accepts_nothing_and_counts_everything(c):
    """Random bytes, then hypothesis, at node-a: each datagram is one rejection, nothing
    is answered, and roles and quorum do not move."""
    requests, answers = captured_by_kind(c)
    captured_at = time.monotonic()
    a = c["node-a"]
    before, snap0, drops0 = steady(c), a.state(), udp_drops(c.ports["node-a"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    target = ("127.0.0.1", c.ports["node-a"])
    tried = {"raw": 0, "hypothesis": 0}
    rnd = random.Random(10)
    try:
        deadline = time.monotonic() + 2.5   # also: the captured answers' nonces are long gone after it
        while time.monotonic() < deadline or time.monotonic() - captured_at < 8 * HB + 2 * HB:
            for _ in range(200):
                sock.sendto(os.urandom(rnd.choice([1, 10, 56, 100, 1400, rnd.randrange(1, 9000)])), target)
                tried["raw"] += 1
            time.sleep(0.02)

        @settings(max_examples=300, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(hostile(requests, answers))
        def one(datagram):
            sock.sendto(datagram, target)
            tried["hypothesis"] += 1
            if len(datagram) > 20000:
                time.sleep(0.002)   # let the node read it: the kernel queue holds few of these

        one()
        sent = tried["raw"] + tried["hypothesis"]
        drops = lambda: udp_drops(c.ports["node-a"]) - drops0
        counted = wait_for(lambda: (n := total_rejected(a.state()) - total_rejected(snap0)) >= sent - drops() and n,
                           timeout=5, what="every datagram counted")
        after = steady(c)
        with pytest.raises(BlockingIOError):
            sock.recv(70000)   # nothing was ever answered
    finally:
        sock.close()
    snap1 = a.state()
    print(f"\nfuzz at node-a: {tried['raw']} random + {tried['hypothesis']} hypothesis inputs = {sent}; "
          f"counted {counted}, kernel drops {drops()}; per peer "
          f"{ {p: e['rejected'] for p, e in snap1['peers'].items()} }, unknown {snap1['rejected']['counts']}")
    assert counted == sent - drops() and drops() < sent / 100
    assert after == before and snap1["quorum"]["ok"]
    assert snap1["peers"]["node-b"]["rejected"].get("replayed", 0) > 0, "the replays were not seen as such"
    assert "Traceback" not in a.log()


def quiet_node(me="node-a", peers=("node-b", "node-c"), clock=None):
    """A Heartbeats of ``me`` bound to loopback, thread not started: handle() by hand."""
    ports = {n: free_port() for n in (me, *peers)}
    nodes = {n: {"host": "127.0.0.1", "port": p} for n, p in ports.items()}
    state = State(me, "test", clock=clock or time.monotonic)
    state.configure_quorum(list(peers), 2, DEAD / 2)
    beats = Heartbeats(state, me, "test", nodes, SECRET, HB, lambda: {"node": me, "apps": {}},
                       clock or time.monotonic, claims=lambda: [])
    beats.bind("127.0.0.1", ports[me])
    sent = []
    beats.send = lambda peer, datagram, address: sent.append((peer, datagram))
    return state, beats, sent


def close(beats):
    for sock, _ in beats.inbox.values():
        sock.close()
    beats.wake_r.close()
    beats.wake_w.close()


def test_fuzz_the_parsing_code_unit_level():
    """Every input: no exception out of handle(), exactly one counter up, nothing applied."""
    state, beats, sent = quiet_node()
    applied = []
    state.peer_answer = lambda *a: applied.append(("answer", a))
    state.peer_request = lambda *a: applied.append(("request", a))
    beats.heard["node-b"] = ["b0075", 100]   # a live run of node-b we heard from, and its requests:
    old = [signed(REQUEST, {"cluster": "test", "from": "node-b", "to": "node-a", "boot": "b0075", "seq": s,
                            "claims": ["web"] if s % 2 else []}) for s in range(90, 101)]
    to_c = [signed(REQUEST, {"cluster": "test", "from": "node-b", "to": "node-c", "boot": "b0075", "seq": 200,
                             "claims": []})]
    count = {"n": 0}
    try:
        @settings(max_examples=500, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(hostile(old + to_c, ()), st.sampled_from([("127.0.0.1", 1), ("127.0.0.1", beats.nodes["node-b"]["port"])]))
        def one(datagram, source):
            total = sum(state.rejected.values()) + sum(sum(p["rejected"].values()) for p in state.peers.values())
            beats.handle(datagram, source, time.monotonic())
            after = sum(state.rejected.values()) + sum(sum(p["rejected"].values()) for p in state.peers.values())
            assert after == total + 1, (datagram[:80], state.last_rejection)
            count["n"] += 1

        one()
        for _ in range(20000):
            n = random.choice([0, 1, 22, 55, 56, 57, 100, 1000, 16000, 16500, 64000, 65001])
            beats.handle(os.urandom(n), ("127.0.0.1", 2), time.monotonic())
            count["n"] += 1
    finally:
        close(beats)
    print(f"\nunit fuzz: {count['n']} inputs; per kind unknown {state.rejected}, "
          f"node-b {state.peers.get('node-b', {}).get('rejected')}")
    assert applied == [] and sent == [] and beats.heard["node-b"] == ["b0075", 100]
    assert set(state.rejected) | set(state.peers["node-b"]["rejected"]) <= set(KINDS)
    assert sum(state.rejected.values()) + sum(sum(p["rejected"].values()) for p in state.peers.values()) == count["n"]


# ----- replays, row by row (docs/cluster.rst, "Heartbeats") ----------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def b_request(seq, boot="b-run-1", to="node-a", claims=(), nonce=None):
    return signed(REQUEST, {"cluster": "test", "from": "node-b", "to": to, "boot": boot, "seq": seq,
                            "claims": list(claims)}, nonce=nonce)


def b_answer(nonce, seq, boot="b-run-1", to="node-a", role="standby"):
    return signed(ANSWER, {"cluster": "test", "from": "node-b", "to": to, "boot": boot, "seq": seq,
                           "report": {"node": "node-b", "apps": {"web": {"role": role}}}}, nonce=nonce)


def asked(sent, peer):
    """The nonces of the requests ``sent`` to ``peer``."""
    return [d[6:HEADER] for p, d in sent if p == peer and d[5] == REQUEST]


def b_at(beats):
    return ("127.0.0.1", beats.nodes["node-b"]["port"])


@pytest.fixture
def a_node():
    clock = Clock()
    state, beats, sent = quiet_node(clock=clock)
    beats.new_round(clock())
    yield clock, state, beats, sent
    close(beats)


def prove(clock, beats, sent, seq=10, boot="b-run-1"):
    nonce = asked(sent, "node-b")[-1]
    beats.handle(b_answer(nonce, seq, boot), b_at(beats), clock())


def test_replay_an_answer_to_an_old_nonce_is_no_evidence(a_node):
    clock, state, beats, sent = a_node
    nonce = asked(sent, "node-b")[-1]
    answer = b_answer(nonce, 10)
    beats.handle(answer, b_at(beats), clock())
    evidence = state.peers["node-b"]["evidence"]
    clock.now += HB
    beats.new_round(clock())
    clock.now += 5.0
    beats.handle(answer, b_at(beats), clock())        # a round later: late, ignored
    assert state.peers["node-b"]["evidence"] == evidence and state.peers["node-b"]["rejected"] == {}
    for _ in range(10):
        clock.now += HB
        beats.new_round(clock())
    beats.handle(answer, b_at(beats), clock())        # long after: not even known as ours
    assert state.peers["node-b"]["evidence"] == evidence
    assert state.peers["node-b"]["rejected"] == {"unknown_nonce": 1}


def test_replay_an_answer_to_another_node_is_unknown_there(a_node):
    clock, state, beats, sent = a_node
    nonce = asked(sent, "node-b")[-1]
    c_state, c_beats, c_sent = quiet_node(me="node-c", peers=("node-a", "node-b"))
    try:
        c_beats.new_round(time.monotonic())
        c_beats.handle(b_answer(nonce, 10), ("127.0.0.1", 5), time.monotonic())   # node-b's answer to node-a
        assert c_state.rejected == {"unknown_nonce": 1} and c_state.peers.get("node-b", {}).get("evidence") is None
        # even with node-c's own nonce, an answer meant for node-a says so under its signature
        c_nonce = asked(c_sent, "node-b")[-1]
        c_beats.handle(b_answer(c_nonce, 11, to="node-a"), ("127.0.0.1", 5), time.monotonic())
        assert c_state.peers["node-b"]["rejected"] == {"wrong_node": 1} and c_state.peers["node-b"]["evidence"] is None
    finally:
        close(c_beats)


def test_replay_a_request_later_is_refused_and_cannot_bring_back_an_old_claim(a_node):
    clock, state, beats, sent = a_node
    prove(clock, beats, sent, seq=10)
    with_claim, without = b_request(11, claims=["web"]), b_request(12)
    for datagram in (with_claim, without):
        beats.handle(datagram, b_at(beats), clock())
    assert state.peers["node-b"]["claims"] == []
    answers = len([1 for p, d in sent if d[5] == ANSWER])
    clock.now += 30
    beats.handle(with_claim, ("127.0.0.1", 4444), clock())   # from anywhere, any time later
    assert state.peers["node-b"]["claims"] == [] and state.peers["node-b"]["rejected"] == {"replayed": 1}
    assert len([1 for p, d in sent if d[5] == ANSWER]) == answers, "a replay is not answered"
    # ... nor erase a claim: the newer word stays
    beats.handle(b_request(13, claims=["web"]), b_at(beats), clock())
    beats.handle(without, b_at(beats), clock())
    assert state.peers["node-b"]["claims"] == ["web"] and state.peers["node-b"]["rejected"] == {"replayed": 2}


def test_replay_a_request_to_another_node_is_refused_there(a_node):
    clock, state, beats, sent = a_node
    c_state, c_beats, c_sent = quiet_node(me="node-c", peers=("node-a", "node-b"))
    try:
        c_beats.handle(b_request(11, to="node-a", claims=["web"]), ("127.0.0.1", 5), time.monotonic())
        assert c_state.peers["node-b"]["rejected"] == {"wrong_node": 1} and c_sent == []
        assert c_state.peers["node-b"]["claims"] == []
    finally:
        close(c_beats)


def test_replay_a_request_of_an_earlier_run_is_answered_but_applies_nothing(a_node):
    """node-b restarted (run 2); its run-1 requests replayed: answered at most every h/16
    (the sender needs to hear from us after a restart), recorded never, and node-a asks
    node-b at once: the answer of its live run settles which run is alive."""
    clock, state, beats, sent = a_node
    prove(clock, beats, sent, seq=10, boot="b-run-2")
    clock.now += HB / 8
    old_run = b_request(500, boot="b-run-1", claims=["web"])
    asks = len(asked(sent, "node-b"))
    for _ in range(5):
        beats.handle(old_run, ("127.0.0.1", 4444), clock())
    assert len([1 for p, d in sent if d[5] == ANSWER]) == 1 and len(asked(sent, "node-b")) == asks + 1
    assert state.peers["node-b"]["claims"] == [] and state.peers["node-b"]["last_request"] is None
    prove(clock, beats, sent, seq=11, boot="b-run-2")
    beats.handle(b_request(12, boot="b-run-2"), b_at(beats), clock())
    assert state.peers["node-b"]["last_request"] == clock() and beats.heard["node-b"] == ["b-run-2", 12]


def test_reordered_requests_and_answers_never_apply_the_older_one(a_node):
    clock, state, beats, sent = a_node
    prove(clock, beats, sent, seq=10)
    newer, older = b_request(21, claims=["web"]), b_request(20)
    beats.handle(newer, b_at(beats), clock())
    beats.handle(older, b_at(beats), clock())
    assert state.peers["node-b"]["claims"] == ["web"] and state.peers["node-b"]["rejected"] == {"replayed": 1}
    clock.now += HB
    beats.new_round(clock())
    first = asked(sent, "node-b")[-1]
    clock.now += HB / 8
    beats.ask_soon("node-b", clock())            # a nudge: two nonces pending for node-b
    second = asked(sent, "node-b")[-1]
    beats.handle(b_answer(second, 31, role="active"), b_at(beats), clock())
    evidence = state.peers["node-b"]["evidence"]
    beats.handle(b_answer(first, 30, role="standby"), b_at(beats), clock())   # overtaken: older news
    assert state.peers["node-b"]["report"]["apps"]["web"]["role"] == "active"
    assert state.peers["node-b"]["evidence"] == evidence


def test_replays_captured_from_the_live_cluster_change_nothing(c):
    """node-b's real datagrams to node-a, captured and replayed: to node-a (requests:
    refused as replayed; answers: no evidence), and to node-c (refused there)."""
    requests, answers = captured_by_kind(c)
    before = steady(c)
    snaps0 = {n: c[n].state() for n in c.names}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        for d in requests:
            sock.sendto(d, ("127.0.0.1", c.ports["node-a"]))
            sock.sendto(d, ("127.0.0.1", c.ports["node-c"]))
        time.sleep(8 * HB + 2 * HB)   # the answers' nonces are no longer known at node-a
        for d in answers:
            sock.sendto(d, ("127.0.0.1", c.ports["node-a"]))
            sock.sendto(d, ("127.0.0.1", c.ports["node-c"]))
        time.sleep(0.3)
        with pytest.raises(BlockingIOError):
            sock.recv(70000)
    finally:
        sock.close()
    snaps1 = {n: c[n].state() for n in c.names}

    def delta(node, peer, kind):
        if peer is None:
            return snaps1[node]["rejected"]["counts"].get(kind, 0) - snaps0[node]["rejected"]["counts"].get(kind, 0)
        return snaps1[node]["peers"][peer]["rejected"].get(kind, 0) - snaps0[node]["peers"][peer]["rejected"].get(kind, 0)

    print(f"\nreplayed {len(requests)} requests and {len(answers)} answers of node-b to node-a, to node-a and node-c")
    assert delta("node-a", "node-b", "replayed") == len(requests)
    assert delta("node-c", "node-b", "wrong_node") == len(requests)
    assert delta("node-a", None, "unknown_nonce") == len(answers)
    assert delta("node-c", None, "unknown_nonce") == len(answers)
    assert steady(c) == before and all(s["quorum"]["ok"] for s in snaps1.values())
