"""Load a config file, apply defaults, validate it into a list of path-named errors.

The schema below is the one place where keys, types and defaults are written down;
docs/admin.rst's reference is generated from it (``python3 -m hado config-reference``).
Validation collects every error, each naming its JSON path, the bad value and what is
expected, and reports them together. Unknown keys are errors.
"""

import copy
import ipaddress
import json
import math
import os
import re
import secrets
import socket
import sys
from urllib.parse import urlsplit

from . import bounds, states
from .plugin import PluginError, Registry

DEFAULT_PATH = "/etc/hado/config.json"
DEFAULT_PORT = 6185

# A field: (type, default, help). REQUIRED as default means the key must be present.
REQUIRED = object()
NUMBER = (int, float)
MAX_DEPTH = 64          # levels of lists and objects a config may nest (a real one needs about 8)
MAX_NUMBER = 10 ** 9    # seconds, counts, priorities: larger is a mistake (and beyond what a timer takes)

NODE_ENTRY = {
    "url": (str, REQUIRED, "http://HOST:PORT where this node's API (TCP) and heartbeats (UDP) listen"),
    "priority": (int, 0, "higher wins the election when no node holds the app"),
    "witness": (bool, False, "runs no apps; answers heartbeats and votes (makes 2-node clusters safe)"),
}
CLUSTER = {
    "name": (str, "hado", "cluster name; peers with another name are ignored"),
    "secret_file": ((str, type(None)), None, "file with the shared secret that signs heartbeats (hado keygen)"),
    "nodes": (dict, None, "node name -> {url, priority, witness}; leave out for a one-node cluster"),
    "heartbeat": (NUMBER, 0.5, "seconds between two heartbeats to each peer"),
    "dead_after": (NUMBER, 2.0, "a peer silent this long (seconds) is down; at least 3 x heartbeat"),
    "quorum": (str, "majority", "'majority' (of votes, self included) or 'none' (2 nodes, split-brain risk)"),
    "i_understand_split_brain": (bool, False, "required to run quorum 'none' without a fence plugin"),
    "fence": ((dict, type(None)), None, "{plugin, args, timeout}: run before taking over from a silent node"),
    "notify": (list, [], "list of {plugin, args, timeout}: told about every role decision"),
}
NODE = {
    "name": (str, None, "this node's entry in cluster.nodes; leave it out of a file shared by several nodes "
                        "(found from --node, HADO_NODE, the hostname, or the node whose url address is local)"),
    "listen": (str, None, "HOST:PORT to listen on (default: host and port of this node's url)"),
    "plugin_dirs": (list, [], "directories searched for plugins before the built-in ones"),
    "token_file": ((str, type(None)), None, "file with the admin token that admin POSTs must send (Authorization: "
                                            "Bearer TOKEN); null: admin.token next to the config file, made by the "
                                            "daemon at its start when missing"),
    "admin_open": (bool, False, "accept admin POSTs without the token (any local user may then stop or move the "
                                "apps; a warning at every start, and in the status)"),
    "admin_remote": (bool, False, "accept admin POSTs from other hosts too (with the token; copy the same "
                                  "token_file to every node)"),
}
MONITOR = {
    "plugin": (str, REQUIRED, "monitor plugin name"),
    "args": (dict, {}, "keyword arguments for the plugin's check()"),
    "interval": (NUMBER, 2.0, "seconds between checks"),
    "timeout": (NUMBER, 5.0, "seconds before a check counts as failed"),
    "rise": (int, 2, "passes in a row before a failed monitor is ok again"),
    "fall": (int, 3, "failures in a row before the monitor is failed"),
    "vital": (bool, True, "a failed vital monitor makes the node (system) or the app (app monitor) ineligible"),
    "other": (bool, False, "app monitors: ask the plugin's other() before the app starts here; a start is "
                           "refused while it names another holder (system monitors: unused)"),
}
RESOURCE = {
    "name": (str, REQUIRED, "unique within the app"),
    "plugin": (str, REQUIRED, "resource plugin name"),
    "args": (dict, {}, "keyword arguments for the plugin's functions"),
    "kind": (str, states.ACTIVE_STANDBY, "active-standby | clone | promotable"),
    "interval": (NUMBER, 2.0, "seconds between two alive() checks"),
    "timeout": (NUMBER, 10.0, "seconds for alive() and other actions"),
    "start_timeout": (NUMBER, 30.0, "seconds for start()"),
    "stop_timeout": (NUMBER, 30.0, "seconds for stop()"),
    "on_fail": (str, states.RESTART, "restart | failover | ignore"),
    "max_restarts": (int, 3, "restarts within restart_window before the app fails here"),
    "restart_window": (NUMBER, 300.0, "seconds over which restarts are counted"),
    "other": (bool, True, "ask the plugin's other() right before start and promote; a start is refused while "
                          "it names another holder (false: start without asking, logged)"),
}
APP = {
    "stickiness": (bool, True, "a running app stays where it is"),
    "preferred": ((str, type(None)), None, "node preferred when no node holds the app"),
    "preempt": (bool, False, "move the app back to 'preferred' when it is eligible again"),
    "failure_timeout": (NUMBER, 600.0, "seconds after which a failure here expires (0 = never)"),
    "monitors": (dict, {}, "name -> monitor, judging this app on this node"),
    "resources": (list, REQUIRED, "started in list order, stopped in reverse"),
}
FENCE = {
    "plugin": (str, REQUIRED, "fence plugin name"),
    "args": (dict, {}, "keyword arguments for the plugin's fence(node, ...)"),
    "timeout": (NUMBER, 60.0, "seconds before a fence counts as failed (no takeover then)"),
}
NOTIFY = {
    "plugin": (str, REQUIRED, "notify plugin name"),
    "args": (dict, {}, "keyword arguments for the plugin's notify(event, ...)"),
    "timeout": (NUMBER, 10.0, "seconds before a notification is given up"),
}
TOP = {
    "cluster": (dict, {}, "the cluster: nodes, secret, timings, quorum"),
    "node": (dict, {}, "this node's own settings"),
    "monitors": (dict, {}, "name -> system monitor, judging this node"),
    "apps": (dict, {}, "name -> app"),
}
SCHEMAS = {"": TOP, "cluster": CLUSTER, "node": NODE, "cluster.nodes.*": NODE_ENTRY,
           "cluster.fence": FENCE, "cluster.notify[]": NOTIFY,
           "monitors.*": MONITOR, "apps.*": APP, "apps.*.monitors.*": MONITOR,
           "apps.*.resources[]": RESOURCE}


class ConfigError(Exception):
    """Raised with the list of errors when a config cannot be used."""

    def __init__(self, errors):
        super().__init__("\n".join(errors))
        self.errors = errors


def type_name(expected):
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             dict: "an object", list: "a list", type(None): "null"}
    if isinstance(expected, tuple):
        if expected == NUMBER:
            return "a number"
        return " or ".join(names[t] for t in expected)
    return names[expected]


def is_type(value, expected):
    if isinstance(value, bool) and expected in (int, NUMBER, float):
        return False
    if isinstance(expected, tuple):
        return any(is_type(value, t) for t in expected)
    return isinstance(value, expected)


def join(path, key):
    return f"{path}.{key}" if path else str(key)


def shown(value, limit=60):
    """``value`` as JSON for a message, cut at ``limit``: an integer too long to print
    (and anything holding one) is described instead."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        return json.dumps(value)[:limit]
    except (ValueError, TypeError, RecursionError):
        return f"{type_name(type(value)) if type(value) in (dict, list) else 'a value'} too large to show"


def number_problem(value):
    """Why the number ``value`` of a schema field cannot be used, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if abs(value) > MAX_NUMBER:
        return f"number too large, got {shown(value, 30)} (at most {MAX_NUMBER})"
    return None


def too_deep(value, limit=MAX_DEPTH, keep=6):
    """Where ``value`` nests lists and objects more than ``limit`` levels deep: a list of
    ``(path, steps)``, each the path of the deepest object key within its first ``keep``
    steps ("" when there is none). Iterative, and never deeper than ``limit``."""
    found = []
    stack = [(value, (), (), 0)]   # value, its first keep steps, the cut, depth
    while stack:
        item, steps, cut, depth = stack.pop()
        if found and steps[:len(found[-1][1])] == found[-1][1]:
            continue   # under a place already found
        if not isinstance(item, (dict, list)):
            continue
        if depth >= limit:
            found.append((format_steps(cut), cut))
            continue
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in reversed(list(pairs)):
            step = (isinstance(item, dict), key)
            inner = steps + (step,) if len(steps) < keep else steps
            stack.append((child, inner, inner if step[0] and len(steps) < keep else cut, depth + 1))
    return found


def format_steps(steps):
    path = ""
    for is_key, key in steps:
        path = join(path, key) if is_key else f"{path}[{key}]"
    return path


def prune(raw, steps):
    """``raw`` with the value at ``steps`` replaced by None (the containers on the way
    copied, ``raw`` itself unchanged)."""
    if not steps:
        return None
    root = copy.copy(raw)
    item = root
    for _, key in steps[:-1]:
        item[key] = copy.copy(item[key])
        item = item[key]
    item[steps[-1][1]] = None
    return root


class Validator:
    """Walks a raw config dict, filling defaults into a copy and collecting errors."""

    def __init__(self, registry):
        self.registry = registry
        self.errors = []
        self.warnings = []
        self.pruned = []   # paths of values cut off for nesting too deep: no other error under them

    def error(self, path, message):
        for cut in self.pruned:
            if cut == "" or path == cut or path.startswith((cut + ".", cut + "[")):
                return
        self.errors.append(f"{path or '(top level)'}: {message}")

    def section(self, raw, schema, path):
        """A copy of ``raw`` with defaults applied; errors for unknown/missing/mistyped keys."""
        if not isinstance(raw, dict):
            self.error(path, f"expected an object, got {shown(raw)}")
            raw = {}
        out = {}
        for key, value in raw.items():
            if key not in schema:
                self.error(join(path, key), f"unknown key (expected one of: {', '.join(schema)})")
        for key, (expected, default, _help) in schema.items():
            if key in raw:
                value = raw[key]
                if not is_type(value, expected):
                    self.error(join(path, key), f"expected {type_name(expected)}, got {shown(value)}")
                    value = copy.deepcopy(default) if default is not REQUIRED else None
                elif expected in (NUMBER, int) and number_problem(value):
                    self.error(join(path, key), number_problem(value))
                    value = copy.deepcopy(default)
                elif expected in (NUMBER,) and value < 0:
                    self.error(join(path, key), f"must not be negative, got {value}")
                out[key] = value
            elif default is REQUIRED:
                self.error(join(path, key), "missing (required)")
                out[key] = None
            else:
                out[key] = copy.deepcopy(default)
        return out

    def plugin_args(self, spec, kind, path):
        if not isinstance(spec.get("plugin"), str):
            return
        try:
            plugin = self.registry.get(spec["plugin"])
        except PluginError as exc:
            self.error(join(path, "plugin"), str(exc))
            return
        for key, message in plugin.check_args(kind, spec.get("args") or {}):
            self.error(join(join(path, "args"), key) if key else join(path, "args"), message)

    def monitor(self, raw, path):
        spec = self.section(raw, MONITOR, path)
        for key in ("interval", "timeout"):
            if isinstance(spec[key], NUMBER) and spec[key] <= 0:
                self.error(join(path, key), f"must be greater than 0, got {spec[key]}")
        for key in ("rise", "fall"):
            if isinstance(spec[key], int) and spec[key] < 1:
                self.error(join(path, key), f"must be at least 1, got {spec[key]}")
        self.plugin_args(spec, "monitor", path)
        return spec

    def resource(self, raw, path):
        spec = self.section(raw, RESOURCE, path)
        if spec["kind"] not in states.KINDS:
            self.error(join(path, "kind"), f"expected one of {', '.join(states.KINDS)}, got {spec['kind']!r}")
        if spec["on_fail"] not in states.ON_FAIL:
            self.error(join(path, "on_fail"), f"expected one of {', '.join(states.ON_FAIL)}, got {spec['on_fail']!r}")
        for key in ("interval", "timeout", "start_timeout", "stop_timeout"):
            if isinstance(spec[key], NUMBER) and spec[key] <= 0:
                self.error(join(path, key), f"must be greater than 0, got {spec[key]}")
        self.plugin_args(spec, "resource", path)
        if isinstance(spec.get("plugin"), str):
            try:
                plugin = self.registry.get(spec["plugin"])
                if plugin.function("renew") and not plugin.function("lease"):
                    self.warnings.append(f"{join(path, 'plugin')}: plugin '{spec['plugin']}' has renew() but no "
                                         "lease(): hado cannot know how long its lease lasts and treats the "
                                         "resource as unleased (docs/plugins.rst, the lease contract)")
            except PluginError:
                pass  # already reported by plugin_args
        if spec["kind"] == states.PROMOTABLE and isinstance(spec.get("plugin"), str):
            try:
                plugin = self.registry.get(spec["plugin"])
                if not (plugin.function("promote") and plugin.function("demote")):
                    self.error(join(path, "kind"), f"kind 'promotable' needs a plugin with promote() and "
                                                   f"demote(); '{spec['plugin']}' has not both")
            except PluginError:
                pass  # already reported by plugin_args
        return spec

    def named(self, raw, path, build):
        if not isinstance(raw, dict):
            self.error(path, "expected an object of name -> settings")
            return {}
        return {name: build(value, join(path, name)) for name, value in raw.items()}

    def app(self, raw, path):
        spec = self.section(raw, APP, path)
        spec["monitors"] = self.named(spec["monitors"], join(path, "monitors"), self.monitor)
        resources, seen = [], set()
        for index, item in enumerate(spec["resources"] or []):
            rpath = f"{path}.resources[{index}]"
            res = self.resource(item, rpath)
            if res.get("name") in seen:
                self.error(join(rpath, "name"), f"duplicate resource name {res['name']!r} in this app")
            seen.add(res.get("name"))
            resources.append(res)
        if spec["resources"] is not None and not resources:
            self.error(join(path, "resources"), "an app needs at least one resource")
        spec["resources"] = resources
        return spec


class IdentityError(Exception):
    """This machine's node cannot be found; ``key`` names what to change."""

    def __init__(self, key, message):
        super().__init__(message)
        self.key = key


def env_name():
    return os.environ.get("HADO_NODE") or None


def is_local(host):
    """The address ``host`` (a name or a literal) resolves to, if it is on this machine
    and not loopback; else None. Binding to port 0 succeeds only for a local address."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    for family, _, _, _, sockaddr in infos:
        address = sockaddr[0]
        try:
            if ipaddress.ip_address(address.split("%")[0]).is_loopback:
                continue
        except ValueError:
            continue
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.bind((address, 0) if family == socket.AF_INET else (address, 0, 0, 0))
            return address
        except OSError:
            continue
    return None


def identify(nodes, node_name=None, configured=None, hostname=None, local=is_local):
    """``(name, how)``: which entry of ``nodes`` this machine is, and how that was found.

    In this order: --node, $HADO_NODE, node.name, the hostname if it is a node name,
    the only node of a one-node cluster, the one node whose url host is an address of
    this machine (not loopback). Raises
    IdentityError naming the candidates when none or several match.
    """
    names = ", ".join(nodes)
    for key, value, label in (("--node", node_name, "--node"), ("HADO_NODE", env_name(), "$HADO_NODE"),
                              ("node.name", configured, "node.name")):
        if value:
            if value not in nodes:
                raise IdentityError(key, f"this node is {value!r} (from {label}), which is not in "
                                         f"cluster.nodes ({names})")
            return value, f"from {label}"
    hostname = socket.gethostname() if hostname is None else hostname
    short = hostname.split(".")[0]
    for candidate in (hostname, short):
        if candidate in nodes:
            return candidate, f"the hostname is {hostname!r}"
    if len(nodes) == 1:
        return next(iter(nodes)), "the only node in cluster.nodes"
    found = []
    for name, entry in nodes.items():
        host = entry.get("host")
        address = local(host) if host else None
        if address:
            found.append((name, address))
    if len(found) == 1:
        name, address = found[0]
        return name, f"its url address {address} is an address of this machine"
    addresses = ", ".join(f"{n} {e.get('host', '?')}" for n, e in nodes.items())
    if found:
        raise IdentityError("--node", "cannot tell which node this machine is: the url addresses of "
                                      f"{' and '.join(n for n, _ in found)} are all on this machine; "
                                      "start hado with --node NAME or set HADO_NODE=NAME")
    raise IdentityError("--node", f"cannot tell which node of cluster.nodes this machine is: the hostname "
                                  f"{hostname!r} is not a node name and no node's url address is an address "
                                  f"of this machine (not counting loopback) (nodes: {addresses}); start hado "
                                  "with --node NAME or set HADO_NODE=NAME")


def validate(raw, node_name=None, registry=None):
    """Return ``(config, errors, warnings)``; ``config`` has every default filled in.

    ``node_name`` (from --node) picks this node's entry in cluster.nodes; without it,
    $HADO_NODE, node.name, the hostname, then the node whose url address is local
    (:func:`identify`). ``config["node"]["name"]`` is None when none was found, and
    ``config["_identity"]`` says how it was found. Files named by the config are not
    read here: :func:`load` checks them too.
    """
    if registry is None:
        plugin_dirs = []
        if isinstance(raw, dict) and isinstance(raw.get("node"), dict):
            dirs = raw["node"].get("plugin_dirs")
            if isinstance(dirs, list):
                plugin_dirs = [d for d in dirs if isinstance(d, str)]
        registry = Registry(plugin_dirs)
    v = Validator(registry)
    for path, steps in too_deep(raw):   # cut off, so that nothing below recurses into them
        v.error(path, f"nested deeper than {MAX_DEPTH} levels of lists and objects")
        v.pruned.append(path)
        raw = prune(raw, steps)
    config = v.section(raw, TOP, "")
    cluster = config["cluster"] = v.section(config["cluster"], CLUSTER, "cluster")
    node = config["node"] = v.section(config["node"], NODE, "node")
    config["monitors"] = v.named(config["monitors"], "monitors", v.monitor)
    config["apps"] = v.named(config["apps"], "apps", v.app)

    # Nodes: a config without cluster.nodes is a one-node cluster on 127.0.0.1:6185.
    nodes_raw = cluster["nodes"]
    explicit_nodes = nodes_raw is not None
    if not explicit_nodes:
        nodes_raw = {(node_name or env_name() or node["name"] or "local"): {"url": f"http://127.0.0.1:{DEFAULT_PORT}"}}
    elif isinstance(nodes_raw, dict) and not nodes_raw:
        v.error("cluster.nodes", "is empty: list every node of the cluster (this one included), "
                                 "or leave the key out for a one-node cluster")
    cluster["nodes"] = v.named(nodes_raw, "cluster.nodes", lambda r, p: v.section(r, NODE_ENTRY, p))
    for peer, entry in cluster["nodes"].items():
        url = entry.get("url")
        if isinstance(url, str):
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                v.error(f"cluster.nodes.{peer}.url", f"expected http://HOST:PORT, got {url!r}")
            else:
                try:
                    entry["host"], entry["port"] = parts.hostname, parts.port or DEFAULT_PORT
                except ValueError:
                    v.error(f"cluster.nodes.{peer}.url", f"bad port in {url!r}")
    name, how = None, None
    if not explicit_nodes:
        name, how = next(iter(cluster["nodes"])), "a one-node cluster: cluster.nodes is left out"
    elif cluster["nodes"]:
        try:
            name, how = identify(cluster["nodes"], node_name, node["name"], local=is_local)
        except IdentityError as exc:
            v.error(exc.key, str(exc))
            config["_identity_error"] = f"{exc.key}: {exc}"
    if explicit_nodes and len(cluster["nodes"]) > 1 and node["name"] and not node_name and not env_name():
        v.warnings.append(f"node.name: {node['name']!r} in a file that lists {len(cluster['nodes'])} nodes: "
                          f"copied unchanged to every machine, every node would believe it is {node['name']}; "
                          "leave node.name out (each node finds its own name) or use --node / HADO_NODE")
    node["name"] = name
    config["_identity"] = how
    config["_listen_key"] = "node.listen" if node["listen"] is not None else f"cluster.nodes.{name}.url"
    # One file for every node: "{node}" in any string argument becomes this node's name.
    for spec in list(config["monitors"].values()) + [m for a in config["apps"].values() for m in a["monitors"].values()] \
            + [r for a in config["apps"].values() for r in a["resources"]]:
        if isinstance(spec.get("args"), dict):
            spec["args"] = expand_node(spec["args"], name or "")
    me = cluster["nodes"].get(name, {}) if name else {}
    if node["listen"] is None and "host" in me:
        node["listen"] = f"{me['host']}:{me['port']}"
    if node["listen"] is not None:
        host, _, port = node["listen"].rpartition(":")
        if not host or not re.fullmatch("[0-9]+", port):   # not str.isdigit(): it takes "²"
            v.error("node.listen", f"expected HOST:PORT, got {node['listen']!r}")
        elif not 1 <= int(port) <= 65535:
            v.error("node.listen", f"port must be 1-65535, got {node['listen']!r}")
    if node["admin_remote"] and node["admin_open"]:
        v.error("node.admin_remote", "remote admin requests need the admin token: not with node.admin_open "
                                     "(refusing tokenless remote admin)")
    for key in ("preferred",):
        for app_name, app in config["apps"].items():
            if app.get(key) is not None and app[key] not in cluster["nodes"]:
                v.error(f"apps.{app_name}.{key}", f"unknown node {app[key]!r} (nodes: {', '.join(cluster['nodes'])})")

    # Timings and quorum.
    hb, dead = cluster["heartbeat"], cluster["dead_after"]
    if isinstance(hb, NUMBER) and hb <= 0:
        v.error("cluster.heartbeat", f"must be greater than 0, got {hb}")
    elif isinstance(dead, NUMBER) and dead < 3 * hb:
        v.error("cluster.dead_after", f"must be at least 3 x heartbeat ({3 * hb:g} s), got {dead:g}: "
                                      "a single lost heartbeat must never look like a dead node")
    if cluster["quorum"] not in ("majority", "none"):
        v.error("cluster.quorum", f"expected 'majority' or 'none', got {cluster['quorum']!r}")
    if cluster["fence"] is not None:
        fence = v.section(cluster["fence"], FENCE, "cluster.fence")
        v.plugin_args(fence, "fence", "cluster.fence")
        cluster["fence"] = fence
    cluster["notify"] = [v.section(item, NOTIFY, f"cluster.notify[{i}]") for i, item in enumerate(cluster["notify"])]
    for i, item in enumerate(cluster["notify"]):
        v.plugin_args(item, "notify", f"cluster.notify[{i}]")

    voters = [n for n in cluster["nodes"]]
    if len(voters) > 1:
        if not cluster["secret_file"]:
            v.error("cluster.secret_file", "a cluster of several nodes needs a shared secret file (hado keygen FILE)")
        if cluster["quorum"] == "none":
            if len(voters) > 2:
                v.error("cluster.quorum", "'none' is only allowed for two nodes; use 'majority'")
            elif cluster["fence"] is None and not cluster["i_understand_split_brain"]:
                v.error("cluster.quorum", "'none' without a fence plugin risks split-brain (both nodes active); "
                                          "add cluster.fence or set cluster.i_understand_split_brain to true")
            else:
                v.warnings.append("cluster.quorum: 'none': if the two nodes lose sight of each other, both "
                                  "may run the apps (split-brain); fencing is the only protection")
        elif len(voters) == 2:
            v.warnings.append("cluster.nodes: two nodes without a witness: if either node dies, the other "
                              "has no majority and stops every app; add a witness node")
    if not v.errors:   # a lease() that fails or hangs leaves its resource unleased: say so
        for app_name, app in config["apps"].items():
            for index, res in enumerate(app["resources"]):
                try:
                    plugin = registry.get(res["plugin"])
                except PluginError:
                    continue
                problems = []
                lease = bounds.plugin_lease(plugin, res["args"], problems)
                if lease:
                    bounds.plugin_lease_slack(plugin, res["args"], problems)
                v.warnings += [f"apps.{app_name}.resources[{index}].plugin: {problem} (docs/plugins.rst, the "
                               "lease contract)" for problem in problems]
                h = config["cluster"]["heartbeat"]
                if lease and lease < 2 * h:
                    # The leases thread renews once a heartbeat: a lease shorter than two
                    # would run out between renewals on a healthy node.
                    v.error(f"apps.{app_name}.resources[{index}].args.lease",
                            f"{lease:g} s is shorter than two heartbeats ({2 * h:g} s): it is renewed once a "
                            f"heartbeat and would run out on a healthy node; use at least {2 * h:g} s or a "
                            "shorter cluster.heartbeat")
    return config, v.errors, v.warnings


def expand_node(value, name):
    """Replace "{node}" in every string inside ``value`` (dicts and lists walked)."""
    if isinstance(value, str):
        return value.replace("{node}", name)
    if isinstance(value, list):
        return [expand_node(v, name) for v in value]
    if isinstance(value, dict):
        return {k: expand_node(v, name) for k, v in value.items()}
    return value


def read(path):
    """The raw JSON document of ``path``; ConfigError when unreadable or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        raw = json.loads(text, parse_int=parse_int)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]) from None
    except RecursionError:   # the reader recursed before MAX_DEPTH could be checked
        raise ConfigError([f"{path}: nested deeper than {MAX_DEPTH} levels of lists and objects"]) from None
    deep = too_deep(raw)
    if deep:
        raise ConfigError([f"{path}: {where or '(top level)'}: nested deeper than {MAX_DEPTH} levels of lists "
                           "and objects" for where, _ in deep])
    return raw


def parse_int(text):
    """An integer of a JSON file. One longer than int() reads (sys.get_int_max_str_digits())
    becomes a power of ten with as many digits: only its size matters, since no number
    of the schema may be that large (and reading it exactly would take minutes)."""
    digits = len(text.lstrip("-"))
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    if limit and digits > limit:
        return (-1 if text.startswith("-") else 1) * 10 ** (digits - 1)
    return int(text)


def load(path, node_name=None, files=True):
    """Read and validate ``path``, files it names included (``files``); raises ConfigError
    with every problem found. The daemon, ``check-config`` and a reload all come through
    here, so check-config refuses exactly what the daemon would refuse."""
    config, errors, warnings = validate(read(path), node_name)
    config["_path"] = str(path)
    if not errors and files:
        errors += file_errors(config)
    if errors:
        raise ConfigError(errors)
    config["_warnings"] = warnings
    return config


def file_errors(config):
    """Errors in the files and addresses a valid config names: the secret, the token,
    and this node's listen address (it must be an address of this machine)."""
    errors = []
    cluster = config["cluster"]
    if len(cluster["nodes"]) > 1:
        try:
            read_secret(cluster["secret_file"])
        except ConfigError as exc:
            errors += exc.errors
    path, default = token_file(config)
    if path and not (default and not os.path.exists(path)):   # the default one is made at start
        try:
            read_token(path)
        except ConfigError as exc:
            errors += exc.errors
    listen = listen_problem(config)
    if listen:
        errors.append(listen)
    return errors


def listen_problem(config):
    """Why this machine cannot listen on the node's listen address, else None."""
    host = config["node"]["listen"].rpartition(":")[0].strip("[]") if config["node"]["listen"] else ""
    if host in ("", "0.0.0.0", "::"):
        return None
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
    except OSError as exc:
        return (f"{config['_listen_key']}: cannot listen on {host}: {exc.strerror} "
                f"(is {host} an address of this machine?)")
    return None


def read_secret(path):
    """The cluster secret; refuses a missing, short, or group/world-readable file."""
    if "\x00" in str(path):
        raise ConfigError([f"cluster.secret_file: {path!r}: a file name cannot hold a NUL character"])
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError([f"cluster.secret_file: cannot read {path}: {exc.strerror} "
                           f"(create one with: hado keygen {path}, then copy it to every node)"]) from None
    if mode & 0o077:
        raise ConfigError([f"cluster.secret_file: {path} is readable by others (mode {mode & 0o777:o}); "
                           f"run: chmod 600 {path}"])
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise ConfigError([f"cluster.secret_file: cannot read {path}: {exc.strerror}"]) from None
    if len(secret) < 16:
        raise ConfigError([f"cluster.secret_file: {path} holds fewer than 16 bytes; use hado keygen"])
    return secret


TOKEN_NAME = "admin.token"


def token_file(config):
    """``(path, default)``: the admin token file admin requests need, and whether it is
    the default (admin.token next to the config file, which the daemon makes); ``(None,
    False)`` with node.admin_open."""
    node = config["node"]
    if node["admin_open"]:
        return None, False
    if node["token_file"]:
        return node["token_file"], False
    folder = os.path.dirname(os.path.abspath(config.get("_path") or DEFAULT_PATH))
    return os.path.join(folder, TOKEN_NAME), True


def read_token(path):
    """The admin token in ``path`` (None for no path); refuses a missing, empty, or
    world-readable file (a group may read it: an admin group)."""
    if not path:
        return None
    hint = f"leave node.token_file out for {TOKEN_NAME} next to the config, made at start"
    if "\x00" in str(path):
        raise ConfigError([f"node.token_file: {path!r}: a file name cannot hold a NUL character"])
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise ConfigError([f"node.token_file: cannot read {path}: {exc.strerror} "
                           f"(create it with: hado keygen {path}; or {hint})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"node.token_file: {path} is not text"]) from None
    if mode & 0o006:
        raise ConfigError([f"node.token_file: {path} is readable or writable by every user (mode {mode & 0o777:o}), "
                           f"who could then send admin requests; run: chmod 600 {path}"])
    if len(token) < 16:
        raise ConfigError([f"node.token_file: {path} holds {'nothing' if not token else 'fewer than 16 characters'}; "
                           f"use hado keygen, or {hint}"])
    return token


def ensure_token(path):
    """``(token, made)``: read_token(path), after making the file when it is missing:
    64 random hex digits, mode 0600, owned by the daemon's user (root under systemd).
    Daemons sharing a folder may race: the file appears whole (a link) or not at all,
    and the loser reads the winner's."""
    if os.path.exists(path):
        return read_token(path), False
    folder = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)
            made = True
        except FileExistsError:
            made = False
        finally:
            os.unlink(temp)
    except OSError as exc:
        raise ConfigError([f"node.token_file: cannot make the admin token {path}: {exc.strerror} (make it with: "
                           f"hado keygen {path}, or set node.token_file to a file this daemon can read)"]) from None
    return read_token(path), made


def reference():
    """The config reference as reStructuredText, generated from the schema."""
    lines = []
    for where, schema in SCHEMAS.items():
        title = where or "top level"
        lines += [f"``{title}``", "~" * (len(title) + 4), "", ".. list-table::", "   :header-rows: 1", "",
                  "   * - key", "     - type", "     - default", "     - meaning"]
        for key, (expected, default, help_text) in schema.items():
            shown = "required" if default is REQUIRED else json.dumps(default)
            lines += [f"   * - ``{key}``", f"     - {type_name(expected)}", f"     - ``{shown}``" if default is not REQUIRED else "     - required",
                      f"     - {help_text}"]
        lines.append("")
    return "\n".join(lines)
