"""A long run of the simulator (tests/sim.py): random clusters, timings and fault
schedules over the real observe/decide/act code; prints throughput and every double run
or liveness failure with what reproduces it. Asserts nothing.

    python3 bench/sim.py [--minutes 30] [--seed 0] [--wide] [--window 20]

Each scenario draws a cluster (3, 5, 2 + witness), timings (0.5/2.0 or 0.2/1.0), unleased
or leased resources and up to 8 faults (tests/sim.py ``random_schedule``: partitions,
one-way cuts, loss, delay, duplicates, crashes, restarts, freezes, standby, moves,
faults armed on the next node that starts or claims), runs ``--window`` sim seconds of
them, heals, and checks liveness. By default it stays in the envelope of
tests/test_sim.py's property test (timeouts 0.3 s, link delays under heartbeat/4);
``--wide`` also draws timeouts up to 2 s and delays up to 0.2 s, where the engine gaps
pinned in tests/test_sim.py show. Violations are counted by the marks of the resources
involved (tests/sim.py KNOWN; "unmarked" otherwise); every one is printed with its seed.
"""

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent.parent / "tests")]
import sim  # noqa: E402


def scenario(seed, wide, window):
    rng = random.Random(seed)
    heartbeat, dead_after = rng.choice([(0.5, 2.0), (0.2, 1.0)])
    params = {"cluster": rng.choice(["3", "5", "2+w"]), "heartbeat": heartbeat, "dead_after": dead_after,
              "leased": rng.random() < 0.5, "seed": seed,
              "start_timeout": rng.choice([0.3, 1.0, 2.0]) if wide else 0.3,
              "stop_timeout": rng.choice([0.3, 1.0, 2.0]) if wide else 0.3}
    n = len(sim.CLUSTERS[params["cluster"]][0])
    schedule = sim.random_schedule(rng, n, window, max_delay=0.2 if wide else heartbeat / 4)
    return params, schedule


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first scenario (default 0)")
    parser.add_argument("--window", type=float, default=20.0, help="sim seconds of faults per scenario")
    parser.add_argument("--wide", action="store_true", help="timeouts up to 2 s, delays up to 0.2 s")
    args = parser.parse_args()
    sim.quiet()

    began, cpu_began = time.monotonic(), time.process_time()
    deadline = began + args.minutes * 60
    totals = Counter()
    kinds, classes, found = Counter(), Counter(), []
    next_report = began + 30
    seed = args.seed
    mode = "wide" if args.wide else "envelope (timeouts 0.3 s, delays < heartbeat/4)"
    print(f"bench/sim.py: {args.minutes:g} min, scenarios from seed {args.seed}, {args.window:g} s of faults each, "
          f"{mode}", flush=True)
    while time.monotonic() < deadline:
        params, schedule = scenario(seed, args.wide, args.window)
        s = sim.Sim(excuse=(), **params)
        result = s.run(schedule, window=args.window)
        totals.update(scenarios=1, steps=s.steps, checks=s.checks, faults=s.faults_applied, messages=s.messages,
                      sim_seconds=s.now, gaps=len(result.gaps))
        kinds.update(f[1] for f in schedule)
        settle = result.settled_after
        if settle is not None:
            totals["settle_max_ms"] = max(totals["settle_max_ms"], int(settle * 1000))
        if result.violations or result.live is False:
            v = result.violations[0] if result.violations else None
            marks = sorted({m for ms in (v["marks"].values() if v else ()) for m in ms}) or ["unmarked"]
            what = ("double run: " + "+".join(marks)) if v else "not live"
            classes[what] += 1
            found.append((seed, what, params, schedule, result))
            print(f"  {what}: seed {seed} {params} schedule={schedule}"
                  + (f" at t={v['t']:.3f} on {v['nodes']}" if v else f": {s.liveness_problem}"), flush=True)
        seed += 1
        now = time.monotonic()
        if now >= next_report or now >= deadline:
            next_report = now + 30
            report(now - began, time.process_time() - cpu_began, totals, classes)
    print("faults drawn:", ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    print(f"gaps (an unleased resource left running by a killed or frozen hado; docs/cluster.rst): "
          f"{totals['gaps']} in {totals['scenarios']} scenarios")
    print(f"slowest settling after the heal: {totals['settle_max_ms'] / 1000:.2f} s")
    if found:
        print(f"{len(found)} scenario(s) failed; first:")
        seed, what, params, schedule, result = found[0]
        print(result.describe())
        print(f"reproduce: sim.Sim(excuse=(), **{params!r}).run({schedule!r}, window={args.window})")
    else:
        print("no double run, every scenario live")


def report(elapsed, cpu, totals, classes):
    """Rates per wall second, and per CPU second of this process (what a busy machine
    does not distort)."""
    print(f"[{elapsed:7.1f} s] {totals['scenarios']} scenarios, {totals['faults']} faults applied; "
          f"{totals['steps'] / elapsed:,.0f} steps/s, {totals['checks'] / elapsed:,.0f} invariant checks/s, "
          f"{totals['sim_seconds'] / elapsed:,.1f} sim s/s, {totals['messages'] / elapsed:,.0f} datagrams/s "
          f"(per CPU second: {totals['steps'] / cpu:,.0f} steps, {totals['checks'] / cpu:,.0f} checks, "
          f"{totals['sim_seconds'] / cpu:,.1f} sim s); violations: {dict(classes) or 'none'}", flush=True)


if __name__ == "__main__":
    main()
