"""Issue 9's smaller items: each a behaviour someone relies on."""

import json
import socket
import time

import pytest

from hado import api, config as config_mod, election, states
from hado.resource import AppSupervisor
from hado.plugin import Registry
from hado.state import State
from helpers import Daemon, free_port, wait_for, write_config


def test_busy_server_answers_503_with_complete_json(tmp_path):
    """Past MAX_CONCURRENT requests the API says so at once, with JSON a client can parse
    (0.1 cut the body one byte short: no closing brace)."""
    port = free_port()
    path = write_config(tmp_path / "c.json", {"cluster": {"nodes": {"solo": {"url": f"http://127.0.0.1:{port}"}}},
                                              "apps": {}})
    daemon = Daemon(path, "solo", port, tmp_path).start()
    idle = []
    try:
        daemon.wait_ready()
        # Unfinished headers hold no worker (the API's gate holds them, issue 10); an admin
        # POST that waits for "100 Continue" and then never sends its body holds one until
        # its socket timeout.
        wait_for(daemon.token, what="the admin token")
        for _ in range(api.MAX_CONCURRENT):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /v1/maintenance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         + daemon.token().encode() + b"\r\nExpect: 100-continue\r\nContent-Length: 12\r\n\r\n")
            idle.append(sock)

        def busy():
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            return head.startswith(b"HTTP/1.1 503") and (head, body)
        head, body = wait_for(busy, 10, what="a 503 once every slot is taken")
        length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1])
        assert length == len(body)
        assert json.loads(body) == {"error": "too many requests, retry", "status": 503}
    finally:
        for sock in idle:
            sock.close()
        daemon.kill()


def supervisor(tmp_path):
    state = State("n1", "c")
    spec = config_mod.validate({"apps": {"web": {"resources": [
        {"name": "r", "plugin": "dummy", "args": {"path": str(tmp_path / "r")}}]}}})[0]["apps"]["web"]
    state.add_app("web", ["r"], {})
    return state, AppSupervisor(state, "web", spec, Registry(), time.monotonic)


def test_the_app_role_has_one_writer_that_refuses_illegal_edges(tmp_path):
    state, sup = supervisor(tmp_path)
    with pytest.raises(ValueError, match=r"app web: illegal role change standby -> active \(allowed: failed, "
                                         r"starting, stopping\)"):
        sup.transition(states.ACTIVE, "a bug")
    sup.transition(states.ACTIVE, "the probe found it running", probing=True)   # adoption is fine
    assert state.app_entry("web")["role"] == states.ACTIVE
    sup.transition(states.STOPPING, "lost the election")
    with pytest.raises(ValueError, match="stopping -> active"):
        sup.transition(states.ACTIVE, "a bug")


def test_every_edge_of_the_role_table_is_a_real_role_and_active_needs_starting():
    for role, edges in states.ROLE_EDGES.items():
        assert role in states.ROLES and edges <= set(states.ROLES) and role not in edges
    assert [r for r, edges in states.ROLE_EDGES.items() if states.ACTIVE in edges] == [states.STARTING]


def test_reported_role_says_starting_once_decided_and_stopping_once_quorum_lapsed():
    assert states.reported_role(states.STANDBY, states.ACTIVE, False) == states.STARTING
    assert states.reported_role(states.ACTIVE, states.ACTIVE, True) == states.STOPPING
    assert states.reported_role(states.STANDBY, states.STANDBY, True) == states.STANDBY


def test_config_reference_lists_the_fence_and_notify_keys_with_their_defaults():
    text = config_mod.reference()
    assert "``cluster.fence``" in text and "``cluster.notify[]``" in text
    assert "``60.0``" in text and "``10.0``" in text


def test_every_decision_has_a_kind_from_the_table():
    view = {"me": "a", "quorum": {"ok": False, "votes": 1, "needed": 2, "voters": []}, "dead_after": 2.0,
            "takeover_after": 2.0, "uptime_s": 0.5, "confirmed": {"web": []},
            "nodes": {n: {"priority": 0, "witness": False, "status": "up" if n == "a" else "unknown",
                          "silent_s": None, "report": None} for n in "abc"},
            "apps": {"web": {"stickiness": True, "preferred": None, "preempt": False}}}
    view["nodes"]["a"]["report"] = {"apps": {"web": {"role": "standby", "eligible": True}}, "peers": {}}
    hold = election.decide(view)["web"]
    assert hold["kind"] == "hold" and hold["kind"] in election.KINDS and not hold["active"]
    assert hold["reason"] == ("web: holding on a: started 0.5 s ago, waiting up to dead_after 2 s to hear "
                              "from the peers (no quorum yet: 1 vote, 2 needed)")
    view["uptime_s"] = 2.5
    assert election.decide(view)["web"]["kind"] == "no_quorum"
