"""LogStore: the durable replicated log of one replica (the replicated log is
the write-ahead log: the engine runs with wal=False).

Purpose: the log's part of step 2 of the Ready contract
(server/replication/README.md): persist() makes a Ready's snapshot position,
entries and hard state durable with one write() and one fdatasync; open()
reads them back and durable_state() hands them to the Replica on restart;
compact() drops a prefix (rule S5). A commit hint (persist_commit_hint) is
only kept in memory, and goes to disk with the next persist(), compact() or
close().

On-disk format. A directory of segments NNNNNN.rlog (decimal, at least six
digits, numbered upwards), each the engine's log file header (written with
the segment's first frame) and a sequence of frames in the engine's log
framing (engine/_native/wal_frame.pyx: masked CRC32C u32, length u32, type u8,
payload; the CRC covers the frame's offset in the segment too) and nothing
else. wal_frame accepts only its own two frame types
(adding one means editing wal_frame.pyx), so every frame here has type
WRITE_BATCH (FRAME_TYPE) and the record kinds live inside the payload; the
engine never reads a .rlog file, so the shared type is not ambiguous. One
frame holds everything one persist() or compact() call writes, so a torn
write loses a whole call, never part of one:

    frame payload
    0         1
    +---------+----------+----------+-----
    | version | record   | record   | ...
    | u8      |          |          |
    +---------+----------+----------+-----

    record (integers little endian)                                 size
    +------+--------------------------------------------------------+
    | kind | body                                                   |
    | u8   |                                                        |
    +------+--------------------------------------------------------+
      1 SEGMENT_START  number u64 | base epoch u64 | base index u64 |   49
                       last index u64 | promised epoch u64 |
                       commit index u64
      2 BASE           epoch u64 | index u64                            17
      3 SNAPSHOT       epoch u64 | index u64                            17
      4 HARD_STATE     promised epoch u64 | commit index u64            17
      5 ENTRY          epoch u64 | index u64 | entry kind u8 |          22 + length
                       length u32 | payload (`length` bytes)

  version     FORMAT_VERSION; a reader refuses any other.
  entry kind  EntryKind (1 NOOP, 2 WRITE); payload: an engine write batch.

Replay folds the records of the segments in order into (base, entries,
hard state):
  SEGMENT_START  first record of a segment's first frame, and only there:
                 the segment's own number and the durable state when it was
                 started. The first header replayed sets the state, with the
                 entries base.index+1 .. last index held by older segments (see
                 rule 4); every later header must equal the folded state.
  BASE           compaction (S5): when index > base.index, base := (epoch,
                 index) and the entries up to index are dropped.
  SNAPSHOT       install (S4): the whole log becomes base := (epoch, index).
  HARD_STATE     the last one wins.
  ENTRY          drops every entry at or after its index, then appends: this
                 is how a divergent suffix (L2) is dropped without rewriting
                 files.
Damage follows engine/wal.py's read_log: a torn tail of the last segment is
dropped and counted (stats()["torn_tail_bytes"]); damage followed by a valid
frame, damage at the end of a segment a newer one follows, or a record that
does not parse, raises CorruptionError naming the file and offset.

Segment rules:
  1. A call writes to a new segment when there is none open (after open(),
     since an Env cannot append to an existing file), when the open one has
     reached segment_bytes, and for every snapshot install. The new segment's
     header and the call's records form its first frame; creating it costs one
     extra directory fsync.
  2. Only a prefix of the segments is deleted, never the newest, and only
     segments whose entries are all at or below the durable base (or that a
     durable SNAPSHOT record follows). The record that moved the base is
     fsynced first (for a snapshot: the new segment and its directory entry).
     Removals are not fsynced: a removed segment that comes back after a power
     loss either replays to the same state, or is older than a missing number
     and is ignored (a leftover of an interrupted deletion) and removed again.
  3. open() repairs the last segment, which stops being the last at the next
     write: a torn tail is cut off by rewriting the valid prefix atomically
     (Env.write_file_atomic: a fresh copy, which the SYNC_FAILED case below
     needs anyway; reserved zeros alone are cut with a synced truncate; either
     way every frame keeps the offset its checksum covers), and a
     segment with no valid frame is removed (and the directory fsynced), its
     number given to the next segment so that the numbers stay contiguous.
     Whatever it replays it first makes durable: a process that died between
     write() and fdatasync leaves its last frame in the page cache, where a
     restart reads it, and the replica must not acknowledge or promise on
     bytes a power loss would take back (the next segment's header would then
     disagree with the log before it). So the last segment and the directory
     are fsynced (Env.sync_file), or, when SYNC_FAILED is present, its valid
     prefix is rewritten atomically: after a failed writeback the kernel may
     keep pages that never reached the disk, marked clean, and an fsync of
     them succeeds without writing them.
  4. Because of rule 2 the first segment replayed may follow deleted ones; its
     header says which entries those held (base.index+1 .. last index). Later
     BASE, SNAPSHOT or truncating ENTRY records must cover them; if some are
     still missing at the end, a segment was lost: CorruptionError.
  5. After an I/O error in persist() or compact() the store leaves a file
     SYNC_FAILED in the directory (best effort, written atomically: the disk
     may refuse it too); open() removes it once rule 3's rewrite is durable.
  6. The open segment's space is reserved ahead of its writes, in steps of
     ALLOCATE_AHEAD_BYTES (WritableFile.allocate), so the newest segment may
     end in zeros that were never written; replay reads them as unwritten
     space, not as a torn tail (engine/wal.py, read_log with reserved_tail).
     No other segment keeps reserved space: before a newer segment is
     created, the open one is cut to what was written and synced, and open()
     cuts the newest one it replays (rule 3), so an older segment ending in
     zeros is damage, as before. Why: an fdatasync after an append that grows
     the file must also write the file's new length (on this machine's ext4
     without a journal, a synchronous inode write); in reserved space only
     the first write into each new block changes metadata. A small append's
     write + fdatasync went from about 160 to about 100 us, and one client's
     replicated writes 5-6% faster (bench/fsync_modes.py; bench/RESULTS.md,
     2026-11-28 06:05). A reservation that fails (less than a step of disk
     free) is skipped: the write goes ahead without it.

Invariants:
  1. The in-memory state (base, entries, hard state) is exactly what a replay
     of the directory gives: it changes only after the fsync that made it
     durable returned. (A pending commit hint is not part of it.)
  2. entries are contiguous from base.index + 1.
  3. Segment numbers on disk that matter are contiguous; the newest segment
     is never deleted while the store is open.
  4. After an I/O error in persist() or compact() the store refuses every
     further write (QuorumKVError): a failed fsync leaves the page cache in an
     unknown state, so only a reopen, which makes what it replays durable
     first (segment rules 3 and 5), can continue.

Thread-safety: single writer, no locks: one caller at a time (the node runs
persist() in its I/O thread and never touches the store meanwhile, one Ready
outstanding). The directory is locked (LOCK) against a second opener.
Ownership: the Entry objects passed to persist() and returned by
durable_state() are immutable and shared with the caller, not copied.
"""
from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from engine._native import wal_frame
from engine.env import Env, FileLock, WritableFile
from engine.errors import CorruptionError, DBClosedError, InvalidArgumentError, QuorumKVError
from engine.options import MIB
from engine.wal import read_log
from server import timeline
from server.replication.messages import ZERO_POSITION, Entry, EntryKind, LogPosition
from server.replication.ready import DurableState, HardState

log = logging.getLogger(__name__)

FRAME_TYPE = wal_frame.WRITE_BATCH   # the only frame type used (see the module docstring)
FORMAT_VERSION = 1
SEGMENT_SUFFIX = ".rlog"
DEFAULT_SEGMENT_BYTES = 64 * MIB
# Space reserved ahead of the writes in the open segment (segment rule 6).
ALLOCATE_AHEAD_BYTES = 1 * MIB
LOCK_NAME = "LOCK"


class RecordKind(IntEnum):
    """The first byte of every record (module docstring)."""

    SEGMENT_START = 1
    BASE = 2
    SNAPSHOT = 3
    HARD_STATE = 4
    ENTRY = 5


# kind, number, base epoch, base index, last index, promised epoch, commit index
_SEGMENT_START = struct.Struct("<BQQQQQQ")
_PAIR = struct.Struct("<BQQ")            # kind and two u64: BASE, SNAPSHOT, HARD_STATE
_ENTRY = struct.Struct("<BQQBI")         # kind, epoch, index, entry kind, payload length
_VERSION = bytes([FORMAT_VERSION])
_ENTRY_KINDS = {int(k): k for k in EntryKind}
_SEGMENT_NAME = re.compile(r"\d{6,}" + re.escape(SEGMENT_SUFFIX))
_TMP_SUFFIX = SEGMENT_SUFFIX + ".tmp"   # Env.write_file_atomic's temporary name
SYNC_FAILED_NAME = "SYNC_FAILED"         # segment rule 5


@dataclass(slots=True)
class _Segment:
    number: int
    path: str
    max_index: int = 0   # greatest entry index written in it that may still matter (0: none)


class _Replay:
    """The fold of records into (base, entries, hard state); see the module
    docstring. entries[i] has index start + i; indexes base.index + 1 ..
    start - 1 are held by segments not replayed (rule 4)."""

    __slots__ = ("base", "entries", "start", "promised_epoch", "commit_index", "started")

    def __init__(self) -> None:
        self.base = ZERO_POSITION
        self.entries: list[Entry] = []
        self.start = 1
        self.promised_epoch = 0
        self.commit_index = 0
        self.started = False

    @property
    def end(self) -> int:
        """The index after the last one."""
        return self.start + len(self.entries)

    def segment_start(self, base: LogPosition, last_index: int, promised_epoch: int, commit_index: int,
                      path: str, offset: int) -> None:
        if last_index < base.index:
            raise CorruptionError(f"segment header with last index {last_index} below its base {base}", path, offset)
        if not self.started:
            self.started = True
            self.base, self.entries, self.start = base, [], last_index + 1
            self.promised_epoch, self.commit_index = promised_epoch, commit_index
            return
        if (base, last_index, promised_epoch, commit_index) != (self.base, self.end - 1, self.promised_epoch,
                                                                self.commit_index):
            raise CorruptionError(
                f"segment header (base {base}, last {last_index}, promised {promised_epoch}, commit "
                f"{commit_index}) disagrees with the segments before it (base {self.base}, last {self.end - 1}, "
                f"promised {self.promised_epoch}, commit {self.commit_index}): a segment is missing or misplaced",
                path, offset)

    def entry(self, e: Entry, path: str, offset: int) -> None:
        index = e.index
        entries = self.entries
        end = self.start + len(entries)
        if index == end:
            entries.append(e)
            return
        if index <= self.base.index:
            raise CorruptionError(f"entry {index} at or below the log's base {self.base}", path, offset)
        if index > end:
            raise CorruptionError(f"entry {index} after the log's end {end - 1}: entries are missing", path, offset)
        if index < self.start:
            entries.clear()   # truncation into entries held by segments not replayed
            self.start = index
        else:
            del entries[index - self.start:]
        entries.append(e)

    def compacted(self, pos: LogPosition, path: str, offset: int) -> None:
        if pos.index <= self.base.index:
            return
        if pos.index >= self.end:
            raise CorruptionError(f"compaction to {pos} past the log's end {self.end - 1}", path, offset)
        self.base = pos
        if pos.index >= self.start:
            drop = pos.index - self.start + 1
            if self.entries[drop - 1].epoch != pos.epoch:
                raise CorruptionError(f"compaction to {pos} but the entry there is of epoch "
                                      f"{self.entries[drop - 1].epoch}", path, offset)
            del self.entries[:drop]
            self.start = pos.index + 1

    def snapshot(self, pos: LogPosition) -> None:
        self.base, self.entries, self.start = pos, [], pos.index + 1

    def finish(self, path: str) -> None:
        if self.start != self.base.index + 1:
            raise CorruptionError(f"log entries {self.base.index + 1}..{self.start - 1} are missing: "
                                  "a segment that held them was lost", path, 0)


def _corrupt(what: str, path: str, offset: int) -> CorruptionError:
    return CorruptionError(f"malformed replicated log frame: {what}", path, offset)


def _replay_frame(replay: _Replay, seg: _Segment, older: list[_Segment], payload: bytes, path: str,
                  offset: int, first: bool) -> None:
    """Folds the records of one frame. One Python Entry per entry, no per-byte work."""
    n = len(payload)
    if n == 0 or payload[0] != FORMAT_VERSION:
        got = payload[0] if n else "none"
        raise CorruptionError(f"replicated log format version {got}, this build reads {FORMAT_VERSION} "
                              "(written by a newer version?)", path, offset)
    if first != (n > 1 and payload[1] == RecordKind.SEGMENT_START):
        raise _corrupt("a segment must start with its header, and only there", path, offset)
    pos = 1
    try:
        while pos < n:
            kind = payload[pos]
            if kind == RecordKind.ENTRY:
                _, epoch, index, ekind, length = _ENTRY.unpack_from(payload, pos)
                body = pos + _ENTRY.size
                pos = body + length
                if pos > n:
                    raise _corrupt("entry payload runs past the frame", path, offset)
                entry_kind = _ENTRY_KINDS.get(ekind)
                if entry_kind is None:
                    raise _corrupt(f"unknown entry kind {ekind}", path, offset)
                replay.entry(Entry(epoch, index, entry_kind, payload[body:pos]), path, offset)
                if index > seg.max_index:
                    seg.max_index = index
            elif kind == RecordKind.SEGMENT_START:
                if pos != 1:
                    raise _corrupt("segment header after other records", path, offset)
                _, number, base_epoch, base_index, last, promised, commit = _SEGMENT_START.unpack_from(payload, pos)
                if number != seg.number:
                    raise CorruptionError(f"segment header names segment {number}", path, offset)
                replay.segment_start(LogPosition(base_epoch, base_index), last, promised, commit, path, offset)
                pos += _SEGMENT_START.size
            elif kind == RecordKind.BASE or kind == RecordKind.SNAPSHOT or kind == RecordKind.HARD_STATE:
                _, a, b = _PAIR.unpack_from(payload, pos)
                pos += _PAIR.size
                if kind == RecordKind.HARD_STATE:
                    replay.promised_epoch, replay.commit_index = a, b
                elif kind == RecordKind.BASE:
                    replay.compacted(LogPosition(a, b), path, offset)
                else:
                    replay.snapshot(LogPosition(a, b))
                    seg.max_index = 0
                    for s in older:   # everything before a snapshot is obsolete
                        s.max_index = 0
            else:
                raise _corrupt(f"unknown record kind {kind}", path, offset)
    except struct.error:
        raise _corrupt("record runs past the frame", path, offset) from None


class LogStore:
    """The durable log of one replica: base position, entries after it,
    promised epoch and commit index. Open with LogStore.open()."""

    def __init__(self, env: Env, directory: str, segment_bytes: int, lock: FileLock):
        """Private: use LogStore.open(), which replays the directory."""
        self._env = env
        self.path = directory
        self._segment_bytes = segment_bytes
        self._lock: FileLock | None = lock
        self._base = ZERO_POSITION
        self._entries: list[Entry] = []
        self._hard_state = HardState()
        self._segments: list[_Segment] = []
        self._file: WritableFile | None = None   # the newest segment, once this session wrote to it
        self._allocated = 0   # bytes of self._file reserved (segment rule 6)
        self._allocate_failures = 0
        self._allocate_errno: int | None = None   # of the last failure: a different one is logged again
        self._next_number = 1
        self._failure: BaseException | None = None
        self._fsyncs = self._dir_fsyncs = self._bytes_written = self._writes = 0
        self._pending_hint: HardState | None = None   # a commit hint not written yet (persist_commit_hint)
        self._segments_created = self._segments_deleted = self._remove_failures = 0
        self._torn_tail_bytes = 0

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, env: Env, directory: str, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> LogStore:
        """Opens (creating if missing) the log in `directory` and replays it.

        Requires: segment_bytes > 0. Raises CorruptionError when acknowledged
        data is damaged (nothing is changed on disk then), DBLockedError when
        another opener holds the directory. A torn tail is dropped and counted.
        """
        if segment_bytes <= 0:
            raise InvalidArgumentError(f"segment_bytes must be positive, got {segment_bytes}")
        if not env.exists(directory):
            env.mkdirs(directory)
            env.sync_dir(os.path.dirname(directory.rstrip("/")) or ".")
        lock = env.lock(os.path.join(directory, LOCK_NAME))
        try:
            store = cls(env, directory, segment_bytes, lock)
            store._recover()
        except BaseException:
            lock.release()
            raise
        return store

    def _segment_path(self, number: int) -> str:
        return os.path.join(self.path, f"{number:06d}{SEGMENT_SUFFIX}")

    def _recover(self) -> None:
        env = self._env
        names = env.list_dir(self.path)
        numbers = sorted(int(name[:-len(SEGMENT_SUFFIX)]) for name in names if _SEGMENT_NAME.fullmatch(name))
        self._next_number = numbers[-1] + 1 if numbers else 1
        contents = {}
        empty_newest = None   # a newest segment without one valid frame: it holds nothing (rule 3)
        if numbers:
            # Only the newest segment may end in reserved space (rule 6).
            newest = contents[numbers[-1]] = read_log(env, self._segment_path(numbers[-1]), reserved_tail=True)
            if not newest.frames:
                empty_newest = numbers.pop()
        k = len(numbers) - 1
        while k > 0 and numbers[k - 1] == numbers[k] - 1:
            k -= 1
        live, stragglers = numbers[max(k, 0):], numbers[:max(k, 0)]
        replay = _Replay()
        segments: list[_Segment] = []
        for number in live:
            path = self._segment_path(number)
            log = contents[number] if number in contents else read_log(env, path)
            if log.torn_bytes and (number != live[-1] or empty_newest is not None):
                raise CorruptionError("damaged end of a log segment that a newer one follows: "
                                      "acknowledged data is damaged", path, log.valid_bytes)
            seg = _Segment(number, path)
            for j, (offset, ftype, payload) in enumerate(log.frames):
                if ftype != FRAME_TYPE:
                    raise CorruptionError(f"frame of type {ftype} in a replicated log segment", path, offset)
                _replay_frame(replay, seg, segments, payload, path, offset, j == 0)
            segments.append(seg)
            last_log = log
        if live:
            replay.finish(self._segment_path(live[0]))
        self._base, self._entries = replay.base, replay.entries
        self._hard_state = HardState(replay.promised_epoch, replay.commit_index)
        self._segments = segments

        # Replay succeeded: tidy up (rules 2 and 3). Nothing above changed the disk.
        for number in stragglers:
            self._remove(self._segment_path(number))
        for name in names:
            if name.endswith(_TMP_SUFFIX) or name == SYNC_FAILED_NAME + ".tmp":
                self._remove(os.path.join(self.path, name))
        if empty_newest is not None:
            self._torn_tail_bytes = contents[empty_newest].torn_bytes
            env.remove(self._segment_path(empty_newest))
            env.sync_dir(self.path)
            self._next_number = empty_newest   # reused: the numbers on disk stay contiguous
        sync_failed = SYNC_FAILED_NAME in names
        if live:   # rule 3: what was replayed is durable before anyone acts on it
            path = segments[-1].path
            if last_log.torn_bytes or sync_failed:
                self._torn_tail_bytes += last_log.torn_bytes
                env.write_file_atomic(path, env.read_file(path)[:last_log.valid_bytes])
            else:
                if env.file_size(path) > last_log.valid_bytes:   # its reserved space (rule 6): given back
                    env.truncate(path, last_log.valid_bytes)
                env.sync_file(path)
                env.sync_dir(self.path)
        if sync_failed:
            env.remove(os.path.join(self.path, SYNC_FAILED_NAME))
            env.sync_dir(self.path)
        self._delete_obsolete()

    # ------------------------------------------------------------- reading
    @property
    def base(self) -> LogPosition:
        """The durable base position: (0, 0), or the last compacted or snapshot position."""
        return self._base

    @property
    def last_index(self) -> int:
        """The index of the last durable entry (base.index when there is none)."""
        return self._base.index + len(self._entries)

    @property
    def promised_epoch(self) -> int:
        return self._hard_state.promised_epoch

    @property
    def commit_index(self) -> int:
        """The durable commit index (a pending hint is not counted until written)."""
        return self._hard_state.commit_index

    @property
    def hard_state(self) -> HardState:
        """The durable hard state (without a pending commit hint)."""
        return self._hard_state

    def durable_state(self, applied_index: int) -> DurableState:
        """What a restarting Replica needs: the durable hard state, base and
        entries, with the engine's durable `applied_index` as given."""
        return DurableState(promised_epoch=self._hard_state.promised_epoch,
                            commit_index=self._hard_state.commit_index, base=self._base,
                            entries=list(self._entries), applied_index=applied_index)

    @property
    def fsyncs(self) -> int:
        """File fdatasyncs since open (stats()["fsyncs"], without building the dict)."""
        return self._fsyncs

    def stats(self) -> dict[str, int]:
        """Counters since open: fsyncs (file fdatasyncs) and dir_fsyncs,
        bytes_written, writes (calls that wrote), segment counts,
        torn_tail_bytes dropped by open(), remove_failures (retried later),
        allocate_failures (space not reserved ahead: rule 6)."""
        return dict(fsyncs=self._fsyncs, dir_fsyncs=self._dir_fsyncs, bytes_written=self._bytes_written,
                    writes=self._writes, segments=len(self._segments), segments_created=self._segments_created,
                    segments_deleted=self._segments_deleted, remove_failures=self._remove_failures,
                    torn_tail_bytes=self._torn_tail_bytes, allocate_failures=self._allocate_failures)

    # ------------------------------------------------------------- writing
    def persist_commit_hint(self, hard_state: HardState) -> None:
        """Records a new commit index, written by the next persist() call
        (no write of its own). The commit index is a hint
        (server/replication/README.md, "State": losing it is safe), and a
        leader advances it once per write: a write() of its own would sit on
        every write's path, between the quorum's acknowledgement and the
        answer. A change of the promised epoch is no hint: it is persisted
        (fsynced) at once."""
        self._check_writable()
        if hard_state.promised_epoch != self._hard_state.promised_epoch:
            self.persist(hard_state, ())
        elif hard_state != self._hard_state:
            self._pending_hint = hard_state

    def persist(self, hard_state: HardState | None, entries: Sequence[Entry],
                snapshot: LogPosition | None = None) -> None:
        """Makes durable, in this order: `snapshot` (the whole log becomes
        base = snapshot, no entries), `entries` (every stored entry at or
        after entries[0].index is dropped, then they are appended), and
        `hard_state` (skipped when equal to the durable one; None: the last
        commit hint not written yet, if any).

        Costs one write() and one fdatasync, plus a directory fsync when it
        starts a new segment (rule 1); nothing at all when there is nothing to
        persist. On return everything is durable; if it raises, a reopen finds
        the state before or after the call, and this store refuses further
        writes.
        Requires: entries contiguous, entries[0].index in base.index + 1 ..
        last_index + 1 (with base and last_index after the snapshot, if any);
        otherwise InvalidArgumentError and nothing is written.
        """
        self._check_writable()
        if hard_state is None:
            hard_state = self._pending_hint   # the replica's hard states only grow: a given one is newer
        if hard_state is not None and hard_state == self._hard_state:
            hard_state = None
        if snapshot is None and not entries and hard_state is None:
            return
        base = self._base if snapshot is None else snapshot
        last = self.last_index if snapshot is None else snapshot.index
        new_segment = snapshot is not None or self._needs_new_segment()
        records: list[bytes] = [_VERSION]
        if new_segment:
            records.append(self._header())
        if snapshot is not None:
            records.append(_PAIR.pack(RecordKind.SNAPSHOT, snapshot.epoch, snapshot.index))
        first = 0
        if entries:
            first = entries[0].index
            if not base.index < first <= last + 1:
                raise InvalidArgumentError(f"entries start at {first}; the log holds {base.index + 1}..{last}, so "
                                           f"the first entry must be in {base.index + 1}..{last + 1}")
            pack = _ENTRY.pack
            expect = first
            for e in entries:
                if e.index != expect:
                    raise InvalidArgumentError(f"entries are not contiguous: {e.index} after {expect - 1}")
                expect += 1
                records.append(pack(RecordKind.ENTRY, e.epoch, e.index, e.kind, len(e.payload)))
                records.append(e.payload)
        if hard_state is not None:
            records.append(_PAIR.pack(RecordKind.HARD_STATE, hard_state.promised_epoch, hard_state.commit_index))
        self._write(records, new_segment)
        self._pending_hint = None   # written, or older than the hard state just written
        # Durable: the in-memory state follows (invariant 1).
        active = self._segments[-1]
        if snapshot is not None:
            self._base, self._entries = snapshot, []
            for seg in self._segments:
                seg.max_index = 0
        if entries:
            del self._entries[first - self._base.index - 1:]
            self._entries.extend(entries)
            active.max_index = max(active.max_index, entries[-1].index)
        if hard_state is not None:
            self._hard_state = hard_state
        if snapshot is not None:
            self._delete_obsolete()

    def compact(self, index: int) -> None:
        """Drops the entries up to `index` (rule S5): base becomes (epoch of
        the entry at index, index), durably, and then the segments holding
        only entries at or below it are deleted. A crash leaves the old or the
        new base, never a gap. An index at or below the base is a no-op.
        Requires: index <= last_index (else InvalidArgumentError). Costs one
        write and one fdatasync (plus a directory fsync if it starts a segment).
        """
        self._check_writable()
        if index <= self._base.index:
            return
        if index > self.last_index:
            raise InvalidArgumentError(f"cannot compact to {index}: the durable log ends at {self.last_index}")
        epoch = self._entries[index - self._base.index - 1].epoch
        new_segment = self._needs_new_segment()
        records = [_VERSION]
        if new_segment:
            records.append(self._header())
        records.append(_PAIR.pack(RecordKind.BASE, epoch, index))
        hint = self._pending_hint   # in the same frame: the durable commit index never trails the new base
        if hint is not None:
            records.append(_PAIR.pack(RecordKind.HARD_STATE, hint.promised_epoch, hint.commit_index))
        self._write(records, new_segment)
        del self._entries[:index - self._base.index]
        self._base = LogPosition(epoch, index)
        if hint is not None:
            self._hard_state, self._pending_hint = hint, None
        self._delete_obsolete()

    def close(self) -> None:
        """Writes a pending commit hint (a clean stop keeps the last commit
        index), closes the open segment and releases the directory. Idempotent."""
        if self._pending_hint is not None and self._lock is not None and self._failure is None:
            try:
                self.persist(None, ())
            except QuorumKVError:   # a hint may be lost (the store is poisoned and says why on reopen)
                pass
        if self._file is not None:
            file, self._file = self._file, None
            file.close()
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.release()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- internals
    def _check_writable(self) -> None:
        if self._lock is None:
            raise DBClosedError(f"the log store {self.path} is closed")
        if self._failure is not None:
            raise QuorumKVError(f"the log store {self.path} refuses writes after an I/O failure "
                                f"(reopen it to recover): {self._failure!r}") from self._failure

    def _needs_new_segment(self) -> bool:
        return self._file is None or self._file.size >= self._segment_bytes

    def _header(self) -> bytes:
        """The SEGMENT_START record of the next segment: the durable state now."""
        hs = self._hard_state
        return _SEGMENT_START.pack(RecordKind.SEGMENT_START, self._next_number, self._base.epoch, self._base.index,
                                   self.last_index, hs.promised_epoch, hs.commit_index)

    def _write(self, records: list[bytes], new_segment: bool) -> None:
        """One frame of `records`, one write, one fdatasync (and a directory
        fsync for a new segment). Any failure poisons the store (invariant 4).
        Every frame is synced before the next one is written, so only the
        last segment can end in a torn frame."""
        payload = b"".join(records)
        if len(payload) > wal_frame.MAX_PAYLOAD:
            raise InvalidArgumentError(f"one call may write at most {wal_frame.MAX_PAYLOAD} bytes")
        try:
            if new_segment:
                if self._file is not None and self._allocated > self._file.size:
                    # Rule 6: the segment a newer one follows keeps no reserved
                    # space, durably before the newer one holds anything.
                    self._env.truncate(self._segments[-1].path, self._file.size)
                    self._file.sync()
                number = self._next_number
                path = self._segment_path(number)
                self._next_number += 1
                file = self._env.open_writable(path)
                old, self._file = self._file, file
                self._allocated = 0
                self._segments.append(_Segment(number, path))
                self._segments_created += 1
                if old is not None:
                    old.close()
            assert self._file is not None
            # The frame's checksum covers the offset it lands at: the bytes
            # written so far, not the end of the reserved space (rule 6). A new
            # segment starts with the file header, in the same write.
            offset = self._file.size
            header = wal_frame.FILE_HEADER if offset == 0 else b""
            framed = header + wal_frame.encode_frames(FRAME_TYPE, [payload], offset + len(header))
            end = offset + len(framed)
            if end > self._allocated:   # rule 6
                self._allocated = end + ALLOCATE_AHEAD_BYTES
                try:
                    self._file.allocate(self._allocated)
                except OSError as exc:   # e.g. less than a step free: write without it
                    self._allocate_failures += 1
                    if self._allocate_failures == 1 or exc.errno != self._allocate_errno:
                        log.warning("%s: cannot reserve log space ahead (%s): writing without (failures so far: "
                                    "%d)", self.path, exc, self._allocate_failures)
                    self._allocate_errno = exc.errno
            self._file.write(framed)
            self._bytes_written += len(framed)
            if timeline.ENABLED:
                timeline.mark("log.fsync_start")
            self._file.sync()
            if timeline.ENABLED:
                timeline.mark("log.fsync_end")
            self._fsyncs += 1
            if new_segment:
                self._env.sync_dir(self.path)
                self._dir_fsyncs += 1
        except BaseException as exc:
            self._failure = exc
            self._leave_sync_failed()
            raise
        self._writes += 1

    def _leave_sync_failed(self) -> None:
        """Segment rule 5: after a failed write or fsync, tells the next open
        not to trust an fsync of the newest segment. Best effort: if the disk
        refuses this too, the next open fsyncs instead of rewriting."""
        try:
            self._env.write_file_atomic(os.path.join(self.path, SYNC_FAILED_NAME),
                                        b"a write or fsync failed: the next open rewrites the newest segment\n")
        except Exception:  # noqa: BLE001 - the store is failing already; the original error is raised
            pass

    def _remove(self, path: str) -> bool:
        """Removes a file no replay needs; False (and counted) if that failed."""
        try:
            self._env.remove(path)
        except FileNotFoundError:
            pass
        except OSError:
            self._remove_failures += 1
            return False
        return True

    def _delete_obsolete(self) -> None:
        """Rule 2: deletes the oldest segments while they hold nothing above
        the durable base, never the newest one; stops at a failed removal
        (the next compaction retries)."""
        segments = self._segments
        while len(segments) > 1 and segments[0].max_index <= self._base.index:
            if not self._remove(segments[0].path):
                return
            segments.pop(0)
            self._segments_deleted += 1
