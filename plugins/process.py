"""A process, found by pidfile or by name, as a monitor or a resource; optionally on a lease.

Arguments (exactly one of pidfile and name):
  pidfile       a file holding the process ID; the process runs while /proc/PID exists.
  name          the exact process name: /proc/PID/comm (at most 15 characters, as
                `ps -e` shows it) or the base name of argv[0]; every match counts.
Resource only:
  start         command (argv list) that starts the process and returns, e.g.
                ["/usr/sbin/nginx"]; without it the resource cannot be started. With
                a lease, the command must stay in the foreground instead (see below).
  timeout       seconds for start: the command, then waiting for the process to
                appear (default 20). Keep it under the resource's start_timeout.
  stop_timeout  seconds between SIGTERM and SIGKILL when stopping (default 10).
  env, cwd      environment additions and working directory for start.
  lease         seconds (a number > 0; default null: no lease). The process is then
                killed by itself when hado dies or stops renewing, like ipaddr's
                kernel-enforced address lease. Give at least 2 x cluster.heartbeat;
                1 suits the default heartbeat of 0.5 s.

As a monitor: ok while the process runs ("pid 123 running").

With a lease: start runs the command under a small watchdog, the leash (hado/leash.py,
a process of its own, detached from hado: new session, stdin /dev/null). The leash
starts the command as its child, in a process group of its own, and kills that whole
group (SIGTERM, then SIGKILL 0.2 s later) at once when the hado process that started
it is gone (killed, crashed; its PID and start time are checked, so a reused PID does
not count) and when the lease runs out: hado renews it every heartbeat while the app
is active here with quorum (renew), so a frozen hado (SIGSTOP, a stuck VM) or a node
that lost its quorum has it killed within lease + 0.35 s of its last renewal, before
a peer takes over (peers wait max(dead_after, lease + 0.35 s + heartbeat)). The leash
exits when its child exits, after killing what is left of the group.
  - The command must stay in the foreground: the process the pidfile or name finds
    must be the command itself or run below it, e.g. nginx with
    ["/usr/sbin/nginx", "-c", "/etc/hado/nginx-web.conf", "-g", "daemon off;"]. A
    command that daemonizes and returns is seen as exited, and the leash kills what
    it left behind.
  - The lease file, holding the deadline as an absolute CLOCK_MONOTONIC time
    (seconds, as Python's time.monotonic(); one clock for all processes and network
    namespaces of a kernel), is PIDFILE.lease, or /run/hado/process-NAME.lease with
    `name` (one leased resource per name). renew writes it atomically (a temporary
    file, then rename) and refuses to renew a lease that already ran out.
  - The command's stdout and stderr, and one line per thing the leash did (why it
    killed the process), go to PIDFILE.out (/run/hado/process-NAME.out); the output
    of the previous start is kept in .out.old, and so is the output beyond 1 MB.
  - alive is true while the process runs under its leash. A process found running
    without one (started by hand) counts as not running for alive and makes start
    fail, so that hado stops it and starts it again under a leash: otherwise nothing
    would stop it when hado dies.
  - A process is never handed from one hado process to the next: when hado is killed
    or crashes, the leash kills the process, and the restarted hado starts it again.
  - hado renews only resources in state "started" on the node where the app is
    active: use a lease for kind active-standby only (a clone or a promotable
    resource on a standby node would be killed), and know that in maintenance mode
    (resources "unmanaged") the renewals stop, so leased resources (these and
    ipaddr's) end after their lease.

Notes: processes are read from /proc (no `ps`); zombies count as gone and hado never
matches itself. start does nothing if the process already runs. stop signals every
match and succeeds when none is left (also when none was running); with a lease it
then removes the lease file and waits for the leash to exit. Without a lease, a
process that start leaves behind must not keep the command's stdout/stderr open, or
start waits until the timeout. A stale pidfile whose PID the kernel gave to another
process is taken for the process: prefer `name` if that can happen.
"""

import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import hado
from hado.plugin import PluginError, check_cut_off, cut_off, run

KILL_WAIT = 5.0  # seconds to wait for the kernel to remove a SIGKILLed process
DEFAULT_LEASE = None  # no lease unless the config gives one (lease() tells the engine)
LEASH = os.path.join(os.path.dirname(os.path.abspath(hado.__file__)), "leash.py")
LEASE_DIR = "/run/hado"  # lease and output files of resources found by name
LEASH_WAIT = 2.0  # seconds stop() waits for a leash to exit once its process is gone
# Serializes the changes to lease files made by this hado process (renew, start's own
# renewals, stop's removal), so that no renewal can re-create a file that stop removed.
_lease_lock = threading.Lock()


def check(pidfile=None, name=None):
    pids = _find(pidfile, name)
    return bool(pids), _describe(pids, pidfile, name)


def alive(pidfile=None, name=None, lease=None):
    pids = _find(pidfile, name)
    if not pids:
        return False
    return lease is None or _leashed(pids, _lease_path(pidfile, name))


def start(start=None, pidfile=None, name=None, env=None, cwd=None, timeout=20, lease=None):
    pids = _find(pidfile, name)
    what = _what(pidfile, name)
    if pids:
        if lease is not None and not _leashed(pids, _lease_path(pidfile, name)):
            raise PluginError(f"{what} (pid {', '.join(map(str, pids))}) runs, but not under hado's "
                              "leash (started by hand?): stop it, so that hado starts it with its lease")
        return
    if start is None:
        raise PluginError(f"cannot start {what}: the resource has no 'start' command "
                          "(add \"start\": [\"program\", \"arg\", ...] to its config)")
    if lease is not None:
        _start_leashed(start, pidfile, name, env, cwd, timeout, lease)
        return
    deadline = time.monotonic() + timeout
    run(start, timeout=timeout, env=env, cwd=cwd)
    while not _find(pidfile, name):
        if time.monotonic() >= deadline:
            raise PluginError(f"start command {' '.join(map(str, start))} succeeded but "
                              f"{what} did not appear within {timeout:g} s")
        time.sleep(0.05)


def stop(pidfile=None, name=None, stop_timeout=10):
    pids = _find(pidfile, name)
    if pids:
        # Remember each start time: a PID the kernel reuses meanwhile is not ours to kill.
        procs = {pid: _start_time(pid) for pid in pids}
        _signal(procs, signal.SIGTERM)
        if _wait_gone(procs, stop_timeout):
            _signal(procs, signal.SIGKILL)
            left = _wait_gone(procs, KILL_WAIT)
            if left:
                raise PluginError(f"{_what(pidfile, name)}: pid {', '.join(map(str, left))} still "
                                  f"running {KILL_WAIT:g} s after SIGKILL")
    _release(_lease_path(pidfile, name))


def lease(lease=None):
    """The lease contract (docs/plugins.rst): with a lease the leash kills the process this
    many seconds after the last renewal, and at once when hado dies; None: no lease."""
    return lease


def renew(pidfile=None, name=None, lease=None):
    """Move the lease's deadline to now + lease; nothing to do without a lease.

    Never brings back a lease that ran out: the leash has killed the process by then
    (or is doing it), so renew fails and hado's alive() check takes it from there.
    """
    if lease is None:
        return
    _extend(_lease_path(pidfile, name), lease, _what(pidfile, name))


def validate(kind, pidfile=None, name=None, start=None, stop_timeout=10, timeout=20,
             env=None, cwd=None, lease=None):
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
    if lease is not None:
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not math.isfinite(lease) \
                or lease <= 0:
            errors.append(f"lease must be a number of seconds > 0, or null for no lease, not {lease!r}")
        elif start is None:
            errors.append("lease needs a 'start' command: the leash starts it and kills it when "
                          "the lease runs out")
    return errors


# -- the lease ----------------------------------------------------------------------------

def _lease_path(pidfile, name):
    """The lease file: PIDFILE.lease, or /run/hado/process-NAME.lease."""
    if pidfile is not None:
        return f"{pidfile}.lease"
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in str(name))
    return os.path.join(LEASE_DIR, f"process-{safe}.lease")


def _output_path(lease_path):
    return lease_path[:-len(".lease")] + ".out"


def _read_deadline(path):
    try:
        with open(path) as f:
            return float(f.read(100).strip())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None


def _extend(path, lease, what):
    """Renew: only a lease that exists and has not run out yet."""
    with _lease_lock:
        deadline = _read_deadline(path)
        if deadline is None:
            raise PluginError(f"cannot renew the lease of {what}: no lease file {path} "
                              "(not started by hado with a lease, or stopped)")
        late = time.monotonic() - deadline
        if late >= 0:
            raise PluginError(f"cannot renew the lease of {what}: it ran out {late:.2f} s "
                              "ago, so its leash kills the process")
        check_cut_off(f"renewal of the lease of {what}")   # the engine's quorum held until now
        _write_deadline(path, lease)


def _write_deadline(path, lease):
    """Write now + lease (time.monotonic()) to path atomically: a temporary file, then rename."""
    directory = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=".lease-", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{time.monotonic() + lease:.6f}\n")
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise PluginError(f"cannot write the lease file {path}: {exc.strerror}") from None


def _start_leashed(start, pidfile, name, env, cwd, timeout, lease):
    """Run start under the leash (hado/leash.py) and wait, renewing, for the process to appear."""
    what = _what(pidfile, name)
    path = _lease_path(pidfile, name)
    output = _output_path(path)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(output):
            os.replace(output, output + ".old")
        out = open(output, "ab")
    except OSError as exc:
        raise PluginError(f"cannot prepare {output} for {what}: {exc.strerror}") from None
    deadline = time.monotonic() + timeout
    with _lease_lock:
        check_cut_off(f"start of {what}")   # no lease after the quorum it was started under
        _write_deadline(path, lease)
    me = os.getpid()
    argv = [sys.executable, "-I", LEASH, "--owner", str(me), "--owner-start", _start_time(me),
            "--lease-file", path, "--output", output, "--", *map(str, start)]
    full_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    full_env.update({str(k): str(v) for k, v in (env or {}).items()})
    try:
        with out:
            leash = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=cwd,
                                     env=full_env, start_new_session=True)
    except OSError as exc:
        raise PluginError(f"cannot start the leash for {what}: {exc.strerror or exc}") from None
    command = " ".join(map(str, start))
    while True:
        if _find(pidfile, name):
            break
        if leash.poll() is not None:
            hint = "; with a lease the command must stay in the foreground" if leash.returncode == 0 else ""
            raise PluginError(f"start command {command} ended before {what} appeared (exit code "
                              f"{leash.returncode}): {_last_line(output)}{hint}")
        if time.monotonic() >= deadline:
            leash.terminate()   # it stops what it started, then exits
            threading.Thread(target=leash.wait, name=f"leash:{leash.pid}", daemon=True).start()
            raise PluginError(f"start command {command} runs but {what} did not appear within "
                              f"{timeout:g} s; stopped it (output in {output})")
        try:
            why = cut_off()
            if why:
                raise PluginError(why)
            _extend(path, lease, what)   # the engine renews only once start() returned
        except PluginError as exc:       # quorum lost, or a stop() meanwhile removed the lease
            leash.terminate()
            threading.Thread(target=leash.wait, name=f"leash:{leash.pid}", daemon=True).start()
            raise PluginError(f"start of {what} given up: {exc}") from None
        time.sleep(0.05)
    # The leash is our child: reap it when it ends, whenever that is.
    threading.Thread(target=leash.wait, name=f"leash:{leash.pid}", daemon=True).start()


def _last_line(path):
    """The command's last line of output in path, else the leash's last word on it."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no output)"
    own = [line for line in lines if " hado-leash[" not in line]
    said = [line.split("]: ", 1)[1] for line in lines if " hado-leash[" in line and "]: done: " not in line]
    return (own or said or ["(no output)"])[-1][:300]


def _leash_of(pid):
    """The lease file of the leash process pid, or None if pid is not a leash."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    if not any(os.path.basename(a) == "leash.py" for a in argv[:3]):
        return None
    end = argv.index("--") if "--" in argv else len(argv)
    for i in range(end - 1):
        if argv[i] == "--lease-file":
            return argv[i + 1]
    return None


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _leashed(pids, lease_path):
    """True if every pid runs below a leash for lease_path (its parent, or further up)."""
    for pid in pids:
        up = _parent(pid)
        for _ in range(16):
            if up is None or up <= 1:
                return False
            if _leash_of(up) == lease_path:
                break
            up = _parent(up)
        else:
            return False
    return True


def _leashes(lease_path):
    """{pid: start time} of the running leash processes for lease_path."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _leash_of(int(entry)) == lease_path:
            started = _start_time(int(entry))
            if started is not None:
                found[int(entry)] = started
    return found


def _release(lease_path):
    """After stop: remove the lease file (a leash still running then ends what is left) and
    wait for the leashes of lease_path to exit; SIGTERM them if they do not."""
    try:
        with _lease_lock:
            os.remove(lease_path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PluginError(f"cannot remove the lease file {lease_path}: {exc.strerror}") from None
    leashes = _leashes(lease_path)
    if not leashes or not _wait_gone(leashes, LEASH_WAIT):
        return
    _signal(leashes, signal.SIGTERM)
    left = _wait_gone(leashes, LEASH_WAIT)
    if left:
        raise PluginError(f"the leash (pid {', '.join(map(str, left))}) for {lease_path} did not exit")


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
