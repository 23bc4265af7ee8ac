"""Signed heartbeats between nodes: UDP datagrams on the port of each node's url.

Every ``heartbeat`` seconds this node sends each peer a request with a fresh nonce and
re-sends it every heartbeat/4 until it is answered. The peer answers with its report
(election.py). An answer is evidence from the time the request was *first sent*
(never when the answer arrived), so a late answer can never stretch our quorum. A
peer's requests are recorded but are no evidence (docs/cluster.rst says why).

Why datagrams and not HTTP: one heartbeat is then two packets, and a lost packet costs
a re-send a quarter heartbeat later, not a TCP retransmission timeout of 0.2-1 s. With
20 % packet loss a TCP poll fails about half the time; a datagram exchange 36 % of the
time and, with re-sends, almost never over a whole quorum window. The HTTP API still
serves the full state (``GET /v1/state``, signed when the request sends a nonce).

The datagram (protocol version 3), built so that a receiver checks the MAC over the
raw bytes before it parses anything::

    offset  0   4 bytes  b"HADO"
            4   1 byte   version (3)
            5   1 byte   type: b"Q" request, b"A" answer
            6  16 bytes  nonce (random; an answer repeats its request's)
           22   n bytes  body: a request: one JSON object, UTF-8; an answer: one JSON
                         object (the envelope, without the report), b"\n", then the
                         report as hado/wire.py encodes it (positional, deflated)
       22 + n  32 bytes  HMAC-SHA256 over bytes 0 .. 22 + n, with a key derived from
                         the cluster secret (heartbeat_key: never the API's signatures)

    request body: {"cluster": C, "from": A, "to": B, "boot": R, "seq": S, "claims": [APP...],
                   "holds": [APP...] [, "poll_me": true]}
    answer body:  {"cluster": C, "from": B, "to": A, "boot": R, "seq": S} "\n" encode_report(report)

Version 3 differs from 2 only in the answers: a 50-app report took 7.2 KB of JSON,
5 IP fragments, and now takes about 450 bytes, one packet (wire.py; docs/cluster.rst
"Size limits"). The version byte and the key (derived with the version in it) keep the
two apart: a version-2 node counts our datagrams ``version``, and we count its.

``boot`` is random per run of hado and ``seq`` counts every datagram that run sends:
a receiver applies a peer's message only when it is newer than the last one it applied
from that run, and only from a run that an answer to one of its own fresh nonces has
shown alive. So a replayed or reordered message never brings back an older word (the
claims a request lists) after a newer one.

Receiving, cheapest test first: length and fixed header (magic, version, type, size
limit of the type), then for an answer whether its nonce is pending (a dict look-up),
then the MAC over the raw bytes (one ``hmac.digest``), and only then UTF-8 and JSON,
and for an answer the report's bounded inflate (wire.MAX_REPORT; else ``bad_report``).

A flood cannot starve the peers: besides the socket bound to the port (open to
anyone) there is one socket per peer, bound to the same port and *connected* to the
peer's address, and the kernel delivers each datagram to the socket that matches it
best: a peer's datagrams land in a queue of their own that no foreign sender can
fill. Those queues are read first, every turn; the open socket is read in batches of
at most ``BATCH`` and at most ``PUBLIC_RATE`` datagrams a second, so a flood costs a
bounded share of one CPU and the kernel drops the rest.

A request carries the apps its sender claims and holds (reports active, starting or
stopping), so the answer to it already echoes the claim (election.py: a claim counts
once every peer lists it), and a peer passes on what a node holds even to nodes that
do not hear that node themselves (``holders``, engine gaps 5 and 6 of tests/sim.py). ``poll_me`` asks the peer
to send us a request at once: a node whose roles changed pokes its peers that way, so
a node waiting for it to stop (a move) learns it at once. Nudges are limited to one per
heartbeat/16 and peer.

A message that fails any check is dropped and counted (docs/cluster.rst lists the
kinds), under the peer it comes from (its address before the MAC is checked, its
signed name after) or under unknown senders; the count and last error are in the state.
"""

import hashlib
import hmac
import json
import logging
import os
import select
import socket
import threading

from . import wire

log = logging.getLogger("hado.peers")

VERSION = 3
MAGIC = b"HADO"
REQUEST, ANSWER = ord("Q"), ord("A")
NONCE_BYTES = 16
HEADER = len(MAGIC) + 2 + NONCE_BYTES       # 22: magic, version, type, nonce
MAC_BYTES = 32
SMALLEST = HEADER + 2 + MAC_BYTES           # the body is at least "{}"
MAX_REQUEST = 16384                         # a request lists names only
MAX_DATAGRAM = 65000                        # an answer carries the report (wire.size_problem)
RCVBUF = 256 * 1024     # per socket: a peer's queue holds 4 maximal datagrams, about 100 real ones
PUBLIC_RATE = 20000     # datagrams a second read from the open socket at most
PUBLIC_BURST = 2000
BATCH = 64              # datagrams read from one socket before the others get their turn
RECENT_ROUNDS = 8       # answers to nonces this many heartbeats old are late, not forged
GOODBYE_FOR = 0.5       # seconds a leaving node re-sends its goodbye to peers that have not answered it
KINDS = ("unparsable", "version", "oversized", "unknown_nonce", "bad_signature", "unknown_node",
         "wrong_cluster", "wrong_node", "replayed", "bad_report")


def sign(secret, data):
    """The hex HMAC-SHA256 of the API's signed state (X-Hado-Signature)."""
    return hmac.new(secret, data, hashlib.sha256).hexdigest().encode()


def heartbeat_key(secret):
    """The key of the heartbeat MACs, derived from the cluster secret: no signature made
    with the secret itself (the API signs over a nonce its caller chooses) is ever one."""
    return hmac.digest(secret, b"hado heartbeat protocol %d" % VERSION, "sha256")


def pack(key, kind, nonce, body):
    """One datagram: header, body, MAC over both. The body of a request is its JSON; of
    an answer with a "report", the JSON of the rest, a newline (JSON that
    ``json.dumps`` writes never holds one) and wire.encode_report(report)."""
    data = MAGIC + bytes((VERSION, kind)) + nonce
    if kind == ANSWER and isinstance(body, dict) and "report" in body:
        envelope = {k: v for k, v in body.items() if k != "report"}
        data += (json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode() + b"\n"
                 + wire.encode_report(body["report"]))
    else:
        data += json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return data + hmac.digest(key, data, "sha256")


class Rejected(Exception):
    """A datagram dropped; ``kind`` is the counter it goes to."""

    def __init__(self, kind, why):
        super().__init__(why)
        self.kind, self.why = kind, why


def read_header(datagram):
    """(type, nonce) of a version-2 datagram, from its length and fixed offsets only.

    Raises Rejected otherwise (``datagram``: bytes or a memoryview)."""
    size = len(datagram)
    if datagram[:4] != MAGIC:
        if datagram[:1] == b"{" and size > 65 and datagram[-65:-64] == b"\n":
            raise Rejected("version", "protocol version 1")   # JSON, a newline, a hex HMAC
        raise Rejected("unparsable", f"not a hado heartbeat ({size} bytes)")
    if size < SMALLEST:
        raise Rejected("unparsable", f"truncated: {size} bytes, a heartbeat has at least {SMALLEST}")
    if datagram[4] != VERSION:
        raise Rejected("version", f"protocol version {datagram[4]}")
    kind = datagram[5]
    if kind == REQUEST:
        limit = MAX_REQUEST
    elif kind == ANSWER:
        limit = MAX_DATAGRAM
    else:
        raise Rejected("unparsable", f"unknown message type {kind}")
    if size > limit:
        raise Rejected("oversized", f"{size} bytes or more, a {'request' if kind == REQUEST else 'answer'} "
                                    f"has at most {limit}")
    return kind, bytes(datagram[6:HEADER])


def authentic(key, datagram):
    """Whether the MAC at the end of ``datagram`` is right (raw bytes, nothing parsed)."""
    return hmac.compare_digest(hmac.digest(key, datagram[:-MAC_BYTES], "sha256"), datagram[-MAC_BYTES:])


def read_body(datagram, kind=REQUEST):
    """The body of a datagram whose MAC was checked, as a dict (an answer's with its
    decoded "report"); Rejected when it is none."""
    raw = bytes(datagram[HEADER:-MAC_BYTES])
    encoded = None
    if kind == ANSWER:
        raw, newline, encoded = raw.partition(b"\n")
        if not newline:
            encoded = None   # no report: on_answer counts it bad_report
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:   # UnicodeDecodeError is a ValueError
        raise Rejected("unparsable", f"signed but unparsable body: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise Rejected("unparsable", "signed body is not a JSON object")
    if encoded is not None:
        try:
            body["report"] = wire.decode_report(encoded)
        except wire.WireError as exc:
            raise Rejected("bad_report", f"signed answer with an undecodable report ({len(encoded)} bytes): "
                                         f"{exc}") from None
    return body


def unpack(key, datagram):
    """(type, nonce, body) of a valid datagram, checked in the receiver's order (without
    the pending-nonce look-up, which needs the thread); Rejected otherwise."""
    kind, nonce = read_header(datagram)
    if not authentic(key, datagram):
        raise Rejected("bad_signature", "bad signature")
    return kind, nonce, read_body(datagram, kind)


class Heartbeats(threading.Thread):
    """The ``peers`` thread: sends heartbeats, answers them, records what it learns.

    Every attribute but ``poked`` (guarded by ``poke_lock``) and ``stopping`` belongs
    to this thread alone once it runs."""

    def __init__(self, state, me, cluster, nodes, secret, heartbeat, report, clock, claims=lambda: [],
                 holds=lambda: []):
        super().__init__(name="peers", daemon=True)
        self.state, self.me, self.cluster = state, me, cluster
        self.nodes = nodes                      # name -> {"host", "port", ...}
        self.peers = [n for n in nodes if n != me]
        self.key = heartbeat_key(secret)
        self.heartbeat = heartbeat
        self.report = report                    # callable: our report, built fresh
        self.claims = claims                    # callable: the apps we claim now
        self.holds = holds                      # callable: the apps we report active/starting/stopping
        self.clock = clock
        self.stopping = threading.Event()
        self.farewell = threading.Event()       # set with stopping: say goodbye before the thread ends
        self.leaving = False                    # saying goodbye: requests are neither applied nor answered
        self.acked = set()                      # peers that answered our goodbye
        self.boot = os.urandom(8).hex()         # this run of hado
        self.seq = 0                            # datagrams this run has sent
        self.pending = {}                       # nonce -> (peer, first sent, last sent)
        self.issued = {}                        # nonce -> (peer, when): the last RECENT_ROUNDS rounds
        self.heard = {}                         # peer -> [boot, seq]: newest message applied, live run
        self.unproven = {}                      # peer -> when we last answered a run not shown alive
        self.last_asked = {}                    # peer -> when we last sent it a fresh request
        self.deferred = {}                      # peer -> when a nudge held back by the rate limit is due
        self.sock = None                        # bound to the port, open to anyone; we send from it
        self.inbox = {}                         # fd -> (socket, peer or None for the open one)
        self.addresses = {}                     # peer -> where we send to
        self.origins = {}                       # (ip, port) -> peer: who an unsigned datagram is from
        self.buf = bytearray(MAX_DATAGRAM + 1)  # one more: a longer datagram is oversized
        self.view = memoryview(self.buf)
        self.tokens, self.refilled = float(PUBLIC_BURST), None
        self.logged = {}                        # what -> when last logged (rate-limited warnings)
        self.poke_lock = threading.Lock()   # guards poked: set by any thread (poke), taken by this one
        self.poked = False
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)

    # ----- sockets ---------------------------------------------------------------

    def bind(self, host, port):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = udp_socket(family, host, port)
        self.inbox = {self.sock.fileno(): (self.sock, None)}
        for peer in self.peers:
            entry = self.nodes[peer]
            try:
                info = socket.getaddrinfo(entry["host"], entry["port"], self.sock.family, socket.SOCK_DGRAM)
            except OSError as exc:
                self.state.peer_unreachable(peer, f"cannot resolve {entry['host']}: {exc}")
                continue
            address = self.addresses[peer] = info[0][4]
            self.origins[address[:2]] = peer
            try:   # the peer's own queue: the kernel prefers a connected socket that matches
                own = udp_socket(family, host, port)
            except OSError as exc:
                log.warning("heartbeats from %s share the open queue (no socket of their own: %s)", peer, exc)
                continue
            try:
                own.connect(address)
            except OSError as exc:
                own.close()
                log.warning("heartbeats from %s share the open queue (connect to %s: %s)", peer, address[0], exc)
                continue
            self.inbox[own.fileno()] = (own, peer)
        self.poll_all, self.poll_peers = select.poll(), select.poll()
        for fd, (_, peer) in self.inbox.items():
            self.poll_all.register(fd, select.POLLIN)
            if peer is not None:
                self.poll_peers.register(fd, select.POLLIN)
        for poller in (self.poll_all, self.poll_peers):
            poller.register(self.wake_r.fileno(), select.POLLIN)

    def poke(self):
        """Start a round now, asking every peer to poll us back at once (a new claim)."""
        with self.poke_lock:
            self.poked = True
        try:
            self.wake_w.send(b"!")
        except OSError:
            pass

    def run(self):
        next_round = self.clock()
        while not self.stopping.is_set():
            try:
                now = self.clock()
                with self.poke_lock:
                    poll_me, self.poked = self.poked, False
                if poll_me or now >= next_round:
                    self.new_round(now, poll_me)
                    next_round = now + self.heartbeat
                self.resend(now)
                self.ask_deferred(now)
                wake = min([next_round, now + self.heartbeat / 4] + list(self.deferred.values()))
                self.receive(max(0.0, wake - self.clock()))
            except Exception:  # loop boundary
                log.exception("failed: heartbeat loop error; going on")
                self.stopping.wait(0.1)
        if self.farewell.is_set():
            try:
                self.say_goodbye(GOODBYE_FOR)
            except Exception:  # thread boundary: the peers then wait for our silence
                log.exception("failed: saying goodbye")
        for sock, _ in self.inbox.values():
            sock.close()
        self.wake_r.close()
        self.wake_w.close()

    def receive(self, wait):
        """Wait up to ``wait`` s for datagrams; read the peers' queues, then a batch of the open one."""
        now = self.clock()
        if self.refilled is not None:
            self.tokens = min(float(PUBLIC_BURST), self.tokens + (now - self.refilled) * PUBLIC_RATE)
        self.refilled = now
        public = self.tokens >= 1
        if not public:   # spent: leave the open socket to the kernel until a batch is due again
            wait = min(wait, BATCH / PUBLIC_RATE)
        ready = {fd for fd, _ in (self.poll_all if public else self.poll_peers).poll(wait * 1000)}
        if self.wake_r.fileno() in ready:
            try:
                self.wake_r.recv(64)
            except BlockingIOError:
                pass
        for fd, (sock, peer) in self.inbox.items():
            if peer is not None and fd in ready:
                self.drain(sock, peer, BATCH)
        if public and self.sock.fileno() in ready:
            self.tokens -= self.drain(self.sock, None, min(BATCH, int(self.tokens)))

    def drain(self, sock, peer, limit):
        """Handle up to ``limit`` datagrams waiting on ``sock``; how many were read."""
        count = 0
        while count < limit:
            count += 1
            try:
                size, address = sock.recvfrom_into(self.buf)
            except BlockingIOError:
                return count - 1
            except ConnectionRefusedError:   # ICMP port unreachable, for an earlier send to the peer
                if peer is not None:
                    self.state.peer_unreachable(peer, f"nothing listens on {self.where(peer)} "
                                                      f"(ICMP port unreachable): is hado running there?")
                continue
            except OSError as exc:
                log.debug("heartbeat socket: %s", exc)
                continue
            self.handle(self.view[:size], address, self.clock(), peer)
        return count

    def where(self, peer):
        address = self.addresses.get(peer)
        return f"{address[0]}:{address[1]}" if address else "?"

    # ----- sending -----------------------------------------------------------------

    def next_seq(self):
        self.seq += 1
        return self.seq

    def new_round(self, now, poll_me=False):
        # Requests of the last round that were never answered are dropped; their nonces
        # stay known a while, so that a late answer to them is no forgery.
        self.pending.clear()
        horizon = now - RECENT_ROUNDS * self.heartbeat
        self.issued = {n: v for n, v in self.issued.items() if v[1] >= horizon}
        for peer in self.peers:
            self.ask(peer, now, poll_me)

    def ask(self, peer, now, poll_me=False, bye=False):
        """Send ``peer`` a request with a fresh nonce now (``bye``: our goodbye)."""
        nonce = os.urandom(NONCE_BYTES)
        self.pending[nonce] = (peer, now, now)
        self.issued[nonce] = (peer, now)
        self.last_asked[peer] = now
        self.deferred.pop(peer, None)   # this request fetches whatever news a nudge announced
        self.send_request(peer, nonce, poll_me, bye)

    def say_goodbye(self, timeout):
        """Tell every peer, signed, that this run of hado has stopped everything and ends.

        Node.stop sets ``farewell`` only once no app here is held or claimed any more.
        The goodbye is a request (``"bye": true``, no claims, no holds) with a fresh
        nonce, sent again every heartbeat/4 (at most 50 ms) to each peer that has not
        answered one yet, for at most ``timeout`` seconds. Its answers are the
        acknowledgements; from now on nothing is answered or applied: an answer would
        make us look alive again. A peer that got it counts us *left* at once: no vote,
        nothing to wait for (election.py). A peer that did not waits for our silence,
        as after a crash."""
        self.leaving = True
        self.pending.clear()
        deadline = self.clock() + timeout
        spacing = min(self.heartbeat / 4, 0.05)
        while self.clock() < deadline:
            waiting = [p for p in self.peers if p not in self.acked and p in self.addresses]
            if not waiting:
                break
            now = self.clock()
            for peer in waiting:
                self.ask(peer, now, bye=True)
            self.receive(max(0.0, min(spacing, deadline - self.clock())))
        missing = [p for p in self.peers if p not in self.acked]
        if missing:
            log.warning("stopping: no answer to our goodbye from %s within %g s: %s for our silence",
                        ", ".join(missing), timeout, "it waits" if len(missing) == 1 else "they wait")
        else:
            log.info("stopping: every peer answered our goodbye")

    def ask_soon(self, peer, now, poll_me=False):
        """``ask``, at most every heartbeat/16 per peer: a nudge must never become a storm.
        One that comes sooner is held back until then, never dropped: a peer pokes us
        when its report changed (a stop, a new active node), and two changes in a row
        within milliseconds (stopping, then stopped) would otherwise leave us with the
        first until the next heartbeat (a standby took one or two heartbeats so)."""
        due = self.last_asked.get(peer, -1e9) + self.heartbeat / 16
        if now >= due:
            self.ask(peer, now, poll_me)
        else:
            self.deferred[peer] = due

    def ask_deferred(self, now):
        for peer, due in list(self.deferred.items()):
            if now >= due:
                self.ask(peer, now)

    def resend(self, now):
        for nonce, (peer, first, last) in list(self.pending.items()):
            if now - last >= self.heartbeat / 4:
                self.pending[nonce] = (peer, first, now)
                self.send_request(peer, nonce)

    def send_request(self, peer, nonce, poll_me=False, bye=False):
        address = self.addresses.get(peer)
        if address is None:
            return
        body = {"cluster": self.cluster, "from": self.me, "to": peer, "boot": self.boot, "seq": self.next_seq(),
                "claims": [] if bye else self.claims(), "holds": [] if bye else self.holds()}
        if poll_me:
            body["poll_me"] = True
        if bye:
            body["bye"] = True
        datagram = pack(self.key, REQUEST, nonce, body)
        if len(datagram) > MAX_REQUEST:
            self.warn("big-request", "failed: a heartbeat request of %d bytes, more than %d: it is not sent",
                      len(datagram), MAX_REQUEST)
            return
        self.send(peer, datagram, address)

    def send(self, peer, datagram, address):
        # Always from the open socket: the peers' sockets only receive (an ICMP error for
        # a send shows up there as a refused receive, never as a lost send).
        try:
            self.sock.sendto(datagram, address)
        except OSError as exc:
            # EPERM (a firewall), ENETUNREACH...
            self.state.peer_unreachable(peer, f"send to {address[0]}:{address[1]} failed: {exc.strerror or exc}")

    # ----- receiving ---------------------------------------------------------------

    def handle(self, datagram, address, now, via=None):
        """One datagram from ``address``; ``via``: the peer whose own socket it came in on."""
        origin = via or self.origins.get(address[:2])
        try:
            kind, nonce = read_header(datagram)
            pending = None
            if kind == ANSWER:
                pending = self.pending.get(nonce)
                if pending is None:
                    if nonce in self.issued:
                        return   # late: a re-sent request answered twice, or a past round; no evidence
                    raise Rejected("unknown_nonce", "an answer to a request this node never sent "
                                                    "(forged, replayed, or meant for another node)")
                origin = origin or pending[0]
            if not authentic(self.key, datagram):
                raise Rejected("bad_signature", "bad signature on a " + ("request" if kind == REQUEST else "answer"))
            if pending is not None:
                self.pending.pop(nonce, None)   # signed: whatever it says, this nonce is used up
            body = read_body(datagram, kind)
        except Rejected as rejected:
            self.reject(origin, rejected, address)
            return
        if kind == REQUEST:
            self.on_request(nonce, body, address, now, via)
        else:
            self.on_answer(pending, body, address, via)

    def signed_sender(self, body, address):
        """The sender named in a signed body, when it is a peer of this cluster; else None (counted)."""
        sender = body.get("from")
        if not isinstance(sender, str) or sender not in self.nodes or sender == self.me:
            self.state.peer_error(None, "unknown_node", f"message from unknown node {str(sender)[:64]!r} "
                                                        f"at {address[0]}")
            return None
        if body.get("cluster") != self.cluster:
            self.state.peer_error(sender, "wrong_cluster", f"cluster name mismatch: {sender} says "
                                                           f"{str(body.get('cluster'))[:64]!r}, we are {self.cluster!r}")
            return None
        if body.get("to") != self.me:
            self.state.peer_error(sender, "wrong_node", f"{sender} addressed {str(body.get('to'))[:64]!r}, "
                                                        f"we are {self.me!r}")
            return None
        if not isinstance(body.get("boot"), str) or type(body.get("seq")) is not int:
            self.state.peer_error(sender, "unparsable", f"signed message from {sender} without boot and seq")
            return None
        return sender

    def on_request(self, nonce, body, address, now, via):
        if self.leaving:
            return   # we said goodbye: an answer now would make us look alive again
        sender = self.signed_sender(body, address)
        if sender is None:
            return
        heard = self.heard.get(sender)
        if heard is not None and heard[0] == body["boot"]:
            if body["seq"] <= heard[1]:
                self.state.peer_error(sender, "replayed", f"an old or repeated request from {sender} (number "
                                                          f"{body['seq']}, after {heard[1]}): replayed, or "
                                                          f"reordered by the network")
                return
            heard[1] = body["seq"]
            claims, holds = body.get("claims"), body.get("holds")
            self.state.peer_request(sender, now, claims if isinstance(claims, list) else None,
                                    holds if isinstance(holds, list) else None)
            if body.get("bye") is True and claims == [] and holds == []:
                # Its last word: everything stopped there, this run starts nothing more.
                if self.state.peer_goodbye(sender, now):
                    log.info("left: %s said goodbye (hado stopped there cleanly; it holds nothing)", sender)
            elif body.get("poll_me") is True:
                self.ask_soon(sender, now)   # it has news (a claim): fetch its report now
        else:
            # A run of the sender that no answer has shown alive: it restarted, or this is
            # an old request replayed. Answer (rate-limited), apply nothing, and ask the
            # sender unless a request to it is out already: the answer of its live run
            # settles which run that is.
            if now - self.unproven.get(sender, -1e9) < self.heartbeat / 16:
                return
            self.unproven[sender] = now
            if all(peer != sender for peer, _, _ in self.pending.values()):
                self.ask_soon(sender, now)
        if via is None:
            self.stray(sender, address)
        # Silence floored below 3 h (the least dead_after): an unchanged cluster sends
        # unchanged reports, and an answer that says nothing new wakes nobody (wire.py).
        report = wire.for_peers(self.report(), 3 * self.heartbeat)
        answer = {"cluster": self.cluster, "from": self.me, "to": sender, "boot": self.boot, "seq": self.next_seq(),
                  "report": report}
        try:
            datagram = pack(self.key, ANSWER, nonce, answer)
        except wire.WireError as exc:
            self.warn("big-answer", "failed: %s (too many apps?): the peers cannot hear this node", exc)
            return
        if len(datagram) > MAX_DATAGRAM:
            self.warn("big-answer", "failed: our report takes %d bytes, more than the %d of a heartbeat datagram "
                      "(too many apps?): the peers cannot hear this node", len(datagram), MAX_DATAGRAM)
            return
        if len(datagram) > wire.MTU_PAYLOAD and "mtu-answer" not in self.logged:   # once per run
            self.warn("mtu-answer", "heartbeat answers of this node take %d bytes (%d apps), more than the %d that "
                      "fit one packet on a %d-byte MTU: they are sent as IP fragments, and a lost fragment "
                      "loses the whole answer (docs/cluster.rst, \"Size limits\")", len(datagram),
                      len(report.get("apps") or ()) if isinstance(report, dict) else 0, wire.MTU_PAYLOAD, wire.MTU)
        self.send(sender, datagram, address)

    def on_answer(self, pending, body, address, via):
        peer, first, _ = pending
        sender = self.signed_sender(body, address)
        if sender is None:
            return
        if sender != peer:
            self.state.peer_error(sender, "wrong_node", f"{sender} answered a request sent to {peer}")
            return
        heard = self.heard.get(peer)
        if heard is not None and heard[0] == body["boot"] and body["seq"] <= heard[1]:
            return   # an answer overtaken by a newer one from the same run: older news, no evidence
        report = body.get("report")
        if not isinstance(report, dict) or not isinstance(report.get("apps"), dict):
            self.state.peer_error(peer, "bad_report", f"answer from {peer} carries no valid report")
            return
        self.heard[peer] = [body["boot"], body["seq"]]   # a fresh nonce answered: this run is alive
        if self.leaving:
            self.acked.add(peer)   # an answer to our goodbye: that peer has it
            return
        if via is None:
            self.stray(peer, address)
        self.state.peer_answer(peer, first, report)

    def reject(self, origin, rejected, address):
        where = f"{origin} ({address[0]})" if origin else f"{address[0]}:{address[1]}"
        if rejected.kind == "version":
            message = f"{rejected.why} from {address[0]}: upgrade every node (this one speaks version {VERSION})"
            self.warn("version", "%s", message)
        elif rejected.kind == "bad_signature":
            message = (f"{rejected.why} from {where}: is the secret the same?" if origin else
                       f"{rejected.why} from {where}, no node's address")
        else:
            message = f"{rejected.kind.replace('_', ' ')} datagram from {where}: {rejected.why}"
        self.state.peer_error(origin, rejected.kind, message)

    def stray(self, peer, address):
        """A peer's signed message came in on the open socket, not on the peer's own: say so
        once in a while, since a flood of foreign datagrams can drown it there."""
        if peer in {p for _, p in self.inbox.values()}:
            self.warn(f"stray-{peer}", "heartbeats from %s come from %s:%s, not from its url's %s, or to another "
                      "address of this node: they share the queue anyone can send to, where a flood of foreign "
                      "datagrams can drown them (leave node.listen at each node's url address)",
                      peer, address[0], address[1], self.where(peer))

    def warn(self, what, fmt, *args, every=60.0):
        now = self.clock()
        if now - self.logged.get(what, -1e9) >= every:
            self.logged[what] = now
            log.warning(fmt, *args)


def udp_socket(family, host, port):
    """A non-blocking UDP socket bound to (host, port), shareable with our other ones."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
