from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogPosition(_message.Message):
    __slots__ = ("epoch", "index")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    index: int
    def __init__(self, epoch: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("epoch", "index", "kind", "payload")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    index: int
    kind: int
    payload: bytes
    def __init__(self, epoch: _Optional[int] = ..., index: _Optional[int] = ..., kind: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class Config(_message.Message):
    __slots__ = ("voters", "outgoing_voters", "learners")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    OUTGOING_VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    outgoing_voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., outgoing_voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ...) -> None: ...

class PromiseRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PromiseResponse(_message.Message):
    __slots__ = ("last", "commit_index")
    LAST_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    last: LogPosition
    commit_index: int
    def __init__(self, last: _Optional[_Union[LogPosition, _Mapping]] = ..., commit_index: _Optional[int] = ...) -> None: ...

class Appointment(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: Config
    def __init__(self, config: _Optional[_Union[Config, _Mapping]] = ...) -> None: ...

class NotMyLeader(_message.Message):
    __slots__ = ("rejected_epoch", "leader_id")
    REJECTED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    rejected_epoch: int
    leader_id: int
    def __init__(self, rejected_epoch: _Optional[int] = ..., leader_id: _Optional[int] = ...) -> None: ...

class Append(_message.Message):
    __slots__ = ("prev", "entries", "commit_index", "last_index")
    PREV_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    prev: LogPosition
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    commit_index: int
    last_index: int
    def __init__(self, prev: _Optional[_Union[LogPosition, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., commit_index: _Optional[int] = ..., last_index: _Optional[int] = ...) -> None: ...

class AppendAck(_message.Message):
    __slots__ = ("result", "index", "hint_index", "lost_id")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    LOST_ID_FIELD_NUMBER: _ClassVar[int]
    result: int
    index: int
    hint_index: int
    lost_id: int
    def __init__(self, result: _Optional[int] = ..., index: _Optional[int] = ..., hint_index: _Optional[int] = ..., lost_id: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("commit_index", "round", "lease_ns", "sent_at_ns", "last_index")
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    LEASE_NS_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    commit_index: int
    round: int
    lease_ns: int
    sent_at_ns: int
    last_index: int
    def __init__(self, commit_index: _Optional[int] = ..., round: _Optional[int] = ..., lease_ns: _Optional[int] = ..., sent_at_ns: _Optional[int] = ..., last_index: _Optional[int] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("round", "lease_ns")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    LEASE_NS_FIELD_NUMBER: _ClassVar[int]
    round: int
    lease_ns: int
    def __init__(self, round: _Optional[int] = ..., lease_ns: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("snapshot", "offset", "data", "done")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    snapshot: LogPosition
    offset: int
    data: bytes
    done: bool
    def __init__(self, snapshot: _Optional[_Union[LogPosition, _Mapping]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., done: _Optional[bool] = ...) -> None: ...

class SnapshotAck(_message.Message):
    __slots__ = ("snapshot", "next_offset", "installed")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    snapshot: LogPosition
    next_offset: int
    installed: bool
    def __init__(self, snapshot: _Optional[_Union[LogPosition, _Mapping]] = ..., next_offset: _Optional[int] = ..., installed: _Optional[bool] = ...) -> None: ...

class MemberMatch(_message.Message):
    __slots__ = ("member", "match_index")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    member: int
    match_index: int
    def __init__(self, member: _Optional[int] = ..., match_index: _Optional[int] = ...) -> None: ...

class StatusReport(_message.Message):
    __slots__ = ("role", "last", "commit_index", "applied_index", "match", "quorum_lost", "size_bytes", "ops_per_second", "fsyncs", "snapshots_installed")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    QUORUM_LOST_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    FSYNCS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_INSTALLED_FIELD_NUMBER: _ClassVar[int]
    role: int
    last: LogPosition
    commit_index: int
    applied_index: int
    match: _containers.RepeatedCompositeFieldContainer[MemberMatch]
    quorum_lost: bool
    size_bytes: int
    ops_per_second: float
    fsyncs: int
    snapshots_installed: int
    def __init__(self, role: _Optional[int] = ..., last: _Optional[_Union[LogPosition, _Mapping]] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., match: _Optional[_Iterable[_Union[MemberMatch, _Mapping]]] = ..., quorum_lost: _Optional[bool] = ..., size_bytes: _Optional[int] = ..., ops_per_second: _Optional[float] = ..., fsyncs: _Optional[int] = ..., snapshots_installed: _Optional[int] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("rg", "epoch", "sender", "recipient", "promise_request", "promise_response", "appointment", "not_my_leader", "append", "append_ack", "heartbeat", "heartbeat_ack", "snapshot_chunk", "snapshot_ack", "status_report")
    RG_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    PROMISE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    PROMISE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    APPOINTMENT_FIELD_NUMBER: _ClassVar[int]
    NOT_MY_LEADER_FIELD_NUMBER: _ClassVar[int]
    APPEND_FIELD_NUMBER: _ClassVar[int]
    APPEND_ACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ACK_FIELD_NUMBER: _ClassVar[int]
    STATUS_REPORT_FIELD_NUMBER: _ClassVar[int]
    rg: int
    epoch: int
    sender: int
    recipient: int
    promise_request: PromiseRequest
    promise_response: PromiseResponse
    appointment: Appointment
    not_my_leader: NotMyLeader
    append: Append
    append_ack: AppendAck
    heartbeat: Heartbeat
    heartbeat_ack: HeartbeatAck
    snapshot_chunk: SnapshotChunk
    snapshot_ack: SnapshotAck
    status_report: StatusReport
    def __init__(self, rg: _Optional[int] = ..., epoch: _Optional[int] = ..., sender: _Optional[int] = ..., recipient: _Optional[int] = ..., promise_request: _Optional[_Union[PromiseRequest, _Mapping]] = ..., promise_response: _Optional[_Union[PromiseResponse, _Mapping]] = ..., appointment: _Optional[_Union[Appointment, _Mapping]] = ..., not_my_leader: _Optional[_Union[NotMyLeader, _Mapping]] = ..., append: _Optional[_Union[Append, _Mapping]] = ..., append_ack: _Optional[_Union[AppendAck, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ..., snapshot_chunk: _Optional[_Union[SnapshotChunk, _Mapping]] = ..., snapshot_ack: _Optional[_Union[SnapshotAck, _Mapping]] = ..., status_report: _Optional[_Union[StatusReport, _Mapping]] = ...) -> None: ...

class EnvelopeBatch(_message.Message):
    __slots__ = ("envelopes",)
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedCompositeFieldContainer[Envelope]
    def __init__(self, envelopes: _Optional[_Iterable[_Union[Envelope, _Mapping]]] = ...) -> None: ...

class ExchangeSummary(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: int
    def __init__(self, batches: _Optional[int] = ...) -> None: ...
