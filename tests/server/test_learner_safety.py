"""The client as a learner: a third review's repros (each failed before its fix, 1c605a4..eb93bec).

1. A follower that lost its disk rejoins and gets its vote back once it has
   caught up to the leader's *commit index* (ReplicaHost.recovering,
   README "Not covered yet": "answers no PromiseRequest until it has
   applied, durably, the commit index of the first Append"). That rule is
   safe only while the leader's commit index is the highest index anyone
   was told committed. A learner counts a write committed from the
   follower's Learn acknowledgement *before* the leader hears it: the
   leader's commit index is below the write, the wiped follower catches up
   to that, votes, and with the third member elects a leader without the
   write. The learner's caller was told OK; the write is gone.
"""
from __future__ import annotations

import asyncio
import os

from host_group import RG, TABLE, HostGroup, rep
from test_catch_up import _rehost_wiped

from server.node.learn_board import LearnBoard
from server.node.learn_feed import ACK
from server.node.write_path import Outcome
from server.proto import data_pb2
from server.replication.messages import Append, AppendAck
from server.replication.options import ReplicaOptions


def test_a_learner_counted_write_survives_its_acknowledging_follower_losing_its_disk(tmp_path):
    async def go():
        # One entry per Append: the wiped follower's catch-up can stop between entries.
        g = HostGroup(os.fspath(tmp_path), ReplicaOptions(max_append_entries=1, learner_reads=True))
        board = LearnBoard(lambda node: None)   # fed by hand with follower 2's Learn copy
        try:
            g.down = {3}                                  # 3 is away: 1 leads epoch 1 with 2
            await g.elect(1, 1, (1, 2))
            h1 = g.hosts[1]
            heard = []
            h1.submit_write(rep(b"w", b"learned"), on_done=lambda f: heard.append(f.result()),
                            wake=False, learner=True)
            h1.start_client_work()
            # 2 makes W durable and acknowledges it; its Learn copy reaches the
            # client, its copy to 1 is still on the wire when 2's node dies.
            await g.pump(hold=lambda m: isinstance(m, AppendAck) and m.sender == 2)
            (told,) = heard
            assert told.outcome is Outcome.DURABLE_ON_LEADER
            index, seqs, voters = told.value
            assert g.hosts[2].last_ack == (1, index)
            caller = asyncio.get_running_loop().create_future()
            board.settle(RG, caller, data_pb2.WriteResponse(code=data_pb2.DURABLE_ON_LEADER, epoch=told.epoch,
                                                            leader=1, index=index, seqs=seqs, voters=voters))
            board.learned(2, ACK.pack(RG, *g.hosts[2].last_ack))
            assert caller.result().code == data_pb2.OK     # the caller was told OK
            assert h1.replica.log.commit_index < index     # the leader does not know W committed

            # 2's disk is gone; the node hosts it again (recovering, Node._host).
            h2 = await _rehost_wiped(g, 2)
            # 1 catches 2 up to its commit index, then fails before W reaches 2.
            await g.pump(ticks=30, drop=lambda m: m.sender == 1 and isinstance(m, Append)
                         and any(e.index >= index for e in m.entries))
            # Unsafe: 2 votes again without W (the leader's commit index was below it).
            assert h2.recovering or h2.replica.log.last_index >= index, (
                "the wiped follower got its vote back without the write a learner was told OK: "
                f"caught up to the leader's commit index, {h2.replica.log.last_index} < {index}")
            await g.pump(ticks=30)                        # W reaches 2 after all: it votes again
            assert not h2.recovering
            g.down = {1}
            await g.elect(2, 2, (2, 3))                  # 2 and 3: a quorum of the config
            await g.pump(ticks=4)
            h2 = g.hosts[2]
            assert h2.replica.log.commit_index >= index
            assert h2.get(TABLE, b"w") is not None
        finally:
            await board.close()
            await g.close()

    asyncio.run(go())


# 2. (latency, not safety) A get of a key no learner write touches is to be
# served "as without learners" (README, ReplicaHost._start_reads: floor 0).
# But a leader's reads wait in one queue in arrival order, served from its
# head only (ReadIndexTracker.pop_servable: "read indexes are non-decreasing
# in arrival order", invariant 3, no longer true with floors): a clean get
# that arrives after a scan (or a get of a told key) waits for every learner
# write told of, however long its quorum takes.
def test_a_clean_get_is_not_held_behind_a_scan_waiting_for_learner_writes(tmp_path):
    from test_replica_host import FOLLOWERS, ME, _idle, _Leader
    from test_replica_host import TABLE as T

    from engine._native import sequencer, write_batch
    from server.replication.messages import Heartbeat, HeartbeatAck

    async def go():
        leader = _Leader(os.fspath(tmp_path), ReplicaOptions(learner_reads=True))
        await leader.start()
        h = leader.host
        try:
            told = []
            x = write_batch.encode_one(write_batch.VALUE, T, b"x", b"1", sequencer.encode(5, 0, 9))
            h.submit_write(x, on_done=lambda f: told.append(f.result()), wake=False, learner=True)
            h.start_client_work()
            await _idle(h)
            assert told[0].outcome is Outcome.DURABLE_ON_LEADER        # no follower acknowledged x yet
            served: dict[str, object] = {}
            h.submit_read(lambda: "scan", on_done=lambda f: served.setdefault("scan", f.result()), wake=False)
            h.start_client_work()
            await _idle(h)
            h.submit_read(lambda: h.get(T, b"y"), on_done=lambda f: served.setdefault("get y", f.result()),
                          wake=False, key=T.to_bytes(4, "big") + b"y")
            h.start_client_work()
            await _idle(h)
            last_round = max(m.round for m in leader.sent if isinstance(m, Heartbeat))
            h.step(HeartbeatAck(epoch=1, sender=FOLLOWERS[0], recipient=ME, round=last_round), wake=False)
            h.acknowledged()                                             # both reads confirmed
            await _idle(h)
            assert "scan" not in served                                  # waits for x, rightly
            assert "get y" in served, "a get of an untouched key waits for a learner write to another key"
        finally:
            await leader.close()

    asyncio.run(go())
