"""Scale in the network lab: 7 nodes, 50 apps (prints figures, asserts nothing).

    sudo python3 bench/scale.py [--nodes 7] [--apps 50] [--heartbeat 1.0 --dead-after 4.0 --lease 2]
                                [--idle 60] [--loss 20 --loss-seconds 60] [--loss-apps 50,6]
                                [--steps "3x50,5x50,7x6,...,26x12"] [--all-steps] [--keep DIR]
                                [--only placement,idle,wire,failover,loss,limit,steps]

The timings default to tests/test_scale.py's (heartbeat 1.0 s, dead_after 4.0 s,
leases 2 s); ``--heartbeat 0.5 --dead-after 2.0 --lease 1`` gives hado's defaults.
Real hado daemons in node namespaces (tests/lab/netlab.py), the apps of
tests/test_scale.py's :class:`ScaleCluster`: app i prefers node i mod N, even apps an
``ipaddr`` VIP with a kernel lease, odd ones a ``dummy`` with a lease. Figures:

- *placement*: from the start of every daemon at once to every app active on exactly
  one node, all nodes agreeing, the VIP or state file there and nowhere else; quorum
  losses and lease renewals that failed on the way (from the daemons' logs);
- *idle*: per node over ``--idle`` s without any request to the API: CPU of the daemon
  (utime + stime from /proc/PID/stat) and of the children it waited for (cutime +
  cstime: the ``ip`` and ``sh`` of the ipaddr plugin), RSS and peak RSS, threads; the
  whole machine's CPU over the same window (/proc/stat), so other load shows; the
  daemons run under a wrapper (``_hado``) that counts election turns, answers received
  and reports built, and reads each thread's CPU (/proc/self/task);
- *wire*: the heartbeat datagrams as they are on eth0 of node-a (an AF_PACKET socket
  in its namespace, kernel time stamps, outgoing frames too): the largest request and
  answer (UDP payload), into how many IP fragments they are cut, the largest frame;
  round trips and unanswered requests; the same sizes computed from every node's
  report in ``GET /v1/view`` with the real ``hado.peers.pack``, and a worst case (every
  app not eligible with a sentence, claimed by every node, moving); against the MTU;
  the kernel's counters (/proc/net/snmp: reassembly, receive-buffer drops);
- *failover*: kill -9 of the node holding the most apps: per app, kill -> started on
  its new node (VIP sampler / dummy log), and the total;
- *loss*: ``--loss`` % loss on the node holding the most apps for ``--loss-seconds``:
  role changes, VIP moves, the lossy node's votes, what its capture saw answered; once
  per entry of ``--loss-apps`` (the same cluster with fewer apps: smaller reports);
- *limit*: answer size against the number of apps and nodes, from the real
  ``State.report`` and ``pack`` (no lab): where it passes one MTU and where it passes
  ``MAX_DATAGRAM``;
- *steps*: NODESxAPPS clusters one after the other, each placed then left idle 20 s
  while every node's peers are sampled: the largest ``last_seen_s``, samples above
  2 heartbeats (a whole round unanswered) and above dead_after/2 (a vote lost), quorum
  losses and role changes, CPU. The first step where heartbeats miss is the limit of
  this machine.

Needs root, iproute2 and nftables; everything stays inside the lab's namespaces and is
torn down at the end, also on failure or Ctrl-C. This file is also the capture script
the bench runs in a namespace (``python3 bench/scale.py _capture OUT``) and the
counting wrapper the daemons run under (``_hado COUNTS_DIR HADO-ARGS...``).
"""

import argparse
import collections
import contextlib
import json
import os
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

HADO_PORT = 6185
IPV4_UDP_OVERHEAD = 20 + 8        # IPv4 header without options + UDP header
IPV6_UDP_OVERHEAD = 40 + 8
ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800
SO_TIMESTAMPNS = 35
WORST_WHY = "is unhealthy (monitor disk_root: /var has 95 MB free, less than the 100 MB it needs)"


# -- the capture script (runs inside a namespace) ----------------------------------------------

def _capture_main(out_path, snap=400):
    """IPv4 frames on eth0, both ways (ETH_P_ALL: a protocol-bound packet socket sees
    no outgoing frames), kernel time stamps, the first ``snap`` bytes of each."""
    snap = int(snap)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind(("eth0", 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.settimeout(0.2)
    print("capturing", flush=True)
    with open(out_path, "w", buffering=1 << 16) as out:
        while not stopping:
            try:
                data, ancillary, _flags, address = sock.recvmsg(65536, 64)
            except (socket.timeout, InterruptedError):
                continue
            if len(data) < 34 or data[12:14] != b"\x08\x00":
                continue
            stamp = 0
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", value[:16])
                    stamp = sec * 1_000_000_000 + nsec
            direction = "out" if address[2] == socket.PACKET_OUTGOING else "in"
            out.write(f"{stamp} {direction} {len(data)} {data[:snap].hex()}\n")


def _hado_main(counts_dir, *argv):
    """hado itself (``python3 -m hado ARGV``), counting what its threads do: election
    turns, answers received (State.peer_answer), reports built (Node.my_report); the
    totals go to ``COUNTS_DIR/<node>.counts`` every second. Nothing else changes."""
    name = argv[argv.index("--node") + 1] if "--node" in argv else "node"
    counts_path = os.path.join(counts_dir, f"{name}.counts")
    import threading
    from hado import cli, node, state
    counts = collections.Counter()

    def counted(cls, name):
        original = getattr(cls, name)

        def wrapper(*a, **k):
            counts[name] += 1
            return original(*a, **k)
        setattr(cls, name, wrapper)
    counted(node.Node, "turn")
    counted(node.Node, "my_report")
    counted(state.State, "peer_answer")

    tick = os.sysconf("SC_CLK_TCK")
    seen = {}    # native thread id -> (group, CPU seconds last read): exited threads keep theirs

    def thread_cpu():
        """CPU seconds per thread group (the name before ":": peers, MainThread, resource, call...)."""
        for thread in threading.enumerate():
            try:
                fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, TypeError):
                continue
            seen[thread.native_id] = (thread.name.split(":")[0].split("-")[0],
                                      (int(fields[11]) + int(fields[12])) / tick)
        groups = collections.Counter()
        for group, cpu in seen.values():
            groups[group] += cpu
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / tick
        groups["(threads that ended: plugin calls)"] = max(0.0, total - sum(groups.values()))
        return groups

    def dump():
        while True:
            time.sleep(1.0)
            entry = {"t": time.monotonic(), **counts, "cpu": thread_cpu()}
            with open(counts_path, "a") as out:
                out.write(json.dumps(entry) + "\n")
    threading.Thread(target=dump, name="bench-counts", daemon=True).start()
    sys.exit(cli.main(list(argv)))


if len(sys.argv) > 1 and sys.argv[1] == "_capture":
    _capture_main(*sys.argv[2:])
    sys.exit(0)
if len(sys.argv) > 1 and sys.argv[1] == "_hado":
    _hado_main(*sys.argv[2:])

# Imports the lab needs (not the capture script).
from lab import netlab  # noqa: E402
from lab.netlab import Lab  # noqa: E402
import test_scale as ts  # noqa: E402
from hado import peers as hado_peers, wire  # noqa: E402
from hado.state import State  # noqa: E402


class Capture(netlab._Recorder):
    def __init__(self, lab, member):
        super().__init__(lab)
        self.member = member

    def _spawn(self):
        proc = self.lab.popen(self.member, [sys.executable, __file__, "_capture", self.path],
                              stdout=subprocess.PIPE, text=True)
        if not proc.stdout.readline().startswith("capturing"):
            raise netlab.LabError(f"{self.member}: capture did not start (exit {proc.poll()})")
        return proc

    def records(self):
        return datagrams(self.path)


FROM = re.compile(rb'"from":"([^"]+)"')


def classify(payload):
    """(kind "request" | "answer" | "?", nonce hex, sender) of a heartbeat's first bytes,
    protocol 2 or 3 (b"HADO", version, b"Q"/b"A", 16-byte nonce, JSON [+ deflated report], MAC) or 1 (JSON)."""
    sender = FROM.search(payload)
    sender = sender.group(1).decode() if sender else None
    if payload[:4] == b"HADO" and len(payload) >= 22:
        kind = {ord("Q"): "request", ord("A"): "answer"}.get(payload[5], "?")
        return kind, payload[6:22].hex(), sender
    nonce = re.search(rb'"nonce":"([0-9a-f]+)"', payload)
    nonce = nonce.group(1).decode() if nonce else None
    if b'"type":"pong"' in payload or b'"report":' in payload:
        return "answer", nonce, sender
    if b'"type":"ping"' in payload or b'"to":"' in payload:
        return "request", nonce, sender
    return "?", nonce, sender


def datagrams(path):
    """UDP datagrams to or from the hado port, reassembled from the captured IPv4
    frames: dicts with t0/t1 (first/last fragment, ns), dir, src, dst, size (UDP payload),
    frags, max_frame, kind, nonce, sender. (The number of incomplete ones, too.)"""
    pending, out = {}, []
    with open(path) as file:
        for line in file:
            parts = line.split()
            if len(parts) != 4:
                continue
            stamp, direction, frame_len, data = int(parts[0]), parts[1], int(parts[2]), bytes.fromhex(parts[3])
            ip = data[14:]
            if ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
                continue
            ihl = (ip[0] & 15) * 4
            total, ident, frag = struct.unpack("!HHH", ip[2:8])
            more, offset = frag & 0x2000, (frag & 0x1FFF) * 8
            src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
            key = (src, dst, ident, direction)
            entry = pending.setdefault(key, {"t0": stamp, "n": 0, "got": 0, "head": None, "end": None,
                                             "max_frame": 0})
            entry["n"] += 1
            entry["got"] += total - ihl
            entry["t1"] = stamp
            entry["max_frame"] = max(entry["max_frame"], frame_len)
            if offset == 0:
                entry["head"] = ip[ihl:]
            if not more:
                entry["end"] = offset + total - ihl
            if entry["end"] is None or entry["got"] < entry["end"] or entry["head"] is None:
                continue
            del pending[key]
            head = entry["head"]
            sport, dport, udp_len = struct.unpack("!HHH", head[:6])
            if HADO_PORT not in (sport, dport):
                continue
            kind, nonce, sender = classify(head[8:])
            out.append({"t0": entry["t0"], "t1": entry["t1"], "dir": direction, "src": src, "dst": dst,
                        "size": udp_len - 8, "frags": entry["n"], "max_frame": entry["max_frame"],
                        "kind": kind, "nonce": nonce, "sender": sender})
    return out, len(pending)


def exchanges(grams):
    """The requests this member sent (first send, sends, answer arrival) by nonce."""
    asked = {}
    for g in grams:
        if g["dir"] == "out" and g["kind"] == "request" and g["nonce"]:
            entry = asked.setdefault(g["nonce"], {"to": g["dst"], "sends": [], "answer": None})
            entry["sends"].append(g["t0"])
    for g in grams:
        if g["dir"] == "in" and g["kind"] == "answer" and g["nonce"] in asked:
            entry = asked[g["nonce"]]
            if entry["answer"] is None:
                entry["answer"] = g["t1"]
    return asked


def exchange_figures(grams):
    asked = exchanges(grams)
    if not asked:
        return "no requests captured"
    answered = [e for e in asked.values() if e["answer"] is not None]
    first = sorted((e["answer"] - e["sends"][0]) / 1e6 for e in answered)
    last = sorted((e["answer"] - max(s for s in e["sends"] if s <= e["answer"])) / 1e6 for e in answered
                  if any(s <= e["answer"] for s in e["sends"]))
    sends = sum(len(e["sends"]) for e in asked.values())
    return (f"{len(asked)} requests ({sends} sends with the re-sends), {len(answered)} answered "
            f"({100 * len(answered) / len(asked):.1f} %); request->answer {quantiles(last, 'ms')}; "
            f"first send->answer {quantiles(first, 'ms')}")


def quantiles(values, unit="s"):
    values = sorted(v for v in values if v is not None)
    if not values:
        return "none"
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    digits = 1 if unit == "ms" else 2
    return (f"median {statistics.median(values):.{digits}f} p95 {p95:.{digits}f} "
            f"max {values[-1]:.{digits}f} {unit} (n={len(values)})")


# -- sizes from the real packing function ---------------------------------------------------------

def answer_size(report, cluster, me, to, seq=1_234_567):
    """Bytes of the UDP payload of an answer carrying ``report`` (hado/peers.py as it is)."""
    if hasattr(hado_peers, "ANSWER"):   # protocol 2 and 3: binary header, body (pack encodes the report), MAC
        body = {"cluster": cluster, "from": me, "to": to, "boot": "0" * 16, "seq": seq, "report": report}
        return len(hado_peers.pack(hado_peers.heartbeat_key(ts.SECRET), hado_peers.ANSWER,
                                   os.urandom(hado_peers.NONCE_BYTES), body))
    nonce = os.urandom(12).hex()
    body = {"type": "pong", "cluster": cluster, "from": me, "nonce": nonce, "report": report}
    return len(hado_peers.pack(ts.SECRET, body, prefix=nonce.encode()))


def request_size(cluster, me, to, claims, poll_me=True, seq=1_234_567):
    if hasattr(hado_peers, "REQUEST"):
        body = {"cluster": cluster, "from": me, "to": to, "boot": "0" * 16, "seq": seq, "claims": list(claims)}
        if poll_me:
            body["poll_me"] = True
        return len(hado_peers.pack(hado_peers.heartbeat_key(ts.SECRET), hado_peers.REQUEST,
                                   os.urandom(hado_peers.NONCE_BYTES), body))
    nonce = os.urandom(12).hex()
    body = {"type": "ping", "cluster": cluster, "from": me, "to": to, "nonce": nonce, "claims": list(claims)}
    if poll_me:
        body["poll_me"] = True
    return len(hado_peers.pack(ts.SECRET, body))


def worst_report(report, names):
    """The report of a node in trouble: every app ineligible with a sentence, claimed by
    every node, moving, with a large epoch."""
    worst = json.loads(json.dumps(report))
    for entry in worst["apps"].values():
        entry.update(role="stopping", eligible=False, why_not=WORST_WHY, epoch=123456, claim=True,
                     claims=list(names), move_to=names[-1], active_node=names[-1])
    worst["healthy"], worst["why_unhealthy"] = False, WORST_WHY
    return worst


def synthetic_report(n_nodes, n_apps, name_len=6, names_kind="plain", sentences=False):
    """The report State.report() builds for n_apps apps on n_nodes nodes, steady state
    (each app active on node i mod n, eligible here, held there), as the peers thread
    sends it (wire.for_peers). ``names_kind`` "plain": app-NNNN; "varied": like
    billing-queue-17; ``sentences``: every app ineligible with its own sentence."""
    names = netlab.node_names(min(n_nodes, 26)) + [f"node-{i}" for i in range(26, n_nodes)]
    state = State(names[0], "scale")
    words = ["web", "db", "api", "billing", "cache", "queue", "search", "auth", "mail", "cron", "proxy"]
    rnd = random.Random(n_apps)
    for i in range(n_apps):
        app = (f"app-{i:0{name_len - 4}}" if names_kind == "plain"
               else f"{rnd.choice(words)}-{rnd.choice(words)}-{i}")
        state.add_app(app, ["vip"], {})
        why = f"fails app monitor http: GET http://10.0.{i // 250}.{i % 250}:8080/health: connection refused"
        mine = names[i % n_nodes] == names[0]
        state.update_app(app, eligible=not sentences, why_not=why if sentences else None,
                         active_node=names[i % n_nodes], epoch=rnd.randint(1, 40),
                         role="active" if mine else "standby", desired="active" if mine else "standby")
    for j, peer in enumerate(names[1:], 1):
        state.peer_request(peer, 0.0, [], [a for k, a in enumerate(state.apps) if k % n_nodes == j])
    peers = {p: "up" for p in names[1:]}
    silent = {p: 0.4046060190003118 for p in names[1:]}
    return wire.for_peers(state.report(peers, True, None, silent=silent), 3 * ts.HB), names


def mtu_line(size, mtu=1500):
    room4, room6 = mtu - IPV4_UDP_OVERHEAD, mtu - IPV6_UDP_OVERHEAD
    frags = -(-(size + 8) // ((mtu - 20) // 8 * 8))
    budget = f"; hado's budget {wire.MTU_PAYLOAD} B (a {wire.MTU} B MTU over IPv6)"
    if size <= room4:
        return (f"{size} B: fits one {mtu} B MTU (room {room4} B over IPv4, {room6} B over IPv6)"
                + budget + (" kept" if size <= wire.MTU_PAYLOAD else " EXCEEDED"))
    return (f"{size} B: {size - room4} B over the {room4} B a {mtu} B MTU leaves over IPv4 "
            f"({size - room6} B over IPv6's {room6} B); {frags} IPv4 fragments")


# -- /proc helpers ------------------------------------------------------------------------------------

def machine_cpu():
    """(busy seconds, total seconds) of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


def snmp(lab, member):
    """Selected /proc/net/snmp counters of a member's namespace."""
    lines = lab.run(member, ["cat", "/proc/net/snmp"]).stdout.splitlines()
    values = {}
    for head, row in zip(lines[::2], lines[1::2]):
        keys, numbers = head.split(), row.split()
        for key, number in zip(keys[1:], numbers[1:]):
            values[keys[0] + key] = int(number)
    wanted = ("Ip:FragCreates", "Ip:ReasmReqds", "Ip:ReasmOKs", "Ip:ReasmFails", "Ip:ReasmTimeout",
              "Udp:InDatagrams", "Udp:OutDatagrams", "Udp:RcvbufErrors", "Udp:InErrors")
    return {k.split(":")[1]: values.get(k, 0) for k in wanted}


def diff(after, before):
    return {k: after[k] - before.get(k, 0) for k in after}


def loadavg():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- one cluster's life ----------------------------------------------------------------------------------

QUORUM_LOST = re.compile(r"stepping down: .* no quorum")
RENEW_FAILED = re.compile(r"renew failed")
RESTARTING = re.compile(r"restarting: |gave up: |failed on this node")


def count_lines(c, offsets, pattern):
    return sum(len(v) for v in c.log_lines_since(offsets, pattern).values())


def log_summary(c, offsets):
    role = c.log_lines_since(offsets)
    return (f"role-change log lines {sum(len(v) for v in role.values())} "
            f"(on {', '.join(n for n, v in role.items() if v) or 'no node'}), "
            f"quorum losses {count_lines(c, offsets, QUORUM_LOST)} (app stop-downs), "
            f"failed lease renewals {count_lines(c, offsets, RENEW_FAILED)}, "
            f"restarts/failures {count_lines(c, offsets, RESTARTING)}")


def start_and_place(c, sampler, timeout=90, poll=0.5):
    """Start every daemon at once; seconds to placed (or None) and the placement."""
    t0 = c.start()
    where, why = None, "not tried"
    while time.monotonic() - t0 < timeout:
        where, why = c.placement(c.ask(timeout=3), ts.holders_now(c, sampler))
        if where:
            return time.monotonic() - t0, where, why
        time.sleep(poll)
    return None, None, why


def phase_placement(c, sampler, args):
    print(f"placement: {len(c.names)} nodes, {len(c.apps)} apps ({len(c.vips)} VIPs), heartbeat "
          f"{c.heartbeat} s, dead_after {c.dead_after} s; load average before: {loadavg()}", flush=True)
    took, where, why = start_and_place(c, sampler, timeout=args.place_timeout)
    offsets0 = {n: 0 for n in c.names}
    if took is None:
        print(f"  NOT placed within {args.place_timeout} s: {why}; {log_summary(c, offsets0)}")
        return None
    by_node = collections.Counter(where.values())
    print(f"  start -> all placed: {took:.2f} s; apps per node {dict(sorted(by_node.items()))}")
    print(f"  on the way: {log_summary(c, offsets0)}", flush=True)
    return where


def phase_idle(c, args):
    time.sleep(3)
    offsets = c.log_offsets()
    pids = {n: c.pid(n) for n in c.live()}
    before = {n: ts.cpu_seconds(p) for n, p in pids.items()}
    m0, w0 = machine_cpu(), time.monotonic()
    time.sleep(args.idle)
    after = {n: ts.cpu_seconds(p) for n, p in pids.items()}
    m1, w1 = machine_cpu(), time.monotonic()
    wall = w1 - w0
    print(f"idle {wall:.0f} s, no API requests (CPU in % of one core):")
    own_total = child_total = 0.0
    for node, pid in pids.items():
        own = (after[node][0] - before[node][0]) / wall * 100
        kids = (after[node][1] - before[node][1]) / wall * 100
        own_total += own
        child_total += kids
        threads = Path(f"/proc/{pid}/status").read_text().split("Threads:")[1].split()[0]
        rss = ts.status_kb(pid, "VmRSS") / 1024
        print(f"  {node}: hado {own:5.1f} %  + children {kids:4.1f} %   RSS {rss:5.1f} MB "
              f"(peak {ts.status_kb(pid, 'VmHWM') / 1024:5.1f} MB)  threads {threads}")
    busy = (m1[0] - m0[0]) / wall * 100
    rates = counted_rates(c, w0, w1)
    if rates:
        print(f"  per node and second (median over the nodes): election turns {rates['turn']:.1f}, answers "
              f"received {rates['peer_answer']:.1f}, reports built {rates['my_report']:.1f} "
              f"(heartbeat {c.heartbeat} s, {len(c.names) - 1} peers)")
        groups = sorted(rates["cpu"].items(), key=lambda kv: -kv[1])
        print("  CPU by thread (median over the nodes, % of one core): "
              + ", ".join(f"{g} {v:.1f}" for g, v in groups if v >= 0.05))
    print(f"  all nodes: hado {own_total:.1f} % + children {child_total:.1f} %; the whole machine "
          f"({os.cpu_count()} cores) was busy {busy:.0f} % of one core, so "
          f"{max(0.0, busy - own_total - child_total):.0f} % "
          f"was other load; load average {loadavg()}")
    print(f"  during idle: {log_summary(c, offsets)}", flush=True)


def phase_wire(c, args):
    lab = c.lab
    counters0 = {n: snmp(lab, n) for n in c.live()}
    with Capture(lab, c.names[0]) as cap:
        time.sleep(args.capture)
        grams, incomplete = cap.stop()
    counters = {n: diff(snmp(lab, n), counters0[n]) for n in c.live()}
    answers = [g for g in grams if g["kind"] == "answer"]
    requests = [g for g in grams if g["kind"] == "request"]
    print(f"wire: {args.capture:.0f} s on eth0 of {c.names[0]} (MTU {link_mtu(lab, c.names[0])}): "
          f"{len(grams)} heartbeat datagrams ({incomplete} incomplete)")
    if answers:
        big = max(answers, key=lambda g: g["size"])
        print(f"  largest answer  {mtu_line(big['size'])}; on the wire: {big['frags']} frames, largest "
              f"{big['max_frame']} B; fragments per answer {dict(collections.Counter(g['frags'] for g in answers))}")
    if requests:
        big = max(requests, key=lambda g: g["size"])
        print(f"  largest request {mtu_line(big['size'])}; {big['frags']} frame(s)")
    print(f"  exchanges of {c.names[0]}: {exchange_figures(grams)}")
    view = c.ask("view", names=[c.names[0]], timeout=5)[c.names[0]]
    if view:
        me = c.names[0]
        sizes = {n: answer_size(wire.for_peers(node["report"], 3 * c.heartbeat) if n == me else node["report"],
                                "scale", n, c.names[0])
                 for n, node in view["nodes"].items() if node.get("report")}
        print(f"  computed with hado.peers.pack from /v1/view (the reports as received): answers "
              f"{min(sizes.values())}-{max(sizes.values())} B; per app "
              f"{per_app_bytes(view['nodes'][me]['report']):.0f} B")
        claims = sorted(c.apps)[: len(c.apps) // len(c.names) + 1]
        print(f"  request with a claim of {len(claims)} apps (a failover) "
              f"{request_size('scale', me, c.names[1], claims)} B; "
              f"claiming all {len(c.apps)} apps {request_size('scale', me, c.names[1], sorted(c.apps))} B")
        worst = answer_size(worst_report(view["nodes"][me]["report"], list(view["nodes"])), "scale", me, c.names[1])
        print(f"  worst case (every app ineligible with a sentence, claimed by all, moving): {mtu_line(worst)}")
        bound = wire.worst_answer_bound("scale", list(view["nodes"]), list(c.apps))
        print(f"  the bound hado check-config holds to {hado_peers.MAX_DATAGRAM} B (no gain from deflate, every "
              f"sentence {wire.WHY_MAX} B, every node claiming and holding every app): {bound} B")
    print(f"  kernel counters over the capture ({', '.join(counters[c.names[0]])}):")
    for node, values in counters.items():
        print(f"    {node}: {' '.join(str(v) for v in values.values())}")
    sys.stdout.flush()


def read_counts(path):
    """[(t, {name: total})] written by the _hado wrapper."""
    out = []
    try:
        with open(path) as file:
            for line in file:
                if line.endswith("\n"):
                    entry = json.loads(line)
                    out.append((entry.pop("t"), entry))
    except FileNotFoundError:
        pass
    return out


def counted_rates(c, t0, t1):
    """Median over the nodes of turns, answers and reports per second between t0 and t1
    (monotonic), and of each thread group's CPU in % of one core, from the wrapper's
    counts; None when hado ran without the wrapper."""
    counts_dir = getattr(c, "counts_dir", None)
    if not counts_dir:
        return None
    rates, cpu = collections.defaultdict(list), collections.defaultdict(list)
    for node in c.live():
        entries = read_counts(Path(counts_dir) / f"{node}.counts")
        inside = [(t, e) for t, e in entries if t0 <= t <= t1]
        if len(inside) < 2:
            continue
        (ta, a), (tb, b) = inside[0], inside[-1]
        for name in ("turn", "peer_answer", "my_report"):
            rates[name].append((b.get(name, 0) - a.get(name, 0)) / (tb - ta))
        for group in set(a.get("cpu", {})) | set(b.get("cpu", {})):
            cpu[group].append((b["cpu"].get(group, 0) - a["cpu"].get(group, 0)) / (tb - ta) * 100)
    if not rates:
        return None
    out = {k: statistics.median(v) for k, v in rates.items()}
    out["cpu"] = {g: statistics.median(v) for g, v in cpu.items()}
    return out


def make_cluster(lab, tmp, n_apps, args):
    """A ScaleCluster whose daemons run under the counting wrapper (``_hado``)."""
    counts_dir = Path(tmp) / "counts"
    counts_dir.mkdir(exist_ok=True)
    c = ts.ScaleCluster(lab, tmp, n_apps=n_apps, heartbeat=args.heartbeat, dead_after=args.dead_after,
                        lease=args.lease, command=[sys.executable, __file__, "_hado", str(counts_dir)])
    c.counts_dir = counts_dir
    return c


def per_app_bytes(report):
    apps = report["apps"]
    if not apps:
        return 0.0
    text = json.dumps(apps, separators=(",", ":"), sort_keys=True)
    return len(text) / len(apps)


def link_mtu(lab, member):
    out = json.loads(lab.run(member, ["ip", "-j", "link", "show", "dev", "eth0"]).stdout)
    return out[0]["mtu"]


def phase_failover(c, sampler, where, args):
    victim = collections.Counter(where.values()).most_common(1)[0][0]
    apps = sorted(a for a, n in where.items() if n == victim)
    takeover = next(b for b in c.ask().values() if b)["takeover_after_s"]
    offsets = c.log_offsets()
    t_kill = time.monotonic_ns()
    c.kill(victim)
    survivors = [n for n in c.names if n != victim]
    try:
        after = ts.wait_placed(c, sampler, takeover + 30, names=survivors)
    except AssertionError as exc:
        print(f"failover: kill -9 of {victim} ({len(apps)} apps): NOT re-placed: {str(exc)[:300]}")
        return None, victim
    moved = ts.moved_times(c, sampler, t_kill, {a: after[a] for a in apps})
    where_to = collections.Counter(after[a] for a in apps)
    bound = takeover + c.heartbeat + ts.SLACK
    print(f"failover: kill -9 of {victim} ({len(apps)} apps) -> {dict(where_to)}; takeover_after {takeover} s, "
          f"bound {bound:.2f} s")
    for app in apps:
        print(f"  {app} ({c.apps[app]['kind']:5}) started on {after[app]} {moved[app]:.2f} s after the kill"
              if moved[app] is not None else f"  {app}: no start seen")
    got = [t for t in moved.values() if t is not None]
    if got:
        print(f"  per app {quantiles(got)}; all {len(apps)} moved {max(got):.2f} s after the kill")
    print(f"  {log_summary(c, offsets)}", flush=True)
    return after, victim


def phase_loss(c, sampler, where, args, percent, seconds):
    lossy = collections.Counter(where.values()).most_common(1)[0][0]
    lab = c.lab
    live = c.live()
    offsets = c.log_offsets()
    counters0 = snmp(lab, lossy)
    t_loss = time.monotonic_ns()
    votes, worst_seen = [], 0.0
    with Capture(lab, lossy) as cap:
        lab.loss(lossy, percent)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            brief = c.ask(names=[lossy], timeout=3)[lossy]
            if brief:
                votes.append(brief["quorum"]["votes"])
                worst_seen = max([worst_seen] + [s or 0 for p, (_, s) in brief["peers"].items() if c.alive(p)])
            time.sleep(1.0)
        lab.clear_loss(lossy)
        grams, _ = cap.stop()
    counters = diff(snmp(lab, lossy), counters0)
    changes, _ = sampler.records()
    vip_moves = sum(1 for t, _ in changes if t >= t_loss)
    placed, why = c.placement(c.ask(names=live))
    role = c.log_lines_since(offsets)
    answers = [g for g in grams if g["kind"] == "answer" and g["dir"] == "in"]
    frags = max((g["frags"] for g in answers), default=0)
    print(f"loss: {percent:g} % on {lossy} ({sum(1 for n in where.values() if n == lossy)} apps; "
          f"{len(c.apps)} apps in the cluster, answers of {frags} fragments) for {seconds:g} s:")
    print(f"  role-change log lines {sum(len(v) for v in role.values())} "
          f"({', '.join(f'{n} {len(v)}' for n, v in role.items() if v) or 'none'}); VIP holder changes {vip_moves}; "
          f"afterwards {'placed as before' if placed == where else why}")
    print(f"  {lossy}'s votes sampled every 1 s: {dict(sorted(collections.Counter(votes).items()))} "
          f"(needed {len(c.names) // 2 + 1}); largest last_seen_s of a live peer {worst_seen:.2f} s")
    print(f"  {lossy}'s exchanges: {exchange_figures(grams)}")
    print(f"  {lossy}'s kernel: reassembled {counters['ReasmOKs']}, reassembly failures {counters['ReasmFails']} "
          f"(timeouts {counters['ReasmTimeout']}), receive-buffer drops {counters['RcvbufErrors']}")
    print(f"  {log_summary(c, offsets)}", flush=True)


# -- the hard limits, computed ------------------------------------------------------------------------------

def first_over(limit, size_of, low=1, high=20000):
    """The least app count whose size_of(apps) exceeds limit (high + 1: none up to high)."""
    if size_of(high) <= limit:
        return high + 1
    while low < high:
        mid = (low + high) // 2
        if size_of(mid) > limit:
            high = mid
        else:
            low = mid + 1
    return low


def phase_limit(args):
    print(f"limit: heartbeat answer bytes (UDP payload) from State.report() + wire.for_peers + hado.peers.pack "
          f"(protocol {hado_peers.VERSION}), steady state; one packet = {wire.MTU_PAYLOAD} B "
          f"(a {wire.MTU} B MTU over IPv6), at most {hado_peers.MAX_DATAGRAM} B, a report inflates to at most "
          f"{wire.MAX_REPORT} B", flush=True)
    counts = (1, 10, 50, 100, 200, 500)
    kinds = (("plain", False, "names app-NN"), ("varied", False, "names like billing-queue-17"),
             ("varied", True, "varied names, every app ineligible with its own 80-character sentence"))
    for nodes in (3, 7, 16, 26):
        for names_kind, sentences, label in kinds:
            def sizes_of(apps):
                report, names = synthetic_report(nodes, apps, names_kind=names_kind, sentences=sentences)
                body = {"cluster": "scale", "from": names[0], "to": names[1], "boot": "0" * 16, "seq": 1_234_567}
                return answer_size(report, "scale", names[0], names[1]), wire.encoded_json_size(report), \
                    len(json.dumps(body))
            sizes = {a: sizes_of(a) for a in counts + (1000, 2000)}
            one = first_over(wire.MTU_PAYLOAD, lambda a: sizes_of(a)[0], high=500)
            (a1, j1, _), (a2, j2, _) = sizes[1000], sizes[2000]   # both grow linearly from here on
            most = min(1000 + (hado_peers.MAX_DATAGRAM - a1) * 1000 / (a2 - a1),
                       1000 + (wire.MAX_REPORT - j1) * 1000 / (j2 - j1))
            print(f"  {nodes:2} nodes, {label}: {', '.join(f'{a} apps {sizes[a][0]}' for a in counts)} B; "
                  f"one packet up to {one - 1} apps; {hado_peers.MAX_DATAGRAM} B (or the {wire.MAX_REPORT} B "
                  f"inflate bound) reached at about {most:.0f} apps", flush=True)
        node_names = netlab.node_names(min(nodes, 26))
        refused = first_over(hado_peers.MAX_DATAGRAM,
                             lambda apps: wire.worst_answer_bound("scale", node_names, [f"app-{i:02}" for i in range(apps)]),
                             high=5000)
        print(f"  {nodes:2} nodes: hado check-config refuses {refused} apps or more (names app-NN; the bound counts "
              f"no gain from deflate and every app ineligible with a {wire.WHY_MAX}-byte sentence, claimed and held "
              f"by every node: what a node may have to send, whatever happens)", flush=True)
    n = 7
    print(f"  full mesh: a heartbeat round is n(n-1) requests + n(n-1) answers: {n * (n - 1) * 2} datagrams at {n} "
          f"nodes, {26 * 25 * 2} at 26, each answer carrying a whole report, and each node building n-1 reports "
          f"and reading n-1 per heartbeat: a node's work grows with nodes x apps, the cluster's with "
          f"nodes^2 x apps; where that stops fitting this machine is what 'steps' finds")
    sys.stdout.flush()


# -- steps ---------------------------------------------------------------------------------------------------

def phase_steps(args):
    print(f"steps: each NODESxAPPS placed, then {args.step_idle:.0f} s idle, every node's peers sampled every 2 s "
          f"(heartbeat {args.heartbeat} s: a sample above {2 * args.heartbeat:g} s is a whole round unanswered, "
          f"above {args.dead_after / 2:g} s a lost vote)", flush=True)
    held, missed = None, None
    for step in [s.strip() for s in args.steps.split(",") if s.strip()]:
        nodes, apps = (int(x) for x in step.lower().split("x"))
        verdict = run_step(nodes, apps, args)
        if verdict == "ok":
            held = step
        else:
            missed = missed or step
            if not args.all_steps:
                print(f"  stopping at {step}: {verdict}")
                break
    def mesh(step):
        n = int(step.lower().split("x")[0])
        return f"{step} ({2 * n * (n - 1)} datagrams per heartbeat, each node building {n - 1} reports)"
    print(f"  the full mesh on this machine ({os.cpu_count()} cores, heartbeat {args.heartbeat} s, load average "
          f"{loadavg()}): last step that held {mesh(held) if held else 'none'}; first that missed "
          f"{mesh(missed) if missed else 'none of these'}: the datagrams grow with nodes^2 and every node's work "
          f"with nodes x apps, so past that point heartbeats miss before any datagram is too large", flush=True)


def run_step(nodes, apps, args):
    with workdir(args) as tmp, Lab(nodes) as lab:
        c = make_cluster(lab, tmp, apps, args)
        try:
            with ts.VipSampler(lab, c.vips.values(), interval=0.1) as sampler:
                load = loadavg()
                took, where, why = start_and_place(c, sampler, timeout=args.place_timeout, poll=1.0)
                on_the_way = count_lines(c, {n: 0 for n in c.names}, QUORUM_LOST)
                offsets = c.log_offsets()
                time.sleep(2)
                pids = {n: c.pid(n) for n in c.live()}
                before = {n: ts.cpu_seconds(p) for n, p in pids.items()}
                m0, w0 = machine_cpu(), time.monotonic()
                ages, quorum_bad = [], 0
                deadline = time.monotonic() + args.step_idle
                while time.monotonic() < deadline:
                    for brief in c.ask(timeout=3).values():
                        if not brief:
                            continue
                        quorum_bad += not brief["quorum"]["ok"]
                        ages += [s for _, s in brief["peers"].values() if s is not None]
                    time.sleep(2)
                wall = time.monotonic() - w0
                cpu = sum(sum(ts.cpu_seconds(p)) - sum(before[n]) for n, p in pids.items()) / wall * 100
                busy = (machine_cpu()[0] - m0[0]) / wall * 100
                rates = counted_rates(c, w0, time.monotonic()) or {}
                view = c.ask("view", names=[c.names[0]], timeout=5)[c.names[0]]
                size = answer_size(view["nodes"][c.names[0]]["report"], "scale", c.names[0], c.names[1]) if view else 0
                role = sum(len(v) for v in c.log_lines_since(offsets).values())
                lost = count_lines(c, offsets, QUORUM_LOST)
                renew = count_lines(c, offsets, RENEW_FAILED)
                over_round = sum(1 for a in ages if a > 2 * args.heartbeat)
                over_vote = sum(1 for a in ages if a > args.dead_after / 2)
                miss = (took is None or role or lost or over_vote)
                verdict = "ok" if not miss else "heartbeats miss"
                placed = f"placed in {took:.1f} s ({on_the_way} app stop-downs for quorum on the way)" if took \
                    else f"NOT placed in {args.place_timeout:g} s ({why})"
                print(f"  {nodes:2} nodes x {apps:3} apps: {placed}; answer {size} B; hado + children CPU "
                      f"{cpu:.0f} % of "
                      f"one core in all ({cpu / nodes:.1f} % per node; turns {rates.get('turn', 0):.1f}/s per node), "
                      f"machine busy {busy:.0f} % of {os.cpu_count() * 100} %; idle {args.step_idle:g} s: "
                      f"last_seen max "
                      f"{max(ages, default=0):.2f} s, > 2h {over_round}/{len(ages)}, > D/2 {over_vote}; quorum not ok "
                      f"{quorum_bad}; role-change lines {role}, quorum stop-downs {lost}, failed renewals {renew}; "
                      f"load before {load} -> {verdict}", flush=True)
                return verdict
        finally:
            c.stop_all()


# -- main --------------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=ts.N_NODES)
    parser.add_argument("--apps", type=int, default=ts.N_APPS)
    parser.add_argument("--heartbeat", type=float, default=ts.HB)
    parser.add_argument("--dead-after", type=float, default=ts.DEAD)
    parser.add_argument("--lease", type=float, default=ts.LEASE, help="seconds, of the VIPs and the dummies")
    parser.add_argument("--idle", type=float, default=60, help="seconds of the idle CPU window")
    parser.add_argument("--capture", type=float, default=5, help="seconds of the wire capture")
    parser.add_argument("--loss", type=float, default=20, help="percent")
    parser.add_argument("--loss-seconds", type=float, default=60)
    parser.add_argument("--loss-apps", default="", help="also run the loss with these app counts, comma-separated")
    parser.add_argument("--place-timeout", type=float, default=90)
    parser.add_argument("--steps", default="3x50,5x50,7x6,7x12,7x25,7x50,7x100,10x12,13x12,16x12,20x12,26x12")
    parser.add_argument("--step-idle", type=float, default=20)
    parser.add_argument("--all-steps", action="store_true", help="do not stop at the first step that misses")
    parser.add_argument("--keep", default="", help="keep the daemons' logs in a new directory under this one")
    parser.add_argument("--only", default="placement,idle,wire,failover,loss,limit,steps")
    args = parser.parse_args()
    only = {p.strip() for p in args.only.split(",")}
    reason = netlab.skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores, load average {loadavg()}; hado/peers.py protocol "
          f"{getattr(hado_peers, 'VERSION', 1)}, MAX_DATAGRAM {hado_peers.MAX_DATAGRAM}", flush=True)
    if only & {"placement", "idle", "wire", "failover", "loss"}:
        run_main(args, only, args.apps)
    for apps in [int(a) for a in args.loss_apps.split(",") if a.strip()]:
        run_main(args, {"placement", "loss"}, apps)
    if "limit" in only:
        phase_limit(args)
    if "steps" in only:
        phase_steps(args)
    return 0


def workdir(args):
    """A temporary directory, or a fresh one under --keep (the daemons' logs stay there)."""
    if not args.keep:
        return tempfile.TemporaryDirectory(prefix="hado-scale-")
    Path(args.keep).mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(tempfile.mkdtemp(prefix="hado-scale-", dir=args.keep))


def run_main(args, only, n_apps):
    with workdir(args) as tmp, Lab(args.nodes) as lab:
        c = make_cluster(lab, tmp, n_apps, args)
        try:
            with ts.VipSampler(lab, c.vips.values()) as sampler:
                where = phase_placement(c, sampler, args)
                if where is None:
                    return
                if "idle" in only:
                    phase_idle(c, args)
                if "wire" in only:
                    phase_wire(c, args)
                if "failover" in only:
                    after, _ = phase_failover(c, sampler, where, args)
                    where = after or where
                if "loss" in only and where:
                    phase_loss(c, sampler, where, args, args.loss, args.loss_seconds)
                changes, samples = sampler.stop()
            duals = ts.dual_vips(changes)
            bad = ts.overlaps(c.dummy_intervals())
            print(f"never on two nodes: {samples} VIP samples, {len(duals)} with two holders; "
                  f"{len(bad)} overlapping dummy intervals", flush=True)
        except BaseException:
            print(c.tails(), file=sys.stderr)
            raise
        finally:
            c.stop_all()


if __name__ == "__main__":
    sys.exit(main())
