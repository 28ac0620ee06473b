"""What many idle replication groups cost a node: CPU, threads, file descriptors, memory.

Usage (from the repository root):

    .venv/bin/python bench/idle_groups.py [--groups 100] [--seconds 5]

What it runs: a local cluster (server/local_cluster.py: a metadata manager
and three `quorumkv node` processes), then --groups groups over all three
nodes, created in one burst; it waits until every group has a leader, lets
the cluster settle for 2 s (past the nodes' 1 s idle threshold), and
measures --seconds of idle.

Reported: how many groups each node leads, the CPU each process used over
the idle window (% of one core), and the threads, open file descriptors and
RSS of the node leading the most groups.

Why: the seed sizes the system at 1,000 to 10,000 groups, so a group that
does nothing must cost almost nothing (bench/RESULTS.md, 2026-11-27 21:15
entry). Every process is started and stopped here (LocalCluster), in a
temporary directory that is removed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.rg_throughput import _proc_cpu_seconds  # noqa: E402 - also sets gRPC's environment first
from server.local_cluster import LocalCluster  # noqa: E402

SETTLE_SECONDS = 2.0


def _rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) // 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qkv-idle-") as tmp:
        with LocalCluster(os.path.join(tmp, "c"), nodes=3, node_args=["--log-level", "WARNING"]) as cluster:
            started = time.monotonic()
            for rg in range(1, args.groups + 1):
                cluster.create_group(rg, [1, 2, 3])
            leaders = Counter(cluster.wait_for_leader(rg)[0] for rg in range(1, args.groups + 1))
            elected = time.monotonic() - started
            time.sleep(SETTLE_SECONDS)
            procs = {f"node {nid}": n.pid for nid, n in sorted(cluster.nodes.items())}
            procs["meta"] = cluster.meta.pid
            before = {name: _proc_cpu_seconds([pid]) for name, pid in procs.items()}
            time.sleep(args.seconds)
            cpu = {name: 100 * (_proc_cpu_seconds([pid]) - before[name]) / args.seconds
                   for name, pid in procs.items()}
            busiest = cluster.nodes[leaders.most_common(1)[0][0]].pid
            threads = len(os.listdir(f"/proc/{busiest}/task"))
            fds = len(os.listdir(f"/proc/{busiest}/fd"))
            rss = _rss_mib(busiest)
    print(f"idle_groups: {args.groups} groups on 3 nodes, all led in {elected:.1f} s; "
          f"leaders per node: {', '.join(f'{n}: {leaders.get(n, 0)}' for n in (1, 2, 3))}")
    print(f"  idle CPU over {args.seconds:.0f} s (% of one core): "
          + ", ".join(f"{name} {pct:.1f}" for name, pct in cpu.items()))
    print(f"  the node leading the most groups: {threads} threads, {fds} file descriptors, {rss} MiB RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
