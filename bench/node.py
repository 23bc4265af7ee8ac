"""Cost of one node: 50 monitors and 20 dummy resources at 1 s intervals (prints, asserts nothing).

    python3 bench/node.py [--seconds 30] [--requests 3000]

Prints the daemon's CPU use over the idle period (from /proc/PID/stat), its peak RSS
(VmHWM), its thread count, and how many GET /v1/state one client on loopback gets
answered per second over one keep-alive connection.
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import Daemon, free_port, wait_for, write_config  # noqa: E402


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_field(pid, name):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split()[1]
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hado-bench-") as tmp:
        port = free_port()
        monitors = {f"m{i:02}": {"plugin": "disk_space", "args": {"path": "/", "min_free_mb": 1}, "interval": 1}
                    for i in range(50)}
        apps = {f"app{a}": {"resources": [{"name": f"r{i}", "plugin": "dummy", "interval": 1,
                                           "args": {"path": f"{tmp}/app{a}-r{i}"}} for i in range(5)]}
                for a in range(4)}
        config = write_config(Path(tmp) / "c.json", {"cluster": {"nodes": {"solo": {"url": f"http://127.0.0.1:{port}"}}},
                                                     "monitors": monitors, "apps": apps})
        d = Daemon(config, "solo", port, tmp, log_level="info").start()
        try:
            d.wait_ready()
            wait_for(lambda: all(a["role"] == "active" for a in d.state()["apps"].values()), 20, what="apps active")
            pid = d.proc.pid
            time.sleep(2)
            c0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.seconds)
            cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t0) * 100
            threads = status_field(pid, "Threads")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            size = 0
            t0 = time.monotonic()
            for _ in range(args.requests):
                conn.request("GET", "/v1/state")
                body = conn.getresponse().read()
                size = len(body)
            rate = args.requests / (time.monotonic() - t0)
            json.loads(body)
            rss = int(status_field(pid, "VmHWM")) / 1024
            print(f"node with 50 monitors and 20 resources (4 apps) at 1 s intervals, {args.seconds:g} s idle:")
            print(f"  CPU            {cpu:.2f} % of one core")
            print(f"  peak RSS       {rss:.1f} MB")
            print(f"  threads        {threads}")
            print(f"  /v1/state      {rate:.0f} requests/s ({size} bytes each, one keep-alive client)")
        finally:
            d.terminate()


if __name__ == "__main__":
    main()
