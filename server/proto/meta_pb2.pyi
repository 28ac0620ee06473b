from server.proto import replication_pb2 as _replication_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeHeartbeat(_message.Message):
    __slots__ = ("node_id", "address", "incarnation", "envelopes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    incarnation: int
    envelopes: _containers.RepeatedCompositeFieldContainer[_replication_pb2.Envelope]
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ..., incarnation: _Optional[int] = ..., envelopes: _Optional[_Iterable[_Union[_replication_pb2.Envelope, _Mapping]]] = ...) -> None: ...

class NodeAddress(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class ReplicaAssignment(_message.Message):
    __slots__ = ("rg", "config", "established", "epoch")
    RG_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    ESTABLISHED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    rg: int
    config: _replication_pb2.Config
    established: bool
    epoch: int
    def __init__(self, rg: _Optional[int] = ..., config: _Optional[_Union[_replication_pb2.Config, _Mapping]] = ..., established: _Optional[bool] = ..., epoch: _Optional[int] = ...) -> None: ...

class MetaCommand(_message.Message):
    __slots__ = ("directory", "directory_version", "host", "drop", "envelopes")
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    DROP_FIELD_NUMBER: _ClassVar[int]
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    directory: _containers.RepeatedCompositeFieldContainer[NodeAddress]
    directory_version: int
    host: _containers.RepeatedCompositeFieldContainer[ReplicaAssignment]
    drop: _containers.RepeatedScalarFieldContainer[int]
    envelopes: _containers.RepeatedCompositeFieldContainer[_replication_pb2.Envelope]
    def __init__(self, directory: _Optional[_Iterable[_Union[NodeAddress, _Mapping]]] = ..., directory_version: _Optional[int] = ..., host: _Optional[_Iterable[_Union[ReplicaAssignment, _Mapping]]] = ..., drop: _Optional[_Iterable[int]] = ..., envelopes: _Optional[_Iterable[_Union[_replication_pb2.Envelope, _Mapping]]] = ...) -> None: ...

class GroupSpec(_message.Message):
    __slots__ = ("rg", "members")
    RG_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    rg: int
    members: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, rg: _Optional[int] = ..., members: _Optional[_Iterable[int]] = ...) -> None: ...

class GroupState(_message.Message):
    __slots__ = ("rg", "epoch", "leader", "config", "replicas")
    RG_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    rg: int
    epoch: int
    leader: int
    config: _replication_pb2.Config
    replicas: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    def __init__(self, rg: _Optional[int] = ..., epoch: _Optional[int] = ..., leader: _Optional[int] = ..., config: _Optional[_Union[_replication_pb2.Config, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "address", "alive", "report")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    alive: bool
    report: _replication_pb2.StatusReport
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ..., alive: _Optional[bool] = ..., report: _Optional[_Union[_replication_pb2.StatusReport, _Mapping]] = ...) -> None: ...

class CreateGroupResponse(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: GroupState
    def __init__(self, group: _Optional[_Union[GroupState, _Mapping]] = ...) -> None: ...

class ListGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGroupsResponse(_message.Message):
    __slots__ = ("groups", "version")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupState]
    version: int
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupState, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class RangeRoute(_message.Message):
    __slots__ = ("start", "rg")
    START_FIELD_NUMBER: _ClassVar[int]
    RG_FIELD_NUMBER: _ClassVar[int]
    start: bytes
    rg: int
    def __init__(self, start: _Optional[bytes] = ..., rg: _Optional[int] = ...) -> None: ...

class TableRoute(_message.Message):
    __slots__ = ("name", "table_id", "ranges")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TABLE_ID_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    table_id: int
    ranges: _containers.RepeatedCompositeFieldContainer[RangeRoute]
    def __init__(self, name: _Optional[str] = ..., table_id: _Optional[int] = ..., ranges: _Optional[_Iterable[_Union[RangeRoute, _Mapping]]] = ...) -> None: ...

class GroupRoute(_message.Message):
    __slots__ = ("rg", "leader", "epoch")
    RG_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    rg: int
    leader: int
    epoch: int
    def __init__(self, rg: _Optional[int] = ..., leader: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class RoutingTable(_message.Message):
    __slots__ = ("version", "keepalive", "tables", "groups", "nodes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    version: int
    keepalive: bool
    tables: _containers.RepeatedCompositeFieldContainer[TableRoute]
    groups: _containers.RepeatedCompositeFieldContainer[GroupRoute]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeAddress]
    def __init__(self, version: _Optional[int] = ..., keepalive: _Optional[bool] = ..., tables: _Optional[_Iterable[_Union[TableRoute, _Mapping]]] = ..., groups: _Optional[_Iterable[_Union[GroupRoute, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[NodeAddress, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("known_version",)
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    known_version: int
    def __init__(self, known_version: _Optional[int] = ...) -> None: ...

class NewTableRequest(_message.Message):
    __slots__ = ("name", "split_keys", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPLIT_KEYS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    split_keys: _containers.RepeatedScalarFieldContainer[bytes]
    request_id: int
    def __init__(self, name: _Optional[str] = ..., split_keys: _Optional[_Iterable[bytes]] = ..., request_id: _Optional[int] = ...) -> None: ...

class NewTableResponse(_message.Message):
    __slots__ = ("table",)
    TABLE_FIELD_NUMBER: _ClassVar[int]
    table: TableRoute
    def __init__(self, table: _Optional[_Union[TableRoute, _Mapping]] = ...) -> None: ...

class DropTableRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: int
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[int] = ...) -> None: ...

class DropTableResponse(_message.Message):
    __slots__ = ("table_id", "rgs")
    TABLE_ID_FIELD_NUMBER: _ClassVar[int]
    RGS_FIELD_NUMBER: _ClassVar[int]
    table_id: int
    rgs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, table_id: _Optional[int] = ..., rgs: _Optional[_Iterable[int]] = ...) -> None: ...

class BackupRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BackupResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: bytes
    def __init__(self, document: _Optional[bytes] = ...) -> None: ...
