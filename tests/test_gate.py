"""ipaddr's nftables gate (a lease below 1 s) against the real kernel.

One lab (tests/lab/netlab.py) for the module, named ``hgate-<pid>-<random>``: a node
namespace and a client namespace on a bridge. The plugin runs in the node namespace in
a plugin host process, as in tests/test_plugins_net.py (the engine's way of calling it,
its module state and announcement threads kept between calls). The client namespace
runs a small prober (CLIENT below) that asks the way a LAN client does: ARP who-has for
the VIP, UDP and TCP to an echo server of the node bound to the VIP, neighbour
solicitations for an IPv6 VIP. Times are time.monotonic_ns(), one clock for every
namespace, so a renewal's time in the node compares with an answer's in the client.

The close time after the last renewal (the figure lease_slack() must cover) is printed
by ``./run-tests -q -s tests/test_gate.py -k close_time``.
"""

import ipaddress
import json
import os
import re
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hado.plugin import Registry
from helpers import wait_for
from lab import netlab
from lab.netlab import Lab, PacketCapture

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parent.parent
SKIP = netlab.skip_reason()
lab_only = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
PORT = 7007
ETH_P_ARP = 0x0806
LEASE = 0.3
SLACK = Registry().get("ipaddr").module.GATE_SLACK

# The plugin host: one JSON request a line, {"plugin", "function", "args"}; the answer
# has ok, value or error, and the monotonic times the call started and ended.
from test_plugins_net import HOST  # noqa: E402  (the plugin host: one call per JSON line, in the namespace)

# Echo server for the node: UDP and TCP on PORT of each address given, bound with
# IP_FREEBIND before the address exists, so that its answers come from the VIP (a
# wildcard UDP socket would answer from the node's own address, past the gate).
ECHO = textwrap.dedent("""
    import socket, sys, threading
    IP_FREEBIND, IPV6_FREEBIND = 15, 78
    def bound(kind, address, port):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.bind((address, port))
        return sock
    def udp(sock):
        while True:
            data, peer = sock.recvfrom(2048)
            try:
                sock.sendto(data, peer)
            except OSError:
                pass   # EPERM: the gate dropped it on the way out
    def connection(conn):
        with conn:
            while True:
                data = conn.recv(2048)
                if not data:
                    return
                conn.sendall(data)
    def tcp(sock):
        sock.listen(16)
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=connection, args=(conn,), daemon=True).start()
    port = int(sys.argv[1])
    for address in sys.argv[2:]:
        threading.Thread(target=udp, args=(bound(socket.SOCK_DGRAM, address, port),), daemon=True).start()
        threading.Thread(target=tcp, args=(bound(socket.SOCK_STREAM, address, port),), daemon=True).start()
    print("serving", flush=True)
    threading.Event().wait()
""")

# The client's prober: {"fn", "args"} a line, {"value"} or {"error"} back.
CLIENT = textwrap.dedent('''
    import ipaddress, json, select, socket, struct, sys, time
    ETH_P_ARP, ETH_P_IPV6 = 0x0806, 0x86DD
    conns = {}

    def link():
        with open("/sys/class/net/eth0/address") as f:
            return bytes.fromhex(f.read().strip().replace(":", ""))

    def arp_request(mac, own, vip):
        body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + own.packed + b"\\0" * 6 + vip.packed
        return (b"\\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP) + body).ljust(60, b"\\0")

    def arp_sender(frame, vip):
        """The sender MAC of an ARP reply from vip, else None."""
        if len(frame) < 42 or frame[12:14] != b"\\x08\\x06" or frame[20:22] != b"\\x00\\x02":
            return None
        return frame[22:28].hex(":") if frame[28:32] == vip.packed else None

    def watch(vip, own, duration, interval=0.002):
        """For ``duration`` s, every ``interval`` s: an ARP who-has for vip and a UDP probe
        to vip:PORT. Returns the arrival times of ARP replies from vip, and the send
        times of the UDP probes, answered and not."""
        vip, own = ipaddress.ip_address(vip), ipaddress.ip_address(own)
        mac = link()
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        raw.bind(("eth0", ETH_P_ARP))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent, answered, arp = {}, [], []
        request = arp_request(mac, own, vip)
        began = time.monotonic()
        ends, next_at, seq = began + duration, began, 0
        while True:
            now = time.monotonic()
            if now >= ends + 0.05:
                break
            if now >= next_at and now < ends:
                seq += 1
                sent[seq] = time.monotonic_ns()
                raw.send(request)
                udp.sendto(struct.pack("!I", seq), (str(vip), PORT))
                next_at += interval
                continue
            for sock in select.select([raw, udp], [], [], max(0.0, min(next_at, ends + 0.05) - now))[0]:
                if sock is raw:
                    frame, where = raw.recvfrom(2048)
                    if where[2] != socket.PACKET_OUTGOING and arp_sender(frame, vip):
                        arp.append(time.monotonic_ns())
                else:
                    data, peer = udp.recvfrom(2048)
                    if ipaddress.ip_address(peer[0]) == vip and len(data) == 4:
                        answered.append(sent[struct.unpack("!I", data)[0]])
        raw.close()
        udp.close()
        return {"arp": arp, "answered": sorted(answered), "sent": sorted(sent.values())}

    def arp(vip, own, timeout=0.3):
        """The MAC that answers a who-has for vip within timeout, else None."""
        vip, own = ipaddress.ip_address(vip), ipaddress.ip_address(own)
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        raw.bind(("eth0", ETH_P_ARP))
        try:
            raw.send(arp_request(link(), own, vip))
            ends = time.monotonic() + timeout
            while select.select([raw], [], [], max(0.0, ends - time.monotonic()))[0]:
                frame, where = raw.recvfrom(2048)
                found = where[2] != socket.PACKET_OUTGOING and arp_sender(frame, vip)
                if found:
                    return found
            return None
        finally:
            raw.close()

    def udp(vip, timeout=0.3):
        """Whether vip:PORT echoes a datagram within timeout (IPv4 or IPv6)."""
        family = socket.AF_INET6 if ":" in vip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((vip, PORT))
            sock.send(b"ping")
            if not select.select([sock], [], [], timeout)[0]:
                return False
            try:
                return sock.recv(64) == b"ping"
            except OSError:
                return False

    def tcp_open(vip, name, timeout=1.0):
        family = socket.AF_INET6 if ":" in vip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect((vip, PORT))
        conns[name] = sock
        return True

    def tcp_echo(name, text, timeout=0.5):
        """Send text on the connection; what comes back within timeout ("" for nothing)."""
        sock = conns[name]
        sock.sendall(text.encode())
        got, ends = b"", time.monotonic() + timeout
        while len(got) < len(text) and select.select([sock], [], [], max(0.0, ends - time.monotonic()))[0]:
            chunk = sock.recv(2048)
            if not chunk:
                break
            got += chunk
        return got.decode()

    def tcp_read(name, size, timeout):
        sock, got, ends = conns[name], b"", time.monotonic() + timeout
        while len(got) < size and select.select([sock], [], [], max(0.0, ends - time.monotonic()))[0]:
            chunk = sock.recv(2048)
            if not chunk:
                break
            got += chunk
        return got.decode()

    def tcp_close(name):
        conns.pop(name).close()
        return True

    def checksum(data):
        if len(data) % 2:
            data += b"\\0"
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    def solicit(vip, own, timeout=0.3):
        """A neighbour solicitation for vip from own (as the client's kernel would send
        it, to vip's solicited-node group); the MAC of the advertisement for vip that
        answers it within timeout, else None."""
        vip, own, mac = ipaddress.ip_address(vip), ipaddress.ip_address(own), link()
        group = ipaddress.ip_address("ff02::1:ff00:0").packed[:13] + vip.packed[13:]
        message = struct.pack("!BBHI", 135, 0, 0, 0) + vip.packed + bytes([1, 1]) + mac
        pseudo = own.packed + group + struct.pack("!I", len(message)) + b"\\0\\0\\0" + bytes([58])
        message = message[:2] + struct.pack("!H", checksum(pseudo + message)) + message[4:]
        header = struct.pack("!IHBB", 6 << 28, len(message), 58, 255) + own.packed + group
        frame = b"\\x33\\x33" + group[12:] + mac + struct.pack("!H", ETH_P_IPV6) + header + message
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
        raw.bind(("eth0", ETH_P_IPV6))
        try:
            raw.send(frame)
            ends = time.monotonic() + timeout
            while select.select([raw], [], [], max(0.0, ends - time.monotonic()))[0]:
                data, where = raw.recvfrom(2048)
                if where[2] == socket.PACKET_OUTGOING or len(data) < 78 or data[20] != 58:
                    continue
                if data[54] == 136 and data[62:78] == vip.packed:
                    return data[6:12].hex(":")
            return None
        finally:
            raw.close()

    PORT = int(sys.argv[1])
    for line in sys.stdin:
        request = json.loads(line)
        try:
            print(json.dumps({"value": globals()[request["fn"]](**request["args"])}), flush=True)
        except Exception as exc:
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
''')

# Times ipaddr's gate renewal transaction alone (_gate_renew: one nfnetlink batch), in
# microseconds: 20 calls 50 ms apart (as the engine's leases thread makes them), 500
# back to back.
TIME_RENEWAL = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from hado.plugin import Registry
    module = Registry().get("ipaddr").module
    vip = module._parse(sys.argv[2])
    def timed():
        began = time.perf_counter_ns()
        module._gate_renew(vip, 0.3)
        return (time.perf_counter_ns() - began) / 1e3
    cold = []
    for _ in range(20):
        time.sleep(0.05)
        cold.append(timed())
    print(json.dumps({"cold": sorted(cold), "hot": sorted(timed() for _ in range(500))}))
""")


class Host:
    """A process in a lab namespace answering JSON lines (HOST or CLIENT above)."""

    def __init__(self, lab, member, script, *argv, env=None):
        self.member = member
        self.proc = lab.popen(member, [sys.executable, "-c", script, *argv], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)

    def send(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout=30):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"{self.member}: no answer in {timeout} s"
        line = self.proc.stdout.readline()
        assert line, f"{self.member}: the host died (exit {self.proc.poll()})"
        return json.loads(line)

    def kill(self):
        """kill -9, as the OOM killer would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


class Node(Host):
    def __init__(self, lab, env=None):
        super().__init__(lab, "node-a", HOST, str(REPO), env=env)

    def call(self, function, args):
        self.send(plugin="ipaddr", function=function, args=args)
        return self.receive()

    def ok(self, function, args):
        answer = self.call(function, args)
        assert answer["ok"], f"ipaddr.{function}({args}) failed: {answer['error']}"
        return answer["value"]


class Client(Host):
    def __init__(self, lab):
        super().__init__(lab, "client", CLIENT, str(PORT))
        self.own, self.own6 = lab.addr("client"), lab.addr6("client")

    def do(self, fn, **args):
        self.send(fn=fn, args=args)
        answer = self.receive()
        assert "error" not in answer, f"client {fn}({args}): {answer['error']}"
        return answer["value"]

    def arp(self, vip, timeout=0.3):
        return self.do("arp", vip=vip, own=self.own, timeout=timeout)

    def udp(self, vip, timeout=0.3):
        return self.do("udp", vip=vip, timeout=timeout)

    def solicit(self, vip6, timeout=0.3):
        return self.do("solicit", vip=vip6, own=self.own6, timeout=timeout)


@pytest.fixture(scope="module")
def lab():
    if SKIP is not None:
        pytest.skip(SKIP)
    with Lab(1, prefix=f"hgate-{os.getpid()}-{secrets.token_hex(3)}") as built:
        vips = [built.vip(n) for n in range(100, 110)] + [built.vip6(0x100 + n) for n in range(4)]
        echo = built.popen("node-a", [sys.executable, "-c", ECHO, str(PORT), *vips],
                           stdout=subprocess.PIPE, text=True)
        assert echo.stdout.readline().startswith("serving"), "the echo server did not start"
        yield built


@pytest.fixture
def node(lab):
    return Node(lab)


@pytest.fixture
def client(lab):
    return Client(lab)


def vip_args(lab, n, **more):
    return {"address": f"{lab.vip(n)}/24", "interface": "eth0", "lease": LEASE, "garp_count": 1, **more}


def nft_set(lab, family, name):
    """The elements of a gate set as ``nft list set`` shows them: {address: expires in ms,
    or None without a timeout}. (``nft -j`` rounds timeouts down to whole seconds.)"""
    out = lab.run("node-a", ["nft", "list", "set", family, "hado_gate", name]).stdout
    found = {}
    match = re.search(r"elements = \{([^}]*)\}", out)
    for element in (match.group(1).split(",") if match else ()):
        address, *rest = element.split()
        expires = re.search(r"expires ((?:\d+[a-z]+)+)", " ".join(rest))
        found[address] = duration_ms(expires.group(1)) if expires else None
    return found


def duration_ms(text):
    """nft's "1s284ms" as 1284."""
    units = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
    return sum(int(n) * units[unit] for n, unit in re.findall(r"(\d+)(ms|[dhms])", text))


def ensure_gate(lab):
    """The gate's tables in the node, as the plugin makes them (for tests that fill its sets)."""
    lab.run("node-a", ["nft", "-f", "-"], input=Registry().get("ipaddr").module.GATE_RULES)


def node_addresses(lab):
    info = json.loads(lab.run("node-a", ["ip", "-j", "addr", "show", "dev", "eth0"]).stdout)[0]["addr_info"]
    return {a["local"] for a in info}


def renew_for(node, args, seconds, every=0.1):
    """Renew every ``every`` s for ``seconds``; the answers (all must succeed)."""
    answers, began = [], time.monotonic()
    ticks = round(seconds / every)
    for tick in range(ticks + 1):
        time.sleep(max(0.0, began + tick * every - time.monotonic()))
        answer = node.call("renew", args)
        assert answer["ok"], f"renewal {tick} failed: {answer['error']}"
        answers.append(answer)
    return answers


def close_time(seen, last_renewal_ns):
    """Seconds from the last renewal to the last answer the client got, UDP and ARP, and
    whether nothing was answered after the first unanswered probe."""
    answered = set(seen["answered"])
    last_udp = max(answered)
    lost = [t for t in seen["sent"] if t not in answered and t > last_renewal_ns]
    first_lost = min(lost)
    return ((last_udp - last_renewal_ns) / 1e9, (max(seen["arp"]) - last_renewal_ns) / 1e9,
            all(t < first_lost for t in answered))


# -- a killed renewer: the gate closes at lease + slack ----------------------------------------

@lab_only
def test_a_renewed_vip_answers_and_stops_answering_lease_after_its_renewer_is_killed(lab, client):
    node = Node(lab)
    vip = lab.vip(100)
    args = vip_args(lab, 100)
    node.ok("start", args)
    assert node.ok("alive", args) is True
    assert client.arp(vip) == lab.mac("node-a")
    assert client.udp(vip)
    assert lab.run("client", ["ping", "-c", "1", "-W", "1", vip], check=False).returncode == 0
    assert client.do("tcp_open", vip=vip, name="t") and client.do("tcp_echo", name="t", text="hello") == "hello"
    client.do("tcp_close", name="t")
    # Renew every 0.1 s for 1 s while the client probes every 2 ms, then kill -9 the renewer.
    client.send(fn="watch", args={"vip": vip, "own": client.own, "duration": 1.0 + LEASE + 0.15})
    answers = renew_for(node, args, 1.0)
    node.kill()
    seen = client.receive()["value"]
    last = answers[-1]["started_ns"]
    udp_close, arp_close, clean = close_time(seen, last)
    print(f"lease {LEASE} s, renewer killed: the client's UDP answers stopped {udp_close:.4f} s and its ARP "
          f"answers {arp_close:.4f} s after the last renewal")
    first = seen["sent"][0]
    before = [t for t in seen["sent"] if t < last + (LEASE - 0.02) * 1e9]
    assert set(before) <= set(seen["answered"]), "every probe is answered while the lease runs"
    assert LEASE - 0.015 < udp_close < LEASE + SLACK and LEASE - 0.015 < arp_close < LEASE + SLACK
    assert clean, "once the gate closed, nothing was answered any more"
    assert (seen["arp"][0] - first) / 1e9 < 0.05
    # The second guard: the address stays configured (1 s lifetime, renewed every 0.25 s
    # or so) until the kernel removes it; watched from a thread while the client asks.
    assert vip in node_addresses(lab), "the address outlives its gate lease"
    gone = []
    watcher = threading.Thread(target=lambda: gone.append(wait_for(
        lambda: vip not in node_addresses(lab) and time.monotonic_ns(), timeout=2.5, interval=0.01,
        what="the address to expire")))
    watcher.start()
    assert vip not in nft_set(lab, "inet", "lease4") and vip not in nft_set(lab, "arp", "lease")
    assert vip in nft_set(lab, "inet", "gated4") and vip in nft_set(lab, "arp", "gated")
    assert client.arp(vip, timeout=0.2) is None and not client.udp(vip, timeout=0.2)
    assert lab.run("client", ["ping", "-c", "1", "-W", "0.3", vip], check=False).returncode != 0
    watcher.join(3)
    assert gone, "the address did not expire"
    print(f"the address itself went {(gone[0] - last) / 1e9:.2f} s after the last renewal")
    assert (gone[0] - last) / 1e9 < 1.5
    node = Node(lab)
    node.ok("stop", args)
    assert vip not in nft_set(lab, "inet", "gated4") and vip not in nft_set(lab, "arp", "gated")


@lab_only
def test_close_time_after_the_last_renewal(lab, client):
    """The figure GATE_SLACK covers: from the start of the last renew() call to the last
    answer the client gets (UDP and ARP, probed every 2 ms), over several trials; and
    what one renew() costs (in the node, the time of the call)."""
    node = Node(lab)
    args = vip_args(lab, 101)
    vip = lab.vip(101)
    udp_closes, arp_closes, costs = [], [], []
    for _ in range(6):
        node.ok("start", args)
        client.send(fn="watch", args={"vip": vip, "own": client.own, "duration": 0.5 + LEASE + 0.1})
        answers = renew_for(node, args, 0.5)
        seen = client.receive()["value"]
        udp_close, arp_close, clean = close_time(seen, answers[-1]["started_ns"])
        assert clean
        udp_closes.append(udp_close)
        arp_closes.append(arp_close)
        costs += [(a["done_ns"] - a["started_ns"]) / 1e3 for a in answers]
    # The transaction alone, from another process of the node (its own netlink socket).
    node.ok("start", args)
    timed = json.loads(lab.run("node-a", [sys.executable, "-c", TIME_RENEWAL, REPO, args["address"]]).stdout)
    expires = nft_set(lab, "inet", "lease4")[vip]
    # Refreshed by those renewals (they went on for 1 s, longer than the lease); read by
    # nft some 10-50 ms after the last one (the timing process exits first).
    assert LEASE * 1000 - 150 < expires <= LEASE * 1000, f"nft list set: lease4 {vip} expires in {expires} ms"
    node.ok("stop", args)
    # renew() renews the address's 1 s lifetime too, every 0.25 s (an `ip` child process):
    # the gate-only calls are those well below a millisecond.
    gate_only = sorted(c for c in costs if c < 1000)
    slack_seen = max(udp_closes + arp_closes) - LEASE
    print(f"\nlease {LEASE} s, {len(udp_closes)} trials: traffic stopped after the last renewal in "
          f"median {statistics.median(udp_closes):.4f} s, max {max(udp_closes):.4f} s (UDP); ARP median "
          f"{statistics.median(arp_closes):.4f} s, max {max(arp_closes):.4f} s; worst slack used "
          f"{slack_seen * 1000:+.1f} ms of {SLACK * 1000:.0f}")
    print(f"renew() in the plugin host, every 0.1 s: median {statistics.median(gate_only):.0f} us (gate only), "
          f"{max(costs) / 1000:.1f} ms max (with the address's renewal)")
    cold, hot = timed["cold"], timed["hot"]
    print(f"the renewal transaction (netlink, in process): median {statistics.median(cold):.0f} us, max "
          f"{max(cold):.0f} us at 50 ms intervals; back to back median {statistics.median(hot):.0f} us, "
          f"p99 {hot[len(hot) * 99 // 100]:.0f} us")
    assert all(LEASE - 0.015 < c < LEASE + SLACK for c in udp_closes + arp_closes)


# -- renewals never re-open, stop and start, two VIPs -------------------------------------------

@lab_only
def test_a_renewal_after_the_gate_ran_out_fails_and_does_not_reopen_it(lab, node, client):
    vip = lab.vip(102)
    args = vip_args(lab, 102, lease=0.2, garp_count=5, garp_interval=0.15)
    with PacketCapture(lab, "client", ETH_P_ARP) as capture:
        started = node.call("start", args)
        assert started["ok"], started
        time.sleep(0.75)   # the lease runs out after 0.2 s; the announcements would go on to 0.6 s
        frames = capture.stop()
    announced = [f.t_ns for f in frames if f.incoming and f.data[28:32] == ipaddress.ip_address(vip).packed]
    assert len(announced) == 4 and max(announced) < started["done_ns"] + 0.2e9, \
        "two announcements (request and reply each, at 0 and 0.15 s), none once the gate lease ran out " \
        "(ARP leaves past nftables)"
    assert vip in node_addresses(lab), "the address outlives its gate lease (1 s lifetime)"
    announce = node.call("announce", args)
    assert not announce["ok"] and announce["error"] == f"not announcing {vip}/24: its gate lease ran out"
    answer = node.call("renew", args)
    assert not answer["ok"]
    assert answer["error"] == (f"cannot renew {vip}: its gate lease ran out ({vip} is no longer in the "
                               f"nftables set inet hado_gate lease4; a renewal never re-opens it); the "
                               f"address was removed")
    assert vip not in nft_set(lab, "inet", "lease4") and vip not in nft_set(lab, "arp", "lease"), \
        "the failed renewal re-opened nothing"
    assert vip not in node_addresses(lab), "an address whose gate lease ran out is dropped at once"
    assert node.ok("alive", args) is False, "an address behind a closed gate is not alive"
    assert client.arp(vip) is None and not client.udp(vip)
    node.ok("stop", args)
    assert vip not in node_addresses(lab)


@lab_only
def test_a_frozen_renewer_that_wakes_up_late_cannot_reopen_the_gate(lab, client):
    """SIGSTOP (a stuck VM, a debugger) with a renewal already asked for: the gate closes
    on time, and the renewal, made on waking, fails instead of re-opening it."""
    node = Node(lab)
    vip = lab.vip(109)
    args = vip_args(lab, 109)
    node.ok("start", args)
    renew_for(node, args, 0.2)
    os.killpg(node.proc.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        node.send(plugin="ipaddr", function="renew", args=args)   # read once it runs again
        time.sleep(LEASE + SLACK)
        assert client.arp(vip, timeout=0.1) is None and not client.udp(vip, timeout=0.1)
    finally:
        os.killpg(node.proc.pid, signal.SIGCONT)
    answer = node.receive()
    assert (answer["started_ns"] / 1e9 - frozen) > LEASE
    assert not answer["ok"] and "its gate lease ran out" in answer["error"], answer
    assert client.arp(vip, timeout=0.1) is None and not client.udp(vip, timeout=0.1)
    node.ok("stop", args)


@lab_only
def test_stop_removes_everything_start_works_again_and_two_vips_are_gated_apart(lab, node, client):
    a, b = vip_args(lab, 103), vip_args(lab, 104)
    vip_a, vip_b = lab.vip(103), lab.vip(104)
    node.ok("start", a)
    node.ok("start", b)
    renew_for(node, b, 0.6)   # only b: a runs out meanwhile
    assert node.ok("alive", b) is True and node.ok("alive", a) is False
    expires = nft_set(lab, "inet", "lease4")[vip_b]
    assert 0 < expires <= LEASE * 1000, f"lease4 {vip_b} expires in {expires} ms"
    assert vip_a not in nft_set(lab, "inet", "lease4")
    assert client.arp(vip_b) and client.udp(vip_b)
    node.ok("renew", b)
    assert client.arp(vip_a) is None and not client.udp(vip_a, timeout=0.1)
    node.ok("stop", b)
    assert vip_b not in node_addresses(lab)
    for family, name in (("inet", "lease4"), ("inet", "gated4"), ("arp", "lease"), ("arp", "gated")):
        assert vip_b not in nft_set(lab, family, name), f"{family} {name} still holds {vip_b}"
    node.ok("stop", b)   # stopped already: success
    node.ok("start", b)  # and again
    assert client.arp(vip_b) == lab.mac("node-a") and client.udp(vip_b)
    node.ok("stop", b)
    node.ok("stop", a)
    assert not {vip_a, vip_b} & node_addresses(lab)
    assert vip_a not in nft_set(lab, "inet", "gated4")


@lab_only
def test_a_lease_of_1_s_takes_the_address_out_of_a_gate_left_behind(lab, node, client):
    """A sub-second lease changed to 1 s while the address stayed gated (its stop failed,
    or hado was killed): the whole-second lease must not stay behind a closed gate."""
    vip = lab.vip(105)
    ensure_gate(lab)
    lab.run("node-a", ["nft", f"add element inet hado_gate gated4 {{ {vip} }}; "
                              f"add element arp hado_gate gated {{ {vip} }}"])
    args = vip_args(lab, 105, lease=1)
    node.ok("start", args)
    assert client.arp(vip) and client.udp(vip)
    assert vip not in nft_set(lab, "inet", "gated4") and vip not in nft_set(lab, "arp", "gated")
    node.ok("stop", args)


@lab_only
def test_an_established_tcp_connection_stalls_once_the_gate_closes(lab, node, client):
    """What a client's open connection sees: its data is neither acknowledged nor
    refused (the gate drops both ways, no RST), so it stalls and the client's kernel
    retransmits. The node's end stays ESTABLISHED too. If the gate opens again on the
    same node soon enough (a restart), the retransmission gets through and the
    connection goes on; after a failover the new holder answers it with a RST."""
    vip = lab.vip(106)
    args = vip_args(lab, 106)
    node.ok("start", args)
    assert client.do("tcp_open", vip=vip, name="c")
    assert client.do("tcp_echo", name="c", text="before") == "before"
    time.sleep(LEASE + SLACK)   # nobody renews: the gate closes
    assert client.do("tcp_echo", name="c", text="during", timeout=0.6) == ""
    states = lab.run("client", ["ss", "-tni", "dst", vip]).stdout
    print(f"the client's view of the stalled connection:\n{states}")
    assert "ESTAB" in states and "unacked:1" in states, states
    node.ok("start", args)   # the gate opens again: the next retransmission is answered
    assert client.do("tcp_read", name="c", size=len("during"), timeout=3.0) == "during"
    client.do("tcp_close", name="c")
    node.ok("stop", args)


# -- IPv6 -------------------------------------------------------------------------------------

@lab_only
def test_an_ipv6_vip_answers_solicitations_only_while_its_gate_lease_runs(lab, node, client):
    vip6 = lab.vip6(0x100)
    args = {"address": f"{vip6}/64", "interface": "eth0", "lease": LEASE, "garp_count": 1}
    node.ok("start", args)
    assert client.solicit(vip6) == lab.mac("node-a")
    assert client.udp(vip6)
    renew_for(node, args, 0.3)
    assert client.solicit(vip6) == lab.mac("node-a")
    time.sleep(LEASE + SLACK)
    # The advertisement is dropped by its source address (the node sends it from the VIP;
    # nft 1.0.6 cannot match its target field): the solicitation gets no answer at all.
    assert client.solicit(vip6) is None
    assert vip6 in node_addresses(lab) and vip6 not in nft_set(lab, "inet", "lease6")
    assert node.ok("alive", args) is False
    assert not node.call("renew", args)["ok"]
    assert not client.udp(vip6, timeout=0.2)
    assert lab.run("client", ["ping", "-6", "-c", "1", "-W", "0.3", vip6], check=False).returncode != 0
    node.ok("stop", args)
    assert vip6 not in node_addresses(lab) and vip6 not in nft_set(lab, "inet", "gated6")


# -- other() and a missing nft ---------------------------------------------------------------

@lab_only
def test_duplicate_detection_still_hears_answers_through_the_gate(lab, node):
    """other() probes from 0.0.0.0 (and ::); a holder's answers target 0.0.0.0 (ff02::1)
    and reach the packet socket before any nftables hook: even with the address gated
    here and its lease expired, another holder is found."""
    vip, vip6 = lab.vip(107), lab.vip6(0x101)
    lab.run("client", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
    lab.run("client", ["ip", "addr", "add", f"{vip6}/64", "dev", "eth0", "nodad"])
    try:
        ensure_gate(lab)
        lab.run("node-a", ["nft", f"add element inet hado_gate gated4 {{ {vip} }}; "
                                  f"add element arp hado_gate gated {{ {vip} }}; "
                                  f"add element inet hado_gate gated6 {{ {vip6} }}"])
        mac = lab.mac("client")
        assert node.ok("other", vip_args(lab, 107)) == f"{vip} is answered by {mac} on eth0"
        assert node.ok("other", {"address": f"{vip6}/64", "interface": "eth0", "lease": LEASE}) == \
            f"{vip6} is answered by {mac} on eth0"
    finally:
        lab.run("client", ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"], check=False)
        lab.run("client", ["ip", "addr", "del", f"{vip6}/64", "dev", "eth0"], check=False)
        node.ok("stop", vip_args(lab, 107))
        node.ok("stop", {"address": f"{vip6}/64", "interface": "eth0"})
    assert vip not in nft_set(lab, "inet", "gated4") and vip6 not in nft_set(lab, "inet", "gated6")


def path_without_nft(tmp_path):
    """A PATH directory with what ipaddr runs (ip, sh, grep), and no nft."""
    for tool in ("ip", "sh", "grep"):
        (tmp_path / tool).symlink_to(shutil.which(tool))
    return str(tmp_path)


@lab_only
def test_a_sub_second_start_without_nft_fails_naming_the_fix(lab, tmp_path):
    node = Node(lab, env={**os.environ, "PATH": path_without_nft(tmp_path)})
    args = vip_args(lab, 108, lease=0.2)
    answer = node.call("start", args)
    assert not answer["ok"]
    assert answer["error"] == ("lease 0.2 s is below 1 s and needs the nftables gate: nft is not installed "
                               "(apt-get install nftables), or use a lease of 1 s or more")
    assert lab.vip(108) not in node_addresses(lab), "no address without its gate"


def test_validate_accepts_sub_second_leases_with_nft_only(tmp_path, monkeypatch):
    plugin = Registry().get("ipaddr")

    def problems(lease):
        args = {"address": "10.0.0.50/24", "interface": "eth0", "lease": lease}
        return [p if isinstance(p, str) else p[1] for p in plugin.check_args("resource", args)]

    with_nft = tmp_path / "with"
    with_nft.mkdir()
    (with_nft / "nft").write_text("#!/bin/sh\n")
    (with_nft / "nft").chmod(0o755)
    monkeypatch.setenv("PATH", str(with_nft))
    for good in (0.2, 0.05, 0.999, 1, 1.5, 5, None):
        assert problems(good) == [], good
    assert problems(0.01) == ["lease 0.01 s is too short: a lease below 1 s must be at least 0.05 s"]
    for bad in (0, -1, 2 ** 31, "0.2", True, float("nan")):
        assert problems(bad) == [f"lease {bad!r} must be seconds > 0 (e.g. 1, or 0.2 with nftables), "
                                 f"or null for no lease"], bad
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert problems(0.2) == ["lease 0.2 s is below 1 s and needs the nftables gate: nft is not installed "
                             "(apt-get install nftables), or use a lease of 1 s or more"]
    assert problems(1) == []


def test_lease_and_slack_tell_the_engine_the_truth():
    module = Registry().get("ipaddr").module
    assert (module.lease(lease=0.2), module.lease_slack(lease=0.2)) == (0.2, 0.05)
    assert (module.lease(lease=1), module.lease_slack(lease=1)) == (1, 0.35)
    assert module.lease(lease=1.5) == 2, "a lifetime is whole seconds: 1.5 lives 2 s"
    assert module.lease(lease=0.2995) == 0.299, "milliseconds, rounded down"
    assert (module.lease(lease=None), module.lease_slack(lease=None)) == (None, None)
    assert module.lease() == 1 and module.lease_slack() == 0.35
