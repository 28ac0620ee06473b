"""Per write at one client: how long each thread of each process ran, and how long it waited for a CPU.

Usage (from the repository root):

    .venv/bin/python bench/runqueue_waits.py [--seconds 3] [--runs 2]

What it runs: a local cluster (server/local_cluster.py: a metadata manager
and three `quorumkv node` processes) with one group over the three nodes,
and the one-client put load of bench/rg_throughput.py in this process. Around
each run it reads every thread's /proc/<pid>/task/<tid>/schedstat (time on a
CPU, time runnable but waiting on a runqueue, time slices).

Reported per run: writes/s, then for every thread that ran, microseconds run
and waited per write and time slices (wake-ups) per write.

Why: at one client a write is a chain of steps in four processes on two
cores; this shows whether its latency is CPU work or waiting for a CPU, and
which threads wait (bench/RESULTS.md, 2026-11-27 20:40 entry). Linux only.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.rg_throughput import _quorumkv_load  # noqa: E402 - also sets gRPC's environment first
from server.local_cluster import LocalCluster  # noqa: E402

RG = 1


def _schedstat(pid: int) -> dict[str, tuple[int, int, int]]:
    """thread -> (ns on a CPU, ns waiting on a runqueue, time slices)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns, wait_ns, slices = (int(x) for x in f.read().split())
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:   # the thread ended meanwhile
            continue
        out[f"{name}:{tid}"] = (run_ns, wait_ns, slices)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qkv-runq-") as tmp:
        with LocalCluster(os.path.join(tmp, "c"), nodes=3, node_args=["--log-level", "WARNING"]) as cluster:
            cluster.create_group(RG, [1, 2, 3])
            leader, _ = cluster.wait_for_leader(RG)
            procs = {("leader" if nid == leader else f"follower {nid}"): n.pid for nid, n in cluster.nodes.items()}
            procs["client"] = os.getpid()

            async def runs() -> None:   # one event loop for every run: grpc.aio binds to the first one
                for run in range(args.runs):
                    before = {name: _schedstat(pid) for name, pid in procs.items()}
                    res = await _quorumkv_load({RG: cluster.nodes[leader].address}, 1, args.seconds, "put", run,
                                               lambda: 0.0)
                    after = {name: _schedstat(pid) for name, pid in procs.items()}
                    print(f"run {run + 1}: {res.ops_per_s:,.0f} writes/s; per write: us run, us waiting, slices")
                    for name in procs:
                        for thread, (run_ns, wait_ns, slices) in sorted(after[name].items()):
                            r0, w0, s0 = before[name].get(thread, (0, 0, 0))
                            if run_ns - r0 > 0 and res.ops:
                                print(f"  {name:11} {thread:24} {(run_ns - r0) / res.ops / 1000:7.0f} "
                                      f"{(wait_ns - w0) / res.ops / 1000:7.0f} {(slices - s0) / res.ops:6.2f}")

            asyncio.run(runs())
    return 0


if __name__ == "__main__":
    sys.exit(main())
