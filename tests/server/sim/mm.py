"""FakeMetadataManager: the MM's replication-group duties, reliable and durable.

It issues strictly increasing epochs, runs one EpochChange at a time (promises
from a quorum, then an Appointment of the most up-to-date promiser), retries
stalled changes, deposes a leader whose status reports stop, and drives a
follower replacement through learner -> joint -> new config (README J1-J3).
"""
from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from server.replication.election import EpochChange
from server.replication.errors import InvariantViolation
from server.replication.messages import Config, Message, NotMyLeader, Role, StatusReport

ELECTION_RETRY_TICKS = 8
LEADER_TIMEOUT_TICKS = 10
LEARNER_PATIENCE_TICKS = 30
RESEND_TICKS = 3  # the MM's RPC retry: requests and appointments not yet answered go out again


class ChangePhase(IntEnum):
    NONE = 0
    LEARNER = 1  # the new member catches up as a learner
    JOINT = 2    # joint config; waiting for one of its epochs to commit its NOOP


class FakeMetadataManager:
    def __init__(self, voters: set[int], send: Callable[[Message], None]):
        self.send = send
        self.epoch = 0
        self.config = Config(frozenset(voters))
        self.change: EpochChange | None = None
        self.leader: int | None = None
        self.appointed: dict[int, int] = {}  # epoch -> leader
        self.ticks = 0
        self.change_started = 0
        self.last_leader_report = 0
        self.leader_reported = False
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
        self.change = EpochChange(self.epoch, self.config)
        self.leader = None
        self.change_started = self.ticks
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
        if self.leader is None:
            appointment = ch.appointment()
            if appointment is not None:
                self.leader = appointment.recipient
                assert self.appointed.setdefault(ch.epoch, self.leader) == self.leader
                self.last_leader_report = self.ticks
                self.leader_reported = False
                if self.config.joint:
                    self.joint_noop[ch.epoch] = ch.promises[self.leader].index + 1
                self.send(appointment)

    def _on_status(self, rep: StatusReport) -> None:
        if rep.sender != self.leader or rep.epoch != self.epoch or rep.role is Role.FOLLOWER:
            return
        self.last_leader_report = self.ticks
        self.leader_reported = True
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
        if self.change is not None and self.ticks - self.last_resend >= RESEND_TICKS:
            self._resend()
        if self.change is not None and self.leader is None and self.ticks - self.change_started > ELECTION_RETRY_TICKS:
            self.start_epoch()
        elif self.leader is not None and self.ticks - self.last_leader_report > LEADER_TIMEOUT_TICKS:
            self.start_epoch()  # the leader stopped reporting: depose it
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
