"""The router's compact routing copy (server/router/routing.py)."""
from __future__ import annotations

import pytest

from server.proto import meta_pb2
from server.router.routing import NoSuchTable, Routing


def table(rt, name, table_id, ranges):
    t = rt.tables.add(name=name, table_id=table_id)
    for start, rg in ranges:
        t.ranges.add(start=start, rg=rg)


@pytest.fixture
def routing():
    rt = meta_pb2.RoutingTable(version=9)
    rt.groups.add(rg=1, leader=3, epoch=4)
    rt.groups.add(rg=2, leader=0, epoch=7)
    table(rt, "stocks", 5, [(b"", 1), (b"b", 2), (b"m", 1)])
    table(rt, "a", 6, [(b"", 2)])
    rt.nodes.add(node_id=3, address="127.0.0.1:1")
    return Routing(rt)


def test_every_key_has_exactly_one_range(routing):
    assert [(r.start, r.end, r.rg) for r in routing.ranges("stocks")] == [(b"", b"b", 1), (b"b", b"m", 2),
                                                                          (b"m", None, 1)]
    for key, rg in ((b"\x00", 1), (b"a", 1), (b"az", 1), (b"b", 2), (b"l\xff", 2), (b"m", 1), (b"zz", 1)):
        r = routing.route("stocks", key)
        assert (r.rg, r.table_id) == (rg, 5), key
    assert routing.route("a", b"x").rg == 2
    assert routing.tables() == ["a", "stocks"]
    with pytest.raises(NoSuchTable):
        routing.route("stock", b"a")


def test_leaders_and_hints_only_move_forward(routing):
    assert routing.group(1) == (3, 4) and routing.group(2) == (0, 7) and routing.group(3) is None
    assert routing.route("stocks", b"a").leader == 3   # a route looked up (and kept: ROUTE_CACHE_ENTRIES) before
    assert not routing.with_leader(1, 2, 4)      # same epoch: not newer
    assert routing.with_leader(1, 2, 5)
    assert routing.route("stocks", b"a").leader == 2 and routing.route("stocks", b"a").epoch == 5
    assert not routing.with_leader(9, 1, 100)    # unknown group


def test_state_is_arrays_and_blobs_sized_per_group_table_and_range(routing):
    keys = len(b"stocks") + len(b"a") + len(b"b") + len(b"m")
    # 20 B per RG, 12 B per table (+4 B for the table-index sentinel), 8 B per range
    assert routing.nbytes() - keys == 20 * 2 + 12 * 2 + 4 + 8 * 4
    assert routing.version == 9 and routing.nodes == {3: "127.0.0.1:1"}


def test_routes_stay_right_past_the_lookup_caches_size(monkeypatch):
    import server.router.routing as routing_module

    monkeypatch.setattr(routing_module, "ROUTE_CACHE_ENTRIES", 3)
    rt = meta_pb2.RoutingTable(version=1)
    rt.groups.add(rg=1, leader=1, epoch=1)
    rt.groups.add(rg=2, leader=2, epoch=1)
    for i in range(10):
        table(rt, f"t{i}", 100 + i, [(b"", 1 + i % 2), (b"k", 2 - i % 2)])
    r = Routing(rt)
    for _ in range(2):   # the second pass after the caches were emptied, more than once
        for i in range(10):
            assert (r.route(f"t{i}", b"a").table_id, r.route(f"t{i}", b"a").rg) == (100 + i, 1 + i % 2)
            assert r.route(f"t{i}", b"z").rg == 2 - i % 2
    with pytest.raises(NoSuchTable):
        r.route("t10", b"a")
