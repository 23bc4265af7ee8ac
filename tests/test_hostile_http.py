"""Issue 10, hostile input: attacks on the HTTP API of the ACTIVE node of a 3-node cluster.

One cluster on loopback for the module (heartbeat 0.2 s, dead_after 1.0 s). Each test
attacks the API of the node running ``web`` while a watcher reads /v1/state of every
node every 50 ms. After each attack: no role change and no new election on any node
(roles, active_node and epoch as before, no new ``web:`` event), the other nodes saw
the active node up in every sample (so it kept their votes: its quorum), it answered
its own samples with quorum ok, its peak RSS (VmHWM) stayed bounded, and a normal GET
was answered within 1 s once the attack ended. Every attack is bounded in connections,
bytes and seconds and closes what it opened. One line per attack goes to the terminal.
"""

import contextlib
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from helpers import REPO, Cluster, Daemon, free_port, http, wait_for, write_config

HEARTBEAT, DEAD_AFTER = 0.2, 1.0
MAX_RSS_MB = 80   # the daemon idles at about 30 MB; a 100 MB body read into memory would show
ADMIN_POSTS = [("/v1/node/standby", {}), ("/v1/node/online", {}), ("/v1/maintenance", {"on": True}),
               ("/v1/apps/web/move", {"node": "node-b"}), ("/v1/apps/web/move", {"cancel": True}),
               ("/v1/apps/web/cleanup", {}), ("/v1/apps/web/resources/r/renew", {}),
               ("/v1/apps/..%2f../resources/x/y", {}), ("/v1/no/such/admin/path", {})]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("hostile"), heartbeat=HEARTBEAT, dead_after=DEAD_AFTER)
    c.start()
    try:
        active = c.wait_active()
        wait_for(lambda: c.agree() == active and all(
            s and all(p["up"] for p in s["peers"].values()) for s in c.states().values()),
            what="every node sees the others up and agrees on the active node")
        yield c, active
    finally:
        c.stop_all()


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024


class Watch:
    """/v1/state of every node every 50 ms, one thread per node, while an attack runs."""

    def __init__(self, c, active):
        self.c, self.active = c, active
        self.stop = threading.Event()
        self.samples = {n: [] for n in c.names}   # (latency s, doc or None)
        self.threads = [threading.Thread(target=self.sample, args=(n,), daemon=True) for n in c.names]

    def sample(self, name):
        url = self.c[name].url + "/v1/state"
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                status, doc = http(url, timeout=1.0)
                doc = doc if status == 200 else None
            except Exception:   # a timeout, a reset, a garbled answer: no sample
                doc = None
            self.samples[name].append((time.monotonic() - t0, doc))
            self.stop.wait(max(0.0, 0.05 - (time.monotonic() - t0)))


def web_events(doc):
    return {(e["at"], e["what"]) for e in doc["events"] if e["what"].startswith("web:")}


@contextlib.contextmanager
def attack(hostile, name):
    """Run the attack in the body; then check the cluster did not notice, and report."""
    c, active = hostile
    before = {n: c[n].state() for n in c.names}
    watch = Watch(c, active)
    for t in watch.threads:
        t.start()
    t0 = time.monotonic()
    try:
        yield watch
    finally:
        took = time.monotonic() - t0
        watch.stop.set()
        for t in watch.threads:
            t.join(timeout=5)
    start = time.monotonic()
    status, _ = http(c[active].url + "/v1/state", timeout=1.0)
    after_s = time.monotonic() - start
    assert status == 200 and after_s < 1.0, f"{name}: GET after the attack: {status} in {after_s:.2f} s"
    after = {n: c[n].state() for n in c.names}
    report = {"seen_up": 0, "samples": 0, "last_seen": 0.0}
    for n in c.names:
        old = before[n]["apps"]["web"]
        for latency, doc in watch.samples[n]:
            if doc is None:
                continue
            app = doc["apps"]["web"]
            assert (app["role"], app["active_node"], app["epoch"]) == (old["role"], active, old["epoch"]), \
                f"{name}: {n} changed: {app['role']} on {app['active_node']} epoch {app['epoch']}: {app['reason']}"
            if n == active:
                assert doc["quorum"]["ok"], f"{name}: the active node lost quorum: {doc['quorum']}"
            else:
                peer = doc["peers"][active]
                assert peer["up"], f"{name}: {n} saw {active} {peer['status']} (last seen {peer['last_seen_s']} s)"
                report["seen_up"] += 1
                report["last_seen"] = max(report["last_seen"], peer["last_seen_s"] or 0.0)
        if n != active:
            answered = [d for _, d in watch.samples[n] if d]
            report["samples"] += len(watch.samples[n])
            assert len(answered) >= 0.9 * len(watch.samples[n]) > 0, f"{name}: {n} (not attacked) did not answer"
        assert web_events(after[n]) == web_events(before[n]), \
            f"{name}: new events on {n}: {web_events(after[n]) - web_events(before[n])}"
        assert after[n]["apps"]["web"]["epoch"] == before[n]["apps"]["web"]["epoch"]
    assert after[active]["quorum"]["ok"] and not after[active]["standby"] and not after[active]["maintenance"]
    own = watch.samples[active]
    answered = [lat for lat, d in own if d is not None]
    rss = peak_rss_mb(c[active].proc.pid)
    watch.report = (f"{name}: {took:.1f} s; peak RSS {rss:.1f} MB; active answered {len(answered)}/{len(own)} "
                    f"samples (slowest {max(answered, default=0):.2f} s); others saw it up {report['seen_up']}/"
                    f"{report['samples']} (last heard at most {report['last_seen']:.2f} s before); "
                    f"role changes 0; GET after {after_s * 1000:.0f} ms")
    print("\n" + watch.report, flush=True)
    assert rss < MAX_RSS_MB, watch.report
    assert "Traceback" not in c[active].log(), c[active].log()[-3000:]


# ----- raw HTTP -------------------------------------------------------------------------------------------

def exchange(port, data, timeout=2.0, shut=False):
    """Send ``data`` on a new connection; every byte answered until the server closes or
    ``timeout``: (bytes, closed by the server)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:   # the server may refuse before it read everything
            pass
        if shut:
            with contextlib.suppress(OSError):   # already reset by the server
                s.shutdown(socket.SHUT_WR)
        got, end = b"", time.monotonic() + timeout
        while time.monotonic() < end:
            s.settimeout(max(0.01, end - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return got, False
            except OSError:
                return got, True
            if not chunk:
                return got, True
            got += chunk
        return got, False


def responses(raw):
    """[(status, headers, parsed JSON body)] of a byte stream of HTTP responses."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers.get("Content-Length", 0))
        body, raw = rest[:length], rest[length:]
        out.append((int(lines[0].split()[1]), headers, json.loads(body) if body else None))
    return out


def request(method, path, token=None, body=b"", extra=b""):
    auth = b"Authorization: Bearer " + token.encode() + b"\r\n" if token else b""
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + auth + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


# ----- the attacks ----------------------------------------------------------------------------------------

def test_slowloris_200_connections_a_byte_a_second_leave_the_api_serving(hostile):
    """200 connections (reopened when the server drops them, at most 2,000 in all) each
    send one byte a second of a request that never ends, for 10 s. Meanwhile the active
    node answers every sample of the watcher (a slow client must not hold a worker)."""
    c, active = hostile
    port = c.ports[active]
    trickle = b"GET /v1/state HTTP/1.1\r\nHost: x\r\nX-Slow: "
    sel = selectors.DefaultSelector()
    conns, stats = {}, {"opened": 0, "dropped": 0, "answered": 0}

    def open_one():
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_READ)
        conns[s] = 0
        stats["opened"] += 1

    def drop(s):
        sel.unregister(s)
        s.close()
        del conns[s]

    with attack(hostile, "slowloris 200 x 1 byte/s, 10 s") as watch:
        try:
            for _ in range(200):
                open_one()
            end = time.monotonic() + 10.0
            tick = time.monotonic()
            while time.monotonic() < end:
                if time.monotonic() >= tick:
                    for s, sent in list(conns.items()):
                        try:
                            s.send(trickle[sent:sent + 1] or b"a")
                            conns[s] = sent + 1
                        except BlockingIOError:
                            pass
                        except OSError:
                            drop(s)
                            stats["dropped"] += 1
                    tick += 1.0
                for key, _ in sel.select(timeout=max(0.0, min(tick, end) - time.monotonic())):
                    try:
                        data = key.fileobj.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        stats["answered"] += 1
                        continue
                    drop(key.fileobj)
                    stats["dropped"] += 1
                    if stats["opened"] < 2000:
                        open_one()
        finally:
            for s in list(conns):
                drop(s)
    print(f"  slowloris: {stats['opened']} connections opened, {stats['dropped']} dropped by the server, "
          f"{len(conns)} open at the end")
    own = watch.samples[active]
    slow = [(lat, d is not None) for lat, d in own if d is None or lat >= 1.0]
    assert own and not slow, f"the active node failed {len(slow)}/{len(own)} samples during slowloris: {slow[:5]}"


def test_a_thousand_concurrent_connections(hostile):
    """1,000 connections at once, idle for 3 s, then each sends a complete GET; answers
    (200, or 503 past the worker limit) or closes are read for at most 3 s."""
    c, active = hostile
    port = c.ports[active]
    socks, counts = [], {}
    with attack(hostile, "1,000 concurrent connections"):
        try:
            for _ in range(1000):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                socks.append(s)
            time.sleep(3.0)
            sel = selectors.DefaultSelector()
            for s in socks:
                try:
                    s.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    sel.register(s, selectors.EVENT_READ)
                except OSError:
                    counts["closed before the request"] = counts.get("closed before the request", 0) + 1
            end = time.monotonic() + 3.0
            waiting = len(sel.get_map())
            while waiting and time.monotonic() < end:
                for key, _ in sel.select(timeout=0.1):
                    try:
                        data = key.fileobj.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    what = data[:12].decode("latin-1") if data else "closed"
                    counts[what] = counts.get(what, 0) + 1
                    sel.unregister(key.fileobj)
                    waiting -= 1
            counts["no answer in 3 s"] = waiting
        finally:
            for s in socks:
                s.close()
    print(f"  1,000 connections: {counts}")


def test_idle_keep_alive_connections_hold_no_worker(hostile):
    """Twice MAX_CONCURRENT keep-alive connections, each after one answer idle: past
    the worker's linger they wait in the gate, and new requests are answered at once."""
    from hado import api
    c, active = hostile
    port = c.ports[active]
    socks = []
    with attack(hostile, "idle keep-alive connections"):
        try:
            for _ in range(2 * api.MAX_CONCURRENT):
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(12) == b"HTTP/1.1 200"
                socks.append(s)
            time.sleep(2 * api.LINGER)
            for _ in range(10):
                assert http(c[active].url + "/health", timeout=1.0)[0] == 200
            socks[0].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            rest = b""   # the rest of the first answer, then the second one, then the server closes
            while chunk := socks[0].recv(65536):
                rest += chunk
            assert rest.count(b"HTTP/1.1 200") == 1 and rest.endswith(b"}\n"), rest[-300:]
        finally:
            for s in socks:
                s.close()


def test_a_100_mb_body_is_refused_without_being_read(hostile):
    """A 100 MB body, sent as fast as loopback allows, without and with the token, to an
    admin path and to a GET; then Content-Length 100 MB with a 1 MB partial body."""
    c, active = hostile
    port = c.ports[active]
    token = c[active].token()
    size = 100 * 1024 * 1024
    results = {}
    with attack(hostile, "100 MB bodies"):
        for label, head in (
                ("POST, no token", f"POST /v1/maintenance HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"),
                ("POST, token", f"POST /v1/maintenance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                                f"Content-Length: {size}\r\n\r\n"),
                ("GET", f"GET /v1/state HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n")):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(head.encode())
                chunk, sent, got = bytes(1 << 20), 0, b""
                s.setblocking(False)
                end = time.monotonic() + 10
                sel = selectors.DefaultSelector()
                sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
                closed = False
                while sent < size and not closed and time.monotonic() < end:
                    for _, mask in sel.select(timeout=0.5):
                        try:
                            if mask & selectors.EVENT_READ:
                                data = s.recv(65536)
                                got += data
                                closed = closed or not data
                            if mask & selectors.EVENT_WRITE and not closed:
                                sent += s.send(chunk[:size - sent])
                        except BlockingIOError:
                            pass
                        except OSError:
                            closed = True
                results[label] = (sent // (1 << 20), got[:12].decode("latin-1") or "reset")
        for label, extra in (("partial, no token", b""), ("partial, token", f"Authorization: Bearer {token}\r\n"
                                                                             .encode())):
            got, closed = exchange(port, b"POST /v1/maintenance HTTP/1.1\r\nHost: x\r\n" + extra
                                   + f"Content-Length: {size}\r\n\r\n".encode() + bytes(1 << 20), timeout=2)
            results[label] = got[:12].decode("latin-1") or ("closed" if closed else "no answer")
    print(f"  100 MB (MB sent before the server stopped it, answer): {results}")
    assert results["partial, no token"] == "HTTP/1.1 401" and results["partial, token"] == "HTTP/1.1 413"
    for label in ("POST, no token", "POST, token"):
        assert results[label][0] < 100, f"{label}: the server read the whole 100 MB"


MALFORMED = [
    # (what, bytes, acceptable statuses; () means the server may just close)
    ("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n", (400,)),
    ("one word", b"GET\r\n\r\n", (400,)),
    ("four words", b"GET / HTTP/1.1 extra\r\n\r\n", (400,)),
    ("bad version", b"GET / FOO/1.1\r\n\r\n", (400,)),
    ("HTTP/9.9", b"GET / HTTP/9.9\r\n\r\n", (505,)),
    ("NULs", b"\x00" * 1000 + b"\r\n\r\n", (400,)),
    ("binary path", b"GET /\xff\xfe\xfd HTTP/1.1\r\n\r\n", (404,)),
    ("NUL in path", b"GET /v1/apps/%00 HTTP/1.1\r\n\r\n", (404,)),
    ("absolute URI", b"GET http://evil/v1/state HTTP/1.1\r\n\r\n", (404,)),
    ("unknown method", b"DELETE /v1/state HTTP/1.1\r\n\r\n", (501,)),
    ("lower-case method", b"get / HTTP/1.1\r\n\r\n", (501,)),
    ("header without colon", b"GET /health HTTP/1.1\r\nNoColonHere\r\n\r\n", (200, 400)),
    ("non-latin header", b"GET /health HTTP/1.1\r\nX: \xff\xfe\r\n\r\n", (200,)),
    ("100 KB request line", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n", (414, 431)),
    ("70 KB header", b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", (431,)),
    ("200 headers", b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", (431,)),
    ("100 KB of blank lines", b"\r\n" * 50_000, ()),
    ("negative length", b"POST /v1/maintenance HTTP/1.1\r\nContent-Length: -1\r\n\r\n", (400, 401)),
    ("length not a number", b"POST /v1/maintenance HTTP/1.1\r\nContent-Length: abc\r\n\r\n", (400, 401)),
    ("chunked", b"POST /v1/maintenance HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     (400, 401)),
    ("50 pipelined GETs", b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 50, (200,)),
]


def test_malformed_request_lines_and_headers_get_a_json_4xx(hostile):
    c, active = hostile
    port = c.ports[active]
    token = c[active].token()
    seen = {}
    with attack(hostile, "malformed requests"):
        for what, data, ok in MALFORMED:
            got, _ = exchange(port, data, timeout=2.0, shut=True)
            answers = responses(got)
            seen[what] = sorted({a[0] for a in answers})
            if not ok:
                assert all(a[0] < 500 for a in answers), (what, got[:300])
                continue
            assert answers, f"{what}: no answer ({got[:200]!r})"
            for status, headers, body in answers:
                assert status in ok, (what, status, body)
                assert headers["Content-Type"] == "application/json", (what, headers)
                assert status < 400 or body["status"] == status, (what, body)
            if what == "50 pipelined GETs":
                assert len(answers) == 50
        for what, body in (("bad JSON", b"{bad"), ("a list", b"[1, 2]"), ("not UTF-8", b"\xff\xfe"),
                           ("on: a string", b'{"on": "yes"}')):
            answers = responses(exchange(port, request("POST", "/v1/maintenance", token, body), shut=True)[0])
            seen[f"token, {what}"] = [a[0] for a in answers]
            assert [a[0] for a in answers] == [400], (what, answers)
        auth = f"Authorization: Bearer {token}\r\n".encode()
        for what, length in (("negative length", b"-1"), ("length not a number", b"abc"), ("huge length", b"9" * 30)):
            raw = b"POST /v1/maintenance HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: " + length + b"\r\n\r\n"
            answers = responses(exchange(port, raw, shut=True)[0])
            seen[f"token, {what}"] = [a[0] for a in answers]
            assert [a[0] for a in answers] in ([400], [413]), (what, answers)
    print(f"  malformed, statuses: {seen}")


def test_path_traversal_in_app_and_resource_names_finds_nothing(hostile):
    c, active = hostile
    port = c.ports[active]
    token = c[active].token()
    with attack(hostile, "path traversal"):
        for path in ("/v1/apps/..%2f../resources/x/y", "/v1/apps/../../etc/passwd", "/v1/apps/..%2f..%2fetc%2fpasswd",
                     "/v1/apps/web/..%2f..%2fstate", "/v1/apps/%2e%2e/active", "/" + "../" * 50 + "etc/passwd",
                     "//etc/passwd", "/v1/apps/web%00/active"):
            (status, _, body), = responses(exchange(port, request("GET", path), shut=True)[0])
            assert status == 404 and body["status"] == 404, (path, body)
        for path in ("/v1/apps/..%2f../resources/x/y", "/v1/apps/..%2f..%2fweb/cleanup",
                     "/v1/apps/web/resources/..%2f..%2fr/renew", "/v1/apps/web/resources/r/..%2frenew",
                     "/v1/apps/web/resources/r/__init__", "/v1/apps/web/resources/r/_private",
                     "/v1/apps/../move", "/v1/apps/web/resources/r/renew/../../../move"):
            (status, _, body), = responses(exchange(port, request("POST", path, token, b"{}"), shut=True)[0])
            assert status in (400, 404) and body["status"] == status, (path, body)
            (status, _, body), = responses(exchange(port, request("POST", path, None, b"{}"), shut=True)[0])
            assert status == 401, (path, body)


def test_admin_requests_without_the_right_token_are_refused(hostile):
    c, active = hostile
    port = c.ports[active]
    token = c[active].token()
    assert token and len(token) >= 32, "the daemon made an admin token at its start"
    tries = [b"", b"Authorization: Bearer wrong\r\n", b"Authorization: Bearer " + token[:-1].encode() + b"\r\n",
             b"Authorization: Bearer " + token.encode() + b"x\r\n", b"Authorization: Basic " + token.encode() + b"\r\n",
             b"Authorization: Bearer\r\n", b"Authorization: " + token.encode() + b"\r\n",
             b"X-Hado-Token: " + token.encode() + b"\r\n", b"Authorization: Bearer " + token.upper().encode() + b"\r\n"]
    refused = 0
    with attack(hostile, "admin requests without the right token"):
        for path, body in ADMIN_POSTS:
            for extra in tries:
                raw = request("POST", path, None, json.dumps(body).encode(), extra)
                (status, headers, doc), = responses(exchange(port, raw, shut=True)[0])
                assert status == 401, (path, extra, status, doc)
                assert "token" in doc["error"] and headers.get("WWW-Authenticate", "").startswith("Bearer"), doc
                refused += 1
            status, doc = http(c[active].url + path + f"?token={token}", body, token=None)
            assert status == 401, (path, doc)
            refused += 1
        # a keep-alive connection: the right token once does not authorize the next request
        raw = request("POST", "/v1/apps/nope/cleanup", token, b"{}") + request("POST", "/v1/node/standby", None, b"{}")
        assert [a[0] for a in responses(exchange(port, raw, shut=True)[0])] == [404, 401]
        assert http(c[active].url + "/v1/state")[0] == 200, "GETs need no token"
    print(f"  {refused} admin requests without the right token: all 401")
    state = c[active].state()
    assert not state["standby"] and not state["maintenance"] and state["apps"]["web"]["move"] is None


# ----- the admin token: made at start, read by the CLI, admin_open ------------------------------------------

def hado(*args, user=None, python=sys.executable):
    return subprocess.run([python, "-m", "hado", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=30, user=user)


def solo(folder, node=None):
    port = free_port()
    cfg = {"cluster": {"nodes": {"solo": {"url": f"http://127.0.0.1:{port}"}}}, "apps": {}}
    if node:
        cfg["node"] = node
    path = write_config(folder / "config.json", cfg)
    return Daemon(path, "solo", port, folder), path


def test_the_daemon_makes_the_admin_token_once_and_the_cli_sends_it(tmp_path):
    daemon, path = solo(tmp_path)
    token = tmp_path / "admin.token"
    try:
        daemon.start().wait_ready()
        mode = token.stat().st_mode & 0o777
        assert mode == 0o600 and token.stat().st_uid == os.geteuid(), oct(mode)
        first = token.read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{64}", first)
        assert daemon.log().count(f"made the admin token {token}") == 1
        assert http(daemon.url + "/v1/maintenance", {"on": True}, token=None)[0] == 401
        out = hado("maintenance", "on", "--config", str(path))
        assert out.returncode == 0 and "maintenance on" in out.stdout, out.stderr
        assert daemon.state()["maintenance"] is True and daemon.state()["admin_open"] is False
        out = hado("maintenance", "off", "--url", daemon.url)   # no --config: no token, and it says why
        assert out.returncode == 1 and "admin requests need the admin token in" in out.stderr \
            and "give --config FILE too" in out.stderr, out.stderr
        daemon.kill()
        daemon.start().wait_ready()
        assert token.read_text().strip() == first and daemon.log().count("made the admin token") == 1
        assert hado("maintenance", "off", "--url", daemon.url, "--config", str(path)).returncode == 0
    finally:
        daemon.kill()


def test_the_cli_says_why_it_cannot_read_the_token(tmp_path):
    """As root the check runs as nobody, in a folder nobody may enter (tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="hado-token-"))
    try:
        folder.chmod(0o755)
        _, path = solo(folder)
        path.chmod(0o644)
        out = hado("standby", "--config", str(path))
        assert out.returncode == 1 and f"cannot read the admin token {folder}/admin.token: No such file or " \
            "directory (the daemon makes it at its first start" in out.stderr, out.stderr
        token = folder / "admin.token"
        token.write_text("0123456789abcdef0123456789abcdef\n")
        if os.geteuid() == 0:   # root reads any file: ask as nobody, with a Python nobody may run
            token.chmod(0o600)
            if not os.access("/usr/bin/python3", os.X_OK):
                pytest.skip("no /usr/bin/python3 to run the CLI as nobody")
            out = hado("standby", "--config", str(path), user="nobody", python="/usr/bin/python3")
        else:
            token.chmod(0)
            out = hado("standby", "--config", str(path))
        assert out.returncode == 1 and out.stderr.strip() == (
            f"hado standby: cannot read the admin token {token}: Permission denied (admin commands need root or "
            "read access to it)"), out.stderr
    finally:
        shutil.rmtree(folder)


def test_admin_open_is_explicit_and_loud(tmp_path):
    daemon, path = solo(tmp_path, {"admin_open": True})
    try:
        daemon.start().wait_ready()
        assert "WARNING" in daemon.log() and "node.admin_open is true: admin requests need no token" in daemon.log()
        assert not (tmp_path / "admin.token").exists()
        assert http(daemon.url + "/v1/maintenance", {"on": True}, token=None)[0] == 200
        status = hado("status", "--config", str(path))
        assert "ADMIN OPEN: node.admin_open is true" in status.stdout and daemon.state()["admin_open"] is True
    finally:
        daemon.kill()
    write_config(path, {"cluster": {"nodes": {"solo": {"url": "http://127.0.0.1:1"}}},
                        "node": {"admin_open": True, "admin_remote": True}})
    out = hado("check-config", str(path))
    assert out.returncode == 2 and "node.admin_remote: remote admin requests need the admin token" in out.stdout


def test_a_token_every_user_may_read_is_refused(tmp_path):
    token = tmp_path / "admin.token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    token.chmod(0o644)
    daemon, path = solo(tmp_path)
    out = hado("check-config", str(path))
    assert out.returncode == 2 and "is readable or writable by every user (mode 644)" in out.stdout, out.stdout
    assert daemon.start().proc.wait(timeout=20) == 2 and f"chmod 600 {token}" in daemon.log()
