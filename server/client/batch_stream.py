"""BatchStream: the ops of many tasks multiplexed onto one long-lived `Batch` stream, in batches.

Purpose: put, get and delete travel as `Op`s in `OpBatch` messages on the
KV service's bidi `Batch` stream (server/proto/kv.proto). Any number of tasks
call `BatchStream.call()` concurrently; each op gets a stream-unique id and a
future; the call's StreamWriter (server/stream_writer.py) takes EVERYTHING
queued at the end of the loop round that queued it, or when the send in
flight completes, and sends it as one OpBatch (up to MAX_BATCH_OPS ops /
MAX_BATCH_BYTES bytes, the rest in the next message at once), starting the
send itself: no request generator, so no task switch before it. Under load
N concurrent ops cost about one message; a lone op goes out at the end of
its round (nothing waits for company, there is no timer).
The reader matches each OpResult to its future by id.

This is server/node/data_client.py's pattern, with one difference: each gRPC
call is a `_StreamCall` generation owning its queue and in-flight ops, so a
call that dies fails exactly its own ops, and the next op opens a new call.

Contract:
  1. `call()` returns the op's OpResult (any code: the caller maps it) or raises:
       Unavailable      the stream broke before the op was sent, or the op
                        was a read (retrying is safe);
       OutcomeUnknown   the stream broke with the write sent and unanswered;
       DeadlineExceeded the timeout passed before an answer (OutcomeUnknown
                        instead for a write that was sent: retry.classify);
       QuorumKVError    the stream ended with a status that retrying cannot
                        fix (UNIMPLEMENTED, PERMISSION_DENIED, ...), per errors.error_for.
  2. An op whose caller gave up (timeout, cancellation) before it was sent is
     never sent.
  3. An op is marked `sent` when the sender hands it to gRPC, which happens
     only once the call has a transport (its headers went out): an op queued
     on a call that never connected fails as unsent (Unavailable). From then
     on its outcome is the server's.

Thread-safety: none; everything runs on the event loop of the first call.
"""
from __future__ import annotations

import asyncio
import functools
import itertools
from collections import deque

import grpc

from server.client.errors import (
    DeadlineExceeded,
    OutcomeUnknown,
    QuorumKVError,
    Unavailable,
    error_for,
    retry_after_ms_of,
)
from server.client.retry import classify
from server.proto import kv_pb2, kv_pb2_grpc
from server.stream_writer import StreamWriter

MAX_BATCH_OPS = 1000
MAX_BATCH_BYTES = 3 << 20     # below gRPC's default 4 MiB receive limit, whatever the router's settings
OP_OVERHEAD = 64              # bytes per op beyond table, key and value, for the estimate above

# A stream that ended with one of these is worth reopening; others fail its ops with error_for(code).
_REOPEN_CODES = frozenset({
    grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
})


class _Pending:
    __slots__ = ("op", "size", "write", "future", "sent", "abandoned")

    def __init__(self, op: kv_pb2.Op, size: int, write: bool, future: asyncio.Future):
        self.op = op
        self.size = size
        self.write = write
        self.future = future
        self.sent = False
        self.abandoned = False


class _StreamCall:
    """One gRPC Batch call: its queue, its in-flight ops, its sender and its reader. It dies once."""

    def __init__(self, stub: kv_pb2_grpc.KVStub, owner: BatchStream):
        self.queue: deque[_Pending] = deque()
        self.waiting: dict[int, _Pending] = {}
        self.ids = itertools.count(1)
        self.dead = False
        self.owner = owner
        self.call: grpc.aio.StreamStreamCall | None = None
        self.writer: StreamWriter | None = None   # once the call has a transport
        self.task = asyncio.get_running_loop().create_task(self._run(stub), name="quorumkv-batch-stream")

    def enqueue(self, op: kv_pb2.Op, size: int, write: bool) -> _Pending:
        op.id = next(self.ids)
        pending = _Pending(op, size, write, asyncio.get_running_loop().create_future())
        self.waiting[op.id] = pending
        self.queue.append(pending)
        if self.writer is not None:
            self.writer.kick_soon()
        return pending

    def forget(self, pending: _Pending) -> None:
        """The caller stopped waiting: never send it if unsent, drop its answer if one comes."""
        pending.abandoned = True
        self.waiting.pop(pending.op.id, None)

    def _take(self) -> kv_pb2.OpBatch | None:
        """The next OpBatch: everything queued, up to MAX_BATCH_OPS ops and
        MAX_BATCH_BYTES bytes (StreamWriter's take, called as it hands the
        message to gRPC: the ops in it count as sent from here, contract 3)."""
        if self.call.done():   # its write() would raise before handing anything over: they stay unsent
            return None
        ops, size = [], 0
        while self.queue and len(ops) < MAX_BATCH_OPS and (not ops or size + self.queue[0].size <= MAX_BATCH_BYTES):
            pending = self.queue.popleft()
            if pending.abandoned:
                continue
            pending.sent = True
            ops.append(pending.op)
            size += pending.size
        if not ops:
            return None
        self.owner.batches_sent += 1
        self.owner.ops_sent += len(ops)
        return kv_pb2.OpBatch(ops=ops)

    async def _connect(self, call: grpc.aio.StreamStreamCall) -> None:
        """Start the call's writer once it has a transport (contract 3). If it
        ends first, the reader sees that and fails the ops, unsent: grpc.aio's
        wait_for_connection() never returns for a call cancelled before its
        headers went out (Channel.close()), so it must not block the reader."""
        try:
            await call.wait_for_connection()
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            return
        if self.dead:
            return
        # Sends start at the end of the loop round that queued ops (kick_soon),
        # without a request generator's task switch (server/stream_writer.py).
        self.writer = StreamWriter(call.write, self._take, functools.partial(_cancel, call))
        self.writer.kick()   # what was queued while connecting

    async def _run(self, stub: kv_pb2_grpc.KVStub) -> None:
        call = connecting = None
        try:
            call = self.call = stub.Batch()
            connecting = asyncio.get_running_loop().create_task(self._connect(call))
            async for out in call:
                for result in out.results:
                    pending = self.waiting.pop(result.id, None)
                    if pending is not None and not pending.future.done():
                        pending.future.set_result(result)
            self._die(grpc.StatusCode.OK, "the router closed the stream", 0)
        except grpc.aio.AioRpcError as exc:
            self._die(exc.code(), exc.details() or "", retry_after_ms_of(exc.trailing_metadata()))
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                self._die(grpc.StatusCode.CANCELLED, "the client was closed", 0)
                raise
            self._die(grpc.StatusCode.UNAVAILABLE, "a send on the stream failed", 0)   # its writer cancelled the call
        except Exception as exc:             # e.g. grpc.aio.UsageError on a closed channel
            self._die(grpc.StatusCode.UNAVAILABLE, f"{type(exc).__name__}: {exc}", 0)
        finally:
            if connecting is not None:
                connecting.cancel()
            if self.writer is not None:
                self.writer.close()   # nothing more is taken into this call (contract 3)
            if call is not None:
                call.cancel()

    def _die(self, code: grpc.StatusCode, detail: str, retry_after_ms: int) -> None:
        """Fail every op of this call (synchronously, so no op can join it meanwhile)."""
        self.dead = True
        pendings = list(self.waiting.values())
        self.waiting.clear()
        self.queue.clear()
        for pending in pendings:
            pending.abandoned = True
            if pending.future.done():
                continue
            if code not in _REOPEN_CODES:
                exc: QuorumKVError = error_for(code, detail)
            elif pending.sent and pending.write:
                exc = OutcomeUnknown(f"the Batch stream ended ({code.name}: {detail}) with the write sent and "
                                     f"unanswered", code=grpc.StatusCode.UNKNOWN)
            else:
                exc = Unavailable(f"the Batch stream ended ({code.name}: {detail})",
                                  code=grpc.StatusCode.UNAVAILABLE, retry_after_ms=retry_after_ms)
            pending.future.set_exception(exc)


def _cancel(call: grpc.aio.StreamStreamCall, _failure: BaseException) -> None:
    """A send on `call` failed: end it, so its reader fails the call's ops."""
    call.cancel()


class BatchStream:
    """One slot of the client's stream pool: a Batch call, reopened on the next op after it dies."""

    def __init__(self, stub: kv_pb2_grpc.KVStub):
        self._stub = stub
        self._call: _StreamCall | None = None
        self.batches_sent = 0
        self.ops_sent = 0
        self.calls_opened = 0

    async def call(self, op: kv_pb2.Op, size: int, write: bool, timeout: float | None) -> kv_pb2.OpResult:
        """Send `op` in the next batch and wait up to `timeout` seconds for its result (contract 1)."""
        stream = self._call
        if stream is None or stream.dead:
            stream = self._call = _StreamCall(self._stub, self)
            self.calls_opened += 1
        pending = stream.enqueue(op, size, write)
        timer = asyncio.timeout(timeout)
        try:
            async with timer:
                return await pending.future
        except TimeoutError:
            if not timer.expired():
                raise                    # a DeadlineExceeded set by the stream itself
            stream.forget(pending)
            exc = DeadlineExceeded(f"no answer within the deadline ({timeout:.3f} s)",
                                   code=grpc.StatusCode.DEADLINE_EXCEEDED)
            raise classify(exc, write=write, sent=pending.sent) from None
        except asyncio.CancelledError:
            stream.forget(pending)
            raise

    async def close(self) -> None:
        """End the call; its ops fail (Unavailable, or OutcomeUnknown for sent writes)."""
        if self._call is not None and not self._call.task.done():
            self._call.task.cancel()
            await asyncio.gather(self._call.task, return_exceptions=True)
            if not self._call.dead:   # cancelled before it started: _run's handlers never ran
                self._call._die(grpc.StatusCode.CANCELLED, "the client was closed", 0)
