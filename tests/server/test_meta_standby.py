"""MetaServer's active/standby edge (server/meta/service.py), in process: a standby refuses
every call with UNAVAILABLE naming the active MM; a store write that fails deactivates the
MM at once (the failed call and every open stream end with UNAVAILABLE) and reports it."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from server.meta import backup
from server.meta.backend import MetaStoreError, StoreFenced
from server.meta.service import MetaServer
from server.meta.store import MetaStore
from server.proto import meta_pb2, meta_pb2_grpc


class FailingStore:
    """A MetaBackend whose writes are refused after `allowed` of them (another MM took over)."""

    def __init__(self, allowed: int = 0):
        self.records: dict = {}
        self.allowed = allowed
        self.closed = False

    def get(self, kind, key):
        return self.records.get(f"{kind}/{key}")

    def items(self, kind):
        return [(k.split("/", 1)[1], v) for k, v in self.records.items() if k.startswith(kind + "/")]

    def put(self, kind, key, value):
        self.put_many([(kind, key, value)])

    def put_many(self, changes):
        if self.allowed <= 0:
            raise StoreFenced("the metadata manager at elsewhere:1 took over")
        self.allowed -= 1
        for kind, key, value in changes:
            self.records[f"{kind}/{key}"] = value

    def backup(self):
        return backup.encode(self.records)

    def close(self):
        self.closed = True


async def _serve(mm: MetaServer):
    await mm.start()
    ch = grpc.aio.insecure_channel(mm.address)
    return ch, meta_pb2_grpc.MetaStub(ch)


def test_a_standby_refuses_every_call_naming_the_active_one():
    async def go():
        mm = MetaServer("127.0.0.1:0")
        mm.active_hint = lambda: "127.0.0.1:4242"
        ch, stub = await _serve(mm)
        try:
            calls = [stub.ListGroups(meta_pb2.ListGroupsRequest(), timeout=5),
                     stub.CreateGroup(meta_pb2.GroupSpec(rg=1, members=[1, 2, 3]), timeout=5),
                     stub.CreateTable(meta_pb2.NewTableRequest(name="t"), timeout=5),
                     stub.DropTable(meta_pb2.DropTableRequest(name="t"), timeout=5),
                     stub.Backup(meta_pb2.BackupRequest(), timeout=5)]
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "the active one is at 127.0.0.1:4242" in err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.Watch(meta_pb2.WatchRequest(), timeout=5):
                    pass
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await ch.close()
            await mm.stop()
    asyncio.run(go())


def test_a_fenced_write_deactivates_and_ends_the_streams():
    async def go():
        mm = MetaServer("127.0.0.1:0")
        failures: list[MetaStoreError] = []
        mm.on_store_failure = failures.append
        store = FailingStore()
        mm.activate(store)
        ch, stub = await _serve(mm)
        try:
            watch = stub.Watch(meta_pb2.WatchRequest(), timeout=10)
            first = await watch.read()
            assert first.version > 0 and not first.groups
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CreateGroup(meta_pb2.GroupSpec(rg=1, members=[1, 2, 3]), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "took over" in err.value.details()
            assert not mm.active and store.closed and not mm.groups
            assert len(failures) == 1 and isinstance(failures[0], StoreFenced)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await watch.read()                      # the routing watch ends: routers move on
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ListGroups(meta_pb2.ListGroupsRequest(), timeout=5)
        finally:
            await ch.close()
            await mm.stop()
    asyncio.run(go())


def test_backup_rpc_returns_the_store_document(tmp_path):
    async def go():
        mm = MetaServer("127.0.0.1:0")
        store = MetaStore(str(tmp_path / "meta"))
        mm.activate(store)
        ch, stub = await _serve(mm)
        try:
            await stub.CreateGroup(meta_pb2.GroupSpec(rg=7, members=[1]), timeout=5)
            await stub.CreateTable(meta_pb2.NewTableRequest(name="t", split_keys=[b"m"]), timeout=5)
            doc = (await stub.Backup(meta_pb2.BackupRequest(), timeout=5)).document
        finally:
            await ch.close()
            await mm.stop()
        records = backup.decode(doc)
        assert records["group/7"]["members"] == [1]
        assert records["table/t"] == {"id": 1, "ranges": [["", 7], ["6d", 7]]}
        assert records["counter/table_id"] == 1
    asyncio.run(go())
