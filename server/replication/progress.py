"""Progress: the leader's view of one member's log (README S1).

States (explicit, one behaviour each):
  PROBE      one Append at a time, backing `next` off on rejections, until the
             member accepts; then REPLICATE.
  REPLICATE  pipelining: Appends sent optimistically, `next` advanced at send
             time, up to `max_inflight` batches unacknowledged.
  SNAPSHOT   the entry before `next` is compacted away: a snapshot transfer
             (`transfer`) runs; then PROBE from the snapshot index.

Invariants:
  1. match < next; match never decreases within one leadership.
  2. In REPLICATE, `inflight` holds the last index of each unacknowledged
     batch, increasing, the last one being next - 1.
  3. Only REPLICATE has inflight batches; only PROBE uses probe_sent.

Thread-safety: none; owned by the leader's Replica.
"""
from __future__ import annotations

from collections import deque
from enum import IntEnum

from server.replication.snapshot import SnapshotSend


class ProgressState(IntEnum):
    PROBE = 1
    REPLICATE = 2
    SNAPSHOT = 3


class Progress:
    __slots__ = ("member", "learner", "match", "next", "state", "inflight", "probe_sent", "idle_ticks",
                 "transfer", "sent_commit", "flush_to", "heard_tick", "lost_id")

    def __init__(self, member: int, next_index: int, learner: bool):
        self.member = member
        self.learner = learner
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.inflight: deque[int] = deque()
        self.probe_sent = False
        self.idle_ticks = 0  # ticks since the last answer while something is outstanding
        self.transfer: SnapshotSend | None = None
        self.sent_commit = 0  # the highest commit index sent to the member
        self.flush_to = 0  # a trailing member gets everything up to here without waiting for a batch
        self.heard_tick = 0  # the leader's tick of the member's last message in this epoch (CQ1)
        self.lost_id = 0  # the member's last loss of data acted on (S6)

    def __repr__(self) -> str:
        return f"Progress({self.member} {self.state.name} match={self.match} next={self.next})"

    # -------------------------------------------------------------- state changes
    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.inflight.clear()
        self.probe_sent = False
        self.transfer = None
        self.idle_ticks = 0

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()
        self.probe_sent = False
        self.idle_ticks = 0

    def become_snapshot(self) -> None:
        self.state = ProgressState.SNAPSHOT
        self.inflight.clear()
        self.probe_sent = False
        self.transfer = SnapshotSend()
        self.idle_ticks = 0

    # ------------------------------------------------------------------ sending
    def can_send_append(self, max_inflight: int) -> bool:
        if self.state is ProgressState.PROBE:
            return not self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) < max_inflight
        return False

    def sent_append(self, last_index: int, count: int) -> None:
        """Records an Append ending at last_index with `count` entries."""
        if self.state is ProgressState.PROBE:
            self.probe_sent = True
        elif count:
            self.inflight.append(last_index)
            self.next = last_index + 1

    def outstanding(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return bool(self.inflight)
        return self.transfer is not None and self.transfer.waiting()

    # ---------------------------------------------------------------- answers
    def on_accepted(self, index: int) -> bool:
        """The member's log matches up to `index`. Returns True if match moved."""
        self.idle_ticks = 0
        moved = index > self.match
        if moved:
            self.match = index
            if self.next <= index:
                self.next = index + 1
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        if self.state is ProgressState.PROBE:
            self.probe_sent = False
            if moved or index == self.next - 1:
                self.become_replicate()
        return moved

    def on_rejected(self, rejected_index: int, hint_index: int) -> bool:
        """The member has no entry matching prev=rejected_index. Returns False if
        the rejection is stale (for an Append older than the current state)."""
        self.idle_ticks = 0
        if rejected_index <= self.match:
            return False
        if self.state is ProgressState.PROBE:
            if rejected_index != self.next - 1:
                return False
        elif self.state is ProgressState.SNAPSHOT:
            return False
        self.state = ProgressState.PROBE
        self.inflight.clear()
        self.probe_sent = False
        self.next = max(self.match + 1, min(rejected_index, hint_index + 1))
        return True

    def on_lost(self, rejected_index: int, hint_index: int, lost_id: int) -> bool:
        """The member lost its data (S6): what it acknowledged before may be
        gone, so its match is forgotten (a rejection at or below the match is
        exactly what would otherwise be taken as stale) and the member is
        probed from its hint, down to a snapshot if the log no longer reaches.
        A loss already acted on is a plain rejection (a late answer must not
        undo the catch-up since). A transfer in progress goes on. Returns
        False if nothing changed."""
        if lost_id == self.lost_id:
            return self.on_rejected(rejected_index, hint_index)
        self.lost_id = lost_id
        self.idle_ticks = 0
        self.match = 0
        if self.state is ProgressState.SNAPSHOT:
            return True
        self.state = ProgressState.PROBE
        self.inflight.clear()
        self.probe_sent = False
        self.next = max(1, min(rejected_index, hint_index + 1))
        return True

    def on_timeout(self) -> None:
        """Nothing answered for retransmit_ticks: probe again from the known match."""
        if self.state is ProgressState.REPLICATE:
            self.become_probe()
        elif self.state is ProgressState.PROBE:
            self.probe_sent = False
        self.idle_ticks = 0
