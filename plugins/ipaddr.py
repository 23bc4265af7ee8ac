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
- ``lease``: seconds (default 1; ``null`` turns it off), enforced by the kernel: the
  engine renews it every heartbeat from its own ``leases`` thread while the node is
  active with quorum, so a killed or frozen hado (kill -9, SIGSTOP, OOM) cannot keep
  the VIP answering. Peers wait ``max(dead_after, lease + slack + heartbeat)`` of
  silence before taking over (``lease_slack()``).

  *1 s or more*: the address's lifetime (``valid_lft``, whole seconds, rounded up); the
  kernel deletes an unrenewed address up to ~0.3 s after it expires (slack 0.35 s).

  *Below 1 s* (at least 0.05, e.g. 0.2): the **nftables gate**, which needs ``nft``
  (package nftables). Two tables of this node, ``inet hado_gate`` and ``arp hado_gate``,
  hold the address in a set ``gated4``/``gated6`` (``gated`` for ARP) and, while its lease
  runs, in a set with element timeouts ``lease4``/``lease6`` (``lease``), in milliseconds.
  Their rules drop every packet to or from a gated address without a lease element
  (input and output, hook priority -300), the ARP requests for it and the ARP
  answers from it, and the neighbour advertisements from an IPv6 one; the kernel
  removes the element by itself when its timeout runs out, so the address stops
  answering ``lease`` (to the 4 ms jiffy) after its last renewal (slack 0.05 s).
  A renewal refreshes the element in one nfnetlink transaction made from this process
  (no child process; 30-300 microseconds), which fails, changing nothing, once the
  element is gone: an expired lease is never re-opened. The address itself keeps a 1 s
  lifetime, renewed at most every 0.25 s, as a second guard. ``alive`` is false once the
  gate lease ran out, and no ARP or neighbour advertisement is sent then (they leave on
  a packet socket, which nftables does not see). nft 1.0.6 cannot match the target of
  a neighbour advertisement (no ``icmpv6 taddr``), so IPv6 advertisements are dropped
  by their source address: the kernel sends those for one of its addresses from that
  address. ``nft flush ruleset`` (a firewall reload) removes the gate: renew then
  fails, the address expires within about 1.5 s, alive turns false, and the next start
  builds the gate again.

IPv4 is announced with an ARP request and an ARP reply from the address (built here,
sent on an AF_PACKET socket); IPv6 with an unsolicited neighbour advertisement to
ff02::1 with the override flag (the address is added with ``nodad`` so it is usable at
once). Both need root or CAP_NET_RAW, as ``ip addr`` needs CAP_NET_ADMIN.

Actions besides start/stop/alive: ``renew`` (refresh the lease; fails if the address
or its gate lease is gone) and ``announce`` (send the announcements again; the engine
calls it when the node reconfirms itself active after a peer change).

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
import os
import re
import select
import shutil
import socket
import struct
import threading
import time

from hado.plugin import PluginError, check_cut_off, run

GARP_COUNT = 5
# $1 interface, $2 the address as a host route, $3 the address with its prefix, $4 lease, $5 nodad or nothing
RENEW_SCRIPT = ('ip -o addr show dev "$1" to "$2" | grep -q . || exit 3; '
                'exec ip addr change "$3" dev "$1" valid_lft "$4" preferred_lft "$4" $5')
DEFAULT_LEASE = 1   # seconds (lease() tells the engine, which waits that long before a takeover)
# Seconds an address may outlive its lease (lease_slack()). Whole-second lifetimes: the
# kernel checks them from a delayed work that runs up to ~0.3 s late. The gate: an element
# is dead for every packet once the jiffies counter reaches its expiry, which the kernel
# sets to the jiffies at the start of the renewal's transaction (microseconds after
# renew() is called; the counter lags real time by up to one jiffy) plus the timeout
# rounded up to jiffies: so it closes at most one jiffy early, or, for a timeout that is
# not a whole number of jiffies, at most one jiffy late (4 ms at HZ=250, 10 ms at
# HZ=100). tests/test_gate.py measures the close 2-3 ms BEFORE lease ends, for a client
# probing every 2 ms. The rest of the 50 ms is margin for the time from the engine's
# quorum check to the netlink send (the GIL, a loaded machine: a renewal made late
# extends the lease from when it lands), which no kernel can see.
LEASE_SLACK = 0.35
GATE_SLACK = 0.05
GATE_BELOW = 1        # a lease shorter than this many seconds uses the nftables gate
GATE_SHORTEST = 0.05  # seconds; shorter leases are refused (a heartbeat must fit several times)
ADDRESS_RENEW_EVERY = 0.25   # gate mode: seconds between two renewals of the address's 1 s lifetime
GATE_TABLE = "hado_gate"
# Hook priority of the gate's chains: -300 (the "raw" priority) runs after defragmentation
# (-400) and before connection tracking (-200) and every filter chain (0), so a packet the
# gate drops creates no conntrack entry and no other table sees, logs or queues it. A drop
# is final in nftables whatever the priority, and an accept elsewhere cannot undo it.
GATE_PRIORITY = -300
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

# Gate mode: time.monotonic() of the last renewal of each address's 1 s lifetime,
# (address, interface) -> seconds. Only saves work: a missing entry renews at once.
_address_renewed = {}
_address_lock = threading.Lock()


def start(address, interface, label=None, garp_count=GARP_COUNT, garp_interval=GARP_INTERVAL,
          lease=DEFAULT_LEASE):
    vip = _parse(address)
    _link(interface)  # a clear error for a missing interface
    gated = _gated(lease)
    if gated:
        _gate_start(vip, lease)   # the gate first: the address never answers without a lease
    else:
        _gate_remove(vip, "gated")   # left by a sub-second lease before: it would drop everything
    argv = ["ip", "addr", "replace", str(vip), "dev", interface]  # add, or refresh if present
    if label:
        argv += ["label", label]
    run(argv + _lifetimes(lease) + _nodad(vip))
    _address_done(vip, interface)
    if gated:
        # The lease counts from here, not from before the ip command (a slow start must
        # not eat it), and only under the quorum the start began in (docs/plugins.rst).
        check_cut_off(f"gate lease of {vip.ip}")
        _gate_grant(vip, lease)
    announce(address, interface, garp_count, garp_interval, lease)


def stop(address, interface):
    vip = _parse(address)
    _cancel_burst(vip, interface)
    _address_forget(vip, interface)
    try:
        _gate_remove(vip, "lease")   # its traffic stops here, before the address goes
    except PluginError:
        pass   # the address goes below all the same, and the element times out by itself
    link = _link(interface, missing_ok=True)
    if link is not None and _holds(link, vip):
        proc = run(["ip", "addr", "del", str(vip), "dev", interface], check=False)
        if proc.returncode != 0 and _holds(_link(interface), vip):
            # Still gated, and without its lease: its traffic stays dropped.
            raise PluginError(f"ip addr del {vip} dev {interface}: {proc.stderr.strip()}")
    try:
        _gate_remove(vip, "gated")
    except PluginError:
        pass   # the address is gone; a start with a lease of 1 s or more removes it


def alive(address, interface, lease=DEFAULT_LEASE):
    vip = _parse(address)
    if _gated(lease) and not _gate_leased(vip):
        _link(interface)   # a clear error for a missing interface
        return False       # its gate lease ran out: clients cannot reach it
    return _holds(_link(interface), vip)


def lease(lease=DEFAULT_LEASE):
    """The lease contract (docs/plugins.rst): the address ends by itself this many seconds
    (plus lease_slack()) after its last renewal; None: no lease. A lease of 1 s or more is
    the address's lifetime, whole seconds (1.5 lives 2 s); a shorter one the gate's, in ms."""
    if lease is None:
        return None
    if _gated(lease):
        return _gate_ms(lease) / 1000
    return max(1, math.ceil(lease))


def lease_slack(lease=DEFAULT_LEASE):
    """Seconds the address may still answer after its lease ran out (see LEASE_SLACK and
    GATE_SLACK); None without a lease."""
    if lease is None:
        return None
    return GATE_SLACK if _gated(lease) else LEASE_SLACK


def renew(address, interface, lease=DEFAULT_LEASE):
    """Refresh the lease: the gate's lease element (below 1 s), the address's lifetime.

    Never re-adds the address nor an expired gate lease: when either is gone (its lease
    ran out, someone removed it), renew fails, so the engine notices instead of bringing
    it back unannounced.
    """
    if lease is None:
        return
    vip = _parse(address)
    if _gated(lease):
        try:
            socket.if_nametoindex(interface)   # a clear error for a missing interface, in process
        except OSError:
            raise PluginError(f"interface {interface!r} does not exist") from None
        check_cut_off(f"renewal of the gate lease of {vip.ip}")   # the engine's quorum held until now
        try:
            _gate_renew(vip, lease)   # first, and in process: microseconds after the engine's check
        except PluginError as exc:
            # The gate lease ran out or the gate is gone (a flushed ruleset): the address
            # is unreachable, or guarded only by its 1 s lifetime. Drop it now.
            proc = run(["ip", "addr", "del", str(vip), "dev", interface], check=False)
            raise PluginError(f"{exc}; {'the address was removed' if proc.returncode == 0 else 'removing the address failed: ' + proc.stderr.strip()[:100]}") from None
        with _address_lock:
            last = _address_renewed.get((str(vip.ip), interface))
        if last is not None and time.monotonic() - last < ADDRESS_RENEW_EVERY:
            return   # the address's 1 s lifetime is the second guard: 4 renewals a second do
    else:
        _link(interface)  # a clear error for a missing interface
    # The check and the change run in ONE child process. Done from here as two commands,
    # a hado frozen (SIGSTOP, a stuck VM) between them would, on waking, run the change
    # after the lease expired and peers took over: and for IPv4 `ip addr change`
    # re-creates a missing address. A child process is not frozen with us.
    host = f"{vip.ip}/{vip.max_prefixlen}"
    _address_forget(vip, interface)
    proc = run(["sh", "-c", RENEW_SCRIPT, "renew", interface, host, str(vip),
                _lifetimes(lease)[1], *_nodad(vip)], check=False)
    if proc.returncode == 3:
        raise PluginError(f"cannot renew {vip}: it is no longer on {interface} "
                          f"(its lease ran out or someone removed it)")
    if proc.returncode != 0:
        raise PluginError(f"ip addr change {vip} dev {interface}: exit code {proc.returncode}: "
                          f"{(proc.stderr or proc.stdout).strip()[:200]}")
    _address_done(vip, interface)


def announce(address, interface, garp_count=GARP_COUNT, garp_interval=GARP_INTERVAL, lease=DEFAULT_LEASE):
    """Tell the neighbours that this node has the address: now, then from a thread.

    With the gate, only while its lease element is there: ARP and neighbour
    advertisements leave on a packet socket, past nftables, so the gate cannot drop them.
    """
    vip = _parse(address)
    link = _link(interface)
    if not _holds(link, vip):
        raise PluginError(f"not announcing {vip}: it is not on {interface}")
    gated = _gated(lease)
    if gated and not _gate_leased(vip):
        raise PluginError(f"not announcing {vip}: its gate lease ran out")
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
        remaining = (key, cancelled, send, mac, vip, interface, garp_count - 1, garp_interval, gated)
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
    if lease is not None:
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 < lease < 2 ** 31:
            errors.append(f"lease {lease!r} must be seconds > 0 (e.g. 1, or 0.2 with nftables), "
                          f"or null for no lease")
        elif _gated(lease) and lease < GATE_SHORTEST:
            errors.append(f"lease {lease:g} s is too short: a lease below 1 s must be at least "
                          f"{GATE_SHORTEST:g} s")
        elif _gated(lease) and not shutil.which("nft"):
            errors.append(_no_nft(lease))
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


def _burst(key, cancelled, send, mac, vip, interface, count, interval, gated):
    """The remaining announcements, while the address stays (with its gate lease, when
    gated) and no one cancels."""
    try:
        for _ in range(count):
            if cancelled.wait(interval):
                return
            try:
                if not _holds(_link(interface), vip):
                    return
                # Checked right before the send, in process: microseconds apart, the
                # lease cannot run out in between unless hado freezes exactly there.
                if gated and not _gate_leased(vip):
                    return
                send(interface, mac, vip.ip)
            except (PluginError, OSError):
                return
    finally:
        _forget_burst(key, cancelled)


def _address_done(vip, interface):
    with _address_lock:
        _address_renewed[(str(vip.ip), interface)] = time.monotonic()


def _address_forget(vip, interface):
    with _address_lock:
        _address_renewed.pop((str(vip.ip), interface), None)


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


# -- the nftables gate (leases below 1 s) ---------------------------------------------------

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_GETSET, NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM, NFT_MSG_DELSETELEM = 10, 12, 13, 14
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE = 0x1, 0x4, 0x400
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_TABLE, NFTA_SET_NAME = 1, 2
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_TIMEOUT = 1, 4
NFTA_DATA_VALUE = 1
NFPROTO_INET, NFPROTO_ARP = 1, 3
_FAMILY_NAMES = {NFPROTO_INET: "inet", NFPROTO_ARP: "arp"}
# errnos that mean "no gate on this machine": no table or set, no nf_tables in the kernel.
# (Asking loads nf_tables if it is a module not loaded yet, as `nft list ruleset` does.)
_NO_GATE = (errno.ENOENT, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT)

GATE_RULES = f"""\
add table inet {GATE_TABLE}
add set inet {GATE_TABLE} gated4 {{ type ipv4_addr; }}
add set inet {GATE_TABLE} lease4 {{ type ipv4_addr; flags timeout; }}
add set inet {GATE_TABLE} gated6 {{ type ipv6_addr; }}
add set inet {GATE_TABLE} lease6 {{ type ipv6_addr; flags timeout; }}
add chain inet {GATE_TABLE} in {{ type filter hook input priority {GATE_PRIORITY}; policy accept; }}
add chain inet {GATE_TABLE} out {{ type filter hook output priority {GATE_PRIORITY}; policy accept; }}
flush chain inet {GATE_TABLE} in
flush chain inet {GATE_TABLE} out
add rule inet {GATE_TABLE} in ip daddr @gated4 ip daddr != @lease4 drop
add rule inet {GATE_TABLE} in ip6 daddr @gated6 ip6 daddr != @lease6 drop
add rule inet {GATE_TABLE} out ip saddr @gated4 ip saddr != @lease4 drop
add rule inet {GATE_TABLE} out ip6 saddr @gated6 ip6 saddr != @lease6 drop
add table arp {GATE_TABLE}
add set arp {GATE_TABLE} gated {{ type ipv4_addr; }}
add set arp {GATE_TABLE} lease {{ type ipv4_addr; flags timeout; }}
add chain arp {GATE_TABLE} in {{ type filter hook input priority {GATE_PRIORITY}; policy accept; }}
add chain arp {GATE_TABLE} out {{ type filter hook output priority {GATE_PRIORITY}; policy accept; }}
flush chain arp {GATE_TABLE} in
flush chain arp {GATE_TABLE} out
add rule arp {GATE_TABLE} in arp daddr ip @gated arp daddr ip != @lease drop
add rule arp {GATE_TABLE} out arp saddr ip @gated arp saddr ip != @lease drop
"""
# The out rule `ip6 saddr @gated6 ...` is also what drops IPv6 neighbour advertisements:
# nft 1.0.6 has no match for their target address (`icmpv6 taddr` is a syntax error, and
# a raw `@th,64,128` cannot be looked up in an ipv6_addr set: datatype mismatch), but
# the kernel sends an advertisement for one of its own addresses from that address
# (ndisc_send_na), and announce() binds to it. Solicitations for the address arrive at
# its solicited-node group, not at the address, so the in rule lets them in; the answer
# is what the out rule drops. ARP: `in` drops requests for the address (the kernel never
# sees them), `out` drops every ARP sent from it (answers, and requests it would make).
# Our own probes (other()) are not affected: they go out on a packet socket, and their
# answers target 0.0.0.0 and are read from a packet socket before any ARP hook.


def _gated(lease):
    """Whether a lease uses the gate (below 1 s)."""
    return lease is not None and lease < GATE_BELOW


def _gate_ms(lease):
    """The gate lease in whole milliseconds, rounded down (a shorter lease is the safe side)."""
    return max(1, round(lease * 1_000_000) // 1000)


def _gate_sets(vip, kind):
    """[(nfproto family, table, set)] holding ``vip`` for ``kind`` "lease" or "gated"."""
    if vip.version == 4:
        return [(NFPROTO_INET, GATE_TABLE, f"{kind}4"), (NFPROTO_ARP, GATE_TABLE, kind)]
    return [(NFPROTO_INET, GATE_TABLE, f"{kind}6")]


def _no_nft(lease):
    return (f"lease {lease:g} s is below 1 s and needs the nftables gate: nft is not installed "
            f"(apt-get install nftables), or use a lease of 1 s or more")


def _gate_start(vip, lease):
    """Make sure the gate's tables exist (idempotent; existing elements stay), give ``vip``
    a fresh lease element and gate it: one nft transaction, all or nothing."""
    if not shutil.which("nft"):
        raise PluginError(_no_nft(lease))
    ip, ms = vip.ip, _gate_ms(lease)
    lines = [GATE_RULES]
    for family, table, name in _gate_sets(vip, "lease"):
        where = f"{_FAMILY_NAMES[family]} {table} {name}"
        # add, delete, add: a fresh timeout whether the element is there or not (a plain
        # add leaves an existing element's timeout as it is).
        lines += [f"add element {where} {{ {ip} }}", f"delete element {where} {{ {ip} }}",
                  f"add element {where} {{ {ip} timeout {ms}ms }}"]
    for family, table, name in _gate_sets(vip, "gated"):
        lines.append(f"add element {_FAMILY_NAMES[family]} {table} {name} {{ {ip} }}")
    proc = run(["nft", "-f", "-"], input="\n".join(lines) + "\n", check=False)
    if proc.returncode != 0:
        why = " ".join((proc.stderr or proc.stdout).split())[:300]
        raise PluginError(f"lease {lease:g} s is below 1 s and needs the nftables gate, which nft "
                          f"could not set up: {why}; fix nftables (is nf_tables in the kernel?), "
                          f"or use a lease of 1 s or more")


def _gate_renew(vip, lease):
    """Refresh the lease element(s) of ``vip`` to ``lease``, only if they are all still there.

    One nfnetlink transaction: for each lease set (inet lease4 and arp lease, or inet
    lease6), delete the element, then add it with the timeout. Deleting a missing element
    fails (ENOENT) and aborts the whole transaction: a renewal never re-opens a lease that
    ran out (see _nfnl_batch for the messages)."""
    ms = _gate_ms(lease)
    messages = []
    for family, table, name in _gate_sets(vip, "lease"):
        messages.append((NFT_MSG_DELSETELEM, family, _element_attrs(table, name, vip.ip.packed)))
        messages.append((NFT_MSG_NEWSETELEM, family, _element_attrs(table, name, vip.ip.packed, ms)))
    try:
        failed = _nfnl_batch(messages)
    except OSError as exc:
        raise PluginError(f"cannot renew {vip.ip}: nftables: {exc.strerror or exc}") from None
    if failed is None:
        return
    index, code = failed
    family, table, name = _gate_sets(vip, "lease")[index // 2]
    where = f"{_FAMILY_NAMES[family]} {table} {name}"
    if code == errno.ENOENT and _set_exists(family, table, name):
        raise PluginError(f"cannot renew {vip.ip}: its gate lease ran out ({vip.ip} is no longer in "
                          f"the nftables set {where}; a renewal never re-opens it)")
    if code == errno.ENOENT:
        raise PluginError(f"cannot renew {vip.ip}: its gate is gone (no nftables set {where}: was the "
                          f"ruleset flushed?); a start builds it again")
    raise PluginError(f"cannot renew {vip.ip}: nftables set {where}: {_strerror(code)}")


def _gate_grant(vip, lease):
    """A fresh lease element for ``vip``, there or not (start only: it may create one):
    add, delete, add with the timeout, in one transaction."""
    ms, messages = _gate_ms(lease), []
    for family, table, name in _gate_sets(vip, "lease"):
        attrs = _element_attrs(table, name, vip.ip.packed)
        messages += [(NFT_MSG_NEWSETELEM, family, attrs), (NFT_MSG_DELSETELEM, family, attrs),
                     (NFT_MSG_NEWSETELEM, family, _element_attrs(table, name, vip.ip.packed, ms))]
    try:
        failed = _nfnl_batch(messages)
    except OSError as exc:
        failed = (0, exc.errno)
    if failed is not None:
        raise PluginError(f"cannot give {vip.ip} its gate lease: nftables: {_strerror(failed[1])}")


def _gate_leased(vip):
    """Whether every lease element of ``vip`` is there (not timed out): GETSETELEM each."""
    requests = [(NFT_MSG_GETSETELEM, family, _element_attrs(table, name, vip.ip.packed))
                for family, table, name in _gate_sets(vip, "lease")]
    try:
        codes = _nfnl_requests(requests)
    except OSError as exc:
        if exc.errno in _NO_GATE:
            return False
        raise PluginError(f"cannot read the gate lease of {vip.ip}: {exc.strerror or exc}") from None
    for code, (family, table, name) in zip(codes, _gate_sets(vip, "lease")):
        if code and code not in _NO_GATE:
            raise PluginError(f"cannot read {vip.ip} in nftables set {_FAMILY_NAMES[family]} {table} "
                              f"{name}: {_strerror(code)}")
    return not any(codes)


def _gate_remove(vip, kind):
    """Take ``vip`` out of its ``kind`` sets ("lease": the gate closes; "gated": no gate),
    inet first. Absent is fine (add, then delete, in one transaction), and so is a
    machine without the gate's tables."""
    for family, table, name in _gate_sets(vip, kind):
        attrs = _element_attrs(table, name, vip.ip.packed)
        try:
            failed = _nfnl_batch([(NFT_MSG_NEWSETELEM, family, attrs), (NFT_MSG_DELSETELEM, family, attrs)])
        except OSError as exc:
            if exc.errno in _NO_GATE:
                return
            raise PluginError(f"cannot remove {vip.ip} from the gate: {exc.strerror or exc}") from None
        if failed is not None and failed[1] not in _NO_GATE:
            raise PluginError(f"cannot remove {vip.ip} from nftables set {_FAMILY_NAMES[family]} "
                              f"{table} {name}: {_strerror(failed[1])}")


def _set_exists(family, table, name):
    try:
        code, = _nfnl_requests([(NFT_MSG_GETSET, family, _attr(NFTA_SET_TABLE, table.encode() + b"\0")
                                 + _attr(NFTA_SET_NAME, name.encode() + b"\0"))])
    except OSError:
        return True   # cannot tell: say the lease ran out, which it did for the kernel
    return code != errno.ENOENT


def _strerror(code):
    if not isinstance(code, int):
        return "no answer"
    return f"{errno.errorcode.get(code, code)} ({os.strerror(code)})"


def _attr(kind, payload):
    """One netlink attribute: length u16, type u16 (host order), payload padded to 4 bytes."""
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _element_attrs(table, name, key, timeout_ms=None):
    """The attributes of a set element message: table, set, one element (key, timeout)."""
    element = _attr(NFTA_SET_ELEM_KEY | NLA_F_NESTED, _attr(NFTA_DATA_VALUE, key))
    if timeout_ms is not None:
        element += _attr(NFTA_SET_ELEM_TIMEOUT, struct.pack("!Q", timeout_ms))
    return (_attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
            + _attr(NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0")
            + _attr(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, _attr(NFTA_LIST_ELEM | NLA_F_NESTED, element)))


class _Netfilter:
    """One NETLINK_NETFILTER socket for the whole process, opened at first use and kept.

    Kept, not opened per call: closing an nfnetlink socket after a transaction that
    deleted set elements waits for the kernel's release work (an RCU grace period,
    ~14 ms here: netlink_release -> nft_rcv_nl_event -> flush_work), while the
    transaction itself takes 30-300 microseconds. A lock makes one exchange at a time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sock = None
        self.seq = 0

    def exchange(self, messages):
        """Send ``messages`` [(type, flags, nfproto family, res_id, attrs)] in one datagram;
        {seq: errno (0 = ack)} of the NLMSG_ERROR answers, and the seqs sent in order."""
        with self.lock:
            for attempt in (1, 2):
                try:
                    if self.sock is None:
                        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
                        sock.bind((0, 0))
                        sock.setblocking(False)
                        self.sock = sock
                    return self._exchange(messages)
                except OSError as exc:
                    self._close()
                    if attempt == 2 or exc.errno in _NO_GATE or exc.errno == errno.EPERM:
                        raise

    def _exchange(self, messages):
        self._drain()   # nothing left from an earlier exchange can be taken for an answer
        data, seqs = [], []
        for kind, flags, family, res_id, attrs in messages:
            self.seq = self.seq % 0x7FFFFFFF + 1
            body = struct.pack("!BBH", family, 0, res_id) + attrs   # nfgenmsg, NFNETLINK_V0
            data.append(struct.pack("=IHHII", 16 + len(body), kind, flags, self.seq, 0) + body)
            seqs.append(self.seq)
        self.sock.send(b"".join(data))
        # The kernel handles a netlink message inside send(): every answer is queued now.
        answers = {}
        for kind, offset, buf in self._read():
            if kind == NLMSG_ERROR:
                code, = struct.unpack_from("=i", buf, offset + 16)
                seq, = struct.unpack_from("=I", buf, offset + 16 + 4 + 8)   # the request's header
                answers[seq] = -code
        return answers, seqs

    def _read(self):
        while True:
            try:
                buf = self.sock.recv(65536)
            except BlockingIOError:
                return
            offset = 0
            while offset + 16 <= len(buf):
                length, kind = struct.unpack_from("=IH", buf, offset)
                if length < 16:
                    break
                yield kind, offset, buf
                offset += (length + 3) & ~3

    def _drain(self):
        for _ in self._read():
            pass

    def _close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None


_netfilter = _Netfilter()


def _nfnl_batch(messages):
    """Run ``messages`` [(NFT_MSG_*, nfproto family, attrs)] as ONE nftables transaction,
    in process; None when it committed, else (index of the first failed message, errno)
    and nothing changed.

    Layout, one datagram on a NETLINK_NETFILTER socket; every message is a struct
    nlmsghdr (length u32, type u16, flags u16, seq u32, port id u32; host order), a
    struct nfgenmsg (family u8, version u8 = 0, res_id be16) and netlink attributes::

        NFNL_MSG_BATCH_BEGIN (0x10)     REQUEST, family 0, res_id NFNL_SUBSYS_NFTABLES (10)
        NFT_MSG_DELSETELEM (10<<8 | 14) REQUEST|ACK, family inet (1) or arp (3)
            NFTA_SET_ELEM_LIST_TABLE "hado_gate"  NFTA_SET_ELEM_LIST_SET "lease4"
            NFTA_SET_ELEM_LIST_ELEMENTS { NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE addr } } }
        NFT_MSG_NEWSETELEM (10<<8 | 12) REQUEST|CREATE|ACK, the same, with
            NFTA_SET_ELEM_TIMEOUT (u64 big-endian, milliseconds) in NFTA_LIST_ELEM
        ... (the same pair for arp hado_gate lease) ...
        NFNL_MSG_BATCH_END (0x11)       REQUEST, family 0, res_id 10

    The kernel answers every ACK message with an NLMSG_ERROR (error 0: done) once the
    whole batch is processed; one failure aborts the transaction (``nft -f`` does the
    same)."""
    batch = [(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, b"")]
    for kind, family, attrs in messages:
        flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if kind == NFT_MSG_NEWSETELEM else 0)
        batch.append(((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, family, 0, attrs))
    batch.append((NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, b""))
    answers, seqs = _netfilter.exchange(batch)
    for seq in (seqs[0], seqs[-1]):   # refused as a whole (EPERM without CAP_NET_ADMIN)
        if answers.get(seq):
            raise OSError(answers[seq], os.strerror(answers[seq]))
    seqs = seqs[1:-1]
    for index, seq in enumerate(seqs):
        if answers.get(seq):
            return index, answers[seq]
    missing = [seq for seq in seqs if seq not in answers]
    if missing:
        raise OSError(errno.EIO, f"nftables did not answer {len(missing)} of {len(seqs)} messages")
    return None


def _nfnl_requests(messages):
    """Non-transaction requests (GETSET, GETSETELEM), each with an ACK: their errnos (0: found)."""
    batch = [((NFNL_SUBSYS_NFTABLES << 8) | kind, NLM_F_REQUEST | NLM_F_ACK, family, 0, attrs)
             for kind, family, attrs in messages]
    answers, seqs = _netfilter.exchange(batch)
    if answers.get(seqs[0]) == errno.EPERM:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))
    if any(seq not in answers for seq in seqs):
        raise OSError(errno.EIO, "nftables did not answer")
    return [answers[seq] for seq in seqs]
