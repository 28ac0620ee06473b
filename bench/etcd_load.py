"""Closed-loop load on etcd's KV API (Put, or linearizable Range) over gRPC, with grpc.aio and no generated code.

Usage (from the repository root):

    .venv/bin/python bench/etcd_load.py [--clients 1,16,64] [--duration 10] [--op put|range]
        [--processes N] [--members 3] [--no-fsync] [--endpoints HOST:PORT,...] [--out FILE]

Without --endpoints it starts a 3-member etcd cluster on loopback (bench/etcd_cluster.py,
installing Debian's etcd-server on first use), runs each client count against it in turn,
prints a table and stops the cluster. From other benchmarks:

    result = asyncio.run(run_load(endpoints, clients=16, ops=None, duration_s=10))
    result = run_load_processes(endpoints, clients=64, ops=None, duration_s=10, processes=2)

Method
------
Each client is one asyncio task doing one request at a time (closed loop): a Put of a
fresh random 16-byte key and a `value_size`-byte value, or a Range (point read) of a key
written before the timed part. Clients are spread round-robin over the endpoints (one
gRPC channel, one HTTP/2 connection, per endpoint and process); etcd forwards a follower's
writes to the leader, and serves a follower's linearizable read after a ReadIndex round.
The run ends when every client has done its share of `ops` or `duration_s` has passed,
whichever comes first (a request in flight at the deadline finishes, bounded by the
per-request timeout). A request counts when its gRPC status is OK; any other status is an
error, and the client pauses ERROR_PAUSE_S before its next request so a dead cluster does
not turn into a busy loop. Throughput is successful requests / wall time from the common
start to the last client's end; latency percentiles (nearest rank) are over successful
requests.

The Python client is costly: a grpc.aio unary call takes 250 us of CPU or more here (400
to 800 us per request measured for the whole client process, gRPC's own threads
included), so one process tops out at a few thousand calls/s whatever etcd can do, and
it takes CPU from etcd on a small machine. `processes` spreads the
clients over that many worker processes (spawned, each with its own event loop and
channels; they connect first, then start together on a barrier) and sums their counts.
Each result carries the client CPU time (user + system of the client processes during
the timed part), and the command-line table also etcd's CPU time: on a 2-core machine,
client cores + etcd cores near 2 means the machine, not etcd, was the limit.

Driver. Every figure here comes from this Python gRPC client (`driver="python-grpc"`).
Debian ships no native etcd load tool: etcd-client holds only etcdctl, whose
`check perf` runs a rate-limited load (fixed levels, 60 s) and reports pass/fail, not a
maximum throughput; etcd's `tools/benchmark` is not packaged as a binary.

Wire format (hand-encoded protobuf 3; field numbers from etcd's
api/etcdserverpb/rpc.proto, unchanged since v3.0 and so valid for etcd 3.4):

    PutRequest   { bytes key = 1; bytes value = 2; }   (lease = 3, prev_kv = 4, ... left unset)
      0x0A  len(key) varint  key  0x12  len(value) varint  value
    RangeRequest { bytes key = 1; bool serializable = 7; }   (range_end = 2, limit = 3, ... unset)
      0x0A  len(key) varint  key
      serializable stays at its default false: a linearizable read through the leader.

A tag byte is (field number << 3) | wire type, wire type 2 = length-delimited. Methods are
/etcdserverpb.KV/Put and /etcdserverpb.KV/Range. Responses are not decoded: the gRPC
status is the whole check.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import queue
import random
import sys
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

PUT_METHOD = "/etcdserverpb.KV/Put"
RANGE_METHOD = "/etcdserverpb.KV/Range"
OPS = ("put", "range")
KEY_SIZE = 16
TAG_KEY = 0x0A               # field 1 (key), wire type 2, in PutRequest and RangeRequest
TAG_VALUE = 0x12             # field 2 (value), wire type 2, in PutRequest
REQUEST_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10.0
ERROR_PAUSE_S = 0.01
READ_POOL_KEYS = 1_000       # keys written (untimed) before a range run, per process
PRELOAD_CONCURRENCY = 32
BARRIER_TIMEOUT_S = 60.0
DRIVER = "python-grpc"


# ------------------------------------------------------------------ protobuf
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_put(key: bytes, value: bytes) -> bytes:
    """Serialized etcdserverpb.PutRequest{key, value}."""
    return b"".join((bytes([TAG_KEY]), _varint(len(key)), key, bytes([TAG_VALUE]), _varint(len(value)), value))


def encode_range(key: bytes) -> bytes:
    """Serialized etcdserverpb.RangeRequest{key} (a linearizable point read)."""
    return bytes([TAG_KEY]) + _varint(len(key)) + key


# -------------------------------------------------------------------- result
@dataclass
class LoadResult:
    op: str
    clients: int
    processes: int
    ops: int                  # successful requests
    errors: int
    elapsed_s: float
    client_cpu_s: float
    latencies_us: array = field(repr=False, default_factory=lambda: array("q"))
    server_cpu_s: float | None = None    # from the caller's server_cpu probe, over the timed part
    driver: str = DRIVER

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        """Nearest-rank percentile (p in [0, 100]) of successful requests' latency, in ms; nan if none."""
        if not self.latencies_us:
            return float("nan")
        ordered = sorted(self.latencies_us)
        rank = max(1, math.ceil(len(ordered) * p / 100 - 1e-9))
        return ordered[min(rank, len(ordered)) - 1] / 1000.0

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    @property
    def p999_ms(self) -> float:
        return self.percentile_ms(99.9)

    @property
    def client_cpu_us_per_op(self) -> float:
        return 1e6 * self.client_cpu_s / self.ops if self.ops else float("nan")

    def summary(self) -> dict:
        return {"op": self.op, "clients": self.clients, "processes": self.processes, "ops": self.ops,
                "errors": self.errors, "elapsed_s": self.elapsed_s, "ops_per_s": self.ops_per_s,
                "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "p999_ms": self.p999_ms,
                "client_cpu_s": self.client_cpu_s, "server_cpu_s": self.server_cpu_s, "driver": self.driver}


def merge_results(parts: Sequence[LoadResult], server_cpu_s: float | None = None) -> LoadResult:
    """One result for runs that went on side by side (one per process): counts, client CPU and latencies
    add up, wall time is the longest; server CPU is the caller's (it was measured once, not per part)."""
    lat = array("q")
    for r in parts:
        lat.extend(r.latencies_us)
    return LoadResult(parts[0].op, sum(r.clients for r in parts), len(parts), sum(r.ops for r in parts),
                      sum(r.errors for r in parts), max(r.elapsed_s for r in parts),
                      sum(r.client_cpu_s for r in parts), lat, server_cpu_s)


def _shares(total: int | None, n: int) -> list[int | None]:
    """Splits `total` into n near-equal parts (None: unbounded)."""
    if total is None:
        return [None] * n
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


# ---------------------------------------------------------------------- load
async def _client(call, op: str, budget: int | None, deadline: float, rng: random.Random, value: bytes,
                  pool: Sequence[bytes], lat: array) -> int:
    """One closed-loop client; appends latencies (us) of successful requests, returns its error count."""
    errors = 0
    done = 0
    perf = time.perf_counter_ns
    deadline_ns = int(deadline * 1e9)
    while (budget is None or done < budget) and perf() < deadline_ns:
        if op == "put":
            request = encode_put(rng.randbytes(KEY_SIZE), value)
        else:
            request = encode_range(pool[rng.randrange(len(pool))])
        t0 = perf()
        try:
            await call(request, timeout=REQUEST_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            errors += 1
            await asyncio.sleep(ERROR_PAUSE_S)
        else:
            lat.append((perf() - t0) // 1000)
        done += 1
    return errors


async def _preload(call, n: int, value: bytes, rng: random.Random) -> list[bytes]:
    """Writes n random keys (untimed) for a range run; returns them."""
    keys = [rng.randbytes(KEY_SIZE) for _ in range(n)]
    for i in range(0, n, PRELOAD_CONCURRENCY):
        await asyncio.gather(*(call(encode_put(k, value), timeout=REQUEST_TIMEOUT_S)
                               for k in keys[i:i + PRELOAD_CONCURRENCY]))
    return keys


async def run_load(endpoints: Sequence[str], clients: int, ops: int | None, duration_s: float,
                   value_size: int = 100, op: str = "put", *, seed: int | None = None,
                   ready: Callable[[], None] | None = None,
                   server_cpu: Callable[[], float] | None = None) -> LoadResult:
    """Runs `clients` closed-loop clients in this process until `ops` requests in all (None: no bound)
    or `duration_s` seconds, whichever comes first.
    Requires: endpoints non-empty ("host:port" of etcd client URLs), clients >= 1, duration_s > 0, op in OPS.
    `ready`, if given, is a blocking callable run (in a thread) after the channels connect and before
    the timed part: the multi-process driver's start barrier. `server_cpu`, if given, returns the
    server's CPU seconds so far (EtcdCluster.cpu_seconds); it is read at the start and end of the
    timed part and the difference kept as `server_cpu_s`.
    Raises grpc.aio.AioRpcError / asyncio.TimeoutError if the endpoints cannot be reached or preloaded;
    failed requests during the timed part are counted, not raised."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if not endpoints or clients < 1 or duration_s <= 0:
        raise ValueError("need endpoints, clients >= 1 and duration_s > 0")
    rng = random.Random(seed)
    value = rng.randbytes(value_size)
    # gRPC's retries off, as on quorumkv's own channels (server/node/peers.py):
    # the same client-side saving for both systems in a side-by-side run.
    channels = [grpc.aio.insecure_channel(ep, options=[("grpc.enable_retries", 0)]) for ep in endpoints]
    try:
        await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in channels)), CONNECT_TIMEOUT_S)
        method = PUT_METHOD if op == "put" else RANGE_METHOD
        # No serializers: requests and responses pass through as bytes.
        calls = [ch.unary_unary(method) for ch in channels]
        pool: list[bytes] = []
        if op == "range":
            pool = await _preload(channels[0].unary_unary(PUT_METHOD), READ_POOL_KEYS, value, rng)
        if ready is not None:
            await asyncio.get_running_loop().run_in_executor(None, ready)
        lats = [array("q") for _ in range(clients)]
        rngs = [random.Random(rng.getrandbits(64)) for _ in range(clients)]
        server0 = server_cpu() if server_cpu is not None else 0.0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        deadline = t0 + duration_s
        errors = await asyncio.gather(*(
            _client(calls[i % len(calls)], op, budget, deadline, rngs[i], value, pool, lats[i])
            for i, budget in enumerate(_shares(ops, clients))))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        server = server_cpu() - server0 if server_cpu is not None else None
    finally:
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)
    lat = array("q")
    for a in lats:
        lat.extend(a)
    return LoadResult(op, clients, 1, len(lat), sum(errors), elapsed, cpu, lat, server)


def _worker(endpoints: list[str], clients: int, ops: int | None, duration_s: float, value_size: int, op: str,
            seed: int, barrier, results) -> None:
    """Body of one load process: runs its clients and puts (LoadResult or error text) on `results`."""
    def ready() -> None:
        barrier.wait(BARRIER_TIMEOUT_S)
    try:
        result = asyncio.run(run_load(endpoints, clients, ops, duration_s, value_size, op, seed=seed, ready=ready))
        results.put(result)
    except BaseException as exc:       # report, and release the others from the barrier
        barrier.abort()
        results.put(f"{type(exc).__name__}: {exc}")


def run_load_processes(endpoints: Sequence[str], clients: int, ops: int | None, duration_s: float,
                       value_size: int = 100, op: str = "put", processes: int = 1,
                       seed: int | None = None, server_cpu: Callable[[], float] | None = None) -> LoadResult:
    """`run_load` spread over `processes` spawned worker processes (clients and ops split near-evenly,
    each process's clients round-robin over all endpoints), started together; returns the merged result.
    processes=1 still runs in a worker, so the caller's process holds no gRPC state. `server_cpu` is
    read here, when the workers are released and when the last result arrives (a little after the
    timed part: the workers' channel close and result transfer fall inside).
    Requires: 1 <= processes <= clients. Raises RuntimeError if a worker fails."""
    if not 1 <= processes <= clients:
        raise ValueError(f"need 1 <= processes <= clients, got {processes} processes for {clients} clients")
    ctx = multiprocessing.get_context("spawn")     # no fork: gRPC's threads do not survive it
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    base = random.Random(seed)
    client_shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    op_shares = [None if ops is None else ops * c // clients for c in client_shares]
    if ops is not None:
        op_shares[0] += ops - sum(op_shares)
    procs = [ctx.Process(target=_worker, daemon=True,
                         args=(list(endpoints), c, o, duration_s, value_size, op, base.getrandbits(64), barrier,
                               results))
             for c, o in zip(client_shares, op_shares)]
    for p in procs:
        p.start()
    try:
        try:
            barrier.wait(BARRIER_TIMEOUT_S)
        except threading.BrokenBarrierError:
            pass                # a worker failed before the start; its message is on the queue
        server0 = server_cpu() if server_cpu is not None else 0.0
        wait_s = BARRIER_TIMEOUT_S + duration_s + REQUEST_TIMEOUT_S + 30
        try:
            parts = [results.get(timeout=wait_s) for _ in procs]
        except queue.Empty:
            raise RuntimeError(f"load workers gave no result within {wait_s:.0f} s "
                               f"(exit codes {[p.exitcode for p in procs]})") from None
        server = server_cpu() - server0 if server_cpu is not None else None
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    failures = [p for p in parts if isinstance(p, str)]
    if failures:
        raise RuntimeError("load worker failed: " + "; ".join(failures))
    return merge_results(parts, server)


# ---------------------------------------------------------------------- main
def _cpu_count_note() -> str:
    try:
        return f"{len(os.sched_getaffinity(0))} cores"
    except AttributeError:
        return f"{os.cpu_count()} cores"


def render(rows: list[LoadResult], op: str) -> str:
    unit = "writes/s" if op == "put" else "reads/s"
    lines = [f"| clients | processes | {unit} | p50 ms | p99 ms | p99.9 ms | errors | client cores "
             "| client CPU us/op | etcd cores |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        etcd_cores = f"{r.server_cpu_s / r.elapsed_s:.2f}" if r.server_cpu_s is not None else "-"
        lines.append(f"| {r.clients} | {r.processes} | {r.ops_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
                     f"| {r.p999_ms:.2f} | {r.errors} | {r.client_cpu_s / r.elapsed_s:.2f} "
                     f"| {r.client_cpu_us_per_op:.0f} | {etcd_cores} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="1,16,64", help="comma-separated client counts, run in turn")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per client count (default 10)")
    p.add_argument("--ops", type=int, default=None, help="also stop after this many requests per client count")
    p.add_argument("--op", choices=OPS, default="put")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--processes", type=int, default=1,
                   help="client processes (default 1: clients run in this process)")
    p.add_argument("--members", type=int, default=3, help="etcd cluster size (default 3)")
    p.add_argument("--no-fsync", action="store_true", help="etcd data on tmpfs (etcd 3.4 cannot skip fsync)")
    p.add_argument("--warmup", type=float, default=1.0, help="untimed seconds of load before the runs")
    p.add_argument("--endpoints", help="use this running etcd (host:port,...) instead of starting one")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", help="also write the markdown report to this file")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",") if c]
    if not counts or min(counts) < 1 or args.duration <= 0 or args.processes < 1:
        p.error("clients must be >= 1, duration > 0, processes >= 1")

    def run_all(endpoints: list[str], server_cpu: Callable[[], float] | None) -> list[LoadResult]:
        def one(clients: int, duration: float, ops: int | None) -> LoadResult:
            if args.processes == 1:
                return asyncio.run(run_load(endpoints, clients, ops, duration, args.value_size, args.op,
                                            seed=args.seed, server_cpu=server_cpu))
            return run_load_processes(endpoints, clients, ops, duration, args.value_size, args.op,
                                      min(args.processes, clients), args.seed, server_cpu)

        if args.warmup > 0:
            one(min(max(counts), 16), args.warmup, None)
        rows = []
        for c in counts:
            r = one(c, args.duration, args.ops)
            rows.append(r)
            print(f"clients {c:4d}: {r.ops_per_s:10,.0f} {args.op}/s  p99 {r.p99_ms:7.2f} ms  errors {r.errors}",
                  file=sys.stderr, flush=True)
        return rows

    started = time.monotonic()
    if args.endpoints:
        version = "external cluster"
        rows = run_all(args.endpoints.split(","), None)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from etcd_cluster import EtcdCluster
        with EtcdCluster(members=args.members, fsync=not args.no_fsync) as cluster:
            version = f"etcd {cluster.version}, {args.members} members on 127.0.0.1, data on " \
                      f"{'tmpfs (no real fsync)' if args.no_fsync else 'disk (fsync)'}"
            rows = run_all(cluster.client_endpoints, cluster.cpu_seconds)
    command = " ".join(["bench/etcd_load.py", *(argv if argv is not None else sys.argv[1:])])
    report = "\n".join([
        f"# etcd {args.op} throughput ({time.strftime('%Y-%m-%d %H:%M %Z')}, {time.monotonic() - started:.0f} s)",
        "", f"Command: `{command}`", "",
        f"Server: {version}. Machine: {_cpu_count_note()}, shared by clients and server.",
        f"Driver: {DRIVER} (grpc {grpc.__version__}); {args.duration:g} s per row"
        + (f" or {args.ops:,} requests" if args.ops else "")
        + f"; {args.value_size} B values, 16 B random keys; closed loop.", "",
        render(rows, args.op)])
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
