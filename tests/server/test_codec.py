"""Every replication message survives the protobuf round trip unchanged (server/node/codec.py)."""
from __future__ import annotations

import pytest

from server.node import codec
from server.proto import replication_pb2 as pb
from server.replication.messages import (
    Append,
    AppendAck,
    AppendResult,
    Appointment,
    Config,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatAck,
    LogPosition,
    Message,
    MessageType,
    NotMyLeader,
    PromiseRequest,
    PromiseResponse,
    Role,
    SnapshotAck,
    SnapshotChunk,
    StatusReport,
)

H = dict(epoch=7, sender=2, recipient=3)
SAMPLES: list[Message] = [
    PromiseRequest(**H),
    PromiseResponse(**H, last=LogPosition(6, 41), commit_index=40),
    Appointment(**H, config=Config(frozenset({1, 2, 3}), frozenset({1, 2, 4}), frozenset({5}))),
    NotMyLeader(**H, rejected_epoch=5, leader_id=1),
    NotMyLeader(**H, rejected_epoch=5, leader_id=None),
    Append(**H, prev=LogPosition(6, 41), commit_index=40,
           entries=(Entry(7, 42, EntryKind.NOOP), Entry(7, 43, EntryKind.WRITE, b"\x00batch\xff" * 100))),
    Append(**H, prev=LogPosition(0, 0)),
    AppendAck(**H, result=AppendResult.LOG_MISMATCH, index=41, hint_index=30),
    AppendAck(**H, result=AppendResult.LOG_LOST, index=41, hint_index=0, lost_id=1 << 62),
    Heartbeat(**H, commit_index=43, round=9, lease_ns=300_000_000, sent_at_ns=12_345_678_901),
    HeartbeatAck(**H, round=9, lease_ns=400_000_000),
    SnapshotChunk(**H, snapshot=LogPosition(6, 100), offset=3, data=b"chunk" * 1000, done=True),
    SnapshotAck(**H, snapshot=LogPosition(6, 100), next_offset=4, installed=True),
    StatusReport(**H, role=Role.LEADER, last=LogPosition(7, 43), commit_index=43, applied_index=42,
                 match=((1, 43), (3, 40))),
    StatusReport(**H, role=Role.LEADER, last=LogPosition(7, 43), commit_index=43, applied_index=42,
                 quorum_contact=False),
]


def test_samples_cover_every_message_type():
    assert {type(m).TYPE for m in SAMPLES} == set(MessageType)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_through_the_wire(msg):
    env = codec.encode(12, msg, pb.Envelope())
    wire = pb.EnvelopeBatch(envelopes=[env]).SerializeToString()
    (back,) = pb.EnvelopeBatch.FromString(wire).envelopes
    assert codec.decode(back) == (12, msg)


def test_empty_or_unknown_bodies_are_rejected():
    with pytest.raises(ValueError, match="no known body"):
        codec.decode(pb.Envelope(rg=1))
    env = codec.encode(1, Append(**H, entries=(Entry(7, 1, EntryKind.NOOP),)), pb.Envelope())
    env.append.entries[0].kind = 99
    with pytest.raises(ValueError, match="unknown kind"):
        codec.decode(env)
    ack = codec.encode(1, AppendAck(**H, result=AppendResult.ACCEPTED, index=3), pb.Envelope())
    ack.append_ack.result = 99
    with pytest.raises(ValueError, match="unknown result"):
        codec.decode(ack)
