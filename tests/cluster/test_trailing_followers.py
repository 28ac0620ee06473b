"""Quorum-first sending in real processes (server/replication/README.md, "Trailing followers").

A 3-node group takes sequential writes. With the nodes' default
(`--trailing-batch 128`) the leader sends each write at once to one follower
and to the other in batches, so the trailing follower makes a fraction of the
quorum follower's log fsyncs, and still ends up holding every write. With
`--trailing-batch 0` both followers get every write at once and fsync
(nearly) every one.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from engine._native import sequencer, write_batch
from server.local_cluster import LocalCluster
from server.node.data_client import DataClient
from server.proto import data_pb2

RG = 1
TABLE = 5
WRITES = 150


def _write_sequentially(address: str) -> None:
    async def run() -> None:
        client = DataClient(address)
        try:
            for i in range(WRITES):
                batch = write_batch.encode_one(write_batch.VALUE, TABLE, b"k%06d" % i, b"v",
                                               sequencer.encode(time.time_ns(), i, 9))
                resp = await asyncio.wait_for(client.write(RG, batch), 10)
                assert resp.code == data_pb2.OK, resp
        finally:
            await client.close()
    asyncio.run(run())


def _followers_caught_up(cluster: LocalCluster, leader: int, timeout: float = 10.0) -> dict[int, int]:
    """Each follower's log fsyncs, once every replica reports the leader's last
    index as applied. Polls the MM's view: another process's state."""
    deadline = time.monotonic() + timeout
    while True:
        g = cluster.group(RG)
        reports = {r.node_id: r.report for r in g.replicas}
        last = reports[leader].last.index
        if last >= WRITES and all(rep.applied_index >= last for rep in reports.values()):
            return {n: rep.fsyncs for n, rep in reports.items() if n != leader}
        if time.monotonic() > deadline:
            raise TimeoutError(f"followers not caught up to {last}: {g}")
        time.sleep(0.05)


@pytest.mark.parametrize("trailing_batch", ["128", "0"])
def test_trailing_follower_fsyncs_in_batches_and_catches_up(tmp_path, trailing_batch):
    with LocalCluster(str(tmp_path / "c"), nodes=3, node_args=["--trailing-batch", trailing_batch]) as cluster:
        cluster.create_group(RG, [1, 2, 3])
        leader, _ = cluster.wait_for_leader(RG)
        _write_sequentially(cluster.nodes[leader].address)
        fsyncs = _followers_caught_up(cluster, leader)
        total = sum(fsyncs.values())
        if trailing_batch == "0":
            # Both followers get each write at once. The commit waits for the
            # faster one only, so the other may fall behind by a write or two
            # and then persist what waits for it with one fsync (as it should):
            # "nearly every write", which no trailing member comes close to.
            assert min(fsyncs.values()) >= WRITES * 3 // 4, fsyncs
        else:
            # One follower fsyncs each write, the other a batch of 128 or a
            # tick's worth (50 ms: dozens of writes here). Which one trails may
            # change on the way (a tick's batch can be acknowledged before the
            # quorum follower's last write: README, the choice is made again),
            # so the bound is on the two together.
            assert WRITES <= total < WRITES * 4 // 3, fsyncs
