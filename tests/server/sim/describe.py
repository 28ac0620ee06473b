"""One-line text for messages and entries: the scenario scripts' output format.

    0->1 PromiseRequest e=2
    1->0 PromiseResponse e=2 last=1.3 commit=3
    1->2 Append e=1 prev=1.2 commit=2 [1.3 k=v, 1.4 noop]
    2->1 AppendAck e=1 accepted 4           2->1 AppendAck e=1 rejected prev=5 hint=3
"""
from __future__ import annotations

from server.replication.messages import (
    Append,
    AppendAck,
    AppendResult,
    Appointment,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatAck,
    Message,
    NotMyLeader,
    PromiseRequest,
    PromiseResponse,
    SnapshotAck,
    SnapshotChunk,
    StatusReport,
)


def describe_entry(e: Entry) -> str:
    if e.kind is EntryKind.NOOP:
        return f"{e.epoch}.{e.index} noop"
    return f"{e.epoch}.{e.index} {e.payload.decode(errors='replace')}"


def describe_entries(entries: list[Entry] | tuple[Entry, ...]) -> str:
    return "[" + ", ".join(describe_entry(e) for e in entries) + "]"


def describe(m: Message) -> str:
    head = f"{m.sender}->{m.recipient} {type(m).__name__} e={m.epoch}"
    if isinstance(m, PromiseRequest):
        return head
    if isinstance(m, PromiseResponse):
        return f"{head} last={m.last} commit={m.commit_index}"
    if isinstance(m, Appointment):
        return f"{head} {m.config}"
    if isinstance(m, NotMyLeader):
        return f"{head} rejected={m.rejected_epoch} leader={m.leader_id}"
    if isinstance(m, Append):
        return f"{head} prev={m.prev} commit={m.commit_index} {describe_entries(m.entries)}"
    if isinstance(m, AppendAck):
        if m.result is AppendResult.ACCEPTED:
            return f"{head} accepted {m.index}"
        lost = " (data lost)" if m.result is AppendResult.LOG_LOST else ""
        return f"{head} rejected prev={m.index} hint={m.hint_index}{lost}"
    if isinstance(m, (Heartbeat, HeartbeatAck)):
        lease = f" lease={m.lease_ns // 1_000_000}ms" if m.lease_ns else ""
        if isinstance(m, Heartbeat):
            return f"{head} commit={m.commit_index} round={m.round}{lease}"
        return f"{head} round={m.round}{lease}"
    if isinstance(m, SnapshotChunk):
        return f"{head} snapshot={m.snapshot} offset={m.offset}" + (" done" if m.done else "")
    if isinstance(m, SnapshotAck):
        tail = "installed" if m.installed else f"next={m.next_offset}"
        return f"{head} snapshot={m.snapshot} {tail}"
    if isinstance(m, StatusReport):
        lost = " (hears no quorum)" if not m.quorum_contact else ""
        return f"{head} {m.role.name} last={m.last} commit={m.commit_index}{lost}"
    return head  # pragma: no cover
