"""A node's replicas share one block cache (server/node/node.py BLOCK_CACHE_BYTES),
so the memory their reads may use is bounded per node, not per replica."""
from __future__ import annotations

import asyncio
import os

from engine._native import sequencer, write_batch
from server.node.node import Node


def test_every_replica_engine_uses_the_node_block_cache(tmp_path):
    async def run():
        node = Node(1, "127.0.0.1:0", os.fspath(tmp_path), ["127.0.0.1:1"], block_cache_bytes=8 << 20)
        try:
            hosts = [node._host(rg) for rg in (1, 2, 3)]
            await asyncio.sleep(0)
            assert node.block_cache.capacity == 8 << 20
            for h in hosts:
                assert h.storage.db.options.block_cache is node.block_cache
            # Each replica's engine reads its own data through the shared cache.
            for i, h in enumerate(hosts):
                db = h.storage.db
                db.create_table("t5", table_id=5)
                db.write_encoded(write_batch.encode_one(write_batch.VALUE, 5, b"k", b"replica-%d" % i,
                                                        sequencer.encode(1, 0, 1)))
                db.flush()
            for _ in range(2):
                assert [h.get(5, b"k").value for h in hosts] == [b"replica-0", b"replica-1", b"replica-2"]
            assert node.block_cache.hits > 0
        finally:
            for rg in list(node.hosts):
                await node._drop(rg)
            node._io.shutdown(wait=True)

    asyncio.run(run())
