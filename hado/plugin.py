"""Find, load, check and call plugins.

A plugin is one ``.py`` file; its file name is its name. hado looks in each directory
of ``node.plugin_dirs`` first, then in the built-in ``plugins/`` directory, so an admin
can override a built-in by dropping a file of the same name into a plugin dir.

What a plugin file must define, by kind (one file may be of several kinds):

- monitor:  ``check(**args)`` -> ``True``/``False``, or ``(ok, "message")``; raising
  counts as a failure whose message is the exception text.
- resource: ``start(**args)``, ``stop(**args)``, ``alive(**args) -> bool``; optionally
  ``promote``/``demote``, ``other`` (who else runs it: None or a sentence, asked right
  before start and promote) and any other public function, callable by name through the
  admin API (``reload``, ...). ``stop`` must succeed when the thing is already stopped;
  ``alive`` must be cheap and change nothing.
- fence:    ``fence(node, **args)``: make sure ``node`` runs nothing any more.
- notify:   ``notify(event, **args)``: told about every role decision.

What hado guarantees:

- arguments come from the config as keywords; each function receives only the
  arguments its signature names (all of them if it takes ``**kwargs``);
- the arguments are checked against the signatures when the config is checked, so a
  typo is a config error naming the JSON path, not a failure at 3 a.m.;
- every call has a timeout; a call that outlives it counts as failed with the reason
  ``timeout after N s``, and the caller goes on (the call is left to finish alone;
  hado logs that it hung, and when it returns at last); a program that the call runs
  through :func:`run` is killed when the call's timeout is near;
- what a call prints (``print()``, ``sys.stdout``, ``sys.stderr``) goes to hado's log
  after the call, at most the last 4 KB of it: never to hado's own stdout, where a
  slow reader (journald) would hold up hado's logging;
- a message (an exception's, check()'s) longer than 1000 characters is cut;
- the module docstring is the plugin's help text (``hado plugins``).

Helpers for plugins: :func:`run` (a subprocess from an argv list, with a timeout) and
:class:`PluginError` (raise it with a message meant for the admin).

What hado cannot guard against: a plugin runs inside hado's process, so a call that
holds the GIL without end (a catastrophic regular expression, a huge ``10 ** 10 ** 9``)
freezes all of hado, and memory a plugin keeps is hado's. Plugins that run programs
should do so through :func:`run`, which bounds time, output and leftovers.
"""

import fcntl
import importlib.util
import inspect
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("hado.plugin")

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "plugins"
# Where `pip install .` puts the built-in plugins (see setup.cfg data_files).
INSTALLED_DIR = Path(sys.prefix) / "share" / "hado" / "plugins"

KIND_FUNCTIONS = {
    "monitor": ("check",),
    "resource": ("start", "stop", "alive"),
    "fence": ("fence",),
    "notify": ("notify",),
}
# Positional parameters that hado itself passes, not the config.
ENGINE_PARAMS = {"fence": ("node",), "notify": ("event",)}

OUTPUT_KEEP = 1 << 20        # bytes of each of run()'s stdout and stderr kept: the last 1 MiB
OUTPUT_SPILL = 8 << 20       # a temporary output file larger than this is emptied (its tail kept)
POLL = 0.05                  # seconds between two looks at a running program's output files
KILL_WAIT = 5.0              # seconds to wait for a SIGKILLed program to be gone
PRINT_KEEP = 4096            # characters of what one plugin call prints that reach the log
MESSAGE_LIMIT = 1000         # characters of a message (exception, check()) kept in the state
VALIDATE_TIMEOUT = 15.0      # seconds for a plugin's validate(), and for importing a plugin file


class PluginError(Exception):
    """A failure with a message meant for the admin (shown in the state as is)."""


def cut_off():
    """Why the current plugin call must not take effect any more, else None.

    The engine gives a start of a *leased* resource a cut-off: the node's quorum that
    the start began under. Once that quorum has lapsed, another node may take the app
    over a moment later, so nothing may be created or extended after it (engine gaps 2
    and 3 of tests/sim.py: a start in flight at the lapse, or across a freeze of hado).
    :func:`run` checks it before it starts a program and while the program runs (and
    kills its group); a plugin that creates or extends a lease in Python code calls this
    right before it does (plugins/dummy.py, plugins/process.py)."""
    check = getattr(_local, "cutoff", None)
    if check is not None and check():
        return "the node's quorum lapsed during the call"
    return None


def check_cut_off(what):
    """Raise PluginError naming ``what`` when :func:`cut_off` says the call is cut off."""
    why = cut_off()
    if why:
        raise PluginError(f"{what}: not done: {why}")


def run(cmd, timeout=10.0, env=None, cwd=None, check=True, input=None):
    """Run ``cmd`` (an argv list, never a shell string) and return CompletedProcess.

    stdout and stderr are captured as text, at most the last ``OUTPUT_KEEP`` bytes (1 MiB)
    of each, cut to whole lines: ``proc.truncated`` names the streams that were cut and
    ``proc.output_bytes`` says how much each stream received. Raises PluginError when the
    program is missing, when it outlives ``timeout`` seconds, or, with ``check``, when it
    exits non-zero (the message carries the exit code and the last line of its stderr or
    stdout). The program runs in a process group of its own; at the timeout the whole
    group is killed (SIGKILL), so that nothing it started in the foreground lives on.
    Inside a plugin call (:class:`Caller`), ``timeout`` is cut to what is left of the
    call's own timeout: the program is killed, with a message saying so, rather than
    left running after hado stopped waiting for the call.
    """
    if isinstance(cmd, (str, bytes)) or not cmd:
        raise PluginError(f"command must be a non-empty argv list, not {cmd!r}")
    argv = [str(part) for part in cmd]
    # Children must not talk to systemd as if they were hado.
    full_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    if env:
        full_env.update({str(k): str(v) for k, v in env.items()})
    limit, why = timeout, ""
    deadline, call_timeout = getattr(_local, "deadline", None), getattr(_local, "timeout", None)
    if deadline is not None:
        margin = min(0.25, 0.1 * call_timeout)   # time for the call to report after the kill
        left = deadline - time.monotonic() - margin
        if left < limit:
            limit, why = max(0.01, left), f" (the call's timeout of {call_timeout:g} s)"
    data = input.encode() if isinstance(input, str) else input
    check_cut_off(" ".join(argv))
    # Output goes to temporary files, not pipes: a start command that leaves a daemon
    # behind holding its stdout must not make us wait for that daemon to exit. The files
    # are in append mode, so that they can be emptied under a program that writes a lot.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        files = {"stdout": out, "stderr": err}
        kept = {name: _Tail() for name in files}
        for f in files.values():
            fcntl.fcntl(f.fileno(), fcntl.F_SETFL, fcntl.fcntl(f.fileno(), fcntl.F_GETFL) | os.O_APPEND)
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env, cwd=cwd, start_new_session=True,
                                    stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            raise PluginError(f"{argv[0]}: command not found") from None
        except PermissionError:
            raise PluginError(f"{argv[0]}: permission denied") from None
        if data is not None:
            threading.Thread(target=_feed, args=(proc.stdin, data), name=f"input:{proc.pid}", daemon=True).start()
        ends = time.monotonic() + limit
        try:
            while True:
                try:
                    proc.wait(timeout=max(0.0, min(POLL, ends - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    pass
                for name, f in files.items():
                    kept[name].spill(f)
                if time.monotonic() >= ends:
                    break
                why_cut = cut_off()
                if why_cut:
                    _kill_group(proc)
                    raise PluginError(f"{' '.join(argv)}: killed: {why_cut}")
        except BaseException:   # interrupted while waiting: leave nothing behind
            _kill_group(proc)
            raise
        if proc.returncode is None:
            _kill_group(proc)
            shown = f"{limit:.2f}" if why else f"{limit:g}"
            raise PluginError(f"{' '.join(argv)}: killed after timeout of {shown} s{why}")
        result = subprocess.CompletedProcess(argv, proc.returncode)
        for name, f in files.items():
            setattr(result, name, kept[name].finish(f))
        result.output_bytes = {name: kept[name].total for name in files}
        result.truncated = tuple(name for name in files if kept[name].cut)
    if check and result.returncode != 0:
        raise PluginError(f"{' '.join(argv)}: {exit_status(result.returncode)}: {last_line(result)}")
    return result


def exit_status(returncode):
    """``exit code N``, or ``killed by SIGNAME`` for a negative return code."""
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class _Tail:
    """The last OUTPUT_KEEP bytes of one output file, which may be emptied on the way."""

    def __init__(self):
        self.tail = b""      # the end of what was there when the file was last emptied
        self.total = 0       # bytes seen in the file, over every emptying
        self.cut = False

    def spill(self, f):
        """Empty ``f`` if it grew past OUTPUT_SPILL, keeping its tail. What the program
        writes between the read and the truncation is lost: the output is cut anyway."""
        size = os.fstat(f.fileno()).st_size
        if size <= OUTPUT_SPILL:
            return
        f.seek(size - OUTPUT_KEEP)
        self.tail = f.read(OUTPUT_KEEP)
        self.total += os.fstat(f.fileno()).st_size   # counted up to just before the truncation
        os.ftruncate(f.fileno(), 0)
        self.cut = True

    def finish(self, f):
        size = os.fstat(f.fileno()).st_size
        self.total += size
        f.seek(max(0, size - OUTPUT_KEEP))
        data = f.read(OUTPUT_KEEP)
        if len(data) < OUTPUT_KEEP and self.tail:
            data = (self.tail + data)[-OUTPUT_KEEP:]
        if self.total > len(data):
            self.cut = True
        text = data.decode(errors="replace")
        if self.cut:   # drop the partial first line, unless it is the only one
            first = text.find("\n")
            if 0 <= first < len(text.rstrip("\n")):
                text = text[first + 1:]
        return text


def _feed(pipe, data):
    try:
        pipe.write(data)
    except (BrokenPipeError, OSError, ValueError):
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _kill_group(proc):
    """SIGKILL the program's process group (its own, from start_new_session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(timeout=KILL_WAIT)
    except subprocess.TimeoutExpired:   # stuck in the kernel: reap it whenever it ends
        threading.Thread(target=proc.wait, name=f"reap:{proc.pid}", daemon=True).start()


def last_line(proc):
    """The last non-empty line of a finished process's stderr, else stdout, else
    '(no output)'; at most 300 characters, with a note when run() cut that output."""
    for name in ("stderr", "stdout"):
        line = _last_nonempty_line(getattr(proc, name, None) or "")
        if line:
            note = ""
            if name in getattr(proc, "truncated", ()):
                total = getattr(proc, "output_bytes", {}).get(name, 0)
                note = (f" (output truncated: {total / 1e6:.1f} MB or more on {name}, "
                        f"only the last {OUTPUT_KEEP >> 10} KB kept)")
            return line[:300] + note
    return "(no output)"


def _last_nonempty_line(text):
    """As ``[l.strip() for l in text.splitlines() if l.strip()][-1]``, without splitting all of it."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    end = len(text)
    while end > 0:
        start = text.rfind("\n", 0, end) + 1
        parts = [p.strip() for p in text[start:end].splitlines() if p.strip()]
        if parts:
            return parts[-1]
        end = start - 1
    return ""


def short(message, limit=MESSAGE_LIMIT):
    """``message`` cut to ``limit`` characters, saying how long it was."""
    message = str(message)
    if len(message) <= limit:
        return message
    return f"{message[:limit]}... ({len(message)} characters, cut)"


class Plugin:
    """One loaded plugin file."""

    def __init__(self, name, path, module):
        self.name = name
        self.path = Path(path)
        self.module = module
        doc = inspect.getdoc(module) or ""
        self.doc = doc
        self.summary = doc.splitlines()[0] if doc else "(no docstring)"
        self._signatures = {}   # function name -> its parameters, read once
        self.kinds = [kind for kind, names in KIND_FUNCTIONS.items()
                      if all(callable(getattr(module, n, None)) for n in names)]

    def function(self, name):
        fn = getattr(self.module, name, None)
        if name.startswith("_") or not callable(fn) or inspect.isclass(fn):
            return None
        return fn

    def actions(self):
        """Public functions of a resource plugin other than start/stop/alive."""
        names = []
        for name, value in vars(self.module).items():
            if name.startswith("_") or not inspect.isfunction(value):
                continue
            if getattr(value, "__module__", None) != self.module.__name__:
                continue  # imported helpers such as run()
            if name in ("start", "stop", "alive", "check", "fence", "notify", "validate", "promote", "demote",
                        "lease", "lease_slack", "other"):
                continue
            names.append(name)
        return sorted(names)

    def parameters(self, kind):
        """(accepted, required, takes_any) over the kind's functions."""
        accepted, required, takes_any = {}, set(), False
        names = list(KIND_FUNCTIONS[kind])
        if kind == "resource":
            names += [n for n in ("promote", "demote") if self.function(n)]
        for fname in names:
            for param in self.signature(fname).values():
                if param.name in ENGINE_PARAMS.get(kind, ()):
                    continue
                if param.kind is param.VAR_KEYWORD:
                    takes_any = True
                elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                    accepted.setdefault(param.name, param.default)
                    if param.default is param.empty:
                        required.add(param.name)
        return accepted, required, takes_any

    def signature(self, fname):
        """The parameters of function ``fname`` (read once); PluginError when Python cannot
        tell them (a builtin or an odd callable given as a plugin function)."""
        if fname not in self._signatures:
            try:
                self._signatures[fname] = inspect.signature(self.function(fname)).parameters
            except (TypeError, ValueError) as exc:
                raise PluginError(f"plugin '{self.name}' ({self.path}): cannot read the parameters of its "
                                  f"{fname}(): {exc}; this is a bug in the plugin") from None
        return self._signatures[fname]

    def check_args(self, kind, args):
        """Errors for ``args`` given to this plugin used as ``kind``: a list of
        ``(argument or None, message)``."""
        if kind not in self.kinds:
            needs = ", ".join(f"{n}()" for n in KIND_FUNCTIONS[kind])
            return [(None, f"plugin '{self.name}' is not a {kind} plugin (a {kind} defines {needs})")]
        try:
            accepted, required, takes_any = self.parameters(kind)
        except PluginError as exc:
            return [(None, str(exc))]
        errors = []
        expected = ", ".join(accepted) or "no arguments"
        for key in args:
            if key not in accepted and not takes_any:
                errors.append((key, f"unknown argument for plugin '{self.name}' (expected: {expected})"))
        for key in sorted(required):
            if key not in args:
                errors.append((None, f"missing argument '{key}' for plugin '{self.name}' (expected: {expected})"))
        validate = self.function("validate")
        if validate and not errors:
            errors += [(None, problem) for problem in self.call_validate(validate, kind, args)]
        return errors

    def call_validate(self, validate, kind, args):
        """The problems the plugin's ``validate()`` finds in ``args`` (config errors), or
        one message saying that validate() itself is broken: it raised, or returned
        something other than a list of messages. That is a bug in the plugin, and the
        message says so, naming the file, so that nobody hunts for it in the config."""
        def broken(what):
            return (f"plugin '{self.name}' ({self.path}): its validate() {what}; "
                    f"this is a bug in the plugin, not in your config")

        def attempt():   # runs on a Caller's thread: a validate() that hangs is cut off too
            try:
                takes_kind = "kind" in inspect.signature(validate).parameters
                problems = validate(kind=kind, **args) if takes_kind else validate(**args)
                if not problems:          # None, [], False: all is well
                    return []
                if isinstance(problems, str):
                    return [short(problems)]     # one problem returned as a bare sentence
                if isinstance(problems, (bytes, dict)) or not hasattr(problems, "__iter__"):
                    return [broken(f"returned {problems!r:.80} instead of a list of problems")]
                return [short(problem) for problem in problems]   # a list, or what a generator yields
            except (Exception, SystemExit) as exc:  # a plugin's bug must not crash check-config, start or reload
                return [broken(short(f"raised {type(exc).__name__}: {exc}"))]

        timeout = VALIDATE_TIMEOUT
        ok, value = Caller(f"{self.name}:validate").call(attempt, timeout)
        if not ok:   # attempt() catches all but BaseException: the timeout, or a KeyboardInterrupt
            return [broken(f"did not return within {timeout:g} s" if value == f"timeout after {timeout:g} s"
                           else f"failed: {value}")]
        return value

    def bind(self, fname, args, **engine):
        """A zero-argument callable for ``fname`` with the arguments its signature takes."""
        fn = self.function(fname)
        if fn is None:
            raise PluginError(f"plugin '{self.name}' has no function {fname}()")
        params = self.signature(fname)
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs = dict(args)
        else:
            kwargs = {k: v for k, v in args.items() if k in params}
        kwargs.update(engine)
        return lambda: fn(**kwargs)


class Registry:
    """Finds plugin files and loads each at most once (per registry)."""

    def __init__(self, plugin_dirs=()):
        self.dirs = [Path(d) for d in plugin_dirs] + [BUILTIN_DIR, INSTALLED_DIR]
        self._lock = threading.Lock()   # guards _loaded: supervisors, fence/notify threads and the API load plugins
        self._loaded = {}   # name -> Plugin

    def paths(self):
        """name -> path of every plugin file found, earlier directories winning."""
        found = {}
        for directory in self.dirs:
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob("*.py")):
                if path.name.startswith("_"):
                    continue
                found.setdefault(path.stem, path)
        return found

    def get(self, name):
        """The loaded plugin ``name``; PluginError naming the plugins that exist."""
        with self._lock:
            return self._get(name)

    def _get(self, name):
        if name in self._loaded:
            return self._loaded[name]
        paths = self.paths()
        if not isinstance(name, str) or name not in paths:
            raise PluginError(f"no plugin named {name!r} (found: {', '.join(sorted(paths)) or 'none'})")
        plugin = load(name, paths[name])
        self._loaded[name] = plugin
        return plugin


def load(name, path):
    """Import one plugin file (never through sys.path), on a Caller's thread: an import
    that raises anything (SystemExit included) or hangs is a PluginError."""
    spec = importlib.util.spec_from_file_location(f"hado_plugin_{name}", path)
    module = importlib.util.module_from_spec(spec)
    timeout = VALIDATE_TIMEOUT
    ok, value = Caller(f"load:{name}").call(lambda: spec.loader.exec_module(module), timeout)
    if not ok:
        if value == f"timeout after {timeout:g} s":
            value = f"its import did not finish within {timeout:g} s"
        raise PluginError(f"plugin '{name}' ({path}) failed to load: {value}")
    return Plugin(name, path, module)


_local = threading.local()   # in a call's own thread: capture, deadline, timeout, cutoff (see _Call.run)


class Caller:
    """Calls one plugin function at a time with a timeout, for one monitor or resource.

    The call runs on a helper thread. When it outlives its timeout the caller returns a
    failure at once and leaves the call to finish on its own (logged once, and again
    when it returns); until it does, further calls fail with "previous call still
    running" instead of piling up threads. What the call prints is kept from hado's
    stdout and logged, shortened, when it returns (see :class:`_Router`).
    """

    def __init__(self, label):
        self.label = label
        self._busy = None  # the _Call that timed out and still runs

    def call(self, fn, timeout, cutoff=None):
        """Return ``(True, value)`` or ``(False, message)``; never raises.

        ``cutoff``: a function that says True once the call must no longer take effect
        (see :func:`cut_off`); None: no cut-off."""
        busy = self._busy
        if busy is not None:
            if not busy.done.is_set():
                return False, f"previous call still running (hung for {time.monotonic() - busy.started:.1f} s)"
            self._busy = None
        timeout = sane_timeout(timeout)
        _route_output()
        call = _Call(self.label, fn, timeout, cutoff)
        call.thread.start()
        if not call.done.wait(timeout) and call.abandon():
            self._busy = call
            log.warning("hung: %s: no answer within %g s; the call goes on alone, and the next ones fail at "
                        "once until it returns", self.label, timeout)
            return False, f"timeout after {timeout:g} s"
        return call.ok, call.value


def sane_timeout(timeout):
    """A timeout that threading accepts: NaN or negative 0, inf at most TIMEOUT_MAX."""
    try:
        timeout = float(timeout)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if math.isnan(timeout) or timeout < 0:
        return 0.0
    return min(timeout, threading.TIMEOUT_MAX)


class _Call:
    """One plugin call on its own thread; the Caller waits for ``done`` up to its timeout."""

    def __init__(self, label, fn, timeout, cutoff=None):
        self.label, self.fn, self.timeout, self.cutoff = label, fn, timeout, cutoff
        self.started = time.monotonic()
        self.done = threading.Event()
        self.lock = threading.Lock()     # orders done.set() against abandon()
        self.abandoned = False
        self.ok, self.value = False, "no answer"
        self.thread = threading.Thread(target=self.run, name=f"call:{label}", daemon=True)

    def abandon(self):
        """The Caller stops waiting; False if the call finished meanwhile after all."""
        with self.lock:
            if self.done.is_set():
                return False
            self.abandoned = True
            return True

    def run(self):
        capture = _Capture()
        _local.capture, _local.deadline, _local.timeout = capture, self.started + self.timeout, self.timeout
        _local.cutoff = self.cutoff
        try:
            ok, value = True, self.fn()
        except PluginError as exc:
            ok, value = False, short(str(exc) or type(exc).__name__)
        except BaseException as exc:  # a plugin's bug (sys.exit() too) must not take the engine down
            text = str(exc)
            ok, value = False, short(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
        _local.capture = _local.deadline = _local.timeout = _local.cutoff = None
        with self.lock:
            self.ok, self.value = ok, value
            self.done.set()
            late = self.abandoned
        # After done: a log that is slow to write (journald) never holds up the answer.
        capture.report(self.label)
        if late:
            log.info("returned: %s: the call that timed out returned after %.1f s%s", self.label,
                     time.monotonic() - self.started, "" if ok else f", failing: {short(value, 200)}")


class _Capture:
    """What one plugin call printed: how much, and the last PRINT_KEEP characters."""

    def __init__(self):
        self.total = 0
        self.parts, self.size = [], 0

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.total += len(text)
        self.parts.append(text[-PRINT_KEEP:])
        self.size += len(self.parts[-1])
        if self.size > 2 * PRINT_KEEP:
            kept = "".join(self.parts)[-PRINT_KEEP:]
            self.parts, self.size = [kept], len(kept)
        return len(text)

    def report(self, label):
        if not self.total:
            return
        text = "".join(self.parts)[-PRINT_KEEP:]
        if self.total > len(text):
            first = text.find("\n")
            if 0 <= first < len(text.rstrip("\n")):
                text = text[first + 1:]   # whole lines only
            log.info("printed: %s: %d characters (%.1f MB), more than hado logs; the last %d:\n%s", label,
                     self.total, self.total / 1e6, len(text), text.rstrip("\n"))
        else:
            log.info("printed: %s: %s", label, text.rstrip("\n"))


class _Router:
    """Stands in for sys.stdout and sys.stderr once plugins are called.

    In a plugin call's thread, what is written goes to that call's :class:`_Capture`;
    anywhere else, and from the logging module, to the real stream, unchanged. So a
    plugin's print() of 100 MB neither floods hado's log nor holds the stream's lock
    while a slow reader (journald) drains it, which would stop every thread that logs.
    Not covered: writes to file descriptor 1 itself (os.write, sys.stdout.buffer, child
    processes not started through :func:`run`).
    """

    def __init__(self, stream):
        self._hado_stream = stream

    def _capture(self):
        capture = getattr(_local, "capture", None)
        if capture is not None and sys._getframe(2).f_globals.get("__name__") != "logging":
            return capture
        return None

    def write(self, text):
        capture = self._capture()
        if capture is None:
            return self._hado_stream.write(text)
        return capture.write(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if getattr(_local, "capture", None) is None:
            self._hado_stream.flush()

    def __getattr__(self, name):
        return getattr(self._hado_stream, name)


_route_lock = threading.Lock()


def _route_output():
    """Put a _Router in front of sys.stdout and sys.stderr (again, if someone replaced it)."""
    for name in ("stdout", "stderr"):
        if not isinstance(getattr(sys, name), (_Router, type(None))):
            with _route_lock:
                stream = getattr(sys, name)
                if stream is not None and not isinstance(stream, _Router):
                    setattr(sys, name, _Router(stream))


def monitor_result(value):
    """Normalise what check() returned: (ok, message) or raise PluginError on garbage."""
    if isinstance(value, bool):
        return value, "ok" if value else "check failed"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
        return value[0], short(value[1])
    raise PluginError(f"check() returned {value!r:.80}; expected True/False or (ok, 'message')")
