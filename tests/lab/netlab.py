"""A network lab in Linux network namespaces: nodes on a bridge, a client, faults.

    with Lab(3) as lab:                      # node-a, node-b, node-c and "client"
        lab.run("node-a", ["ping", "-c1", lab.addr("node-b")])
        lab.serve_name("node-b", 8080)       # answers "node-b" on every address
        lab.cut("node-a")                    # silent cut: its link stays up
        lab.loss("node-b", 20)               # 20 % of its packets lost, each way
        lab.partition(["node-a"], ["node-b", "node-c"])
        lab.heal()

Layout. A bridge ``br0`` lives in its own namespace ``PREFIX-bridge``; every member
(each node and the client) has its own namespace ``PREFIX-<member>`` with an ``eth0``
whose veth peer ``p-<member>`` is a port of the bridge. Addresses come from a private
subnet ``10.200.X.0/24`` (X picked per run) and ``fd00:200:X::/64`` that exist only
inside these namespaces: node-a is .1, node-b .2, ..., the client .200; VIPs are free
from .100 (:func:`Lab.vip`). The prefix is unique per run (``hlab-<pid>-<random>``).

Faults are made where a real network makes them, on the bridge, so the nodes see
what they would see on a real LAN:

- ``cut(node)``: the port leaves the bridge (``nomaster``); the node's link stays up
  and it notices nothing (a silent cut). ``cut(node, "down")`` sets the port down: the
  node sees NO-CARRIER.
- ``loss`` and ``partition`` are nftables rules in the bridge namespace (family
  ``bridge``, hook ``forward``), matched on the ports: ``numgen random`` drops for loss
  (every frame, ARP included), port pairs for partitions (IP traffic, whatever its
  source address, a VIP's included; ARP and neighbour discovery pass so that a one-way
  partition lets the other direction through). A sender gets no EPERM (as it would
  with rules on a node's own output hook): a lost packet is silently lost. This kernel
  has no netem.

Everything is removed by ``teardown()`` (idempotent): on leaving the ``with`` block, at
interpreter exit (atexit), on SIGTERM/SIGHUP, and after a failed build. Processes
started with ``popen`` are killed first, then anything else still inside the lab's
namespaces, then the namespaces (which takes their veths and rules with them). A lab
left behind by a ``kill -9`` is removed by ``python3 tests/lab/netlab.py reap``.

Measuring a failover: :class:`VipProbe` asks ``http://VIP:port/`` from the client every
20 ms and records who answered; :class:`HolderSampler` records every 20 ms which node
namespaces hold the VIP (``gate=True``: only while ipaddr's nftables lease gate is open
too); :class:`ArpProbe` asks who-has VIP from the client every 20 ms and records every
MAC that answers, as the LAN sees it. :func:`dual_holding`, :func:`arp_dual_holding`,
:func:`client_outage`, :func:`longest_gap` and :func:`answers_by_node` analyse what they
recorded; a recorder's ``follow()`` reads it incrementally in long runs.
:class:`PacketCapture` records the frames of one ethertype arriving at a member.
:class:`HttpClient` sends HTTP requests from inside a member (hado's admin requests).

This file is also a small script (``serve``, ``probe``, ``holders``, ``capture``,
``arpprobe``, ``reap``) that the lab runs inside its namespaces; it uses the standard
library only.
"""

import atexit
import collections
import ctypes
import ipaddress
import json
import os
import random
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

PREFIX_RE = re.compile(r"^hlab-(\d+)-[0-9a-f]+-")
BRIDGE = "br0"
RULES_TABLE = "hadolab"
CLIENT = "client"
CLIENT_HOST = 200  # the client's last address byte
ETH_P_ARP = 0x0806

# Labs not yet torn down, for atexit and the signal handlers. Only Lab.__init__ and
# Lab.teardown change it, under _LIVE_LOCK (reentrant: a signal handler may run while
# the main thread holds it).
_LIVE = set()
_LIVE_LOCK = threading.RLock()
_HOOKS_INSTALLED = []


def skip_reason():
    """Why lab tests cannot run here (a sentence for pytest.skip), or None."""
    if sys.platform != "linux":
        return "the network lab needs Linux"
    if os.geteuid() != 0:
        return "the network lab needs root (network namespaces, veth, bridge, nftables)"
    if not shutil.which("ip"):
        return "the network lab needs iproute2's ip command"
    if not shutil.which("nft"):
        return "the network lab needs nftables (apt-get install nftables)"
    probe = f"hlab-{os.getpid()}-{secrets.token_hex(3)}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def node_names(n_nodes):
    """["node-a", "node-b", ...] for n_nodes nodes."""
    if not 1 <= n_nodes <= 26:
        raise ValueError(f"a lab has 1 to 26 nodes, not {n_nodes}")
    return [f"node-{chr(ord('a') + i)}" for i in range(n_nodes)]


class LabError(Exception):
    """A lab command failed; the message has the command and its error output."""


def _ip(*argv, check=True, input=None):
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, input=input, timeout=30)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


class Lab:
    """N nodes and a client in network namespaces on one bridge (see the module doc)."""

    def __init__(self, n_nodes, prefix=None):
        self.prefix = prefix or f"hlab-{os.getpid()}-{secrets.token_hex(3)}"
        self.nodes = node_names(n_nodes)
        self.client = CLIENT
        self.members = self.nodes + [CLIENT]
        self.net_index = random.randrange(256)
        self.subnet = ipaddress.ip_network(f"10.200.{self.net_index}.0/24")
        self.subnet6 = ipaddress.ip_network(f"fd00:200:{self.net_index:x}::/64")
        self.prefixlen = 24
        self.prefixlen6 = 64
        self._namespaces = []   # created so far, in creation order (teardown reverses)
        self._procs = []        # Popen objects started by popen(), killed at teardown
        self._files = []        # recorders' temporary files, deleted at teardown
        self._loss = {}         # member -> percent
        self._partitions = []   # (frozenset a, frozenset b, oneway)
        self._torn_down = False
        with _LIVE_LOCK:
            _LIVE.add(self)
        _install_hooks()
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise

    # -- building ------------------------------------------------------------------

    def _build(self):
        bridge_ns = self._add_namespace("bridge")
        _ip("-n", bridge_ns, "link", "add", BRIDGE, "type", "bridge",
            "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
        _ip("-n", bridge_ns, "link", "set", BRIDGE, "up")
        for member in self.members:
            ns = self._add_namespace(member)
            port = self.port(member)
            _ip("-n", bridge_ns, "link", "add", port, "type", "veth",
                "peer", "name", "eth0", "netns", ns)
            _ip("-n", bridge_ns, "link", "set", port, "master", BRIDGE, "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(member)}/{self.prefixlen}", "dev", "eth0")
            _ip("-n", ns, "addr", "add", f"{self.addr6(member)}/{self.prefixlen6}", "dev", "eth0", "nodad")
            _ip("-n", ns, "link", "set", "eth0", "up")
        self._apply_rules()

    def _add_namespace(self, member):
        ns = f"{self.prefix}-{member}"
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns

    # -- names and addresses ---------------------------------------------------------

    def _check(self, member):
        if member not in self.members and member != "bridge":
            raise ValueError(f"no lab member {member!r} (members: {', '.join(self.members)})")
        return member

    def ns(self, member):
        """The namespace name of a member ("node-a", "client" or "bridge")."""
        return f"{self.prefix}-{self._check(member)}"

    def port(self, member):
        """The member's bridge port (in the bridge namespace)."""
        return f"p-{self._check(member)}"

    def _host(self, member):
        self._check(member)
        return CLIENT_HOST if member == CLIENT else self.nodes.index(member) + 1

    def addr(self, member):
        """The member's IPv4 address on eth0, e.g. "10.200.7.1"."""
        return str(self.subnet.network_address + self._host(member))

    def addr6(self, member):
        """The member's IPv6 address on eth0, e.g. "fd00:200:7::1"."""
        return str(self.subnet6.network_address + self._host(member))

    def vip(self, n=100):
        """A free IPv4 address of the lab subnet (n = 100..199)."""
        return str(self.subnet.network_address + n)

    def vip6(self, n=0x100):
        """A free IPv6 address of the lab subnet."""
        return str(self.subnet6.network_address + n)

    def mac(self, member):
        """The MAC address of the member's eth0."""
        link = json.loads(_ip("-n", self.ns(member), "-j", "link", "show", "dev", "eth0").stdout)
        return link[0]["address"]

    # -- running things inside ---------------------------------------------------------

    def run(self, member, argv, timeout=30, check=True, **kwargs):
        """Run argv inside the member's namespace; CompletedProcess with text output."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        proc = subprocess.run(["ip", "netns", "exec", self.ns(member), *map(str, argv)],
                              timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            raise LabError(f"{member}: {' '.join(map(str, argv))}: exit code {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout or '').strip()[-500:]}")
        return proc

    def popen(self, member, argv, **kwargs):
        """Start argv inside the member's namespace; killed at teardown."""
        return self._popen(["ip", "netns", "exec", self.ns(member), *map(str, argv)], **kwargs)

    def _popen(self, argv, **kwargs):
        if self._torn_down:
            raise LabError("the lab is torn down")
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def serve_name(self, member, port=8080):
        """An HTTP server in the member's namespace answering its name, on every address.

        Returns the Popen once the server listens (it binds "::", dual-stack, so it
        answers on any VIP the node takes, IPv4 or IPv6).
        """
        proc = self.popen(member, [sys.executable, __file__, "serve", member, str(port)],
                          stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        if not line.startswith("listening"):
            raise LabError(f"{member}: name server on port {port} did not start (exit {proc.poll()})")
        return proc

    # -- faults ------------------------------------------------------------------------

    def cut(self, member, mode="silent"):
        """Cut the member off the bridge: "silent" (nomaster, its link stays up) or "down"."""
        bridge_ns = self.ns("bridge")
        if mode == "silent":
            _ip("-n", bridge_ns, "link", "set", self.port(member), "nomaster")
        elif mode == "down":
            _ip("-n", bridge_ns, "link", "set", self.port(member), "down")
        else:
            raise ValueError(f"cut mode must be 'silent' or 'down', not {mode!r}")

    def restore(self, member):
        """Undo cut(): the port is back on the bridge and up."""
        bridge_ns = self.ns("bridge")
        _ip("-n", bridge_ns, "link", "set", self.port(member), "master", BRIDGE)
        _ip("-n", bridge_ns, "link", "set", self.port(member), "up")

    def loss(self, member, percent):
        """Drop ``percent`` % of the packets the member sends and of those sent to it."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss must be 0..100 %, not {percent}")
        self._check(member)
        self._loss[member] = percent
        self._apply_rules()

    def clear_loss(self, member=None):
        """Stop dropping packets of one member (or of all)."""
        if member is None:
            self._loss.clear()
        else:
            self._loss.pop(self._check(member), None)
        self._apply_rules()

    def partition(self, group_a, group_b, oneway=False):
        """Drop traffic between two groups of members; oneway: only from a to b.

        Partitions add up until heal(). A member may be given as a string or a list.
        """
        group_a = frozenset([group_a] if isinstance(group_a, str) else group_a)
        group_b = frozenset([group_b] if isinstance(group_b, str) else group_b)
        for member in group_a | group_b:
            self._check(member)
        if group_a & group_b:
            raise ValueError(f"a member cannot be on both sides: {sorted(group_a & group_b)}")
        self._partitions.append((group_a, group_b, oneway))
        self._apply_rules()

    def heal(self):
        """Remove every partition and every loss rule (cuts stay: see restore())."""
        self._partitions.clear()
        self._loss.clear()
        self._apply_rules()

    def rules(self):
        """The nftables rules now in force, as text (for test failure messages)."""
        return subprocess.run(["ip", "netns", "exec", self.ns("bridge"), "nft", "list", "table",
                               "bridge", RULES_TABLE], capture_output=True, text=True).stdout

    def _apply_rules(self):
        """Replace the bridge's rule table atomically with what self._loss/_partitions say."""
        def ports(group):
            return "{ " + ", ".join(f'"{self.port(m)}"' for m in sorted(group)) + " }"

        rules = []
        for member, percent in sorted(self._loss.items()):
            if percent > 0:
                bound = round(percent * 100)  # in 1/10000
                port = f'"{self.port(member)}"'
                rules.append(f"iifname {port} numgen random mod 10000 < {bound} drop")
                rules.append(f"oifname {port} numgen random mod 10000 < {bound} drop")
        if self._partitions:
            # Partitions cut IP traffic; address resolution still passes, so that a
            # one-way partition lets the other direction through (at L2, ARP and ND
            # need both directions).
            rules.append("ether type arp accept")
            rules.append("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept")
        for group_a, group_b, oneway in self._partitions:
            rules.append(f"iifname {ports(group_a)} oifname {ports(group_b)} drop")
            if not oneway:
                rules.append(f"iifname {ports(group_b)} oifname {ports(group_a)} drop")
        script = "\n".join([
            f"add table bridge {RULES_TABLE}",
            f"delete table bridge {RULES_TABLE}",
            f"table bridge {RULES_TABLE} {{",
            "  chain forward {",
            "    type filter hook forward priority 0; policy accept;",
            *(f"    {rule}" for rule in rules),
            "  }",
            "}",
        ]) + "\n"
        proc = subprocess.run(["ip", "netns", "exec", self.ns("bridge"), "nft", "-f", "-"],
                              input=script, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise LabError(f"nft -f failed: {proc.stderr.strip()}\n{script}")

    # -- teardown ----------------------------------------------------------------------

    def teardown(self):
        """Kill the lab's processes and delete its namespaces. Safe to call again."""
        self._torn_down = True
        procs, self._procs = self._procs, []
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                try:
                    proc.wait(2)
                except subprocess.TimeoutExpired:
                    pass
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        namespaces, self._namespaces = self._namespaces, []
        for ns in reversed(namespaces):
            _delete_namespace(ns)
        files, self._files = self._files, []
        for path in files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.teardown()
        return False

    def __repr__(self):
        return f"<Lab {self.prefix} {self.subnet} {', '.join(self.members)}>"


class Reader:
    """A process in a node's namespace that answers JSON requests, one line each: the
    test's ``script`` (argv after it: ``args``) reads ``{"id", "op", "timeout", ...}``
    lines on stdin and prints ``{"id", "value"}`` or ``{"id", "error"}``. Requests carry
    an id; an answer that comes after its request timed out is skipped."""

    def __init__(self, lab, node, script, args=()):
        self.node = node
        self.proc = lab.popen(node, [sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
        self.next_id = 0

    def send(self, op, timeout, **fields):
        self.next_id += 1
        self.proc.stdin.write(json.dumps({"id": self.next_id, "op": op, "timeout": timeout, **fields}) + "\n")
        self.proc.stdin.flush()
        return self.next_id

    def receive(self, request_id, deadline):
        """The value answered to request_id, or None (error, timeout, dead reader)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            line = self.proc.stdout.readline()
            if not line:
                return None
            answer = json.loads(line)
            if answer["id"] == request_id:
                return answer.get("value")


def ask(readers, op, timeout=1.0):
    """{node: value or None} from several readers at once."""
    ids = {node: reader.send(op, timeout) for node, reader in readers.items()}
    deadline = time.monotonic() + timeout + 1.0
    return {node: readers[node].receive(ids[node], deadline) for node in readers}


HTTP_SCRIPT = """
import json, sys, urllib.error, urllib.request
for line in sys.stdin:
    request = json.loads(line)
    answer = {"id": request["id"]}
    try:
        data = None if request.get("body") is None else json.dumps(request["body"]).encode()
        req = urllib.request.Request(request["url"], data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
        if request.get("token"):
            req.add_header("Authorization", "Bearer " + request["token"])
        try:
            with urllib.request.urlopen(req, timeout=request["timeout"]) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        try:
            doc = json.loads(body)
        except ValueError:
            doc = body.decode(errors="replace")
        answer["value"] = [status, doc]
    except Exception as exc:
        answer["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(answer), flush=True)
"""


class HttpClient(Reader):
    """A process in a member's namespace that sends HTTP requests for the caller: a GET,
    or a POST of a JSON body with an optional bearer token (hado's admin requests, which
    a daemon takes only from its own host). Started once, so that a request goes out at
    once (no interpreter start-up in a timed fault)."""

    def __init__(self, lab, member):
        super().__init__(lab, member, HTTP_SCRIPT)

    def request(self, url, body=None, token=None, timeout=5.0):
        """(status, JSON document or text), or None (no connection, timeout, dead client)."""
        request_id = self.send("http", timeout, url=url, body=body, token=token)
        value = self.receive(request_id, time.monotonic() + timeout + 1.0)
        return tuple(value) if value else None


def _signal_group(proc, signum):
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _delete_namespace(ns):
    """Kill whatever still runs inside ns, then delete it (its veths and rules go too)."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def lab_namespaces(prefix="hlab-"):
    """Names of the namespaces that start with prefix (all labs' by default)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def reap_stale():
    """Delete namespaces left by labs whose process is gone (after a kill -9)."""
    reaped = []
    for ns in lab_namespaces():
        match = PREFIX_RE.match(ns)
        if match and not _running(int(match.group(1))):
            _delete_namespace(ns)
            reaped.append(ns)
    return reaped


def _running(pid):
    """Whether pid is a live process (a zombie is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def _teardown_all():
    with _LIVE_LOCK:
        labs = list(_LIVE)
    for lab in labs:
        lab.teardown()


def _on_signal(signum, frame):
    _teardown_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_hooks():
    """atexit and SIGTERM/SIGHUP teardown, once (Ctrl-C unwinds through __exit__)."""
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED.append(True)
    atexit.register(_teardown_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _on_signal)


# -- measuring a failover -----------------------------------------------------------------

Answer = collections.namedtuple("Answer", "sent_ns done_ns answer")  # answer: name or None
Sample = collections.namedtuple("Sample", "t_ns holders")            # holders: frozenset


class _Recorder:
    """A background process writing lines to a temporary file; a context manager.

    stop() ends the process and returns its records; the file goes with the lab.
    """

    def __init__(self, lab):
        self.lab = lab
        fd, self.path = tempfile.mkstemp(prefix=f"{lab.prefix}-", suffix=".log")
        os.close(fd)
        lab._files.append(self.path)
        self.proc = None

    def _spawn(self):
        raise NotImplementedError

    def start(self):
        self.proc = self._spawn()
        return self

    def stop(self):
        """Stop recording (SIGTERM, the script finishes its lines) and return the records."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.records()

    def lines(self):
        with open(self.path) as file:
            return [line.rstrip("\n").split(maxsplit=2) for line in file if line.endswith("\n")]

    def parse(self, fields):
        """One line (its fields, as lines() splits them) as a record; None: not a record."""
        return fields

    def follow(self):
        """A :class:`Follow` of this recorder: what was written since its last read."""
        return Follow(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


class Follow:
    """Reads a recorder's file incrementally: ``new()`` returns the records of the
    lines written since the previous call (in file order), ``all`` every record read so
    far. For runs of many minutes, where re-reading the whole file at every poll (as
    ``records()`` does) would cost more CPU than the daemons being measured."""

    def __init__(self, recorder):
        self.recorder, self.offset, self.all = recorder, 0, []

    def new(self):
        with open(self.recorder.path, "rb") as file:
            file.seek(self.offset)
            data = file.read()
        end = data.rfind(b"\n") + 1   # complete lines only: a line being written waits
        self.offset += end
        found = [self.recorder.parse(line.split(maxsplit=2))
                 for line in data[:end].decode(errors="replace").splitlines() if line]
        found = [record for record in found if record is not None]
        self.all.extend(found)
        return found


class VipProbe(_Recorder):
    """From the client namespace, GET http://address:port/ every ``interval`` s.

    Each request runs on its own thread (at most 64 at a time) so a request that hangs
    does not delay the next ones; each records (sent, done, answer) where answer is the
    body (the node name from Lab.serve_name) or None for an error or a timeout.
    """

    def __init__(self, lab, address, port=8080, interval=0.02, timeout=0.3):
        super().__init__(lab)
        host = f"[{address}]" if ":" in str(address) else str(address)
        self.url = f"http://{host}:{port}/"
        self.interval, self.timeout = interval, timeout

    def _spawn(self):
        return self.lab.popen(self.lab.client, [sys.executable, __file__, "probe", self.url,
                                                self.path, self.interval, self.timeout])

    def parse(self, fields):
        sent, done, answer = fields
        return Answer(int(sent), int(done), None if answer == "-" else answer)

    def records(self):
        """Answers sorted by the time they were sent."""
        return sorted(self.parse(fields) for fields in self.lines())


class HolderSampler(_Recorder):
    """Every ``interval`` s, which node namespaces hold ``address`` (one process).

    The sampler runs outside the lab: it enters each node's namespace once (setns) to
    open a netlink socket there, then each sample is one RTM_GETADDR dump per node
    (tens of microseconds), all stamped with one monotonic time: no subprocess per
    sample, so it keeps up with 20 ms easily.

    ``gate=True``: a node holds the address only while the address is there AND its
    lease gate (plugins/ipaddr.py's nftables gate for leases below 1 s) lets traffic
    through: the address is not in the gate's ``gated`` sets, or its lease element is
    in the ``lease`` set (either of ``inet`` and ``arp``: one open path is holding).
    With the gate, a killed hado's address stays configured for up to 1.3 s while its
    gate closes after the lease; only the open gate answers clients. One more netlink
    request per holding node and sample (one NETLINK_NETFILTER socket per namespace).
    ``records()`` are then the gated holders, ``addresses()`` who had the address.
    """

    def __init__(self, lab, address, nodes=None, interval=0.02, gate=False):
        super().__init__(lab)
        self.address = str(ipaddress.ip_interface(address).ip)
        self.nodes = list(nodes or lab.nodes)
        self.interval, self.gate = interval, gate

    def _spawn(self):
        targets = [f"{node}=/run/netns/{self.lab.ns(node)}" for node in self.nodes]
        return self.lab._popen([sys.executable, __file__, "holders", self.path,
                                str(self.interval), self.address, *(["gate"] if self.gate else []), *targets])

    def parse(self, fields):
        t, holders = fields[:2]
        return Sample(int(t), frozenset() if holders == "-" else frozenset(holders.split(",")))

    def records(self):
        return [self.parse(fields) for fields in self.lines()]

    def addresses(self):
        """Samples of the nodes that had the address, gate or not (= records() without gate)."""
        return [self.parse([fields[0], fields[-1]]) for fields in self.lines()]


Frame = collections.namedtuple("Frame", "t_ns incoming data")  # data: bytes from the MAC header


class PacketCapture(_Recorder):
    """Frames of one ethertype (0x0806 ARP, 0x86dd IPv6, 0x0003 all) arriving at a member's eth0.

    Like tcpdump, from an AF_PACKET socket in the member's namespace; records
    (monotonic time, incoming?, frame). ``start()`` returns once the socket is open.
    """

    def __init__(self, lab, member, ethertype):
        super().__init__(lab)
        self.member, self.ethertype = member, ethertype

    def _spawn(self):
        proc = self.lab.popen(self.member, [sys.executable, __file__, "capture", str(self.ethertype),
                                            self.path], stdout=subprocess.PIPE, text=True)
        if not proc.stdout.readline().startswith("capturing"):
            raise LabError(f"{self.member}: packet capture did not start (exit {proc.poll()})")
        return proc

    def parse(self, fields):
        t, incoming, data = fields
        return Frame(int(t), incoming == "in", bytes.fromhex(data))

    def records(self):
        return [self.parse(fields) for fields in self.lines()]


# An ARP frame for the VIP: arrival (monotonic ns), the sender MAC ("aa:bb:..."), kind
# ("reply": an answer to the prober, "reply-other": to someone else, "announce": a
# gratuitous request or reply, sender address = target address, "request": the holder
# asking for someone, from the VIP), and the send time of the prober's latest who-has
# before it (the window it falls in; 0: none yet).
ArpReply = collections.namedtuple("ArpReply", "t_ns mac kind window_ns")


class ArpProbe(_Recorder):
    """From a member's namespace (the client by default), every ``interval`` s an ARP
    who-has for ``address`` on eth0, sent from the member's own address and MAC (an
    AF_PACKET socket); records every ARP frame whose sender address is ``address``
    (:class:`ArpReply`), and the send time of each who-has (:meth:`probes`).

    It sees what the LAN sees: which MACs answer for the VIP, whatever the namespaces'
    address lists say (a node whose address is still configured but whose lease gate is
    closed does not answer). Times are ``time.monotonic_ns()``, the clock of every
    namespace (one kernel), so they compare with VipProbe's and HolderSampler's.
    ``start()`` returns once the socket is open. The process ends on SIGTERM, when its
    parent (this process) dies, and after ``max_seconds`` in any case.
    """

    def __init__(self, lab, address, member=None, interval=0.02, max_seconds=6 * 3600):
        super().__init__(lab)
        self.address = str(ipaddress.IPv4Address(str(ipaddress.ip_interface(address).ip)))
        self.member = member or lab.client
        self.interval, self.max_seconds = interval, max_seconds

    def _spawn(self):
        proc = self.lab.popen(self.member, [sys.executable, __file__, "arpprobe", self.path, self.address,
                                            self.lab.addr(self.member), self.interval, os.getpid(),
                                            self.max_seconds], stdout=subprocess.PIPE, text=True)
        ready = select.select([proc.stdout], [], [], 10)[0]
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("probing"):
            _signal_group(proc, signal.SIGKILL)
            raise LabError(f"{self.member}: ARP probe for {self.address} did not start (exit {proc.poll()})")
        return proc

    def parse(self, fields):
        if len(fields) != 3 or fields[1] == "who-has":
            return None
        mac, _, window = fields[2].partition(" ")
        return ArpReply(int(fields[0]), mac, fields[1], int(window or 0))

    def records(self):
        """The ARP frames for the address, in arrival order."""
        return [record for record in map(self.parse, self.lines()) if record is not None]

    def probes(self):
        """Send times (ns) of the who-has requests."""
        return [int(fields[0]) for fields in self.lines() if len(fields) >= 2 and fields[1] == "who-has"]


def sample_rate(samples):
    """Samples per second actually achieved."""
    if len(samples) < 2:
        return 0.0
    return (len(samples) - 1) / ((samples[-1].t_ns - samples[0].t_ns) / 1e9)


def dual_holding(samples):
    """(number of samples with more than one holder, seconds they cover).

    A sample with several holders counts until the next sample.
    """
    count, seconds = 0, 0.0
    for here, after in zip(samples, samples[1:] + samples[-1:]):
        if len(here.holders) > 1:
            count += 1
            seconds += (after.t_ns - here.t_ns) / 1e9
    return count, seconds


def holder_changes(samples):
    """[(t_ns, holders)] at each change of the holder set, the first sample included."""
    changes = []
    for sample in samples:
        if not changes or changes[-1][1] != sample.holders:
            changes.append((sample.t_ns, sample.holders))
    return changes


def answers_by_node(answers):
    """Counter: answer (node name, or None for failures) -> number of requests."""
    return collections.Counter(a.answer for a in answers)


def client_outage(answers, old, new):
    """Seconds from the last answer by ``old`` to the first answer by ``new`` (sent times).

    Only ``old``'s answers before ``new``'s first count. None if either never answered.
    """
    first_new = next((a.sent_ns for a in answers if a.answer == new), None)
    if first_new is None:
        return None
    last_old = max((a.sent_ns for a in answers if a.answer == old and a.sent_ns < first_new),
                   default=None)
    if last_old is None:
        return None
    return (first_new - last_old) / 1e9


def longest_gap(answers):
    """Seconds of the longest stretch without any answer (between answered requests)."""
    times = [a.sent_ns for a in answers if a.answer is not None]
    return max(((b - a) / 1e9 for a, b in zip(times, times[1:])), default=0.0)


def arp_dual_holding(records, window_ns=20_000_000, kinds=None):
    """(seconds, windows) during which two different MACs answered for the VIP in the
    same probe window (:class:`ArpProbe` records; ``kinds``: only these kinds count).

    A window is the time from one who-has to the next (records without a window: fixed
    ``window_ns`` slots); each window with more than one MAC counts ``window_ns``.
    ``windows``: [(start_ns, end_ns, frozenset of MACs)], in order."""
    slots = collections.defaultdict(set)
    for record in records:
        if kinds is None or record.kind in kinds:
            start = record.window_ns or record.t_ns - record.t_ns % window_ns
            slots[start].add(record.mac)
    windows = [(start, start + window_ns, frozenset(macs)) for start, macs in sorted(slots.items())
               if len(macs) > 1]
    return len(windows) * window_ns / 1e9, windows


def arp_macs(records, after_ns=0, before_ns=None):
    """Counter: MAC -> ARP frames for the VIP from it, arrived in [after_ns, before_ns)."""
    return collections.Counter(r.mac for r in records
                               if r.t_ns >= after_ns and (before_ns is None or r.t_ns < before_ns))


# -- the scripts the lab runs --------------------------------------------------------------

def _serve_main(name, port):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"{name}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6
        daemon_threads = True

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

        def handle_error(self, request, client_address):
            # A client that gave up (a probe's timeout during a failover) is no error.
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                super().handle_error(request, client_address)

    server = Server(("::", int(port)), Handler)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("listening", flush=True)
    server.serve_forever()


def _probe_main(url, out_path, interval, timeout):
    import http.client
    import urllib.parse

    interval, timeout = float(interval), float(timeout)
    parts = urllib.parse.urlsplit(url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    slots = threading.BoundedSemaphore(64)
    write_lock = threading.Lock()  # guards out
    out = open(out_path, "a", buffering=1)

    def one(sent):
        answer = None
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request("GET", parts.path or "/")
            response = conn.getresponse()
            body = response.read().decode(errors="replace").strip()
            answer = (body or "(empty)") if response.status == 200 else f"HTTP-{response.status}"
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
            slots.release()
        with write_lock:
            out.write(f"{sent} {time.monotonic_ns()} {(answer or '-').split()[0]}\n")

    next_time = time.monotonic()
    while not stop.is_set():
        if slots.acquire(blocking=False):
            threading.Thread(target=one, args=(time.monotonic_ns(),), daemon=True).start()
        next_time += interval
        stop.wait(max(0.0, next_time - time.monotonic()))
    deadline = time.monotonic() + timeout + 1
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    with write_lock:
        out.close()


ARP_WHO_HAS, ARP_IS_AT = 1, 2


def _arpprobe_main(out_path, address, own_ip, interval, parent_pid, max_seconds):
    """Who-has ``address`` from ``own_ip`` every ``interval`` s; record the answers (ArpProbe)."""
    interval, parent_pid = float(interval), int(parent_pid)
    end = time.monotonic() + float(max_seconds)
    target, me = ipaddress.IPv4Address(address).packed, ipaddress.IPv4Address(own_ip).packed
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Protocol 0, then bind with the ethertype (as plugins/ipaddr.py does: no RCU wait).
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind(("eth0", ETH_P_ARP))
    mac = sock.getsockname()[4]
    request = (b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
               + struct.pack("!HHBBH", 1, 0x0800, 6, 4, ARP_WHO_HAS) + mac + me + b"\0" * 6 + target).ljust(60, b"\0")
    with sock, open(out_path, "a", buffering=1) as out:
        print("probing", flush=True)
        seq, window, next_time = 0, 0, time.monotonic()
        while not stop.is_set() and os.getppid() == parent_pid and time.monotonic() < end:
            now = time.monotonic()
            if now >= next_time:
                seq += 1
                window = time.monotonic_ns()
                try:
                    sock.send(request)
                    out.write(f"{window} who-has {seq}\n")
                except OSError:
                    pass   # a lost probe is a gap in the records, not an end
                next_time += interval
                if next_time < now:   # fell behind: no burst to catch up
                    next_time = now + interval
                continue
            if not select.select([sock], [], [], min(0.1, next_time - now))[0]:
                continue
            try:
                frame, where = sock.recvfrom(2048)
            except OSError:
                continue
            arrived = time.monotonic_ns()
            if where[2] == socket.PACKET_OUTGOING or len(frame) < 42:
                continue
            _, ptype, hlen, plen, operation = struct.unpack_from("!HHBBH", frame, 14)
            if ptype != 0x0800 or hlen != 6 or plen != 4 or frame[28:32] != target:
                continue
            if frame[38:42] == target:
                kind = "announce"
            elif operation == ARP_IS_AT:
                kind = "reply" if frame[38:42] == me else "reply-other"
            else:
                kind = "request"
            out.write(f"{arrived} {kind} {frame[22:28].hex(':')} {window}\n")


def _capture_main(ethertype, out_path):
    ethertype = int(ethertype, 0)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype)) as sock, \
            open(out_path, "a", buffering=1) as out:
        sock.bind(("eth0", 0))
        sock.settimeout(0.1)
        print("capturing", flush=True)
        while not stop.is_set():
            try:
                data, address = sock.recvfrom(65536)
            except socket.timeout:
                continue
            direction = "out" if address[2] == socket.PACKET_OUTGOING else "in"
            out.write(f"{time.monotonic_ns()} {direction} {data.hex()}\n")


CLONE_NEWNET = 0x40000000
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2


def _netlink_socket_in(path, protocol=socket.NETLINK_ROUTE):
    """A netlink socket (NETLINK_ROUTE by default) that belongs to the network namespace at path."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
            sock.bind((0, 0))
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)
    return sock


def _has_address(sock, family, packed, seq):
    """Whether the namespace of the netlink socket has the address (one RTM_GETADDR dump)."""
    request = struct.pack("=IHHII", 24, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    sock.send(request + struct.pack("=BBBBI", family, 0, 0, 0, 0))
    found = False
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, msg_type, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
            if length < 16:
                return found
            if msg_type == NLMSG_DONE:
                return found
            if msg_type == NLMSG_ERROR:
                raise OSError("netlink dump failed")
            if msg_type == RTM_NEWADDR:
                attr = offset + 24
                while attr + 4 <= offset + length:
                    attr_len, attr_type = struct.unpack_from("=HH", data, attr)
                    if attr_len < 4:
                        break
                    if attr_type in (IFA_ADDRESS, IFA_LOCAL) and data[attr + 4:attr + attr_len] == packed:
                        found = True
                    attr += (attr_len + 3) & ~3
            offset += (length + 3) & ~3


# plugins/ipaddr.py's gate (leases below 1 s): per family, the set that gates the address
# and the set of its lease element (which times out by itself).
GATE_TABLE = "hado_gate"
NFPROTO_INET, NFPROTO_ARP = 1, 3
GATE_SETS = {4: [(NFPROTO_INET, "gated4", "lease4"), (NFPROTO_ARP, "gated", "lease")],
             6: [(NFPROTO_INET, "gated6", "lease6")]}
NETLINK_NETFILTER = 12
NFT_GETSETELEM = (10 << 8) | 13   # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETSETELEM
NLM_F_ACK = 0x4


def _nl_attr(kind, payload):
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _gate_queries(version, packed):
    """[(nfproto family, set name, GETSETELEM attributes)] for the address in every gate set."""
    element = _nl_attr(1 | 0x8000, _nl_attr(1, packed))   # NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE }
    out = []
    for family, *names in GATE_SETS[version]:
        for name in names:
            attrs = (_nl_attr(1, GATE_TABLE.encode() + b"\0") + _nl_attr(2, name.encode() + b"\0")
                     + _nl_attr(3 | 0x8000, _nl_attr(1 | 0x8000, element)))
            out.append((family, name, attrs))
    return out


def _gate_open(sock, version, queries, seq):
    """Whether the gate of the socket's namespace lets the address through: for some
    family, the address is not gated or has its lease element. One datagram of
    GETSETELEM requests, one ack each (0: the element is there; ENOENT: it is not, or no
    such set or table). Unknown answers count as open (a holder, the safe side here)."""
    data, seqs = b"", []
    for i, (family, _name, attrs) in enumerate(queries, 1):
        body = struct.pack("!BBH", family, 0, 0) + attrs
        data += struct.pack("=IHHII", 16 + len(body), NFT_GETSETELEM, NLM_F_REQUEST | NLM_F_ACK, seq + i, 0) + body
        seqs.append(seq + i)
    sock.send(data)
    codes, deadline = {}, time.monotonic() + 0.5
    while len(codes) < len(seqs) and time.monotonic() < deadline:
        if not select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        buf = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(buf):
            length, kind = struct.unpack_from("=IH", buf, offset)
            if length < 16:
                break
            if kind == NLMSG_ERROR and offset + 28 <= len(buf):
                code, = struct.unpack_from("=i", buf, offset + 16)
                answered, = struct.unpack_from("=I", buf, offset + 16 + 4 + 8)
                codes[answered] = -code
            offset += (length + 3) & ~3
    if len(codes) < len(seqs):
        return True
    found = {name: codes[s] == 0 for (_family, name, _attrs), s in zip(queries, seqs)}
    return any(not found[gated] or found[lease] for _family, gated, lease in GATE_SETS[version])


def _holders_main(out_path, interval, address, *targets):
    interval = float(interval)
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    gate = "gate" in targets
    queries = _gate_queries(ip.version, ip.packed) if gate else []
    sockets = []
    for target in targets:
        if target == "gate":
            continue
        name, path = target.split("=", 1)
        sockets.append((name, _netlink_socket_in(path),
                        _netlink_socket_in(path, NETLINK_NETFILTER) if gate else None))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with open(out_path, "a", buffering=1) as out:
        seq, next_time = 0, time.monotonic()
        while not stop.is_set():
            seq += 1 + len(queries)   # the address dump, then the gate's requests: seq + 1, ...
            now = time.monotonic_ns()
            holders = [(name, nf) for name, sock, nf in sockets if _has_address(sock, family, ip.packed, seq)]
            line = ",".join(name for name, _ in holders) or "-"
            if gate:
                gated = [name for name, nf in holders if _gate_open(nf, ip.version, queries, seq)]
                line = f"{','.join(gated) or '-'} {line}"
            out.write(f"{now} {line}\n")
            next_time += interval
            delay = next_time - time.monotonic()
            if delay < 0:   # fell behind: do not try to catch up with a burst
                next_time, delay = time.monotonic(), 0
            stop.wait(delay)


def main(argv):
    commands = {"serve": _serve_main, "probe": _probe_main, "holders": _holders_main,
                "capture": _capture_main, "arpprobe": _arpprobe_main}
    if argv and argv[0] == "reap":
        for ns in reap_stale():
            print(f"deleted {ns}")
        return 0
    if not argv or argv[0] not in commands:
        print(f"usage: {sys.argv[0]} serve|probe|holders|capture|arpprobe|reap ...", file=sys.stderr)
        return 2
    commands[argv[0]](*argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# -- helpers added for the fault campaign (tests/lab/campaign.py) ---------------------------

def remove_partition(lab, group_a, group_b, oneway=False):
    """Undo one ``lab.partition(group_a, group_b, oneway)``, leaving the other partitions
    and every loss rule in force (``Lab.heal`` removes them all). True if it was there."""
    group_a = frozenset([group_a] if isinstance(group_a, str) else group_a)
    group_b = frozenset([group_b] if isinstance(group_b, str) else group_b)
    entry = (group_a, group_b, oneway)
    if entry not in lab._partitions:
        return False
    lab._partitions.remove(entry)
    lab._apply_rules()
    return True
