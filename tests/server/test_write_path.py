"""WritePath (server/node/write_path.py) over a real Replica and ReplicaStorage:
batching into one entry, the sequencer rule, conditions, deduplication, and
deduplication surviving a restart (the request ids are in the log)."""
from __future__ import annotations

import asyncio

import pytest

from engine._native import sequencer, write_batch
from server.node.replica_storage import ReplicaStorage
from server.node.write_path import Outcome, WritePath
from server.replication.lease import MAX_LEASE_NS, hold_ns
from server.replication.messages import Appointment, Config, PromiseRequest, Role
from server.replication.options import ReplicaOptions
from server.replication.replica import Replica

TABLE = 9


def rep(key: bytes, value: bytes | None = b"v", ts: int = 1000) -> bytes:
    kind = write_batch.VALUE if value is not None else write_batch.DELETE
    return write_batch.encode_one(kind, TABLE, key, value, sequencer.encode(ts, 0, 77))


class OneMemberGroup:
    """A 1-voter group driven by hand through the Ready contract."""

    def __init__(self, path: str, epoch: int = 1):
        self.learners = False   # drive() answers learner writes after each persist, as the host does
        self.storage = ReplicaStorage(path, node_id=1)
        self.replica = Replica(1, self.storage.durable_state(), ReplicaOptions())
        self.writes = WritePath(1, self.replica, self.storage)
        # A restarted member holds its promise for a while from its first
        # observed time (README LL3): let that much time pass first.
        self.replica.observe_time(1)
        self.replica.observe_time(2 + hold_ns(MAX_LEASE_NS))
        self.replica.step(PromiseRequest(epoch=epoch, sender=0, recipient=1))
        self.drive()
        self.replica.step(Appointment(epoch=epoch, sender=0, recipient=1, config=Config(frozenset({1}))))
        self.drive()
        assert self.replica.role is Role.LEADER

    def drive(self) -> None:
        r = self.replica
        while True:
            self.writes.propose_pending()
            if not r.has_ready():
                return
            rd = r.ready()
            self.writes.observe(rd.entries)
            self.storage.persist(rd.snapshot_chunks, rd.snapshot, rd.entries, rd.hard_state)
            if self.learners and rd.entries:
                self.writes.durable_on_leader(rd.entries)
            self.writes.apply(rd.committed_entries)
            r.advance(rd)

    def close(self) -> None:
        self.storage.close()


@pytest.fixture
def group(tmp_path):
    g = OneMemberGroup(str(tmp_path / "rg"))
    yield g
    g.close()


def run(coro):
    return asyncio.run(coro)


def test_writes_that_arrive_together_become_one_entry_with_increasing_seqs(group):
    async def go():
        last = group.replica.log.last_index
        futs = [group.writes.submit(rep(b"k%d" % i, ts=5)) for i in range(10)]   # same clock: restamped
        group.drive()
        results = [f.result() for f in futs]
        assert group.replica.log.last_index == last + 1
        assert all(r.outcome is Outcome.OK for r in results)
        seqs = [r.value[1] for r in results]
        assert seqs == sorted(seqs) and len(set(seqs)) == 10
        assert group.storage.get_entry(TABLE, b"k3").seq == seqs[3]

    run(go())


def test_a_retried_request_id_is_answered_from_the_first_attempt(group):
    async def go():
        first = group.writes.submit(rep(b"a"), request_id=42)
        twin = group.writes.submit(rep(b"a", b"other"), request_id=42)   # in flight: joins the first
        group.drive()
        entries = group.replica.log.last_index
        again = group.writes.submit(rep(b"a", b"third"), request_id=42)  # applied: answered at once
        group.drive()
        await asyncio.sleep(0)   # one loop turn: the twin is resolved by a done-callback of the first
        assert first.result().value == twin.result().value == again.result().value
        assert group.replica.log.last_index == entries                  # no new entry
        assert group.storage.get_entry(TABLE, b"a").value == b"v"       # applied once

    run(go())


def test_listeners_hear_of_each_outcome_once_inside_the_call_that_settled_it(group):
    async def go():
        heard: list[tuple[str, object]] = []

        def listener(name):
            return lambda fut: heard.append((name, fut.result().outcome))

        group.writes.submit(rep(b"a"), request_id=7, on_done=listener("first"))
        group.writes.submit(rep(b"a"), request_id=7, on_done=listener("joined"))   # in flight: joins the first
        group.writes.submit(rep(b"b"), on_done=lambda fut: 1 / 0)   # a broken listener stops nothing
        group.writes.submit(rep(b"c"), on_done=listener("plain"))
        group.drive()
        assert heard == [("first", Outcome.OK), ("plain", Outcome.OK)]   # during the apply, no loop round
        await asyncio.sleep(0)
        assert heard[2:] == [("joined", Outcome.OK)]   # the twin follows its first attempt's done-callback
        group.writes.submit(rep(b"a"), request_id=7, on_done=listener("applied"))   # answered at once
        assert heard[3:] == [("applied", Outcome.OK)]
        assert group.storage.get_entry(TABLE, b"c") is not None

    run(go())


def test_conditions_are_checked_in_log_order(group):
    async def go():
        put = group.writes.submit(rep(b"c"))
        group.drive()
        seq = put.result().value[1]
        absent = group.writes.submit(rep(b"c", b"x"), if_absent=True)
        ok = group.writes.submit(rep(b"c", b"y"), if_seq=seq)
        stale = group.writes.submit(rep(b"c", b"z"), if_seq=seq)        # the one before moved the seq
        group.drive()
        assert absent.result().outcome is Outcome.CONDITION_FAILED and absent.result().value == seq
        assert ok.result().outcome is Outcome.OK
        assert stale.result().outcome is Outcome.CONDITION_FAILED
        assert group.storage.get_entry(TABLE, b"c").value == b"y"
        gone = group.writes.submit(rep(b"c", None), if_seq=ok.result().value[1])
        group.drive()
        assert gone.result().outcome is Outcome.OK
        fresh = group.writes.submit(rep(b"c", b"w"), if_absent=True)    # a tombstone counts as absent
        group.drive()
        assert fresh.result().outcome is Outcome.OK

    run(go())


def test_dedup_survives_a_restart_through_the_log(tmp_path):
    async def first_life():
        g = OneMemberGroup(str(tmp_path / "rg"))
        fut = g.writes.submit(rep(b"d"), request_id=7)
        g.drive()
        g.close()          # the engine holds it; so does the log, with the request id
        return fut.result().value[1]

    seq = run(first_life())

    async def second_life():
        # A crash loses the memtable (the engine runs without its WAL): wipe the engine's
        # view by replaying from applied index 0, as a restart after a crash does.
        g = OneMemberGroup(str(tmp_path / "rg"), epoch=2)
        retry = g.writes.submit(rep(b"d", b"again"), request_id=7)
        g.drive()
        assert retry.result().outcome is Outcome.OK and retry.result().value[1] == seq
        g.close()

    run(second_life())


def test_a_retry_of_a_write_already_in_the_log_waits_for_that_entry(group):
    """A new leader holds, unapplied, the entry a deposed leader proposed for
    request 99; the router's retry of 99 must get that entry's outcome, not a
    second copy of the write."""
    from server.node import entry_payload
    from server.replication.messages import Entry, EntryKind

    async def go():
        index = group.replica.log.last_index + 1
        batch = write_batch.encode_one(write_batch.VALUE, TABLE, b"r", b"first", sequencer.encode(9, 0, 5),
                                       applied_index=index)
        entry = Entry(group.replica.epoch, index, EntryKind.WRITE, entry_payload.encode([(99, 0, 1)], batch))
        group.writes.observe([entry])                       # in the log, not applied yet
        retry = group.writes.submit(rep(b"r", b"second"), request_id=99)
        group.writes.propose_pending()
        assert group.replica.log.last_index == index - 1    # nothing proposed for the retry
        group.writes.apply([entry])                         # the old entry commits and applies
        assert retry.result().outcome is Outcome.OK
        assert retry.result().value == (index, sequencer.encode(9, 0, 5))
        assert group.storage.get_entry(TABLE, b"r").value == b"first"

    run(go())


def test_a_retry_whose_logged_entry_was_replaced_is_proposed_again(group):
    from server.node import entry_payload
    from server.replication.messages import Entry, EntryKind

    async def go():
        index = group.replica.log.last_index + 1
        stale = Entry(group.replica.epoch, index, EntryKind.WRITE, entry_payload.encode(
            [(55, 0, 1)], write_batch.encode_one(write_batch.VALUE, TABLE, b"s", b"lost", sequencer.encode(9, 0, 5),
                                                 applied_index=index)))
        group.writes.observe([stale])                       # then truncated: another entry commits at index
        retry = group.writes.submit(rep(b"s", b"retried"), request_id=55)
        other = Entry(group.replica.epoch, index, EntryKind.WRITE, entry_payload.encode(
            [], write_batch.encode_one(write_batch.VALUE, TABLE, b"o", b"x", sequencer.encode(9, 0, 6),
                                       applied_index=index)))
        group.writes.apply([other])
        assert not retry.done()                             # back in the queue, not answered
        group.writes.propose_pending()
        group.drive()
        assert retry.result().outcome is Outcome.OK
        assert group.storage.get_entry(TABLE, b"s").value == b"retried"

    run(go())


def test_a_write_that_commits_after_its_tables_drop_is_voided_not_acknowledged(group):
    async def go():
        first = group.writes.submit(rep(b"t"))
        group.drive()
        assert first.result().outcome is Outcome.OK
        dropped = group.writes.propose_drop(TABLE)          # the drop entry first...
        late = group.writes.submit(rep(b"late"))            # ...then a write from a stale router
        group.drive()
        assert dropped.result().outcome is Outcome.OK
        assert late.result().outcome is Outcome.TABLE_DROPPED
        assert group.storage.get_entry(TABLE, b"late") is None and group.storage.get_entry(TABLE, b"t") is None

    run(go())


# ---------------------------------------------------------------- learner writes

def heard(log: list, name: str):
    """A listener that records (name, outcome, value) for each call."""
    def listener(fut):
        r = fut.result()
        log.append((name, r.outcome, r.value))
    return listener


def test_a_learner_write_is_answered_once_durable_on_the_leader_and_not_again(group):
    async def go():
        group.learners = True
        calls: list = []
        fut = group.writes.submit(rep(b"l"), on_done=heard(calls, "learner"), learner=True)
        group.writes.submit(rep(b"p"), on_done=heard(calls, "plain"))
        group.drive()
        (name, outcome, (index, seqs, voters)), (name2, outcome2, _) = calls
        assert (name, outcome, voters) == ("learner", Outcome.DURABLE_ON_LEADER, (1,))
        assert (name2, outcome2) == ("plain", Outcome.OK)   # asked for no learner answer
        assert fut.result().outcome is Outcome.OK and fut.result().value == (index, seqs)   # still settled at apply
        assert group.storage.get_entry(TABLE, b"l").seq == seqs
        assert group.writes.early_answers == 1

    run(go())


def test_a_learner_write_behind_an_unapplied_table_drop_is_answered_at_apply(group):
    async def go():
        group.learners = True
        calls: list = []
        group.writes.propose_drop(TABLE)   # in the same entry batch, ahead of the write
        group.writes.submit(rep(b"late"), on_done=heard(calls, "late"), learner=True)
        group.drive()
        assert [(n, o) for n, o, _ in calls] == [("late", Outcome.TABLE_DROPPED)]
        calls.clear()
        group.writes.submit(rep(b"later"), on_done=heard(calls, "later"), learner=True)   # the drop applied
        group.drive()
        assert [(n, o) for n, o, _ in calls] == [("later", Outcome.TABLE_DROPPED)]
        assert group.writes.early_answers == 0

    run(go())


def test_no_learner_answers_under_a_joint_config(group, monkeypatch):
    async def go():
        group.learners = True
        joint = Config(frozenset({1}), outgoing_voters=frozenset({1, 2, 3}))
        monkeypatch.setattr(type(group.replica), "config", property(lambda self: joint))
        calls: list = []
        group.writes.submit(rep(b"j"), on_done=heard(calls, "joint"), learner=True)
        group.drive()
        assert [(n, o) for n, o, _ in calls] == [("joint", Outcome.OK)]

    run(go())


def test_a_retry_that_joins_a_learner_write_hears_its_outcome_at_apply(group):
    async def go():
        group.learners = True
        calls: list = []
        group.writes.submit(rep(b"a"), request_id=5, on_done=heard(calls, "first"), learner=True)
        twin = group.writes.submit(rep(b"a"), request_id=5, on_done=heard(calls, "twin"), learner=True)
        group.drive()
        await asyncio.sleep(0)   # the twin follows the first future's done-callback
        assert [(n, o) for n, o, _ in calls] == [("first", Outcome.DURABLE_ON_LEADER), ("twin", Outcome.OK)]
        assert twin.result().outcome is Outcome.OK

    run(go())
