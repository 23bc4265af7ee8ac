"""Who runs each app: pure functions, a view in, decisions with their sentences out.

No I/O, no threads, no clocks: ``decide(view)`` is called by the node every turn with
a snapshot, by ``hado explain`` with a what-if copy of it, and by the tests with views
they build. Every node computes the same thing from its own view.

The view (plain dicts, as ``Node.view()`` builds it and ``GET /v1/view`` shows it)::

    {"me": "node-a",
     "quorum": {"ok": True, "votes": 2, "needed": 2},
     "dead_after": 2.0, "takeover_after": 2.0,
     "nodes": {"node-a": {"priority": 100, "witness": False,
                          "status": "up" | "down" | "unknown" | "left", "silent_s": 0.3,
                          "report": REPORT or None}},
     "apps": {"web": {"stickiness": True, "preferred": None, "preempt": False,
                      "takeover_after": 2.0, "peer_silence": 2.0, "budget": 0}}}

``silent`` is, per peer, the seconds since the reporting node's last evidence of it.
``takeover_after``, ``peer_silence`` and ``budget`` come from hado/bounds.py.

``status`` is ``up`` while the node was heard from within dead_after, ``down`` after
dead_after of silence, ``unknown`` while this node has run shorter than dead_after and
has not heard it yet, ``left`` once it said goodbye (hado stopped there after stopping
every resource: it holds nothing, claims nothing, and that run starts nothing any
more; docs/cluster.rst "Leaving"). ``report`` is the node's last signed heartbeat (our own for "me";
the last one received, however old, for a down node)::

    {"standby": False, "healthy": True, "why_unhealthy": None,
     "peers": {"node-b": "up", ...}, "silent": {"node-b": 0.2, ...},
     "apps": {"web": {"role": "active", "eligible": True, "why_not": None,
                      "epoch": 3, "active_node": "node-a", "move_to": None,
                      "claim": False, "claims": ["node-a"], "holders": ["node-a"]}}}

``uptime_s`` is how long this node has run. Every decision has a ``kind`` (KINDS below,
for programs: nothing branches on a sentence) and a ``reason`` (the sentence, for people).

The rules, in order (docs/cluster.rst explains the timing that makes them safe):

0. a node that has run shorter than dead_after and has not had quorum yet *holds*:
   it neither starts nor stops anything (its peers may simply not have answered yet);
   without quorum after that, or once it had quorum and lost it, it stops the app;
1. candidates: up nodes, not witnesses, that report the app eligible (not standby,
   healthy, app monitors pass, app not failed there);
2. a move request for a candidate names the winner; else a node that already runs the
   app keeps it (stickiness; among several, the highest epoch) unless ``preempt`` and the
   preferred node is a candidate; else the preferred node; else the highest priority,
   ties broken by node name;
3. this node is active only if it is the winner, has quorum, and nothing says another
   node may still run the app: no other up node holds it (active, starting, stopping),
   no up peer sees another node as active or hears it holding the app (``holders``: a
   node on the other side of a non-transitive partition), every node whose last word
   was "holding" or a claim, as we heard it or as an up peer passes it on, is
   down in every up peer's view too, silent for the app's ``takeover_after`` here and
   for its ``peer_silence`` in every up peer's report (the stop budget of its unleased
   resources; bounds.py), fenced first if fencing is configured, and every node was
   heard from at least once or is down; a node that *left* (said goodbye) is waited
   for only while an up peer still passes it on as a holder;
4. a winner that does not run the app yet first publishes a *claim* and starts only
   when every up peer has answered a request sent after the claim with a report that
   lists our claim among the claims it sees (``claims``), and no claim of another node
   is known, directly or through a peer: two nodes whose views differ (one saw a node
   eligible, the other not yet; or they cannot see each other but both see a third)
   both claim, learn of each other at the latest through a common peer, and the
   lower-ranked yields. ``view["confirmed"][app]`` lists the peers that answered since
   our claim.
"""

import copy

from . import states

RUNNING = states.RUNNING


def app_report(node, app):
    report = node.get("report") or {}
    return (report.get("apps") or {}).get(app) or {}


def rank(view, name):
    """Sort key: higher priority first, then the node name."""
    return (-view["nodes"][name].get("priority", 0), name)


def holder_rank(view, app, name):
    """Sort key among nodes running the app: the newest epoch first, then rank."""
    return (-(app_report(view["nodes"][name], app).get("epoch") or 0),) + rank(view, name)


def describe_priority(view, name):
    return f"priority {view['nodes'][name].get('priority', 0)}"


def up_nodes(view):
    return [n for n, node in view["nodes"].items() if n == view["me"] or node["status"] == "up"]


def why_not_candidate(view, name, app):
    """Why node ``name`` is not a candidate for ``app`` (None if it is)."""
    node = view["nodes"][name]
    if node.get("witness"):
        return "is a witness"
    if name != view["me"] and node["status"] == "unknown":
        return "has not been heard from yet"
    if name != view["me"] and node["status"] == "left":
        return "has left the cluster (hado stopped there cleanly)"
    if name != view["me"] and node["status"] != "up":
        return f"is {node['status']}" + (f" (silent for {node['silent_s']:.1f} s)" if node.get("silent_s") is not None else "")
    report = node.get("report") or {}
    entry = app_report(node, app)
    if not entry.get("eligible"):
        return entry.get("why_not") or report.get("why_unhealthy") or "is not eligible"
    return None


def choose_winner(view, app):
    """``(winner or None, sentence)``: rules 1 and 2, the same on every node."""
    settings = view["apps"][app]
    up = up_nodes(view)
    candidates = sorted((n for n in up if why_not_candidate(view, n, app) is None), key=lambda n: rank(view, n))
    if not candidates:
        excuses = "; ".join(f"{n} {why_not_candidate(view, n, app)}" for n in sorted(view["nodes"]))
        return None, f"no eligible node ({excuses})"
    count = f"{len(candidates)} candidates"
    for name in up:
        target = app_report(view["nodes"][name], app).get("move_to")
        if target in candidates:
            return target, f"an admin moved it to {target} (requested on {name})"
    running = [n for n in candidates if app_report(view["nodes"][n], app).get("role") in RUNNING]
    preferred = settings.get("preferred")
    if running and settings.get("stickiness", True):
        if settings.get("preempt") and preferred in candidates and preferred not in running:
            return preferred, f"{preferred} is the preferred node and preempt is on"
        keeper = min(running, key=lambda n: holder_rank(view, app, n))
        if len(running) > 1:
            def epoch(n):
                return app_report(view["nodes"][n], app).get("epoch") or 0
            others = [n for n in running if n != keeper]
            newer = all(epoch(keeper) > epoch(n) for n in others)
            why = (f"its term {epoch(keeper)} is newer" if newer else
                   f"same term {epoch(keeper)}, higher {describe_priority(view, keeper)} or name")
            return keeper, f"{keeper} already runs it (stickiness) and wins over {', '.join(others)} ({why})"
        return keeper, f"{keeper} already runs it (stickiness)"
    if len(candidates) == 1:
        return candidates[0], f"{candidates[0]} is the only candidate"
    if preferred in candidates:
        return preferred, f"{preferred} is the preferred node among {count}"
    best = candidates[0]
    tied = [n for n in candidates[1:] if rank(view, n)[0] == rank(view, best)[0]]
    tie = f" (a tie with {', '.join(tied)}, broken by name)" if tied else ""
    return best, f"{best} has the highest {describe_priority(view, best)} among {count}{tie}"


def believed_active(view, app):
    """The node this node believes active: an up node reporting the app active/starting."""
    running = [n for n in up_nodes(view) if app_report(view["nodes"][n], app).get("role") in RUNNING]
    if not running:
        return None
    return min(running, key=lambda n: holder_rank(view, app, n))


def blockers(view, app, fence_configured=False, fenced=()):
    """``([(kind, sentence)], node to fence or None)``: why this node must not start
    ``app`` yet although it won (rule 3)."""
    me, nodes = view["me"], view["nodes"]
    up = up_nodes(view)
    waits, fence = [], None
    relayed = {}    # node -> the up peers whose last word from it was that it holds the app
    for name in up:
        if name == me:
            continue
        entry = app_report(nodes[name], app)
        if entry.get("role") in states.HOLDING:
            waits.append(("peer_holds", f"{name} reports it {entry['role']}"))
        peer_sees = (nodes[name].get("report") or {}).get("peers") or {}
        seen = entry.get("active_node")
        if seen and seen not in (me, name) and peer_sees.get(seen) == "up":
            waits.append(("peer_sees_holder", f"{name} still sees {seen} active"))
        for holder in entry.get("holders") or ():
            if not isinstance(holder, str) or holder in (me, name) or holder not in nodes or holder in up:
                continue    # (in up: we hear it ourselves, its own report counts)
            if holder == seen and peer_sees.get(seen) == "up":
                continue    # said above
            ours = app_report(nodes[holder], app)
            if peer_sees.get(holder) != "up":
                relayed.setdefault(holder, []).append(name)
            elif not (ours.get("role") in states.HOLDING or ours.get("claim")):
                # A node we do not hear (a non-transitive partition) and whose last
                # word to us was not holding: it holds the app by its newest word to
                # that peer, stopping included. (When it was, the silence rules below
                # wait for it: that peer does not see it down.)
                waits.append(("peer_sees_holder", f"{name} hears {holder} holding it"))
    for name, node in nodes.items():
        if name == me or name in up:
            continue
        if node["status"] == "unknown":
            waits.append(("not_heard", f"{name} not heard from yet"))
            continue
        if node["status"] == "left" and name not in relayed:
            # Its goodbye said it holds and claims nothing, and that run of hado starts
            # nothing more: no silence is owed. A peer that still passes it on as a
            # holder (it missed the goodbye, or hears a new run of it that we do not)
            # is waited for below, as for a down node.
            continue
        # Its last word, as we heard it or as a peer that heard it later passes it on:
        # holding the app, or claiming it (a claim that was confirmed right before the
        # silence may have become a start).
        entry = app_report(node, app)
        last_word = entry.get("role")
        if last_word in states.HOLDING:
            pass
        elif entry.get("claim"):
            last_word = "claiming it"
        elif name in relayed:
            last_word = f"holding it (the last word {', '.join(relayed[name])} had from it)"
        else:
            continue
        settings = view["apps"].get(app, {})
        wait_for = settings.get("takeover_after", view.get("takeover_after", view["dead_after"]))
        if node.get("silent_s") is not None and node["silent_s"] < wait_for:
            waits.append(("silence_short", f"{name} was last {last_word} and is silent for {node['silent_s']:.1f} s, "
                                           f"under takeover_after {wait_for:.2f} s ({why_wait(view, app)})"))
            continue
        still_seen = [p for p in up if p != me and
                      ((nodes[p].get("report") or {}).get("peers") or {}).get(name) not in ("down", "left")]
        if still_seen:
            verb = "does" if len(still_seen) == 1 else "do"
            waits.append(("not_down_everywhere",
                          f"{name} was last {last_word} and {', '.join(still_seen)} {verb} not see it down yet"))
            continue
        budget_wait = settings.get("peer_silence", view["dead_after"])
        if budget_wait > view["dead_after"] and not fence_configured:
            # Every up peer must have been without news of it for that long (bounds.py):
            # the one that heard it last bounds when its quorum lapsed.
            short = [p for p in up if p != me and
                     (((nodes[p].get("report") or {}).get("silent") or {}).get(name) or 0) < budget_wait]
            if short:
                so_far = ", ".join(f"{p} {((nodes[p].get('report') or {}).get('silent') or {}).get(name) or 0:.1f} s"
                                   for p in short)
                what = (f"{name} has had the app's stop budget of {settings['budget']:g} s to stop it"
                        if settings.get("budget") else f"the lease of what {name} renewed has run out")
                waits.append(("stop_budget", f"{name} was last {last_word}: every up peer must be without news "
                                             f"of {name} for {budget_wait:.2f} s (so far: {so_far}), so that "
                                             f"{what}"))
                continue
        if fence_configured and name not in fenced:
            fence = name
            waits.append(("fencing", f"{name} was last {last_word}: fencing it first"))
    return waits, fence


def why_wait(view, app):
    """What the takeover_after of ``app`` waits for, in words."""
    settings = view["apps"].get(app, {})
    if settings.get("budget"):
        return f"the app's stop budget of {settings['budget']:g} s may not be over"
    return "its address lease may still hold"


def describe_down(view, name):
    if view["nodes"][name]["status"] == "left":
        return f"{name} has left (hado stopped there cleanly)"
    silent = view["nodes"][name].get("silent_s")
    if silent is None:
        return f"{name} is down (never heard)"
    return f"{name} is down (silent for {silent:.1f} s > dead_after {view['dead_after']:g} s)"


# Decision kinds (decision["kind"]), what each means for this node:
KINDS = {
    "witness": "a witness runs no apps",
    "hold": "just started, no quorum yet: observe only, neither start nor stop",
    "no_quorum": "no quorum: stop the app here",
    "no_candidate": "no node may run the app: stop it here",
    "ineligible": "this node may not run it; another node should",
    "standby": "another node wins the election",
    "yield": "a higher-ranked node claims it too: withdraw our claim",
    "waiting": "elected, but something may still run it elsewhere: claim and wait",
    "active": "run it here",
}


def decide_app(view, app, fence_configured=False, fenced=()):
    """The decision for one app on this node: a dict with its ``kind`` and sentence."""
    me, nodes, quorum = view["me"], view["nodes"], view["quorum"]
    mine = app_report(nodes[me], app)
    my_role = mine.get("role", states.STANDBY)
    winner, why_winner = choose_winner(view, app)
    seen = believed_active(view, app)
    decision = {"app": app, "kind": None, "active": False, "winner": winner, "active_node": seen,
                "claim": False, "epoch": mine.get("epoch", 0), "fence": None, "waits": [],
                "run_clones": bool(quorum["ok"] and why_not_candidate(view, me, app) is None)}
    votes = f"quorum {quorum['votes']}/{len(nodes)}"

    def done(kind, reason, **fields):
        decision.update(kind=kind, reason=reason, **fields)
        return decision

    if nodes[me].get("witness"):
        return done("witness", f"{app}: standby on {me} because it is a witness (runs no apps)")
    counted = f"{quorum['votes']} vote{'s' if quorum['votes'] != 1 else ''}, {quorum['needed']} needed"
    no_quorum = f"no quorum ({counted})"
    uptime = view.get("uptime_s")
    if not quorum["ok"] and not view.get("had_quorum") and uptime is not None and uptime < view["dead_after"]:
        # Start-up: our peers may simply not have answered yet. Stopping what the probe
        # found running would stop a healthy app on every hado restart; starting is
        # impossible anyway without quorum. So observe only, for at most dead_after.
        return done("hold", f"{app}: holding on {me}: started {uptime:.1f} s ago, waiting up to dead_after "
                            f"{view['dead_after']:g} s to hear from the peers (no quorum yet: {counted})",
                    run_clones=False)
    if not quorum["ok"]:
        return done("no_quorum", f"{app}: stopped on {me} because it has {no_quorum}", run_clones=False)
    if winner is None:
        return done("no_candidate", f"{app}: stopped everywhere because there is {why_winner}")
    if winner != me:
        why_me = why_not_candidate(view, me, app)
        if why_me:
            return done("ineligible", f"{app}: standby on {me} because {me} {why_me}; {winner} should run it: "
                                      f"{why_winner}")
        return done("standby", f"{app}: standby on {me} because {why_winner}")
    if my_role not in RUNNING:
        # Not running yet: claim the app, and start only once every up peer has answered
        # a request sent after the claim without claiming or holding it itself.
        decision["claim"] = True
        waits, fence = blockers(view, app, fence_configured, fenced)
        up = up_nodes(view)
        rivals = {n for n in up if n != me and app_report(nodes[n], app).get("claim")
                  and app_report(nodes[n], app).get("role") not in RUNNING}
        for peer in up:   # claims our peers see, from nodes we may not see ourselves
            if peer != me:
                rivals.update(c for c in app_report(nodes[peer], app).get("claims") or ()
                              if isinstance(c, str) and c != me and c in nodes)
        better = sorted((n for n in rivals if rank(view, n) < rank(view, me)), key=lambda n: rank(view, n))
        if better:
            return done("yield", f"{app}: standby on {me} because {better[0]} claims it too and ranks higher "
                                 f"({describe_priority(view, better[0])}): yielding to its claim", claim=False)
        waits += [("rival_claim", f"{n} claims it too (it ranks lower and must yield first)") for n in sorted(rivals)]
        if len(nodes) == 1:
            pass   # a one-node cluster has nobody to tell
        elif mine.get("claim"):
            answered = view.get("confirmed", {}).get(app, ())
            unconfirmed = [n for n in up if n != me and
                           (n not in answered or me not in (app_report(nodes[n], app).get("claims") or ()))]
            if unconfirmed:
                waits.append(("unconfirmed", f"{', '.join(unconfirmed)} must answer once after seeing our claim"))
        else:
            waits.append(("claim_unsent", "our claim must reach every peer first"))
        if waits:
            return done("waiting", f"{app}: waiting on {me} (elected: {why_winner}) because "
                                   f"{'; '.join(why for _, why in waits)}",
                        fence=fence, waits=[{"kind": kind, "why": why} for kind, why in waits])
    decision["active"] = True
    if my_role not in RUNNING or not mine.get("epoch"):
        # A new term: newer than any this node has heard of, so it wins any conflict
        # with a node that held the app before (the node applies it once, on taking over).
        known = [app_report(node, app).get("epoch", 0) or 0 for node in nodes.values()]
        decision["epoch"] = max(known + [0]) + 1
    decision["active_node"] = me
    down = [describe_down(view, n) for n, node in sorted(nodes.items()) if node["status"] in ("down", "left")]
    because = f"{' and '.join(down)} and {why_winner}" if down else why_winner
    return done("active", f"{app}: active on {me} because {because}, with {votes}")


def decide(view, fence_configured=False, fenced=()):
    """Decisions for every app in the view: app name -> decision dict."""
    return {app: decide_app(view, app, fence_configured, fenced) for app in sorted(view["apps"])}


def what_if(view, changes):
    """A copy of ``view`` as this node would see it if the named nodes were down, in
    standby or unhealthy (``changes``: [(node, "down"|"standby"|"unhealthy")]), once the
    cluster has settled: a down node has been silent long enough for every wait, its
    vote is gone, every peer sees it down. ``hado explain`` runs decide() on it.
    """
    view = copy.deepcopy(view)
    nodes = view["nodes"]
    longest = max([a.get("takeover_after", 0) for a in view["apps"].values()] +
                  [a.get("peer_silence", 0) for a in view["apps"].values()] +
                  [view.get("takeover_after", 0), view["dead_after"]]) + 1
    downed = set()
    for name, what in changes:
        if name not in nodes:
            raise ValueError(f"no node {name!r} (nodes: {', '.join(nodes)})")
        if what not in ("down", "standby", "unhealthy"):
            raise ValueError(f"{name}={what}: expected down, standby or unhealthy")
        node = nodes[name]
        report = node.get("report") or {}
        node["report"] = report
        if what == "down":
            if name == view["me"]:
                raise ValueError("this node cannot imagine itself down; ask another node")
            downed.add(name)
            node["status"], node["silent_s"] = "down", longest
            for entry in (report.get("apps") or {}).values():
                entry.update(role=states.STANDBY, claim=False)
        else:
            why = f"is {'in standby' if what == 'standby' else 'unhealthy'} (what-if)"
            report["standby" if what == "standby" else "healthy"] = what == "standby"
            for entry in (report.get("apps") or {}).values():
                entry.update(eligible=False, why_not=why, role=states.STANDBY, claim=False)
    for other in nodes.values():
        rep = other.get("report") or {}
        for name in downed:
            if isinstance(rep.get("peers"), dict):
                rep["peers"][name] = "down"
            if isinstance(rep.get("silent"), dict):
                rep["silent"][name] = longest
        for entry in (rep.get("apps") or {}).values():
            if entry.get("active_node") in downed:
                entry["active_node"] = None
            for key in ("claims", "holders"):
                if isinstance(entry.get(key), list):
                    entry[key] = [c for c in entry[key] if c not in downed]
    q = view["quorum"]
    if "voters" in q:
        q["voters"] = [p for p in q["voters"] if p not in downed]
        q["votes"] = 1 + len(q["voters"])
    else:
        q["votes"] = max(1, q["votes"] - len(downed))
    q["ok"] = q["votes"] >= q["needed"]
    return view


def verdict(view, app, decision=None):
    """``(node or None, sentence)``: where ``app`` runs, or will run once the claim and
    waits in ``decision`` are over, as this node's decide() sees it. None: nowhere."""
    decision = decision or decide_app(view, app)
    me = view["me"]
    if decision["active"]:
        return me, decision["reason"]
    if not view["quorum"]["ok"]:
        return None, decision["reason"]
    winner, why = choose_winner(view, app)
    if winner is None:
        return None, decision["reason"]
    return winner, why


def quorum(votes, total, mode="majority"):
    """``{"ok", "votes", "needed"}`` for ``votes`` seen out of ``total``."""
    needed = 1 if mode == "none" else total // 2 + 1
    return {"ok": votes >= needed, "votes": votes, "needed": needed}
