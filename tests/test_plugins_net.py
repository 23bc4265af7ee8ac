"""The network plugins (ipaddr, ping, ocf, fence_command) against the real thing.

Plugins that change a network run inside a lab namespace (tests/lab/netlab.py), each
through a small host process there that loads and calls them the way the engine does
(``Registry().get(name).bind(fname, args)()``) and keeps running between calls, so
the announcement threads of ipaddr run on as they would in the daemon. Lab tests need
root, iproute2 and nftables, and are skipped with the reason elsewhere.
"""

import ipaddress
import json
import select
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hado.plugin import PluginError, Registry
from helpers import wait_for
from lab import netlab
from lab.netlab import Lab, PacketCapture

REPO = Path(__file__).resolve().parent.parent
REGISTRY = Registry()
SKIP = netlab.skip_reason()
OCF_ROOT = Path("/usr/lib/ocf")
HAVE_AGENTS = (OCF_ROOT / "resource.d/heartbeat/Dummy").is_file()
ETH_P_ARP, ETH_P_IPV6 = 0x0806, 0x86DD


def lab_test(test):
    """Mark a test as a lab test, skipped with the reason where the lab cannot run."""
    return pytest.mark.lab(pytest.mark.skipif(SKIP is not None, reason=SKIP or "")(test))


needs_agents = pytest.mark.skipif(not HAVE_AGENTS, reason="resource-agents is not installed")


@pytest.fixture
def lab():
    with Lab(2) as built:
        yield built


def call(name, fname, args):
    return REGISTRY.get(name).bind(fname, args)()


def errors(name, kind, args):
    return [error if isinstance(error, str) else error[1]
            for error in REGISTRY.get(name).check_args(kind, args)]


HOST = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from hado.plugin import PluginError, Registry
    registry = Registry()
    for line in sys.stdin:
        request = json.loads(line)
        started = time.monotonic_ns()
        try:
            value = registry.get(request["plugin"]).bind(request["function"], request["args"])()
            answer = {"ok": True, "value": value}
        except PluginError as exc:
            answer = {"ok": False, "error": str(exc)}
        answer["started_ns"], answer["done_ns"] = started, time.monotonic_ns()
        print(json.dumps(answer), flush=True)
""")


class PluginHost:
    """A process in a lab node's namespace that calls plugins, one request at a time."""

    def __init__(self, lab, node):
        self.node = node
        self.proc = lab.popen(node, [sys.executable, "-c", HOST, REPO],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, plugin, function, args, timeout=30):
        """The answer dict: ok, value or error, started_ns, done_ns."""
        self.proc.stdin.write(json.dumps({"plugin": plugin, "function": function, "args": args}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"{self.node}: {plugin}.{function} did not answer in {timeout} s"
        line = self.proc.stdout.readline()
        assert line, f"{self.node}: the plugin host died (exit {self.proc.poll()})"
        return json.loads(line)

    def ok(self, plugin, function, args):
        """The value of a call that must succeed."""
        answer = self.call(plugin, function, args)
        assert answer["ok"], f"{self.node}: {plugin}.{function}({args}) failed: {answer['error']}"
        return answer["value"]


def addresses(lab, node):
    info = json.loads(lab.run(node, ["ip", "-j", "addr", "show", "dev", "eth0"]).stdout)[0]["addr_info"]
    return {f"{a['local']}/{a['prefixlen']}": a for a in info}


def neighbour_mac(lab, member, address):
    entries = json.loads(lab.run(member, ["ip", "-j", "neigh", "show", address, "dev", "eth0"]).stdout or "[]")
    return entries[0].get("lladdr") if entries else None


def arp_frames(frames, vip):
    """(operation, sender MAC, sender IP, target MAC, target IP) of incoming ARP frames for vip."""
    found = []
    for frame in frames:
        if not frame.incoming or len(frame.data) < 42:
            continue
        op, = struct.unpack_from("!H", frame.data, 20)
        sha, spa = frame.data[22:28], frame.data[28:32]
        tha, tpa = frame.data[32:38], frame.data[38:42]
        if ipaddress.ip_address(spa) == ipaddress.ip_address(vip):
            found.append((frame.t_ns, op, sha.hex(":"), str(ipaddress.ip_address(spa)),
                          tha.hex(":"), str(ipaddress.ip_address(tpa))))
    return found


# -- ipaddr -------------------------------------------------------------------------------

@lab_test
def test_ipaddr_start_alive_stop_are_idempotent(lab):
    host = PluginHost(lab, "node-a")
    args = {"address": f"{lab.vip()}/24", "interface": "eth0", "label": "eth0:vip", "lease": None}
    assert host.ok("ipaddr", "alive", args) is False
    host.ok("ipaddr", "start", args)
    assert host.ok("ipaddr", "alive", args) is True
    entry = addresses(lab, "node-a")[args["address"]]
    assert entry["label"] == "eth0:vip" and entry["valid_life_time"] == 0xFFFFFFFF
    host.ok("ipaddr", "start", args)  # already there: success
    assert host.ok("ipaddr", "alive", args) is True
    host.ok("ipaddr", "stop", args)
    assert args["address"] not in addresses(lab, "node-a")
    host.ok("ipaddr", "stop", args)  # already gone: success
    assert host.ok("ipaddr", "alive", args) is False


@lab_test
def test_ipaddr_start_returns_at_once_and_announces_in_the_background(lab):
    """The first announcement goes out before start() returns, the rest over 2 s."""
    host = PluginHost(lab, "node-a")
    vip = lab.vip()
    with PacketCapture(lab, "client", ETH_P_ARP) as capture:
        answer = host.call("ipaddr", "start", {"address": f"{vip}/24", "interface": "eth0", "lease": None})
        assert answer["ok"], answer
        assert (answer["done_ns"] - answer["started_ns"]) / 1e9 < 0.5
        wait_for(lambda: len(arp_frames(capture.records(), vip)) >= 10, timeout=5,
                 what="5 announcements (request + reply each)")
        frames = arp_frames(capture.stop(), vip)
    mac = lab.mac("node-a")
    requests = [f for f in frames if f[1] == 1]
    replies = [f for f in frames if f[1] == 2]
    assert len(requests) == 5 and len(replies) == 5
    assert all(f[2] == mac and f[3] == vip and f[5] == vip for f in frames)
    assert all(f[4] == mac for f in replies), "a gratuitous reply names the sender as target too"
    assert requests[0][0] <= answer["done_ns"], "the first announcement is sent before start returns"
    span = (frames[-1][0] - frames[0][0]) / 1e9
    assert 1.8 < span < 2.6, f"announcements must span more than the 1 s ARP locktime, not {span:.2f} s"


@lab_test
def test_ipaddr_move_updates_a_clients_arp_cache(lab):
    """The client's neighbour entry for the VIP follows it from node-a to node-b."""
    a, b = PluginHost(lab, "node-a"), PluginHost(lab, "node-b")
    vip = lab.vip()
    args = {"address": f"{vip}/24", "interface": "eth0"}
    a.ok("ipaddr", "start", args)
    lab.run("client", ["ping", "-c", "1", "-W", "1", vip])
    assert neighbour_mac(lab, "client", vip) == lab.mac("node-a")
    a.ok("ipaddr", "stop", args)
    moved = time.monotonic()
    b.ok("ipaddr", "start", args)
    wait_for(lambda: neighbour_mac(lab, "client", vip) == lab.mac("node-b"), timeout=3,
             what="the client's ARP entry for the VIP to name node-b")
    assert time.monotonic() - moved < 1.0, "a gratuitous ARP overrides the locktime at once"
    assert lab.run("client", ["ping", "-c", "1", "-W", "1", vip]).returncode == 0


@lab_test
def test_ipaddr_announce_wins_back_a_client_after_a_dual_holding(lab):
    """node-a took node-b's VIP briefly and announced last; node-b's announce() fixes it."""
    a, b = PluginHost(lab, "node-a"), PluginHost(lab, "node-b")
    vip = lab.vip()
    args = {"address": f"{vip}/24", "interface": "eth0", "garp_count": 1, "lease": None}
    b.ok("ipaddr", "start", args)
    lab.run("client", ["ping", "-c", "1", "-W", "1", vip])
    assert neighbour_mac(lab, "client", vip) == lab.mac("node-b")
    a.ok("ipaddr", "start", args)         # the split brain: both hold, node-a announced last
    wait_for(lambda: neighbour_mac(lab, "client", vip) == lab.mac("node-a"), timeout=2,
             what="the client's ARP entry to follow node-a's announcement")
    a.ok("ipaddr", "stop", args)          # the loser stops: the client is cut off now
    assert lab.run("client", ["ping", "-c", "1", "-W", "1", vip], check=False).returncode != 0
    b.ok("ipaddr", "announce", args)      # the winner reconfirms itself
    wait_for(lambda: neighbour_mac(lab, "client", vip) == lab.mac("node-b"), timeout=2,
             what="the client back on node-b")
    assert lab.run("client", ["ping", "-c", "1", "-W", "1", vip]).returncode == 0


@lab_test
def test_ipaddr_stop_ends_the_announcements(lab):
    host = PluginHost(lab, "node-a")
    vip = lab.vip()
    args = {"address": f"{vip}/24", "interface": "eth0", "garp_count": 10, "garp_interval": 0.2}
    with PacketCapture(lab, "client", ETH_P_ARP) as capture:
        host.ok("ipaddr", "start", args)
        host.ok("ipaddr", "stop", args)
        time.sleep(1.0)
        frames = arp_frames(capture.stop(), vip)
    assert len(frames) == 2, f"only the first announcement may go out, got {len(frames)} frames"


@lab_test
def test_ipaddr_switchover_seen_by_a_client_without_dual_holding(lab):
    """Stop on node-a, start on node-b: the client follows at once, never two holders."""
    a, b = PluginHost(lab, "node-a"), PluginHost(lab, "node-b")
    vip = lab.vip()
    args = {"address": f"{vip}/24", "interface": "eth0"}
    lab.serve_name("node-a", 8080)
    lab.serve_name("node-b", 8080)
    a.ok("ipaddr", "start", args)
    with netlab.HolderSampler(lab, vip) as sampler, netlab.VipProbe(lab, vip, 8080) as probe:
        wait_for(lambda: any(r.answer == "node-a" for r in probe.records()), what="node-a answering")
        time.sleep(0.2)
        a.ok("ipaddr", "stop", args)
        b.ok("ipaddr", "start", args)
        wait_for(lambda: any(r.answer == "node-b" for r in probe.records()), what="node-b answering")
        time.sleep(0.2)
        samples, answers = sampler.stop(), probe.stop()
    outage = netlab.client_outage(answers, "node-a", "node-b")
    by_node = netlab.answers_by_node(answers)
    print(f"switchover: client outage {outage:.3f} s, {netlab.sample_rate(samples):.0f} samples/s, "
          f"answers {dict(by_node)}")
    assert netlab.dual_holding(samples) == (0, 0.0)
    holders = [h for _, h in netlab.holder_changes(samples) if h]  # a gap may fall between samples
    assert holders == [{"node-a"}, {"node-b"}]
    assert outage < 0.5
    last_a = max(r.sent_ns for r in answers if r.answer == "node-a")
    assert all(r.answer != "node-a" for r in answers if r.sent_ns > last_a), "no flapping back"


@lab_test
def test_ipaddr_lease_runs_out_without_renewal_and_renew_keeps_it(lab):
    host = PluginHost(lab, "node-a")
    args = {"address": f"{lab.vip()}/24", "interface": "eth0", "lease": 1, "garp_count": 1}
    host.ok("ipaddr", "start", args)
    renewed = None
    for _ in range(8):  # 3.2 s, three lease lengths
        time.sleep(0.4)
        answer = host.call("ipaddr", "renew", args)
        assert answer["ok"], answer
        renewed = answer["done_ns"]
        assert host.ok("ipaddr", "alive", args)
    assert addresses(lab, "node-a")[args["address"]]["valid_life_time"] <= 1
    wait_for(lambda: not host.ok("ipaddr", "alive", args), timeout=3, interval=0.01,
             what="the address to expire")
    expired = (time.monotonic_ns() - renewed) / 1e9
    print(f"lease 1 s: the address went {expired:.2f} s after the last renewal")
    assert 0.9 < expired < 2.0
    answer = host.call("ipaddr", "renew", args)
    assert not answer["ok"] and "no longer on eth0" in answer["error"]
    assert not host.ok("ipaddr", "alive", args), "renew must never bring the address back"


@lab_test
def test_ipaddr_ipv6_add_announce_and_delete(lab):
    host = PluginHost(lab, "node-a")
    vip = lab.vip6()
    args = {"address": f"{vip}/64", "interface": "eth0", "garp_count": 2, "garp_interval": 0.2}
    with PacketCapture(lab, "client", ETH_P_IPV6) as capture:
        host.ok("ipaddr", "start", args)
        assert host.ok("ipaddr", "alive", args)
        assert lab.run("client", ["ping", "-6", "-c", "1", "-W", "2", vip]).returncode == 0
        wait_for(lambda: len(adverts(capture.records(), vip)) >= 2, what="two neighbour adverts")
        found = adverts(capture.stop(), vip)
    hop_limit, source, destination, flags, option = found[0]
    assert hop_limit == 255 and source == vip and destination == "ff02::1"
    assert flags & 0x20000000, "the override flag"
    assert option == bytes([2, 1]) + bytes.fromhex(lab.mac("node-a").replace(":", ""))
    assert neighbour_mac(lab, "client", vip) == lab.mac("node-a")
    host.ok("ipaddr", "stop", args)
    assert not host.ok("ipaddr", "alive", args)
    assert f"{vip}/64" not in addresses(lab, "node-a")


def adverts(frames, target):
    """(hop limit, source, destination, flags, option) of unsolicited NAs for target."""
    found = []
    for frame in frames:
        data = frame.data
        if not frame.incoming or len(data) < 14 + 40 + 24 or data[14 + 6] != 58:
            continue
        icmp = data[54:]
        if icmp[0] != 136 or ipaddress.ip_address(icmp[8:24]) != ipaddress.ip_address(target):
            continue
        found.append((data[14 + 7], str(ipaddress.ip_address(data[22:38])),
                      str(ipaddress.ip_address(data[38:54])), struct.unpack_from("!I", icmp, 4)[0],
                      icmp[24:32]))
    return found


@lab_test
def test_ipaddr_missing_interface_is_a_clear_error_but_stop_succeeds(lab):
    host = PluginHost(lab, "node-a")
    args = {"address": f"{lab.vip()}/24", "interface": "eth9"}
    for function in ("start", "alive", "announce"):
        answer = host.call("ipaddr", function, args)
        assert not answer["ok"] and answer["error"] == "interface 'eth9' does not exist", function
    host.ok("ipaddr", "stop", args)


def test_ipaddr_validate_rejects_bad_addresses_and_arguments():
    def problems(**args):
        return errors("ipaddr", "resource", {"interface": "eth0", **args})

    assert problems(address="10.0.0.100/24") == []
    assert problems(address="fd00::100/64", lease=5, garp_count=0) == []
    assert "not a valid CIDR" in problems(address="10.0.0.300/24")[0]
    assert "prefix length" in problems(address="10.0.0.100")[0]
    assert "not a valid CIDR" in problems(address="fd00::1/129")[0]
    assert "network or broadcast" in problems(address="10.0.0.255/24")[0]
    assert "label" in problems(address="10.0.0.100/24", label="vip")[0]
    assert "IPv4 addresses only" in problems(address="fd00::1/64", label="eth0:v")[0]
    assert "lease" in problems(address="10.0.0.100/24", lease=0)[0]
    assert "garp_interval" in problems(address="10.0.0.100/24", garp_interval=0)[0]
    assert "interface" in errors("ipaddr", "resource", {"address": "10.0.0.1/24", "interface": "a b"})[0]
    assert REGISTRY.get("ipaddr").actions() == ["announce", "renew"]


def test_ipaddr_renew_without_a_lease_does_nothing():
    assert call("ipaddr", "renew", {"address": "10.0.0.100/24", "interface": "no-such-if0", "lease": None}) is None


# -- ping -------------------------------------------------------------------------------

@lab_test
def test_ping_monitor_passes_for_a_neighbour_and_fails_once_it_is_cut(lab):
    host = PluginHost(lab, "node-a")
    ok, message = host.ok("ping", "check", {"host": lab.addr("node-b"), "count": 2})
    assert ok and "answered 2 of 2" in message
    assert host.ok("ping", "check", {"host": lab.addr6("node-b")})[0]
    lab.cut("node-b")
    ok, message = host.ok("ping", "check", {"host": lab.addr("node-b"), "timeout": 0.5})
    assert not ok and "did not answer" in message


def test_ping_monitor_on_loopback_and_its_errors(tmp_path, monkeypatch):
    ok, message = call("ping", "check", {"host": "127.0.0.1", "timeout": 1})
    assert ok and message.startswith("127.0.0.1 answered 1 of 1, average")
    assert "count" in errors("ping", "monitor", {"host": "127.0.0.1", "count": 0})[0]
    assert "host" in errors("ping", "monitor", {"host": "-f"})[0]
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PluginError, match="install iputils-ping"):
        call("ping", "check", {"host": "127.0.0.1"})


# -- ocf ---------------------------------------------------------------------------------

@needs_agents
def test_ocf_runs_the_real_dummy_agent(tmp_path):
    args = {"agent": "heartbeat/Dummy", "params": {"state": str(tmp_path / "dummy.state")}}
    assert errors("ocf", "resource", args) == []
    assert call("ocf", "alive", args) is False
    call("ocf", "start", args)
    assert (tmp_path / "dummy.state").exists()
    assert call("ocf", "alive", args) is True
    call("ocf", "stop", args)
    assert call("ocf", "alive", args) is False
    call("ocf", "stop", args)  # stopped already: OCF_SUCCESS or OCF_NOT_RUNNING, both fine


@needs_agents
def test_ocf_failure_names_the_exit_code_and_the_reason(tmp_path):
    args = {"agent": "heartbeat/Dummy", "params": {"state": str(tmp_path / "no/such/dir/x.state")}}
    with pytest.raises(PluginError, match=r"heartbeat/Dummy start: exit code 1 \(OCF_ERR_GENERIC\): .*No such file"):
        call("ocf", "start", args)


FAKE_AGENT = """#!/bin/sh
env | grep -E '^OCF_' | sort > "$OCF_RESKEY_envfile"
case "$1" in
    meta-data) cat <<'EOF'
<?xml version="1.0"?>
<resource-agent name="Fake"><parameters>
<parameter name="envfile" required="1"><content type="string"/></parameter>
<parameter name="code"><content type="string"/></parameter>
<parameter name="flag"><content type="boolean"/></parameter>
</parameters></resource-agent>
EOF
    exit 0;;
    start|stop|monitor|promote|demote) echo "something went wrong in $1" >&2; exit "${OCF_RESKEY_code:-0}";;
    *) exit 3;;
esac
"""


@pytest.fixture
def fake_ocf_root(tmp_path):
    agent = tmp_path / "ocf/resource.d/test/Fake"
    agent.parent.mkdir(parents=True)
    agent.write_text(FAKE_AGENT)
    agent.chmod(0o755)
    return tmp_path / "ocf"


def test_ocf_passes_the_ocf_environment(fake_ocf_root, tmp_path):
    envfile = tmp_path / "env"
    args = {"agent": "test/Fake", "ocf_root": str(fake_ocf_root), "timeout": 7, "instance": "web-vip",
            "params": {"envfile": str(envfile), "flag": True}}
    assert errors("ocf", "resource", args) == []
    call("ocf", "start", args)
    env = dict(line.split("=", 1) for line in envfile.read_text().splitlines())
    assert env["OCF_ROOT"] == str(fake_ocf_root)
    assert env["OCF_RESOURCE_INSTANCE"] == "web-vip"
    assert env["OCF_RESOURCE_TYPE"] == "Fake" and env["OCF_RESOURCE_PROVIDER"] == "test"
    assert env["OCF_RA_VERSION_MAJOR"] == "1" and env["OCF_RA_VERSION_MINOR"] == "0"
    assert env["OCF_RESKEY_CRM_meta_timeout"] == "7000"
    assert env["OCF_RESKEY_flag"] == "true"


@pytest.mark.parametrize("code, alive", [(0, True), (8, True), (7, False)])
def test_ocf_monitor_codes_map_to_alive(fake_ocf_root, tmp_path, code, alive):
    args = {"agent": "test/Fake", "ocf_root": str(fake_ocf_root),
            "params": {"envfile": str(tmp_path / "env"), "code": code}}
    assert call("ocf", "alive", args) is alive


@pytest.mark.parametrize("code, name", [(1, "OCF_ERR_GENERIC"), (2, "OCF_ERR_ARGS"), (5, "OCF_ERR_INSTALLED"),
                                        (6, "OCF_ERR_CONFIGURED"), (9, "OCF_FAILED_MASTER")])
def test_ocf_errors_name_the_ocf_code_and_the_last_stderr_line(fake_ocf_root, tmp_path, code, name):
    args = {"agent": "test/Fake", "ocf_root": str(fake_ocf_root),
            "params": {"envfile": str(tmp_path / "env"), "code": code}}
    for function in ("alive", "start", "promote", "stop"):
        with pytest.raises(PluginError, match=rf"exit code {code} \({name}\): something went wrong"):
            call("ocf", function, args)


def test_ocf_stop_of_a_stopped_resource_succeeds(fake_ocf_root, tmp_path):
    args = {"agent": "test/Fake", "ocf_root": str(fake_ocf_root),
            "params": {"envfile": str(tmp_path / "env"), "code": 7}}
    call("ocf", "stop", args)
    with pytest.raises(PluginError, match="OCF_NOT_RUNNING"):
        call("ocf", "start", args)


def test_ocf_validate_reports_missing_unknown_and_uninstalled(fake_ocf_root):
    base = {"agent": "test/Fake", "ocf_root": str(fake_ocf_root)}
    assert errors("ocf", "resource", {**base, "params": {}}) == [
        "OCF agent test/Fake: missing required parameter 'envfile'"]
    assert "unknown parameter 'colour' (it takes: code, envfile, flag)" in \
        errors("ocf", "resource", {**base, "params": {"envfile": "/x", "colour": "red"}})[0]
    assert "does not exist" in errors("ocf", "resource", {**base, "agent": "test/Nope"})[0]
    (fake_ocf_root / "resource.d/test/Fake").chmod(0o644)
    assert "not executable" in errors("ocf", "resource", base)[0]
    assert "provider/type" in errors("ocf", "resource", {"agent": "../../bin/sh"})[0]


@needs_agents
def test_ocf_validate_knows_real_agents():
    assert errors("ocf", "resource", {"agent": "heartbeat/IPaddr2", "params": {}}) == [
        "OCF agent heartbeat/IPaddr2: missing required parameter 'ip'"]
    assert errors("ocf", "resource", {"agent": "heartbeat/Dummy"}) == []
    problems = errors("ocf", "resource", {"agent": "heartbeat/Stateful"})
    assert problems and "calls Pacemaker's" in problems[0] and "which HA-DO does not provide" in problems[0]
    assert "crm_attribute" in errors("ocf", "resource", {"agent": "heartbeat/pgsql"})[0]


@needs_agents
@lab_test
def test_ocf_runs_the_real_ipaddr2_agent_in_a_namespace(lab):
    host = PluginHost(lab, "node-a")
    vip = lab.vip(150)
    args = {"agent": "heartbeat/IPaddr2",
            "params": {"ip": vip, "cidr_netmask": "24", "nic": "eth0"}}
    assert host.ok("ocf", "alive", args) is False
    host.ok("ocf", "start", args)
    assert f"{vip}/24" in addresses(lab, "node-a")
    assert host.ok("ocf", "alive", args) is True
    assert lab.run("client", ["ping", "-c", "1", "-W", "1", vip]).returncode == 0
    host.ok("ocf", "stop", args)
    assert f"{vip}/24" not in addresses(lab, "node-a")
    assert host.ok("ocf", "alive", args) is False


# -- fence_command ---------------------------------------------------------------------------

def test_fence_command_runs_the_command_with_the_node_name(tmp_path):
    record = tmp_path / "fenced"
    command = [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
               str(record), "vm-{node}"]
    assert errors("fence_command", "fence", {"command": command}) == []
    REGISTRY.get("fence_command").bind("fence", {"command": command}, node="node-b")()
    assert record.read_text() == "vm-node-b"


def test_fence_command_failures_are_errors():
    fence = REGISTRY.get("fence_command")
    failing = [sys.executable, "-c", "import sys; print('BMC unreachable', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(PluginError, match="fencing node-b failed: .*exit code 3: BMC unreachable"):
        fence.bind("fence", {"command": failing}, node="node-b")()
    with pytest.raises(PluginError, match="fencing node-b failed: .*timeout of 0.3 s"):
        fence.bind("fence", {"command": ["sleep", "5"], "timeout": 0.3}, node="node-b")()
    with pytest.raises(PluginError, match="command not found"):
        fence.bind("fence", {"command": ["no-such-fence-tool-{node}"]}, node="node-b")()
    assert "argv" in errors("fence_command", "fence", {"command": "ipmitool power off"})[0]
    assert errors("fence_command", "fence", {}) == [
        "missing argument 'command' for plugin 'fence_command' (expected: command, timeout)"]
