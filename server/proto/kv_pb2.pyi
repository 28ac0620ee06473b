from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Record(_message.Message):
    __slots__ = ("key", "value", "seq")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    seq: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., seq: _Optional[bytes] = ...) -> None: ...

class CreateTableRequest(_message.Message):
    __slots__ = ("table", "split_keys", "request_id")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_KEYS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    table: str
    split_keys: _containers.RepeatedScalarFieldContainer[bytes]
    request_id: int
    def __init__(self, table: _Optional[str] = ..., split_keys: _Optional[_Iterable[bytes]] = ..., request_id: _Optional[int] = ...) -> None: ...

class CreateTableResponse(_message.Message):
    __slots__ = ("ranges",)
    RANGES_FIELD_NUMBER: _ClassVar[int]
    ranges: int
    def __init__(self, ranges: _Optional[int] = ...) -> None: ...

class DeleteTableRequest(_message.Message):
    __slots__ = ("table", "request_id")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    table: str
    request_id: int
    def __init__(self, table: _Optional[str] = ..., request_id: _Optional[int] = ...) -> None: ...

class DeleteTableResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTablesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTablesResponse(_message.Message):
    __slots__ = ("tables",)
    TABLES_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tables: _Optional[_Iterable[str]] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("table", "key", "value", "if_seq", "if_absent", "request_id", "retry")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    IF_SEQ_FIELD_NUMBER: _ClassVar[int]
    IF_ABSENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    table: str
    key: bytes
    value: bytes
    if_seq: bytes
    if_absent: bool
    request_id: int
    retry: bool
    def __init__(self, table: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., if_seq: _Optional[bytes] = ..., if_absent: _Optional[bool] = ..., request_id: _Optional[int] = ..., retry: _Optional[bool] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: bytes
    def __init__(self, seq: _Optional[bytes] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("table", "key")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    table: str
    key: bytes
    def __init__(self, table: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("found", "value", "seq")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    seq: bytes
    def __init__(self, found: _Optional[bool] = ..., value: _Optional[bytes] = ..., seq: _Optional[bytes] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("table", "key", "if_seq", "request_id", "retry")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    IF_SEQ_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    table: str
    key: bytes
    if_seq: bytes
    request_id: int
    retry: bool
    def __init__(self, table: _Optional[str] = ..., key: _Optional[bytes] = ..., if_seq: _Optional[bytes] = ..., request_id: _Optional[int] = ..., retry: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: bytes
    def __init__(self, seq: _Optional[bytes] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("table", "start", "end", "limit", "keys_only", "continuation")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    KEYS_ONLY_FIELD_NUMBER: _ClassVar[int]
    CONTINUATION_FIELD_NUMBER: _ClassVar[int]
    table: str
    start: bytes
    end: bytes
    limit: int
    keys_only: bool
    continuation: bytes
    def __init__(self, table: _Optional[str] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., limit: _Optional[int] = ..., keys_only: _Optional[bool] = ..., continuation: _Optional[bytes] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("records", "continuation")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CONTINUATION_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    continuation: bytes
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., continuation: _Optional[bytes] = ...) -> None: ...

class Op(_message.Message):
    __slots__ = ("id", "timeout_ms", "put", "get", "delete")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    id: int
    timeout_ms: int
    put: PutRequest
    get: GetRequest
    delete: DeleteRequest
    def __init__(self, id: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., put: _Optional[_Union[PutRequest, _Mapping]] = ..., get: _Optional[_Union[GetRequest, _Mapping]] = ..., delete: _Optional[_Union[DeleteRequest, _Mapping]] = ...) -> None: ...

class OpResult(_message.Message):
    __slots__ = ("id", "code", "message", "seq", "found", "value", "retry_after_ms", "final")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    id: int
    code: int
    message: str
    seq: bytes
    found: bool
    value: bytes
    retry_after_ms: int
    final: bool
    def __init__(self, id: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., seq: _Optional[bytes] = ..., found: _Optional[bool] = ..., value: _Optional[bytes] = ..., retry_after_ms: _Optional[int] = ..., final: _Optional[bool] = ...) -> None: ...

class OpBatch(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[Op]
    def __init__(self, ops: _Optional[_Iterable[_Union[Op, _Mapping]]] = ...) -> None: ...

class OpResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[OpResult]
    def __init__(self, results: _Optional[_Iterable[_Union[OpResult, _Mapping]]] = ...) -> None: ...
