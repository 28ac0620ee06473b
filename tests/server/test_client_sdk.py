"""The client SDK (server/client/, `import quorumkv`) against in-process fake KV servers.

FakeKV implements the KV service (server/proto/kv.proto) over a dict, with
knobs to inject status codes (with retry-after), delays and broken streams,
and it records every call, op and Batch message it receives. Each fake runs
a grpc.aio server on 127.0.0.1:0 in a thread of its own (ServerThread), so
the synchronous Client, with its own loop thread, talks to it as to a router.
"""
from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections import defaultdict, deque
from typing import NamedTuple

import grpc
import pytest

import quorumkv
from quorumkv import (
    AsyncClient,
    Client,
    ConditionFailed,
    DeadlineExceeded,
    InvalidArgument,
    OutcomeUnknown,
    QuorumKVError,
    Record,
    RetryPolicy,
    TableExists,
    TableNotFound,
    Unavailable,
)
from server.client.errors import error_for
from server.client.routers import channel_target, default_routers
from server.proto import kv_pb2, kv_pb2_grpc

SC = grpc.StatusCode
FAST_RETRY = RetryPolicy(initial_backoff=0.005, max_backoff=0.05)
TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Fault(NamedTuple):
    code: grpc.StatusCode
    retry_after_ms: int = 0
    message: str = ""
    final: bool = False


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, retry_after_ms: int = 0, final: bool = False):
        self.code, self.message, self.retry_after_ms, self.final = code, message, retry_after_ms, final


_BREAK = object()


class FakeKV(kv_pb2_grpc.KVServicer):
    """A router over a dict. Knobs (set them before the calls they affect):
    faults[kind]      Faults answered to the next calls of `kind`, in order ("put", "get", "delete" on the
                      Batch stream; "CreateTable", "ListTables", "List", ... for unary calls)
    always[kind]      a Fault answered to every call of `kind` once `faults[kind]` is empty
    delays[kind]      seconds to wait before answering
    break_streams     kinds whose next op is applied and then its Batch stream aborted (once per kind)
    Records: calls (kind, time.monotonic(), request), batches (ops per OpBatch), streams (Batch calls)."""

    def __init__(self):
        self.tables: dict[str, dict[bytes, tuple[bytes, bytes]]] = {}
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.always: dict[str, Fault] = {}
        self.delays: dict[str, float] = {}
        self.break_streams: set[str] = set()
        self.calls: list[tuple[str, float, object]] = []
        self.batches: list[int] = []
        self.streams = 0
        self.applied_writes = 0
        self._dedup: dict[int, bytes] = {}
        self._counter = 0

    def calls_of(self, kind: str) -> list:
        return [c for c in self.calls if c[0] == kind]

    # ----------------------------------------------------------------- the dict

    def _seq(self) -> bytes:
        self._counter += 1
        return time.time_ns().to_bytes(8, "big") + self._counter.to_bytes(4, "big") + (1).to_bytes(4, "big")

    def _table(self, name: str) -> dict:
        if name not in self.tables:
            raise _Abort(SC.NOT_FOUND, f"table {name!r} does not exist")
        return self.tables[name]

    def _put(self, req: kv_pb2.PutRequest) -> bytes:
        t = self._table(req.table)
        if req.request_id and req.request_id in self._dedup:
            return self._dedup[req.request_id]
        current = t.get(req.key)
        if req.if_absent and current is not None:
            raise _Abort(SC.FAILED_PRECONDITION, f"key {req.key!r} exists")
        if req.if_seq and (current is None or current[1] != req.if_seq):
            raise _Abort(SC.FAILED_PRECONDITION, f"key {req.key!r} has another seq")
        seq = self._seq()
        t[req.key] = (req.value, seq)
        self._dedup[req.request_id] = seq
        self.applied_writes += 1
        return seq

    def _delete(self, req: kv_pb2.DeleteRequest) -> bytes:
        t = self._table(req.table)
        if req.request_id and req.request_id in self._dedup:
            return self._dedup[req.request_id]
        current = t.get(req.key)
        if req.if_seq and (current is None or current[1] != req.if_seq):
            raise _Abort(SC.FAILED_PRECONDITION, f"key {req.key!r} has another seq")
        t.pop(req.key, None)
        seq = self._seq()
        self._dedup[req.request_id] = seq
        self.applied_writes += 1
        return seq

    async def _enter(self, kind: str, req) -> None:
        """Record the call, wait its delay, raise its fault."""
        self.calls.append((kind, time.monotonic(), req))
        if self.delays.get(kind):
            await asyncio.sleep(self.delays[kind])
        fault = self.faults[kind].popleft() if self.faults[kind] else self.always.get(kind)
        if fault is not None:
            raise _Abort(fault.code, fault.message or f"injected {fault.code.name}", fault.retry_after_ms, fault.final)

    # ------------------------------------------------------------ unary calls

    async def _unary(self, kind: str, req, context, body):
        try:
            await self._enter(kind, req)
            return body()
        except _Abort as a:
            md = (("retry-after-ms", str(a.retry_after_ms)),) if a.retry_after_ms else ()
            md += (("quorumkv-final", "1"),) if a.final else ()
            await context.abort(a.code, a.message, trailing_metadata=md)

    async def CreateTable(self, request, context):
        def body():
            if not TABLE_NAME.fullmatch(request.table):
                raise _Abort(SC.INVALID_ARGUMENT, f"table name {request.table!r} is invalid")
            if request.table in self.tables:
                raise _Abort(SC.ALREADY_EXISTS, f"table {request.table!r} exists")
            self.tables[request.table] = {}
            return kv_pb2.CreateTableResponse(ranges=len(request.split_keys) + 1)
        return await self._unary("CreateTable", request, context, body)

    async def DeleteTable(self, request, context):
        def body():
            self._table(request.table)
            del self.tables[request.table]
            return kv_pb2.DeleteTableResponse()
        return await self._unary("DeleteTable", request, context, body)

    async def ListTables(self, request, context):
        return await self._unary("ListTables", request, context,
                                 lambda: kv_pb2.ListTablesResponse(tables=sorted(self.tables)))

    async def List(self, request, context):
        def body():
            t = self._table(request.table)
            keys = sorted(k for k in t if k >= request.start and (not request.end or k < request.end)
                          and (not request.continuation or k > request.continuation))
            page = keys[:request.limit or 1000]
            records = [kv_pb2.Record(key=k, value=b"" if request.keys_only else t[k][0], seq=t[k][1]) for k in page]
            more = len(keys) > len(page)
            return kv_pb2.ListResponse(records=records, continuation=page[-1] if more else b"")
        return await self._unary("List", request, context, body)

    # ------------------------------------------------------------ Batch stream

    async def _op(self, op: kv_pb2.Op) -> kv_pb2.OpResult:
        kind = op.WhichOneof("op")
        req = getattr(op, kind)
        try:
            await self._enter(kind, req)
            if kind == "put":
                return kv_pb2.OpResult(id=op.id, seq=self._put(req))
            if kind == "delete":
                return kv_pb2.OpResult(id=op.id, seq=self._delete(req))
            hit = self._table(req.table).get(req.key)
            if hit is None:
                return kv_pb2.OpResult(id=op.id, found=False)
            return kv_pb2.OpResult(id=op.id, found=True, value=hit[0], seq=hit[1])
        except _Abort as a:
            return kv_pb2.OpResult(id=op.id, code=a.code.value[0], message=a.message, retry_after_ms=a.retry_after_ms,
                                   final=a.final)

    async def Batch(self, request_iterator, context):
        self.streams += 1
        out: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        async def handle(batch: kv_pb2.OpBatch) -> None:
            kinds = {op.WhichOneof("op") for op in batch.ops}
            broken = kinds & self.break_streams
            results = await asyncio.gather(*(self._op(op) for op in batch.ops))
            if broken:
                self.break_streams -= broken
                await out.put(_BREAK)
            else:
                await out.put(kv_pb2.OpResultBatch(results=results))

        async def read() -> None:
            async for batch in request_iterator:
                self.batches.append(len(batch.ops))
                task = asyncio.get_running_loop().create_task(handle(batch))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            await out.put(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while (item := await out.get()) is not None:
                if item is _BREAK:
                    await context.abort(SC.UNAVAILABLE, "injected stream break")
                yield item
        finally:
            reader.cancel()


class ServerThread:
    """`n` FakeKV servers on 127.0.0.1:0, served by one event loop in a thread of its own."""

    def __init__(self, n: int = 1):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-kv", daemon=True)
        self.thread.start()
        self.fakes = [FakeKV() for _ in range(n)]
        self.servers: list[grpc.aio.Server] = []
        self.addresses = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> list[str]:
        addresses = []
        for fake in self.fakes:
            server = grpc.aio.server()
            kv_pb2_grpc.add_KVServicer_to_server(fake, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            self.servers.append(server)
            addresses.append(f"127.0.0.1:{port}")
        return addresses

    def stop(self) -> None:
        async def stop_all():
            await asyncio.gather(*(s.stop(None) for s in self.servers))
        asyncio.run_coroutine_threadsafe(stop_all(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture
def kv():
    st = ServerThread(1)
    yield st.fakes[0], st.addresses[0]
    st.stop()


@pytest.fixture
def kv2():
    st = ServerThread(2)
    yield st.fakes, ",".join(st.addresses)
    st.stop()


def client(address: str, timeout: float = 5.0) -> Client:
    return quorumkv.Client(address, timeout=timeout, retry=FAST_RETRY)


def put_request_ids(fake: FakeKV) -> list[int]:
    return [req.request_id for _, _, req in fake.calls_of("put")]


# ------------------------------------------------------------------ round trips


def test_sync_round_trip_of_every_call(kv):
    fake, address = kv
    with client(address) as c:
        assert c.tables() == []
        c.create_table("stocks", split_keys=[b"m"])
        assert fake.calls_of("CreateTable")[0][2].split_keys == [b"m"]
        assert c.tables() == ["stocks"]
        seq = c.put("stocks", b"a", b"120")
        assert isinstance(seq, bytes) and len(seq) == 16
        assert c.get("stocks", b"a") == Record(b"a", b"120", seq)
        assert c.get("stocks", b"zz") is None                          # a missing key is not an error
        seqs = c.put_many("stocks", [(b"b", b"1"), (b"c", b"2")])
        assert [r.seq for r in c.get_many("stocks", [b"b", b"c"])] == seqs
        assert c.get_many("stocks", [b"c", b"nope", b"a"]) == [Record(b"c", b"2", seqs[1]), None,
                                                                Record(b"a", b"120", seq)]
        assert [r.key for r in c.list("stocks")] == [b"a", b"b", b"c"]
        dseq = c.delete("stocks", b"a")
        assert len(dseq) == 16 and dseq != seq
        assert c.get("stocks", b"a") is None
        c.delete("stocks", b"a")                                        # deleting a missing key: fine
        c.drop_table("stocks")
        assert c.tables() == []


def test_async_round_trip_of_every_call(kv):
    fake, address = kv

    async def main():
        async with AsyncClient(address, timeout=5.0, retry=FAST_RETRY) as c:
            await c.create_table("t")
            assert await c.tables() == ["t"]
            seq = await c.put("t", b"k", b"v")
            assert await c.get("t", b"k") == Record(b"k", b"v", seq)
            seqs = await c.put_many("t", [(b"k%02d" % i, b"v%d" % i) for i in range(30)])
            records = await c.get_many("t", [b"k05", b"missing", b"k29"])
            assert records == [Record(b"k05", b"v5", seqs[5]), None, Record(b"k29", b"v29", seqs[29])]
            listed = [r async for r in c.list("t", b"k00", b"k10", page_size=4)]
            assert [r.key for r in listed] == [b"k%02d" % i for i in range(10)]
            assert [r.value for r in listed][:2] == [b"v0", b"v1"]
            assert len(await c.delete("t", b"k")) == 16
            assert await c.get("t", b"k") is None
            await c.drop_table("t")
            assert await c.tables() == []
        with pytest.raises(QuorumKVError, match="closed"):
            await c.get("t", b"k")

    asyncio.run(main())


def test_str_keys_and_values_are_utf8(kv):
    fake, address = kv
    with client(address) as c:
        c.create_table("t")
        c.put("t", "clé", "välue")
        assert fake.tables["t"]["clé".encode()][0] == "välue".encode()
        assert c.get("t", "clé").value == "välue".encode()
        assert c.get("t", bytearray(b"cl\xc3\xa9")).key == "clé".encode()


def test_client_side_argument_checks_send_nothing(kv):
    fake, address = kv
    with client(address) as c:
        with pytest.raises(InvalidArgument):
            c.put("t", b"", b"v")
        with pytest.raises(InvalidArgument):
            c.put("t", b"k" * 4097, b"v")
        with pytest.raises(InvalidArgument):
            c.put("t", b"k", b"v" * ((1 << 20) + 1))
        with pytest.raises(InvalidArgument):
            c.put("t", b"k", b"v", if_seq=b"short")
        with pytest.raises(InvalidArgument):
            c.put("t", b"k", b"v", if_seq=b"s" * 16, if_absent=True)
        with pytest.raises(InvalidArgument):
            c.list("t", page_size=0)
        with pytest.raises(TypeError):
            c.get("t", 42)
        with pytest.raises(TypeError):
            c.get(b"t", b"k")
        with pytest.raises(InvalidArgument):
            c.put_many("t", [(b"ok", b"v"), (b"", b"v")])                # checked before any is sent
        assert isinstance(InvalidArgument("x"), ValueError)
    assert fake.calls == [] and fake.batches == []


# ------------------------------------------------------------------------ list


def test_list_follows_continuation_tokens_page_by_page(kv):
    fake, address = kv
    with client(address) as c:
        c.create_table("t")
        c.put_many("t", [(b"k%02d" % i, b"v%d" % i) for i in range(25)])
        assert [r.key for r in c.list("t", page_size=10)] == [b"k%02d" % i for i in range(25)]
        pages = [req for _, _, req in fake.calls_of("List")]
        assert [p.limit for p in pages] == [10, 10, 10]
        assert [p.continuation for p in pages] == [b"", b"k09", b"k19"]

        fake.calls.clear()
        got = list(c.list("t", start=b"k03", end=b"k20", limit=12, page_size=5, keys_only=True))
        assert [r.key for r in got] == [b"k%02d" % i for i in range(3, 15)]
        assert {r.value for r in got} == {b""} and all(len(r.seq) == 16 for r in got)
        pages = [req for _, _, req in fake.calls_of("List")]
        assert [p.limit for p in pages] == [5, 5, 2]                     # never asks for more than wanted
        assert all(p.start == b"k03" and p.end == b"k20" and p.keys_only for p in pages)

        fake.calls.clear()
        it = c.list("t", page_size=10)
        assert next(it).key == b"k00" and len(fake.calls_of("List")) == 1   # pages are fetched lazily
        assert list(c.list("t", start=b"x")) == [] and list(c.list("t", limit=0)) == []


def test_async_list_follows_continuation_tokens(kv):
    fake, address = kv

    async def main():
        async with AsyncClient(address, retry=FAST_RETRY) as c:
            await c.create_table("t")
            await c.put_many("t", [(b"%03d" % i, b"") for i in range(95)])
            keys = [r.key async for r in c.list("t", page_size=20)]
            assert keys == [b"%03d" % i for i in range(95)]
            assert [req.continuation for _, _, req in fake.calls_of("List")] == [
                b"", b"019", b"039", b"059", b"079"]

    asyncio.run(main())


# -------------------------------------------------------------- errors, conditions


def test_conditions_raise_condition_failed(kv):
    fake, address = kv
    with client(address) as c:
        c.create_table("t")
        seq = c.put("t", b"k", b"v1", if_absent=True)
        with pytest.raises(ConditionFailed, match="exists"):
            c.put("t", b"k", b"v2", if_absent=True)
        seq2 = c.put("t", b"k", b"v2", if_seq=seq)
        with pytest.raises(ConditionFailed, match="another seq") as info:
            c.put("t", b"k", b"v3", if_seq=seq)
        assert info.value.code == SC.FAILED_PRECONDITION
        with pytest.raises(ConditionFailed):
            c.delete("t", b"k", if_seq=seq)
        assert c.get("t", b"k").value == b"v2"
        c.delete("t", b"k", if_seq=seq2)
        assert c.get("t", b"k") is None


def test_table_errors(kv):
    fake, address = kv
    with client(address) as c:
        c.create_table("t")
        with pytest.raises(TableExists, match="exists"):
            c.create_table("t")
        with pytest.raises(TableNotFound, match="does not exist"):
            c.drop_table("nope")
        with pytest.raises(TableNotFound):
            c.put("nope", b"k", b"v")
        with pytest.raises(TableNotFound):
            list(c.list("nope"))
        with pytest.raises(InvalidArgument, match="invalid"):
            c.create_table("-bad name")


@pytest.mark.parametrize("code, cls", [
    (SC.NOT_FOUND, TableNotFound), (SC.ALREADY_EXISTS, TableExists), (SC.INVALID_ARGUMENT, InvalidArgument),
    (SC.FAILED_PRECONDITION, ConditionFailed), (SC.UNAVAILABLE, Unavailable),
    (SC.DEADLINE_EXCEEDED, DeadlineExceeded), (SC.UNKNOWN, OutcomeUnknown), (SC.PERMISSION_DENIED, QuorumKVError),
    (SC.INTERNAL, QuorumKVError),
])
def test_error_for_maps_every_code(code, cls):
    for c in (code, code.value[0]):                         # a StatusCode, or an OpResult's int
        err = error_for(c, "the server's words", retry_after_ms=7)
        assert type(err) is cls and isinstance(err, QuorumKVError)
        assert (err.message, err.code, err.retry_after_ms) == ("the server's words", code, 7)
        assert str(err) == f"{code.name}: the server's words"


@pytest.mark.parametrize("code, cls", [
    (SC.NOT_FOUND, TableNotFound), (SC.ALREADY_EXISTS, TableExists), (SC.INVALID_ARGUMENT, InvalidArgument),
    (SC.FAILED_PRECONDITION, ConditionFailed), (SC.UNAVAILABLE, Unavailable),
    (SC.DEADLINE_EXCEEDED, DeadlineExceeded), (SC.UNKNOWN, OutcomeUnknown), (SC.PERMISSION_DENIED, QuorumKVError),
])
def test_server_codes_become_typed_errors_with_the_servers_message(kv, code, cls):
    """Both paths: an OpResult code on the Batch stream (get) and a unary status (tables)."""
    fake, address = kv
    fake.tables["t"] = {}
    fake.always["get"] = fake.always["ListTables"] = Fault(code, message=f"router says {code.name}")
    with client(address, timeout=0.3) as c:
        for call in (lambda: c.get("t", b"k"), c.tables):
            with pytest.raises(cls) as info:
                call()
            assert type(info.value) is cls and info.value.message == f"router says {code.name}"
            assert info.value.code == code


# ------------------------------------------------------------ retries, deadlines


def test_unary_retry_honours_retry_after_metadata(kv):
    fake, address = kv
    fake.faults["ListTables"].extend([Fault(SC.UNAVAILABLE, retry_after_ms=80)] * 2)
    with client(address) as c:
        assert c.tables() == []
    times = [t for _, t, _ in fake.calls_of("ListTables")]
    assert len(times) == 3
    assert all(b - a >= 0.075 for a, b in zip(times, times[1:]))        # waited as told, not the 5 ms backoff


def test_op_retry_honours_retry_after_ms_and_keeps_the_request_id(kv):
    fake, address = kv
    fake.tables["t"] = {}
    fake.faults["put"].extend([Fault(SC.UNAVAILABLE, retry_after_ms=80)] * 2)
    with client(address) as c:
        seq = c.put("t", b"k", b"v")
    assert fake.tables["t"][b"k"] == (b"v", seq) and fake.applied_writes == 1
    ids = put_request_ids(fake)
    assert len(ids) == 3 and len(set(ids)) == 1 and ids[0] != 0
    times = [t for _, t, _ in fake.calls_of("put")]
    assert all(b - a >= 0.075 for a, b in zip(times, times[1:]))


def test_each_write_gets_its_own_request_id(kv):
    fake, address = kv
    fake.tables["t"] = {}
    with client(address) as c:
        c.put_many("t", [(b"%d" % i, b"") for i in range(50)])
        c.delete("t", b"1")
    ids = put_request_ids(fake) + [req.request_id for _, _, req in fake.calls_of("delete")]
    assert len(set(ids)) == 51 and 0 not in ids


def test_gives_up_with_unavailable_at_the_deadline(kv):
    fake, address = kv
    fake.tables["t"] = {}
    fake.always["get"] = fake.always["ListTables"] = Fault(SC.UNAVAILABLE, retry_after_ms=50)
    with client(address, timeout=0.4) as c:
        for call, kind in ((lambda: c.get("t", b"k"), "get"), (c.tables, "ListTables")):
            t0 = time.monotonic()
            with pytest.raises(Unavailable) as info:
                call()
            elapsed = time.monotonic() - t0
            attempts = len(fake.calls_of(kind))
            assert 2 <= attempts <= 0.4 / 0.05 + 1
            assert any(note.startswith("quorumkv: gave up after") for note in info.value.__notes__)
            assert elapsed < 0.4 + 2.0                                   # gave up around the deadline


def test_retry_after_beyond_the_deadline_gives_up_at_once(kv):
    fake, address = kv
    fake.tables["t"] = {}
    fake.faults["put"].append(Fault(SC.UNAVAILABLE, retry_after_ms=60_000))
    with client(address, timeout=5.0) as c:
        t0 = time.monotonic()
        with pytest.raises(Unavailable):                     # not applied: Unavailable, not OutcomeUnknown
            c.put("t", b"k", b"v")
        assert time.monotonic() - t0 < 5.0
    assert len(fake.calls_of("put")) == 1 and fake.tables["t"] == {}


def test_slow_read_raises_deadline_exceeded(kv):
    fake, address = kv
    fake.tables["t"] = {}
    fake.delays["get"] = fake.delays["ListTables"] = 2.0
    with client(address, timeout=0.2) as c:
        with pytest.raises(DeadlineExceeded):
            c.get("t", b"k")
        with pytest.raises(DeadlineExceeded):
            c.tables()
        with pytest.raises(TimeoutError):                    # DeadlineExceeded is a TimeoutError
            c.get("t", b"k", timeout=0.1)


def test_slow_write_past_its_deadline_is_outcome_unknown(kv):
    fake, address = kv
    fake.tables["t"] = {}
    fake.delays["put"] = 2.0
    with client(address, timeout=0.2) as c:
        with pytest.raises(OutcomeUnknown, match="may have been applied"):
            c.put("t", b"k", b"v")


def test_server_unknown_write_is_retried_with_the_same_request_id(kv):
    fake, address = kv
    fake.tables["t"] = {}
    fake.faults["put"].append(Fault(SC.UNKNOWN, message="leader stepped down"))
    with client(address) as c:
        seq = c.put("t", b"k", b"v")
    ids = put_request_ids(fake)
    assert len(ids) == 2 and ids[0] == ids[1]
    assert fake.tables["t"][b"k"] == (b"v", seq)
    # The retry says an attempt with an unknown outcome went before it: its
    # router cannot know that attempt's seq (kv.proto, PutRequest.retry).
    assert [req.retry for _, _, req in fake.calls_of("put")] == [False, True]


@pytest.mark.parametrize("kind", ["put", "delete"])
def test_a_final_unknown_write_is_raised_at_once_not_retried(kv, kind):
    # The router marks UNKNOWN final when the group forgot the request id
    # (server/router/router.py, FORGOTTEN): every retry would be refused again.
    fake, address = kv
    fake.tables["t"] = {}
    fake.faults[kind].append(Fault(SC.UNKNOWN, message="forgotten", final=True))
    with client(address, timeout=5.0) as c:
        t0 = time.monotonic()
        with pytest.raises(OutcomeUnknown, match="forgotten") as info:
            c.put("t", b"k", b"v") if kind == "put" else c.delete("t", b"k")
        assert time.monotonic() - t0 < 2.0                   # not retried until the deadline
    assert len(fake.calls_of(kind)) == 1 and info.value.final
    assert any("no retry can settle it" in note for note in info.value.__notes__)


def test_a_final_unknown_unary_write_is_raised_at_once_not_retried(kv):
    fake, address = kv
    fake.faults["CreateTable"].append(Fault(SC.UNKNOWN, final=True))
    with client(address, timeout=5.0) as c:
        with pytest.raises(OutcomeUnknown) as info:
            c.create_table("t")
    assert len(fake.calls_of("CreateTable")) == 1 and info.value.final


def test_a_final_mark_on_another_code_than_unknown_is_ignored(kv):
    # Only an UNKNOWN can be final (kv.proto): an UNAVAILABLE marked final is
    # retried as ever, and a write that may have applied never ends Unavailable.
    fake, address = kv
    fake.tables["t"] = {}
    fake.faults["put"].extend([Fault(SC.UNKNOWN), Fault(SC.UNAVAILABLE, retry_after_ms=5, final=True)])
    with client(address, timeout=5.0) as c:
        seq = c.put("t", b"k", b"v")
    assert fake.tables["t"][b"k"] == (b"v", seq) and len(fake.calls_of("put")) == 3


def test_a_write_retried_after_an_unavailable_router_is_no_retry_of_an_unknown_outcome(kv):
    fake, address = kv
    fake.tables["t"] = {}
    fake.faults["delete"].append(Fault(SC.UNAVAILABLE, retry_after_ms=5))   # not applied: nothing unknown
    fake.faults["delete"].append(Fault(SC.UNKNOWN))
    with client(address) as c:
        c.delete("t", b"k")
    assert [req.retry for _, _, req in fake.calls_of("delete")] == [False, False, True]


def test_write_that_may_have_applied_never_ends_unavailable(kv):
    """UNKNOWN first (maybe applied), then UNAVAILABLE until the deadline: the caller must hear OutcomeUnknown."""
    fake, address = kv
    fake.tables["t"] = {}
    fake.faults["put"].append(Fault(SC.UNKNOWN))
    fake.always["put"] = Fault(SC.UNAVAILABLE, retry_after_ms=50)
    with client(address, timeout=0.3) as c:
        with pytest.raises(OutcomeUnknown, match="may have been applied") as info:
            c.put("t", b"k", b"v")
    assert isinstance(info.value.__cause__, Unavailable)
    assert len(set(put_request_ids(fake))) == 1


def test_broken_stream_write_is_retried_with_the_same_id_and_applied_once(kv):
    fake, address = kv
    fake.tables["t"] = {}
    fake.break_streams.add("put")                           # applied, then the stream dies unanswered
    with client(address) as c:
        seq = c.put("t", b"k", b"v")
        assert fake.streams == 2                             # reopened on the next use
        assert sum(s.calls_opened for s in c.async_client.streams) == 2
    ids = put_request_ids(fake)
    assert len(ids) == 2 and ids[0] == ids[1]
    assert fake.applied_writes == 1 and fake.tables["t"][b"k"] == (b"v", seq)   # the server deduplicated


def test_broken_stream_read_is_retried(kv):
    fake, address = kv
    fake.tables["t"] = {b"k": (b"v", b"s" * 16)}
    fake.break_streams.add("get")
    with client(address) as c:
        assert c.get("t", b"k") == Record(b"k", b"v", b"s" * 16)
    assert len(fake.calls_of("get")) == 2 and fake.streams == 2


def test_put_many_raises_the_first_failure_after_all_finished(kv):
    fake, address = kv
    fake.tables["t"] = {}
    fake.faults["put"].append(Fault(SC.FAILED_PRECONDITION, message="no"))
    with client(address) as c:
        with pytest.raises(ConditionFailed) as info:
            c.put_many("t", [(b"%d" % i, b"v") for i in range(5)])
    assert "1 of 5 operations failed" in info.value.__notes__[0]
    assert len(fake.tables["t"]) == 4                        # not atomic: the others were applied


# -------------------------------------------------------------------- batching


def test_64_threads_share_the_streams_in_far_fewer_batches_than_ops(kv, monkeypatch):
    """64 threads call put() at once, round after round. To make "at once" exact rather than left to the OS
    scheduler, the client's event loop is held busy (a callback blocks it) until all 64 calls have been
    handed to it (counted at asyncio.run_coroutine_threadsafe): every op is
    then queued when the stream can take more, and all must leave in ONE OpBatch per round."""
    fake, address = kv
    fake.tables["t"] = {}
    threads, rounds = 64, 5
    errors: list[BaseException] = []
    handed = threading.Semaphore(0)
    go = threading.Barrier(threads + 1)
    with client(address, timeout=30.0) as c:
        c.put("t", b"warm", b"")
        run_coroutine_threadsafe = asyncio.run_coroutine_threadsafe

        def counting_run_coroutine_threadsafe(coro, loop):
            future = run_coroutine_threadsafe(coro, loop)
            handed.release()
            return future

        monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", counting_run_coroutine_threadsafe)

        def writer(n: int) -> None:
            try:
                for r in range(rounds):
                    go.wait()
                    c.put("t", b"%02d-%03d" % (n, r), b"v")
                    go.wait()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                go.abort()

        pool = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        for _ in range(rounds):
            busy = threading.Event()
            c._loop.call_soon_threadsafe(busy.wait)          # hold the loop
            go.wait()                                        # the threads call put()
            for _ in range(threads):
                handed.acquire()
            busy.set()
            go.wait()                                        # every put of the round returned
        for t in pool:
            t.join()
    assert errors == []
    ops = threads * rounds
    assert len(fake.tables["t"]) == ops + 1
    assert fake.batches[1:] == [threads] * rounds            # 320 ops from 64 threads in 5 messages
    assert fake.streams == 1                                 # one address: one stream, shared by all threads


def test_64_tasks_share_the_stream_in_one_batch_per_round(kv):
    """The asyncio form, with no help: the answers of one batch wake all 64 tasks in one turn of the loop,
    and their next ops are all queued before the sender runs again."""
    fake, address = kv
    fake.tables["t"] = {}
    tasks, per_task = 64, 20

    async def main():
        async with AsyncClient(address, retry=FAST_RETRY) as c:
            await c.put("t", b"warm", b"")

            async def writer(n: int) -> None:
                for i in range(per_task):
                    await c.put("t", b"%02d-%03d" % (n, i), b"v")
            await asyncio.gather(*(writer(n) for n in range(tasks)))

    asyncio.run(main())
    assert len(fake.tables["t"]) == tasks * per_task + 1
    assert sum(fake.batches[1:]) == tasks * per_task
    assert len(fake.batches[1:]) <= 2 * per_task, fake.batches


def test_a_lone_op_goes_out_at_once(kv):
    """No timer, no waiting for company: with a warm stream, a single put is handed to gRPC within a few
    turns of the event loop (zero-length sleeps, during which no timer of any length is due), alone."""
    fake, address = kv
    fake.tables["t"] = {}

    async def main():
        async with AsyncClient(address, retry=FAST_RETRY) as c:
            await c.put("t", b"warm", b"")
            stream = c.streams[0]
            sent = stream.ops_sent
            task = asyncio.get_running_loop().create_task(c.put("t", b"k", b"v"))
            for _ in range(20):
                await asyncio.sleep(0)
                if stream.ops_sent > sent:
                    break
            assert stream.ops_sent == sent + 1 and stream.batches_sent == 2
            await task                                       # and it completes with no other op in existence
    asyncio.run(main())
    assert fake.batches == [1, 1]


def test_put_many_goes_out_in_one_batch_per_stream(kv2):
    fakes, addresses = kv2
    for f in fakes:
        f.tables["t"] = {}
    with client(addresses) as c:
        c.put_many("t", [(b"%03d" % i, b"v") for i in range(200)])
        assert sorted(s.batches_sent for s in c.async_client.streams) == [1, 1]
    assert sum(sum(f.batches) for f in fakes) == 200


# ---------------------------------------------------------------- routers, setup


def test_round_robin_spreads_streams_over_two_routers(kv2):
    fakes, addresses = kv2
    for f in fakes:
        f.tables["t"] = {}
    with client(addresses) as c:
        assert c.target == "ipv4:" + addresses
        deadline = time.monotonic() + 10
        while not all(f.calls_of("ListTables") for f in fakes):   # until gRPC has both subchannels READY
            assert time.monotonic() < deadline, "round_robin never reached the second router"
            c.tables()
        for i in range(10):
            c.put("t", b"%d" % i, b"v")
    assert [f.streams for f in fakes] == [1, 1]
    assert all(len(f.tables["t"]) == 5 for f in fakes)         # ops alternate over the two streams


def test_channel_target():
    assert channel_target("127.0.0.1:7000, 127.0.0.1:7001") == ("ipv4:127.0.0.1:7000,127.0.0.1:7001", 2)
    assert channel_target(["[::1]:7000", "[::1]:7001"]) == ("ipv6:[::1]:7000,[::1]:7001", 2)
    assert channel_target("db.example:7000") == ("dns:///db.example:7000", 1)
    assert channel_target("localhost:1,localhost:2")[0] in ("ipv4:127.0.0.1:1,127.0.0.1:2", "ipv6:[::1]:1,[::1]:2")
    assert channel_target("dns:///db.example:7000") == ("dns:///db.example:7000", 1)
    for bad in ("", "127.0.0.1", "127.0.0.1:x", "127.0.0.1:0", "127.0.0.1:1,[::1]:2"):
        with pytest.raises(InvalidArgument):
            channel_target(bad)


def test_default_routers(monkeypatch, tmp_path):
    monkeypatch.delenv("QUORUMKV_ROUTERS", raising=False)
    monkeypatch.setenv("QUORUMKV_DATA", str(tmp_path))
    with pytest.raises(QuorumKVError, match="quorumkv up"):
        default_routers()
    (tmp_path / "routers").write_text("127.0.0.1:7000,127.0.0.1:7001\n")
    assert default_routers() == "127.0.0.1:7000,127.0.0.1:7001"
    monkeypatch.setenv("QUORUMKV_ROUTERS", "10.0.0.1:7000")
    assert default_routers() == "10.0.0.1:7000"
    monkeypatch.delenv("QUORUMKV_DATA")
    monkeypatch.delenv("QUORUMKV_ROUTERS")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quorumkv-data").mkdir()
    (tmp_path / "quorumkv-data" / "routers").write_text("127.0.0.1:9\n")
    assert default_routers() == "127.0.0.1:9"


def test_client_without_address_uses_default_routers(kv, monkeypatch):
    fake, address = kv
    monkeypatch.setenv("QUORUMKV_ROUTERS", address)
    with Client() as c:
        c.create_table("t")
    assert "t" in fake.tables


def test_closed_client_refuses_calls_and_close_is_idempotent(kv):
    fake, address = kv
    c = client(address)
    c.close()
    c.close()
    with pytest.raises(QuorumKVError, match="closed"):
        c.tables()
    assert not c._thread.is_alive()
    assert fake.calls == []


def test_write_to_an_unreachable_router_is_unavailable_not_outcome_unknown():
    """The stream never connected, so nothing was sent: the write was certainly not applied."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = "127.0.0.1:%d" % s.getsockname()[1]          # closed again before the client dials it
    with client(address, timeout=0.3) as c:
        with pytest.raises(Unavailable):
            c.put("t", b"k", b"v")
        with pytest.raises(Unavailable):
            c.tables()


def test_close_ends_calls_in_flight_at_once(kv):
    fake, address = kv
    fake.tables["t"] = {}
    fake.delays["put"] = 30.0                                # a put the router sits on
    fake.always["ListTables"] = Fault(SC.UNAVAILABLE, retry_after_ms=30_000)   # a call asleep between retries
    c = client(address, timeout=60.0)
    outcomes: dict[str, BaseException] = {}

    def call(name, fn):
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcomes[name] = exc

    pool = [threading.Thread(target=call, args=("put", lambda: c.put("t", b"k", b"v"))),
            threading.Thread(target=call, args=("tables", c.tables))]
    for t in pool:
        t.start()
    deadline = time.monotonic() + 10
    while not (fake.calls_of("put") and fake.calls_of("ListTables")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)                                          # tables() has its UNAVAILABLE: it sleeps 30 s
    c.close()
    for t in pool:
        t.join(10)
        assert not t.is_alive()
    assert isinstance(outcomes["put"], OutcomeUnknown)     # it was sent: maybe applied
    assert isinstance(outcomes["tables"], QuorumKVError)       # "closed with this call in flight"


def test_facade_exports():
    for name in ("Client", "AsyncClient", "Record", "QuorumKVError", "TableNotFound", "TableExists",
                 "InvalidArgument", "ConditionFailed", "Unavailable", "DeadlineExceeded", "OutcomeUnknown"):
        assert hasattr(quorumkv, name)
    for cls in (TableNotFound, TableExists, InvalidArgument, ConditionFailed, Unavailable, DeadlineExceeded,
                OutcomeUnknown):
        assert issubclass(cls, QuorumKVError)


@pytest.mark.parametrize("timeout", [5_000_000.0, float("inf")])
def test_a_timeout_longer_than_the_wire_holds_is_capped_not_an_untyped_error(kv, timeout):
    _fake, address = kv
    with quorumkv.Client(address, timeout=5, retry=FAST_RETRY) as c:
        c.create_table("t")
        c.put("t", b"k", b"v", timeout=timeout)
        assert c.get("t", b"k", timeout=timeout).value == b"v"
