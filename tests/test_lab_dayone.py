"""Day one in the network lab: config.cluster.example.json, unchanged in structure, on three nodes.

The admin walk-through (README, docs/admin.rst) with real daemons, a real VIP and a real
nginx, in the network lab (tests/lab/netlab.py: node-a, node-b, node-c and a client,
each in its own network namespace, on one bridge):

1. One config for every node: config.cluster.example.json with the lab's addresses
   put in for the documented examples (10.0.0.11-13 -> the nodes, 10.0.0.100 -> the
   lab's VIP, eth0 stays eth0) and temporary files for /etc/hado/secret and for
   nginx's config and pidfile, under ``{node}`` so each node has its own (hado
   replaces ``{node}`` in the args). The secret comes from ``hado keygen``. Nothing
   else changes: no ``node.name``, no ``--node``; each daemon finds its own name
   because its url address is an address of its namespace.
2. ``hado check-config`` in each node's namespace: ok, as that node.
3. ``python3 -m hado --config FILE`` in each namespace. The docs run it from the tree
   (``cd /opt/hado``; hado.service has WorkingDirectory=/opt/hado); here the working
   directory is a temporary one and PYTHONPATH names the repository, which shows that
   nothing (the leash included) depends on the working directory. The app ``web`` (the VIP with its 1 s lease, then /usr/sbin/nginx under the process
   plugin's leash, lease 1 s) comes up on exactly one node, and the client, asking
   http://VIP/ every 20 ms, gets that node's page (it names the node).
   ``hado status`` on a standby node says so.
4. ``hado move web NODE`` run in the third node's namespace: the client is then
   served by NODE's nginx; the same move again is refused (nothing to move).
5. ``kill -9`` of the active hado: its leash kills its nginx at once, its VIP expires
   by its lease, and the client is served by another node's nginx.
6. The killed node's hado is started again: it stays standby (stickiness), and
   nothing moves.

All along, one sampler records every 20 ms which namespaces hold the VIP, another which
namespaces run an nginx process (all namespaces share one /proc; an nginx belongs to
the namespace whose /run/netns inode its /proc/PID/ns/net names): in no sample may two
nodes hold the VIP or run nginx. Timings are the example's: heartbeat 0.5 s, dead_after
2 s, so takeover_after = max(2, 1 + 0.35 + 0.5) = 2 s.

Needs root, the lab's tools and Debian's nginx-light (/usr/sbin/nginx); skips with the
reason otherwise.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import wait_for
from lab import netlab
from lab.netlab import Lab
from test_lab_cluster import Reader, ask

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.cluster.example.json"
NGINX = Path("/usr/sbin/nginx")
SKIP = netlab.skip_reason() or (None if os.access(NGINX, os.X_OK) else
                                "needs nginx (apt-get install nginx-light): /usr/sbin/nginx is missing")
pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

APP = "web"
FAILOVER_BOUND = 10.0   # seconds from kill -9 to the client served by another node (measured ~2.5)
MOVE_BOUND = 10.0       # seconds from `hado move` to the client served by the target (measured < 1)
LEASH_BOUND = 1.0       # seconds from kill -9 to the killed node's nginx gone (the leash: ~0.2)

NGINX_CONF = """\
user root;
worker_processes 1;
error_log {dir}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 80;
        root {dir}/html;
        default_type text/plain;
    }}
}}
"""

# Which lab namespaces run an nginx process, every INTERVAL s, into a file:
# "<monotonic ns> node-a,node-b" or "<monotonic ns> -". Outside the lab: all
# namespaces share one /proc, and /proc/PID/ns/net names a namespace by its inode.
NGINX_SAMPLER = textwrap.dedent("""
    import os, signal, sys, threading, time
    out_path, interval, *targets = sys.argv[1:]
    interval = float(interval)
    inodes = {}
    for target in targets:
        name, path = target.split("=", 1)
        inodes[f"net:[{os.stat(path).st_ino}]"] = name
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def running():
        found = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                if not stat.startswith(f"{entry} (nginx) ") or stat.rpartition(")")[2].split()[0] in "ZX":
                    continue
                name = inodes.get(os.readlink(f"/proc/{entry}/ns/net"))
            except OSError:
                continue
            if name:
                found.add(name)
        return found

    with open(out_path, "a", buffering=1) as out:
        next_time = time.monotonic()
        while not stop.is_set():
            now = time.monotonic_ns()
            out.write(f"{now} {','.join(sorted(running())) or '-'}\\n")
            next_time += interval
            delay = next_time - time.monotonic()
            if delay < 0:
                next_time, delay = time.monotonic(), 0
            stop.wait(delay)
""")


class NginxSampler(netlab._Recorder):
    """Every ``interval`` s, which node namespaces run an nginx process (master or worker)."""

    def __init__(self, lab, interval=0.02):
        super().__init__(lab)
        self.interval = interval

    def _spawn(self):
        targets = [f"{node}=/run/netns/{self.lab.ns(node)}" for node in self.lab.nodes]
        return self.lab._popen([sys.executable, "-c", NGINX_SAMPLER, self.path, str(self.interval), *targets])

    def records(self):
        return [netlab.Sample(int(t), frozenset() if names == "-" else frozenset(names.split(",")))
                for t, names in self.lines()]


def lab_config(lab, tmp_path):
    """config.cluster.example.json with the lab's addresses and temporary paths put in."""
    text = EXAMPLE.read_text()
    substitutions = {
        "http://10.0.0.11:6185": f"http://{lab.addr('node-a')}:6185",
        "http://10.0.0.12:6185": f"http://{lab.addr('node-b')}:6185",
        "http://10.0.0.13:6185": f"http://{lab.addr('node-c')}:6185",
        "10.0.0.100/24": f"{lab.vip()}/{lab.prefixlen}",
        "http://10.0.0.100:80/": f"http://{lab.vip()}:80/",
        "/etc/hado/secret": str(tmp_path / "secret"),
        "/etc/hado/nginx-web.conf": str(tmp_path / "{node}" / "nginx-web.conf"),
        "/run/hado/nginx-web.pid": str(tmp_path / "{node}" / "nginx-web.pid"),
    }
    for old, new in substitutions.items():
        assert old in text, f"{EXAMPLE.name} no longer has {old!r}: update this test with it"
        text = text.replace(old, new)
    assert "10.0.0." not in text, "an example address was left over"
    config = json.loads(text)
    example = json.loads(EXAMPLE.read_text())
    assert "name" not in config.get("node", {}), "one file for every node: no node.name"
    assert [r["plugin"] for r in config["apps"][APP]["resources"]] == ["ipaddr", "process"]
    assert config["apps"][APP]["resources"][0]["args"]["interface"] == "eth0"
    assert config["apps"][APP]["resources"][1]["args"]["lease"], "nginx runs under the leash"
    assert json.dumps(structure(config)) == json.dumps(structure(example)), "only values changed"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path, config


def structure(value):
    """The keys and list lengths of a JSON value, without its leaf values."""
    if isinstance(value, dict):
        return {k: structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [structure(v) for v in value]
    return None


class DayOne:
    """The lab, the config and the daemons; everything goes at close() (also on failure)."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.lab = Lab(3)
        self.procs = {}
        try:
            self.vip = self.lab.vip()
            self.env = {k: v for k, v in os.environ.items()
                        if k not in ("HADO_NODE", "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC",
                                     "WATCHDOG_PID")}
            self.env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
            self.workdir = tmp_path / "cwd"    # not the repository
            self.workdir.mkdir()
            self.hado(None, "keygen", str(tmp_path / "secret"))
            self.config_path, self.config = lab_config(self.lab, tmp_path)
            for node in self.lab.nodes:
                home = tmp_path / node
                (home / "html").mkdir(parents=True)
                (home / "tmp").mkdir()
                (home / "html" / "index.html").write_text(f"{node}\n")
                (home / "nginx-web.conf").write_text(NGINX_CONF.format(dir=home))
            self.readers = {n: Reader(self.lab, n) for n in self.lab.nodes}
        except BaseException:
            self.close()
            raise

    def hado(self, node, *argv, timeout=30):
        """``python3 -m hado ARGV`` (in node's namespace, or outside for None); CompletedProcess."""
        cmd = [sys.executable, "-m", "hado", *argv]
        if node is None:
            return subprocess.run(cmd, cwd=self.workdir, env=self.env, capture_output=True, text=True,
                                  timeout=timeout)
        return self.lab.run(node, cmd, timeout=timeout, check=False, cwd=self.workdir, env=self.env)

    def start(self, node):
        with open(self.dir / f"{node}.out", "ab") as log:
            self.procs[node] = self.lab.popen(node, [sys.executable, "-m", "hado", "--config", self.config_path],
                                              cwd=self.workdir, env=self.env, stdout=log,
                                              stderr=subprocess.STDOUT)

    def kill(self, node):
        proc = self.procs[node]
        proc.kill()
        proc.wait(10)

    def states(self):
        alive = {n: r for n, r in self.readers.items() if self.procs.get(n) and self.procs[n].poll() is None}
        return ask(alive, "state")

    def active(self):
        """The node every live daemon agrees runs the app (role active there, standby elsewhere)."""
        states = self.states()
        if not states or not all(states.values()):
            return None
        apps = {n: s["apps"][APP] for n, s in states.items()}
        active = [n for n, a in apps.items() if a["role"] == "active"]
        if len(active) != 1 or {a["active_node"] for a in apps.values()} != set(active):
            return None
        if any(a["role"] != "standby" for n, a in apps.items() if n != active[0]):
            return None
        return active[0]

    def tails(self, lines=30):
        parts = []
        for node in self.lab.nodes:
            for path in (self.dir / f"{node}.out", self.dir / node / "nginx-web.pid.out"):
                text = path.read_text(errors="replace") if path.exists() else "(none)"
                kept = [line for line in text.splitlines() if '"GET /v1/state' not in line]
                parts.append(f"---- {path} (last {lines} lines)\n" + "\n".join(kept[-lines:]))
        return "\n".join(parts)

    def close(self):
        try:
            for node, proc in self.procs.items():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()   # a clean stop: hado stops nginx and drops the VIP
            for proc in self.procs.values():
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        finally:
            self.lab.teardown()       # kills whatever is left in the namespaces, then deletes them


@pytest.fixture
def day_one(tmp_path):
    made = DayOne(tmp_path)
    try:
        yield made
    finally:
        made.close()


def first_answer(answers, after_ns, node=None):
    """The first answer sent at or after after_ns (by ``node``, or by anyone)."""
    return next((a for a in answers if a.sent_ns >= after_ns and a.answer
                 and (node is None or a.answer == node)), None)


def outage(answers, old, new, after_ns):
    """Seconds from old's last answer to new's first, both sent after after_ns (the fault)."""
    answers = [a for a in answers if a.sent_ns >= after_ns - int(1e9)]
    first_new = first_answer(answers, after_ns, new)
    last_old = max((a.sent_ns for a in answers if a.answer == old and a.sent_ns < first_new.sent_ns), default=None)
    return None if last_old is None else (first_new.sent_ns - last_old) / 1e9


def changes(samples, t0):
    return ", ".join(f"{(t - t0) / 1e9:+.2f}s {'+'.join(sorted(h)) or '-'}" for t, h in netlab.holder_changes(samples))


def test_day_one_example_config_start_move_and_kill_9_with_real_nginx(day_one):
    d = day_one
    lab, nodes = d.lab, d.lab.nodes

    # 2. check-config on every node, with no --node: each finds its own name.
    for node in nodes:
        checked = d.hado(node, "check-config", str(d.config_path))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert re.search(rf"^this node: {node} \(its url address {re.escape(lab.addr(node))} is an address "
                         rf"of this machine\)", checked.stdout, re.M), checked.stdout

    t0 = time.monotonic_ns()
    with netlab.HolderSampler(lab, d.vip) as holders, NginxSampler(lab) as nginx, \
            netlab.VipProbe(lab, d.vip, port=80) as probe:
        # 3. Three daemons, the same file: the app comes up on one node.
        for node in nodes:
            d.start(node)
        first = wait_for(d.active, 30, 0.2, what=f"one node running {APP}, all agreeing\n{d.tails()}")
        served = wait_for(lambda: first_answer(probe.records(), t0), 10, 0.05,
                          what=f"the client served at http://{d.vip}/\n{d.tails()}")
        assert served.answer == first, f"the client got {served.answer}'s page; {first} runs {APP}"
        assert first == "node-a", f"the highest priority claims the app (docs/admin.rst), not {first}\n{d.tails(40)}"
        up_s = (served.sent_ns - t0) / 1e9
        target = next(n for n in nodes if n != first)
        asker = next(n for n in nodes if n not in (first, target))
        status = d.hado(asker, "status", "--config", str(d.config_path))
        assert status.returncode == 0 and f"App {APP}: active on {first}; here: standby" in status.stdout, \
            status.stdout + status.stderr
        time.sleep(0.5)

        # 4. hado move, asked on the third node.
        t_move = time.monotonic_ns()
        moved = d.hado(asker, "move", APP, target, "--config", str(d.config_path))
        assert moved.returncode == 0, moved.stdout + moved.stderr
        served = wait_for(lambda: first_answer(probe.records(), t_move, target), MOVE_BOUND, 0.05,
                          what=f"the client served by {target} after the move\n{d.tails()}")
        move_s = (served.sent_ns - t_move) / 1e9
        assert wait_for(d.active, 10, 0.2, what="the cluster agreeing after the move") == target
        again = d.hado(asker, "move", APP, target, "--config", str(d.config_path))
        assert again.returncode != 0 and f"{APP} already runs on {target}; nothing to move" in again.stderr, \
            again.stdout + again.stderr
        time.sleep(0.5)

        # 5. kill -9 of the active hado.
        t_kill = time.monotonic_ns()
        d.kill(target)
        served = wait_for(lambda: next((a for a in probe.records() if a.sent_ns >= t_kill and a.answer
                                        and a.answer != target), None), FAILOVER_BOUND + 5, 0.05,
                          what=f"the client served by another node after kill -9 of {target}\n{d.tails()}")
        third = served.answer
        failover_s = (served.sent_ns - t_kill) / 1e9
        assert wait_for(d.active, 10, 0.2, what=f"the cluster agreeing without {target}") == third

        # 6. The killed node comes back: it stays standby (stickiness), nothing moves.
        d.start(target)
        wait_for(lambda: (d.states().get(target) or {}).get("apps", {}).get(APP, {}).get("role") == "standby"
                 and d.active() == third, 20, 0.2, what=f"{target} back as standby\n{d.tails()}")
        time.sleep(2.0)   # long enough for a second nginx or VIP to show, if one came
        assert d.active() == third
        vip_samples, nginx_samples, answers = holders.stop(), nginx.stop(), probe.stop()

    story = (f"VIP: {changes(vip_samples, t0)}\nnginx: {changes(nginx_samples, t0)}\n"
             f"answers: {dict(netlab.answers_by_node(answers))}\n{d.tails(15)}")
    for what, samples in (("hold the VIP", vip_samples), ("run nginx", nginx_samples)):
        count, seconds = netlab.dual_holding(samples)
        assert count == 0, f"{count} samples ({seconds:.3f} s) in which two nodes {what}\n{story}"
        assert netlab.sample_rate(samples) > 20, f"sampled too rarely to tell: {netlab.sample_rate(samples):.0f}/s"
    sequence = [set(h) for _, h in netlab.holder_changes(nginx_samples) if h]
    assert sequence == [{first}, {target}, {third}], f"nginx ran on {sequence}\n{story}"
    assert [set(h) for _, h in netlab.holder_changes(vip_samples) if h] == sequence, story

    leash_s = (next(s.t_ns for s in nginx_samples if s.t_ns >= t_kill and target not in s.holders) - t_kill) / 1e9
    assert leash_s <= LEASH_BOUND, f"{target}'s nginx outlived its hado by {leash_s:.2f} s\n{story}"
    assert failover_s <= FAILOVER_BOUND, f"served by {third} {failover_s:.2f} s after the kill\n{story}"
    after = [a for a in answers if a.sent_ns >= served.sent_ns]
    assert {a.answer for a in after} <= {third, None}, f"{target} answered again\n{story}"
    assert "owner pid" in (d.dir / target / "nginx-web.pid.out").read_text(), "the leash says why"
    move_outage = outage(answers, first, target, t_move)
    kill_outage = outage(answers, target, third, t_kill)
    print(f"day one: {first} served {up_s:.2f} s after the daemons started; move {first} -> {target}: "
          f"served by {target} {move_s:.2f} s after `hado move` (client outage {move_outage:.2f} s); "
          f"kill -9 of {target}: its nginx gone {leash_s:.2f} s later (leash), served by {third} "
          f"{failover_s:.2f} s after the kill (client outage {kill_outage:.2f} s); {target} restarted: standby")
