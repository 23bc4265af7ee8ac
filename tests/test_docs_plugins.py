"""docs/plugins.rst works as written: its example plugins, configs and outputs are real.

The doc marks what a reader would copy with a paragraph ending in
``File ``/path``:`` (a whole file) or ``In ``/path``:`` (a part of one), followed by a
``.. code-block::``. Console blocks hold ``$ command`` lines and the output the admin
sees; a line ``...`` stands for any number of lines. The doc's paths
(/etc/hado/plugins, /etc/hado/config.json, /run/hado) are mapped to a temporary
directory, and the commands run against the real ``python3 -m hado``.
"""

import json
import re
import shlex
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hado.plugin import Registry
from helpers import REPO, Daemon, free_port, wait_for, write_config

DOC = REPO / "docs" / "plugins.rst"
MARKER = re.compile(r"(File|In) ``(/[^`]+)``:\s*$")
DIRECTIVE = re.compile(r"\.\. code-block:: (\w+)\s*$")


def code_blocks(text):
    """[(marker kind or None, marker path or None, language, content)] in document order."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        match = DIRECTIVE.fullmatch(line)
        if not match:
            continue
        body, j = [], i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j].startswith("   ")):
            body.append(lines[j])
            j += 1
        content = "\n".join(body).strip("\n")
        indent = min(len(b) - len(b.lstrip()) for b in body if b.strip())
        content = "\n".join(b[indent:] for b in content.splitlines()) + "\n"
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = MARKER.search(lines[k]) if k >= 0 else None
        blocks.append((marker and marker.group(1), marker and marker.group(2), match.group(1), content))
    return blocks


def console_steps(content):
    """[(argv, expected output lines)] from a console block."""
    steps = []
    for line in content.splitlines():
        if line.startswith("$ "):
            steps.append((shlex.split(line[2:]), []))
        else:
            steps[-1][1].append(line.rstrip())
    return steps


def output_pattern(expected):
    """A regex for the whole output: '...' alone skips lines, '...' in a line is any text."""
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split("...")) + r"\n")
    return re.compile("".join(parts))


class Paths:
    """The doc's paths and their stand-ins in the temporary directory."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.map = {"/etc/hado/plugins": tmp / "plugins", "/etc/hado/config.json": tmp / "config.json",
                    "/run/hado": tmp / "run"}
        (tmp / "plugins").mkdir()

    def to_tmp(self, text):
        for doc_path, real in self.map.items():
            text = text.replace(doc_path, str(real))
        return text

    def to_doc(self, text):
        for doc_path, real in self.map.items():
            text = text.replace(str(real), doc_path)
        return text


def run_hado(paths, argv):
    """Run a doc command (python3 -m hado ...) against the temporary files; (rc, output)."""
    assert argv[:3] == ["python3", "-m", "hado"], argv
    args = [paths.to_tmp(a) for a in argv[3:]]
    if args[0] != "check-config":
        args += ["--config", str(paths.map["/etc/hado/config.json"])]
    proc = subprocess.run([sys.executable, "-m", "hado", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=30)
    return proc.returncode, paths.to_doc(proc.stdout + proc.stderr)


def check_console(paths, content, expect_rc=0):
    for argv, expected in console_steps(content):
        rc, output = run_hado(paths, argv)
        assert output_pattern(expected).fullmatch(output), \
            f"{' '.join(argv)}: output differs from docs/plugins.rst\n--- doc:\n" + "\n".join(expected) + \
            f"\n--- actual:\n{output}"
        assert rc == expect_rc, f"{' '.join(argv)}: exit code {rc}\n{output}"


class Hook(BaseHTTPRequestHandler):
    """Collects the JSON bodies POSTed to it (the webhook example's receiver)."""

    def do_POST(self):
        self.server.events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.events = []
    thread = threading.Thread(target=server.serve_forever, name="test-webhook", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def test_examples_in_plugins_doc_work_as_written(tmp_path, hook):
    """Every file, config and console output in the doc, in order, then a real daemon."""
    paths = Paths(tmp_path)
    blocks = code_blocks(DOC.read_text())
    plugins = [path for kind, path, lang, _ in blocks if kind == "File" and lang == "python"]
    assert plugins == ["/etc/hado/plugins/webhook.py", "/etc/hado/plugins/load.py", "/etc/hado/plugins/flag.py"]

    config_text, fragments, typo_checked = None, [], False
    daemon_steps = []   # console blocks that need the running daemon
    for kind, path, lang, content in blocks:
        if kind == "File":
            Path(paths.to_tmp(path)).write_text(content if lang == "python" else paths.to_tmp(content))
            if path.endswith("config.json"):
                config_text = content
        elif kind == "In":
            fragments.append(json.loads("{" + content + "}"))
        elif lang == "console" and " action " in content:
            daemon_steps.append(content)
        elif lang == "console" and "unknown argument" in content:
            # The doc's typo: "maxload" for "max_load" in the config just shown.
            typo = config_text.replace('"max_load"', '"maxload"')
            assert typo != config_text
            paths.map["/etc/hado/config.json"].write_text(paths.to_tmp(typo))
            check_console(paths, content, expect_rc=2)
            paths.map["/etc/hado/config.json"].write_text(paths.to_tmp(config_text))
            typo_checked = True
        elif lang == "console":
            check_console(paths, content)
    assert typo_checked and daemon_steps and len(fragments) == 1

    # The last whole config, plus the notify fragment pointed at our receiver, on a free port.
    config = json.loads(paths.to_tmp(config_text))
    notify = fragments[0]["cluster"]["notify"]
    notify[0]["args"]["url"] = f"http://127.0.0.1:{hook.server_port}/hado"
    port = free_port()
    config["cluster"] = {"nodes": {"node-a": {"url": f"http://127.0.0.1:{port}"}}, "notify": notify}
    config_path = write_config(paths.map["/etc/hado/config.json"], config)
    rc, output = run_hado(paths, ["python3", "-m", "hado", "check-config", str(config_path)])
    assert rc == 0, output

    flag = tmp_path / "run" / "web.active"
    daemon = Daemon(config_path, "node-a", port, tmp_path).start()
    try:
        daemon.wait_ready()
        wait_for(lambda: daemon.app("web")["resources"]["flag"]["state"] == "started", 10,
                 what="resource flag started")
        assert flag.read_text() == "web is active on node-a\n"
        monitor = wait_for(lambda: daemon.state()["monitors"].get("load"), 5, what="monitor load reported")
        assert re.fullmatch(r"load \d+\.\d\d is (under 8|at or over max_load 8).*", monitor["message"]), monitor
        for content in daemon_steps:
            check_console(paths, content)
        event = wait_for(lambda: next((e for e in hook.events if e["active"]), None), 5,
                         what="the webhook to receive an 'active' decision")
        assert event["app"] == "web" and event["node"] == event["active_node"] == "node-a", event
        assert daemon.terminate(timeout=15) == 0, daemon.log()
        assert not flag.exists(), "stop() should have removed the flag file"
    finally:
        daemon.kill()


def test_builtin_plugin_list_matches_plugins_dir():
    """The doc lists every built-in plugin once, with the kinds its file defines."""
    text = DOC.read_text().split("Built-in plugins\n")[1]
    listed = dict(re.findall(r"^- ``(\w+)`` \(([\w, ]+)\):", text, re.M))
    files = sorted(p.stem for p in (REPO / "plugins").glob("*.py") if not p.name.startswith("_"))
    assert sorted(listed) == files
    registry = Registry()
    for name, kinds in listed.items():
        assert registry.get(name).kinds == kinds.split(", "), name
