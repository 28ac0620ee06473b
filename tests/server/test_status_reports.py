"""Status reports between nodes and the metadata manager (server/node/meta_link.py,
server/node/node.py's status_envelopes, server/meta/service.py's on_heartbeat).

A node sends only the reports that changed since its last heartbeat (all of them
on a new stream and every FULL_STATUS_EVERY heartbeats); the MM takes a missing
report from a group's leader as its last one again. So an idle leader is not
deposed for sending nothing new, and a leader whose node goes silent still is."""
from __future__ import annotations

import asyncio
import os

from server.meta.group_leadership import LEADER_TIMEOUT_TICKS
from server.meta.service import MetaServer
from server.meta.store import MetaStore
from server.node import codec
from server.node.node import Node
from server.proto import meta_pb2
from server.replication.messages import (
    METADATA_MANAGER_ID,
    LogPosition,
    Message,
    PromiseResponse,
    Role,
    StatusReport,
)

RG = 1


def _heartbeat(node: int, *messages: Message) -> meta_pb2.NodeHeartbeat:
    hb = meta_pb2.NodeHeartbeat(node_id=node, address=f"127.0.0.1:{9000 + node}", incarnation=1)
    for msg in messages:
        codec.encode(RG, msg, hb.envelopes.add())
    return hb


def _mm_with_a_group(tmp_path):
    """An active MetaServer (no gRPC), nodes 1-3 registered, group RG led after
    every member promised, its leader's report in: (mm, sessions by node, the
    group's GroupLeadership)."""
    mm = MetaServer("127.0.0.1:0")
    mm.activate(MetaStore(os.fspath(tmp_path)))
    sessions = {n: mm.register(_heartbeat(n)) for n in (1, 2, 3)}
    gl = mm.create_group(RG, [1, 2, 3])
    gl.start_epoch()
    for n in (1, 2, 3):
        mm.on_heartbeat(sessions[n], _heartbeat(n, PromiseResponse(epoch=gl.epoch, sender=n,
                                                                   recipient=METADATA_MANAGER_ID)))
    leader = gl.leader
    assert leader is not None
    report = StatusReport(epoch=gl.epoch, sender=leader, recipient=METADATA_MANAGER_ID, role=Role.LEADER,
                          last=LogPosition(gl.epoch, 1), commit_index=1, applied_index=1)
    mm.on_heartbeat(sessions[leader], _heartbeat(leader, report))
    return mm, sessions, gl


def test_an_idle_leader_that_reports_nothing_new_is_not_deposed_a_silent_one_is(tmp_path):
    async def run():
        mm, sessions, gl = _mm_with_a_group(tmp_path)
        epoch, leader = gl.epoch, gl.leader
        for _ in range(3 * LEADER_TIMEOUT_TICKS):   # heartbeats with no report: unchanged
            mm.on_heartbeat(sessions[leader], _heartbeat(leader))
            gl.tick()
        assert (gl.epoch, gl.leader) == (epoch, leader)
        for _ in range(LEADER_TIMEOUT_TICKS + 2):   # the node goes silent
            gl.tick()
        assert gl.epoch > epoch and gl.leader != leader
        mm.deactivate("test over")

    asyncio.run(run())


def test_a_new_incarnation_of_a_node_starts_without_the_old_ones_reports(tmp_path):
    """A node restarted with a wiped replica reports nothing for it at first: the
    MM must not keep its old incarnation's leader report alive meanwhile."""
    async def run():
        mm, sessions, gl = _mm_with_a_group(tmp_path)
        epoch, leader = gl.epoch, gl.leader
        restarted = mm.register(_heartbeat(leader))   # a new stream: a new incarnation
        for _ in range(LEADER_TIMEOUT_TICKS + 2):
            mm.on_heartbeat(restarted, _heartbeat(leader))
            gl.tick()
        assert gl.epoch > epoch   # deposed: nothing it sent since says it leads
        mm.deactivate("test over")

    asyncio.run(run())


def test_a_node_sends_the_reports_that_changed_and_all_of_them_when_asked(tmp_path):
    async def run():
        node = Node(1, "127.0.0.1:0", os.fspath(tmp_path), ["127.0.0.1:1"])
        for rg in (1, 2):
            node._host(rg)
        await asyncio.sleep(0)

        stream: dict = {}

        def sent(on: dict) -> list[int]:
            hb = meta_pb2.NodeHeartbeat()
            node.status_envelopes(hb, on)
            return sorted(env.rg for env in hb.envelopes)

        assert sent(stream) == [1, 2]        # nothing sent on this stream before
        assert sent(stream) == []            # nothing changed
        # A figure changes only inside a Ready, whose end moves the host's
        # status_version (ReplicaHost._finish); a replica whose version did not
        # move is not even rebuilt: that is what an idle replica costs.
        node.hosts[1].ops_per_second = 7.0   # (by hand, without a Ready: not looked at)
        node.hosts[2].ops_per_second = 5.0
        node.hosts[2].status_version += 1
        assert sent(stream) == [2]
        node.hosts[1].status_version += 1    # a Ready that changed nothing shown: rebuilt, compared, sent
        assert sent(stream) == [1]
        node.hosts[1].status_version += 1    # ... once
        assert sent(stream) == []
        assert sent({}) == [1, 2]            # a new stream (or the periodic full report: cleared)
        await node._drop(1)
        assert sent(stream) == [] and set(stream) == {2}
        for rg in list(node.hosts):
            await node._drop(rg)

    asyncio.run(run())


def test_a_member_reporting_log_entries_marks_its_group_established(tmp_path):
    """An MM restored from a backup taken before a group's first appointment
    does not know the group has had a leader. A member's report of a log
    with entries (only a leader writes them) tells it, durably: a member
    hosted again on a wiped disk then rejoins without a vote."""
    async def run():
        from server.meta import backup

        store = MetaStore(os.fspath(tmp_path))
        # What a restore of such a backup leaves: the group's epoch past any issued before it, no leader.
        store.put("group", RG, {"members": [1, 2, 3], "epoch": 1 + backup.EPOCH_GAP, "leader": None,
                                "voters": [1, 2, 3], "outgoing": [], "learners": [], "established": False})
        mm = MetaServer("127.0.0.1:0")
        mm.activate(store)
        sessions = {n: mm.register(_heartbeat(n)) for n in (1, 2, 3)}
        empty = StatusReport(epoch=0, sender=1, recipient=METADATA_MANAGER_ID, role=Role.FOLLOWER)
        mm.on_heartbeat(sessions[1], _heartbeat(1, empty))
        assert not mm._assignment(RG).established and not store.get("group", RG)["established"]
        holding = StatusReport(epoch=4, sender=2, recipient=METADATA_MANAGER_ID, role=Role.FOLLOWER,
                               last=LogPosition(4, 17), commit_index=17, applied_index=17)
        mm.on_heartbeat(sessions[2], _heartbeat(2, holding))
        assert mm._assignment(RG).established and store.get("group", RG)["established"]
        store.close()

    asyncio.run(run())


def test_only_a_members_own_report_of_an_issued_epoch_marks_its_group_established(tmp_path):
    """A report from a node that is not a member (an old replica of a reused
    group id), or one naming an epoch this MM never issued, must not mark a
    new group established: its members would start without a vote and the
    group could never elect. (Found by a review of the change above.)"""
    async def run():
        mm = MetaServer("127.0.0.1:0")
        store = MetaStore(os.fspath(tmp_path))
        mm.activate(store)
        sessions = {n: mm.register(_heartbeat(n)) for n in (1, 2, 3, 9)}
        gl = mm.create_group(RG, [1, 2, 3])
        for sender, epoch in ((9, 0), (2, gl.epoch + 42)):
            foreign = StatusReport(epoch=epoch, sender=sender, recipient=METADATA_MANAGER_ID, role=Role.FOLLOWER,
                                   last=LogPosition(epoch, 100), commit_index=100, applied_index=100)
            mm.on_heartbeat(sessions[sender], _heartbeat(sender, foreign))
        assert not mm._assignment(RG).established and not store.get("group", RG)["established"]
        store.close()

    asyncio.run(run())
