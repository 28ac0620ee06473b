"""LogStore (server/node/log_store.py): the replicated log as the write-ahead
log of one replica. Round trips, suffix truncation, snapshot install and
compaction, then what a power loss, an I/O failure at every step, a torn tail
and damaged bytes leave behind, checked against a plain model of the log;
then a hypothesis state machine mixing all of them.

The model: the state after a sequence of calls is (base, entries, hard
state) as the Ready contract defines it. Every call that returned is durable;
a call that raised leaves the state before or after it, never a mix.
"""
from __future__ import annotations

import os
import random
import struct
from dataclasses import dataclass, field

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine._native import wal_frame
from engine._native.crc32c import crc32c, masked
from engine.env import PosixEnv
from engine.env_fault import FaultInjectionEnv
from engine.env_mem import MemEnv
from engine.errors import CorruptionError, DBClosedError, DBLockedError, InvalidArgumentError, QuorumKVError
from server.node.log_store import ALLOCATE_AHEAD_BYTES, FORMAT_VERSION, LogStore
from server.replication.messages import ZERO_POSITION, Entry, EntryKind, LogPosition
from server.replication.ready import HardState

DIR = "/replica/log"


# ------------------------------------------------------------------ helpers

def entries(epoch: int, lo: int, hi: int, size: int = 10) -> list[Entry]:
    """Entries lo..hi of `epoch`, payloads that name their position."""
    return [Entry(epoch, i, EntryKind.WRITE, (b"%d.%d:" % (epoch, i)).ljust(size, b"x")) for i in range(lo, hi + 1)]


@dataclass
class Model:
    """The log as the Ready contract defines it."""

    base: LogPosition = ZERO_POSITION
    log: list[Entry] = field(default_factory=list)
    hard_state: HardState = HardState()
    hint: HardState | None = None   # a commit hint not written yet

    def persist(self, hard_state, new_entries, snapshot=None) -> None:
        hs = hard_state if hard_state is not None else self.hint
        if hs == self.hard_state:
            hs = None
        if snapshot is None and not new_entries and hs is None:
            return
        if snapshot is not None:
            self.base, self.log = snapshot, []
        if new_entries:
            del self.log[new_entries[0].index - self.base.index - 1:]
            self.log.extend(new_entries)
        if hs is not None:
            self.hard_state = hs
        self.hint = None

    def commit_hint(self, hard_state: HardState) -> None:
        if hard_state.promised_epoch != self.hard_state.promised_epoch:
            self.persist(hard_state, [])
        elif hard_state != self.hard_state:
            self.hint = hard_state

    def compact(self, index: int) -> None:
        if index > self.base.index:
            epoch = self.log[index - self.base.index - 1].epoch
            self.log = [e for e in self.log if e.index > index]
            self.base = LogPosition(epoch, index)
            if self.hint is not None:
                self.hard_state, self.hint = self.hint, None

    def close(self) -> None:
        if self.hint is not None:
            self.persist(None, [])

    @property
    def last_index(self) -> int:
        return self.base.index + len(self.log)

    def state(self) -> tuple:
        return self.base, tuple(self.log), self.hard_state

    def copy(self) -> Model:
        return Model(self.base, list(self.log), self.hard_state, self.hint)


def state_of(store: LogStore) -> tuple:
    d = store.durable_state(applied_index=0)
    assert (d.base, store.last_index) == (store.base, store.base.index + len(d.entries))
    assert (d.promised_epoch, d.commit_index) == (store.promised_epoch, store.commit_index)
    return d.base, tuple(d.entries), HardState(d.promised_epoch, d.commit_index)


def segments(env, path=DIR) -> list[str]:
    return [n for n in env.list_dir(path) if n.endswith(".rlog")]


def clone(env, path=DIR, replace=None, drop=()):
    """A fresh MemEnv holding a durable copy of path's files, with the
    contents in `replace` (name -> bytes) substituted and `drop` left out."""
    new = MemEnv()
    new.mkdirs(path)
    for name in env.list_dir(path):
        if name in drop:
            continue
        data = replace[name] if replace and name in replace else env.read_file(f"{path}/{name}")
        f = new.open_writable(f"{path}/{name}")
        f.append(data)
        f.sync()
        f.close()
    new.sync_dir(path)
    return new


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


H = wal_frame.FILE_HEADER


def whole_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """The frames of a segment that ends cleanly: the file header, its frames,
    then nothing or only the zeros of space reserved ahead (segment rule 6)."""
    assert data.startswith(H)
    frames, end, status = wal_frame.decode_frames(data, len(H))
    assert status == wal_frame.OK or data[end:] == bytes(len(data) - end)
    return frames


def written(data: bytes) -> bytes:
    """A segment's bytes up to the end of its last frame (without the zeros reserved ahead)."""
    spans = frame_spans(data)
    return data[:spans[-1][1] if spans else len(H)]


def frame_spans(data: bytes) -> list[tuple[int, int]]:
    frames = whole_frames(data)
    return [(off, off + wal_frame.HEADER_SIZE + len(payload)) for off, _, payload in frames]


def read_records(data: bytes) -> list[tuple]:
    """An independent reader of a segment, written from the module's byte
    diagram: [(kind, fields...)] of every record of every frame."""
    out = []
    for _, ftype, payload in whole_frames(data):
        assert ftype == wal_frame.WRITE_BATCH
        assert payload[0] == FORMAT_VERSION
        pos = 1
        while pos < len(payload):
            kind = payload[pos]
            if kind == 1:
                out.append((1, *struct.unpack_from("<6Q", payload, pos + 1)))
                pos += 49
            elif kind in (2, 3, 4):
                out.append((kind, *struct.unpack_from("<2Q", payload, pos + 1)))
                pos += 17
            else:
                assert kind == 5
                epoch, index, ekind, n = struct.unpack_from("<QQBI", payload, pos + 1)
                out.append((5, epoch, index, ekind, payload[pos + 22:pos + 22 + n]))
                pos += 22 + n
        assert pos == len(payload)
    return out


# A scripted workload touching every kind of call: appends, hard states, a
# divergent suffix, compactions, a snapshot install, entries after it.
def workload() -> list[tuple]:
    ops: list[tuple] = [("persist", HardState(1, 0), [], None)]
    for i in range(1, 13):
        ops.append(("persist", HardState(1, max(0, i - 2)), entries(1, i, i, 60), None))
    ops.append(("persist", None, entries(1, 13, 16, 30), None))
    ops.append(("persist", HardState(2, 10), entries(2, 12, 14, 40), None))    # divergent suffix 12..16
    ops.append(("compact", 6))
    ops.append(("persist", HardState(2, 14), entries(2, 15, 18, 50), None))
    ops.append(("compact", 11))
    ops.append(("persist", HardState(3, 14), [], None))
    ops.append(("persist", None, [], LogPosition(3, 30)))                      # snapshot install
    ops.append(("persist", HardState(3, 30), entries(3, 31, 33, 70), None))
    ops.append(("persist", HardState(3, 32), entries(3, 34, 34, 70), LogPosition(3, 33)))
    ops.append(("compact", 33))
    ops.append(("persist", HardState(4, 34), entries(4, 35, 40, 20), None))
    return ops


def apply_op(target, op) -> None:
    if op[0] == "persist":
        target.persist(*op[1:])
    else:
        target.compact(op[1])


def model_states(ops) -> list[tuple]:
    """states[k]: the state after the first k calls."""
    m = Model()
    states = [m.state()]
    for op in ops:
        apply_op(m, op)
        states.append(m.state())
    return states


SMALL = 256   # segment_bytes that makes the workload roll every few calls


# ---------------------------------------------------------------- round trip

def test_round_trip_of_entries_and_hard_state():
    env = MemEnv()
    model = Model()
    with LogStore.open(env, DIR) as store:
        assert state_of(store) == model.state()
        calls = [(HardState(1, 0), []), (None, entries(1, 1, 3)), (HardState(1, 2), entries(1, 4, 5)),
                 (HardState(2, 5), [Entry(2, 6, EntryKind.NOOP)]), (None, entries(2, 7, 9, 5000))]
        for hard_state, new in calls:
            store.persist(hard_state, new)
            model.persist(hard_state, new)
            assert state_of(store) == model.state()
    with LogStore.open(env, DIR) as store:
        assert state_of(store) == model.state()
        d = store.durable_state(applied_index=4)
        assert d.applied_index == 4 and d.promised_epoch == 2 and d.commit_index == 5
        assert d.entries[5] == Entry(2, 6, EntryKind.NOOP, b"")
        assert store.stats()["torn_tail_bytes"] == 0


def test_an_empty_directory_is_an_empty_log_and_open_creates_it():
    env = MemEnv()
    with LogStore.open(env, "/fresh/a/log") as store:
        assert state_of(store) == Model().state()
        assert store.last_index == 0 and store.base == ZERO_POSITION
    assert env.exists("/fresh/a/log") and segments(env, "/fresh/a/log") == []


def test_on_disk_format_matches_the_documented_diagram():
    env = MemEnv()
    with LogStore.open(env, DIR) as store:
        store.persist(HardState(7, 0), [Entry(7, 1, EntryKind.WRITE, b"abc")])
        store.persist(HardState(7, 1), [])
        store.compact(1)
    (name,) = segments(env)
    assert name == "000001.rlog"
    data = env.read_file(f"{DIR}/{name}")
    assert len(frame_spans(data)) == 3   # one frame per call
    assert read_records(data) == [
        (1, 1, 0, 0, 0, 0, 0),          # SEGMENT_START: number 1, base 0.0, last 0, hard state (0, 0)
        (5, 7, 1, int(EntryKind.WRITE), b"abc"),
        (4, 7, 0),                       # HARD_STATE written after the entries
        (4, 7, 1),
        (2, 7, 1),                       # BASE
    ]


def test_round_trip_on_the_real_file_system(tmp_path):
    env = PosixEnv()
    path = str(tmp_path / "log")
    ops = workload()
    with LogStore.open(env, path, segment_bytes=SMALL) as store:
        for op in ops:
            apply_op(store, op)
        with pytest.raises(DBLockedError):
            LogStore.open(env, path)
        want = state_of(store)
    assert want == model_states(ops)[-1]
    with LogStore.open(env, path, segment_bytes=SMALL) as store:
        assert state_of(store) == want
        store.persist(HardState(4, 40), entries(4, 41, 41))
    with LogStore.open(env, path) as store:
        assert store.last_index == 41 and store.commit_index == 40


def test_the_open_segment_is_reserved_ahead_in_steps_and_replays_whole(tmp_path):
    # Segment rule 6: an fdatasync of an append into reserved space commits
    # no new file length; replay takes the reserved zeros for unwritten space.
    env = PosixEnv()
    path = str(tmp_path / "log")
    payload = b"p" * 4000
    with LogStore.open(env, path) as store:
        store.persist(HardState(1, 0), [Entry(1, 1, EntryKind.WRITE, payload)])
        (name,) = segments(env, path)
        seg = f"{path}/{name}"
        written_bytes = store.stats()["bytes_written"]
        assert os.path.getsize(seg) == written_bytes + ALLOCATE_AHEAD_BYTES
        steps = [os.path.getsize(seg)]
        index = 1
        while store.stats()["bytes_written"] < 2 * ALLOCATE_AHEAD_BYTES + 10_000:
            index += 1
            store.persist(HardState(1, index - 1), [Entry(1, index, EntryKind.WRITE, payload)])
            if os.path.getsize(seg) != steps[-1]:
                steps.append(os.path.getsize(seg))
            assert store.stats()["bytes_written"] <= os.path.getsize(seg)
        assert len(steps) == 3 and all(b - a > ALLOCATE_AHEAD_BYTES for a, b in zip(steps, steps[1:]))
        assert store.stats()["fsyncs"] == index                 # still one fdatasync per call
        want, total = state_of(store), store.stats()["bytes_written"]
    data = env.read_file(seg)
    assert len(data) == steps[-1] and data[total:] == bytes(len(data) - total)   # the rest is zeros
    with LogStore.open(env, path) as store:
        assert state_of(store) == want and store.stats()["torn_tail_bytes"] == 0
        store.persist(HardState(2, index), [Entry(2, index + 1, EntryKind.NOOP)])   # a new segment
    with LogStore.open(env, path) as store:   # the reserved tail of a segment a newer one follows is no damage
        assert store.last_index == index + 1 and store.stats()["torn_tail_bytes"] == 0


def test_a_failed_reservation_is_skipped_and_the_write_goes_ahead():
    # Less than a step of disk free makes posix_fallocate fail (ENOSPC): the
    # reservation is an optimisation, so the write goes ahead without it.
    env = FaultInjectionEnv()
    env.fail_after("allocate", 0)
    with LogStore.open(env, DIR) as store:
        store.persist(HardState(1, 0), entries(1, 1, 3))
        store.compact(2)
        store.persist(HardState(1, 3), entries(1, 4, 4))
        want = state_of(store)
    assert env.op_counts["allocate"] >= 1 and store.stats()["allocate_failures"] >= 1
    env.crash()
    with LogStore.open(env, DIR) as store:
        assert state_of(store) == want


def test_only_the_newest_segment_keeps_reserved_space(tmp_path):
    # Segment rule 6: a segment is cut to what was written before a newer one
    # is created, and open() cuts the newest one it replays; so zeros at the
    # end of an older segment are never reserved space.
    env, path = PosixEnv(), str(tmp_path / "log")
    with LogStore.open(env, path, segment_bytes=2048) as store:
        for i in range(1, 40):
            store.persist(HardState(1, i - 1), entries(1, i, i, 200))
        names = segments(env, path)
        assert len(names) > 3
        for name in names[:-1]:
            data = env.read_file(f"{path}/{name}")
            assert len(data) == len(written(data)) < 2048 + 400, name
        assert os.path.getsize(f"{path}/{names[-1]}") > ALLOCATE_AHEAD_BYTES
    with LogStore.open(env, path) as store:
        newest = f"{path}/{names[-1]}"
        assert os.path.getsize(newest) == len(written(env.read_file(newest)))   # cut by open()
        assert store.last_index == 39


def test_an_acknowledged_frame_lost_at_the_end_of_an_older_segment_is_corruption():
    # Entry 5 was rewritten in epoch 2 and acknowledged; then the frame that
    # did it reads back as zeros (a disk that lost the data, not the length).
    # An older segment keeps no reserved space, so that is damage: replaying
    # the stale entry 5 of epoch 1 instead would be silent data loss.
    env = MemEnv()
    with LogStore.open(env, DIR) as s:
        s.persist(HardState(1, 0), [Entry(1, i, EntryKind.WRITE, b"old%d" % i) for i in range(1, 6)])
        s.persist(HardState(2, 0), [])
        s.persist(None, [Entry(2, 5, EntryKind.WRITE, b"new5")])
    with LogStore.open(env, DIR) as s:                    # a new session writes a new segment
        s.persist(None, [Entry(2, 6, EntryKind.WRITE, b"new6")])
    first = segments(env)[0]
    data = env.read_file(f"{DIR}/{first}")
    start = frame_spans(data)[-1][0]
    with pytest.raises(CorruptionError) as exc:
        LogStore.open(clone(env, replace={first: data[:start] + bytes(len(data) - start)}), DIR)
    assert exc.value.path == f"{DIR}/{first}"


@pytest.mark.parametrize("bit", [12, 14, 16, 18])   # the length grows by 4 KiB .. 256 KiB: into the reserved zeros
def test_a_damaged_length_in_the_newest_segment_before_acknowledged_frames_is_corruption(bit, tmp_path):
    for env, path in ((MemEnv(), DIR), (PosixEnv(), str(tmp_path / f"log{bit}"))):
        with LogStore.open(env, path) as s:
            for i in range(1, 11):
                s.persist(HardState(1, i - 1), [Entry(1, i, EntryKind.WRITE, b"v" * 150)])
        (name,) = segments(env, path)
        data = bytearray(env.read_file(f"{path}/{name}"))
        start = frame_spans(bytes(data))[4][0]             # entry 5's frame; 6..10 follow it
        data[start + 4 + bit // 8] ^= 1 << (bit % 8)
        if isinstance(env, MemEnv):
            env = clone(env, replace={name: bytes(data)})
        else:
            with open(f"{path}/{name}", "r+b") as f:        # as a media error would
                f.write(data)
        with pytest.raises(CorruptionError) as exc:
            LogStore.open(env, path)
        assert exc.value.offset == start


def test_use_after_close_and_bad_arguments():
    env = MemEnv()
    store = LogStore.open(env, DIR)
    store.persist(None, entries(1, 1, 3))
    with pytest.raises(InvalidArgumentError):
        store.persist(None, entries(1, 5, 6))        # gap after 3
    with pytest.raises(InvalidArgumentError):
        store.persist(None, entries(1, 2, 2) + entries(1, 4, 4))   # not contiguous
    with pytest.raises(InvalidArgumentError):
        store.compact(4)                             # past the end
    with pytest.raises(InvalidArgumentError):
        store.persist(None, entries(1, 5, 5), LogPosition(1, 10))  # must follow the snapshot
    store.compact(2)
    with pytest.raises(InvalidArgumentError):
        store.persist(None, entries(1, 2, 3))        # at or below the base
    store.compact(1)                                 # at or below the base: no-op
    assert state_of(store)[0] == LogPosition(1, 2)
    store.close()
    store.close()
    with pytest.raises(DBClosedError):
        store.persist(None, entries(1, 4, 4))
    with pytest.raises(InvalidArgumentError):
        LogStore.open(env, DIR, segment_bytes=0)
    with LogStore.open(env, DIR) as again:
        assert [e.index for e in again.durable_state(0).entries] == [3]


# ----------------------------------------------------------- the log's rules

@pytest.mark.parametrize("segment_bytes", [64 << 20, 64])
def test_entries_drop_the_stored_suffix_from_their_first_index(segment_bytes):
    env = MemEnv()
    with LogStore.open(env, DIR, segment_bytes=segment_bytes) as store:
        for e in entries(1, 1, 10):
            store.persist(None, [e])
        store.persist(None, entries(2, 6, 8))
        want = entries(1, 1, 5) + entries(2, 6, 8)
        assert list(state_of(store)[1]) == want and store.last_index == 8
    with LogStore.open(env, DIR, segment_bytes=segment_bytes) as store:
        assert list(state_of(store)[1]) == want
        store.persist(None, entries(3, 1, 2))        # everything from 1 on
    with LogStore.open(env, DIR, segment_bytes=segment_bytes) as store:
        assert list(state_of(store)[1]) == entries(3, 1, 2)


def test_snapshot_install_replaces_the_log_and_entries_follow_it():
    env = FaultInjectionEnv()
    model = Model()
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        for i in range(1, 21):
            store.persist(HardState(1, i - 1), entries(1, i, i, 40))
            model.persist(HardState(1, i - 1), entries(1, i, i, 40))
        assert len(segments(env)) > 3
        before = dict(env.op_counts)
        store.persist(None, [], LogPosition(3, 50))
        model.persist(None, [], LogPosition(3, 50))
        # One write, one fdatasync, one directory fsync for the new segment
        # (and one fdatasync for the open segment, cut to what was written
        # first: segment rule 6); then every older segment goes.
        assert env.op_counts["append"] - before["append"] == 1
        assert env.op_counts["sync"] - before["sync"] == 2
        assert env.op_counts["sync_dir"] - before["sync_dir"] == 1
        assert len(segments(env)) == 1
        assert state_of(store) == model.state() and store.last_index == 50
        store.persist(HardState(3, 50), entries(3, 51, 55))
        model.persist(HardState(3, 50), entries(3, 51, 55))
        # A snapshot, entries and hard state in one call, over a non-empty log.
        store.persist(HardState(3, 60), entries(3, 61, 62), LogPosition(3, 60))
        model.persist(HardState(3, 60), entries(3, 61, 62), LogPosition(3, 60))
        assert state_of(store) == model.state()
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        assert state_of(store) == model.state()


def test_compaction_moves_the_base_and_deletes_old_segments():
    env = MemEnv()
    model = Model()
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        for i in range(1, 41):
            epoch = 1 if i <= 20 else 2
            store.persist(HardState(epoch, i - 1), entries(epoch, i, i, 100))
            model.persist(HardState(epoch, i - 1), entries(epoch, i, i, 100))
        names = segments(env)
        assert len(names) >= 10
        top = {n: max(r[2] for r in read_records(env.read_file(f"{DIR}/{n}")) if r[0] == 5) for n in names}
        store.compact(25)
        model.compact(25)
        assert store.base == LogPosition(2, 25)
        assert state_of(store) == model.state()
        kept = [n for n in segments(env) if n in names]   # (compact may have started a segment)
        assert kept == names[-len(kept):]
        # Exactly the oldest segments holding only entries <= 25 went.
        assert [n for n in names if n not in kept] == [n for n in names if top[n] <= 25]
        assert store.stats()["segments_deleted"] == len(names) - len(kept) >= 5
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        assert state_of(store) == model.state()
        assert [e.index for e in store.durable_state(0).entries] == list(range(26, 41))
        # Segments written by an earlier session are deleted by a later one.
        store.compact(40)
        model.compact(40)
        assert len(segments(env)) == 1
        store.persist(None, entries(2, 41, 42))
        model.persist(None, entries(2, 41, 42))
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        assert state_of(store) == model.state()


def test_compaction_keeps_a_segment_needed_for_a_truncated_suffix():
    # Entries written in an old segment and still live when a later segment
    # truncated above them keep that old segment alive.
    env = MemEnv()
    model = Model()
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        for op in [(None, entries(1, 1, 8, 60), None), (None, entries(1, 9, 12, 60), None),
                   (None, entries(2, 5, 6, 60), None), (None, entries(2, 7, 9, 60), None)]:
            store.persist(*op)
            model.persist(*op)
        for index in (3, 4, 6, 9):
            store.compact(index)
            model.compact(index)
            assert state_of(store) == model.state()
            with LogStore.open(clone(env), DIR) as copy:
                assert state_of(copy) == model.state()


# ------------------------------------------------------------- power loss

def test_power_loss_after_every_call_loses_nothing_that_returned():
    env = FaultInjectionEnv()
    ops = workload()
    states = model_states(ops)
    store = LogStore.open(env, DIR, segment_bytes=SMALL)
    for k, op in enumerate(ops, 1):
        apply_op(store, op)
        env.crash()                                  # the store's handles die with the power
        store = LogStore.open(env, DIR, segment_bytes=SMALL)
        assert state_of(store) == states[k], f"after call {k}: {op[0]}"
        assert store.stats()["torn_tail_bytes"] == 0
    store.close()


def test_power_loss_brings_back_deleted_segments_and_replay_still_agrees():
    # Removals are not fsynced: after compaction and a power loss the old
    # segments may come back; they replay to the same state and go again.
    env = FaultInjectionEnv()
    model = Model()
    store = LogStore.open(env, DIR, segment_bytes=SMALL)
    for i in range(1, 21):
        store.persist(HardState(1, i), entries(1, i, i, 80))
        model.persist(HardState(1, i), entries(1, i, i, 80))
    all_names = segments(env)
    store.compact(15)
    model.compact(15)
    assert len(segments(env)) < len(all_names)
    env.crash()
    assert set(all_names) <= set(segments(env))      # MemEnv: the removals were not durable
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        assert state_of(store) == model.state()
        assert len(segments(env)) < len(all_names)   # deleted again


def test_a_leftover_of_an_interrupted_deletion_is_ignored_and_removed():
    env = MemEnv()
    model = Model()
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        for i in range(1, 21):
            store.persist(HardState(1, i), entries(1, i, i, 80))
            model.persist(HardState(1, i), entries(1, i, i, 80))
        first = segments(env)[0]
        old = env.read_file(f"{DIR}/{first}")
        store.compact(15)
        model.compact(15)
        store.persist(None, entries(1, 21, 21))      # a new segment: the directory is fsynced
        model.persist(None, entries(1, 21, 21))
    assert first not in segments(env) and segments(env)[0] != "000002.rlog"
    # Segment 1 comes back alone, with segment 2 gone: not contiguous with the rest.
    f = env.open_writable(f"{DIR}/{first}")
    f.write(old)
    f.sync()
    f = env.open_writable(f"{DIR}/{first}.tmp")      # and an interrupted atomic rewrite
    f.write(b"junk")
    f.sync()
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        assert state_of(store) == model.state()
    assert first not in segments(env) and f"{first}.tmp" not in env.list_dir(DIR)


@pytest.mark.parametrize("last_call", ["same-segment", "new-segment"])
def test_torn_tail_at_every_byte_of_the_last_call_is_dropped_and_counted(last_call):
    env = MemEnv()
    model = Model()
    with LogStore.open(env, DIR, segment_bytes=SMALL if last_call == "new-segment" else 1 << 20) as store:
        for i in range(1, 9):
            store.persist(HardState(1, i - 1), entries(1, i, i, 90))
            model.persist(HardState(1, i - 1), entries(1, i, i, 90))
        before = model.state()
        created = store.stats()["segments_created"]
        store.persist(HardState(2, 8), entries(2, 6, 9, 30))    # truncates 6..8, appends 9
        assert (store.stats()["segments_created"] > created) == (last_call == "new-segment")
    last = segments(env)[-1]
    data = env.read_file(f"{DIR}/{last}")
    start, end = frame_spans(data)[-1]
    for cut in range(start, end):
        # The torn write as the reserved space leaves it (zeros after it), or
        # cut off at the end of the file; the bytes it wrote are counted
        # (up to the last non-zero one: a zero is indistinguishable from unwritten).
        reserved = bytes(4096) if cut % 2 else b""
        if reserved and data[cut:end] == bytes(end - cut):
            continue   # the frame's missing end is zeros: with the reserved zeros it is whole, not torn
        e = clone(env, replace={last: data[:cut] + reserved})
        with LogStore.open(e, DIR) as store:
            assert state_of(store) == before, cut
            assert store.stats()["torn_tail_bytes"] == len(data[start:cut].rstrip(b"\0")), cut
            # The next session writes a newer segment; the torn one was
            # repaired, so it is not damage in a non-final segment later.
            store.persist(HardState(3, 8), entries(3, 9, 9))
        with LogStore.open(e, DIR) as store:
            assert store.stats()["torn_tail_bytes"] == 0
            m = Model(before[0], list(before[1]), before[2])
            m.persist(HardState(3, 8), entries(3, 9, 9))
            assert state_of(store) == m.state(), cut
        e.crash()                                      # the repair itself was durable
        with LogStore.open(e, DIR) as store:
            assert store.last_index == 9 and store.durable_state(0).entries[-1].epoch == 3


@pytest.mark.parametrize("reserved", [False, True], ids=["end-of-file", "reserved-zeros"])
@pytest.mark.parametrize("value", ["log-copy", "encoded-frame"])
def test_torn_last_call_whose_landed_payload_holds_a_frame_is_a_torn_tail(value, reserved):
    # Regression: the last call's frame was torn after its header and part of
    # its payload, whose length then runs past the written data (the end of
    # the file, or into the reserved zeros: segment rule 6), and the entry it
    # carried holds complete frames (a copy of a segment, or the framing's
    # own output). Frames encoded for other offsets do not validate inside
    # it, so the search after the torn frame finds nothing: a torn tail, and
    # the replica opens after the crash.
    env = MemEnv()
    model = Model()
    with LogStore.open(env, DIR) as store:
        for i in range(1, 6):
            store.persist(HardState(1, i - 1), entries(1, i, i, 40))
            model.persist(HardState(1, i - 1), entries(1, i, i, 40))
        (name,) = segments(env)
        inner = (written(env.read_file(f"{DIR}/{name}")) if value == "log-copy"
                 else H + wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"inner" * 8], len(H)))
        store.persist(HardState(1, 5), [Entry(1, 6, EntryKind.WRITE, inner + b"\xff" * 64)])
    data = written(env.read_file(f"{DIR}/{name}"))
    start, end = frame_spans(data)[-1]
    cut = data.index(inner, start) + len(inner) + 10   # the header and the payload up to past the frames landed
    assert cut < end
    e = clone(env, replace={name: data[:cut] + (bytes(4096) if reserved else b"")})
    with LogStore.open(e, DIR) as store:
        assert state_of(store) == model.state()
        assert store.stats()["torn_tail_bytes"] == cut - start


# -------------------------------------------------------- fault injection

def count_ops(op: str) -> int:
    env = FaultInjectionEnv()
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        at_open = env.op_counts.get(op, 0)
        for o in workload():
            apply_op(store, o)
    return env.op_counts.get(op, 0) - at_open


@pytest.mark.parametrize("dir_survives", [False, True], ids=["unsynced-dir-lost", "unsynced-dir-kept"])
@pytest.mark.parametrize("op", ["append", "allocate", "sync", "sync_dir", "truncate", "open_writable", "remove"])
def test_failure_at_every_step_then_power_loss_leaves_before_or_after(op, dir_survives):
    # dir_survives: the file system happened to persist the directory's
    # unsynced changes (new names, removals) before the power loss, as a real
    # one may; MemEnv.crash alone always drops them.
    ops = workload()
    states = model_states(ops)
    total = count_ops(op)
    assert total > 0
    for n in range(total):
        env = FaultInjectionEnv()
        store = LogStore.open(env, DIR, segment_bytes=SMALL)
        env.fail_after(op, n)
        failed = None
        for k, o in enumerate(ops, 1):
            try:
                apply_op(store, o)
            except OSError:
                failed = k
                break
        if failed is not None:
            # A failed write or fsync leaves the file in an unknown state:
            # the store refuses to go on (like the engine's background error).
            env.clear_faults()
            with pytest.raises(QuorumKVError):
                store.persist(HardState(9, 0), entries(9, 1, 1))
            with pytest.raises(QuorumKVError):
                store.compact(1)
        else:   # a failed removal is retried later, a failed reservation skipped: not errors
            assert op in ("remove", "allocate"), n
        env.clear_faults()
        if dir_survives:
            env.sync_dir(DIR)
        env.crash()
        with LogStore.open(env, DIR, segment_bytes=SMALL) as again:
            got = state_of(again)
        if failed is None:
            assert got == states[-1], n
        else:
            assert got in (states[failed - 1], states[failed]), f"{op} failure #{n} in call {failed}"


def test_after_a_failed_fsync_the_store_refuses_writes_until_reopened():
    env = FaultInjectionEnv()
    store = LogStore.open(env, DIR)
    store.persist(HardState(1, 0), entries(1, 1, 3))
    env.fail_after("sync", 0)
    with pytest.raises(OSError):
        store.persist(HardState(1, 3), entries(1, 4, 4))
    env.clear_faults()
    with pytest.raises(QuorumKVError, match="refuses writes"):
        store.persist(HardState(1, 3), entries(1, 4, 4))
    assert store.last_index == 3 and store.commit_index == 0   # what is known durable
    store.close()
    env.crash()
    with LogStore.open(env, DIR) as store:
        assert store.last_index == 3
        store.persist(HardState(1, 3), entries(1, 4, 4))
        assert store.last_index == 4


def test_a_restart_makes_a_dead_writers_unsynced_frame_durable_before_replaying_it():
    # A process killed between write() and fdatasync leaves its last frame in
    # the page cache, where the restart reads it. The restarted replica acts on
    # it (acknowledges, promises), so open() must make it durable first: else a
    # later power loss takes it back and the next segment's header disagrees.
    for starts_a_segment in (False, True):
        env = FaultInjectionEnv()
        store = LogStore.open(env, DIR)
        store.persist(HardState(1, 0), entries(1, 1, 3))
        if starts_a_segment:   # after a reopen, the next call starts segment 2
            store.close()
            store = LogStore.open(env, DIR)
        env.fail_after("sync", 0)   # every sync fails: not even the SYNC_FAILED note gets out, as after a kill
        with pytest.raises(OSError):
            store.persist(HardState(1, 3), entries(1, 4, 6))
        env.clear_faults()
        store.close()
        assert not env.exists(f"{DIR}/SYNC_FAILED")
        store = LogStore.open(env, DIR)
        assert store.last_index == 6, starts_a_segment   # replayed from the "page cache"
        store.persist(HardState(1, 6), entries(1, 7, 7))
        store.close()
        env.crash()
        with LogStore.open(env, DIR) as again:
            assert (again.last_index, again.commit_index) == (7, 6), starts_a_segment


class _FailedWritebackEnv(FaultInjectionEnv):
    """One fdatasync fails; then, as Linux may after a failed writeback, the
    kernel keeps the pages it could not write, marked clean: a later fsync of
    that file returns success without writing them."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next_sync = False
        self.clean_but_unwritten: set[str] = set()

    def _before(self, op: str, path: str) -> None:
        super()._before(op, path)
        if op == "sync" and self.fail_next_sync:
            self.fail_next_sync = False
            self.clean_but_unwritten.add(path)
            raise OSError(5, "injected writeback failure", path)

    def sync_file(self, path: str) -> None:
        if path not in self.clean_but_unwritten:
            super().sync_file(path)


def test_after_a_failed_fsync_the_next_open_rewrites_the_segment_rather_than_trust_an_fsync():
    env = _FailedWritebackEnv()
    store = LogStore.open(env, DIR)
    store.persist(HardState(1, 0), entries(1, 1, 3))
    env.fail_next_sync = True
    with pytest.raises(OSError):
        store.persist(HardState(1, 3), entries(1, 4, 6))
    store.close()
    assert env.exists(f"{DIR}/SYNC_FAILED")   # segment rule 5: the note to the next open
    store = LogStore.open(env, DIR)
    assert store.last_index == 6 and not env.exists(f"{DIR}/SYNC_FAILED")
    store.persist(HardState(1, 6), entries(1, 7, 7))
    store.close()
    env.crash()
    with LogStore.open(env, DIR) as again:   # an fsync of the old file would have kept nothing of 4..6
        assert (again.last_index, again.commit_index) == (7, 6)


def test_a_failed_open_releases_the_directory():
    env = FaultInjectionEnv()
    with LogStore.open(env, DIR) as store:
        store.persist(None, entries(1, 1, 2))
    env.fail_after("read", 0)
    with pytest.raises(OSError):
        LogStore.open(env, DIR)
    env.clear_faults()
    with LogStore.open(env, DIR) as store:
        assert store.last_index == 2


# ---------------------------------------------------------- fsyncs per call

def test_one_write_and_one_fdatasync_per_call_and_none_without_work():
    env = FaultInjectionEnv()
    with LogStore.open(env, DIR, segment_bytes=4096) as store:
        calls = 0
        for i in range(1, 60):
            before = dict(env.op_counts)
            created = store.stats()["segments_created"]
            new = [Entry(1, store.last_index + 1, EntryKind.WRITE, b"w" * 10_000)] if i % 3 else []
            store.persist(HardState(1, i - 1), new)      # every third call: hard state only
            calls += 1
            delta = {k: v - before.get(k, 0) for k, v in env.op_counts.items()}
            new_segment = store.stats()["segments_created"] - created
            # A new segment after one this session wrote: that one is cut to
            # what was written and synced first (segment rule 6).
            cut = new_segment if i > 1 else 0
            assert delta.get("append", 0) == 1 and delta.get("sync", 0) == 1 + cut, i
            assert delta.get("sync_dir", 0) == new_segment, i
            assert delta.get("open_writable", 0) == new_segment, i
        stats = store.stats()
        assert stats["fsyncs"] == calls and stats["writes"] == calls
        assert stats["dir_fsyncs"] == stats["segments_created"] > 1
        assert stats["bytes_written"] == sum(len(written(env.read_file(f"{DIR}/{n}"))) for n in segments(env))
        before = dict(env.op_counts)
        store.persist(None, [])
        store.persist(store.hard_state, ())             # unchanged hard state: nothing to write
        assert env.op_counts == before
        assert store.stats()["fsyncs"] == calls


# -------------------------------------------------------------- corruption

def make_segmented_log():
    env = MemEnv()
    ops = workload()
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        for op in ops[:14]:   # appends and the divergent suffix: no compaction yet
            apply_op(store, op)
    # Reopened once, as before any newer segment is made: the newest segment
    # holds what was written and no reserved space (segment rule 6).
    LogStore.open(env, DIR, segment_bytes=SMALL).close()
    names = segments(env)
    assert len(names) >= 4
    return env, names, model_states(ops)[14]


def test_bit_flip_in_a_middle_segment_is_corruption_naming_file_and_offset():
    env, names, _ = make_segmented_log()
    victim = names[len(names) // 2]
    path = f"{DIR}/{victim}"
    data = env.read_file(path)
    spans = frame_spans(data)
    assert len(spans) >= 2
    for start, end in (spans[0], spans[-1]):       # followed by a frame, and at the segment's end
        for pos in range(start, end):
            e = clone(env, replace={victim: flip(data, pos, pos % 8)})
            with pytest.raises(CorruptionError) as exc:
                LogStore.open(e, DIR)
            assert exc.value.path == path and exc.value.offset == start, pos
            assert f"offset {start}" in str(exc.value)
            # The failed open changed nothing and released the directory.
            assert e.read_file(path) == flip(data, pos, pos % 8)
            with pytest.raises(CorruptionError):
                LogStore.open(e, DIR)


@pytest.mark.parametrize("newer", ["segments", "one-empty-segment"])
def test_a_cut_end_of_a_segment_a_newer_one_follows_is_corruption(newer):
    # Segments are fsynced before a newer one is started, so a torn end
    # there is damage, even when the newer one is empty (created, then the
    # power failed before its first write was synced).
    env, names, _ = make_segmented_log()
    victim = names[1] if newer == "segments" else names[-1]
    data = written(env.read_file(f"{DIR}/{victim}"))
    e = clone(env, replace={victim: data[:-3]})
    if newer == "one-empty-segment":
        e.open_writable(f"{DIR}/{int(victim[:-5]) + 1:06d}.rlog").close()
        e.sync_dir(DIR)
    with pytest.raises(CorruptionError) as exc:
        LogStore.open(e, DIR)
    assert exc.value.path == f"{DIR}/{victim}" and exc.value.offset == frame_spans(data)[-1][0]


def test_an_empty_newest_segment_is_removed_and_its_number_reused():
    env, names, want = make_segmented_log()
    empty = f"{int(names[-1][:-5]) + 1:06d}.rlog"
    env.open_writable(f"{DIR}/{empty}").close()
    env.sync_dir(DIR)
    with LogStore.open(env, DIR, segment_bytes=SMALL) as store:
        assert state_of(store) == want and empty not in segments(env)
        store.persist(None, [Entry(5, store.last_index + 1, EntryKind.NOOP)])
    assert segments(env)[-1] == empty
    with LogStore.open(env, DIR) as store:
        assert store.last_index == len(want[1]) + 1


@pytest.mark.parametrize("which", ["first", "middle"])
def test_a_lost_segment_is_corruption_not_a_shorter_log(which):
    env, names, _ = make_segmented_log()
    victim = names[0] if which == "first" else names[2]
    with pytest.raises(CorruptionError, match="missing"):
        LogStore.open(clone(env, drop={victim}), DIR)


def test_the_last_segment_lost_whole_with_no_entries_in_newer_ones_is_detected():
    # Segment 1 held entries 1..5; segment 2, which only recorded a hard
    # state, remains. Its header says 1..5 exist: the loss is not silent.
    env = MemEnv()
    with LogStore.open(env, DIR) as store:
        store.persist(None, entries(1, 1, 5))
    with LogStore.open(env, DIR) as store:
        store.persist(HardState(2, 3), [])
    assert segments(env) == ["000001.rlog", "000002.rlog"]
    with pytest.raises(CorruptionError, match="1..5 are missing"):
        LogStore.open(clone(env, drop={"000001.rlog"}), DIR)


@pytest.mark.parametrize("bad", ["version", "kind", "no-header", "short-record", "entry-kind"])
def test_checksummed_but_malformed_frames_are_corruption(bad):
    env, names, _ = make_segmented_log()
    last = names[-1]
    data = written(env.read_file(f"{DIR}/{last}"))
    payload = {
        "version": bytes([FORMAT_VERSION + 1]) + struct.pack("<BQQ", 4, 1, 1),
        "kind": bytes([FORMAT_VERSION, 9]),
        "no-header": bytes([FORMAT_VERSION]) + struct.pack("<BQQ", 4, 1, 1),
        "short-record": bytes([FORMAT_VERSION]) + struct.pack("<BQ", 4, 1),
        "entry-kind": bytes([FORMAT_VERSION]) + struct.pack("<BQQBI", 5, 9, 100, 7, 0),
    }[bad]
    if bad == "no-header":   # a new segment whose first frame has no segment header record
        frame = H + wal_frame.encode_frames(wal_frame.WRITE_BATCH, [payload], len(H))
        e = clone(env)
        name = f"{int(last[:-5]) + 1:06d}.rlog"
        f = e.open_writable(f"{DIR}/{name}")
        f.write(frame)
        f.sync()
        e.sync_dir(DIR)
        where, at = name, len(H)
    else:
        frame = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [payload], len(data))   # where it lands
        e = clone(env, replace={last: data + frame})
        where, at = last, len(data)
    with pytest.raises(CorruptionError) as exc:
        LogStore.open(e, DIR)
    assert exc.value.path == f"{DIR}/{where}" and exc.value.offset == at
    if bad == "version":
        assert "version" in str(exc.value)


@pytest.mark.parametrize("which", ["every-segment", "oldest-segment"])
def test_segments_of_the_older_format_are_corruption_not_a_torn_tail(which):
    # Before frame checksums covered their offset, the CRC started from 0.
    # Such a segment's first frame fails this build's check; read as a torn
    # tail the newest would open as empty, and an older one would be refused
    # only as "damaged": either way the error must say what happened.
    def legacy(data: bytes) -> bytes:   # the same frames, each CRC started from 0
        return b"".join(struct.pack("<I", masked(crc32c(data[s + 4:e]))) + data[s + 4:e] for s, e in frame_spans(data))

    env, names, _ = make_segmented_log()
    old = names if which == "every-segment" else names[:1]
    e = clone(env, replace={n: legacy(env.read_file(f"{DIR}/{n}")) for n in old})
    with pytest.raises(CorruptionError, match="older format") as exc:
        LogStore.open(e, DIR)
    assert exc.value.path == f"{DIR}/{old[-1]}" and exc.value.offset == 0   # the newest segment is read first
    assert set(segments(e)) == set(names)                                    # and nothing was changed


# ------------------------------------------------------------ state machine

class LogStoreMachine(RuleBasedStateMachine):
    """Random persist / compact / snapshot / reopen / power loss / failed
    call sequences against the Model."""

    @initialize(segment_bytes=st.sampled_from([64, 300, 1 << 20]))
    def open_store(self, segment_bytes):
        self.env = FaultInjectionEnv()
        self.segment_bytes = segment_bytes
        self.store = LogStore.open(self.env, DIR, segment_bytes=segment_bytes)
        self.model = Model()

    def teardown(self):
        self.store.close()

    def _reopen(self):
        self.store = LogStore.open(self.env, DIR, segment_bytes=self.segment_bytes)

    @rule(data=st.data())
    def persist(self, data):
        m = self.model
        snapshot = None
        if data.draw(st.integers(0, 9), label="snapshot?") == 0:
            snapshot = LogPosition(data.draw(st.integers(1, 5)), data.draw(st.integers(m.base.index, m.last_index + 5)))
        base = snapshot or m.base
        last = base.index if snapshot else m.last_index
        count = data.draw(st.integers(0, 4), label="count")
        first = data.draw(st.integers(base.index + 1, last + 1), label="first")
        epoch = data.draw(st.integers(1, 6), label="epoch")
        new = [Entry(epoch, first + i, data.draw(st.sampled_from(list(EntryKind))),
                     data.draw(st.binary(max_size=120))) for i in range(count)]
        hard_state = data.draw(st.none() | st.builds(HardState, st.integers(0, 6), st.integers(0, 50)))
        self.store.persist(hard_state, new, snapshot)
        m.persist(hard_state, new, snapshot)

    @rule(data=st.data())
    def commit_hint(self, data):
        hard_state = data.draw(st.builds(HardState, st.integers(0, 6), st.integers(0, 50)))
        self.store.persist_commit_hint(hard_state)
        self.model.commit_hint(hard_state)

    @precondition(lambda self: self.model.last_index > self.model.base.index)
    @rule(data=st.data())
    def compact(self, data):
        index = data.draw(st.integers(self.model.base.index, self.model.last_index))
        self.store.compact(index)
        self.model.compact(index)

    @rule()
    def reopen(self):
        self.store.close()
        self.model.close()
        self._reopen()

    @rule()
    def power_loss(self):
        self.env.crash()
        self.model.hint = None   # only in memory: lost
        self._reopen()

    @rule(op=st.sampled_from(["append", "sync", "sync_dir", "open_writable"]), data=st.data())
    def failed_call_then_power_loss(self, op, data):
        m = self.model
        before = m.copy()
        new = [Entry(7, m.last_index + 1, EntryKind.WRITE, b"f")]
        self.env.fail_after(op, 0)
        try:
            self.store.persist(HardState(7, m.hard_state.commit_index), new)
            m.persist(HardState(7, m.hard_state.commit_index), new)
        except OSError:
            after = m.copy()
            after.persist(HardState(7, m.hard_state.commit_index), new)
            self.env.clear_faults()
            self.env.crash()
            self._reopen()
            got = state_of(self.store)
            assert got in (before.state(), after.state())
            self.model = before if got == before.state() else after
            self.model.hint = None   # lost with the power
        finally:
            self.env.clear_faults()

    @rule(data=st.data())
    def torn_last_call(self, data):
        # A call whose write reached the disk only in part: cut the last
        # segment inside the call's frame; the reopened log is as before it.
        m = self.model
        new = [Entry(8, m.last_index + 1, EntryKind.WRITE, b"t" * data.draw(st.integers(0, 200)))]
        self.store.persist(HardState(8, m.hard_state.commit_index), new)
        self.store.close()
        last = f"{DIR}/{segments(self.env)[-1]}"
        raw = self.env.read_file(last)
        start, end = frame_spans(raw)[-1]
        cut = data.draw(st.integers(start, end - 1), label="cut")
        self.env.truncate(last, cut)
        self.model.hint = None   # the torn call carried it (or a newer hard state): gone with it
        self._reopen()
        # Counted up to its last non-zero byte (read_log: zeros read as unwritten space).
        assert self.store.stats()["torn_tail_bytes"] == len(raw[start:cut].rstrip(b"\0"))

    @invariant()
    def store_matches_model(self):
        assert state_of(self.store) == self.model.state()


LogStoreMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=30, deadline=None,
                                             suppress_health_check=[HealthCheck.too_slow])
test_log_store_state_machine = LogStoreMachine.TestCase


def test_random_workloads_with_power_loss_after_random_calls():
    # A seeded long run of the same shape as the state machine, with bigger
    # payloads, checking the model after every power loss.
    rng = random.Random(0xD15C)
    env = FaultInjectionEnv()
    model = Model()
    store = LogStore.open(env, DIR, segment_bytes=2048)
    for step in range(600):
        r = rng.random()
        if r < 0.7:
            first = rng.randint(max(model.base.index, model.last_index - 3) + 1, model.last_index + 1)
            new = entries(rng.randint(1, 9), first, first + rng.randrange(4), rng.randrange(10, 700))
            hs = HardState(rng.randint(0, 9), rng.randint(0, 99)) if rng.random() < 0.5 else None
            store.persist(hs, new)
            model.persist(hs, new)
        elif r < 0.85 and model.last_index > model.base.index:
            index = rng.randint(model.base.index, model.last_index)
            store.compact(index)
            model.compact(index)
        elif r < 0.9:
            snap = LogPosition(rng.randint(1, 9), model.last_index + rng.randint(-2, 5))
            if snap.index <= model.base.index:
                continue
            store.persist(None, [], snap)
            model.persist(None, [], snap)
        else:
            env.crash()
            store = LogStore.open(env, DIR, segment_bytes=2048)
            assert state_of(store) == model.state(), step
    store.close()
    with LogStore.open(env, DIR, segment_bytes=2048) as store:
        assert state_of(store) == model.state()


def test_a_stale_copy_of_a_segment_is_detected_by_the_next_header():
    # Segment 1 loses its last calls (a stale copy, e.g. a lost write);
    # segment 2 holds only a hard state, so no entry shows the hole: its
    # header does (it says the log ended at 5 with promised epoch 2).
    env = MemEnv()
    with LogStore.open(env, DIR) as store:
        store.persist(HardState(1, 0), entries(1, 1, 3))
        stale = written(env.read_file(f"{DIR}/000001.rlog"))   # without the space reserved then
        store.persist(HardState(2, 3), entries(2, 4, 5))
    with LogStore.open(env, DIR) as store:
        store.persist(HardState(2, 5), [])
    assert segments(env) == ["000001.rlog", "000002.rlog"]
    with pytest.raises(CorruptionError, match="disagrees") as exc:
        LogStore.open(clone(env, replace={"000001.rlog": stale}), DIR)
    assert exc.value.path == f"{DIR}/000002.rlog" and exc.value.offset == len(H)   # its first frame


def test_commit_hints_cost_no_io_and_survive_once_a_later_call_syncs():
    env = MemEnv()
    store = LogStore.open(env, DIR, segment_bytes=400)
    store.persist(HardState(3, 0), entries(3, 1, 5))
    before = store.stats()
    store.persist_commit_hint(HardState(3, 4))
    after = store.stats()
    assert (after["fsyncs"], after["writes"]) == (before["fsyncs"], before["writes"])   # kept for the next call
    env.crash()   # power loss, no close
    reopened = LogStore.open(env, DIR)
    assert reopened.commit_index == 0 and reopened.last_index == 5   # the hint was only in memory: lost
    reopened.persist_commit_hint(HardState(3, 4))
    reopened.persist(None, entries(3, 6, 6))        # the next synced call covers the hint
    reopened.close()
    env.crash()
    again = LogStore.open(env, DIR)
    assert (again.commit_index, again.last_index) == (4, 6)
    # A hint that raises the promised epoch is no hint: it is fsynced.
    again.persist_commit_hint(HardState(4, 4))
    again.close()
    env.crash()
    assert LogStore.open(env, DIR).promised_epoch == 4


def test_a_pending_hint_goes_out_with_the_next_call_of_any_kind():
    env = MemEnv()
    store = LogStore.open(env, DIR, segment_bytes=200)
    store.persist(HardState(1, 0), entries(1, 1, 3, size=100))   # past segment_bytes: the next call rolls
    store.persist_commit_hint(HardState(1, 2))
    store.persist(None, entries(1, 4, 4, size=100))             # a new segment's first frame carries it
    assert store.commit_index == 2
    store.persist_commit_hint(HardState(1, 4))
    store.compact(3)                                            # the base moves, and the hint with it
    assert (store.base.index, store.commit_index) == (3, 4)
    store.persist_commit_hint(HardState(1, 4))                  # equal to the durable one: nothing pending
    store.close()
    env.crash()
    reopened = LogStore.open(env, DIR)
    assert (reopened.base.index, reopened.last_index, reopened.commit_index) == (3, 4, 4)
    reopened.persist(None, entries(1, 5, 6))
    reopened.persist_commit_hint(HardState(1, 6))
    with pytest.raises(InvalidArgumentError):
        reopened.persist(None, entries(1, 9, 9))                # refused: the hint stays pending
    reopened.close()                                            # a clean close writes what is pending
    assert LogStore.open(env, DIR).commit_index == 6
