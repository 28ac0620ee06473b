"""The engine's public API: behaviour, errors, and that bad input writes nothing."""
from __future__ import annotations

import os
import threading

import pytest

from engine import (
    DB,
    DBClosedError,
    DBLockedError,
    InvalidArgumentError,
    QuorumKVError,
    TableExistsError,
    TableNotFoundError,
    WriteBatch,
)
from engine._native.sequencer import decode, encode
from engine.env_mem import MemEnv

SMALL = dict(write_buffer_size=16 * 1024, target_file_size=8 * 1024, level1_max_bytes=32 * 1024,
             l0_compaction_trigger=2, block_size=1024)


@pytest.fixture
def db(tmp_path):
    d = DB.open(str(tmp_path / "db"), sync="never", **SMALL)
    d.create_table("t")
    yield d
    d.close()


def test_seed_example(tmp_path):
    with DB.open(str(tmp_path / "db")) as db:
        db.create_table("stocks")
        s1 = db.put("stocks", b"b", b"100")
        s2 = db.put("stocks", b"a", b"120")
        s3 = db.put("stocks", b"c", b"135")
        assert s1 < s2 < s3
        assert db.get("stocks", b"a") == (b"120", s2)
        assert list(db.scan("stocks")) == [(b"a", b"120", s2), (b"b", b"100", s1), (b"c", b"135", s3)]


def test_put_overwrite_delete(db):
    s1 = db.put("t", b"k", b"v1")
    s2 = db.put("t", b"k", b"v2")
    assert s2 > s1
    assert db.get("t", b"k") == (b"v2", s2)
    s3 = db.delete("t", b"k")
    assert db.get("t", b"k") is None
    entry = db.get_entry("t", b"k")
    assert entry.deleted and entry.seq == s3 and entry.value is None
    db.delete("t", b"never-written")   # not an error
    assert db.get_entry("t", b"never-written").deleted


def test_explicit_seq_is_kept_and_observed(db):
    far = encode(2**62, 5, 99)
    assert db.put("t", b"k", b"v", seq=far) == far
    assert db.get("t", b"k").seq == far
    later = db.put("t", b"k2", b"v")
    assert later > far, "the generator must move past a seq it has seen"
    assert decode(later)[2] == 0


def test_empty_value_is_a_value(db):
    db.put("t", b"k", b"")
    assert db.get("t", b"k").value == b""


def test_tables_are_separate_keyspaces(db):
    db.create_table("u")
    db.put("t", b"k", b"in-t")
    db.put("u", b"k", b"in-u")
    assert db.get("t", b"k").value == b"in-t"
    assert db.get("u", b"k").value == b"in-u"
    assert [k for k, _, _ in db.scan("u")] == [b"k"]
    assert db.tables() == ["t", "u"]
    with pytest.raises(TableExistsError):
        db.create_table("u")


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a" * 129, "sp ace", "slash/", 7, None])
def test_bad_table_names(db, name):
    with pytest.raises(InvalidArgumentError):
        db.create_table(name)
    assert db.tables() == ["t"]


def test_unknown_table(db):
    for call in (lambda: db.put("nope", b"k", b"v"), lambda: db.get("nope", b"k"),
                 lambda: db.delete("nope", b"k"), lambda: list(db.scan("nope")), lambda: db.drop_table("nope")):
        with pytest.raises(TableNotFoundError, match="nope"):
            call()


BAD_PUTS = [
    (b"", b"v", "key must be 1 to 4096 bytes"),
    (b"k" * 4097, b"v", "key must be 1 to 4096 bytes"),
    ("str-key", b"v", "key must be bytes"),
    (bytearray(b"k"), b"v", "key must be bytes"),
    (None, b"v", "key must be bytes"),
    (b"k", b"v" * (1024 * 1024 + 1), "value must be at most"),
    (b"k", "str-value", "value must be bytes"),
    (b"k", None, "value must be bytes"),
]


@pytest.mark.parametrize("key,value,message", BAD_PUTS)
def test_bad_input_writes_nothing(db, key, value, message):
    before = db.stats()
    with pytest.raises(InvalidArgumentError, match=message):
        db.put("t", key, value)
    after = db.stats()
    assert after["writes"] == before["writes"] and after["wal_bytes"] == before["wal_bytes"]
    assert list(db.scan("t")) == []


def test_limits_are_inclusive(db):
    db.put("t", b"k" * 4096, b"v" * (1024 * 1024))
    assert len(db.get("t", b"k" * 4096).value) == 1024 * 1024


def test_bad_seq_and_applied_index(db):
    with pytest.raises(InvalidArgumentError, match="seq must be 16 bytes"):
        db.put("t", b"k", b"v", seq=b"short")
    with pytest.raises(InvalidArgumentError, match="applied_index"):
        db.put("t", b"k", b"v", applied_index=-1)
    assert db.get("t", b"k") is None


def test_bad_get_and_scan_arguments(db):
    with pytest.raises(InvalidArgumentError):
        db.get("t", "str")
    with pytest.raises(InvalidArgumentError):
        db.get("t", b"")
    with pytest.raises(InvalidArgumentError):
        db.scan("t", start="a")
    with pytest.raises(InvalidArgumentError):
        db.scan("t", limit=-1)


def test_write_batch_is_atomic(db):
    seqs = db.write(WriteBatch().put("t", b"a", b"1").put("t", b"b", b"2").delete("t", b"c"))
    assert len(seqs) == 3 and seqs == sorted(seqs)
    assert [k for k, _, _ in db.scan("t")] == [b"a", b"b"]
    bad = WriteBatch().put("t", b"x", b"1").put("t", b"", b"2")
    with pytest.raises(InvalidArgumentError):
        db.write(bad)
    assert db.get("t", b"x") is None
    with pytest.raises(TableNotFoundError):
        db.write(WriteBatch().put("t", b"y", b"1").put("missing", b"y", b"2"))
    assert db.get("t", b"y") is None


def _fill(db, n, table="t", prefix=b"key"):
    for i in range(n):
        db.put(table, prefix + b"%06d" % i, b"value-%d" % i)


def test_scan_bounds_limit_reverse(db):
    _fill(db, 300)
    db.flush()
    for i in range(0, 300, 3):   # newer versions in the memtable over older in tables
        db.put("t", b"key%06d" % i, b"new-%d" % i)
    for i in range(1, 300, 7):
        db.delete("t", b"key%06d" % i)
    model = {b"key%06d" % i: b"value-%d" % i for i in range(300)}
    model.update({b"key%06d" % i: b"new-%d" % i for i in range(0, 300, 3)})
    for i in range(1, 300, 7):
        del model[b"key%06d" % i]
    keys = sorted(model)
    assert [k for k, _, _ in db.scan("t")] == keys
    assert [k for k, _, _ in db.scan("t", reverse=True)] == keys[::-1]
    lo, hi = b"key000050", b"key000123"
    sub = [k for k in keys if lo <= k < hi]
    assert [k for k, _, _ in db.scan("t", start=lo, end=hi)] == sub
    assert [k for k, _, _ in db.scan("t", start=lo, end=hi, reverse=True)] == sub[::-1]
    assert [k for k, _, _ in db.scan("t", start=lo, limit=5)] == [k for k in keys if k >= lo][:5]
    assert [k for k, _, _ in db.scan("t", end=hi, limit=5, reverse=True)] == [k for k in keys if k < hi][::-1][:5]
    assert list(db.scan("t", limit=0)) == []
    assert all(v is None for _, v, _ in db.scan("t", keys_only=True))
    assert {k: v for k, v, _ in db.scan("t")} == model


def test_scan_is_a_consistent_snapshot_while_writes_go_on(db):
    _fill(db, 200)
    it = db.scan("t")
    first = next(it)
    for i in range(200):
        db.put("t", b"key%06d" % i, b"changed")
    db.put("t", b"zzz", b"new")
    db.flush()
    rest = list(it)
    assert first[1] == b"value-0"
    assert len(rest) == 199 and all(v.startswith(b"value-") for _, v, _ in rest)


def test_snapshot_survives_flush_and_compaction(db):
    db.put("t", b"k", b"old")
    with db.snapshot() as snap:
        db.put("t", b"k", b"new")
        db.delete("t", b"k2")
        _fill(db, 500)
        db.flush()
        db.compact_range()
        assert db.get("t", b"k", snapshot=snap).value == b"old"
        assert db.get("t", b"k").value == b"new"
        assert [k for k, _, _ in db.scan("t", snapshot=snap)] == [b"k"]


def test_flush_compaction_and_reopen_keep_everything(tmp_path):
    path = str(tmp_path / "db")
    with DB.open(path, sync="never", **SMALL) as db:
        db.create_table("t")
        _fill(db, 3000)
        db.compact_range()
        s = db.stats()
        assert s["flushes"] > 0 and s["compactions"] + s["trivial_moves"] > 0
        assert db.check()["entries"] >= 3000
    with DB.open(path, **SMALL) as db:
        assert sum(1 for _ in db.scan("t")) == 3000
        assert db.get("t", b"key001234").value == b"value-1234"


def test_overwrites_and_tombstones_are_compacted_away(db):
    for round_ in range(5):
        for i in range(200):
            db.put("t", b"key%04d" % i, b"r%d" % round_)
    for i in range(200):
        db.delete("t", b"key%04d" % i)
    db.compact_range()
    assert db.check()["entries"] == 0
    assert list(db.scan("t")) == []


def test_drop_table_frees_space(tmp_path):
    path = str(tmp_path / "db")
    with DB.open(path, sync="never", **SMALL) as db:
        db.create_table("big")
        db.create_table("keep")
        _fill(db, 2000, table="big")
        _fill(db, 10, table="keep")
        db.compact_range()
        assert db.check()["entries"] == 2010
        db.drop_table("big")
        assert db.tables() == ["keep"]
        with pytest.raises(TableNotFoundError):
            db.get("big", b"key000001")
        db.compact_range()
        assert db.check()["entries"] == 10
        db.create_table("big")   # a new, empty table of the old name
        assert list(db.scan("big")) == []
    with DB.open(path) as db:
        assert db.tables() == ["big", "keep"]
        assert list(db.scan("big")) == []
        assert len(list(db.scan("keep"))) == 10


def test_directory_lock(tmp_path):
    path = str(tmp_path / "db")
    db = DB.open(path)
    with pytest.raises(DBLockedError):
        DB.open(path)
    db.close()
    DB.open(path).close()


def test_failed_unsynced_write_makes_the_db_read_only(tmp_path):
    """A WAL write() that fails on the native fast path (UnsyncedFront) raises,
    turns every later write away, keeps reads going, and a reopen finds every
    write acknowledged before it and nothing of the failed one."""
    path = str(tmp_path / "db")
    db = DB.open(path, sync="never")
    db.create_table("t")
    db.put("t", b"a", b"1")
    read_only = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(read_only, db._wal.fd)   # the segment's descriptor now refuses writes (EBADF)
    finally:
        os.close(read_only)
    with pytest.raises(OSError):
        db.put("t", b"b", b"2")
    with pytest.raises(QuorumKVError, match="read-only after a background error"):
        db.put("t", b"c", b"3")
    assert db.get("t", b"a").value == b"1"
    assert db.get("t", b"b") is None
    db.close()
    with DB.open(path) as again:
        assert again.get("t", b"a").value == b"1"
        assert again.get("t", b"b") is None
        again.put("t", b"d", b"4")


def test_closed_db_refuses_writes(tmp_path):
    db = DB.open(str(tmp_path / "db"))
    db.create_table("t")
    db.close()
    with pytest.raises(DBClosedError):
        db.put("t", b"k", b"v")
    db.close()   # idempotent


def test_unknown_and_bad_options(tmp_path):
    with pytest.raises(InvalidArgumentError, match="unknown option"):
        DB.open(str(tmp_path / "a"), write_bufer_size=1)
    with pytest.raises(InvalidArgumentError, match="sync must be one of"):
        DB.open(str(tmp_path / "b"), sync="sometimes")
    with pytest.raises(InvalidArgumentError, match="create_if_missing"):
        DB.open(str(tmp_path / "c"), create_if_missing=False)


def test_group_commit_shares_fsyncs(tmp_path):
    with DB.open(str(tmp_path / "db"), sync="always") as db:
        db.create_table("t")
        barrier = threading.Barrier(16)

        def writer(t):
            barrier.wait()
            for i in range(100):
                db.put("t", b"%02d-%04d" % (t, i), b"v")

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        s = db.stats()
        assert s["writes"] == 1600
        assert sum(1 for _ in db.scan("t")) == 1600
        assert s["wal_syncs"] < s["writes"], "concurrent synced writers must share fsyncs"


def test_single_synced_put_is_one_fsync(tmp_path):
    with DB.open(str(tmp_path / "db"), sync="always") as db:
        db.create_table("t")
        before = db.stats()["wal_syncs"]
        for i in range(20):
            db.put("t", b"k%d" % i, b"v")
        assert db.stats()["wal_syncs"] - before == 20


def test_applied_index_without_wal(tmp_path):
    env = MemEnv()
    path = "/mem/db"
    db = DB.open(path, env=env, wal=False)
    db.create_table("t")
    db.put("t", b"a", b"1", applied_index=10)
    db.put("t", b"b", b"2", applied_index=11)
    db.flush()
    db.put("t", b"c", b"3", applied_index=12)
    assert db.applied_index == 11, "index 12 is only in the memtable, not durable"
    db._kill()
    env.crash()
    with DB.open(path, env=env, wal=False) as db:
        assert db.applied_index == 11
        assert db.get("t", b"b").value == b"2"
        assert db.get("t", b"c") is None   # the replication log replays it
        db.put("t", b"c", b"3", applied_index=12)
    with DB.open(path, env=env, wal=False) as db:   # a clean close flushes
        assert db.applied_index == 12 and db.get("t", b"c").value == b"3"


def test_applied_index_with_wal(tmp_path):
    path = str(tmp_path / "db")
    with DB.open(path, sync="always") as db:
        db.create_table("t")
        db.write(WriteBatch(applied_index=41).put("t", b"a", b"1"))
        db.write(WriteBatch(applied_index=42).put("t", b"b", b"1"))
        assert db.applied_index == 42
    with DB.open(path) as db:
        assert db.applied_index == 42


def test_write_encoded_applies_a_replicated_batch_and_observes_its_seqs(db):
    from engine._native import write_batch
    far = encode(2**62, 1, 9)
    tid = db._tids["t"]
    rep = write_batch.encode_many([(write_batch.VALUE, tid, b"a", b"1", far),
                                   (write_batch.DELETE, tid, b"b", None, encode(5, 0, 9))], applied_index=77)
    assert write_batch.max_seq(rep) == far
    db.write_encoded(rep)
    assert db.get("t", b"a") == (b"1", far)
    assert db.get_entry("t", b"b").deleted
    assert db.put("t", b"c", b"v") > far
    with pytest.raises(InvalidArgumentError, match="malformed"):
        db.write_encoded(rep[:-1])


def test_create_table_with_pinned_id(tmp_path):
    # The replication layer pins cluster-wide table ids, so every replica's
    # keys carry the same prefix and one encoded batch applies on all of them.
    with DB.open(str(tmp_path / "db")) as d:
        assert d.create_table("t7", table_id=7) == 7
        assert d.create_table("auto") == 8          # ids handed out later stay above pinned ones
        with pytest.raises(TableExistsError):
            d.create_table("other", table_id=7)
        d.put("t7", b"k", b"v")
        d.drop_table("auto")
        with pytest.raises(TableExistsError):
            d.create_table("again", table_id=8)     # a dropped id may still have keys on disk
        with pytest.raises(InvalidArgumentError):
            d.create_table("zero", table_id=0)
    with DB.open(str(tmp_path / "db")) as d:
        assert d.tables() == ["t7"]
        assert d.get("t7", b"k").value == b"v"
        assert d.create_table("next") == 9


def _background_threads(path: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"quorumkv-bg:{os.path.abspath(path)}"]


def test_background_thread_runs_only_while_there_is_work(tmp_path):
    """A node opens one DB per replica: idle DBs hold no thread. The thread
    starts with the first background work, exits after background_idle_seconds
    without any, and starts again when more comes; nothing is lost on the way."""
    path = str(tmp_path / "db")
    with DB.open(path, sync="never", background_idle_seconds=1.0, **SMALL) as db:
        db.create_table("t")
        assert _background_threads(path) == []          # opened: nothing to do yet
        db.put("t", b"a", b"1")
        db.flush()                                      # a flush is background work
        (bg,) = _background_threads(path)
        bg.join(timeout=10)                             # idle for 1 s: it exits by itself
        assert not bg.is_alive()
        assert _background_threads(path) == []
        db.put("t", b"b", b"2")
        db.flush()                                      # work again: a new thread does it
        assert len(_background_threads(path)) == 1
        assert [db.get("t", k).value for k in (b"a", b"b")] == [b"1", b"2"]
    assert _background_threads(path) == []              # close() joined it
    with DB.open(path) as db:
        assert db.get("t", b"b").value == b"2"


@pytest.mark.parametrize("idle", [0, -1, float("inf"), float("nan"), 86_401])
def test_background_idle_seconds_must_be_positive_and_finite(tmp_path, idle):
    with pytest.raises(InvalidArgumentError, match="background_idle_seconds must be positive, at most 86400"):
        DB.open(str(tmp_path / "db"), background_idle_seconds=idle)


def test_a_background_thread_that_cannot_start_makes_the_db_read_only_not_hung(tmp_path, monkeypatch):
    """With hundreds of DBs in a process a thread may be refused: writes that
    need a flush then fail at once (reopening recovers), nothing waits forever,
    and close() still releases the directory."""
    import engine.db as db_module

    class RefusedThread(threading.Thread):
        def start(self):
            raise RuntimeError("can't start new thread")

    path = str(tmp_path / "db")
    with DB.open(path, **SMALL) as db:
        db.create_table("t")
        db.put("t", b"a", b"1")
        monkeypatch.setattr(db_module.threading, "Thread", RefusedThread)
        with pytest.raises(QuorumKVError, match="can't start new thread"):
            db.flush()
        with pytest.raises(QuorumKVError):
            db.put("t", b"b", b"2")
        with pytest.raises(QuorumKVError):
            db.compact_range("t")
        monkeypatch.undo()
    with DB.open(path) as db:   # the WAL had it
        assert db.get("t", b"a").value == b"1"


def test_dbs_sharing_a_block_cache_each_read_their_own_blocks(tmp_path):
    """A node opens a DB per replica and gives them one block cache: one
    memory bound for all. Fresh DBs number their files alike (000005.sst in
    both), so each must key the shared cache with its own prefix; a key
    collision would hand one DB the other's blocks."""
    from engine._native.block_cache import BlockCache

    cache = BlockCache(4 << 20)
    # One flush each, no compaction: both DBs hold one SSTable of the same number and layout.
    dbs = [DB.open(str(tmp_path / name), sync="never", block_cache=cache, block_size=1024) for name in ("a", "b")]
    try:
        for i, db in enumerate(dbs):
            db.create_table("t")
            for k in range(200):
                db.put("t", b"k%04d" % k, b"db%d-%04d" % (i, k))
            db.flush()
        for _ in range(2):   # the second pass is served from the cache
            for i, db in enumerate(dbs):
                assert [db.get("t", b"k%04d" % k).value for k in range(0, 200, 7)] == \
                    [b"db%d-%04d" % (i, k) for k in range(0, 200, 7)]
                assert [(k, v) for k, v, _seq in db.scan("t", limit=2)] == \
                    [(b"k0000", b"db%d-0000" % i), (b"k0001", b"db%d-0001" % i)]
        assert [sorted(n for n in os.listdir(tmp_path / name) if n.endswith(".sst")) for name in ("a", "b")] == \
            [["000005.sst"], ["000005.sst"]]
        assert cache.hits > 0 and 0 < cache.used <= cache.capacity
        assert dbs[0].stats()["block_cache_bytes"] == dbs[1].stats()["block_cache_bytes"] == cache.used
    finally:
        for db in dbs:
            db.close()


def test_block_cache_option_must_be_a_block_cache(tmp_path):
    with pytest.raises(InvalidArgumentError, match="block_cache must be"):
        DB.open(str(tmp_path / "db"), block_cache={})


@pytest.mark.parametrize("shared", [False, True])
def test_block_cache_keys_do_not_wrap_at_large_file_numbers(tmp_path, shared):
    """Cache keys are number << 40 | offset: computed in 64 bits, file 2**24 + 5
    would take file 5's cached blocks (a helper's review found it)."""
    from engine._native.block_cache import BlockCache

    extra = {"block_cache": BlockCache(1 << 20)} if shared else {}
    with DB.open(str(tmp_path / "db"), sync="never", wal=False, **extra) as db:
        db.create_table("t")
        db.put("t", b"k", b"v1")
        db.flush()
        assert db.get("t", b"k").value == b"v1"          # its block is cached now
        assert "000005.sst" in os.listdir(tmp_path / "db")
        db._versions.next_file = 5 + 2**24 - 1          # the next flush's table: 5 + 2**24 (its WAL takes one)
        db.put("t", b"k", b"v2")
        db.flush()
        assert str(5 + 2**24) + ".sst" in os.listdir(tmp_path / "db")
        assert db.get("t", b"k").value == b"v2"
