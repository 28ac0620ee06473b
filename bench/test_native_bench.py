"""Micro-benchmarks of quorumkv's native hot path (pytest-benchmark).

Run from the repository root:

    .venv/bin/python -m pytest bench/test_native_bench.py --benchmark-only

Not collected by the default `pytest` run (pyproject.toml: testpaths = ["tests"]).

What is measured (see bench/README.md for the full list):
  * Sequencer.next / next_many: cost of one 16-byte seq.
  * Memtable.apply_batch: inserting a pre-encoded 1,000-record write batch,
    into an empty memtable and into one already holding 100,000 records.
  * Memtable.get: lookups of present and absent keys in a 100,000-record memtable.
  * BlockBuilder: encoding one ~4 KiB data block through the Python surface
    (py_add per entry, then py_finish); Block: decoding it and find() on it.
  * bloom.may_contain: probes of present and absent keys.
  * Group commit: 1, 8 and 64 writer threads doing synced puts against a real
    DB (sync="always") in a tmp dir; writes/s and records per fsync.

Where a benchmark times a batch of N operations, extra_info carries the
per-operation cost (median round time / N) so results read as ns per record.
All inputs come from a fixed seed; every loop is bounded by a count.
"""
from __future__ import annotations

import random
import shutil
import tempfile
import threading
from collections.abc import Callable

import pytest

from engine._native import bloom, write_batch
from engine._native.sequencer import Sequencer
from engine._native.skiplist import Memtable
from engine._native.sstable_block import Block, BlockBuilder
from engine.db import DB

SEED = 20240601
KEY_SIZE = 16
VALUE_SIZE = 100
TABLE_ID = 1
TABLE_PREFIX = TABLE_ID.to_bytes(4, "big")   # internal key = table id (u32 BE) + user key
MAX_LSN = 2**64 - 1

BATCH_RECORDS = 1_000          # records per pre-encoded write batch
INSERT_ROUNDS = 30             # batches inserted per Memtable benchmark
PREFILL_RECORDS = 100_000      # records in the "warm" memtable
SEQ_NEXT_ROUNDS = 50
SEQ_NEXT_ITERATIONS = 10_000
LOOKUPS = 1_000                # gets / probes timed per round
BLOCK_TARGET_BYTES = 4 * 1024  # BlockBuilder is fed until its estimate reaches this
BLOOM_KEYS = 10_000
BLOOM_BITS_PER_KEY = 10
GROUP_COMMIT_PUTS_PER_WRITER = 64
GROUP_COMMIT_ROUNDS = 3


# ----------------------------------------------------------------- helpers
def _rng(salt: int = 0) -> random.Random:
    return random.Random(SEED + salt)


def _user_keys(n: int, salt: int = 0) -> list[bytes]:
    """n distinct random 16-byte keys from a fixed seed."""
    rng = _rng(salt)
    blob = rng.randbytes(KEY_SIZE * n)
    keys = list(dict.fromkeys(blob[i * KEY_SIZE:(i + 1) * KEY_SIZE] for i in range(n)))
    assert len(keys) == n, "16-byte random keys collided"
    return keys


def _value(rng: random.Random) -> bytes:
    """100 bytes, about half compressible (50 random bytes, repeated)."""
    return rng.randbytes(VALUE_SIZE // 2) * 2


def _encode_batches(keys: list[bytes], seqs: Sequencer, rng: random.Random) -> list[bytes]:
    """User keys in write batches of BATCH_RECORDS records of table TABLE_ID
    (the last may be shorter); the encoder prepends the table prefix."""
    batches = []
    for start in range(0, len(keys), BATCH_RECORDS):
        records = [(write_batch.VALUE, TABLE_ID, k, _value(rng), seqs.next())
                   for k in keys[start:start + BATCH_RECORDS]]
        batches.append(write_batch.encode_many(records))
    return batches


def _record_per_op(benchmark, ops: int, unit: str) -> None:
    """extra_info: ns per <unit> and <unit>s per second, from the median round
    time of `ops` operations (nothing under --benchmark-disable)."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return
    benchmark.extra_info["unit"] = unit
    benchmark.extra_info["ns_per_unit"] = round(stats.stats.median / ops * 1e9, 1)
    benchmark.extra_info["units_per_s"] = round(ops / stats.stats.median)


# ---------------------------------------------------------------- sequencer
def test_sequencer_next(benchmark) -> None:
    """One next() call; iterations amortize the timer's own cost (~100 ns)."""
    seqs = Sequencer(7)
    out = benchmark.pedantic(seqs.next, rounds=SEQ_NEXT_ROUNDS, iterations=SEQ_NEXT_ITERATIONS, warmup_rounds=1)
    assert len(out) == 16


@pytest.mark.parametrize("n", [1_000])
def test_sequencer_next_many(benchmark, n: int) -> None:
    seqs = Sequencer(7)
    out = benchmark(seqs.next_many, n)
    assert len(out) == 16 * n
    _record_per_op(benchmark, n, "seq")


# ----------------------------------------------------------------- memtable
@pytest.fixture(scope="module")
def insert_batches() -> list[bytes]:
    """INSERT_ROUNDS + 1 pre-encoded batches of distinct keys (one for warm-up)."""
    keys = _user_keys((INSERT_ROUNDS + 1) * BATCH_RECORDS, salt=1)
    return _encode_batches(keys, Sequencer(1), _rng(2))


@pytest.fixture(scope="module")
def prefilled() -> tuple[Memtable, list[bytes], int]:
    """A memtable holding PREFILL_RECORDS records, their internal keys, the next lsn."""
    keys = _user_keys(PREFILL_RECORDS, salt=3)
    mem = Memtable()
    lsn = 1
    for rep in _encode_batches(keys, Sequencer(1), _rng(4)):
        lsn += mem.apply_batch(rep, lsn)
    assert mem.count == PREFILL_RECORDS
    return mem, [TABLE_PREFIX + k for k in keys], lsn


def test_memtable_insert_empty(benchmark, insert_batches: list[bytes]) -> None:
    """apply_batch of 1,000 records into a fresh memtable each round."""
    batches = iter(insert_batches)

    def setup() -> tuple[tuple[Memtable, bytes], dict]:
        return (Memtable(), next(batches)), {}

    n = benchmark.pedantic(lambda mem, rep: mem.apply_batch(rep, 1), setup=setup,
                           rounds=INSERT_ROUNDS, warmup_rounds=1)
    assert n == BATCH_RECORDS
    _record_per_op(benchmark, BATCH_RECORDS, "record")


def test_memtable_insert_prefilled(benchmark, insert_batches: list[bytes]) -> None:
    """apply_batch of 1,000 records into a memtable of 100,000+ records
    (it grows by one batch per round)."""
    keys = _user_keys(PREFILL_RECORDS, salt=5)
    mem = Memtable()
    lsn = 1
    for rep in _encode_batches(keys, Sequencer(1), _rng(6)):
        lsn += mem.apply_batch(rep, lsn)
    batches = iter(insert_batches)
    lsns = iter(range(lsn, lsn + (INSERT_ROUNDS + 1) * BATCH_RECORDS, BATCH_RECORDS))

    def setup() -> tuple[tuple[bytes, int], dict]:
        return (next(batches), next(lsns)), {}

    n = benchmark.pedantic(mem.apply_batch, setup=setup, rounds=INSERT_ROUNDS, warmup_rounds=1)
    assert n == BATCH_RECORDS
    benchmark.extra_info["memtable_records_at_end"] = mem.count
    _record_per_op(benchmark, BATCH_RECORDS, "record")


@pytest.mark.parametrize("present", [True, False], ids=["present", "absent"])
def test_memtable_get(benchmark, prefilled: tuple[Memtable, list[bytes], int], present: bool) -> None:
    """LOOKUPS gets per round (Python loop over a bound method). Rounds walk
    through all PREFILL_RECORDS keys in random order, LOOKUPS at a time, so
    the skiplist paths are not cache-hot from the previous round."""
    mem, keys, _ = prefilled
    if present:
        probes = _rng(7).sample(keys, len(keys))
    else:
        probes = [TABLE_PREFIX + k for k in _user_keys(len(keys), salt=8)]
    chunks = [probes[i:i + LOOKUPS] for i in range(0, len(probes), LOOKUPS)]
    get = mem.get
    state = {"round": 0}

    def lookups() -> int:
        chunk = chunks[state["round"] % len(chunks)]
        state["round"] += 1
        hits = 0
        for key in chunk:
            if get(key, MAX_LSN) is not None:
                hits += 1
        return hits

    hits = benchmark(lookups)
    assert hits == (LOOKUPS if present else 0)
    _record_per_op(benchmark, LOOKUPS, "get")


# ------------------------------------------------------------- sstable block
@pytest.fixture(scope="module")
def block_entries() -> list[tuple[bytes, int, int, bytes, bytes]]:
    """Sorted (key, lsn, kind, seq, value) entries, enough to fill one 4 KiB block."""
    rng = _rng(9)
    seqs = Sequencer(1)
    keys = sorted(TABLE_PREFIX + k for k in _user_keys(256, salt=10))
    entries = []
    size = 0
    for i, key in enumerate(keys):
        entries.append((key, i + 1, write_batch.VALUE, seqs.next(), _value(rng)))
        size += len(key) + 25 + VALUE_SIZE + 3   # key, lsn+kind+seq, value, varints (upper bound)
        if size >= BLOCK_TARGET_BYTES:
            break
    return entries


def _build_block(entries: list[tuple[bytes, int, int, bytes, bytes]]) -> bytes:
    builder = BlockBuilder()
    add = builder.py_add
    for key, lsn, kind, seq, value in entries:
        add(key, lsn, kind, seq, value)
    return builder.py_finish()


def test_block_encode(benchmark, block_entries) -> None:
    """BlockBuilder: py_add per entry + py_finish for one ~4 KiB block."""
    payload = benchmark(_build_block, block_entries)
    benchmark.extra_info["entries"] = len(block_entries)
    benchmark.extra_info["block_bytes"] = len(payload)
    _record_per_op(benchmark, len(block_entries), "entry")


def test_block_decode(benchmark, block_entries) -> None:
    """Block(payload): the one-time decode a block-cache miss pays."""
    payload = _build_block(block_entries)
    block = benchmark(Block, payload)
    assert len(block) == len(block_entries)
    benchmark.extra_info["block_bytes"] = len(payload)
    _record_per_op(benchmark, len(block_entries), "entry")


def test_block_decode_and_find(benchmark, block_entries) -> None:
    """Decode, then find() every key of the block (cache-miss read path)."""
    payload = _build_block(block_entries)
    keys = [e[0] for e in block_entries]

    def decode_and_find() -> int:
        block = Block(payload)
        find = block.find
        hits = 0
        for key in keys:
            if find(key, MAX_LSN) is not None:
                hits += 1
        return hits

    assert benchmark(decode_and_find) == len(keys)
    _record_per_op(benchmark, len(keys), "find")


def test_block_find(benchmark, block_entries) -> None:
    """find() of every key in an already decoded block (cache-hit read path)."""
    block = Block(_build_block(block_entries))
    keys = [e[0] for e in block_entries]
    find = block.find

    def finds() -> int:
        hits = 0
        for key in keys:
            if find(key, MAX_LSN) is not None:
                hits += 1
        return hits

    assert benchmark(finds) == len(keys)
    _record_per_op(benchmark, len(keys), "find")


# -------------------------------------------------------------------- bloom
@pytest.fixture(scope="module")
def bloom_filter() -> tuple[bytes, list[bytes]]:
    keys = [TABLE_PREFIX + k for k in _user_keys(BLOOM_KEYS, salt=11)]
    return bloom.build_filter(bloom.hashes_of(keys), BLOOM_BITS_PER_KEY), keys


@pytest.mark.parametrize("present", [True, False], ids=["present", "absent"])
def test_bloom_may_contain(benchmark, bloom_filter: tuple[bytes, list[bytes]], present: bool) -> None:
    filt, keys = bloom_filter
    if present:
        probes = _rng(12).sample(keys, LOOKUPS)
    else:
        probes = [TABLE_PREFIX + k for k in _user_keys(LOOKUPS, salt=13)]
    may_contain = bloom.may_contain

    def probe() -> int:
        positives = 0
        for key in probes:
            if may_contain(filt, key):
                positives += 1
        return positives

    positives = benchmark(probe)
    if present:
        assert positives == LOOKUPS, "bloom filter has a false negative"
    else:
        benchmark.extra_info["false_positive_rate"] = positives / LOOKUPS
    _record_per_op(benchmark, LOOKUPS, "probe")


# ------------------------------------------------------------- group commit
class _GroupCommitRound:
    """One round: a fresh synced DB and `writers` threads parked on an event."""

    def __init__(self, writers: int, puts_per_writer: int):
        self.dir = tempfile.mkdtemp(prefix="qkv-bench-gc-")
        self.db = DB.open(self.dir, sync="always")
        self.db.create_table("t")
        self.start = threading.Event()
        self.errors: list[BaseException] = []
        rng = _rng(14)
        self.value = _value(rng)
        self.threads = [threading.Thread(target=self._write, args=(w, puts_per_writer), daemon=True)
                        for w in range(writers)]
        for t in self.threads:
            t.start()

    def _write(self, writer: int, puts: int) -> None:
        put, value = self.db.put, self.value
        prefix = writer.to_bytes(4, "big")
        self.start.wait()
        try:
            for i in range(puts):
                put("t", prefix + i.to_bytes(12, "big"), value)
        except BaseException as exc:   # reported by close()
            self.errors.append(exc)

    def run(self) -> None:
        self.start.set()
        for t in self.threads:
            t.join()

    def close(self) -> dict:
        stats = self.db.stats()
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.errors:
            raise self.errors[0]
        return stats


@pytest.mark.parametrize("writers", [1, 8, 64])
def test_wal_group_commit(benchmark, writers: int) -> None:
    """Synced puts from `writers` threads; all rounds' stats are summed."""
    puts = GROUP_COMMIT_PUTS_PER_WRITER
    totals = {"writes": 0, "wal_syncs": 0, "wal_records_synced": 0}

    made: list[_GroupCommitRound] = []

    def setup() -> tuple[tuple[_GroupCommitRound], dict]:
        made.append(_GroupCommitRound(writers, puts))
        return (made[-1],), {}

    def teardown(rnd: _GroupCommitRound) -> None:
        made.remove(rnd)
        stats = rnd.close()
        for name in totals:
            totals[name] += stats[name]

    run: Callable[[_GroupCommitRound], None] = _GroupCommitRound.run
    benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=GROUP_COMMIT_ROUNDS)
    for rnd in list(made):   # --benchmark-disable runs one round and no teardown (pytest-benchmark)
        teardown(rnd)
    rounds = 1 if benchmark.disabled else GROUP_COMMIT_ROUNDS
    assert totals["writes"] == writers * puts * rounds
    benchmark.extra_info["writers"] = writers
    benchmark.extra_info["puts_per_round"] = writers * puts
    benchmark.extra_info["wal_syncs_per_round"] = totals["wal_syncs"] / GROUP_COMMIT_ROUNDS
    benchmark.extra_info["records_per_fsync"] = round(totals["wal_records_synced"] / max(1, totals["wal_syncs"]), 2)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["writes_per_s"] = round(writers * puts / stats.stats.median)
