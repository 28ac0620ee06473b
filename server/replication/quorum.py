"""Quorum arithmetic over a `Config`, joint configs included (README J2).

Purpose: the one place that says what "a majority" means; used by the leader
(commit index, read confirmation) and by the MM's promise collection.

Invariants:
  1. A quorum of a joint config is a majority of `voters` and a majority of
     `outgoing_voters`; learners never count.
  2. Any two quorums of one config intersect; a quorum of a joint config
     intersects every quorum of either of its voter sets.

Thread-safety: pure functions.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping

from server.replication.messages import Config


def majority(size: int) -> int:
    """The number of members that make a majority of `size` members."""
    return size // 2 + 1


def _set_has_majority(voters: frozenset[int], members: Collection[int]) -> bool:
    if not voters:
        return True
    return sum(1 for v in voters if v in members) >= majority(len(voters))


def has_quorum(config: Config, members: Collection[int]) -> bool:
    """True when `members` include a quorum of `config`."""
    return _set_has_majority(config.voters, members) and _set_has_majority(config.outgoing_voters, members)


def _set_quorum_value(voters: frozenset[int], values: Mapping[int, int]) -> int:
    if not voters:
        return 1 << 62  # an empty set constrains nothing
    ordered = sorted((values.get(v, 0) for v in voters), reverse=True)
    return ordered[majority(len(voters)) - 1]


def quorum_value(config: Config, values: Mapping[int, int]) -> int:
    """The largest v such that a quorum of `config` has values[id] >= v
    (missing ids count as 0): the commit index of a match table, the confirmed
    round of an ack table."""
    return min(_set_quorum_value(config.voters, values), _set_quorum_value(config.outgoing_voters, values))


class RoundAcks:
    """Per member, the latest heartbeat round it acknowledged, and the round a
    quorum has reached (R2 for reads, LL1 for the lease). The owner moves
    `started` as it starts rounds; an ack never counts past it."""

    __slots__ = ("started", "_acked")

    def __init__(self) -> None:
        self.started = 0
        self._acked: dict[int, int] = {}

    def on_ack(self, member: int, round_number: int) -> None:
        if round_number > self._acked.get(member, 0):
            self._acked[member] = min(round_number, self.started)

    def quorum_round(self, config: Config, self_id: int) -> int:
        """The highest round a quorum acknowledged (the leader acknowledges its own at once)."""
        self._acked[self_id] = self.started
        return quorum_value(config, self._acked)
