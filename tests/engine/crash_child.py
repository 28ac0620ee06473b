"""Child process for tests/engine/test_crash.py: applies a deterministic
sequence of puts and deletes to a DB opened with sync="always" (or the
QUORUMKV_CRASH_SYNC mode), printing the
index of each operation once it is acknowledged, until it is killed.

Usage: python crash_child.py DBDIR SEED START COUNT THREADS

Operation i is ops(SEED)[i]; thread t performs the operations whose key
belongs to it (key number % THREADS == t), in order, so each key has at most
one unacknowledged operation when the process dies.
"""
from __future__ import annotations

import os
import random
import sys
import threading

from engine import DB
from engine._native.sequencer import encode

KEYS = 400
TABLE = "crash"
# Small buffers so flushes and compactions happen every few hundred writes.
# QUORUMKV_CRASH_SYNC=never checks the unsynced path: a killed process (not
# a power loss) must still lose nothing it acknowledged, since write() hands
# the bytes to the kernel before the put returns.
DB_OPTIONS = dict(sync=os.environ.get("QUORUMKV_CRASH_SYNC", "always"), write_buffer_size=32 * 1024,
                  target_file_size=16 * 1024,
                  level1_max_bytes=64 * 1024, l0_compaction_trigger=2, block_cache_bytes=1 << 20)


def op(seed: int, i: int) -> tuple[bytes, bytes | None, bytes]:
    """(key, value or None for a delete, seq) of operation i."""
    rng = random.Random(seed * 1_000_003 + i)
    key = b"key%05d" % rng.randrange(KEYS)
    seq = encode(i + 1, 0, 7)
    if rng.random() < 0.15:
        return key, None, seq
    return key, b"value-%d-" % i + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))), seq


def key_thread(key: bytes, threads: int) -> int:
    return int(key[3:]) % threads


def main() -> None:
    path, seed, start, count, threads = sys.argv[1], *map(int, sys.argv[2:6])
    db = DB.open(path, **DB_OPTIONS)
    if TABLE not in db.tables():
        db.create_table(TABLE)
    print("ready", flush=True)
    out_lock = threading.Lock()

    def run(t: int) -> None:
        for i in range(start, start + count):
            key, value, seq = op(seed, i)
            if key_thread(key, threads) != t:
                continue
            if value is None:
                db.delete(TABLE, key, seq=seq)
            else:
                db.put(TABLE, key, value, seq=seq)
            with out_lock:
                sys.stdout.write(f"{i}\n")
                sys.stdout.flush()

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print("done", flush=True)
    db.close()


if __name__ == "__main__":
    main()
