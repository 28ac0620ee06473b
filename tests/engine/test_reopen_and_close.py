"""Reopen and close at the edges: file numbers WAL segments used, and what a close must flush or wake.

WAL segments roll (and memtables rotate) without a MANIFEST edit, so the
MANIFEST's next file number can be behind the segments on disk: an open that
handed one of those numbers out again truncated a segment it had just
replayed (data lost if the open then failed) or left an older one to be
replayed again later (deleted keys came back). A close with wal=False must
flush the immutable memtable and an applied index an empty batch moved; a
flush racing a close must end, not wait for a background thread that
stopped. Found by a review (session 10), each case failed before its fix.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

from engine import DB, QuorumKVError
from engine._native import write_batch
from engine.env_fault import FaultInjectionEnv
from engine.env_mem import MemEnv

PATH = "/fault/db"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_SEGMENTS = dict(wal_segment_bytes=200, write_buffer_size=1 << 20)


def _fill(db: DB, n: int = 30) -> None:
    db.create_table("t")
    for i in range(n):   # many segment rolls, no MANIFEST edit after them
        db.put("t", b"k%03d" % i, b"v" * 50)


def test_a_reopen_that_fails_after_replaying_loses_no_segment():
    env = FaultInjectionEnv()
    db = DB.open(PATH, env=env, **SMALL_SEGMENTS)
    _fill(db)
    db._kill()
    env.fail_after("sync", 3)   # the reopen fails at its last MANIFEST sync, then the power goes
    try:
        DB.open(PATH, env=env, **SMALL_SEGMENTS)
    except OSError:
        pass
    env.clear_faults()
    env.crash()
    db = DB.open(PATH, env=env, **SMALL_SEGMENTS)
    missing = [i for i in range(30) if db.get("t", b"k%03d" % i) is None]
    db.close()
    assert missing == []


CHILD = textwrap.dedent("""
    import os, signal, sys
    from engine import DB
    path, mode = sys.argv[1], sys.argv[2]
    db = DB.open(path, wal_segment_bytes=200, write_buffer_size=1 << 20)
    if mode == "write":
        db.create_table("t")
        for i in range(30):
            db.put("t", b"k%03d" % i, b"v" * 50)
        os.kill(os.getpid(), signal.SIGKILL)
    print("missing", [i for i in range(30) if db.get("t", b"k%03d" % i) is None])
    db.close()
""")


def test_a_process_killed_while_reopening_loses_no_acknowledged_write(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    path = str(tmp_path / "db")
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, str(child), path, "write"], env=env, timeout=120)
    killed = subprocess.run([sys.executable, str(child), path, "read"], capture_output=True, text=True,
                            env=dict(env, QUORUMKV_FAILPOINTS="manifest.before_current"), timeout=120)
    assert killed.returncode == -9, killed.stderr
    again = subprocess.run([sys.executable, str(child), path, "read"], capture_output=True, text=True, env=env,
                           timeout=120)
    assert "missing []" in again.stdout, again.stdout + again.stderr


def test_clean_reopens_never_replay_a_segment_twice():
    opts = dict(env=MemEnv(), **SMALL_SEGMENTS)
    db = DB.open(PATH, **opts)
    _fill(db)
    db.put("t", b"victim", b"old")
    db.close()
    db = DB.open(PATH, **opts)
    db.delete("t", b"victim")
    db.put("t", b"k000", b"new")
    db.flush()
    db.compact_range()   # the tombstone and the old value compacted away
    db.close()
    db = DB.open(PATH, **opts)
    victim, k0 = db.get("t", b"victim"), db.get("t", b"k000")
    db.close()
    assert victim is None and k0.value == b"new"   # neither resurrected by a stale segment


def test_a_clean_close_without_a_wal_keeps_an_immutable_memtable_and_an_applied_index():
    opts = dict(env=MemEnv(), wal=False, sync="never", write_buffer_size=4096)
    for i in range(10):
        path = f"/w/db{i}"
        db = DB.open(path, **opts)
        db.create_table("t")
        n = 0
        while db.stats()["memtable_bytes"] < 4096:
            db.put("t", b"k%04d" % n, b"v" * 64)
            n += 1
        db.write_encoded(write_batch.encode_many([], applied_index=7))   # rotates the full memtable
        db.close()
        db = DB.open(path, **opts)
        missing = sum(db.get("t", b"k%04d" % j) is None for j in range(n))
        applied = db.applied_index
        db.close()
        assert (missing, applied) == (0, 7), i


def test_a_flush_racing_a_close_returns_or_raises_and_never_hangs():
    for i in range(10):
        db = DB.open(f"/r/db{i}", env=MemEnv(), sync="never")
        db.create_table("t")
        for j in range(200):
            db.put("t", b"k%d" % j, b"v" * 100)
        outcome: list = []

        def flusher(db=db, outcome=outcome):
            try:
                db.flush()
                outcome.append("flushed")
            except QuorumKVError as exc:   # DBClosedError: closed under it
                outcome.append(exc)

        t = threading.Thread(target=flusher, daemon=True)
        t.start()
        db.close()
        t.join(10)
        assert not t.is_alive() and outcome, i


def test_close_waits_for_a_synced_group_commit_in_flight(monkeypatch):
    """A synced writer writes and fsyncs its group outside the mutex. close()
    used to close the WAL and release the directory lock meanwhile: the
    writer's fsync then hit a closed file, or its bytes landed in a segment
    another process had opened and replayed. close() now waits for it."""
    import engine.db as engine_db

    env = MemEnv()
    db = DB.open("/c/db", env=env)   # sync="always": the group-commit path
    db.create_table("t")
    parked, release = threading.Event(), threading.Event()
    real_hit = engine_db.failpoints.hit

    def hit(name):
        if name == "wal.after_write" and not parked.is_set():
            parked.set()
            release.wait(10)
        real_hit(name)
    monkeypatch.setattr(engine_db.failpoints, "hit", hit)
    outcome: list = []

    def writer():
        try:
            db.put("t", b"k", b"v")
            outcome.append("ok")
        except QuorumKVError as exc:
            outcome.append(exc)
    w = threading.Thread(target=writer, daemon=True)
    w.start()
    assert parked.wait(10)
    closer = threading.Thread(target=db.close, daemon=True)
    closer.start()
    closer.join(0.3)   # a bounded look: close() must NOT return while the write is in flight
    closed_early = not closer.is_alive()
    release.set()
    w.join(10)
    closer.join(10)
    assert not closed_early, "close() returned while a synced group commit was in flight"
    assert outcome == ["ok"] and not closer.is_alive()
    again = DB.open("/c/db", env=env)
    try:
        assert again.get("t", b"k").value == b"v"
    finally:
        again.close()


def test_close_waits_for_a_batch_leader_waiting_for_company(tmp_path):
    """sync="batch": the group's leader waits for company with the mutex
    released, before its WAL write. close() did not count it as in flight,
    closed the WAL, and the leader then wrote to the closed file (EBADF) or,
    on MemEnv, was acknowledged after close() had returned. Found by a review
    (session 11). Now the write fails with DBClosedError or is durable."""
    from engine import DBClosedError

    path = str(tmp_path / "db")
    db = DB.open(path, sync="batch", batch_wait_us=1_000_000)
    db.create_table("t")
    outcome: list = []

    def writer():
        try:
            db.put("t", b"k", b"v")
            outcome.append("ok")
        except BaseException as exc:  # noqa: BLE001 - what the caller would see
            outcome.append(exc)
    waiting = threading.Event()
    real_wait = db._queue.wait_for_company

    def wait_for_company(seconds):
        waiting.set()
        real_wait(seconds)
    db._queue.wait_for_company = wait_for_company
    w = threading.Thread(target=writer, daemon=True)
    w.start()
    assert waiting.wait(10)   # the leader waits for company, the mutex released
    db.close()
    w.join(10)
    assert outcome and (outcome[0] == "ok" or isinstance(outcome[0], DBClosedError)), outcome
    again = DB.open(path)
    try:
        assert (again.get("t", b"k") is not None) == (outcome[0] == "ok")
    finally:
        again.close()
