"""Failover and switchover times of a 3-node cluster on loopback (prints, asserts nothing).

    python3 bench/failover.py [--rounds 10] [--heartbeat 0.2] [--dead-after 1.0] [--lease 1]

The resource is a dummy with 0.5 s timeouts: without a lease the majority waits for
its stop budget (0.5 s in flight + 0.5 s stop, hado/bounds.py) on top of dead_after;
with ``--lease`` it is a leased resource like a VIP and takeover_after is
max(dead_after, lease + 0.35 + heartbeat).

Each round: kill -9 the active node, measure from the kill to the new node's resource
start (the dummy state file holds its time.monotonic_ns()), restart the killed node and
wait until all three agree. Then planned moves: from the request to the target's start.
Overlap: the total time two live nodes held the resource at once, from the dummy logs
(a killed node's leftover file does not count from its kill until it is cleaned up).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import Cluster, http, overlaps, wait_for, write_config  # noqa: E402


def figures(label, values):
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    print(f"{label:28} n={len(values):2}  median {statistics.median(values):.3f} s  p95 {p95:.3f} s  "
          f"max {values[-1]:.3f} s")


def started_ns(c, node):
    return int((c.dir / f"r-{node}").read_text().split()[0])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--heartbeat", type=float, default=0.2)
    parser.add_argument("--dead-after", type=float, default=1.0)
    parser.add_argument("--lease", type=float, default=None, help="give the dummy resource a lease (seconds)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hado-bench-") as tmp:
        c = Cluster(tmp, heartbeat=args.heartbeat, dead_after=args.dead_after)
        c.config["apps"]["web"]["resources"] = [c.dummy("r", lease=args.lease)]
        write_config(c.config_path, c.config)
        for d in c.daemons.values():
            d.log_level = "info"
        c.start()
        try:
            failovers, moves = [], []
            active = c.wait_active()
            wait_for(lambda: c.agree() == active, 10, what="agreement")
            for _ in range(args.rounds):
                killed_ns = time.monotonic_ns()
                c.kill(active)
                rest = [n for n in c.names if n != active]
                new = c.wait_active(names=rest, timeout=20)
                failovers.append((started_ns(c, new) - killed_ns) / 1e9)
                c[active].start()
                c[active].wait_ready()
                wait_for(lambda: c.agree() == new and len(c.active()) == 1 and not c.holds().count(active),
                         20, what="calm after restart")
                active = new
            for i in range(args.rounds):
                target = [n for n in c.names if n != active][i % 2]
                # a node restarted a moment ago may not have reported itself eligible yet
                wait_for(lambda: http(c[active].url + "/v1/view")[1]["nodes"][target]["report"]["apps"]["web"]
                         ["eligible"], 10, what=f"{target} eligible in {active}'s view")
                t0 = time.monotonic_ns()
                status, doc = http(c[active].url + "/v1/apps/web/move", {"node": target})
                assert status == 200, doc
                try:
                    wait_for(lambda: c.active() == [target], 20, what="move done")
                except AssertionError:
                    print(f"the move to {target} did not complete; logs in {tmp}")
                    raise
                moves.append((started_ns(c, target) - t0) / 1e9)
                wait_for(lambda: c.agree() == target, 10, what="agreement")
                active = target
            allowed = [(node, ns, 1 << 62) for node, ns in c.kills]
            # A killed node's file is cleaned up when it restarts: count from that stop on again.
            spans = overlaps(c.logs(), allowed)
            overlap = sum(hi - lo for _, _, lo, hi in spans) / 1e9
            print(f"3 nodes on loopback, heartbeat {args.heartbeat} s, dead_after {args.dead_after} s, "
                  + (f"a leased resource (lease {args.lease:g} s)" if args.lease else "an unleased resource") +
                  f"; takeover_after {c[active].state()['takeover_after_s']} s")
            figures("failover (kill -9 -> start)", failovers)
            figures("switchover (move -> start)", moves)
            print(f"{'overlap between holders':28} {overlap:.3f} s total over {len(spans)} span(s)")
        finally:
            c.stop_all()


if __name__ == "__main__":
    main()
