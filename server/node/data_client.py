"""DataClient: asyncio client of one node's Data service, batching on long-lived streams.

Purpose: what request managers (issue 4), benchmarks and tests use to talk to
a replication group's leader. Any number of tasks call `write()` / `read()`
concurrently; each call gets an id and a future, and one sender task per
stream takes everything queued when the stream is ready and sends it as ONE
batch message, so under load N concurrent operations cost about one stream
message, and a lone caller still goes out at once (nothing waits for company).

A broken stream fails the calls in flight with `StreamBroken` (the caller
decides: a write whose stream broke has an unknown outcome) and the next
call opens a new one.
"""
from __future__ import annotations

import asyncio
import itertools

import grpc

from server import timeline
from server.node.peers import STREAM_CHANNEL_OPTIONS
from server.node_identity import NODE_METADATA_KEY
from server.proto import data_pb2, data_pb2_grpc


class StreamBroken(Exception):
    """The stream carrying the request ended before its answer came back."""


class _Stream:
    """One bidi stream with id-matched futures."""

    def __init__(self, open_call, batch_type, max_batch: int = 1000):
        self._open_call = open_call
        self._batch_type = batch_type
        self._max_batch = max_batch
        self._queue: list = []
        self._has_data = asyncio.Event()
        self._waiting: dict[int, asyncio.Future] = {}
        self._task: asyncio.Task | None = None
        # Which stream may take the queue: the request generator of a stream
        # that ended can stay parked on _has_data (gRPC does not stop it when
        # the call had finished already); woken by the next submit, it must
        # not take that request into a dead call, where it would be lost.
        self._incarnation = 0
        self.batches_sent = 0

    def submit(self, req) -> asyncio.Future:
        if self._task is None or self._task.done():
            self._incarnation += 1
            self._task = asyncio.get_running_loop().create_task(self._run(self._incarnation))
        fut = asyncio.get_running_loop().create_future()
        self._waiting[req.id] = fut
        self._queue.append(req)
        self._has_data.set()
        return fut

    async def _requests(self, incarnation: int):
        while True:
            await self._has_data.wait()
            if incarnation != self._incarnation:
                return   # a newer stream serves the queue (see __init__)
            self._has_data.clear()
            # Checked again after each yield: gRPC resumes the generator when a
            # send completes, possibly after its stream ended and a newer one started.
            while self._queue and incarnation == self._incarnation:
                batch = self._batch_type()
                take, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
                batch.requests.extend(take)
                self.batches_sent += 1
                if timeline.ENABLED:
                    timeline.mark("client.batch_out")
                yield batch

    async def _run(self, incarnation: int) -> None:
        call = self._open_call(self._requests(incarnation))
        err = StreamBroken("stream closed by the client")   # close() cancelled us
        try:
            async for out in call:
                if timeline.ENABLED:
                    timeline.mark("client.batch_in")
                for resp in out.responses:
                    fut = self._waiting.pop(resp.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(resp)
            err = StreamBroken("stream closed by the server")
        except grpc.aio.AioRpcError as exc:
            err = StreamBroken(f"{exc.code().name}: {exc.details()}")
        finally:
            call.cancel()
            waiting, self._waiting = self._waiting, {}   # every caller in flight hears of it, whatever ended us
            self._queue.clear()
            for fut in waiting.values():
                if not fut.done():
                    fut.set_exception(err)

    async def close(self) -> None:
        self._incarnation += 1   # a generator parked on _has_data (its stream ended) exits
        self._has_data.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # A task cancelled before it started never ran _run's cleanup: its callers hear here.
        waiting, self._waiting = self._waiting, {}
        self._queue.clear()
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(StreamBroken("stream closed by the client"))


class DataClient:
    def __init__(self, address: str, sender_id: int = 0):
        self.address = address
        self._channel = grpc.aio.insecure_channel(address, options=STREAM_CHANNEL_OPTIONS)
        self._stub = data_pb2_grpc.DataStub(self._channel)
        md = ((NODE_METADATA_KEY, str(sender_id)),)
        self._ids = itertools.count(1)
        self._writes = _Stream(lambda it: self._stub.Write(it, metadata=md), data_pb2.WriteBatchRequest)
        self._reads = _Stream(lambda it: self._stub.Read(it, metadata=md), data_pb2.ReadBatchRequest)
        self._md = md

    async def write(self, rg: int, batch: bytes) -> data_pb2.WriteResponse:
        """One write batch (engine/_native/write_batch.pyx format) to the RG's leader on this node."""
        return await self._writes.submit(data_pb2.WriteRequest(id=next(self._ids), rg=rg, batch=batch))

    async def write_request(self, req: data_pb2.WriteRequest) -> data_pb2.WriteResponse:
        """A WriteRequest with conditions or a request id; its `id` is set here."""
        return await self.submit_write(req)

    def submit_write(self, req: data_pb2.WriteRequest) -> asyncio.Future:
        """write_request, not awaited: the future of its answer. A caller that
        stops waiting (cancels it, or sets an exception on it) loses only the
        answer: the request is sent and its answer, when it comes, dropped."""
        req.id = next(self._ids)
        return self._writes.submit(req)

    async def read(self, rg: int, table_id: int, key: bytes) -> data_pb2.ReadResponse:
        return await self.submit_read(rg, table_id, key)

    def submit_read(self, rg: int, table_id: int, key: bytes) -> asyncio.Future:
        """read, not awaited (as submit_write)."""
        return self._reads.submit(data_pb2.ReadRequest(id=next(self._ids), rg=rg, table_id=table_id, key=key))

    async def scan(self, rg: int, table_id: int, start: bytes = b"", end: bytes = b"", limit: int = 0,
                   keys_only: bool = False, timeout: float | None = None) -> data_pb2.ScanResponse:
        return await self._stub.Scan(data_pb2.ScanRequest(rg=rg, table_id=table_id, start=start, end=end, limit=limit,
                                                          keys_only=keys_only), metadata=self._md, timeout=timeout)

    async def drop_table(self, rg: int, table_id: int, timeout: float | None = None) -> data_pb2.GroupDropTableResponse:
        return await self._stub.DropTable(data_pb2.GroupDropTableRequest(rg=rg, table_id=table_id),
                                          metadata=self._md, timeout=timeout)

    @property
    def batches_sent(self) -> int:
        return self._writes.batches_sent + self._reads.batches_sent

    async def close(self) -> None:
        await self._writes.close()
        await self._reads.close()
        await self._channel.close(grace=None)
