"""The command line as an admin types it: keygen, plugins, status, explain, move, demo."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest

from helpers import REPO, Cluster, wait_for


def hado(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "hado", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_keygen_writes_a_private_secret_and_never_overwrites(tmp_path):
    path = tmp_path / "secret"
    out = hado("keygen", str(path))
    assert out.returncode == 0 and "mode 0600" in out.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text().strip()) == 64
    before = path.read_text()
    again = hado("keygen", str(path))
    assert again.returncode == 1 and "exists" in again.stderr and path.read_text() == before


def test_plugins_lists_built_ins_with_their_arguments():
    out = hado("plugins", "--config", "/nonexistent.json")
    assert out.returncode == 0
    assert re.search(r"^tcp_port\s+monitor: ", out.stdout, re.M)
    assert "monitor args: host, port, timeout=2.0" in out.stdout
    assert re.search(r"^dummy\s+resource: ", out.stdout, re.M)


def test_plugin_dirs_override_built_ins(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "tcp_port.py").write_text('"""My own tcp_port."""\n\ndef check(where):\n    return True\n')
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"node": {"plugin_dirs": [str(plugins)]}}))
    out = hado("plugins", "--config", str(cfg))
    assert "My own tcp_port." in out.stdout and "monitor args: where" in out.stdout


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.stop_all()


def test_status_and_explain_tell_who_runs_the_app_and_why(cluster):
    c = cluster.start()
    assert c.wait_active() == "node-a"
    wait_for(lambda: c.agree() == "node-a", what="agreement")
    cfg = str(c.config_path)
    out = hado("status", "--config", cfg, "--node", "node-b")
    assert out.returncode == 0, out.stderr
    assert "App web: active on node-a; here: standby" in out.stdout
    assert "why: web: standby on node-b because node-a already runs it (stickiness)" in out.stdout
    assert re.search(r"node-a\s+up\s+priority 100", out.stdout)
    as_json = json.loads(hado("status", "--json", "--config", cfg, "--node", "node-c").stdout)
    assert as_json["apps"]["web"]["active_node"] == "node-a"
    out = hado("explain", "web", "--if", "node-a=down", "--config", cfg, "--node", "node-b")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("if node-a were down: web would be active on node-b: "
                                 "node-b has the highest priority 90 among 2 candidates")
    out = hado("explain", "web", "--if", "node-a=standby", "--if", "node-b=unhealthy", "--config", cfg,
               "--node", "node-b")
    assert "web would be active on node-c" in out.stdout
    bad = hado("explain", "web", "--if", "node-z=down", "--config", cfg, "--node", "node-b")
    assert bad.returncode == 1 and "expected NODE=down|standby|unhealthy" in bad.stderr


def test_move_and_standby_from_the_command_line(cluster):
    c = cluster.start()
    assert c.wait_active() == "node-a"
    cfg = str(c.config_path)
    out = hado("move", "web", "node-c", "--config", cfg, "--node", "node-b")
    assert out.returncode == 0 and "moving to node-c" in out.stdout
    wait_for(lambda: c.active() == ["node-c"], what="moved to node-c")
    out = hado("standby", "node-c", "--config", cfg, "--node", "node-a")
    assert out.returncode == 0 and "node-c: standby" in out.stdout
    wait_for(lambda: len(c.active()) == 1 and c.active() != ["node-c"], what="moved off node-c")
    refused = hado("move", "web", "node-c", "--config", cfg, "--node", "node-a")
    assert refused.returncode == 1 and "node-c is in standby" in refused.stderr


def test_client_commands_explain_an_unreachable_daemon():
    out = hado("status", "--url", "http://127.0.0.1:9")
    assert out.returncode == 1 and "cannot reach the hado daemon" in out.stderr


def test_demo_shows_a_failover_and_leaves_nothing_behind():
    """The README's demo to its end, then stopped as a terminal would (SIGTERM)."""
    proc = subprocess.Popen([sys.executable, "-m", "hado", "demo"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C ends the demo" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "*** kill -9 node-a" in out
    match = re.search(r"failover: (node-[bc]) runs 'web' ([0-9.]+) s after the kill", out)
    assert match, out
    assert "stays standby: a running app stays where it is" in out
    workdir = re.search(r"files in (\S+)", out).group(1)
    assert not os.path.exists(workdir)
    left = subprocess.run(["pgrep", "-f", workdir], capture_output=True, text=True)
    assert left.stdout.strip() == "", "demo daemons left running"
