"""A linearizability checker for histories of puts and gets on independent keys with unique values.

Purpose: tests/cluster/test_linearizability.py records what concurrent
clients asked of a real cluster under faults (when each call began and
ended, what it wrote or read) and asks this module whether some order of
the calls, each taking effect at one instant between its start and its end,
explains every read. Keys are independent registers (linearizability is
compositional), so each key is checked alone.

The check (Gibbons and Korach's zones, for registers whose every write
writes a distinct value): group each value's write with the reads that
returned it (a cluster; the initial "absent" value has a write at minus
infinity). Let lo be the earliest end and hi the latest start in the
cluster. If hi > lo the cluster must take effect across [lo, hi] (a forward
zone), else somewhere in [hi, lo] (a backward zone). A history is
linearizable iff every read returns a value written by a write that began
before the read ended, no two forward zones overlap, and no backward zone
lies inside a forward one. Exact, not a heuristic; checked here against a
brute-force search over every order of small random histories
(tests/cluster/test_linearizability_checker.py).

Outcomes: a put whose answer was lost (OutcomeUnknown) may or may not have
taken effect: it counts with an end of plus infinity if some read returned
its value, and is left out otherwise (not taking effect is always allowed).
A put the store reported as not applied (Unavailable, DeadlineExceeded: the
SDK's contract) is left out, and a read of its value is a violation. A
failed get is left out.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

APPLIED, UNKNOWN, NOT_APPLIED = "applied", "unknown", "not applied"


@dataclass(frozen=True)
class Op:
    kind: str               # "put" or "get"
    key: bytes
    value: bytes | None     # put: the value written (unique per key); get: the value read (None: absent)
    start: float            # when the call began (one clock for every client)
    end: float              # when it returned (for an UNKNOWN put: when the caller heard so)
    outcome: str = APPLIED  # puts: APPLIED, UNKNOWN or NOT_APPLIED; gets that failed are not recorded


def check(history: list[Op]) -> list[str]:
    """The violations found (empty: linearizable), each saying which key and calls."""
    by_key: dict[bytes, list[Op]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    problems: list[str] = []
    for key, ops in sorted(by_key.items()):
        problems += _check_key(key, ops)
    return problems


def _check_key(key: bytes, ops: list[Op]) -> list[str]:
    puts: dict[bytes, Op] = {}
    for op in ops:
        if op.kind == "put":
            if op.value in puts:
                raise ValueError(f"key {key!r}: value {op.value!r} written twice; values must be unique")
            puts[op.value] = op
    reads: dict[bytes | None, list[Op]] = defaultdict(list)
    problems = []
    for op in ops:
        if op.kind != "get":
            continue
        if op.value is not None:
            w = puts.get(op.value)
            if w is None:
                problems.append(f"key {key!r}: a get read {op.value!r}, which no put wrote: {op}")
                continue
            if w.outcome == NOT_APPLIED:
                problems.append(f"key {key!r}: a get read {op.value!r}, whose put was reported not applied: "
                                f"{op} read {w}")
                continue
            if w.start > op.end:
                problems.append(f"key {key!r}: a get read {op.value!r} before its put began: {op} read {w}")
                continue
        reads[op.value].append(op)
    # Clusters: (lo, hi, what) per value that took effect.
    clusters = []
    if reads[None]:
        clusters.append((-math.inf, max(r.start for r in reads[None]), "absent"))
    for value, w in puts.items():
        if w.outcome == NOT_APPLIED or (w.outcome == UNKNOWN and not reads[value]):
            continue
        members = [w] + reads[value]
        w_end = w.end if w.outcome == APPLIED else math.inf
        lo = min([w_end] + [r.end for r in reads[value]])
        hi = max(m.start for m in members)
        clusters.append((lo, hi, repr(value)))
    forward = sorted((lo, hi, what) for lo, hi, what in clusters if hi > lo)
    backward = [(hi, lo, what) for lo, hi, what in clusters if hi <= lo]
    for (a_lo, a_hi, a), (b_lo, b_hi, b) in zip(forward, forward[1:]):
        if b_lo < a_hi:
            problems.append(f"key {key!r}: values {a} and {b} were each seen over times that overlap "
                            f"([{a_lo:.6f}, {a_hi:.6f}] and [{b_lo:.6f}, {b_hi:.6f}]): one of them was read "
                            "after the other replaced it")
    for b_lo, b_hi, b in backward:
        for f_lo, f_hi, f in forward:
            if f_lo < b_lo and b_hi < f_hi:
                problems.append(f"key {key!r}: value {b} took effect and was read within [{b_lo:.6f}, "
                                f"{b_hi:.6f}], while {f} was seen both before and after it "
                                f"([{f_lo:.6f}, {f_hi:.6f}]): a stale read")
                break
    return problems
