"""The report on the wire (hado/wire.py, protocol 3): exact round trips, sizes against
the MTU, bounded decoding, floored silence, and the config check of the size limit.
"""

import hmac
import json
import os
import random
import subprocess
import sys
import time
import zlib
from pathlib import Path

from hypothesis import given, settings, strategies as st

from hado import peers, wire
from hado.peers import ANSWER, MAGIC, VERSION, Heartbeats, heartbeat_key, pack, unpack
from hado.state import State

REPO = Path(__file__).resolve().parent.parent
SECRET = b"0123456789abcdef0123456789abcdef"
KEY = heartbeat_key(SECRET)
NODES = [f"node-{c}" for c in "abcdefg"]
WORDS = ["web", "db", "api", "billing", "cache", "queue", "search", "auth", "mail", "cron", "proxy"]

json_scalar = (st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 63)
               | st.floats(allow_nan=False) | st.text(max_size=12))
json_value = st.recursive(json_scalar, lambda ch: st.lists(ch, max_size=4)
                          | st.dictionaries(st.text(max_size=8), ch, max_size=4), max_leaves=12)
app_entry = st.fixed_dictionaries({
    "role": st.sampled_from(["active", "standby", "starting", "stopping", "failed"]), "eligible": st.booleans(),
    "why_not": st.none() | st.text(max_size=40), "epoch": st.integers(0, 10 ** 9),
    "active_node": st.none() | st.sampled_from(NODES), "claim": st.booleans(),
    "claims": st.lists(st.sampled_from(NODES), max_size=3), "holders": st.lists(st.sampled_from(NODES), max_size=3),
    "move_to": st.none() | st.sampled_from(NODES)})
report_like = st.fixed_dictionaries(
    {"node": st.sampled_from(NODES), "cluster": st.text(max_size=8), "healthy": st.booleans(),
     "peers": st.dictionaries(st.sampled_from(NODES), st.sampled_from(["up", "down", "unknown"])),
     "silent": st.dictionaries(st.sampled_from(NODES), st.floats(0, 1e6)),
     "apps": st.dictionaries(st.text(min_size=1, max_size=10),
                             app_entry | json_value | app_entry.map(lambda e: {**e, "extra": 1}), max_size=8)},
    optional={"why_unhealthy": st.none() | st.text(max_size=30), "x": json_value})


@settings(max_examples=200, deadline=None, database=None)
@given(st.one_of(report_like, json_value))
def test_a_report_comes_back_exactly_as_it_was_given(report):
    data = wire.encode_report(report)
    assert wire.decode_report(data) == report
    assert json.dumps(wire.decode_report(data), sort_keys=True) == json.dumps(report, sort_keys=True)


def realistic_report(n_apps, me=0, sentences=False, plain_names=True, seed=1):
    """State.report() of node NODES[me] in a 7-node cluster, every app active on node
    i mod 7, as the peers thread sends it (wire.for_peers)."""
    rnd = random.Random(seed)
    state = State(NODES[me], "scale")
    for i in range(n_apps):
        app = f"app-{i:02}" if plain_names else f"{rnd.choice(WORDS)}-{rnd.choice(WORDS)}-{i}"
        state.add_app(app, ["vip"], {})
        mine = NODES[i % 7] == NODES[me]
        why = f"fails app monitor http: GET http://10.0.{i // 250}.{i % 250}:8080/health: connection refused"
        state.update_app(app, eligible=not sentences, why_not=why if sentences else None, active_node=NODES[i % 7],
                         epoch=rnd.randint(1, 40), role="active" if mine else "standby",
                         desired="active" if mine else "standby")
    for p in NODES[1:]:
        state.peer_request(p, 0.0, [], [a for j, a in enumerate(state.apps) if NODES[j % 7] == p])
    up = {p: "up" for p in NODES if p != NODES[me]}
    report = state.report(up, True, None, silent={p: rnd.uniform(0, 1.0) for p in up})
    return wire.for_peers(report, 3.0)


def answer_bytes(report):
    body = {"cluster": "scale", "from": "node-a", "to": "node-b", "boot": "0" * 16, "seq": 1_234_567,
            "report": report}
    return pack(KEY, ANSWER, os.urandom(16), body)


def test_fifty_apps_fit_one_packet_and_the_sizes_grow_slowly():
    sizes = {}
    for n in (1, 10, 50, 100, 200, 500):
        for kind, kw in (("plain", {}), ("names", {"plain_names": False}),
                         ("sentences", {"plain_names": False, "sentences": True})):
            report = realistic_report(n, **kw)
            datagram = answer_bytes(report)
            assert unpack(KEY, datagram)[2]["report"] == report
            sizes[n, kind] = len(datagram)
    print("\nanswer bytes (app-NN names / varied names / varied names, every app with a sentence): "
          + "; ".join(f"{n} apps {sizes[n, 'plain']}/{sizes[n, 'names']}/{sizes[n, 'sentences']}"
                      for n in (1, 10, 50, 100, 200, 500)))
    assert all(sizes[50, kind] <= wire.MTU_PAYLOAD for kind in ("plain", "names", "sentences")), sizes
    assert sizes[200, "plain"] <= wire.MTU_PAYLOAD
    assert sizes[500, "sentences"] > wire.MTU_PAYLOAD   # where one packet stops being enough


def bomb(size):
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, wire.ZDICT)
    return deflate.compress(b'{"r":"' + b"x" * size + b'"}') + deflate.flush()


def test_decoding_is_bounded_and_refuses_anything_malformed():
    good = wire.encode_report(realistic_report(5))
    assert len(bomb(50_000_000)) < 65000   # what an unbounded inflate would swallow
    cases = {
        "inflates to more than": bomb(wire.MAX_REPORT + 10),
        "truncated": good[:-3],
        "junk after": good + b"\x03\x00tail",
        "not a deflated report": b"\xff" * 40,
        "no JSON": _deflate(b"{not json"),
        "not of the encoded shape": _deflate(b'{"apps":{}}'),
        "header": _deflate(b'{"r":{},"k":"role","a":[]}'),
        "row": _deflate(b'{"r":{},"k":["role"],"a":[["web","active","extra"]]}'),
        "twice": _deflate(b'{"r":{},"k":["role"],"a":[["web","active"],{"web":1}]}'),
    }
    for says, data in cases.items():
        try:
            wire.decode_report(data)
        except wire.WireError as exc:
            assert says in str(exc), (says, exc)
        else:
            raise AssertionError(f"decoded: {says}")
    assert wire.decode_report(bomb(wire.MAX_REPORT - 100)) == "x" * (wire.MAX_REPORT - 100)
    assert wire.decode_report(_deflate(b'{"r":{"node":"b"},"k":["role"],"a":[["web","active"],{"db":1}]}')) == \
        {"node": "b", "apps": {"web": {"role": "active"}, "db": 1}}


def _deflate(raw):
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, wire.ZDICT)
    return deflate.compress(raw) + deflate.flush()


def beats_for_b():
    state = State("node-a", "shop")
    return state, Heartbeats(state, "node-a", "shop", {"node-a": {}, "node-b": {}}, SECRET, 0.2, lambda: {},
                             time.monotonic)


def signed_answer(nonce, encoded_report, seq=1):
    head = MAGIC + bytes((VERSION, ANSWER)) + nonce
    body = json.dumps({"cluster": "shop", "from": "node-b", "to": "node-a", "boot": "b" * 16, "seq": seq},
                      separators=(",", ":")).encode() + b"\n" + encoded_report
    return head + body + hmac.digest(KEY, head + body, "sha256")


def test_an_answer_whose_report_does_not_decode_is_counted_bad_report():
    for encoded, says in ((bomb(wire.MAX_REPORT + 1), "inflates to more than"), (b"\x00\x01garbage", "deflated")):
        state, beats = beats_for_b()
        try:
            nonce = os.urandom(16)
            now = time.monotonic()
            beats.pending[nonce] = ("node-b", now, now)
            beats.handle(signed_answer(nonce, encoded), ("127.0.0.9", 9), now, via="node-b")
            peer = state.peers["node-b"]
            assert peer["rejected"] == {"bad_report": 1} and says in peer["error"], peer
            assert peer["report"] is None and peer["evidence"] is None and nonce not in beats.pending
            # the same answer with a good report is evidence
            nonce = os.urandom(16)
            beats.pending[nonce] = ("node-b", now, now)
            report = {"node": "node-b", "apps": {"web": {"role": "standby"}}}
            beats.handle(signed_answer(nonce, wire.encode_report(report), seq=2), ("127.0.0.9", 9), now, via="node-b")
            assert state.peers["node-b"]["report"] == report and state.peers["node-b"]["evidence"] == now
        finally:
            beats.wake_r.close()
            beats.wake_w.close()


@settings(max_examples=300, deadline=None, database=None)
@given(st.floats(0, 1e7), st.sampled_from([0.2, 0.5, 1.0]))
def test_silence_is_only_ever_rounded_down(seconds, heartbeat):
    sent = wire.floor_silence(seconds, 3 * heartbeat)
    assert 0 <= sent <= seconds
    assert sent == 0.0 if seconds < 3 * heartbeat else seconds - sent < 0.1 + 1e-9


def test_an_unchanged_cluster_sends_unchanged_reports_and_wakes_nobody():
    """Reports built with silences that differ every time (0-2 h: an up peer) are sent
    identical, and a State that gets them is touched once, for the first."""
    rnd = random.Random(7)
    state = State("node-a", "shop")
    for app in ("web", "db"):
        state.add_app(app, ["vip"], {})

    def report():
        return state.report({"node-b": "up", "node-c": "up"}, True, None,
                            silent={"node-b": rnd.uniform(0, 0.4), "node-c": rnd.uniform(0, 0.4)})
    sent = [wire.for_peers(report(), 3 * 0.2) for _ in range(20)]
    assert all(s == sent[0] for s in sent) and sent[0]["silent"] == {"node-b": 0.0, "node-c": 0.0}
    receiver = State("node-b", "shop")
    touched = 0
    for s in sent:
        receiver.changed.clear()
        receiver.peer_answer("node-a", time.monotonic(), wire.decode_report(wire.encode_report(s)))
        touched += receiver.changed.is_set()
    assert touched == 1
    # a down peer: its silence goes out floored to 0.1 s, never above the truth
    out = wire.for_peers({"silent": {"node-c": 4.56789}, "apps": {}}, 0.6)
    assert out["silent"] == {"node-c": 4.5}


def test_long_sentences_are_clipped_for_peers_by_bytes():
    long = "fails app monitor http: " + "connection refused " * 20
    odd = "\u00e9\U0001f600" * 100
    out = wire.for_peers({"why_unhealthy": long, "apps": {"web": {"why_not": odd, "eligible": False},
                                                           "db": {"why_not": "short"}}}, 1.0)
    assert wire.escaped_len(out["why_unhealthy"]) <= wire.WHY_MAX and out["why_unhealthy"].endswith("...")
    assert wire.escaped_len(out["apps"]["web"]["why_not"]) <= wire.WHY_MAX
    assert out["apps"]["db"]["why_not"] == "short" and out["apps"]["web"]["eligible"] is False


@settings(max_examples=30, deadline=None, database=None)
@given(st.integers(1, 60), st.integers(2, 9), st.randoms(use_true_random=False))
def test_the_size_bound_is_never_below_a_real_answer(n_apps, n_nodes, rnd):
    """worst_answer_bound() is at least the size of any answer a node of the config can
    send: random reports with the config's names, sentences of any characters."""
    nodes = [f"n{i}-" + "x" * rnd.randint(0, 12) for i in range(n_nodes)]
    apps = [f"app-{i}-" + "y" * rnd.randint(0, 20) for i in range(n_apps)]
    bound = wire.worst_answer_bound("clu", nodes, apps)
    me = rnd.choice(nodes)

    def sentence():
        return "".join(rnd.choice("ab\"\\\n\u00e9\U0001f600\x00") for _ in range(rnd.randint(0, 300)))
    report = {"node": me, "cluster": "clu", "standby": rnd.random() < 0.5, "maintenance": False,
              "healthy": False, "why_unhealthy": sentence(), "peers": {p: "unknown" for p in nodes if p != me},
              "silent": {p: rnd.uniform(0, 1e9) for p in nodes if p != me},
              "apps": {a: {"role": rnd.choice(["starting", "stopping", "active"]), "eligible": False,
                           "why_not": sentence(), "epoch": rnd.randint(0, 10 ** 12 - 1),
                           "active_node": rnd.choice(nodes), "claim": True, "claims": sorted(nodes),
                           "holders": sorted(nodes), "move_to": rnd.choice(nodes)} for a in apps}}
    body = {"cluster": "clu", "from": me, "to": rnd.choice([n for n in nodes if n != me]),
            "boot": os.urandom(8).hex(), "seq": rnd.randint(1, 10 ** 15), "report": wire.for_peers(report, 1.0)}
    assert len(pack(KEY, ANSWER, os.urandom(16), body)) <= bound


def test_the_size_limit_refuses_configs_whose_answers_could_not_be_sent():
    def config(n_nodes, n_apps):
        return {"cluster": {"name": "scale", "nodes": {NODES[i] if i < 7 else f"node-{i}": {} for i in range(n_nodes)}},
                "apps": {f"app-{i:02}": {} for i in range(n_apps)}}
    assert wire.size_problem(config(7, 50)) is None
    assert wire.size_problem(config(1, 5000)) is None   # one node: nobody to answer
    limit = next(n for n in range(50, 2000, 5) if wire.size_problem(config(7, n)))
    problem = wire.size_problem(config(7, limit))
    assert f"{limit} apps on 7 nodes" in problem and "more than the 65000" in problem
    fit = int(problem.split("at most about ")[1].split()[0])
    assert limit - 10 <= fit < limit
    print(f"\nsize limit, 7 nodes, names app-NN: refused from {limit} apps (fit {fit})")


def test_check_config_refuses_too_many_apps(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    nodes = {n: {"url": f"http://127.0.0.{i + 1}:6185"} for i, n in enumerate(NODES)}
    apps = {f"app-{i:03}": {"resources": [{"name": "svc", "plugin": "dummy", "args": {"path": str(tmp_path / "d")}}]}
            for i in range(400)}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"cluster": {"name": "scale", "secret_file": str(secret), "nodes": nodes},
                                "apps": apps}))
    out = subprocess.run([sys.executable, "-m", "hado", "check-config", str(path), "--node", "node-a"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "400 apps on 7 nodes" in out.stdout and "more than the 65000 of one datagram" in out.stdout
    del apps["app-000"]
    path.write_text(json.dumps({"cluster": {"name": "scale", "secret_file": str(secret), "nodes": nodes},
                                "apps": dict(list(apps.items())[:50])}))
    out = subprocess.run([sys.executable, "-m", "hado", "check-config", str(path), "--node", "node-a"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_protocol_version_is_3_and_the_key_says_so():
    assert VERSION == 3 and peers.heartbeat_key(SECRET) == hmac.digest(SECRET, b"hado heartbeat protocol 3", "sha256")

