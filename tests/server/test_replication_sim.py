"""Seeded simulation of replication groups of 3 and 5 replicas (STYLE rule 13).

Each seed is one run of sim/schedule.py: a fake network that delivers, drops,
delays, duplicates and reorders; crashes (also inside a Ready cycle) and
restarts with only what was made durable; slow disks; a fake metadata manager
running leader changes and follower replacements; for half the seeds, leader
leases with every node's clock running at its own rate. sim/checker.py asserts after
every step that no committed entry is lost or changed, that all replicas apply
the same sequence, that at most one replica leads an epoch, that what a leader
commits or acknowledges is durable on a quorum, and that every served read
reflects every write committed before it arrived (a deposed leader included),
and that what a client counting commits itself (a learner, rule 6) counts
committed is never lost.
Each run ends healed and must converge.

Replay one seed:  QUORUMKV_SIM_SEED=123 QUORUMKV_SIM_MEMBERS=5 pytest tests/server/test_replication_sim.py -k replay
Longer runs:      pytest -m soak tests/server/test_replication_sim.py
"""
from __future__ import annotations

import os
import random

import pytest
from sim.schedule import RunStats, run_schedule

from server.replication import Config, DurableState, NotLeaderError, Replica, ReplicaMisuseError
from server.replication.messages import Appointment, PromiseRequest

CHUNK = 100  # seeds per test case
SEEDS = {3: 1300, 5: 700}  # the default run: 2,000 schedules
STEPS = 250
SOAK_SEEDS, SOAK_STEPS = 20_000, 600

# Seeds that once failed, kept as regression tests: (members, seed, steps, what it found).
REGRESSION_SEEDS = [
    (5, 50, 300, "protocol: a follower installed a snapshot over acknowledged entries after its index"),
    (3, 103524, 500, "checker: an ack judged by the proposal's config, not the committing epoch's"),
    (3, 110754, 500, "checker: a new leader's inherited commit index judged by its new config"),
    (3, 303283, 500, "checker: a deposed leader's stale match for a truncated learner"),
    (3, 455728819, 600, "checker: an ack by a proposer appointed again under a joint config judged by it"),
]


def _run(members: int, seeds: range, steps: int) -> list[RunStats]:
    stats = []
    for seed in seeds:
        try:
            stats.append(run_schedule(seed, members, steps))
        except Exception as e:
            pytest.fail(f"seed {seed} with {members} replicas failed: {type(e).__name__}: {e}\n"
                        f"replay: QUORUMKV_SIM_SEED={seed} QUORUMKV_SIM_MEMBERS={members} "
                        f"QUORUMKV_SIM_STEPS={steps} pytest tests/server/test_replication_sim.py -k replay",
                        pytrace=True)
    return stats


@pytest.mark.parametrize("members,first", [(m, s) for m, n in SEEDS.items() for s in range(0, n, CHUNK)])
def test_random_schedules(members: int, first: int) -> None:
    stats = _run(members, range(first, first + CHUNK), STEPS)
    # The schedules must keep exercising what they are meant to check.
    total = {k: sum(getattr(s, k) for s in stats) for k in ("elections", "writes_acknowledged", "reads_served",
                                                             "snapshots_installed", "replacements",
                                                             "learner_commits")}
    assert all(v > 0 for v in total.values()), total


@pytest.mark.parametrize("members,seed,steps,what", REGRESSION_SEEDS)
def test_regression_seeds(members: int, seed: int, steps: int, what: str) -> None:
    _run(members, range(seed, seed + 1), steps)


@pytest.mark.skipif("QUORUMKV_SIM_SEED" not in os.environ, reason="set QUORUMKV_SIM_SEED to replay one seed")
def test_replay() -> None:
    seed = int(os.environ["QUORUMKV_SIM_SEED"])
    members = int(os.environ.get("QUORUMKV_SIM_MEMBERS", "3"))
    print(run_schedule(seed, members, int(os.environ.get("QUORUMKV_SIM_STEPS", str(STEPS)))))


@pytest.mark.soak
@pytest.mark.parametrize("members", [3, 5])
def test_soak(members: int) -> None:
    first = random.SystemRandom().randrange(1 << 30)  # new seeds every soak run; failures print theirs
    _run(members, range(first, first + SOAK_SEEDS), SOAK_STEPS)


# ---------------------------------------------------------------- contract
def test_ready_contract_is_enforced() -> None:
    r = Replica(1)
    r.step(PromiseRequest(epoch=1, sender=0, recipient=1))
    rd = r.ready()
    with pytest.raises(ReplicaMisuseError):
        r.ready()  # one outstanding Ready at a time
    r.advance(rd)
    with pytest.raises(ReplicaMisuseError):
        r.advance(rd)  # not the outstanding one any more
    with pytest.raises(ReplicaMisuseError):
        r.step(PromiseRequest(epoch=2, sender=0, recipient=2))  # not addressed to it


def test_promise_is_persisted_before_it_is_sent() -> None:
    r = Replica(1)
    r.step(PromiseRequest(epoch=3, sender=0, recipient=1))
    rd = r.ready()
    assert rd.hard_state is not None and rd.hard_state.promised_epoch == 3
    assert not rd.messages and [type(m).__name__ for m in rd.messages_after_persist] == ["PromiseResponse"]


def test_followers_refuse_client_work_with_the_epoch_they_know() -> None:
    r = Replica(2, DurableState(promised_epoch=7))
    with pytest.raises(NotLeaderError) as e:
        r.propose([b"k=v"])
    assert e.value.epoch == 7
    with pytest.raises(NotLeaderError):
        r.read_index("r")


def test_lower_epoch_messages_get_not_my_leader() -> None:
    r = Replica(1, DurableState(promised_epoch=5))
    r.step(Appointment(epoch=4, sender=0, recipient=1, config=Config(frozenset({1, 2, 3}))))
    rd = r.ready()
    (reply,) = rd.messages_after_persist
    assert type(reply).__name__ == "NotMyLeader" and reply.epoch == 5 and reply.rejected_epoch == 4


def test_core_is_sans_io() -> None:
    """STYLE rule 1: no I/O, clock, randomness or concurrency inside the core."""
    import ast
    import glob

    import server.replication as core

    forbidden = {"time", "random", "socket", "asyncio", "threading", "os", "selectors", "subprocess", "grpc"}
    for path in glob.glob(os.path.join(os.path.dirname(core.__file__), "*.py")):
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{os.path.basename(path)} imports {name}"
