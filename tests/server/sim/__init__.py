"""Deterministic simulation of a replication group (STYLE rule 13).

One seed drives everything: a fake network that delivers, drops, delays,
duplicates and reorders; nodes that crash and restart with only what they made
durable; the metadata manager's group logic running leader changes and membership
changes (the production server/meta/group_leadership.py, run on sim ticks); a
checker asserting the safety properties after every step.

    network.py     FakeNetwork: in-flight messages, partitions
    state.py       KVStateMachine (the engine stand-in) and DurableStore (the disk)
    node.py        SimNode: a Replica driven by the Ready contract, with crash points
    checker.py     Checker: the invariants (committed never lost, one leader per epoch, reads)
    cluster.py     Cluster: wires the above; used by the random schedules and the scenarios
    schedule.py    run_schedule(seed, ...): one random run
    describe.py    one-line text for messages and Readys (scenario output)
    scenario.py    the data-driven script format: parse, compare, rewrite (etcd raft's datadriven)
    scenario_env.py  the scripts' commands over a deterministic Cluster
"""
