"""A TCP port that accepts connections (a monitor).

Arguments:
  host     name or address to connect to, e.g. "127.0.0.1".
  port     TCP port number.
  timeout  seconds to wait for the connection (default 2.0).

Notes: the check opens a connection and closes it at once, sending nothing.
"""

import socket


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


def validate(host, port, timeout=2.0):
    errors = []
    if not isinstance(host, str) or not host:
        errors.append(f"host must be a host name or address, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        errors.append(f"port must be a port number (1-65535), not {port!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        errors.append(f"timeout must be a number of seconds > 0, not {timeout!r}")
    return errors
