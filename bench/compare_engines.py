"""Side-by-side comparison of quorumkv's storage engine with RocksDB, LevelDB, LMDB and SQLite.

Usage (from the repository root):

    .venv/bin/python bench/compare_engines.py [--n 1000000] [--gets 200000] [--runs 3]
        [--engines quorumkv,rocksdb,leveldb,lmdb,sqlite] [--out FILE]

Method
------
Data. N distinct 16-byte keys of random bytes from a fixed seed, each with a
100-byte value (50 random bytes repeated twice, so values compress about 2:1,
like db_bench's default). The data set is rebuilt identically in every process
from the seed; keys live in one bytes blob, not a list, so they add only 16
bytes per key to every engine's RSS.

Workloads (ops/s counts records):
  seq_put         N single puts in sorted key order, not synced
  rand_put        N single puts in random order, not synced
  batch_put_sync  N puts in atomic batches of 1,000, one sync per batch
  get             --gets point reads of random existing keys (after an untimed
                  load of all N keys in unsynced batches of 1,000; every read
                  must find its key)
  scan            one full ordered scan of the N keys (after the same load;
                  must return exactly N records)
  sync_put        --sync-puts sequential single puts, each synced: latency, and
                  syncs per put (quorumkv: db.stats()["wal_syncs"]; every
                  engine: fsync/fdatasync syscalls counted with strace)
  threads_sync    --threads writer threads doing --thread-puts synced puts
                  each: writes/s and records per fsync (group commit)

Engine settings. "Unsynced" means: the write is in the engine's log (WAL on)
but not fsynced. quorumkv DB.open(sync="never") with default options
(sync="always" for synced workloads); RocksDB (rocksdict, raw mode) default
options, WriteOptions.sync as the workload requires; LevelDB (plyvel) default
options, put/write_batch(sync=...); LMDB one transaction per put (per batch),
Environment(sync=..., metasync=...), map_size large enough for the data;
SQLite WAL journal, a WITHOUT ROWID table, one transaction per put (per
batch), synchronous=NORMAL when unsynced (no fsync at commit in WAL mode) and
FULL when synced.

Timing. Each (engine, workload, run) is a fresh subprocess with a fresh tmp
dir, so nothing is shared (page cache aside) and peak RSS (VmHWM from
/proc/self/status, read at the end) belongs to that engine and workload. Only
the engine calls are timed: the Python lists of keys and values fed to them
are built, 1,000 at a time, outside the timed region. The reported ops/s is
the median over --runs; runs are interleaved (run 1 of every engine and
workload, then run 2, ...) so drift on a shared machine hits all alike. Size
on disk is the allocated size (st_blocks, like du) of the dir after close.
Syscall counts use `strace -f -c` in separate untimed runs, minus a run of the
same workload with 0 operations, so open/close syncs cancel out.

The engine may be rebuilt by someone else during a run: a failed worker is
retried, and the report names the commit and the build each quorumkv row used.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:   # run as a script: sys.path[0] is bench/, the engine package lives in REPO
    sys.path.insert(1, REPO)
KEY_SIZE = 16
VALUE_SIZE = 100
VALUE_POOL_BYTES = 1 << 20
CHUNK = 1_000                # records per batch and per timed slice
SEED = 20240601
ENGINES = ("quorumkv", "rocksdb", "leveldb", "lmdb", "sqlite")
LOAD_WORKLOADS = ("seq_put", "rand_put", "batch_put_sync", "get", "scan")
SYNC_WORKLOADS = ("sync_put", "threads_sync")
SYNC_SYSCALLS = ("fsync", "fdatasync", "sync_file_range", "msync", "syncfs", "sync")
TABLE = "bench"


# ------------------------------------------------------------------- data set
class Dataset:
    """n distinct random keys (fixed seed) and their values, without a Python
    object per key: key i is blob[16 i : 16 i + 16]."""

    def __init__(self, n: int, seed: int = SEED):
        rng = random.Random(seed)
        self.n = n
        self.random_blob = rng.randbytes(KEY_SIZE * n)
        self._pool = rng.randbytes(VALUE_POOL_BYTES)
        self._seed = seed

    def sorted_blob(self) -> bytes:
        """The keys in byte order (two big-endian u64 columns, lexsorted)."""
        if self.n == 0:
            return b""
        cols = np.frombuffer(self.random_blob, dtype=">u8").reshape(self.n, 2)
        ordered = cols[np.lexsort((cols[:, 1], cols[:, 0]))]
        if np.all(ordered[1:] == ordered[:-1], axis=1).any():
            raise RuntimeError("duplicate random keys: choose another seed")
        return ordered.tobytes()

    def value(self, i: int) -> bytes:
        off = (i * 7919) % (VALUE_POOL_BYTES - VALUE_SIZE // 2)
        return self._pool[off:off + VALUE_SIZE // 2] * 2

    def chunks(self, blob: bytes) -> Iterator[tuple[list[bytes], list[bytes]]]:
        """(keys, values) CHUNK records at a time, in blob order."""
        for start in range(0, self.n, CHUNK):
            stop = min(start + CHUNK, self.n)
            yield ([blob[i * KEY_SIZE:(i + 1) * KEY_SIZE] for i in range(start, stop)],
                   [self.value(i) for i in range(start, stop)])

    def get_chunks(self, gets: int) -> Iterator[list[bytes]]:
        """gets random existing keys, CHUNK at a time."""
        idx = np.random.default_rng(self._seed + 1).integers(0, self.n, size=gets)
        blob = self.random_blob
        for start in range(0, gets, CHUNK):
            yield [blob[i * KEY_SIZE:(i + 1) * KEY_SIZE] for i in idx[start:start + CHUNK].tolist()]


# -------------------------------------------------------------------- engines
class Engine(ABC):
    """One engine behind the operations the workloads need. Each method does
    its whole slice of work (a Python loop over the records where the engine
    has no batch call), so every engine pays the same harness overhead."""

    name = ""

    @abstractmethod
    def open(self, path: str, synced: bool, n_hint: int) -> None:
        """Opens (creating) the store at path. synced: every put and every
        batch is durable (fsynced) before it returns; otherwise it is in the
        engine's log but not synced. n_hint: records the run will write."""

    @abstractmethod
    def put_each(self, keys: list[bytes], values: list[bytes]) -> None:
        """One single-record write per key."""

    @abstractmethod
    def write_batch(self, keys: list[bytes], values: list[bytes]) -> None:
        """All records in one atomic write (one sync when synced)."""

    @abstractmethod
    def get_each(self, keys: list[bytes]) -> int:
        """Reads every key; returns how many were found."""

    @abstractmethod
    def scan_all(self) -> int:
        """Iterates over every record in key order; returns how many."""

    @abstractmethod
    def thread_writer(self) -> Callable[[bytes, bytes], None]:
        """A put function for one writer thread (its own handle if needed)."""

    @abstractmethod
    def close(self) -> None: ...

    def stats(self) -> dict:
        """Engine counters worth reporting (quorumkv only)."""
        return {}


class QuorumKV(Engine):
    name = "quorumkv"

    def open(self, path: str, synced: bool, n_hint: int) -> None:
        from engine.db import DB
        self.db = DB.open(path, sync="always" if synced else "never")
        if TABLE not in self.db.tables():
            self.db.create_table(TABLE)

    def put_each(self, keys: list[bytes], values: list[bytes]) -> None:
        put = self.db.put
        for k, v in zip(keys, values):
            put(TABLE, k, v)

    def write_batch(self, keys: list[bytes], values: list[bytes]) -> None:
        from engine.db import WriteBatch
        batch = WriteBatch()
        for k, v in zip(keys, values):
            batch.put(TABLE, k, v)
        self.db.write(batch)

    def get_each(self, keys: list[bytes]) -> int:
        get = self.db.get
        return sum(1 for k in keys if get(TABLE, k) is not None)

    def scan_all(self) -> int:
        return sum(1 for _ in self.db.scan(TABLE))

    def thread_writer(self) -> Callable[[bytes, bytes], None]:
        put = self.db.put
        return lambda k, v: put(TABLE, k, v)

    def stats(self) -> dict:
        s = self.db.stats()
        keep = ("wal_syncs", "wal_records_synced", "records_per_sync", "flushes", "compactions",
                "trivial_moves", "stalls", "stall_seconds", "compaction_bytes_written")
        return {k: s[k] for k in keep} | {"l0_files": s["levels"][0]["files"]}

    def close(self) -> None:
        self.db.close()


class RocksDB(Engine):
    name = "rocksdb"

    def open(self, path: str, synced: bool, n_hint: int) -> None:
        from rocksdict import Options, Rdict, WriteOptions
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = Rdict(path, opts)
        self.wo = WriteOptions()
        self.wo.sync = synced
        self.db.set_write_options(self.wo)

    def put_each(self, keys: list[bytes], values: list[bytes]) -> None:
        put = self.db.put
        for k, v in zip(keys, values):
            put(k, v)

    def write_batch(self, keys: list[bytes], values: list[bytes]) -> None:
        from rocksdict import WriteBatch
        wb = WriteBatch(raw_mode=True)
        for k, v in zip(keys, values):
            wb.put(k, v)
        self.db.write(wb, self.wo)

    def get_each(self, keys: list[bytes]) -> int:
        get = self.db.get
        return sum(1 for k in keys if get(k) is not None)

    def scan_all(self) -> int:
        return sum(1 for _ in self.db.items())

    def thread_writer(self) -> Callable[[bytes, bytes], None]:
        return self.db.put

    def close(self) -> None:
        self.db.close()


class LevelDB(Engine):
    name = "leveldb"

    def open(self, path: str, synced: bool, n_hint: int) -> None:
        import plyvel
        self.db = plyvel.DB(path, create_if_missing=True)
        self.synced = synced

    def put_each(self, keys: list[bytes], values: list[bytes]) -> None:
        put, sync = self.db.put, self.synced
        for k, v in zip(keys, values):
            put(k, v, sync=sync)

    def write_batch(self, keys: list[bytes], values: list[bytes]) -> None:
        with self.db.write_batch(sync=self.synced) as wb:
            for k, v in zip(keys, values):
                wb.put(k, v)

    def get_each(self, keys: list[bytes]) -> int:
        get = self.db.get
        return sum(1 for k in keys if get(k) is not None)

    def scan_all(self) -> int:
        return sum(1 for _ in self.db.iterator())

    def thread_writer(self) -> Callable[[bytes, bytes], None]:
        put, sync = self.db.put, self.synced
        return lambda k, v: put(k, v, sync=sync)

    def close(self) -> None:
        self.db.close()


class LMDB(Engine):
    name = "lmdb"

    def open(self, path: str, synced: bool, n_hint: int) -> None:
        import lmdb
        self.env = lmdb.open(path, map_size=max(1 << 30, n_hint * 4096), sync=synced, metasync=synced)

    def put_each(self, keys: list[bytes], values: list[bytes]) -> None:
        begin = self.env.begin
        for k, v in zip(keys, values):
            with begin(write=True) as txn:
                txn.put(k, v)

    def write_batch(self, keys: list[bytes], values: list[bytes]) -> None:
        with self.env.begin(write=True) as txn:
            put = txn.put
            for k, v in zip(keys, values):
                put(k, v)

    def get_each(self, keys: list[bytes]) -> int:
        with self.env.begin() as txn:
            get = txn.get
            return sum(1 for k in keys if get(k) is not None)

    def scan_all(self) -> int:
        with self.env.begin() as txn:
            return sum(1 for _ in txn.cursor())

    def thread_writer(self) -> Callable[[bytes, bytes], None]:
        begin = self.env.begin

        def put(k: bytes, v: bytes) -> None:
            with begin(write=True) as txn:
                txn.put(k, v)
        return put

    def close(self) -> None:
        self.env.close()


class SQLite(Engine):
    name = "sqlite"
    _PUT = "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"

    def open(self, path: str, synced: bool, n_hint: int) -> None:
        os.makedirs(path, exist_ok=True)
        self.file = os.path.join(path, "kv.sqlite")
        self.synced = synced
        self._extra: list[sqlite3.Connection] = []
        self.conn = self._connect()
        self.conn.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")

    def _connect(self) -> sqlite3.Connection:
        """A connection with this run's pragmas (synchronous is per connection)."""
        conn = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.synced else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=600000")
        return conn

    def put_each(self, keys: list[bytes], values: list[bytes]) -> None:
        execute, sql = self.conn.execute, self._PUT
        for k, v in zip(keys, values):
            execute(sql, (k, v))

    def write_batch(self, keys: list[bytes], values: list[bytes]) -> None:
        conn = self.conn
        conn.execute("BEGIN")
        conn.executemany(self._PUT, zip(keys, values))
        conn.execute("COMMIT")

    def get_each(self, keys: list[bytes]) -> int:
        execute, sql = self.conn.execute, "SELECT v FROM kv WHERE k = ?"
        return sum(1 for k in keys if execute(sql, (k,)).fetchone() is not None)

    def scan_all(self) -> int:
        return sum(1 for _ in self.conn.execute("SELECT k, v FROM kv ORDER BY k"))

    def thread_writer(self) -> Callable[[bytes, bytes], None]:
        conn = self._connect()   # one connection per thread
        self._extra.append(conn)
        execute, sql = conn.execute, self._PUT
        return lambda k, v: execute(sql, (k, v))

    def close(self) -> None:
        for conn in self._extra:
            conn.close()
        self.conn.close()


ENGINE_CLASSES: dict[str, type[Engine]] = {c.name: c for c in (QuorumKV, RocksDB, LevelDB, LMDB, SQLite)}


# --------------------------------------------------------------------- worker
@dataclass
class Spec:
    """What one worker process runs."""
    engine: str
    workload: str
    n: int
    gets: int
    sync_puts: int
    threads: int
    thread_puts: int


def _rss_mib(field: str = "VmHWM") -> float:
    """VmHWM (peak resident set) or VmRSS (current) of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _disk_mib(path: str) -> float:
    """Allocated size of every file under path (like du), in MiB."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total / (1 << 20)


def _timed_puts(eng: Engine, data: Dataset, blob: bytes, batched: bool) -> tuple[int, float]:
    """Writes every record in blob order, CHUNK at a time; times only the engine calls."""
    write = eng.write_batch if batched else eng.put_each
    ops, elapsed = 0, 0.0
    for keys, values in data.chunks(blob):
        t = time.perf_counter()
        write(keys, values)
        elapsed += time.perf_counter() - t
        ops += len(keys)
    return ops, elapsed


def _threads_sync(eng: Engine, data: Dataset, threads: int, per_thread: int) -> tuple[int, float]:
    """threads writers, each doing per_thread synced puts of its own keys."""
    start = threading.Event()
    errors: list[BaseException] = []
    blob = data.random_blob

    def run(put: Callable[[bytes, bytes], None], first: int) -> None:
        start.wait()
        try:
            for i in range(first, first + per_thread):
                put(blob[i * KEY_SIZE:(i + 1) * KEY_SIZE], data.value(i))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(eng.thread_writer(), t * per_thread)) for t in range(threads)]
    for w in workers:
        w.start()
    t0 = time.perf_counter()
    start.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return threads * per_thread, elapsed


def _engine_build_time() -> str:
    """Newest modification time among engine/ sources and built modules: tells
    which build a quorumkv row ran on when the engine is rebuilt mid-run."""
    newest = 0.0
    for root, _, files in os.walk(os.path.join(REPO, "engine")):
        for name in files:
            if name.endswith((".py", ".so")):
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    return time.strftime("%H:%M:%S", time.localtime(newest))


def run_worker(spec: Spec) -> dict:
    """Runs one workload in this (fresh) process; returns its measurements."""
    build = _engine_build_time()
    eng = ENGINE_CLASSES[spec.engine]()
    w = spec.workload
    if w == "threads_sync":
        data = Dataset(spec.threads * spec.thread_puts)
    elif w == "sync_put":
        data = Dataset(spec.sync_puts)
    else:
        data = Dataset(spec.n)
    path = tempfile.mkdtemp(prefix=f"cmp-{spec.engine}-{w}-")
    baseline_rss = _rss_mib("VmRSS")
    reopened_disk = None
    try:
        eng.open(path, synced=w in ("batch_put_sync", "sync_put", "threads_sync"), n_hint=data.n)
        if w in ("seq_put", "rand_put", "batch_put_sync", "sync_put"):
            blob = data.sorted_blob() if w == "seq_put" else data.random_blob
            ops, elapsed = _timed_puts(eng, data, blob, batched=w == "batch_put_sync")
        elif w == "threads_sync":
            ops, elapsed = _threads_sync(eng, data, spec.threads, spec.thread_puts)
        else:
            _timed_puts(eng, data, data.random_blob, batched=True)   # untimed load
            if w == "get":
                ops, elapsed, found = 0, 0.0, 0
                for keys in data.get_chunks(spec.gets):
                    t = time.perf_counter()
                    found += eng.get_each(keys)
                    elapsed += time.perf_counter() - t
                    ops += len(keys)
                if found != ops:
                    raise RuntimeError(f"{spec.engine}: {ops - found} of {ops} gets missed existing keys")
            elif w == "scan":
                t = time.perf_counter()
                ops = eng.scan_all()
                elapsed = time.perf_counter() - t
                if ops != data.n:
                    raise RuntimeError(f"{spec.engine}: scan returned {ops} records, expected {data.n}")
            else:
                raise ValueError(f"unknown workload {w!r}")
        stats = eng.stats()
        eng.close()
        peak_rss = _rss_mib("VmHWM")
        disk = _disk_mib(path)
        if w in ("seq_put", "rand_put", "batch_put_sync"):
            # Engines differ in what close() leaves (rocksdict flushes the
            # memtable, quorumkv keeps its WAL): also measure after a reopen.
            again = ENGINE_CLASSES[spec.engine]()
            again.open(path, synced=False, n_hint=data.n)
            again.close()
            reopened_disk = _disk_mib(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return {"engine": spec.engine, "workload": w, "ops": ops, "seconds": elapsed,
            "ops_per_s": ops / elapsed if elapsed > 0 else 0.0, "peak_rss_mib": peak_rss,
            "baseline_rss_mib": baseline_rss, "disk_mib": disk, "reopened_disk_mib": reopened_disk,
            "stats": stats, "engine_build": build}


# --------------------------------------------------------------------- driver
ATTEMPTS = 3                 # a worker that fails is retried (the engine may be mid-rebuild)
RETRY_WAIT_S = 20


def _spawn(spec: Spec, timeout_s: float, strace_out: str | None = None) -> dict:
    """Runs one worker process; retries a failure up to ATTEMPTS times in all."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec.__dict__)]
    if strace_out is not None:
        cmd = ["strace", "-f", "-c", "-o", strace_out, "-e", "trace=" + ",".join(SYNC_SYSCALLS)] + cmd
    for attempt in range(1, ATTEMPTS + 1):
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"worker {spec.engine}/{spec.workload} failed (attempt {attempt}/{ATTEMPTS}):\n"
              f"{proc.stderr[-2000:]}", file=sys.stderr, flush=True)
        if attempt < ATTEMPTS:
            time.sleep(RETRY_WAIT_S)
    raise RuntimeError(f"worker {spec.engine}/{spec.workload} failed {ATTEMPTS} times")


def _engine_version() -> str:
    """git HEAD of the repository and whether engine/ has uncommitted changes."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"
    dirty = git("status", "--porcelain", "--", "engine")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted engine/ changes" if dirty else "")


def _count_sync_syscalls(spec: Spec, timeout_s: float) -> int:
    """fsync-family syscalls made by one worker run, from `strace -c`."""
    with tempfile.NamedTemporaryFile(prefix="cmp-strace-", suffix=".txt") as out:
        _spawn(spec, timeout_s, strace_out=out.name)
        total = 0
        for line in open(out.name):
            parts = line.split()
            if len(parts) >= 5 and parts[-1] in SYNC_SYSCALLS and parts[3].isdigit():
                total += int(parts[3])
        return total


@dataclass
class Cell:
    runs: list[dict] = field(default_factory=list)

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.runs)


def _fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def render(cells: dict[tuple[str, str], Cell], syscalls: dict[tuple[str, str], float],
           engines: Sequence[str], workloads: Sequence[str], args: argparse.Namespace) -> str:
    def ratio(w: str, e: str) -> str:
        base, cell = cells.get(("rocksdb", w)), cells[(e, w)]
        if base is None or not base.runs or not cell.runs or base.median("ops_per_s") == 0:
            return "n/a"
        return f"{cells[(e, w)].median('ops_per_s') / base.median('ops_per_s'):.2f}x"

    lines = [f"N = {args.n:,} keys (16 B) x 100 B values, {args.gets:,} gets, median of {args.runs} run(s)", "",
             "| workload | engine | ops/s (median) | min-max ops/s | vs RocksDB | peak RSS MiB "
             "| disk MiB after close | after reopen+close |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for w in (w for w in workloads if w in LOAD_WORKLOADS):
        for e in engines:
            c = cells[(e, w)]
            if not c.runs:
                lines.append(f"| {w} | {e} | failed | | | | | |")
                continue
            ops = [r["ops_per_s"] for r in c.runs]
            reopened = "-" if c.runs[0]["reopened_disk_mib"] is None else _fmt(c.median("reopened_disk_mib"), 1)
            lines.append(f"| {w} | {e} | {_fmt(c.median('ops_per_s'))} | {_fmt(min(ops))}-{_fmt(max(ops))} | "
                         f"{ratio(w, e)} | {_fmt(c.median('peak_rss_mib'))} | {_fmt(c.median('disk_mib'), 1)} "
                         f"| {reopened} |")
    baselines = [r["baseline_rss_mib"] for c in cells.values() for r in c.runs]
    if baselines:
        lines += ["", f"Peak RSS includes the harness itself (Python, numpy, the key blob): "
                  f"{_fmt(statistics.median(baselines))} MiB median before the engine opens."]
    if any(w in SYNC_WORKLOADS for w in workloads):
        lines += ["", f"Synced writes: sync_put = {args.sync_puts:,} sequential single synced puts; "
                  f"threads_sync = {args.threads} threads x {args.thread_puts:,} synced puts.", "",
                  "| engine | sync_put ops/s | us/put | WAL syncs/put (stats) | fsync syscalls/put (strace) "
                  f"| {args.threads} threads writes/s | vs RocksDB | records/WAL sync (stats) "
                  "| puts/fsync syscall (strace) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for e in engines:
            sp, th = cells.get((e, "sync_put")), cells.get((e, "threads_sync"))
            row = [e]
            if sp is not None and sp.runs:
                wal = sp.runs[-1]["stats"].get("wal_syncs")
                row += [_fmt(sp.median("ops_per_s")), _fmt(1e6 / sp.median("ops_per_s"), 0),
                        f"{wal / args.sync_puts:.3f}" if wal is not None else "-",
                        f"{syscalls[(e, 'sync_put')]:.3f}" if (e, "sync_put") in syscalls else "-"]
            else:
                row += ["-"] * 4
            if th is not None and th.runs:
                st = th.runs[-1]["stats"]
                per = syscalls.get((e, "threads_sync"))
                row += [_fmt(th.median("ops_per_s")), ratio("threads_sync", e),
                        f"{st['records_per_sync']:.1f}" if "records_per_sync" in st else "-",
                        f"{1 / per:.1f}" if per else "-"]
            else:
                row += ["-"] * 4
            lines.append("| " + " | ".join(row) + " |")
    qkv = [(w, cells[("quorumkv", w)]) for w in workloads
           if ("quorumkv", w) in cells and cells[("quorumkv", w)].runs and w in LOAD_WORKLOADS]
    if qkv:
        lines += ["", "quorumkv engine counters (last run): "
                  + "; ".join(f"{w}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                    for k, v in c.runs[-1]["stats"].items()
                                                    if k in ("flushes", "compactions", "stalls", "stall_seconds",
                                                             "l0_files"))
                            for w, c in qkv)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="keys loaded (default 1,000,000)")
    p.add_argument("--gets", type=int, default=200_000, help="random point reads (default 200,000)")
    p.add_argument("--runs", type=int, default=3, help="runs per engine and workload; the median is reported")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--workloads", default=",".join(LOAD_WORKLOADS + SYNC_WORKLOADS))
    p.add_argument("--sync-puts", type=int, default=1_000, help="sync_put: sequential synced puts")
    p.add_argument("--threads", type=int, default=64, help="threads_sync: writer threads")
    p.add_argument("--thread-puts", type=int, default=100, help="threads_sync: synced puts per thread")
    p.add_argument("--no-strace", action="store_true", help="skip the strace syscall counts")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per worker process")
    p.add_argument("--out", help="also write the markdown report to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(Spec(**json.loads(args.worker)))))
        return 0
    engines = [e for e in args.engines.split(",") if e]
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(engines) - set(ENGINES)) + sorted(set(workloads) - set(LOAD_WORKLOADS + SYNC_WORKLOADS))
    if unknown or args.runs < 1 or args.n < 1 or args.gets < 0:
        p.error(f"bad arguments: {unknown or 'runs and n must be >= 1, gets >= 0'}")

    def spec(e: str, w: str, scale: int = 1) -> Spec:
        return Spec(e, w, args.n, args.gets, args.sync_puts * scale, args.threads, args.thread_puts * scale)

    started = time.monotonic()
    version_before = _engine_version()
    cells = {(e, w): Cell() for e in engines for w in workloads}
    failures: list[str] = []
    for run in range(args.runs):
        for w in workloads:
            for e in engines:
                try:
                    result = _spawn(spec(e, w), args.timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    failures.append(f"run {run + 1} {w} {e}: {exc}")
                    continue
                cells[(e, w)].runs.append(result)
                print(f"[{time.monotonic() - started:7.1f}s] run {run + 1}/{args.runs} {w:15s} {e:9s} "
                      f"{result['ops_per_s']:>12,.0f} ops/s  rss {result['peak_rss_mib']:6.0f} MiB",
                      file=sys.stderr, flush=True)
    syscalls: dict[tuple[str, str], float] = {}
    if not args.no_strace and shutil.which("strace"):
        for w in (w for w in workloads if w in SYNC_WORKLOADS):
            ops = args.sync_puts if w == "sync_put" else args.threads * args.thread_puts
            for e in engines:
                try:
                    full = _count_sync_syscalls(spec(e, w), args.timeout)
                    empty = _count_sync_syscalls(spec(e, w, scale=0), args.timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    failures.append(f"strace {w} {e}: {exc}")
                    continue
                syscalls[(e, w)] = (full - empty) / ops
                print(f"[{time.monotonic() - started:7.1f}s] strace {w:15s} {e:9s} "
                      f"{full - empty} sync syscalls for {ops} puts", file=sys.stderr, flush=True)
    version_after = _engine_version()
    command = " ".join([os.path.relpath(sys.executable, REPO), "bench/compare_engines.py",
                        *(argv if argv is not None else sys.argv[1:])])
    header = [f"# Engine comparison ({time.strftime('%Y-%m-%d %H:%M %Z')}, {time.monotonic() - started:.0f} s)", "",
              f"Command: `{command}`", "", f"quorumkv version: {version_before}"]
    if version_after != version_before:
        header.append(f"WARNING: the engine changed during the run (now {version_after}); results mix versions.")
    builds: dict[str, list[str]] = {}
    for (e, w), c in cells.items():
        if e == "quorumkv":
            for r in c.runs:
                builds.setdefault(r["engine_build"], []).append(w)
    if len(builds) > 1:
        header += [f"quorumkv engine build of {b}: {', '.join(ws)}" for b, ws in sorted(builds.items())]
    header += [f"FAILED: {f.splitlines()[0]}" for f in failures]
    report = "\n".join(header) + "\n\n" + render(cells, syscalls, engines, workloads, args)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
