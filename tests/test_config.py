"""Config validation: every error names its JSON path and what is expected."""

import json
import subprocess
import sys

import pytest

from hado import config
from helpers import REPO


def base():
    return {
        "cluster": {"name": "t"},
        "monitors": {"disk": {"plugin": "disk_space", "args": {"path": "/", "min_free_percent": 1}}},
        "apps": {"web": {
            "monitors": {"db": {"plugin": "tcp_port", "args": {"host": "127.0.0.1", "port": 5432}}},
            "resources": [{"name": "a", "plugin": "dummy", "args": {"path": "/tmp/x"}}],
        }},
    }


def errors_of(raw, node=None):
    _, errors, _ = config.validate(raw, node)
    return errors


def test_valid_config_gets_defaults():
    cfg, errors, warnings = config.validate(base())
    assert errors == [] and warnings == []
    res = cfg["apps"]["web"]["resources"][0]
    assert res["on_fail"] == "restart" and res["max_restarts"] == 3 and res["kind"] == "active-standby"
    assert cfg["monitors"]["disk"]["fall"] == 3 and cfg["monitors"]["disk"]["rise"] == 2
    assert cfg["cluster"]["nodes"] == {"local": {"url": "http://127.0.0.1:6185", "priority": 0, "witness": False,
                                                 "host": "127.0.0.1", "port": 6185}}
    assert cfg["node"]["listen"] == "127.0.0.1:6185"


def test_defaults_are_never_shared_between_configs():
    a, _, _ = config.validate(base())
    a["apps"]["web"]["resources"][0]["args"]["path"] = "/changed"
    a["node"]["plugin_dirs"].append("/x")
    b, _, _ = config.validate(base())
    assert b["apps"]["web"]["resources"][0]["args"]["path"] == "/tmp/x" and b["node"]["plugin_dirs"] == []


def test_unknown_key_names_its_path():
    raw = base()
    raw["apps"]["web"]["stikiness"] = True
    assert any(e.startswith("apps.web.stikiness: unknown key") for e in errors_of(raw))


def test_unknown_plugin_argument_lists_expected_ones():
    raw = base()
    raw["apps"]["web"]["monitors"]["db"]["args"]["prot"] = 1
    errors = errors_of(raw)
    assert "apps.web.monitors.db.args.prot: unknown argument for plugin 'tcp_port' (expected: host, port, timeout)" in errors


def test_missing_plugin_argument():
    raw = base()
    del raw["apps"]["web"]["resources"][0]["args"]["path"]
    assert any(e.startswith("apps.web.resources[0].args: missing argument 'path' for plugin 'dummy'")
               for e in errors_of(raw))


def test_missing_plugin_lists_the_plugins_found():
    raw = base()
    raw["apps"]["web"]["resources"][0]["plugin"] = "dumy"
    errors = [e for e in errors_of(raw) if e.startswith("apps.web.resources[0].plugin:")]
    assert errors and "no plugin named 'dumy'" in errors[0] and "dummy" in errors[0]


def test_wrong_type():
    raw = base()
    raw["monitors"]["disk"]["interval"] = "5s"
    raw["cluster"]["heartbeat"] = True
    errors = errors_of(raw)
    assert 'monitors.disk.interval: expected a number, got "5s"' in errors
    assert "cluster.heartbeat: expected a number, got true" in errors


def test_duplicate_resource_name():
    raw = base()
    raw["apps"]["web"]["resources"].append({"name": "a", "plugin": "dummy", "args": {"path": "/tmp/y"}})
    assert "apps.web.resources[1].name: duplicate resource name 'a' in this app" in errors_of(raw)


def test_monitor_plugin_used_as_resource():
    raw = base()
    raw["apps"]["web"]["resources"][0] = {"name": "p", "plugin": "tcp_port", "args": {"host": "h", "port": 1}}
    assert any(e.startswith("apps.web.resources[0].args: plugin 'tcp_port' is not a resource plugin")
               for e in errors_of(raw))


def test_all_errors_are_reported_together():
    raw = base()
    raw["apps"]["web"]["resources"][0]["on_fail"] = "reboot"
    raw["monitors"]["disk"]["fall"] = 0
    raw["bogus"] = 1
    errors = errors_of(raw)
    assert len(errors) >= 3
    assert any(e.startswith("apps.web.resources[0].on_fail:") for e in errors)
    assert any(e.startswith("monitors.disk.fall: must be at least 1") for e in errors)
    assert any(e.startswith("bogus: unknown key") for e in errors)


def test_cluster_rules():
    raw = base()
    raw["cluster"].update(nodes={"a": {"url": "http://127.0.0.1:1"}, "b": {"url": "ftp://x"}},
                          heartbeat=1.0, dead_after=2.0)
    errors = errors_of(raw, "a")
    assert "cluster.nodes.b.url: expected http://HOST:PORT, got 'ftp://x'" in errors
    assert any(e.startswith("cluster.dead_after: must be at least 3 x heartbeat") for e in errors)
    assert any(e.startswith("cluster.secret_file: a cluster of several nodes needs") for e in errors)
    assert "--node: this node is 'zz' (from --node), which is not in cluster.nodes (a, b)" in errors_of(raw, "zz")


def test_quorum_none_needs_fence_or_explicit_consent():
    raw = base()
    raw["cluster"].update(nodes={"a": {"url": "http://127.0.0.1:1"}, "b": {"url": "http://127.0.0.1:2"}},
                          secret_file="/s", quorum="none")
    assert any(e.startswith("cluster.quorum: 'none' without a fence plugin") for e in errors_of(raw, "a"))
    raw["cluster"]["i_understand_split_brain"] = True
    _, errors, warnings = config.validate(raw, "a")
    assert errors == [] and any("split-brain" in w for w in warnings)


def test_two_nodes_without_witness_warn():
    raw = base()
    raw["cluster"].update(nodes={"a": {"url": "http://127.0.0.1:1"}, "b": {"url": "http://127.0.0.1:2"}},
                          secret_file="/s")
    _, errors, warnings = config.validate(raw, "a")
    assert errors == [] and any("two nodes without a witness" in w for w in warnings)


def check_config(path):
    return subprocess.run([sys.executable, "-m", "hado", "check-config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def test_check_config_command_on_example_and_broken_files(tmp_path):
    ok = check_config(REPO / "config.example.json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"apps": {,}}')
    out = check_config(bad_json)
    assert out.returncode != 0 and "not valid JSON" in out.stdout and "line 1" in out.stdout
    raw = base()
    raw["apps"]["web"]["monitors"]["db"]["args"]["prot"] = 1
    raw["apps"]["web"]["resources"].append({"name": "a", "plugin": "dummy", "args": {"path": "/tmp/y"}})
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(raw))
    out = check_config(broken)
    assert out.returncode == 2
    assert "apps.web.monitors.db.args.prot: unknown argument for plugin 'tcp_port'" in out.stdout
    assert "apps.web.resources[1].name: duplicate resource name" in out.stdout
    assert "2 error(s)" in out.stdout


def test_daemon_refuses_to_start_on_a_broken_config(tmp_path):
    raw = base()
    raw["apps"]["web"]["resources"][0]["plugin"] = "nope"
    path = tmp_path / "c.json"
    path.write_text(json.dumps(raw))
    out = subprocess.run([sys.executable, "-m", "hado", "--foreground", "--config", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "apps.web.resources[0].plugin: no plugin named 'nope'" in out.stdout + out.stderr


def test_reference_lists_every_key():
    text = config.reference()
    for schema in config.SCHEMAS.values():
        for key in schema:
            assert f"``{key}``" in text


@pytest.mark.parametrize("listen", ["nohost", "1.2.3.4:x"])
def test_bad_listen(listen):
    raw = base()
    raw["node"] = {"listen": listen}
    assert any(e.startswith("node.listen: expected HOST:PORT") for e in errors_of(raw))


def test_admin_docs_carry_the_current_config_reference():
    """docs/admin.rst embeds `python3 -m hado config-reference`: keep it regenerated."""
    assert config.reference() in (REPO / "docs" / "admin.rst").read_text()
