"""DB: the embedded LSM storage engine of one quorumkv replica.

A DB directory holds:
    LOCK                  flock'ed by the one opener
    CURRENT               names the live MANIFEST (engine/version.py)
    MANIFEST-NNNNNN       version edits
    NNNNNN.log            WAL segments (engine/wal.py), replayed on open
    NNNNNN.sst            SSTables (engine/_native/table_builder.pyx)

Path of a write: validate and encode a batch (native) -> group commit: one
WAL write and one fdatasync for every writer that queued meanwhile
(write_queue.py) -> memtable (native skiplist) -> readers see it once the
whole group is applied (visible_lsn). A full memtable becomes immutable and
a background thread flushes it to L0 and runs leveled compaction
(compaction.py); writes stall, never grow memory without bound, when the
background falls behind.

Reads see a consistent snapshot: the lsn visible when they start, over a
SuperVersion (memtable, immutable memtable, Version) taken atomically.

Thread-safety: every public method may be called from any thread. One mutex
guards the writer queue, the SuperVersion and the VersionSet; it is never held
across WAL or table I/O except for MANIFEST appends.
"""
from __future__ import annotations

import itertools
import os
import re
import threading
import time
from bisect import bisect_left
from collections import namedtuple
from typing import Iterator

from engine import failpoints
from engine._native import merge, wal_frame, write_batch
from engine._native.block_cache import BlockCache
from engine._native.commit import UnsyncedFront
from engine._native.sequencer import Sequencer
from engine._native.skiplist import Memtable
from engine._native.table_cursor import LevelCursor
from engine.compaction import (
    Compaction,
    compaction_cursors,
    compaction_edit,
    move_edit,
    pick_compaction,
    range_compaction,
    rewrite_compaction,
    run_merge,
)
from engine.errors import (
    CorruptionError,
    DBClosedError,
    InvalidArgumentError,
    QuorumKVError,
    TableExistsError,
    TableNotFoundError,
)
from engine.options import SYNC_BATCH, SYNC_NEVER, Options
from engine.sstable import TableCache
from engine.version import VersionEdit, VersionSet
from engine.wal import LogWriter, decode_wal_payload, read_log
from engine.write_queue import WriteQueue, Writer

Record = namedtuple("Record", ["value", "seq"])
Record.__doc__ = "A live record: its value and its 16-byte seq."
Entry = namedtuple("Entry", ["value", "seq", "deleted"])
Entry.__doc__ = "The newest version of a key: a value, or a tombstone (deleted=True, value None) with its seq."

_NUMBERED_FILE = re.compile(r"(?:MANIFEST-)?(\d+)(?:\.\w+)?")   # NNNNNN.log, NNNNNN.sst, MANIFEST-NNNNNN
TABLE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}\Z")   # \Z: "$" would let a final newline through
TABLE_NAME_RULE = "1 to 128 characters from A-Z a-z 0-9 _ . -, not starting with . or -"
MAX_KEY = write_batch.MAX_KEY
MAX_VALUE = write_batch.MAX_VALUE
_MAX_LSN = 2**64 - 1
# Scans build records in native chunks. A chunk's objects (a tuple and three
# bytes, about 300 B a record) are freed only when the caller has moved past
# the whole chunk, so the chunk must fit in the L2 cache: at 4,096 records
# (1.2 MB) every free was a cache miss and a full scan ran at 0.9M records/s;
# at 128 to 512 records, 1.7M/s (1M-key table, same process, alternating).
_SCAN_FIRST_CHUNK = 64
_SCAN_MAX_CHUNK = 256


def _prefix(tid: int) -> bytes:
    return tid.to_bytes(4, "big")


def _check_key(key, what: str = "key") -> None:
    if type(key) is not bytes:
        raise InvalidArgumentError(f"{what} must be bytes, got {type(key).__name__}")
    if not 0 < len(key) <= MAX_KEY:
        raise InvalidArgumentError(f"{what} must be 1 to {MAX_KEY} bytes, got {len(key)}")


class _SuperVersion:
    __slots__ = ("mem", "imm", "version")

    def __init__(self, mem: Memtable, imm: Memtable | None, version):
        self.mem = mem
        self.imm = imm
        self.version = version


class Snapshot:
    """A point-in-time view: reads with snapshot=s see the DB as of s.
    Release it (or use it as a context manager) so compaction can drop the
    old versions it pins."""

    def __init__(self, db: "DB", lsn: int):
        self._db = db
        self.lsn = lsn
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._db._release_snapshot(self)

    def __enter__(self) -> "Snapshot":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class WriteBatch:
    """Records written atomically by DB.write: all of them or none.

    applied_index: optional u64 persisted with the batch (see DB.applied_index).
    """

    def __init__(self, applied_index: int | None = None):
        self.applied_index = applied_index
        self._ops: list[tuple[int, str, bytes, bytes | None, bytes | None]] = []

    def put(self, table: str, key: bytes, value: bytes, seq: bytes | None = None) -> "WriteBatch":
        self._ops.append((write_batch.VALUE, table, key, value, seq))
        return self

    def delete(self, table: str, key: bytes, seq: bytes | None = None) -> "WriteBatch":
        self._ops.append((write_batch.DELETE, table, key, None, seq))
        return self

    def __len__(self) -> int:
        return len(self._ops)


def _front_field(name: str) -> property:
    """A DB attribute kept in its UnsyncedFront (engine/_native/commit.pyx),
    where the native write fast path reads and moves it."""
    return property(lambda db: getattr(db._front, name), lambda db, value: setattr(db._front, name, value))


class DB:
    """An open database; see the module docstring. Use DB.open()."""

    _open_for_writes = _front_field("open_for_writes")   # not closed and no background error
    _last_lsn = _front_field("last_lsn")
    _visible_lsn = _front_field("visible_lsn")
    _mem_applied_index = _front_field("mem_applied_index")
    _writes = _front_field("writes")
    _records_written = _front_field("records_written")
    _wal_bytes = _front_field("wal_bytes")
    _wal = _front_field("wal")   # the newest WAL segment's LogWriter, or None without a WAL

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, path: str, **options) -> "DB":
        """Opens (creating if missing, unless create_if_missing=False) the DB at
        path. Options: engine/options.py. Raises DBLockedError when another
        handle has it open, CorruptionError when its files are damaged."""
        return cls(path, Options.from_kwargs(**options))

    def __init__(self, path: str, options: Options):
        self.path = os.path.abspath(path)
        self.options = options
        self._env = env = options.env
        env.mkdirs(self.path)
        self._lock_handle = env.lock(os.path.join(self.path, "LOCK"))
        self._closed = False
        self._front = front = UnsyncedFront()
        self._open_for_writes = True
        self._mutex = threading.Lock()
        self._bg_cv = threading.Condition(self._mutex)
        self._groups_in_flight = 0   # synced groups writing and fsyncing outside the mutex; close() waits
        self._queue = WriteQueue(self._mutex)
        self._queued = self._queue.writers   # truthy while anyone waits to write
        self._stats = dict.fromkeys(
            ("flushes",
             "compactions", "trivial_moves", "compaction_bytes_written", "entries_dropped", "stalls",
             "wal_torn_tail_bytes", "wal_segments_replayed"), 0)
        self._stats["stall_seconds"] = 0.0
        self._snapshots: dict[int, int] = {}   # lsn -> count of live Snapshot objects
        self._bg_error: BaseException | None = None
        self._bg_work_requested = False
        self._manual: list = []
        self._compact_pointer: dict[int, bytes] = {}
        self._sequencer = Sequencer(options.node_id)
        self._next_seq = self._sequencer.next
        # Hot-path copies of options and counters (plain attributes are cheaper than dict items).
        self._write_buffer_size = options.write_buffer_size
        self._wal_segment_bytes = options.wal_segment_bytes
        self._max_group_bytes = options.max_group_bytes
        self._batch_wait_s = options.batch_wait_us / 1e6 if options.sync == SYNC_BATCH else 0.0
        self._sync_wal = options.wal and options.sync != SYNC_NEVER
        front.mutex, front.queued, front.sequencer = self._mutex, self._queued, self._sequencer
        front.on_error, front.slow_write = self._set_bg_error, self._write
        front.enabled = not self._sync_wal
        front.write_buffer_size, front.wal_segment_bytes = options.write_buffer_size, options.wal_segment_bytes
        self._wal = None
        self._writes = self._records_written = 0
        self._wal_bytes = self._wal_syncs = self._wal_records_synced = 0
        try:
            self._versions = VersionSet(env, self.path, options.num_levels)
            if options.block_cache is not None:   # shared with other DBs (a node's replicas)
                self._block_cache = options.block_cache
            else:
                self._block_cache = BlockCache(options.block_cache_bytes) if options.block_cache_bytes else None
            self._tables = TableCache(env, self._versions.path_of, self._block_cache,
                                      shared=options.block_cache is not None)
            self._recover()
        except BaseException:
            self._lock_handle.release()
            raise
        # Started by the first request for background work, gone again after
        # background_idle_seconds without any (_schedule_background).
        self._bg_thread: threading.Thread | None = None

    def _recover(self) -> None:
        env, opts, vs = self._env, self.options, self._versions
        current = os.path.join(self.path, "CURRENT")
        if env.exists(current):
            if opts.error_if_exists:
                raise InvalidArgumentError(f"{self.path} already holds a database (error_if_exists=True)")
            vs.recover()
        elif not opts.create_if_missing:
            raise InvalidArgumentError(f"no database at {self.path} (create_if_missing=False)")
        # Every file number on disk counts as used: WAL segments roll (and
        # memtables rotate) without a MANIFEST edit, so the MANIFEST's
        # next_file may be behind them, and a number handed out again would
        # truncate a segment this open is about to replay.
        names = env.list_dir(self.path)
        on_disk = [int(m.group(1)) for m in map(_NUMBERED_FILE.fullmatch, names) if m]
        vs.next_file = max(vs.next_file, max(on_disk, default=0) + 1)
        # Replay the WAL segments the MANIFEST does not cover, oldest first.
        logs = sorted(int(n[:-4]) for n in names if n.endswith(".log") and n[:-4].isdigit())
        mem = Memtable()
        last_lsn = vs.last_lsn
        applied = vs.applied_index
        logs = [n for n in logs if n >= vs.log_number]
        for number in logs:
            path = vs.path_of("log", number)
            contents = read_log(env, path)
            if contents.torn_bytes and number != logs[-1]:
                # Segments are fsynced when they roll, so only the newest one
                # can end in a write that never completed.
                raise CorruptionError("damaged end of a WAL segment that a newer one follows: "
                                      "acknowledged data is damaged", path, contents.valid_bytes)
            self._stats["wal_torn_tail_bytes"] += contents.torn_bytes
            self._stats["wal_segments_replayed"] += 1
            for offset, ftype, payload in contents.frames:
                if ftype != wal_frame.WRITE_BATCH:
                    raise CorruptionError("non-batch frame in WAL", path, offset)
                first_lsn, rep = decode_wal_payload(payload, path, offset)
                if not write_batch.validate(rep):
                    raise CorruptionError("malformed write batch", path, offset)
                n = mem.apply_batch(rep, first_lsn)
                last_lsn = max(last_lsn, first_lsn + n - 1)
                ai = write_batch.applied_index(rep)
                if ai is not None:
                    applied = max(applied, ai)
        vs.last_lsn = last_lsn
        vs.applied_index = applied
        max_seq = max(vs.max_seq, mem.max_seq)
        self._sequencer.observe(max_seq)
        edit = VersionEdit(max_seq=max_seq)
        if mem.count:
            # The recovered memtable goes to L0 now, so the old segments can go.
            result = run_merge([mem.cursor()], vs, opts, last_lsn, False, vs.dropped_tables, flush=True)
            edit.add = [(0, f) for f in result.outputs]
        self._log_number = vs.new_file_number()
        self._wal = LogWriter(env, vs.path_of("log", self._log_number), self._log_number) if opts.wal else None
        edit.log_number = self._log_number
        edit.last_lsn = last_lsn
        edit.applied_index = applied
        vs.start_new_manifest()
        vs.log_and_apply(edit)
        env.sync_dir(self.path)
        self._last_lsn = last_lsn
        self._visible_lsn = last_lsn
        self._mem_applied_index = applied
        self._imm_applied_index = applied
        self._imm_log_number = self._log_number
        self._written_applied_index = applied
        self._sv = _SuperVersion(Memtable(), None, vs.current)
        self._front.mem = self._sv.mem
        self._prefixes = {name: _prefix(tid) for name, tid in vs.tables.items()}
        self._tids = dict(vs.tables)
        self._delete_obsolete_files()

    # ----------------------------------------------------------------- tables
    def create_table(self, name: str, table_id: int | None = None) -> int:
        """Creates an empty table and returns its id. Raises TableExistsError if
        it exists. `table_id` pins the id (the replication layer uses the
        cluster-wide id, so every replica's keys carry the same prefix); an id
        in use or dropped before is refused: a dropped id may still have keys
        on disk until compaction reclaims them."""
        if not isinstance(name, str) or not TABLE_NAME_PATTERN.fullmatch(name):
            raise InvalidArgumentError(f"table name {name!r} is invalid: use {TABLE_NAME_RULE}")
        if table_id is not None and (type(table_id) is not int or not 1 <= table_id < 2**32 - 1):
            raise InvalidArgumentError(f"table_id must be an int in [1, 2**32 - 2], got {table_id!r}")
        with self._mutex:
            self._check_open()
            vs = self._versions
            if name in vs.tables:
                raise TableExistsError(f"table {name!r} already exists")
            if table_id is None:
                tid = vs.next_table_id
            elif table_id in vs.tables.values() or table_id in vs.dropped_tables:
                raise TableExistsError(f"table id {table_id} is in use or was dropped")
            else:
                tid = table_id
            vs.log_and_apply(VersionEdit(create_table=[(name, tid)], next_table_id=max(vs.next_table_id, tid + 1)))
            self._prefixes[name] = _prefix(tid)
            self._tids[name] = tid
            return tid

    def drop_table(self, name: str) -> None:
        """Drops a table and frees its space: files holding only its keys are
        deleted at once, the rest is reclaimed by a background compaction."""
        with self._mutex:
            self._check_open()
            vs = self._versions
            tid = self._table_id(name)
            lo, hi = _prefix(tid), _prefix(tid + 1)
            edit = VersionEdit(drop_table=[tid])
            del self._prefixes[name]
            del self._tids[name]
            for level, f in vs.current.files():
                if f.smallest >= lo and f.largest < hi:
                    edit.delete.append((level, f.number))
            vs.log_and_apply(edit)
            self._install_sv(version=vs.current)
            self._manual.append((lo, hi, None))
            self._schedule_background()

    def dropped_table_ids(self) -> set[int]:
        """Ids of dropped tables: never handed out again (create_table refuses
        them), so a late write for one can be told apart from a new table."""
        with self._mutex:
            return set(self._versions.dropped_tables)

    def tables(self) -> list[str]:
        with self._mutex:
            return sorted(self._versions.tables)

    def _table_id(self, name) -> int:
        try:
            return self._versions.tables[name]
        except (KeyError, TypeError):
            raise TableNotFoundError(f"no table named {name!r}") from None

    # ----------------------------------------------------------------- writes
    def put(self, table: str, key: bytes, value: bytes, seq: bytes | None = None,
            applied_index: int | None = None) -> bytes:
        """Writes key=value with seq (a fresh one when None); returns the seq."""
        if seq is None and applied_index is None and type(table) is str:
            tid = self._tids.get(table)
            if tid is not None:   # the common case: one native call (UnsyncedFront.put)
                return self._front.put(write_batch.VALUE, tid, key, value)
        return self._write_one(write_batch.VALUE, table, key, value, seq, applied_index)

    def delete(self, table: str, key: bytes, seq: bytes | None = None,
               applied_index: int | None = None) -> bytes:
        """Writes a tombstone for key that keeps its seq; deleting a missing
        key is not an error. Returns the seq."""
        if seq is None and applied_index is None and type(table) is str:
            tid = self._tids.get(table)
            if tid is not None:
                return self._front.put(write_batch.DELETE, tid, key, None)
        return self._write_one(write_batch.DELETE, table, key, None, seq, applied_index)

    def _write_one(self, kind: int, table: str, key: bytes, value: bytes | None, seq: bytes | None,
                   applied_index: int | None) -> bytes:
        tid = self._tids.get(table) if type(table) is str else None
        if tid is None:
            tid = self._table_id(table)
        if seq is None:
            seq = self._next_seq()
        else:
            self._observe(seq)
        self._write(write_batch.encode_one(kind, tid, key, value, seq, applied_index), 1, applied_index)
        return seq

    def write(self, batch: WriteBatch) -> list[bytes]:
        """Writes every record of batch atomically; returns their seqs.
        Every record is validated first: one bad record writes nothing."""
        if not isinstance(batch, WriteBatch):
            raise InvalidArgumentError(f"write() takes a WriteBatch, got {type(batch).__name__}")
        if not batch._ops:
            return []
        rep, seqs = write_batch.encode_ops(batch._ops, self._tids, self._sequencer, batch.applied_index)
        self._write(rep, len(seqs), batch.applied_index)
        return seqs

    def write_encoded(self, rep: bytes) -> None:
        """Writes a batch already encoded by write_batch.encode_* (the
        replication layer's path: one rep per log entry)."""
        if not write_batch.validate(rep):
            raise InvalidArgumentError("malformed write batch")
        self._sequencer.observe(write_batch.max_seq(rep))   # later local seqs stay above these
        self._write(rep, write_batch.count(rep), write_batch.applied_index(rep))

    def _observe(self, seq) -> None:
        if type(seq) is not bytes or len(seq) != 16:
            raise InvalidArgumentError("seq must be 16 bytes (timestamp, counter, node id)")
        self._sequencer.observe(seq)

    def _write(self, rep: bytes, count: int, applied_index: int | None) -> None:
        # Unsynced, no one queued, room for it: nothing to group with, so the
        # native fast path commits it in one critical section (write() and
        # memtable insert in C). Otherwise the group-commit path below.
        if self._front.commit(rep, count, applied_index):
            return
        w = Writer(rep, count, applied_index)
        queue = self._queue
        with self._mutex:
            if not queue.join(w):
                if w.error is not None:
                    raise w.error
                return
            sv = self._sv
            wal = self._wal
            if (self._closed or self._bg_error is not None or sv.mem.memory >= self._write_buffer_size
                    or (wal is not None and wal.size >= self._wal_segment_bytes)):
                try:
                    self._make_room_for_write()
                except BaseException as exc:
                    queue.finish_group([w], exc)
                    raise
                sv = self._sv
                wal = self._wal
            if not self._sync_wal:
                # Nothing to fsync, so nothing to share: commit inside this
                # one critical section (the WAL write() drops the GIL, not the mutex).
                group = [w] if len(queue) == 1 else queue.take_group(self._max_group_bytes)
                self._commit(group, sv.mem, wal)
                if w.error is not None:
                    raise w.error
                return
            # From here until the group is finished, close() waits for it: its
            # WAL write and fsync happen outside the mutex, and so may the wait
            # for company (which releases it).
            self._groups_in_flight += 1
            try:
                if self._batch_wait_s:
                    queue.wait_for_company(self._batch_wait_s)
                group = queue.take_group(self._max_group_bytes)
                if self._closed or self._bg_error is not None:   # while it waited for company
                    try:
                        self._make_room_for_write()   # raises DBClosedError or the background error
                    except BaseException as exc:
                        queue.finish_group(group, exc)
                        raise
                self._assign_lsns(group)
                mem = sv.mem
            except BaseException:
                self._group_finished()
                raise
        error = None
        try:
            framed = wal_frame.encode_wal_group([g.rep for g in group], [g.lsn for g in group], wal.size)
            wal.append_framed(framed, False)
            failpoints.hit("wal.after_write")
            wal.sync()
            for g in group:
                mem.apply_batch(g.rep, g.lsn)
        except BaseException as exc:   # the WAL may now hold a partial group: stop writing
            error = exc
        with self._mutex:
            try:
                if error is None:
                    self._wal_bytes += len(framed)
                    self._wal_syncs += 1
                    self._wal_records_synced += len(group)
                    self._published(group)
                else:
                    self._set_bg_error(error)
                queue.finish_group(group, error)
            finally:
                self._group_finished()
        if w.error is not None:
            raise w.error

    def _group_finished(self) -> None:
        """Requires the mutex: a synced group is done (committed or failed)."""
        self._groups_in_flight -= 1
        if self._closed:
            self._bg_cv.notify_all()   # close() waits for it

    def _assign_lsns(self, group: list[Writer]) -> int:
        """Requires the mutex. Gives each batch its first lsn."""
        lsn = first = self._last_lsn + 1
        for g in group:
            g.lsn = lsn
            lsn += g.count
        self._last_lsn = lsn - 1
        return first

    def _commit(self, group: list[Writer], mem: Memtable, wal: LogWriter | None) -> None:
        """Requires the mutex: the unsynced write path, start to finish."""
        self._assign_lsns(group)
        try:
            if wal is not None:
                framed = wal_frame.encode_wal_group([g.rep for g in group], [g.lsn for g in group], wal.size)
                wal.append_framed(framed, False)
                self._wal_bytes += len(framed)
            for g in group:
                mem.apply_batch(g.rep, g.lsn)
        except BaseException as exc:
            self._set_bg_error(exc)
            self._queue.finish_group(group, exc)
            return
        self._published(group)
        self._queue.finish_group(group, None)

    def _published(self, group: list[Writer]) -> None:
        """Requires the mutex: the group is durable as configured and applied."""
        self._visible_lsn = self._last_lsn
        self._writes += len(group)
        for g in group:
            self._records_written += g.count
            if g.applied_index is not None and g.applied_index > self._mem_applied_index:
                self._mem_applied_index = g.applied_index
                if self._sync_wal:
                    self._written_applied_index = g.applied_index

    def _set_bg_error(self, exc: BaseException) -> None:
        """Requires the mutex (or a single-threaded context). From now on
        writes fail; reads go on; reopening recovers."""
        self._bg_error = exc
        self._open_for_writes = False

    def _make_room_for_write(self, force: bool = False) -> None:
        """Requires the mutex, as the queue's leader. Rotates a full memtable,
        stalling while the previous one is still being flushed or L0 is at
        its stop trigger."""
        opts = self.options
        stall_start = None
        self._check_open()
        while True:
            if self._bg_error is not None:
                raise QuorumKVError(f"the database is read-only after a background error: {self._bg_error}")
            sv = self._sv
            if not force and sv.mem.memory < opts.write_buffer_size:
                if self._wal is not None and self._wal.size >= opts.wal_segment_bytes:
                    self._roll_wal()
                break
            if force and sv.mem.count == 0:
                # Nothing to write, but an empty batch may have moved the applied
                # index (a snapshot of a state with no rows): it is durable as is.
                if sv.imm is None and self._mem_applied_index > self._versions.applied_index:
                    self._versions.log_and_apply(VersionEdit(applied_index=self._mem_applied_index))
                break
            if sv.imm is not None or len(sv.version.levels[0]) >= opts.l0_stop_trigger:
                if stall_start is None:
                    stall_start = time.monotonic()
                    self._stats["stalls"] += 1
                self._schedule_background()
                self._bg_cv.wait()
                self._check_open()   # close() wakes a stalled writer: nothing will make room any more
                continue
            new_log = self._roll_wal()
            self._imm_log_number = new_log
            self._imm_applied_index = self._mem_applied_index
            self._install_sv(mem=Memtable(), imm=sv.mem)
            self._schedule_background()
            break
        if stall_start is not None:
            self._stats["stall_seconds"] += time.monotonic() - stall_start

    def _roll_wal(self) -> int:
        number = self._versions.new_file_number()
        if self._wal is not None:
            old = self._wal
            try:
                self._wal = LogWriter(self._env, self._versions.path_of("log", number), number)
                # The new segment's name must be durable before any write in it
                # is acknowledged: fdatasync of a file does not persist its
                # directory entry.
                self._env.sync_dir(self.path)
                old.sync()   # complete before it is no longer the newest (replay rule)
                old.close()
            except BaseException as exc:   # half-rolled: stop taking writes
                self._set_bg_error(exc)
                raise
        return number

    def _install_sv(self, **changes) -> None:
        sv = self._sv
        self._sv = _SuperVersion(changes.get("mem", sv.mem), changes.get("imm", sv.imm),
                                 changes.get("version", sv.version))
        self._front.mem = self._sv.mem

    # ------------------------------------------------------------------ reads
    def get(self, table: str, key: bytes, snapshot: Snapshot | None = None) -> Record | None:
        """The live record of key, or None when it is absent or deleted."""
        hit = self._lookup(table, key, snapshot)
        if hit is None or hit[0] == write_batch.DELETE:
            return None
        return Record(hit[2], hit[1])

    def get_entry(self, table: str, key: bytes, snapshot: Snapshot | None = None) -> Entry | None:
        """The newest version of key, tombstones included (their seq decides
        which of two copies of a key is newer, e.g. during a range split);
        None when the key was never written or its tombstone was compacted away."""
        hit = self._lookup(table, key, snapshot)
        if hit is None:
            return None
        if hit[0] == write_batch.DELETE:
            return Entry(None, hit[1], True)
        return Entry(hit[2], hit[1], False)

    def _lookup(self, table: str, key: bytes, snapshot: Snapshot | None):
        # The point-read hot path; see _get_from_tables for the SSTable part.
        prefix = self._prefixes.get(table) if type(table) is str else None
        if prefix is None:
            self._table_id(table)   # raises TableNotFoundError
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY:
            _check_key(key)         # raises InvalidArgumentError
        # The SuperVersion before the lsn: a compaction installed in between would
        # have dropped versions below the lsn in the files a later SuperVersion
        # names (tests/engine/test_read_during_compaction.py); the files of one
        # held here stay, and what it holds is the state at this moment.
        sv = self._sv
        snap = self._visible_lsn if snapshot is None else snapshot.lsn
        ikey = prefix + key
        hit = sv.mem.get(ikey, snap)
        if hit is None:
            if sv.imm is not None:
                hit = sv.imm.get(ikey, snap)
                if hit is not None:
                    return hit
            return self._get_from_tables(sv.version, ikey, snap)
        return hit

    def _get_from_tables(self, version, ikey: bytes, snap: int):
        readers = self._tables.readers
        for smallest, largest, number in version.l0_ranges:
            if smallest <= ikey <= largest:
                reader = readers.get(number) or self._tables.get(number)
                hit = reader.get(ikey, snap)
                if hit is not None:
                    return hit
        for largest_keys, files in version.deep_levels:
            i = bisect_left(largest_keys, ikey)
            if i < len(files):
                f = files[i]
                if f.smallest <= ikey:
                    reader = readers.get(f.number) or self._tables.get(f.number)
                    hit = reader.get(ikey, snap)
                    if hit is not None:
                        return hit
        return None

    def scan(self, table: str, start: bytes | None = None, end: bytes | None = None, limit: int | None = None,
             reverse: bool = False, snapshot: Snapshot | None = None, keys_only: bool = False,
             fill_cache: bool | None = None) -> Iterator[tuple[bytes, bytes | None, bytes]]:
        """(key, value, seq) of the live records with start <= key < end, in
        key order (descending when reverse), at most limit of them, over a
        consistent snapshot taken now (or the one given). keys_only: values
        are None, which saves copying them. fill_cache: whether blocks read
        from disk enter the block cache; by default only for scans with a
        limit (pages), since a bulk scan would evict what point reads need."""
        tid = self._table_id(table)
        if start is not None:
            _check_key(start, "start")
        if end is not None:
            _check_key(end, "end")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgumentError(f"limit must be a non-negative int or None, got {limit!r}")
        sv = self._sv   # before the lsn, as in _lookup
        snap = self._visible_lsn if snapshot is None else snapshot.lsn
        prefix = _prefix(tid)
        lo = prefix + (start or b"")
        hi = prefix + end if end is not None else _prefix(tid + 1)
        if fill_cache is None:
            fill_cache = limit is not None
        scanner = merge.VisibleScanner(merge.MergingCursor(self._cursors(sv, bool(fill_cache))), lo, hi, snap, 4,
                                       bool(reverse), bool(keys_only))
        if limit == 0:
            return iter(())
        chunks = self._chunks(scanner, limit)
        records = itertools.chain.from_iterable(chunks)
        return records if limit is None else itertools.islice(records, limit)

    @staticmethod
    def _chunks(scanner, limit: int | None):
        size = _SCAN_FIRST_CHUNK if limit is None else min(limit, _SCAN_MAX_CHUNK)
        while True:
            chunk = scanner.next_chunk(size)
            if not chunk:
                return
            yield chunk
            size = min(size * 4, _SCAN_MAX_CHUNK)

    def _cursors(self, sv: _SuperVersion, fill_cache: bool) -> list:
        cursors = [sv.mem.cursor()]
        if sv.imm is not None:
            cursors.append(sv.imm.cursor())
        tables = self._tables
        version = sv.version
        cursors.extend(tables.get(f.number).cursor(fill_cache) for f in version.levels[0])
        for level in range(1, len(version.levels)):
            files = version.levels[level]
            if files:
                cursors.append(LevelCursor([tables.get(f.number) for f in files], version.largest_keys(level),
                                           fill_cache))
        return cursors

    def snapshot(self) -> Snapshot:
        """Pins the current state for reads until released."""
        with self._mutex:
            self._check_open()
            lsn = self._visible_lsn
            self._snapshots[lsn] = self._snapshots.get(lsn, 0) + 1
            return Snapshot(self, lsn)

    def _release_snapshot(self, snap: Snapshot) -> None:
        with self._mutex:
            n = self._snapshots.get(snap.lsn, 0) - 1
            if n <= 0:
                self._snapshots.pop(snap.lsn, None)
            else:
                self._snapshots[snap.lsn] = n

    def _smallest_snapshot(self) -> int:
        """Requires the mutex."""
        return min(self._snapshots) if self._snapshots else self._visible_lsn

    @property
    def applied_index(self) -> int:
        """The highest applied_index all of whose writes are durable: in the
        synced WAL, or (with wal=False or sync='never') in flushed SSTables."""
        with self._mutex:
            return max(self._written_applied_index, self._versions.applied_index)

    @property
    def last_seq(self) -> bytes:
        """The highest seq this DB issued or stored: every seq it issues later
        is above it (a replication leader stamps its next seqs above it)."""
        return self._sequencer.last

    # ------------------------------------------------------------ maintenance
    def flush(self) -> None:
        """Writes the memtable to an SSTable and waits until it is durable."""
        w = Writer(None, 0, None, control="rotate")
        with self._mutex:
            if not self._queue.join(w):
                return
            try:
                self._check_open()
                self._make_room_for_write(force=True)
                while self._sv.imm is not None and self._bg_error is None and not self._closed:
                    self._bg_cv.wait()
                self._check_open()   # closed meanwhile: the background thread stopped, nothing flushes it
                if self._bg_error is not None:
                    raise QuorumKVError(f"background error: {self._bg_error}")
            finally:
                self._queue.finish_group([w], None)

    def compact_range(self, table: str | None = None, start: bytes | None = None, end: bytes | None = None) -> None:
        """Flushes, then compacts every file overlapping the range (a whole
        table, or the whole DB when table is None) down to one level, dropping
        overwritten versions and tombstones no snapshot needs. Waits until done."""
        if table is None:
            lo, hi = None, None
        else:
            tid = self._table_id(table)
            lo = _prefix(tid) + (start or b"")
            hi = _prefix(tid) + end if end is not None else _prefix(tid + 1)
        self.flush()
        done = threading.Event()
        with self._mutex:
            self._check_open()
            if self._bg_error is not None:   # no thread will take it: do not wait for one
                raise QuorumKVError(f"background error: {self._bg_error}")
            self._manual.append((lo, hi, done))
            self._schedule_background()
        done.wait()
        with self._mutex:
            self._check_open()
            if self._bg_error is not None:
                raise QuorumKVError(f"background error: {self._bg_error}")

    # -------------------------------------------------------------- background
    def _schedule_background(self) -> None:
        """Requires the mutex. Asks for background work (flush, compactions),
        starting the background thread if none runs: it exits when idle, so
        a process with many DBs (a node's replicas) holds threads only for
        those with work. After a background error none starts: writes are
        refused and reads go on."""
        self._bg_work_requested = True
        self._bg_cv.notify_all()
        if self._bg_thread is None and not self._closed and self._bg_error is None:
            bg = threading.Thread(target=self._background_loop, name=f"quorumkv-bg:{self.path}", daemon=True)
            try:
                bg.start()
            except RuntimeError as exc:   # no thread to be had: fail as a background error would, never hang
                self._set_bg_error(exc)
                self._bg_cv.notify_all()
                return
            self._bg_thread = bg

    def _background_loop(self) -> None:
        idle = self.options.background_idle_seconds
        while True:
            with self._mutex:
                while not self._closed and not self._bg_work_requested:
                    if not self._bg_cv.wait(idle) and not self._bg_work_requested and not self._closed:
                        self._bg_thread = None   # idle: the next _schedule_background starts another
                        return
                if self._closed:
                    manual, self._manual = self._manual, []
                    for _, _, done in manual:   # wake compact_range callers
                        if done is not None:
                            done.set()
                    return
                self._bg_work_requested = False
            try:
                self._background_work()
            except BaseException as exc:   # keep serving reads; refuse writes
                with self._mutex:
                    self._set_bg_error(exc)
                    self._bg_cv.notify_all()
                    manual, self._manual = self._manual, []
                for _, _, done in manual:
                    if done is not None:
                        done.set()
                return
            with self._mutex:
                self._bg_cv.notify_all()

    def _background_work(self) -> None:
        while not self._closed:
            if self._sv.imm is not None:
                self._flush_imm()
                continue
            with self._mutex:
                manual = self._manual.pop(0) if self._manual else None
            if manual is not None:
                self._run_manual(*manual)
                continue
            with self._mutex:
                c = pick_compaction(self._sv.version, self.options, self._compact_pointer)
            if c is None:
                return
            self._run_compaction(c)

    def _flush_imm(self) -> None:
        sv = self._sv
        with self._mutex:
            smallest = self._smallest_snapshot()
            dropped = set(self._versions.dropped_tables)
            log_number, applied = self._imm_log_number, self._imm_applied_index
        result = run_merge([sv.imm.cursor()], self._versions, self.options, smallest, False, dropped, flush=True)
        failpoints.hit("flush.after_table")
        with self._mutex:
            edit = VersionEdit(add=[(0, f) for f in result.outputs], log_number=log_number,
                               last_lsn=sv.imm.max_lsn or None, applied_index=applied, max_seq=sv.imm.max_seq)
            self._versions.log_and_apply(edit)
            self._install_sv(imm=None, version=self._versions.current)
            self._stats["flushes"] += 1
            self._bg_cv.notify_all()
        self._delete_obsolete_files()

    def _run_compaction(self, c: Compaction) -> list[int]:
        """Runs c; returns the file numbers it wrote (or moved) into the output level."""
        if c.is_trivial_move() and c.level > 0:
            with self._mutex:
                self._versions.log_and_apply(move_edit(c))
                self._install_sv(version=self._versions.current)
                self._compact_pointer[c.level] = c.inputs[0].largest
                self._stats["trivial_moves"] += 1
            return [c.inputs[0].number]
        with self._mutex:
            smallest = self._smallest_snapshot()
            dropped = set(self._versions.dropped_tables)
        result = run_merge(compaction_cursors(c, self._tables), self._versions, self.options, smallest,
                           c.bottommost, dropped)
        failpoints.hit("compaction.before_manifest")
        with self._mutex:
            self._versions.log_and_apply(compaction_edit(c, result))
            self._install_sv(version=self._versions.current)
            if c.level > 0:
                self._compact_pointer[c.level] = max(f.largest for f in c.inputs)
            self._stats["compactions"] += 1
            self._stats["compaction_bytes_written"] += result.bytes_written
            self._stats["entries_dropped"] += result.dropped_entries
            self._bg_cv.notify_all()
        self._delete_obsolete_files()
        return [f.number for f in result.outputs]

    def _run_manual(self, lo: bytes | None, hi: bytes | None, done: threading.Event | None) -> None:
        """Pushes everything in [lo, hi] down to the deepest level holding any
        of it, then rewrites that level's files in the range that this run did
        not just write, so nothing in the range escapes a rewrite."""
        try:
            version = self._sv.version
            deepest = max((lvl for lvl, f in version.files() if f.overlaps(lo, hi)), default=-1)
            fresh: set[int] = set()
            for level in range(0, max(deepest, 1)):
                c = range_compaction(self._sv.version, level, lo, hi)
                if c is not None:
                    fresh.update(self._run_compaction(c))
            bottom = max(deepest, 1)
            c = rewrite_compaction(self._sv.version, bottom, lo, hi)
            if c is not None and any(f.number not in fresh for f in c.inputs):
                self._run_compaction(c)
        finally:
            if done is not None:
                done.set()

    def _delete_obsolete_files(self) -> None:
        env, vs = self._env, self._versions
        with self._mutex:
            live = vs.live_files()
            log_floor = vs.log_number
            manifest = f"MANIFEST-{vs.manifest_number:06d}"
            current_log = self._wal.number if self._wal is not None else -1
        for name in env.list_dir(self.path):
            stem, _, ext = name.partition(".")
            failpoints.hit("obsolete.mid_delete")
            if ext == "sst" and stem.isdigit() and int(stem) not in live:
                # Outputs of a running compaction are not in a Version yet, but
                # this runs only on the background thread, between jobs.
                self._tables.evict(int(stem))
                env.remove(os.path.join(self.path, name))
            elif ext == "log" and stem.isdigit() and int(stem) < log_floor and int(stem) != current_log:
                env.remove(os.path.join(self.path, name))
            elif name.startswith("MANIFEST-") and name != manifest:
                env.remove(os.path.join(self.path, name))
            elif name.endswith(".tmp"):
                env.remove(os.path.join(self.path, name))

    # ---------------------------------------------------------- introspection
    def stats(self) -> dict:
        """Counters and sizes: writes, fsyncs, flushes, compactions, stalls,
        files and bytes per level, memtable bytes, block cache use (with a
        shared Options.block_cache: the whole cache's, every DB's together)."""
        with self._mutex:
            s = dict(self._stats)
            s.update(writes=self._writes, records_written=self._records_written, wal_syncs=self._wal_syncs,
                     wal_records_synced=self._wal_records_synced, wal_bytes=self._wal_bytes)
            sv = self._sv
            s["levels"] = [{"files": len(files), "bytes": sum(f.size for f in files)}
                           for files in sv.version.levels]
            s["memtable_bytes"] = sv.mem.memory + (sv.imm.memory if sv.imm is not None else 0)
            s["last_lsn"] = self._last_lsn
            s["applied_index"] = max(self._written_applied_index, self._versions.applied_index)
            s["tables"] = len(self._versions.tables)
            s["snapshots"] = sum(self._snapshots.values())
        if self._block_cache is not None:
            s["block_cache_bytes"] = self._block_cache.used
            s["block_cache_hits"] = self._block_cache.hits
            s["block_cache_misses"] = self._block_cache.misses
        s["records_per_sync"] = s["wal_records_synced"] / s["wal_syncs"] if s["wal_syncs"] else 0.0
        return s

    def check(self) -> dict:
        """Full consistency check: every SSTable of the current version is
        read block by block (checksums), its entries are in internal order
        and within the key range the MANIFEST records, and the level
        invariants hold. Raises CorruptionError; returns counts."""
        from engine.check import check_version
        return check_version(self._sv.version, self._tables)

    # ------------------------------------------------------------------ close
    def _check_open(self) -> None:
        if self._closed:
            raise DBClosedError("the database is closed")

    def close(self) -> None:
        """Stops background work and releases the directory. With wal=False
        the memtable is flushed first, so a clean close loses nothing."""
        if self._closed:
            return
        # The memtable, an immutable one not flushed yet, or an applied index
        # an empty batch moved: each is lost to a close that skips it.
        for _ in range(3):
            if self.options.wal or self._bg_error is not None or not (
                    self._sv.mem.count or self._sv.imm is not None
                    or self._mem_applied_index > self._versions.applied_index):
                break
            self.flush()
        with self._mutex:
            self._closed = True
            self._open_for_writes = False
            for _lo, _hi, done in self._manual:   # compact_range callers: the background thread stops
                if done is not None:
                    done.set()
            self._bg_cv.notify_all()
            bg = self._bg_thread
        if bg is not None:
            bg.join()
        with self._mutex:
            # A synced group commit in flight (its WAL write and fsync happen
            # outside the mutex) finishes before its file is closed and the
            # directory released.
            while self._groups_in_flight:
                self._bg_cv.wait()
            if self._wal is not None:
                self._wal.close()
            self._versions.close()
        self._tables.close()
        self._lock_handle.release()

    def _kill(self) -> None:
        """Test hook: stop as a killed process would, closing nothing and
        flushing nothing (the background thread finishes its current step).
        Pair with MemEnv.crash() to simulate a power loss."""
        with self._mutex:
            self._closed = True
            self._open_for_writes = False
            self._bg_cv.notify_all()
            bg = self._bg_thread
        if bg is not None:
            bg.join()
        self._lock_handle.release()

    def __enter__(self) -> "DB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
