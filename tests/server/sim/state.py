"""The engine stand-in (KVStateMachine) and one node's disk (DurableStore).

KVStateMachine applies committed entries in order, keeping a digest chained
over (epoch, index, kind, payload): two replicas with equal (applied_index,
digest) applied the same sequence. WRITE payloads are b"key=value".

DurableStore is what survives a crash: the hard state, the log (base position
and entries), the snapshot staging area, and the engine's flushed state (the
engine runs with wal=False, so applied writes are durable only once flushed).
"""
from __future__ import annotations

import pickle
import zlib

from server.replication.messages import ZERO_POSITION, Entry, EntryKind, LogPosition
from server.replication.ready import DurableState, HardState, Ready


def payload_pairs(payload: bytes) -> list[tuple[bytes, bytes]]:
    """A WRITE payload's (key, value) pairs: "k1=v7", or a multi-key batch "k1=v7,k2=v7"."""
    return [tuple(pair.partition(b"=")[::2]) for pair in payload.split(b",")]


class KVStateMachine:
    __slots__ = ("applied_index", "digest", "kv")

    def __init__(self, applied_index: int = 0, digest: int = 0, kv: dict[bytes, bytes] | None = None):
        self.applied_index = applied_index
        self.digest = digest
        self.kv = kv if kv is not None else {}

    def apply(self, entry: Entry) -> None:
        assert entry.index == self.applied_index + 1, (entry.index, self.applied_index)
        self.applied_index = entry.index
        self.digest = zlib.crc32(b"%d:%d:%d:" % (entry.epoch, entry.index, entry.kind) + entry.payload, self.digest)
        if entry.kind is EntryKind.WRITE:
            for key, value in payload_pairs(entry.payload):   # one batch: all its keys at once
                self.kv[key] = value

    def copy(self) -> KVStateMachine:
        return KVStateMachine(self.applied_index, self.digest, dict(self.kv))

    def to_bytes(self) -> bytes:
        return pickle.dumps((self.applied_index, self.digest, sorted(self.kv.items())))

    @classmethod
    def from_bytes(cls, data: bytes) -> KVStateMachine:
        applied, digest, items = pickle.loads(data)
        return cls(applied, digest, dict(items))


class DurableStore:
    def __init__(self) -> None:
        self.hard = HardState()
        self.base: LogPosition = ZERO_POSITION
        self.entries: list[Entry] = []
        self.staging: list[bytes] = []
        self.staging_for: LogPosition | None = None
        self.engine = KVStateMachine()

    def persist(self, rd: Ready) -> KVStateMachine | None:
        """Step 2 of the Ready contract, as one atomic fsync. Returns the installed
        state when the Ready installs a snapshot."""
        installed = None
        for chunk in rd.snapshot_chunks:
            if chunk.offset == 0:
                self.staging = []
                self.staging_for = chunk.snapshot
            assert chunk.snapshot == self.staging_for and chunk.offset == len(self.staging), chunk
            self.staging.append(chunk.data)
        if rd.snapshot is not None:
            assert rd.snapshot == self.staging_for, (rd.snapshot, self.staging_for)
            installed = KVStateMachine.from_bytes(b"".join(self.staging))
            assert installed.applied_index == rd.snapshot.index
            self.engine = installed.copy()
            self.base = rd.snapshot
            self.entries = []
            self.staging, self.staging_for = [], None
        if rd.entries:
            first = rd.entries[0].index
            assert first > self.base.index, (first, self.base)
            del self.entries[first - self.base.index - 1:]
            assert len(self.entries) == first - self.base.index - 1
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard = rd.hard_state
        return installed

    def flush(self, app: KVStateMachine) -> None:
        self.engine = app.copy()

    def compact(self, index: int) -> None:
        if index <= self.base.index:
            return
        epoch = self.entries[index - self.base.index - 1].epoch
        del self.entries[:index - self.base.index]
        self.base = LogPosition(epoch, index)

    def holds(self, epoch: int, index: int) -> bool:
        """Is the entry (epoch, index) durable here (in the log, or under the base)?"""
        if index <= self.base.index:
            return True  # compacted only once applied, i.e. committed
        i = index - self.base.index - 1
        return i < len(self.entries) and self.entries[i].epoch == epoch

    def last_index(self) -> int:
        return self.base.index + len(self.entries)

    def durable_state(self) -> DurableState:
        return DurableState(promised_epoch=self.hard.promised_epoch, commit_index=self.hard.commit_index,
                            base=self.base, entries=list(self.entries), applied_index=self.engine.applied_index)
