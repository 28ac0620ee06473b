"""DataClient: asyncio client of one node's Data service, batching on long-lived streams.

Purpose: what request managers (issue 4), benchmarks and tests use to talk to
a replication group's leader. Any number of tasks call `write()` / `read()`
concurrently; each call gets an id and a future. Per stream, a
StreamWriter (server/stream_writer.py) sends everything queued within one
loop round (or since the send in flight completed) as ONE batch message, so
under load N concurrent operations cost about one stream message, and a
lone caller still goes out at the end of its round (nothing waits for
company).

A broken stream fails the calls in flight with `StreamBroken` (the caller
decides: a write whose stream broke has an unknown outcome) and the next
call opens a new one.

With a LearnBoard (learn_board.py), the client is a learner: its writes ask
for DURABLE_ON_LEADER answers, which the reader hands to the board instead
of the caller; the caller's future resolves when the board counted the
write committed (OK) or gave up on it (OUTCOME_UNKNOWN). One hop less per
write (server/replication/README.md, "The client as a learner").
"""
from __future__ import annotations

import asyncio
import functools
import itertools

import grpc

from server import timeline
from server.node.learn_board import LearnBoard
from server.node.peers import STREAM_CHANNEL_OPTIONS
from server.node_identity import NODE_METADATA_KEY
from server.proto import data_pb2, data_pb2_grpc
from server.stream_writer import StreamWriter

# A learner's writes ask for learner answers only while this client is
# latency-bound: few operations in flight on its streams, on average
# (DataClient._as_learner). With hysteresis, so that the writes of one
# round do not split into two modes (answered at different times, their
# callers' next writes would split into two entries per round).
LEARNER_ON_BELOW = 4.0     # average operations in flight: learner answers from below this...
LEARNER_OFF_ABOVE = 12.0   # ... until above this
LOAD_SMOOTHING = 0.05      # weight of each write's sample in the average
READ_SHARE_MAX = 0.25      # ... and only while reads are less than this share of its operations


class StreamBroken(Exception):
    """The stream carrying the request ended before its answer came back."""


class _Stream:
    """One bidi stream with id-matched futures."""

    def __init__(self, open_call, batch_type, max_batch: int = 1000, learn: LearnBoard | None = None):
        self._open_call = open_call
        self._learn = learn
        self._learner_rgs: dict[int, int] = {}   # id -> rg of the requests in flight that asked for learner answers
        self._batch_type = batch_type
        self._max_batch = max_batch
        self._queue: list = []
        self._waiting: dict[int, asyncio.Future] = {}
        self._task: asyncio.Task | None = None
        # The open stream's writer (server/stream_writer.py). Each stream has
        # its own, closed when that stream ends: a send of an ended stream that
        # completes late takes nothing more, so no request is taken into a
        # dead call (where it would be lost) while a newer stream serves the queue.
        self._writer: StreamWriter | None = None
        self.batches_sent = 0

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def submit(self, req) -> asyncio.Future:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        fut = asyncio.get_running_loop().create_future()
        self._waiting[req.id] = fut
        if self._learn is not None and req.learner:
            self._learner_rgs[req.id] = req.rg
        self._queue.append(req)
        if self._writer is not None:
            self._writer.kick_soon()
        return fut

    def _take(self):
        """Up to max_batch queued requests as one message (StreamWriter's take)."""
        if not self._queue:
            return None
        batch = self._batch_type()
        take, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
        batch.requests.extend(take)
        self.batches_sent += 1
        if timeline.ENABLED:
            timeline.mark("client.batch_out")
        return batch

    async def _run(self) -> None:
        err = StreamBroken("stream closed by the client")   # close() cancelled us
        call = writer = None
        try:
            call = self._open_call()
            writer = self._writer = StreamWriter(call.write, self._take, functools.partial(_cancel, call))
            writer.kick()   # what was submitted while the task started
            async for out in call:
                if timeline.ENABLED:
                    timeline.mark("client.batch_in")
                learner_rgs = self._learner_rgs
                for resp in out.responses:
                    fut = self._waiting.pop(resp.id, None)
                    rg = learner_rgs.pop(resp.id, None) if learner_rgs else None
                    if fut is None or fut.done():
                        continue
                    if rg is not None and resp.code == data_pb2.DURABLE_ON_LEADER:
                        self._learn.settle(rg, fut, resp)   # resolves fut once the board counted it
                    else:
                        fut.set_result(resp)
            err = StreamBroken("stream closed by the server")
        except grpc.aio.AioRpcError as exc:
            err = StreamBroken(f"{exc.code().name}: {exc.details()}")
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise
            err = StreamBroken("a send on the stream failed")   # its writer cancelled the call
        except Exception as exc:  # noqa: BLE001 - e.g. grpc's UsageError on a closed channel: the callers hear it
            err = StreamBroken(f"{type(exc).__name__}: {exc}")
        finally:
            if writer is not None:
                writer.close()
                if self._writer is writer:
                    self._writer = None
            if call is not None:
                call.cancel()
            waiting, self._waiting = self._waiting, {}   # every caller in flight hears of it, whatever ended us
            self._learner_rgs.clear()
            self._queue.clear()
            for fut in waiting.values():
                if not fut.done():
                    fut.set_exception(err)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # A task cancelled before it started never ran _run's cleanup: its callers hear here.
        waiting, self._waiting = self._waiting, {}
        self._learner_rgs.clear()
        self._queue.clear()
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(StreamBroken("stream closed by the client"))


def _cancel(call, _failure: BaseException) -> None:
    """A send on `call` failed: end it, so the reading task ends and its callers hear of it."""
    call.cancel()


class DataClient:
    def __init__(self, address: str, sender_id: int = 0, learn: LearnBoard | None = None,
                 always_learn: bool = False):
        """`learn`: count commits as a learner (learn_board.py): writes ask for
        DURABLE_ON_LEADER answers while this client is lightly loaded
        (_as_learner; with `always_learn`, whatever its load) and the board is
        ready for their group, and are answered OK here once it counted them
        committed."""
        self.address = address
        self._learn = learn
        # Average operations in flight, sampled at each write (_as_learner). It
        # starts high, with learner answers off: a client that starts under load
        # never switches (a switch splits the writes in flight into two modes).
        self._load = 0.0 if always_learn else LEARNER_OFF_ABOVE
        self._learner_on = always_learn
        self._always_learn = always_learn
        self._read_share = 0.0    # reads' share of this client's operations, averaged like _load
        self._channel = grpc.aio.insecure_channel(address, options=STREAM_CHANNEL_OPTIONS)
        self._stub = data_pb2_grpc.DataStub(self._channel)
        md = ((NODE_METADATA_KEY, str(sender_id)),)
        self._ids = itertools.count(1)
        self._writes = _Stream(lambda: self._stub.Write(metadata=md), data_pb2.WriteBatchRequest, learn=learn)
        self._reads = _Stream(lambda: self._stub.Read(metadata=md), data_pb2.ReadBatchRequest)
        self._md = md

    async def write(self, rg: int, batch: bytes) -> data_pb2.WriteResponse:
        """One write batch (engine/_native/write_batch.pyx format) to the RG's leader on this node."""
        req = data_pb2.WriteRequest(id=next(self._ids), rg=rg, batch=batch)
        if self._learn is not None and self._as_learner(rg):
            req.learner = True
        return await self._writes.submit(req)

    async def write_request(self, req: data_pb2.WriteRequest) -> data_pb2.WriteResponse:
        """A WriteRequest with conditions or a request id; its `id` is set here."""
        return await self.submit_write(req)

    def submit_write(self, req: data_pb2.WriteRequest) -> asyncio.Future:
        """write_request, not awaited: the future of its answer. A caller that
        stops waiting (cancels it, or sets an exception on it) loses only the
        answer: the request is sent and its answer, when it comes, dropped."""
        req.id = next(self._ids)
        if self._learn is not None and self._as_learner(req.rg):
            req.learner = True
        return self._writes.submit(req)

    def _as_learner(self, rg: int) -> bool:
        """Whether this write asks for a learner answer: while this client is
        latency-bound (few operations in flight), where the hop it saves is
        the write's latency, and mostly writes. Under load the hop hides in
        queueing, and the learner's extra Learn message per write costs
        throughput; next to reads it costs them more than it gives the
        writes (one writer and one reader: 0.89x ops/s with learner answers,
        1.06x without; bench/RESULTS.md, 2026-11-28 15:20 and 15:45).
        Both averages move with each operation (LOAD_SMOOTHING)."""
        if self._always_learn:
            return self._learn.ready(rg)
        share = self._read_share = self._read_share * (1.0 - LOAD_SMOOTHING)
        load = self._load = self._load + (self._writes.in_flight + self._reads.in_flight - self._load) * LOAD_SMOOTHING
        if self._learner_on:
            if load > LEARNER_OFF_ABOVE:
                self._learner_on = False
        elif load < LEARNER_ON_BELOW:
            self._learner_on = True
        return self._learner_on and share < READ_SHARE_MAX and self._learn.ready(rg)

    async def read(self, rg: int, table_id: int, key: bytes) -> data_pb2.ReadResponse:
        return await self.submit_read(rg, table_id, key)

    def submit_read(self, rg: int, table_id: int, key: bytes) -> asyncio.Future:
        """read, not awaited (as submit_write)."""
        self._read_share += (1.0 - self._read_share) * LOAD_SMOOTHING
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
