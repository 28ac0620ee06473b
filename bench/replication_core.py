"""CPU per write of the replication core's Python, per role, with no gRPC and no network.

Usage (from the repository root):

    .venv/bin/python bench/replication_core.py [--writes 3000] [--fsync] [--profile leader|follower]

What it runs: a 3-member group in one process, each member a real
ReplicaStorage (log store and engine in a temporary directory), Replica and
WritePath, driven through the Ready contract by hand the way
tests/server/test_write_path.py drives one member. Every message between
members goes through what the wire does: codec.encode into an EnvelopeBatch,
SerializeToString, FromString, codec.decode. One write at a time (one client),
100-byte values.

Reported: CPU microseconds per write for the leader and each follower
(time.process_time around each member's work) and for the codec and protobuf
of every message. Without --fsync, os.fdatasync is a no-op in this process,
so the figures are the Python path alone; with it, they include the kernel's
CPU for each fsync. --profile names a role whose work is profiled with
cProfile: Python calls per write (deterministic, unlike timings on a shared
machine) and the top functions.

Why: the one-client write path is bound by this per-write Python on every
process (bench/RESULTS.md, 2026-11-27 11:50 entry: quorumkv spends 2.1-2.2x
bench/grpc_floor.py's CPU per write); this measures the replication core's
share of it and any change to it, repeatably.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine._native import sequencer, write_batch  # noqa: E402
from server.node import codec  # noqa: E402
from server.node.replica_storage import ReplicaStorage  # noqa: E402
from server.node.write_path import WritePath  # noqa: E402
from server.proto import replication_pb2 as pb  # noqa: E402
from server.replication.messages import Appointment, Config, Message, PromiseRequest, Role  # noqa: E402
from server.replication.options import ReplicaOptions  # noqa: E402
from server.replication.replica import Replica  # noqa: E402

LEADER, FOLLOWERS = 1, (2, 3)
RG = TABLE = 1


class _Member:
    def __init__(self, node_id: int, path: str):
        self.id = node_id
        self.storage = ReplicaStorage(path, node_id=node_id)
        self.replica = Replica(node_id, self.storage.durable_state(), ReplicaOptions(eager_commit=False))
        self.writes = WritePath(node_id, self.replica, self.storage)
        self.cpu = 0.0
        self.profiler: cProfile.Profile | None = None   # set: this member's work is profiled

    def _timed(self, fn, *args):
        if self.profiler is not None:
            self.profiler.enable()
        t0 = time.process_time()
        try:
            return fn(*args)
        finally:
            self.cpu += time.process_time() - t0
            if self.profiler is not None:
                self.profiler.disable()

    def submit(self, rep: bytes):
        return self._timed(self.writes.submit, rep, 0, b"", False)

    def step(self, msg: Message) -> None:
        self._timed(self.replica.step, msg)

    def drive(self, outbox: list[Message]) -> None:
        """The Ready contract, as server/node/replica_host.py carries it out."""
        self._timed(self._drive, outbox)

    def _drive(self, outbox: list[Message]) -> None:
        r = self.replica
        self.writes.propose_pending()
        while r.has_ready():
            rd = r.ready()
            outbox.extend(rd.messages)
            self.writes.observe(rd.entries)
            self.storage.persist(rd.snapshot_chunks, rd.snapshot, rd.entries, rd.hard_state)
            outbox.extend(rd.messages_after_persist)
            self.writes.apply(rd.committed_entries)
            r.advance(rd)
            self.writes.propose_pending()


def _over_the_wire(msgs: list[Message]) -> list[Message]:
    out = []
    for m in msgs:
        batch = pb.EnvelopeBatch()
        codec.encode(RG, m, batch.envelopes.add())
        for env in pb.EnvelopeBatch.FromString(batch.SerializeToString()).envelopes:
            out.append(codec.decode(env)[1])
    return out


async def run(writes: int, profile_role: str | None) -> None:
    """Synchronous inside; a coroutine only because WritePath's answers are asyncio futures."""
    profiler = cProfile.Profile() if profile_role else None
    with tempfile.TemporaryDirectory(prefix="qkv-core-") as tmp:
        members = {i: _Member(i, os.path.join(tmp, str(i))) for i in (LEADER, *FOLLOWERS)}
        wire_cpu = 0.0

        def deliver_all(outbox: list[Message]) -> None:
            nonlocal wire_cpu
            while outbox:
                msgs = [m for m in outbox if m.recipient in members]   # the MM's messages are dropped
                outbox.clear()
                t0 = time.process_time()
                delivered = _over_the_wire(msgs)
                wire_cpu += time.process_time() - t0
                for m in delivered:
                    members[m.recipient].step(m)
                    members[m.recipient].drive(outbox)

        outbox: list[Message] = []
        for m in members.values():   # the MM's part of an election, by hand (README M1-M3)
            m.replica.step(PromiseRequest(epoch=1, sender=0, recipient=m.id))
            m.drive(outbox)
        outbox.clear()
        members[LEADER].replica.step(Appointment(epoch=1, sender=0, recipient=LEADER,
                                                 config=Config(frozenset(members))))
        members[LEADER].drive(outbox)
        deliver_all(outbox)
        if members[LEADER].replica.role is not Role.LEADER:
            raise RuntimeError("the leader did not take office")
        for m in members.values():
            m.cpu = 0.0
        wire_cpu = 0.0
        if profile_role:   # after the election: steady-state writes only
            members[LEADER if profile_role == "leader" else FOLLOWERS[0]].profiler = profiler

        value = os.urandom(100)
        t0 = time.perf_counter()
        for i in range(writes):
            rep = write_batch.encode_one(write_batch.VALUE, TABLE, os.urandom(16), value,
                                         sequencer.encode(time.time_ns(), i, 5))
            answer = members[LEADER].submit(rep)
            members[LEADER].drive(outbox)
            deliver_all(outbox)
            if not answer.done():
                raise RuntimeError(f"write {i} not answered after its messages were delivered")
        elapsed = time.perf_counter() - t0
        us = {i: m.cpu / writes * 1e6 for i, m in members.items()}
        print(f"{writes} writes in {elapsed:.2f} s; CPU us per write: leader {us[LEADER]:.0f}, "
              f"followers {us[FOLLOWERS[0]]:.0f} and {us[FOLLOWERS[1]]:.0f}, "
              f"codec + protobuf of all messages {wire_cpu / writes * 1e6:.0f}")
        for m in members.values():
            m.storage.close()
    if profiler is not None:
        stats = pstats.Stats(profiler)
        print(f"{profile_role}: {stats.total_calls / writes:.0f} Python calls per write (profiled)")
        stats.sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--writes", type=int, default=3000)
    p.add_argument("--fsync", action="store_true", help="keep fdatasync (adds its kernel CPU)")
    p.add_argument("--profile", choices=("leader", "follower"))
    args = p.parse_args(argv)
    if not args.fsync:
        os.fdatasync = lambda fd: None   # this process only: the Python path alone
    asyncio.run(run(args.writes, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
