"""HostGroup: three real ReplicaHosts (log store and engine on disk) over an in-memory network, the MM played by hand.

For tests of what spans members and leader changes (test_dedup.py): a
message is delivered when the test pumps the network, a member in `down`
neither sends nor receives, and elections are a promise round plus an
appointment, as the MM does them.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from engine._native import sequencer, write_batch
from server.node.replica_host import COMPACT_FORCE, ReplicaHost
from server.node.replica_storage import ReplicaStorage
from server.replication.messages import Appointment, Config, Message, PromiseRequest, Role
from server.replication.options import ReplicaOptions

RG, TABLE = 1, 9
MEMBERS = (1, 2, 3)


def rep(key: bytes, value: bytes | None = b"v", ts: int = 1000) -> bytes:
    kind = write_batch.VALUE if value is not None else write_batch.DELETE
    return write_batch.encode_one(kind, TABLE, key, value, sequencer.encode(ts, 0, 77))


class HostGroup:
    def __init__(self, base: str, options: ReplicaOptions | None = None):
        self.base = base
        self.options = options or ReplicaOptions()
        self.io = ThreadPoolExecutor(1)
        self.queue: list[Message] = []
        self.down: set[int] = set()
        self.hosts: dict[int, ReplicaHost] = {}
        for n in MEMBERS:
            self.open(n)

    def open(self, n: int) -> ReplicaHost:
        h = ReplicaHost(RG, n, ReplicaStorage(os.path.join(self.base, str(n)), node_id=n), self.options,
                        lambda to, msg: self.queue.append(msg), self.io)
        self.hosts[n] = h
        h.start()
        return h

    async def restart(self, n: int) -> ReplicaHost:
        await self.hosts[n].close()
        return self.open(n)

    async def idle(self) -> None:
        """Until no host has work: a condition over the hosts, polled between loop rounds."""
        for i in range(20_000):
            if i > 1000:
                await asyncio.sleep(0.001)   # a snapshot install in the I/O thread
            if all(not h._busy and h._handoff is None and not h._wake.is_set() and not h.replica.has_ready()
                   for h in self.hosts.values()):
                return
            await asyncio.sleep(0)
        raise AssertionError("hosts did not come to rest")

    async def pump(self, ticks: int = 0, hold: Callable[[Message], bool] | None = None,
                   drop: Callable[[Message], bool] | None = None) -> list[Message]:
        """Delivers messages until none is left, then up to `ticks` ticks (each
        followed by delivery). Messages `hold` picks are set aside and returned
        (in flight, for the test to deliver later); those `drop` picks are lost."""
        held: list[Message] = []
        for _ in range(2000):
            await self.idle()
            if not self.queue:
                if ticks <= 0:
                    return held
                ticks -= 1
                for n, h in self.hosts.items():
                    if n not in self.down:
                        h.tick()
                continue
            msgs, self.queue = self.queue, []
            touched = {}
            for m in msgs:
                if m.recipient == 0 or m.recipient in self.down or m.sender in self.down:
                    continue
                if hold is not None and hold(m):
                    held.append(m)
                    continue
                if drop is not None and drop(m):
                    continue
                h = self.hosts[m.recipient]
                h.step(m, wake=False)
                touched[m.recipient] = h
            for h in touched.values():
                h.acknowledged()
        raise AssertionError("network did not quiesce")

    async def deliver_one(self) -> bool:
        """Delivers the oldest queued message (ticking every live member when
        none is queued); False if there was nothing to deliver or tick."""
        await self.idle()
        if not self.queue:
            live = [h for n, h in self.hosts.items() if n not in self.down]
            for h in live:
                h.tick()
            return bool(live)
        m = self.queue.pop(0)
        if m.recipient != 0 and m.recipient not in self.down and m.sender not in self.down:
            h = self.hosts[m.recipient]
            h.step(m, wake=False)
            h.acknowledged()
        return True

    async def elect(self, epoch: int, leader: int, promisers) -> None:
        """As the MM does: asks until every promiser promised (a member that
        restarted holds its promise for a while, README LL3), then appoints."""
        deadline = time.monotonic() + 5
        while True:
            for n in promisers:
                self.hosts[n].step(PromiseRequest(epoch=epoch, sender=0, recipient=n))
            await self.pump()
            if all(self.hosts[n].replica.epoch >= epoch for n in promisers):
                break
            assert time.monotonic() < deadline, "no promise within 5 s"
            await asyncio.sleep(0.05)   # the hold runs on the real clock (lease_clock): ask again
        self.hosts[leader].step(Appointment(epoch=epoch, sender=0, recipient=leader,
                                            config=Config(frozenset(MEMBERS))))
        await self.pump(ticks=4)
        assert self.hosts[leader].replica.role is Role.LEADER, self.hosts[leader].replica.role

    def write(self, n: int, key: bytes, value: bytes | None, **kw) -> asyncio.Future:
        h = self.hosts[n]
        fut = h.submit_write(rep(key, value), wake=False, **kw)
        h.start_client_work()
        return fut

    async def compact(self, n: int) -> None:
        """Flush and compact member n's log as far as its engine allows (Node._maintenance, forced)."""
        h = self.hosts[n]
        h.storage.db.flush()
        h.compact_due = COMPACT_FORCE
        h.tick()
        await self.idle()

    async def close(self) -> None:
        for h in self.hosts.values():
            await h.close()
        self.io.shutdown()
