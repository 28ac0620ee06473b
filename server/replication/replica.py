"""Replica: one member of a replication group, as a sans-I/O state machine.

Purpose: implements README.md (rules E, L, M, C, R, S, J). The node drives it:
`step(msg)` for every message received, `tick()` at a fixed interval,
`propose(payloads)` and `read_index(request_id)` for client work, then
`ready()` -> do what the Ready says (README "The Ready contract") ->
`advance(ready)`. No I/O, clock or randomness inside: the same calls in the
same order give the same Readys.

Roles (explicit, one handler each): FOLLOWER (`_step_follower`), LEADER_ELECT
and LEADER (`_step_leader`; they differ only in whether reads are served).

Invariants, checked after every call that changes state (InvariantViolation):
  1. promised_epoch never decreases; commit_index never decreases (C1, L4).
  2. A follower follows at most one leader per epoch; a leader never sees
     another leader message of its own epoch (E1).
  3. A leader's last entry is of its epoch; it never truncates its log (L1).
  4. The log's own invariants (log.py), e.g. nothing committed is truncated (L3).
  5. A replica leads an epoch only once, and only in the incarnation that
     promised it (M4): a restarted leader cannot lead the same epoch again and
     reuse indexes it had already sent.

Thread-safety: none. One node loop owns a Replica.
Ownership: a Ready belongs to the caller until advance(); only one is
outstanding at a time.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from server.replication.errors import InvariantViolation, NotLeaderError, ReplicaMisuseError
from server.replication.lease import CLOCK_CHECK_WINDOW_NS, CLOCK_RATE_BOUND, MAX_LEASE_NS, LeaderLease, hold_ns
from server.replication.log import ReplicatedLog
from server.replication.messages import (
    METADATA_MANAGER_ID,
    Append,
    AppendAck,
    AppendResult,
    Appointment,
    Config,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatAck,
    LogPosition,
    Message,
    NotMyLeader,
    PromiseRequest,
    PromiseResponse,
    Role,
    SnapshotAck,
    SnapshotChunk,
    StatusReport,
)
from server.replication.options import ReplicaOptions
from server.replication.progress import Progress
from server.replication.read_index import PendingRead, ReadIndexTracker
from server.replication.ready import (
    DurableState,
    FailedRead,
    HardState,
    Proposal,
    ReadFailure,
    ReadState,
    Ready,
    SnapshotRequest,
    SoftState,
    StagedChunk,
)
from server.replication.replicator import Replicator
from server.replication.snapshot import SnapshotReceive

_LEADER_MESSAGES = (Append, Heartbeat, SnapshotChunk)
_FENCED_MESSAGES = (PromiseRequest, Appointment, Append, Heartbeat, SnapshotChunk)


class Replica:
    """One member of a replication group (see the module contract)."""

    def __init__(self, replica_id: int, state: DurableState | None = None, options: ReplicaOptions | None = None):
        """Starts (or restarts) a replica from what its node made durable.
        Requires: replica_id > 0 (0 is the metadata manager)."""
        if replica_id <= 0:
            raise ReplicaMisuseError("replica ids are positive (0 is the metadata manager)")
        state = state or DurableState()
        self.id = replica_id
        self._opts = options or ReplicaOptions()
        self._log = ReplicatedLog(state.base, state.entries, state.commit_index, state.applied_index)
        # A crash between writing entries and the hard state cannot leave the
        # promise below an epoch already in the log (the node writes both in one
        # fsync; this keeps the invariant even if it does not).
        self._promised_epoch = max(state.promised_epoch, self._log.last_position().epoch)
        self._persisted = HardState(state.promised_epoch, state.commit_index)
        self._role = Role.FOLLOWER
        self._leader_id: int | None = None      # the leader of _promised_epoch, once it has spoken
        self._leader_hint: int | None = None    # a peer's word for it (redirects only)
        self._appointable_epoch: int | None = None  # invariant 5
        self._replicator: Replicator | None = None  # leaders only
        self._reads = ReadIndexTracker()
        self._learners_told = 0   # learners_told(): the highest index a learner may know committed before us
        self._lease = LeaderLease(self._opts.lease_ns)
        # Lease time (lease.py): the host's clock as last observed, and until when
        # this member promises no new epoch. A member that restarts may have
        # acknowledged a heartbeat just before: it holds from its first observed time.
        self._now = 0
        self._hold_until = 0
        self._refused_epoch = 0   # LL5: the highest epoch this member was asked for and could not promise
        # LL2/LL3: the epoch whose leader the hold protects. While holding, no
        # promise goes to a later epoch, even one this member adopted meanwhile
        # (E5's NotMyLeader, or a new leader elected without it): adopting is
        # not promising. LL3 holds whatever the settings are now.
        self._hold_epoch = state.promised_epoch
        self._hold_from_start = state.promised_epoch > 0
        self._lost_id = 0   # S6: nonzero while rejections say LOG_LOST (until the host says it caught up)
        # LL6: the leader's clock against ours, over windows of CLOCK_CHECK_WINDOW_NS:
        # (epoch, leader's clock, ours) at the window's start, and the last verdict.
        self._clock_window: tuple[int, int, int] | None = None
        self.clock_suspect = False
        self.reads_by_lease = 0   # read_index() calls confirmed on arrival under the lease (LL4),
        self.reads_by_round = 0   # and those that waited for a heartbeat round (R2): for metrics
        self._noop_index = 0
        self._receiving: SnapshotReceive | None = None
        # Output not yet handed out in a Ready. _msgs: send at once (the Replicator
        # appends to this very list); _msgs_after_persist: after the fsync (C2).
        self._msgs: list[Message] = []
        self._msgs_after_persist: list[Message] = []
        self._staged: list[StagedChunk] = []
        self._pending_snapshot: LogPosition | None = None
        self._failed_reads: list[FailedRead] = []
        self._snapshot_requests: list[SnapshotRequest] = []
        self._reported_soft = SoftState(self._role, self._promised_epoch, None)
        self._outstanding: Ready | None = None
        self._ticks = 0
        self._apply_due = False   # a tick passed: a follower applies what is committed, however little
        self._heartbeat_elapsed = 0
        self._last_busy_tick = 0   # the last tick with a proposal or a read (idle heartbeats)
        self._checked_commit = self._log.commit_index
        self._checked_epoch = self._promised_epoch
        self._handlers: dict[Role, Callable[[Message], None]] = {
            Role.FOLLOWER: self._step_follower,
            Role.LEADER_ELECT: self._step_leader,
            Role.LEADER: self._step_leader,
        }

    # ================================================================ queries
    @property
    def role(self) -> Role:
        return self._role

    @property
    def epoch(self) -> int:
        """The highest epoch promised or followed (durable once a Ready says so)."""
        return self._promised_epoch

    @property
    def leader_id(self) -> int | None:
        return self._leader_id

    @property
    def log(self) -> ReplicatedLog:
        """Read-only use: the in-memory log view (tests, status)."""
        return self._log

    @property
    def config(self) -> Config | None:
        """The config of the epoch this replica leads (None on followers)."""
        return self._replicator.config if self._replicator is not None else None

    def progress(self) -> dict[int, Progress]:
        """Leader only: per-member progress (read-only use; empty on followers)."""
        return self._replicator.progress if self._replicator is not None else {}

    def status_report(self, recipient: int = METADATA_MANAGER_ID) -> StatusReport:
        """This replica's state for the node's heartbeat to the MM."""
        match = self._replicator.matches() if self._replicator is not None else ()
        return StatusReport(epoch=self._promised_epoch, sender=self.id, recipient=recipient, role=self._role,
                            last=self._log.last_position(), commit_index=self._log.commit_index,
                            applied_index=self._log.applied_index, match=match,
                            quorum_contact=self.quorum_contact())

    def quorum_contact(self) -> bool:
        """CQ1: False only on a leader that heard from no quorum of its config
        for `check_quorum_ticks` (with the option off: always True)."""
        window = self._opts.check_quorum_ticks
        return self._replicator is None or not window or self._replicator.quorum_contact(window)

    # ============================================================== client API
    def propose(self, payloads: Sequence[bytes]) -> Proposal:
        """Appends one WRITE entry per payload, all in one batch (one Ready, one
        fsync, one Append per member). Raises NotLeaderError unless leader."""
        self._require_leader()
        if not payloads:
            raise ReplicaMisuseError("propose() of an empty batch")
        first = self._log.last_index + 1
        epoch = self._promised_epoch
        self._log.append_own([Entry(epoch, first + i, EntryKind.WRITE, p) for i, p in enumerate(payloads)])
        self._last_busy_tick = self._ticks
        assert self._replicator is not None
        self._replicator.broadcast_appends()
        self._check()
        return Proposal(epoch, first, self._log.last_index)

    def read_index(self, request_id: Hashable, floor: int | None = None) -> None:
        """Starts a linearizable read (R1-R4); its outcome comes in a later Ready's
        `reads` or `failed_reads`. Raises NotLeaderError unless leader.
        `floor` (learner_reads only): the highest index told to a learner
        (learners_told) of an entry that writes what this read reads, which
        the node knows and this core does not; None: every entry told of."""
        self._require_leader()
        self._last_busy_tick = self._ticks
        deadline = self._ticks + self._opts.read_timeout_ticks
        if self._role is Role.LEADER and self._lease.holds(self._now):   # LL4: no round needed
            self._reads.add_confirmed(request_id, self._arrival_index(floor), deadline)
            self.reads_by_lease += 1
            return
        self.reads_by_round += 1
        read_index = self._arrival_index(floor) if self._role is Role.LEADER else None
        self._reads.add(request_id, read_index, deadline)

    def learners_told(self, index: int) -> None:
        """The node told a learner client that the entry at `index` is durable
        here (server/node/write_path.py, DURABLE_ON_LEADER): the client may
        count it committed before this leader does, so with learner_reads a
        read that arrives from now on waits for it (R1)."""
        if index > self._learners_told:
            self._learners_told = index

    def _arrival_index(self, floor: int | None = None) -> int:
        """R1: a read's index, from the moment it arrived: the commit index, or
        with learner_reads at least the last index a learner was told of
        (learners_told: what a learner may already know committed;
        ReplicaOptions.learner_reads), or of those the read's `floor` (see
        read_index). Capped by the last log index: a higher one would only
        make the read wait for entries this log never held. (A read that
        waits for the NOOP gets the index without a floor: R1.)"""
        commit = self._log.commit_index
        told = self._learners_told if floor is None else floor
        if self._opts.learner_reads and told > commit:
            return min(told, self._log.last_index)
        return commit

    def snapshot_chunk(self, member: int, snapshot_index: int, offset: int, data: bytes, done: bool) -> None:
        """The node's answer to a SnapshotRequest (S2): chunk `offset` of its
        snapshot of the applied state at `snapshot_index`. Ignored if the
        transfer has moved on (the leader stepped down, the member caught up)."""
        if self._replicator is not None:
            self._replicator.snapshot_chunk(member, snapshot_index, offset, data, done)

    def abort_snapshot(self, member: int) -> None:
        """The node cannot serve the transfer's snapshot any more (released, or an
        I/O error): the next SnapshotRequest asks for a new one, from offset 0."""
        if self._replicator is not None:
            self._replicator.abort_snapshot(member)

    def compact_log(self, index: int) -> None:
        """Drops log entries up to `index` (S5). Requires: index <= the applied
        index durable in the engine, and index <= the durable log's end."""
        self._log.compact(index)
        self._check()

    # ============================================================ driving API
    def observe_time(self, now: int) -> None:
        """The host's clock, in nanoseconds: call it before every step, tick,
        read_index and ready (with leases off too: a restarted member holds
        its promises for a while, LL3). A clock that goes back is ignored."""
        if now > self._now:
            self._now = now
        if self._hold_from_start:
            self._hold_from_start = False
            self._hold_until = self._now + hold_ns(MAX_LEASE_NS)   # LL3: whatever lease it held for before

    def rejoin_without_data(self, lost_id: int) -> None:
        """The node restarted this member with no data (a wiped disk). LL3: its
        earlier incarnation may have held a promise for a leader's lease. S6:
        a leader may count matches it acknowledged before; its rejections say
        LOG_LOST, naming this loss by `lost_id` (nonzero, new for each
        restart), until caught_up()."""
        if lost_id <= 0:
            raise ReplicaMisuseError("rejoin_without_data() needs a positive lost_id")
        self._hold_from_start = True
        self._hold_epoch = self._promised_epoch
        self._lost_id = lost_id

    def caught_up(self) -> None:
        """S6: what a leader had committed when this member came back is durable
        here again; rejections are plain LOG_MISMATCH from now on."""
        self._lost_id = 0

    def tick(self) -> None:
        """One unit of logical time."""
        self._ticks += 1
        self._apply_due = True
        rep = self._replicator
        if rep is None:
            return
        self._heartbeat_elapsed += 1
        if self._heartbeat_elapsed >= self._heartbeat_interval(rep):
            self._heartbeat_elapsed = 0
            # With leases, every heartbeat is a round: its acknowledgements renew the lease.
            rep.broadcast_heartbeats(self._start_round() if self._opts.lease_ns else self._reads.started_round,
                                     self._now)
        rep.tick()
        for r in self._reads.pop_expired(self._ticks):
            self._fail_read(r, ReadFailure.TIMEOUT)
        self._check()

    def _heartbeat_interval(self, rep: Replicator) -> int:
        """heartbeat_ticks, or idle_heartbeat_ticks while the group is idle (ReplicaOptions)."""
        opts = self._opts
        if (opts.idle_heartbeat_ticks and self._ticks - self._last_busy_tick >= opts.idle_after_ticks
                and not len(self._reads) and rep.all_hold(self._log.last_index)):
            return max(opts.heartbeat_ticks, opts.idle_heartbeat_ticks)
        return opts.heartbeat_ticks

    def step(self, msg: Message) -> None:
        """Handles one message addressed to this replica (any order, any number of times)."""
        if msg.recipient != self.id:
            raise ReplicaMisuseError(f"message for {msg.recipient} stepped into replica {self.id}")
        if isinstance(msg, NotMyLeader):
            self._on_not_my_leader(msg)
        elif msg.epoch < self._promised_epoch:
            if isinstance(msg, _FENCED_MESSAGES):  # E3; stale responses are just dropped
                self._reply(NotMyLeader(epoch=self._promised_epoch, sender=self.id, recipient=msg.sender,
                                        rejected_epoch=msg.epoch, leader_id=self._leader_id))
        elif isinstance(msg, PromiseRequest):
            self._on_promise_request(msg)
        else:
            if msg.epoch > self._promised_epoch:
                if isinstance(msg, Appointment):
                    raise InvariantViolation(f"E2: appointed for epoch {msg.epoch} without promising it "
                                             f"(promised {self._promised_epoch})")
                if not isinstance(msg, _LEADER_MESSAGES):
                    return  # a response from an epoch we never reached: not ours
                self._adopt_epoch(msg.epoch)  # E4
            self._handlers[self._role](msg)
        self._check()

    @property
    def options(self) -> ReplicaOptions:
        return self._opts

    def has_ready(self) -> bool:
        """True when ready() would return work (cheap; no side effects)."""
        if self._outstanding is not None:
            return False
        log = self._log
        persisted, soft = self._persisted, self._reported_soft
        # Field by field, not HardState/SoftState objects: this runs several times per write.
        return bool(self._msgs or self._msgs_after_persist or self._staged or self._pending_snapshot
                    or self._failed_reads or self._snapshot_requests
                    or log.stable_index < log.last_index
                    or (log.applied_index < log.commit_index and self._apply_now())
                    or self._promised_epoch != persisted.promised_epoch or log.commit_index != persisted.commit_index
                    or self._role is not soft.role or self._promised_epoch != soft.epoch
                    or self._leader_id != soft.leader_id
                    or (self._replicator is not None and (self._reads_waiting() or self._replicator.snapshot_wanted())))

    def ready(self) -> Ready:
        """The work to do now. Requires: the previous Ready was advanced."""
        if self._outstanding is not None:
            raise ReplicaMisuseError("ready() called before advance() of the previous Ready")
        rep = self._replicator
        if rep is not None:
            if self._reads.needs_round():
                rep.broadcast_heartbeats(self._start_round(), self._now)
                self._confirm_reads()  # a single-voter group confirms by itself
            self._snapshot_requests.extend(rep.snapshot_requests())
        log = self._log
        # Runs at least once per write on every member: new objects only for what changed.
        persisted, reported = self._persisted, self._reported_soft
        hard = None
        if self._promised_epoch != persisted.promised_epoch or log.commit_index != persisted.commit_index:
            hard = HardState(self._promised_epoch, log.commit_index)
        soft = None
        if (self._role is not reported.role or self._promised_epoch != reported.epoch
                or self._leader_id != reported.leader_id):
            soft = self._reported_soft = self._soft_state()
        committed = log.committed_unapplied(self._opts.max_apply_entries) if self._apply_now() else []
        reads = []
        if self._role is Role.LEADER:
            applied = committed[-1].index if committed else log.applied_index
            reads = [ReadState(r.request_id, r.read_index) for r in self._reads.pop_servable(applied)
                     if r.read_index is not None]
        rd = Ready(soft_state=soft, hard_state=hard,
                   messages=self._msgs.copy(),  # the list is shared with the Replicator: clear, never rebind
                   snapshot_chunks=self._staged, snapshot=self._pending_snapshot,
                   entries=log.unstable_entries(), messages_after_persist=self._msgs_after_persist,
                   committed_entries=committed, reads=reads, failed_reads=self._failed_reads,
                   snapshot_requests=self._snapshot_requests)
        self._msgs.clear()
        self._msgs_after_persist, self._staged, self._pending_snapshot = [], [], None
        self._failed_reads, self._snapshot_requests = [], []
        if committed:
            self._apply_due = False
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The node did everything `rd` asked. Requires: rd is the last ready()."""
        if rd is not self._outstanding:
            raise ReplicaMisuseError("advance() of a Ready that is not the outstanding one")
        self._outstanding = None
        if rd.hard_state is not None:
            self._persisted = rd.hard_state
        if rd.entries:
            self._log.stable_to(rd.entries[-1].position)
        if rd.committed_entries:
            last = rd.committed_entries[-1].index
            if last > self._log.applied_index:  # else a snapshot overtook them
                self._log.applied_to(last)
        if rd.entries and self._replicator is not None:
            self._maybe_commit()  # our own entries are now durable: they may complete a quorum
        self._check()

    # ========================================================== role handlers
    def _step_follower(self, msg: Message) -> None:
        if isinstance(msg, Append):
            self._follow(msg.sender)
            self._on_append(msg)
        elif isinstance(msg, Heartbeat):
            self._follow(msg.sender)
            self._on_heartbeat(msg)
        elif isinstance(msg, SnapshotChunk):
            self._follow(msg.sender)
            self._on_snapshot_chunk(msg)
        elif isinstance(msg, Appointment):
            self._on_appointment(msg)
        # Acks of an epoch we do not lead: stale, dropped.

    def _step_leader(self, msg: Message) -> None:
        if msg.epoch == self._promised_epoch and self._replicator is not None:
            self._replicator.heard(msg.sender)
        if isinstance(msg, AppendAck):
            self._on_append_ack(msg)
        elif isinstance(msg, HeartbeatAck):
            self._on_heartbeat_ack(msg)
        elif isinstance(msg, SnapshotAck):
            self._on_snapshot_ack(msg)
        elif isinstance(msg, _LEADER_MESSAGES):
            raise InvariantViolation(f"E1: leader {self.id} of epoch {msg.epoch} got {type(msg).__name__} "
                                     f"from {msg.sender} in the same epoch")
        # A duplicate Appointment of our own epoch: already leading.

    # ============================================================ epochs (E, M)
    def _on_promise_request(self, msg: PromiseRequest) -> None:
        if msg.epoch > self._hold_epoch and self._holding():
            # LL2: a leader's lease may still run; the MM asks again. LL5: until this
            # member promises, it renews no lease, or a live leader would keep it forever.
            self._refused_epoch = max(self._refused_epoch, msg.epoch)
            return
        if msg.epoch > self._promised_epoch:
            self._adopt_epoch(msg.epoch)
            self._appointable_epoch = msg.epoch
        self._reply(PromiseResponse(epoch=msg.epoch, sender=self.id, recipient=msg.sender,
                                    last=self._log.last_position(), commit_index=self._log.commit_index))

    def _on_not_my_leader(self, msg: NotMyLeader) -> None:
        if msg.epoch > self._promised_epoch:
            self._adopt_epoch(msg.epoch, msg.leader_id)  # E5

    def _adopt_epoch(self, epoch: int, leader_hint: int | None = None) -> None:
        """E4/E5: move to a higher epoch as a follower (persisted by the next Ready)."""
        self._promised_epoch = epoch
        self._leader_id = None
        self._leader_hint = leader_hint
        self._appointable_epoch = None
        self._receiving = None
        if self._role is not Role.FOLLOWER:
            self._step_down()

    def _follow(self, sender: int) -> None:
        if self._leader_id is None:
            self._leader_id = sender
        elif self._leader_id != sender:
            raise InvariantViolation(f"E1: replica {self.id} heard leaders {self._leader_id} and {sender} "
                                     f"in epoch {self._promised_epoch}")

    def _on_appointment(self, msg: Appointment) -> None:
        if self._appointable_epoch != msg.epoch:
            return  # invariant 5: promised in an earlier incarnation, or already led: the MM retries
        if self._leader_id is not None:
            raise InvariantViolation(f"E1: appointed in epoch {msg.epoch} already led by {self._leader_id}")
        if self.id not in msg.config.all_voters() or not msg.config.voters:
            raise InvariantViolation(f"M3: appointed leader {self.id} is not a voter of {msg.config}")
        self._appointable_epoch = None
        self._role = Role.LEADER_ELECT
        self._leader_id = self.id
        self._reads = ReadIndexTracker()
        self._lease = LeaderLease(self._opts.lease_ns)
        self._heartbeat_elapsed = 0
        self._last_busy_tick = self._ticks
        self._noop_index = self._log.last_index + 1
        self._log.append_own([Entry(msg.epoch, self._noop_index, EntryKind.NOOP)])  # M4
        self._replicator = Replicator(self.id, msg.epoch, msg.config, self._log, self._opts, self._msgs)
        self._replicator.broadcast_appends()
        self._maybe_commit()

    def _step_down(self) -> None:
        for r in self._reads.pop_all():
            self._fail_read(r, ReadFailure.NOT_LEADER)
        self._role = Role.FOLLOWER
        self._replicator = None
        self._reads = ReadIndexTracker()
        self._lease = LeaderLease(self._opts.lease_ns)
        self._snapshot_requests = []

    # ========================================================== follower side
    def _on_append(self, msg: Append) -> None:
        if msg.entries and (msg.entries[0].index != msg.prev.index + 1 or msg.entries[-1].epoch > msg.epoch):
            raise InvariantViolation(f"L1: malformed Append from {msg.sender}: prev {msg.prev}, "
                                     f"first {msg.entries[0].position}")
        match = self._log.accept(msg.prev, msg.entries)
        if match is None:
            self._reply(AppendAck(epoch=msg.epoch, sender=self.id, recipient=msg.sender,
                                  result=AppendResult.LOG_LOST if self._lost_id else AppendResult.LOG_MISMATCH,
                                  index=msg.prev.index, hint_index=self._log.conflict_hint(msg.prev.index),
                                  lost_id=self._lost_id))
            return
        self._log.commit_to(min(msg.commit_index, match))
        self._reply(AppendAck(epoch=msg.epoch, sender=self.id, recipient=msg.sender,
                              result=AppendResult.ACCEPTED, index=match))

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        # The leader sends at most our acknowledged match, so we hold those entries (L4).
        self._log.commit_to(min(msg.commit_index, self._log.last_index))
        held = 0
        own = self._opts.lease_ns
        # LL2: no promise to a new epoch until the hold of our own lease (at least
        # the one asked for, and the one LL3 holds for after a restart) ran out;
        # the ack says so, and only such acks renew a lease. A heartbeat asking for
        # none is held for too: it costs only election time, and leaders of commits
        # e983928-6b2d203 count every ack. LL5: not while the MM waits for our
        # promise; the ack then still confirms reads (R2).
        if own and msg.sent_at_ns:
            self._check_clock_rate(msg.sent_at_ns)
        if own and msg.lease_ns <= own and self._renews_lease() and not self.clock_suspect:
            self._hold_until = max(self._hold_until, self._now + hold_ns(own))
            self._hold_epoch = msg.epoch
            held = own
        self._reply(HeartbeatAck(epoch=msg.epoch, sender=self.id, recipient=msg.sender, round=msg.round,
                                 lease_ns=held))
        if self._lost_id and msg.commit_index > self._log.last_index:
            # S6: an idle leader sends no Append this member could reject, and
            # still counts what it held before its data was lost.
            self._reply(AppendAck(epoch=msg.epoch, sender=self.id, recipient=msg.sender,
                                  result=AppendResult.LOG_LOST, index=msg.commit_index,
                                  hint_index=self._log.last_index, lost_id=self._lost_id))

    def _on_snapshot_chunk(self, msg: SnapshotChunk) -> None:
        def ack(next_offset: int = 0, installed: bool = False) -> None:
            self._reply(SnapshotAck(epoch=msg.epoch, sender=self.id, recipient=msg.sender, snapshot=msg.snapshot,
                                    next_offset=next_offset, installed=installed))

        log = self._log
        if log.commit_index >= msg.snapshot.index or log.epoch_at(msg.snapshot.index) == msg.snapshot.epoch:
            # S4: we already hold everything up to the snapshot (committed, or the
            # same entry by log matching). Installing it would throw away entries
            # after it that we may have acknowledged.
            self._receiving = None
            log.commit_to(min(msg.snapshot.index, log.last_index))
            ack(installed=True)
            return
        if msg.offset == 0:
            self._receiving = SnapshotReceive(msg.snapshot)
            self._staged = []
        rx = self._receiving
        if rx is None or rx.snapshot != msg.snapshot or msg.offset != rx.next_offset:
            ack(next_offset=rx.next_offset if rx is not None and rx.snapshot == msg.snapshot else 0)
            return
        self._staged.append(StagedChunk(msg.snapshot, msg.offset, msg.data, msg.done))
        rx.next_offset += 1
        if not msg.done:
            ack(next_offset=rx.next_offset)
            return
        self._receiving = None
        self._log.restore(msg.snapshot)
        self._pending_snapshot = msg.snapshot
        ack(installed=True)

    # ============================================================ leader side
    def _on_append_ack(self, msg: AppendAck) -> None:
        if msg.result is AppendResult.ACCEPTED and msg.index > self._log.last_index:
            raise InvariantViolation(f"C2: {msg.sender} acknowledged {msg.index} past our last index")
        rep = self._replicator
        assert rep is not None
        moved = rep.on_append_ack(msg)
        if moved is None:
            return
        if moved:
            self._maybe_commit()
        rep.send_to(msg.sender)

    def _on_heartbeat_ack(self, msg: HeartbeatAck) -> None:
        rep = self._replicator
        assert rep is not None
        pr = rep.progress.get(msg.sender)
        if pr is None:
            return
        if not pr.learner:
            self._reads.on_ack(msg.sender, msg.round)
            self._confirm_reads()
            if self._opts.lease_ns and msg.lease_ns >= self._opts.lease_ns:   # LL1: a member that holds for it
                self._lease.on_ack(msg.sender, msg.round)
                self._lease.quorum_acknowledged(rep.config, self.id)
        rep.on_heartbeat_ack(msg.sender)

    def _on_snapshot_ack(self, msg: SnapshotAck) -> None:
        rep = self._replicator
        assert rep is not None
        if rep.on_snapshot_ack(msg):
            self._maybe_commit()
        if msg.installed:
            rep.send_to(msg.sender)

    def _maybe_commit(self) -> None:
        """C1: commit what a quorum holds durably, if it is of our epoch."""
        rep = self._replicator
        assert rep is not None
        index = rep.quorum_index()
        if index <= self._log.commit_index or self._log.epoch_at(index) != self._promised_epoch:
            return
        self._log.commit_to(index)
        if self._role is Role.LEADER_ELECT and index >= self._noop_index:
            self._role = Role.LEADER  # M5
            self._reads.assign_read_index(self._arrival_index())
        self._confirm_reads()
        rep.send_commits()

    def _start_round(self) -> int:
        """A new heartbeat round (R2); with leases, its start time is kept (LL1)."""
        round_number = self._reads.start_round()
        if self._opts.lease_ns:
            self._lease.round_started(round_number, self._now)
            assert self._replicator is not None   # a single voter acknowledges its own round at once
            self._lease.quorum_acknowledged(self._replicator.config, self.id)
        return round_number

    def _holding(self) -> bool:
        """LL2/LL3: whether this member still promises no new epoch."""
        return self._hold_from_start or self._now < self._hold_until

    def _check_clock_rate(self, leader_now: int) -> None:
        """LL6: over each window of our clock, compare how far the leader's clock
        moved (its heartbeats say) with how far ours did. A ratio off by more than
        CLOCK_RATE_BOUND means the assumption the lease rests on does not hold
        between us: we hold for no lease until a later window agrees again."""
        window = self._clock_window
        if window is None or window[0] != self._promised_epoch:
            self._clock_window = (self._promised_epoch, leader_now, self._now)
            return
        ours = self._now - window[2]
        if ours < CLOCK_CHECK_WINDOW_NS:
            return
        theirs = leader_now - window[1]
        self.clock_suspect = theirs <= 0 or abs(ours / theirs - 1) > CLOCK_RATE_BOUND
        self._clock_window = (self._promised_epoch, leader_now, self._now)

    def _renews_lease(self) -> bool:
        """LL5: not while the MM waits for a promise this member could not give yet."""
        return self._refused_epoch <= self._promised_epoch

    def _confirm_reads(self) -> None:
        if len(self._reads):
            assert self._replicator is not None
            self._reads.confirm(self._replicator.config, self.id)

    def _reads_waiting(self) -> bool:
        if self._reads.needs_round():
            return True
        return self._role is Role.LEADER and self._reads.has_servable(self._log.commit_index)

    # ================================================================ helpers
    def _require_leader(self) -> None:
        if self._role is Role.FOLLOWER:
            raise NotLeaderError(self._promised_epoch, self._leader_id or self._leader_hint)

    def _reply(self, msg: Message) -> None:
        self._msgs_after_persist.append(msg)  # C2: answers leave only after persisting

    def _fail_read(self, r: PendingRead, reason: ReadFailure) -> None:
        leader = self._leader_id if self._leader_id is not None else self._leader_hint
        self._failed_reads.append(FailedRead(r.request_id, reason, self._promised_epoch,
                                             leader if leader != self.id else None))

    def _apply_now(self) -> bool:
        """Whether a Ready hands out committed entries now (ReplicaOptions.follower_apply_batch)."""
        if self._role is not Role.FOLLOWER or self._apply_due:
            return True
        log = self._log
        return log.commit_index - log.applied_index >= self._opts.follower_apply_batch

    def _soft_state(self) -> SoftState:
        return SoftState(self._role, self._promised_epoch, self._leader_id)

    def _check(self) -> None:
        log = self._log
        log.check()
        if log.commit_index < self._checked_commit:
            raise InvariantViolation(f"1: commit index went back from {self._checked_commit} to {log.commit_index}")
        if self._promised_epoch < self._checked_epoch:
            raise InvariantViolation(f"1: epoch went back from {self._checked_epoch} to {self._promised_epoch}")
        self._checked_commit = log.commit_index
        self._checked_epoch = self._promised_epoch
        if self._role is not Role.FOLLOWER:
            rep = self._replicator
            if self._leader_id != self.id or rep is None or rep.epoch != self._promised_epoch:
                raise InvariantViolation(f"3: leader {self.id} with leader_id {self._leader_id}")
            if log.last_epoch() != self._promised_epoch:
                raise InvariantViolation(f"3: leader's last entry {log.last_position()} not of epoch "
                                         f"{self._promised_epoch}")
        elif self._replicator is not None:
            raise InvariantViolation("3: a follower with leader progress")
