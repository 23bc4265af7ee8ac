"""Config fuzzing (issue 10): hypothesis-made configs through validate, check-config, reload.

The documents are shaped like configs, from hado/config.py's SCHEMAS (so every schema
key is drawn, and a new key is drawn as soon as it is added): right and wrong types,
unknown keys, huge and negative numbers, NaN and infinity (``1e999`` in JSON), deep
nesting, unicode, empty and spaced names, duplicate resources, missing required keys,
plugins that break in validate() or at import. Three ways in:

- ``hado.config.validate`` in-process (many examples), then what ``load`` and
  check-config do with a valid result (the file checks, the safety summary) and what
  the daemon does at start (``Node(config)``, the listen address);
- ``python3 -m hado check-config FILE`` (fewer examples, a subprocess each);
- a running daemon's reload (SIGHUP) with the file replaced (fewer examples).

The rule everywhere: never a traceback; either ok, or errors that each start with a
JSON path of the document (``apps.web.resources[0].interval: ...``) or ``(top level)``
(or the file's name, for a file that is not JSON); check-config exits 0 or 2; a reload
of a bad file leaves the daemon running its previous config, with ``config_error`` set.

Every crash found is an explicit ``@example`` below; one whose fix is outside this
file's reach is marked ``.xfail(...)`` naming the function, and the random search steps
around that exact crash (an entry in ``KNOWN``) so that it keeps finding new ones. When
one is fixed, its example fails as "expected to fail": drop the xfail and its KNOWN
entry. (The issue-10 ones are all fixed: none is marked now.)
"""

import atexit
import json
import math
import os
import re
import signal
import subprocess
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from hado import cli, config as config_mod, node as node_mod, states
from hado.config import NUMBER, SCHEMAS
from hado.plugin import Registry
from helpers import REPO, Daemon, free_port, wait_for, write_config

TRIED = {"validate": 0, "check-config": 0, "reload": 0}
VALID = {"validate": 0, "check-config": 0, "reload": 0}      # of which hado found no error
FOUND = {"validate": [], "check-config": [], "reload": []}   # (input, what happened) of known crashes hit

WORK = Path(tempfile.mkdtemp(prefix="hado-fuzz-"))   # files the documents name
atexit.register(shutil.rmtree, WORK, True)
PLUGIN_DIR = str(WORK / "plugins")


# ----- files and plugins the documents may name ------------------------------------------

BROKEN_PLUGINS = {
    # validate() raises, exits, returns garbage; import exits or fails; a function whose
    # signature Python cannot read; print() at import and in validate().
    "v_raise": 'def start(path): pass\ndef stop(path): pass\ndef alive(path): return False\n'
               'def validate(path):\n    raise RuntimeError("boom")\n',
    "v_exit": 'import sys\ndef check(path=None): return True\ndef validate(path=None):\n    sys.exit(3)\n',
    "v_garbage": 'def check(**kw): return True\ndef validate(**kw):\n    return 42\n',
    "v_print": 'print("x" * 100000)\ndef check(a=1): return True\ndef validate(a=1):\n    print("hello")\n    return []\n',
    "import_exit": 'import sys\nsys.exit(0)\n',
    "import_error": 'def check(:\n',
    "odd_signature": 'def start(**kw): pass\ndef stop(**kw): pass\nalive = max\n',
}


def prepare(work):
    """The files a fuzzed config may name, under ``work``: secrets, tokens, plugin dirs."""
    work.mkdir(parents=True, exist_ok=True)
    plugins = work / "plugins"
    plugins.mkdir(exist_ok=True)
    for name, text in BROKEN_PLUGINS.items():
        (plugins / f"{name}.py").write_text(text)
    good = work / "secret"
    good.write_bytes(b"0123456789abcdef0123456789abcdef")
    good.chmod(0o600)
    readable = work / "secret-readable"
    readable.write_bytes(b"0123456789abcdef0123456789abcdef")
    readable.chmod(0o644)
    short = work / "secret-short"
    short.write_bytes(b"short")
    short.chmod(0o600)
    (work / "token").write_text("a-token\n")
    (work / "token-empty").write_text("")
    (work / "adir").mkdir(exist_ok=True)


def files():
    return [str(WORK / n) for n in ("secret", "secret-readable", "secret-short", "token", "token-empty", "adir",
                                    "missing")] + ["", "rel/ative", "a\x00b"]


# ----- strategies --------------------------------------------------------------------------

NAMES = st.one_of(st.sampled_from(["web", "db", "a", "", " ", "node a", "a.b", "x[0]", "a: b", "{node}", "ü名",
                                   "local", "solo", "node-b", "\u202e", "\x00", "a" * 300]),
                  st.text(max_size=6))
HUGE_INT = 10 ** 5000   # more digits than Python prints by default (sys.get_int_max_str_digits)
NUMBERS = st.one_of(st.integers(-5, 100), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 0.0, -0.0, 1e-300, 10 ** 20, -(10 ** 20), 2 ** 63, 10 ** 400,
                                     float("inf"), float("-inf"), float("nan")]))
TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["", " ", "x" * 1000, "\x00", "true", "1", "{node}"]))
SCALAR = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)


class Deep:
    """A value nested ``depth`` times in lists or objects, made only when the document is
    used (see ``expand``): hypothesis (and repr) could not print it otherwise."""

    def __init__(self, depth, as_list, leaf):
        self.depth, self.as_list, self.leaf = depth, as_list, leaf

    def __repr__(self):
        return f"Deep({self.depth}, as_list={self.as_list}, leaf={self.leaf!r})"

    def make(self):
        value = self.leaf
        for _ in range(self.depth):
            value = [value] if self.as_list else {"a": value}
        return value


def expand(value, cap=None):
    """The document with every Deep made (at most ``cap`` deep: a file the JSON reader
    can read, the deeper ones being the explicit examples of check-config)."""
    if isinstance(value, Deep):
        return Deep(min(value.depth, cap or value.depth), value.as_list, value.leaf).make()
    if isinstance(value, dict):
        return {k: expand(v, cap) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, cap) for v in value]
    return value


DEEP = st.builds(Deep, st.integers(1, 3000), st.booleans(), SCALAR)
WILD = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
                    max_leaves=6)
ANY = st.one_of(WILD, WILD, WILD, DEEP)

PLUGINS = sorted(Registry().paths()) + sorted(BROKEN_PLUGINS) + ["", "nope", "dumy", "../dummy"]
SAFE_PLUGINS = ["dummy", "command", "disk_space"] + sorted(BROKEN_PLUGINS) + ["nope"]   # for a daemon to run
def plugin_arg_names():
    names = set()
    registry = Registry()
    for name in registry.paths():
        plugin = registry.get(name)
        for kind in plugin.kinds:
            names.update(plugin.parameters(kind)[0])
    return sorted(names)


ARG_NAMES = plugin_arg_names()
ARGV = st.sampled_from([["true"], ["false"], ["sh", "-c", "exit 0"], [], [""], ["true", 1], "true"])


def arg_value(name, safe=False):
    if safe and name in ("start_delay", "stop_delay", "timeout", "stop_timeout", "count", "lease"):
        return st.one_of(st.sampled_from([0, 0.05, -1, math.nan, math.inf, 10 ** 30, "1", None]), TEXT)  # no waits
    if name in ("check", "start", "stop", "alive", "promote", "demote", "command", "systemctl"):
        return st.one_of(ARGV, ANY)
    if name in ("path", "pidfile", "cwd", "ocf_root"):
        return st.one_of(st.sampled_from([str(WORK / "r-a"), str(WORK / "r-b"), "/", ""]), ANY)
    return ANY


def args_strategy(safe=False):
    known = st.sampled_from(ARG_NAMES).flatmap(lambda n: st.tuples(st.just(n), arg_value(n, safe)))
    return st.lists(st.one_of(known, known, st.tuples(NAMES, ANY)), max_size=4).map(dict)


def typed(expected):
    if isinstance(expected, tuple) and expected != NUMBER:
        return st.one_of(*[typed(t) for t in expected])
    return {str: TEXT, bool: st.booleans(), int: st.one_of(st.integers(-3, 10), st.integers(),
                                                          st.sampled_from([HUGE_INT, -HUGE_INT, 2 ** 64])),
            NUMBER: NUMBERS, float: NUMBERS, dict: st.dictionaries(NAMES, ANY, max_size=3),
            list: st.lists(ANY, max_size=3), type(None): st.none()}[expected]


URLS = st.sampled_from(["http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://[::1]:7003", "http://127.0.0.1",
                        "http://127.0.0.1:99999", "http://127.0.0.1:0", "http://127.0.0.1:abc", "ftp://127.0.0.1:1",
                        "http://", "127.0.0.1:6185", "http://10.255.0.1:7004", "http://localhost:7005",
                        "http://203.0.113.9:1", "http://[::1", "http://127.0.0.1:-1", ""])
LISTENS = st.sampled_from(["127.0.0.1:7001", ":6185", "nohost", "1.2.3.4:x", "127.0.0.1:99999", "127.0.0.1:²",
                           "127.0.0.1:١٢", "[::1]:7001", "0.0.0.0:7001", "127.0.0.1:-1", "203.0.113.9:1", "", ":"])


def special(where, key, safe):
    """A strategy for key ``key`` of the section at schema path ``where``, or None."""
    if key == "plugin":
        return st.one_of(st.sampled_from(SAFE_PLUGINS if safe else PLUGINS), TEXT)
    if key == "args":
        return st.one_of(args_strategy(safe), args_strategy(safe), ANY)
    if (where, key) == ("apps.*.resources[]", "kind"):
        return st.sampled_from(list(states.KINDS) + ["", "Clone", "promotable "])
    if (where, key) == ("apps.*.resources[]", "on_fail"):
        return st.sampled_from(list(states.ON_FAIL) + ["", "reboot"])
    if (where, key) == ("apps.*.resources[]", "name"):
        return st.one_of(st.sampled_from(["r", "r", "s", ""]), NAMES)   # duplicates, often
    if (where, key) == ("cluster", "quorum"):
        return st.sampled_from(["majority", "none", "", "MAJORITY", "all"])
    if key in ("secret_file", "token_file"):
        return st.one_of(st.none(), st.sampled_from(files()))
    if key == "plugin_dirs":
        return st.lists(st.sampled_from([str(WORK / "plugins"), str(WORK / "missing"), "", "\x00", "/"]),
                        max_size=2)
    if key == "url":
        return st.one_of(URLS, URLS, TEXT)
    if key == "listen":
        return st.one_of(LISTENS, LISTENS, TEXT)
    if (where, key) in (("node", "name"), ("apps.*", "preferred")):
        return st.one_of(st.sampled_from(["node-a", "node-b", "solo", "local"]), NAMES, st.none())
    return None


def section(where, safe=False):
    """A dict for the schema at ``where``: any subset of its keys (each with a value of
    the right type, a special value, or anything), plus unknown keys; or, now and then,
    something that is not a dict at all."""
    schema = SCHEMAS[where]
    optional = {}
    for key, (expected, _default, _help) in schema.items():
        sub = child(where, key, safe)
        if sub is None:
            sub = special(where, key, safe)
        optional[key] = st.one_of(*(s for s in (sub, typed(expected), ANY) if s is not None))
    body = st.fixed_dictionaries({}, optional=optional)
    extra = st.dictionaries(NAMES, ANY, max_size=2)
    made = st.tuples(body, extra, st.integers(0, 4)).map(lambda t: {**t[0], **t[1]} if t[2] == 0 else t[0])
    return st.one_of(made, made, made, made, made, made, ANY)


def child(where, key, safe):
    """The nested sections: cluster.nodes, apps, resources, monitors, fence, notify."""
    nested = {("", "cluster"): "cluster", ("", "node"): "node", ("cluster", "fence"): "cluster.fence",
              ("apps.*", "resources"): "apps.*.resources[]", ("cluster", "notify"): "cluster.notify[]",
              ("", "monitors"): "monitors.*", ("", "apps"): "apps.*", ("apps.*", "monitors"): "apps.*.monitors.*",
              ("cluster", "nodes"): "cluster.nodes.*"}
    target = nested.get((where, key))
    if target is None:
        return None
    inner = st.deferred(lambda: section(target, safe))
    if target.endswith("[]"):
        return st.lists(inner, max_size=3)
    if target.endswith(".*"):
        return st.dictionaries(NAMES, inner, max_size=3)
    return inner


CONFIGS = st.one_of(*[section("")] * 9, ANY)
SAFE_CONFIGS = section("", safe=True)


# ----- what an error must look like ----------------------------------------------------------

def join(path, key):
    return f"{path}.{key}" if path else str(key)


ALL_KEYS = sorted({key for schema in SCHEMAS.values() for key in schema})


def allowed_paths(raw, node_name=None):
    """Every JSON path an error about ``raw`` may start with."""
    paths = {"(top level)", "--node", "HADO_NODE", "node.name", "node.listen"}

    def walk(value, path, depth=0):
        if depth > 64:   # errors about deeper values name an outer path ("nested too deep")
            return
        if depth < 5:
            for key in ALL_KEYS:   # missing keys, also under a value that is not an object
                paths.add(join(path, key))
        if isinstance(value, dict):
            for key, item in value.items():
                paths.add(join(path, key))
                walk(item, join(path, key), depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                paths.add(f"{path}[{i}]")
                walk(item, f"{path}[{i}]", depth + 1)

    walk(raw, "")
    node = raw.get("node") if isinstance(raw, dict) else None
    for name in (node_name, node.get("name") if isinstance(node, dict) else None, "local"):
        if isinstance(name, str):
            paths |= {f"cluster.nodes.{name}", f"cluster.nodes.{name}.url"}
    return paths


def bad_errors(errors, raw, extra=()):
    """The errors that do not start with an allowed path and ': '."""
    paths = allowed_paths(raw) | set(extra)

    def named(error):   # some "PATH: " prefix of the error is a path (paths may hold ": " too)
        at = error.find(": ")
        while at >= 0:
            if error[:at] in paths:
                return True
            at = error.find(": ", at + 1)
        return False

    return [e for e in errors if not isinstance(e, str) or not named(e)]


def show(value, limit=1000):
    """repr() for the messages: an int too long for str() shown by its size, cut at ``limit``."""
    def walk(v, depth):
        if depth > 20:
            return "..."
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, dict):
                return "{" + ", ".join(f"{walk(k, depth + 1)}: {walk(x, depth + 1)}" for k, x in v.items()) + "}"
            if isinstance(v, list):
                return "[" + ", ".join(walk(x, depth + 1) for x in v) + "]"
            return repr(v)
        if v.bit_length() > 10000:
            return f"<int of {v.bit_length()} bits, {'-' if v < 0 else ''}10 ** {int(v.bit_length() * 0.30103)}>"
        return repr(v)
    text = walk(value, 0)
    return text if len(text) <= limit else text[:limit] + "..."


def crash(exc):
    """One line naming an exception and where in hado it came from."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/hado/" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__} in {where}: {str(exc)[:200]}"


# Crashes found and not fixed yet, each an xfail @example below, as ("part", "part", ...)
# of crash()'s line. The random search notes them (FOUND) instead of failing, so that it
# goes on finding others. A fixed one makes its example fail ("expected to fail"): then
# drop the example's xfail and the entry here.
KNOWN = []   # none left: the nine of the issue-10 report are fixed in hado/config.py and hado/node.py


def known(what):
    return any(all(part in what for part in parts) for parts in KNOWN)


# ----- in-process: validate, then what load, check-config and the daemon do -----------------

def check_in_process(raw, node_name=None, shown=None, strict=False):
    """validate() as load() calls it, and for a valid config the rest of load(),
    check-config's summary and the daemon's first steps. Raises AssertionError."""
    try:
        cfg, errors, warnings = config_mod.validate(raw, node_name)
        if not errors:
            errors = config_mod.file_errors(cfg)
        if not errors:
            cli.safety_summary(cfg)
            port = node_mod.split_listen(cfg["node"]["listen"])[1]
            node_mod.Node(cfg)
    except (AssertionError, KeyboardInterrupt):
        raise
    except BaseException as exc:   # SystemExit too: a plugin's sys.exit() must not end check-config
        what = crash(exc)
        if known(what) and not strict:
            FOUND["validate"].append((shown, what))
            return
        raise AssertionError(f"crash: {what} for {show(shown)}\n{traceback.format_exc()}") from None
    assert isinstance(errors, list) and isinstance(warnings, list)
    wrong = bad_errors(errors, raw)
    assert not wrong, f"errors without a JSON path: {wrong[:3]} for {show(shown)}"
    if not errors:
        VALID["validate"] += 1
        for what, fine in (("a valid config with a non-finite number", all(map(math.isfinite, walk_numbers(cfg)))),
                           ("listen port out of range", 0 <= port <= 65535)):
            if not fine and known(what) and not strict:
                FOUND["validate"].append((shown, what))
            else:
                assert fine, f"{what}: {show(shown)}"


def walk_numbers(cfg):
    """Every number in the schema's NUMBER fields of a validated config."""
    def of(section, schema):
        for key, (expected, _d, _h) in schema.items():
            value = section.get(key) if isinstance(section, dict) else None
            if expected == NUMBER and isinstance(value, (int, float)) and not isinstance(value, bool):
                yield float(value) if not isinstance(value, int) or abs(value) < 1e300 else math.inf
    yield from of(cfg["cluster"], SCHEMAS["cluster"])
    for spec in cfg["monitors"].values():
        yield from of(spec, SCHEMAS["monitors.*"])
    for app in cfg["apps"].values():
        yield from of(app, SCHEMAS["apps.*"])
        for spec in app["monitors"].values():
            yield from of(spec, SCHEMAS["monitors.*"])
        for spec in app["resources"]:
            yield from of(spec, SCHEMAS["apps.*.resources[]"])


@pytest.fixture(scope="module")
def work():
    prepare(WORK)
    return WORK


@pytest.fixture(autouse=True)
def no_env_node(monkeypatch):
    monkeypatch.delenv("HADO_NODE", raising=False)


def report(capsys, name, examples):
    kinds = sorted({what.split(": ")[0] for _, what in FOUND[name]})
    with capsys.disabled():
        print(f"\n  config fuzz, {name}: {TRIED[name]} inputs tried (at most {examples} drawn, plus the explicit "
              f"examples), {VALID[name]} of them valid; {len(FOUND[name])} hit a known crash, not fixed here "
              f"({'; '.join(kinds) or 'none'}); no other crash")


def test_validate_never_crashes_and_every_error_names_its_path(work, capsys):
    examples = 800

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(raw=CONFIGS, node_name=st.one_of(st.none(), st.sampled_from(["node-a", "solo", "", "zz"])),
           strict=st.just(False))
    # Crashes in hado/plugin.py, fixed there (before: SystemExit out of validate(), ValueError
    # from inspect.signature): a plugin whose validate() or import calls sys.exit(), and one
    # whose alive is a builtin.
    @example(raw={"node": {"plugin_dirs": [PLUGIN_DIR]}, "monitors": {"m": {"plugin": "v_exit"}}},
             node_name=None, strict=True)
    @example(raw={"node": {"plugin_dirs": [PLUGIN_DIR]}, "monitors": {"m": {"plugin": "import_exit"}}},
             node_name=None, strict=True)
    @example(raw={"node": {"plugin_dirs": [PLUGIN_DIR]}, "apps": {"w": {"resources": [{"name": "r",
             "plugin": "odd_signature"}]}}}, node_name=None, strict=True)
    # Crashes of the issue-10 report, fixed in hado/config.py: deep nesting, huge integers,
    # NaN and infinity, NUL in file names, a listen port "²" or 99999.
    @example(raw={"apps": Deep(2000, as_list=True, leaf=0)}, node_name=None, strict=True)
    @example(raw={"monitors": {"m": {"plugin": "command", "args": {"check": Deep(1200, as_list=True, leaf="x")}}}},
             node_name=None, strict=True)
    @example(raw={"monitors": {"m": {"plugin": "disk_space", "args": {"path": "/", "min_free_percent": 1},
                                     "rise": -HUGE_INT}}}, node_name=None, strict=True)
    @example(raw={"cluster": {"heartbeat": math.inf, "dead_after": math.inf}}, node_name=None, strict=True)
    @example(raw={"apps": {"web": {"resources": [{"name": "r", "plugin": "dummy", "args": {"path": "/tmp/x"},
                                                  "timeout": math.nan}]}}}, node_name=None, strict=True)
    @example(raw={"cluster": {"heartbeat": 10 ** 400}}, node_name=None, strict=True)
    @example(raw={"node": {"token_file": "a\x00b"}}, node_name=None, strict=True)
    @example(raw={"cluster": {"secret_file": "a\x00b", "nodes": {"a": {"url": "http://127.0.0.1:1"},
                                                                 "b": {"url": "http://127.0.0.1:2"}}}},
             node_name="a", strict=True)
    @example(raw={"node": {"listen": "127.0.0.1:\u00b2"}}, node_name=None, strict=True)
    @example(raw={"node": {"listen": "127.0.0.1:99999"}}, node_name=None, strict=True)
    def prop(raw, node_name, strict):
        TRIED["validate"] += 1
        check_in_process(expand(raw), node_name, shown=raw, strict=strict)

    prop()
    report(capsys, "validate", examples)


# ----- check-config, a subprocess per input ---------------------------------------------------

def dump(raw):
    """The document as a JSON file's text: NaN and infinities as Python writes them
    (NaN, Infinity: hado's reader takes them), too deep or too big for json.dumps as is."""
    try:
        return json.dumps(raw)
    except (ValueError, RecursionError):   # the explicit files of the check-config test cover these
        return None


def crash_text(said):
    """As crash(), from a printed traceback: 'Type in file.py:function:line: message'."""
    lines = said.strip().splitlines()
    if "Traceback (most recent call last):" not in lines:
        return None
    frames = re.findall(r'File ".*/hado/([^/"]+)", line (\d+), in (\S+)', said)
    where = f"{frames[-1][0]}:{frames[-1][2]}:{frames[-1][1]}" if frames else "?"
    kind, _, message = lines[-1].partition(": ")
    return f"{kind} in {where}: {message[:200]}"


def check_config(path):
    return subprocess.run([sys.executable, "-m", "hado", "check-config", str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "HADO_NODE"})


def check_file(text, raw, path, strict=False):
    path.write_text(text)
    out = check_config(path)
    said = out.stdout + out.stderr
    if "Traceback" in said or out.returncode not in (0, 2):
        what = crash_text(said) or f"exit code {out.returncode}"
        if known(what) and not strict:
            FOUND["check-config"].append((text[:200], what))
            return
        raise AssertionError(f"check-config exit code {out.returncode}:\n{said[-3000:]}")
    if out.returncode == 2:
        # One error a line, split at "\n" only: a key may hold "\r" or another line break.
        errors = [line[2:] for line in out.stdout.split("\n") if line.startswith("  ")]
        assert errors, out.stdout
        wrong = bad_errors(errors, raw, extra=[str(path)])
        assert not wrong, f"errors without a JSON path: {wrong[:3]}"
    else:
        VALID["check-config"] += 1
        assert f"{path}: ok" in out.stdout, out.stdout


def test_check_config_never_crashes_and_exits_0_or_2(work, tmp_path, capsys):
    examples = 20
    path = tmp_path / "config.json"

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(raw=CONFIGS)
    def prop(raw):
        raw = expand(raw, cap=500)
        text = dump(raw)
        if text is None:
            return
        TRIED["check-config"] += 1
        check_file(text, raw, path)

    prop()
    report(capsys, "check-config", examples)


@pytest.mark.parametrize("text", [
    pytest.param("[" * 100000 + "]" * 100000, id="deep"),
    pytest.param('{"cluster": {"heartbeat": 1' + "0" * 5000 + "}}", id="huge-int"),
    pytest.param('{"cluster": {"heartbeat": NaN}}', id="NaN"),
    pytest.param('{"apps": 1e999}', id="1e999-app"),
    pytest.param('{"cluster": {"heartbeat": 1' + "0" * 400 + "}}", id="401-digit-int"),
    pytest.param("\ufeff{}", id="bom"),
    pytest.param("", id="empty"),
    pytest.param('{"node": {"token_file": "a\\u0000b"}}', id="nul-token"),
])
def test_check_config_on_files_no_dict_makes(work, tmp_path, text):
    """Files beyond json.dumps: nesting deeper than the reader goes, a huge integer, NaN."""
    TRIED["check-config"] += 1
    try:   # an int too long for int() read as a float (inf): only the paths matter here
        raw = json.loads(text, parse_int=lambda s: int(s) if len(s) < 4000 else float(s))
    except (ValueError, RecursionError):
        raw = {}
    check_file(text, raw, tmp_path / "config.json", strict=True)
    if "NaN" in text:
        assert check_config(tmp_path / "config.json").returncode == 2, "NaN accepted"


# ----- reload: SIGHUP a running daemon with the file replaced -------------------------------

class HereDaemon(Daemon):
    """A Daemon started in its work directory (relative paths of a fuzzed config land there)."""

    def start(self):
        log = open(self.log_path, "ab")
        env = dict(self.env, PYTHONPATH=str(REPO))
        env.pop("HADO_NODE", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "hado", "--foreground", "--config", self.config_path,
                                      "--node", self.node, "--log-level", self.log_level],
                                     cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        return self


def reloads(daemon):
    text = daemon.log()
    return text.count("reload of ") + text.count("reloaded: ")


def test_reload_with_a_fuzzed_file_keeps_the_daemon_and_its_previous_config(work, tmp_path, capsys):
    examples = 20
    port = free_port()
    base = {"cluster": {"nodes": {"solo": {"url": f"http://127.0.0.1:{port}"}}},
            "apps": {"web": {"resources": [{"name": "r", "plugin": "dummy", "interval": 0.5,
                                            "args": {"path": str(tmp_path / "web")}}]}}}
    path = write_config(tmp_path / "config.json", base)
    d = HereDaemon(path, "solo", port, tmp_path, log_level="info")
    d.start()
    try:
        d.wait_ready()
        wait_for(lambda: d.app("web")["role"] == "active", what="web active")

        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])
        @given(raw=SAFE_CONFIGS, keep_cluster=st.booleans())
        def prop(raw, keep_cluster):
            raw = expand(raw, cap=500)
            if keep_cluster and isinstance(raw, dict):
                raw = {**raw, "cluster": base["cluster"]}   # the same node: more reloads that apply
            text = dump(raw)
            if text is None:
                return
            TRIED["reload"] += 1
            before = d.state()
            count = reloads(d)
            path.write_text(text)
            d.signal(signal.SIGHUP)
            wait_for(lambda: reloads(d) > count or not d.alive(), timeout=20, what="the reload done")
            log = d.log()
            if not d.alive() or "Traceback" in log:
                what = crash_text(log[log.rfind("Traceback"):]) or "died"
                assert known(what), f"the daemon died at a reload ({what}):\n{log[-3000:]}"
                FOUND["reload"].append((show(raw), what))
                d.kill()
                d.log_path.write_text("")
                write_config(path, base)
                d.start()
                d.wait_ready()
                return
            after = d.state()
            if after["config_error"]:
                assert after["config_error"].startswith(f"reload of {path} refused, still running the previous "
                                                        "config: ")
                assert sorted(after["apps"]) == sorted(before["apps"]), "a refused reload changed the apps"
            else:   # applied; the next input's previous config is this one
                VALID["reload"] += 1

        prop()
        assert d.terminate(timeout=30) == 0, d.log()[-3000:]
    finally:
        d.kill()
    report(capsys, "reload", examples)
