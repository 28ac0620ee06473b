from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODE_UNSPECIFIED: _ClassVar[Code]
    OK: _ClassVar[Code]
    NOT_LEADER: _ClassVar[Code]
    UNKNOWN_GROUP: _ClassVar[Code]
    INVALID_ARGUMENT: _ClassVar[Code]
    OUTCOME_UNKNOWN: _ClassVar[Code]
    TIMEOUT: _ClassVar[Code]
    UNAVAILABLE: _ClassVar[Code]
    CONDITION_FAILED: _ClassVar[Code]
    TABLE_DROPPED: _ClassVar[Code]
    FORGOTTEN: _ClassVar[Code]
    DURABLE_ON_LEADER: _ClassVar[Code]
CODE_UNSPECIFIED: Code
OK: Code
NOT_LEADER: Code
UNKNOWN_GROUP: Code
INVALID_ARGUMENT: Code
OUTCOME_UNKNOWN: Code
TIMEOUT: Code
UNAVAILABLE: Code
CONDITION_FAILED: Code
TABLE_DROPPED: Code
FORGOTTEN: Code
DURABLE_ON_LEADER: Code

class WriteRequest(_message.Message):
    __slots__ = ("id", "rg", "batch", "request_id", "if_seq", "if_absent", "first_seq", "learner")
    ID_FIELD_NUMBER: _ClassVar[int]
    RG_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IF_SEQ_FIELD_NUMBER: _ClassVar[int]
    IF_ABSENT_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LEARNER_FIELD_NUMBER: _ClassVar[int]
    id: int
    rg: int
    batch: bytes
    request_id: int
    if_seq: bytes
    if_absent: bool
    first_seq: bytes
    learner: bool
    def __init__(self, id: _Optional[int] = ..., rg: _Optional[int] = ..., batch: _Optional[bytes] = ..., request_id: _Optional[int] = ..., if_seq: _Optional[bytes] = ..., if_absent: _Optional[bool] = ..., first_seq: _Optional[bytes] = ..., learner: _Optional[bool] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("id", "code", "message", "seqs", "epoch", "leader", "index", "voters")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEQS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    id: int
    code: Code
    message: str
    seqs: bytes
    epoch: int
    leader: int
    index: int
    voters: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[int] = ..., code: _Optional[_Union[Code, str]] = ..., message: _Optional[str] = ..., seqs: _Optional[bytes] = ..., epoch: _Optional[int] = ..., leader: _Optional[int] = ..., index: _Optional[int] = ..., voters: _Optional[_Iterable[int]] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("id", "rg", "table_id", "key")
    ID_FIELD_NUMBER: _ClassVar[int]
    RG_FIELD_NUMBER: _ClassVar[int]
    TABLE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: int
    rg: int
    table_id: int
    key: bytes
    def __init__(self, id: _Optional[int] = ..., rg: _Optional[int] = ..., table_id: _Optional[int] = ..., key: _Optional[bytes] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("id", "code", "message", "found", "value", "seq", "epoch", "leader")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    id: int
    code: Code
    message: str
    found: bool
    value: bytes
    seq: bytes
    epoch: int
    leader: int
    def __init__(self, id: _Optional[int] = ..., code: _Optional[_Union[Code, str]] = ..., message: _Optional[str] = ..., found: _Optional[bool] = ..., value: _Optional[bytes] = ..., seq: _Optional[bytes] = ..., epoch: _Optional[int] = ..., leader: _Optional[int] = ...) -> None: ...

class ScanRequest(_message.Message):
    __slots__ = ("rg", "table_id", "start", "end", "limit", "keys_only")
    RG_FIELD_NUMBER: _ClassVar[int]
    TABLE_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    KEYS_ONLY_FIELD_NUMBER: _ClassVar[int]
    rg: int
    table_id: int
    start: bytes
    end: bytes
    limit: int
    keys_only: bool
    def __init__(self, rg: _Optional[int] = ..., table_id: _Optional[int] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., limit: _Optional[int] = ..., keys_only: _Optional[bool] = ...) -> None: ...

class ScanResponse(_message.Message):
    __slots__ = ("code", "message", "keys", "values", "seqs", "more", "epoch", "leader")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SEQS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    code: Code
    message: str
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    seqs: _containers.RepeatedScalarFieldContainer[bytes]
    more: bool
    epoch: int
    leader: int
    def __init__(self, code: _Optional[_Union[Code, str]] = ..., message: _Optional[str] = ..., keys: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[bytes]] = ..., seqs: _Optional[_Iterable[bytes]] = ..., more: _Optional[bool] = ..., epoch: _Optional[int] = ..., leader: _Optional[int] = ...) -> None: ...

class GroupDropTableRequest(_message.Message):
    __slots__ = ("rg", "table_id")
    RG_FIELD_NUMBER: _ClassVar[int]
    TABLE_ID_FIELD_NUMBER: _ClassVar[int]
    rg: int
    table_id: int
    def __init__(self, rg: _Optional[int] = ..., table_id: _Optional[int] = ...) -> None: ...

class GroupDropTableResponse(_message.Message):
    __slots__ = ("code", "message", "epoch", "leader")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    code: Code
    message: str
    epoch: int
    leader: int
    def __init__(self, code: _Optional[_Union[Code, str]] = ..., message: _Optional[str] = ..., epoch: _Optional[int] = ..., leader: _Optional[int] = ...) -> None: ...

class WriteBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[WriteRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[WriteRequest, _Mapping]]] = ...) -> None: ...

class WriteBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[WriteResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[WriteResponse, _Mapping]]] = ...) -> None: ...

class ReadBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ReadRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ReadRequest, _Mapping]]] = ...) -> None: ...

class ReadBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ReadResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[ReadResponse, _Mapping]]] = ...) -> None: ...

class LearnRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LearnBatch(_message.Message):
    __slots__ = ("node", "acks")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    node: int
    acks: bytes
    def __init__(self, node: _Optional[int] = ..., acks: _Optional[bytes] = ...) -> None: ...
