"""The MM's store: one MM per directory, no change after a failed write, restores that reissue no epoch.

Epochs are the protocol's fence (server/replication/README.md, E and M
rules): the MM must never hand one out twice. These tests show the three ways
it could: a second MM on the same directory, a store that goes on after a
torn write, and a restored older backup.
"""
from __future__ import annotations

import asyncio
import errno

import pytest
from sim.checker import SafetyViolation  # noqa: F401 - raised by the scenario when the rule is broken
from sim.scenario_env import ScenarioEnv

from engine.env_fault import FaultInjectionEnv
from engine.errors import DBLockedError
from server.meta import backup
from server.meta.backend import MetaStoreError
from server.meta.group_leadership import GroupLeadership
from server.meta.service import MetaOptions, MetaServer
from server.meta.store import MetaStore
from server.replication.messages import Config


def test_a_second_mm_cannot_open_a_store_in_use_nor_restore_into_it(tmp_path):
    d = str(tmp_path / "meta")
    first = MetaStore(d)
    first.put("group", 1, {"epoch": 1})
    with pytest.raises(DBLockedError):
        MetaStore(d)
    with pytest.raises(DBLockedError):
        backup.restore_embedded(d, {"group/1": {"epoch": 9}}, force=True)
    first.put("group", 1, {"epoch": 2})
    first.close()
    again = MetaStore(d)   # released on close
    assert again.get("group", 1) == {"epoch": 2}
    again.close()


def test_after_a_failed_write_the_store_refuses_changes_and_a_reopen_keeps_what_was_durable():
    env = FaultInjectionEnv()
    store = MetaStore("/meta", env)
    store.put("group", 1, {"epoch": 1})
    env.fail_after("sync", 0)
    with pytest.raises(MetaStoreError, match="could not be made durable"):
        store.put("group", 1, {"epoch": 2})
    env.clear_faults()
    with pytest.raises(MetaStoreError, match="refuses changes"):   # nothing lands after a torn frame
        store.put("group", 1, {"epoch": 3})
    store.close()
    env.crash()
    reopened = MetaStore("/meta", env)
    assert reopened.get("group", 1) == {"epoch": 1}   # the failed change was never durable
    reopened.put("group", 1, {"epoch": 2})
    reopened.close()


def test_a_failed_write_in_the_ticker_stops_the_mm_acting_and_tells_its_owner(tmp_path):
    # The embedded MM's owner (the CLI) ends the process on it: an MM that
    # answers but never elects again would be worse than a restart.
    class FullDisk(MetaStore):
        full = False

        def _open(self) -> None:
            super()._open()
            real = self._writer.add

            def add(*args, **kwargs):
                if self.full:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(*args, **kwargs)
            self._writer.add = add

    async def go():
        mm = MetaServer("127.0.0.1:0", MetaOptions(tick_seconds=0.01))
        failures: list[MetaStoreError] = []
        mm.on_store_failure = failures.append
        store = FullDisk(str(tmp_path / "meta"))
        mm.activate(store)
        try:
            mm.create_group(2, [1, 2, 3])   # durable; the ticker starts its first epoch next
            store.full = True
            for _ in range(200):             # until the ticker tried (a condition over the MM, polled)
                if failures:
                    break
                await asyncio.sleep(0.01)
            return mm.active, failures
        finally:
            await mm.stop()

    active, failures = asyncio.run(go())
    assert not active and len(failures) == 1 and "No space left" in str(failures[0])


def _restored(records: dict) -> GroupLeadership:
    """The restored MM's view of group 1, as MetaServer._load_group builds it."""
    rec = backup.for_restore(records)["group/1"]
    gl = GroupLeadership(set(rec["members"]), None, epoch=rec["epoch"], config=Config(frozenset(rec["voters"])))
    gl.leader = rec["leader"]
    return gl


def test_a_restored_older_backup_elects_in_an_epoch_no_earlier_mm_issued():
    # The backup says epoch 1, leader 1; the lost MM then ran epoch 2 (leader 1
    # logged an entry no one else got, and crashed). Were epoch 2 issued again,
    # a second leader of it would commit another entry at the same (epoch,
    # index), and log matching would keep both: the logs would diverge.
    env = ScenarioEnv()
    for command in ("add-replicas 3", "elect", "stabilize"):
        env.run(command)
    c = env.c
    records = {"group/1": {"members": [1, 2, 3], "epoch": c.mm.epoch, "leader": c.mm.leader, "voters": [1, 2, 3],
                           "outgoing": [], "learners": [], "established": True}, "counter/table_id": 7}
    for command in ("elect", "drop from=1", "propose 1 x=1", "drop from=1", "crash 1"):
        env.run(command)
    assert c.mm.epoch == 2
    restored = _restored(records)
    assert restored.leader is None and restored.epoch == 1 + backup.EPOCH_GAP
    restored.send = c.send
    c.mm = restored
    env.run("elect")   # what the restored MetaServer's ticker does for a group with no leader
    env.run("stabilize")
    assert c.mm.epoch == 2 + backup.EPOCH_GAP and c.mm.leader in (2, 3)
    for command in (f"propose {c.mm.leader} y=2", "stabilize", "restart 1"):
        env.run(command)
    for _ in range(10):   # the checker raises SafetyViolation if the logs diverge
        env.run(f"tick {c.mm.leader} n=1")
        env.run("stabilize")
    assert backup.for_restore(records)["counter/table_id"] == 7 + backup.TABLE_ID_GAP


def test_an_mm_that_takes_over_within_cq2s_window_avoids_the_same_deposed_leader(tmp_path):
    # CQ2 (server/replication/README.md): a leader deposed for hearing no
    # quorum is avoided for a window. An MM that fails over inside it loads
    # the avoidance with the group, so its next epoch does not appoint that
    # leader again (its log is often the longest: writes it could not replicate).
    from server.replication.messages import LogPosition, PromiseResponse, Role, StatusReport

    def promise(epoch: int, member: int, last: LogPosition) -> PromiseResponse:
        return PromiseResponse(epoch=epoch, sender=member, recipient=0, last=last)

    async def first_mm() -> tuple[int, list]:
        mm = MetaServer("127.0.0.1:0", MetaOptions(tick_seconds=3600.0, avoid_deposed_seconds=60.0))
        mm.activate(MetaStore(str(tmp_path / "meta")))   # the ticker never fires: ticks by hand
        mm._node_alive = lambda node_id: True            # as if every node heartbeats (no processes here)
        try:
            gl = mm.create_group(1, [1, 2, 3])
            gl.start_epoch()
            for m in (1, 2, 3):
                gl.step(promise(gl.epoch, m, LogPosition(0, 0)))
            leader = gl.leader
            for _ in range(gl.leader_timeout_ticks + 2):   # it reports hearing no quorum, every tick
                gl.step(StatusReport(epoch=gl.epoch, sender=leader, recipient=0, role=Role.LEADER,
                                     quorum_contact=False))
                gl.tick()
            assert gl.leader is None and gl.change.avoid == frozenset({leader})
            return leader, mm.store.get("group", 1)["avoid"]
        finally:
            await mm.stop()

    async def second_mm(deposed: int) -> None:
        mm = MetaServer("127.0.0.1:0", MetaOptions(tick_seconds=3600.0, avoid_deposed_seconds=60.0))
        mm.activate(MetaStore(str(tmp_path / "meta")))
        try:
            gl = mm.groups[1]
            gl.start_epoch()                             # its first election: the deposed one still avoided
            assert gl.change.avoid == frozenset({deposed})
            others = sorted({1, 2, 3} - {deposed})
            gl.step(promise(gl.epoch, deposed, LogPosition(1, 9)))   # the longest log
            gl.step(promise(gl.epoch, others[0], LogPosition(1, 7)))
            assert gl.leader is None                     # {deposed, one other} is no quorum without it
            gl.step(promise(gl.epoch, others[1], LogPosition(1, 7)))
            assert gl.leader == others[0]
        finally:
            await mm.stop()

    deposed, recorded = asyncio.run(first_mm())
    assert [m for m, _until in recorded] == [deposed]
    asyncio.run(second_mm(deposed))
