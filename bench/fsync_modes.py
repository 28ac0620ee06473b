"""What one small durable append costs, by how the log file's space is managed.

Usage (from the repository root):

    .venv/bin/python bench/fsync_modes.py [--dir DIR] [--appends 2000] [--runs 2]

What it runs: for each mode, 1 and then 2 processes at once (as a leader and
a follower on one disk), each appending 206-byte records (one replicated log
frame of a 100-byte put) to its own file, one fdatasync per record, one
record every ~0.2 ms; the median latency of write + fdatasync per process.

Modes:
  append    the file grows with every record (the log before 2026-11-28)
  reserved  space reserved ahead in 1 MiB steps with posix_fallocate
            (WritableFile.allocate; server/node/log_store.py segment rule 6)
  zeroed    the file written with zeros and synced first, then overwritten

Why: on ext4 an fdatasync that follows an append must also commit the new
file length to the journal; a write into space already reserved needs no
journal commit, and two processes' journal commits queue behind each other.
The files live in --dir (default: a temporary directory under the repository,
on the disk the nodes use), removed at the end.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time

RECORD = 206
STEP = 1 << 20
PAUSE_NS = 200_000


def _append(path: str, n: int, barrier) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    mode = os.path.basename(path).split("-")[0]
    rec = os.urandom(RECORD)
    if mode == "zeroed":
        os.write(fd, bytes(n * RECORD + STEP))
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    reserved = 0
    barrier.wait()
    lat = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        if mode == "reserved" and (i + 1) * RECORD > reserved:
            reserved = (i + 1) * RECORD + STEP
            os.posix_fallocate(fd, i * RECORD, reserved - i * RECORD)
        os.write(fd, rec)
        os.fdatasync(fd)
        lat.append(time.perf_counter_ns() - t0)
        pause_end = time.perf_counter_ns() + PAUSE_NS
        while time.perf_counter_ns() < pause_end:
            pass
    os.close(fd)
    return statistics.median(lat) / 1000


def _worker(path: str, n: int, barrier, out) -> None:
    out.put(_append(path, n, barrier))


def measure(directory: str, mode: str, processes: int, n: int) -> list[float]:
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(os.path.join(directory, f"{mode}-{k}"), n, barrier, out))
             for k in range(processes)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--appends", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=".fsync-modes-", dir=args.dir) as tmp:
        rows: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.runs):
            for mode in ("append", "reserved", "zeroed"):
                for processes in (1, 2):
                    rows.setdefault((mode, processes), []).extend(measure(tmp, mode, processes, args.appends))
    print(f"fsync_modes: {args.appends} appends of {RECORD} bytes per process, one fdatasync each; "
          f"median us of write + fdatasync over {args.runs} runs")
    for (mode, processes), values in rows.items():
        print(f"  {mode:9} {processes} process{'es' if processes > 1 else '  '}  {statistics.median(values):6.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
