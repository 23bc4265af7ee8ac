"""Ping monitor: the host answers ICMP echo (the ``ping`` command of iputils).

Arguments: ``host`` (name or address, IPv4 or IPv6), ``count`` (echo requests, default
1; the check passes when any is answered), ``timeout`` (seconds to wait for each
answer, default 2).

Why the ``ping`` command and not Python: sending ICMP from Python needs a raw socket,
that is root or CAP_NET_RAW, or an unprivileged ICMP socket, which the kernel allows
only to the groups in ``net.ipv4.ping_group_range`` (often nobody). The ``ping``
program is installed with the capability (or setuid), so this monitor works the same
however hado runs. Install it with ``apt-get install iputils-ping`` (Debian/Ubuntu) or
``dnf install iputils``.
"""

import re
import shutil

from hado.plugin import PluginError, last_line, run


def check(host, count=1, timeout=2):
    if not shutil.which("ping"):
        raise PluginError("ping: command not found (install iputils-ping)")
    argv = ["ping", "-n", "-q", "-c", str(count), "-W", f"{timeout:g}"]
    if count > 1:
        argv += ["-i", "0.2"]  # the shortest interval allowed without root
    proc = run(argv + ["--", host], timeout=timeout * count + 0.2 * count + 5, check=False)
    summary = re.search(r"(\d+) packets transmitted, (\d+) received", proc.stdout)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", proc.stdout)
    if proc.returncode == 0 and summary:
        sent, received = summary.groups()
        average = f", average {rtt.group(1)} ms" if rtt else ""
        return True, f"{host} answered {received} of {sent}{average}"
    if proc.returncode == 1 and summary:
        return False, f"{host} did not answer ({summary.group(1)} sent, none answered in {timeout:g} s)"
    raise PluginError(f"ping {host}: {last_line(proc)}")


def validate(host=None, count=1, timeout=2):
    errors = []
    if not isinstance(host, str) or not host or host.startswith("-") or any(c.isspace() for c in host):
        errors.append(f"host {host!r} must be a host name or an address")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
        errors.append(f"count {count!r} must be a whole number from 1 to 100")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        errors.append(f"timeout {timeout!r} must be seconds, > 0 and <= 60")
    return errors
