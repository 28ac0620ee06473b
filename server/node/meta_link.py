"""MetaLink: the node's one stream to the metadata manager (MM).

Purpose: heartbeats out (every HEARTBEAT_INTERVAL, with the status report of
each replica whose report changed: epoch, role, last log position, commit and
applied index, size, recent ops/s; every report now and then), answers to
the MM out at once (promises, "not my leader"), commands in (node directory,
replicas to host or drop, promise requests and appointments), over
server/proto/meta.proto's Meta.Heartbeat.

Several MM addresses may be given (the etcd backend runs several `quorumkv
meta` processes, one active); the link tries them in turn and stays on the
one that accepts. A lost stream is reconnected with backoff; the MM treats the
silence as missed heartbeats, which is what it is.

The interface the node sees is `MetaLinkHandler` (a Protocol), so tests can
drive a node with a test double in place of a real MM.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc

from server.node import codec
from server.node.peers import CHANNEL_OPTIONS
from server.node_identity import NODE_METADATA_KEY
from server.proto import meta_pb2, meta_pb2_grpc
from server.replication.messages import Message
from server.runtime import fail_stop

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 0.1
# Each heartbeat carries the status reports that changed since the last one
# of its stream; the first of a stream and every FULL_STATUS_EVERY-th carry
# them all (the MM takes a missing report as the last one again:
# MetaServer.on_heartbeat), more often than the MM's 500 ms leader timeout.
FULL_STATUS_EVERY = 4
LINK_TIMEOUT_SECONDS = 2.0   # no command, not even a keepalive, for this long: the MM is gone


class MetaLinkHandler(Protocol):
    def on_meta_command(self, command: meta_pb2.MetaCommand) -> None: ...
    def status_envelopes(self, heartbeat: meta_pb2.NodeHeartbeat, sent: dict) -> None:
        """Adds to `heartbeat` the replicas' status reports that differ from
        what `sent` records (the stream's last report of each, updated here;
        empty: all of them)."""


class _Stream:
    """One Heartbeat stream's own state: what it reported, and whether it ended
    (gRPC may pull one more heartbeat from an ended stream's generator: it must
    not count as sent)."""

    __slots__ = ("reports", "ended")

    def __init__(self) -> None:
        self.reports: dict = {}
        self.ended = False


class MetaLink:
    def __init__(self, node_id: int, address: str, meta_addresses: Sequence[str], handler: MetaLinkHandler,
                 interval: float = HEARTBEAT_INTERVAL):
        self.node_id = node_id
        self.address = address
        self.meta_addresses = list(meta_addresses)
        self.handler = handler
        self.interval = interval
        self.incarnation = random.getrandbits(63)
        self._outbox: list[tuple[int, Message]] = []
        self._send_now = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task | None = None
        self.connected = False
        self.on_connect: Callable[[], None] | None = None
        self.silenced: Callable[[], bool] = lambda: False   # while true: no heartbeat leaves (Node.isolated)
        self._call = None   # the current Heartbeat call

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="meta-link")

    def send(self, rg: int, msg: Message) -> None:
        """A replication message for the MM: leaves with the next heartbeat, sent at once."""
        self._outbox.append((rg, msg))
        self._send_now.set()

    async def _heartbeats(self, stream: _Stream):
        n = 0   # a new stream (a new MM, or the same restarted) starts with every report
        while not self._closed and not stream.ended:
            while self.silenced() and not self._closed and not stream.ended:   # a test's partition (Node.isolated)
                await asyncio.sleep(self.interval)
            if stream.ended:
                return
            hb = meta_pb2.NodeHeartbeat(node_id=self.node_id, address=self.address, incarnation=self.incarnation)
            if n % FULL_STATUS_EVERY == 0:
                stream.reports.clear()
            n += 1
            self.handler.status_envelopes(hb, stream.reports)
            out, self._outbox = self._outbox, []
            for rg, msg in out:
                codec.encode(rg, msg, hb.envelopes.add())
            yield hb
            try:
                await asyncio.wait_for(self._send_now.wait(), self.interval)
            except TimeoutError:
                pass
            self._send_now.clear()

    async def _run(self) -> None:
        backoff = 0.05
        i = 0
        while not self._closed:
            address = self.meta_addresses[i % len(self.meta_addresses)]
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            stream = _Stream()
            reconnecting = False
            try:
                stub = meta_pb2_grpc.MetaStub(channel)
                call = self._call = stub.Heartbeat(self._heartbeats(stream),
                                                   metadata=((NODE_METADATA_KEY, str(self.node_id)),))
                commands = call.__aiter__()
                while True:
                    try:   # the MM sends at least a keepalive every 0.5 s (meta.proto)
                        command = await asyncio.wait_for(anext(commands), LINK_TIMEOUT_SECONDS)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        log.warning("metadata manager %s silent for %.1f s: trying the next address", address,
                                    LINK_TIMEOUT_SECONDS)
                        call.cancel()
                        break
                    if not self.connected:
                        self.connected = True
                        backoff = 0.05
                    try:
                        self.handler.on_meta_command(command)
                    except Exception as exc:  # noqa: BLE001 - a node that cannot follow its MM must not linger
                        fail_stop(log, "a command of the metadata manager failed", exc)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed or (task is not None and task.cancelling()):
                    raise
                # Only the call was cancelled (reconnect()): a new stream to the same MM, at once.
                log.info("meta stream to %s ended by reconnect(): opening a new one", address)
                reconnecting = True
            except grpc.aio.AioRpcError as exc:
                log.debug("meta stream to %s ended: %s", address, exc.code())
            finally:
                stream.ended = True
                self.connected = False
                await channel.close(grace=None)
            if self._closed:
                return
            if reconnecting:
                continue
            i += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def reconnect(self) -> None:
        """Ends the current stream; the link opens a new one, which the MM
        answers with everything it has for this node (directory, replicas to
        host): what a real partition's broken stream does once it heals."""
        if self._call is not None:
            self._call.cancel()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
