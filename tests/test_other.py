"""other(): before it starts or promotes, a node asks whether someone else already runs it.

In-process on a fake clock (the harness of tests/test_middle.py: a real Node, State and
AppSupervisor, the test turning them): a resource plugin whose ``other()`` answers what
a file says, so a test makes "another holder" appear and go. Then the plugins against
the real thing in lab namespaces: ipaddr's duplicate address detection (ARP probes,
IPv6 DAD), tcp_port's, and a cluster of three real daemons that must not start their
VIP while a fourth namespace outside the cluster holds it (``ip addr add`` by hand).
"""

import logging
import socket
import time

import pytest

from hado import cli, election, local
from hado import config as config_mod
from hado import node as node_mod
from hado.plugin import Registry
from helpers import wait_for
from lab import netlab
from test_middle import DEAD, HB, NAMES, PRIORITY, Driven, cycle, entry, hear, shown

INTERVAL = 1.0

HOLDER_PLUGIN = '''"""A test resource: a file while it runs; other() says what PATH.other says."""
import os
from hado.plugin import PluginError


def _log(path, what):
    with open(path + ".log", "a") as f:
        f.write(what + "\\n")


def start(path):
    open(path, "w").close()
    _log(path, "start")


def stop(path):
    if os.path.exists(path):
        os.remove(path)
        _log(path, "stop")


def alive(path):
    return os.path.exists(path)


def promote(path):
    open(path + ".promoted", "w").close()
    _log(path, "promote")


def demote(path):
    if os.path.exists(path + ".promoted"):
        os.remove(path + ".promoted")
        _log(path, "demote")


def other(path):
    _log(path, "other")
    try:
        with open(path + ".other") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    if text == "raise":
        raise PluginError("cannot probe: the test says so")
    if text == "number":
        return 42
    return text
'''

SERVICE_PLUGIN = '''"""A test monitor: always ok; other() says what PATH says."""


def check(path):
    return True, "ok"


def other(path):
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None
'''


@pytest.fixture
def build(tmp_path, clock, monkeypatch):
    """build(resources=None, monitors=None, me="solo", names=("solo",)) -> a Node on the
    fake clock with the test plugins ``holder`` and ``service``, probed, not started."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "holder.py").write_text(HOLDER_PLUGIN)
    (plugins / "service.py").write_text(SERVICE_PLUGIN)
    monkeypatch.setattr(node_mod, "AppSupervisor", Driven)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)

    def make(resources=None, monitors=None, me="solo", names=("solo",)):
        raw = {"node": {"plugin_dirs": [str(plugins)]},
               "cluster": {"heartbeat": HB, "dead_after": DEAD},
               "apps": {"web": {"resources": resources or [holder(tmp_path)], "monitors": monitors or {}}}}
        if len(names) > 1:
            raw["cluster"]["secret_file"] = str(tmp_path / "secret")
            raw["cluster"]["nodes"] = {n: {"url": f"http://127.0.0.1:{7001 + i}", "priority": PRIORITY[n]}
                                       for i, n in enumerate(names)}
        cfg, errors, _ = config_mod.validate(raw, me)
        assert errors == [], errors
        node = node_mod.Node(cfg, clock=clock)
        peers = [n for n in cfg["cluster"]["nodes"] if n != me]
        needed = election.quorum(0, len(cfg["cluster"]["nodes"]), cfg["cluster"]["quorum"])["needed"]
        node.state.configure_quorum(peers, needed, node.dead_after / 2)
        node.register_apps()
        node.start_apps(probe=True)
        return node

    return make


def holder(tmp_path, name="vip", **extra):
    return {"name": name, "plugin": "holder", "args": {"path": str(tmp_path / name)}, "interval": INTERVAL,
            "timeout": 0.5, "start_timeout": 0.5, "stop_timeout": 0.5, **extra}


def says(tmp_path, text, name="vip"):
    """Make the holder plugin's other() for resource ``name`` answer ``text`` (None: nobody)."""
    path = tmp_path / f"{name}.other"
    if text is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(text)


def log_of(tmp_path, name="vip"):
    path = tmp_path / f"{name}.log"
    return path.read_text().split() if path.exists() else []


def sup(node):
    return node.supervisors["web"]


def due(node, clock, turns=3):
    """Let the supervisor's next_wait() pass and turn it, as its thread would, then cycle."""
    clock.advance(sup(node).next_wait())
    sup(node).turn()
    for _ in range(turns):
        cycle(node)


def cycles(node, turns=3):
    for _ in range(turns):
        cycle(node)


HOLDER = "10.0.0.100 is answered by 52:54:00:12:34:56 on eth0"


# ----- one node ----------------------------------------------------------------------

def test_another_holder_refuses_the_start_and_status_says_who(build, clock, decisions, tmp_path):
    says(tmp_path, HOLDER)
    node = build()
    for _ in range(3):
        cycle(node)
    assert log_of(tmp_path) == ["other"], "asked once, right before the start, which did not happen"
    app = entry(node)
    assert app["eligible"] is False
    assert app["why_not"] == f"sees another holder (vip: {HOLDER})"
    assert app["other"]["by"] == "vip" and app["other"]["message"] == HOLDER
    assert decisions[-1]["web"]["kind"] == "no_candidate"
    assert f"solo sees another holder (vip: {HOLDER})" in decisions[-1]["web"]["reason"]
    view = shown(node)
    assert view["role"] == "standby"
    assert view["resources"]["vip"]["state"] == "stopped"
    assert view["resources"]["vip"]["message"] == f"start refused: {HOLDER} (asked again every 1 s)"
    assert view["resources"]["vip"]["fail_count"] == 0, "a refusal is no failure of the app"
    status = cli.format_status(node.state.snapshot(node.dead_after))
    assert f"why: web: stopped everywhere because there is no eligible node (solo sees another holder (vip: " \
        f"{HOLDER}))" in status, status
    assert f"start refused: {HOLDER}" in status, status
    events = [(e["what"], e["why"]) for e in node.state.snapshot()["events"]]
    assert ("web: start of vip refused", f"vip: {HOLDER}") in events, events


def test_a_refusal_is_asked_again_every_interval_and_the_app_starts_once_nobody_answers(
        build, clock, decisions, tmp_path):
    says(tmp_path, HOLDER)
    node = build()
    cycle(node)
    refused_at = clock()
    assert sup(node).next_wait() == pytest.approx(INTERVAL), "the supervisor wakes for the retry"
    for _ in range(5):   # woken often meanwhile: no extra probe
        clock.advance(INTERVAL / 10)
        sup(node).turn()
        node.turn()
    assert log_of(tmp_path) == ["other"]
    clock.advance_to(refused_at + INTERVAL)
    cycle(node)
    assert log_of(tmp_path) == ["other", "other"], "asked again after one interval"
    assert entry(node)["eligible"] is False
    says(tmp_path, None)
    due(node, clock)
    assert log_of(tmp_path) == ["other", "other", "other", "other", "start"], \
        "the retry finds nobody, the election picks the node, other() once more right before the start"
    assert clock() - refused_at <= 2 * INTERVAL + 1e-6, "started within one interval of the holder going"
    assert shown(node)["role"] == "active" and entry(node)["other"] is None
    events = [e["what"] for e in node.state.snapshot()["events"]]
    assert events.count("web: start of vip refused") == 1 and "web: other holder gone" in events, events


def test_other_is_never_asked_while_the_resource_runs(build, clock, decisions, tmp_path):
    node = build()
    cycle(node)
    assert shown(node)["role"] == "active" and log_of(tmp_path) == ["other", "start"]
    says(tmp_path, HOLDER)
    for _ in range(5):
        due(node, clock, turns=1)
    assert log_of(tmp_path) == ["other", "start"], "only alive() runs on the hot path of a running resource"
    assert shown(node)["role"] == "active"


def test_a_failing_other_refuses_the_start_too(build, clock, decisions, tmp_path):
    says(tmp_path, "raise")
    node = build()
    cycles(node)
    app = entry(node)
    assert app["why_not"] == ("cannot tell whether another machine holds it "
                              "(vip: other() failed: cannot probe: the test says so)")
    assert shown(node)["role"] == "standby" and "start" not in log_of(tmp_path)
    says(tmp_path, "number")
    due(node, clock)
    assert entry(node)["why_not"] == ("cannot tell whether another machine holds it (vip: other() failed: "
                                      "it returned 42, expected None or a sentence)")


def test_other_false_starts_without_asking_and_says_so_in_the_log(build, clock, decisions, tmp_path, caplog):
    says(tmp_path, HOLDER)
    node = build(resources=[holder(tmp_path, other=False)])
    with caplog.at_level(logging.WARNING, logger="hado.resource"):
        cycle(node)
    assert shown(node)["role"] == "active" and log_of(tmp_path) == ["start"]
    assert 'unchecked: web/vip: start without asking other() ("other": false in its config)' in caplog.text


def test_the_refusal_names_the_second_resource_and_the_first_one_stops_again(build, clock, decisions, tmp_path):
    node = build(resources=[holder(tmp_path, "disk"), holder(tmp_path, "vip")])
    says(tmp_path, HOLDER, "vip")
    for _ in range(3):
        cycle(node)
    assert log_of(tmp_path, "disk") == ["other", "start", "stop"]
    assert log_of(tmp_path, "vip") == ["other"]
    assert shown(node)["role"] == "standby" and entry(node)["why_not"] == f"sees another holder (vip: {HOLDER})"


def test_promote_asks_other_but_the_replica_starts(build, clock, decisions, tmp_path):
    says(tmp_path, "the primary runs on db-old (10.0.0.9)")
    node = build(resources=[holder(tmp_path, kind="promotable")])
    for _ in range(3):
        cycle(node)
    assert log_of(tmp_path) == ["start", "other", "stop"], \
        "the replica starts everywhere; other() guards the promote; not eligible, the node runs no replica"
    events = [(e["what"], e["why"]) for e in node.state.snapshot()["events"]]
    assert ("web: promote of vip refused", "vip: the primary runs on db-old (10.0.0.9)") in events, events
    assert entry(node)["why_not"] == "sees another holder (vip: the primary runs on db-old (10.0.0.9))"
    says(tmp_path, None)
    due(node, clock)
    assert log_of(tmp_path)[3:] == ["other", "start", "other", "promote"] and shown(node)["role"] == "active"


def test_an_app_monitor_with_other_true_is_asked_before_the_first_start(build, clock, decisions, tmp_path):
    answer = tmp_path / "service-answer"
    answer.write_text("10.0.0.100:80 accepts connections, and 10.0.0.100 is not an address of this machine")
    monitors = {"http": {"plugin": "service", "args": {"path": str(answer)}, "other": True},
                "quiet": {"plugin": "service", "args": {"path": str(answer)}}}   # other false by default
    node = build(monitors=monitors)
    for name in monitors:
        node.state.update_monitor("web", name, ok=True, message="ok")
    cycles(node)
    assert log_of(tmp_path) == [], "the monitor refused before the resource was asked"
    assert entry(node)["why_not"] == ("sees another holder (monitor http: 10.0.0.100:80 accepts connections, and "
                                      "10.0.0.100 is not an address of this machine)")
    assert shown(node)["resources"]["vip"]["message"].startswith("start refused: monitor http: 10.0.0.100:80")
    answer.write_text("")
    due(node, clock)
    assert shown(node)["role"] == "active" and log_of(tmp_path) == ["other", "start"]


# ----- three nodes -------------------------------------------------------------------

def test_a_node_that_sees_another_holder_lets_the_next_node_run_the_app(build, clock, decisions, tmp_path):
    says(tmp_path, HOLDER)
    node = build(me="node-a", names=NAMES)
    for _ in range(4):
        for peer in ("node-b", "node-c"):
            hear(node, peer)
        cycle(node)
        clock.advance(HB)
    decision = decisions[-1]["web"]
    assert decision["kind"] == "ineligible", decision["reason"]
    assert f"node-a sees another holder (vip: {HOLDER}); node-b should run it" in decision["reason"]
    report = node.my_report()["apps"]["web"]
    assert report["eligible"] is False and report["why_not"] == f"sees another holder (vip: {HOLDER})"
    assert report["role"] == "standby", "the peers see it standing by, not starting"


# ----- the observe side, the config, the plugins' pure parts --------------------------

def test_why_not_here_puts_the_other_record_after_the_monitors_and_before_a_failure():
    record = {"by": "vip", "message": HOLDER, "failed": False}
    failure = {"reason": "vip died", "until": None}
    assert local.why_not_here("web", {"other": record, "failure": failure}, False, True, None, False) == \
        f"sees another holder (vip: {HOLDER})"
    monitors = {"db": {"ok": False, "message": "down", "vital": True}}
    assert local.why_not_here("web", {"other": record, "monitors": monitors}, False, True, None, False) == \
        "fails app monitor db: down"
    assert local.why_not_here("web", {"other": None}, False, True, None, False) is None


def test_config_other_defaults_on_for_resources_off_for_monitors_and_must_be_a_boolean(tmp_path):
    raw = {"apps": {"web": {"resources": [{"name": "vip", "plugin": "dummy", "args": {"path": str(tmp_path / "f")}}],
                            "monitors": {"port": {"plugin": "tcp_port", "args": {"host": "127.0.0.1", "port": 1}}}}}}
    cfg, errors, _ = config_mod.validate(raw)
    assert errors == []
    assert cfg["apps"]["web"]["resources"][0]["other"] is True
    assert cfg["apps"]["web"]["monitors"]["port"]["other"] is False
    raw["apps"]["web"]["resources"][0]["other"] = "no"
    _, errors, _ = config_mod.validate(raw)
    assert any(e.startswith("apps.web.resources[0].other:") for e in errors), errors


def test_other_is_no_admin_action():
    assert "other" not in Registry().get("ipaddr").actions()
    assert "other" in node_mod.LIFECYCLE


def load_ipaddr():
    return Registry().get("ipaddr").module


def test_ipaddr_parses_an_arp_reply_and_a_neighbour_advertisement():
    import ipaddress
    ip = load_ipaddr()
    vip = ipaddress.ip_address("10.0.0.100")
    theirs = bytes.fromhex("525400123456")
    reply = (b"\xff" * 6 + theirs + b"\x08\x06" + bytes.fromhex("0001080006040002") + theirs + vip.packed
             + b"\x02" * 6 + b"\0" * 4).ljust(60, b"\0")
    assert ip._arp_holder(reply, vip) == theirs
    assert ip._arp_holder(reply, ipaddress.ip_address("10.0.0.101")) is None
    probe = ip._arp_probe(b"\x02" * 6, vip)
    assert ip._arp_holder(probe, vip) is None, "a probe (sender 0.0.0.0) is nobody's answer"
    vip6 = ipaddress.ip_address("fd00::100")
    na = (b"\x33\x33\0\0\0\x01" + theirs + b"\x86\xdd" + bytes.fromhex("6000000000203aff") + b"\0" * 16
          + ipaddress.ip_address("ff02::1").packed + bytes([136, 0, 0, 0, 0x20, 0, 0, 0]) + vip6.packed
          + bytes([2, 1]) + theirs)
    assert ip._na_holder(na, vip6) == theirs
    ns = ip._ns_probe(b"\x02" * 6, vip6)
    assert ns[:6] == bytes.fromhex("3333ff000100") and ip._na_holder(ns, vip6) is None
    icmp = ns[54:]
    pseudo = ns[22:54] + len(icmp).to_bytes(4, "big") + b"\0\0\0\x3a"
    assert ip._checksum(pseudo + icmp) == 0, "the checksum of the solicitation verifies"


def test_tcp_port_other_never_counts_this_machine():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        plugin = Registry().get("tcp_port")
        assert plugin.bind("other", {"host": "127.0.0.1", "port": port})() is None, \
            "a port that answers on an address of this machine is ours"
        assert "other" not in plugin.actions()


# ----- the plugins and a cluster in the network lab ------------------------------------

SKIP = netlab.skip_reason()


def lab_test(test):
    return pytest.mark.lab(pytest.mark.skipif(SKIP is not None, reason=SKIP or "")(test))


@pytest.fixture
def lab():
    with netlab.Lab(1) as built:   # node-a and the client (the stranger)
        yield built


def took(answer):
    return (answer["done_ns"] - answer["started_ns"]) / 1e9


@lab_test
@pytest.mark.parametrize("family", [4, 6])
def test_ipaddr_other_names_the_stranger_by_its_mac_and_nobody_else(lab, family):
    """Nobody: None after the 70 ms of probes. The client holds the address (``ip addr
    add`` by hand): its MAC, at its first answer. node-a holds it itself: None."""
    from test_plugins_net import PluginHost
    host = PluginHost(lab, "node-a")
    vip, prefix, extra = (lab.vip(), 24, []) if family == 4 else (lab.vip6(), 64, ["nodad"])
    args = {"address": f"{vip}/{prefix}", "interface": "eth0"}
    assert host.ok("ipaddr", "alive", args) is False   # loads the plugin: the timings below are other()'s
    nobody = host.call("ipaddr", "other", args)
    assert nobody["ok"] and nobody["value"] is None, nobody
    assert 0.06 <= took(nobody) < 0.1, f"{took(nobody):.3f} s with nobody answering"
    lab.run("client", ["ip", "addr", "add", f"{vip}/{prefix}", "dev", "eth0", *extra])
    found = host.call("ipaddr", "other", args)
    assert found["ok"] and found["value"] == f"{vip} is answered by {lab.mac('client')} on eth0", found
    assert took(found) < 0.05, "the first answer ends the probing"
    lab.run("client", ["ip", "addr", "del", f"{vip}/{prefix}", "dev", "eth0"])
    host.ok("ipaddr", "start", dict(args, garp_count=1))
    assert host.ok("ipaddr", "other", args) is None, "the address on this machine is nobody else's"
    host.ok("ipaddr", "stop", args)
    assert host.ok("ipaddr", "other", args) is None


@lab_test
@pytest.mark.parametrize("nonlocal_bind", [0, 1])
def test_tcp_port_other_sees_a_service_on_the_vip_of_another_machine(lab, nonlocal_bind):
    """Also with net.ipv4.ip_nonlocal_bind set, which HA setups often set for their VIPs
    (a bind() then succeeds for any address)."""
    from test_plugins_net import PluginHost
    lab.run("node-a", ["sh", "-c", f"echo {nonlocal_bind} > /proc/sys/net/ipv4/ip_nonlocal_bind"])
    host = PluginHost(lab, "node-a")
    vip = lab.vip()
    lab.serve_name("client", 8080)
    lab.run("client", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
    args = {"host": vip, "port": 8080}
    found = host.call("tcp_port", "other", args)
    assert found["value"] == f"{vip}:8080 accepts connections, and {vip} is not an address of this machine", found
    lab.run("client", ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"])
    nobody = host.call("tcp_port", "other", args)
    assert nobody["ok"] and nobody["value"] is None and took(nobody) < 0.3, (nobody, took(nobody))
    lab.serve_name("node-a", 8080)
    lab.run("node-a", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
    assert host.ok("tcp_port", "other", args) is None, "our own service on our own address"


STRANGER_INTERVAL = 1.0   # the VIP's interval: how often a refusal is asked again


@lab_test
def test_a_stranger_holding_the_vip_keeps_the_cluster_from_starting_it_until_it_lets_go(tmp_path):
    """A namespace outside the cluster (the lab's client) holds the VIP by hand. No node
    starts the app: each one's ipaddr.other() names the stranger's MAC, the status says
    so, and the node is not eligible. Once the stranger drops the address, the app
    starts within one interval (plus the election's claim and the start itself)."""
    from test_lab_cluster import APP, LabCluster, first_sample, ipaddr_vip
    from lab.netlab import Lab
    with Lab(3) as lab:
        c = LabCluster(lab, tmp_path, resource=lambda vip: dict(ipaddr_vip(vip), interval=STRANGER_INTERVAL))
        try:
            vip, stranger = c.vip, lab.mac("client")
            lab.run("client", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
            sentence = f"{vip} is answered by {stranger} on eth0"
            with netlab.HolderSampler(lab, vip) as sampler:
                c.start()

                def refused_everywhere():
                    states = c.states()
                    if all(s and sentence in s["apps"][APP]["resources"]["vip"]["message"]
                           and s["apps"][APP]["role"] == "standby" for s in states.values()):
                        return states
                    return None
                wait_for(refused_everywhere, 20, 0.1, what=f"every node to refuse the start\n{c.tails()}")
                time.sleep(2 * STRANGER_INTERVAL)   # asked again meanwhile, and still nobody starts
                states = c.states()
                for node, state in states.items():
                    app = state["apps"][APP]
                    assert app["role"] == "standby" and not app["eligible"], (node, app)
                    assert app["resources"]["vip"]["state"] == "stopped", (node, app)
                    assert app["resources"]["vip"]["fail_count"] == 0, (node, app)
                    assert f"{node} sees another holder (vip: {sentence})" in app["reason"], (node, app["reason"])
                    assert any(e["what"] == f"{APP}: start of vip refused" and e["why"] == f"vip: {sentence}"
                               for e in state["events"]), state["events"]
                status = cli.format_status(states["node-a"])
                assert f"start refused: {sentence}" in status and "no eligible node" in status, status
                print(f"\nhado status on node-a while the stranger holds {vip}:\n{status}")
                assert not any(s.holders for s in sampler.records()), "a node of the cluster took the VIP"
                lab.run("client", ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"])
                dropped = time.monotonic_ns()
                active = c.wait_calm(timeout=STRANGER_INTERVAL + 10)
                samples = sampler.stop()
        finally:
            c.stop_all()
    added = first_sample(samples, lambda h: bool(h), dropped)
    after = (added - dropped) / 1e9
    assert after <= STRANGER_INTERVAL + 0.5, \
        f"{active} took the VIP {after:.2f} s after the stranger dropped it (interval {STRANGER_INTERVAL:g} s)"
    assert not any(len(s.holders) > 1 for s in samples)
    print(f"stranger dropped {vip}: {active} held it {after:.2f} s later (interval {STRANGER_INTERVAL:g} s)")
