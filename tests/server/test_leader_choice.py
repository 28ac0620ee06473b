"""Which promiser the metadata manager appoints (server/replication/election.py
invariant 2, server/meta/group_leadership.py): the most up-to-date log always
wins; among logs that tie, the member leading the fewest groups (its rank),
so leaders spread over the nodes; and an appointment waits, for two MM ticks
at most, for a live member that has not promised yet and would be chosen."""
from __future__ import annotations

from server.meta.group_leadership import GroupLeadership
from server.replication.election import EpochChange
from server.replication.messages import (
    METADATA_MANAGER_ID,
    Appointment,
    Config,
    LogPosition,
    Message,
    PromiseRequest,
    PromiseResponse,
)

MM = METADATA_MANAGER_ID


def _promise(epoch: int, member: int, last: LogPosition = LogPosition(0, 0)) -> PromiseResponse:
    return PromiseResponse(epoch=epoch, sender=member, recipient=MM, last=last)


def test_the_longest_log_wins_whatever_the_ranks():
    ch = EpochChange(5, Config(frozenset({1, 2, 3})), rank={1: 0, 2: 9, 3: 0}.__getitem__)
    ch.on_message(_promise(5, 2, LogPosition(4, 10)))
    ch.on_message(_promise(5, 1, LogPosition(4, 9)))
    assert ch.choose_leader() == 2    # most loaded, but the only one with entry 10


def test_among_tied_logs_the_lowest_rank_wins_then_the_lowest_id():
    ranks = {1: 5, 2: 3, 3: 3}
    ch = EpochChange(5, Config(frozenset({1, 2, 3})), rank=ranks.__getitem__)
    for m in (1, 2, 3):
        ch.on_message(_promise(5, m, LogPosition(4, 10)))
    assert ch.choose_leader() == 2
    unranked = EpochChange(5, Config(frozenset({1, 2, 3})))
    for m in (3, 2, 1):
        unranked.on_message(_promise(5, m, LogPosition(4, 10)))
    assert unranked.choose_leader() == 1


def test_incoming_voters_still_come_before_ranks_in_a_joint_config():
    joint = Config(frozenset({1, 2, 4}), outgoing_voters=frozenset({1, 2, 3}))
    ch = EpochChange(5, joint, rank={1: 7, 2: 7, 3: 0, 4: 7}.__getitem__)
    for m in (1, 2, 3, 4):
        ch.on_message(_promise(5, m, LogPosition(4, 10)))
    assert ch.choose_leader() == 1    # 3 ranks lowest but is outgoing only


def test_promise_requests_go_to_the_least_loaded_first():
    ch = EpochChange(5, Config(frozenset({1, 2, 3})), rank={1: 4, 2: 1, 3: 2}.__getitem__)
    assert [r.recipient for r in ch.promise_requests()] == [2, 3, 1]


class _MM:
    """A GroupLeadership over {1, 2, 3} with ranks and liveness set by the test."""

    def __init__(self, ranks: dict[int, int], alive: set[int]):
        self.sent: list[Message] = []
        self.gl = GroupLeadership({1, 2, 3}, self.sent.append, leader_rank=ranks.__getitem__,
                                  member_alive=alive.__contains__)
        self.gl.start_epoch()
        self.epoch = self.gl.epoch

    def appointed(self) -> list[int]:
        return [m.recipient for m in self.sent if isinstance(m, Appointment)]


def test_an_appointment_waits_for_a_live_less_loaded_member_that_has_yet_to_promise():
    mm = _MM({1: 0, 2: 5, 3: 5}, alive={1, 2, 3})
    assert [m.recipient for m in mm.sent if isinstance(m, PromiseRequest)][0] == 1
    mm.gl.step(_promise(mm.epoch, 2))
    mm.gl.step(_promise(mm.epoch, 3))     # a quorum, both loaded: node 1 is worth hearing
    assert mm.appointed() == []
    mm.gl.step(_promise(mm.epoch, 1))
    assert mm.appointed() == [1]


def test_the_wait_ends_within_two_ticks():
    mm = _MM({1: 0, 2: 5, 3: 5}, alive={1, 2, 3})
    mm.gl.step(_promise(mm.epoch, 2))
    mm.gl.step(_promise(mm.epoch, 3))
    mm.gl.tick()
    assert mm.appointed() == []
    mm.gl.tick()                          # node 1 did not answer in time
    assert mm.appointed() == [2]


def test_no_wait_for_a_member_that_is_not_alive_or_not_less_loaded():
    dead = _MM({1: 0, 2: 5, 3: 5}, alive={2, 3})
    dead.gl.step(_promise(dead.epoch, 2))
    dead.gl.step(_promise(dead.epoch, 3))
    assert dead.appointed() == [2]        # failover: the dead node's zero load holds nothing up
    busy = _MM({1: 9, 2: 5, 3: 4}, alive={1, 2, 3})
    busy.gl.step(_promise(busy.epoch, 2))
    busy.gl.step(_promise(busy.epoch, 3))
    assert busy.appointed() == [3]


def test_a_waited_for_member_with_a_shorter_log_does_not_win():
    mm = _MM({1: 0, 2: 5, 3: 5}, alive={1, 2, 3})
    mm.gl.step(_promise(mm.epoch, 2, LogPosition(1, 8)))
    mm.gl.step(_promise(mm.epoch, 3, LogPosition(1, 7)))
    mm.gl.step(_promise(mm.epoch, 1, LogPosition(1, 7)))
    assert mm.appointed() == [2]


def test_an_epoch_the_mm_started_and_ticked_at_once_still_waits():
    """The MM's ticker starts an epoch and ticks the group in the same pass."""
    mm = _MM({1: 0, 2: 5, 3: 5}, alive={1, 2, 3})
    mm.gl.tick()
    mm.gl.step(_promise(mm.epoch, 2))
    mm.gl.step(_promise(mm.epoch, 3))
    assert mm.appointed() == []
    mm.gl.step(_promise(mm.epoch, 1))
    assert mm.appointed() == [1]


# ------------------------------------------------ CQ2: a leader that lost its quorum
def _status(epoch: int, member: int, contact: bool):
    from server.replication.messages import Role, StatusReport
    return StatusReport(epoch=epoch, sender=member, recipient=MM, role=Role.LEADER, quorum_contact=contact)


def test_an_avoided_member_is_appointed_only_by_a_quorum_without_it():
    ch = EpochChange(5, Config(frozenset({1, 2, 3})), avoid=frozenset({1}))
    ch.on_message(_promise(5, 1, LogPosition(4, 12)))   # the longest log: it would win (M3)
    ch.on_message(_promise(5, 2, LogPosition(4, 10)))
    assert ch.has_quorum() and ch.choose_leader() is None   # {1, 2} is a quorum, {2} is not
    ch.on_message(_promise(5, 3, LogPosition(4, 11)))
    assert ch.choose_leader() == 3   # the most up to date of the quorum {2, 3}


def _group(sent: list[Message]) -> GroupLeadership:
    gl = GroupLeadership({1, 2, 3}, sent.append, leader_timeout_ticks=4)
    gl.start_epoch()
    for m in (1, 2, 3):
        gl.step(_promise(gl.epoch, m, LogPosition(0, 0)))
    assert gl.leader == 1
    sent.clear()
    return gl


def test_reports_of_a_leader_that_hears_no_quorum_do_not_keep_it_in_place():
    sent: list[Message] = []
    gl = _group(sent)
    for _ in range(20):                       # a leader that hears its quorum stays
        gl.step(_status(1, 1, contact=True))
        gl.tick()
    assert gl.epoch == 1 and gl.leader == 1
    for _ in range(5):                        # it reports losing its quorum, every tick
        gl.step(_status(1, 1, contact=False))
        gl.tick()
    assert gl.epoch == 2 and gl.leader is None, "deposed once its reports said it hears no quorum"
    assert gl.change is not None and gl.change.avoid == frozenset({1})
    gl.step(_promise(2, 1, LogPosition(1, 9)))   # 1 reaches the MM and has the longest log
    gl.step(_promise(2, 2, LogPosition(1, 7)))
    assert gl.leader is None
    gl.step(_promise(2, 3, LogPosition(1, 7)))
    assert gl.leader == 2
    assert [m.recipient for m in sent if isinstance(m, Appointment)] == [2]


def test_a_leader_that_just_stopped_reporting_is_not_avoided():
    sent: list[Message] = []
    gl = _group(sent)
    for _ in range(6):
        gl.tick()
    assert gl.epoch == 2 and gl.change is not None and gl.change.avoid == frozenset()
    for m, last in ((1, LogPosition(1, 9)), (2, LogPosition(1, 7))):
        gl.step(_promise(2, m, last))
    assert gl.leader == 1   # back after a restart, with the longest log
