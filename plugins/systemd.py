"""A systemd unit: start, stop, reload it and check that it is active, through systemctl.

Arguments:

- ``unit``: the unit to run, e.g. ``"nginx.service"``.
- ``systemctl``: the command as an argv list (default ``["systemctl"]``), e.g.
  ``["systemctl", "--user"]``, or a prefix that runs it elsewhere such as
  ``["nsenter", "-t", "1234", "-a", "systemctl"]``.
- ``timeout``: seconds one systemctl call may take (default 90, systemd's own default
  start timeout). Keep the resource's call timeout in hado at least this long.

``start`` is ``systemctl start UNIT``, which waits for the start job: a ``Type=notify``
unit counts as started once it sent READY=1. A unit that systemd marked failed is
reset first (``systemctl reset-failed``), so systemd's start rate limit does not
overrule hado's own ``max_restarts``. ``stop`` is ``systemctl stop UNIT`` and succeeds
when the unit is already inactive or not even loaded. ``alive`` is
``systemctl is-active UNIT``: True when active or reloading, False when inactive,
failed or not found; a unit still activating or deactivating is neither, so alive
fails with its state (``the unit is activating (start-pre), neither running nor
stopped``) and hado treats it as "may be running": it is stopped on a standby node,
and ``start`` waits for it on the active one. ``reload`` is
``systemctl reload UNIT``. A failure carries systemctl's exit code, its message and the
unit's state, e.g. ``systemctl start web.service: exit code 1: Job for web.service failed
because the control process exited with error code. (unit now failed, result
exit-code)``.

Let hado alone start the unit: do not enable it (``systemctl disable UNIT``), or every
node starts it at boot.
"""

from hado.plugin import PluginError, run

# systemctl's exit code for "no such unit" (LSB: "program is not installed")
EXIT_NOT_LOADED = 5


def validate(unit, systemctl=("systemctl",), timeout=90):
    """Problems with the arguments, found when the config is checked."""
    problems = []
    if not isinstance(unit, str) or not unit.strip():
        problems.append(f"unit must be a unit name such as 'nginx.service', not {unit!r}")
    elif unit.startswith("-") or any(ch.isspace() for ch in unit):
        problems.append(f"unit {unit!r} is not a unit name (no leading '-', no spaces)")
    if isinstance(systemctl, str) or not systemctl or not all(isinstance(p, str) and p for p in systemctl):
        problems.append(f"systemctl must be a non-empty argv list of strings, not {systemctl!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        problems.append(f"timeout must be a positive number of seconds, not {timeout!r}")
    return problems


def start(unit, systemctl=("systemctl",), timeout=90):
    """``systemctl start UNIT``; on failure a PluginError with the unit's state."""
    if _show(unit, systemctl, timeout).get("ActiveState") == "failed":
        _systemctl(systemctl, ["reset-failed", unit], timeout, check=False)
    _act("start", unit, systemctl, timeout)


def stop(unit, systemctl=("systemctl",), timeout=90):
    """``systemctl stop UNIT``; a unit that is not loaded or already inactive is fine."""
    proc = _systemctl(systemctl, ["stop", unit], timeout, check=False)
    if proc.returncode == 0:
        return
    if proc.returncode == EXIT_NOT_LOADED \
            and _show(unit, systemctl, timeout).get("ActiveState") == "inactive":
        return   # "Unit x.service not loaded.": nothing runs, which is what stop wants
    raise _failure("stop", unit, systemctl, timeout, proc)


# is-active exits 3 for these too, but the unit's processes may run (or be about to):
# "not running" would let a restarted hado take a unit its predecessor left starting
# for stopped, and leave it running on a standby node.
TRANSITIONAL = ("activating", "deactivating")


def alive(unit, systemctl=("systemctl",), timeout=90):
    """True when ``systemctl is-active UNIT`` says active or reloading (exit 0), False
    when inactive, failed or not found; PluginError while it is activating or
    deactivating (hado then counts it as possibly running)."""
    proc = _systemctl(systemctl, ["is-active", unit], timeout, check=False)
    if proc.returncode == 0:
        return True
    state = proc.stdout.strip()
    if proc.returncode in (3, 4) and not proc.stderr.strip():
        if state in TRANSITIONAL:
            sub = _show(unit, systemctl, timeout, ("SubState",)).get("SubState")
            raise PluginError(f"systemctl is-active {unit}: the unit is {state}"
                              f"{f' ({sub})' if sub else ''}, neither running nor stopped")
        return False   # 3: inactive, failed; 4: no such unit
    raise _failure("is-active", unit, systemctl, timeout, proc)


def reload(unit, systemctl=("systemctl",), timeout=90):
    """``systemctl reload UNIT`` (the unit must define ExecReload=)."""
    _act("reload", unit, systemctl, timeout)


def _act(verb, unit, systemctl, timeout):
    proc = _systemctl(systemctl, [verb, unit], timeout, check=False)
    if proc.returncode != 0:
        raise _failure(verb, unit, systemctl, timeout, proc)


def _systemctl(systemctl, args, timeout, check):
    return run([*systemctl, *args], timeout=timeout, check=check)


def _show(unit, systemctl, timeout, props=("LoadState", "ActiveState", "Result")):
    """LoadState, ActiveState and Result of the unit ({} when systemd cannot tell)."""
    proc = _systemctl(systemctl, ["show", f"--property={','.join(props)}", "--", unit],
                      timeout, check=False)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def _failure(verb, unit, systemctl, timeout, proc):
    """A PluginError with the command, exit code, systemd's whole message and the state."""
    lines = [line.strip() for line in (proc.stderr or proc.stdout or "").splitlines() if line.strip()]
    message = " ".join(lines)[:500] or "(no output)"
    try:
        props = _show(unit, systemctl, timeout)
    except PluginError:
        props = {}
    if props.get("LoadState", "loaded") != "loaded":
        state = f" (unit {props['LoadState']})"
    elif props.get("ActiveState"):
        state = f" (unit now {props['ActiveState']}, result {props.get('Result', '?')})"
    else:
        state = ""
    return PluginError(f"systemctl {verb} {unit}: exit code {proc.returncode}: {message}{state}")
