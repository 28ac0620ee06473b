"""Wire messages and value types of the replication protocol (README.md).

Purpose: the plain data the replicas and the metadata manager (MM) exchange.
The gRPC layer maps each class to one protobuf message; the `TYPE` class
attribute (explicit `MessageType` values) is the tag it uses.

Contract:
  1. Every message carries `epoch` (the sender's epoch for leader and MM
     messages; the epoch being answered for responses), `sender` and
     `recipient` (node ids; `METADATA_MANAGER_ID` is the MM).
  2. Messages and entries are immutable (frozen dataclasses, tuples), so one
     object may be queued, duplicated and delivered many times.
  3. Positions order by epoch, then index: `LogPosition` is the "up to date"
     comparison of Raft's election restriction.

Thread-safety: immutable values; share freely.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

METADATA_MANAGER_ID = 0


class EntryKind(IntEnum):
    """What a log entry carries."""

    NOOP = 1   # appended by every new leader; commits its epoch (rule M4)
    WRITE = 2  # payload: one encoded engine write batch (engine/_native/write_batch.pyx)


class MessageType(IntEnum):
    """The wire tag of each message class."""

    PROMISE_REQUEST = 1
    PROMISE_RESPONSE = 2
    APPOINTMENT = 3
    NOT_MY_LEADER = 4
    APPEND = 5
    APPEND_ACK = 6
    HEARTBEAT = 7
    HEARTBEAT_ACK = 8
    SNAPSHOT_CHUNK = 9
    SNAPSHOT_ACK = 10
    STATUS_REPORT = 11


class AppendResult(IntEnum):
    """A follower's answer to an Append."""

    ACCEPTED = 1      # the logs match up to `index`
    LOG_MISMATCH = 2  # no entry at prev; `index` is the rejected prev index
    LOG_LOST = 3      # as LOG_MISMATCH, from a member that lost its data (S6): forget its match


class Role(IntEnum):
    """A replica's role in its current epoch."""

    FOLLOWER = 1
    LEADER_ELECT = 2  # appointed; its NOOP is not committed yet: no reads served
    LEADER = 3


@dataclass(frozen=True, slots=True, order=True)
class LogPosition:
    """(epoch, index) of an entry; (0, 0) is the empty log."""

    epoch: int
    index: int

    def __str__(self) -> str:
        return f"{self.epoch}.{self.index}"


ZERO_POSITION = LogPosition(0, 0)


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry."""

    epoch: int
    index: int
    kind: EntryKind
    payload: bytes = b""

    @property
    def position(self) -> LogPosition:
        return LogPosition(self.epoch, self.index)


@dataclass(frozen=True, slots=True)
class Config:
    """The member set of an epoch (rules J1-J3).

    voters: counted in every quorum. outgoing_voters: non-empty only during a
    joint change; then a quorum also needs a majority of them. learners:
    replicated to, never counted.
    """

    voters: frozenset[int]
    outgoing_voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    @property
    def joint(self) -> bool:
        return bool(self.outgoing_voters)

    def all_voters(self) -> frozenset[int]:
        return self.voters | self.outgoing_voters

    def members(self) -> frozenset[int]:
        return self.voters | self.outgoing_voters | self.learners

    def __str__(self) -> str:
        text = "voters=" + ",".join(map(str, sorted(self.voters)))
        if self.outgoing_voters:
            text += " outgoing=" + ",".join(map(str, sorted(self.outgoing_voters)))
        if self.learners:
            text += " learners=" + ",".join(map(str, sorted(self.learners)))
        return text


@dataclass(frozen=True, slots=True)
class Message:
    """Fields every message has."""

    TYPE: ClassVar[MessageType]
    epoch: int
    sender: int
    recipient: int


@dataclass(frozen=True, slots=True)
class PromiseRequest(Message):
    """MM -> member: promise to reject every message of an epoch below `epoch` (E2)."""

    TYPE: ClassVar[MessageType] = MessageType.PROMISE_REQUEST


@dataclass(frozen=True, slots=True)
class PromiseResponse(Message):
    """member -> MM: promised `epoch` (durably); its log ends at `last`."""

    TYPE: ClassVar[MessageType] = MessageType.PROMISE_RESPONSE
    last: LogPosition = ZERO_POSITION
    commit_index: int = 0


@dataclass(frozen=True, slots=True)
class Appointment(Message):
    """MM -> promiser: lead `epoch` over `config` (M3)."""

    TYPE: ClassVar[MessageType] = MessageType.APPOINTMENT
    config: Config = Config(frozenset())


@dataclass(frozen=True, slots=True)
class NotMyLeader(Message):
    """Rejection of a message of epoch `rejected_epoch`: the sender has promised
    `epoch` (E3). `leader_id` is the leader it follows in `epoch`, if known."""

    TYPE: ClassVar[MessageType] = MessageType.NOT_MY_LEADER
    rejected_epoch: int = 0
    leader_id: int | None = None


@dataclass(frozen=True, slots=True)
class Append(Message):
    """leader -> member: entries following `prev` (L2), and the leader's commit index."""

    TYPE: ClassVar[MessageType] = MessageType.APPEND
    prev: LogPosition = ZERO_POSITION
    entries: tuple[Entry, ...] = ()
    commit_index: int = 0
    # The leader's last log index when sent: every entry a learner client may
    # count committed without the leader (the client as a learner) is at or
    # below it. A member that lost its data votes again only once it applied
    # that far (server/node/replica_host.py, recovering). 0: not given.
    last_index: int = 0


@dataclass(frozen=True, slots=True)
class AppendAck(Message):
    """member -> leader, sent only after the entries are durable (C2).

    ACCEPTED: the member's log matches the leader's up to `index`.
    LOG_MISMATCH: `index` is the prev index rejected; `hint_index` is the prev
    index the leader should try next.
    LOG_LOST: the same, from a member rejoining after losing its data (S6):
    whatever it acknowledged before may be gone. `lost_id` names that loss
    (a leader acts on each once); also the answer to a Heartbeat whose commit
    index the member no longer holds (`index` is then that commit index).
    """

    TYPE: ClassVar[MessageType] = MessageType.APPEND_ACK
    result: AppendResult = AppendResult.ACCEPTED
    index: int = 0
    hint_index: int = 0
    lost_id: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """leader -> member: liveness, commit index (at most the member's known
    match), read-confirmation round `round` (R2), and the lease the leader
    would earn from it (`lease_ns`, 0: none; LL1-LL2), with the leader's clock
    at the round's start (`sent_at_ns`, LL6)."""

    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT
    commit_index: int = 0
    round: int = 0
    lease_ns: int = 0
    sent_at_ns: int = 0
    last_index: int = 0   # as Append.last_index


@dataclass(frozen=True, slots=True)
class HeartbeatAck(Message):
    """member -> leader: still in `epoch`, for round `round`; `lease_ns`: the
    lease this member holds its promise for (LL2; 0: none, so the ack
    confirms reads, R2, but renews no lease)."""

    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT_ACK
    round: int = 0
    lease_ns: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotChunk(Message):
    """leader -> member: chunk `offset` of the snapshot taken at `snapshot` (S2)."""

    TYPE: ClassVar[MessageType] = MessageType.SNAPSHOT_CHUNK
    snapshot: LogPosition = ZERO_POSITION
    offset: int = 0
    data: bytes = b""
    done: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotAck(Message):
    """member -> leader, after persisting: expects chunk `next_offset`, or, when
    `installed`, holds everything up to `snapshot.index` (S3, S4)."""

    TYPE: ClassVar[MessageType] = MessageType.SNAPSHOT_ACK
    snapshot: LogPosition = ZERO_POSITION
    next_offset: int = 0
    installed: bool = False


@dataclass(frozen=True, slots=True)
class StatusReport(Message):
    """node -> MM, on the node's heartbeat: one replica's state (issue 3, "The node").

    `match` is the leader's view of each member's durable match index (empty
    on followers); the MM uses it for learner catch-up (J1) and joint exit (J3).
    `quorum_contact` is False from a leader that has not heard from a quorum
    for `ReplicaOptions.check_quorum_ticks` (CQ1): the MM deposes it (CQ2).
    """

    TYPE: ClassVar[MessageType] = MessageType.STATUS_REPORT
    role: Role = Role.FOLLOWER
    last: LogPosition = ZERO_POSITION
    commit_index: int = 0
    applied_index: int = 0
    match: tuple[tuple[int, int], ...] = ()
    quorum_contact: bool = True
