"""StreamWriter: sends on one gRPC stream, each send started by its owner, not by a task.

Purpose: every hop of a write (client -> leader -> follower -> leader ->
client) ends in a send on a long-lived stream. gRPC aio's request-generator
style puts a task switch before each send: the producer sets an event, the
loop later resumes the generator's consumer task, and only then does the
message reach the socket. With gRPC's classic poller the socket write happens
when a send operation is started (grpc_call_start_batch), inline on the
thread that starts it; only its completion comes back later through gRPC's
poller thread. So this writer starts the send itself, inside kick(), at a
flush point its owner chooses (below): no task stands between the code that
queued a message and the socket, and at a replica's flush point the bytes are
on the wire before that replica's round goes on (to its fsync, its apply).
One client's writes: +3.4% (bench/RESULTS.md, 2026-11-28 10:55 entry).

How: kick() asks the owner's `take()` for the next message and drives the
coroutine of `write(message)` (a grpc.aio call's `write`, or a server
context's) itself: it runs the coroutine until it first waits, and resumes
it from a done-callback of the future it waits on, as an asyncio Task
would. When that send completes, the writer takes again: what was queued
meanwhile goes out as one message.

When: owners call kick_soon() as they queue. The send then starts at the
next flush point: flush_deferred(), which a replica calls where a round's
messages are complete (server/node/replica_host.py), or else the end of the
current loop round (a call_soon). So everything queued within one round of
work goes as one message, as the request generators' task switch used to
ensure, without that task switch. (Kicking at once on every queue put broke
that: at 64 clients a lone request or answer went out alone whenever no send
was in flight, the next ones waited for its completion, and the group
settled into one write per fsync: 3,200 writes/s instead of 34,000.)

Invariants:
1. At most one send is in flight; messages leave in the order take() returned them.
2. kick() never raises and never waits: a failed send closes the writer
   (on_failure is called once, with the error) and later kicks do nothing;
   the owner learns of the stream's end from the call itself.
3. After close(), take() is not called again: nothing queued later is taken
   into a stream that ended (the lost-request bug of data_client.py's
   session-13 fix cannot come back through this path).

Thread-safety: the event loop's thread only, like everything asyncio; the
writers waiting for a flush point are kept per loop.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

log = logging.getLogger(__name__)

# What a send raises when its stream ended under it (the peer went away, the
# call was cancelled, the server stopped): on a client call AioRpcError or
# InvalidStateError, on a server context one of gRPC's own errors
# (grpc.aio.BaseError: ExecuteBatchError, UsageError, the server stopping).
# Expected, so not worth more than a debug line.
_STREAM_ENDED = (grpc.aio.AioRpcError, grpc.aio.BaseError, asyncio.InvalidStateError, asyncio.CancelledError)


def stream_ended(exc: BaseException) -> bool:
    """Whether a failed send failed because its stream ended (not a bug in building the message)."""
    return isinstance(exc, _STREAM_ENDED)


class StreamWriter:
    def __init__(self, write: Callable[[Any], Coroutine[Any, Any, Any]], take: Callable[[], Any | None],
                 on_failure: Callable[[BaseException], None] | None = None):
        """`write(message)`: a coroutine that sends one message. `take()`:
        the next message to send, or None when nothing is queued."""
        self._write = write
        self._take = take
        self._on_failure = on_failure
        self._busy = False      # a send in flight, or the writer inside kick()
        self._closed = False
        self._idle: asyncio.Future | None = None
        self._deferred = False  # in _deferred, to be kicked at the next flush point
        self.sent = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def kick(self) -> None:
        """Starts sending what take() has, now, unless a send is in flight (then it goes after that send)."""
        if self._busy or self._closed:
            return
        self._busy = True
        self._pump(None)

    def kick_soon(self) -> None:
        """Starts sending what take() has at the next flush point: a
        flush_deferred() call, or the end of this loop round."""
        if self._busy or self._closed or self._deferred:
            return
        self._deferred = True
        _defer(self)

    def close(self) -> None:
        """Stops taking; a send in flight finishes or fails on its own."""
        self._closed = True
        self._settle_idle()

    async def flushed(self) -> None:
        """Sends what waits for a flush point now, then waits until nothing
        is in flight and take() has nothing (or the writer closed)."""
        self.kick()
        while self._busy and not self._closed:
            if self._idle is None:
                self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)

    # ------------------------------------------------------------- internals
    def _pump(self, coro: Coroutine | None) -> None:
        try:
            while True:
                if coro is None:
                    message = None if self._closed else self._take_logged()
                    if message is None:
                        self._busy = False
                        self._settle_idle()
                        return
                    coro = self._write(message)
                    self.sent += 1
                try:
                    waited = coro.send(None)
                except StopIteration:
                    coro = None
                    continue
                if waited is None:   # a bare yield (asyncio.sleep(0)): go on in the next loop round
                    asyncio.get_running_loop().call_soon(self._pump, coro)
                    return
                if getattr(waited, "_asyncio_future_blocking", None) is not True:
                    coro.close()
                    raise RuntimeError(f"a stream send waited on {waited!r}, not an asyncio future")
                waited._asyncio_future_blocking = False
                waited.add_done_callback(functools.partial(self._resume, coro))
                return
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - invariant 2: the stream's end is the owner's to handle
            self._fail(exc)

    def _take_logged(self) -> Any | None:
        try:
            return self._take()
        except Exception:
            # A bug in the owner, not the stream's end: say so loudly, then
            # end this writer as a failed send would (invariant 2).
            log.exception("building the next stream message failed")
            raise

    def _resume(self, coro: Coroutine, _waited: asyncio.Future) -> None:
        # The coroutine reads the future's outcome itself (Future.__await__
        # returns its result or raises its exception where it was awaited).
        self._pump(coro)

    def _fail(self, exc: BaseException) -> None:
        self._busy = False
        if not self._closed:
            self._closed = True
            if isinstance(exc, _STREAM_ENDED):
                log.debug("stream send failed: %r", exc)
            else:
                log.warning("stream send failed: %r", exc)
            if self._on_failure is not None:
                try:
                    self._on_failure(exc)
                except Exception:   # invariant 2: not into the caller (a replica round)
                    log.exception("a stream's failure handler failed")
        self._settle_idle()

    def _settle_idle(self) -> None:
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
        self._idle = None


# Writers waiting for the next flush point, per event loop (a process runs
# one; tests run one after another, or a client's loop in another thread).
_deferred: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[StreamWriter]] = weakref.WeakKeyDictionary()


def _defer(writer: StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    waiting = _deferred.get(loop)
    if waiting is None:
        waiting = _deferred[loop] = []
    if not waiting:
        loop.call_soon(flush_deferred)
    waiting.append(writer)


def flush_deferred() -> None:
    """Starts the sends of every writer of this loop kicked with kick_soon()
    so far (a flush point). Never raises (StreamWriter's invariant 2)."""
    try:
        waiting = _deferred.get(asyncio.get_running_loop())
    except RuntimeError:   # no running loop: nothing of ours can be waiting
        return
    while waiting:
        writers = waiting[:]
        waiting.clear()
        for w in writers:
            w._deferred = False
            w.kick()
