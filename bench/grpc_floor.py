"""The floor of quorumkv's write path on this machine: the same hops and fsyncs, no protocol.

Usage (from the repository root):

    .venv/bin/python bench/grpc_floor.py [--duration 5] [--runs 3]

What it runs: three processes on loopback shaped like one replication group
at one client (bench/rg_throughput.py), with everything but the transport and
the disk taken out. A client sends a 150-byte write on a bidi grpc.aio
stream; the "leader" hands it to two "followers" on long-lived client
streams, yields once, appends it to its file and fdatasyncs (inline, as
server/node/replica_host.py does); each follower appends, fdatasyncs and
acknowledges on its own stream back; the leader answers once two of the
three have it durable. Raw bytes (no protobuf), no log, no engine, no
replica state machine: one closed-loop client.

Why: what quorumkv's Python adds per write is the difference between
rg_throughput.py's one-client row and this one, measured on the same
machine at the same time (bench/RESULTS.md, 2026-11-27 11:50 entry). gRPC's
settings match the nodes' (server/grpc_env.py, retries off).

--learner: the client counts the copies itself, as a Paxos learner does:
the leader answers as soon as its own copy is durable, each follower also
acknowledges to the client (a stream the client opens to it), and a write is
done once the leader's answer and one follower's acknowledgement are in. Three
hops on the write's path instead of four, one more message per follower: what
that shape could give quorumkv, before any protocol is written for it.

Reported per run: writes/s, p50 latency, CPU microseconds per write of each
process. Every process is started and ended here (by PID), files live in a
temporary directory that is removed, and each run stops after --duration.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import server  # noqa: E402,F401,I001 - gRPC's environment (server/grpc_env.py), before grpc loads
import grpc  # noqa: E402

SERVICE = "floor.Floor"
OPTIONS = [("grpc.enable_retries", 0)]
ANSWER_TIMEOUT_S = 5.0


def _identity(b: bytes) -> bytes:
    return b


def _handlers(**methods) -> grpc.GenericRpcHandler:
    makers = {"stream_unary": grpc.stream_unary_rpc_method_handler,
              "stream_stream": grpc.stream_stream_rpc_method_handler,
              "unary_stream": grpc.unary_stream_rpc_method_handler}
    table = {}
    for name, (kind, fn) in methods.items():
        table[name] = makers[kind](fn, _identity, _identity)
    return grpc.method_handlers_generic_handler(SERVICE, table)


class _Link:
    """One long-lived client stream to a peer, everything queued sent as one message."""

    def __init__(self, address: str):
        self._queue: list[bytes] = []
        self._ready = asyncio.Event()
        self._channel = grpc.aio.insecure_channel(address, options=OPTIONS)
        self._call = self._channel.stream_unary(f"/{SERVICE}/Exchange", _identity, _identity)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def send(self, data: bytes) -> None:
        self._queue.append(data)
        self._ready.set()

    async def _messages(self):
        while True:
            await self._ready.wait()
            self._ready.clear()
            if self._queue:
                data = b"".join(self._queue)
                self._queue.clear()
                yield data

    async def _run(self) -> None:
        await self._call(self._messages())


async def _serve(handlers: grpc.GenericRpcHandler) -> grpc.aio.Server:
    srv = grpc.aio.server(options=OPTIONS)
    srv.add_generic_rpc_handlers((handlers,))
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    print(f"READY {port}", flush=True)
    return srv


async def follower(path: str, leader_port: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    link: _Link | None = None
    learners: list[asyncio.Queue] = []   # --learner: clients that hear each acknowledgement too

    async def exchange(messages, context):
        nonlocal link
        if link is None:
            link = _Link(f"127.0.0.1:{leader_port}")
        async for data in messages:
            os.write(fd, data)
            os.fdatasync(fd)
            link.send(data[:8])   # the index: the acknowledgement
            for q in learners:
                q.put_nowait(data[:8])
        return b""

    async def acks(request, context):   # a learner's stream: every acknowledgement, as it is sent
        q: asyncio.Queue = asyncio.Queue()
        learners.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            learners.remove(q)

    srv = await _serve(_handlers(Exchange=("stream_unary", exchange), Acks=("unary_stream", acks)))
    await srv.wait_for_termination()


async def leader(path: str, learner: bool) -> None:
    """Its followers' ports come on stdin after READY (they start after it, knowing its port).
    `learner`: it answers once its own copy is durable; the client counts a follower's copy itself."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    links: list[_Link] = []
    durable: dict[int, int] = {}
    waiting: dict[int, asyncio.Future] = {}
    next_index = 0

    def count(index: int) -> None:   # one more copy of entry `index` is durable
        n = durable[index] = durable.get(index, 0) + 1
        if n == 2:   # a majority of three: answer (with --learner the client knows already)
            waiting.pop(index).set_result(None)
        elif n == 3:
            del durable[index]

    async def exchange(messages, context):   # acknowledgements
        async for data in messages:
            for (index,) in struct.iter_unpack("<Q", data):
                count(index)
        return b""

    async def write(requests, context):
        nonlocal next_index
        await followers_known.wait()
        async for request in requests:
            next_index += 1
            index = next_index
            entry = struct.pack("<Q", index) + request
            done = asyncio.get_running_loop().create_future()
            waiting[index] = done
            for link in links:
                link.send(entry)
            await asyncio.sleep(0)   # the links hand the entry to gRPC before this fsync
            os.write(fd, entry)
            os.fdatasync(fd)
            count(index)
            if not learner:
                await done
            yield entry[:8]

    followers_known = asyncio.Event()
    srv = await _serve(_handlers(Exchange=("stream_unary", exchange), Write=("stream_stream", write)))
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    links.extend(_Link(f"127.0.0.1:{int(p)}") for p in line.split(","))
    followers_known.set()
    await srv.wait_for_termination()


async def _client(port: int, duration_s: float, learn_from: list[int]) -> tuple[int, list[float]]:
    """`learn_from`: followers' ports (--learner): a write is done once the
    leader's answer and one follower's acknowledgement of it are in."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)
    acked = 0   # the highest index a follower acknowledged to us
    acked_event = asyncio.Event()
    learner_channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p}", options=OPTIONS) for p in learn_from]

    async def learn(ch) -> None:
        nonlocal acked
        async for data in ch.unary_stream(f"/{SERVICE}/Acks", _identity, _identity)(b""):
            acked = max(acked, struct.unpack("<Q", data)[0])
            acked_event.set()

    learners = [asyncio.get_running_loop().create_task(learn(ch)) for ch in learner_channels]
    queue: list[bytes] = []
    ready = asyncio.Event()

    async def requests():
        while True:
            await ready.wait()
            ready.clear()
            while queue:
                yield queue.pop(0)

    call = channel.stream_stream(f"/{SERVICE}/Write", _identity, _identity)(requests())
    answers = call.__aiter__()
    payload = os.urandom(150)
    latencies: list[float] = []
    deadline = time.perf_counter() + duration_s
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            queue.append(payload)
            ready.set()
            answer = await asyncio.wait_for(answers.__anext__(), ANSWER_TIMEOUT_S)   # a dead process ends the run
            if learn_from:
                (index,) = struct.unpack("<Q", answer)
                while acked < index:
                    acked_event.clear()
                    await asyncio.wait_for(acked_event.wait(), ANSWER_TIMEOUT_S)
            latencies.append(time.perf_counter() - t0)
    finally:
        call.cancel()
        for t in learners:
            t.cancel()
        await channel.close(grace=None)
        for ch in learner_channels:
            await ch.close(grace=None)
    return len(latencies), latencies


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(args: list[str], stdin=None) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], stdout=subprocess.PIPE, stdin=stdin)
    line = proc.stdout.readline()   # READY <port>, or EOF if it died
    if not line.startswith(b"READY"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{' '.join(args)}: did not start")
    return proc, int(line.split()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--learner", action="store_true",
                   help="the client counts the copies itself: the leader answers once its own copy is durable, "
                        "the followers acknowledge to the client too (3 hops instead of 4)")
    p.add_argument("--role", choices=("leader", "follower"), help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--leader-port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        import uvloop
        run = uvloop.run
    except ImportError:   # optional, as for the nodes
        run = asyncio.run
    if args.role == "follower":
        run(follower(args.file, args.leader_port))
        return 0
    if args.role == "leader":
        run(leader(args.file, args.learner))
        return 0

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="qkv-floor-") as tmp:
        try:
            leader_proc, leader_port = _start(["--role", "leader", "--file", os.path.join(tmp, "leader.log")]
                                              + (["--learner"] if args.learner else []), stdin=subprocess.PIPE)
            procs.append(leader_proc)
            follower_ports = []
            for i in (1, 2):
                proc, port = _start(["--role", "follower", "--file", os.path.join(tmp, f"f{i}.log"),
                                     "--leader-port", str(leader_port)])
                procs.append(proc)
                follower_ports.append(port)
            leader_proc.stdin.write(f"{follower_ports[0]},{follower_ports[1]}\n".encode())
            leader_proc.stdin.flush()
            rates = []
            for r in range(args.runs):
                cpu0 = [_cpu_seconds(proc.pid) for proc in procs]
                client0 = time.process_time()
                t0 = time.perf_counter()
                n, lat = run(_client(leader_port, args.duration, follower_ports if args.learner else []))
                elapsed = time.perf_counter() - t0
                per_write = [(_cpu_seconds(proc.pid) - c) / n * 1e6 for proc, c in zip(procs, cpu0)]
                client = (time.process_time() - client0) / n * 1e6
                rates.append(n / elapsed)
                print(f"  run {r + 1}: {n / elapsed:,.0f} writes/s, p50 {statistics.median(lat) * 1e3:.2f} ms; "
                      f"CPU us/write: leader {per_write[0]:.0f}, followers {per_write[1]:.0f} and "
                      f"{per_write[2]:.0f}, client {client:.0f}", flush=True)
            print(f"median: {statistics.median(rates):,.0f} writes/s at one client")
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
