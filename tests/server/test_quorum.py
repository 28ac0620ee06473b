"""Quorum arithmetic (server/replication/quorum.py) and the leader's commit
index over it (Replicator.quorum_index, whose one-voter-set path skips the
general table)."""
from __future__ import annotations

import random

import pytest

from server.replication.log import ReplicatedLog
from server.replication.messages import Config, Entry, EntryKind
from server.replication.options import ReplicaOptions
from server.replication.quorum import has_quorum, quorum_value
from server.replication.replicator import Replicator


def test_quorum_value_is_the_majoritys_lowest_value():
    config = Config(frozenset({1, 2, 3, 4, 5}))
    assert quorum_value(config, {1: 9, 2: 7, 3: 5, 4: 2, 5: 1}) == 5
    assert quorum_value(config, {1: 9, 2: 7}) == 0            # missing members count as 0
    joint = Config(frozenset({1, 2, 3}), outgoing_voters=frozenset({3, 4, 5}))
    assert quorum_value(joint, {1: 9, 2: 8, 3: 7, 4: 2, 5: 1}) == 2   # both majorities must hold it
    assert has_quorum(joint, {1, 2, 4}) is False and has_quorum(joint, {1, 3, 4}) is True


@pytest.mark.parametrize("seed", range(200))
def test_leader_commit_index_matches_quorum_value(seed):
    rng = random.Random(seed)
    ids = list(range(1, 8))
    rng.shuffle(ids)
    voters = frozenset(ids[:rng.choice([1, 3, 5])])
    leader = rng.choice(sorted(voters))
    outgoing = frozenset(rng.sample(ids, 3)) | {leader} if rng.random() < 0.3 else frozenset()
    learners = frozenset(i for i in ids if i not in voters | outgoing and rng.random() < 0.5)
    config = Config(voters, outgoing, learners)
    log = ReplicatedLog(entries=[Entry(1, i, EntryKind.NOOP) for i in range(1, 21)])
    rep = Replicator(leader, 1, config, log, ReplicaOptions(), [])
    table = {leader: log.stable_index}
    for member, progress in rep.progress.items():
        progress.match = rng.randrange(21)
        if not progress.learner:
            table[member] = progress.match
    assert rep.quorum_index() == quorum_value(config, table)
