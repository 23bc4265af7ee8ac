"""Failover as a client sees it, in the network lab (prints figures, asserts nothing).

    sudo python3 bench/lab_failover.py [--rounds 10] [--timings fast,default] [--other on|off]

Three real hado daemons in network namespaces (tests/lab/netlab.py), the app one
``ipaddr`` VIP (lease 1 s), a client asking http://VIP:8080/ every 20 ms and a
sampler recording every 20 ms which nodes hold the VIP. For each timing set (fast:
heartbeat 0.2 s / dead_after 1.0 s; default: 0.5 s / 2.0 s), ``--rounds`` rounds of
each fault on the active node:

- ``kill -9`` of its hado (restarted after the failover);
- its link down (its bridge port set down; restored after the failover).

After each round the bench waits for calm (one active node holding the VIP, all
agreeing) and dead_after more. Figures per fault:

- *client outage*: from the last answer by the old node to the first answer by the
  new one (request send times; ``netlab.client_outage``);
- *fault -> served*: from the fault to the new node's first answer;
- *dual holding*: total time with two holders over the whole timing set, every round
  and every restart or restore included (must be 0);
- *other() before start*: what ipaddr's other() (duplicate address detection, asked
  right before every start) adds to each start, failovers included, from the daemons'
  ``checked: web/vip: ... (0.071 s)`` log lines. ``--other off`` runs the same rounds
  with ``"other": false`` on the VIP, to compare the *fault -> served* figures.

Needs root, iproute2 and nftables; everything stays inside the lab's namespaces, and
the lab is torn down at the end, also on failure or Ctrl-C.
"""

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import wait_for  # noqa: E402
from lab import netlab  # noqa: E402
from lab.netlab import Lab  # noqa: E402
import test_lab_cluster as labtests  # noqa: E402  (LabCluster and friends)

TIMINGS = {"fast": (0.2, 1.0), "default": (0.5, 2.0)}
FAULTS = ("kill -9", "link down")
CHECKED = re.compile(r"checked: \S+: other\(\) of \S+ finds no other holder before the \w+ \((\d+\.\d+) s\)")


def other_times(c):
    """Seconds each other() took right before a start, from every daemon's log."""
    found = []
    for node in c.names:
        path = c.dir / f"{node}.out"
        if path.exists():
            found += [float(m.group(1)) for m in CHECKED.finditer(path.read_text(errors="replace"))]
    return found


def figures(values):
    values = sorted(values)
    if not values:
        return "no rounds"
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return (f"n={len(values):2}  median {statistics.median(values):.3f} s  p95 {p95:.3f} s  "
            f"max {values[-1]:.3f} s")


def one_round(c, fault, probe, verbose):
    """Run one fault on the active node; (old, new, outage s, fault->served s)."""
    old = c.wait_calm(timeout=30)
    since = time.monotonic_ns()
    labtests.wait_answer(probe, old, since, 10, c)
    t0 = time.monotonic_ns()
    if fault == "kill -9":
        c.kill(old)
    else:
        c.lab.cut(old, "down")
    served = wait_for(lambda: next((a for a in probe.records() if a.sent_ns >= t0 and a.answer
                                    and a.answer != old), None), 30, 0.02,
                      what=f"an answer from another node than {old}\n{c.tails()}")
    new = served.answer
    c.wait_calm(names=[n for n in c.runners if n != old], timeout=30)
    if fault == "kill -9":
        c.start(old)
    else:
        c.lab.restore(old)
    c.wait_calm(timeout=30)
    answers = [a for a in probe.records() if a.sent_ns >= since]
    outage = netlab.client_outage(answers, old, new)
    took = (served.sent_ns - t0) / 1e9
    if verbose:
        print(f"    {fault:9} {old} -> {new}: outage {outage:.3f} s, served {took:.3f} s after the fault",
              flush=True)
    time.sleep(c.dead_after)   # calm: the restarted or restored node settles
    return old, new, outage, took


def run_timing(name, heartbeat, dead_after, rounds, verbose, other=True):
    print(f"{name}: heartbeat {heartbeat} s, dead_after {dead_after} s, other {'on' if other else 'off'}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="hado-lab-bench-") as tmp, Lab(3) as lab:
        c = labtests.LabCluster(lab, tmp, heartbeat=heartbeat, dead_after=dead_after, log_level="info",
                                resource=lambda vip: dict(labtests.ipaddr_vip(vip), other=other))
        try:
            c.start()
            c.wait_calm(timeout=30)
            takeover = c.takeover_after()
            results = {fault: [] for fault in FAULTS}
            with netlab.HolderSampler(lab, c.vip) as sampler, \
                    netlab.VipProbe(lab, c.vip, labtests.WEB_PORT) as probe:
                for fault in FAULTS:
                    for _ in range(rounds):
                        results[fault].append(one_round(c, fault, probe, verbose))
                samples = sampler.stop()
                probe.stop()
            checks = other_times(c)
        except BaseException:
            print(c.tails(), file=sys.stderr)
            raise
        finally:
            c.stop_all()
    count, seconds = netlab.dual_holding(samples)
    print(f"  takeover_after {takeover:.2f} s; sampler {netlab.sample_rate(samples):.0f} samples/s "
          f"over {(samples[-1].t_ns - samples[0].t_ns) / 1e9:.0f} s")
    for fault in FAULTS:
        outages = [r[2] for r in results[fault] if r[2] is not None]
        served = [r[3] for r in results[fault]]
        print(f"  {fault:9} client outage   {figures(outages)}")
        print(f"  {fault:9} fault -> served {figures(served)}")
    print(f"  dual holding: {seconds * 1000:.0f} ms in total ({count} samples with two holders)")
    if other:
        print(f"  other() before start   {figures(checks)}  (each start, failovers included)")
    else:
        print("  other() before start   off (\"other\": false): compare fault -> served with --other on")
    sys.stdout.flush()
    return results, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds of each fault per timing set")
    parser.add_argument("--timings", default="fast,default", help="comma-separated: fast, default")
    parser.add_argument("--quiet", action="store_true", help="no line per round")
    parser.add_argument("--other", choices=("on", "off"), default="on",
                        help="ask ipaddr's other() before each start (the default) or not")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 200:
        parser.error("--rounds must be 1..200")
    names = [t.strip() for t in args.timings.split(",") if t.strip()]
    unknown = [t for t in names if t not in TIMINGS]
    if unknown:
        parser.error(f"unknown timing set(s) {', '.join(unknown)}; choose from {', '.join(TIMINGS)}")
    reason = netlab.skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    for name in names:
        run_timing(name, *TIMINGS[name], args.rounds, not args.quiet, other=args.other == "on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
