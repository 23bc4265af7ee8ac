"""Find, load, check and call plugins.

A plugin is one ``.py`` file; its file name is its name. hado looks in each directory
of ``node.plugin_dirs`` first, then in the built-in ``plugins/`` directory, so an admin
can override a built-in by dropping a file of the same name into a plugin dir.

What a plugin file must define, by kind (one file may be of several kinds):

- monitor:  ``check(**args)`` -> ``True``/``False``, or ``(ok, "message")``; raising
  counts as a failure whose message is the exception text.
- resource: ``start(**args)``, ``stop(**args)``, ``alive(**args) -> bool``; optionally
  ``promote``/``demote`` and any other public function, callable by name through the
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
  ``timeout after N s``, and the caller goes on (the call is left to finish alone);
- the module docstring is the plugin's help text (``hado plugins``).

Helpers for plugins: :func:`run` (a subprocess from an argv list, with a timeout) and
:class:`PluginError` (raise it with a message meant for the admin).
"""

import importlib.util
import inspect
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

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


class PluginError(Exception):
    """A failure with a message meant for the admin (shown in the state as is)."""


def run(cmd, timeout=10.0, env=None, cwd=None, check=True, input=None):
    """Run ``cmd`` (an argv list, never a shell string) and return CompletedProcess.

    stdout and stderr are captured as text. Raises PluginError when the program is
    missing, when it outlives ``timeout`` seconds (it is killed), or, with ``check``,
    when it exits non-zero (the message carries the exit code and the last line of
    its stderr or stdout).
    """
    if isinstance(cmd, (str, bytes)) or not cmd:
        raise PluginError(f"command must be a non-empty argv list, not {cmd!r}")
    argv = [str(part) for part in cmd]
    # Children must not talk to systemd as if they were hado.
    full_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    if env:
        full_env.update({str(k): str(v) for k, v in env.items()})
    # Output goes to temporary files, not pipes: a start command that leaves a daemon
    # behind holding its stdout must not make us wait for that daemon to exit.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(argv, stdout=out, stderr=err, timeout=timeout, env=full_env, cwd=cwd,
                                  input=input.encode() if input is not None else None,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            raise PluginError(f"{argv[0]}: command not found") from None
        except PermissionError:
            raise PluginError(f"{argv[0]}: permission denied") from None
        except subprocess.TimeoutExpired:
            raise PluginError(f"{' '.join(argv)}: killed after timeout of {timeout:g} s") from None
        out.seek(0)
        err.seek(0)
        proc.stdout = out.read().decode(errors="replace")
        proc.stderr = err.read().decode(errors="replace")
    if check and proc.returncode != 0:
        raise PluginError(f"{' '.join(argv)}: exit code {proc.returncode}: {last_line(proc)}")
    return proc


def last_line(proc):
    """The last non-empty line of a finished process's stderr, else stdout, else ''."""
    for text in (proc.stderr, proc.stdout):
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return "(no output)"


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
                        "lease"):
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
            fn = self.function(fname)
            for param in inspect.signature(fn).parameters.values():
                if param.name in ENGINE_PARAMS.get(kind, ()):
                    continue
                if param.kind is param.VAR_KEYWORD:
                    takes_any = True
                elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                    accepted.setdefault(param.name, param.default)
                    if param.default is param.empty:
                        required.add(param.name)
        return accepted, required, takes_any

    def check_args(self, kind, args):
        """Errors for ``args`` given to this plugin used as ``kind``: a list of
        ``(argument or None, message)``."""
        if kind not in self.kinds:
            needs = ", ".join(f"{n}()" for n in KIND_FUNCTIONS[kind])
            return [(None, f"plugin '{self.name}' is not a {kind} plugin (a {kind} defines {needs})")]
        accepted, required, takes_any = self.parameters(kind)
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

        try:
            takes_kind = "kind" in inspect.signature(validate).parameters
            problems = validate(kind=kind, **args) if takes_kind else validate(**args)
            if not problems:          # None, [], False: all is well
                return []
            if isinstance(problems, str):
                return [problems]     # one problem returned as a bare sentence
            if isinstance(problems, (bytes, dict)) or not hasattr(problems, "__iter__"):
                return [broken(f"returned {problems!r:.80} instead of a list of problems")]
            return [str(problem) for problem in problems]   # a list, or what a generator yields
        except Exception as exc:  # a plugin's bug must not crash check-config, start or reload
            return [broken(f"raised {type(exc).__name__}: {exc}")]

    def bind(self, fname, args, **engine):
        """A zero-argument callable for ``fname`` with the arguments its signature takes."""
        fn = self.function(fname)
        if fn is None:
            raise PluginError(f"plugin '{self.name}' has no function {fname}()")
        if fname not in self._signatures:
            self._signatures[fname] = inspect.signature(fn).parameters
        params = self._signatures[fname]
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
    """Import one plugin file (never through sys.path)."""
    spec = importlib.util.spec_from_file_location(f"hado_plugin_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"plugin '{name}' ({path}) failed to load: {type(exc).__name__}: {exc}") from None
    return Plugin(name, path, module)


class Caller:
    """Calls one plugin function at a time with a timeout, for one monitor or resource.

    The call runs on a helper thread. When it outlives its timeout the caller returns a
    failure at once and leaves the call to finish on its own; until it does, further
    calls fail with "previous call still running" instead of piling up threads.
    """

    def __init__(self, label):
        self.label = label
        self._busy = None  # the thread of a call that timed out and still runs

    def call(self, fn, timeout):
        """Return ``(True, value)`` or ``(False, message)``; never raises."""
        busy = self._busy
        if busy is not None:
            if busy.is_alive():
                return False, f"previous call still running (hung for {time.monotonic() - busy.started:.1f} s)"
            self._busy = None
        outcome = {}
        done = threading.Event()

        def target():
            try:
                outcome["value"] = fn()
                outcome["ok"] = True
            except PluginError as exc:
                outcome["ok"], outcome["value"] = False, str(exc) or type(exc).__name__
            except Exception as exc:  # a plugin's bug must not take the engine down
                outcome["ok"], outcome["value"] = False, f"{type(exc).__name__}: {exc}"
            finally:
                done.set()

        thread = threading.Thread(target=target, name=f"call:{self.label}", daemon=True)
        thread.started = time.monotonic()
        thread.start()
        if not done.wait(timeout):
            self._busy = thread
            return False, f"timeout after {timeout:g} s"
        return outcome["ok"], outcome["value"]


def monitor_result(value):
    """Normalise what check() returned: (ok, message) or raise PluginError on garbage."""
    if isinstance(value, bool):
        return value, "ok" if value else "check failed"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
        return value[0], str(value[1])
    raise PluginError(f"check() returned {value!r:.80}; expected True/False or (ok, 'message')")
