"""The timing bounds that keep each app on one node, computed from a config.

docs/cluster.rst ("The timing argument") derives them; this module is the one place
that turns them into numbers, for the election (``Node.view`` puts them into
``view["apps"][APP]``) and for ``hado check-config`` (one sentence per app).

Words: ``h`` heartbeat, ``D`` dead_after, ``L`` the moment a node cut off from the
majority loses its quorum. The majority cannot start the app before ``L + D/2 - h``.

- A *leased* resource (its plugin has ``renew()`` and the resource a ``lease``: the
  ipaddr VIP, a process under the leash) ends by itself ``lease + slack`` after
  its last renewal, whatever hado does: renewals stop at ``L``, and the ``leases``
  thread also drops it at ``L`` (``Leases.revoke``) without waiting for the app's
  supervisor. ``slack`` is what the plugin's ``lease_slack()`` says (ipaddr's nftables
  gate: 0.05 s), else LEASE_SLACK. After a crash or freeze of hado, the last renewal
  came at most one heartbeat after the last heartbeat heard: a taker waits
  ``lease + slack + h`` of silence.
- Any other resource that runs on one node only has to be stopped by the isolated
  node's supervisor: at worst it finishes the call it is in (the longest timeout of
  the app's resources), then stops every such resource in reverse order, each within
  its ``stop_timeout``: the app's *stop budget* ``B``. The majority then waits until
  every up peer has been without news of the holder for ``D + max(0, B - (D/2 - h))``,
  so the isolated node has ``B`` after ``L``. A stop that fails or hangs beyond its
  timeout, or a hado that is frozen or killed, is not covered: only fencing covers
  that (with ``cluster.fence`` the fence runs first and no budget is waited for).
"""

import math
import threading
import weakref

from .plugin import Caller, PluginError, Registry
from . import states

# How long after the last renewal the kernel may still hold an address with
# valid_lft N: measured 1.0-1.3 s for N = 1 on these machines (docs/cluster.rst); the
# leash kills its process within 0.1 s of its deadline. The default for a plugin
# without lease_slack().
LEASE_SLACK = 0.35
MAX_SLACK = 60.0   # a lease_slack() above this is no figure but a bug
# A plugin's lease() only computes a number from its arguments: one that takes longer is
# broken, and counts as no lease (its resource then is unleased).
LEASE_TIMEOUT = 2.0
_lease_callers = weakref.WeakKeyDictionary()   # plugin -> its lease() Caller: a hung one fails at once
_slack_callers = weakref.WeakKeyDictionary()   # plugin -> its lease_slack() Caller
_lease_lock = threading.Lock()


def plugin_lease(plugin, args, problems=None):
    """The lease (seconds) ``plugin.lease(**args)`` declares, else None. A lease() that
    raises, hangs beyond LEASE_TIMEOUT or returns no positive finite number is the
    plugin's bug: the resource counts as unleased, and why is appended to ``problems``."""
    if not (plugin.function("renew") and plugin.function("lease")):
        return None
    with _lease_lock:
        caller = _lease_callers.setdefault(plugin, Caller(f"{plugin.name}:lease"))
    try:
        ok, lease = caller.call(plugin.bind("lease", args), LEASE_TIMEOUT)
    except PluginError as exc:   # its signature cannot be read
        ok, lease = False, str(exc)
    if not ok:
        why = f"failed: {lease}"
    else:
        try:
            lease = float(lease) if lease else None
            if lease is None or (math.isfinite(lease) and lease > 0):
                return lease
        except Exception:   # not a number at all
            pass
        try:
            said = repr(lease)[:60]
        except Exception:   # an int too long to print, a broken __repr__
            said = f"a {type(lease).__name__}"
        why = f"returned {said} instead of a number of seconds"
    if problems is not None:
        problems.append(f"plugin '{plugin.name}': its lease() {why}; hado counts the resource as unleased")
    return None


def plugin_lease_slack(plugin, args, problems=None):
    """Seconds ``plugin``'s resource may outlive its lease: ``lease_slack(**args)`` when
    the plugin defines it (a number >= 0), else LEASE_SLACK. One that fails, hangs or
    returns no such number counts as LEASE_SLACK, and why goes to ``problems``."""
    if not plugin.function("lease_slack"):
        return LEASE_SLACK
    with _lease_lock:
        caller = _slack_callers.setdefault(plugin, Caller(f"{plugin.name}:lease_slack"))
    try:
        ok, value = caller.call(plugin.bind("lease_slack", args), LEASE_TIMEOUT)
    except PluginError as exc:
        ok, value = False, str(exc)
    if ok:
        try:
            slack = float(value)
            if math.isfinite(slack) and 0 <= slack <= MAX_SLACK:
                return slack
        except Exception:   # not a number at all
            pass
        why = f"returned {str(value)[:60]!r} instead of seconds between 0 and {MAX_SLACK:g}"
    else:
        why = f"failed: {value}"
    if problems is not None:
        problems.append(f"plugin '{plugin.name}': its lease_slack() {why}; hado counts {LEASE_SLACK:g} s")
    return LEASE_SLACK


def resource_lease_end(res, registry):
    """(lease, slack) of a resource, or None when it has no lease.

    The plugin contract (docs/plugins.rst): a resource plugin whose resource ends by
    itself unless renewed defines ``renew(**args)`` and ``lease(**args)``, the latter
    returning the lease in seconds for these arguments (None: no lease), and may define
    ``lease_slack(**args)``: how long the resource may outlive its lease. Computed once
    per config (Node.set_timings, AppSupervisor's resources)."""
    try:
        plugin = registry.get(res["plugin"])
    except PluginError:
        return None
    lease = plugin_lease(plugin, res.get("args", {}))
    return (lease, plugin_lease_slack(plugin, res.get("args", {}))) if lease else None


def app_timing(config, app, registry=None):
    """The numbers for one app: a dict with

    - ``lease``: the longest lease among its resources (0 when none);
    - ``lease_end``: the latest a leased resource may outlive its last renewal,
      ``lease + slack``, the longest among its resources (0 when none);
    - ``budget``: the stop budget B of its unleased single-node resources (0 when none);
    - ``unleased``: names of those resources;
    - ``peer_silence``: seconds every up peer must have been without news of a silent
      holder before this app is taken over from it;
    - ``takeover_after``: seconds of silence this node itself waits.
    """
    cluster = config["cluster"]
    h, dead = cluster["heartbeat"], cluster["dead_after"]
    registry = registry or Registry(config["node"]["plugin_dirs"])
    resources = config["apps"][app]["resources"]
    ends = {r["name"]: resource_lease_end(r, registry) for r in resources}
    longest = max([end[0] for end in ends.values() if end] + [0.0])
    lease_end = max([end[0] + end[1] for end in ends.values() if end] + [0.0])
    unleased = [r for r in resources if r["kind"] != states.CLONE and not ends[r["name"]]]
    budget = 0.0
    if unleased and cluster["fence"] is None:
        in_flight = max(max(r["timeout"], r["start_timeout"], r["stop_timeout"]) for r in resources)
        budget = in_flight + sum(r["stop_timeout"] + (r["timeout"] if r["kind"] == states.PROMOTABLE else 0)
                                 for r in unleased)
    peer_silence = dead + max(0.0, budget - (dead / 2 - h))
    if lease_end:
        # The holder may have renewed until the last answer *any* peer got from it (it
        # kept quorum through them, not through us): every up peer must be without news
        # of it for the lease too, not only this node (the campaign's bug B).
        peer_silence = max(peer_silence, lease_end + h)
    takeover = max(dead, peer_silence, (lease_end + h) if lease_end else 0.0)
    return {"lease": longest, "lease_end": round(lease_end, 3), "budget": budget,
            "unleased": [r["name"] for r in unleased],
            "peer_silence": round(peer_silence, 3), "takeover_after": round(takeover, 3)}


def timings(config):
    """app -> app_timing() for every app of the config."""
    registry = Registry(config["node"]["plugin_dirs"])
    return {app: app_timing(config, app, registry) for app in config["apps"]}


def app_bounds(config):
    """app -> one sentence: what keeps it single, and the failover time that costs."""
    cluster = config["cluster"]
    h = cluster["heartbeat"]
    out = {}
    if len(cluster["nodes"]) == 1:
        return {app: "one node: it runs here or nowhere" for app in config["apps"]}
    for app, t in timings(config).items():
        parts = []
        if cluster["quorum"] == "none":
            parts.append("NOT safe by timing: quorum 'none' lets both nodes run it when they lose sight of "
                         "each other" + ("; cluster.fence is the only protection" if cluster["fence"] else ""))
        if t["lease"]:
            parts.append(f"its leased resources are dropped at quorum loss and in any case expire "
                         f"{t['lease_end']:g} s after their last renewal")
        if t["unleased"] and cluster["fence"] is not None:
            parts.append(f"{', '.join(t['unleased'])}: the fence plugin runs before any takeover from a silent node")
        elif t["unleased"]:
            parts.append(f"{', '.join(t['unleased'])} {'is' if len(t['unleased']) == 1 else 'are'} stopped "
                         f"within the app's {t['budget']:g} s stop budget before any other node starts "
                         f"{'it' if len(t['unleased']) == 1 else 'them'} (a hado that is frozen, or a stop "
                         "that fails, is covered only by cluster.fence)")
        parts.append(f"failover after a crash: about {t['takeover_after']:g}-{t['takeover_after'] + h:g} s "
                     "+ start time")
        safe = "safe without fencing" if cluster["quorum"] != "none" else "split-brain possible"
        out[app] = f"{safe}: " + "; ".join(parts)
    return out
