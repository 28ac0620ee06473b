"""ReplicaStorage: applying entries, snapshots out and in, and a crash at every step of an install."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from engine._native import write_batch
from engine.env import DEFAULT_ENV
from engine.errors import CorruptionError
from server.node import replica_storage
from server.node.replica_storage import ReplicaStorage
from server.replication.messages import LogPosition
from server.replication.ready import HardState, StagedChunk

sys.path.insert(0, os.path.dirname(__file__))
from replica_storage_child import apply, entries  # noqa: E402 - the child's helpers, next to this file

CHILD = os.path.join(os.path.dirname(__file__), "replica_storage_child.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_child(tmp_path, failpoint: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    if failpoint:
        env["QUORUMKV_FAILPOINTS"] = failpoint
    return subprocess.run([sys.executable, CHILD, str(tmp_path / "source"), str(tmp_path / "target")],
                          env=env, capture_output=True, text=True, timeout=120)


def reopen(tmp_path) -> tuple[ReplicaStorage, dict[bytes, bytes]]:
    s = ReplicaStorage(str(tmp_path / "target"), node_id=2)
    data = {k: v for k, v, _ in s.db.scan("t7")} if "t7" in s.db.tables() else {}
    return s, data


def test_install_replaces_data_and_log(tmp_path):
    proc = run_child(tmp_path, None)
    assert proc.returncode == 0, proc.stderr
    s, data = reopen(tmp_path)
    try:
        assert data == {b"key-%04d" % i: b"new" for i in range(1, 51)}
        st = s.durable_state()
        assert (st.base.epoch, st.base.index, st.entries, st.applied_index) == (1, 50, [], 50)
        assert s.db.last_seq >= (51).to_bytes(8, "big") + bytes(8)
        assert not os.path.exists(tmp_path / "target" / "snapshot.staging")
        # The source's dropped table stays dropped here: a write that raced its drop is voided alike.
        assert s.apply([write_batch.encode_one(write_batch.VALUE, 8, b"late", b"x", bytes(15) + b"\x01")]) == {8}
    finally:
        s.close()


@pytest.mark.parametrize("point", ["snapshot.before_log", "snapshot.after_log", "snapshot.mid_swap"])
def test_crash_at_each_install_step_leaves_old_or_new_never_a_mix(tmp_path, point):
    proc = run_child(tmp_path, point)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    assert "PREPARED" in proc.stdout and "INSTALLED" not in proc.stdout
    s, data = reopen(tmp_path)
    try:
        st = s.durable_state()
        if point == "snapshot.before_log":   # the log never named the snapshot: the old state
            assert st.base.index == 0 and [e.index for e in st.entries] == list(range(1, 11))
            assert data == {b"key-%04d" % i: b"old" for i in range(1, 11)}
        else:                                 # the log named it: the install is finished on open
            assert (st.base.index, st.entries, st.applied_index) == (50, [], 50)
            assert data == {b"key-%04d" % i: b"new" for i in range(1, 51)}
        assert not os.path.exists(tmp_path / "target" / "db.installing")
        assert not os.path.exists(tmp_path / "target" / "db.old")
        # Replay rule: the engine never holds less than the log's base.
        assert st.applied_index >= st.base.index
    finally:
        s.close()


def test_an_engine_behind_the_logs_base_is_refused_not_silently_used(tmp_path):
    # The log was compacted past what a now-missing engine held (its directory
    # entry lost in a power loss): entries 1..20 are in neither. Opening an
    # empty engine under that log would silently lose them.
    directory = str(tmp_path / "rg-1")
    s = ReplicaStorage(directory, node_id=1)
    es = entries(1, 20, b"v")
    s.log.persist(HardState(1, 20), es)
    apply(s, es)
    s.db.flush()
    s.log.compact(s.db.applied_index)   # what ReplicaHost._compact_log does
    s.close()
    shutil.rmtree(tmp_path / "rg-1" / "db")
    with pytest.raises(CorruptionError, match="applied index 0 is below the log's base 20"):
        ReplicaStorage(directory, node_id=1)
    with pytest.raises(CorruptionError):   # the same again, not DBLockedError: the refused open released its locks
        ReplicaStorage(directory, node_id=1)


def test_install_makes_db_installing_durable_before_the_log_names_the_snapshot(tmp_path, monkeypatch):
    # Step 2 (the log's SNAPSHOT record) is the point of no return: if the
    # directory entry of db.installing could still vanish in a power loss
    # after it, the reopened replica would have neither the data nor the log.
    source = ReplicaStorage(str(tmp_path / "source"), node_id=1)
    es = entries(1, 5, b"new")
    source.log.persist(HardState(1, 5), es)
    apply(source, es)
    chunks = list(source.snapshot_chunks(5))
    source.close()
    target = ReplicaStorage(str(tmp_path / "target"), node_id=2)
    events: list[str] = []
    real_sync_dir, real_persist = DEFAULT_ENV.sync_dir, target.log.persist

    def sync_dir(path: str) -> None:
        if os.path.exists(os.path.join(path, "db.installing")):
            events.append("sync_dir with db.installing")
        real_sync_dir(path)

    def persist(hard_state, entries_, snapshot=None):
        if snapshot is not None:
            events.append("log names the snapshot")
        real_persist(hard_state, entries_, snapshot)

    monkeypatch.setattr(replica_storage.DEFAULT_ENV, "sync_dir", sync_dir)
    monkeypatch.setattr(target.log, "persist", persist)
    staged = [StagedChunk(LogPosition(1, 5), i, c, i == len(chunks) - 1) for i, c in enumerate(chunks)]
    target.persist(staged, LogPosition(1, 5), (), None)
    target.close()
    assert events[:2] == ["sync_dir with db.installing", "log names the snapshot"], events
