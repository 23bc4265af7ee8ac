"""The report as it travels in a heartbeat answer: compact, compressed, bounded.

An answer carries the node's whole report (election.py's REPORT), about 150 bytes of
JSON per app: 50 apps made a 7.2 KB datagram, 5 IP fragments, and under 20 % loss on
one link an exchange then failed three times in four (a datagram is lost when any of
its fragments is). Encoded here, an answer of 50 apps takes 400-900 bytes: one packet
on a 1400-byte MTU, up to about 210 apps named app-NN with 7 nodes, 90 with varied
names and a sentence per app (bench/scale.py --only limit; docs/cluster.rst).

The encoding (protocol version 3, docs/cluster.rst "Heartbeats"), pure and exact:
``decode_report(encode_report(r)) == r`` for any JSON value ``r``:

1. *Positional apps.* The report without ``apps`` goes as it is (``"r"``); the keys of
   the first app entry, sorted, once (``"k"``); then one row per app, in order
   (``"a"``): ``[name, value of k[0], value of k[1], ...]`` when the entry has exactly
   those keys, else ``{name: entry}`` (whatever it is). A report that is no dict, or
   whose ``apps`` is no dict, goes whole as ``{"r": report}``.
2. *JSON*: compact separators, ASCII only.
3. *Raw deflate* (zlib, no header or checksum: the MAC covers the bytes) with the
   preset dictionary ``ZDICT``, which is part of the protocol: changing it changes the
   wire, and needs a new version.

Decoding is bounded: at most ``MAX_REPORT`` bytes are ever inflated (a 65000-byte
datagram of deflate could otherwise expand a thousandfold), and anything longer,
truncated, followed by junk, or not of the shape above raises :class:`WireError`
(the receiver counts it ``bad_report``). Only datagrams whose MAC was checked reach it.

Two limits follow (``MTU_PAYLOAD``, peers.MAX_DATAGRAM), and :func:`size_problem`
turns the second into a refusal of ``hado check-config`` (docs/cluster.rst, "Size
limits"). :func:`for_peers` is the one lossy step, applied before encoding: it only
ever makes a report say *less* (less silence, shorter sentences), never more.
"""

import json
import math
import zlib

# A 1400-byte MTU (tunnels, VPNs, PPPoE: below the 1500 of plain Ethernet) over IPv6:
# 1400 - 40 (IPv6 header) - 8 (UDP header). An answer up to this size is one packet on
# any such link, IPv4 or IPv6; a larger one is fragmented (warned once, still sent).
MTU = 1400
MTU_PAYLOAD = MTU - 40 - 8
MAX_REPORT = 1024 * 1024      # bytes of JSON a report may inflate to, at most (16 x MAX_DATAGRAM)
WHY_MAX = 120                 # bytes (JSON) of a why_not / why_unhealthy sentence sent to peers

# The preset dictionary: what every encoded report starts with and repeats. Part of
# protocol 3 (never generate it at run time: a change would silently change the wire).
ZDICT = (
    b'is unhealthy (monitor has no result yet) fails app monitor waits for the first result of app monitor '
    b'has a failure: (cleared by hado cleanup or failure_timeout only) is in standby is a witness '
    b'"failed","starting","stopping","down","unknown",'
    b'{"r":{"cluster":"","healthy":true,"maintenance":false,"node":"node-a",'
    b'"peers":{"node-b":"up","node-c":"up"},"silent":{"node-b":0.0,"node-c":0.0},'
    b'"standby":false,"why_unhealthy":null},'
    b'"k":["active_node","claim","claims","eligible","epoch","holders","move_to","role","why_not"],'
    b'"a":[["app-1","node-b",false,[],true,1,["node-b"],null,"standby",null],'
    b'["app-0","node-a",false,[],true,2,["node-a"],null,"active",null],'
)


class WireError(ValueError):
    """A received report that cannot be decoded (too large, malformed): ``bad_report``."""


def encode_report(report):
    """The bytes of ``report`` in an answer (any JSON value; see the module doc).

    Raises WireError when its JSON is longer than MAX_REPORT: no receiver would take it."""
    text = json.dumps(_compact(report), separators=(",", ":"), ensure_ascii=True)
    if len(text) > MAX_REPORT:
        raise WireError(f"the report takes {len(text)} bytes of JSON, more than the {MAX_REPORT} a receiver inflates")
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, ZDICT)
    return deflate.compress(text.encode("ascii")) + deflate.flush()


def encoded_json_size(report):
    """Bytes of the JSON that ``encode_report`` compresses (the size before deflate)."""
    return len(json.dumps(_compact(report), separators=(",", ":"), ensure_ascii=True))


def decode_report(data, limit=MAX_REPORT):
    """The report in ``data`` (bytes or a memoryview), inflating at most ``limit`` bytes.

    Raises WireError when it is longer, truncated, followed by junk, or malformed."""
    inflate = zlib.decompressobj(-15, ZDICT)
    try:
        text = inflate.decompress(bytes(data), limit)
    except zlib.error as exc:
        raise WireError(f"not a deflated report ({exc})") from None
    if inflate.unconsumed_tail:
        raise WireError(f"the report inflates to more than {limit} bytes")
    if not inflate.eof:
        raise WireError("the deflated report is truncated")
    if inflate.unused_data:
        raise WireError(f"{len(inflate.unused_data)} bytes of junk after the deflated report")
    try:
        doc = json.loads(text.decode("ascii"))
    except (ValueError, RecursionError) as exc:   # UnicodeDecodeError is a ValueError
        raise WireError(f"the report is no JSON: {type(exc).__name__}") from None
    return _expand(doc)


def _compact(report):
    if not isinstance(report, dict) or not isinstance(report.get("apps"), dict):
        return {"r": report}
    apps = report["apps"]
    first = next((e for e in apps.values() if isinstance(e, dict)), {})
    keys = sorted(first)
    rows = []
    for name, entry in apps.items():
        if isinstance(entry, dict) and len(entry) == len(keys) and all(k in entry for k in keys):
            rows.append([name, *(entry[k] for k in keys)])
        else:
            rows.append({name: entry})
    return {"r": {k: v for k, v in report.items() if k != "apps"}, "k": keys, "a": rows}


def _expand(doc):
    if not isinstance(doc, dict) or "r" not in doc or not set(doc) <= {"r", "k", "a"}:
        raise WireError("the report is not of the encoded shape")
    if "a" not in doc and "k" not in doc:
        return doc["r"]
    rest, keys, rows = doc["r"], doc.get("k"), doc.get("a")
    if (not isinstance(rest, dict) or "apps" in rest or not isinstance(keys, list) or not isinstance(rows, list)
            or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys)):
        raise WireError("the report's header (r, k, a) is malformed")
    apps = {}
    for row in rows:
        if isinstance(row, list) and len(row) == len(keys) + 1 and isinstance(row[0], str):
            name, entry = row[0], dict(zip(keys, row[1:]))
        elif isinstance(row, dict) and len(row) == 1:
            (name, entry), = row.items()
        else:
            raise WireError("an app row of the report is malformed")
        if name in apps:
            raise WireError(f"app {name[:64]!r} twice in the report")
        apps[name] = entry
    return {**rest, "apps": apps}


# -- what a report says to peers ---------------------------------------------------------------

def floor_silence(seconds, quiet):
    """``silent`` as sent: 0.0 below ``quiet``, else rounded *down* to 0.1 s.

    Never more than the truth, so every rule that waits for a peer's reported silence
    (election.py: ``peer_silence``, always more than D >= 3 h) waits at least as long as
    with the exact figure. Below ``quiet`` (3 heartbeats, the least D that
    check-config allows) the peer is up and no rule can tell a figure from 0: reporting
    0 there keeps an unchanged cluster's reports unchanged, answer after answer, so an
    answer that says nothing new wakes nobody (State.peer_answer compares reports)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return seconds
    if seconds < quiet:
        return 0.0
    return math.floor(seconds * 10 + 1e-9) / 10 if seconds * 10 < 2 ** 52 else seconds


def clip(sentence):
    """A sentence cut to WHY_MAX bytes of JSON (ending in "..."); other values as they are.

    Bytes of its JSON, not characters: a character outside ASCII is sent as an escape
    of 6 or 12 bytes, and the size bound (worst_report) counts bytes."""
    if not isinstance(sentence, str) or len(sentence) <= WHY_MAX // 12 or escaped_len(sentence) <= WHY_MAX:
        return sentence
    cut, size = [], 0
    for char in sentence:
        size += escaped_len(char)
        if size > WHY_MAX - 3:
            break
        cut.append(char)
    return "".join(cut) + "..."


def escaped_len(text):
    """Bytes of ``text`` inside a JSON string as encode_report writes it."""
    return len(json.dumps(text, ensure_ascii=True)) - 2


def for_peers(report, quiet):
    """The report as peers get it: ``silent`` floored (:func:`floor_silence`), the
    why_not and why_unhealthy sentences clipped to WHY_MAX bytes (they are read
    by people; only "eligible" decides). A new dict; ``report`` is left as it is."""
    if not isinstance(report, dict):
        return report
    out = dict(report)
    if isinstance(out.get("silent"), dict):
        out["silent"] = {p: floor_silence(s, quiet) for p, s in out["silent"].items()}
    if "why_unhealthy" in out:
        out["why_unhealthy"] = clip(out["why_unhealthy"])
    if isinstance(out.get("apps"), dict):
        out["apps"] = {name: ({**entry, "why_not": clip(entry["why_not"])}
                              if isinstance(entry, dict) and clip(entry.get("why_not")) != entry.get("why_not")
                              else entry)
                       for name, entry in out["apps"].items()}
    return out


# -- the size limits ----------------------------------------------------------------------------

ROLE_LONGEST = "starting"     # the longest role name (states.ROLES)
ENVELOPE_SLACK = 32           # "boot", "seq" and the separators of an answer, beyond the names


def worst_report(cluster, me, nodes, apps):
    """The largest report node ``me`` can send for these names: every app ineligible
    with a sentence of WHY_MAX bytes, claimed and held by every node, moving to
    the longest node name, a 12-digit epoch; every peer down, silent for a year,
    and this node unhealthy."""
    longest = max(nodes, key=len)
    peers = [n for n in nodes if n != me]
    why = "x" * WHY_MAX
    entry = {"role": ROLE_LONGEST, "eligible": False, "why_not": why, "epoch": 10 ** 12 - 1,
             "active_node": longest, "claim": True, "claims": sorted(nodes), "holders": sorted(nodes),
             "move_to": longest}
    return {"node": me, "cluster": cluster, "standby": False, "maintenance": False, "healthy": False,
            "why_unhealthy": why, "peers": {p: "unknown" for p in peers},
            "silent": {p: 31536000.1 for p in peers},
            "apps": {app: dict(entry) for app in apps}}


def worst_answer_bound(cluster, nodes, apps, header=22 + 32):
    """Bytes an answer of any node of this config can take at most, counting no gain
    from deflate (which at worst adds 5 bytes per 16 KiB block and a few more): the
    encoded JSON of :func:`worst_report` plus the answer's envelope and framing."""
    nodes = list(nodes)
    longest = max(nodes, key=len)
    others = sorted(nodes, key=len)
    to = others[-2] if len(others) > 1 else longest
    json_size = encoded_json_size(worst_report(cluster, longest, nodes, list(apps)))
    envelope = len(json.dumps({"cluster": cluster, "from": longest, "to": to, "boot": "0" * 16,
                               "seq": 10 ** 15}, separators=(",", ":"), ensure_ascii=True)) + 1
    deflate_overhead = 5 * (json_size // 16384 + 1) + 16
    return header + envelope + json_size + deflate_overhead + ENVELOPE_SLACK


def size_problem(config, max_datagram=None):
    """None when every heartbeat answer of this config fits one datagram
    (peers.MAX_DATAGRAM) whatever happens; else the sentence ``hado check-config``
    prints, with the most apps that would fit."""
    if max_datagram is None:
        from .peers import MAX_DATAGRAM as max_datagram
    cluster = config["cluster"]
    nodes, apps = list(cluster["nodes"]), list(config["apps"])
    if len(nodes) < 2 or not apps:
        return None
    bound = worst_answer_bound(cluster["name"], nodes, apps)
    if bound <= max_datagram:
        return None
    longest_app = max(apps, key=len)
    low, high = 0, len(apps)
    while low < high:   # the most apps, each named like the longest of these, that still fit
        mid = (low + high + 1) // 2
        names = [f"{longest_app}{i}" for i in range(mid)]
        if worst_answer_bound(cluster["name"], nodes, names) <= max_datagram:
            low = mid
        else:
            high = mid - 1
    fit = low
    return (f"{len(apps)} apps on {len(nodes)} nodes: a heartbeat answer could take up to {bound} bytes "
            f"(every app ineligible with a {WHY_MAX}-byte sentence, claimed and held by every node), "
            f"more than the {max_datagram} of one datagram, and a node whose answers cannot be sent is "
            f"deaf to its peers; at most about {fit} apps of such names fit with {len(nodes)} nodes "
            f"(fewer nodes or shorter names fit more; docs/cluster.rst, \"Size limits\")")
