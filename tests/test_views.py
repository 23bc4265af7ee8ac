"""The regression set of recorded views (tests/views/, like Pacemaker's cts/scheduler).

Each tests/views/NAME.json holds a complete view as ``GET /v1/view`` returns it for the
node in ``view["me"]`` (some recorded from live daemons, see their "about"), whether
fencing is configured and which nodes are fenced, and per app the decision decide()
must return: its kind, its exact sentence, active, claim and, when waiting, the kinds
of its blockers (and, where given, the node to fence and the new epoch). The files are
the spec: a change of a sentence or a decision shows up here, file by file.

To add a case: ``curl -s http://NODE:PORT/v1/view > view.json`` at the interesting
moment (or edit a copy of a file here), check what ``hado explain APP --view FILE``
says, and write the file with its "about" and "expect".
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hado import config as config_mod, election
from hado.node import Node

REPO = Path(__file__).resolve().parent.parent
VIEWS = REPO / "tests" / "views"
FILES = sorted(VIEWS.glob("*.json"))

# Every blocker kind that election.blockers() and election.decide_app() can emit.
BLOCKER_KINDS = ("peer_holds", "peer_sees_holder", "not_heard", "silence_short", "not_down_everywhere",
                 "stop_budget", "fencing", "rival_claim", "unconfirmed", "claim_unsent")


def load(path):
    return json.loads(path.read_text())


def test_there_is_a_regression_set():
    assert len(FILES) >= 45, f"only {len(FILES)} files in {VIEWS}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_decide_gives_the_recorded_decision(path):
    case = load(path)
    assert case["about"].strip(), f"{path.name}: say what the scenario is in 'about'"
    decisions = election.decide(case["view"], case["fence_configured"], tuple(case["fenced"]))
    assert sorted(decisions) == sorted(case["expect"]), f"{path.name}: apps decided vs apps expected"
    for app, want in case["expect"].items():
        got = decisions[app]
        actual = {"kind": got["kind"], "reason": got["reason"], "active": got["active"], "claim": got["claim"]}
        expected = {k: want[k] for k in ("kind", "reason", "active", "claim")}
        if got["kind"] == "waiting" or "waits" in want:
            actual["waits"] = [w["kind"] for w in got["waits"]]
            expected["waits"] = want.get("waits")
        for optional in ("fence", "epoch", "winner"):
            if optional in want:
                actual[optional], expected[optional] = got[optional], want[optional]
        assert actual == expected, f"{path.name} [{app}]"


def test_the_files_cover_every_decision_kind_and_every_blocker_kind():
    kinds, blockers = set(), set()
    for path in FILES:
        for want in load(path)["expect"].values():
            kinds.add(want["kind"])
            blockers.update(want.get("waits") or ())
    missing_kinds = sorted(set(election.KINDS) - kinds)
    missing_blockers = sorted(set(BLOCKER_KINDS) - blockers)
    assert not missing_kinds and not missing_blockers, (
        f"no file in tests/views/ expects kind(s) {missing_kinds} / blocker kind(s) {missing_blockers}")
    unknown = sorted(blockers - set(BLOCKER_KINDS)) + sorted(kinds - set(election.KINDS))
    assert not unknown, f"kinds in the files that election does not know (or BLOCKER_KINDS lacks): {unknown}"


def live_view():
    """A view from a real Node object (not started: no sockets), for its keys."""
    raw = {"cluster": {"nodes": {"node-a": {"url": "http://127.0.0.1:7001"},
                                 "node-b": {"url": "http://127.0.0.1:7002"}}},
           "apps": {"web": {"resources": [{"name": "r", "plugin": "dummy", "args": {"path": "/nonexistent/r"}}]}}}
    config, _, _ = config_mod.validate(raw, "node-a")   # no secret file: irrelevant without start()
    node = Node(config)
    node.register_apps()
    node.state.configure_quorum(["node-b"], 2, config["cluster"]["dead_after"] / 2)
    return node.view()


def test_every_view_has_every_key_node_view_produces():
    live = live_view()
    me = live["nodes"][live["me"]]
    shapes = {"view": set(live), "quorum": set(live["quorum"]), "node": set(me), "report": set(me["report"]),
              "report app": set(me["report"]["apps"]["web"]), "app settings": set(live["apps"]["web"])}
    problems = []
    for path in FILES:
        view = load(path)["view"]

        def need(what, doc, where):
            missing = sorted(shapes[what] - set(doc))
            if missing:
                problems.append(f"{path.name}: {where} lacks {', '.join(missing)}")

        need("view", view, "the view")
        need("quorum", view["quorum"], "quorum")
        if view["quorum"]["votes"] != 1 + len(view["quorum"].get("voters", ())):
            problems.append(f"{path.name}: quorum votes is not 1 + len(voters)")
        for app, settings in view["apps"].items():
            need("app settings", settings, f"apps.{app}")
            if app not in view.get("confirmed", {}):
                problems.append(f"{path.name}: confirmed lacks {app}")
        for name, node in view["nodes"].items():
            need("node", node, f"nodes.{name}")
            report = node.get("report")
            if report is None:
                if name == view["me"] or node.get("status") == "up":
                    problems.append(f"{path.name}: nodes.{name} is {node.get('status')} without a report")
                continue
            need("report", report, f"nodes.{name}.report")
            for app in view["apps"]:
                if app not in report.get("apps", {}):
                    problems.append(f"{path.name}: nodes.{name}.report.apps lacks {app}")
                else:
                    need("report app", report["apps"][app], f"nodes.{name}.report.apps.{app}")
    assert not problems, "views unlike Node.view() (re-record or add the keys):\n  " + "\n  ".join(problems)


# ----- hado explain --view ---------------------------------------------------------------

def explain(*args):
    out = subprocess.run([sys.executable, "-m", "hado", "explain", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    return out.returncode, out.stdout.splitlines(), out.stderr


def test_explain_on_a_regression_file_says_what_the_file_expects():
    path = VIEWS / "oneway-cut-holder-silent-but-peer-sees-it.json"
    case = load(path)
    rc, lines, err = explain("web", "--view", str(path.relative_to(REPO)))
    assert rc == 0, err
    assert lines == ["web would be active on node-b: node-b has the highest priority 90 among 2 candidates",
                     f"on node-b: {case['expect']['web']['reason']}"]


def test_explain_on_a_bare_view_with_if_and_fencing_from_the_file(tmp_path):
    # a bare GET /v1/view answer: no fencing facts, so the file's fence_configured does not apply
    case = load(VIEWS / "fencing-before-takeover.json")
    bare = tmp_path / "view.json"
    bare.write_text(json.dumps(case["view"]))
    rc, lines, err = explain("web", "--view", str(bare), "--if", "node-c=standby")
    assert rc == 0, err
    assert lines[0].startswith("if node-c were standby: web would be active on node-b: web: active on node-b "
                               "because node-a is down"), lines
    assert lines[1].startswith("on node-b: web: active on node-b because"), lines
    # the regression file itself: fencing is configured there, so node-b fences first
    rc, lines, err = explain("web", "--view", str(VIEWS / "fencing-before-takeover.json"))
    assert rc == 0, err
    assert lines[1] == f"on node-b: {case['expect']['web']['reason']}" and lines[1].endswith("fencing it first")


def test_explain_view_errors_name_the_file(tmp_path):
    rc, _, err = explain("web", "--view", str(tmp_path / "missing.json"))
    assert rc == 1 and "cannot read" in err and "missing.json" in err
    junk = tmp_path / "junk.json"
    junk.write_text(json.dumps({"hello": 1}))
    rc, _, err = explain("web", "--view", str(junk))
    assert rc == 1 and "is not a view" in err and "no me" in err
    rc, _, err = explain("db", "--view", str(VIEWS / "fencing-before-takeover.json"))
    assert rc == 1 and "no app named 'db' (apps: web)" in err
