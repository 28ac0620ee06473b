"""Leader leases (server/replication/lease.py, README LL1-LL6) against the simulator's checker.

The checker (sim/checker.py) fails a run when a served read misses a write
committed anywhere before the read arrived. Each test drives the same
split-brain shape through sim/scenario_env.py: leader 1 earns a lease, is
cut off, 2 is elected and commits k=new, and 1 is asked for a read. The
tests show that the rules keep that read from being stale, and that the
checker catches it when a rule is broken or the clock assumption does not hold.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
from sim.checker import SafetyViolation
from sim.scenario_env import ScenarioEnv

import server.replication.replica as replica_module
from server.replication import Config, DurableState, Replica
from server.replication.lease import CLOCK_RATE_BOUND, MAX_LEASE_NS, LeaderLease, hold_ns
from server.replication.messages import Heartbeat, PromiseRequest, PromiseResponse
from server.replication.options import ReplicaOptions

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
    env.run(f"advance {hold_ns(MAX_LEASE_NS) // 1_000_000 + 1}")   # LL3 holds for the longest lease allowed
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


@pytest.mark.parametrize("follower_lease_ms", [0, 100])
def test_members_with_a_shorter_lease_or_none_do_not_renew_a_longer_one(follower_lease_ms: int) -> None:
    """A member holds for its own lease and says so in its HeartbeatAck (LL2): an
    older binary (0) or a shorter --lease-ms renews no lease of a leader asking for
    more, so mixed settings or a rolling upgrade cannot make a stale read."""
    env = ScenarioEnv()
    for command in (f"add-replicas 3 lease=300 heartbeat=2 leases=2:{follower_lease_ms},3:{follower_lease_ms}",
                    "elect", "stabilize", "propose 1 k=old", "stabilize", "tick 1 n=2", "stabilize",
                    "partition 1", "elect promisers=2,3", "advance 150", "tick-mm n=3", "stabilize",
                    "propose 2 k=new", "stabilize"):
        env.run(command)
    assert env.c.mm.leader == 2
    assert "waits for a heartbeat round" in env.run("read 1 r")


def _elect_against_a_live_leader(lease_ms: int = LEASE_MS, heartbeat_ticks: int = 1) -> int | None:
    env = ScenarioEnv()
    for command in (f"add-replicas 3 lease={lease_ms} heartbeat={heartbeat_ticks}", "elect", "stabilize",
                    f"tick 1 n={heartbeat_ticks}", "stabilize"):
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


@pytest.mark.parametrize("lease_ms,heartbeat_ticks", [(LEASE_MS, 1), (300, 2), (100, 1), (60, 1), (60, 2)])
def test_a_live_leader_does_not_keep_its_lease_against_the_mm(lease_ms: int, heartbeat_ticks: int) -> None:
    """LL5: once a member was asked for a promise it could not give, it
    acknowledges no heartbeat until it has promised, so its hold runs out even
    though the old leader is up and heartbeating, and a retry of the MM elects a
    new leader, whatever the lease against the heartbeat and resend intervals."""
    assert _elect_against_a_live_leader(lease_ms, heartbeat_ticks) in (2, 3)


def test_without_ll5_a_live_leader_blocks_every_election(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_module.Replica, "_renews_lease", lambda self: True)
    assert _elect_against_a_live_leader() is None


def test_leases_are_off_by_default() -> None:
    env = ScenarioEnv()
    for command in ("add-replicas 3", "elect", "stabilize", "tick 1 n=2", "stabilize"):
        env.run(command)
    assert "waits for a heartbeat round" in env.run("read 1 r")


def test_a_member_restarted_without_data_holds_from_its_start() -> None:
    """LL3 for a wiped disk: the node tells the replica (ReplicaHost with
    recovering=True); its empty state alone looks like a brand-new member."""
    opts = ReplicaOptions(lease_ns=LEASE_MS * 1_000_000)
    wiped = Replica(2, DurableState(), opts)
    wiped.rejoin_without_data(1)
    wiped.observe_time(5_000_000_000)
    wiped.step(PromiseRequest(epoch=3, sender=0, recipient=2))
    answers = wiped.ready().messages_after_persist if wiped.has_ready() else []
    assert not any(isinstance(m, PromiseResponse) for m in answers)
    fresh = Replica(2, DurableState(), opts)   # a new member of a new group promises at once
    fresh.observe_time(5_000_000_000)
    fresh.step(PromiseRequest(epoch=1, sender=0, recipient=2))
    assert any(isinstance(m, PromiseResponse) for m in fresh.ready().messages_after_persist)


def test_an_epoch_adopted_while_holding_gets_no_promise_until_the_hold_ran_out() -> None:
    """LL2 holds against the epoch the hold protects, not the member's current
    one: adopting a later epoch (here E5, from a NotMyLeader) is not promising
    it. 2 holds for leader 1's lease (epoch 2); the MM starts epoch 3, which 2
    refuses and 3 promises; a delayed epoch-1 heartbeat from 2 to 3 makes 3
    answer NotMyLeader(3), and 2 adopts epoch 3. The MM's resent
    PromiseRequest(3) must still wait for the hold: with 3's promise it would
    make a quorum while 1's lease runs, and 1 would serve a stale read."""
    env = ScenarioEnv()
    for command in (f"add-replicas 3 lease={LEASE_MS} heartbeat=2", "elect promisers=2,3", "stabilize",
                    "tick 2 n=2"):
        env.run(command)
    delayed = [m for m in env.c.net.in_flight if isinstance(m, Heartbeat) and m.sender == 2 and m.recipient == 3]
    assert delayed   # epoch 1's heartbeat from its leader 2 to 3, held back in the network
    env.c.net.in_flight = [m for m in env.c.net.in_flight if m not in delayed]
    for command in ("stabilize", "advance 1000", "elect", "stabilize", "propose 1 k=old", "stabilize",
                    "cut 1 2", "propose 1 k=old2", "stabilize", "heal",   # 3 gets k=old2, 2 does not
                    "cut 1 3", "tick 1 n=2", "stabilize",                 # 1's lease from {1, 2}
                    "partition 1", "elect"):                             # epoch 3: 2 refuses, 3 promises
        env.run(command)
    assert env.c.mm.leader is None   # 2 holds: epoch 3 has one promise (3's)
    env.c.net.in_flight.extend(delayed)
    for command in ("deliver from=2 to=3", "deliver from=3 to=2", "tick-mm n=3", "stabilize"):
        env.run(command)
    assert env.c.nodes[2].replica.epoch == 3   # adopted from 3's NotMyLeader...
    assert env.c.mm.leader is None             # ...yet no promise: no epoch-3 leader during 1's lease
    env.run("read 1 r")                        # served under the lease, and not stale (the checker)


def test_a_member_restarted_with_leases_off_still_holds_for_the_lease_it_may_have_acknowledged() -> None:
    """LL3 whatever the settings are now: 2 acknowledged 1's lease round, then
    restarts with leases off (as the README advises for VMs)."""
    env = ScenarioEnv()
    for command in (f"add-replicas 3 lease={LEASE_MS} heartbeat=2", "elect", "stabilize", "propose 1 k=old",
                    "stabilize", "cut 1 3", "tick 1 n=2", "stabilize", "heal", "crash 2"):
        env.run(command)
    n2 = env.c.nodes[2]
    n2.options = replace(n2.options, lease_ns=0)
    for command in ("restart 2", "partition 1", "elect", "stabilize"):
        env.run(command)
    assert env.c.mm.leader is None   # 2 holds from its start: {2, 3} is no quorum yet
    env.run("read 1 r")              # 1's lease read is not stale (the checker)


def test_a_leader_cut_off_from_its_quorum_keeps_a_bounded_round_table() -> None:
    lease = LeaderLease(300)
    for r in range(1, 10_000):
        lease.round_started(r, r * 100)   # a round every 100 ns, none acknowledged
    assert len(lease._started) <= 4
    lease.on_ack(2, 9_999)
    lease.quorum_acknowledged(Config(frozenset({1, 2, 3})), 1)
    assert lease.holds(9_999 * 100) and not lease.holds(9_999 * 100 + 300)


def test_members_waiting_to_promise_still_confirm_read_rounds() -> None:
    """LL5 stops lease renewal, not ReadIndex: if the MM that asked for the
    promise goes away, the leader still serves reads, through R2 rounds."""
    env = ScenarioEnv()
    for command in ("add-replicas 3 lease=300 heartbeat=1 read-timeout=40", "elect", "stabilize",
                    "propose 1 k=old", "stabilize", "tick 1", "stabilize", "cut 0 1", "elect", "partition 0"):
        env.run(command)
    for _ in range(20):   # 1 s: the lease and the holds have run out
        env.run("advance 50")
        env.run("tick 1")
        env.run("stabilize")
    assert "waits for a heartbeat round" in env.run("read 1 r")
    env.run("tick 1")
    out = env.run("stabilize")
    assert "HeartbeatAck e=1" in out and "read r served" in out and "k=old" in out
    assert env.c.nodes[1].replica._lease.until < env.c.clock(env.c.nodes[1])   # and no lease was renewed


def _heartbeats_for(env: ScenarioEnv, seconds: float) -> None:
    for _ in range(int(seconds * 20)):   # a heartbeat round every 50 ms, delivered
        env.run("advance 50")
        env.run("tick 1")
        env.run("stabilize")


def test_members_whose_clock_disagrees_with_the_leaders_hold_for_no_lease() -> None:
    """LL6: the assumption checked at run time. Member 2's clock runs 30% fast
    against the leader's: after a check window it holds for no lease (its acks
    say 0); member 3, whose clock agrees, goes on holding; no false alarm."""
    env = ScenarioEnv()
    for command in ("add-replicas 3 lease=300 heartbeat=1 rates=2:1.3", "elect", "stabilize"):
        env.run(command)
    _heartbeats_for(env, 6)
    assert env.c.nodes[2].replica.clock_suspect and not env.c.nodes[3].replica.clock_suspect
    env.run("advance 50")
    env.run("tick 1")
    out = env.run("stabilize")
    assert "2->1 HeartbeatAck e=1" in out and "lease=" not in out.split("2->1 HeartbeatAck")[1].splitlines()[0]
    assert "3->1 HeartbeatAck" in out and "lease=300ms" in out.split("3->1 HeartbeatAck")[1].splitlines()[0]
    assert "confirmed by its lease" in env.run("read 1 r")   # 1 and 3 are a quorum that holds


def test_after_a_check_window_a_slow_leader_clock_no_longer_makes_a_stale_read() -> None:
    """The split brain that breaks the lease when 1's clock runs at half speed
    (test above) is safe once the members have compared clocks (LL6): they
    stop holding, so 1's lease is no longer renewed and has run out."""
    env = _slow_leader_clock_split_brain()
    assert env.c.mm.leader == 2
    assert "waits for a heartbeat round" in env.run("read 1 r")


def test_without_the_clock_check_the_slow_leader_clock_makes_a_stale_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_module.Replica, "_check_clock_rate", lambda self, leader_now: None)
    env = _slow_leader_clock_split_brain()
    with pytest.raises(SafetyViolation, match="read"):
        env.run("read 1 r")


def _slow_leader_clock_split_brain() -> ScenarioEnv:
    """1's clock at half speed, 12 s of heartbeats (two check windows), then 1 is
    cut off and, 500 ms later (past the members' 489 ms hold), 2 is elected and
    commits k=new: 1's last lease, 300 ms on its clock, is 600 ms of real time."""
    env = ScenarioEnv()
    for command in (f"add-replicas 3 lease={LEASE_MS} heartbeat=2 rates=1:0.5", "elect", "stabilize",
                    "propose 1 k=old", "stabilize"):
        env.run(command)
    _heartbeats_for(env, 12)
    for command in ("tick 1 n=2", "stabilize", "partition 1", "elect promisers=2,3", "advance 500", "tick-mm n=3",
                    "stabilize", "propose 2 k=new", "stabilize"):
        env.run(command)
    return env


def test_a_lease_above_the_ceiling_is_refused() -> None:
    """LL3's restart hold covers any lease up to MAX_LEASE_NS, so none may be longer."""
    with pytest.raises(ValueError, match="at most"):
        ReplicaOptions(lease_ns=MAX_LEASE_NS + 1)
    assert ReplicaOptions(lease_ns=MAX_LEASE_NS).lease_ns == MAX_LEASE_NS
