"""The Data service's answer streams: request batches in, answers out as they complete.

Purpose: serves one Data.Write or Data.Read stream (server/node/node.py).
Each request is submitted to its replica at once; answers go back as they
complete, not in request order (the client matches them by id), so a write
stuck in one group (no quorum) holds up no other group's answers on the
same stream.

How an answer leaves: the replica calls the request's listener inside the
round that settled it (write_path.py, replica_host.py): for a write, the
round that applied it, on the stack of the follower acknowledgement that
completed its quorum. The listener queues the answer for the stream's
StreamWriter (server/stream_writer.py), which sends what is queued at the
next flush point (right after that apply, replica_host.py; at the latest the
end of the loop round) as one message (a response batch, cut after
MAX_ANSWER_BYTES of read answers), with no task switch to a response
generator. Answers that complete while a send is in flight go together in
the next message.

Invariants:
1. Submitted futures are watched, never awaited: a stream that dies cancels
   none of them; the writes go on, and a retry under the same request id
   finds their outcome.
2. Every request gets exactly one answer on a live stream: a future that
   failed (e.g. an engine error in a read) is answered UNAVAILABLE for that
   request alone, and the stream goes on.
3. The handler returns only once every request it read was answered and
   its answer sent, or the stream broke. If the answers cannot be sent
   while the stream lives (a send or an answer's encoding failed), the
   handler raises AnswersUnsent: the RPC ends with an error and every
   caller with a request on it hears so, none waits for an answer never sent.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from server import timeline
from server.node.metrics import CLIENT_LATENCY, CLIENT_OPS
from server.node.write_path import Listener, Result
from server.proto import data_pb2
from server.stream_writer import StreamWriter, stream_ended

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 4 << 20   # a Read answer message is cut after this many bytes of answers

# submit(request, on_done) -> the ReplicaHost that took it (started once the
# whole batch is in), or None when it was answered at once.
Submit = Callable[[Any, Listener], Any]
Fill = Callable[[Any, int, Any], None]


async def answer_stream(requests: AsyncIterator, write: Callable[[Any], Coroutine], submit: Submit, fill: Fill,
                        response_type: type, op: str) -> None:
    """Serves one stream: `requests` its request batches, `write` its send
    (the server context's write), `fill(answer, id, result)` one answer from
    a future's result, `op` "write" or "read" (metrics, the size cut)."""
    answers: deque[tuple[int, asyncio.Future]] = deque()
    outstanding = 0
    all_answered: asyncio.Future | None = None

    def take() -> Any | None:
        out = response_type()
        size = 0
        while answers:
            req_id, fut = answers.popleft()
            if fut.cancelled():
                continue
            answer = out.responses.add()
            if fut.exception() is not None:   # invariant 2
                log.error("request %d failed here: %r", req_id, fut.exception())
                fill(answer, req_id,
                     (data_pb2.UNAVAILABLE, f"this node could not serve it: {fut.exception()}; retry"))
            else:
                fill(answer, req_id, fut.result())
            if op == "read":
                size += answer.ByteSize()
                if size >= MAX_ANSWER_BYTES:   # many large values: several messages, each far below the cap
                    break
        if not out.responses:
            return None
        if timeline.ENABLED:
            timeline.mark("data.response")
        return out

    handler = asyncio.current_task()
    failure: list[BaseException] = []   # what made the answers unsendable, and whether we cancelled for it
    cancelled_for_failure = False

    def failed(exc: BaseException) -> None:
        if stream_ended(exc):
            return   # the RPC ended under the send (e.g. the client cancelled): gRPC ends this handler
        # The answers cannot go out any more while the stream lives (a bug):
        # end the handler with AnswersUnsent, so the RPC ends with an error
        # and its caller hears of every request in flight (StreamBroken),
        # rather than waiting for answers never sent. On the handler's own
        # stack (inside flushed()) it raises after flushed() returns.
        nonlocal cancelled_for_failure
        failure.append(exc)
        if asyncio.current_task() is not handler:
            cancelled_for_failure = True
            handler.cancel()

    writer = StreamWriter(write, take, failed)

    # Metrics of the answers queued this loop round, recorded after the round
    # (a call_soon): not between an apply and the flush point after it, where
    # at 64 clients they held up every answer of the entry (bench/RESULTS.md,
    # 2026-11-28 10:55 entry: +9% writes/s at 64 clients, +2% at one).
    unrecorded: list[tuple[float, asyncio.Future]] = []

    def record() -> None:
        for t0, fut in unrecorded:
            _count(op, t0, fut)
        unrecorded.clear()

    def answered(req_id: int, t0: float, fut: asyncio.Future) -> None:
        nonlocal outstanding
        if not unrecorded:
            asyncio.get_running_loop().call_soon(record)
        unrecorded.append((t0, fut))
        if timeline.ENABLED:
            timeline.mark("data.answered")
        answers.append((req_id, fut))
        outstanding -= 1
        writer.kick_soon()
        if outstanding == 0 and all_answered is not None and not all_answered.done():
            all_answered.set_result(None)

    try:
        async for batch in requests:
            if timeline.ENABLED:
                timeline.mark("data.request")
            hosts = {}
            for req in batch.requests:
                outstanding += 1
                h = submit(req, functools.partial(answered, req.id, time.perf_counter()))
                if h is not None:
                    hosts[h.rg] = h
            if timeline.ENABLED:
                timeline.mark("data.submitted")
            for h in hosts.values():   # the whole batch in: propose it now if the replica is idle
                h.start_client_work()
        while outstanding and not writer.closed:   # invariant 3
            all_answered = asyncio.get_running_loop().create_future()
            await all_answered
        await writer.flushed()
        if failure:
            raise _unsent(failure[0]) from failure[0]
    except asyncio.CancelledError:
        if cancelled_for_failure and handler.uncancel() == 0:   # only our own cancel (failed): not the RPC's
            raise _unsent(failure[0]) from failure[0]
        raise
    finally:
        writer.close()


class AnswersUnsent(Exception):
    """A stream's answers could not be sent (its writer failed): the handler
    ends with this, so gRPC ends the RPC with an error status."""


def _unsent(cause: BaseException) -> AnswersUnsent:
    return AnswersUnsent(f"this stream's answers could not be sent: {cause!r}")


def answer_now(on_done: Listener, problem: tuple[int, str]) -> None:
    """A request refused before any replica took it: its (code, message) answer, through the same listener."""
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(problem)
    on_done(fut)


def _count(op: str, t0: float, fut: asyncio.Future) -> None:
    """Counts a settled request by outcome and records its latency (from its
    arrival to the end of the loop round that answered it)."""
    if fut.cancelled():
        return
    r = fut.result() if fut.exception() is None else None
    if isinstance(r, Result) or r is None:   # not a (code, message) rejection before any replica
        _latency_metric(op).observe(time.perf_counter() - t0)
        _ops_metric(op, r.outcome.name if r is not None else "ERROR").inc()


@functools.cache
def _latency_metric(op: str):
    return CLIENT_LATENCY.labels(op)   # the labelled child, looked up once (labels() takes a lock)


@functools.cache
def _ops_metric(op: str, outcome: str):
    return CLIENT_OPS.labels(op, outcome)
