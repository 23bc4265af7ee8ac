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

``other`` (the engine calls it right before ``start``): duplicate address detection.
For IPv4, three ARP probes as RFC 5227 describes them (sender address 0.0.0.0, target
the address), 25 ms apart, on an AF_PACKET socket on the interface; for IPv6, three
neighbour solicitations for the address from ``::`` (the DAD of RFC 4862). Any answer
within 70 ms from a MAC address that is not one of this machine's interfaces is
another holder: ``"10.0.0.100 is answered by 52:54:00:12:34:56 on eth0"``. Nobody
answering costs those 70 ms. An interface without ARP (``NOARP``, not Ethernet) has
nothing to probe: other() then reports nobody. A false positive (a proxy-ARP router
answering for the address) is turned off per resource with ``"other": false``.
"""

import errno
import fcntl
import ipaddress
import json
import math
import re
import select
import socket
import struct
import threading
import time

from hado.plugin import PluginError, run

GARP_COUNT = 5
# $1 interface, $2 the address as a host route, $3 the address with its prefix, $4 lease, $5 nodad or nothing
RENEW_SCRIPT = ('ip -o addr show dev "$1" to "$2" | grep -q . || exit 3; '
                'exec ip addr change "$3" dev "$1" valid_lft "$4" preferred_lft "$4" $5')
DEFAULT_LEASE = 1   # seconds (lease() tells the engine, which waits that long before a takeover)
GARP_INTERVAL = 0.5
ETH_P_ARP = 0x0806
ETH_BROADCAST = b"\xff" * 6
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OVERRIDE = 0x20000000
ND_OPT_TARGET_LINKADDR = 2
ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
PROBE_COUNT = 3          # other(): probes sent ...
PROBE_SPACING = 0.025    # ... this many seconds apart ...
PROBE_WAIT = 0.07        # ... and answers awaited this long after the first one
SIOCGIFFLAGS, SIOCGIFHWADDR = 0x8913, 0x8927
IFF_NOARP = 0x80
ARPHRD_ETHER = 1

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


def other(address, interface):
    """Who else holds the address on the interface's link: None, or who answers for it.

    Duplicate address detection (module docstring): probes that do not claim the
    address, so asking changes nothing in the neighbours' caches. Answers from this
    machine's own MAC addresses do not count (the address on another interface here)."""
    vip = _parse(address)
    kind, mac, flags = _hardware(interface)
    if kind != ARPHRD_ETHER or flags & IFF_NOARP:
        return None
    if vip.version == 4:
        probe, ethertype, holder = _arp_probe(mac, vip.ip), ETH_P_ARP, _arp_holder
    else:
        probe, ethertype, holder = _ns_probe(mac, vip.ip), ETH_P_IPV6, _na_holder
    ours = _local_macs()
    try:
        # Protocol 0, then bind with the ethertype: a socket opened with a protocol listens on
        # every interface at once, and its bind() then waits for an RCU grace period
        # (synchronize_net, 10-30 ms) to stop that; this way it costs nothing.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as exc:
        raise PluginError(f"cannot probe for {vip.ip} on {interface}: {exc.strerror or exc}") from None
    try:
        sock.bind((interface, ethertype))   # before the first probe: no answer is missed
        began = time.monotonic()
        sent, deadline = 0, began + PROBE_WAIT
        while True:
            now = time.monotonic()
            if sent < PROBE_COUNT and now >= began + sent * PROBE_SPACING:
                sock.send(probe)
                sent += 1
                continue
            if now >= deadline:
                return None
            until = deadline if sent >= PROBE_COUNT else min(deadline, began + sent * PROBE_SPACING)
            if not select.select([sock], [], [], max(0.0, until - now))[0]:
                continue
            frame, where = sock.recvfrom(2048)
            if where[2] == socket.PACKET_OUTGOING:
                continue   # our own probe
            found = holder(frame, vip.ip)
            if found and found not in ours:
                return f"{vip.ip} is answered by {found.hex(':')} on {interface}"
    except OSError as exc:
        raise PluginError(f"cannot probe for {vip.ip} on {interface}: {exc.strerror or exc}") from None
    finally:
        # Closing a bound packet socket waits for a grace period too: not in the failover.
        threading.Thread(target=sock.close, name=f"close:{interface}", daemon=True).start()


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

    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:   # send only: no protocol (see other())
        sock.bind((interface, 0))
        sock.send(arp(1, b"\0" * 6))   # request (RFC 5227 announcement)
        sock.send(arp(2, mac))         # reply


def _hardware(interface):
    """(ARPHRD type, MAC bytes, IFF flags) of an interface, from two ioctls (no ip command:
    other() runs in every failover and must stay quick)."""
    name = struct.pack("256s", interface.encode()[:15])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            hw = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, name)
            flags, = struct.unpack_from("H", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, name), 16)
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise PluginError(f"interface {interface!r} does not exist") from None
        raise PluginError(f"cannot read interface {interface!r}: {exc.strerror}") from None
    kind, = struct.unpack_from("H", hw, 16)
    return kind, hw[18:24], flags


def _local_macs():
    """The MAC addresses of this machine's (this network namespace's) Ethernet interfaces."""
    found = set()
    for _, name in socket.if_nameindex():
        try:
            kind, mac, _ = _hardware(name)
        except PluginError:
            continue   # gone meanwhile
        if kind == ARPHRD_ETHER and mac != b"\0" * 6:
            found.add(mac)
    return found


def _arp_probe(mac, ip):
    """An RFC 5227 ARP probe: who has ``ip``? asked from sender address 0.0.0.0."""
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + b"\0" * 4 + b"\0" * 6 + ip.packed
    return (ETH_BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + body).ljust(60, b"\0")


def _arp_holder(frame, ip):
    """The sender MAC of an ARP frame whose sender address is ``ip`` (a reply to the probe,
    or the holder's own request or announcement), else None."""
    if len(frame) < 42 or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return None
    _, ptype, hlen, plen, _ = struct.unpack_from("!HHBBH", frame, 14)
    if ptype != 0x0800 or hlen != 6 or plen != 4 or frame[28:32] != ip.packed:
        return None
    return bytes(frame[22:28])


def _ns_probe(mac, ip):
    """A DAD neighbour solicitation for ``ip``: from ::, to its solicited-node group."""
    group = ipaddress.ip_address("ff02::1:ff00:0").packed[:13] + ip.packed[13:]
    message = struct.pack("!BBHI", ND_NEIGHBOR_SOLICIT, 0, 0, 0) + ip.packed
    source = b"\0" * 16
    pseudo = source + group + struct.pack("!I", len(message)) + b"\0\0\0" + bytes([IPPROTO_ICMPV6])
    message = message[:2] + struct.pack("!H", _checksum(pseudo + message)) + message[4:]
    header = struct.pack("!IHBB", 6 << 28, len(message), IPPROTO_ICMPV6, 255) + source + group
    return b"\x33\x33" + group[12:] + mac + struct.pack("!H", ETH_P_IPV6) + header + message


def _na_holder(frame, ip):
    """The MAC of a neighbour advertisement for ``ip`` (its target link-layer address
    option, else the frame's source), else None."""
    if len(frame) < 14 + 40 + 24 or frame[12:14] != struct.pack("!H", ETH_P_IPV6):
        return None
    if frame[14 + 6] != IPPROTO_ICMPV6 or frame[54] != ND_NEIGHBOR_ADVERT or frame[62:78] != ip.packed:
        return None
    options = frame[78:14 + 40 + struct.unpack_from("!H", frame, 18)[0]]
    while len(options) >= 8 and options[1]:
        if options[0] == ND_OPT_TARGET_LINKADDR:
            return bytes(options[2:8])
        options = options[8 * options[1]:]
    return bytes(frame[6:12])


def _checksum(data):
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


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
