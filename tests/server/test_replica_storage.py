"""ReplicaStorage: applying entries, snapshots out and in, and a crash at every step of an install."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from engine._native import write_batch
from server.node.replica_storage import ReplicaStorage

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
