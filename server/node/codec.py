"""Codec: replication messages (server/replication/messages.py) <-> protobuf Envelopes.

Purpose: the one place that knows both shapes. Every field of every message
class maps to one field of server/proto/replication.proto; a message the codec
cannot map is a programming error (TypeError), an Envelope it cannot decode is
a peer's error (ValueError).

Cost: per message, not per record (a WRITE entry's payload is one whole write
batch; its bytes are passed through, never parsed here).
"""
from __future__ import annotations

from collections.abc import Callable

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
    NotMyLeader,
    PromiseRequest,
    PromiseResponse,
    Role,
    SnapshotAck,
    SnapshotChunk,
    StatusReport,
)

_ENTRY_KINDS = {k.value: k for k in EntryKind}
_APPEND_RESULTS = {r.value: r for r in AppendResult}


def _pos(p: pb.LogPosition) -> LogPosition:
    return LogPosition(p.epoch, p.index)


def _set_pos(target: pb.LogPosition, p: LogPosition) -> None:
    target.epoch = p.epoch
    target.index = p.index


def config_to_pb(c: Config, target: pb.Config) -> pb.Config:
    target.voters.extend(sorted(c.voters))
    target.outgoing_voters.extend(sorted(c.outgoing_voters))
    target.learners.extend(sorted(c.learners))
    return target


def config_from_pb(c: pb.Config) -> Config:
    return Config(frozenset(c.voters), frozenset(c.outgoing_voters), frozenset(c.learners))


def _entry_from_pb(e: pb.Entry) -> Entry:
    kind = _ENTRY_KINDS.get(e.kind)
    if kind is None:
        raise ValueError(f"entry {e.epoch}.{e.index} has unknown kind {e.kind}")
    return Entry(e.epoch, e.index, kind, e.payload)


def _fill_entries(target, entries: tuple[Entry, ...]) -> None:
    for e in entries:
        t = target.add()
        t.epoch = e.epoch
        t.index = e.index
        t.kind = e.kind
        t.payload = e.payload


def status_to_pb(msg: StatusReport, b: pb.StatusReport) -> pb.StatusReport:
    b.role = msg.role
    _set_pos(b.last, msg.last)
    b.commit_index = msg.commit_index
    b.applied_index = msg.applied_index
    for member, index in msg.match:
        m = b.match.add()
        m.member = member
        m.match_index = index
    if not msg.quorum_contact:
        b.quorum_lost = True
    return b


def encode(rg: int, msg: Message, env: pb.Envelope) -> pb.Envelope:
    """Fills `env` (a fresh Envelope, usually added to a batch) from `msg`."""
    env.rg = rg
    env.epoch = msg.epoch
    env.sender = msg.sender
    env.recipient = msg.recipient
    t = type(msg)
    if t is Append:
        b = env.append
        _set_pos(b.prev, msg.prev)
        b.commit_index = msg.commit_index
        b.last_index = msg.last_index
        _fill_entries(b.entries, msg.entries)
    elif t is AppendAck:
        b = env.append_ack
        b.result = msg.result
        b.index = msg.index
        b.hint_index = msg.hint_index
        if msg.lost_id:
            b.lost_id = msg.lost_id
    elif t is Heartbeat:
        b = env.heartbeat
        b.commit_index = msg.commit_index
        b.round = msg.round
        b.lease_ns = msg.lease_ns
        b.sent_at_ns = msg.sent_at_ns
        b.last_index = msg.last_index
    elif t is HeartbeatAck:
        b = env.heartbeat_ack
        b.round = msg.round
        b.lease_ns = msg.lease_ns
    elif t is PromiseRequest:
        env.promise_request.SetInParent()
    elif t is PromiseResponse:
        _set_pos(env.promise_response.last, msg.last)
        env.promise_response.commit_index = msg.commit_index
    elif t is Appointment:
        config_to_pb(msg.config, env.appointment.config)
    elif t is NotMyLeader:
        env.not_my_leader.rejected_epoch = msg.rejected_epoch
        env.not_my_leader.leader_id = msg.leader_id or 0
    elif t is SnapshotChunk:
        b = env.snapshot_chunk
        _set_pos(b.snapshot, msg.snapshot)
        b.offset = msg.offset
        b.data = msg.data
        b.done = msg.done
    elif t is SnapshotAck:
        b = env.snapshot_ack
        _set_pos(b.snapshot, msg.snapshot)
        b.next_offset = msg.next_offset
        b.installed = msg.installed
    elif t is StatusReport:
        status_to_pb(msg, env.status_report)
    else:
        raise TypeError(f"no wire form for {t.__name__}")
    return env


def _append(env: pb.Envelope) -> Append:
    b = env.append
    p = b.prev
    # Positional (in the dataclass's field order): this runs for every Append a follower gets.
    return Append(env.epoch, env.sender, env.recipient, LogPosition(p.epoch, p.index),
                  tuple([_entry_from_pb(e) for e in b.entries]), b.commit_index, b.last_index)


def _append_ack(env: pb.Envelope) -> AppendAck:
    b = env.append_ack
    result = _APPEND_RESULTS.get(b.result)
    if result is None:
        raise ValueError(f"append_ack for rg {env.rg} has unknown result {b.result}")
    return AppendAck(env.epoch, env.sender, env.recipient, result, b.index, b.hint_index, b.lost_id)


def _decode_status(env: pb.Envelope, h: dict) -> Message:
    b = env.status_report
    return StatusReport(**h, role=Role(b.role), last=_pos(b.last), commit_index=b.commit_index,
                        applied_index=b.applied_index, match=tuple((m.member, m.match_index) for m in b.match),
                        quorum_contact=not b.quorum_lost)


# Append, AppendAck, Heartbeat and HeartbeatAck are decoded before this table is consulted (decode()).
_DECODERS: dict[str, Callable[[pb.Envelope, dict], Message]] = {
    "promise_request": lambda env, h: PromiseRequest(**h),
    "promise_response": lambda env, h: PromiseResponse(**h, last=_pos(env.promise_response.last),
                                                       commit_index=env.promise_response.commit_index),
    "appointment": lambda env, h: Appointment(**h, config=config_from_pb(env.appointment.config)),
    "not_my_leader": lambda env, h: NotMyLeader(**h, rejected_epoch=env.not_my_leader.rejected_epoch,
                                                leader_id=env.not_my_leader.leader_id or None),
    "snapshot_chunk": lambda env, h: SnapshotChunk(
        **h, snapshot=_pos(env.snapshot_chunk.snapshot), offset=env.snapshot_chunk.offset,
        data=env.snapshot_chunk.data, done=env.snapshot_chunk.done),
    "snapshot_ack": lambda env, h: SnapshotAck(
        **h, snapshot=_pos(env.snapshot_ack.snapshot), next_offset=env.snapshot_ack.next_offset,
        installed=env.snapshot_ack.installed),
    "status_report": _decode_status,
}


def decode(env: pb.Envelope) -> tuple[int, Message]:
    """(rg, message) of an Envelope. Raises ValueError for an empty or unknown body."""
    which = env.WhichOneof("body")
    # The messages of every write and every read round first, positionally,
    # without the header dict (in the dataclasses' field order).
    if which == "append_ack":
        return env.rg, _append_ack(env)
    if which == "append":
        return env.rg, _append(env)
    if which == "heartbeat_ack":
        b = env.heartbeat_ack
        return env.rg, HeartbeatAck(env.epoch, env.sender, env.recipient, b.round, b.lease_ns)
    if which == "heartbeat":
        b = env.heartbeat
        return env.rg, Heartbeat(env.epoch, env.sender, env.recipient, b.commit_index, b.round, b.lease_ns,
                                 b.sent_at_ns, b.last_index)
    decoder = _DECODERS.get(which) if which else None
    if decoder is None:
        raise ValueError(f"envelope for rg {env.rg} has no known body ({which!r})")
    return env.rg, decoder(env, {"epoch": env.epoch, "sender": env.sender, "recipient": env.recipient})
