"""Boot a real systemd in a systemd-nspawn container, for tests of the install story.

systemd is not PID 1 on the development and CI machines, but it runs fine as PID 1 of a
container booted from a minimal Debian tree. This module builds that tree once with
debootstrap, caches it under ``/var/cache/hado-test/rootfs-<hash of the recipe>``, and
boots throw-away containers from it (``--volatile=overlay``: every change lands in a
tmpfs and vanishes at stop, the cached tree is never written). The repository is bound
read-only at ``/opt/hado``, so ``systemctl enable --now /opt/hado/hado.service`` inside a
container is the real install.

    from nspawn import Container, skip_reason        # tests/ is on sys.path (conftest.py)
    if skip_reason():
        pytest.skip(skip_reason())
    with Container("node-a", repo) as box:           # boots in about a second once cached
        box.write("/etc/hado/config.json", text)
        box.install_unit("web.service", "[Service]\\nExecStart=/bin/sleep infinity\\n")
        box.systemctl("start", "web.service")
        box.show("web.service")["ActiveState"]      # 'active'
        box.journal("web.service", priority="err")  # journalctl -u web.service -p err

Commands run inside through ``nsenter -t LEADER -a`` (``machinectl`` and ``systemctl -M``
need machined and D-Bus on the host, which these machines lack). ``box.nsenter`` is that
prefix, so a host-side program can be pointed into the container, as in
``systemctl=box.nsenter + ["systemctl"]``.

Requirements: root, ``systemd-nspawn`` (package systemd-container) and ``debootstrap``;
:func:`skip_reason` says which one is missing, or why the tree could not be built.

Run ``python3 -m tests.nspawn build`` to build the tree ahead of a test run (1-2 min),
``python3 -m tests.nspawn shell`` for a shell in a fresh container.

The pitfalls this module handles (see shared notes, "real systemd"):

- cgroups are hybrid here; with ``--keep-unit`` nspawn splits the cgroup it was started
  in, so each container is started from its own cgroup (``hadot-*`` under
  ``/sys/fs/cgroup/unified`` and ``/sys/fs/cgroup/systemd``), removed after stop;
- nspawn leaves ``/run/systemd/nspawn/{locks,propagate}`` entries behind: removed;
- ``systemctl is-system-running --wait`` fails early in boot: polled without it;
- a stuck container is killed by SIGKILL to its PID 1, not to nspawn.
"""

import atexit
import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CACHE_DIR = Path(os.environ.get("HADO_TEST_CACHE", "/var/cache/hado-test"))
SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "procps", "iproute2")
# Bump when the steps after debootstrap change, so old caches are not reused.
RECIPE_VERSION = 1
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
CGROUP_PREFIX = "hadot-"
NSPAWN_RUN = Path("/run/systemd/nspawn")
OWNERS = Path("/run/hado-test")      # one file per running container: the pid of its test process
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO = Path(__file__).resolve().parent.parent

_build_lock = threading.Lock()   # guards _build_result (one build per process)
_build_result = {}               # rootfs path -> Path, or the error message of a failed build
_live = set()                    # containers still running, stopped at exit as a safety net


class ContainerError(Exception):
    """Booting, running in or stopping a container failed; the message says what and why."""


# --- the base tree ---------------------------------------------------------------------

def rootfs_path():
    """Where the cached tree for the current recipe lives (it may not exist yet)."""
    recipe = f"{RECIPE_VERSION} {SUITE} {' '.join(sorted(PACKAGES))}"
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return CACHE_DIR / f"rootfs-{digest}"


def host_mirror():
    """The Debian mirror the host's apt uses, so debootstrap goes where apt may go."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    with contextlib.suppress(OSError):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and line.split()[1:]:
                return line.split()[1]
    with contextlib.suppress(OSError):
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            parts = re.sub(r"\[[^]]*\]", " ", line).split()     # drop "[signed-by=...]"
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    return DEFAULT_MIRROR


def tools_missing():
    """Why this machine cannot boot containers at all, or None."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn and debootstrap)"
    for tool, package in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"),
                          ("nsenter", "util-linux")):
        if not shutil.which(tool):
            return f"{tool} not found (apt-get install --no-install-recommends {package})"
    if not all(root.is_dir() for root in CGROUP_ROOTS) and not Path("/sys/fs/cgroup/cgroup.procs").exists():
        return "no cgroup hierarchy found under /sys/fs/cgroup"
    return None


def skip_reason():
    """Why container tests cannot run here (for ``pytest.skip``), or None when they can.

    Builds the tree on first use (1-2 minutes; later calls are instant).
    """
    missing = tools_missing()
    if missing:
        return missing
    try:
        base_rootfs()
    except ContainerError as exc:
        return str(exc)
    return None


def base_rootfs():
    """The cached tree, built now if missing; ContainerError if the build fails.

    A failed build is remembered for the rest of the process, so a test session does not
    retry it for every test.
    """
    path = rootfs_path()
    with _build_lock:
        known = _build_result.get(path)
        if isinstance(known, Path):
            return known
        if isinstance(known, str):
            raise ContainerError(known)
        try:
            _build_result[path] = _build_locked(path)
        except ContainerError as exc:
            _build_result[path] = str(exc)
            raise
        return path


def _build_locked(path):
    """Build ``path`` under a file lock, so two processes never build at once."""
    if (path / "usr/bin/python3").exists():
        return path
    missing = tools_missing()
    if missing:
        raise ContainerError(missing)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)       # wait while another process builds
        if (path / "usr/bin/python3").exists():
            return path
        for stale in CACHE_DIR.glob(f"{path.name}.building-*"):
            _remove_tree(stale)              # left by a builder that died; we hold the lock
        temp = Path(f"{path}.building-{os.getpid()}")
        log = Path(f"{path}.log")
        started = time.monotonic()
        try:
            _debootstrap(temp, log)
            _finish_tree(temp)
            temp.rename(path)                # atomic: the tree appears complete or not at all
        except (OSError, subprocess.SubprocessError, ContainerError) as exc:
            _remove_tree(temp)
            raise ContainerError(f"building the container tree failed: {exc} (log: {log})") from None
        print(f"nspawn: built {path} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return path


def _debootstrap(target, log):
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
            SUITE, str(target), host_mirror()]
    with open(log, "w") as out:
        out.write(" ".join(argv) + "\n")
        out.flush()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              timeout=1200)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise ContainerError(f"debootstrap exit code {proc.returncode}: {tail[0]}")


def _finish_tree(root):
    """Make the fresh tree a good container image: no fixed hostname, no package cache."""
    (root / "etc/hostname").unlink(missing_ok=True)      # else every guest has the host's name
    (root / "etc/machine-id").write_text("")             # each boot gets its own id
    for leftover in (root / "var/cache/apt/archives").glob("*.deb"):
        leftover.unlink()
    (root / "etc/hado-test-rootfs").write_text(
        f"recipe {RECIPE_VERSION}\nsuite {SUITE}\npackages {' '.join(PACKAGES)}\n"
        f"built {time.strftime('%Y-%m-%d %H:%M:%S')}\n")


def _remove_tree(path):
    """rm -rf a (partial) tree, unmounting what debootstrap may have left mounted in it."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stdin=subprocess.DEVNULL, capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], stdin=subprocess.DEVNULL,
                   capture_output=True)


# --- host-side leftovers ---------------------------------------------------------------

def _cgroup_dirs(name):
    return [root / name for root in CGROUP_ROOTS if root.is_dir()]


def _remove_cgroup(path):
    """Kill what is left in a cgroup tree and rmdir it deepest-first."""
    if not path.is_dir():
        return
    dirs = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    dirs.append(path)
    for attempt in range(50):
        for directory in dirs:
            with contextlib.suppress(OSError):
                for pid in (directory / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        for directory in dirs:
            with contextlib.suppress(FileNotFoundError):
                try:
                    directory.rmdir()
                except OSError:
                    pass
        if not path.exists():
            return
        time.sleep(0.05)


def _remove_nspawn_leftovers(machine):
    """Remove nspawn's host-side entries for ``machine`` and lock files nobody holds."""
    for sub in ("propagate", "unix-export"):
        entry = NSPAWN_RUN / sub / machine
        if entry.is_dir():
            subprocess.run(["umount", "-R", "-l", str(entry)], stdin=subprocess.DEVNULL, capture_output=True)
            shutil.rmtree(entry, ignore_errors=True)
    locks = NSPAWN_RUN / "locks"
    if locks.is_dir():
        for lock_file in locks.iterdir():
            try:
                with open(lock_file) as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)   # held by a live nspawn?
                    lock_file.unlink(missing_ok=True)
            except OSError:
                pass
    for directory in (NSPAWN_RUN / "propagate", NSPAWN_RUN / "unix-export", locks, NSPAWN_RUN):
        with contextlib.suppress(OSError):
            directory.rmdir()                 # only when empty: other containers may run


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale():
    """Remove what test runs that died (SIGKILL, a CI timeout) left behind.

    A container whose test process is gone is killed; empty ``hadot-*`` cgroups are
    removed. Containers of live test processes, even other ones, are left alone.
    """
    orphans = set()
    if OWNERS.is_dir():
        for owner_file in OWNERS.iterdir():
            try:
                owner = int(owner_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                owner = 0
            if not _pid_alive(owner):
                orphans.add(owner_file.name)
    for root in CGROUP_ROOTS:
        if not root.is_dir():
            continue
        for path in root.glob(CGROUP_PREFIX + "*"):
            busy = False
            for directory in [path, *path.rglob("*")]:
                if directory.is_dir():
                    with contextlib.suppress(OSError):
                        busy = busy or bool((directory / "cgroup.procs").read_text().split())
            if not busy or path.name in orphans:
                _remove_cgroup(path)      # kills what is left of an orphan, nspawn included
    for machine in orphans:
        _remove_nspawn_leftovers(machine)
        for workdir in Path(tempfile.gettempdir()).glob(f"{machine}.*"):
            shutil.rmtree(workdir, ignore_errors=True)
        (OWNERS / machine).unlink(missing_ok=True)


# --- a container -----------------------------------------------------------------------

class Container:
    """One booted container; a context manager that always cleans up behind itself.

    ``name`` is the container's hostname (hado takes the node name from it); the machine
    name, used for cgroups and nspawn's bookkeeping, adds a random suffix so parallel
    test runs never collide. ``repo`` is bound read-only at ``/opt/hado``.
    ``bridge``: attach a veth to this host bridge (see :func:`host_bridge`) instead of a
    private loopback-only network; the interface inside is ``host0`` and gets
    ``address`` (e.g. ``"10.231.0.11/24"``) once booted.
    ``binds``: more ``(host_path, container_path)`` read-only binds.
    """

    def __init__(self, name="hado", repo=REPO, bridge=None, address=None, binds=(), boot_timeout=60.0):
        self.name = name
        self.repo = Path(repo).resolve()
        self.bridge = bridge
        self.address = address
        if address and not bridge:
            raise ValueError("address needs a bridge (the private network has loopback only)")
        self.binds = list(binds)
        self.boot_timeout = boot_timeout
        self.machine = f"{CGROUP_PREFIX}{secrets.token_hex(3)}-{name}"[:64]
        self.leader = None           # PID 1 of the container, as seen from the host
        self.proc = None             # the systemd-nspawn process
        self.boot_seconds = None     # start of nspawn until is-system-running said running/degraded
        self._workdir = None
        self._console = None

    # context manager ---------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    # lifecycle ---------------------------------------------------------------------
    def start(self):
        """Boot and wait until systemd reports ``running`` or ``degraded``.

        ContainerError (with the console's last lines) when it does not within
        ``boot_timeout``; everything started so far is cleaned up then.
        """
        if self.proc is not None:
            raise ContainerError(f"{self.machine}: already started")
        rootfs = base_rootfs()
        clean_stale()
        started = time.monotonic()
        try:
            self._launch(rootfs)
            self._wait_for_leader(started)
            self.wait_until(self._system_running, timeout=self.boot_timeout - (time.monotonic() - started),
                            what="systemctl is-system-running to say running or degraded")
            self.boot_seconds = time.monotonic() - started
            if self.address:
                self.run(["ip", "addr", "add", self.address, "dev", "host0"])
                self.run(["ip", "link", "set", "host0", "up"])
        except ContainerError as exc:
            console = self.console()[-2000:]
            self.stop(timeout=5)
            raise ContainerError(f"{exc}\n--- console ---\n{console}") from None
        except BaseException:
            self.stop(timeout=5)
            raise
        return self

    def _launch(self, rootfs):
        """Start systemd-nspawn from the container's own cgroups (see the module doc)."""
        _live.add(self)
        self._workdir = Path(tempfile.mkdtemp(prefix=f"{self.machine}."))
        self._console = self._workdir / "console.log"
        OWNERS.mkdir(parents=True, exist_ok=True)
        (OWNERS / self.machine).write_text(f"{os.getpid()}\n")
        cgroups = _cgroup_dirs(self.machine)
        for directory in cgroups:
            directory.mkdir()
        argv = ["systemd-nspawn", "--quiet", "-D", str(rootfs), "--volatile=overlay",
                "-M", self.machine, f"--hostname={self.name}", "--register=no", "--keep-unit",
                f"--bind-ro={self.repo}:/opt/hado", "--console=read-only"]
        argv += [f"--network-bridge={self.bridge}"] if self.bridge else ["--private-network"]
        argv += [f"--bind-ro={Path(host).resolve()}:{inside}" for host, inside in self.binds]
        argv += ["--boot"]
        # The launching shell moves itself into those cgroups, then becomes nspawn.
        join = "".join(f'echo $$ > "{d}/cgroup.procs" && ' for d in cgroups)
        with open(self._console, "wb") as console:
            self.proc = subprocess.Popen(["sh", "-c", join + 'exec "$@"', "sh", *argv],
                                         stdin=subprocess.DEVNULL, stdout=console,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_for_leader(self, started):
        deadline = started + self.boot_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerError(f"{self.machine}: systemd-nspawn exited with code "
                                     f"{self.proc.returncode} during boot")
            for child in _children(self.proc.pid):
                if _comm(child) == "systemd":
                    self.leader = child
                    return
            time.sleep(0.02)
        raise ContainerError(f"{self.machine}: no systemd came up within {self.boot_timeout:g} s")

    def _system_running(self):
        state = self.run(["systemctl", "is-system-running"], check=False, timeout=10).stdout.strip()
        if state in ("running", "degraded"):
            return state
        if self.proc.poll() is not None:
            raise ContainerError(f"{self.machine}: container exited during boot (last state {state!r})")
        return None

    def stop(self, timeout=20.0):
        """Power off (SIGTERM to nspawn), after ``timeout`` SIGKILL to PID 1; clean up always.

        Idempotent. Removes the container's cgroups, nspawn's leftovers and the temp dir.
        """
        proc, self.proc = self.proc, None
        try:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.kill_leader()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(10)
        finally:
            for directory in _cgroup_dirs(self.machine):
                _remove_cgroup(directory)
            _remove_nspawn_leftovers(self.machine)
            (OWNERS / self.machine).unlink(missing_ok=True)
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
            _live.discard(self)
            self.leader = None

    def kill_leader(self):
        """SIGKILL the container's PID 1 (a hard crash of the whole machine)."""
        if self.leader:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.leader, signal.SIGKILL)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def console(self):
        """What the container printed on its console so far (boot messages)."""
        try:
            text = self._console.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""
        return re.sub(r"\x1b\[[0-9;]*m", "", text)       # systemd's colours

    # running things inside -----------------------------------------------------------
    @property
    def nsenter(self):
        """The argv prefix that runs a host program inside the container's namespaces."""
        if not self.leader:
            raise ContainerError(f"{self.machine}: not running")
        return [shutil.which("nsenter") or "nsenter", "-t", str(self.leader), "-a"]

    def run(self, argv, check=True, timeout=30.0, input=None):
        """Run ``argv`` inside; return CompletedProcess (text). ContainerError on failure.

        The environment inside is clean (PATH, LANG), not the test's.
        """
        argv = [str(part) for part in argv]
        try:
            proc = subprocess.run(self.nsenter + argv, capture_output=True, text=True,
                                  timeout=timeout, input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL,
                                  env={"PATH": INSIDE_PATH, "LANG": "C.UTF-8"})
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"{self.machine}: {' '.join(argv)}: timeout after {timeout:g} s"
                                 f" (output so far: {exc.stdout!r:.300})") from None
        if check and proc.returncode != 0:
            output = (proc.stderr.strip() or proc.stdout.strip() or "(no output)")[-1500:]
            raise ContainerError(f"{self.machine}: {' '.join(argv)}: exit code {proc.returncode}: {output}")
        return proc

    def write(self, path, text, mode=0o644):
        """Create or replace file ``path`` inside (parent directories created)."""
        self.run(["sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" "$1"',
                  "sh", path, format(mode, "o")], input=text)

    def read(self, path):
        """The text of file ``path`` inside."""
        return self.run(["cat", "--", path]).stdout

    def wait_until(self, condition, timeout=10.0, interval=0.1, what=None):
        """Poll until ``condition`` holds; return its value; ContainerError at the deadline.

        ``condition``: an argv (holds when it exits 0 inside; the CompletedProcess is
        returned) or a callable (holds when it returns something true).
        """
        deadline = time.monotonic() + max(timeout, 0)
        last = None
        while True:
            if callable(condition):
                value = condition()
                if value:
                    return value
            else:
                last = self.run(condition, check=False, timeout=max(1.0, min(10.0, timeout)))
                if last.returncode == 0:
                    return last
            if time.monotonic() >= deadline:
                detail = ""
                if last is not None:
                    detail = f" (last: exit code {last.returncode}: " \
                             f"{(last.stderr.strip() or last.stdout.strip())[-300:]})"
                label = what or (" ".join(condition) if not callable(condition) else repr(condition))
                raise ContainerError(f"{self.machine}: gave up waiting {timeout:g} s for {label}{detail}")
            time.sleep(interval)

    # systemd helpers -----------------------------------------------------------------
    def systemctl(self, *args, check=True, timeout=60.0):
        """``systemctl ARGS`` inside; CompletedProcess."""
        return self.run(["systemctl", *args], check=check, timeout=timeout)

    def install_unit(self, name, text, reload=True):
        """Put a unit file into ``/run/systemd/system`` (gone at stop) and daemon-reload."""
        self.write(f"/run/systemd/system/{name}", text)
        if reload:
            self.systemctl("daemon-reload")

    def show(self, unit, props=("ActiveState", "SubState", "Result", "MainPID", "NRestarts",
                                "ExecMainStatus", "ExecMainCode")):
        """``systemctl show -p ... UNIT`` as a dict of strings."""
        out = self.systemctl("show", *(f"--property={p}" for p in props), "--", unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, unit, timeout=10.0, **expected):
        """Wait until ``show(unit)`` has every ``expected`` value (strings); return it.

        ``box.wait_for("hado.service", ActiveState="active", SubState="running")``
        """
        props = tuple(expected) + ("ActiveState", "SubState", "Result", "MainPID")
        seen = {}

        def matches():
            seen.update(self.show(unit, props=props))
            return all(seen.get(k) == str(v) for k, v in expected.items())
        try:
            self.wait_until(matches, timeout=timeout, what=f"{unit} to have {expected}")
        except ContainerError as exc:
            raise ContainerError(f"{exc}; last seen {seen}") from None
        return seen

    def journal(self, unit=None, priority=None, output="cat", since=None, lines=None):
        """``journalctl`` inside as text: ``-u unit``, ``-p priority`` (e.g. 'err'),
        ``-o output`` ('cat': messages only; 'short-monotonic', 'json', ...)."""
        argv = ["journalctl", "--no-pager", "-q", "-o", output]
        if unit:
            argv += ["-u", unit]
        if priority:
            argv += ["-p", str(priority)]
        if since:
            argv += ["--since", since]
        if lines:
            argv += ["-n", str(lines)]
        self.run(["journalctl", "--sync"], check=False)   # flush what journald holds in memory
        return self.run(argv, check=False).stdout

    def main_pid(self, unit):
        """The unit's main PID inside the container (0 when it has none)."""
        return int(self.show(unit, props=("MainPID",)).get("MainPID") or 0)

    def host_pid(self, unit):
        """The unit's main process as a PID of the host (for os.kill from the test)."""
        inside = self.main_pid(unit)
        if not inside:
            return 0
        for pid in _descendants(self.leader):
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                for line in status.splitlines():
                    if line.startswith("NSpid:") and line.split()[-1] == str(inside):
                        return pid
        return 0


@contextlib.contextmanager
def host_bridge(name=None):
    """A bridge on the host for containers to meet on (no address on the host side).

    Yields its name; deleted on exit. Traffic stays between the containers on it.
    """
    name = name or f"hbr{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


# --- /proc helpers ---------------------------------------------------------------------

def _children(pid):
    kids = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids += [int(p) for p in (task / "children").read_text().split()]
    return kids


def _descendants(pid):
    todo, seen = [pid], []
    while todo:
        current = todo.pop()
        seen.append(current)
        todo += _children(current)
    return seen


def _comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


@atexit.register
def _stop_leftovers():
    for box in list(_live):
        box.stop(timeout=5)


def main(argv=None):
    """``python3 -m tests.nspawn build|shell|boot``: build the tree, or try it by hand."""
    args = list(sys.argv[1:] if argv is None else argv) or ["build"]
    if args[0] == "build":
        missing = tools_missing()
        if missing:
            print(f"nspawn: cannot build: {missing}", file=sys.stderr)
            return 1
        try:
            print(base_rootfs())
        except ContainerError as exc:
            print(f"nspawn: {exc}", file=sys.stderr)
            return 1
        return 0
    if args[0] in ("shell", "boot"):
        with Container("hado-shell") as box:
            print(f"booted {box.machine} (leader {box.leader}) in {box.boot_seconds:.2f} s", file=sys.stderr)
            if args[0] == "shell":
                subprocess.run(box.nsenter + ["bash", "-l"], env={"PATH": INSIDE_PATH, "TERM": "xterm"})
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
