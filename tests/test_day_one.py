"""Day one of a real cluster (issue 8): the paths an admin walks first, each finding a test.

Real daemons on loopback (tests/helpers.py), the real CLI as a subprocess, the pure
election for the what-if property test.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hado import config as config_mod, election, states
from helpers import REPO, Cluster, Daemon, free_port, http, read_log, wait_for, write_config


def hado(*args, timeout=30, env=None, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "hado", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def daemon_output(*args):
    """Run the daemon in the foreground until it exits: (exit code, everything it logged)."""
    out = hado("--foreground", *args)
    return out.returncode, out.stdout + out.stderr


def dummy(tmp_path, name, **extra):
    return {"name": name, "plugin": "dummy", "args": {"path": str(tmp_path / name)}, "interval": 0.2,
            "timeout": 1, "start_timeout": 2, "stop_timeout": 1, **extra}


def secret(tmp_path, mode=0o600):
    path = tmp_path / "secret"
    path.write_text("0123456789abcdef0123456789abcdef\n")
    path.chmod(mode)
    return path


def solo(tmp_path, cfg, name="solo"):
    port = free_port()
    cfg.setdefault("cluster", {}).setdefault("nodes", {name: {"url": f"http://127.0.0.1:{port}"}})
    path = write_config(tmp_path / "config.json", cfg)
    return Daemon(path, name, port, tmp_path), path


# -- 1. app monitors: their first result counts, and gates the start ---------------------

def test_app_never_starts_while_its_vital_app_monitor_fails_and_no_traceback(tmp_path):
    """An app monitor that always fails: the resource never starts, not even for one
    interval (on 0.1 the first result was lost with a KeyError and the app ran for one
    monitor interval)."""
    daemon, _ = solo(tmp_path, {"apps": {"web": {
        "monitors": {"never": {"plugin": "command", "args": {"check": ["false"]}, "interval": 3}},
        "resources": [dummy(tmp_path, "r")]}}})
    daemon.start()
    try:
        daemon.wait_ready()
        app = wait_for(lambda: daemon.app("web")["monitors"]["never"]["ok"] is False and daemon.app("web"),
                       what="the monitor's first result in the state")
        time.sleep(1.0)
        app = daemon.app("web")
        assert app["role"] == "standby" and not app["eligible"]
        assert "fails app monitor never" in app["reason"]
        assert not (tmp_path / "r.log").exists(), read_log(tmp_path / "r")
        assert "Traceback" not in daemon.log() and "KeyError" not in daemon.log()
    finally:
        daemon.kill()


def test_app_starts_once_its_app_monitor_passes(tmp_path):
    flag = tmp_path / "flag"
    daemon, _ = solo(tmp_path, {"apps": {"web": {
        "monitors": {"flag": {"plugin": "command", "args": {"check": ["test", "-e", str(flag)]},
                              "interval": 0.2, "rise": 2}},
        "resources": [dummy(tmp_path, "r")]}}})
    daemon.start()
    try:
        daemon.wait_ready()
        time.sleep(1.0)
        assert daemon.app("web")["role"] == "standby" and not (tmp_path / "r.log").exists()
        flag.write_text("")
        wait_for(lambda: daemon.app("web")["role"] == "active", what="web active after the monitor passes")
    finally:
        daemon.kill()


def test_example_config_starts_without_a_traceback(tmp_path):
    """The README's own `--foreground --config config.example.json` (on a free port)."""
    raw = json.loads((REPO / "config.example.json").read_text())
    port = free_port()
    raw["cluster"]["nodes"]["node-a"]["url"] = f"http://127.0.0.1:{port}"
    raw["node"]["plugin_dirs"] = []
    for res in raw["apps"]["web"]["resources"]:
        res["args"]["path"] = str(tmp_path / res["name"])
    path = write_config(tmp_path / "example.json", raw)
    daemon = Daemon(path, "node-a", port, tmp_path).start()
    try:
        daemon.wait_ready()
        wait_for(lambda: daemon.app("web")["role"] == "active", what="the example's app active")
        assert "Traceback" not in daemon.log(), daemon.log()
    finally:
        daemon.kill()


# -- 2. check-config refuses exactly what the daemon refuses ------------------------------

def cluster_raw(tmp_path, ports):
    return {"cluster": {"nodes": {"a": {"url": f"http://127.0.0.1:{ports[0]}"},
                                  "b": {"url": f"http://127.0.0.1:{ports[1]}"},
                                  "c": {"url": f"http://127.0.0.1:{ports[2]}"}},
                        "secret_file": str(tmp_path / "secret")},
            "apps": {"web": {"resources": [dummy(tmp_path, "r")]}}}


def break_missing_secret(tmp_path, raw):
    return "cluster.secret_file: cannot read"


def break_secret_mode(tmp_path, raw):
    secret(tmp_path, 0o644)
    return "is readable by others (mode 644)"


def break_token(tmp_path, raw):
    secret(tmp_path)
    raw["node"] = {"token_file": str(tmp_path / "no-token")}
    return "node.token_file: cannot read"


def break_nodes(tmp_path, raw):
    raw["cluster"]["nodes"] = {}
    return "cluster.nodes: is empty"


def break_node_name(tmp_path, raw):
    secret(tmp_path)
    return "--node: this node is 'zz' (from --node), which is not in cluster.nodes (a, b, c)"


@pytest.mark.parametrize("breaker", [break_missing_secret, break_secret_mode, break_token, break_nodes,
                                     break_node_name])
def test_check_config_fails_exactly_where_the_daemon_refuses(tmp_path, breaker):
    raw = cluster_raw(tmp_path, [free_port() for _ in range(3)])
    expected = breaker(tmp_path, raw)
    path = write_config(tmp_path / "c.json", raw)
    node = "zz" if breaker is break_node_name else "a"
    checked = hado("check-config", str(path), "--node", node)
    assert checked.returncode == 2, checked.stdout
    assert expected in checked.stdout
    code, logged = daemon_output("--config", str(path), "--node", node)
    assert code == 2, logged
    errors = [line.strip() for line in checked.stdout.splitlines()[1:]]
    for error in errors:
        assert error in logged, (error, logged)
    assert "Traceback" not in logged


def test_check_config_prints_the_node_it_found_and_how(tmp_path):
    raw = cluster_raw(tmp_path, [free_port() for _ in range(3)])
    secret(tmp_path)
    path = write_config(tmp_path / "c.json", raw)
    out = hado("check-config", str(path), env=dict(os.environ, HADO_NODE="b"))
    assert out.returncode == 0, out.stdout
    assert "this node: b (from $HADO_NODE)" in out.stdout


# -- 3. one config file for every node ----------------------------------------------------

NODES = {"n1": {"host": "10.9.0.1"}, "n2": {"host": "10.9.0.2"}, "n3": {"host": "10.9.0.3"}}


def local_only(*addresses):
    return lambda host: host if host in addresses else None


def test_identity_order_node_flag_env_hostname_then_local_address(monkeypatch):
    monkeypatch.delenv("HADO_NODE", raising=False)
    identify = config_mod.identify
    assert identify(NODES, "n3", None, "n1", local_only("10.9.0.2")) == ("n3", "from --node")
    monkeypatch.setenv("HADO_NODE", "n2")
    assert identify(NODES, None, None, "n1", local_only()) == ("n2", "from $HADO_NODE")
    monkeypatch.delenv("HADO_NODE")
    assert identify(NODES, None, None, "n1.example.org", local_only("10.9.0.2"))[0] == "n1"
    name, how = identify(NODES, None, None, "box", local_only("10.9.0.2"))
    assert name == "n2" and how == "its url address 10.9.0.2 is an address of this machine"
    with pytest.raises(config_mod.IdentityError, match="the url addresses of n1 and n3 are all on this machine"):
        identify(NODES, None, None, "box", local_only("10.9.0.1", "10.9.0.3"))
    with pytest.raises(config_mod.IdentityError, match=r"hostname 'box' is not a node name .*"
                                                       r"\(nodes: n1 10.9.0.1, n2 10.9.0.2, n3 10.9.0.3\)"):
        identify(NODES, None, None, "box", local_only())
    with pytest.raises(config_mod.IdentityError, match=r"'n9' \(from \$HADO_NODE\), which is not in"):
        monkeypatch.setenv("HADO_NODE", "n9")
        identify(NODES, None, None, "box", local_only())


def test_loopback_is_never_taken_for_this_node():
    assert config_mod.is_local("127.0.0.1") is None and config_mod.is_local("::1") is None
    assert config_mod.is_local("192.0.2.77") is None   # TEST-NET: on no machine here


def in_netns(ns, *argv, env=None):
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "hado", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=30, env=env)


@pytest.fixture
def netns():
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/ip") and not os.path.exists("/usr/bin/ip"):
        pytest.skip("needs root and iproute2 (a network namespace with addresses of its own)")
    made = []

    def make(*addresses):
        ns = f"hado-id-{os.getpid()}-{len(made)}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        made.append(ns)
        subprocess.run(["ip", "-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1"], check=True)
        for address in addresses:
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "d0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "d0", "up"], check=True)
        return ns

    yield make
    for ns in made:
        subprocess.run(["ip", "netns", "del", ns])


def test_same_file_on_every_node_each_finds_its_name_from_its_address(tmp_path, netns):
    """Three 'machines' (namespaces) with the same file and no --node: each names itself."""
    raw = {"cluster": {"secret_file": str(secret(tmp_path)),
                       "nodes": {f"n{i}": {"url": f"http://10.9.0.{i}:6185"} for i in (1, 2, 3)}},
           "apps": {"web": {"resources": [dummy(tmp_path, "r")]}}}
    path = write_config(tmp_path / "c.json", raw)
    env = {k: v for k, v in os.environ.items() if k != "HADO_NODE"}
    for i in (1, 2, 3):
        out = in_netns(netns(f"10.9.0.{i}"), "check-config", str(path), env=env)
        assert out.returncode == 0, out.stdout
        assert f"this node: n{i} (its url address 10.9.0.{i} is an address of this machine)" in out.stdout
    both = in_netns(netns("10.9.0.1", "10.9.0.2"), "check-config", str(path), env=env)
    assert both.returncode == 2 and "the url addresses of n1 and n2 are all on this machine" in both.stdout
    none = in_netns(netns("10.9.0.77"), "check-config", str(path), env=env)
    assert none.returncode == 2 and "no node's url address is an address of this machine" in none.stdout
    assert "use --node" not in none.stdout and "--node NAME or set HADO_NODE=NAME" in none.stdout


def test_daemon_without_node_flag_runs_as_the_node_its_address_names(tmp_path, netns):
    ns = netns("10.9.0.2")
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    raw = {"cluster": {"nodes": {"n1": {"url": "http://10.9.0.1:6185"}, "n2": {"url": "http://10.9.0.2:6185"},
                                 "n3": {"url": "http://10.9.0.3:6185"}},
                       "secret_file": str(secret(tmp_path))},
           "apps": {"web": {"resources": [dummy(tmp_path, "r")]}}}
    path = write_config(tmp_path / "c.json", raw)
    env = {k: v for k, v in os.environ.items() if k != "HADO_NODE"}
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "hado", "--config", str(path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        def status():
            out = in_netns(ns, "status", "--json", "--config", str(path), env=env)
            return out.returncode == 0 and json.loads(out.stdout)
        doc = wait_for(status, 15, what="the daemon's state through the CLI, both without --node")
        assert doc["node"] == "n2"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# -- 4. the CLI takes the address from a config with other errors ------------------------

def test_status_reaches_the_daemon_through_a_config_broken_since_and_shows_config_error(tmp_path):
    daemon, path = solo(tmp_path, {"apps": {"web": {"resources": [dummy(tmp_path, "r")]}}})
    daemon.start()
    try:
        daemon.wait_ready()
        raw = json.loads(path.read_text())
        raw["apps"]["web"]["resources"][0]["intervall"] = 1
        path.write_text(json.dumps(raw))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.state()["config_error"], what="the refused reload in the state")
        out = hado("status", "--config", str(path), "--node", "solo")
        assert out.returncode == 0, out.stderr
        assert "CONFIG ERROR: reload of" in out.stdout and "intervall: unknown key" in out.stdout
        other = hado("status", "--config", str(path), "--node", "nobody")
        assert other.returncode == 1
        assert "'nobody' (from --node), which is not in cluster.nodes (solo)" in other.stderr
        assert str(path) in other.stderr
        missing = hado("status", "--config", str(tmp_path / "none.json"))
        assert missing.returncode == 1 and "none.json: cannot read: No such file" in missing.stderr
        assert "127.0.0.1:6185" not in missing.stderr
    finally:
        daemon.kill()


# -- 5. explain runs decide() on the what-if view, quorum included ------------------------

def report(role=states.STANDBY, eligible=True, epoch=0, active_node=None, peers=None, silent=None):
    return {"standby": False, "healthy": True, "why_unhealthy": None, "peers": peers or {}, "silent": silent or {},
            "apps": {"web": {"role": role, "eligible": eligible, "why_not": None if eligible else "is not eligible",
                             "epoch": epoch, "active_node": active_node, "move_to": None, "claim": False,
                             "claims": []}}}


def model_view(me, names, up, roles, eligible, priorities, epochs, dead_after=2.0):
    """The view ``me`` has of a settled cluster where exactly ``up`` run (built directly,
    not through what_if): down nodes silent long ago, seen down by everybody, no vote."""
    holders = [n for n in names if n in up and roles.get(n) in election.RUNNING]
    holder = min(holders, key=lambda n: (-epochs.get(n, 0), -priorities[n], n)) if holders else None
    nodes = {}
    for n in names:
        peers = {p: ("up" if p in up else "down") for p in names if p != n}
        silent = {p: (0.1 if p in up else 100.0) for p in names if p != n}
        nodes[n] = {"priority": priorities[n], "witness": False,
                    "status": "up" if n in up else "down", "silent_s": 0.0 if n == me else (0.1 if n in up else 100.0),
                    "report": report(roles.get(n, states.STANDBY) if n in up else states.STANDBY,
                                     eligible.get(n, True), epochs.get(n, 0), holder, peers, silent)}
    voters = sorted(n for n in up if n != me)
    needed = len(names) // 2 + 1
    return {"me": me, "quorum": {"ok": 1 + len(voters) >= needed, "votes": 1 + len(voters), "needed": needed,
                                 "voters": voters},
            "dead_after": dead_after, "takeover_after": dead_after, "nodes": nodes,
            "apps": {"web": {"stickiness": True, "preferred": None, "preempt": False,
                             "takeover_after": dead_after, "peer_silence": dead_after, "budget": 0}},
            "confirmed": {"web": voters}}


def test_explain_two_of_three_down_predicts_no_quorum_not_active():
    names = ["n1", "n2", "n3"]
    view = model_view("n2", names, set(names), {"n1": states.ACTIVE}, {}, {"n1": 3, "n2": 2, "n3": 1}, {"n1": 4})
    changed = election.what_if(view, [("n1", "down"), ("n3", "down")])
    node, why = election.verdict(changed, "web")
    assert node is None and "no quorum (1 vote, 2 needed)" in why
    from hado.cli import explain_text
    text = explain_text(changed, "web", [("n1", "down"), ("n3", "down")])
    assert "would be active" not in text and "would run nowhere" in text


NAMES = ["n1", "n2", "n3", "n4", "n5"]


@st.composite
def clusters(draw):
    size = draw(st.integers(2, 5))
    names = NAMES[:size]
    me = draw(st.sampled_from(names))
    priorities = {n: draw(st.integers(0, 3)) for n in names}
    roles = {n: draw(st.sampled_from([states.STANDBY, states.ACTIVE])) for n in names}
    eligible = {n: draw(st.booleans()) for n in names}
    epochs = {n: draw(st.integers(0, 3)) for n in names}
    up = {n for n in names if n == me or draw(st.booleans())}
    downs = sorted(n for n in up if n != me and draw(st.booleans()))
    return me, names, up, roles, eligible, priorities, epochs, downs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_what_if_verdict_equals_the_verdict_of_the_cluster_where_it_happened(case):
    """For random clusters and random nodes imagined down, explain's verdict equals the
    verdict decide() gives in the view of a cluster where those nodes really are down."""
    me, names, up, roles, eligible, priorities, epochs, downs = case
    live = model_view(me, names, up, roles, eligible, priorities, epochs)
    imagined = election.verdict(election.what_if(live, [(n, "down") for n in downs]), "web")
    real = model_view(me, names, up - set(downs), roles, eligible, priorities, epochs)
    assert imagined[0] == election.verdict(real, "web")[0], (imagined, election.decide(real)["web"]["reason"])


# -- 6. move: refused to the holder, pending shown, cancellable ---------------------------

def test_move_to_the_holder_is_refused_and_nothing_is_left_pending(tmp_path):
    c = Cluster(tmp_path).start()
    try:
        holder = c.wait_active()
        out = hado("move", "web", holder, "--url", c[holder].url, "--config", str(c.config_path))
        assert out.returncode == 1 and f"web already runs on {holder}" in out.stderr
        other = next(n for n in c.names if n != holder)
        out = hado("move", "web", holder, "--url", c[other].url, "--config", str(c.config_path))
        assert out.returncode == 1 and f"web already runs on {holder}" in out.stderr
        for state in c.states().values():
            assert state["apps"]["web"]["move"] is None
        # the 0.1 symptom: a standby/online of the holder then moved the app twice
        http(c[holder].url + "/v1/node/standby", {})
        new = c.wait_active(exclude=(holder,))
        http(c[holder].url + "/v1/node/online", {})
        time.sleep(1.5)
        assert c.active() == [new]
    finally:
        c.stop_all()


def test_pending_move_shows_its_expiry_and_can_be_cancelled(tmp_path):
    c = Cluster(tmp_path)
    slow = c.dummy("r", stop_timeout=6)
    slow["args"]["stop_delay"] = 5
    c.config["apps"]["web"]["resources"] = [slow]
    write_config(c.config_path, c.config)
    c.start()
    try:
        holder = c.wait_active()
        target = next(n for n in c.names if n != holder)
        asker = next(n for n in c.names if n not in (holder, target))
        out = hado("move", "web", target, "--url", c[asker].url, "--config", str(c.config_path))
        assert out.returncode == 0 and f"moving to {target}" in out.stdout and "--cancel" in out.stdout
        status = hado("status", "--url", c[asker].url)
        assert re.search(rf"move requested to {target} \(expires in \d+ s; cancel: hado move web --cancel\)",
                         status.stdout), status.stdout
        elsewhere = hado("move", "web", "--cancel", "--url", c[holder].url, "--config", str(c.config_path))
        assert elsewhere.returncode == 1 and f"requested on {asker}" in elsewhere.stderr
        out = hado("move", "web", "--cancel", "--url", c[asker].url, "--config", str(c.config_path))
        assert out.returncode == 0 and f"move to {target} cancelled" in out.stdout
        assert c[asker].app("web")["move"] is None
        again = hado("move", "web", "--cancel", "--url", c[asker].url, "--config", str(c.config_path))
        assert again.returncode == 1 and "no move of web is pending" in again.stderr
    finally:
        c.stop_all()


# -- 8. bind errors name the address, the port, the protocol and the key ------------------

def test_api_port_taken_names_address_port_tcp_and_key(tmp_path):
    daemon, path = solo(tmp_path, {"apps": {}})
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        taken.bind(("127.0.0.1", daemon.port))
        taken.listen()
        code, logged = daemon_output("--config", str(path), "--node", "solo")
    assert code == 1
    assert (f"cannot listen for the API (HTTP over TCP) on 127.0.0.1:{daemon.port}: something else already "
            "listens there") in logged
    assert "change cluster.nodes.solo.url in the config" in logged and "Traceback" not in logged


def test_heartbeat_port_taken_names_udp(tmp_path):
    ports = [free_port() for _ in range(3)]
    raw = cluster_raw(tmp_path, ports)
    secret(tmp_path)
    path = write_config(tmp_path / "c.json", raw)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", ports[0]))
        code, logged = daemon_output("--config", str(path), "--node", "a")
    assert code == 1
    assert f"cannot listen for heartbeats (UDP) on 127.0.0.1:{ports[0]}" in logged
    assert "change cluster.nodes.a.url" in logged


def test_the_shipped_cluster_example_checks_ok_for_a_node_of_another_machine():
    """check-config --node node-a on a machine that is not node-a: the secret file and
    the address are node-a's to check, warned about, not errors; the daemon still refuses."""
    checked = hado("check-config", str(REPO / "config.cluster.example.json"), "--node", "node-a")
    assert checked.returncode == 0, checked.stdout
    assert "WARNING: this machine is not node-a: not checked here, run check-config on node-a: " \
           "cluster.nodes.node-a.url: cannot listen on 10.0.0.11" in checked.stdout
    assert "config.cluster.example.json: ok (3 node(s)" in checked.stdout


def test_address_not_on_this_machine_is_a_config_error_for_both(tmp_path):
    raw = {"node": {"listen": "192.0.2.77:6185"}, "apps": {}}
    path = write_config(tmp_path / "c.json", raw)
    checked = hado("check-config", str(path))
    assert checked.returncode == 2
    assert "node.listen: cannot listen on 192.0.2.77: Cannot assign requested address" in checked.stdout
    code, logged = daemon_output("--config", str(path))
    assert code == 2 and "node.listen: cannot listen on 192.0.2.77" in logged


# -- 9. the smaller ones that live in the CLI and the node --------------------------------

def test_keygen_into_a_missing_directory_says_so_without_a_traceback(tmp_path):
    out = hado("keygen", str(tmp_path / "nodir" / "secret"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"cannot create {tmp_path}/nodir/secret: No such file or directory (create it first: mkdir -p " \
           f"{tmp_path}/nodir)" in out.stderr


def test_status_words_quorum_as_votes_and_needed(tmp_path):
    c = Cluster(tmp_path).start()
    try:
        c.wait_active()
        wait_for(lambda: c["node-b"].state()["quorum"]["votes"] == 3, what="3 votes")
        out = hado("status", "--url", c["node-b"].url)
        assert "quorum: ok (3 votes, 2 needed)" in out.stdout, out.stdout
    finally:
        c.stop_all()


@pytest.mark.parametrize("action", ["start", "stop", "alive", "promote", "demote"])
def test_action_refuses_the_life_cycle_functions_and_lists_the_real_ones(tmp_path, action):
    daemon, path = solo(tmp_path, {"apps": {"web": {"resources": [dummy(tmp_path, "r")]}}})
    daemon.start()
    try:
        daemon.wait_ready()
        wait_for(lambda: daemon.app("web")["role"] == "active", what="web active")
        out = hado("action", "web", "r", action, "--url", daemon.url, "--config", str(daemon.config_path))
        assert out.returncode == 1
        assert f"{action} is not an admin action: hado runs {action}() itself" in out.stderr
        assert "actions of plugin dummy: renew" in out.stderr
        assert daemon.app("web")["role"] == "active" and (tmp_path / "r").exists()
    finally:
        daemon.kill()


# -- 7. safe defaults: a stop budget for unleased resources, none for leased ones ---------

def budget_config(tmp_path, resources, fence=None, quorum="majority"):
    raw = {"cluster": {"nodes": {"a": {"url": "http://127.0.0.1:1"}, "b": {"url": "http://127.0.0.1:2"},
                                 "c": {"url": "http://127.0.0.1:3"}},
                       "secret_file": "/s", "fence": fence, "quorum": quorum},
           "apps": {"web": {"resources": resources}}}
    cfg, errors, warnings = config_mod.validate(raw, "a")
    assert errors == []
    return cfg, warnings


def test_stop_budget_counts_the_call_in_flight_and_every_unleased_stop(tmp_path):
    from hado import bounds
    vip = {"name": "vip", "plugin": "ipaddr", "args": {"address": "10.0.0.50/24", "interface": "eth0"},
           "timeout": 5, "start_timeout": 5, "stop_timeout": 5}
    svc = {"name": "svc", "plugin": "systemd", "args": {"unit": "nginx.service"}, "timeout": 5,
           "start_timeout": 10, "stop_timeout": 10}
    cfg, warnings = budget_config(tmp_path, [vip, svc])
    t = bounds.app_timing(cfg, "web")
    # in flight: the longest call (start 10 s); then svc's stop (10 s); the VIP is leased
    assert t["budget"] == 20 and t["unleased"] == ["svc"] and t["lease"] == 1
    # the majority waits until every peer is without news for D + B - (D/2 - h) = 2 + 19.5
    assert t["peer_silence"] == 21.5 and t["takeover_after"] == 21.5
    assert not [w for w in warnings if "stop" in w]
    line = bounds.app_bounds(cfg)["web"]
    assert line.startswith("safe without fencing: its leased resources are dropped at quorum loss and in any "
                           "case expire 1.35 s after their last renewal; svc is stopped within the app's 20 s "
                           "stop budget before any other node starts it")
    only_vip, _ = budget_config(tmp_path, [vip])
    assert bounds.app_timing(only_vip, "web")["takeover_after"] == 2.0    # max(D, 1 + 0.35 + 0.5)
    assert "failover after a crash: about 2-2.5 s + start time" in bounds.app_bounds(only_vip)["web"]
    fenced, _ = budget_config(tmp_path, [vip, svc], fence={"plugin": "fence_command",
                                                            "args": {"command": ["true"]}})
    assert bounds.app_timing(fenced, "web")["budget"] == 0
    assert "the fence plugin runs before any takeover" in bounds.app_bounds(fenced)["web"]


SLACK_PLUGIN = """
def start(path, lease=1, slack=None): pass
def stop(path): pass
def alive(path): return False
def renew(path, lease=1, slack=None): pass
def lease(lease=1, slack=None): return lease
def lease_slack(lease=1, slack=None): return slack
"""


def test_a_plugin_says_how_long_its_resource_outlives_its_lease_and_the_takeover_waits_that(tmp_path):
    """lease_slack(): the nftables gate of a sub-second VIP lease ends within 0.05 s, not
    the address lifetime's 0.35 s; the fast profile's takeover_after is then 0.3 s."""
    from hado import bounds, config as config_mod
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slacky.py").write_text(SLACK_PLUGIN)

    def timing(lease, slack, heartbeat=0.05, dead_after=0.3):
        raw = {"cluster": {"nodes": {"a": {"url": "http://127.0.0.1:1"}, "b": {"url": "http://127.0.0.1:2"},
                                     "c": {"url": "http://127.0.0.1:3"}},
                           "secret_file": "/s", "heartbeat": heartbeat, "dead_after": dead_after},
               "node": {"plugin_dirs": [str(plugins)]},
               "apps": {"web": {"resources": [{"name": "r", "plugin": "slacky",
                                               "args": {"path": "/x", "lease": lease, "slack": slack}}]}}}
        cfg, errors, warnings = config_mod.validate(raw, "a")
        return (bounds.app_timing(cfg, "web") if not errors else None), errors, warnings

    t, errors, warnings = timing(0.2, 0.05)
    assert errors == [] and t["lease_end"] == 0.25 and t["takeover_after"] == 0.3 and t["peer_silence"] == 0.3
    t, errors, warnings = timing(1, 0.35, heartbeat=0.5, dead_after=2.0)
    assert t["takeover_after"] == 2.0 and t["lease_end"] == 1.35
    t, errors, warnings = timing(0.2, "soon")      # not a number: the default slack, and a warning
    assert t["lease_end"] == 0.55 and any("lease_slack() returned 'soon'" in w for w in warnings), warnings
    t, errors, warnings = timing(0.08, 0.05)       # renewed once a heartbeat: two at least
    assert errors == ["apps.web.resources[0].args.lease: 0.08 s is shorter than two heartbeats (0.1 s): it is "
                      "renewed once a heartbeat and would run out on a healthy node; use at least 0.1 s or a "
                      "shorter cluster.heartbeat"]


def budget_view(peer_silent, own_silent=30.0):
    """node-b's view: node-a held web and went silent; node-c reports it silent for ``peer_silent``."""
    view = model_view("node-b", ["node-a", "node-b", "node-c"], {"node-b", "node-c"}, {}, {},
                      {"node-a": 3, "node-b": 2, "node-c": 1}, {"node-a": 1})
    view["nodes"]["node-a"]["report"] = report(states.ACTIVE, epoch=1, active_node="node-a")
    view["nodes"]["node-a"]["silent_s"] = own_silent
    view["nodes"]["node-c"]["report"]["silent"]["node-a"] = peer_silent
    view["nodes"]["node-b"]["report"]["apps"]["web"]["claim"] = True
    view["nodes"]["node-c"]["report"]["apps"]["web"]["claims"] = ["node-b"]
    view["apps"]["web"].update(takeover_after=21.5, peer_silence=21.5, budget=20)
    return view


def test_takeover_waits_until_every_peer_is_without_news_for_the_budget():
    waiting = election.decide(budget_view(peer_silent=10.0))["web"]
    assert not waiting["active"]
    assert ("node-a was last active: every up peer must be without news of node-a for 21.50 s (so far: "
            "node-c 10.0 s), so that node-a has had the app's stop budget of 20 s to stop it") in waiting["reason"]
    assert election.decide(budget_view(peer_silent=21.6))["web"]["active"]
    own = election.decide(budget_view(peer_silent=30.0, own_silent=10.0))["web"]
    assert not own["active"] and "under takeover_after 21.50 s (the app's stop budget of 20 s" in own["reason"]


def test_check_config_prints_the_bound_per_app_and_no_warning_for_the_cluster_example(tmp_path):
    example = json.loads((REPO / "config.cluster.example.json").read_text())
    example["cluster"]["secret_file"] = str(secret(tmp_path))
    example["cluster"]["nodes"] = {n: {**e, "url": f"http://127.0.0.1:{free_port()}"}
                                   for n, e in example["cluster"]["nodes"].items()}
    path = write_config(tmp_path / "cluster.json", example)
    for node in example["cluster"]["nodes"]:
        out = hado("check-config", str(path), "--node", node)
        assert out.returncode == 0, out.stdout
        assert "WARNING" not in out.stdout, out.stdout
        assert f"this node: {node} (from --node)" in out.stdout
        assert re.search(r"^web: safe without fencing: .*failover after a crash: about [\d.]+-[\d.]+ s \+ start time$",
                         out.stdout, re.M), out.stdout


def test_a_slow_non_vital_monitor_does_not_delay_the_start(tmp_path):
    """Only vital monitors gate what runs, so only their first result is awaited at
    start-up (heartbeats begin after it: a node waiting for a slow informative check
    looked dead to its peers, who then elected another node)."""
    daemon, _ = solo(tmp_path, {"apps": {"web": {
        "monitors": {"page": {"plugin": "command", "args": {"check": ["sleep", "4"]}, "timeout": 6,
                              "vital": False}},
        "resources": [dummy(tmp_path, "r")]}}})
    daemon.start()
    try:
        daemon.wait_ready()
        app = wait_for(lambda: daemon.app("web")["role"] == "active" and daemon.app("web"), 10, what="web active")
        assert app["monitors"]["page"]["ok"] is None, "the app started before the slow check's first result"
    finally:
        daemon.kill()


def test_maintenance_keeps_renewing_a_leased_resource(tmp_path):
    """In maintenance hado stops nothing: it does not let a lease run out either."""
    res = dummy(tmp_path, "r")
    res["args"]["lease"] = 1
    daemon, _ = solo(tmp_path, {"apps": {"web": {"resources": [res]}}})
    daemon.start()
    try:
        daemon.wait_ready()
        wait_for(lambda: daemon.app("web")["role"] == "active", what="web active")
        assert http(daemon.url + "/v1/maintenance", {"on": True})[0] == 200
        wait_for(lambda: daemon.app("web")["resources"]["r"]["state"] == "unmanaged", what="unmanaged")
        time.sleep(2.5)
        assert daemon.app("web")["resources"]["r"]["alive"] is True
        lines = (tmp_path / "r").read_text().split()
        assert int(lines[1]) > time.monotonic_ns(), "the lease ran out during maintenance"
    finally:
        daemon.kill()


def test_a_lease_is_a_plugin_contract_renew_without_lease_is_unleased_and_warned(tmp_path):
    """A third-party plugin that renews something declares its lease with lease();
    without it hado cannot know how long to wait, so it counts as unleased (stop budget)."""
    from hado import bounds
    (tmp_path / "leased.py").write_text('"""A leased test resource."""\n'
                                        "def start(path, lease=2): pass\n"
                                        "def stop(path, lease=2): pass\n"
                                        "def alive(path, lease=2): return False\n"
                                        "def renew(path, lease=2): pass\n"
                                        "def lease(lease=2): return lease\n")
    (tmp_path / "renewonly.py").write_text('"""Renews but declares no lease."""\n'
                                           "def start(path): pass\n"
                                           "def stop(path): pass\n"
                                           "def alive(path): return False\n"
                                           "def renew(path): pass\n")
    for plugin, lease, warned in (("leased", 2.0, False), ("renewonly", 0, True)):
        raw = {"cluster": {"nodes": {"a": {"url": "http://127.0.0.1:1"}, "b": {"url": "http://127.0.0.1:2"},
                                     "c": {"url": "http://127.0.0.1:3"}}, "secret_file": "/s"},
               "node": {"plugin_dirs": [str(tmp_path)]},
               "apps": {"web": {"resources": [{"name": "r", "plugin": plugin, "args": {"path": "/x"},
                                               "timeout": 1, "start_timeout": 1, "stop_timeout": 1}]}}}
        cfg, errors, warnings = config_mod.validate(raw, "a")
        assert errors == []
        t = bounds.app_timing(cfg, "web")
        assert t["lease"] == lease and (t["budget"] > 0) == warned
        assert any("has renew() but no lease()" in w for w in warnings) == warned
