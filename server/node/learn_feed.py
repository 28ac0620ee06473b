"""LearnFeed: a node's accepted log acknowledgements, streamed to learner clients.

Purpose: the node side of "the client as a learner"
(server/replication/README.md). A client that sent a write with
WriteRequest.learner is answered DURABLE_ON_LEADER once the leader's own
copy is durable, and counts the commit itself from the acknowledgements the
followers send: every accepted AppendAck a replica on this node sends to
its leader is also published here, as (rg, epoch, match), and goes to every
Learn subscriber (server/proto/data.proto: LearnBatch, 24 bytes per
acknowledgement). The client's half is server/node/learn_board.py.

Batching: a subscriber's acknowledgements wait for the next flush point of
its StreamWriter (server/stream_writer.py): the replica's own flush right
after it sends the acknowledgement to its leader (replica_host.py), so the
client hears as soon as the leader does, and everything published within
one loop round goes in one message.

Invariants:
1. A subscriber's first message holds the highest acknowledgement of every
   replica this node hosts (ReplicaHost.last_ack); later ones follow in
   the order they were sent, each message holding the highest match per
   (group, epoch) published since the one before (so a subscriber whose
   sends stall holds one entry per replica and epoch). A client that
   subscribes after a follower acknowledged its write still counts that
   acknowledgement.
2. Every acknowledgement published is a durability claim the replica made
   to its leader: "my log matches the leader of `epoch` up to `match`,
   durably" (C2, L1), or (epoch, 0) once a promise of `epoch` is durable:
   "I acknowledge no earlier epoch again" (it claims no entry). Nothing
   else is published.
3. Publishing costs nothing without subscribers, and never waits.

Thread-safety: the node's event loop only.
"""
from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from server.proto import data_pb2
from server.stream_writer import StreamWriter

ACK = struct.Struct("<QQQ")   # rg, epoch, match: LearnBatch.acks, one after another


class _Subscriber:
    def __init__(self, node_id: int, write: Callable[[Any], Coroutine]):
        self.node_id = node_id
        # (rg, epoch) -> the highest match published since the last message: a
        # subscriber whose sends stall holds one entry per replica and epoch,
        # not one per acknowledgement (the client keeps only the highest anyway).
        self.pending: dict[tuple[int, int], int] = {}
        self.first = True   # the first message goes out even if empty: the client knows it is subscribed
        self.ended: asyncio.Future = asyncio.get_running_loop().create_future()
        self.writer = StreamWriter(write, self._take, self._failed)

    def _take(self) -> data_pb2.LearnBatch | None:
        if not self.pending and not self.first:
            return None
        self.first = False
        out = data_pb2.LearnBatch(node=self.node_id, acks=b"".join(
            [ACK.pack(rg, epoch, match) for (rg, epoch), match in self.pending.items()]))
        self.pending.clear()
        return out

    def _failed(self, exc: BaseException) -> None:
        if not self.ended.done():
            self.ended.set_result(exc)


class LearnFeed:
    def __init__(self, node_id: int):
        self.node_id = node_id
        self._subscribers: list[_Subscriber] = []

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, rg: int, epoch: int, match: int) -> None:
        """An accepted AppendAck of `rg`'s replica here, just sent to its leader."""
        if not self._subscribers:
            return
        key = (rg, epoch)
        for sub in self._subscribers:
            pending = sub.pending
            if match >= pending.get(key, -1):
                pending[key] = match
            sub.writer.kick_soon()

    async def serve(self, last_acks: Iterable[tuple[int, int, int]], write: Callable[[Any], Coroutine]) -> None:
        """Serves one Learn stream (`write`: the server context's write) until
        it ends: the caller's RPC is cancelled, or a send fails."""
        sub = _Subscriber(self.node_id, write)
        for rg, epoch, match in last_acks:   # invariant 1
            sub.pending[(rg, epoch)] = match
        self._subscribers.append(sub)
        try:
            sub.writer.kick()
            await sub.ended   # a failed send; the RPC's cancellation cancels this wait
        finally:
            self._subscribers.remove(sub)
            sub.writer.close()


def unpack(acks: bytes) -> Iterable[tuple[int, int, int]]:
    """A LearnBatch's acknowledgements, as (rg, epoch, match)."""
    if len(acks) % ACK.size:
        raise ValueError(f"LearnBatch.acks holds {len(acks)} bytes, not a multiple of {ACK.size}")
    return ACK.iter_unpack(acks)
