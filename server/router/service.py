"""KVService: the gRPC face of the Router (server/proto/kv.proto).

Purpose: maps each RPC to a Router operation, with the request's deadline
(the client's, capped at DEFAULT_DEADLINE) and RouterError -> gRPC status:
unary calls abort with the code and message (plus trailing metadata:
"retry-after-ms" on UNAVAILABLE, "quorumkv-final" on an UNKNOWN no retry can
settle); in the Batch stream each OpResult carries them.

Batch: server/router/op_stream.py (ops started as they arrive, each settled
by its first answer where it can be, without a task; answers sent in batches
as they complete).

Thread-safety: one asyncio loop.
"""
from __future__ import annotations

import logging
import time

import grpc

from server.client.errors import FINAL_KEY, RETRY_AFTER_KEY
from server.meta.catalog import check_split_keys
from server.proto import kv_pb2, kv_pb2_grpc, meta_pb2
from server.router.metrics import measured
from server.router.op_stream import OpStream
from server.router.router import DEFAULT_DEADLINE, Router, RouterError, check_key, check_table

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
        await OpStream(self.router, context.write).serve(request_iterator)


def _page(rows, token: bytes) -> kv_pb2.ListResponse:
    page = kv_pb2.ListResponse(continuation=token)
    for k, v, s in rows:
        page.records.add(key=k, value=v, seq=s)
    return page
