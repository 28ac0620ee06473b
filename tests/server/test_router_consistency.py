"""The router against real metadata and a real node: lists that cannot get stuck, and routing that lags the MM.

A router serves from its copy of the routing table, which the MM's watch
keeps current, a moment late. Answers that only current routing can settle
(a table this copy does not know, a table id a node reports dropped) make it
look again before answering, so a client never reads a dropped incarnation
of a table or hears NOT_FOUND for one another router just created.
"""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from inproc_cluster import run_with_routers

import quorumkv
from server.node import data_answers
from server.node.data_client import DataClient, StreamBroken
from server.proto import data_pb2
from server.router import router as router_module
from server.router.router import MAX_KEY, key_after


def _stop_watching(router) -> None:
    """The router's copy stops following the MM (a slow or broken watch stream)."""
    router._watch_task.cancel()


def test_key_after_is_the_next_key_of_at_most_the_maximum_length():
    assert key_after(b"abc") == b"abc\x00"
    assert key_after(b"a" * MAX_KEY) == b"a" * (MAX_KEY - 1) + b"b"
    assert key_after(b"a" + b"\xff" * (MAX_KEY - 1)) == b"b"
    assert key_after(b"\xff" * MAX_KEY) is None


def test_a_list_gets_past_a_key_of_the_maximum_length(tmp_path):
    keys = [b"a" * MAX_KEY, b"a" * (MAX_KEY - 1) + b"b", b"b", b"\xff" * MAX_KEY]

    async def body(c, routers, clients):
        cl, = clients
        await cl.create_table("t")
        for k in keys:
            await cl.put("t", k, b"1")
        return [r.key async for r in cl.list("t", page_size=1)]   # each page resumes after its key

    assert run_with_routers(tmp_path, 1, body) == sorted(keys)


def test_a_page_stops_adding_ranges_at_its_byte_budget_and_the_next_goes_on(tmp_path, monkeypatch):
    # The budget keeps a page of many ranges of large values under gRPC's
    # message limit (it used to fill whole ranges until `limit` rows).
    monkeypatch.setattr(router_module, "MAX_PAGE_BYTES", 3000)
    keys = [b"r%02d-%d" % (i, j) for i in range(6) for j in range(3)]

    async def body(c, routers, clients):
        (r,), (cl,) = routers, clients
        await cl.create_table("big", split_keys=[b"r%02d" % i for i in range(1, 6)])   # 6 ranges
        await cl.put_many("big", [(k, b"v" * 400) for k in keys])
        before = r.stats["lists"]
        got = [rec.key async for rec in cl.list("big")]
        return got, r.stats["lists"] - before

    got, pages = run_with_routers(tmp_path, 1, body)
    assert got == sorted(keys)   # each key once, in order
    assert pages >= 3            # 18 x ~400 bytes over a 3,000-byte budget: not one page


def test_a_table_dropped_and_created_again_is_read_through_a_router_that_missed_both(tmp_path):
    async def body(c, routers, clients):
        (_, b), (a, bc) = routers, clients
        await a.create_table("t")
        await a.put("t", b"k", b"old")
        assert (await bc.get("t", b"k")).value == b"old"   # B routes "t" to its first table id
        _stop_watching(b)
        await a.drop_table("t")
        await a.create_table("t")
        await a.put("t", b"k", b"new")                      # acknowledged
        read = await bc.get("t", b"k")                       # through B: not the dropped table
        await bc.put("t", b"k2", b"x")                       # and a write lands in the new one
        return read.value, (await a.get("t", b"k2")).value, [rec.key async for rec in bc.list("t")]

    assert run_with_routers(tmp_path, 2, body) == (b"new", b"x", [b"k", b"k2"])


def test_a_table_created_through_one_router_is_found_at_once_through_another(tmp_path):
    async def body(c, routers, clients):
        (_, b), (a, bc) = routers, clients
        _stop_watching(b)
        await a.create_table("fresh")
        await bc.put("fresh", b"k", b"v")
        with pytest.raises(quorumkv.TableNotFound):
            await bc.get("never-created", b"k")
        return (await a.get("fresh", b"k")).value

    assert run_with_routers(tmp_path, 2, body) == b"v"


def test_a_drop_through_a_router_that_had_not_seen_the_table_reaches_its_groups(tmp_path):
    async def body(c, routers, clients):
        (_, b, cr), (a, bc, cc) = routers, clients
        _stop_watching(b)
        await a.create_table("t")
        await cc.put("t", b"k", b"before")   # C knows "t"...
        _stop_watching(cr)                     # ...and stops following the MM
        await bc.drop_table("t")               # B never saw "t": it must still tell t's groups
        with pytest.raises(quorumkv.TableNotFound):
            await cc.put("t", b"k2", b"after")
        with pytest.raises(quorumkv.TableNotFound):
            await cc.get("t", b"k")
        return await bc.tables()

    assert "t" not in run_with_routers(tmp_path, 3, body)


def test_tables_through_a_router_that_missed_a_create_lists_it(tmp_path):
    async def body(c, routers, clients):
        (_, b), (a, bc) = routers, clients
        _stop_watching(b)
        await a.create_table("fresh")
        return await bc.tables()

    assert "fresh" in run_with_routers(tmp_path, 2, body)


def test_a_table_a_router_does_not_know_is_unavailable_not_missing_while_the_mm_cannot_answer(tmp_path):
    async def body(c, routers, clients):
        (_, b), (a, bc) = routers, clients
        _stop_watching(b)
        await a.create_table("fresh")
        await a.put("fresh", b"k", b"v")
        c.mm.deactivate("a failover window (test)")   # the MM answers UNAVAILABLE meanwhile
        with pytest.raises(quorumkv.Unavailable):
            await bc.get("fresh", b"k")

    run_with_routers(tmp_path, 2, body, timeout=2)


def test_one_logical_write_is_applied_once_whichever_router_retries_it_across_a_recreated_table(tmp_path):
    async def body(c, routers, clients):
        (_, r1, r2), (a, _, _) = routers, clients
        await a.create_table("t")
        for r in (r1, r2):   # both route "t" to its first incarnation from here on
            await r.refresh(time.monotonic() + 5)
            _stop_watching(r)
        await a.drop_table("t")
        await a.create_table("t")
        x = 0x1234_5678_9ABC   # the SDK's request id of one put(if_absent)
        # its answer lost, the SDK retries the same id through another stale router, then a current one
        return [await r.write("t", b"k", b"v", if_absent=True, request_id=x, deadline=time.monotonic() + 5)
                for r in (r1, r2, r1)]

    first, again, third = run_with_routers(tmp_path, 3, body)
    assert first == again == third   # the same stored seq: applied once, answered from the window


def test_a_table_name_ending_in_a_newline_is_refused(tmp_path):
    async def body(c, routers, clients):
        with pytest.raises(quorumkv.InvalidArgument):
            await clients[0].create_table("t\n")

    run_with_routers(tmp_path, 1, body, timeout=3)


def test_get_many_of_values_past_one_answer_message_arrives_whole(tmp_path, monkeypatch):
    # The node cuts its answers into messages of MAX_ANSWER_BYTES (4 MiB; here
    # 1,000 bytes), so many 1 MiB values never make one message past gRPC's cap.
    monkeypatch.setattr(data_answers, "MAX_ANSWER_BYTES", 1000)
    records = [(b"k%02d" % i, bytes([i]) * 600) for i in range(20)]

    async def body(c, routers, clients):
        cl, = clients
        await cl.create_table("t")
        await cl.put_many("t", records)
        return [r.value for r in await cl.get_many("t", [k for k, _ in records])]

    assert run_with_routers(tmp_path, 1, body) == [v for _, v in records]


def test_a_data_stream_closed_before_its_task_ran_fails_its_callers():
    async def run():
        dc = DataClient("127.0.0.1:9")
        w = asyncio.ensure_future(dc.write_request(data_pb2.WriteRequest(rg=1, batch=b"x", request_id=7)))
        await asyncio.sleep(0)   # submitted: the stream's task exists, not started
        await dc.close()         # what Router._install does for a node that moved
        with pytest.raises(StreamBroken):
            await asyncio.wait_for(w, 2)

    asyncio.run(run())


def test_requests_for_a_missing_table_share_the_routers_lookups_at_the_mm(tmp_path):
    # Each must look at current routing, but 50 at once cost the MM two fetches
    # (the one in flight when most arrived predates them; the next one is shared).
    async def body(c, routers, clients):
        r, = routers
        before = r._fetches_started
        results = await asyncio.gather(*(r.get("missing", b"k", deadline=time.monotonic() + 5) for _ in range(50)),
                                       return_exceptions=True)
        return {getattr(x, "code", x) for x in results}, r._fetches_started - before

    codes, fetches = run_with_routers(tmp_path, 1, body)
    assert codes == {grpc.StatusCode.NOT_FOUND} and fetches <= 2
