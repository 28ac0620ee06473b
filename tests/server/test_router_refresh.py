"""A routing refresh (Router.refresh) under the router's own cancellations.

Router._watch closes the shared MM channel whenever its Watch ends; a
refresh in flight on that channel then sees grpc.aio's CancelledError. That
is a failed fetch, not a cancellation of the calls waiting on it: a Batch
op must still be answered and a unary call must fail UNAVAILABLE (found by
review: before the fix the op was never answered and the handler waited
forever). And 3.11's wait_for in refresh() drops a cancellation that comes
as the fetch completes: a call cancelled then must send nothing.
"""
from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from server.proto import kv_pb2, meta_pb2, meta_pb2_grpc
from server.router.router import Router, RouterError
from server.router.routing import Routing
from server.router.service import KVService


class _SilentMM(meta_pb2_grpc.MetaServicer):
    """An MM that accepts Watch and sends nothing (failing over, or cut off)."""

    def __init__(self):
        self.watching = asyncio.Event()   # a Watch call is open here

    async def Watch(self, request, context):  # noqa: N802
        self.watching.set()
        await asyncio.sleep(3600)
        yield meta_pb2.RoutingTable()


@contextlib.asynccontextmanager
async def _router_of_a_silent_mm():
    mm = _SilentMM()
    server = grpc.aio.server()
    meta_pb2_grpc.add_MetaServicer_to_server(mm, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    router = Router(5, [f"127.0.0.1:{port}"])
    try:
        yield router, mm
    finally:
        await router.close()
        await server.stop(None)


async def _close_the_mm_channel_under_the_refresh(router: Router, mm: _SilentMM) -> None:
    """Once the refresh's Watch is open, what Router._watch does when its own Watch ends (the MM failed over)."""
    await asyncio.wait_for(mm.watching.wait(), 5)
    assert router._fetch_task is not None and not router._fetch_task.done()
    await router._meta_channel.close(grace=None)
    router._meta_channel = None


class _Context:
    def __init__(self):
        self.sent: list[kv_pb2.OpResult] = []

    async def write(self, batch):
        self.sent.extend(batch.results)
        await asyncio.sleep(0)


async def _ops(*ops):
    yield kv_pb2.OpBatch(ops=list(ops))


def test_a_batch_op_waiting_on_a_refresh_is_answered_when_the_mm_channel_is_closed_under_it():
    async def run():
        async with _router_of_a_silent_mm() as (router, mm):
            ctx = _Context()
            # a table this copy does not know: the op waits on a refresh, in a task
            handler = asyncio.ensure_future(KVService(router).Batch(
                _ops(kv_pb2.Op(id=1, timeout_ms=3000, get=kv_pb2.GetRequest(table="new", key=b"k"))), ctx))
            await _close_the_mm_channel_under_the_refresh(router, mm)
            done, _ = await asyncio.wait([handler], timeout=5)
            if not done:
                handler.cancel()
                return "the handler still waits: op 1 was never answered"
            return [(r.id, r.code) for r in ctx.sent]

    assert asyncio.run(run()) == [(1, grpc.StatusCode.UNAVAILABLE.value[0])]


def test_a_unary_get_waiting_on_a_refresh_fails_unavailable_when_the_mm_channel_is_closed_under_it():
    async def run():
        async with _router_of_a_silent_mm() as (router, mm):
            loop = asyncio.get_running_loop()
            call = asyncio.ensure_future(router.get("new", b"k", deadline=loop.time() + 3))
            await _close_the_mm_channel_under_the_refresh(router, mm)
            try:
                await asyncio.wait_for(call, 5)
            except RouterError as err:
                return err.code.name
            except asyncio.CancelledError:
                return "CancelledError: the caller, never cancelled, sees its call cancelled"
            return "answered"

    assert asyncio.run(run()) == "UNAVAILABLE"


class _SilentLeader:
    def __init__(self):
        self.writes = []

    def submit_write(self, req):
        self.writes.append(req)
        return asyncio.get_running_loop().create_future()


def _routing(version):
    rt = meta_pb2.RoutingTable(version=version)
    rt.groups.add(rg=1, leader=1, epoch=1)
    rt.tables.add(name="t", table_id=3).ranges.add(start=b"", rg=1)
    rt.nodes.add(node_id=1, address="127.0.0.1:1")
    return Routing(rt)


@pytest.mark.parametrize("rounds", range(6))
def test_a_write_cancelled_as_its_routing_fetch_completes_sends_nothing(rounds):
    async def go():
        leader = _SilentLeader()
        r = Router(5, [])
        r._client = lambda node: leader
        gate = asyncio.get_running_loop().create_future()

        async def fetch():
            await gate
            r._install(_routing(2))   # the table shows up
            return True

        r._fetch_routing = fetch
        loop = asyncio.get_running_loop()
        call = asyncio.ensure_future(r.write("t", b"k", b"v", request_id=42, deadline=loop.time() + 30))
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set_result(None)
        for _ in range(rounds):
            await asyncio.sleep(0)
        before = len(leader.writes)   # sent before the cancel: legitimately out
        call.cancel()
        try:
            await asyncio.wait_for(call, 1)
        except (asyncio.CancelledError, TimeoutError):
            pass
        return leader.writes[before:]

    assert asyncio.run(go()) == []   # nothing sent after the caller cancelled
