"""The HTTP API: the state as JSON for browsers and tools, admin requests, metrics.

Reads only snapshots; admin requests call small Node methods that write requests into
the state table, which the election loop applies.

Hostile clients cost little (issue 10). One thread (``api``) accepts connections and
reads each until it holds a whole request (its head, and a body of up to MAX_BODY
bytes), without a worker: a client that sends a byte a second, or nothing, holds a
buffer and a file descriptor there, never a worker. At most MAX_PENDING connections
wait (a new one closes the one that waited longest), each at most REQUEST_TIMEOUT
seconds (then 408), with a head of at most MAX_HEAD bytes (else 431, or 414 for the
request line). A whole request goes to a worker thread, at most MAX_CONCURRENT at
once (more get 503 at once). A keep-alive connection keeps its worker while its next
request comes whole within LINGER (50 ms; at most MAX_LINGERING workers wait so), else
it goes back to the gate: an idle one holds no worker either.

Admin requests (every POST) need the admin token of node.token_file, sent as
``Authorization: Bearer TOKEN``, unless node.admin_open; without it they get 401
before any body is read. GETs need none. Malformed requests get a 4xx with a JSON error.
"""

import errno
import hmac
import ipaddress
import json
import logging
import re
import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from . import __version__, states
from .peers import sign
from .plugin import PluginError

log = logging.getLogger("hado.api")

MAX_BODY = 64 * 1024      # bytes of an admin request's body
MAX_HEAD = 16 * 1024      # bytes of a request line and headers
MAX_CONCURRENT = 32       # requests being answered at once (worker threads)
MAX_PENDING = 256         # connections waiting for a whole request
REQUEST_TIMEOUT = 5.0     # seconds a connection may take to send a whole request (or idle between two)
LINGER = 0.05             # seconds a worker waits for the next request of a keep-alive connection
MAX_LINGERING = 8         # workers lingering at once: the others stay free for new requests
LINGER_REQUESTS = 100     # requests of one connection in a row on one worker, then the gate's turn
SOCKET_TIMEOUT = 5.0      # seconds to write an answer (or read a body the gate did not hold)
LOG_EVERY = 10.0          # seconds between two "refused:" log lines (the ones between are counted)


def canned(status, reason, message):
    body = (json.dumps({"error": message, "status": status}) + "\n").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


BUSY = canned(503, "Service Unavailable", "too many requests, retry")
TOO_SLOW = canned(408, "Request Timeout", f"no whole request within {REQUEST_TIMEOUT:g} s")
HEAD_TOO_LONG = canned(431, "Request Header Fields Too Large", f"request head over {MAX_HEAD} bytes")
LINE_TOO_LONG = canned(414, "URI Too Long", f"request line over {MAX_HEAD} bytes")

CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]}
HEAD_END = re.compile(rb"\r?\n\r?\n")
EXPECT = re.compile(rb"(?im)^expect:[ \t]*100-continue[ \t]*\r?$")
LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d{1,18})[ \t]*\r?$")


def examine(buf):
    """None while ``buf`` does not hold a whole request yet; True once it does (a worker
    will not wait for the client; a body over MAX_BODY, or one announced with ``Expect:
    100-continue``, is never waited for); else the canned answer that refuses it."""
    end = HEAD_END.search(buf, 0, MAX_HEAD)
    if end is None:
        if len(buf) < MAX_HEAD:
            return None
        return HEAD_TOO_LONG if b"\n" in buf[:MAX_HEAD] else LINE_TOO_LONG
    head = buf[:end.start()]
    if EXPECT.search(head):
        return True
    length = LENGTH.search(head)
    if length and int(length.group(1)) <= MAX_BODY and len(buf) - end.end() < int(length.group(1)):
        return None
    return True


class Gate:
    """Accepts connections and holds each until it sends a whole request (module docstring)."""

    def __init__(self, server):
        self.server = server
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.listener = server.socket
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.paused_until = None       # accept() ran out of file descriptors: retry then
        self.lock = threading.Lock()   # guards incoming and stopped (workers hand connections back)
        self.incoming = []
        self.stopped = False
        self.pending = {}              # socket -> [address, buffer, deadline]; oldest first

    # ----- from other threads ----------------------------------------------------------

    def give_back(self, sock, address, data):
        """A worker's keep-alive connection, with the bytes it read past its request."""
        with self.lock:
            if not self.stopped:
                self.incoming.append((sock, address, data))
                sock = None
        if sock is not None:
            close(sock)
            return
        self.wake()

    def wake(self):
        try:
            self.wake_w.send(b"\0")
        except OSError:   # the pipe is full: a wake-up is pending anyway
            pass

    def stop(self):
        with self.lock:
            self.stopped = True
        self.wake()

    # ----- the gate's own thread ---------------------------------------------------------

    def run(self):
        try:
            while True:
                with self.lock:
                    if self.stopped:
                        break
                    incoming, self.incoming = self.incoming, []
                for sock, address, data in incoming:
                    self.hold(sock, address, data)
                now = time.monotonic()
                if self.paused_until is not None and now >= self.paused_until:
                    self.paused_until = None
                    self.selector.register(self.listener, selectors.EVENT_READ)
                timeouts = [entry[2] - now for entry in self.oldest()] + \
                           ([self.paused_until - now] if self.paused_until is not None else [])
                timeout = max(0.0, min(timeouts)) if timeouts else None
                for key, _ in self.selector.select(timeout):
                    if key.fileobj is self.wake_r:
                        self.drain()
                    elif key.fileobj is self.listener:
                        self.accept()
                    elif key.fileobj in self.pending:
                        self.read(key.fileobj)
                self.expire()
        finally:
            for sock in list(self.pending):
                self.release(sock)
                close(sock)
            with self.lock:
                self.stopped = True
                for sock, _, _ in self.incoming:
                    close(sock)
                self.incoming = []
            self.selector.close()
            self.wake_r.close()
            self.wake_w.close()

    def oldest(self):
        return [next(iter(self.pending.values()))] if self.pending else []

    def drain(self):
        try:
            while self.wake_r.recv(4096):
                pass
        except OSError:
            pass

    def accept(self):
        for _ in range(64):   # then the others get their turn
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: free the oldest waiter, and stop accepting for a
                    # moment rather than spin on a listener that stays readable
                    for old in list(self.pending)[:1]:
                        self.drop(old)
                    self.selector.unregister(self.listener)
                    self.paused_until = time.monotonic() + 0.1
                    log.warning("api: cannot accept a connection: %s; pausing 0.1 s", exc.strerror)
                return
            self.hold(sock, address, b"")

    def hold(self, sock, address, data):
        data = data.lstrip(b"\r\n")
        verdict = examine(data) if data else None
        if verdict is True:
            return self.dispatch(sock, address, data)
        if verdict is not None:
            return self.refuse(sock, verdict, data)
        while len(self.pending) >= MAX_PENDING:
            self.drop(next(iter(self.pending)))
        try:
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
        except (OSError, ValueError):
            close(sock)
            return
        self.pending[sock] = [address, bytearray(data), time.monotonic() + REQUEST_TIMEOUT]

    def read(self, sock):
        entry = self.pending[sock]
        try:
            data = sock.recv(16384)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            return self.drop(sock)
        buf = entry[1]
        buf += data
        if buf[:1] in (b"\r", b"\n"):   # blank lines before a request are allowed, and ignored
            del buf[:len(buf) - len(buf.lstrip(b"\r\n"))]
        verdict = examine(buf) if buf else None
        if verdict is None:
            return
        self.release(sock)
        if verdict is True:
            self.dispatch(sock, entry[0], bytes(buf))
        else:
            self.refuse(sock, verdict, buf)

    def expire(self):
        now = time.monotonic()
        while self.pending:
            sock, entry = next(iter(self.pending.items()))
            if entry[2] > now:
                return
            # an idle keep-alive connection just closes; a started request learns why
            self.drop(sock, TOO_SLOW if entry[1] else None, entry[1])

    def release(self, sock):
        del self.pending[sock]
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def drop(self, sock, answer=None, request=b""):
        self.release(sock)
        if answer:
            self.refuse(sock, answer, request)
        else:
            close(sock)

    def refuse(self, sock, answer, request=b""):
        if request[:5] == b"HEAD ":   # the headers of the answer, not its body
            answer = answer[:answer.index(b"\r\n\r\n") + 4]
        try:
            sock.setblocking(False)
            sock.send(answer)   # small: it fits the socket buffer, or the client loses it
        except OSError:
            pass
        close(sock)

    def dispatch(self, sock, address, data):
        if not self.server.slots.acquire(blocking=False):
            return self.refuse(sock, BUSY, data)
        try:
            threading.Thread(target=self.server.work, args=(sock, address, data), name="api-request",
                             daemon=True).start()
        except RuntimeError:   # no thread to be had
            self.server.slots.release()
            self.refuse(sock, BUSY, data)


def close(sock):
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()


class Reader:
    """A handler's rfile: the bytes the gate read, then the socket, within a deadline."""

    def __init__(self, sock, data, timeout):
        self.sock, self.buffer, self.timeout = sock, bytearray(data), timeout
        self.deadline = time.monotonic() + timeout
        self.closed = False

    def fill(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took too long")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        finally:
            self.sock.settimeout(self.timeout)
        self.buffer += data
        return bool(data)

    def take(self, n):
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def readline(self, limit=-1):
        while True:
            end = self.buffer.find(b"\n", 0, limit if limit >= 0 else len(self.buffer))
            if end >= 0:
                return self.take(end + 1)
            if 0 <= limit <= len(self.buffer) or not self.fill():
                return self.take(limit if limit >= 0 else len(self.buffer))

    def read(self, n):
        while len(self.buffer) < n and self.fill():
            pass
        return self.take(n)

    def discard(self, n):
        """Skip an unread body if the gate holds all of it; False if it does not."""
        if len(self.buffer) < n:
            return False
        del self.buffer[:n]
        return True

    def close(self):
        self.closed = True


class Writer:
    """A handler's wfile: every write is a sendall (within the socket timeout)."""

    closed = False

    def __init__(self, sock):
        self.sock = sock

    def write(self, data):
        self.sock.sendall(data)
        return len(data)

    def flush(self):
        pass

    def close(self):
        self.closed = True


class Server(HTTPServer):
    allow_reuse_address = True
    request_queue_size = 128   # the kernel's queue of connections not yet accepted

    def __init__(self, address, handler, node):
        self.node = node
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self.lingering = threading.BoundedSemaphore(MAX_LINGERING)
        self.refusals = Refusals()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.gate = Gate(self)

    def work(self, sock, address, data):
        """Whole requests on a worker thread: the next one of a keep-alive connection too
        if it is whole within LINGER (at most MAX_LINGERING workers wait so, for at most
        LINGER_REQUESTS in a row); then the connection closes, or goes back to the gate."""
        keep = None
        try:
            sock.setblocking(True)
            for _ in range(LINGER_REQUESTS):
                handler = self.RequestHandlerClass(sock, address, self, data)
                if handler.close_connection:
                    keep = None
                    break
                keep = bytes(handler.rfile.buffer)
                if not self.lingering.acquire(blocking=False):
                    break   # enough workers wait already: the gate waits for this one
                try:
                    keep, whole = next_request(sock, keep)
                finally:
                    self.lingering.release()
                if not whole:
                    break
                data = keep
        except OSError as exc:   # the client went away, or a write timed out
            keep = None
            log.debug("api: %s: connection dropped: %s", address[0], exc)
        except Exception:
            keep = None
            log.exception("failed: API request from %s", address[0])
        finally:
            self.slots.release()
        if keep is None:
            close(sock)
        else:
            self.gate.give_back(sock, address, keep)


def next_request(sock, data):
    """``(bytes, whole)``: what the client sent after its request, waiting up to LINGER
    for a whole next one; ``(None, False)`` once the client closed."""
    buf = bytearray(data)
    deadline = time.monotonic() + LINGER
    while True:
        del buf[:len(buf) - len(buf.lstrip(b"\r\n"))]
        if buf and examine(buf) is not None:   # whole (or never: the gate refuses it)
            return bytes(buf), examine(buf) is True
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(buf), False
        sock.settimeout(left)
        try:
            chunk = sock.recv(16384)
        except TimeoutError:
            return bytes(buf), False
        finally:
            sock.settimeout(SOCKET_TIMEOUT)
        if not chunk:
            return None, False
        buf += chunk


class Refusals:
    """The "refused:" warnings, at most one per LOG_EVERY seconds: a client that sends
    thousands of bad admin requests must not flood the journal (which would then drop
    the lines that matter). The next line counts the ones held back."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.last = None
        self.held = 0

    def log(self, fmt, *args):
        with self.lock:
            now = self.clock()
            if self.last is not None and now - self.last < LOG_EVERY:
                self.held += 1
                return
            held, self.held, self.last = self.held, 0, now
        more = f" ({held} more refused in the last {LOG_EVERY:g} s)" if held else ""
        log.warning(fmt + "%s", *args, more)


class Handler(BaseHTTPRequestHandler):
    server_version = f"hado/{__version__}"
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"   # so even a garbled request line gets a status line
    timeout = SOCKET_TIMEOUT

    def __init__(self, request, client_address, server, data=b""):
        self.data = data
        super().__init__(request, client_address, server)

    def setup(self):
        self.connection = self.request
        self.connection.settimeout(self.timeout)
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK hold the body back 40 ms on every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = Reader(self.connection, self.data, self.timeout)
        self.wfile = Writer(self.connection)

    def handle(self):
        """One request (the gate holds a keep-alive connection until the next one is whole)."""
        self.close_connection = True
        self.body_read = False
        self.handle_one_request()
        headers = getattr(self, "headers", None)
        if self.close_connection or headers is None:
            return
        if headers.get("Transfer-Encoding"):   # not supported: where the next request starts is unknown
            self.close_connection = True
            return
        length = headers.get("Content-Length", "0").strip()
        if not self.body_read and length != "0":   # a body nobody read (a GET's, a refused POST's)
            if not (length.isdigit() and self.rfile.discard(int(length))):
                self.close_connection = True

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, bad method...) as JSON, never HTML."""
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        if explain and code == 431:
            text = f"{text}: {explain}"
        try:
            self.send_json(code, {"error": text, "status": code})
        except OSError:
            pass

    # ----- plumbing ------------------------------------------------------------------

    def log_message(self, fmt, *args):
        # the request line is the client's: no control characters into the log
        log.debug("api: %s %s", self.client_address[0], (fmt % args).translate(CONTROL))

    def send_json(self, status, doc, extra_headers=None):
        # Pretty for people (a browser asks for text/html; ?pretty works anywhere), compact
        # for programs: json's C encoder only serves indent=None, ten times faster.
        headers = getattr(self, "headers", None)
        pretty = "pretty" in self.path.partition("?")[2] if hasattr(self, "path") else True
        if headers and "text/html" in headers.get("Accept", ""):
            pretty = True
        body = (json.dumps(doc, indent=2 if pretty else None) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        headers = getattr(self, "headers", None)   # absent when the request line was garbage
        nonce = headers.get("X-Hado-Nonce") if headers else None
        node = self.server.node
        if nonce and node.secret:
            self.send_header("X-Hado-Signature", sign(node.secret, nonce.encode() + body).decode())
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.send_body(body)

    def send_body(self, body):
        """The body after the headers, except for HEAD: a HEAD gets the headers a GET
        gets (its Content-Length too) and no body, also for errors and /metrics."""
        if getattr(self, "command", None) != "HEAD":   # no command when the request line was garbage
            self.wfile.write(body)

    def error(self, status, message):
        self.send_json(status, {"error": message, "status": status})

    def send_text(self, status, text, content_type="text/plain; version=0.0.4; charset=utf-8"):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.send_body(body)

    def snapshot(self):
        node = self.server.node
        return node.state.snapshot(node.dead_after)

    # ----- GET ---------------------------------------------------------------------------

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        try:
            self.route_get(self.path.split("?", 1)[0].rstrip("/") or "/")
        except OSError as exc:   # the client went away mid-answer: nothing to answer, nothing to log loudly
            self.close_connection = True
            log.debug("api: %s went away during GET %s: %s", self.client_address[0], self.path[:200], exc)
        except Exception:  # never a traceback to the client, never a dead thread
            log.exception("failed: API GET %s", self.path[:200])
            self.error(500, "internal error; see the hado log")

    def route_get(self, path):
        node = self.server.node
        if path in ("/", "/v1/state"):
            return self.send_json(200, self.snapshot())
        if path == "/health":
            snap = self.snapshot()
            ok = snap["healthy"] and snap["quorum"]["ok"]
            return self.send_json(200 if ok else 503, {"healthy": snap["healthy"], "quorum": snap["quorum"],
                                                       "node": snap["node"]})
        if path == "/v1/view":
            return self.send_json(200, node.view())
        if path == "/metrics":
            return self.send_text(200, metrics(self.snapshot()))
        match = re.fullmatch(r"/v1/apps/([^/]+)(/active)?", path)
        if match:
            app = match.group(1)
            snap = self.snapshot()
            if app not in snap["apps"]:
                return self.error(404, f"no app named {app!r} (apps: {', '.join(snap['apps']) or 'none'})")
            entry = snap["apps"][app]
            if match.group(2):
                active = entry["role"] == states.ACTIVE
                return self.send_json(200 if active else 503, {"app": app, "node": snap["node"],
                                                               "role": entry["role"], "reason": entry["reason"]})
            return self.send_json(200, {"app": app, "node": snap["node"], **entry})
        return self.error(404, f"no such path {path!r}; try /, /v1/state, /health, /metrics, /v1/apps/APP")

    # ----- POST (admin) -------------------------------------------------------------------

    def do_POST(self):
        try:
            self.route_post(self.path.split("?", 1)[0].rstrip("/"))
        except OSError as exc:
            self.close_connection = True
            log.debug("api: %s went away during POST %s: %s", self.client_address[0], self.path[:200], exc)
        except Exception:
            log.exception("failed: API POST %s", self.path[:200])
            self.error(500, "internal error; see the hado log")

    def allowed(self):
        """None if this admin request may proceed, else (status, message): 403 from
        another host unless node.admin_remote, 401 without the admin token (unless
        node.admin_open), compared in constant time."""
        node = self.server.node
        client = self.client_address[0]
        local = is_loopback(client) or client == self.connection.getsockname()[0]
        if not local and not node.config["node"]["admin_remote"]:
            return 403, f"admin requests from {client} are refused (only from this host unless node.admin_remote)"
        if node.config["node"]["admin_open"]:
            return None
        where = f"the admin token in {node.token_file}" if getattr(node, "token_file", None) else "the admin token"
        given = self.headers.get("Authorization")
        if given is None:
            return 401, (f"admin requests need {where}: send 'Authorization: Bearer TOKEN' "
                         "(hado standby, move, ... send it when they can read that file)")
        scheme, _, token = given.strip().partition(" ")
        if scheme.lower() != "bearer":
            return 401, f"expected 'Authorization: Bearer TOKEN' with {where}, not a {scheme[:20]!r} Authorization"
        if not token.strip():
            return 401, f"the Bearer token is empty: send {where}"
        if not node.token or not hmac.compare_digest(token.strip().encode(), node.token.encode()):
            return 401, f"wrong admin token: not {where}"
        return None

    def refusal(self):
        """None if this admin request may proceed to its body, else (status, message)."""
        refused = self.allowed()
        if refused:
            return refused
        length = self.headers.get("Content-Length", "0").strip()
        if length.isdigit() and int(length) > MAX_BODY:
            return 413, f"request body over {MAX_BODY} bytes"
        return None

    def refuse(self, status, message):
        self.server.refusals.log("refused: admin request %s from %s: %s", self.path[:200], self.client_address[0],
                                 message)
        if status == 413:
            self.close_connection = True   # the body is not read
        extra = {"WWW-Authenticate": 'Bearer realm="hado"'} if status == 401 else None
        self.send_json(status, {"error": message, "status": status}, extra)

    def handle_expect_100(self):
        """A client that waits for "100 Continue" before its body learns first if it is refused."""
        if self.command == "POST":
            refused = self.refusal()
            if refused:
                self.refuse(*refused)
                self.close_connection = True
                return False
        return super().handle_expect_100()

    def read_body(self):
        length = self.headers.get("Content-Length", "0").strip()
        if not length.isdigit():
            self.close_connection = True   # where this body ends is unknown
            raise ValueError("bad Content-Length")
        length = int(length)
        raw = self.rfile.read(length) if length else b""
        self.body_read = True
        if len(raw) < length:
            self.close_connection = True
            raise ValueError(f"the body ended after {len(raw)} of {length} bytes")
        if not raw.strip():
            return {}
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("the body must be a JSON object")
        return doc

    def route_post(self, path):
        node = self.server.node
        refused = self.refusal()   # before the body is read: refusing costs nothing
        if refused:
            return self.refuse(*refused)
        try:
            body = self.read_body()
        except (ValueError, UnicodeDecodeError) as exc:
            return self.error(400, f"bad request body: {exc}")
        apps = node.config["apps"]
        if path in ("/v1/node/standby", "/v1/node/online"):
            node.set_standby(path.endswith("standby"))
            return self.send_json(200, {"ok": True, "node": node.me, "standby": path.endswith("standby")})
        if path == "/v1/maintenance":
            on = body.get("on")
            if not isinstance(on, bool):
                return self.error(400, 'expected {"on": true} or {"on": false}')
            node.set_maintenance(on)
            return self.send_json(200, {"ok": True, "maintenance": on})
        match = re.fullmatch(r"/v1/apps/([^/]+)/(move|cleanup)", path)
        if match:
            app, verb = match.groups()
            if app not in apps:
                return self.error(404, f"no app named {app!r} (apps: {', '.join(apps) or 'none'})")
            if verb == "cleanup":
                node.cleanup(app)
                return self.send_json(200, {"ok": True, "app": app, "cleanup": True})
            if body.get("cancel") is True:
                try:
                    target = node.cancel_move(app)
                except ValueError as exc:
                    return self.error(409, str(exc))
                return self.send_json(200, {"ok": True, "app": app, "cancelled": target})
            target = body.get("node")
            if not isinstance(target, str):
                return self.error(400, 'expected {"node": "NODE"} or {"cancel": true}')
            try:
                node.move(app, target)
            except ValueError as exc:
                return self.error(409, str(exc))
            return self.send_json(200, {"ok": True, "app": app, "move_to": target})
        match = re.fullmatch(r"/v1/apps/([^/]+)/resources/([^/]+)/([A-Za-z_][A-Za-z0-9_]*)", path)
        if match:
            app, res, action = match.groups()
            if app not in apps:
                return self.error(404, f"no app named {app!r}")
            try:
                ok, value = node.resource_action(app, res, action)
            except ValueError as exc:   # a life-cycle function, or no such action
                return self.error(400, str(exc))
            except (KeyError, PluginError) as exc:
                return self.error(404, str(exc).strip('"'))
            if not ok:
                return self.send_json(502, {"ok": False, "error": str(value)})
            return self.send_json(200, {"ok": True, "result": value if is_jsonable(value) else repr(value)})
        return self.error(404, f"no such admin path {path!r}")


def is_loopback(address):
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def is_jsonable(value):
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


class Api:
    """The API server: accepting and reading on its own thread (``api``), answering on
    a thread per request."""

    def __init__(self, node, host, port):
        self.server = Server((host, port), Handler, node)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.gate.run, name="api", daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.server.gate.stop()
        if self.thread.ident is not None:
            self.thread.join(timeout=2)
        self.server.server_close()


def label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics(snap):
    """The state in Prometheus text format (version 0.0.4)."""
    out = []

    def metric(name, help_text, samples):
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            text = ",".join(f'{k}="{label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")

    node = {"node": snap["node"]}
    metric("hado_healthy", "1 if every vital system monitor passes", [(node, int(snap["healthy"]))])
    metric("hado_standby", "1 if the node is in standby", [(node, int(snap["standby"]))])
    metric("hado_maintenance", "1 if the node is in maintenance mode", [(node, int(snap["maintenance"]))])
    metric("hado_quorum_ok", "1 if this node sees a quorum", [(node, int(snap["quorum"]["ok"]))])
    metric("hado_quorum_votes", "votes this node sees, its own included", [(node, snap["quorum"]["votes"])])
    metric("hado_quorum_needed", "votes needed for quorum", [(node, snap["quorum"]["needed"])])
    metric("hado_uptime_seconds", "seconds since the daemon started", [(node, snap["uptime_s"])])
    metric("hado_peer_up", "1 while the peer answers within dead_after",
           [({**node, "peer": p}, int(e["up"])) for p, e in snap["peers"].items()])
    metric("hado_peer_last_seen_seconds", "seconds since the peer was last heard",
           [({**node, "peer": p}, e["last_seen_s"]) for p, e in snap["peers"].items() if e["last_seen_s"] is not None])
    rejected = [({**node, "peer": p, "kind": k}, n) for p, e in snap["peers"].items() for k, n in e["rejected"].items()]
    rejected += [({**node, "peer": "(unknown)", "kind": k}, n) for k, n in snap["rejected"]["counts"].items()]
    metric("hado_peer_rejected_messages", "heartbeat messages dropped (bad signature, unknown node, ...)", rejected)
    metric("hado_app_role", "1 for the app's current role on this node",
           [({**node, "app": a, "role": r}, int(e["role"] == r)) for a, e in snap["apps"].items() for r in states.ROLES])
    metric("hado_app_eligible", "1 if the app may run on this node", [({**node, "app": a}, int(e["eligible"]))
                                                                      for a, e in snap["apps"].items()])
    metric("hado_resource_fail_count", "failures of the resource since the last cleanup or expiry",
           [({**node, "app": a, "resource": r}, e["fail_count"]) for a, app in snap["apps"].items()
            for r, e in app["resources"].items()])
    metric("hado_resource_started", "1 if the resource is started here",
           [({**node, "app": a, "resource": r}, int(e["state"] == states.STARTED)) for a, app in snap["apps"].items()
            for r, e in app["resources"].items()])
    monitors = [({**node, "app": "", "monitor": m}, int(bool(e["ok"]))) for m, e in snap["monitors"].items()]
    monitors += [({**node, "app": a, "monitor": m}, int(bool(e["ok"]))) for a, app in snap["apps"].items()
                 for m, e in app["monitors"].items()]
    metric("hado_monitor_ok", "1 if the monitor passes", monitors)
    return "\n".join(out) + "\n"
