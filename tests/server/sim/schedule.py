"""run_schedule(seed, ...): one seeded random run of a replication group.

Every choice (action, message, node, crash point, knob) comes from one
random.Random(seed), so a seed replays exactly. Actions and their weights:
deliver (reordered, delayed), drop, duplicate, tick one node or all, MM tick,
propose and read at whoever believes it leads (deposed leaders included),
crash (also at random points inside a Ready cycle), restart, partition, heal,
cut one directed link (so a deposed leader may still reach followers while the
MM cannot reach it), isolate a leader, crash a leader, forced leader change,
follower replacement. Simulated real time passes with every step; half the
seeds run with leader leases, each node's clock at its own rate
(LEASES_NS, STEP_NS_MAX), and half with idle heartbeats (IDLE_HEARTBEAT_TICKS). The checker runs after every step;
the run ends with stabilize() and final_check().
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from server.replication.messages import METADATA_MANAGER_ID
from server.replication.options import ReplicaOptions

from .cluster import Cluster

ACTIONS = (
    ("deliver", 50), ("drop", 3), ("duplicate", 2), ("tick", 10), ("tick_all", 5), ("mm_tick", 5),
    ("propose", 9), ("read", 7), ("crash", 1), ("crash_leader", 0.7), ("restart", 3), ("partition", 1),
    ("isolate_leader", 0.7), ("cut_link", 1.5), ("heal", 1.5), ("elect", 2), ("replace", 0.4),
)
LEASES_NS = (0, 0, 60_000_000, 400_000_000)
"""Lease per seed ((seed // 6) % 4): off for half; 60 ms and 400 ms against 50 ms ticks."""
IDLE_HEARTBEAT_TICKS, IDLE_AFTER_TICKS = 6, 3
"""Idle heartbeats for half the seeds ((seed // 3) % 2): every 6 ticks after 3 without work."""
TRAILING_BATCH_ENTRIES = 3
"""Quorum-first sending for half the seeds ((seed // 24) % 2, independent of the
splits above): followers beyond a quorum get batches of 3 entries or the tick's."""
STEP_NS_MAX = (2_000_000, 25_000_000)
"""Each step of a schedule lets up to this much simulated real time pass (one per seed):
with the shorter, a lease spans a hundred steps or more, long enough for a leader
change to happen inside it."""
_NAMES = [a for a, _ in ACTIONS]
_WEIGHTS = [w for _, w in ACTIONS]


@dataclass
class RunStats:
    seed: int
    steps: int
    commit_index: int
    elections: int
    replacements: int
    writes_acknowledged: int
    reads_served: int
    reads_failed: int
    snapshots_installed: int
    messages: int
    learner_commits: int = 0   # entries a learner counted committed before any replica did (checker rule 6)


def random_options(rng: random.Random) -> ReplicaOptions:
    return ReplicaOptions(heartbeat_ticks=rng.choice([1, 2, 3]), retransmit_ticks=rng.choice([3, 5, 8]),
                          max_inflight_appends=rng.choice([1, 2, 4]), max_append_entries=rng.choice([1, 3, 64]),
                          snapshot_retry_ticks=rng.choice([4, 8]), read_timeout_ticks=rng.choice([10, 30]))


def run_schedule(seed: int, members: int = 3, steps: int = 300, spares: int = 1,
                 clock_rate_spread: float = 0.09) -> RunStats:
    """clock_rate_spread: how far each node's clock rate may be from 1 (leases
    are safe within lease.CLOCK_RATE_BOUND; a test goes past it on purpose)."""
    rng = random.Random(seed)
    voters = list(range(1, members + 1))
    # Half the seeds run without eager commit notices (the nodes' setting); chosen
    # from the seed, not the rng, so every seed's random stream stays as it was.
    # Half the seeds run with leader leases, each node's clock at its own rate
    # within lease.CLOCK_RATE_BOUND; time comes from its own rng, so a seed
    # without leases runs exactly as before leases existed.
    lease_ns = LEASES_NS[(seed // 6) % len(LEASES_NS)]
    time_rng = random.Random(seed * 7919 + 1)
    # Half the seeds slow an idle group's heartbeats (the nodes' setting), with
    # a short idle threshold so that groups go idle and wake up often here.
    idle = (seed // 3) % 2 == 1
    # Half the seeds send to followers beyond a quorum in batches (the nodes' setting).
    trailing = TRAILING_BATCH_ENTRIES if (seed // 24) % 2 == 1 else 0
    options = replace(random_options(rng), eager_commit=seed % 2 == 0,
                      follower_apply_batch=(1, 4, 64)[seed % 3], lease_ns=lease_ns,
                      idle_heartbeat_ticks=IDLE_HEARTBEAT_TICKS if idle else 0, idle_after_ticks=IDLE_AFTER_TICKS,
                      trailing_batch_entries=trailing)
    # Half the seeds have leaders report losing their quorum (CQ1, the nodes'
    # setting) after three of their longest heartbeat periods, so that the MM
    # deposes them and elects without them (CQ2).
    check_quorum = (seed // 48) % 2 == 1
    # Half the seeds use the learner's read rule (ReplicaOptions.learner_reads); from the seed,
    # not the rng, so that every seed's random stream stays as it was.
    options = replace(options, learner_reads=(seed // 96) % 2 == 1)
    if check_quorum:
        options = replace(options, check_quorum_ticks=3 * max(options.heartbeat_ticks,
                                                                 options.idle_heartbeat_ticks))
    node_ids = range(1, members + 1 + spares)
    rates = {i: 1 + time_rng.uniform(-clock_rate_spread, clock_rate_spread) for i in node_ids} if lease_ns else {}
    cluster = Cluster(voters, list(range(members + 1, members + 1 + spares)), rng, options,
                      snapshot_chunk_bytes=rng.choice([48, 256, 1 << 20]), duplicate_p=rng.choice([0.0, 0.02]),
                      clock_rates=rates)
    cluster.leaders_keep_mm = check_quorum
    crash_p = rng.choice([0.0, 0.002, 0.01])
    compact_p = rng.choice([0.0, 0.05, 0.3])
    slow_disk_p = rng.choice([0.0, 0.5, 0.9])
    # Swarm testing: each run leaves some actions out and stresses others,
    # which reaches corners a fixed mix rarely does.
    weights = [w if name == "deliver" else w * rng.choice((0.0, 0.5, 1.0, 1.0, 3.0))
               for name, w in zip(_NAMES, _WEIGHTS)]
    cluster.mm.start_epoch()
    nodes = list(cluster.nodes.values())
    step_ns_max = time_rng.choice(STEP_NS_MAX)
    for _ in range(steps):
        cluster.advance_time(time_rng.randrange(step_ns_max))
        action = rng.choices(_NAMES, weights)[0]
        _do(cluster, action, rng, nodes)
        cluster.process_all(crash_p=crash_p, compact_p=compact_p, slow_disk_p=slow_disk_p)
        cluster.checker.after_step()
    cluster.stabilize()
    cluster.checker.after_step()
    cluster.final_check()
    c = cluster.checker
    return RunStats(seed, steps, c.max_commit, cluster.mm.elections, cluster.mm.replacements,
                    c.writes_acknowledged, c.reads_served, c.reads_failed, c.snapshots_installed, cluster.net.sent,
                    c.learner_ahead)


def _do(cluster: Cluster, action: str, rng: random.Random, nodes: list) -> None:
    net = cluster.net
    if action == "deliver":
        msg = net.take(rng)
        if msg is not None:
            cluster.deliver(msg)
    elif action == "drop":
        net.drop(rng)
    elif action == "duplicate":
        net.duplicate(rng)
    elif action == "tick":
        cluster.tick(rng.choice(nodes))
    elif action == "tick_all":
        cluster.tick_all()
    elif action == "mm_tick":
        cluster.mm.tick()
    elif action in ("propose", "read"):
        leaders = cluster.leaders()
        if leaders:
            node = rng.choice(leaders)
            if action == "propose":
                cluster.propose(node, rng.choice([1, 1, 2, 5]))
            else:
                cluster.read(node)
    elif action == "crash":
        up = [n for n in nodes if n.up]
        if up:
            cluster.crash(rng.choice(up))
    elif action == "crash_leader":
        leaders = cluster.leaders()
        if leaders:
            cluster.crash(rng.choice(leaders))
    elif action == "restart":
        down = [n for n in nodes if not n.up]
        if down:
            rng.choice(down).start()
    elif action == "partition":
        group = set(rng.sample(sorted(cluster.everyone), rng.randrange(1, 3)))
        net.isolate(group, cluster.everyone)
    elif action == "isolate_leader":
        leaders = cluster.leaders()
        if leaders:
            # With check-quorum on (CQ1), the leader keeps its link to the MM:
            # only its own report can then depose it (CQ2).
            reach = cluster.everyone - {METADATA_MANAGER_ID} if cluster.leaders_keep_mm else cluster.everyone
            net.isolate({rng.choice(leaders).id}, reach)
    elif action == "cut_link":
        a, b = rng.sample(sorted(cluster.everyone), 2)
        net.cut(a, b)
    elif action == "heal":
        net.heal()
    elif action == "elect":
        cluster.mm.start_epoch()
    elif action == "replace":
        config = cluster.mm.config
        spares = sorted(set(cluster.nodes) - config.members())
        if spares and not config.joint:
            cluster.mm.begin_replacement(rng.choice(sorted(config.voters)), rng.choice(spares))
    else:  # pragma: no cover
        raise ValueError(action)


__all__ = ["run_schedule", "RunStats", "METADATA_MANAGER_ID"]
