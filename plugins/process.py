"""A process, found by pidfile or by name, as a monitor or a resource.

Arguments (exactly one of pidfile and name):
  pidfile       a file holding the process ID; the process runs while /proc/PID exists.
  name          the exact process name: /proc/PID/comm (at most 15 characters, as
                `ps -e` shows it) or the base name of argv[0]; every match counts.
Resource only:
  start         command (argv list) that starts the process and returns, e.g.
                ["/usr/sbin/nginx"]; without it the resource cannot be started.
  timeout       seconds for start: the command, then waiting for the process to
                appear (default 20).
  stop_timeout  seconds between SIGTERM and SIGKILL when stopping (default 10).
  env, cwd      environment additions and working directory for start.

As a monitor: ok while the process runs ("pid 123 running").

Notes: processes are read from /proc (no `ps`); zombies count as gone and hado never
matches itself. start does nothing if the process already runs. stop signals every
match and succeeds when none is left (also when none was running). A process that
start leaves behind must not keep the command's stdout/stderr open, or start waits
until the timeout. A stale pidfile whose PID the kernel gave to another process is
taken for the process: prefer `name` if that can happen.
"""

import os
import signal
import time

from hado.plugin import PluginError, run

KILL_WAIT = 5.0  # seconds to wait for the kernel to remove a SIGKILLed process


def check(pidfile=None, name=None):
    pids = _find(pidfile, name)
    return bool(pids), _describe(pids, pidfile, name)


def alive(pidfile=None, name=None):
    return bool(_find(pidfile, name))


def start(start=None, pidfile=None, name=None, env=None, cwd=None, timeout=20):
    if _find(pidfile, name):
        return
    what = _what(pidfile, name)
    if start is None:
        raise PluginError(f"cannot start {what}: the resource has no 'start' command "
                          "(add \"start\": [\"program\", \"arg\", ...] to its config)")
    deadline = time.monotonic() + timeout
    run(start, timeout=timeout, env=env, cwd=cwd)
    while not _find(pidfile, name):
        if time.monotonic() >= deadline:
            raise PluginError(f"start command {' '.join(map(str, start))} succeeded but "
                              f"{what} did not appear within {timeout:g} s")
        time.sleep(0.05)


def stop(pidfile=None, name=None, stop_timeout=10):
    pids = _find(pidfile, name)
    if not pids:
        return
    # Remember each start time: a PID the kernel reuses meanwhile is not ours to kill.
    procs = {pid: _start_time(pid) for pid in pids}
    _signal(procs, signal.SIGTERM)
    if not _wait_gone(procs, stop_timeout):
        return
    _signal(procs, signal.SIGKILL)
    left = _wait_gone(procs, KILL_WAIT)
    if not left:
        return
    raise PluginError(f"{_what(pidfile, name)}: pid {', '.join(map(str, left))} still "
                      f"running {KILL_WAIT:g} s after SIGKILL")


def validate(kind, pidfile=None, name=None, start=None, stop_timeout=10, timeout=20,
             env=None, cwd=None):
    errors = []
    if (pidfile is None) == (name is None):
        errors.append("give exactly one of 'pidfile' and 'name'")
    for key, value in (("pidfile", pidfile), ("name", name), ("cwd", cwd)):
        if value is not None and (not isinstance(value, str) or not value):
            errors.append(f"{key} must be a non-empty string, not {value!r}")
    if start is not None and not (isinstance(start, list) and start
                                  and all(isinstance(a, str) for a in start)):
        errors.append(f"start must be a non-empty list of strings (argv, no shell), not {start!r}")
    if env is not None and not (isinstance(env, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        errors.append(f"env must be an object of strings, not {env!r}")
    for key, value in (("stop_timeout", stop_timeout), ("timeout", timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            errors.append(f"{key} must be a number of seconds >= 0, not {value!r}")
    return errors


def _find(pidfile, name):
    """PIDs of the running (non-zombie) processes that match, never our own."""
    if pidfile is not None:
        pid = _read_pidfile(pidfile)
        return [pid] if pid is not None and pid != os.getpid() and _running(pid) else []
    if name is None:
        raise PluginError("give exactly one of 'pidfile' and 'name'")
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and _named(int(entry), name):
            pids.append(int(entry))
    return pids


def _read_pidfile(pidfile):
    try:
        with open(pidfile) as f:
            text = f.read(100).strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PluginError(f"cannot read pidfile {pidfile}: {exc.strerror}") from None
    if not text:
        return None  # being written right now
    if not text.isdigit() or int(text) <= 0:
        raise PluginError(f"pidfile {pidfile} holds {text[:30]!r}, not a process ID")
    return int(text)


def _named(pid, name):
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().rstrip("\n")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:  # gone meanwhile, or hidden from us
        return False
    return name in (comm, os.path.basename(argv0)) and _running(pid)


def _running(pid):
    """True if /proc/PID exists and is not a zombie."""
    return _start_time(pid) is not None


def _start_time(pid):
    """The start time of a running process (clock ticks since boot); None if gone or zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _signal(procs, signum):
    for pid, started in procs.items():
        if _start_time(pid) != started:
            continue
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise PluginError(f"not allowed to send {signal.Signals(signum).name} to pid {pid} "
                              "(it belongs to another user)") from None


def _wait_gone(procs, seconds):
    """Poll until none of procs {pid: start time} runs or `seconds` pass; return those left."""
    deadline = time.monotonic() + seconds
    while True:
        left = [pid for pid, started in procs.items() if _start_time(pid) == started]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _what(pidfile, name):
    return f"process from {pidfile}" if pidfile is not None else f"process named {name!r}"


def _describe(pids, pidfile, name):
    if pids:
        return f"pid {', '.join(map(str, pids))} running"
    if name is not None:
        return f"no process named {name}"
    pid = _read_pidfile(pidfile)
    if pid is None:
        return f"no pidfile {pidfile}"
    return f"pid {pid} from {pidfile} not running"
