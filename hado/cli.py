"""The command line: the daemon entry and the client commands that talk to its API."""

import argparse
import json
import logging
import os
import secrets
import sys
import time
import urllib.error
import urllib.request

from . import __version__, config as config_mod, election, systemd
from .plugin import PluginError, Registry

log = logging.getLogger("hado")

USAGE = """\
  python3 -m hado [--foreground] [--config FILE] [--node NAME] [--log-level LEVEL]   run the daemon
  python3 -m hado COMMAND ...   talk to the local daemon or check things:
    status [--json] [--watch [SECONDS]]   nodes, apps, resources, with the reasons
    explain APP [--if NODE=down|standby|unhealthy ...] [--view FILE]   who would be active, and why (FILE: a saved /v1/view)
    check-config [FILE]                  validate a config (every error with its JSON path)
    keygen FILE                          write a random cluster secret (mode 0600)
    plugins                              list the plugins found, with their arguments
    standby [NODE] | online [NODE]       take a node out of / back into service
    move APP NODE | move APP --cancel    planned switchover of APP to NODE; cancel a pending one
    maintenance on|off                   stop/resume starting and stopping resources here
    cleanup APP                          forget APP's failures on this node
    action APP RESOURCE ACTION           call a plugin's own action (e.g. reload) on a resource
    demo [--duration SECONDS]            a 3-node cluster on loopback showing a failover
    config-reference                     the config keys, types and defaults (reST)
"""


def build_parser():
    parser = argparse.ArgumentParser(prog="hado", usage=USAGE, add_help=True,
                                     description="HA-DO keeps an application running on one of several machines.")
    parser.add_argument("--version", action="version", version=f"hado {__version__}")
    parser.add_argument("--config", default=None, help=f"config file (default {config_mod.DEFAULT_PATH})")
    parser.add_argument("--node", default=None, help="this node's name in cluster.nodes (default: hostname)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--foreground", action="store_true", help="run in the foreground (the daemon always does; "
                                                                  "this is for humans and debugging)")
    parser.add_argument("--url", default=None, help="the daemon's API URL for client commands")
    # The same options after the command (hado status --config F) as before it.
    common = argparse.ArgumentParser(add_help=False)
    for flag, helptext in (("--config", "config file"), ("--node", "this node's name"), ("--url", "API URL")):
        common.add_argument(flag, default=argparse.SUPPRESS, help=helptext)
    sub = parser.add_subparsers(dest="command")
    original = sub.add_parser
    sub.add_parser = lambda name, **kw: original(name, parents=[common], **kw)
    status = sub.add_parser("status")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", nargs="?", const=2.0, type=float, default=None)
    explain = sub.add_parser("explain")
    explain.add_argument("app")
    explain.add_argument("--if", dest="what_if", action="append", default=[], metavar="NODE=down|standby|unhealthy")
    explain.add_argument("--view", dest="view_file", default=None, metavar="FILE",
                         help="a saved GET /v1/view (or a tests/views/ file) instead of asking the daemon")
    check = sub.add_parser("check-config")
    check.add_argument("file", nargs="?")
    keygen = sub.add_parser("keygen")
    keygen.add_argument("file")
    sub.add_parser("plugins")
    for name in ("standby", "online"):
        p = sub.add_parser(name)
        p.add_argument("target", nargs="?", metavar="NODE")
    move = sub.add_parser("move")
    move.add_argument("app")
    move.add_argument("target", metavar="NODE", nargs="?")
    move.add_argument("--cancel", action="store_true", help="cancel the pending move requested on this node")
    maint = sub.add_parser("maintenance")
    maint.add_argument("switch", choices=["on", "off"])
    cleanup = sub.add_parser("cleanup")
    cleanup.add_argument("app")
    action = sub.add_parser("action")
    action.add_argument("app")
    action.add_argument("resource")
    action.add_argument("action")
    demo = sub.add_parser("demo")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    sub.add_parser("config-reference")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command is None:
        return run_daemon(args)
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except ApiError as exc:
        print(f"hado {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:   # `hado plugins | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# ----- the daemon -------------------------------------------------------------------------

def run_daemon(args):
    from .node import Node, StartError
    systemd.setup_logging(args.log_level)
    path = args.config or config_mod.DEFAULT_PATH
    try:
        config = config_mod.load(path, args.node)
    except config_mod.ConfigError as exc:
        log.error("failed: config %s has %d error(s); not starting:", path, len(exc.errors))
        for error in exc.errors:
            log.error("  %s", error)
        return 2
    node = Node(config)
    node.install_signals()
    try:
        node.start()
    except config_mod.ConfigError as exc:
        for error in exc.errors:
            log.error("failed: %s", error)
        if node.api:
            node.api.stop()
        return 2
    except (StartError, OSError) as exc:
        log.error("failed: cannot start: %s", exc)
        if node.api:
            node.api.stop()
        return 1
    node.run()
    return 0


# ----- offline commands -------------------------------------------------------------------

def cmd_check_config(args):
    """Exactly the checks the daemon makes before it starts (config.load), exit 2 on errors."""
    path = args.file or args.config or config_mod.DEFAULT_PATH
    try:
        config = config_mod.load(path, args.node, files=False)
        # --node names a node whose address is not on this machine: its files and
        # address are that machine's to check (run check-config there), not errors here.
        elsewhere = bool(args.node) and config_mod.listen_problem(config) is not None
        problems = config_mod.file_errors(config)
        if problems and not elsewhere:
            raise config_mod.ConfigError(problems)
    except config_mod.ConfigError as exc:
        print(f"{path}: {len(exc.errors)} error(s); the daemon would refuse to start:")
        for error in exc.errors:
            print(f"  {error}")
        return 2
    if elsewhere:
        config["_warnings"] = config["_warnings"] + [
            f"this machine is not {config['node']['name']}: not checked here, run check-config on "
            f"{config['node']['name']}: {problem}" for problem in problems]
    from .wire import size_problem
    too_big = size_problem(config)
    if too_big:   # the daemon would start, but could not be heard (docs/cluster.rst, "Size limits")
        print(f"{path}: 1 error(s); a node of this cluster could not be heard:")
        print(f"  apps: {too_big}")
        return 2
    for warning in config["_warnings"]:
        print(f"WARNING: {warning}")
    nodes = config["cluster"]["nodes"]
    print(f"{path}: ok ({len(nodes)} node(s), {len(config['apps'])} app(s), "
          f"{len(config['monitors'])} system monitor(s))")
    print(f"this node: {config['node']['name']} ({config['_identity']}); listens on {config['node']['listen']} "
          f"(API over TCP, heartbeats over UDP)")
    for line in safety_summary(config):
        print(line)
    return 0


def safety_summary(config):
    """One line per app: the bound that keeps it on one node (docs/cluster.rst)."""
    from .bounds import app_bounds
    return [f"{app}: {sentence}" for app, sentence in app_bounds(config).items()]


def cmd_keygen(args):
    path = args.file
    if os.path.exists(path):
        print(f"hado keygen: {path} exists; not overwriting it (remove it first)", file=sys.stderr)
        return 1
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        folder = os.path.dirname(os.path.abspath(path))
        hint = f" (create it first: mkdir -p {folder})" if not os.path.isdir(folder) else ""
        print(f"hado keygen: cannot create {path}: {exc.strerror}{hint}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    print(f"wrote a new cluster secret to {path} (mode 0600); copy it to every node")
    return 0


def cmd_plugins(args):
    dirs = []
    path = args.config or config_mod.DEFAULT_PATH
    try:
        with open(path, encoding="utf-8") as f:
            dirs = (json.load(f).get("node") or {}).get("plugin_dirs") or []
    except (OSError, ValueError, AttributeError):
        pass
    registry = Registry(dirs)
    for name, file in sorted(registry.paths().items()):
        try:
            plugin = registry.get(name)
        except PluginError as exc:
            print(f"{name:14} BROKEN: {exc}")
            continue
        print(f"{name:14} {'/'.join(plugin.kinds) or 'no kind'}: {plugin.summary}")
        for kind in plugin.kinds:
            accepted, required, _ = plugin.parameters(kind)
            shown = ", ".join(a if a in required else f"{a}={accepted[a]!r}" for a in accepted)
            print(f"{'':14}   {kind} args: {shown or 'none'}")
        actions = plugin.actions() if "resource" in plugin.kinds else []
        if actions:
            print(f"{'':14}   actions: {', '.join(actions)}")
        print(f"{'':14}   from {file}")
    return 0


def cmd_reference(args):
    print(config_mod.reference())
    return 0


# ----- talking to the daemon --------------------------------------------------------------

class ApiError(Exception):
    pass


def client_config(args):
    """The config as far as a client needs it (this node's address, the nodes, the token
    file), read even when it has other errors: a daemon keeps running the config it
    loaded, so a file broken since must not hide it. ApiError says exactly why not."""
    path = args.config or config_mod.DEFAULT_PATH
    try:
        raw = config_mod.read(path)
    except config_mod.ConfigError as exc:
        raise ApiError(f"{exc.errors[0]} (give --config FILE, or --url http://HOST:PORT)") from None
    config, errors, _ = config_mod.validate(raw, args.node)
    if config["node"]["name"] is None:
        why = config.get("_identity_error") or "; ".join(errors)
        raise ApiError(f"{path}: {why} (or give --url http://HOST:PORT)")
    config["_path"] = str(path)
    return config


def node_url(args, node=None):
    if args.url and node is None:
        return args.url.rstrip("/")
    config = client_config(args)
    name = node or config["node"]["name"]
    entry = config["cluster"]["nodes"].get(name)
    if entry is None:
        raise ApiError(f"node {name!r} is not in {config['_path']} (nodes: {', '.join(config['cluster']['nodes'])})")
    if node is None and config["node"]["listen"]:
        host, _, port = config["node"]["listen"].rpartition(":")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"
    if "host" not in entry:
        raise ApiError(f"cluster.nodes.{name}.url in {config['_path']} is not usable: {entry.get('url')!r}")
    return entry["url"].rstrip("/")


def token(args):
    """The admin token to send, read as whoever runs the command from node.token_file of
    the config (by default admin.token next to it, which the daemon makes); None with
    node.admin_open. With --url and no --config, the default config's if it has one."""
    if args.url and not args.config:
        try:
            return read_admin_token(config_mod.DEFAULT_PATH, args.node)
        except ApiError:
            return None   # the daemon's 401, if it wants one, says what is missing
    return read_admin_token(args.config or config_mod.DEFAULT_PATH, args.node)


def read_admin_token(path, node=None):
    try:
        raw = config_mod.read(path)
    except config_mod.ConfigError as exc:
        raise ApiError(f"{exc.errors[0]} (give --config FILE)") from None
    config = config_mod.validate(raw, node)[0]   # the node section is enough: no identity needed
    config["_path"] = str(path)
    file, default = config_mod.token_file(config)
    if file is None:
        return None
    try:
        with open(file, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        made = " (the daemon makes it at its first start: is hado running with this config?)" if default else ""
        raise ApiError(f"cannot read the admin token {file}: No such file or directory{made}") from None
    except OSError as exc:
        raise ApiError(f"cannot read the admin token {file}: {exc.strerror} "
                       "(admin commands need root or read access to it)") from None


def request(url, body=None, auth=None, timeout=5.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", f"Bearer {auth}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read())
        except ValueError:
            doc = {"error": exc.reason}
        return exc.code, doc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiError(f"cannot reach the hado daemon at {url}: {reason} (is it running? "
                       "systemctl status hado / python3 -m hado --foreground)") from None


def get(args, path):
    status, doc = request(node_url(args) + path)
    if status >= 400 and path != "/health":
        raise ApiError(doc.get("error", f"HTTP {status}"))
    return doc


def post(args, path, body=None, node=None):
    url = node_url(args, node) + path
    auth = token(args)
    status, doc = request(url, body or {}, auth=auth)
    if status == 401 and not auth:
        raise ApiError(f"{doc.get('error', 'HTTP 401')} (with --url, give --config FILE too: the token is the one "
                       "in its node.token_file)")
    if status >= 400:
        raise ApiError(doc.get("error", f"HTTP {status}"))
    return doc


def cmd_status(args):
    while True:
        snap = get(args, "/v1/state")
        if args.json:
            print(json.dumps(snap, indent=2))
        else:
            try:
                view = get(args, "/v1/view")
            except ApiError:
                view = None
            if args.watch:
                print("\033[2J\033[H", end="")
            print(format_status(snap, view))
        if not args.watch:
            return 0
        time.sleep(args.watch)


def format_status(snap, view=None):
    lines = []
    q = snap["quorum"]
    flags = [f for f in ("standby", "maintenance") if snap.get(f)]
    lines.append(f"Cluster {snap['cluster']}: node {snap['node']} (hado {snap['version']}, up {snap['uptime_s']:.0f} s)"
                 f"{' [' + ', '.join(flags).upper() + ']' if flags else ''}")
    lines.append(f"  health: {'healthy' if snap['healthy'] else 'UNHEALTHY'}; quorum: "
                 f"{'ok' if q['ok'] else 'LOST'} ({q['votes']} vote{'s' if q['votes'] != 1 else ''}, "
                 f"{q['needed']} needed)")
    if snap.get("config_error"):
        lines.append(f"  CONFIG ERROR: {snap['config_error']}")
    if snap.get("admin_open"):
        lines.append("  ADMIN OPEN: node.admin_open is true: admin requests need no token (any local user may send them)")
    lines.append("")
    lines.append("Nodes:")
    nodes = (view or {}).get("nodes") or {snap["node"]: {}}
    for name in sorted(set(nodes) | set(snap["peers"]) | {snap["node"]}):
        info = nodes.get(name, {})
        report = info.get("report") or {}
        extra = []
        if info.get("witness"):
            extra.append("witness")
        if "priority" in info:
            extra.append(f"priority {info['priority']}")
        if report.get("standby"):
            extra.append("STANDBY")
        if report and not report.get("healthy", True):
            extra.append("UNHEALTHY: " + (report.get("why_unhealthy") or ""))
        if name == snap["node"]:
            state = "self"
        else:
            peer = snap["peers"].get(name, {})
            state = peer.get("status", "unknown")   # local.peer_status, as the election sees it
            if peer.get("left_s") is not None:
                extra.append(f"said goodbye {peer['left_s']:.1f} s ago (hado stopped there cleanly)")
            elif peer.get("last_seen_s") is not None:
                extra.append(f"last heard {peer['last_seen_s']:.1f} s ago")
            if peer.get("error"):
                extra.append(f"error: {peer['error']}")
        lines.append(f"  {name:12} {state:8} {', '.join(extra)}")
    if snap["monitors"]:
        lines.append("")
        lines.append("Monitors:")
        for name, m in sorted(snap["monitors"].items()):
            lines.append(f"  {name:12} {monitor_word(m):8} {m['message']}")
    for app, entry in sorted(snap["apps"].items()):
        lines.append("")
        lines.append(f"App {app}: active on {entry['active_node'] or 'NO NODE'}; here: {entry['role']}"
                     f" (epoch {entry['epoch']}{', eligible' if entry['eligible'] else ', not eligible'})")
        lines.append(f"  why: {entry['reason']}")
        if entry.get("failure"):
            f = entry["failure"]
            left = f" (expires in {f['expires_in_s']:.0f} s)" if "expires_in_s" in f else " (until hado cleanup)"
            lines.append(f"  FAILED here: {f['reason']}{left}")
        if entry.get("move"):
            lines.append(f"  move requested to {entry['move']['to']} (expires in {entry['move'].get('expires_in_s', 0):.0f} s;"
                         f" cancel: hado move {app} --cancel)")
        for name, m in sorted(entry["monitors"].items()):
            lines.append(f"  monitor  {name:12} {monitor_word(m):8} {m['message']}")
        for name, r in entry["resources"].items():
            lines.append(f"  resource {name:12} {r['state']:9} fails {r['fail_count']:<3} {r['message']}")
    if snap["events"]:
        lines.append("")
        lines.append("Recent events:")
        for event in snap["events"][-8:]:
            lines.append(f"  {event['at']}  {event['what']}: {event['why']}")
    return "\n".join(lines)


def monitor_word(m):
    return "ok" if m["ok"] else ("pending" if m["ok"] is None else "FAILED")


def cmd_explain(args):
    """The same decide() the daemon runs, on its view (or a saved one) changed by the --if clauses."""
    fence_configured, fenced = False, ()
    if args.view_file:
        view, fence_configured, fenced = read_view_file(args.view_file)
    else:
        view = get(args, "/v1/view")
    if args.app not in view["apps"]:
        raise ApiError(f"no app named {args.app!r} (apps: {', '.join(view['apps']) or 'none'})")
    changes = []
    for item in args.what_if:
        name, _, what = item.partition("=")
        if name not in view["nodes"] or what not in ("down", "standby", "unhealthy"):
            raise ApiError(f"--if {item!r}: expected NODE=down|standby|unhealthy with NODE one of "
                           f"{', '.join(view['nodes'])}")
        changes.append((name, what))
    try:
        view = election.what_if(view, changes)
    except ValueError as exc:
        raise ApiError(f"--if: {exc}") from None
    print(explain_text(view, args.app, changes, fence_configured, fenced))
    return 0


def read_view_file(path):
    """``(view, fence_configured, fenced)`` from a file: a bare ``GET /v1/view`` answer,
    or a regression case of tests/views/ (its "view", with its fencing facts)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise ApiError(f"--view: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ApiError(f"--view: {path} is not JSON: {exc}") from None
    fence_configured, fenced = False, ()
    if isinstance(doc, dict) and isinstance(doc.get("view"), dict) and "me" not in doc:
        fence_configured, fenced = bool(doc.get("fence_configured")), tuple(doc.get("fenced") or ())
        doc = doc["view"]
    missing = [k for k in ("me", "quorum", "dead_after", "nodes", "apps") if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise ApiError(f"--view: {path} is not a view (GET /v1/view) nor a tests/views/ case: "
                       f"no {', '.join(missing)}")
    return doc, fence_configured, fenced


def explain_text(view, app, changes=(), fence_configured=False, fenced=()):
    decision = election.decide(view, fence_configured, fenced)[app]
    node, why = election.verdict(view, app, decision)
    prefix = "if " + " and ".join(f"{n} were {w}" for n, w in changes) + ": " if changes else ""
    if node:
        line = f"{prefix}{app} would be active on {node}: {why}"
    else:
        line = f"{prefix}{app} would run nowhere: {why}"
    return f"{line}\non {view['me']}: {decision['reason']}"


def cmd_standby(args, on=True):
    doc = post(args, "/v1/node/standby" if on else "/v1/node/online", node=args.target)
    print(f"{doc['node']}: {'standby' if on else 'online'}")
    return 0


def cmd_move(args):
    if args.cancel:
        doc = post(args, f"/v1/apps/{args.app}/move", {"cancel": True})
        print(f"{doc['app']}: move to {doc['cancelled']} cancelled")
        return 0
    if not args.target:
        raise ApiError("give the node to move to (hado move APP NODE), or --cancel")
    doc = post(args, f"/v1/apps/{args.app}/move", {"node": args.target})
    print(f"{doc['app']}: moving to {doc['move_to']} (watch it with: hado status; cancel: hado move "
          f"{doc['app']} --cancel)")
    return 0


def cmd_maintenance(args):
    doc = post(args, "/v1/maintenance", {"on": args.switch == "on"})
    print(f"maintenance {'on' if doc['maintenance'] else 'off'}")
    return 0


def cmd_cleanup(args):
    post(args, f"/v1/apps/{args.app}/cleanup")
    print(f"{args.app}: failures and fail counts reset on this node")
    return 0


def cmd_action(args):
    doc = post(args, f"/v1/apps/{args.app}/resources/{args.resource}/{args.action}")
    print(json.dumps(doc.get("result")))
    return 0


def cmd_demo(args):
    from . import demo
    return demo.main(duration=args.duration)


COMMANDS = {
    "status": cmd_status, "explain": cmd_explain, "check-config": cmd_check_config, "keygen": cmd_keygen,
    "plugins": cmd_plugins, "standby": lambda a: cmd_standby(a, True), "online": lambda a: cmd_standby(a, False),
    "move": cmd_move, "maintenance": cmd_maintenance, "cleanup": cmd_cleanup, "action": cmd_action,
    "demo": cmd_demo, "config-reference": cmd_reference,
}
