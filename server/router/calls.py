"""One client operation's state between its attempts at a leader (server/router/router.py).

Purpose: Router.write and Router.get send an operation to its group's leader,
possibly several times (a new leader, a broken stream, an unknown outcome).
What the attempts share lives here, so an operation can start on the
caller's stack with no task (the Batch stream's common case: its route is
known and its first answer settles it, server/router/service.py) and go on
in a task only when an attempt leaves something to wait for.

The Router's methods over them:

    begin_write / begin_read      validate, make the call
    try_attempt                   send an attempt now if the route is known (sync)
    write_verdict / read_verdict  what a settled attempt means (sync)
    finish_write / finish_read    the rest, awaiting what needs awaiting

Thread-safety: one asyncio loop, like the Router.
"""
from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from server.router.routing import Route


class Verdict(enum.Enum):
    """What a settled attempt that did not settle its call leaves to do."""
    RETRY_NOW = 1   # the routing or the answer named a newer leader: the next attempt at once
    WAIT = 2        # until the routing changes, or the deadline
    RECREATED = 3   # the table id was dropped: ask the MM whether the name now names another table


@dataclass(slots=True)
class Attempt:
    """One attempt in flight: its answer's future, where it went, the seq it
    was stamped with (writes; b"" for reads) and the timer of its deadline."""
    answer: asyncio.Future
    route: Route
    seq: bytes
    timer: asyncio.TimerHandle


@dataclass(slots=True)
class WriteCall:
    """A put (value not None) or delete, between attempts. `first_seq`: what
    every later attempt tells the leader (data.proto, WriteRequest.first_seq):
    b"" until an attempt's outcome is unknown, then its seq; all zeros from
    the start for a client's retry of an earlier call."""
    table: str
    key: bytes
    value: bytes | None
    kind: int
    if_seq: bytes
    if_absent: bool
    request_id: int
    retry: bool
    deadline: float
    first_seq: bytes
    unknown: bool = False          # an attempt may have applied: at the deadline the answer is UNKNOWN
    dropped_table_id: int = 0      # the table id a TABLE_DROPPED answer named (Verdict.RECREATED)


@dataclass(slots=True)
class ReadCall:
    """A linearizable get, between attempts."""
    table: str
    key: bytes
    deadline: float
    dropped_table_id: int = 0


def expire(answer: asyncio.Future) -> None:
    """An attempt's deadline passed: its caller stops waiting for it (the
    DataClient drops an answer whose future is already done)."""
    if not answer.done():
        answer.set_exception(TimeoutError())
