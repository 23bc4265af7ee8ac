"""A TCP port that accepts connections (a monitor).

Arguments:
  host     name or address to connect to, e.g. "127.0.0.1".
  port     TCP port number.
  timeout  seconds to wait for the connection (default 2.0).

Notes: the check opens a connection and closes it at once, sending nothing.

other() (for an app monitor with ``"other": true``, docs/plugins.rst): the engine calls
it before the app starts on this node, while nothing of the app runs here. When
host:port is a service at a fixed address that only the app's holder serves (the
service's port on its VIP), a connection accepted then means another machine serves
it: ``"10.0.0.100:80 accepts connections, and 10.0.0.100 is not an address of this
machine"``. An address of this machine never counts, and a connection refused, an
unreachable host or no answer within 0.2 s (or ``timeout`` if shorter) means nobody:
that wait is what it adds to a failover when nobody serves the port.
"""

import ipaddress
import socket

from hado.plugin import PluginError

OTHER_WAIT = 0.2   # seconds other() waits for a connection before it says nobody serves the port


def check(host, port, timeout=2.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} accepts connections"
    except socket.timeout:
        return False, f"{host}:{port}: no answer within {timeout:g} s"
    except socket.gaierror as exc:
        return False, f"{host}:{port}: cannot resolve {host!r}: {exc.strerror}"
    except OSError as exc:
        return False, f"{host}:{port}: {exc.strerror or exc}"


def other(host, port, timeout=2.0):
    """Who else serves host:port: None, or a sentence saying that it answers."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise PluginError(f"{host}:{port}: cannot resolve {host!r}: {exc.strerror}") from None
    if _is_local(family, address):
        return None
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(min(timeout, OTHER_WAIT))
            sock.connect(address)
    except OSError:
        return None   # refused, unreachable, or no answer in time: nobody serves it there
    return f"{host}:{port} accepts connections, and {address[0]} is not an address of this machine"


def validate(host, port, timeout=2.0):
    errors = []
    if not isinstance(host, str) or not host:
        errors.append(f"host must be a host name or address, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        errors.append(f"port must be a port number (1-65535), not {port!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        errors.append(f"timeout must be a number of seconds > 0, not {timeout!r}")
    return errors


def _is_local(family, address):
    """True when ``address`` is one of this machine's (of this network namespace's).

    A bind() to it fails for any other address, unless ip_nonlocal_bind is set (HA
    setups often set it for their VIPs): then the kernel's own list decides,
    /proc/net/fib_trie (IPv4, "host LOCAL" entries) or /proc/net/if_inet6."""
    ip = ipaddress.ip_address(address[0].split("%")[0])
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((str(ip), 0))
    except OSError:
        return False
    version = "ipv4" if ip.version == 4 else "ipv6"
    try:
        with open(f"/proc/sys/net/{version}/ip_nonlocal_bind") as f:
            if f.read().strip() == "0":
                return True
        if ip.version == 6:
            with open("/proc/net/if_inet6") as f:
                return any(ipaddress.ip_address(int(line.split()[0], 16)) == ip for line in f if line.strip())
        with open("/proc/net/fib_trie") as f:
            last = None
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] in ("|--", "+--"):
                    last = words[1]
                elif last == str(ip) and words[-2:] == ["host", "LOCAL"]:
                    return True
        return False
    except (OSError, ValueError):
        return True   # bind() worked and nothing says otherwise
