"""Leader leases (README, rules LL1 to LL6): reads served without a confirmation round.

A leader holds a lease while a heartbeat round it started less than
`lease_ns` ago (its own clock) has been acknowledged by a quorum of its
config; each acknowledging member, from the moment it took that heartbeat,
ignores every PromiseRequest for a higher epoch for `hold_ns(lease_ns)` (its
own clock). Any quorum of promisers for a new epoch includes such a member,
so no new leader can exist, let alone commit, before the lease runs out.

The clock assumption, in one place: the nodes' clocks (the host passes
CLOCK_BOOTTIME, which keeps counting while a process is stopped or the
machine sleeps) may run at different rates, but no two differ from real time
by more than CLOCK_RATE_BOUND. Then a lease of L on the leader's clock lasts
at most L / (1 - B) of real time, and a hold of H on a follower's clock at
least H / (1 + B); `hold_ns` makes the second cover the first. Offsets do
not matter: only intervals on one clock are compared.

The members check the assumption as they go (LL6): each heartbeat carries the
leader's clock, and a member whose own clock moved at a rate off the
leader's by more than the bound, over a window of CLOCK_CHECK_WINDOW_NS,
holds for no lease until a later window agrees (Replica._check_clock_rate).

Time is an input here (sans I/O): the replica is told the host's clock with
`Replica.observe_time` and never reads one.

Thread-safety: none; owned by the leader's Replica; discarded on step-down.
"""
from __future__ import annotations

import math
from collections import deque

from server.replication.messages import Config
from server.replication.quorum import RoundAcks

CLOCK_RATE_BOUND = 0.1
"""The largest relative difference between a node's clock rate and real time
that leases stay safe under (10%: NTP slews by at most 0.05%)."""


MAX_LEASE_NS = 500_000_000
"""The longest lease a member may run with (ReplicaOptions refuses more). A
member restarting holds for hold_ns(MAX_LEASE_NS) (LL3), which covers any
hold it may have promised before, whatever its settings were then."""

CLOCK_CHECK_WINDOW_NS = 5_000_000_000
"""LL6: members compare the leader's clock with theirs over windows this long
(long enough that delays of tens of milliseconds between two heartbeats move
the measured rate by under 1%)."""


def hold_ns(lease_ns: int) -> int:
    """How long a member that acknowledged a heartbeat promises no new epoch."""
    return math.ceil(lease_ns * (1 + CLOCK_RATE_BOUND) / (1 - CLOCK_RATE_BOUND))


class LeaderLease:
    """The leader's side: when each heartbeat round started, which member
    acknowledged which round while holding for this lease, and the lease earned.

    Invariants:
      1. `until` only grows within one leadership.
      2. `until` is the start of a round that a quorum acknowledged with a hold
         of at least `lease_ns` (HeartbeatAck.lease_ns), plus `lease_ns`; a round's
         start is taken before its heartbeats leave.
      3. Bounded: rounds that can no longer extend the lease are dropped as new
         ones start, so a leader cut off from its quorum keeps only a lease's worth.
    """

    __slots__ = ("lease_ns", "until", "_started", "_acks")

    def __init__(self, lease_ns: int):
        self.lease_ns = lease_ns
        self.until = 0
        self._started: deque[tuple[int, int]] = deque()   # (round, start time), oldest first
        self._acks = RoundAcks()   # counting only acknowledgements that hold for this lease

    def round_started(self, round_number: int, now: int) -> None:
        if not self.lease_ns:
            return
        self._acks.started = round_number
        started = self._started
        while started and started[0][1] + self.lease_ns <= now:   # would end the lease before now
            started.popleft()
        started.append((round_number, now))

    def on_ack(self, member: int, round_number: int) -> None:
        """`member` acknowledged `round_number` and holds for this lease (LL2)."""
        self._acks.on_ack(member, round_number)

    def quorum_acknowledged(self, config: Config, self_id: int) -> None:
        """Extends the lease to the latest round a quorum acknowledged (the leader counts itself)."""
        confirmed = self._acks.quorum_round(config, self_id)
        started = self._started
        while started and started[0][0] <= confirmed:
            _, start = started.popleft()
            if start + self.lease_ns > self.until:
                self.until = start + self.lease_ns

    def holds(self, now: int) -> bool:
        return now < self.until
