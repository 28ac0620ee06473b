"""The replication core of a replication group: a sans-I/O state machine (README.md)."""
from server.replication.errors import InvariantViolation, NotLeaderError, ReplicaMisuseError, ReplicationError
from server.replication.messages import METADATA_MANAGER_ID, Config, Entry, EntryKind, LogPosition, Role
from server.replication.options import ReplicaOptions
from server.replication.ready import DurableState, HardState, Proposal, Ready
from server.replication.replica import Replica

__all__ = ["Replica", "ReplicaOptions", "Ready", "DurableState", "HardState", "Proposal", "Config", "Entry",
           "EntryKind", "LogPosition", "Role", "METADATA_MANAGER_ID", "ReplicationError", "NotLeaderError",
           "ReplicaMisuseError", "InvariantViolation"]
