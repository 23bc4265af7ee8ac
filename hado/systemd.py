"""Talk to systemd: readiness and watchdog notifications, journald log levels.

Everything here is a no-op outside systemd, so ``python3 -m hado --foreground`` in a
terminal behaves the same minus the notifications.

- :func:`notify` sends one sd_notify message (``READY=1``, ``STATUS=...``,
  ``WATCHDOG=1``, ``RELOADING=1``, ``STOPPING=1``) to ``$NOTIFY_SOCKET``; what
  ``hado.service`` (``Type=notify``, ``NotifyAccess=main``) waits for.
- :func:`watchdog_interval` says how often to send ``WATCHDOG=1`` (half of
  ``WatchdogSec=``), or None when systemd does not watch this process.
- :func:`setup_logging` logs to stdout. Under journald (``$JOURNAL_STREAM`` names our
  stdout) every line carries a syslog priority prefix such as ``<6>`` so that
  ``journalctl -p err`` works, and no timestamp (journald adds its own). Anywhere else
  (``--foreground`` in a terminal, a redirected file) every line starts with the time
  in UTC, marked ``Z``, e.g. ``2026-12-02T15:04:05.123Z INFO [MainThread] ...``: the
  same format as the ``time`` of the state's events, so a log line and an event of
  the same moment read the same whatever the machine's time zone.
"""

import logging
import os
import socket
import sys

from .state import wall

log = logging.getLogger(__name__)

# syslog priorities journald reads from a "<N>" line prefix (sd-daemon.h)
SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG = 3, 4, 6, 7

PLAIN_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(message)s"


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1\\nSTATUS=web active"``) to systemd.

    Returns True when it was sent, False when ``$NOTIFY_SOCKET`` is unset or the send
    failed. Never raises: a lost notification must not take the daemon down (the
    failure is logged at debug level; systemd's own timeouts then tell the admin).
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]          # an abstract socket name
    elif not address.startswith("/"):
        log.debug("notify: ignoring NOTIFY_SOCKET=%r (neither a path nor @abstract)", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except (OSError, ValueError) as exc:       # ValueError: unencodable text, NUL in a path
        log.debug("notify: could not send %r to %r: %s", message[:80], address, exc)
        return False
    return True


def watchdog_interval():
    """Seconds between ``WATCHDOG=1`` pings (half of ``WatchdogSec=``), or None.

    None when ``$WATCHDOG_USEC`` is unset or invalid, or when ``$WATCHDOG_PID`` is set
    and names another process (the variables were inherited, not meant for us).
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000 / 2


def syslog_priority(levelno):
    """The syslog priority for a logging level: error and above 3, warning 4, info 6, debug 7."""
    if levelno >= logging.ERROR:
        return SD_ERR
    if levelno >= logging.WARNING:
        return SD_WARNING
    if levelno >= logging.INFO:
        return SD_INFO
    return SD_DEBUG


class JournalFormatter(logging.Formatter):
    """``<6>[threadName] message`` lines for journald's stdout stream.

    journald turns every line of a stream into its own entry, so a multi-line message
    (a traceback) gets the prefix on each line: all of it keeps the record's priority
    and thread. No timestamp: journald adds its own.
    """

    def __init__(self):
        super().__init__("[%(threadName)s] %(message)s")

    def format(self, record):
        text = super().format(record)
        head = f"<{syslog_priority(record.levelno)}>"
        lines = text.splitlines() or [""]
        first, rest = lines[0], lines[1:]
        thread = f"[{record.threadName}] "
        return "\n".join([head + first] + [head + thread + line for line in rest])


class PlainFormatter(logging.Formatter):
    """``2026-12-02T15:04:05.123Z INFO [threadName] message``: UTC, as the state's events."""

    def __init__(self):
        super().__init__(PLAIN_FORMAT)

    def formatTime(self, record, datefmt=None):
        return wall(record.created)


def is_journal_stream(stream):
    """True when ``stream`` is the journald connection systemd gave us.

    ``$JOURNAL_STREAM`` is ``DEVICE:INODE`` of that connection; comparing it with the
    stream's file (as sd_journal_stream_fd(3) advises) keeps a child whose stdout was
    redirected, e.g. ``hado status > file`` run from a unit, from writing prefixes into
    a file.
    """
    value = os.environ.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        device, inode = (int(part) for part in value.split(":"))
        info = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def setup_logging(level: str, stream=None, journal=None):
    """Send all logging to ``stream`` (default stdout) at ``level`` ("info", "DEBUG", ...).

    ``journal``: force the journald format on (True) or off (False); by default it is on
    when :func:`is_journal_stream` says so. Calling it again (after a reload) replaces
    the handler it installed before. Returns that handler. ValueError names the levels
    when ``level`` is not one.
    """
    if stream is None:
        stream = sys.stdout
    name = str(level).upper()
    levelno = logging.getLevelName(name)
    if not isinstance(levelno, int):
        raise ValueError(f"unknown log level {level!r} (expected: debug, info, warning, error, critical)")
    if journal is None:
        journal = is_journal_stream(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if journal else PlainFormatter())
    handler.hado_handler = True
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "hado_handler", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)
    return handler
