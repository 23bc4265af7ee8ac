"""A single node as a real daemon subprocess: resources, monitors, failures, signals, API."""

import json
import os
import signal
import socket
import time

import pytest

from helpers import Daemon, free_port, http, read_log, wait_for, write_config

HANG_PLUGIN = '''"""A monitor and resource that hang forever (for tests)."""
import time


def check(seconds=3600):
    time.sleep(seconds)
    return True


def start(seconds=3600):
    time.sleep(seconds)


def stop(seconds=3600):
    pass


def alive(seconds=3600):
    return False
'''

BAD_PLUGIN = '''"""A monitor that raises, and one that returns garbage (for tests)."""


def check(mode="raise"):
    if mode == "raise":
        raise RuntimeError("the disk is on fire")
    return "maybe"
'''


@pytest.fixture
def node(tmp_path):
    """A factory: node(config) -> a started Daemon with its API answering."""
    started = []

    def make(cfg, name="solo"):
        port = free_port()
        cfg.setdefault("cluster", {}).setdefault("nodes", {name: {"url": f"http://127.0.0.1:{port}"}})
        path = write_config(tmp_path / "config.json", cfg)
        daemon = Daemon(path, name, port, tmp_path).start()
        started.append(daemon)
        daemon.wait_ready()
        return daemon

    yield make
    for daemon in started:
        daemon.kill()


def dummy(tmp_path, name, **extra):
    return {"name": name, "plugin": "dummy", "args": {"path": str(tmp_path / name), "node": "solo"},
            "interval": 0.2, **extra}


def app_state(daemon, app="web"):
    return daemon.state()["apps"][app]


def test_resources_start_in_order_and_state_document_has_the_contract_keys(node, tmp_path):
    d = node({"apps": {"web": {"resources": [dummy(tmp_path, "a"), dummy(tmp_path, "b"), dummy(tmp_path, "c")]}}})
    wait_for(lambda: app_state(d)["role"] == "active", what="web active")
    starts = sorted((ns, path) for path in "abc" for ns, ev, _ in read_log(tmp_path / path) if ev == "start")
    assert [p for _, p in starts] == ["a", "b", "c"]
    doc = d.state()
    for key in ("node", "cluster", "version", "uptime_s", "healthy", "standby", "maintenance", "quorum",
                "peers", "monitors", "apps", "events"):
        assert key in doc
    app = doc["apps"]["web"]
    for key in ("role", "active_node", "eligible", "reason", "monitors", "resources"):
        assert key in app
    assert app["active_node"] == "solo" and app["reason"].startswith("web: active on solo because")
    assert doc["quorum"] == {"ok": True, "votes": 1, "needed": 1, "voters": []}
    assert set(app["resources"]["a"]) >= {"state", "alive", "fail_count", "since", "message"}
    status, health = http(d.url + "/health")
    assert status == 200 and health["healthy"] is True
    status, active = http(d.url + "/v1/apps/web/active")
    assert status == 200 and active["role"] == "active"
    status, err = http(d.url + "/nope")
    assert status == 404 and "no such path" in err["error"]
    status, text = http(d.url + "/metrics")
    assert status == 200 and 'hado_app_role{node="solo",app="web",role="active"} 1' in text


def test_a_dead_resource_is_restarted_then_the_app_fails_after_max_restarts(node, tmp_path):
    res = dummy(tmp_path, "a", max_restarts=2, restart_window=60)
    d = node({"apps": {"web": {"resources": [res, dummy(tmp_path, "b")]}}})
    wait_for(lambda: app_state(d)["role"] == "active", what="web active")
    for count in (1, 2):
        os.remove(tmp_path / "a")
        wait_for(lambda: app_state(d)["resources"]["a"]["fail_count"] == count, what=f"failure {count} seen")
        wait_for(lambda: app_state(d)["resources"]["a"]["state"] == "started" and (tmp_path / "a").exists(),
                 what="a restarted")
    assert app_state(d)["role"] == "active"
    os.remove(tmp_path / "a")
    app = wait_for(lambda: (a := app_state(d))["role"] == "failed" and a, what="web failed")
    assert "gave up" in app["failure"]["reason"] and "max_restarts 2" in app["failure"]["reason"]
    assert not (tmp_path / "b").exists(), "the other resource of a failed app must be stopped"
    assert "has a failure" in app["reason"]
    status, _ = http(d.url + "/v1/apps/web/cleanup", {})
    assert status == 200
    app = wait_for(lambda: (a := app_state(d))["role"] == "active" and a, what="web active after cleanup")
    assert app["resources"]["a"]["fail_count"] == 0 and app["failure"] is None


def test_on_fail_failover_fails_the_app_at_once_and_ignore_only_reports(node, tmp_path):
    d = node({"apps": {"web": {"resources": [dummy(tmp_path, "a", on_fail="failover")]},
                       "side": {"resources": [dummy(tmp_path, "s", on_fail="ignore")]}}})
    wait_for(lambda: app_state(d)["role"] == "active" and app_state(d, "side")["role"] == "active", what="both active")
    os.remove(tmp_path / "a")
    os.remove(tmp_path / "s")
    wait_for(lambda: app_state(d)["role"] == "failed", what="web failed at once")
    side = wait_for(lambda: (s := app_state(d, "side"))["resources"]["s"]["fail_count"] == 1 and s, what="side failure")
    assert side["failure"] is None and not (tmp_path / "s").exists()


def test_failing_vital_monitor_stops_the_app_in_reverse_order_and_recovery_restarts_it(node, tmp_path):
    flag = tmp_path / "healthy"
    flag.write_text("")
    d = node({"monitors": {"flag": {"plugin": "command", "args": {"check": ["test", "-e", str(flag)]},
                                    "interval": 0.2, "fall": 2, "rise": 2}},
              "apps": {"web": {"resources": [dummy(tmp_path, "a"), dummy(tmp_path, "b")]}}})
    wait_for(lambda: app_state(d)["role"] == "active", what="web active")
    flag.unlink()
    state = wait_for(lambda: (s := d.state())["apps"]["web"]["role"] == "standby" and s, what="web stopped")
    assert state["healthy"] is False
    assert "monitor flag" in state["apps"]["web"]["reason"]
    stops = sorted((ns, p) for p in "ab" for ns, ev, _ in read_log(tmp_path / p) if ev == "stop")
    assert [p for _, p in stops] == ["b", "a"]
    assert http(d.url + "/health")[0] == 503
    flag.write_text("")
    wait_for(lambda: app_state(d)["role"] == "active", what="web active again after rise")
    assert d.state()["healthy"] is True


def test_sigterm_stops_resources_in_reverse_order_and_exits_0(node, tmp_path):
    d = node({"apps": {"web": {"resources": [dummy(tmp_path, "a"), dummy(tmp_path, "b"), dummy(tmp_path, "c")]}}})
    wait_for(lambda: app_state(d)["role"] == "active", what="web active")
    assert d.terminate(timeout=20) == 0
    stops = sorted((ns, p) for p in "abc" for ns, ev, _ in read_log(tmp_path / p) if ev == "stop")
    assert [p for _, p in stops] == ["c", "b", "a"]
    assert not any((tmp_path / p).exists() for p in "abc")


def test_sighup_applies_a_valid_config_and_keeps_the_old_one_when_broken(node, tmp_path):
    cfg = {"apps": {"web": {"resources": [dummy(tmp_path, "a")]}}}
    d = node(cfg)
    wait_for(lambda: app_state(d)["role"] == "active", what="web active")
    path = tmp_path / "config.json"
    good = json.loads(path.read_text())
    path.write_text('{"apps": {"web": {"resources": [{"name": "a", "plugin": "nope"}]}}}')
    d.signal(signal.SIGHUP)
    state = wait_for(lambda: (s := d.state())["config_error"] and s, what="reload refused")
    assert "no plugin named 'nope'" in state["config_error"]
    assert state["apps"]["web"]["role"] == "active" and d.alive()
    assert "reload of" in d.log() and "refused" in d.log()
    good["apps"]["web"]["resources"].append(dummy(tmp_path, "b"))
    path.write_text(json.dumps(good))
    d.signal(signal.SIGHUP)
    wait_for(lambda: (tmp_path / "b").exists() and app_state(d)["role"] == "active", what="b added by reload")
    assert d.state()["config_error"] is None
    starts_a = [ev for _, ev, _ in read_log(tmp_path / "a")]
    assert starts_a == ["start"], "a reload must not bounce resources that keep running"


def test_hung_plugin_does_not_block_the_api_and_is_reported(node, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hang.py").write_text(HANG_PLUGIN)
    (plugins / "bad.py").write_text(BAD_PLUGIN)
    d = node({"node": {"plugin_dirs": [str(plugins)]},
              "monitors": {"stuck": {"plugin": "hang", "timeout": 0.5, "interval": 0.5, "vital": False},
                           "fire": {"plugin": "bad", "args": {"mode": "raise"}, "interval": 0.3, "vital": False},
                           "garbage": {"plugin": "bad", "args": {"mode": "garbage"}, "interval": 0.3, "vital": False}},
              "apps": {"web": {"resources": [{"name": "h", "plugin": "hang", "timeout": 0.5, "start_timeout": 0.5,
                                              "interval": 0.3, "max_restarts": 1}]}}})
    for _ in range(10):
        t0 = time.monotonic()
        state = d.state(timeout=1.0)
        assert time.monotonic() - t0 < 1.0
        time.sleep(0.1)
    state = wait_for(lambda: (s := d.state())["monitors"]["stuck"]["ok"] is False and s, what="stuck failed")
    assert "timeout after 0.5 s" in state["monitors"]["stuck"]["message"] or \
           "previous call still running" in state["monitors"]["stuck"]["message"]
    assert "RuntimeError: the disk is on fire" in state["monitors"]["fire"]["message"]
    assert "check() returned 'maybe'" in state["monitors"]["garbage"]["message"]
    app = wait_for(lambda: (a := app_state(d))["role"] == "failed" and a, timeout=15, what="hung app failed")
    assert "start failed" in app["failure"]["reason"]
    events = " ".join(e["why"] for e in d.state()["events"])
    assert "start failed: timeout after 0.5 s" in events
    assert d.terminate(timeout=15) == 0


def test_admin_requests_need_the_token_and_standby_moves_the_app_off(node, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token-for-tests\n")
    token.chmod(0o600)
    d = node({"node": {"token_file": str(token)}, "apps": {"web": {"resources": [dummy(tmp_path, "a")]}}})
    wait_for(lambda: app_state(d)["role"] == "active", what="web active")
    assert "s3cret" not in json.dumps(d.state())
    status, err = http(d.url + "/v1/node/standby", {}, token=None)
    assert status == 401 and "token" in err["error"]
    status, err = http(d.url + "/v1/node/standby", {}, token="wrong")
    assert status == 401
    status, _ = http(d.url + "/v1/node/standby", {}, token="s3cret-token-for-tests")
    assert status == 200
    app = wait_for(lambda: (a := app_state(d))["role"] == "standby" and a, what="web stopped by standby")
    assert app["reason"].startswith("STANDBY: ") and "is in standby" in app["reason"]
    status, _ = http(d.url + "/v1/node/online", {}, token="s3cret-token-for-tests")
    wait_for(lambda: app_state(d)["role"] == "active", what="web back after online")


def test_malformed_requests_get_4xx_and_the_daemon_keeps_running(node, tmp_path):
    d = node({"apps": {"web": {"resources": [dummy(tmp_path, "a")]}}})
    assert http(d.url + "/v1/maintenance", {"on": "yes"})[0] == 400
    assert http(d.url + "/v1/apps/nope/move", {"node": "solo"})[0] == 404
    assert http(d.url + "/v1/apps/web/move", {"node": "elsewhere"})[0] == 409
    with socket.create_connection(("127.0.0.1", d.port), timeout=2) as s:
        s.sendall(b"POST /v1/maintenance HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n"
                  b"Authorization: Bearer " + d.token().encode() + b"\r\n\r\n")
        assert b"413" in s.recv(200)
    with socket.create_connection(("127.0.0.1", d.port), timeout=2) as s:
        s.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        assert s.recv(200).startswith(b"HTTP/1.")
    assert d.state()["node"] == "solo"


def test_maintenance_leaves_resources_alone(node, tmp_path):
    d = node({"apps": {"web": {"resources": [dummy(tmp_path, "a")]}}})
    wait_for(lambda: app_state(d)["role"] == "active", what="web active")
    assert http(d.url + "/v1/maintenance", {"on": True})[0] == 200
    wait_for(lambda: app_state(d)["resources"]["a"]["state"] == "unmanaged", what="unmanaged")
    os.remove(tmp_path / "a")
    wait_for(lambda: app_state(d)["resources"]["a"]["alive"] is False, what="maintenance sees it gone")
    time.sleep(0.5)
    assert not (tmp_path / "a").exists(), "maintenance must not restart anything"
    assert app_state(d)["reason"].startswith("MAINTENANCE: ")
    assert http(d.url + "/v1/maintenance", {"on": False})[0] == 200
    wait_for(lambda: (tmp_path / "a").exists() and app_state(d)["role"] == "active", what="managed again")


def test_restarted_daemon_probes_and_keeps_running_resources(node, tmp_path):
    d = node({"apps": {"web": {"resources": [dummy(tmp_path, "a")]}}})
    wait_for(lambda: app_state(d)["role"] == "active", what="web active")
    d.kill()
    d.start()
    d.wait_ready()
    wait_for(lambda: app_state(d)["role"] == "active", what="web active after restart")
    assert [ev for _, ev, _ in read_log(tmp_path / "a")] == ["start"], "no stop/start bounce after a restart"
