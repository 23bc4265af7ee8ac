"""The election as a pure function: exhaustive-ish properties and the sentences it says."""

from hypothesis import given, settings, strategies as st

from hado import election

NAMES = ["node-a", "node-b", "node-c", "node-d", "node-e"]
ROLES = ["active", "starting", "stopping", "standby", "failed"]


def report(role="standby", eligible=True, epoch=0, active_node=None, move_to=None, peers=None, standby=False,
           claim=False):
    return {"standby": standby, "healthy": True, "why_unhealthy": None, "peers": peers or {},
            "apps": {"web": {"role": role, "eligible": eligible, "why_not": None if eligible else "is in standby",
                             "epoch": epoch, "active_node": active_node, "move_to": move_to,
                             "claim": claim}}}


def view_for(me, reports, up, priorities, app=None, silent=None, takeover_after=2.0):
    """The view node ``me`` has when every node in ``up`` sees exactly ``up``.

    ``me`` has published its claim and every up peer has answered since (so a winner
    that does not run the app yet may start, unless something else blocks it).
    """
    import copy
    reports = copy.deepcopy(reports)
    if reports[me]["apps"]["web"]["role"] not in ("active", "starting"):
        reports[me]["apps"]["web"]["claim"] = True
        for name in up:   # every up peer has seen our claim and says so
            if name != me:
                claims = reports[name]["apps"]["web"].setdefault("claims", [])
                claims.append(me)
    total = len(reports)
    votes = len(up) if me in up else 1
    nodes = {}
    for name, rep in reports.items():
        status = "up" if name in up or name == me else "down"
        nodes[name] = {"priority": priorities[name], "witness": False, "status": status,
                       "silent_s": 0.1 if status == "up" else (silent if silent is not None else 9.0),
                       "report": rep}
    return {"me": me, "quorum": election.quorum(votes, total), "dead_after": 2.0, "takeover_after": takeover_after,
            "nodes": nodes, "apps": {"web": app or {"stickiness": True, "preferred": None, "preempt": False}},
            "confirmed": {"web": sorted(n for n in up if n != me)}}


@st.composite
def clusters(draw):
    n = draw(st.integers(2, 5))
    names = NAMES[:n]
    priorities = {name: draw(st.sampled_from([0, 50, 100])) for name in names}
    up = set(draw(st.lists(st.sampled_from(names), min_size=1, max_size=n, unique=True)))
    reports = {}
    for name in names:
        peers = {p: ("up" if (p in up and name in up) else "down") for p in names if p != name}
        reports[name] = report(role=draw(st.sampled_from(ROLES)), eligible=draw(st.booleans()),
                               epoch=draw(st.integers(0, 3)), active_node=draw(st.sampled_from(names + [None])),
                               move_to=draw(st.sampled_from(names + [None] * 3)), peers=peers,
                               claim=draw(st.booleans()))
    app = {"stickiness": draw(st.booleans()), "preferred": draw(st.sampled_from(names + [None])),
           "preempt": draw(st.booleans())}
    return reports, up, priorities, app


@settings(max_examples=1500, deadline=None)
@given(clusters())
def test_at_most_one_node_decides_active_and_all_agree_on_the_winner(cluster):
    reports, up, priorities, app = cluster
    decisions = {me: election.decide(view_for(me, reports, up, priorities, app))["web"] for me in up}
    active = [me for me, d in decisions.items() if d["active"]]
    assert len(active) <= 1, (active, decisions)
    winners = {d["winner"] for me, d in decisions.items() if d["kind"] != "no_quorum"}
    if len(up) * 2 > len(reports):
        assert len({election.choose_winner(view_for(me, reports, up, priorities, app), "web")[0] for me in up}) == 1
        assert len(winners) <= 1


@settings(max_examples=1500, deadline=None)
@given(clusters())
def test_a_node_never_starts_while_another_up_node_may_still_hold_the_app(cluster):
    reports, up, priorities, app = cluster
    for me in up:
        decision = election.decide(view_for(me, reports, up, priorities, app))["web"]
        if decision["active"] and reports[me]["apps"]["web"]["role"] not in ("active", "starting"):
            holders = [n for n in up if n != me and reports[n]["apps"]["web"]["role"] in ("active", "starting", "stopping")]
            assert holders == [], (me, holders, decision["reason"])


@settings(max_examples=500, deadline=None)
@given(clusters())
def test_a_node_without_quorum_never_decides_active(cluster):
    reports, up, priorities, app = cluster
    for me in reports:
        view = view_for(me, reports, up, priorities, app)
        if not view["quorum"]["ok"]:
            decision = election.decide(view)["web"]
            assert not decision["active"] and decision["kind"] == "no_quorum"


def three(**roles):
    base = {n: report() for n in NAMES[:3]}
    for name, role in roles.items():
        base[name.replace("_", "-")] = report(role=role, epoch=1 if role == "active" else 0)
    return base


PRIO = {"node-a": 100, "node-b": 50, "node-c": 10}


def test_highest_priority_wins_when_nobody_holds_and_the_reason_says_so():
    d = election.decide(view_for("node-a", three(), set(NAMES[:3]), PRIO))["web"]
    assert d["active"] and d["epoch"] == 1
    assert d["reason"] == "web: active on node-a because node-a has the highest priority 100 among 3 candidates, with quorum 3/3"


def test_tie_on_priority_breaks_by_name_everywhere():
    prio = {n: 7 for n in NAMES[:3]}
    winners = {election.choose_winner(view_for(me, three(), set(NAMES[:3]), prio), "web")[0] for me in NAMES[:3]}
    assert winners == {"node-a"}


def test_stickiness_keeps_the_app_on_a_lower_priority_node():
    d = election.decide(view_for("node-a", three(node_b="active"), set(NAMES[:3]), PRIO))["web"]
    assert not d["active"] and d["winner"] == "node-b"
    assert d["reason"] == "web: standby on node-a because node-b already runs it (stickiness)"


def test_preempt_moves_back_to_the_preferred_node_only_after_the_holder_stopped():
    app = {"stickiness": True, "preferred": "node-a", "preempt": True}
    d = election.decide(view_for("node-a", three(node_b="active"), set(NAMES[:3]), PRIO, app))["web"]
    assert d["winner"] == "node-a" and not d["active"] and d["kind"] == "waiting"
    assert "node-b reports it active" in d["reason"]
    d_b = election.decide(view_for("node-b", three(node_b="active"), set(NAMES[:3]), PRIO, app))["web"]
    assert not d_b["active"], "the holder steps down for the preferred node"
    d = election.decide(view_for("node-a", three(node_b="standby"), set(NAMES[:3]), PRIO, app))["web"]
    assert d["active"]


def test_takeover_from_a_dead_holder_waits_until_every_peer_sees_it_down():
    reports = three(node_a="active")
    reports["node-c"] = report(peers={"node-a": "up", "node-b": "up"}, active_node="node-a")
    d = election.decide(view_for("node-b", reports, {"node-b", "node-c"}, PRIO))["web"]
    assert not d["active"] and "node-c still sees node-a active" in d["reason"]
    reports["node-c"] = report(peers={"node-a": "down", "node-b": "up"})
    d = election.decide(view_for("node-b", reports, {"node-b", "node-c"}, PRIO))["web"]
    assert d["active"] and d["epoch"] == 2
    assert d["reason"].startswith("web: active on node-b because node-a is down (silent for 9.0 s > dead_after 2 s) "
                                  "and node-b has the highest priority 50 among 2 candidates, with quorum 2/3")


def test_takeover_waits_for_a_lease_longer_than_dead_after():
    reports = three(node_a="active")
    reports["node-c"] = report(peers={"node-a": "down", "node-b": "up"})
    d = election.decide(view_for("node-b", reports, {"node-b", "node-c"}, PRIO, silent=2.1, takeover_after=2.6))["web"]
    assert not d["active"] and "under takeover_after 2.60 s" in d["reason"]


def test_fencing_is_required_before_takeover_when_configured():
    reports = three(node_a="active")
    reports["node-c"] = report(peers={"node-a": "down", "node-b": "up"})
    view = view_for("node-b", reports, {"node-b", "node-c"}, PRIO)
    d = election.decide(view, fence_configured=True)["web"]
    assert not d["active"] and d["fence"] == "node-a" and "fencing it first" in d["reason"]
    assert election.decide(view, fence_configured=True, fenced={"node-a"})["web"]["active"]


def test_two_holders_after_a_healed_partition_the_older_epoch_stops():
    reports = three()
    reports["node-a"] = report(role="active", epoch=1)
    reports["node-b"] = report(role="active", epoch=2)
    up = set(NAMES[:3])
    assert not election.decide(view_for("node-a", reports, up, PRIO))["web"]["active"]
    assert election.decide(view_for("node-b", reports, up, PRIO))["web"]["active"]


def test_a_move_request_names_the_winner():
    reports = three(node_a="active")
    reports["node-c"]["apps"]["web"]["move_to"] = "node-b"
    d_a = election.decide(view_for("node-a", reports, set(NAMES[:3]), PRIO))["web"]
    assert not d_a["active"] and "an admin moved it to node-b" in d_a["reason"]
    d_b = election.decide(view_for("node-b", reports, set(NAMES[:3]), PRIO))["web"]
    assert not d_b["active"] and "node-a reports it active" in d_b["reason"]


def test_unknown_peer_at_start_up_blocks_taking_the_app():
    view = view_for("node-a", three(), set(NAMES[:3]), PRIO)
    view["nodes"]["node-c"]["status"] = "unknown"
    d = election.decide(view)["web"]
    assert not d["active"] and "node-c not heard from yet" in d["reason"]


def test_no_eligible_node_says_why_for_each():
    reports = {n: report(eligible=False) for n in NAMES[:2]}
    d = election.decide(view_for("node-a", reports, {"node-a", "node-b"}, PRIO))["web"]
    assert d["reason"] == ("web: stopped everywhere because there is no eligible node "
                           "(node-a is in standby; node-b is in standby)")


def test_two_nodes_that_cannot_see_each_other_learn_of_both_claims_through_a_common_peer():
    """node-a and node-b are cut from each other, node-c sees both: each has a majority
    with node-c and wins in its own view; node-c's report names both claims."""
    reports = {n: report() for n in NAMES[:3]}
    reports["node-a"]["apps"]["web"]["claim"] = True
    reports["node-b"]["apps"]["web"]["claim"] = True
    reports["node-c"]["apps"]["web"]["claims"] = ["node-a", "node-b"]
    a = election.decide(view_for("node-a", reports, {"node-a", "node-c"}, PRIO))["web"]
    b = election.decide(view_for("node-b", reports, {"node-b", "node-c"}, PRIO))["web"]
    assert not a["active"] and "node-b claims it too (it ranks lower and must yield first)" in a["reason"]
    assert not b["active"] and not b["claim"] and "node-a claims it too and ranks higher" in b["reason"]
    reports["node-b"]["apps"]["web"]["claim"] = False
    reports["node-c"]["apps"]["web"]["claims"] = ["node-a"]
    assert election.decide(view_for("node-a", reports, {"node-a", "node-c"}, PRIO))["web"]["active"]


def test_a_claim_counts_as_confirmed_only_once_the_peer_reports_seeing_it():
    reports = {n: report() for n in NAMES[:3]}
    view = view_for("node-a", reports, set(NAMES[:3]), PRIO)
    view["nodes"]["node-c"]["report"]["apps"]["web"]["claims"] = []
    d = election.decide(view)["web"]
    assert not d["active"] and "node-c must answer once after seeing our claim" in d["reason"]
