"""AsyncClient: the asyncio client of quorumkv's public KV API (server/proto/kv.proto).

Purpose: what applications use (directly, or through the synchronous
`Client`, server/client/sync_client.py) to create and drop tables and to
put, get, delete and list records on a cluster's routers.

    async with quorumkv.AsyncClient("127.0.0.1:7000,127.0.0.1:7001") as c:
        await c.create_table("stocks")
        seq = await c.put("stocks", b"a", b"120")
        rec = await c.get("stocks", b"a")             # Record(key, value, seq) or None
        async for rec in c.list("stocks", b"a", b"z"):
            ...

Contract:
  1. One gRPC channel over every router address, with gRPC's own client-side
     `round_robin` load balancing (routers.channel_target). Put, get and
     delete go over `Batch` streams, as many as there are addresses, ops
     spread over them round robin (a stream sticks to the router it was
     opened on); table calls and list pages are unary calls.
  2. Every call has a deadline: its `timeout` (seconds), else the client's.
     Within it, UNAVAILABLE is retried with backoff, honouring the server's
     retry-after (retry.py). Each put and delete carries a random 64-bit
     request id, the same in every retry, so the server applies it once.
  3. Keys and values are bytes (str is encoded as UTF-8); table names are
     str (record.py). Errors are errors.py's classes.
  4. put_many / get_many send all their ops at once (so they share batches)
     and are not atomic: each op succeeds or fails on its own; the first
     failure, in input order, is raised once all have finished.
  5. `list` returns an async iterator; each page is one call with its own
     deadline.
  6. `close()` ends the streams and the channel; ops in flight fail, and
     calls after it raise QuorumKVError.

Thread-safety: an AsyncClient belongs to the event loop of its first call
(gRPC's asyncio channel is bound to it); it is safe for any number of tasks
of that loop. For threads, use `Client`.
"""
from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import Any

import grpc

from server.client.batch_stream import OP_OVERHEAD, BatchStream
from server.client.errors import InvalidArgument, OutcomeUnknown, QuorumKVError, error_for, error_for_rpc
from server.client.paging import Pager
from server.client.record import BytesLike, Record, as_bound, as_key, as_seq, as_table, as_value
from server.client.retry import DEFAULT_TIMEOUT, Deadline, RetryPolicy, classify, with_retries
from server.client.routers import channel_target, default_routers
from server.proto import kv_pb2, kv_pb2_grpc

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 30_000),          # find a dead router under an idle long-lived stream
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]


class AsyncClient:
    def __init__(self, routers: str | Sequence[str] | None = None, *, timeout: float | None = DEFAULT_TIMEOUT,
                 retry: RetryPolicy | None = None, channel_options: Sequence[tuple[str, Any]] = ()):
        """`routers`: "host:port,host:port" (or a list); None: `default_routers()`.
        `timeout`: the default deadline of each call, in seconds (None: none).
        `channel_options`: extra gRPC channel options, after (so overriding) CHANNEL_OPTIONS."""
        self._target, self._stream_count = channel_target(routers if routers is not None else default_routers())
        self._options = [*CHANNEL_OPTIONS, *channel_options]
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._rng = random.Random()
        self._channel: grpc.aio.Channel | None = None
        self._stub: kv_pb2_grpc.KVStub | None = None
        self._streams: list[BatchStream] = []
        self._next_stream = itertools.count()
        self._closed = False

    @property
    def target(self) -> str:
        """The gRPC target the channel balances over, e.g. "ipv4:127.0.0.1:7000,127.0.0.1:7001"."""
        return self._target

    # ------------------------------------------------------------------ tables

    async def create_table(self, name: str, split_keys: Iterable[BytesLike] | None = None, *,
                           timeout: float | None = None) -> None:
        """Create table `name`, as len(split_keys)+1 ranges if given. Raises TableExists if it exists.

        Retried (a lost answer, a router that died) under one request id: a
        retry of a create that was made answers as the first call would have."""
        req = kv_pb2.CreateTableRequest(table=as_table(name), split_keys=[as_key(k) for k in split_keys or ()],
                                        request_id=self._request_id())
        await self._unary("CreateTable", req, write=True, timeout=timeout)

    async def drop_table(self, name: str, *, timeout: float | None = None) -> None:
        """Drop table `name` and all its records. Raises TableNotFound if it does not exist.
        Retried under one request id, as create_table."""
        await self._unary("DeleteTable", kv_pb2.DeleteTableRequest(table=as_table(name),
                                                                   request_id=self._request_id()),
                          write=True, timeout=timeout)

    async def tables(self, *, timeout: float | None = None) -> list[str]:
        """The names of all tables."""
        resp = await self._unary("ListTables", kv_pb2.ListTablesRequest(), write=False, timeout=timeout)
        return list(resp.tables)

    # ----------------------------------------------------------------- records

    async def put(self, table: str, key: BytesLike, value: BytesLike, *, if_seq: bytes | None = None,
                  if_absent: bool = False, timeout: float | None = None) -> bytes:
        """Write `value` under `key`; returns the record's new 16-byte seq.

        `if_seq`: only if the record's current seq is this one; `if_absent`:
        only if there is no live record. A condition that does not hold raises
        ConditionFailed and writes nothing."""
        req = self._put_request(table, key, value, if_seq, if_absent)
        return (await self._send("put", req, write=True, timeout=timeout)).seq

    async def get(self, table: str, key: BytesLike, timeout: float | None = None) -> Record | None:
        """The record under `key`, or None if there is none (a missing key is not an error)."""
        req = kv_pb2.GetRequest(table=as_table(table), key=as_key(key))
        return _record(req.key, await self._send("get", req, write=False, timeout=timeout))

    async def delete(self, table: str, key: BytesLike, *, if_seq: bytes | None = None,
                     timeout: float | None = None) -> bytes:
        """Delete the record under `key` (only if its seq is `if_seq`, when given); returns the delete's seq.

        Deleting a missing key is not an error."""
        req = kv_pb2.DeleteRequest(table=as_table(table), key=as_key(key), if_seq=as_seq(if_seq),
                                   request_id=self._request_id())
        return (await self._send("delete", req, write=True, timeout=timeout)).seq

    def list(self, table: str, start: BytesLike | None = None, end: BytesLike | None = None, *,
             limit: int | None = None, page_size: int = 1000, keys_only: bool = False,
             timeout: float | None = None) -> AsyncIterator[Record]:
        """Records with start <= key < end (None: unbounded) in key order, at most `limit`, fetched
        `page_size` at a time; with keys_only, values are b"". `timeout` is per page."""
        pager = Pager(as_table(table), as_bound(start), as_bound(end), limit, page_size, keys_only)
        return self._list(pager, timeout)

    async def put_many(self, table: str, items: Iterable[tuple[BytesLike, BytesLike]], *,
                       timeout: float | None = None) -> list[bytes]:
        """Put every (key, value); returns their seqs in input order. Not atomic (contract 4).

        All ops are queued at once and share one deadline: give very large
        inputs in chunks (say 10,000 items per call)."""
        reqs = [self._put_request(table, k, v, None, False) for k, v in items]
        results = await _all([self._send("put", r, write=True, timeout=timeout) for r in reqs])
        return [r.seq for r in results]

    async def get_many(self, table: str, keys: Iterable[BytesLike], timeout: float | None = None
                       ) -> list[Record | None]:
        """The record (or None) of every key, in input order."""
        reqs = [kv_pb2.GetRequest(table=as_table(table), key=as_key(k)) for k in keys]
        results = await _all([self._send("get", r, write=False, timeout=timeout) for r in reqs])
        return [_record(req.key, res) for req, res in zip(reqs, results)]

    # --------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """End the streams and the channel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(s.close() for s in self._streams), return_exceptions=True)
        if self._channel is not None:
            await self._channel.close(grace=None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    @property
    def streams(self) -> list[BatchStream]:
        """The Batch stream slots (for statistics: batches_sent, ops_sent, calls_opened)."""
        return list(self._streams)

    # ---------------------------------------------------------------- plumbing

    def _open(self) -> kv_pb2_grpc.KVStub:
        if self._closed:
            raise QuorumKVError("the client is closed")
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self._target, options=self._options)
            self._stub = kv_pb2_grpc.KVStub(self._channel)
            self._streams = [BatchStream(self._stub) for _ in range(self._stream_count)]
        return self._stub

    def _request_id(self) -> int:
        return self._rng.getrandbits(64) or 1          # 0 would mean "no id"

    def _put_request(self, table: str, key: BytesLike, value: BytesLike, if_seq: bytes | None,
                     if_absent: bool) -> kv_pb2.PutRequest:
        if if_seq is not None and if_absent:
            raise InvalidArgument("give if_seq or if_absent, not both")
        return kv_pb2.PutRequest(table=as_table(table), key=as_key(key), value=as_value(value),
                                 if_seq=as_seq(if_seq), if_absent=bool(if_absent), request_id=self._request_id())

    async def _send(self, kind: str, req, *, write: bool, timeout: float | None) -> kv_pb2.OpResult:
        """One op over the Batch streams, with retries; the OpResult of an OK answer."""
        self._open()
        size = OP_OVERHEAD + len(req.table) + len(req.key) + (len(req.value) if kind == "put" else 0)

        async def attempt(deadline: Deadline) -> kv_pb2.OpResult:
            stream = self._streams[next(self._next_stream) % len(self._streams)]
            remaining = deadline.remaining()
            # A uint32 on the wire: a longer (or infinite) timeout is capped, the router caps it lower anyway.
            timeout_ms = min(0xFFFFFFFF, max(1, int(min(remaining, 4_000_000) * 1000))) if remaining is not None else 0
            try:
                result = await stream.call(kv_pb2.Op(timeout_ms=timeout_ms, **{kind: req}), size, write, remaining)
                if result.code != 0:
                    raise classify(error_for(result.code, result.message, result.retry_after_ms, result.final),
                                   write=write, sent=True)
            except OutcomeUnknown:
                if write:   # the next attempt says so: its router cannot know this one's seq (kv.proto, retry)
                    req.retry = True
                raise
            return result

        return await with_retries(attempt, self._deadline(timeout), self._retry, self._rng, write=write,
                                  closed=lambda: self._closed)

    async def _unary(self, method: str, req, *, write: bool, timeout: float | None):
        """One unary call, with retries; its response."""
        rpc = getattr(self._open(), method)

        async def attempt(deadline: Deadline):
            try:
                return await rpc(req, timeout=deadline.remaining())
            except grpc.aio.AioRpcError as exc:
                raise classify(error_for_rpc(exc), write=write, sent=True) from None

        return await with_retries(attempt, self._deadline(timeout), self._retry, self._rng, write=write,
                                  closed=lambda: self._closed)

    async def _list_page(self, req: kv_pb2.ListRequest, timeout: float | None) -> kv_pb2.ListResponse:
        return await self._unary("List", req, write=False, timeout=timeout)

    async def _list(self, pager: Pager, timeout: float | None) -> AsyncIterator[Record]:
        while (req := pager.next_request()) is not None:
            for record in pager.take(await self._list_page(req, timeout)):
                yield record

    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self._timeout if timeout is None else timeout)


def _record(key: bytes, result: kv_pb2.OpResult) -> Record | None:
    return Record(key, result.value, result.seq) if result.found else None


async def _all(calls: list[Awaitable]) -> list:
    """Run every call to its end; their results in order, or the first failure in order."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            failed = sum(isinstance(x, BaseException) for x in results)
            r.add_note(f"quorumkv: {failed} of {len(results)} operations failed; the others succeeded")
            raise r
    return results
