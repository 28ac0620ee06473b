"""Table calls retried under their request id (server/meta/catalog.py, "Retries").

A create or drop whose answer was lost (the router died, a deadline cut it)
is retried by the SDK with the same request id. It used to hear TableExists
for the caller's own new table, or NoSuchTable for its own drop, whose
groups then never freed the table's data. Now the MM remembers the last
TABLE_REQUESTS_KEPT calls, in the same atomic change as the table record.
"""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import grpc
import pytest
from inproc_cluster import run_with_routers

from server.meta import catalog as catalog_mod
from server.meta.catalog import Catalog, NoSuchTable, RequestIdReused, TableExists
from server.meta.store import MetaStore
from server.meta.table_reclaimer import TableReclaimer
from server.proto import data_pb2, data_pb2_grpc, kv_pb2, kv_pb2_grpc


def test_a_retried_create_or_drop_gets_the_first_answer_after_a_restart(tmp_path):
    store = MetaStore(str(tmp_path / "m"))
    cat = Catalog(store)
    first = cat.create_table("t", [b"m"], [1, 2], request_id=11)
    with pytest.raises(TableExists):
        cat.create_table("t", [], [1, 2], request_id=12)     # another call: the name is taken
    store.close()
    store = MetaStore(str(tmp_path / "m"))
    cat = Catalog(store)
    assert cat.create_table("t", [b"m"], [1, 2], request_id=11) == first
    dropped = cat.drop_table("t", request_id=21)
    assert dropped == first
    assert cat.drop_table("t", request_id=21) == first        # its retry: the same answer
    with pytest.raises(NoSuchTable):
        cat.drop_table("t", request_id=22)
    assert cat.create_table("t", [b"m"], [1, 2], request_id=11) == first   # a stale retry creates nothing
    assert "t" not in cat.tables
    again = cat.create_table("t", [], [1, 2], request_id=31)   # a new table under the old name
    assert again.table_id != first.table_id
    assert cat.drop_table("t", request_id=21) == first        # a stale drop retry leaves the new one alone
    assert cat.tables["t"] == again
    with pytest.raises(RequestIdReused, match="request id 21 already answered a drop"):
        cat.create_table("u", [], [1], request_id=21)
    store.close()


def test_the_oldest_requests_are_forgotten_in_the_same_change(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_mod, "TABLE_REQUESTS_KEPT", 3)
    store = MetaStore(str(tmp_path / "m"))
    cat = Catalog(store)
    for i in range(1, 6):
        cat.create_table(f"t{i}", [], [1], request_id=100 + i)
    assert list(cat.requests) == [103, 104, 105]
    assert sorted(int(k) for k, _ in store.items("request")) == [103, 104, 105]
    store.close()
    cat = Catalog(MetaStore(str(tmp_path / "m")))
    assert list(cat.requests) == [103, 104, 105]
    with pytest.raises(TableExists):                          # forgotten: a plain call again
        cat.create_table("t1", [], [1], request_id=101)
    cat.store.close()


def test_a_create_and_a_drop_whose_answers_were_lost_are_retried_through_a_router(tmp_path):
    """The same request sent twice to a router (as the SDK's retry does after
    a lost answer): both answers OK; the drop's retry frees the data again
    in the groups the MM names."""
    async def body(c, routers, clients):
        (_, address), = [(r, a) for r, _s, a in c.routers]
        async with grpc.aio.insecure_channel(address) as channel:
            stub = kv_pb2_grpc.KVStub(channel)
            create = kv_pb2.CreateTableRequest(table="t", request_id=7)
            first = await stub.CreateTable(create)
            second = await stub.CreateTable(create)
            await clients[0].put("t", b"k", b"v")
            drop = kv_pb2.DeleteTableRequest(table="t", request_id=8)
            await stub.DeleteTable(drop)
            await stub.DeleteTable(drop)
            try:
                await stub.DeleteTable(kv_pb2.DeleteTableRequest(table="t", request_id=9))
                missing = None
            except grpc.aio.AioRpcError as exc:
                missing = exc.code()
            try:
                await stub.CreateTable(kv_pb2.CreateTableRequest(table="u", request_id=8))
                reused = None
            except grpc.aio.AioRpcError as exc:
                reused = exc.code()
        return first.ranges, second.ranges, missing, reused, await clients[0].tables()

    assert run_with_routers(tmp_path, 1, body) == (1, 1, grpc.StatusCode.NOT_FOUND,
                                                   grpc.StatusCode.INVALID_ARGUMENT, [])


def test_the_mm_frees_a_dropped_tables_rows_its_router_did_not(tmp_path, monkeypatch):
    """The router's own attempt is cut short (it died, or its deadline ran
    out: here it frees nothing); the MM's TableReclaimer asks the group,
    and forgets the pending drop once the group has dropped the rows."""
    from server.meta import table_reclaimer
    from server.router.router import Router

    async def nothing(self, table_id, rgs, deadline):
        return set(rgs)
    monkeypatch.setattr(Router, "drop_table_data", nothing)
    monkeypatch.setattr(table_reclaimer, "RECLAIM_SECONDS", 0.05)
    monkeypatch.setattr(table_reclaimer, "RECLAIM_AFTER", 0.1)

    async def body(c, routers, clients):
        await clients[0].create_table("t")
        await clients[0].put("t", b"k", b"v")
        table_id = c.mm.catalog.tables["t"].table_id
        db = c.nodes[0].hosts[1].storage.db
        assert f"t{table_id}" in db.tables()
        await clients[0].drop_table("t")
        pending = dict(c.mm.catalog.dropping)
        deadline = time.monotonic() + 10
        while c.mm.catalog.dropping or f"t{table_id}" in db.tables():   # conditions, polled
            assert time.monotonic() < deadline, "the dropped table's rows were never freed"
            await asyncio.sleep(0.05)
        return pending == {table_id: {1}}, c.mm.store.get("dropping", table_id)

    assert run_with_routers(tmp_path, 1, body) == (True, None)


@pytest.mark.parametrize("retried", ["drop-after-a-new-table-of-the-name", "create-after-its-drop"])
def test_a_retry_after_the_name_changed_hands_is_answered_at_once(tmp_path, retried):
    """The router waited for the name to leave (or enter) its routing, which
    never happens when the name was created again (dropped) since: the retry
    heard DEADLINE_EXCEEDED. It now waits for routing fetched after the MM's
    answer. Found by a review (session 11)."""
    async def body(c, routers, clients):
        (_, address), = [(r, a) for r, _s, a in c.routers]
        async with grpc.aio.insecure_channel(address) as channel:
            stub = kv_pb2_grpc.KVStub(channel)
            create = kv_pb2.CreateTableRequest(table="t", request_id=1)
            drop = kv_pb2.DeleteTableRequest(table="t", request_id=2)
            await stub.CreateTable(create)
            await stub.DeleteTable(drop)
            if retried == "drop-after-a-new-table-of-the-name":
                await stub.CreateTable(kv_pb2.CreateTableRequest(table="t", request_id=3))
                call = stub.DeleteTable(drop, timeout=3.0)
            else:
                call = stub.CreateTable(create, timeout=3.0)
            await call
            return await clients[0].tables()

    assert run_with_routers(tmp_path, 1, body) == (["t"] if retried.startswith("drop") else [])


class _Data(data_pb2_grpc.DataServicer):
    def __init__(self, code):
        self.code = code

    async def DropTable(self, request, context):  # noqa: N802 - gRPC's name
        return data_pb2.GroupDropTableResponse(code=self.code)


@pytest.mark.parametrize("answer", [data_pb2.UNKNOWN_GROUP, data_pb2.OK])
def test_a_leader_without_the_group_does_not_end_a_pending_drop(tmp_path, answer):
    """UNKNOWN_GROUP from the node the MM names as leader (it lost its disk, or
    its address is another node's now) says nothing of the other members:
    the drop stays pending. Found by a review (session 11)."""
    async def go():
        server = grpc.aio.server()
        data_pb2_grpc.add_DataServicer_to_server(_Data(answer), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        store = MetaStore(str(tmp_path / "m"))
        cat = Catalog(store)
        cat.create_table("t", [], [1])
        t = cat.drop_table("t")
        mm = SimpleNamespace(active=True, catalog=cat, groups={1: SimpleNamespace(leader=7)},
                             nodes={7: f"127.0.0.1:{port}"})
        r = TableReclaimer(mm, every=0, after=0)
        try:
            await r.reclaim_once()
        finally:
            for client in r._clients.values():
                await client.close()
            await server.stop(None)
            store.close()
        return dict(cat.dropping), t.table_id

    dropping, table_id = asyncio.run(go())
    assert dropping == ({table_id: {1}} if answer == data_pb2.UNKNOWN_GROUP else {})


def test_split_keys_beyond_one_table_record_are_refused_with_what_to_fix(tmp_path):
    # A table's record is one store change (etcd caps a request at 1.5 MiB).
    store = MetaStore(str(tmp_path / "m"))
    cat = Catalog(store)
    with pytest.raises(ValueError, match="at most 9999 split keys"):
        cat.create_table("many", [b"%05d" % i for i in range(catalog_mod.MAX_RANGES)], [1])
    with pytest.raises(ValueError, match=f"total at most {catalog_mod.MAX_SPLIT_KEY_BYTES} bytes"):
        cat.create_table("long", [bytes([i]) * 4096 for i in range(1, 34)], [1])   # 33 keys of 4 KiB: 132 KiB
    assert cat.tables == {} and store.items("table") == []
    at_limit = cat.create_table("ok", [b"%05d" % i for i in range(catalog_mod.MAX_RANGES - 1)], [1, 2],
                                request_id=5)
    assert len(at_limit.ranges) == catalog_mod.MAX_RANGES
    store.close()


def test_the_router_refuses_too_many_split_keys_before_sending_them_to_the_mm():
    from server.router.service import KVService

    class _Router:
        def meta_stub(self):
            raise AssertionError("the router must not forward a create it can refuse")

    class _Aborted(Exception):
        pass

    class _Context:
        def time_remaining(self):
            return 5.0

        async def abort(self, code, message):
            raise _Aborted(code, message)

    request = kv_pb2.CreateTableRequest(table="t", split_keys=[b"%05d" % i for i in range(catalog_mod.MAX_RANGES)])
    with pytest.raises(_Aborted) as info:
        asyncio.run(KVService(_Router()).CreateTable(request, _Context()))
    code, message = info.value.args
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 9999 split keys" in message
