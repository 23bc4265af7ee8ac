"""The heartbeat protocol against a real UDP socket: the datagram format, who gets an
answer, what counts as evidence, and that bad messages are dropped and counted.

node-b is played by the test (:class:`FakePeer`): its own socket, run id and counter.
"""

import hmac
import json
import os
import socket
import time

import pytest

from hado import peers as peers_mod
from hado.peers import (ANSWER, HEADER, MAC_BYTES, MAGIC, MAX_REQUEST, REQUEST, VERSION, Heartbeats,
                        heartbeat_key, pack, sign, unpack)
from hado.state import State
from helpers import free_port, wait_for

SECRET = b"0123456789abcdef0123456789abcdef"
KEY = heartbeat_key(SECRET)
REPORT = {"node": "node-b", "apps": {"web": {"role": "standby"}}}


class FakePeer:
    """A node played by the test: signs with ``key``, counts its datagrams like hado does."""

    def __init__(self, name="node-b", cluster="shop", key=KEY, sock=None):
        self.name, self.cluster, self.key = name, cluster, key
        self.sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if sock is None:
            self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2)
        self.address = self.sock.getsockname()
        self.boot = os.urandom(8).hex()
        self.seq = 0

    def next_seq(self):
        self.seq += 1
        return self.seq

    def request(self, to="node-a", nonce=None, claims=(), **over):
        """(nonce, datagram) of a request as ``name`` would send it."""
        nonce = nonce or os.urandom(16)
        body = {"cluster": self.cluster, "from": self.name, "to": to, "boot": self.boot, "seq": self.next_seq(),
                "claims": list(claims)}
        body.update(over)
        return nonce, pack(self.key, REQUEST, nonce, body)

    def answer(self, nonce, to="node-a", report=None, **over):
        body = {"cluster": self.cluster, "from": self.name, "to": to, "boot": self.boot, "seq": self.next_seq(),
                "report": REPORT if report is None else report}
        body.update(over)
        return pack(self.key, ANSWER, nonce, body)

    def recv(self, want=None, timeout=2.0):
        """(type, nonce, body, raw) of the next valid datagram (of type ``want``)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65535)
            kind, nonce, body = unpack(self.key, data)
            if want is None or kind == want:
                return kind, nonce, body, data

    def prove(self, address, report=None):
        """Answer node-a's next request: this shows node-a that our run is alive."""
        _, nonce, _, _ = self.recv(REQUEST)
        self.sock.sendto(self.answer(nonce, report=report), address)
        return nonce

    def close(self):
        self.sock.close()


@pytest.fixture
def node():
    """A Heartbeats thread for node-a on loopback; node-b's address is the test's socket."""
    me_port = free_port()
    b = FakePeer()
    nodes = {"node-a": {"host": "127.0.0.1", "port": me_port},
             "node-b": {"host": "127.0.0.1", "port": b.address[1]}}
    state = State("node-a", "shop")
    state.configure_quorum(["node-b"], 2, 0.5)
    beats = Heartbeats(state, "node-a", "shop", nodes, SECRET, 0.2,
                       lambda: {"node": "node-a", "apps": {"web": {"role": "active"}}}, time.monotonic,
                       claims=lambda: ["web"])
    beats.bind("127.0.0.1", me_port)
    beats.start()
    yield state, b, ("127.0.0.1", me_port)
    beats.stopping.set()
    beats.join(2)
    b.close()


def test_node_a_asks_us_and_says_what_it_claims(node):
    state, b, address = node
    kind, nonce, body, raw = b.recv()
    assert raw[:4] == MAGIC and raw[4] == VERSION and raw[5] == REQUEST and raw[6:HEADER] == nonce
    assert len(nonce) == 16 and raw[-MAC_BYTES:] == hmac.digest(KEY, raw[:-MAC_BYTES], "sha256")
    assert body["from"] == "node-a" and body["to"] == "node-b" and body["cluster"] == "shop"
    assert body["claims"] == ["web"] and isinstance(body["boot"], str) and body["seq"] >= 1


def test_every_datagram_node_a_sends_has_a_higher_number(node):
    state, b, address = node
    seqs = [b.recv(REQUEST)[2]["seq"] for _ in range(4)]   # rounds and re-sends: unanswered
    assert seqs == sorted(seqs) and len(set(seqs)) == 4


def test_a_signed_request_gets_a_signed_answer_with_its_nonce(node):
    state, b, address = node
    nonce, datagram = b.request()
    b.sock.sendto(datagram, address)
    kind, got, body, raw = b.recv(ANSWER)
    assert got == nonce and body["to"] == "node-b" and body["from"] == "node-a"
    assert body["report"]["apps"]["web"]["role"] == "active"


def test_an_answer_to_a_pending_nonce_is_evidence_from_when_it_was_first_sent(node):
    state, b, address = node
    before = time.monotonic()
    b.prove(address)
    wait_for(lambda: state.snapshot(1.0)["peers"]["node-b"]["up"], what="node-b up")
    assert state.peers["node-b"]["evidence"] <= time.monotonic() and state.peers["node-b"]["evidence"] >= before - 0.3
    assert state.peers["node-b"]["report"] == REPORT


def test_requests_of_a_run_count_once_an_answer_showed_it_alive(node):
    """Until node-b's run answered a fresh nonce, its requests are answered but change nothing."""
    state, b, address = node
    nonce, datagram = b.request(claims=["web"])
    b.sock.sendto(datagram, address)
    b.recv(ANSWER)
    assert (state.peers.get("node-b") or {}).get("claims", []) == []
    assert (state.peers.get("node-b") or {}).get("last_request") is None
    b.prove(address)
    wait_for(lambda: state.peers.get("node-b", {}).get("report"), what="the answer recorded")
    nonce, datagram = b.request(claims=["db"])
    b.sock.sendto(datagram, address)
    wait_for(lambda: state.peers["node-b"]["claims"] == ["db"], what="the request's claims recorded")
    assert state.peers["node-b"]["last_request"] is not None


def v1_datagram(body):
    """A datagram of protocol version 1 (hado 0.1): JSON, a newline, the hex HMAC."""
    data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return data + b"\n" + sign(SECRET, data)


def header(kind=REQUEST, version=VERSION):
    return MAGIC + bytes((version, kind)) + os.urandom(16)


def v2_answer(b):
    """An answer of protocol version 2 (hado before the compact report): header, the
    whole body as JSON, MAC with the version-2 key."""
    head = MAGIC + bytes((2, ANSWER)) + os.urandom(16)
    body = json.dumps({"cluster": "shop", "from": "node-b", "to": "node-a", "boot": b.boot, "seq": b.next_seq(),
                       "report": REPORT}, separators=(",", ":"), sort_keys=True).encode()
    key = hmac.digest(SECRET, b"hado heartbeat protocol 2", "sha256")
    return head + body + hmac.digest(key, head + body, "sha256")


def flip_last(datagram):
    """The datagram with its MAC's last byte changed (always: never a byte that was already there)."""
    return datagram[:-1] + bytes([datagram[-1] ^ 0x01])


NESTED = "[" * 8000 + "]" * 8000   # fits a request; far deeper than the parser recurses
STRANGER = "stranger"   # sent from a socket that is no node's address


@pytest.mark.parametrize("make, kind, peer, says", [
    (lambda b: flip_last(b.request()[1]), "bad_signature", "node-b", "is the secret the same?"),
    (lambda b: FakePeer(key=heartbeat_key(b"another-secret-entirely-000000"), sock=b.sock).request()[1],
     "bad_signature", "node-b", "bad signature on a request"),
    (lambda b: flip_last(b.request()[1]), "bad_signature", None, "no node's address"),   # STRANGER
    (lambda b: pack(SECRET, REQUEST, os.urandom(16), {}), "bad_signature", "node-b", ""),    # the raw secret
    (lambda b: b.request(cluster="other")[1], "wrong_cluster", "node-b", "cluster name mismatch"),
    (lambda b: FakePeer(name="intruder", sock=b.sock).request()[1], "unknown_node", None, "intruder"),
    (lambda b: b.request(to="node-c")[1], "wrong_node", "node-b", "addressed 'node-c'"),
    (lambda b: b.request(seq="7")[1], "unparsable", "node-b", "without boot and seq"),
    (lambda b: b"\x00\xffnot json\nabc", "unparsable", "node-b", "not a hado heartbeat"),
    (lambda b: os.urandom(300), "unparsable", None, "not a hado heartbeat"),                  # STRANGER
    (lambda b: header() + b"{}", "unparsable", "node-b", "truncated"),
    (lambda b: header(kind=ord("X")) + b"{}" + bytes(32), "unparsable", "node-b", "unknown message type"),
    (lambda b: v1_datagram({"type": "ping", "from": "node-b", "to": "node-a", "nonce": "n1", "cluster": "shop"}),
     "version", "node-b", "protocol version 1 from 127.0.0.1: upgrade every node"),
    (lambda b: header(version=2) + b"{}" + bytes(32), "version", "node-b",
     "protocol version 2 from 127.0.0.1: upgrade every node (this one speaks version 3)"),
    (lambda b: header(version=4) + b"{}" + bytes(32), "version", "node-b", "protocol version 4 from 127.0.0.1"),
    (lambda b: v2_answer(b), "version", "node-b", "protocol version 2 from 127.0.0.1"),
    (lambda b: header() + b" " * MAX_REQUEST + bytes(32), "oversized", "node-b", "at most 16384"),
    (lambda b: header(ANSWER) + b" " * 65100, "oversized", "node-b", "at most 65000"),
    (lambda b: header(ANSWER) + b"{}" + bytes(32), "unknown_nonce", "node-b", "never sent"),
    (lambda b: pack(KEY, REQUEST, os.urandom(16), [1, 2]), "unparsable", "node-b", "not a JSON object"),
    (lambda b: pack_raw(KEY, header(), b"\xff\xfe{}"), "unparsable", "node-b", "UnicodeDecodeError"),
    (lambda b: pack_raw(KEY, header(), NESTED.encode()), "unparsable", "node-b", "RecursionError"),
    (lambda b: header() + NESTED[:10000].encode() + bytes(32), "bad_signature", "node-b", ""),   # MAC first
])
def test_bad_messages_are_dropped_and_counted(node, make, kind, peer, says):
    state, b, address = node
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        (b.sock if peer else stranger).sendto(make(b), address)
        wait_for(lambda: (state.peers.get(peer, {}).get("rejected", {}) if peer else state.rejected).get(kind),
                 what=f"{kind} counted")
    finally:
        stranger.close()
    snap = state.snapshot(1.0)
    if peer:
        assert snap["peers"][peer]["rejected"] == {kind: 1} and snap["peers"][peer]["up"] is False
        assert says in snap["peers"][peer]["error"]
    else:
        assert snap["rejected"]["counts"] == {kind: 1} and says in snap["rejected"]["last"]
    with pytest.raises(socket.timeout):
        b.recv(ANSWER, timeout=0.3)   # no answer to any of them


def pack_raw(key, head, body):
    return head + body + hmac.digest(key, head + body, "sha256")


def test_the_mac_is_checked_before_anything_is_parsed(monkeypatch):
    """Unsigned datagrams never reach the JSON parser (nor the UTF-8 decoder)."""
    state = State("node-a", "shop")
    beats = Heartbeats(state, "node-a", "shop", {"node-a": {}, "node-b": {}}, SECRET, 0.2, lambda: {}, time.monotonic)
    calls = []
    monkeypatch.setattr(peers_mod.json, "loads", lambda *a, **k: calls.append(a) or {})
    b = FakePeer()
    try:
        signed = b.request()[1]
        # (replacing the last byte with a fixed one kept 1 MAC in 256 valid: a flaky test)
        for datagram in (flip_last(signed), header() + NESTED[:5000].encode() + bytes(32),
                         header(ANSWER) + b'{"from":"node-b"}' + bytes(32), os.urandom(1000)):
            beats.handle(datagram, ("127.0.0.9", 9), time.monotonic())
    finally:
        b.close()
        beats.wake_r.close()
        beats.wake_w.close()
    assert calls == [] and sum(state.rejected.values()) == 4


def test_an_answer_to_a_nonce_we_never_sent_is_no_evidence(node):
    state, b, address = node
    b.sock.sendto(b.answer(b"forged-nonce-16b", report={"apps": {"web": {"role": "standby"}}}), address)
    wait_for(lambda: state.peers.get("node-b", {}).get("rejected", {}).get("unknown_nonce"), what="counted")
    assert state.peers["node-b"]["report"] is None and state.snapshot(1.0)["peers"]["node-b"]["up"] is False


def test_a_goodbye_of_the_live_run_makes_the_peer_left_and_a_replay_or_an_old_run_cannot(node):
    """node-b says goodbye (its hado stops): left at once, no vote; a replay of that
    goodbye after node-b came back, or a goodbye of a run never shown alive, changes nothing."""
    state, b, address = node
    nonce, unproven_bye = b.request(claims=[], holds=[], bye=True)
    b.sock.sendto(unproven_bye, address)   # a run no answer has shown alive: not applied
    b.recv(ANSWER)
    assert state.snapshot(1.0)["peers"]["node-b"]["status"] != "left"
    b.prove(address)
    wait_for(lambda: state.snapshot(1.0)["peers"]["node-b"]["up"], what="node-b up")
    assert state.refresh_quorum()["votes"] == 2
    nonce, holding_bye = b.request(claims=[], holds=["web"], bye=True)
    b.sock.sendto(holding_bye, address)    # a goodbye that still holds an app is no goodbye
    b.recv(ANSWER)
    assert state.snapshot(1.0)["peers"]["node-b"]["status"] == "up"
    nonce, bye = b.request(claims=[], holds=[], bye=True)
    b.sock.sendto(bye, address)
    kind, got, body, _ = b.recv(ANSWER)    # the answer is the acknowledgement
    assert got == nonce
    peer = state.snapshot(1.0)["peers"]["node-b"]
    assert peer["status"] == "left" and not peer["up"] and peer["left_s"] is not None
    assert state.refresh_quorum()["votes"] == 1, "a node that left has no vote"
    b.sock.sendto(bye, address)            # the same goodbye again: an old number
    wait_for(lambda: state.snapshot(1.0)["peers"]["node-b"]["rejected"].get("replayed"), what="replay counted")
    # node-b restarts (a new run): its answer makes it up again ...
    b.boot, b.seq = os.urandom(8).hex(), 0
    b.prove(address)
    wait_for(lambda: state.snapshot(1.0)["peers"]["node-b"]["status"] == "up", what="node-b up again")
    # ... and the old run's goodbye, replayed now, is never applied
    b.sock.sendto(bye, address)
    time.sleep(0.3)
    assert state.snapshot(1.0)["peers"]["node-b"]["status"] == "up"


def test_a_leaving_node_says_goodbye_until_answered_and_then_answers_nothing(tmp_path):
    me_port = free_port()
    b = FakePeer()
    nodes = {"node-a": {"host": "127.0.0.1", "port": me_port},
             "node-b": {"host": "127.0.0.1", "port": b.address[1]}}
    state = State("node-a", "shop")
    state.configure_quorum(["node-b"], 2, 0.5)
    beats = Heartbeats(state, "node-a", "shop", nodes, SECRET, 0.2,
                       lambda: {"node": "node-a", "apps": {"web": {"role": "stopped"}}}, time.monotonic,
                       claims=lambda: ["web"], holds=lambda: ["web"])
    beats.bind("127.0.0.1", me_port)
    beats.start()
    try:
        b.prove(("127.0.0.1", me_port))
        beats.farewell.set()
        beats.stopping.set()
        byes = []
        while len(byes) < 2:   # the first goodbye goes unanswered: it is sent again
            kind, nonce, body, _ = b.recv(REQUEST)
            if body.get("bye"):
                byes.append((nonce, body))
        assert all(body["claims"] == [] and body["holds"] == [] for _, body in byes)
        assert byes[1][1]["seq"] > byes[0][1]["seq"]
        nonce, request = b.request()
        b.sock.sendto(request, ("127.0.0.1", me_port))   # asked now, it must not answer (it would look alive)
        b.sock.sendto(b.answer(byes[1][0]), ("127.0.0.1", me_port))
        beats.join(2)
        assert not beats.is_alive() and "node-b" in beats.acked
        b.sock.settimeout(0.3)
        with pytest.raises(OSError):
            while True:
                kind, got, _ = unpack(KEY, b.sock.recv(65535))
                assert not (kind == ANSWER and got == nonce), "a node that said goodbye answered a request"
    finally:
        beats.stopping.set()
        beats.join(2)
        b.close()
