"""ReadIndexTracker: a leader's linearizable reads (README R1-R4).

Each read records the commit index at arrival (`read_index`; the last log
index with ReplicaOptions.learner_reads; None while the leader's NOOP is
uncommitted) and the heartbeat round that must confirm it:
the first round started after it arrived. One round confirms every read
waiting for it or an earlier one. A confirmed read is served once the applied
index reaches its read index.

Invariants:
  1. A read is confirmed only by a round numbered at least its own, acknowledged
     by a quorum at the leader's epoch (acks of other epochs never reach here).
  2. Rounds are numbered from 1 per leadership; `started_round` only grows.
  3. Reads leave the unconfirmed queue in arrival order; confirmed reads leave
     once their read index is applied, in arrival order among those (with
     learner_reads the read indexes are not monotonic in arrival order: a get
     of an untold key has the commit index, a scan the last told index). A
     read confirmed by the leader's lease (lease.py) joins the confirmed
     queue on arrival, with the read index of that moment.

Thread-safety: none; owned by the leader's Replica; discarded on step-down.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Hashable

from server.replication.messages import Config
from server.replication.quorum import RoundAcks


class PendingRead:
    __slots__ = ("request_id", "round", "read_index", "deadline")

    def __init__(self, request_id: Hashable, round_needed: int, read_index: int | None, deadline: int):
        self.request_id = request_id
        self.round = round_needed
        self.read_index = read_index
        self.deadline = deadline


class ReadIndexTracker:
    __slots__ = ("confirmed_round", "_acks", "_unconfirmed", "_confirmed")

    def __init__(self) -> None:
        self.confirmed_round = 0
        self._acks = RoundAcks()
        self._unconfirmed: deque[PendingRead] = deque()
        self._confirmed: deque[PendingRead] = deque()

    @property
    def started_round(self) -> int:
        return self._acks.started

    def __len__(self) -> int:
        return len(self._unconfirmed) + len(self._confirmed)

    def add(self, request_id: Hashable, read_index: int | None, deadline: int) -> None:
        """A read arrived now: it needs the next round to be started."""
        self._unconfirmed.append(PendingRead(request_id, self.started_round + 1, read_index, deadline))

    def add_confirmed(self, request_id: Hashable, read_index: int, deadline: int) -> None:
        """A read that arrived under a leader lease (lease.py): confirmed on arrival."""
        self._confirmed.append(PendingRead(request_id, 0, read_index, deadline))

    def assign_read_index(self, read_index: int) -> None:
        """The NOOP committed: reads that arrived before get today's read index (R1)."""
        for q in (self._unconfirmed, self._confirmed):
            for r in q:
                if r.read_index is None:
                    r.read_index = read_index

    def needs_round(self) -> bool:
        return bool(self._unconfirmed) and self._unconfirmed[-1].round > self.started_round

    def start_round(self) -> int:
        self._acks.started += 1
        return self._acks.started

    def on_ack(self, member: int, round_acked: int) -> None:
        self._acks.on_ack(member, round_acked)

    def quorum_round(self, config: Config, self_id: int) -> int:
        """The highest round a quorum acknowledged (the leader acknowledges its own at once)."""
        confirmed = self._acks.quorum_round(config, self_id)
        if confirmed > self.confirmed_round:
            self.confirmed_round = confirmed
        return self.confirmed_round

    def confirm(self, config: Config, self_id: int) -> None:
        """Moves reads whose round a quorum acknowledged to the confirmed queue."""
        if not self._unconfirmed:
            return
        self.quorum_round(config, self_id)
        while self._unconfirmed and self._unconfirmed[0].round <= self.confirmed_round:
            self._confirmed.append(self._unconfirmed.popleft())

    def pop_servable(self, applied_index: int) -> list[PendingRead]:
        """Confirmed reads whose read index is at or below `applied_index`. With
        learner_reads the read indexes are not in arrival order (a get of an
        untold key has the commit index, a scan the last told index), so the
        whole queue is looked at, not its head alone; what stays keeps its
        order (pop_expired)."""
        q = self._confirmed
        if not q:
            return []
        out, kept = [], deque()
        for r in q:
            (out if r.read_index is not None and r.read_index <= applied_index else kept).append(r)
        if out:
            self._confirmed = kept
        return out

    def has_servable(self, applied_index: int) -> bool:
        return any(r.read_index is not None and r.read_index <= applied_index for r in self._confirmed)

    def pop_expired(self, now: int) -> list[PendingRead]:
        """Reads past their deadline (both queues are in arrival order, so are the deadlines)."""
        out = []
        for q in (self._unconfirmed, self._confirmed):
            while q and q[0].deadline <= now:
                out.append(q.popleft())
        return out

    def pop_all(self) -> list[PendingRead]:
        out = list(self._unconfirmed) + list(self._confirmed)
        self._unconfirmed.clear()
        self._confirmed.clear()
        return out
