"""ReplicaHost (server/node/replica_host.py) carrying out Readys around a real
log store and engine: a leader of a 3-member group whose followers are played
by hand (their acknowledgements built from the Appends the host sent).

What is checked here: when an acknowledgement completes a quorum and the loop
is between Readys, acknowledged() applies the entry and answers its writer
inside the call, without waking the loop; when the loop is busy, the loop
carries that work out instead, and nothing is answered twice or lost."""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import server.node.replica_host as replica_host_module
from engine._native import sequencer, write_batch
from server.node.replica_host import ReplicaHost
from server.node.replica_storage import ReplicaStorage
from server.node.write_path import Outcome
from server.replication.messages import (
    Append,
    AppendAck,
    Appointment,
    Config,
    Heartbeat,
    HeartbeatAck,
    Message,
    PromiseRequest,
    Role,
)
from server.replication.options import ReplicaOptions

ME, FOLLOWERS, RG, TABLE = 1, (2, 3), 1, 1


def _rep(key: bytes) -> bytes:
    return write_batch.encode_one(write_batch.VALUE, TABLE, key, b"v", sequencer.encode(1, 0, 9))


async def _idle(host: ReplicaHost) -> None:
    """Until the host's loop has carried out everything it was given (bounded)."""
    for _ in range(10_000):
        if not host._busy and host._handoff is None and not host._wake.is_set() \
                and not host.replica.has_ready():
            return
        await asyncio.sleep(0)
    raise AssertionError("the host's loop did not come to rest")


class _Leader:
    """A started ReplicaHost appointed leader of {1, 2, 3}, its NOOP committed."""

    def __init__(self, directory: str, options: ReplicaOptions | None = None):
        self.sent: list[Message] = []
        self.io = ThreadPoolExecutor(1)
        self.host = ReplicaHost(RG, ME, ReplicaStorage(directory, node_id=ME), options or ReplicaOptions(),
                                lambda to, msg: self.sent.append(msg), self.io)

    async def start(self) -> None:
        h = self.host
        h.start()
        h.step(PromiseRequest(epoch=1, sender=0, recipient=ME))
        await _idle(h)
        h.step(Appointment(epoch=1, sender=0, recipient=ME, config=Config(frozenset({ME, *FOLLOWERS}))))
        await _idle(h)
        self.acknowledge(FOLLOWERS[0])     # its NOOP committed: it serves
        await _idle(h)
        assert h.replica.role is Role.LEADER

    def write(self, key: bytes, answers: list, **condition) -> None:
        """A client's write as the Data service submits it: no wake-up, then start_client_work()."""
        self.host.submit_write(_rep(key), on_done=lambda f: answers.append(f.result().outcome), wake=False,
                               **condition)
        self.host.start_client_work()

    def acknowledge(self, member: int) -> None:
        """`member` acknowledges the last Append the host sent it, as Node.deliver_all steps it."""
        last = max(m.entries[-1].index for m in self.sent
                   if isinstance(m, Append) and m.recipient == member and m.entries)
        self.host.step(AppendAck(epoch=1, sender=member, recipient=ME, index=last), wake=False)
        self.host.acknowledged()

    async def close(self) -> None:
        await self.host.close()
        self.io.shutdown()


async def _leader_with_k1(tmp_path) -> tuple[_Leader, ReplicaHost, list]:
    """A started leader that wrote k1: durable here and sent to the followers,
    acknowledged by none; `answers` collects the writes' outcomes."""
    leader = _Leader(os.fspath(tmp_path))
    await leader.start()
    answers: list = []
    leader.write(b"k1", answers)
    await _idle(leader.host)
    return leader, leader.host, answers


def test_a_quorum_completed_while_the_loop_rests_is_answered_inside_acknowledged(tmp_path):
    async def run():
        leader, h, answers = await _leader_with_k1(tmp_path)   # k1 durable here and sent, not acknowledged
        assert answers == []
        leader.acknowledge(FOLLOWERS[0])    # with ours: a majority
        assert answers == [Outcome.OK]      # no await in between
        assert not h._wake.is_set()         # and the loop was not woken for it
        assert h.get(TABLE, b"k1") is not None
        leader.acknowledge(FOLLOWERS[1])    # the other member's first: it is sent what it lacks, at once
        assert any(isinstance(m, Append) and m.recipient == FOLLOWERS[1] and m.entries
                   and m.entries[-1].index == h.replica.log.last_index for m in leader.sent)
        await _idle(h)
        assert len(answers) == 1
        await leader.close()

    asyncio.run(run())


def test_an_acknowledgement_during_a_ready_is_left_to_the_loop(tmp_path):
    async def run():
        leader, h, answers = await _leader_with_k1(tmp_path)
        leader.write(b"k2", answers)        # begun here, handed to the loop (its fsync is to come)
        assert h._handoff is not None
        leader.acknowledge(FOLLOWERS[0])    # covers k1 (and k2, whose Append left already)
        assert answers == []                # the loop's Ready goes first
        await _idle(h)
        assert answers == [Outcome.OK, Outcome.OK]
        await leader.close()

    asyncio.run(run())


def test_a_conditional_write_waiting_for_the_apply_is_proposed_when_an_acknowledgement_applies(tmp_path):
    async def run():
        leader, h, answers = await _leader_with_k1(tmp_path)
        proposed = h.replica.log.last_index
        leader.write(b"k2", answers, if_absent=True)   # k1 is not applied yet: the condition waits (write_path.py)
        await _idle(h)
        assert h.replica.log.last_index == proposed
        leader.acknowledge(FOLLOWERS[0])    # k1 applies here, so k2's condition can be checked now
        assert answers == [Outcome.OK]
        await _idle(h)
        assert h.replica.log.last_index == proposed + 1   # proposed without a tick
        leader.acknowledge(FOLLOWERS[0])
        assert answers == [Outcome.OK, Outcome.OK]
        await leader.close()

    asyncio.run(run())


def test_a_tick_wakes_the_loop_only_when_it_made_work(tmp_path):
    """With hundreds of replicas on a node, a loop wake-up per replica per tick
    was most of an idle node's CPU: a tick that makes no Ready leaves it asleep."""
    async def run():
        leader = _Leader(os.fspath(tmp_path))   # heartbeat_ticks=2
        await leader.start()
        h = leader.host
        leader.acknowledge(FOLLOWERS[1])
        await _idle(h)
        h.tick()                            # no heartbeat due yet: nothing to do
        assert not h._wake.is_set()
        h.tick()                            # heartbeats due: a Ready
        assert h._wake.is_set()
        await _idle(h)
        h.compact_due = True                # the node's maintenance asks for a compaction
        h.tick()
        assert h._wake.is_set()
        await _idle(h)
        assert not h.compact_due
        await leader.close()

    asyncio.run(run())


def test_a_follower_answers_a_read_rounds_heartbeat_inside_acknowledged(tmp_path):
    async def run():
        sent: list[Message] = []
        io = ThreadPoolExecutor(1)
        h = ReplicaHost(RG, FOLLOWERS[0], ReplicaStorage(os.fspath(tmp_path), node_id=FOLLOWERS[0]),
                        ReplicaOptions(), lambda to, msg: sent.append(msg), io)
        h.start()
        h.step(Heartbeat(epoch=1, sender=ME, recipient=FOLLOWERS[0], commit_index=0, round=6), wake=False)
        h.acknowledged()       # a new epoch to persist first: fsynced by the loop
        await _idle(h)
        assert [(type(m), m.round) for m in sent] == [(HeartbeatAck, 6)]
        h.step(Heartbeat(epoch=1, sender=ME, recipient=FOLLOWERS[0], commit_index=0, round=7), wake=False)
        h.acknowledged()
        assert [(type(m), m.round, m.recipient) for m in sent[1:]] == [(HeartbeatAck, 7, ME)]   # no await between
        assert not h._wake.is_set()
        await h.close()
        io.shutdown()

    asyncio.run(run())


def test_under_a_lease_a_read_is_served_inside_start_client_work_without_a_round(tmp_path, monkeypatch):
    """Leases (README LL1-LL6) on the host's clock (lease_clock, faked here): once a
    heartbeat round is acknowledged, reads are answered at once, with no Heartbeat
    sent for them, until the lease has run out on that clock."""
    now = [10_000_000_000]
    monkeypatch.setattr(replica_host_module, "lease_clock", lambda: now[0])
    lease = 300_000_000

    async def run():
        leader = _Leader(os.fspath(tmp_path), ReplicaOptions(lease_ns=lease, heartbeat_ticks=1))
        await leader.start()
        h = leader.host
        answers = []

        def read():
            h.submit_read(lambda: h.get(TABLE, b"k"), on_done=lambda f: answers.append(f.result().outcome),
                          wake=False)
            h.start_client_work()

        h.tick()                            # a heartbeat round, started at `now`
        await _idle(h)
        rounds = [m.round for m in leader.sent if isinstance(m, Heartbeat)]
        assert rounds and rounds[-1] >= 1
        h.step(HeartbeatAck(epoch=1, sender=FOLLOWERS[0], recipient=ME, round=rounds[-1], lease_ns=lease),
               wake=False)
        h.acknowledged()                    # with ours, a quorum holding for it: the lease runs until now + lease
        before = len(leader.sent)
        now[0] += lease - 1
        read()
        assert answers == [Outcome.OK]      # served inside the call
        assert not any(isinstance(m, Heartbeat) for m in leader.sent[before:])
        now[0] += 1                         # the lease has run out on the host's clock
        read()
        assert answers == [Outcome.OK]      # this one waits for a round
        await _idle(h)
        assert any(isinstance(m, Heartbeat) for m in leader.sent[before:])
        await leader.close()

    asyncio.run(run())


def test_a_replica_rejoining_with_a_wiped_disk_holds_its_promise_from_the_start(tmp_path):
    """LL3 for a wiped disk: the node knows (recovering), the replica's empty state does not."""
    async def run():
        io = ThreadPoolExecutor(1)
        options = ReplicaOptions(lease_ns=300_000_000)
        wiped = ReplicaHost(RG, 2, ReplicaStorage(os.fspath(tmp_path / "a"), node_id=2), options,
                            lambda to, msg: None, io, recovering=True)
        fresh = ReplicaHost(RG, 3, ReplicaStorage(os.fspath(tmp_path / "b"), node_id=3), options,
                            lambda to, msg: None, io)
        assert wiped.replica._holding() and not fresh.replica._holding()
        await wiped.close()
        await fresh.close()
        io.shutdown()

    asyncio.run(run())


def test_status_version_moves_whenever_the_report_changes(tmp_path):
    """The node rebuilds a replica's status report only when status_version
    moved (Node.status_envelopes): every change of the report or its figures
    must come with a move."""
    async def run():
        leader = _Leader(os.fspath(tmp_path))
        h = leader.host
        seen = (h.status_version, h.status_report(), h.ops_per_second, h.storage.log.fsyncs)
        changes = 0

        def check() -> None:
            nonlocal seen, changes
            now = (h.status_version, h.status_report(), h.ops_per_second, h.storage.log.fsyncs)
            if now[1:] != seen[1:]:
                assert now[0] != seen[0], f"report changed without a version move: {seen} -> {now}"
                changes += 1
            seen = now

        await leader.start()
        check()
        answers: list = []
        for i in range(3):
            leader.write(b"k%d" % i, answers)
            check()
            await _idle(h)
            check()
            leader.acknowledge(FOLLOWERS[i % 2])
            check()
            await _idle(h)
            check()
            h.tick()
            await _idle(h)
            check()
        assert answers == [Outcome.OK] * 3 and changes >= 6
        await leader.close()

    asyncio.run(run())
