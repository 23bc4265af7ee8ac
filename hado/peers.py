"""Signed heartbeats between nodes: UDP datagrams on the port of each node's url.

Every ``heartbeat`` seconds this node sends each peer a request with a fresh nonce,
signed with the cluster secret, and re-sends the same request every heartbeat/4 until
it is answered. The peer answers with its report (election.py) signed over
``nonce + body``. An answer is evidence from the time the request was *first sent*
(never when the answer arrived), so a late answer can never stretch our quorum. A
peer's requests are recorded but are no evidence (docs/cluster.rst says why).

Why datagrams and not HTTP: one heartbeat is then two packets, and a lost packet costs
a re-send a quarter heartbeat later, not a TCP retransmission timeout of 0.2-1 s. With
20 % packet loss a TCP poll fails about half the time; a datagram exchange 36 % of the
time and, with re-sends, almost never over a whole quorum window. The HTTP API still
serves the full state (``GET /v1/state``, signed when the request sends a nonce).

Messages (JSON, one line, then a newline and the hex HMAC-SHA256)::

    request: {"type": "ping", "cluster": C, "from": A, "to": B, "nonce": N, "claims": [APP...]
              [, "poll_me": true]}                                             signed over body
    answer:  {"type": "pong", "cluster": C, "from": B, "nonce": N, "report": {...}}  signed over N + body

A request carries the apps its sender claims, so the answer to it already echoes the
claim (election.py: a claim counts once every peer lists it); a replayed request can
only make a peer echo a claim that is no more, which delays a start, never causes one.
``poll_me`` asks the peer to send us a request at once: a node whose roles changed
pokes its peers that way, so a node waiting for it to stop (a move) learns it at once.
Nudges are limited to one per heartbeat/16 and peer.

A message with a bad signature, from an unknown node, for another cluster or that
does not parse is dropped and counted; the count and the last error are in the state.
"""

import hashlib
import hmac
import json
import logging
import os
import select
import socket
import threading

log = logging.getLogger("hado.peers")

MAX_DATAGRAM = 65000


def sign(secret, data):
    return hmac.new(secret, data, hashlib.sha256).hexdigest().encode()


def pack(secret, body, prefix=b""):
    data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return data + b"\n" + sign(secret, prefix + data)


def unpack(datagram):
    """Split a datagram into (data, body dict, signature); ValueError when malformed."""
    data, sep, signature = datagram.rpartition(b"\n")
    if not sep:
        raise ValueError("no signature line")
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError("body is not an object")
    return data, body, signature


class Heartbeats(threading.Thread):
    """The ``peers`` thread: sends heartbeats, answers them, records what it learns."""

    def __init__(self, state, me, cluster, nodes, secret, heartbeat, report, clock, claims=lambda: []):
        super().__init__(name="peers", daemon=True)
        self.state, self.me, self.cluster = state, me, cluster
        self.nodes = nodes                      # name -> {"host", "port", ...}
        self.peers = [n for n in nodes if n != me]
        self.secret = secret
        self.heartbeat = heartbeat
        self.report = report                    # callable: our report, built fresh
        self.claims = claims                    # callable: the apps we claim now
        self.clock = clock
        self.stopping = threading.Event()
        self.pending = {}                       # nonce -> (peer, first sent, last sent); this thread only
        self.sock = None
        self.addresses = {}
        self.last_asked = {}                    # peer -> when we last sent it a fresh request
        self.poke_lock = threading.Lock()   # guards poked: set by any thread (poke), taken by this one
        self.poked = False
        self.wake_r, self.wake_w = socket.socketpair()

    def bind(self, host, port):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        for peer in self.peers:
            entry = self.nodes[peer]
            try:
                info = socket.getaddrinfo(entry["host"], entry["port"], self.sock.family, socket.SOCK_DGRAM)
                self.addresses[peer] = info[0][4]
            except OSError as exc:
                self.state.peer_unreachable(peer, f"cannot resolve {entry['host']}: {exc}")

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
                wait = max(0.0, min(next_round, now + self.heartbeat / 4) - self.clock())
                readable, _, _ = select.select([self.sock, self.wake_r], [], [], wait)
                if self.wake_r in readable:
                    self.wake_r.recv(64)
                if self.sock in readable:
                    self.drain()
            except Exception:  # loop boundary
                log.exception("failed: heartbeat loop error; going on")
                self.stopping.wait(0.1)
        self.sock.close()
        self.wake_r.close()
        self.wake_w.close()

    def new_round(self, now, poll_me=False):
        # Requests of the last round that were never answered are dropped.
        self.pending.clear()
        for peer in self.peers:
            self.ask(peer, now, poll_me)

    def ask(self, peer, now, poll_me=False):
        """Send ``peer`` a request with a fresh nonce now."""
        nonce = os.urandom(12).hex()
        self.pending[nonce] = (peer, now, now)
        self.last_asked[peer] = now
        self.send_request(peer, nonce, poll_me)

    def ask_soon(self, peer, now, poll_me=False):
        """``ask``, at most every heartbeat/16 per peer: a nudge must never become a storm."""
        if now - self.last_asked.get(peer, -1e9) >= self.heartbeat / 16:
            self.ask(peer, now, poll_me)

    def resend(self, now):
        for nonce, (peer, first, last) in list(self.pending.items()):
            if now - last >= self.heartbeat / 4:
                self.pending[nonce] = (peer, first, now)
                self.send_request(peer, nonce)

    def send_request(self, peer, nonce, poll_me=False):
        address = self.addresses.get(peer)
        if address is None:
            return
        body = {"type": "ping", "cluster": self.cluster, "from": self.me, "to": peer, "nonce": nonce,
                "claims": self.claims()}
        if poll_me:
            body["poll_me"] = True
        self.send(peer, pack(self.secret, body), address)

    def send(self, peer, datagram, address):
        try:
            self.sock.sendto(datagram, address)
        except OSError as exc:
            # EPERM (a firewall), ENETUNREACH, ECONNREFUSED from an earlier ICMP error...
            self.state.peer_unreachable(peer, f"send to {address[0]}:{address[1]} failed: {exc.strerror or exc}")

    def drain(self):
        for _ in range(256):  # bounded: never starve the sending side
            try:
                datagram, address = self.sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. ECONNREFUSED reported for an earlier send
                log.debug("heartbeat socket: %s", exc)
                continue
            self.handle(datagram, address, self.clock())

    def handle(self, datagram, address, now):
        try:
            data, body, signature = unpack(datagram)
        except (ValueError, UnicodeDecodeError) as exc:
            self.state.peer_error(None, "unparsable", f"unparsable datagram from {address[0]}: {exc}")
            return
        sender = body.get("from")
        if sender not in self.nodes or sender == self.me:
            self.state.peer_error(None, "unknown_node", f"message from unknown node {sender!r} at {address[0]}")
            return
        if body.get("cluster") != self.cluster:
            self.state.peer_error(sender, "wrong_cluster", f"cluster name mismatch: {sender} says "
                                                           f"{body.get('cluster')!r}, we are {self.cluster!r}")
            return
        kind = body.get("type")
        nonce = body.get("nonce")
        if kind == "ping":
            if not hmac.compare_digest(signature, sign(self.secret, data)):
                self.state.peer_error(sender, "bad_signature", f"bad signature on a heartbeat from {sender} "
                                                               f"({address[0]}): is the secret the same?")
                return
            if body.get("to") != self.me:
                self.state.peer_error(sender, "wrong_node", f"{sender} addressed {body.get('to')!r}, we are {self.me!r}")
                return
            claims = body.get("claims")
            self.state.peer_request(sender, now, claims if isinstance(claims, list) else None)
            if body.get("poll_me") is True:
                self.ask_soon(sender, now)   # it has news (a claim): fetch its report now
            answer = {"type": "pong", "cluster": self.cluster, "from": self.me, "nonce": nonce,
                      "report": self.report()}
            self.send(sender, pack(self.secret, answer, prefix=str(nonce).encode()), address)
        elif kind == "pong":
            if not hmac.compare_digest(signature, sign(self.secret, str(nonce).encode() + data)):
                self.state.peer_error(sender, "bad_signature", f"bad signature on an answer from {sender} "
                                                               f"({address[0]}): is the secret the same?")
                return
            pending = self.pending.pop(nonce, None)
            if pending is None or pending[0] != sender:
                return  # an answer to an old round (or a replay): not evidence of anything new
            report = body.get("report")
            if not isinstance(report, dict) or not isinstance(report.get("apps"), dict):
                self.state.peer_error(sender, "bad_report", f"answer from {sender} carries no valid report")
                return
            self.state.peer_answer(sender, pending[1], report)
        else:
            self.state.peer_error(sender, "unparsable", f"unknown message type {kind!r} from {sender}")
