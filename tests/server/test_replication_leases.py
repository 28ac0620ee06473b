"""Leader leases (server/replication/lease.py, README LL1-LL5) against the simulator's checker.

The checker (sim/checker.py) fails a run when a served read misses a write
committed anywhere before the read arrived. Each test drives the same
split-brain shape through sim/scenario_env.py: leader 1 earns a lease, is
cut off, 2 is elected and commits k=new, and 1 is asked for a read. The
tests show that the rules keep that read from being stale, and that the
checker catches it when a rule is broken or the clock assumption does not hold.
"""
from __future__ import annotations

import pytest
from sim.checker import SafetyViolation
from sim.scenario_env import ScenarioEnv

import server.replication.replica as replica_module
from server.replication.lease import CLOCK_RATE_BOUND, hold_ns

LEASE_MS = 400


def _split_brain(env: ScenarioEnv, wait_ms: int, add: str = "") -> str:
    """Returns the output of the read at the cut-off leader 1."""
    for command in (f"add-replicas 3 lease={LEASE_MS} heartbeat=2 {add}", "elect", "stabilize",
                    "propose 1 k=old", "stabilize", "tick 1 n=2", "stabilize", "partition 1",
                    "elect promisers=2,3", f"advance {wait_ms}", "tick-mm n=3", "stabilize",
                    "propose 2 k=new", "stabilize"):
        env.run(command)
    return env.run("read 1 r")


def test_the_old_leader_serves_no_stale_read_once_a_new_leader_committed() -> None:
    out = _split_brain(ScenarioEnv(), wait_ms=hold_ns(LEASE_MS * 1_000_000) // 1_000_000 + 1)
    assert "waits for a heartbeat round" in out   # the lease ran out before 2 could be elected


def test_members_that_acknowledged_a_round_hold_their_promise() -> None:
    env = ScenarioEnv()
    out = _split_brain(env, wait_ms=10)
    assert env.c.mm.leader is None   # 2 and 3 still hold: no new epoch, so k=new was refused
    assert "confirmed by its lease" in out and "k=old" in out   # still linearizable: no newer write exists


def test_without_the_hold_the_checker_sees_a_stale_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_module.Replica, "_holding", lambda self: False)
    with pytest.raises(SafetyViolation, match="read"):
        _split_brain(ScenarioEnv(), wait_ms=10)


def test_a_leader_clock_slower_than_the_bound_breaks_the_lease_and_the_checker_sees_it() -> None:
    # 1's clock runs at half speed: 400 ms of its lease last 800 ms of real time,
    # past the followers' hold (489 ms); 2 is elected and commits meanwhile.
    with pytest.raises(SafetyViolation, match="read"):
        _split_brain(ScenarioEnv(), wait_ms=600, add="rates=1:0.5")


def test_clock_rates_within_the_bound_keep_reads_linearizable() -> None:
    slow, fast = 1 - CLOCK_RATE_BOUND, 1 + CLOCK_RATE_BOUND
    # The worst case the bound allows: the leader's clock slow, the followers' fast.
    hold_real_ms = hold_ns(LEASE_MS * 1_000_000) / fast / 1_000_000
    out = _split_brain(ScenarioEnv(), wait_ms=int(hold_real_ms) + 1, add=f"rates=1:{slow},2:{fast},3:{fast}")
    assert "waits for a heartbeat round" in out


def _restart_followers_then_split(env: ScenarioEnv) -> str:
    """2 and 3 acknowledge 1's round, crash and restart at once (forgetting their
    hold), then 1 is cut off and the MM elects among 2 and 3; returns the output
    of a read at 1 once 2 had the chance to commit k=new."""
    for command in (f"add-replicas 3 lease={LEASE_MS} heartbeat=2", "elect", "stabilize", "propose 1 k=old",
                    "stabilize", "tick 1 n=2", "stabilize", "crash 2", "restart 2", "crash 3", "restart 3",
                    "partition 1", "elect promisers=2,3", "stabilize", "propose 2 k=new", "stabilize"):
        env.run(command)
    return env.run("read 1 r")


def test_a_restarted_member_holds_from_its_start() -> None:
    """LL3: a member that restarts has forgotten its hold, so it holds again from
    its first observed time; the election waits, and 1's lease read is not stale."""
    env = ScenarioEnv()
    out = _restart_followers_then_split(env)
    assert env.c.mm.leader is None and "confirmed by its lease" in out and "k=old" in out
    env.run(f"advance {hold_ns(LEASE_MS * 1_000_000) // 1_000_000 + 1}")
    env.run("tick-mm n=3")
    env.run("stabilize")
    assert env.c.mm.leader in (2, 3)   # and then the election goes through


def test_without_the_restart_hold_the_checker_sees_a_stale_read(monkeypatch: pytest.MonkeyPatch) -> None:
    init = replica_module.Replica.__init__

    def forgetful(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._hold_from_start = False

    monkeypatch.setattr(replica_module.Replica, "__init__", forgetful)
    with pytest.raises(SafetyViolation, match="read"):
        _restart_followers_then_split(ScenarioEnv())


def _elect_against_a_live_leader() -> int | None:
    env = ScenarioEnv()
    for command in (f"add-replicas 3 lease={LEASE_MS} heartbeat=1", "elect", "stabilize", "tick 1", "stabilize"):
        env.run(command)
    env.run("cut 0 1")   # the MM cannot reach 1, which still reaches everyone
    assert env.run("elect promisers=2,3").endswith("mm: leader of epoch 2 is None")
    for _ in range(40):   # 2 s: 1 heartbeats every 50 ms and is heard; the MM retries
        env.run("advance 50")
        env.run("tick 1")
        env.run("tick-mm")
        env.run("stabilize")
        if env.c.mm.leader is not None:
            return env.c.mm.leader
    return None


def test_a_live_leader_does_not_keep_its_lease_against_the_mm() -> None:
    """LL5: once a member was asked for a promise it could not give, it stops
    acknowledging heartbeats, so its hold runs out even though the old leader
    is up and heartbeating, and a retry of the MM elects a new leader."""
    assert _elect_against_a_live_leader() in (2, 3)


def test_without_ll5_a_live_leader_blocks_every_election(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_module.Replica, "_renews_lease", lambda self: True)
    assert _elect_against_a_live_leader() is None


def test_leases_are_off_by_default() -> None:
    env = ScenarioEnv()
    for command in ("add-replicas 3", "elect", "stabilize", "tick 1 n=2", "stabilize"):
        env.run(command)
    assert "waits for a heartbeat round" in env.run("read 1 r")
