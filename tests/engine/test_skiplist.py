"""The memtable skiplist (engine/_native/skiplist.pyx) against a sorted Python
model: internal order, snapshot reads, tombstones, cursors in both
directions, cursors that outlive writes, large values and memory accounting."""
import bisect
import random
import sys
import threading

import pytest

from engine._native import write_batch as wb
from engine._native.sequencer import encode as seq_encode
from engine._native.skiplist import Memtable

SEED = 0x5C1B
DELETE, VALUE = wb.DELETE, wb.VALUE
MAX_LSN = 2**64 - 1
MiB = 1 << 20


def seq_of(lsn: int) -> bytes:
    return seq_encode((10**18 + lsn) % 2**64, lsn & 0xFFFFFFFF, 7)


def order(entry):
    """Internal order: key ascending (a prefix first), then lsn descending."""
    return (entry[0], -entry[1])


class Model:
    """Sorted list of (key, lsn, kind, seq, value)."""

    def __init__(self):
        self.entries = []

    def add(self, key, lsn, kind, value):
        e = (key, lsn, kind, seq_of(lsn), value if kind == VALUE else b"")
        bisect.insort(self.entries, e, key=order)
        return e

    def get(self, key, snap=MAX_LSN):
        i = bisect.bisect_left(self.entries, (key, -snap), key=order)
        if i < len(self.entries) and self.entries[i][0] == key:
            k, lsn, kind, seq, value = self.entries[i]
            return (kind, seq, value)
        return None

    def first_ge(self, key):
        """Index of the first entry whose key is >= key."""
        return bisect.bisect_left(self.entries, key, key=lambda e: e[0])

    def last_lt(self, key):
        """Index of the last entry whose key is < key (-1 if none)."""
        return self.first_ge(key) - 1


TABLE_PREFIXES = [b"\x00\x00\x00\x01", b"\x00\x00\x00\x02", b"\x00\x00\x01\x00", b"\xff\xff\xff\xff"]


def random_key(rng):
    # A tiny alphabet makes keys that are prefixes of each other, equal keys
    # with several versions, and 0x00 / 0xff edge bytes common. Half the keys
    # look like internal keys (4-byte table id + user key) and run past 12
    # bytes, with zero bytes around every position, so that any comparison
    # shortcut on a fixed-size, zero-padded key prefix is exercised.
    if rng.random() < 0.5:
        return bytes(rng.choice(b"ab\x00\xff") for _ in range(rng.randrange(1, 6)))
    return rng.choice(TABLE_PREFIXES) + bytes(rng.choice(b"\x00\x00\x01\xff") for _ in range(rng.randrange(0, 14)))


def build(rng, n, delete_ratio=0.2):
    mem, model = Memtable(), Model()
    lsns = rng.sample(range(1, 50 * n + 1), n)
    for lsn in lsns:
        key = random_key(rng)
        kind = DELETE if rng.random() < delete_ratio else VALUE
        value = rng.randbytes(rng.randrange(0, 40)) if kind == VALUE else b""
        mem.add(kind, key, lsn, seq_of(lsn), value)
        model.add(key, lsn, kind, value)
    return mem, model


def walk_forward(cursor, first):
    out = []
    e = first
    while e is not None:
        out.append(e)
        e = cursor.py_next()
    return out


def walk_backward(cursor, last):
    out = []
    e = last
    while e is not None:
        out.append(e)
        e = cursor.py_prev()
    return out


def test_empty_memtable():
    mem = Memtable()
    assert mem.count == 0 and mem.max_lsn == 0
    assert mem.get(b"a") is None
    c = mem.cursor()
    assert c.py_seek_first() is None
    assert c.py_seek_last() is None
    assert c.py_seek_ge(b"a") is None
    assert c.py_seek_lt(b"a") is None
    assert c.py_next() is None
    assert c.py_prev() is None


@pytest.mark.parametrize("trial", range(4))
def test_iteration_order_matches_model(trial):
    rng = random.Random(SEED + trial)
    mem, model = build(rng, 3000)
    c = mem.cursor()
    assert walk_forward(c, c.py_seek_first()) == model.entries, f"seed={SEED + trial}"
    assert walk_backward(c, c.py_seek_last()) == model.entries[::-1], f"seed={SEED + trial}"
    assert mem.count == 3000
    assert mem.max_lsn == max(e[1] for e in model.entries)


def test_prefix_keys_sort_first():
    mem = Memtable()
    for i, key in enumerate([b"abc", b"ab", b"abcd", b"a", b"b", b"ab\x00", b"\x00", b"\xff"]):
        mem.add(VALUE, key, i + 1, seq_of(i + 1), key)
    c = mem.cursor()
    keys = [e[0] for e in walk_forward(c, c.py_seek_first())]
    assert keys == [b"\x00", b"a", b"ab", b"ab\x00", b"abc", b"abcd", b"b", b"\xff"]


def test_versions_of_one_key_newest_first():
    mem = Memtable()
    for lsn in (5, 100, 1, 50, 2**64 - 2):
        mem.add(VALUE, b"k", lsn, seq_of(lsn), b"v%d" % lsn)
    c = mem.cursor()
    assert [e[1] for e in walk_forward(c, c.py_seek_first())] == [2**64 - 2, 100, 50, 5, 1]


@pytest.mark.parametrize("trial", range(3))
def test_get_at_every_snapshot_matches_model(trial):
    rng = random.Random(SEED + 10 + trial)
    mem, model = build(rng, 1500, delete_ratio=0.3)
    keys = sorted({e[0] for e in model.entries})
    snaps = [0, 1, MAX_LSN] + sorted({e[1] for e in model.entries})[::37]
    snaps += [rng.randrange(1, 80_000) for _ in range(20)]
    for key in keys + [b"absent-key", b"\x00" * 6]:
        for snap in snaps:
            assert mem.get(key, snap) == model.get(key, snap), (key, snap, f"seed={SEED + 10 + trial}")
        assert mem.get(key) == model.get(key)


def test_tombstone_hides_older_versions_and_keeps_its_seq():
    mem = Memtable()
    mem.add(VALUE, b"k", 1, seq_of(1), b"old")
    mem.add(DELETE, b"k", 2, seq_of(2))
    mem.add(VALUE, b"k", 3, seq_of(3), b"new")
    assert mem.get(b"k") == (VALUE, seq_of(3), b"new")
    assert mem.get(b"k", 2) == (DELETE, seq_of(2), b"")
    assert mem.get(b"k", 1) == (VALUE, seq_of(1), b"old")
    assert mem.get(b"k", 0) is None
    c = mem.cursor()
    assert [(e[1], e[2]) for e in walk_forward(c, c.py_seek_first())] == [(3, VALUE), (2, DELETE), (1, VALUE)]


def test_get_does_not_match_a_longer_or_shorter_key():
    mem = Memtable()
    mem.add(VALUE, b"ab", 1, seq_of(1), b"x")
    assert mem.get(b"a") is None
    assert mem.get(b"abc") is None
    assert mem.get(b"ab") == (VALUE, seq_of(1), b"x")


@pytest.mark.parametrize("trial", range(3))
def test_seek_ge_and_seek_lt_match_model(trial):
    rng = random.Random(SEED + 20 + trial)
    mem, model = build(rng, 2000)
    c = mem.cursor()
    probes = [random_key(rng) for _ in range(100)] + [e[0] for e in model.entries[::100]] + [b"\x00", b"\xff" * 7]
    for probe in probes:
        i = model.first_ge(probe)
        got = walk_forward(c, c.py_seek_ge(probe))
        assert got == model.entries[i:], (probe, f"seed={SEED + 20 + trial}")
        j = model.last_lt(probe)
        got = walk_backward(c, c.py_seek_lt(probe))
        assert got == model.entries[:j + 1][::-1], (probe, f"seed={SEED + 20 + trial}")


def test_short_walks_after_seeks():
    rng = random.Random(SEED + 30)
    mem, model = build(rng, 1000)
    c = mem.cursor()
    for _ in range(500):
        probe = random_key(rng)
        steps = rng.randrange(0, 6)
        if rng.random() < 0.5:
            i = model.first_ge(probe)
            e = c.py_seek_ge(probe)
            for s in range(steps + 1):
                want = model.entries[i + s] if i + s < len(model.entries) else None
                assert e == want
                if want is None:
                    break
                e = c.py_next()
        else:
            j = model.last_lt(probe)
            e = c.py_seek_lt(probe)
            for s in range(steps + 1):
                want = model.entries[j - s] if j - s >= 0 else None
                assert e == want
                if want is None:
                    break
                e = c.py_prev()


def test_cursor_sees_inserts_made_after_it_was_positioned():
    mem = Memtable()
    for i, key in enumerate([b"b", b"d", b"f"]):
        mem.add(VALUE, key, i + 1, seq_of(i + 1), key)
    c = mem.cursor()
    assert c.py_seek_first()[0] == b"b"
    mem.add(VALUE, b"a", 10, seq_of(10), b"a")      # behind the cursor: not seen going forward
    mem.add(VALUE, b"c", 11, seq_of(11), b"c")      # ahead: seen
    mem.add(VALUE, b"b", 12, seq_of(12), b"b2")     # newer version of the current key sorts before it
    mem.add(VALUE, b"b", 0, seq_of(0), b"b0")       # older version sorts right after it
    rest = [(e[0], e[1]) for e in walk_forward(c, c.py_next())]
    assert rest == [(b"b", 0), (b"c", 11), (b"d", 2), (b"f", 3)]
    # Backward from the end sees everything, including the entry behind it.
    all_back = [(e[0], e[1]) for e in walk_backward(c, c.py_seek_last())]
    assert all_back == [(b"f", 3), (b"d", 2), (b"c", 11), (b"b", 0), (b"b", 1), (b"b", 12), (b"a", 10)]


def test_cursor_keeps_the_memtable_alive():
    mem = Memtable()
    for i in range(100):
        mem.add(VALUE, b"key%03d" % i, i + 1, seq_of(i + 1), b"v" * 100)
    c = mem.cursor()
    first = c.py_seek_first()
    del mem
    rest = walk_forward(c, c.py_next())
    assert first[0] == b"key000"
    assert [e[0] for e in rest] == [b"key%03d" % i for i in range(1, 100)]
    assert all(e[4] == b"v" * 100 for e in rest)


def test_cursor_stays_valid_across_many_arena_blocks_of_writes():
    rng = random.Random(SEED + 40)
    mem, model = Memtable(), Model()
    lsn = 0
    for i in range(50):
        lsn += 1
        model.add(b"k%05d" % (i * 100), lsn, VALUE, b"x")
        mem.add(VALUE, b"k%05d" % (i * 100), lsn, seq_of(lsn), b"x")
    c = mem.cursor()
    seen = [c.py_seek_first()]
    # For the first 40 steps, insert enough between steps to allocate fresh
    # arena blocks (about 4 MiB in all); then walk to the end.
    steps = 0
    while seen[-1] is not None:
        steps += 1
        if steps <= 40:
            for _ in range(10):
                lsn += 1
                key = b"k%05d" % rng.randrange(5000)
                value = rng.randbytes(rng.randrange(1000, 20_000))
                mem.add(VALUE, key, lsn, seq_of(lsn), value)
                model.add(key, lsn, VALUE, value)
        seen.append(c.py_next())
    seen.pop()
    # What the cursor returned is in strictly increasing internal order, and
    # every entry it returned is exactly the model's entry.
    assert all(order(a) < order(b) for a, b in zip(seen, seen[1:]))
    model_set = set(model.entries)
    assert all(e in model_set for e in seen)
    assert mem.memory > 3 * MiB
    # A fresh walk sees the full model.
    c2 = mem.cursor()
    assert walk_forward(c2, c2.py_seek_first()) == model.entries


def test_reader_thread_walks_while_writer_thread_inserts():
    rng = random.Random(SEED + 50)
    mem = Memtable()
    for i in range(2000):
        mem.add(VALUE, b"%06d" % (i * 10), i + 1, seq_of(i + 1), b"v")
    errors = []
    writes = 30_000

    def writer():
        wrng = random.Random(SEED + 51)
        try:
            for lsn in range(10_000, 10_000 + writes):
                mem.add(wrng.choice([VALUE, DELETE]), b"%06d" % wrng.randrange(20_000), lsn, seq_of(lsn), b"w" * 50)
        except BaseException as exc:   # reported below
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    t = threading.Thread(target=writer)
    t.start()
    walks = 0
    try:
        # Walk while the writer runs (the writer is finite, so every walk ends).
        while t.is_alive() or walks < 5:
            walks += 1
            c = mem.cursor()
            if rng.random() < 0.5:
                seen = walk_forward(c, c.py_seek_ge(b"%06d" % rng.randrange(20_000)))
                assert all(order(a) < order(b) for a, b in zip(seen, seen[1:]))
            else:
                seen = walk_backward(c, c.py_seek_lt(b"%06d" % rng.randrange(20_000)))
                assert all(order(a) > order(b) for a, b in zip(seen, seen[1:]))
    finally:
        t.join()
        sys.setswitchinterval(old)
    assert not errors
    assert mem.count == 2000 + writes
    c = mem.cursor()
    full = walk_forward(c, c.py_seek_first())
    assert len(full) == mem.count
    assert all(order(a) < order(b) for a, b in zip(full, full[1:]))


def test_large_values_and_memory_accounting():
    mem = Memtable()
    base = mem.memory
    assert base > 0   # the head node
    rng = random.Random(SEED + 60)
    big = [rng.randbytes(MiB) for _ in range(4)]
    previous = base
    for i, value in enumerate(big):
        mem.add(VALUE, b"big%d" % i, i + 1, seq_of(i + 1), value)
        assert mem.memory >= previous + MiB + len(b"big0")
        previous = mem.memory
    small_before = mem.memory
    for i in range(1000):
        mem.add(VALUE, b"small%04d" % i, 100 + i, seq_of(100 + i), b"s" * 10)
    assert mem.memory >= small_before + 1000 * (10 + 9)
    assert mem.memory < small_before + 1000 * 200
    for i, value in enumerate(big):
        assert mem.get(b"big%d" % i) == (VALUE, seq_of(i + 1), value)
    c = mem.cursor()
    entry = c.py_seek_ge(b"big2")
    assert entry[0] == b"big2" and entry[4] == big[2]


def test_memory_grows_with_every_insert():
    mem = Memtable()
    last = mem.memory
    for i in range(2000):
        mem.add(DELETE, b"k%d" % i, i + 1, seq_of(i + 1))
        assert mem.memory > last
        last = mem.memory


def test_maximum_key_and_value_sizes():
    mem = Memtable()
    key = b"\x00\x00\x00\x01" + b"k" * 4096
    value = b"v" * MiB
    mem.add(VALUE, key, 1, seq_of(1), value)
    assert mem.get(key) == (VALUE, seq_of(1), value)


def test_apply_batch_assigns_consecutive_lsns():
    recs = [(VALUE, 1, b"a", b"va", seq_of(1)), (DELETE, 1, b"b", None, seq_of(2)),
            (VALUE, 2, b"a", b"", seq_of(3))]
    rep = wb.encode_many(recs)
    mem = Memtable()
    assert mem.apply_batch(rep, 100) == 3
    assert mem.count == 3 and mem.max_lsn == 102
    c = mem.cursor()
    got = walk_forward(c, c.py_seek_first())
    assert got == [
        (b"\x00\x00\x00\x01a", 100, VALUE, seq_of(1), b"va"),
        (b"\x00\x00\x00\x01b", 101, DELETE, seq_of(2), b""),
        (b"\x00\x00\x00\x02a", 102, VALUE, seq_of(3), b""),
    ]


def test_apply_batch_rejects_short_or_malformed_reps():
    mem = Memtable()
    with pytest.raises(ValueError):
        mem.apply_batch(b"\x01\x00", 1)
    rep = wb.encode_many([(VALUE, 1, b"a", b"va", seq_of(1)), (VALUE, 1, b"b", b"vb", seq_of(2))])
    with pytest.raises(ValueError):
        mem.apply_batch(rep[:-5], 1)


def test_add_rejects_bad_seq():
    mem = Memtable()
    with pytest.raises(ValueError):
        mem.add(VALUE, b"k", 1, b"short", b"v")
    with pytest.raises(TypeError):
        mem.add(VALUE, None, 1, seq_of(1), b"v")


def test_arena_starts_small_then_grows_in_huge_page_blocks():
    """A node keeps a memtable per replica, most idle: an empty one holds a
    64 KiB block, not a 2 MiB huge page; once past it, 2 MiB blocks."""
    m = Memtable()
    assert m.arena_bytes == 64 * 1024
    seq = seq_encode(1, 0, 1)
    for i in range(600):   # ~600 x 180 bytes: past the first block
        m.add(wb.VALUE, b"k%06d" % i, i + 1, seq, b"v" * 100)
    assert m.arena_bytes == 64 * 1024 + 2 * 1024 * 1024
    assert m.memory < m.arena_bytes
    assert m.get(b"k000599")[2] == b"v" * 100
