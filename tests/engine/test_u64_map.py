"""U64Map (engine/_native/u64_map.pyx) against a dict: random puts, overwrites and
removals, key 0 and the largest key, growth, and removals inside long probe runs."""
from __future__ import annotations

import random

import pytest

from engine._native.u64_map import U64Map

MAX = 2**64 - 1


def check_same(m: U64Map, model: dict[int, int], probe: list[int]) -> None:
    assert len(m) == len(model)
    for k in probe:
        assert (k in m) == (k in model), k
        assert m.get(k, -1) == model.get(k, -1), k


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_match_a_dict(seed):
    rng = random.Random(seed)
    # A small key space makes overwrites, removals of present keys and long
    # probe runs common; the extremes are always in it.
    space = [0, 1, MAX] + [rng.getrandbits(64) for _ in range(300)]
    m, model = U64Map(), {}
    for step in range(6000):
        k = rng.choice(space)
        op = rng.random()
        if op < 0.55:
            v = rng.getrandbits(64)
            m[k] = v
            model[k] = v
        elif op < 0.95:
            assert m.pop(k, None) == model.pop(k, None), step
        else:
            assert m.get(k) == model.get(k)
        if step % 500 == 0:
            check_same(m, model, space)
    check_same(m, model, space)


def test_removal_inside_runs_that_wrap_around_the_table():
    # Many keys in a table kept small: every removal shifts a run back, some
    # runs wrap past the last slot; every remaining key must stay reachable.
    rng = random.Random(7)
    keys = [rng.getrandbits(64) | 1 for _ in range(5000)]
    m = U64Map()
    for i, k in enumerate(keys):
        m[k] = i
    for i, k in enumerate(keys):
        if i % 3:
            assert m.pop(k) == i
    assert len(m) == len(keys[::3])
    for i, k in enumerate(keys):
        assert m.get(k) == (i if i % 3 == 0 else None)


def test_growth_keeps_the_table_at_most_11_16_full_and_clear_shrinks_it():
    m = U64Map()
    assert m.nbytes == 16 * 16
    for k in range(1, 1409):
        m[k] = k * 2
    assert m.nbytes == 16 * 2048                         # 1,408 items: 2,048 slots are 11/16 full
    m[1409] = 0
    assert len(m) == 1409 and m.nbytes == 16 * 4096     # one more: doubled
    for k in range(1409, 1000, -1):
        m.pop(k)
    assert len(m) == 1000 and all(m.get(k) == 2 * k for k in range(1, 1001))
    assert all(m.get(k) == 2 * k for k in range(1, 1001))
    m.clear()
    assert len(m) == 0 and m.nbytes == 16 * 16 and m.get(5) is None


def test_key_zero_and_defaults():
    m = U64Map()
    assert m.get(0) is None and 0 not in m and m.pop(0, "none") == "none"
    m[0] = 9
    m[0] = 10
    assert 0 in m and m.get(0) == 10 and len(m) == 1
    assert m.pop(0) == 10 and len(m) == 0 and m.pop(3) is None
    with pytest.raises(OverflowError):
        m[-1] = 1
    with pytest.raises(OverflowError):
        m[2**64] = 1
