"""Deadlines and retries: exponential backoff with jitter on UNAVAILABLE, within the call's deadline.

Purpose: every SDK call runs its attempts through `with_retries`, which
decides whether to try again, how long to wait first, and which exception
the caller finally sees.

Contract:
  1. Retried: `Unavailable` (no leader yet, router unreachable, stream broken
     before the op was sent) and `OutcomeUnknown` (the op was sent and its
     answer lost), unless the server marked it `final` (errors.py, contract
     3). A write is only ever retried with the SAME request id (its caller
     builds the request once), so the server deduplicates it; reads are
     idempotent. Nothing else is retried.
  2. The wait before retry n (n = 0, 1, ...) is the server's `retry_after_ms`
     when it gave one, else a backoff of `min(max_backoff, initial_backoff *
     multiplier**n)`, half of it fixed and half uniformly random (jitter).
  3. No attempt starts after the deadline: when the wait would end at or past
     it, the last error is raised at once (with a note saying so). When the
     deadline passes during a retry, the error that caused the retry is
     raised, not DeadlineExceeded: DeadlineExceeded means the first attempt
     itself got no answer in time.
  4. A write that may have been applied by an earlier attempt never ends in
     `Unavailable` or `DeadlineExceeded`: those become `OutcomeUnknown`
     (errors.py, contract 2). Attempts themselves report a sent write whose
     answer was lost as `OutcomeUnknown` (`classify`).

Thread-safety: `RetryPolicy` and `Deadline` are immutable; `with_retries` runs
on one event loop; `rng` must not be shared between loops without a lock.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from server.client.errors import DeadlineExceeded, OutcomeUnknown, QuorumKVError, Unavailable

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0       # seconds, per call, when neither the call nor the client says otherwise


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait between attempts (defaults here, in one place)."""
    initial_backoff: float = 0.02    # seconds before the first retry (without a server hint)
    max_backoff: float = 1.0         # the cap of the exponential backoff
    multiplier: float = 2.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** retry)
        return cap / 2 + rng.uniform(0.0, cap / 2)


class Deadline:
    """A point in time.monotonic() time; None timeout: no deadline."""
    __slots__ = ("at",)

    def __init__(self, timeout: float | None):
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (at least 0.0), None without a deadline."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())


def classify(exc: QuorumKVError, *, write: bool, sent: bool) -> QuorumKVError:
    """The error an attempt reports: a write that was sent and got no definite answer is OutcomeUnknown.

    `sent`: the attempt may have reached the server. DEADLINE_EXCEEDED of such
    a write, and a broken stream after it was sent, leave its outcome unknown."""
    if write and sent and isinstance(exc, DeadlineExceeded):
        out = OutcomeUnknown(f"{exc.message} (the write was sent; it may have been applied)",
                             code=grpc.StatusCode.UNKNOWN)
        out.__cause__ = exc
        return out
    return exc


async def with_retries(attempt: Callable[[Deadline], Awaitable[T]], deadline: Deadline, policy: RetryPolicy,
                       rng: random.Random, *, write: bool, closed: Callable[[], bool]) -> T:
    """Run `attempt(deadline)` until it returns, retrying per the contract above."""
    retry = 0
    maybe_applied = False
    last: QuorumKVError | None = None
    while True:
        try:
            return await attempt(deadline)
        except (Unavailable, OutcomeUnknown) as exc:
            if isinstance(exc, OutcomeUnknown) and exc.final:
                exc.add_note(f"quorumkv: not retried after {retry + 1} attempt(s): the server says no retry "
                             "can settle it")
                raise
            last = exc
            maybe_applied = maybe_applied or (write and isinstance(exc, OutcomeUnknown))
        except DeadlineExceeded:
            if last is None:
                raise
            # The deadline cut a retry short: the reason the call failed is the error before it.
            err = _final(last, write, maybe_applied, retry + 1)
            err.add_note(f"quorumkv: gave up after {retry + 1} attempt(s): the last one ran out of deadline")
            raise err from err.__cause__
        if closed():
            raise _final(last, write, maybe_applied, retry + 1)
        delay = last.retry_after_ms / 1000.0 if last.retry_after_ms else policy.backoff(retry, rng)
        remaining = deadline.remaining()
        if remaining is not None and remaining <= delay:
            err = _final(last, write, maybe_applied, retry + 1)
            err.add_note(f"quorumkv: gave up after {retry + 1} attempt(s): the next one (in {delay:.3f} s) "
                         f"would start past the deadline")
            raise err
        await asyncio.sleep(delay)
        retry += 1


def _final(exc: QuorumKVError, write: bool, maybe_applied: bool, attempts: int) -> QuorumKVError:
    if write and maybe_applied and not isinstance(exc, OutcomeUnknown):
        out = OutcomeUnknown(f"{exc.message} (after {attempts} attempts, an earlier one of which may have been "
                             f"applied)", code=grpc.StatusCode.UNKNOWN)
        out.__cause__ = exc
        return out
    return exc
