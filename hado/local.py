"""Observe: what this node knows, computed once per turn from one copy of the state.

Pure functions, no I/O, no threads, no clock of their own: the election loop calls
:func:`observe` with ``State.inputs()`` (one consistent copy, taken under the state's
lock) and the monotonic time of the turn; the API calls :func:`peer_status` for the
state document with the same rule. What the result says is then written by
``act.Actor.record`` (eligibility, expired failures and moves) and read by
``Node.view`` (peer status, health), so /v1/state, /v1/view and the decision of a turn
all rest on the same facts.
"""


def peer_status(peers, records, now, started, dead_after):
    """peer -> (status, seconds since its last evidence or None).

    ``up`` while the last evidence (the send time of our last answered request) is
    younger than dead_after; ``down`` after that, or once we have run for dead_after
    without any; ``unknown`` before; ``left`` once its live run said goodbye, until an
    answer of a new run (docs/cluster.rst, "Up, down and quorum").
    """
    out = {}
    for peer in peers:
        record = records.get(peer) or {}
        evidence = record.get("evidence")
        if record.get("left") is not None:
            out[peer] = ("left", None if evidence is None else now - evidence)
        elif evidence is not None:
            silent = now - evidence
            out[peer] = ("up" if silent < dead_after else "down", silent)   # unrounded: decisions compare it
        elif now - started >= dead_after:
            out[peer] = ("down", None)
        else:
            out[peer] = ("unknown", None)
    return out


def not_passing(monitors):
    """(name, message, pending) of the first vital monitor that failed or has no result
    yet (pending True), else None.

    A monitor that has not answered yet does not pass: nothing may start on its word
    before it has spoken (a first result is awaited at start-up, so this is short)."""
    for name, monitor in monitors.items():
        if monitor.get("vital", True) and monitor["ok"] is not True:
            return name, monitor["message"], monitor["ok"] is None
    return None


def health(monitors):
    """(healthy, why not or None) from the system monitors."""
    failed = not_passing(monitors)
    if failed and failed[2]:
        return False, f"is unhealthy (monitor {failed[0]} has no result yet)"
    if failed:
        return False, f"is unhealthy (monitor {failed[0]}: {failed[1]})"
    return True, None


def expiries(apps, now):
    """[(app, "failure" | "move", record)] whose time is up."""
    out = []
    for app, entry in apps.items():
        failure, move = entry.get("failure"), entry.get("move")
        if failure and failure.get("until") is not None and now >= failure["until"]:
            out.append((app, "failure", failure))
        if move and now >= move["until"]:
            out.append((app, "move", move))
    return out


def why_other(record):
    """The sentence for an ``other`` record (resource.py writes it when an other() named
    another holder, or failed, right before a start; it goes once one answers None)."""
    if record.get("failed"):
        return f"cannot tell whether another machine holds it ({record['by']}: {record['message']})"
    return f"sees another holder ({record['by']}: {record['message']})"


def why_not_here(app, entry, standby, healthy, why_unhealthy, witness, expired=(), leaving=False):
    """Why ``app`` may not run on this node (None when it may)."""
    if witness:
        return "is a witness"
    if leaving:
        return "is shutting down (hado was asked to stop)"
    if standby:
        return "is in standby"
    if not healthy:
        return why_unhealthy
    failing = not_passing(entry.get("monitors") or {})
    if failing and failing[2]:
        return f"waits for the first result of app monitor {failing[0]}"
    if failing:
        return f"fails app monitor {failing[0]}: {failing[1]}"
    other = entry.get("other")
    if other:
        return why_other(other)
    failure = entry.get("failure")
    if failure and (app, "failure") not in expired:
        until = "or failure_timeout" if failure.get("until") is not None else "only"
        return f"has a failure: {failure['reason']} (cleared by hado cleanup {app} {until})"
    return None


def observe(inputs, now, peers, dead_after, witness=False):
    """What this node knows now: a dict with

    - ``status``: peer -> (up | down | unknown | left, silent seconds or None);
    - ``healthy``, ``why_unhealthy``: from the vital system monitors;
    - ``expired``: [(app, "failure" | "move", record)] to forget now;
    - ``why_not``: app -> why it may not run here, None when it may.
    """
    status = peer_status(peers, inputs["peers"], now, inputs["started"], dead_after)
    healthy, why_unhealthy = health(inputs["monitors"])
    expired = expiries(inputs["apps"], now)
    gone = {(app, what) for app, what, _ in expired}
    why_not = {app: why_not_here(app, entry, inputs["standby"], healthy, why_unhealthy, witness, gone,
                                 inputs.get("leaving", False))
               for app, entry in inputs["apps"].items()}
    return {"now": now, "status": status, "healthy": healthy, "why_unhealthy": why_unhealthy,
            "expired": expired, "why_not": why_not}
