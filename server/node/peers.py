"""PeerLinks: one long-lived outbound stream from this node to each peer node.

Purpose: replication messages leave a node only through here. Per peer, a
queue and a sender task: every time the stream is ready for more, the task
takes EVERYTHING queued for that peer (all RGs) and sends it as one
EnvelopeBatch, so the number of stream messages follows the load, not the
number of protocol messages.

Loss is fine: the protocol tolerates dropped messages (retransmits, probes,
heartbeats), so a broken stream drops what it had queued and the task
reconnects with backoff; a queue that grows past MAX_QUEUED (the peer is
down) drops the oldest messages. Answers come back on the peer's own stream
to us (server/node/node.py, Exchange).

Every stream carries this node's id in the gRPC metadata `x-quorumkv-node`.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque

import grpc

from server import timeline
from server.node import codec
from server.node_identity import NODE_METADATA_KEY
from server.proto import replication_pb2 as pb
from server.proto import replication_pb2_grpc as pb_grpc
from server.replication.messages import Message

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
        self._has_data = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False
        # The stream whose generator may take the queue (as in data_client.py's
        # _Stream): a generator of an ended stream, parked on _has_data, must
        # not take the next messages into its dead call.
        self._incarnation = 0
        self.sent_batches = 0
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"peer{self.peer_id}")

    def send(self, rg: int, msg: Message) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((rg, msg))
        self._has_data.set()

    async def _batches(self, incarnation: int):
        while not self._closed:
            await self._has_data.wait()
            if incarnation != self._incarnation:
                return   # its stream ended: the next one serves the queue
            if timeline.ENABLED:
                timeline.mark("peer.woke")
            self._has_data.clear()
            if not self._queue:
                continue
            batch = pb.EnvelopeBatch()
            add = batch.envelopes.add
            q = self._queue
            while q:
                rg, msg = q.popleft()
                codec.encode(rg, msg, add())
            self.sent_batches += 1
            if timeline.ENABLED:
                timeline.mark("peer.batch")
            yield batch

    async def _run(self) -> None:
        backoff = 0.05
        while not self._closed:
            channel = grpc.aio.insecure_channel(self.address, options=STREAM_CHANNEL_OPTIONS)
            try:
                stub = pb_grpc.ReplicationStub(channel)
                await stub.Exchange(self._batches(self._incarnation),
                                    metadata=((NODE_METADATA_KEY, str(self.node_id)),))
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.debug("stream to node %d (%s) ended: %s", self.peer_id, self.address, exc.code())
            finally:
                self._incarnation += 1   # the ended stream's generator takes nothing more
                await channel.close(grace=None)
            self._queue.clear()   # lost with the stream; the protocol resends what matters
            if self._closed:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def close(self) -> None:
        self._closed = True
        self._has_data.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
