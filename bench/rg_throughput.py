"""One 3-replica replication group on loopback, side by side with a 3-member etcd cluster.

Usage (from the repository root):

    .venv/bin/python bench/rg_throughput.py [--clients 1,16,64] [--duration 10] [--runs 3] [--no-etcd]
                                            [--groups N (with --no-etcd)]

Method
------
quorumkv: a metadata manager and three `quorumkv node` processes
(server/local_cluster.py), one RG over them (with --groups N, N groups over
the same three nodes, each node hosting a replica of each, and --clients
clients per group); every write is durable (fsync of the replicated log) on a
majority before it is acknowledged. Each client is
one asyncio task in this process doing one operation at a time (closed loop):
a put of a fresh random 16-byte key with a 100-byte value, encoded as one
write batch, or a linearizable get of a key written before the timed part.
All clients share one DataClient (server/node/data_client.py), which is what
the request manager and SDK do: concurrent operations travel in batches on
one long-lived stream, and the leader turns each batch into one log entry.
The DataClient counts commits as a learner (server/node/learn_board.py:
DURABLE_ON_LEADER from the leader plus the followers' Learn
acknowledgements), unless --no-learner.

etcd: the same closed loop against etcd 3.4's KV Put / linearizable Range
(bench/etcd_load.py), a 3-member cluster on the same machine in the same run
(bench/etcd_cluster.py starts and stops it; scripts/install-etcd installs
Debian's etcd-server). Its client makes one unary call per operation: that is
how etcd's API is used, and it is what our batching is measured against.
Every etcd client talks to etcd's leader, as ours talk to our leader (until
2026-11-27 they went to the first member, a follower in 2 of 3 starts seen:
etcd then forwarded each write, one more hop than ours; results before that
date favour quorumkv at one client).

Both clusters run at once and the measurements alternate: for each run, op
and client count, quorumkv's and etcd's back to back, who goes first
alternating by run (run_side_by_side). The machine's speed drifts over
minutes; alternating keeps that drift out of the ratio.

Reported per row: ops/s, p50/p99/p99.9 latency (ms), fsyncs per write (the
replicated logs' fsyncs on all three nodes, from their status reports, over
acknowledged writes), client and server CPU seconds. Medians over --runs;
`ratio` is the ratio of the two medians, `paired` the median of the per-run
ratios of back-to-back measurements.
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
from array import array

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import server  # noqa: E402,F401 - gRPC's environment (server/grpc_env.py), for both clients, before grpc loads
from bench.etcd_load import LoadResult  # noqa: E402
from engine._native import sequencer, write_batch  # noqa: E402
from server.local_cluster import LocalCluster  # noqa: E402
from server.node.data_client import DataClient, StreamBroken  # noqa: E402
from server.node.learn_board import LearnBoard  # noqa: E402
from server.proto import data_pb2  # noqa: E402

FIRST_RG = 1
TABLE = 1
KEY_SIZE = 16
READ_POOL = 1000


def _proc_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def _fsyncs(cluster: LocalCluster, groups: list[int]) -> int:
    return sum(r.report.fsyncs for rg in groups for r in cluster.group(rg).replicas)


async def _quorumkv_load(leaders: dict[int, str], clients: int, duration_s: float, op: str, seed: int,
                         server_cpu, directory: dict[int, str] | None = None) -> LoadResult:
    """`clients` closed-loop clients per group (op "put", "get", or "mixed":
    half of them put, half get); `leaders`: rg -> its leader's
    address. `directory` (node id -> address): the clients count commits as
    learners (server/node/learn_board.py), as the request manager does."""
    rng = random.Random(seed)
    value = rng.randbytes(100)
    node_id = 1 << 20
    board = LearnBoard(directory.get) if directory is not None else None
    data_clients = {rg: DataClient(address, learn=board) for rg, address in leaders.items()}
    groups = sorted(leaders)
    clients *= len(groups)
    try:
        pool: list[bytes] = []
        if op in ("get", "mixed"):   # the same keys written to every group
            pool = [rng.randbytes(KEY_SIZE) for _ in range(READ_POOL)]
            for rg, client in data_clients.items():
                for i in range(0, READ_POOL, 100):
                    answers = await asyncio.gather(*(client.write(rg, write_batch.encode_one(
                        write_batch.VALUE, TABLE, k, value, sequencer.encode(time.time_ns(), 0, node_id)))
                        for k in pool[i:i + 100]))
                    assert all(a.code == data_pb2.OK for a in answers), answers[0]
        lats = [array("q") for _ in range(clients)]
        errors = [0] * clients
        perf = time.perf_counter_ns
        seq_counter = 0

        async def one_client(i: int, deadline_ns: int) -> None:
            nonlocal seq_counter
            r = random.Random(rng.getrandbits(64))
            lat = lats[i]
            rg = groups[i % len(groups)]
            client = data_clients[rg]
            writes = op == "put" or (op == "mixed" and i % 2 == 0)   # mixed: every other client writes
            while perf() < deadline_ns:
                t0 = perf()
                try:
                    if writes:
                        seq_counter += 1
                        seq = sequencer.encode(time.time_ns(), seq_counter & 0xFFFFFFFF, node_id)
                        resp = await client.write(rg, write_batch.encode_one(
                            write_batch.VALUE, TABLE, r.randbytes(KEY_SIZE), value, seq))
                    else:
                        resp = await client.read(rg, TABLE, pool[r.randrange(READ_POOL)])
                except StreamBroken:
                    errors[i] += 1
                    continue
                if resp.code == data_pb2.OK:
                    lat.append((perf() - t0) // 1000)
                else:
                    errors[i] += 1

        server0 = server_cpu()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        deadline_ns = perf() + int(duration_s * 1e9)
        await asyncio.gather(*(one_client(i, deadline_ns) for i in range(clients)))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        server = server_cpu() - server0
    finally:
        for client in data_clients.values():
            await client.close()
        if board is not None:
            await board.close()
    lat = array("q")
    for a in lats:
        lat.extend(a)
    return LoadResult(op, clients, 1, len(lat), sum(errors), elapsed, cpu, lat, server, driver="quorumkv-stream")


def run_side_by_side(clients_list: list[int], duration_s: float, runs: int, groups: int = 1,
                     with_etcd: bool = True, learner: bool = True) -> tuple[dict[tuple[str, int], list[dict]],
                                                      dict[tuple[str, int], list[dict]]]:
    """Both clusters up at once, measurements interleaved: for each run, op
    and client count, one quorumkv measurement and one etcd measurement back
    to back (who goes first alternates by run). On this shared machine the
    speed drifts by tens of percent over minutes; measuring all of one system
    and then all of the other put that drift into the ratio. Each system is
    idle (heartbeats only) while the other is measured, so each pays the
    other's idle cost alike. Returns (ours, etcd's): (op, clients) -> rows."""
    ours: dict[tuple[str, int], list[dict]] = {}
    theirs: dict[tuple[str, int], list[dict]] = {}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="qkv-rgbench-"))
        cluster = stack.enter_context(LocalCluster(os.path.join(tmp, "c"), nodes=3,
                                                   node_args=["--log-level", "WARNING"]))
        rgs = list(range(FIRST_RG, FIRST_RG + groups))
        leaders = {}
        for rg in rgs:
            cluster.create_group(rg, [1, 2, 3])
            leader, _ = cluster.wait_for_leader(rg)
            leaders[rg] = cluster.nodes[leader].address
        pids = [cluster.meta.pid] + [n.pid for n in cluster.nodes.values()]
        directory = {nid: n.address for nid, n in cluster.nodes.items()}
        etcd = None
        if with_etcd:
            from bench.etcd_cluster import EtcdCluster
            etcd = stack.enter_context(EtcdCluster(members=3))

        async def measure_ours(run: int, op: str, clients: int) -> None:
            f0 = _fsyncs(cluster, rgs)
            res = await _quorumkv_load(leaders, clients, duration_s, op, run * 1000 + clients,
                                       lambda: _proc_cpu_seconds(pids), directory if learner else None)
            await asyncio.sleep(0.3)   # status reports trail by a heartbeat: let the fsyncs show
            s = res.summary()
            s["fsyncs_per_write"] = ((_fsyncs(cluster, rgs) - f0) / res.ops
                                     if op == "put" and res.ops else None)
            ours.setdefault((op, clients), []).append(s)
            _print_row("quorumkv", run, op, clients, s)

        async def measure_etcd(run: int, op: str, clients: int) -> None:
            from bench.etcd_load import run_load
            # To etcd's leader, as ours go to our leader: a write sent to an etcd
            # follower is forwarded, an extra hop (etcd_testing.leader_endpoint).
            res = await run_load([etcd.leader_endpoint()], clients, None, duration_s, 100,
                                 "put" if op == "put" else "range", seed=run * 1000 + clients,
                                 server_cpu=etcd.cpu_seconds)
            s = res.summary()
            theirs.setdefault((op, clients), []).append(s)
            _print_row("etcd", run, op, clients, s)

        async def all_runs() -> None:   # one event loop for every run: grpc.aio binds to the first one
            for run in range(runs):
                for op in ("put", "get"):
                    for clients in clients_list:
                        order = [measure_ours] + ([measure_etcd] if etcd is not None else [])
                        if run % 2:
                            order.reverse()
                        for measure in order:
                            await measure(run, op, clients)

        asyncio.run(all_runs())
    return ours, theirs


def _print_row(system: str, run: int, op: str, clients: int, s: dict) -> None:
    extra = f" fsyncs/write={s['fsyncs_per_write']:.3f}" if s.get("fsyncs_per_write") is not None else ""
    print(f"  {system:<8} run {run + 1} {op:>3} clients={clients:>3}: {s['ops_per_s']:>9,.0f}/s "
          f"p50={s['p50_ms']:.2f} p99={s['p99_ms']:.2f} p99.9={s['p999_ms']:.2f} ms errors={s['errors']} "
          f"client_cpu={s['client_cpu_s']:.1f}s server_cpu={s['server_cpu_s']:.1f}s{extra}", flush=True)


def _paired_ratio(ours: list[dict], theirs: list[dict]) -> float:
    """The median over runs of (our ops/s / etcd's ops/s) measured back to back."""
    ratios = [q["ops_per_s"] / e["ops_per_s"] for q, e in zip(ours, theirs) if e["ops_per_s"] > 0]
    return statistics.median(ratios) if ratios else float("nan")


def _median(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--clients", default="1,16,64")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-etcd", action="store_true")
    p.add_argument("--no-learner", action="store_true",
                   help="our clients wait for the leader's OK instead of counting commits as learners")
    p.add_argument("--groups", type=int, default=1,
                   help="groups over the same 3 nodes, --clients clients each (etcd is one group: needs --no-etcd)")
    args = p.parse_args(argv)
    if args.groups < 1 or (args.groups > 1 and not args.no_etcd):
        p.error("--groups must be 1, or more with --no-etcd (etcd has one group to compare with)")
    clients_list = [int(c) for c in args.clients.split(",")]
    print(f"rg_throughput: {args.runs} runs x {args.duration:.0f} s, clients {clients_list} per group, "
          f"{args.groups} group(s), "
          f"{os.cpu_count()} cores", flush=True)
    ours, theirs = run_side_by_side(clients_list, args.duration, args.runs, args.groups, not args.no_etcd,
                                    not args.no_learner)
    print()
    print(f"{'op':>4} {'clients':>7} | {'quorumkv/s':>10} {'p50':>6} {'p99':>6} {'p99.9':>6} {'fsync/w':>7} | "
          f"{'etcd/s':>8} {'p50':>6} {'p99':>6} {'p99.9':>6} | {'ratio':>6} {'paired':>6}")
    for op in ("put", "get"):
        for c in clients_list:
            q = ours[(op, c)]
            e = theirs.get((op, c), [])
            qr, er = _median(q, "ops_per_s"), _median(e, "ops_per_s")
            ratio = qr / er if e and er > 0 else float("nan")
            paired = _paired_ratio(q, e)
            print(f"{op:>4} {c:>7} | {qr:>10,.0f} {_median(q, 'p50_ms'):>6.2f} {_median(q, 'p99_ms'):>6.2f} "
                  f"{_median(q, 'p999_ms'):>6.2f} {_median(q, 'fsyncs_per_write'):>7.3f} | "
                  f"{er:>8,.0f} {_median(e, 'p50_ms'):>6.2f} {_median(e, 'p99_ms'):>6.2f} "
                  f"{_median(e, 'p999_ms'):>6.2f} | {ratio:>6.2f} {paired:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
