"""Followers apply committed entries in batches (ReplicaOptions.follower_apply_batch):
a Ready hands them out once enough wait or a tick passed, never on a leader,
and a follower that becomes leader applies everything at once."""
from __future__ import annotations

from server.replication import Config, DurableState, Replica
from server.replication.messages import Append, Appointment, Entry, EntryKind, LogPosition, PromiseRequest, Role
from server.replication.options import ReplicaOptions

LEADER, ME = 1, 2


def drain(r: Replica) -> list[int]:
    """Carries out every Ready; returns the indexes it handed out to apply."""
    applied: list[int] = []
    while r.has_ready():
        rd = r.ready()
        applied.extend(e.index for e in rd.committed_entries)
        r.advance(rd)
    return applied


def append(r: Replica, first: int, last: int, commit: int, epoch: int = 1) -> None:
    entries = tuple(Entry(epoch, i, EntryKind.WRITE, b"w%d" % i) for i in range(first, last + 1))
    prev = LogPosition(epoch if first > 1 else 0, first - 1)
    r.step(Append(epoch=epoch, sender=LEADER, recipient=ME, prev=prev, entries=entries, commit_index=commit))


def test_a_follower_applies_once_a_batch_waits_or_a_tick_passed():
    r = Replica(ME, DurableState(), ReplicaOptions(follower_apply_batch=3))
    append(r, 1, 4, commit=0)
    assert drain(r) == []
    append(r, 5, 5, commit=2)
    assert drain(r) == []                 # 2 committed, fewer than 3: they wait
    append(r, 6, 6, commit=3)
    assert drain(r) == [1, 2, 3]          # 3 waiting: applied together
    append(r, 7, 7, commit=4)
    assert drain(r) == []
    r.tick()
    assert drain(r) == [4]                # a tick passed: applied however few
    append(r, 8, 8, commit=5)
    assert drain(r) == []                 # and the next ones wait again


def test_eager_by_default_and_everything_at_once_on_becoming_leader():
    eager = Replica(ME, DurableState(), ReplicaOptions())
    append(eager, 1, 2, commit=1)
    assert drain(eager) == [1]

    r = Replica(ME, DurableState(), ReplicaOptions(follower_apply_batch=64))
    append(r, 1, 3, commit=3)
    assert drain(r) == []
    r.step(PromiseRequest(epoch=2, sender=0, recipient=ME))
    drain(r)
    r.step(Appointment(epoch=2, sender=0, recipient=ME, config=Config(frozenset({ME}))))
    applied = drain(r)
    assert r.role is Role.LEADER and applied[:3] == [1, 2, 3]   # then its NOOP of epoch 2
