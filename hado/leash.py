"""The leash: run one command as a child, and kill it when hado goes or its lease runs out.

hado's ``process`` plugin starts a resource with a ``lease`` through this script
instead of running its ``start`` command directly::

    python3 -I /opt/hado/hado/leash.py --owner PID --owner-start TICKS \\
        --lease-file /run/hado/nginx-web.pid.lease [--output FILE] -- nginx -g "daemon off;"

It is detached from hado (its own session, stdin /dev/null, stdout and stderr to
``--output``), starts the command as its child in a process group of its own, and
kills that whole process group (and every other descendant) with SIGTERM, then SIGKILL
after ``GRACE`` seconds, as soon as one of these happens:

- the owner is gone: process ``--owner`` with the start time ``--owner-start``
  (/proc/PID/stat field 22, so a PID the kernel reused is not taken for hado) has
  exited or is a zombie. Seen at once through a pidfd, else within ``POLL`` seconds;
- the lease ran out: the lease file holds an absolute ``CLOCK_MONOTONIC`` deadline
  (one number, seconds, as ``time.monotonic()``: one clock for every process and
  network namespace of one kernel), rewritten atomically by ``renew()``. The leash
  wakes at the deadline and compares it with the value it read at its previous wake
  (at most ``POLL`` earlier): a renewal written while the leash could not run (the
  whole machine frozen) cannot bring an expired lease back. A missing or unreadable
  lease file counts as expired;
- its child exited (the leash then removes what is left of the group and exits with
  the child's status);
- it gets SIGTERM.

So a process under a leash is dead at most ``lease + POLL-wake + GRACE`` (about
lease + 0.25 s) after the last renewal, and about ``GRACE`` after hado dies; hado's
peers wait ``lease + 0.35 s + heartbeat`` of silence before taking over.

The child gets ``PR_SET_PDEATHSIG`` = SIGKILL (if the leash itself is killed, so is the
child) and the leash is a child subreaper (``PR_SET_CHILD_SUBREAPER``): descendants
that leave the child's process group or are orphaned stay below the leash, are found
and killed with the group, and are reaped here. The command must stay in the
foreground (``nginx -g "daemon off;"``): when the child exits, the leash ends the rest.

Each thing the leash does is one line on its stderr (the ``--output`` file), e.g.
``hado-leash[812]: the lease ran out 0.001 s ago (no renewal since ...); stopping
process group 813``. With ``--output``, the file is copied to FILE.old and emptied
when it grows over ``MAX_OUTPUT`` bytes (the child writes in append mode).

Standard library only and no imports from the hado package: it runs as a script
(``-I``: the script's directory is not put on sys.path), from any working directory.
"""

import argparse
import ctypes
import os
import select
import signal
import subprocess
import sys
import time

POLL = 0.05           # seconds between two looks at the owner and the lease file, at most
GRACE = 0.2           # seconds between SIGTERM and SIGKILL
KILL_WAIT = 2.0       # seconds to wait for SIGKILLed processes to be gone
MAX_OUTPUT = 1 << 20  # bytes of --output before it is rotated to FILE.old
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

_libc = None
_terminate = []       # set by the SIGTERM handler


def log(message):
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        print(f"{stamp} hado-leash[{os.getpid()}]: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass


def prctl(option, value):
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        if isinstance(value, bytes):
            return _libc.prctl(option, ctypes.c_char_p(value), 0, 0, 0) == 0
        return _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


# -- /proc ---------------------------------------------------------------------------------

def stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (fields[0] is the state), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def start_time(pid):
    """The start time of a live process (clock ticks since boot); None if gone or a zombie."""
    fields = stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def targets(me, group):
    """Live processes to kill: every descendant of ``me`` and every member of ``group``."""
    parents, groups = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(entry)
        if not fields or fields[0] in ("Z", "X"):
            continue
        pid = int(entry)
        parents[pid], groups[pid] = int(fields[1]), int(fields[2])
    found = {pid for pid, pgid in groups.items() if pgid == group and pid != me}
    for pid in parents:
        seen, up = set(), pid
        while up in parents and up not in seen and up > 1:
            seen.add(up)
            up = parents[up]
            if up == me:
                found.add(pid)
                break
    return found


# -- the lease and the owner ---------------------------------------------------------------

def read_deadline(path):
    """The deadline in the lease file (monotonic seconds), or None if missing or unreadable."""
    try:
        with open(path) as f:
            return float(f.read(100).strip())
    except (OSError, ValueError):
        return None


class Owner:
    """The hado process: pid plus start time; a pidfd tells its exit at once when we have one."""

    def __init__(self, pid, started):
        self.pid, self.started = pid, started
        self.fd = None
        try:
            self.fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pass   # no pidfd (old kernel, or already gone): polling alone
        # Checked after opening: the pidfd then surely refers to the process we were told.

    def gone(self):
        if self.fd is not None and select.select([self.fd], [], [], 0)[0]:
            return True
        return start_time(self.pid) != self.started


# -- the child -------------------------------------------------------------------------------

def start_child(command, me):
    def prepare():   # in the child, between fork and exec
        os.setpgid(0, 0)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != me:   # the leash died before the line above: do not run unleashed
            os._exit(125)
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=prepare)


def describe(status):
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


class Reaper:
    """Reaps every child (we are a subreaper), remembering the status of the command's."""

    def __init__(self, child):
        self.child, self.status = child, None

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if pid == self.child:
                self.status = status


def kill_all(me, group, reaper, reason):
    """SIGTERM to the group and every descendant, SIGKILL after GRACE; wait until all are gone."""
    reaper.reap()
    left = targets(me, group)
    if not left:
        return
    log(f"{reason}; stopping process group {group} (SIGTERM, SIGKILL after {GRACE:g} s): "
        f"pid {', '.join(map(str, sorted(left)))}")
    for signum, wait in ((signal.SIGTERM, GRACE), (signal.SIGKILL, KILL_WAIT)):
        try:
            os.killpg(group, signum)
        except OSError:
            pass
        for pid in left:
            try:
                os.kill(pid, signum)
            except OSError:
                pass
        until = time.monotonic() + wait
        while True:
            reaper.reap()
            left = targets(me, group)
            if not left or time.monotonic() >= until:
                break
            time.sleep(0.01)
        if not left:
            return
        if signum == signal.SIGTERM:
            log(f"pid {', '.join(map(str, sorted(left)))} still running {GRACE:g} s after SIGTERM: SIGKILL")
    log(f"pid {', '.join(map(str, sorted(left)))} still there {KILL_WAIT:g} s after SIGKILL")


# -- the output file -------------------------------------------------------------------------

def rotate(output):
    """Copy --output to FILE.old and empty it once it is over MAX_OUTPUT (appenders go on)."""
    try:
        if os.fstat(1).st_size <= MAX_OUTPUT:
            return
        with open(output, "rb") as src, open(output + ".old", "wb") as dst:
            while chunk := src.read(1 << 16):
                dst.write(chunk)
        os.ftruncate(1, 0)
        log(f"output over {MAX_OUTPUT} bytes: the previous output is in {output}.old")
    except OSError as exc:
        log(f"cannot rotate {output}: {exc.strerror}")


# -- main ------------------------------------------------------------------------------------

def parse(argv):
    parser = argparse.ArgumentParser(prog="leash.py", description="Run a command; kill its process "
                                     "group when the owner process is gone or the lease ran out.")
    parser.add_argument("--owner", type=int, required=True, help="the owner's (hado's) PID")
    parser.add_argument("--owner-start", required=True, help="its start time, /proc/PID/stat field 22")
    parser.add_argument("--lease-file", required=True, help="file holding the CLOCK_MONOTONIC deadline")
    parser.add_argument("--output", default=None, help="the file stdout and stderr go to (for rotation)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARG...")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given (after --)")
    return args


def main(argv):
    args = parse(argv)
    me = os.getpid()
    prctl(PR_SET_NAME, b"hado-leash")
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    # Handlers, not SIG_IGN: an ignored signal would stay ignored in the command after exec.
    signal.signal(signal.SIGTERM, lambda *_: _terminate.append(True))
    for signum in (signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, lambda *_: None)

    owner = Owner(args.owner, args.owner_start)
    if owner.gone():
        log(f"owner pid {args.owner} is gone already; not starting {' '.join(args.command)}")
        return 3
    deadline = read_deadline(args.lease_file)
    if deadline is None or time.monotonic() >= deadline:
        log(f"no valid lease in {args.lease_file}; not starting {' '.join(args.command)}")
        return 3
    try:
        child = start_child(args.command, me)
    except OSError as exc:
        log(f"cannot start {' '.join(args.command)}: {exc.strerror or exc}")
        return 127
    group = child.pid
    log(f"started pid {child.pid} (process group {group}): {' '.join(args.command)}; "
        f"owner pid {args.owner}, lease file {args.lease_file}")
    try:
        child_fd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        child_fd = None
    reaper = Reaper(child.pid)
    watched = [fd for fd in (owner.fd, child_fd) if fd is not None]
    next_rotate = 0.0
    while True:
        reaper.reap()
        now = time.monotonic()
        if reaper.status is not None:
            reason = f"the process exited ({describe(reaper.status)})"
            break
        if _terminate:
            reason = "got SIGTERM"
            break
        if owner.gone():
            reason = f"owner pid {args.owner} is gone"
            break
        # Expiry is judged on the deadline read at the previous wake (at most POLL ago),
        # before looking at the file again: see the module docstring.
        if now >= deadline:
            reason = f"the lease ran out {now - deadline:.3f} s ago (deadline {deadline:.3f}, no renewal)"
            break
        deadline = read_deadline(args.lease_file)
        if deadline is None:
            reason = f"the lease file {args.lease_file} is gone or unreadable"
            break
        if args.output and now >= next_rotate:
            rotate(args.output)
            next_rotate = now + 1.0
        wait = max(0.0, min(POLL, deadline - time.monotonic()))
        try:
            select.select(watched, [], [], wait)
        except InterruptedError:
            pass
    kill_all(me, group, reaper, reason)
    reaper.reap()
    if reaper.status is None:   # gone, but its status not collected yet
        try:
            _, status = os.waitpid(child.pid, 0)
            reaper.status = status
        except ChildProcessError:
            pass
    outcome = describe(reaper.status) if reaper.status is not None else "status unknown"
    log(f"done: pid {child.pid} ended ({outcome})")
    if reaper.status is None:
        return 0
    return os.waitstatus_to_exitcode(reaper.status) if os.WIFEXITED(reaper.status) \
        else 128 + os.WTERMSIG(reaper.status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
