"""Where one write's time goes: its steps in the client, the leader and both followers, on one clock.

Usage (from the repository root):

    .venv/bin/python bench/write_timeline.py [--writes 2000] [--max-seconds 60]

What it runs: a metadata manager and three `quorumkv node` processes
(server/local_cluster.py) with QKV_TIMELINE set, so every process records
timeline marks (server/timeline.py); one RG over the three nodes; one
closed-loop client in this process writing 100-byte values through a
DataClient (as bench/rg_throughput.py's one-client row does), marking when
each write is sent and answered.

Reported: for each mark that occurs in at least half of the writes, its
median time after the client sent the write, in microseconds, with the
process that made it (`leader`, `follower N`, `client`) and its occurrence
within the write (#2 = the second time that step ran during the write), and
the step from the row before. Medians of different rows come from different
writes, so the steps are a guide, not exact sums; the first 10% of the writes
(warm-up) are left out.

Why: at one client a write's latency is a chain of steps in four processes
sharing two cores (bench/RESULTS.md, 2026-11-27 13:15 entry); this shows
which links of the chain a change shortens, with less noise than writes/s.
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RG = TABLE = 1


def _load(path: str) -> list[tuple[int, str]]:
    with open(path) as f:
        return [(int(t), name) for t, name in (line.split() for line in f if line.strip())]


def _timeline(client: list[tuple[int, str]], procs: dict[str, list[tuple[int, str]]]) -> list[tuple[float, str, int]]:
    """(median microseconds after the send, 'process mark #k', share of writes) per mark."""
    sends = [t for t, name in client if name == "client.send"]
    answers = [t for t, name in client if name == "client.answer"]
    windows = list(zip(sends, answers))[len(sends) // 10:]
    times = {p: [t for t, _ in marks] for p, marks in procs.items()}
    offsets: dict[str, list[float]] = defaultdict(list)
    for t0, t1 in windows:
        offsets["client client.answer #1"].append((t1 - t0) / 1000)
        for p, marks in procs.items():
            lo, hi = bisect.bisect_left(times[p], t0), bisect.bisect_right(times[p], t1)
            seen: dict[str, int] = defaultdict(int)
            for t, name in marks[lo:hi]:
                seen[name] += 1
                offsets[f"{p} {name} #{seen[name]}"].append((t - t0) / 1000)
    rows = [(statistics.median(v), k, len(v) / len(windows)) for k, v in offsets.items()
            if len(v) >= len(windows) / 2]
    return sorted(rows)


async def _drive(address: str, writes: int, max_seconds: float) -> int:
    from engine._native import sequencer, write_batch
    from server import timeline
    from server.node.data_client import DataClient

    client = DataClient(address)
    value = os.urandom(100)
    deadline = time.monotonic() + max_seconds
    done = 0
    try:
        while done < writes and time.monotonic() < deadline:
            rep = write_batch.encode_one(write_batch.VALUE, TABLE, os.urandom(16), value,
                                         sequencer.encode(time.time_ns(), done, 9))
            timeline.mark("client.send")
            await client.write(RG, rep)
            timeline.mark("client.answer")
            done += 1
    finally:
        await client.close()
        timeline.flush()
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writes", type=int, default=2000)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--raw", type=int, default=0, metavar="N",
                    help="also print every mark of N writes from the middle of the run, in time order")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qkv-timeline-") as tmp:
        marks_dir = os.path.join(tmp, "marks")
        os.makedirs(marks_dir)
        os.environ["QKV_TIMELINE"] = marks_dir   # before server.timeline is imported, here and in the nodes
        import server  # noqa: F401 - gRPC's environment (server/grpc_env.py) before grpc loads
        from server.local_cluster import LocalCluster

        with LocalCluster(os.path.join(tmp, "c"), nodes=3, node_args=["--log-level", "WARNING"]) as cluster:
            cluster.create_group(RG, [1, 2, 3])
            leader, _ = cluster.wait_for_leader(RG)
            roles = {n.pid: ("leader" if nid == leader else f"follower {nid}") for nid, n in cluster.nodes.items()}
            started = time.monotonic()
            done = asyncio.run(_drive(cluster.nodes[leader].address, args.writes, args.max_seconds))
            elapsed = time.monotonic() - started
        # The nodes flushed their marks at exit (LocalCluster stopped them).
        procs = {role: _load(os.path.join(marks_dir, f"{pid}.marks")) for pid, role in roles.items()
                 if os.path.exists(os.path.join(marks_dir, f"{pid}.marks"))}
        client = _load(os.path.join(marks_dir, f"{os.getpid()}.marks"))
        # The client's own steps between its send and its answer (server/node/data_client.py).
        procs["client"] = [m for m in client if m[1] not in ("client.send", "client.answer")]
    print(f"write_timeline: {done} writes in {elapsed:.1f} s ({done / elapsed:.0f}/s), one client, "
          f"{os.cpu_count()} cores; median microseconds after the client sent a write")
    previous = 0.0
    for median, key, share in _timeline(client, procs):
        process, name, nth = key.rsplit(" ", 2)
        print(f"  {median:7.0f}  {median - previous:+6.0f}  {process:11} {name:18} {nth:3} "
              f"({100 * share:.0f}% of writes)")
        previous = median
    if args.raw:
        _print_raw(client, procs, args.raw)
    return 0


def _print_raw(client: list[tuple[int, str]], procs: dict[str, list[tuple[int, str]]], count: int) -> None:
    """Every mark of `count` consecutive writes from the middle of the run:
    what per-mark medians hide (a step that ran twice, an unexpected wake)."""
    sends = [t for t, name in client if name == "client.send"]
    answers = [t for t, name in client if name == "client.answer"]
    middle = len(sends) // 2
    merged = sorted((t, p, name) for p, marks in procs.items() for t, name in marks)
    times = [t for t, _, _ in merged]
    for t0, t1 in list(zip(sends, answers))[middle:middle + count]:
        print(f"write answered in {(t1 - t0) / 1000:.0f} us:")
        previous = t0
        for t, p, name in merged[bisect.bisect_left(times, t0):bisect.bisect_right(times, t1)]:
            print(f"  {(t - t0) / 1000:7.0f}  {(t - previous) / 1000:+6.0f}  {p:11} {name}")
            previous = t


if __name__ == "__main__":
    sys.exit(main())
