"""PeerLinks: one long-lived outbound stream from this node to each peer node.

Purpose: replication messages leave a node only through here. Per peer, a
queue and a StreamWriter (server/stream_writer.py): at the next flush point
(a replica's round that sent, server/node/replica_host.py, or the end of the
loop round) EVERYTHING queued for that peer (all RGs) goes as one
EnvelopeBatch, or after the send in flight; so the number of stream
messages follows the load, not the number of protocol messages.

Loss is fine: the protocol tolerates dropped messages (retransmits, probes,
heartbeats), so a broken stream drops what it had queued and the link's task
(one per peer, which keeps the stream open) reconnects with backoff; a queue
that grows past MAX_QUEUED (the peer is down) drops the oldest messages.
Answers come back on the peer's own stream to us (server/node/node.py,
Exchange).

Every stream carries this node's id in the gRPC metadata `x-quorumkv-node`.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque

import grpc

from server import timeline
from server.node import codec
from server.node_identity import NODE_METADATA_KEY
from server.proto import replication_pb2 as pb
from server.proto import replication_pb2_grpc as pb_grpc
from server.replication.messages import Message
from server.stream_writer import StreamWriter

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 10_000),          # long-lived streams notice a dead peer
    ("grpc.http2.max_pings_without_data", 0),
]
# Our own long-lived streams (PeerLink, DataClient) also turn off gRPC's
# retries: their callers retry at the protocol level (the replication
# protocol resends, the router retries under its deadline), and the retry
# filter's per-message work is pure cost on every message of a stream
# (bench/RESULTS.md, 2026-11-27 11:50 entry: +17% writes/s at one client).
STREAM_CHANNEL_OPTIONS = CHANNEL_OPTIONS + [("grpc.enable_retries", 0)]
# Servers accept those keepalive pings (and the SDK's, every 30 s): gRPC's
# default answers a client pinging more often than every 5 minutes with
# GOAWAY "too many pings", which would cut every long-lived stream.
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]


class PeerLink:
    def __init__(self, node_id: int, peer_id: int, address: str):
        self.node_id = node_id
        self.peer_id = peer_id
        self.address = address
        self._queue: deque[tuple[int, Message]] = deque()
        self._task: asyncio.Task | None = None
        self._closed = False
        # The open stream's writer (server/stream_writer.py). None while
        # connecting; each stream has its own, closed when that stream ends,
        # so nothing is taken into a dead call.
        self._writer: StreamWriter | None = None
        self.sent_batches = 0
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"peer{self.peer_id}")

    def send(self, rg: int, msg: Message) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((rg, msg))
        if self._writer is not None:
            self._writer.kick_soon()

    def _take(self) -> pb.EnvelopeBatch | None:
        """Everything queued, as one stream message (StreamWriter's take)."""
        q = self._queue
        if not q:
            return None
        batch = pb.EnvelopeBatch()
        add = batch.envelopes.add
        while q:
            rg, msg = q.popleft()
            codec.encode(rg, msg, add())
        self.sent_batches += 1
        if timeline.ENABLED:
            timeline.mark("peer.batch")
        return batch

    async def _run(self) -> None:
        backoff = 0.05
        while not self._closed:
            channel = grpc.aio.insecure_channel(self.address, options=STREAM_CHANNEL_OPTIONS)
            writer = None
            try:
                stub = pb_grpc.ReplicationStub(channel)
                call = stub.Exchange(metadata=((NODE_METADATA_KEY, str(self.node_id)),))
                writer = self._writer = StreamWriter(call.write, self._take, functools.partial(_cancel, call))
                writer.kick()   # what was queued while connecting
                await call      # the peer never answers: the stream ends only when it breaks
                backoff = 0.05
            except asyncio.CancelledError:
                if self._closed or asyncio.current_task().cancelling():
                    raise
                # else: the call was cancelled by its writer's failed send; reconnect
            except grpc.aio.AioRpcError as exc:
                log.debug("stream to node %d (%s) ended: %s", self.peer_id, self.address, exc.code())
            finally:
                if writer is not None:
                    writer.close()   # the ended stream takes nothing more
                self._writer = None
                await channel.close(grace=None)
            self._queue.clear()   # lost with the stream; the protocol resends what matters
            if self._closed:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _cancel(call: grpc.aio.Call, _failure: BaseException) -> None:
    """A send on `call` failed: end it, so its owner's `await call` returns and it reconnects."""
    call.cancel()
