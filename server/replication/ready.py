"""Ready and the other values that cross the boundary between a Replica and its node.

Purpose: `Replica.ready()` returns a `Ready`: everything the node must do, in
the order README.md ("The Ready contract") gives; `advance(ready)` tells the
replica it was done. `DurableState` is what the node hands back on restart.

Invariants of a Ready:
  1. `entries` are contiguous; storing them first drops every stored entry at
     or after `entries[0].index` (that is how a follower's divergent suffix,
     L2, reaches the disk).
  2. `committed_entries` are contiguous, start right after the applied index
     (or the installed snapshot), and are durable once this Ready is persisted.
  3. `reads` are servable after `committed_entries` are applied.
  4. `messages` do not depend on this Ready's durability;
     `messages_after_persist` do (acknowledgements, promises).

Thread-safety: values; a Ready belongs to the one node loop that asked for it.
"""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import IntEnum

from server.replication.messages import ZERO_POSITION, Entry, LogPosition, Message, Role


@dataclass(frozen=True, slots=True)
class HardState:
    """What must survive a crash besides the log (README "State")."""

    promised_epoch: int = 0
    commit_index: int = 0


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile role information, reported when it changes."""

    role: Role
    epoch: int
    leader_id: int | None


class ReadFailure(IntEnum):
    NOT_LEADER = 1  # the leader stepped down (a higher epoch exists): retry at the new leader
    TIMEOUT = 2     # not confirmed in time (e.g. partitioned from a quorum): retry


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read confirmed linearizable: serve it from state applied at or past `read_index`."""

    request_id: Hashable
    read_index: int


@dataclass(frozen=True, slots=True)
class FailedRead:
    request_id: Hashable
    reason: ReadFailure
    epoch: int
    leader_id: int | None


@dataclass(frozen=True, slots=True)
class Proposal:
    """Where propose() put a batch: entries first_index..last_index of `epoch`.
    A client's write is done when the entry at its index is applied with this
    epoch; if that index is applied with another epoch, it failed (C3)."""

    epoch: int
    first_index: int
    last_index: int


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Leader side (S2): the node should read chunk `offset` of its snapshot for
    `member` and pass it to `Replica.snapshot_chunk`. `snapshot_index` None: take
    a new snapshot of the applied state (and keep it until the transfer ends)."""

    member: int
    snapshot_index: int | None
    offset: int


@dataclass(frozen=True, slots=True)
class StagedChunk:
    """Follower side (S3): store this chunk in the staging area of the snapshot
    `snapshot`. offset 0 starts a new staging area (discard any other)."""

    snapshot: LogPosition
    offset: int
    data: bytes
    done: bool


@dataclass(slots=True)
class Ready:
    """One batch of work for the node (see the module contract and README)."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    messages: list[Message] = field(default_factory=list)
    snapshot_chunks: list[StagedChunk] = field(default_factory=list)
    snapshot: LogPosition | None = None
    entries: list[Entry] = field(default_factory=list)
    messages_after_persist: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    reads: list[ReadState] = field(default_factory=list)
    failed_reads: list[FailedRead] = field(default_factory=list)
    snapshot_requests: list[SnapshotRequest] = field(default_factory=list)

    def must_persist(self) -> bool:
        """True when step 2 of the contract has anything to write (and fsync)."""
        return bool(self.hard_state or self.snapshot_chunks or self.snapshot or self.entries)


@dataclass(slots=True)
class DurableState:
    """What a restarting node read back from its disk. `applied_index` is the
    engine's (DB.applied_index); committed entries above it are replayed."""

    promised_epoch: int = 0
    commit_index: int = 0
    base: LogPosition = ZERO_POSITION
    entries: list[Entry] = field(default_factory=list)
    applied_index: int = 0
