"""The router against real metadata and a real node: lists that cannot get stuck, and routing that lags the MM.

A router serves from its copy of the routing table, which the MM's watch
keeps current, a moment late. Answers that only current routing can settle
(a table this copy does not know, a table id a node reports dropped) make it
look again before answering, so a client never reads a dropped incarnation
of a table or hears NOT_FOUND for one another router just created.
"""
from __future__ import annotations

import asyncio

import pytest
from inproc_cluster import InProcessCluster

import quorumkv
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
    async def run():
        c = await InProcessCluster(tmp_path).start()
        try:
            _, addr = await c.add_router(1001)
            async with quorumkv.AsyncClient(addr, timeout=5) as cl:
                await cl.create_table("t")
                keys = [b"a" * MAX_KEY, b"a" * (MAX_KEY - 1) + b"b", b"b", b"\xff" * MAX_KEY]
                for k in keys:
                    await cl.put("t", k, b"1")
                return [r.key async for r in cl.list("t", page_size=1)]   # each page resumes after its key
        finally:
            await c.close()

    assert asyncio.run(run()) == sorted([b"a" * MAX_KEY, b"a" * (MAX_KEY - 1) + b"b", b"b", b"\xff" * MAX_KEY])


def test_a_page_stops_adding_ranges_at_its_byte_budget_and_the_next_goes_on(tmp_path, monkeypatch):
    # The budget keeps a page of many ranges of large values under gRPC's
    # message limit (it used to fill whole ranges until `limit` rows).
    monkeypatch.setattr(router_module, "MAX_PAGE_BYTES", 3000)
    async def run():
        c = await InProcessCluster(tmp_path).start()
        try:
            r, addr = await c.add_router(1001)
            async with quorumkv.AsyncClient(addr, timeout=5) as cl:
                await cl.create_table("big", split_keys=[b"r%02d" % i for i in range(1, 6)])   # 6 ranges
                keys = [b"r%02d-%d" % (i, j) for i in range(6) for j in range(3)]
                await cl.put_many("big", [(k, b"v" * 400) for k in keys])
                before = r.stats["lists"]
                got = [rec.key async for rec in cl.list("big")]
                return keys, got, r.stats["lists"] - before
        finally:
            await c.close()

    keys, got, pages = asyncio.run(run())
    assert got == sorted(keys)   # each key once, in order
    assert pages >= 3            # 18 x ~400 bytes over a 3,000-byte budget: not one page


def test_a_table_dropped_and_created_again_is_read_through_a_router_that_missed_both(tmp_path):
    async def run():
        c = await InProcessCluster(tmp_path).start()
        try:
            _, a_addr = await c.add_router(1001)
            b, b_addr = await c.add_router(1002)
            async with quorumkv.AsyncClient(a_addr, timeout=5) as a, quorumkv.AsyncClient(b_addr, timeout=5) as bc:
                await a.create_table("t")
                await a.put("t", b"k", b"old")
                assert (await bc.get("t", b"k")).value == b"old"   # B routes "t" to its first table id
                _stop_watching(b)
                await a.drop_table("t")
                await a.create_table("t")
                await a.put("t", b"k", b"new")                     # acknowledged
                read = await bc.get("t", b"k")                      # through B: not the dropped table
                await bc.put("t", b"k2", b"x")                      # and a write lands in the new one
                listed = [rec.key async for rec in bc.list("t")]
                return read.value, (await a.get("t", b"k2")).value, listed
        finally:
            await c.close()

    assert asyncio.run(run()) == (b"new", b"x", [b"k", b"k2"])


def test_a_table_created_through_one_router_is_found_at_once_through_another(tmp_path):
    async def run():
        c = await InProcessCluster(tmp_path).start()
        try:
            _, a_addr = await c.add_router(1001)
            b, b_addr = await c.add_router(1002)
            _stop_watching(b)
            async with quorumkv.AsyncClient(a_addr, timeout=5) as a, quorumkv.AsyncClient(b_addr, timeout=5) as bc:
                await a.create_table("fresh")
                await bc.put("fresh", b"k", b"v")
                with pytest.raises(quorumkv.TableNotFound):
                    await bc.get("never-created", b"k")
                return (await a.get("fresh", b"k")).value
        finally:
            await c.close()

    assert asyncio.run(run()) == b"v"
