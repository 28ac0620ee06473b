"""A/B of two checkouts of quorumkv, both clusters up at once, measurements alternating every second or two.

Usage (from the repository root):

    git worktree add /tmp/qkv_base <commit>       # the other side, with its native modules built
    .venv/bin/python bench/ab_one_client.py --other /tmp/qkv_base [--rounds 30] [--seconds 1.5]
                                            [--clients 1] [--op put|get] [--via-router]

What it runs: two local clusters (server/local_cluster.py), each a metadata
manager and three nodes with one replication group, one running this
checkout's code and one running --other's (LocalCluster's source_dir). Then
--rounds rounds; in each, the same closed-loop load as bench/rg_throughput.py
(its _quorumkv_load: 100-byte puts of fresh keys, or linearizable gets) for
--seconds against one cluster and then the other, who goes first
alternating by round. Each cluster idles (heartbeats only) while the other
is measured. With --via-router each cluster also runs one router, and the
load is --clients closed-loop SDK callers (quorumkv.AsyncClient put or get,
one call at a time each) through it: the path a user's request takes.

Reported: ops/s of each side (median over rounds, with the quartiles), the
median of the per-round ratios (this checkout / the other), and the rounds
this checkout won.

Why: on this shared 2-core machine the speed drifts by tens of percent over
minutes; one A/B pair per cluster start (minutes apart, cluster start-up in
between) needs many pairs to see a 5% change. Short alternating rounds
against two clusters that stay up keep the drift out of each round's ratio.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import quorumkv  # noqa: E402
from bench.rg_throughput import _quorumkv_load  # noqa: E402 - also sets gRPC's environment first
from server.local_cluster import LocalCluster  # noqa: E402

RG = 1
ROUTER_TABLE = "ab"
ROUTER_READ_KEYS = 1000


async def _router_load(client: quorumkv.AsyncClient, clients: int, seconds: float, op: str, seed: int) -> float:
    """`clients` closed-loop SDK clients (tasks) for `seconds`: 100-byte puts of
    fresh keys, or gets of keys written first. Returns operations per second."""
    rng = random.Random(seed)
    value = rng.randbytes(100)
    keys = [rng.randbytes(16) for _ in range(ROUTER_READ_KEYS)] if op == "get" else []
    if keys:
        await client.put_many(ROUTER_TABLE, [(k, value) for k in keys])
    done = 0
    deadline = time.perf_counter() + seconds

    async def one(i: int) -> None:
        nonlocal done
        r = random.Random(rng.getrandbits(64))
        while time.perf_counter() < deadline:
            if op == "put":
                await client.put(ROUTER_TABLE, r.randbytes(16), value)
            else:
                await client.get(ROUTER_TABLE, keys[r.randrange(len(keys))])
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    return done / (time.perf_counter() - t0)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--other", required=True, help="the other checkout (a git worktree with its native modules)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--op", choices=("put", "get", "mixed"), default="put",
                   help="mixed (direct load only): every other client puts, the others get")
    p.add_argument("--no-learner", action="store_true",
                   help="direct load: the DataClient waits for the leader's OK, not as a learner")
    p.add_argument("--via-router", action="store_true",
                   help="each side also runs a router; the load goes through the SDK (AsyncClient) and it")
    args = p.parse_args(argv)
    if args.op == "mixed" and args.via_router:
        p.error("--op mixed is for the direct load (no --via-router)")
    other = os.path.abspath(args.other)
    if not os.path.exists(os.path.join(other, "server", "cli.py")):
        p.error(f"{other} is not a quorumkv checkout")
    sides = {"this": None, "other": other}
    rates: dict[str, list[float]] = {side: [] for side in sides}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="qkv-ab-"))
        leaders = {}
        directories = {}
        for side, source in sides.items():
            cluster = stack.enter_context(LocalCluster(os.path.join(tmp, side), nodes=3, source_dir=source,
                                                       node_args=["--log-level", "WARNING"]))
            if args.via_router:
                cluster.serve(groups=1, members=[1, 2, 3], routers=1)
                leaders[side] = cluster.router_addresses
                continue
            cluster.create_group(RG, [1, 2, 3])
            leader, _ = cluster.wait_for_leader(RG)
            leaders[side] = {RG: cluster.nodes[leader].address}
            directories[side] = None if args.no_learner else {nid: n.address for nid, n in cluster.nodes.items()}

        async def rounds() -> None:   # one event loop for every round: grpc.aio binds to the first one
            sdk = {}
            if args.via_router:
                for side in sides:
                    sdk[side] = quorumkv.AsyncClient(leaders[side])
                    await sdk[side].create_table(ROUTER_TABLE)
            try:
                for i in range(args.rounds):
                    order = ["this", "other"] if i % 2 == 0 else ["other", "this"]
                    for side in order:
                        if args.via_router:
                            rate = await _router_load(sdk[side], args.clients, args.seconds, args.op, i)
                        else:
                            rate = (await _quorumkv_load(leaders[side], args.clients, args.seconds, args.op, i,
                                                         lambda: 0.0, directories[side])).ops_per_s
                        rates[side].append(rate)
                    print(f"  round {i + 1:>3}: this {rates['this'][-1]:>9,.0f}/s  "
                          f"other {rates['other'][-1]:>9,.0f}/s", flush=True)
            finally:
                for client in sdk.values():
                    await client.close()

        asyncio.run(rounds())
    ratios = [a / b for a, b in zip(rates["this"], rates["other"]) if b > 0]
    won = sum(a > b for a, b in zip(rates["this"], rates["other"]))
    print(f"ab_one_client: {args.rounds} rounds x {args.seconds:g} s, {args.clients} client(s), {args.op}; "
          f"other = {other}")
    for side in sides:
        q1, med, q3 = _quartiles(rates[side])
        print(f"  {side:>5}: median {med:,.0f}/s (quartiles {q1:,.0f} - {q3:,.0f})")
    print(f"  this/other: median of per-round ratios {statistics.median(ratios):.3f}; "
          f"this checkout won {won} of {len(ratios)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
