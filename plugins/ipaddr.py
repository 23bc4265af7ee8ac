"""Virtual IP address: ip addr add/del, gratuitous ARP, optional kernel-enforced lease.

Arguments:

- ``address``: the address with its prefix length, ``"10.0.0.100/24"`` or
  ``"fd00::100/64"``.
- ``interface``: where it goes, ``"eth0"``. A missing interface is an error for
  start/alive/renew/announce; stop succeeds (no interface, no address).
- ``label``: optional IPv4 label, ``"eth0:vip"`` (starts with the interface name).
- ``garp_count`` (default 5) and ``garp_interval`` (default 0.5 s): after taking the
  address, announce it that many times, that far apart. A Linux neighbour ignores an
  ARP update that comes within 1 s (``locktime``) of the previous one, so after a brief
  dual holding only announcements spread over more than a second win; the defaults
  span 2 s. The first announcement is sent before start() returns, the others from a
  short-lived thread, which stops when the address goes.
- ``lease``: seconds (default 1; ``null`` turns it off). The kernel deletes the address
  by itself when its lifetime (``valid_lft``) runs out; the engine renews it every
  heartbeat from its own ``leases`` thread while the node is active with quorum, so a
  killed or frozen hado cannot leave the VIP behind. Lifetimes are whole seconds; the
  kernel removes an unrenewed address up to ~0.3 s after it expires. Peers wait
  ``max(dead_after, lease + 0.35 s + heartbeat)`` of silence before taking over.

IPv4 is announced with an ARP request and an ARP reply from the address (built here,
sent on an AF_PACKET socket); IPv6 with an unsolicited neighbour advertisement to
ff02::1 with the override flag (the address is added with ``nodad`` so it is usable at
once). Both need root or CAP_NET_RAW, as ``ip addr`` needs CAP_NET_ADMIN.

Actions besides start/stop/alive: ``renew`` (refresh the lease; fails if the address
is gone) and ``announce`` (send the announcements again; the engine calls it when the
node reconfirms itself active after a peer change).
"""

import ipaddress
import json
import math
import re
import socket
import struct
import threading

from hado.plugin import PluginError, run

GARP_COUNT = 5
# $1 interface, $2 the address as a host route, $3 the address with its prefix, $4 lease, $5 nodad or nothing
RENEW_SCRIPT = ('ip -o addr show dev "$1" to "$2" | grep -q . || exit 3; '
                'exec ip addr change "$3" dev "$1" valid_lft "$4" preferred_lft "$4" $5')
DEFAULT_LEASE = 1   # seconds (lease() tells the engine, which waits that long before a takeover)
GARP_INTERVAL = 0.5
ETH_P_ARP = 0x0806
ETH_BROADCAST = b"\xff" * 6
ND_NEIGHBOR_ADVERT = 136
ND_OVERRIDE = 0x20000000
ND_OPT_TARGET_LINKADDR = 2

# Announcement bursts still running: (address, interface) -> Event that cancels it.
# Guarded by _bursts_lock; stop() and a new announce() cancel the previous burst.
_bursts = {}
_bursts_lock = threading.Lock()


def start(address, interface, label=None, garp_count=GARP_COUNT, garp_interval=GARP_INTERVAL,
          lease=DEFAULT_LEASE):
    vip = _parse(address)
    _link(interface)  # a clear error for a missing interface
    argv = ["ip", "addr", "replace", str(vip), "dev", interface]  # add, or refresh if present
    if label:
        argv += ["label", label]
    run(argv + _lifetimes(lease) + _nodad(vip))
    announce(address, interface, garp_count, garp_interval)


def stop(address, interface):
    vip = _parse(address)
    _cancel_burst(vip, interface)
    link = _link(interface, missing_ok=True)
    if link is None or not _holds(link, vip):
        return
    proc = run(["ip", "addr", "del", str(vip), "dev", interface], check=False)
    if proc.returncode != 0 and _holds(_link(interface), vip):
        raise PluginError(f"ip addr del {vip} dev {interface}: {proc.stderr.strip()}")


def alive(address, interface):
    return _holds(_link(interface), _parse(address))


def lease(lease=DEFAULT_LEASE):
    """The lease contract (docs/plugins.rst): the address ends by itself this many seconds
    (plus the kernel's slack) after its last renewal; None: no lease."""
    return lease


def renew(address, interface, lease=DEFAULT_LEASE):
    """Refresh the address's lifetime to ``lease`` seconds; nothing to do without a lease.

    Never re-adds the address: when it is gone (its lease ran out, someone removed it),
    renew fails, so the engine notices instead of bringing it back unannounced.
    """
    if lease is None:
        return
    vip = _parse(address)
    _link(interface)  # a clear error for a missing interface
    # The check and the change run in ONE child process. Done from here as two commands,
    # a hado frozen (SIGSTOP, a stuck VM) between them would, on waking, run the change
    # after the lease expired and peers took over: and for IPv4 `ip addr change`
    # re-creates a missing address. A child process is not frozen with us.
    host = f"{vip.ip}/{vip.max_prefixlen}"
    proc = run(["sh", "-c", RENEW_SCRIPT, "renew", interface, host, str(vip),
                _lifetimes(lease)[1], *_nodad(vip)], check=False)
    if proc.returncode == 3:
        raise PluginError(f"cannot renew {vip}: it is no longer on {interface} "
                          f"(its lease ran out or someone removed it)")
    if proc.returncode != 0:
        raise PluginError(f"ip addr change {vip} dev {interface}: exit code {proc.returncode}: "
                          f"{(proc.stderr or proc.stdout).strip()[:200]}")


def announce(address, interface, garp_count=GARP_COUNT, garp_interval=GARP_INTERVAL):
    """Tell the neighbours that this node has the address: now, then from a thread."""
    vip = _parse(address)
    link = _link(interface)
    if not _holds(link, vip):
        raise PluginError(f"not announcing {vip}: it is not on {interface}")
    if garp_count < 1 or "NOARP" in link.get("flags", ()) or link.get("link_type") != "ether":
        return
    mac = bytes.fromhex(link["address"].replace(":", ""))
    send = _send_arp if vip.version == 4 else _send_neighbour_advert
    key = (str(vip.ip), interface)
    cancelled = threading.Event()
    with _bursts_lock:
        previous = _bursts.get(key)
        if previous:
            previous.set()
        _bursts[key] = cancelled
    try:
        send(interface, mac, vip.ip)
    except OSError as exc:
        _cancel_burst(vip, interface)
        raise PluginError(f"cannot announce {vip} on {interface}: {exc}") from None
    if garp_count > 1:
        remaining = (key, cancelled, send, mac, vip, interface, garp_count - 1, garp_interval)
        threading.Thread(target=_burst, args=remaining, name=f"announce:{vip.ip}", daemon=True).start()
    else:
        _forget_burst(key, cancelled)


def validate(address=None, interface=None, label=None, garp_count=GARP_COUNT,
             garp_interval=GARP_INTERVAL, lease=None):
    errors = []
    vip = None
    try:
        vip = _parse(address)
    except PluginError as exc:
        errors.append(str(exc))
    if not isinstance(interface, str) or not re.fullmatch(r"[^\s/:]{1,15}", interface):
        errors.append(f"interface {interface!r} is not an interface name (e.g. 'eth0')")
    if label is not None:
        if vip is not None and vip.version == 6:
            errors.append(f"label {label!r}: labels exist for IPv4 addresses only")
        elif not isinstance(label, str) or len(label) > 15 or not (
                label == interface or label.startswith(f"{interface}:")):
            errors.append(f"label {label!r} must be the interface name, optionally followed by "
                          f"':' and a suffix, at most 15 characters (e.g. '{interface}:vip')")
    if isinstance(garp_count, bool) or not isinstance(garp_count, int) or garp_count < 0:
        errors.append(f"garp_count {garp_count!r} must be a whole number >= 0")
    if isinstance(garp_interval, bool) or not isinstance(garp_interval, (int, float)) \
            or not 0 < garp_interval <= 60:
        errors.append(f"garp_interval {garp_interval!r} must be seconds, > 0 and <= 60")
    if lease is not None and (isinstance(lease, bool) or not isinstance(lease, (int, float))
                              or not 1 <= lease < 2 ** 31):
        errors.append(f"lease {lease!r} must be seconds >= 1, or null for no lease")
    return errors


# -- helpers ------------------------------------------------------------------------------

def _parse(address):
    """The ip_interface for "A/N"; PluginError for anything else."""
    if not isinstance(address, str) or "/" not in address:
        raise PluginError(f"address {address!r} must be an address with its prefix length, "
                          f"e.g. '10.0.0.100/24' or 'fd00::100/64'")
    try:
        vip = ipaddress.ip_interface(address)
    except ValueError as exc:
        raise PluginError(f"address {address!r} is not a valid CIDR address: {exc}") from None
    net = vip.network
    if vip.version == 4 and net.prefixlen < 31 and vip.ip in (net.network_address, net.broadcast_address):
        raise PluginError(f"address {address!r} is the network or broadcast address of {net}")
    if vip.ip.is_unspecified or vip.ip.is_multicast or vip.ip.is_loopback:
        raise PluginError(f"address {address!r} cannot be a virtual IP "
                          f"(it is unspecified, multicast or loopback)")
    return vip


def _link(interface, missing_ok=False):
    """The interface as ``ip -j addr show`` describes it (flags, address, addr_info)."""
    proc = run(["ip", "-j", "addr", "show", "dev", interface], check=False)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr or "Cannot find device" in proc.stderr:
            if missing_ok:
                return None
            raise PluginError(f"interface {interface!r} does not exist")
        raise PluginError(f"ip addr show dev {interface}: {proc.stderr.strip()}")
    links = json.loads(proc.stdout or "[]")
    if not links:
        if missing_ok:
            return None
        raise PluginError(f"interface {interface!r} does not exist")
    return links[0]


def _holds(link, vip):
    family = "inet" if vip.version == 4 else "inet6"
    return any(info.get("family") == family and info.get("prefixlen") == vip.network.prefixlen
               and ipaddress.ip_address(info.get("local")) == vip.ip
               for info in link.get("addr_info", ()))


def _lifetimes(lease):
    value = "forever" if lease is None else str(max(1, math.ceil(lease)))
    return ["valid_lft", value, "preferred_lft", value]


def _nodad(vip):
    return ["nodad"] if vip.version == 6 else []


def _burst(key, cancelled, send, mac, vip, interface, count, interval):
    """The remaining announcements, while the address stays and no one cancels."""
    try:
        for _ in range(count):
            if cancelled.wait(interval):
                return
            try:
                if not _holds(_link(interface), vip):
                    return
                send(interface, mac, vip.ip)
            except (PluginError, OSError):
                return
    finally:
        _forget_burst(key, cancelled)


def _cancel_burst(vip, interface):
    with _bursts_lock:
        cancelled = _bursts.pop((str(vip.ip), interface), None)
    if cancelled:
        cancelled.set()


def _forget_burst(key, cancelled):
    with _bursts_lock:
        if _bursts.get(key) is cancelled:
            del _bursts[key]


def _send_arp(interface, mac, ip):
    """One gratuitous ARP request and one reply, both "ip is at mac", to broadcast."""
    header = ETH_BROADCAST + mac + struct.pack("!H", ETH_P_ARP)

    def arp(operation, target_mac):
        body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, operation) \
            + mac + ip.packed + target_mac + ip.packed   # sender = target = the address
        return (header + body).ljust(60, b"\0")  # the Ethernet minimum frame

    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((interface, 0))
        sock.send(arp(1, b"\0" * 6))   # request (RFC 5227 announcement)
        sock.send(arp(2, mac))         # reply


def _send_neighbour_advert(interface, mac, ip):
    """One unsolicited neighbour advertisement (override flag) to all nodes, ff02::1."""
    index = socket.if_nametoindex(interface)
    message = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, ND_OVERRIDE) + ip.packed \
        + struct.pack("!BB", ND_OPT_TARGET_LINKADDR, 1) + mac   # the kernel fills the checksum
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.bind((str(ip), 0, 0, index if ip.is_link_local else 0))
        sock.sendto(message, ("ff02::1", 0, 0, index))
