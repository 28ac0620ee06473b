"""ReplicaOptions: every knob of the replication core and its default, in one place.

Times are in ticks: the node calls `Replica.tick()` at a fixed interval
(suggested: 50 ms, so the defaults give a heartbeat every 100 ms and a read
timeout of 5 s). Sizes bound one Append so a batch fits one gRPC stream
message comfortably.
"""
from __future__ import annotations

from dataclasses import dataclass

from server.replication.lease import MAX_LEASE_NS


@dataclass(frozen=True, slots=True)
class ReplicaOptions:
    heartbeat_ticks: int = 2
    """A leader heartbeats every member this often (liveness, commit index, read rounds)."""

    idle_heartbeat_ticks: int = 0
    """A leader with nothing to do heartbeats only this often (0: always every
    heartbeat_ticks). Idle means: no proposal and no read for idle_after_ticks,
    and every member holds the whole log. Heartbeats of an idle group carry
    nothing new (the commit index, at most what each member holds, was sent
    already; elections are the MM's, from node reports), so with hundreds of
    groups on a node they are most of its idle CPU. The next write or read
    ends the idle state at once; a read after a lapsed lease waits for one
    round (R2) and restarts the lease."""

    idle_after_ticks: int = 20
    """Ticks without a proposal or a read after which a leader counts as idle."""

    retransmit_ticks: int = 6
    """With Appends outstanding and no answer for this long, the leader probes the member again."""

    max_inflight_appends: int = 4
    """Pipelining: Append batches in flight per member in REPLICATE state (S1)."""

    max_append_entries: int = 256
    """At most this many entries in one Append."""

    max_append_bytes: int = 1 << 20
    """An Append stops adding entries once their payloads pass this many bytes (at least one entry)."""

    snapshot_retry_ticks: int = 8
    """A snapshot chunk unanswered for this long is asked for and sent again, from the same offset."""

    check_quorum_ticks: int = 0
    """Check-quorum (README CQ1-CQ2): a leader that has heard nothing from a
    quorum of its config for this many ticks says so in its StatusReport, and
    the MM deposes it, preferring a quorum of promisers without it. Needed
    because the MM elects from heartbeats alone: a leader cut off from its
    followers but not from the MM would otherwise stay, unable to commit.
    Must exceed the longest heartbeat interval (idle_heartbeat_ticks) plus a
    round trip. 0: off."""

    read_timeout_ticks: int = 100
    """A read not confirmed and served within this many ticks fails with TIMEOUT (R4)."""

    eager_commit: bool = True
    """A leader tells idle followers a new commit index at once (an empty Append).
    False: they learn it with the next Append or heartbeat, which halves the
    messages per write at low load; followers then apply up to a heartbeat later
    (only the leader serves reads, so no client sees the difference)."""

    follower_apply_batch: int = 1
    """A follower applies committed entries once this many wait, or at the next
    tick, whichever comes first (1: at once). Only leaders answer clients, so a
    follower's apply is not on any request's path; batched, it costs less and
    stays off the cores while the leader turns acknowledgements into answers
    (bench/RESULTS.md, 2026-11-27 15:05 entry). A follower that becomes leader
    applies everything committed in its first Ready."""

    lease_ns: int = 0
    """Leader leases (lease.py, README LL1-LL6): a leader serves a read at once
    while a heartbeat round it started less than this long ago (nanoseconds of
    the clock the node passes to Replica.observe_time) was acknowledged by a
    quorum; members that acknowledged it promise no new epoch for
    lease.hold_ns(lease_ns). 0: off, every read waits for a round (R2).
    The price: after a leader dies, a new one can be elected only once the
    hold has run out. With leases on, heartbeats start a new round each."""

    trailing_batch_entries: int = 0
    """Quorum-first sending (README "Trailing followers"; 0: off, every member
    gets each new entry at once). In a group of 3 or more voters (no joint
    change), the leader sends new entries at once only to the followers it
    needs for a quorum, those with the highest match; the others (trailing)
    get them once this many are pending, or at the next tick. Commits wait for
    a quorum either way, so this only moves when the extra copies are made:
    in batches, at a fraction of the messages, fsyncs and CPU per write."""

    learner_reads: bool = False
    """Reads that a client counting commits itself (a learner: README "The
    client as a learner") cannot outrun: a read's index is at least the
    highest index the node told a learner of (Replica.learners_told, when it
    answers DURABLE_ON_LEADER) before the read arrived (R1), not only the
    commit index, so the read waits until those entries are committed and
    applied, also under the lease (LL4). A learner may know an entry
    committed before the leader does; a read after that must still see it.
    The price: a read waits for the learner writes answered but not yet
    committed when it arrived. Off: nothing counts commits but the leader."""

    max_apply_entries: int | None = None
    """At most this many committed entries per Ready (None: all), to bound one apply step."""

    def __post_init__(self) -> None:
        for name in ("idle_heartbeat_ticks", "trailing_batch_entries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or positive")
        for name in ("heartbeat_ticks", "idle_after_ticks", "retransmit_ticks", "max_inflight_appends",
                     "max_append_entries", "max_append_bytes", "snapshot_retry_ticks", "read_timeout_ticks",
                     "follower_apply_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.check_quorum_ticks < 0:
            raise ValueError("check_quorum_ticks must be 0 (off) or positive")
        if self.check_quorum_ticks and self.check_quorum_ticks <= max(self.heartbeat_ticks, self.idle_heartbeat_ticks):
            raise ValueError(f"check_quorum_ticks ({self.check_quorum_ticks}) must exceed the longest heartbeat "
                             f"interval (heartbeat_ticks {self.heartbeat_ticks}, idle_heartbeat_ticks "
                             f"{self.idle_heartbeat_ticks}) plus a round trip: healthy idle leaders would be deposed")
        if not 0 <= self.lease_ns <= MAX_LEASE_NS:
            raise ValueError(f"lease_ns must be 0 (off) or positive, at most {MAX_LEASE_NS} (lease.MAX_LEASE_NS)")
