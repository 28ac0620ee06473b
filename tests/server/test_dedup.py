"""Request-id deduplication across restarts, snapshot installs, replaced entries and table drops.

A router retries a write whose outcome it does not know under the same
request id, on whichever member leads by then. These tests show the window
(server/node/dedup.py) answers such a retry from the first attempt wherever
it lands, so the write is never applied twice (a second copy would overwrite
the writes acknowledged in between).
"""
from __future__ import annotations

import asyncio

import pytest
from host_group import MEMBERS, TABLE, HostGroup
from host_group import rep as rep_of
from test_write_path import OneMemberGroup, group, rep  # noqa: F401 - group: a one-member group fixture

from engine._native import write_batch
from server.node.dedup import APPLIED, DEDUP_TABLE_ID, MAX_DEDUP_RECORDS, VOIDED, DedupWindow
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


def _seq(ts: int) -> bytes:
    from engine._native import sequencer
    return sequencer.encode(ts, 0, 77)


def _write_ids_1_to_4_then_a_newer_k2(group: OneMemberGroup) -> None:  # noqa: F811
    """With a window of 2: ids 1..4 write k1..k4 (stamped at ts 1001..1004; 1 and 2
    are evicted), then a write without an id puts a newer value in k2."""
    group.writes._applied.capacity, group.writes._applied.retain_ns = 2, 0   # a count-only window of 2
    for i in range(1, 5):
        f = group.writes.submit(rep(b"k%d" % i, b"first", ts=1000 + i), request_id=i)
        group.drive()
        assert f.result().outcome is Outcome.OK
    newer = group.writes.submit(rep(b"k2", b"newer", ts=1010))   # acknowledged after id 2's write
    group.drive()
    assert newer.result().outcome is Outcome.OK


def test_a_retry_the_window_may_have_forgotten_is_answered_forgotten_not_applied_again(group):  # noqa: F811
    # A window of 2 ids: the writes of ids 1 and 2 are evicted by the next
    # ones. A retry of id 1 (the router's first attempt was stamped at ts
    # 1001) is not in the window any more, and the window dropped entries
    # stamped at or above 1001: it may have applied, so the leader must not
    # apply it again (it would overwrite the writes acknowledged since).
    seq = _seq

    async def go():
        _write_ids_1_to_4_then_a_newer_k2(group)
        evicted = group.writes._applied.evicted_through
        assert seq(1002) <= evicted < seq(1003)
        retry = group.writes.submit(rep(b"k2", b"first", ts=1020), request_id=2, first_seq=seq(1002))
        group.drive()
        assert retry.result().outcome is Outcome.FORGOTTEN
        assert group.storage.get_entry(TABLE, b"k2").value == b"newer"      # not applied again
        # An id the window never saw, first sent after everything it dropped: applied.
        fresh = group.writes.submit(rep(b"k9", ts=1030), request_id=9, first_seq=seq(1025))
        # One first sent before what it dropped (or by an unknown attempt: zeros): unknown.
        old = group.writes.submit(rep(b"k8", ts=1031), request_id=8, first_seq=seq(1001))
        zeros = group.writes.submit(rep(b"k7", ts=1032), request_id=7, first_seq=bytes(16))
        kept = group.writes.submit(rep(b"k4", ts=1033), request_id=4, first_seq=seq(1001))   # still in the window
        group.drive()
        assert fresh.result().outcome is Outcome.OK
        assert old.result().outcome is zeros.result().outcome is Outcome.FORGOTTEN
        assert kept.result().outcome is Outcome.OK and kept.result().value[1] == seq(1004)   # its first answer
        assert group.storage.get_entry(TABLE, b"k8") is None and group.storage.get_entry(TABLE, b"k7") is None

    asyncio.run(go())


async def _group_with_evicted_ids(tmp_path) -> HostGroup:
    """3 members, each with a window of 2 ids: ids 1..4 written by leader 1
    (1 and 2 evicted everywhere), then a newer write to k2."""
    g = HostGroup(str(tmp_path))
    for h in g.hosts.values():
        h.writes._applied.capacity, h.writes._applied.retain_ns = 2, 0
    await g.elect(1, 1, (1, 2, 3))
    for i in range(1, 5):
        f = g.write(1, b"k%d" % i, b"first", request_id=i)
        await g.pump()
        assert f.result().outcome is Outcome.OK
    newer = g.write(1, b"k2", b"newer")
    await g.pump()
    assert newer.result().outcome is Outcome.OK
    return g


@pytest.mark.parametrize("when", ["leader", "leader_elect", "follower_then_appointed"])
def test_a_forgotten_retry_after_a_leader_change_is_not_applied_in_any_role(tmp_path, when):
    # Right after a leader change is when routers retry. A new leader
    # proposes before its NOOP commits (LEADER_ELECT), and a retry may reach
    # a member before it processed its appointment: the check must hold
    # whenever a write is proposed, not only when it is submitted.
    from server.replication.messages import Appointment, Config, PromiseRequest

    async def go():
        g = await _group_with_evicted_ids(tmp_path)
        g.down = {1}                                  # leader 1 dies
        h2 = g.hosts[2]
        appointment = Appointment(epoch=2, sender=0, recipient=2, config=Config(frozenset(MEMBERS)))
        if when == "leader":
            await g.elect(2, 2, (2, 3))
            retry = g.write(2, b"k2", b"first", request_id=2, first_seq=_seq(1000))
            await g.pump()
        elif when == "leader_elect":
            for n in (2, 3):
                g.hosts[n].step(PromiseRequest(epoch=2, sender=0, recipient=n))
            await g.pump()
            g.down = {1, 3}                           # 3 is slow: the NOOP waits
            h2.step(appointment)
            await g.pump()
            assert h2.replica.role is Role.LEADER_ELECT
            retry = g.write(2, b"k2", b"first", request_id=2, first_seq=_seq(1000))
            await g.pump()
            g.down = {1}
            await g.pump(ticks=4)
        else:
            for n in (2, 3):
                g.hosts[n].step(PromiseRequest(epoch=2, sender=0, recipient=n))
            await g.pump()
            assert h2.replica.role is Role.FOLLOWER
            h2.step(appointment, wake=False)          # the appointment and the retry in one loop turn
            retry = h2.submit_write(rep_of(b"k2", b"first"), request_id=2, first_seq=_seq(1000), wake=False)
            h2.start_client_work()
            await g.pump(ticks=4)
        outcome, value = retry.result().outcome, h2.storage.get_entry(TABLE, b"k2").value
        await g.close()
        return outcome, value

    outcome, value = asyncio.run(go())
    assert outcome is Outcome.FORGOTTEN and value == b"newer", (outcome, value)


def test_a_retry_taken_while_following_waits_for_its_first_attempt_found_in_the_log_since(tmp_path):
    # In one loop turn member 2 takes a router's retry of id 2 (still a
    # follower: it waits for an appointment), then steps the old leader's
    # late Append holding id 2's first attempt and a newer write to the same
    # key, its promise and its appointment. The retry is proposed after those
    # steps but before a Ready shows the Append: it must find id 2 in the log
    # and take that entry's outcome, not be proposed again (which would
    # apply id 2 twice, over the newer value). Found by a review.
    from server.replication.messages import Append, Appointment, Config, PromiseRequest

    async def go():
        g = HostGroup(str(tmp_path))
        await g.elect(1, 1, (1, 2, 3))
        h2 = g.hosts[2]
        g.write(1, b"k2", b"first", request_id=2)
        await g.idle()
        g.write(1, b"k2", b"newer")
        await g.idle()
        held = [m for m in g.queue if m.recipient == 2 and isinstance(m, Append) and m.entries]
        g.queue = []
        assert held
        g.down = {1}                                            # 1 dies: the router retries at 2
        g.hosts[3].step(PromiseRequest(epoch=2, sender=0, recipient=3))
        await g.pump()
        retry = h2.submit_write(rep_of(b"k2", b"first", ts=2000), request_id=2, first_seq=_seq(1000), wake=False)
        for m in held:
            h2.step(m, wake=False)
        h2.step(PromiseRequest(epoch=2, sender=0, recipient=2), wake=False)
        h2.step(Appointment(epoch=2, sender=0, recipient=2, config=Config(frozenset(MEMBERS))), wake=False)
        h2.start_client_work()
        await g.pump(ticks=6)
        assert h2.replica.role is Role.LEADER
        out = (retry.result().outcome, h2.storage.get_entry(TABLE, b"k2").value)
        await g.close()
        return out

    outcome, value = asyncio.run(go())
    assert value == b"newer" and outcome is Outcome.OK, (outcome, value)   # id 2's first outcome: applied


def test_a_retry_whose_first_attempt_left_the_log_with_a_replaced_suffix_is_proposed_again(tmp_path):
    # Leader 1, cut off, logs id 555 at an index that member 2's election
    # then truncates away; 1 leads again with a shorter log. A retry of 555
    # must not wait for an entry at that index (in an idle group, forever):
    # the id left the log, so the retry is proposed anew. Found by a review.
    async def go():
        g = HostGroup(str(tmp_path))
        await g.elect(1, 1, (1, 2, 3))
        g.down = {1}
        for key in (b"a", b"b"):
            g.write(1, key, b"x")
            await g.pump()
        first = g.write(1, b"k", b"v1", request_id=555)
        await g.pump()
        h1 = g.hosts[1]
        at = h1.replica.log.last_index
        await g.elect(2, 2, (2, 3))                   # 2's NOOP replaces 1's suffix
        g.down = set()
        await g.pump(ticks=6)
        assert first.result().outcome is Outcome.OUTCOME_UNKNOWN and h1.replica.log.last_index < at
        g.down = {2}
        await g.elect(3, 1, (1, 3))
        retry = g.write(1, b"k", b"v1", request_id=555)
        await g.pump(ticks=40)
        outcome = retry.result().outcome if retry.done() else None
        value = h1.storage.get_entry(TABLE, b"k")
        await g.close()
        return outcome, value

    outcome, value = asyncio.run(go())
    assert outcome is Outcome.OK and value.value == b"v1", (outcome, value)


def test_a_window_stored_before_evicted_through_was_recorded_counts_as_having_evicted(group):  # noqa: F811
    # A store written before the window recorded its evictions holds a full
    # window and no index-0 row: after a restart it must not take a retry of
    # an evicted id for one it never saw.
    from server.node.dedup import _EVICTED_KEY
    from server.node.write_path import WritePath

    async def go():
        _write_ids_1_to_4_then_a_newer_k2(group)
        group.storage.apply_dedup(write_batch.encode_many(   # what an older version left on disk
            [(write_batch.DELETE, DEDUP_TABLE_ID, _EVICTED_KEY, None, _seq(1011))]))
        group.writes = WritePath(1, group.replica, group.storage)   # a restart: the window reloads
        group.writes._applied.capacity, group.writes._applied.retain_ns = 2, 0   # a count-only window of 2
        retry = group.writes.submit(rep(b"k2", b"first", ts=1020), request_id=2, first_seq=_seq(1002))
        group.drive()
        return retry.result().outcome, group.storage.get_entry(TABLE, b"k2").value

    assert asyncio.run(go()) == (Outcome.FORGOTTEN, b"newer")


def test_the_window_evicts_whole_entries_and_its_engine_batches_mirror_it():
    w = DedupWindow(capacity=3, retain_ns=0)   # by count alone (retention by time: the tests below)
    table: dict[bytes, tuple[bytes, bytes]] = {}   # what the engine's dedup table holds after each batch: value, seq

    def record(index: int, ids: list[int]) -> list[tuple[int, int]] | None:
        seq = index.to_bytes(8, "big") + bytes(8)
        batch = w.record(index, [(i, APPLIED, i.to_bytes(16, "big")) for i in ids], seq)
        if batch is None:
            return None
        changes = []
        for kind, tid, key, value, row_seq in write_batch.decode(batch):
            assert tid == DEDUP_TABLE_ID
            changes.append((kind, int.from_bytes(key[:8], "big")))   # (entry index, part)
            if kind == write_batch.VALUE:
                table[key] = (value, row_seq)
            else:
                del table[key]
        return changes

    assert record(10, [1, 2]) == [(write_batch.VALUE, 0), (write_batch.VALUE, 10)]   # evicted_through: none yet
    assert record(11, [3]) == [(write_batch.VALUE, 11)]
    assert record(11, [3]) is None                                # a replayed entry: recorded already
    assert w.evicted_through == b""
    # 4 ids > 3: entry 10 goes, and the highest evicted seq is recorded (key: entry index 0)
    assert record(12, [2, 4]) == [(write_batch.DELETE, 10), (write_batch.VALUE, 0), (write_batch.VALUE, 12)]
    assert w.evicted_through == (10).to_bytes(8, "big") + bytes(8)
    assert [i for i in range(1, 6) if i in w] == [2, 3, 4]       # 2 stays: entry 12 applied it again
    assert (w.get(2).index, w.get(2).order, w.get(3).index) == (12, 0, 11)
    assert record(13, [5, 5]) == [(write_batch.DELETE, 11), (write_batch.VALUE, 0),   # twice in one entry: once
                                  (write_batch.VALUE, 13)]
    # A restart (or a snapshot) rebuilds the same window from the table alone, lazily.
    again = DedupWindow(capacity=3, retain_ns=0,
                        source=lambda: [(key, value, seq) for key, (value, seq) in table.items()])
    assert [again.get(i) for i in (2, 4, 5)] == [w.get(i) for i in (2, 4, 5)] and 3 not in again
    assert again.evicted_through == w.evicted_through == (11).to_bytes(8, "big") + bytes(8)
    record(14, [6])   # both evict the same oldest entry next
    again.record(14, [(6, APPLIED, (6).to_bytes(16, "big"))], (14).to_bytes(8, "big") + bytes(8))
    assert [i for i in range(1, 7) if i in w] == [i for i in range(1, 7) if i in again] == [5, 6]


def test_an_entry_whose_seqs_pass_one_value_is_split_into_parts():
    w = DedupWindow()
    big = bytes(16 * MAX_DEDUP_RECORDS)   # one request at the limit: about 0.9 MiB of seqs
    batch = w.record(7, [(1, APPLIED, big), (2, APPLIED, big), (3, VOIDED, b"x" * 16)], bytes(16))
    rows = [(r[2], r[3], r[4]) for r in write_batch.decode(batch)]
    assert rows[0][:2] == (bytes(10), b"")   # the evicted_through row: nothing evicted yet
    assert [(int.from_bytes(k[:8], "big"), int.from_bytes(k[8:], "big")) for k, _, _ in rows[1:]] == [(7, 0), (7, 1)]
    again = DedupWindow(source=lambda: rows)
    assert [again.get(i) for i in (1, 2, 3)] == [w.get(i) for i in (1, 2, 3)]
    assert again.get(3).status == VOIDED


def _status(storage, request_id: int) -> int | None:
    """The window's status of an id, read back from the engine's table."""
    applied = DedupWindow(source=storage.dedup_rows).get(request_id)
    return None if applied is None else applied.status


def test_a_write_applied_before_its_tables_drop_keeps_its_outcome_through_a_crash(tmp_path):
    # The drop is durable at once (the engine's manifest); were the write still
    # only in the memtable then, a crash would replay it after the drop and the
    # window would call it voided on this member alone.
    path = str(tmp_path / "rg")

    async def first_life():
        g = OneMemberGroup(path)
        w = g.writes.submit(rep(b"k"), request_id=31)
        g.drive()
        d = g.writes.propose_drop(TABLE)
        g.drive()
        assert (w.result().outcome, d.result().outcome) == (Outcome.OK, Outcome.OK)
        g.storage.db._kill()   # a crash: an unflushed memtable is lost (wal=False), the manifest is not
        g.storage.log.close()
        return w.result().value

    first = asyncio.run(first_life())

    async def second_life():
        g = OneMemberGroup(path, epoch=2)
        retry = g.writes.submit(rep(b"k"), request_id=31)
        g.drive()
        status = _status(g.storage, 31)
        g.close()
        return retry.result(), status

    retry, status = asyncio.run(second_life())
    assert (retry.outcome, retry.value, status) == (Outcome.OK, first, APPLIED)


def test_a_drop_reaches_a_member_whose_snapshot_had_the_table_without_rows(tmp_path):
    # A snapshot carries records, so a table with no live row does not travel;
    # its drop must still be recorded there, or a late write that every other
    # member voids would be stored on that one.
    async def go():
        g = HostGroup(str(tmp_path))
        try:
            await g.elect(1, 1, (1, 2, 3))
            g.down = {3}
            g.write(1, b"k", b"v", request_id=5)
            await g.pump()
            g.write(1, b"k", None)   # the table now holds no live row
            await g.pump()
            await g.compact(1)
            g.down = set()
            await g.pump(ticks=20)
            h1, h3 = g.hosts[1], g.hosts[3]
            assert h3.storage.snapshots_installed == 1
            d = h1.submit_drop(TABLE)
            await g.pump()
            assert d.result().outcome is Outcome.OK
            late = g.write(1, b"late", b"x", request_id=31)   # a stale router's write after the drop
            await g.pump(ticks=2)
            assert late.result().outcome is Outcome.TABLE_DROPPED
            assert [h.storage.get_entry(TABLE, b"late") for h in g.hosts.values()] == [None, None, None]
            assert [_status(h.storage, 31) for h in g.hosts.values()] == [VOIDED] * 3
        finally:
            await g.close()

    asyncio.run(go())


def test_a_snapshot_of_a_state_without_rows_installs(tmp_path):
    async def go():
        g = HostGroup(str(tmp_path))
        await g.elect(1, 1, (1, 2, 3))
        g.down = {3}
        g.write(1, b"k", b"v")       # no request id: no dedup rows either
        await g.pump()
        g.write(1, b"k", None)
        await g.pump()
        await g.compact(1)
        g.down = set()
        await g.pump(ticks=20)
        h3 = g.hosts[3]
        installed, applied = h3.storage.snapshots_installed, h3.storage.db.applied_index
        await g.close()
        assert installed == 1 and applied == g.hosts[1].replica.log.applied_index

    asyncio.run(go())


class _ReferenceWindow:
    """The window's rules written plainly (a dict and a list of entries), to hold
    DedupWindow's compact arrays to: which ids are in, with what, and which rows
    each record() writes and deletes. Every replica must evict the same ids."""

    def __init__(self, capacity: int, retain_ns: int, max_ids: int, time_evictions: int):
        self.capacity, self.retain_ns, self.max_ids = capacity, retain_ns, max_ids
        self.time_evictions = time_evictions
        self.ids: dict[int, tuple[int, int, int, bytes]] = {}   # id -> (index, order, status, seqs)
        self.entries: list[tuple[int, list[int], int, int]] = []  # (index, ids recorded there, parts, stamp ns)
        self.evicted_through = b""                                # the seq of the newest entry evicted
        self.tracked = False                                      # the evicted_through row is written

    def record(self, index: int, requests, parts: int, stamp: int) -> list[tuple[int, int]] | None:
        if not requests or any(e[0] == index for e in self.entries):
            return None
        rids = []
        for order, (rid, status, seqs) in enumerate(requests):
            if rid in self.ids and self.ids[rid][0] == index:
                continue
            self.ids[rid] = (index, order, status, seqs)
            rids.append(rid)
        self.entries.append((index, rids, parts, stamp))
        changes = []
        # Over the floor, the oldest entry goes if the window is over its cap,
        # or if it is retain_ns or more older than the new one and the time
        # rule has not yet evicted time_evictions records in this call.
        budget = self.time_evictions
        while len(self.ids) > self.capacity and len(self.entries) > 1:
            by_time = len(self.ids) <= self.max_ids
            if by_time and (budget <= 0 or stamp - self.entries[0][3] < self.retain_ns):
                break
            if by_time:
                budget -= len(self.entries[0][1])
            old, old_ids, old_parts, old_stamp = self.entries.pop(0)
            for rid in old_ids:
                if self.ids.get(rid, (None,))[0] == old:
                    del self.ids[rid]
            changes += [(write_batch.DELETE, old)] * old_parts
            self.evicted_through = old_stamp.to_bytes(8, "big") + old.to_bytes(8, "big")   # as the test stamps
        if changes or not self.tracked:
            changes.append((write_batch.VALUE, 0))
            self.tracked = True
        return changes + [(write_batch.VALUE, index)] * parts


def test_the_compact_window_keeps_exactly_the_ids_the_plain_rules_keep():
    import random

    rng = random.Random(11)
    # (floor, retention ns, cap, time evictions per call): by count alone, then
    # each rule binding in turn (cap, time, floor; none), then the time rule's budget
    for capacity, retain_ns, max_ids, budget in ((1, 0, 1, 10**6), (3, 0, 3, 10**6), (17, 0, 17, 10**6),
                                                 (200, 0, 200, 10**6), (3, 80, 6, 10**6), (4, 50, 100, 10**6),
                                                 (17, 30, 60, 10**6), (5, 10**6, 10**6, 10**6), (2, 50, 200, 3),
                                                 (1, 20, 40, 1)):
        kw = {"retain_ns": retain_ns, "max_ids": max_ids, "time_evictions": budget}
        w, ref = DedupWindow(capacity=capacity, **kw), _ReferenceWindow(capacity, **kw)
        table: dict[bytes, bytes] = {}
        row_seqs: dict[bytes, bytes] = {}
        pool = [rng.getrandbits(64) | 1 for _ in range(3 * capacity + 5)]   # ids come back: retries
        index = pause = 0
        for _ in range(40 * capacity + 50):
            index += rng.choice((1, 1, 2))
            pause += 10_000 if rng.random() < 0.03 else 0   # now and then a long pause: the time rule's budget binds
            requests = [(rng.choice(pool), rng.choice((APPLIED, VOIDED)), rng.randbytes(16 * rng.choice((1, 1, 3))))
                        for _ in range(rng.choice((1, 1, 2, 4)))]
            stamp = 10 * index + rng.choice((0, 0, 5)) + pause   # the entry's stamp: grows, by uneven steps
            seq = stamp.to_bytes(8, "big") + index.to_bytes(8, "big")
            batch = w.record(index, requests, seq)
            rows = [] if batch is None else write_batch.decode(batch)
            want = ref.record(index, requests, sum(1 for r in rows if r[0] == write_batch.VALUE and r[2] != bytes(10)),
                              stamp)
            assert [(kind, int.from_bytes(key[:8], "big")) for kind, _, key, _, _ in rows] == (want or []), index
            for kind, _, key, value, row_seq in rows:
                if kind == write_batch.VALUE:
                    table[key] = value
                    row_seqs[key] = row_seq
                else:
                    del table[key]
            if rng.random() < 0.05:
                assert w.record(index, requests, seq) is None   # a replay: recorded already
            assert len(w) == len(ref.ids)
            assert w.evicted_through == ref.evicted_through
        for rid in pool:
            got = w.get(rid)
            assert (None if got is None else tuple(got)) == ref.ids.get(rid), rid
        # A restart rebuilds the same window from the table alone.
        again = DedupWindow(capacity=capacity, **kw,
                            source=lambda t=table, s=row_seqs: [(k, v, s[k]) for k, v in t.items()])
        assert [again.get(rid) for rid in pool] == [w.get(rid) for rid in pool]
        assert again.evicted_through == w.evicted_through


def test_the_window_keeps_every_id_of_the_retention_span_above_its_floor_up_to_its_cap():
    s = 10**9
    w = DedupWindow(capacity=2, retain_ns=10 * s, max_ids=5)

    def record(index: int, stamp_s: int) -> None:
        w.record(index, [(index, APPLIED, bytes(16))], (stamp_s * s).to_bytes(8, "big") + bytes(8))

    for index, stamp_s in enumerate((100, 101, 102, 103), start=1):
        record(index, stamp_s)
    assert [i for i in range(1, 5) if i in w] == [1, 2, 3, 4] and w.evicted_through == b""   # all within 10 s
    record(5, 111)   # ids 1 (100 s) and 2 (101 s) are 10 s or more older: gone; 3 and 4 stay (the floor is 2)
    assert [i for i in range(1, 6) if i in w] == [3, 4, 5]
    assert w.evicted_through == (101 * s).to_bytes(8, "big") + bytes(8)
    for index in range(6, 10):   # a burst within the span: the cap of 5 evicts the oldest
        record(index, 112)
    assert [i for i in range(1, 10) if i in w] == [5, 6, 7, 8, 9]
    record(10, 200)   # long after: back down to the floor
    assert [i for i in range(1, 11) if i in w] == [9, 10]


def test_a_window_that_never_evicted_reloads_without_an_eviction():
    # The evicted_through row is written with the first entry, empty: a
    # restart of a window near its floor must not count as having evicted
    # (that is only for tables written before the row existed).
    w = DedupWindow(capacity=3, retain_ns=10**12)
    table = {}
    for index in range(1, 9):
        batch = w.record(index, [(index, APPLIED, bytes(16))], index.to_bytes(8, "big") + bytes(8))
        table.update({key: (value, seq) for _, _, key, value, seq in write_batch.decode(batch)})
    assert len(w) == 8 and w.evicted_through == b""
    again = DedupWindow(capacity=3, retain_ns=10**12, source=lambda: [(k, v, s) for k, (v, s) in table.items()])
    assert len(again) == 8 and again.evicted_through == b"" and not again.may_have_forgotten(bytes(16))


def test_ids_of_entries_that_arrive_in_the_same_ready_as_a_snapshot_stay_known(tmp_path):
    """A member steps an old leader's last snapshot chunk and the new leader's
    Append (entries right after the snapshot) in one delivery: one Ready with
    both. The ids of those entries are in its log; had the install forgotten
    them (it once forgot every id above the snapshot's index, after the
    Ready's entries were observed), a retry of one, taken when this member
    leads, would be proposed again: applied twice, over a newer write that was
    acknowledged in between. (Found by a review: ported from its repro.)"""
    from server.replication.messages import Append, Appointment, Config, PromiseRequest, SnapshotChunk

    async def go():
        g = HostGroup(str(tmp_path))
        await g.elect(1, 1, (1, 2, 3))
        g.down = {3}                                        # 3 lags: it will need a snapshot
        for i in range(3):
            f = g.write(1, b"a%d" % i, b"x", request_id=100 + i)
            await g.pump()
            assert f.result().outcome is Outcome.OK
        await g.compact(1)
        g.down = set()   # 3 is back: 1 streams it a snapshot; its last chunk stays in flight
        final = None
        for _ in range(200):
            for m in await g.pump(ticks=1, hold=lambda m: m.recipient == 3 and isinstance(m, SnapshotChunk)):
                if m.done:
                    final = m
                else:
                    g.hosts[3].step(m, wake=False)
                    g.hosts[3].acknowledged()
            if final is not None:
                break
        assert final is not None, "no last snapshot chunk"
        s = final.snapshot.index
        h3 = g.hosts[3]
        g.down = {3}
        await g.elect(2, 2, (1, 2))   # 2 leads epoch 2: its no-op at s + 1
        g.down = set()
        first = g.write(2, b"k", b"v1", request_id=777)   # at s + 2, not committed: 1's acks are lost
        held = await g.pump(ticks=8,
                            hold=lambda m: (m.recipient == 3 and isinstance(m, Append)
                                            and any(e.index == s + 2 for e in m.entries)),
                            drop=lambda m: m.recipient == 3 or (m.sender == 1 and m.recipient == 2))
        append = next(m for m in held if isinstance(m, Append))
        assert append.prev.index == s and append.commit_index < s + 2 and not first.done()
        h3.step(final, wake=False)    # one delivery batch (Node.deliver_all): one Ready with both
        h3.step(append, wake=False)
        h3.acknowledged()
        await g.idle()
        assert h3.replica.log.last_index == s + 2 and h3.replica.log.applied_index < s + 2
        logged = h3.writes._logged.get(777)
        g.down, g.queue = {2}, []     # 2 is cut off; 3 leads epoch 3 with 1
        for n in (1, 3):
            g.hosts[n].step(PromiseRequest(epoch=3, sender=0, recipient=n))
        await g.pump()
        h3.step(Appointment(epoch=3, sender=0, recipient=3, config=Config(frozenset(MEMBERS))), wake=False)
        newer = h3.submit_write(rep_of(b"k", b"newer", ts=5000), wake=False)
        h3.start_client_work()
        await g.idle()
        retry = h3.submit_write(rep_of(b"k", b"v1", ts=6000), request_id=777, wake=False)   # its first attempt: s + 2
        h3.start_client_work()
        await g.pump(ticks=10)
        out = (s, logged, newer.result().outcome, retry.result(), h3.storage.get_entry(TABLE, b"k").value)
        await g.close()
        return out

    s, logged, newer, retry, value = asyncio.run(go())
    assert logged == s + 2
    assert newer is Outcome.OK and value == b"newer"                    # the acknowledged write stays
    assert retry.outcome is Outcome.OK and retry.value[0] == s + 2     # the first attempt's outcome
