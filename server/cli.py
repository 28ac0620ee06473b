"""The `quorumkv` command line.

Subcommands so far:
  engine-demo   writes, reads, scans and reopens a table in the embedded
                engine and prints what it measured (the main job until the
                cluster exists).
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s" if seconds > 0 else "inf"


def engine_demo(args: argparse.Namespace) -> int:
    from engine import DB

    own_dir = args.data is None
    path = tempfile.mkdtemp(prefix="quorumkv-demo-") if own_dir else args.data
    n = args.records
    rng = random.Random(7)
    keys = [rng.randbytes(16) for _ in range(n)]
    value = b"v" * args.value_size
    print(f"quorumkv engine demo: {n:,} records of {args.value_size} B in {path}")
    try:
        with DB.open(path, sync="never") as db:
            if "stocks" not in db.tables():
                db.create_table("stocks")
            for name, price in ((b"b", b"100"), (b"a", b"120"), (b"c", b"135")):
                db.put("stocks", name, price)
            rec = db.get("stocks", b"a")
            print(f"  seed example: get(stocks, a) = {rec.value.decode()}  seq={rec.seq.hex()}")
            print("  list(stocks) =", [(k.decode(), v.decode()) for k, v, _ in db.scan("stocks")])
            if "demo" not in db.tables():
                db.create_table("demo")
            t = time.perf_counter()
            for k in keys:
                db.put("demo", k, value)
            dt = time.perf_counter() - t
            print(f"  put (unsynced)      {_rate(n, dt):>14}")
        with DB.open(path, sync="always") as db:
            batch_n = min(n, 10_000)
            t = time.perf_counter()
            for k in keys[:batch_n]:
                db.put("demo", k, value)
            dt = time.perf_counter() - t
            print(f"  put (fsync each)    {_rate(batch_n, dt):>14}   fsyncs={db.stats()['wal_syncs']}")
            sample = rng.sample(keys, min(n, 100_000))
            t = time.perf_counter()
            for k in sample:
                assert db.get("demo", k).value == value
            dt = time.perf_counter() - t
            print(f"  get (memtable)      {_rate(len(sample), dt):>14}")
            db.flush()
            db.compact_range()
            t = time.perf_counter()
            for k in sample:
                assert db.get("demo", k).value == value
            dt = time.perf_counter() - t
            print(f"  get (sstables)      {_rate(len(sample), dt):>14}")
            t = time.perf_counter()
            count = sum(1 for _ in db.scan("demo"))
            dt = time.perf_counter() - t
            print(f"  scan (ordered)      {_rate(count, dt):>14}   {count:,} records")
        t = time.perf_counter()
        with DB.open(path) as db:
            reopen = time.perf_counter() - t
            count = sum(1 for _ in db.scan("demo", keys_only=True))
            check = db.check()
            s = db.stats()
        print(f"  reopen              {reopen * 1000:>12.1f} ms  {count:,} records, "
              f"{check['files']} SSTables verified")
        print("  levels (files/MiB):", " ".join(f"L{i}={lv['files']}/{lv['bytes'] / 2**20:.1f}"
                                              for i, lv in enumerate(s["levels"]) if lv["files"]))
        return 0
    finally:
        if own_dir and not args.keep:
            shutil.rmtree(path, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quorumkv", description="quorumkv: a strongly consistent key-value database")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("engine-demo", help="exercise the embedded storage engine and print its figures")
    demo.add_argument("--records", type=int, default=200_000, help="records to write (default 200,000)")
    demo.add_argument("--value-size", type=int, default=100, help="value size in bytes (default 100)")
    demo.add_argument("--data", help="directory to use (default: a temp dir, removed afterwards)")
    demo.add_argument("--keep", action="store_true", help="keep the temp dir")
    demo.set_defaults(func=engine_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
