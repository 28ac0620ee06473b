"""Leader leases (README, rules LL1 to LL5): reads served without a confirmation round.

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

Time is an input here (sans I/O): the replica is told the host's clock with
`Replica.observe_time` and never reads one.

Thread-safety: none; owned by the leader's Replica; discarded on step-down.
"""
from __future__ import annotations

import math

CLOCK_RATE_BOUND = 0.1
"""The largest relative difference between a node's clock rate and real time
that leases stay safe under (10%: NTP slews by at most 0.05%)."""


def hold_ns(lease_ns: int) -> int:
    """How long a member that acknowledged a heartbeat promises no new epoch."""
    return math.ceil(lease_ns * (1 + CLOCK_RATE_BOUND) / (1 - CLOCK_RATE_BOUND))


class LeaderLease:
    """The leader's side: when each heartbeat round started, and the lease they earned.

    Invariants:
      1. `until` only grows within one leadership.
      2. `until` is the start of a quorum-acknowledged round plus the lease, never
         more: a round's start is taken before its heartbeats leave.
    """

    __slots__ = ("lease_ns", "until", "_started")

    def __init__(self, lease_ns: int):
        self.lease_ns = lease_ns
        self.until = 0
        self._started: dict[int, int] = {}   # round -> its start time, until a quorum acknowledged it

    def round_started(self, round_number: int, now: int) -> None:
        if self.lease_ns:
            self._started[round_number] = now

    def quorum_acknowledged(self, round_number: int) -> None:
        """Rounds up to `round_number` were acknowledged by a quorum."""
        done = [r for r in self._started if r <= round_number]
        for r in done:
            self.until = max(self.until, self._started.pop(r) + self.lease_ns)

    def holds(self, now: int) -> bool:
        return now < self.until
