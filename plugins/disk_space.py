"""Enough free space on a file system (a monitor).

Arguments (exactly one of min_free_percent and min_free_mb):
  path              any path on the file system, e.g. "/var".
  min_free_percent  the least free space, in percent of the file system's size.
  min_free_mb       the least free space, in MB (MiB: 1024 * 1024 bytes, as `df -m`).

Notes: "free" is the space an unprivileged user may still use (statvfs f_bavail, what
`df` shows as Avail), not counting the blocks reserved for root.
"""

import os

from hado.plugin import PluginError

MB = 1024 * 1024


def check(path, min_free_percent=None, min_free_mb=None):
    try:
        st = os.statvfs(path)
    except OSError as exc:
        raise PluginError(f"{path}: {exc.strerror}") from None
    free = st.f_bavail * st.f_frsize
    total = st.f_blocks * st.f_frsize
    percent = 100.0 * free / total if total else 0.0
    if min_free_mb is not None:
        ok, need = free >= min_free_mb * MB, f"{_number(min_free_mb)} MB"
    else:
        ok, need = percent >= min_free_percent, f"{_number(min_free_percent)}%"
    return ok, f"{path}: {percent:.1f}% free ({_size(free)}), need {need}"


def validate(path, min_free_percent=None, min_free_mb=None):
    errors = []
    if not isinstance(path, str) or not path:
        errors.append(f"path must be a path name, not {path!r}")
    if (min_free_percent is None) == (min_free_mb is None):
        errors.append("give exactly one of 'min_free_percent' and 'min_free_mb'")
    for key, value, top in (("min_free_percent", min_free_percent, 100),
                            ("min_free_mb", min_free_mb, float("inf"))):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= top):
            expected = "from 0 to 100" if key == "min_free_percent" else ">= 0"
            errors.append(f"{key} must be a number {expected}, not {value!r}")
    return errors


def _number(value):
    """10 -> '10', 2.5 -> '2.5' (never '1e+06')."""
    return str(value) if isinstance(value, int) else f"{value:.10g}" if value < 1e6 else f"{value:.0f}"


def _size(nbytes):
    """1536 -> '1.5 KB' (binary units, like df -h)."""
    size, unit = float(nbytes), "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            break
        size /= 1024
    return f"{nbytes} B" if unit == "B" else f"{size:.1f} {unit}"
