"""ReplicaStorage: everything one replica keeps on disk, and the crash-safe moves between states.

Purpose: the disk side of the Ready contract (server/replication/README.md)
for one replica: the replicated log (server/node/log_store.py, which is the
write-ahead log: the engine runs with wal=False), the engine DB holding the
range's data with its applied index, and snapshot staging and install.

Layout of a replica directory:

    <dir>/log/              LogStore segments: entries, promised epoch, commit hint
    <dir>/db/               the engine DB (tables named t<id>, ids cluster-wide)
    <dir>/db.installing/    a snapshot being installed (see install_snapshot)
    <dir>/snapshot.staging  received snapshot chunks, framed like the WAL
    <dir>/RECOVERING        present while a member that lost its data catches up
                            (it must not vote: server/replication/README.md)
    <dir>.new, <dir>.dropped   a crash's leftovers of mark_recovering and
                            remove_replica_dir: the node removes them at start

Why one engine DB per replica (not one per node with a keyspace per replica):
the engine's applied index is per DB, a snapshot install replaces the whole
DB by a directory rename, and dropping a replica is removing a directory.
The price is a memtable per replica (an idle one holds 64 KiB; the background
thread runs only while there is work), so the write buffer is sized per
replica (ENGINE_OPTIONS); the node gives every replica's engine one shared
block cache (Node.block_cache), so reads' memory is bounded per node. Sharing
one log and one engine across replicas, as TiKV and CockroachDB do, is the
way to thousands of replicas per node (ARCHITECTURE.md, "Not yet").

Snapshot chunks: a kind byte, then the body:

    1 RECORDS   one write batch (engine/_native/write_batch.pyx) of at most
                CHUNK_BYTES of records, tables identified by their ids; the
                last chunk carries the snapshot index as its applied index
    2 DROPPED   the ids of dropped tables (u32 LE each): the first chunk, so
                the installed engine refuses them too and a write that raced a
                drop is voided on this member as on the others Staging is not
fsynced: a follower that restarts mid-transfer asks for chunk 0 again (rule
S3), so only the install must be atomic, and it is:

  1. build the new DB in db.installing from the staged chunks and flush it
     (the engine makes it durable, with applied index = snapshot index);
  2. LogStore.persist(snapshot=position): the log is now empty above it;
  3. rename db -> db.old, db.installing -> db, fsync the directory, remove db.old.

Step 1 ends with a directory fsync, so db.installing's name is durable
before step 2. On open, a db.installing is finished (step 3) if the log's
base is its applied index (the crash came after step 2), and removed
otherwise; then an engine whose applied index is below the log's base is
refused (CorruptionError): entries between the two would be in neither.

Thread-safety: persist() of log entries runs on the event loop; persist() of
snapshot chunks and installs runs in the node's I/O thread while the loop
reads the DB. The DB is thread-safe, and the loop never touches the log store
while a persist is in flight (one Ready outstanding).
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
from collections.abc import Iterator, Sequence

from engine import DB, failpoints
from engine._native import wal_frame, write_batch
from engine.env import DEFAULT_ENV
from engine.errors import CorruptionError, TableExistsError
from engine.wal import LogWriter, read_log
from server.node.dedup import DEDUP_TABLE_ID
from server.node.log_store import LogStore
from server.replication.messages import Entry, LogPosition
from server.replication.ready import DurableState, HardState, StagedChunk

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
CHUNK_RECORDS = b"\x01"
CHUNK_DROPPED = b"\x02"
ENGINE_OPTIONS = dict(wal=False, sync="never", write_buffer_size=16 << 20, block_cache_bytes=32 << 20)


def table_name(table_id: int) -> str:
    return f"t{table_id}"


RECOVERING = "RECOVERING"


PARTIAL_SUFFIXES = (".new", ".dropped")   # replica directories a crash may leave; removed at start


def mark_recovering(directory: str) -> None:
    """Before a replica that lost its data first opens: the marker is durable
    before anything else is created, so a crash while catching up cannot make
    the member forget that it must not vote yet. The directory appears under
    its name with the marker already in it (built as <directory>.new, then
    renamed): a crash in between leaves no empty replica directory, which
    would open as a fresh member with a vote."""
    if os.path.exists(directory):
        DEFAULT_ENV.write_file_atomic(os.path.join(directory, RECOVERING), b"lost its data; catching up\n")
        DEFAULT_ENV.sync_dir(directory)
        return
    building = directory + ".new"
    shutil.rmtree(building, ignore_errors=True)
    os.makedirs(building)
    DEFAULT_ENV.write_file_atomic(os.path.join(building, RECOVERING), b"lost its data; catching up\n")
    DEFAULT_ENV.sync_dir(building)
    DEFAULT_ENV.rename(building, directory)
    DEFAULT_ENV.sync_dir(os.path.dirname(directory) or ".")


def remove_replica_dir(directory: str) -> None:
    """A dropped replica's directory goes in one step (renamed, then deleted):
    a crash halfway through a recursive delete would leave a partial replica
    (a log without its engine, say) to be opened at the next start."""
    if not os.path.exists(directory):
        return
    doomed = directory + ".dropped"
    shutil.rmtree(doomed, ignore_errors=True)
    DEFAULT_ENV.rename(directory, doomed)
    DEFAULT_ENV.sync_dir(os.path.dirname(directory) or ".")
    shutil.rmtree(doomed, ignore_errors=True)


def _without_tables(rep: bytes, table_ids: list[int]) -> bytes:
    """The batch minus the records of dropped tables (rare: a write that raced
    its table's drop), keeping the applied index. Every replica filters the
    same way, so they stay identical."""
    keep = [r for r in write_batch.decode(rep) if r[1] not in table_ids]
    return write_batch.encode_many(keep, applied_index=write_batch.applied_index(rep))


class ReplicaStorage:
    def __init__(self, directory: str, node_id: int, engine_options: dict | None = None):
        self.directory = directory
        self.node_id = node_id
        self.engine_options = dict(ENGINE_OPTIONS, **(engine_options or {}), node_id=node_id)
        if not os.path.isdir(directory):
            os.makedirs(directory)
            DEFAULT_ENV.sync_dir(os.path.dirname(directory.rstrip("/")) or ".")
        self.log = LogStore.open(DEFAULT_ENV, os.path.join(directory, "log"))
        try:
            self._recover_install()
            self.db = DB.open(self._db_path, **self.engine_options)
        except BaseException:
            self.log.close()
            raise
        # The names log/ and db/ are durable before anything relies on them: a
        # db/ that a power loss took away would reopen as an empty engine.
        DEFAULT_ENV.sync_dir(directory)
        if self.db.applied_index < self.log.base.index:
            # Compaction and snapshot installs move the base only to what the
            # engine holds durably, so this is lost data, never a state to go on from.
            applied, base = self.db.applied_index, self.log.base.index
            self.db.close()
            self.log.close()
            raise CorruptionError(f"the engine's applied index {applied} is below the log's base {base}: "
                                  f"entries {applied + 1}..{base} are in neither", self._db_path)
        self._tables: set[int] = {int(name[1:]) for name in self.db.tables()}
        self._staging: LogWriter | None = None
        self._staging_for: LogPosition | None = None
        self.snapshots_installed = 0
        self.recovering = os.path.exists(os.path.join(directory, RECOVERING))

    @property
    def _db_path(self) -> str:
        return os.path.join(self.directory, "db")

    def durable_state(self) -> DurableState:
        return self.log.durable_state(self.db.applied_index)

    # ------------------------------------------------------------ Ready step 2
    def needs_fsync(self, chunks: Sequence[StagedChunk], snapshot: LogPosition | None,
                    entries: Sequence[Entry], hard_state: HardState | None) -> bool:
        """Whether persist() of this would fsync (anything but a commit hint)."""
        return bool(chunks or snapshot is not None or entries or (
            hard_state is not None and hard_state.promised_epoch != self.log.promised_epoch))

    def persist(self, chunks: Sequence[StagedChunk], snapshot: LogPosition | None,
                entries: Sequence[Entry], hard_state: HardState | None) -> None:
        """Step 2 of the Ready contract, in its order. On the event loop for log
        entries, in the I/O thread for snapshot work (ReplicaHost._run)."""
        for chunk in chunks:
            self._stage(chunk)
        if snapshot is not None:
            self._install_snapshot(snapshot)
        if entries:
            self.log.persist(hard_state, entries)
        elif hard_state is not None:
            self.log.persist_commit_hint(hard_state)   # written with the next entries, or now if the epoch changed

    def _stage(self, chunk: StagedChunk) -> None:
        path = os.path.join(self.directory, "snapshot.staging")
        if chunk.offset == 0 or self._staging_for != chunk.snapshot:
            if self._staging is not None:
                self._staging.close()
            if os.path.exists(path):
                os.remove(path)
            self._staging = LogWriter(DEFAULT_ENV, path)
            self._staging_for = chunk.snapshot
        assert self._staging is not None
        self._staging.add(wal_frame.WRITE_BATCH, [chunk.data], False)

    def _install_snapshot(self, snapshot: LogPosition) -> None:
        staging = os.path.join(self.directory, "snapshot.staging")
        if self._staging is None or self._staging_for != snapshot:
            raise RuntimeError(f"install of snapshot {snapshot} without its staged chunks")
        self._staging.sync()
        self._staging.close()
        self._staging = None
        installing = os.path.join(self.directory, "db.installing")
        shutil.rmtree(installing, ignore_errors=True)
        with DB.open(installing, **self.engine_options) as new_db:
            created: set[int] = set()
            for _offset, _ftype, chunk in read_log(DEFAULT_ENV, staging).frames:
                kind, payload = chunk[:1], chunk[1:]
                if kind == CHUNK_DROPPED and len(payload) % 4 == 0:
                    for (tid,) in struct.iter_unpack("<I", payload):
                        new_db.create_table(table_name(tid), table_id=tid)
                        new_db.drop_table(table_name(tid))
                    continue
                if kind != CHUNK_RECORDS or not write_batch.validate(payload):
                    raise ValueError(f"snapshot {snapshot}: malformed chunk")
                for tid in write_batch.table_ids(payload):
                    if tid not in created:
                        new_db.create_table(table_name(tid), table_id=tid)
                        created.add(tid)
                if write_batch.count(payload):
                    new_db.write_encoded(payload)
            new_db.write_encoded(write_batch.encode_many([], applied_index=snapshot.index))
            new_db.flush()
            if new_db.applied_index != snapshot.index:
                raise RuntimeError(f"snapshot {snapshot}: engine applied index {new_db.applied_index} after flush")
        DEFAULT_ENV.sync_dir(self.directory)   # db.installing's name survives a power loss after step 2
        failpoints.hit("snapshot.before_log")
        self.log.persist(None, (), snapshot)                      # step 2: the point of no return
        failpoints.hit("snapshot.after_log")
        self.db.close()
        self._swap_in(installing)
        os.remove(staging)
        self.db = DB.open(self._db_path, **self.engine_options)
        self._tables = {int(name[1:]) for name in self.db.tables()}
        self.snapshots_installed += 1
        log.info("installed snapshot %s", snapshot)

    def _swap_in(self, installing: str) -> None:
        old = self._db_path + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(self._db_path):
            os.rename(self._db_path, old)
        failpoints.hit("snapshot.mid_swap")
        os.rename(installing, self._db_path)
        DEFAULT_ENV.sync_dir(self.directory)
        shutil.rmtree(old, ignore_errors=True)

    def _recover_install(self) -> None:
        shutil.rmtree(self._db_path + ".old", ignore_errors=True)   # a swap that crashed before its cleanup
        installing = os.path.join(self.directory, "db.installing")
        if not os.path.exists(installing):
            return
        try:
            with DB.open(installing, **self.engine_options) as d:
                staged_index = d.applied_index
        except Exception:  # an install that crashed before its flush: never reached step 2
            staged_index = None
        # Equal: the crash came after step 2 of this install (nothing moves the
        # base before the install is finished). An older one is a leftover.
        if staged_index is not None and self.log.base.index == staged_index > 0:
            self._swap_in(installing)
        else:
            shutil.rmtree(installing)
            DEFAULT_ENV.sync_dir(self.directory)

    # ------------------------------------------------------------ Ready step 4
    def apply(self, reps: Sequence[bytes]) -> set[int]:
        """Applies the write batches of committed WRITE entries, in log order
        (server/node/entry_payload.py: the node strips the request list), and
        returns the ids of dropped tables whose records were voided.
        NOOPs change no data; their index becomes the engine's applied index
        with the next write or snapshot, and replaying a NOOP is harmless."""
        db = self.db
        voided: set[int] = set()
        for rep in reps:
            dropped = []
            for tid in write_batch.table_ids(rep):
                if tid not in self._tables:
                    try:
                        db.create_table(table_name(tid), table_id=tid)
                    except TableExistsError:   # dropped before this write committed: it is void
                        dropped.append(tid)
                        continue
                    self._tables.add(tid)
            if dropped:
                rep = _without_tables(rep, dropped)
                voided.update(dropped)
            db.write_encoded(rep)
        return voided

    def voided_tables(self, rep: bytes) -> set[int]:
        """The tables of `rep` that apply() would void (dropped before it committed)."""
        unknown = [tid for tid in write_batch.table_ids(rep) if tid not in self._tables]
        return set(unknown).intersection(self.db.dropped_table_ids()) if unknown else set()

    def apply_dedup(self, batch: bytes) -> None:
        """A dedup window batch (server/node/dedup.py), written before its entry's records."""
        if DEDUP_TABLE_ID not in self._tables:
            self.db.create_table(table_name(DEDUP_TABLE_ID), table_id=DEDUP_TABLE_ID)
            self._tables.add(DEDUP_TABLE_ID)
        self.db.write_encoded(batch)

    def dedup_rows(self) -> Iterator[tuple[bytes, bytes, bytes]]:
        """The dedup window's rows (key, value, seq), as the engine holds them."""
        if DEDUP_TABLE_ID in self._tables:
            yield from self.db.scan(table_name(DEDUP_TABLE_ID))

    def drop_table(self, table_id: int) -> None:
        """Drops a table's data (a committed drop entry) and records its id as
        dropped, so a later write to it is voided here as on every member.
        A table this engine never had (a snapshot carries no table without
        rows) is created to be dropped. The memtable is flushed first: a drop
        is durable at once (the engine's manifest), so no write applied
        before it may be replayed after it, when it would be voided instead."""
        if table_id >= DEDUP_TABLE_ID:
            raise ValueError(f"table id {table_id} is reserved (server/node/dedup.py)")
        if table_id in self.db.dropped_table_ids():
            return
        self.db.flush()
        if table_id not in self._tables:
            self.db.create_table(table_name(table_id), table_id=table_id)
        self.db.drop_table(table_name(table_id))
        self._tables.discard(table_id)

    def promise_at_least(self, epoch: int) -> None:
        """Durably promises `epoch` if the log's promise is lower (a member
        that lost its data, told the group's current epoch by the MM: rule E2
        then fences every older leader)."""
        if epoch > self.log.promised_epoch:
            self.log.persist(HardState(epoch, self.log.commit_index), ())

    def clear_recovering(self) -> None:
        """Caught up: the member may vote again (durably)."""
        path = os.path.join(self.directory, RECOVERING)
        if os.path.exists(path):
            os.remove(path)
            DEFAULT_ENV.sync_dir(self.directory)
        self.recovering = False

    def size_bytes(self) -> int:
        """The range's data: SSTables plus memtable (for status reports)."""
        st = self.db.stats()
        return sum(level["bytes"] for level in st["levels"]) + st["memtable_bytes"]

    def get_entry(self, table_id: int, key: bytes):
        """The newest version of a key, tombstones included (engine Entry), or None."""
        if table_id not in self._tables:
            return None
        return self.db.get_entry(table_name(table_id), key)

    # -------------------------------------------------------- snapshot source
    def snapshot_chunks(self, applied_index: int) -> Iterator[bytes]:
        """Chunks of a snapshot of the applied state taken now (S2), which is
        the state at `applied_index` (the replica's): a generator over a pinned
        DB snapshot; the caller keeps the chunks it sent for resends."""
        db = self.db
        snap = db.snapshot()
        dropped = db.dropped_table_ids()
        try:
            yield CHUNK_DROPPED + b"".join(struct.pack("<I", tid) for tid in sorted(dropped))
            records: list[tuple[int, int, bytes, bytes | None, bytes]] = []
            size = 0
            for name in db.tables():
                tid = int(name[1:])
                for key, value, seq in db.scan(name, snapshot=snap):
                    records.append((write_batch.VALUE, tid, key, value, seq))
                    size += len(key) + len(value) + 24
                    if size >= CHUNK_BYTES:
                        yield CHUNK_RECORDS + write_batch.encode_many(records)
                        records, size = [], 0
            yield CHUNK_RECORDS + write_batch.encode_many(records, applied_index=applied_index)
        finally:
            snap.release()

    def close(self) -> None:
        if self._staging is not None:
            self._staging.close()
            self._staging = None
        self.db.close()
        self.log.close()
