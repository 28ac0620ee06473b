"""InProcessCluster: a metadata manager (embedded store), nodes and routers on one event loop, on loopback.

For tests of the router against real metadata and nodes without process
start-up costs (test_router_consistency.py). Group 1 of one member by default.
"""
from __future__ import annotations

import asyncio
import os

import grpc

from server.meta.service import MetaServer
from server.meta.store import MetaStore
from server.node.node import Node
from server.node.peers import SERVER_OPTIONS
from server.proto import kv_pb2_grpc
from server.router.router import Router
from server.router.service import KVService


class InProcessCluster:
    def __init__(self, tmp, groups=((1, (1,)),), nodes=(1,)):
        self.tmp = str(tmp)
        self.groups = groups
        self.node_ids = nodes
        self.routers: list[tuple[Router, grpc.aio.Server, str]] = []

    async def start(self):
        self.mm = MetaServer("127.0.0.1:0")
        self.mm.activate(MetaStore(os.path.join(self.tmp, "meta")))
        await self.mm.start()
        self.nodes = []
        for n in self.node_ids:
            node = Node(n, "127.0.0.1:0", os.path.join(self.tmp, f"n{n}"), [self.mm.address],
                        block_cache_bytes=0)
            await node.start()
            self.nodes.append(node)
        for _ in range(100):   # conditions over the MM's state, polled: the nodes connect on their own
            if len(self.mm.sessions) == len(self.node_ids):
                break
            await asyncio.sleep(0.05)
        for rg, members in self.groups:
            self.mm.create_group(rg, list(members))
        for rg, _ in self.groups:
            for _ in range(200):
                gl = self.mm.groups[rg]
                rep = self.mm.last_status.get((rg, gl.leader)) if gl.leader else None
                if rep is not None and rep.role.name == "LEADER":
                    break
                await asyncio.sleep(0.05)
        return self

    async def add_router(self, rid):
        r = Router(rid, [self.mm.address])
        await r.start()
        await r.wait_ready(10)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        kv_pb2_grpc.add_KVServicer_to_server(KVService(r), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        addr = f"127.0.0.1:{port}"
        self.routers.append((r, server, addr))
        return r, addr

    async def close(self):
        for r, s, _ in self.routers:
            await s.stop(grace=0)
            await r.close()
        for n in self.nodes:
            await n.stop()
        await self.mm.stop()



def run_with_routers(tmp, routers: int, body, timeout: float = 5.0, **cluster_kw):
    """Starts a cluster (InProcessCluster(tmp, **cluster_kw)) with `routers`
    routers (ids 1001...) and an AsyncClient on each, returns what
    `await body(cluster, routers, clients)` returns, and stops everything
    (clients, routers, nodes, MM) whatever happens."""
    import contextlib

    import quorumkv

    async def go():
        cluster = await InProcessCluster(tmp, **cluster_kw).start()
        try:
            made = [await cluster.add_router(1001 + i) for i in range(routers)]
            async with contextlib.AsyncExitStack() as stack:
                clients = [await stack.enter_async_context(quorumkv.AsyncClient(address, timeout=timeout))
                           for _, address in made]
                return await body(cluster, [r for r, _ in made], clients)
        finally:
            await cluster.close()

    return asyncio.run(go())
