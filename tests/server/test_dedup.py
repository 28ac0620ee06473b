"""Request-id deduplication across restarts, snapshot installs, replaced entries and table drops.

A router retries a write whose outcome it does not know under the same
request id, on whichever member leads by then. These tests show the window
(server/node/dedup.py) answers such a retry from the first attempt wherever
it lands, so the write is never applied twice (a second copy would overwrite
the writes acknowledged in between).
"""
from __future__ import annotations

import asyncio

from host_group import TABLE, HostGroup
from test_write_path import group, rep  # noqa: F401 - group: a one-member group fixture

from engine._native import write_batch
from server.node.dedup import APPLIED, DEDUP_TABLE_ID, DedupWindow
from server.node.write_path import Outcome
from server.replication.messages import Role


def test_a_retry_at_a_member_that_caught_up_by_snapshot_is_answered_not_applied_again(tmp_path):
    async def go():
        g = HostGroup(str(tmp_path))
        await g.elect(1, 1, (1, 2, 3))
        g.down = {3}                                     # 3 lags behind
        x = g.write(1, b"k", b"v1", request_id=777)      # committed; its answer is lost on the way
        await g.pump()
        assert x.result().outcome is Outcome.OK
        y = g.write(1, b"k", b"v2", request_id=888)      # a later write, acknowledged
        await g.pump()
        assert y.result().outcome is Outcome.OK
        await g.compact(1)                               # 3 can only catch up by snapshot now
        g.down = set()
        await g.pump(ticks=20)
        h3 = g.hosts[3]
        assert h3.replica.log.base.index > 0 and h3.storage.snapshots_installed == 1
        g.down = {1}                                     # 1 dies; 3 is as up to date as 2
        await g.elect(2, 3, (2, 3))
        retry = g.write(3, b"k", b"v1", request_id=777)  # the router's retry of x
        await g.pump()
        r, value = retry.result(), h3.storage.get_entry(TABLE, b"k").value
        await g.close()
        assert (r.outcome, r.value) == (Outcome.OK, x.result().value)   # x's own index and seq
        assert value == b"v2"                                           # y is not overwritten

    asyncio.run(go())


def test_a_conditional_create_retried_after_a_snapshot_keeps_its_first_outcome(tmp_path):
    async def go():
        g = HostGroup(str(tmp_path))
        await g.elect(1, 1, (1, 2, 3))
        g.down = {3}
        x = g.write(1, b"c", b"mine", request_id=4242, if_absent=True)
        await g.pump()
        assert x.result().outcome is Outcome.OK
        await g.compact(1)
        g.down = set()
        await g.pump(ticks=20)
        assert g.hosts[3].storage.snapshots_installed == 1
        g.down = {1}
        await g.elect(2, 3, (2, 3))
        retry = g.write(3, b"c", b"mine", request_id=4242, if_absent=True)
        await g.pump()
        r = retry.result()
        await g.close()
        assert (r.outcome, r.value) == (Outcome.OK, x.result().value)   # not CONDITION_FAILED on its own create

    asyncio.run(go())


def test_the_window_survives_a_restart_of_every_member_after_compaction(tmp_path):
    async def go():
        g = HostGroup(str(tmp_path))
        await g.elect(1, 1, (1, 2, 3))
        x = g.write(1, b"k", b"v1", request_id=999)
        await g.pump()
        y = g.write(1, b"k", b"v2")
        await g.pump()
        assert (x.result().outcome, y.result().outcome) == (Outcome.OK, Outcome.OK)
        for n in (1, 2, 3):
            await g.compact(n)                           # the log no longer holds x's entry
        assert g.hosts[1].replica.log.base.index >= x.result().value[0]
        for n in (1, 2, 3):                              # e.g. the whole group loses power
            await g.restart(n)
        await g.elect(2, 1, (1, 2, 3))
        retry = g.write(1, b"k", b"v1", request_id=999)
        await g.pump()
        r, value = retry.result(), g.hosts[1].storage.get_entry(TABLE, b"k").value
        await g.close()
        assert (r.outcome, r.value) == (Outcome.OK, x.result().value) and value == b"v2"

    asyncio.run(go())


async def _deposed_leader_with_a_replaced_entry(tmp_path) -> HostGroup:
    """Leader 1, cut off, logs request 555 at index i; 2 is elected and its NOOP
    takes index i; 1 comes back, steps down and applies the NOOP there."""
    g = HostGroup(str(tmp_path))
    await g.elect(1, 1, (1, 2, 3))
    g.down = {1}
    first = g.write(1, b"k", b"v1", request_id=555)
    await g.pump()
    assert not first.done()
    i = g.hosts[1].replica.log.last_index
    await g.elect(2, 2, (2, 3))
    g.down = set()
    await g.pump(ticks=6)
    h1 = g.hosts[1]
    assert first.result().outcome is Outcome.OUTCOME_UNKNOWN
    assert h1.replica.role.name == "FOLLOWER" and h1.replica.log.applied_index >= i
    return g


def test_a_retry_of_an_entry_a_noop_replaced_is_answered_by_a_follower(tmp_path):
    async def go():
        g = await _deposed_leader_with_a_replaced_entry(tmp_path)
        retry = g.write(1, b"k", b"v1", request_id=555)   # a router whose routing still names 1
        await g.pump(ticks=40)
        r = retry.result() if retry.done() else None
        await g.close()
        assert r is not None and r.outcome is Outcome.NOT_LEADER   # as for a write without an id

    asyncio.run(go())


def test_a_retry_of_an_entry_a_noop_replaced_is_applied_once_the_member_leads_again(tmp_path):
    async def go():
        g = await _deposed_leader_with_a_replaced_entry(tmp_path)
        g.down = {2}
        await g.elect(3, 1, (1, 3))
        retry = g.write(1, b"k", b"v1", request_id=555)
        await g.pump(ticks=40)
        r = retry.result() if retry.done() else None
        value = g.hosts[1].storage.get_entry(TABLE, b"k")
        await g.close()
        assert r is not None and r.outcome is Outcome.OK and value.value == b"v1"

    asyncio.run(go())


def test_a_retry_waiting_for_its_entry_is_answered_when_a_noop_replaces_that_entry(tmp_path):
    async def go():
        g = HostGroup(str(tmp_path))
        await g.elect(1, 1, (1, 2, 3))
        g.down = {1}
        first = g.write(1, b"k", b"v1", request_id=555)   # logged at i by 1 alone
        await g.pump()
        i = g.hosts[1].replica.log.last_index
        await g.elect(2, 2, (2, 3))                        # 2's NOOP will take index i
        g.down = set()
        h1 = g.hosts[1]
        for _ in range(200):                               # until 1 hears of epoch 2, before it applies i
            if h1.replica.role is Role.FOLLOWER:
                break
            assert await g.deliver_one()
        assert first.result().outcome is Outcome.OUTCOME_UNKNOWN and h1.replica.log.applied_index < i
        retry = g.write(1, b"k", b"v1", request_id=555)    # waits for the entry logged at i
        assert not retry.done()
        await g.pump(ticks=10)                             # the NOOP replaces it and applies
        r = retry.result() if retry.done() else None
        await g.close()
        assert r is not None and r.outcome is Outcome.NOT_LEADER   # proposed anew: refused by a follower

    asyncio.run(go())


def test_a_retry_of_a_write_its_tables_drop_voided_hears_table_dropped(group):  # noqa: F811 - the fixture imported above
    async def go():
        group.writes.submit(rep(b"t"))
        group.drive()
        group.writes.propose_drop(TABLE)
        late = group.writes.submit(rep(b"late"), request_id=31)   # commits after the drop: voided
        group.drive()
        assert late.result().outcome is Outcome.TABLE_DROPPED
        retry = group.writes.submit(rep(b"late"), request_id=31)
        group.drive()
        assert retry.result().outcome is Outcome.TABLE_DROPPED   # not OK: nothing was stored

    asyncio.run(go())


def test_a_condition_failing_on_a_write_of_the_same_round_reports_that_writes_seq(group):  # noqa: F811
    async def go():
        a = group.writes.submit(rep(b"c", b"x"), if_absent=True)
        b = group.writes.submit(rep(b"c", b"y"), if_absent=True)
        group.drive()
        assert a.result().outcome is Outcome.OK and b.result().outcome is Outcome.CONDITION_FAILED
        assert b.result().value == a.result().value[1]   # the live seq, not b"" ("absent")

    asyncio.run(go())


def test_the_window_keeps_the_newest_ids_and_its_engine_batches_mirror_it():
    w = DedupWindow(capacity=3)
    table: dict[bytes, bytes] = {}   # what the engine's dedup table holds after each batch

    def record(index: int, ids: list[int]) -> list[tuple[int, int]]:
        seq = index.to_bytes(8, "big") + bytes(8)
        batch = w.record(index, [(i, APPLIED, i.to_bytes(16, "big")) for i in ids], seq)
        changes = []
        for kind, tid, key, value, _seq in write_batch.decode(batch):
            assert tid == DEDUP_TABLE_ID
            changes.append((kind, int.from_bytes(key, "big")))
            if kind == write_batch.VALUE:
                table[key] = value
            else:
                del table[key]
        return changes

    assert record(10, [1, 2]) == [(write_batch.VALUE, 1), (write_batch.VALUE, 2)]
    assert record(11, [3, 4]) == [(write_batch.DELETE, 1), (write_batch.VALUE, 3), (write_batch.VALUE, 4)]
    assert record(12, [2]) == [(write_batch.VALUE, 2)]            # 2 applied again later: it moves
    assert record(13, [5, 5]) == [(write_batch.DELETE, 3), (write_batch.VALUE, 5)]   # twice in one entry: once
    assert [i for i in range(1, 6) if i in w] == [2, 4, 5]
    assert (w.get(2).index, w.get(4).index, w.get(5).order) == (12, 11, 0)
    # A restart (or a snapshot) rebuilds the same window, in the same order, from the table alone.
    again = DedupWindow(capacity=3)
    again.load((key, value, b"") for key, value in table.items())
    assert [again.get(i) for i in (2, 4, 5)] == [w.get(i) for i in (2, 4, 5)]
    record(14, [6])   # both evict the same oldest id next
    again.record(14, [(6, APPLIED, (6).to_bytes(16, "big"))], (14).to_bytes(8, "big") + bytes(8))
    assert 4 not in w and 4 not in again and 2 in again
