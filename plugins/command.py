"""Any program as a monitor or a resource, given as argv lists (no shell).

Arguments as a resource:
  start, stop  commands that start and stop the thing; a non-zero exit is a failure.
  alive        command that exits 0 while the thing runs, non-zero when it does not.
  promote, demote  optional commands for a promotable resource (default: do nothing).
Arguments as a monitor:
  check        command that exits 0 when all is well; its output's last line is the
               message (stdout on success, stderr or else stdout on failure).
Both:
  env          extra environment variables (an object of strings).
  cwd          working directory of the commands.
  timeout      seconds each command may run before it is killed (default 20).

Every command is a list such as ["systemctl", "is-active", "--quiet", "nginx"]; to use
a shell, say so: ["sh", "-c", "..."].

Notes: stop must succeed when the thing is already stopped, and alive must change
nothing: make the commands behave that way. A start command must return: a daemon it
leaves running must not keep the command's stdout/stderr open (redirect them, e.g.
``>/dev/null 2>&1``), or hado waits for it until the timeout.
"""

from hado.plugin import last_line, run


def check(check, env=None, cwd=None, timeout=20):
    proc = run(check, timeout=timeout, env=env, cwd=cwd, check=False)
    if proc.returncode == 0:
        return True, _last_stdout_line(proc)
    return False, f"exit code {proc.returncode}: {last_line(proc)}"


def start(start, env=None, cwd=None, timeout=20):
    run(start, timeout=timeout, env=env, cwd=cwd)


def stop(stop, env=None, cwd=None, timeout=20):
    run(stop, timeout=timeout, env=env, cwd=cwd)


def alive(alive, env=None, cwd=None, timeout=20):
    return run(alive, timeout=timeout, env=env, cwd=cwd, check=False).returncode == 0


def promote(promote=None, env=None, cwd=None, timeout=20):
    if promote is not None:
        run(promote, timeout=timeout, env=env, cwd=cwd)


def demote(demote=None, env=None, cwd=None, timeout=20):
    if demote is not None:
        run(demote, timeout=timeout, env=env, cwd=cwd)


def validate(kind, env=None, cwd=None, timeout=20, **commands):
    """Errors in the arguments; the commands present are those of ``kind``."""
    errors = []
    for key, value in commands.items():
        if value is None and key in ("promote", "demote"):
            continue
        if not (isinstance(value, list) and value and all(isinstance(a, str) for a in value)):
            errors.append(f"{key} must be a non-empty list of strings (argv, no shell), not {value!r}")
    if env is not None and not (isinstance(env, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        errors.append(f"env must be an object of strings, not {env!r}")
    if cwd is not None and not isinstance(cwd, str):
        errors.append(f"cwd must be a directory name, not {cwd!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        errors.append(f"timeout must be a number of seconds > 0, not {timeout!r}")
    return errors


def _last_stdout_line(proc):
    lines = [line.strip() for line in (proc.stdout or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else last_line(proc)
