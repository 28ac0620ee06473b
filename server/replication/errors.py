"""Exceptions of the replication core, under the engine's `QuorumKVError`.

    QuorumKVError (engine/errors.py)
    └── ReplicationError
        ├── NotLeaderError        propose/read on a replica that is not the serving leader
        ├── ReplicaMisuseError    the caller broke the Ready contract or a Requires: line
        └── InvariantViolation    a protocol invariant failed: a bug, or a peer/MM breaking the protocol

The server edge maps NotLeaderError to a redirect (UNAVAILABLE with the known
epoch and leader), the other two to INTERNAL. InvariantViolation is also an
AssertionError: it means state can no longer be trusted; the node must stop
the replica, not retry.
"""
from __future__ import annotations

from engine.errors import QuorumKVError


class ReplicationError(QuorumKVError):
    """Base of the replication core's errors."""


class NotLeaderError(ReplicationError):
    """This replica is not the leader of its epoch ("not my leader", rule E3).

    epoch: the highest epoch the replica knows; leader_id: the leader it follows
    in that epoch, if known (a redirect hint, possibly stale).
    """

    def __init__(self, epoch: int, leader_id: int | None):
        super().__init__(f"not the leader (epoch {epoch}, leader {leader_id})")
        self.epoch = epoch
        self.leader_id = leader_id


class ReplicaMisuseError(ReplicationError):
    """The caller broke the Ready contract (e.g. advance() without ready())."""


class InvariantViolation(ReplicationError, AssertionError):
    """A protocol invariant does not hold (README rules, numbered in the message)."""
