"""The linearizability checker (tests/cluster/linearizability.py) against the definition.

Small random histories of one key are checked both by the zone rule and by
brute force: every subset of the puts with unknown outcomes, every order of
the calls that respects real time (a call that ended before another began
comes first), each get returning the latest put before it. Half the
histories come from a register actually linearized at random instants (so
they pass), half read arbitrary values (most fail). Pure Python, no cluster.
"""
from __future__ import annotations

import itertools
import math
import random

import pytest

from tests.cluster.linearizability import APPLIED, NOT_APPLIED, UNKNOWN, Op, check

K = b"k"


def _linearizable_by_search(ops: list[Op]) -> bool:
    for op in ops:   # a read of a put reported not applied can never be explained
        if op.kind == "get" and op.value is not None and any(
                p.kind == "put" and p.value == op.value and p.outcome == NOT_APPLIED for p in ops):
            return False
    fixed = [op for op in ops if op.outcome == APPLIED]
    unknown = [op for op in ops if op.kind == "put" and op.outcome == UNKNOWN]
    for n in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, n):
            calls = fixed + [Op(o.kind, o.key, o.value, o.start, math.inf, o.outcome) for o in chosen]
            for order in itertools.permutations(calls):
                if _explains(order):
                    return True
    return False


def _explains(order) -> bool:
    for i, a in enumerate(order):
        for b in order[:i]:
            if a.end < b.start:   # a ended before b began, but b comes first
                return False
    current = None
    for op in order:
        if op.kind == "put":
            current = op.value
        elif op.value != current:
            return False
    return True


def _random_history(rng: random.Random, linearized: bool) -> list[Op]:
    n = rng.randint(1, 6)
    spans = []
    for _ in range(n):
        start = rng.uniform(0, 10)
        spans.append((start, start + rng.uniform(0.1, 4)))
    kinds = [rng.choice(("put", "get")) for _ in range(n)]
    values = [b"v%d" % i if kinds[i] == "put" else None for i in range(n)]
    outcomes = [rng.choice((APPLIED, APPLIED, UNKNOWN, NOT_APPLIED)) if k == "put" else APPLIED for k in kinds]
    if linearized:   # a register run at random instants inside each call (unknown puts: maybe not at all)
        points = sorted((rng.uniform(*spans[i]), i) for i in range(n))
        current = None
        for _, i in points:
            if kinds[i] == "put":
                if outcomes[i] == APPLIED or (outcomes[i] == UNKNOWN and rng.random() < 0.5):
                    current = values[i]
            else:
                values[i] = current
    else:
        written = [v for v in values if v is not None]
        for i in range(n):
            if kinds[i] == "get":
                values[i] = rng.choice([None] + written)
    return [Op(kinds[i], K, values[i], *spans[i], outcomes[i]) for i in range(n)]


@pytest.mark.parametrize("linearized", [True, False])
def test_the_zone_rule_agrees_with_a_search_over_every_order(linearized):
    rng = random.Random(7 if linearized else 8)
    verdicts = {True: 0, False: 0}
    for _ in range(1500):
        history = _random_history(rng, linearized)
        want = _linearizable_by_search(history)
        got = not check(history)
        assert got == want, history
        verdicts[want] += 1
    if linearized:
        assert verdicts[False] == 0
    else:
        assert verdicts[True] > 100 and verdicts[False] > 300   # both kinds were exercised


def test_named_anomalies_are_reported():
    stale = [Op("put", K, b"a", 0, 1), Op("get", K, b"a", 2, 3), Op("put", K, b"b", 4, 5), Op("get", K, b"a", 6, 7)]
    assert any("stale read" in p for p in check(stale))
    lost = [Op("put", K, b"a", 0, 1), Op("get", K, None, 2, 3)]
    assert check(lost)
    phantom = [Op("put", K, b"a", 0, 1, NOT_APPLIED), Op("get", K, b"a", 2, 3)]
    assert any("reported not applied" in p for p in check(phantom))
    early = [Op("get", K, b"a", 0, 1), Op("put", K, b"a", 2, 3)]
    assert any("before its put began" in p for p in check(early))
    unknown_then_seen = [Op("put", K, b"a", 0, 1, UNKNOWN), Op("get", K, b"a", 5, 6), Op("get", K, None, 7, 8)]
    assert check(unknown_then_seen)   # once seen, it took effect: absent again is a lost write
    assert not check([Op("put", K, b"a", 0, 1, UNKNOWN), Op("get", K, None, 5, 6)])   # never seen: need not apply
    assert not check([Op("put", b"x", b"a", 0, 1), Op("get", b"y", None, 2, 3)])     # keys are independent
