"""KVService: the gRPC face of the Router (server/proto/kv.proto).

Purpose: maps each RPC to a Router operation, with the request's deadline
(the client's, capped at DEFAULT_DEADLINE) and RouterError -> gRPC status:
unary calls abort with the code and message (plus trailing metadata:
"retry-after-ms" on UNAVAILABLE, "quorumkv-final" on an UNKNOWN no retry can
settle); in the Batch stream each OpResult carries them.

Batch: every op of an incoming OpBatch runs as its own task, so ops for the
same RG leader meet in that leader's DataClient stream and travel together;
answers go back in batches as they complete, not in request order: a
StreamWriter (server/stream_writer.py) sends what completed in a loop round
at its end, and what completes while a send is in flight right after it.
Every op read is answered before the handler returns, unless the stream
broke; answers that cannot be sent on a live stream end the RPC with an
error (AnswersUnsent), so the client fails the ops in flight on it.

Thread-safety: one asyncio loop.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time

import grpc

from server.client.errors import FINAL_KEY, RETRY_AFTER_KEY
from server.meta.catalog import check_split_keys
from server.proto import kv_pb2, kv_pb2_grpc, meta_pb2
from server.router.metrics import LATENCY, OPS, measured
from server.router.router import DEFAULT_DEADLINE, Router, RouterError, check_key, check_table
from server.stream_writer import StreamWriter, stream_ended

log = logging.getLogger(__name__)
_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def _deadline(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    if remaining is None or remaining > DEFAULT_DEADLINE:
        remaining = DEFAULT_DEADLINE
    return time.monotonic() + remaining


async def _abort(context: grpc.aio.ServicerContext, err: RouterError):
    trailing = []
    if err.retry_after_ms:
        trailing.append((RETRY_AFTER_KEY, str(err.retry_after_ms)))
    if err.final:
        trailing.append((FINAL_KEY, "1"))
    if trailing:
        context.set_trailing_metadata(tuple(trailing))
    await context.abort(err.code, err.message)


class KVService(kv_pb2_grpc.KVServicer):
    def __init__(self, router: Router):
        self.router = router

    # ---------------------------------------------------------------- tables
    async def CreateTable(self, request, context):  # noqa: N802 - gRPC's names
        try:
            check_table(request.table)
            for k in request.split_keys:
                check_key(k, "split key")
            try:
                check_split_keys(sorted(set(request.split_keys)))   # before sending them all to the MM
            except ValueError as exc:
                raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            resp = await self.router.meta_stub().CreateTable(
                meta_pb2.NewTableRequest(name=request.table, split_keys=list(request.split_keys),
                                         request_id=request.request_id),
                timeout=context.time_remaining() or DEFAULT_DEADLINE, metadata=self.router.metadata)
        except RouterError as err:
            await _abort(context, err)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details())
        await self._routing_as_of_now(context)
        return kv_pb2.CreateTableResponse(ranges=len(resp.table.ranges))

    async def DeleteTable(self, request, context):  # noqa: N802
        try:
            check_table(request.table)
            # The MM names the groups that held the table (not this router's
            # routing, which may not have it yet: created elsewhere a moment
            # ago), also to a retry of a drop it already made (request_id).
            resp = await self.router.meta_stub().DropTable(
                meta_pb2.DropTableRequest(name=request.table, request_id=request.request_id),
                timeout=context.time_remaining() or DEFAULT_DEADLINE, metadata=self.router.metadata)
        except RouterError as err:
            await _abort(context, err)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details())
        await self._routing_as_of_now(context)
        if resp.rgs:   # then free its space in the groups that held it
            left = await self.router.drop_table_data(resp.table_id, set(resp.rgs), _deadline(context))
            if left:
                log.warning("table %r dropped; its data in groups %s is not freed yet", request.table, sorted(left))
        return kv_pb2.DeleteTableResponse()

    async def _routing_as_of_now(self, context: grpc.aio.ServicerContext) -> None:
        """Read-your-writes for table changes: this router answers once its
        routing copy is one fetched after the MM answered (the MM moves its
        routing version before it answers). Not "until the name shows or
        goes": a retried call gets the first call's answer, and the name may
        have been dropped or created again since. If no MM answers in time,
        the change is made all the same: the watch brings it."""
        await self.router.refresh(_deadline(context))

    async def ListTables(self, request, context):  # noqa: N802
        # Current routing, not this router's copy: a table just created or
        # dropped through another router shows (read-your-writes for clients
        # that spread calls over routers).
        if not await self.router.refresh(_deadline(context)):
            await _abort(context, self.router._unavailable("the table list (no metadata manager answered)"))
        return kv_pb2.ListTablesResponse(tables=self.router.routing.tables())

    # ---------------------------------------------------------------- records
    async def Put(self, request, context):  # noqa: N802
        try:
            with measured("put"):
                seq = await self.router.write(request.table, request.key, request.value, if_seq=request.if_seq,
                                              if_absent=request.if_absent, request_id=request.request_id,
                                              retry=request.retry, deadline=_deadline(context))
        except RouterError as err:
            await _abort(context, err)
        return kv_pb2.PutResponse(seq=seq)

    async def Get(self, request, context):  # noqa: N802
        try:
            with measured("get"):
                resp = await self.router.get(request.table, request.key, deadline=_deadline(context))
        except RouterError as err:
            await _abort(context, err)
        return kv_pb2.GetResponse(found=resp.found, value=resp.value, seq=resp.seq)

    async def Delete(self, request, context):  # noqa: N802
        try:
            with measured("delete"):
                seq = await self.router.write(request.table, request.key, None, if_seq=request.if_seq,
                                              request_id=request.request_id, retry=request.retry,
                                              deadline=_deadline(context))
        except RouterError as err:
            await _abort(context, err)
        return kv_pb2.DeleteResponse(seq=seq)

    async def List(self, request, context):  # noqa: N802
        try:
            with measured("list"):
                rows, token = await self.router.list_page(request.table, request.start, request.end, request.limit,
                                                          request.keys_only, request.continuation,
                                                          deadline=_deadline(context))
        except RouterError as err:
            await _abort(context, err)
        return _page(rows, token)

    async def ListStream(self, request, context):  # noqa: N802
        token = request.continuation
        while True:
            try:
                rows, token = await self.router.list_page(request.table, request.start, request.end, request.limit,
                                                          request.keys_only, token, deadline=_deadline(context))
            except RouterError as err:
                await _abort(context, err)
            yield _page(rows, token)
            if not token:
                return

    # ---------------------------------------------------------------- batches
    async def Batch(self, request_iterator, context):  # noqa: N802
        loop = asyncio.get_running_loop()
        handler = asyncio.current_task()
        results: list[kv_pb2.OpResult] = []   # answered, not taken into a message yet
        tasks: set[asyncio.Task] = set()
        all_done: asyncio.Future | None = None
        failure: list[BaseException] = []
        cancelled_for_failure = False

        def take() -> kv_pb2.OpResultBatch | None:
            if not results:
                return None
            out = kv_pb2.OpResultBatch()
            out.results.extend(results)
            results.clear()
            return out

        def failed(exc: BaseException) -> None:
            nonlocal cancelled_for_failure
            if stream_ended(exc):
                return   # the RPC ended under the send: gRPC ends this handler
            failure.append(exc)   # answers can no longer go out on a live stream (a bug): end it with an error
            if asyncio.current_task() is not handler:   # on the handler's own stack: raised after flushed()
                cancelled_for_failure = True
                handler.cancel()

        # Answers are sent by the writer at the end of the loop round that
        # completed them (server/stream_writer.py), as the nodes send theirs:
        # no response generator, so no task switch before each send.
        writer = StreamWriter(context.write, take, failed)

        def finished(t: asyncio.Task) -> None:
            tasks.discard(t)
            if not t.cancelled():
                results.append(t.result())   # _one never raises: errors are in the result
                writer.kick_soon()
            if not tasks and all_done is not None and not all_done.done():
                all_done.set_result(None)

        try:
            async for batch in request_iterator:
                for op in batch.ops:
                    t = loop.create_task(self._one(op))
                    tasks.add(t)
                    t.add_done_callback(finished)
            # The client half-closed: every op it sent is answered before the handler returns.
            while tasks and not writer.closed:
                all_done = loop.create_future()
                await all_done
            await writer.flushed()
            if failure:
                raise AnswersUnsent(f"this stream's answers could not be sent: {failure[0]!r}") from failure[0]
        except asyncio.CancelledError:
            if cancelled_for_failure and handler.uncancel() == 0:   # only our own cancel (failed): not the RPC's
                raise AnswersUnsent(f"this stream's answers could not be sent: {failure[0]!r}") from failure[0]
            raise
        finally:
            writer.close()
            for t in tasks:
                t.cancel()

    async def _one(self, op: kv_pb2.Op) -> kv_pb2.OpResult:
        out = kv_pb2.OpResult(id=op.id)
        budget = op.timeout_ms / 1000 if op.timeout_ms else DEFAULT_DEADLINE
        deadline = time.monotonic() + min(budget, DEFAULT_DEADLINE)
        which = op.WhichOneof("op")
        t0 = time.perf_counter()
        try:
            if which == "put":
                p = op.put
                out.seq = await self.router.write(p.table, p.key, p.value, if_seq=p.if_seq, if_absent=p.if_absent,
                                                  request_id=p.request_id, retry=p.retry, deadline=deadline)
            elif which == "delete":
                d = op.delete
                out.seq = await self.router.write(d.table, d.key, None, if_seq=d.if_seq, request_id=d.request_id,
                                                  retry=d.retry, deadline=deadline)
            elif which == "get":
                resp = await self.router.get(op.get.table, op.get.key, deadline=deadline)
                out.found, out.value, out.seq = resp.found, resp.value, resp.seq
            else:
                raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, "op has none of put, get, delete")
        except RouterError as err:
            out.code = err.code.value[0]
            out.message = err.message
            out.retry_after_ms = err.retry_after_ms
            out.final = err.final
        except Exception as exc:  # noqa: BLE001 - a bug must still answer its op, not hang it
            log.exception("op %d failed", op.id)
            out.code = grpc.StatusCode.INTERNAL.value[0]
            out.message = f"internal error: {exc}"
        # Metrics after this loop round, not before the op's result joins its
        # answer batch (as the nodes do, server/node/data_answers.py): 64 SDK
        # clients through one router +1.4% and +2.5% (bench/RESULTS.md 2026-11-28 10:55).
        asyncio.get_running_loop().call_soon(_record, which or "none", out.code, time.perf_counter() - t0)
        return out


class AnswersUnsent(Exception):
    """A Batch stream's answers could not be sent while it lived: the handler
    ends with this, so the RPC ends with an error and the client fails the
    ops in flight on it (none waits for an answer never sent)."""


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


def _page(rows, token: bytes) -> kv_pb2.ListResponse:
    page = kv_pb2.ListResponse(continuation=token)
    for k, v, s in rows:
        page.records.add(key=k, value=v, seq=s)
    return page
