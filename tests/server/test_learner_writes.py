"""Learner writes end to end on loopback (one process): DataClient + LearnBoard against three real nodes.

What is shown: a learner client's writes are answered DURABLE_ON_LEADER by
the leader and counted committed from the followers' Learn streams
(server/node/learn_feed.py), OK'd to the caller, and readable at once by
another client; a plain client is unaffected; a Learn subscriber's first
message holds the followers' last acknowledgements.
"""
from __future__ import annotations

import asyncio
import os
import time

import grpc

from engine._native import sequencer, write_batch
from server.node.data_client import DataClient
from server.node.learn_board import LearnBoard
from server.node.learn_feed import unpack
from server.node_identity import NODE_METADATA_KEY
from server.proto import data_pb2, data_pb2_grpc
from tests.server.inproc_cluster import InProcessCluster

RG = 1
TABLE = 3


def put(key: bytes, value: bytes) -> bytes:
    return write_batch.encode_one(write_batch.VALUE, TABLE, key, value, sequencer.encode(time.time_ns(), 0, 77))


def run(tmp_path, body):
    async def go():
        cluster = await InProcessCluster(tmp_path, groups=((RG, (1, 2, 3)),), nodes=(1, 2, 3)).start()
        try:
            return await asyncio.wait_for(body(cluster), 30)
        finally:
            await cluster.close()
    return asyncio.run(go())


def leader_of(cluster) -> tuple[int, object]:
    leader = cluster.mm.groups[RG].leader
    return leader, next(n for n in cluster.nodes if n.id == leader)


def test_learner_writes_are_counted_from_the_followers_and_read_back_by_another_client(tmp_path):
    async def body(cluster):
        leader, node = leader_of(cluster)
        board = LearnBoard({n.id: n.address for n in cluster.nodes}.get)
        learner = DataClient(node.address, learn=board)
        plain = DataClient(node.address)
        try:
            for i in range(60):
                key = b"k%d" % i
                answer = await learner.write(RG, put(key, b"v%d" % i))
                assert answer.code == data_pb2.OK, answer
                got = await plain.read(RG, TABLE, key)   # another client, right after the OK
                assert got.code == data_pb2.OK and got.found and got.value == b"v%d" % i
                assert got.seq == answer.seqs
            # Several at once: one entry, counted together.
            answers = await asyncio.gather(*(learner.write(RG, put(b"m%d" % i, b"x")) for i in range(50)))
            assert all(a.code == data_pb2.OK for a in answers)
            assert board.counted >= 100 and board.unknown == 0
            assert node.hosts[RG].writes.early_answers == board.counted
            assert (await plain.write(RG, put(b"p", b"plain"))).code == data_pb2.OK   # answered at apply
        finally:
            await learner.close()
            await plain.close()
            await board.close()
    run(tmp_path, body)


def test_a_learn_subscriber_first_hears_the_followers_last_acknowledgements(tmp_path):
    async def body(cluster):
        leader, node = leader_of(cluster)
        plain = DataClient(node.address)
        try:
            answer = await plain.write(RG, put(b"a", b"b"))
            assert answer.code == data_pb2.OK
        finally:
            await plain.close()
        # The follower whose acknowledgement completed the quorum (the other
        # may trail: README "Trailing followers").
        follower = next(n for n in cluster.nodes if n.id != leader and n.hosts[RG].last_ack is not None
                        and n.hosts[RG].last_ack >= (answer.epoch, answer.index))
        async with grpc.aio.insecure_channel(follower.address) as channel:
            call = data_pb2_grpc.DataStub(channel).Learn(data_pb2.LearnRequest(), metadata=((NODE_METADATA_KEY, "0"),))
            first = await asyncio.wait_for(call.read(), 5)
            call.cancel()
        assert first.node == follower.id
        (rg, epoch, match), = unpack(first.acks)
        assert (rg, epoch) == (RG, answer.epoch) and match >= answer.index
        while follower.learn_feed.subscribers:   # the cancelled stream leaves the feed
            await asyncio.sleep(0.01)
    run(tmp_path, body)


def test_learner_writes_keep_counting_with_one_follower_stopped(tmp_path):
    async def body(cluster):
        leader, node = leader_of(cluster)
        board = LearnBoard({n.id: n.address for n in cluster.nodes}.get)
        learner = DataClient(node.address, learn=board)
        try:
            assert (await learner.write(RG, put(b"before", b"1"))).code == data_pb2.OK
            stopped = next(n for n in cluster.nodes if n.id != leader)
            await stopped.stop()
            cluster.nodes.remove(stopped)
            for i in range(20):
                answer = await learner.write(RG, put(b"after%d" % i, os.urandom(8)))
                assert answer.code == data_pb2.OK, answer
            assert board.unknown == 0 and board.counted >= 21
        finally:
            await learner.close()
            await board.close()
    run(tmp_path, body)
