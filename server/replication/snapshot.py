"""Snapshot transfer state, one object per transfer and side (README S2-S4).

SnapshotSend (leader, per member): which snapshot (None until the node's first
chunk names its index), the next offset, and whether a request to the node or
a chunk to the member is outstanding.

SnapshotReceive (follower): the snapshot being staged and the next offset it
expects. Volatile: a follower that restarts asks for offset 0 again.

Thread-safety: none; owned by one Replica.
"""
from __future__ import annotations

from server.replication.messages import LogPosition


class SnapshotSend:
    __slots__ = ("snapshot", "next_offset", "requested", "chunk_in_flight", "done_sent", "idle_ticks")

    def __init__(self) -> None:
        self.snapshot: LogPosition | None = None
        self.next_offset = 0
        self.requested = False        # a SnapshotRequest is out with the node
        self.chunk_in_flight = False  # a chunk was sent, its ack has not come
        self.done_sent = False        # the chunk in flight is the last one
        self.idle_ticks = 0

    def waiting(self) -> bool:
        return self.requested or self.chunk_in_flight

    def on_ack(self, next_offset: int) -> None:
        """The member expects chunk `next_offset` next (resume point)."""
        self.next_offset = next_offset
        self.chunk_in_flight = False
        self.done_sent = False
        self.idle_ticks = 0

    def on_tick(self, retry_ticks: int) -> None:
        if not self.waiting():
            return
        self.idle_ticks += 1
        if self.idle_ticks >= retry_ticks:
            self.requested = False
            self.chunk_in_flight = False
            self.done_sent = False
            self.idle_ticks = 0


class SnapshotReceive:
    __slots__ = ("snapshot", "next_offset")

    def __init__(self, snapshot: LogPosition):
        self.snapshot = snapshot
        self.next_offset = 0
