"""What a replica's deduplication window costs: memory per request id and time per recorded entry.

Usage (from the repository root):

    .venv/bin/python bench/dedup_memory.py [--windows 20] [--ids 50000]

What it runs: --windows DedupWindows (server/node/dedup.py), each filled past
its floor (DEDUP_WINDOW ids, 50,000) with one-request entries of one
record (a 16-byte seq each), stamped 1 ms apart (so the floor, not the 15 s
retention, bounds it), as a replica applying single puts under request ids
records them; all windows stay alive, as on a node hosting that many
busy replicas.

Reported: the process's resident memory growth per id held (RSS, so the
native map's memory counts too), the window's own accounting
(DedupWindow.nbytes, when it has it), and microseconds per record() call,
evictions included.

Why: every replica of a busy group holds a full window, and a node hosts
hundreds of replicas (bench/RESULTS.md, 2026-11-28 entries).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from server.node.dedup import APPLIED, DEDUP_WINDOW, DedupWindow  # noqa: E402


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=20)
    ap.add_argument("--ids", type=int, default=DEDUP_WINDOW + 10_000, help="entries recorded per window")
    args = ap.parse_args(argv)
    rng = random.Random(1)
    windows = []
    before = _rss()
    started = time.perf_counter()
    for _ in range(args.windows):
        w = DedupWindow()
        for index in range(1, args.ids + 1):   # stamped 1 ms apart: older than the retention span, kept by count
            seq = (index * 10**6).to_bytes(8, "big") + bytes(8)
            w.record(index, [(rng.getrandbits(64) | 1, APPLIED, rng.randbytes(16))], seq)
        windows.append(w)
    elapsed = time.perf_counter() - started
    held = sum(len(w) for w in windows)
    own = getattr(windows[0], "nbytes", None)
    print(f"dedup_memory: {args.windows} windows holding {len(windows[0])} ids each: "
          f"{(_rss() - before) / held:.0f} bytes per id (RSS)"
          + (f", {own / len(windows[0]):.0f} by DedupWindow.nbytes" if own is not None else "")
          + f"; record() {elapsed / (args.windows * args.ids) * 1e6:.1f} us per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
