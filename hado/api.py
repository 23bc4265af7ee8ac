"""The HTTP API: the state as JSON for browsers and tools, admin requests, metrics.

Reads only snapshots; admin requests call small Node methods that write requests into
the state table, which the election loop applies. Bounded: request bodies up to
MAX_BODY bytes, a socket timeout per connection, at most MAX_CONCURRENT requests at
once (more get 503 at once). Malformed requests get a 4xx with a JSON error.
"""

import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import __version__, states
from .peers import sign
from .plugin import PluginError

log = logging.getLogger("hado.api")

MAX_BODY = 64 * 1024
MAX_CONCURRENT = 32
SOCKET_TIMEOUT = 5.0


BUSY_BODY = b'{"error": "too many requests, retry", "status": 503}\n'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(BUSY_BODY)).encode() + b"\r\n\r\n" + BUSY_BODY)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, node):
        self.node = node
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class Handler(BaseHTTPRequestHandler):
    server_version = f"hado/{__version__}"
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"   # so even a garbled request line gets a status line
    timeout = SOCKET_TIMEOUT

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK hold the body back 40 ms on every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, bad method...) as JSON, never HTML."""
        self.close_connection = True
        try:
            self.send_json(code, {"error": message or self.responses.get(code, ("error",))[0], "status": code})
        except OSError:
            pass

    # ----- plumbing ------------------------------------------------------------------

    def log_message(self, fmt, *args):
        log.debug("api: %s %s", self.client_address[0], fmt % args)

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
        except Exception:
            log.exception("failed: API POST %s", self.path[:200])
            self.error(500, "internal error; see the hado log")

    def allowed(self):
        """None if this admin request may proceed, else (status, message)."""
        node = self.server.node
        client = self.client_address[0]
        local = is_loopback(client) or client == self.connection.getsockname()[0]
        if not local and not node.config["node"]["admin_remote"]:
            return 403, f"admin requests from {client} are refused (only from this host unless node.admin_remote)"
        if node.token:
            given = self.headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), node.token.encode()):
                return 401, "missing or wrong admin token (send 'Authorization: Bearer TOKEN' from node.token_file)"
        return None

    def read_body(self):
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            raise ValueError("bad Content-Length")
        length = int(length)
        if length > MAX_BODY:
            raise OverflowError(f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("the body must be a JSON object")
        return doc

    def route_post(self, path):
        node = self.server.node
        try:
            body = self.read_body()
        except OverflowError as exc:
            self.close_connection = True
            return self.error(413, str(exc))
        except (ValueError, UnicodeDecodeError) as exc:
            return self.error(400, f"bad request body: {exc}")
        refused = self.allowed()
        if refused:
            log.warning("refused: admin request %s from %s: %s", path, self.client_address[0], refused[1])
            return self.error(*refused)
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
    """The API server on its own thread (``api``)."""

    def __init__(self, node, host, port):
        self.server = Server((host, port), Handler, node)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="api", daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)


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
