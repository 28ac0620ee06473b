"""EpochChange: the metadata manager's side of one leader change (README M1-M3).

Purpose: sans-I/O promise collection and leader choice for one epoch, for the
MM (next issue) and for the simulator's fake MM. The MM owns the epoch
counter and the config; this object only runs one attempt.

Invariants:
  1. Only PromiseResponses of exactly `epoch` count; each member counts once.
  2. A leader is chosen only once promises cover a quorum of `config`, and it is
     the voter with the greatest last position among the promisers (ties:
     incoming voters first, then the lowest `rank`, then the lowest id): Raft's
     election restriction. The rank (the MM: how many groups the member leads)
     only orders members whose logs tie, so any choice keeps the restriction.
  3. `superseded` is set when a member rejects this very epoch (it promised a
     higher one): this attempt can never succeed; the MM must start a higher one.

Thread-safety: none; one MM loop owns it.
"""
from __future__ import annotations

from collections.abc import Callable

from server.replication.messages import (
    METADATA_MANAGER_ID,
    Appointment,
    Config,
    LogPosition,
    Message,
    NotMyLeader,
    PromiseRequest,
    PromiseResponse,
)
from server.replication.quorum import has_quorum


class EpochChange:
    __slots__ = ("epoch", "config", "mm_id", "rank", "avoid", "promises", "superseded", "leader")

    def __init__(self, epoch: int, config: Config, mm_id: int = METADATA_MANAGER_ID,
                 rank: Callable[[int], int] | None = None, avoid: frozenset[int] = frozenset()):
        """Requires: epoch above every epoch the MM issued before; config has voters.
        `rank(member)`: lower is preferred among promisers whose logs tie (invariant 2).
        `avoid`: members not to appoint (CQ2: a leader deposed for losing its
        quorum). The appointee is the most up-to-date of a quorum of other
        promisers, or, once all promisers form a quorum, a member whose
        position ties with the greatest of them all; else the choice waits.
        Either is safe: M3's argument needs only that the appointee's log be
        at least as up to date as every member of some quorum of promisers."""
        if not config.voters:
            raise ValueError("a config needs voters")
        self.epoch = epoch
        self.config = config
        self.mm_id = mm_id
        self.rank = rank
        self.avoid = avoid
        self.promises: dict[int, LogPosition] = {}
        self.superseded = False
        self.leader: int | None = None

    def promise_requests(self) -> list[PromiseRequest]:
        """One request per member, learners included (they must be fenced too),
        the lowest ranked first: with equal logs, the first promisers decide."""
        members = sorted(self.config.members())
        if self.rank is not None:
            members.sort(key=self.rank)
        return [PromiseRequest(epoch=self.epoch, sender=self.mm_id, recipient=m) for m in members]

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, PromiseResponse) and msg.epoch == self.epoch and msg.sender in self.config.members():
            self.promises.setdefault(msg.sender, msg.last)
        elif isinstance(msg, NotMyLeader) and msg.rejected_epoch == self.epoch:
            self.superseded = True  # a member promised a higher epoch than ours

    def has_quorum(self) -> bool:
        return has_quorum(self.config, self.promises.keys())

    def choose_leader(self) -> int | None:
        """The appointee once a quorum promised (fixed from then on), else None."""
        if self.leader is None and not self.superseded and self.has_quorum():
            voters = self.config.all_voters()
            pool = self.promises
            if self.avoid:
                pool = {m: pos for m, pos in pool.items() if m not in self.avoid}
                if not has_quorum(self.config, pool.keys()):
                    best = max(pos for m, pos in self.promises.items() if m in voters)
                    pool = {m: pos for m, pos in pool.items() if pos == best}
            rank = self.rank or (lambda m: 0)
            candidates = [(pos, m in self.config.voters, -rank(m), -m) for m, pos in pool.items()
                          if m in voters]
            if not candidates:
                return None
            self.leader = -max(candidates)[3]
        return self.leader

    def appointment(self) -> Appointment | None:
        leader = self.choose_leader()
        if leader is None:
            return None
        return Appointment(epoch=self.epoch, sender=self.mm_id, recipient=leader, config=self.config)
