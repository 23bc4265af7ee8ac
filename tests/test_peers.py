"""The heartbeat protocol against a real UDP socket: bad messages are dropped and counted."""

import json
import socket
import time

import pytest

from hado.peers import Heartbeats, pack, sign, unpack
from hado.state import State
from helpers import free_port, wait_for

SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def node():
    """A Heartbeats thread for node-a on loopback; node-b's address is our test socket."""
    me_port = free_port()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(2)
    nodes = {"node-a": {"host": "127.0.0.1", "port": me_port},
             "node-b": {"host": "127.0.0.1", "port": client.getsockname()[1]}}
    state = State("node-a", "shop")
    beats = Heartbeats(state, "node-a", "shop", nodes, SECRET, 0.2,
                       lambda: {"node": "node-a", "apps": {"web": {"role": "active"}}}, time.monotonic,
                       claims=lambda: ["web"])
    beats.bind("127.0.0.1", me_port)
    beats.start()
    yield state, client, ("127.0.0.1", me_port)
    beats.stopping.set()
    beats.join(2)
    client.close()


def ping(body_overrides=None, secret=SECRET):
    body = {"type": "ping", "cluster": "shop", "from": "node-b", "to": "node-a", "nonce": "n1"}
    body.update(body_overrides or {})
    return pack(secret, body)


def test_a_signed_ping_gets_a_signed_answer_over_nonce_and_body(node):
    state, client, address = node
    client.sendto(ping(), address)
    while True:   # node-a also sends its own pings to us; skip those
        data, body, signature = unpack(client.recv(65000))
        if body["type"] == "pong":
            break
    assert body["nonce"] == "n1" and body["report"]["apps"]["web"]["role"] == "active"
    assert signature == sign(SECRET, b"n1" + data)


def test_node_a_asks_us_and_says_what_it_claims(node):
    state, client, address = node
    data, body, signature = unpack(client.recv(65000))
    assert body["type"] == "ping" and body["to"] == "node-b" and body["claims"] == ["web"]
    assert signature == sign(SECRET, data)


@pytest.mark.parametrize("datagram, kind, peer", [
    (ping(secret=b"another-secret-entirely-000000"), "bad_signature", "node-b"),
    (ping({"cluster": "other"}), "wrong_cluster", "node-b"),
    (ping({"from": "intruder"}), "unknown_node", None),
    (b"\x00\xffnot json\nabc", "unparsable", None),
    (b"no signature line", "unparsable", None),
])
def test_bad_messages_are_dropped_and_counted(node, datagram, kind, peer):
    state, client, address = node
    client.sendto(datagram, address)
    wait_for(lambda: (state.peers.get(peer, {}).get("rejected", {}) if peer else state.rejected).get(kind),
             what=f"{kind} counted")
    snap = state.snapshot(1.0)
    if peer:
        assert snap["peers"][peer]["error"] and snap["peers"][peer]["up"] is False
    else:
        assert snap["rejected"]["counts"][kind] == 1 and snap["rejected"]["last"]


def test_an_answer_to_a_nonce_we_never_sent_is_ignored(node):
    state, client, address = node
    answer = {"type": "pong", "cluster": "shop", "from": "node-b", "nonce": "forged",
              "report": {"apps": {"web": {"role": "standby"}}}}
    client.sendto(pack(SECRET, answer, prefix=b"forged"), address)
    time.sleep(0.3)
    assert (state.peers.get("node-b") or {}).get("report") is None
    assert json.dumps(state.snapshot(1.0)["peers"].get("node-b", {})).find('"up": true') < 0
