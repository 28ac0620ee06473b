"""How much memory a request manager's routing copy takes (issue 4: at most
30 bytes per RG and per table beyond the bytes of the keys themselves).

Usage:  .venv/bin/python bench/routing_memory.py [--groups 10000] [--tables 100000] [--ranges-per-table 4]

Builds the RoutingTable the metadata manager would push for that many groups
and tables (16-byte table names, 16-byte range start keys), turns it into the
router's compact form (server/router/routing.py), and reports its size two
ways: the arrays and blobs it holds (Routing.nbytes), and the Python heap the
construction left allocated (tracemalloc, the protobuf message freed first).
Then the per-RG and per-table cost beyond key bytes, and what fits in 4 GiB.
"""
from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from server.proto import meta_pb2  # noqa: E402
from server.router.routing import Routing  # noqa: E402


def build(groups: int, tables: int, ranges_per_table: int, seed: int = 7) -> meta_pb2.RoutingTable:
    rng = random.Random(seed)
    rt = meta_pb2.RoutingTable(version=1)
    for g in range(1, groups + 1):
        rt.groups.add(rg=g, leader=rng.randrange(1, 100), epoch=rng.randrange(1, 1 << 30))
    for t in range(tables):
        tr = rt.tables.add(name="t%015d" % t, table_id=t + 1)
        starts = [b""] + sorted(rng.randbytes(16) for _ in range(ranges_per_table - 1))
        for s in starts:
            tr.ranges.add(start=s, rg=rng.randrange(1, groups + 1))
    return rt


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--groups", type=int, default=10_000)
    p.add_argument("--tables", type=int, default=100_000)
    p.add_argument("--ranges-per-table", type=int, default=4)
    a = p.parse_args()
    rt = build(a.groups, a.tables, a.ranges_per_table)
    key_bytes = sum(len(t.name) for t in rt.tables) + sum(len(r.start) for t in rt.tables for r in t.ranges)
    ranges = a.tables * a.ranges_per_table
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    routing = Routing(rt)
    build_s = time.perf_counter() - t0
    del rt
    gc.collect()
    heap, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    nbytes = routing.nbytes()
    beyond = nbytes - key_bytes
    # Attribute the non-key bytes: 20 per RG, 12 per table, 8 per range (routing.py's layout).
    per_rg = 20
    per_table = (beyond - per_rg * a.groups) / a.tables
    lookups = 100_000
    names = [f"t{random.randrange(a.tables):015d}" for _ in range(lookups)]
    keys = [random.randbytes(16) for _ in range(lookups)]
    t0 = time.perf_counter()
    for n, k in zip(names, keys):
        routing.route(n, k)
    lookup_us = (time.perf_counter() - t0) / lookups * 1e6
    print(f"{a.groups:,} groups, {a.tables:,} tables, {ranges:,} ranges, {key_bytes / 2**20:.1f} MiB of names and keys")
    print(f"routing state: {nbytes / 2**20:.2f} MiB (arrays and blobs); Python heap held: {heap / 2**20:.2f} MiB")
    print(f"beyond key bytes: {beyond / 2**20:.2f} MiB = {per_rg} B per RG + {per_table:.1f} B per table "
          f"(12 B + {a.ranges_per_table} ranges x 8 B)")
    print(f"built in {build_s:.2f} s; route() {lookup_us:.2f} us per lookup")
    per_table_total = per_table + (key_bytes / a.tables)
    fit_tables = int((4 * 2**30 - per_rg * a.groups) / per_table_total)
    print(f"in 4 GiB: {a.groups:,} groups and about {fit_tables:,} tables like these "
          f"({per_table_total:.0f} B each with their names and keys); or {4 * 2**30 // per_rg:,} groups alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
