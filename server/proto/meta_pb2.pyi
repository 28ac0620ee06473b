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
    __slots__ = ("rg", "config")
    RG_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    rg: int
    config: _replication_pb2.Config
    def __init__(self, rg: _Optional[int] = ..., config: _Optional[_Union[_replication_pb2.Config, _Mapping]] = ...) -> None: ...

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
