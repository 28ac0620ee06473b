"""The simulator's checker rule 6 (tests/server/sim/checker.py: the client as a
learner) has teeth where a review found holes: two entries counted at one
index, a counted index the group never applies, and a write proposed while
its leader is LEADER_ELECT (counted as a learner would). Each test failed
before the review's fixes."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from sim.checker import SafetyViolation
from sim.cluster import Cluster

from server.replication.messages import AppendAck, AppendResult, Config, Entry, EntryKind, Role

CONFIG = Config(frozenset({1, 2, 3}))


def _cluster() -> Cluster:
    return Cluster([1, 2, 3], [], random.Random(1))


def _durable(c: Cluster, leader: int, epoch: int, index: int) -> None:
    """Leader `leader` of `epoch` has its entry epoch.index on disk."""
    ch = c.checker
    entries = [Entry(epoch, index, EntryKind.WRITE, b"k=v%d" % epoch)]
    ch.on_leader_durable(SimpleNamespace(id=leader), epoch, entries, CONFIG)


def _ack(c: Cluster, sender: int, leader: int, epoch: int, index: int) -> None:
    c.checker.on_ack_to_learner(AppendAck(epoch=epoch, sender=sender, recipient=leader,
                                          result=AppendResult.ACCEPTED, index=index))


def test_two_entries_counted_at_one_index_is_a_violation() -> None:
    """A learner counts 1.5 and later 2.5 committed: one of them is lost. The
    checker overwrites learner_committed[5], so applying 2.5 passes."""
    c = _cluster()
    with pytest.raises(SafetyViolation):
        _durable(c, 1, 1, 5)
        _ack(c, 2, 1, 1, 5)           # {1, 2}: a quorum; 1.5 counted
        _durable(c, 3, 2, 5)
        _ack(c, 2, 3, 2, 5)           # {3, 2}: a quorum; 2.5 counted over it
        node = c.nodes[2]
        node.app.applied_index = 4
        e = Entry(2, 5, EntryKind.WRITE, b"k=v2")
        node.app.apply(e)
        c.checker.on_apply(node, e, node.app)


def test_a_counted_index_never_applied_is_lost() -> None:
    """1.5 counted, the group ends at applied index 0 (nothing ever applied
    index 5): final_check passes, as no on_apply at 5 ever runs."""
    c = _cluster()
    _durable(c, 1, 1, 5)
    _ack(c, 2, 1, 1, 5)
    assert c.checker.learner_committed == {5: 1}
    with pytest.raises(SafetyViolation):
        c.final_check()


def test_a_write_proposed_in_leader_elect_is_counted() -> None:
    """The leader proposes before its NOOP commits (cluster.leaders() includes
    LEADER_ELECT, so the random schedules do this for about half of all
    writes): its copy is durable, followers acknowledge it in its epoch, and
    it commits in that epoch; a learner would count it, rule 6 never does."""
    c = _cluster()
    c.mm.start_epoch()
    for _ in range(50):   # deliver MM traffic until the appointed leader is LEADER_ELECT
        mm = [m for m in c.net.in_flight if 0 in (m.sender, m.recipient)]
        for m in mm:
            c.net.in_flight.remove(m)
            c.deliver(m)
            c.process_all()
        c.process_all()
        if c.leaders():
            break
    [leader] = c.leaders()
    assert leader.replica.role is Role.LEADER_ELECT
    c.propose(leader, 1)
    write_index = leader.replica.log.last_index
    for _ in range(20):   # deliver everything, no new epoch
        while c.net.in_flight:
            c.deliver(c.net.in_flight.pop(0))
            c.process_all()
        c.process_all()
    assert leader.replica.log.commit_index >= write_index and leader.replica.epoch == 1
    assert c.checker.learner_committed.get(write_index) == 1
