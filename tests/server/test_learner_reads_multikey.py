"""Learner reads per key, with multi-key batches (a review's repro of 81cc6dc):
a get must see a multi-key batch that a learner's counted write follows in the log.

Entry i = [B: {x=5, y=5} (a plain client's batch, atomic), A: {x=1} (learner)].
The leader answers A DURABLE_ON_LEADER after its fsync; follower 2's
acknowledgement of i reaches A's LearnBoard (Learn feed) before the leader:
A counts i committed and its write returns OK. A then gets y. With only the
learner writes' keys told (x), y was "clean": the read's index was the
leader's commit index, below i, and it returned the old y (absent). Not
linearizable: x ends as 1, so B is ordered before A's write, which
completed before the get began; the get must see y=5. So the node tells the
keys of every record of every unapplied entry up to a told index
(WritePath._tell_upto).
"""
from __future__ import annotations

import asyncio
import os

import pytest

from engine._native import sequencer, write_batch
from server.node.write_path import Outcome
from server.replication.messages import Append, AppendAck, Heartbeat, HeartbeatAck
from server.replication.options import ReplicaOptions
from tests.server.test_replica_host import FOLLOWERS, ME, TABLE, _idle, _Leader


def _seq(n: int) -> bytes:
    return sequencer.encode(1000 + n, 0, 9)



@pytest.mark.parametrize("same_entry", [True, False])
def test_a_clean_get_sees_a_multi_key_batch_ordered_before_a_counted_learner_write(tmp_path, same_entry):
    async def run():
        leader = _Leader(os.fspath(tmp_path), ReplicaOptions(learner_reads=True))
        await leader.start()
        h = leader.host
        answers: dict[str, object] = {}
        b = write_batch.encode_many([(write_batch.VALUE, TABLE, b"x", b"5", _seq(1)),
                                     (write_batch.VALUE, TABLE, b"y", b"5", _seq(2))])
        a = write_batch.encode_one(write_batch.VALUE, TABLE, b"x", b"1", _seq(3))
        h.submit_write(b, on_done=lambda f: answers.setdefault("B", f.result()), wake=False)
        if not same_entry:   # B's entry durable (and sent) first, in a Ready of its own
            h.start_client_work()
            await _idle(h)
        h.submit_write(a, on_done=lambda f: answers.setdefault("A", f.result()), wake=False, learner=True)
        h.start_client_work()
        await _idle(h)
        told = answers["A"]
        assert told.outcome is Outcome.DURABLE_ON_LEADER
        index = told.value[0]
        assert "B" not in answers and h.replica.log.commit_index < index
        # Follower 2 holds entry `index` durably and acknowledges it: with the
        # leader's copy a majority (C1). A's board counts it from the Learn copy
        # of this acknowledgement; the leader's copy is still on its way.
        assert any(isinstance(m, Append) and m.recipient == FOLLOWERS[0] and m.entries
                   and m.entries[-1].index >= index for m in leader.sent)
        # A's write returned OK. Now A gets y.
        got = []
        h.submit_read(lambda: h.get(TABLE, b"y"), on_done=lambda f: got.append(f.result()), wake=False,
                      key=TABLE.to_bytes(4, "big") + b"y")
        h.start_client_work()
        await _idle(h)
        rounds = [m.round for m in leader.sent if isinstance(m, Heartbeat)]
        h.step(HeartbeatAck(epoch=1, sender=FOLLOWERS[0], recipient=ME, round=rounds[-1]), wake=False)
        h.acknowledged()
        await _idle(h)
        # The leader hears the acknowledgement too, at last (a fixed host serves the get now).
        h.step(AppendAck(epoch=1, sender=FOLLOWERS[0], recipient=ME, index=index), wake=False)
        h.acknowledged()
        await _idle(h)
        assert got, "the get was never served"
        assert got[0].outcome is Outcome.OK
        assert got[0].value is not None, "the get of y missed B's y=5, which precedes A's counted write of x"
        await leader.close()

    asyncio.run(run())
