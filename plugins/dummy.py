"""A test resource: a state file that exists while the resource runs.

Arguments:
  path         the state file; start writes it, stop removes it, alive = it exists.
  start_delay  seconds start waits before writing the file (default 0): a slow start.
  stop_delay   seconds stop waits before removing the file (default 0): a slow stop.
  node         the name written to the log (default: this host's name).
  lease        seconds (default none): a leased resource, like a VIP with a kernel lease:
               it ends by itself (alive turns false) unless renewed within ``lease``
               seconds; hado renews it every heartbeat while the app is active with quorum.

The state file holds the time.monotonic_ns() of the start and a newline (with a lease,
a second line: the monotonic_ns() deadline). Every start,
stop, promote and demote that changes something appends one line to ``<path>.log``:
``<time.monotonic_ns()> start|stop|promote|demote <node>``. The start time is taken
before the file is written and the stop time after it is removed, so the intervals in
the log cover the whole time the resource was held: the cluster tests merge the logs of
all nodes and check that no two intervals overlap.

Notes: start and stop are idempotent (starting a running resource or stopping a
stopped one changes nothing and logs nothing). promote writes ``<path>.promoted``,
demote removes it; stopping a promoted resource demotes it first (and logs it).
alive only looks at the file.
"""

import os
import socket
import time

from hado.plugin import PluginError, check_cut_off


def start(path, start_delay=0.0, node=None, lease=None):
    if alive(path):
        return
    time.sleep(start_delay)
    if lease:
        check_cut_off(f"start of {path}")   # a lease only under the quorum it was started in
    now = time.monotonic_ns()
    _write(path, f"{now}\n" + (f"{now + int(lease * 1e9)}\n" if lease else ""))
    _log(path, now, "start", node)


def lease(lease=None):
    """The lease contract (docs/plugins.rst): alive() turns false this many seconds after
    the last renewal; None: no lease."""
    return lease


def renew(path, lease=None):
    """Push the deadline of a leased resource ``lease`` seconds ahead; never revives one."""
    if not lease:
        return
    if not alive(path):
        raise PluginError(f"cannot renew {path}: its lease ran out or it was stopped")
    started = _lines(path)[0]
    check_cut_off(f"renewal of {path}")   # the engine's quorum held until now
    _write(path, f"{started}\n{time.monotonic_ns() + int(lease * 1e9)}\n")


def stop(path, stop_delay=0.0, node=None):
    if not os.path.exists(path):
        return
    time.sleep(stop_delay)
    demote(path, node)
    if _remove(path):
        _log(path, time.monotonic_ns(), "stop", node)


def alive(path):
    lines = _lines(path)
    if lines is None:
        return False
    return len(lines) < 2 or time.monotonic_ns() < int(lines[1])


def _lines(path):
    """The state file's lines, None when there is none."""
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PluginError(f"cannot read {path}: {exc.strerror}") from None


def promote(path, node=None):
    if not os.path.exists(path):
        raise PluginError(f"cannot promote: {path} does not exist (the resource is not started)")
    marker = path + ".promoted"
    if os.path.exists(marker):
        return
    now = time.monotonic_ns()
    _write(marker, f"{now}\n")
    _log(path, now, "promote", node)


def demote(path, node=None):
    if _remove(path + ".promoted"):
        _log(path, time.monotonic_ns(), "demote", node)


def validate(path, start_delay=0.0, stop_delay=0.0, node=None, lease=None):
    errors = []
    if lease is not None and (isinstance(lease, bool) or not isinstance(lease, (int, float)) or lease <= 0):
        errors.append(f"lease must be a number of seconds > 0 or null, not {lease!r}")
    if not isinstance(path, str) or not path:
        errors.append(f"path must be a file name, not {path!r}")
    for key, value in (("start_delay", start_delay), ("stop_delay", stop_delay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            errors.append(f"{key} must be a number of seconds >= 0, not {value!r}")
    if node is not None and not isinstance(node, str):
        errors.append(f"node must be a string, not {node!r}")
    return errors


def _write(path, text):
    """Write atomically, so a reader never sees a half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise PluginError(f"cannot write {path}: {exc.strerror}") from None


def _remove(path):
    """Remove path; True if it existed."""
    try:
        os.remove(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise PluginError(f"cannot remove {path}: {exc.strerror}") from None


def _log(path, now, event, node):
    line = f"{now} {event} {node or socket.gethostname()}\n"
    try:
        with open(path + ".log", "a") as f:  # one small O_APPEND write: lines never mix
            f.write(line)
    except OSError as exc:
        raise PluginError(f"cannot append to {path}.log: {exc.strerror}") from None
