"""OpStream: one KV.Batch stream's ops (server/proto/kv.proto), started as they arrive, answered as they complete.

Purpose: serves the stream the SDK sends every put, get and delete on
(server/client/batch_stream.py). Ops for the same group's leader meet in
that leader's DataClient stream and travel together; answers go back in
batches as they complete, not in request order.

How an op runs: on the stack that read it, the router validates it, routes
it in its copy of the routing and sends its first attempt (Router.begin_*,
try_attempt: server/router/calls.py). The attempt's answer is judged in the
answer future's done-callback (Router.*_verdict). Only an op that needs to
wait (no route or leader known yet, a retry, a routing refresh) goes on in a
task of its own (Router.finish_*). Under load nearly every op is settled by
its first answer; without a task per op, 64 SDK callers get about 6% more
puts and gets through one router (bench/RESULTS.md, 2026-11-28 12:50 entry).

How an answer leaves: a StreamWriter (server/stream_writer.py) sends what
completed in a loop round at its end, and what completes while a send is in
flight right after that send, as one OpResultBatch: no response generator,
so no task switch before each send.

Invariants:
1. Every op read gets exactly one OpResult on a live stream; the handler
   returns only once all are sent, or the stream broke.
2. Answers that cannot be sent while the stream lives (a bug) end the RPC
   with an error (AnswersUnsent): the client fails the ops in flight on it,
   none waits for an answer never sent.
3. When the stream ends, its ops' tasks are cancelled and its first attempts
   given up (their futures cancelled): nothing of a dead stream goes on
   retrying. An attempt already sent stays sent; a retry of the op under
   its request id finds its outcome.

Thread-safety: one asyncio loop.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc

from server.proto import kv_pb2
from server.router.calls import Attempt, ReadCall, Verdict, WriteCall
from server.router.metrics import LATENCY, OPS
from server.router.router import DEFAULT_DEADLINE, RETRY_AFTER_MS, Router, RouterError
from server.stream_writer import StreamWriter, stream_ended

log = logging.getLogger(__name__)
MAX_ANSWER_BYTES = 3 << 20   # an answer message holds at most this many bytes of values (the SDK's requests: 3 MiB)
ANSWER_OVERHEAD = 64         # bytes per OpResult beyond its value, for that cut
_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


class AnswersUnsent(Exception):
    """A Batch stream's answers could not be sent while it lived: the handler
    ends with this, so the RPC ends with an error (invariant 2)."""


class OpStream:
    def __init__(self, router: Router, write: Callable[[Any], Coroutine]):
        """`write`: the server context's write (one OpResultBatch)."""
        self.router = router
        self._results: list[kv_pb2.OpResult] = []   # answered, not taken into a message yet
        self._outstanding = 0                       # ops read, not answered
        self._tasks: set[asyncio.Task] = set()
        self._attempts: set[asyncio.Future] = set()  # first attempts in flight (their answers)
        self._all_answered: asyncio.Future | None = None
        self._closed = False
        self._handler: asyncio.Task | None = None
        self._failure: BaseException | None = None
        self._cancelled_for_failure = False
        self._writer = StreamWriter(write, self._take, self._failed)

    async def serve(self, batches: AsyncIterator[kv_pb2.OpBatch]) -> None:
        """Runs the stream: `batches` the client's OpBatches. Raises AnswersUnsent (invariant 2)."""
        loop = asyncio.get_running_loop()
        self._handler = asyncio.current_task()
        try:
            async for batch in batches:
                for op in batch.ops:
                    self._outstanding += 1
                    self._start(op)
            # The client half-closed: every op it sent is answered before the handler returns.
            while self._outstanding and not self._writer.closed:
                self._all_answered = loop.create_future()
                await self._all_answered
            await self._writer.flushed()
            if self._failure is not None:
                raise _unsent(self._failure) from self._failure
        except asyncio.CancelledError:
            if self._cancelled_for_failure and self._handler.uncancel() == 0:   # our own cancel, not the RPC's
                raise _unsent(self._failure) from self._failure
            raise
        finally:
            self._close()

    # ------------------------------------------------------------- one op
    def _start(self, op: kv_pb2.Op) -> None:
        out = kv_pb2.OpResult(id=op.id)
        which = op.WhichOneof("op")
        budget = op.timeout_ms / 1000 if op.timeout_ms else DEFAULT_DEADLINE
        deadline = time.monotonic() + min(budget, DEFAULT_DEADLINE)
        done = functools.partial(self._answer, out, which or "none", time.perf_counter())
        r = self.router
        try:
            if which == "put":
                p = op.put
                call = r.begin_write(p.table, p.key, p.value, if_seq=p.if_seq, if_absent=p.if_absent,
                                     request_id=p.request_id, retry=p.retry, deadline=deadline)
            elif which == "delete":
                d = op.delete
                call = r.begin_write(d.table, d.key, None, if_seq=d.if_seq, request_id=d.request_id,
                                     retry=d.retry, deadline=deadline)
            elif which == "get":
                call = r.begin_read(op.get.table, op.get.key, deadline=deadline)
            else:
                raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, "op has none of put, get, delete")
            attempt = r.try_attempt(call)
        except Exception as exc:  # noqa: BLE001 - RouterError, or a bug: either answers its op
            done(_failed_result(out, exc))
            return
        if attempt is None:   # no route or leader known here yet: the rest waits for them, in a task
            self._later(call, None, out, done)
            return
        self._attempts.add(attempt.answer)
        attempt.answer.add_done_callback(functools.partial(self._first_answered, call, attempt, out, done))

    def _first_answered(self, call: WriteCall | ReadCall, attempt: Attempt, out: kv_pb2.OpResult,
                        done: Callable[[kv_pb2.OpResult], None], _answer: asyncio.Future) -> None:
        self._attempts.discard(attempt.answer)
        if self._closed:   # invariant 3: given up with the stream
            self.router.settle(attempt)
            return
        try:
            verdict = (self.router.write_verdict(call, attempt) if isinstance(call, WriteCall)
                       else self.router.read_verdict(call, attempt))
        except Exception as exc:  # noqa: BLE001 - as in _start
            done(_failed_result(out, exc))
            return
        if isinstance(verdict, Verdict):
            self._later(call, verdict, out, done)
        else:
            done(_filled(out, verdict))

    def _later(self, call: WriteCall | ReadCall, verdict: Verdict | None, out: kv_pb2.OpResult,
               done: Callable[[kv_pb2.OpResult], None]) -> None:
        """The rest of an op, from `verdict` on, in a task of its own."""
        t = asyncio.get_running_loop().create_task(self._finish(call, verdict, out))
        self._tasks.add(t)
        t.add_done_callback(functools.partial(self._task_done, done))

    async def _finish(self, call: WriteCall | ReadCall, verdict: Verdict | None,
                      out: kv_pb2.OpResult) -> kv_pb2.OpResult:
        try:
            if isinstance(call, WriteCall):
                return _filled(out, await self.router.finish_write(call, verdict))
            return _filled(out, await self.router.finish_read(call, verdict))
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise   # the stream ended (_close): no answer
            # A CancelledError from below, not a cancel of this op: it must
            # still be answered (invariant 1), as one whose outcome is unknown.
            log.error("op %d: a cancellation leaked into its task", out.id)
            return _failed_result(out, _gave_up(call))
        except Exception as exc:  # noqa: BLE001 - as in _start
            return _failed_result(out, exc)

    def _task_done(self, done: Callable[[kv_pb2.OpResult], None], t: asyncio.Task) -> None:
        self._tasks.discard(t)
        if not t.cancelled():
            done(t.result())   # _finish never raises: errors are in the result

    def _answer(self, out: kv_pb2.OpResult, which: str, t0: float, _same: kv_pb2.OpResult) -> None:
        """An op's result is complete: queued for the next message."""
        if self._closed:
            return
        self._results.append(out)
        self._writer.kick_soon()
        # Metrics after this loop round, not before the op's result joins its
        # answer batch (as the nodes do, server/node/data_answers.py): 64 SDK
        # clients through one router +1.4% and +2.5% (bench/RESULTS.md 2026-11-28 10:55).
        asyncio.get_running_loop().call_soon(_record, which, out.code, time.perf_counter() - t0)
        self._outstanding -= 1
        if self._outstanding == 0 and self._all_answered is not None and not self._all_answered.done():
            self._all_answered.set_result(None)

    # ------------------------------------------------------------- the stream
    def _take(self) -> kv_pb2.OpResultBatch | None:
        """The next message: the answers queued, as many as fit MAX_ANSWER_BYTES
        (at least one: a value is at most 1 MiB), so many large values
        completing together go in several messages, each below gRPC's default
        4 MiB receive limit; the writer takes the rest next."""
        if not self._results:
            return None
        results, size = self._results, 0
        n = 0
        while n < len(results):
            size += len(results[n].value) + ANSWER_OVERHEAD
            if n and size > MAX_ANSWER_BYTES:
                break
            n += 1
        batch = kv_pb2.OpResultBatch()
        batch.results.extend(results[:n])
        del results[:n]
        return batch

    def _failed(self, exc: BaseException) -> None:
        if stream_ended(exc):
            return   # the RPC ended under the send: gRPC ends the handler
        if self._failure is None:
            self._failure = exc
        if asyncio.current_task() is not self._handler:   # on the handler's own stack: raised after flushed()
            self._cancelled_for_failure = True
            self._handler.cancel()

    def _close(self) -> None:
        self._closed = True
        self._writer.close()
        for t in self._tasks:
            t.cancel()
        for answer in self._attempts:
            answer.cancel()   # their done-callbacks settle them with the router (invariant 3)


def _filled(out: kv_pb2.OpResult, result) -> kv_pb2.OpResult:
    """`out` with a settled op's result: a write's stored seq or a get's ReadResponse."""
    if isinstance(result, bytes):
        out.seq = result
    else:
        out.found, out.value, out.seq = result.found, result.value, result.seq
    return out


def _failed_result(out: kv_pb2.OpResult, exc: Exception) -> kv_pb2.OpResult:
    """`out` with an op's failure: a RouterError's code and message, or INTERNAL for a bug."""
    if isinstance(exc, RouterError):
        out.code = exc.code.value[0]
        out.message = exc.message
        out.retry_after_ms = exc.retry_after_ms
        out.final = exc.final
    else:
        log.error("op %d failed", out.id, exc_info=exc)
        out.code = grpc.StatusCode.INTERNAL.value[0]
        out.message = f"internal error: {exc}"
    return out


def _gave_up(call: WriteCall | ReadCall) -> RouterError:
    if isinstance(call, WriteCall):   # an attempt may be out: not final, a retry under its id may learn more
        return RouterError(grpc.StatusCode.UNKNOWN, "the write's outcome is unknown: the router gave it up; "
                           "read the key to see whether it was applied")
    return RouterError(grpc.StatusCode.UNAVAILABLE, "the router gave the read up: retry", RETRY_AFTER_MS)


def _unsent(cause: BaseException) -> AnswersUnsent:
    return AnswersUnsent(f"this stream's answers could not be sent: {cause!r}")


def _record(op: str, code: int, seconds: float) -> None:
    """One answered op in the router's metrics (the labelled children looked up once: labels() takes a lock)."""
    _latency(op).observe(seconds)
    _ops(op, code).inc()


@functools.cache
def _latency(op: str):
    return LATENCY.labels(op)


@functools.cache
def _ops(op: str, code: int):
    return OPS.labels(op, _CODE_NAMES.get(code, str(code)))
