"""GroupLeadership: the metadata manager's duties for one replication group, sans I/O.

Purpose: issues strictly increasing epochs, runs one EpochChange at a time
(promises from a quorum, then an Appointment of the most up-to-date promiser;
server/replication/README.md M1-M3), retries stalled changes, deposes a
leader whose status reports stop, and drives a follower replacement through
learner -> joint -> new config (J1-J3).

Time is ticks (the MM ticks every MetaOptions.tick_seconds); no clock, no I/O:
`send` carries messages out and `persist` is called, and must have made the
group's durable fields (epoch, config, leader, phase, target) durable, before
any message of a new epoch leaves (E1: an epoch is never reissued, even by a
restarted MM). The simulator (tests/server/sim) drives this same class over
thousands of random schedules.

Thread-safety: none; one MM loop owns it.
"""
from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from server.replication.election import EpochChange
from server.replication.errors import InvariantViolation
from server.replication.messages import Config, Message, NotMyLeader, Role, StatusReport
from server.replication.quorum import has_quorum

ELECTION_RETRY_TICKS = 8      # an epoch change without an appointed leader this long is retried higher
LEADER_TIMEOUT_TICKS = 10     # a leader whose status reports stop this long is deposed
LEARNER_PATIENCE_TICKS = 30
RESEND_TICKS = 3              # the MM's RPC retry: requests and appointments not yet answered go out again
AVOID_TICKS = 100             # CQ2: epochs started this long after a leader lost its quorum are chosen without it


class ChangePhase(IntEnum):
    NONE = 0
    LEARNER = 1  # the new member catches up as a learner
    JOINT = 2    # joint config; waiting for one of its epochs to commit its NOOP


class GroupLeadership:
    def __init__(self, voters: set[int], send: Callable[[Message], None],
                 persist: Callable[["GroupLeadership"], None] | None = None, epoch: int = 0,
                 config: Config | None = None, leader_timeout_ticks: int = LEADER_TIMEOUT_TICKS,
                 election_retry_ticks: int = ELECTION_RETRY_TICKS,
                 leader_rank: Callable[[int], int] | None = None,
                 member_alive: Callable[[int], bool] | None = None, avoid_ticks: int = AVOID_TICKS):
        """`epoch` and `config`: what a restarted MM read back from its store.
        `leader_rank(member)`: which of the members whose logs tie to appoint
        (lowest first; EpochChange invariant 2): the MM passes the number of
        groups each node leads, so leaders spread over the nodes. With
        `member_alive` too, an appointment waits (two ticks at most)
        for a live member yet to promise that ranks below every promiser, which
        with an equal log would be chosen: the first quorum to answer is
        otherwise often the same two nodes.
        `avoid_ticks` (CQ2): for this long after a leader is deposed for
        hearing no quorum, every epoch started (retries too) appoints from a
        quorum of promisers without it. It must outlast the promise holds
        (LL2) of followers that still got its heartbeats (hold_ns of the
        longest lease, 611 ms, plus an election retry), and a whole round of
        the next such deposition (an election, the node's check-quorum
        window of 1.5 s, the leader timeout): 5 s. Several deposed
        leaders are avoided together, the window renewed for all of them at
        each such deposition (two bad members of five would otherwise take
        turns); all are forgiven once a leader that committed in its epoch
        reports that it hears its quorum. A leader is avoided only if the other voters
        the MM sees alive could form a quorum: one whose followers died is
        the only leader there can be."""
        self.send = send
        self.leader_rank = leader_rank
        self.member_alive = member_alive
        self.persist = persist
        self.leader_timeout_ticks = leader_timeout_ticks
        self.avoid_ticks = avoid_ticks
        self.avoid: dict[int, int] = {}   # CQ2: deposed leader -> the tick until which new epochs avoid it
        self.election_retry_ticks = election_retry_ticks
        self.epoch = epoch
        self.config = config or Config(frozenset(voters))
        self.change: EpochChange | None = None
        self.leader: int | None = None
        self.appointed: dict[int, int] = {}  # epoch -> leader
        self.ticks = 0
        self.change_started = 0
        self.last_leader_report = 0
        self.leader_reported = False
        self.quorum_lost = False   # the leader's last report said it hears no quorum (CQ2)
        self.last_resend = 0
        self.phase = ChangePhase.NONE
        self.phase_started = 0
        self.target: frozenset[int] = frozenset()
        self.joint_noop: dict[int, int] = {}  # joint epoch -> index of its NOOP
        self.joint_committed = False
        self.learner_caught_up = False
        self.elections = 0
        self.replacements = 0

    # ---------------------------------------------------------------- epochs
    def start_epoch(self) -> None:
        self.epoch += 1
        self.elections += 1
        avoid = frozenset(m for m, until in self.avoid.items() if self.ticks < until)
        self.change = EpochChange(self.epoch, self.config, rank=self.leader_rank, avoid=avoid)
        self.leader = None
        self.quorum_lost = False
        self.change_started = self.ticks
        if self.persist is not None:
            self.persist(self)   # durable before any message of the new epoch leaves (E1)
        for req in self.change.promise_requests():
            self.send(req)

    def settled(self) -> bool:
        return self.leader is not None

    def step(self, msg: Message) -> None:
        if msg.epoch > self.epoch:
            raise InvariantViolation(f"E1: {type(msg).__name__} names epoch {msg.epoch} above the MM's {self.epoch}")
        if isinstance(msg, StatusReport):
            self._on_status(msg)
            return
        ch = self.change
        if ch is None:
            return
        ch.on_message(msg)
        if isinstance(msg, NotMyLeader) and ch.superseded and self.leader is None:
            self.start_epoch()
            return
        self._maybe_appoint(ch)

    def _worth_waiting(self, ch: EpochChange) -> bool:
        """Whether a live member that has not promised yet, ranking below every
        promiser, should be heard before the choice (see __init__). Only until
        the tick after the one the change started in (the MM's ticker starts
        an epoch and ticks it at once): an election waits two ticks at most."""
        rank, alive = self.leader_rank, self.member_alive
        if rank is None or alive is None or self.ticks > self.change_started + 1 or not ch.has_quorum():
            return False
        voters = self.config.all_voters() - ch.avoid
        promised = [rank(m) for m in ch.promises if m in voters]
        best = min(promised) if promised else 0
        return any(rank(m) < best and alive(m) for m in voters if m not in ch.promises)

    def _maybe_appoint(self, ch: EpochChange) -> None:
        if self.leader is None and not self._worth_waiting(ch):
            appointment = ch.appointment()
            if appointment is not None:
                self.leader = appointment.recipient
                assert self.appointed.setdefault(ch.epoch, self.leader) == self.leader
                self.last_leader_report = self.ticks
                self.leader_reported = False
                if self.config.joint:
                    self.joint_noop[ch.epoch] = ch.promises[self.leader].index + 1
                if self.persist is not None:
                    self.persist(self)
                self.send(appointment)

    def _on_status(self, rep: StatusReport) -> None:
        if rep.sender != self.leader or rep.epoch != self.epoch or rep.role is Role.FOLLOWER:
            return
        self.leader_reported = True
        # CQ2: a leader that hears from no quorum cannot commit; its reports do
        # not keep it in place, and the next epoch is chosen without it.
        self.quorum_lost = not rep.quorum_contact
        if not self.quorum_lost:
            self.last_leader_report = self.ticks
            if rep.role is Role.LEADER:
                # A leader that committed in its epoch (M5) and hears its quorum:
                # whom CQ2 avoided is no longer in the way. (Not LEADER_ELECT: a
                # new leader counts every member as heard until CQ1's window ends.)
                self.avoid.clear()
        noop = self.joint_noop.get(rep.epoch)
        if noop is not None and rep.commit_index >= noop:
            self.joint_committed = True  # J3
        if self.phase is ChangePhase.LEARNER:
            match = dict(rep.match)
            learners = self.config.learners
            if learners and all(match.get(m, 0) >= rep.commit_index for m in learners):
                self.learner_caught_up = True

    def tick(self) -> None:
        self.ticks += 1
        if self.change is not None:
            self._maybe_appoint(self.change)   # one that waited for a less loaded member (_worth_waiting)
        if self.change is not None and self.ticks - self.last_resend >= RESEND_TICKS:
            self._resend()
        stalled = self.ticks - self.change_started > self.election_retry_ticks
        if self.change is not None and self.leader is None and stalled:
            self.start_epoch()
        elif self.leader is not None and self.ticks - self.last_leader_report > self.leader_timeout_ticks:
            # The leader stopped reporting, or reports that it hears no quorum: depose it.
            if self.quorum_lost and self._others_could_lead(self.leader):
                # Whom the window still avoids stays avoided with it: a streak of
                # leaders that hear no quorum (two bad members of five) must not
                # let an earlier one back in between.
                until = self.ticks + self.avoid_ticks
                self.avoid = {m: until for m, t in self.avoid.items() if self.ticks < t}
                self.avoid[self.leader] = until
            self.start_epoch()
        if self.phase is ChangePhase.LEARNER and self.settled() and (
                self.learner_caught_up or self.ticks - self.phase_started > LEARNER_PATIENCE_TICKS):
            self.phase = ChangePhase.JOINT
            self.joint_committed = False
            self.config = Config(self.target, outgoing_voters=self.config.voters)  # J2
            self.start_epoch()
        elif self.phase is ChangePhase.JOINT and self.joint_committed:
            self.phase = ChangePhase.NONE
            self.config = Config(self.target)  # J3
            self.start_epoch()

    def _others_could_lead(self, leader: int) -> bool:
        """Whether the voters but `leader` that the MM sees alive form a quorum
        (all of them count as alive without `member_alive`)."""
        alive = self.member_alive or (lambda m: True)
        return has_quorum(self.config, [m for m in self.config.all_voters() if m != leader and alive(m)])

    def _resend(self) -> None:
        ch = self.change
        assert ch is not None
        self.last_resend = self.ticks
        if self.leader is None:
            for req in ch.promise_requests():
                if req.recipient not in ch.promises:
                    self.send(req)
        elif not self.leader_reported:
            appointment = ch.appointment()
            assert appointment is not None
            self.send(appointment)

    # ------------------------------------------------------------ membership
    def begin_replacement(self, old: int, new: int) -> bool:
        """Replace voter `old` by `new` (J1): returns False if a change is under way."""
        if self.phase is not ChangePhase.NONE or not self.settled() or old not in self.config.voters:
            return False
        if new in self.config.members():
            return False
        self.replacements += 1
        self.phase = ChangePhase.LEARNER
        self.phase_started = self.ticks
        self.learner_caught_up = False
        self.target = (self.config.voters - {old}) | {new}
        self.config = Config(self.config.voters, learners=frozenset({new}))
        self.start_epoch()
        return True
