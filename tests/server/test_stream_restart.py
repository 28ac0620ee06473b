"""Streams through StreamWriter (server/stream_writer.py) over real grpc.aio:
a DataClient, the Data service's answer streams and a PeerLink, all under
load while their server stops abruptly and starts again on the same port.
No caller may wait forever (each request is answered or fails with
StreamBroken), and all three serve again afterwards. (Ported from the review
of 9489fd2/470b8a4, which ran it by hand.)"""
from __future__ import annotations

import asyncio
import random

import grpc

from server.node.data_answers import answer_stream
from server.node.data_client import DataClient, StreamBroken
from server.node.node import _fill_read
from server.node.peers import SERVER_OPTIONS, PeerLink
from server.proto import data_pb2, data_pb2_grpc, replication_pb2, replication_pb2_grpc
from server.replication.messages import Heartbeat

ANSWER_TIMEOUT_S = 10      # a request not settled by then is a caller waiting forever
MAX_ROUNDS = 20_000        # the loaders stop long before, once the restart is shown


class _Data(data_pb2_grpc.DataServicer):
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.answered = 0
        self.serving = asyncio.Event()   # set after the first 100 answers

    async def Read(self, request_iterator, context):  # noqa: N802 - gRPC's name
        loop = asyncio.get_running_loop()

        def submit(req, on_done):
            fut = loop.create_future()
            fut.add_done_callback(on_done)
            fut.add_done_callback(self._count)
            loop.call_later(self.rng.random() * 0.005, lambda: fut.done() or fut.set_result((data_pb2.OK, "")))

        await answer_stream(request_iterator, context.write, submit, _fill_read, data_pb2.ReadBatchResponse, "read")

    def _count(self, _fut) -> None:
        self.answered += 1
        if self.answered >= 100:
            self.serving.set()


class _Replication(replication_pb2_grpc.ReplicationServicer):
    def __init__(self):
        self.envelopes = 0
        self.receiving = asyncio.Event()

    async def Exchange(self, request_iterator, context):  # noqa: N802
        async for batch in request_iterator:
            self.envelopes += len(batch.envelopes)
            self.receiving.set()
        return replication_pb2.ExchangeSummary()


async def _serve(port: int, seed: int) -> tuple[grpc.aio.Server, _Data, _Replication, int]:
    data, repl = _Data(random.Random(seed)), _Replication()
    srv = grpc.aio.server(options=SERVER_OPTIONS)
    data_pb2_grpc.add_DataServicer_to_server(data, srv)
    replication_pb2_grpc.add_ReplicationServicer_to_server(repl, srv)
    port = srv.add_insecure_port(f"127.0.0.1:{port}")
    await srv.start()
    return srv, data, repl, port


def test_clients_and_peer_links_survive_their_server_stopping_abruptly_and_serve_again():
    async def go():
        srv, data, repl, port = await _serve(0, 1)
        client = DataClient(f"127.0.0.1:{port}")
        link = PeerLink(1, 2, f"127.0.0.1:{port}")
        link.start()
        stop = asyncio.Event()

        async def load() -> tuple[int, int]:
            ok = broken = 0
            for _ in range(MAX_ROUNDS):
                if stop.is_set():
                    break
                futures = [client.submit_read(1, 1, b"k") for _ in range(20)]
                for _ in range(10):
                    link.send(1, Heartbeat(epoch=1, sender=1, recipient=2, commit_index=0))
                for f in futures:
                    try:
                        await asyncio.wait_for(f, ANSWER_TIMEOUT_S)   # TimeoutError fails the test
                        ok += 1
                    except StreamBroken:
                        broken += 1
            return ok, broken

        loaders = [asyncio.create_task(load()) for _ in range(4)]
        try:
            await asyncio.wait_for(asyncio.gather(data.serving.wait(), repl.receiving.wait()), 20)
            await srv.stop(None)   # abrupt: every stream breaks mid-traffic
            srv, data, repl, _ = await _serve(port, 2)
            await asyncio.wait_for(asyncio.gather(data.serving.wait(), repl.receiving.wait()), 20)
            stop.set()
            results = await asyncio.wait_for(asyncio.gather(*loaders), 3 * ANSWER_TIMEOUT_S)
            fresh = await asyncio.wait_for(client.read(1, 1, b"k"), 5)
            writer = link._writer
            return results, fresh.code, writer is not None and not writer.closed
        finally:
            stop.set()
            for t in loaders:
                t.cancel()
            await asyncio.gather(*loaders, return_exceptions=True)
            await link.close()
            await client.close()
            await srv.stop(None)

    results, fresh_code, link_open = asyncio.run(go())
    assert all(ok > 0 for ok, _ in results)    # every loader was answered, before and after
    assert fresh_code == data_pb2.OK and link_open
