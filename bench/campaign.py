"""A long fault campaign in the network lab (prints figures; exit 1 on a violation).

    sudo python3 bench/campaign.py [--minutes 30] [--seed N] [--nodes 5 | --nodes 2+w]

Real hado daemons in network namespaces, two apps (``web``: an ipaddr VIP with a 1 s
lease in front of an HTTP service on every node; ``jobs``: a dummy resource without a
lease), a seeded nemesis applying and healing faults (kill -9 and restart, SIGSTOP,
link down, silent cut, one-way and two-way partitions, non-transitive partitions,
loss, a CPU hog, hado move, standby/online, reload), up to two at once, and a checker
over the whole history: tests/lab/campaign.py describes them and the rules.

Prints the schedule (the same for the same seed), every action as it happens, then:
faults applied per kind, safety and liveness violations (must be 0), the jobs overlaps
that the docs accept (a killed or frozen hado's unleased resource runs on), the share
of client probes answered beside an ideal system's, and per fault kind the failover
time (median, p95, max) of each app and the client's longest outage. On a violation
(or with --keep) everything goes into one folder, whose path is printed.

Needs root, iproute2 and nftables; traffic stays inside the lab's namespaces, and the
lab is torn down at the end, also on failure or Ctrl-C.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from lab import campaign, netlab  # noqa: E402


def parse_nodes(text):
    """"5" -> (5, False); "2+w" -> (3, True): two nodes and a witness."""
    text = text.strip().lower()
    witness = text.endswith("+w")
    number = text[:-2] if witness else text
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"--nodes takes a number of nodes, optionally +w (a witness), not {text!r}")
    runners = int(number)
    total = runners + (1 if witness else 0)
    if runners < 2 or total > 9:
        raise argparse.ArgumentTypeError("--nodes: 2 to 9 nodes in all")
    return total, witness


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="campaign length (default 30)")
    parser.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: random, printed)")
    parser.add_argument("--nodes", type=parse_nodes, default=(5, False),
                        help="5 (default), or 2+w: 2 nodes and a witness")
    parser.add_argument("--keep", action="store_true", help="write the report folder even without a violation")
    parser.add_argument("--report-dir", default=None, help="where the report folder goes (default: in the workdir)")
    parser.add_argument("--quiet", action="store_true", help="no line per action")
    args = parser.parse_args()
    if not 0.5 <= args.minutes <= 24 * 60:
        parser.error("--minutes must be 0.5 .. 1440")
    reason = netlab.skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    n_nodes, witness = args.nodes
    quiet = args.quiet

    def say(line):
        if not quiet or not line.startswith(("  [", "episode ")):
            print(line, flush=True)

    started = time.monotonic()
    result = campaign.run_campaign(n_nodes=n_nodes, seconds=args.minutes * 60, seed=args.seed, witness=witness,
                                   report_dir=args.report_dir, say=say, keep=args.keep)
    print()
    print(result.report())
    print(f"wall time {time.monotonic() - started:.0f} s")
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
