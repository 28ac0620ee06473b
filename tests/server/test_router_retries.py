"""The router's write retries under one request id tell the leader how old the first attempt is.

A write whose answer was lost (OUTCOME_UNKNOWN, a broken stream, a timeout)
is retried under the same request id; the leader answers a retry its
deduplication window may have forgotten OUTCOME_UNKNOWN instead of applying
it again (server/node/dedup.py). For that it needs the lowest seq any attempt
was stamped with (data.proto, WriteRequest.first_seq): these tests show the
router sends none on a first attempt, the first attempt's seq on every later
one, and all zeros when the client says an earlier call's attempt is unknown.
"""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from engine._native import write_batch
from server.proto import data_pb2
from server.router.router import Router, RouterError
from server.router.routing import Route


class _Leader:
    """A fake leader's DataClient: answers each write with the next code, records the requests."""

    def __init__(self, codes: list[int]):
        self.codes = codes
        self.requests: list[data_pb2.WriteRequest] = []

    def submit_write(self, req: data_pb2.WriteRequest) -> asyncio.Future:
        return self._answer_of(self.write_request(req))

    def submit_read(self, rg: int, table_id: int, key: bytes) -> asyncio.Future:
        return self._answer_of(self.read(rg, table_id, key))

    @staticmethod
    def _answer_of(call) -> asyncio.Future:
        """A plain future for the call's answer, as DataClient's submit_* give."""
        fut = asyncio.get_running_loop().create_future()

        async def run():
            answer = await call
            if not fut.done():
                fut.set_result(answer)

        fut.runner = asyncio.ensure_future(run())   # referenced: the loop keeps only weak references
        return fut

    async def write_request(self, req: data_pb2.WriteRequest) -> data_pb2.WriteResponse:
        self.requests.append(req)
        code = self.codes.pop(0)
        seqs = write_batch.seqs(req.batch, 0, 1) if code == data_pb2.OK else b""
        return data_pb2.WriteResponse(id=req.id, code=code, seqs=seqs, epoch=1, leader=1)


def _router(leader: _Leader) -> Router:
    r = Router(5, [])

    async def route(table, key, deadline):
        return Route(table_id=3, rg=1, leader=1, epoch=1, start=b"", end=None)

    r._route = route
    r._client = lambda node: leader
    r._follow_answer = lambda route, leader_id, epoch: True   # the same leader again, at once

    async def recreated(table, dropped_id, deadline):
        return True   # the table was dropped and made again: the write goes to the new one

    r._recreated = recreated
    return r


@pytest.mark.parametrize("retry", [False, True])
def test_every_attempt_after_the_first_carries_the_first_attempts_seq(retry):
    async def go():
        leader = _Leader([data_pb2.OUTCOME_UNKNOWN, data_pb2.OUTCOME_UNKNOWN, data_pb2.OK])
        r = _router(leader)
        loop = asyncio.get_running_loop()
        seq = await r.write("t", b"k", b"v", request_id=42, retry=retry, deadline=loop.time() + 30)
        return leader.requests, seq

    requests, seq = asyncio.run(go())
    assert len(requests) == 3 and len({req.request_id for req in requests}) == 1
    stamped = [write_batch.seqs(req.batch, 0, 1) for req in requests]
    assert stamped == sorted(stamped) and seq == stamped[-1]
    if retry:   # an attempt of an earlier call went first: its seq is not known here
        assert [req.first_seq for req in requests] == [bytes(16)] * 3
    else:
        assert [req.first_seq for req in requests] == [b"", stamped[0], stamped[0]]


def test_attempts_that_surely_did_not_apply_do_not_count_as_first():
    # NOT_LEADER and TABLE_DROPPED say "not applied": the first attempt that
    # may have applied is the one after them (a stream broken here).
    async def go():
        leader = _Leader([data_pb2.NOT_LEADER, data_pb2.OUTCOME_UNKNOWN, data_pb2.TABLE_DROPPED,
                          data_pb2.NOT_LEADER, data_pb2.OUTCOME_UNKNOWN, data_pb2.OK])
        r = _router(leader)
        loop = asyncio.get_running_loop()
        await r.write("t", b"k", b"v", request_id=42, deadline=loop.time() + 30)
        return leader.requests

    requests = asyncio.run(go())
    stamped = [write_batch.seqs(req.batch, 0, 1) for req in requests]
    # after TABLE_DROPPED the write goes to the recreated table under a new
    # wire id (here the same fake table id, so the same wire id): counted afresh
    assert [req.first_seq for req in requests] == [b"", b"", stamped[1], b"", b"", stamped[4]]


def test_a_forgotten_retry_ends_unknown_at_once_without_more_attempts():
    from server.router.router import RouterError

    async def go():
        leader = _Leader([data_pb2.OUTCOME_UNKNOWN, data_pb2.FORGOTTEN, data_pb2.OK])
        r = _router(leader)
        loop = asyncio.get_running_loop()
        with pytest.raises(RouterError) as exc:
            await r.write("t", b"k", b"v", request_id=42, deadline=loop.time() + 30)
        return leader.requests, exc.value

    requests, err = asyncio.run(go())
    assert len(requests) == 2 and err.code.name == "UNKNOWN" and "read the key" in err.message
    assert err.final   # the SDK must not retry it (kv.proto, OpResult.final)


def test_the_service_carries_a_final_unknown_to_the_client():
    """KVService puts RouterError.final on the wire: "quorumkv-final" trailing
    metadata on a unary call (OpResult.final in the Batch stream:
    tests/server/test_router_batch.py)."""
    from server.client.errors import FINAL_KEY
    from server.proto import kv_pb2
    from server.router.router import RouterError
    from server.router.service import KVService

    class _Router:
        async def write(self, *args, **kwargs):
            raise RouterError(grpc.StatusCode.UNKNOWN, "forgotten", final=True)

    class _Aborted(Exception):
        pass

    class _Context:
        trailing = ()

        def time_remaining(self):
            return 5.0

        def set_trailing_metadata(self, md):
            self.trailing = md

        async def abort(self, code, message):
            raise _Aborted(code, message)

    async def go():
        service = KVService(_Router())
        ctx = _Context()
        with pytest.raises(_Aborted) as aborted:
            await service.Delete(kv_pb2.DeleteRequest(table="t", key=b"k"), ctx)
        return aborted.value.args, ctx.trailing

    (code, message), trailing = asyncio.run(go())
    assert code == grpc.StatusCode.UNKNOWN and message == "forgotten"
    assert (FINAL_KEY, "1") in trailing


def test_a_router_with_a_lagging_clock_stamps_above_the_seqs_its_answers_carried():
    """The group stores max(stamp, previous + 1): a router whose clock lags
    sees larger seqs in its answers. Observing them keeps its next stamps,
    and so a retry's first_seq, above the group's recent seqs, where the
    leader's retry guard (dedup.py, evicted_through) does not refuse them."""
    from engine._native.sequencer import Sequencer, encode

    ahead = encode(time.time_ns(), 0, 1)   # the group's seqs, on time: an hour ahead of this router's clock

    class _AheadLeader(_Leader):
        async def write_request(self, req):
            resp = await super().write_request(req)
            if resp.code == data_pb2.OK:
                resp.seqs = ahead
            return resp

    async def go():
        leader = _AheadLeader([data_pb2.OK, data_pb2.OUTCOME_UNKNOWN, data_pb2.OK])
        r = _router(leader)
        r._sequencer = Sequencer(5, clock=lambda: time.time_ns() - 3600 * 10**9)   # an hour behind
        loop = asyncio.get_running_loop()
        await r.write("t", b"k", b"v", request_id=1, deadline=loop.time() + 30)
        await r.write("t", b"k", b"w", request_id=2, deadline=loop.time() + 30)
        return leader.requests

    requests = asyncio.run(go())
    stamped = [write_batch.seqs(req.batch, 0, 1) for req in requests]
    assert stamped[0] < ahead < stamped[1] < stamped[2]
    assert requests[2].first_seq == stamped[1] and requests[2].first_seq > ahead


def test_a_router_observes_the_seq_a_get_returns():
    from engine._native.sequencer import Sequencer, encode

    ahead = encode(time.time_ns(), 0, 1)

    class _ReadingLeader(_Leader):
        async def read(self, rg, table_id, key):
            return data_pb2.ReadResponse(code=data_pb2.OK, found=True, value=b"v", seq=ahead, epoch=1, leader=1)

    async def go():
        leader = _ReadingLeader([data_pb2.OK])
        r = _router(leader)
        r._sequencer = Sequencer(5, clock=lambda: time.time_ns() - 3600 * 10**9)
        loop = asyncio.get_running_loop()
        await r.get("t", b"k", deadline=loop.time() + 30)
        await r.write("t", b"k", b"w", request_id=1, deadline=loop.time() + 30)
        return leader.requests

    requests = asyncio.run(go())
    assert write_batch.seqs(requests[0].batch, 0, 1) > ahead


@pytest.mark.parametrize("bad", ["top", "a-year-ahead", "17-bytes"])
def test_a_router_does_not_follow_a_seq_no_sane_group_stores(bad):
    """One bad answer must not exhaust the sequencer (every later write would
    fail) or freeze this router's stamps far ahead for every group it writes
    (found by a review): seqs far ahead of the router's clock, or not one
    record's, are not followed."""
    from engine._native.sequencer import encode

    seqs = {"top": b"\xff" * 16, "a-year-ahead": encode(time.time_ns() + 365 * 86400 * 10**9, 0, 1),
            "17-bytes": b"\x7f" + encode(time.time_ns(), 0, 1)}[bad]

    class _BadLeader(_Leader):
        async def write_request(self, req):
            resp = await super().write_request(req)
            if len(self.requests) == 1:
                resp.seqs = seqs
            return resp

    async def go():
        leader = _BadLeader([data_pb2.OK, data_pb2.OK])
        r = _router(leader)
        loop = asyncio.get_running_loop()
        await r.write("t", b"k", b"v", request_id=1, deadline=loop.time() + 30)
        await r.write("t", b"k", b"w", request_id=2, deadline=loop.time() + 30)   # still writes, on time
        return leader.requests, r.stats["seqs_ignored"]

    requests, ignored = asyncio.run(go())
    second = write_batch.seqs(requests[1].batch, 0, 1)
    assert abs(int.from_bytes(second[:8], "big") - time.time_ns()) < 60 * 10**9
    assert ignored == (0 if bad == "17-bytes" else 1)


@pytest.mark.parametrize("retry", [False, True])
def test_forgotten_is_final_only_when_the_router_knows_the_first_attempts_seq(retry):
    # With zeros (the SDK's retry of an earlier call's unknown attempt) the
    # leader refuses any id it has not seen, including one whose first attempt
    # is still on its way: a later retry could learn the outcome (review).
    from server.router.router import RouterError

    async def go():
        leader = _Leader([data_pb2.FORGOTTEN] if retry else [data_pb2.OUTCOME_UNKNOWN, data_pb2.FORGOTTEN])
        r = _router(leader)
        loop = asyncio.get_running_loop()
        with pytest.raises(RouterError) as exc:
            await r.write("t", b"k", b"v", request_id=42, retry=retry, deadline=loop.time() + 30)
        return exc.value

    err = asyncio.run(go())
    assert err.code.name == "UNKNOWN" and err.final is (not retry)


@pytest.mark.parametrize("op", ["write", "get"])
def test_an_attempt_at_a_leader_the_routing_replaced_is_given_up_at_once(op):
    """A paused or cut-off old leader keeps its connection open and never
    answers: the router gives its attempt up as soon as the routing names a
    leader of a newer epoch, instead of waiting until the call's deadline, and
    retries there (a write under the same request id, its first attempt's seq
    as first_seq)."""
    from server.proto import meta_pb2
    from server.router.routing import Routing

    class _SilentFirst(_Leader):
        def submit_write(self, req):
            if not self.requests:
                self.requests.append(req)
                return asyncio.get_running_loop().create_future()   # never answered
            return super().submit_write(req)

        def submit_read(self, rg, table_id, key):
            self.reads = getattr(self, "reads", 0) + 1
            if self.reads == 1:
                return asyncio.get_running_loop().create_future()
            return self._answer_of(self.read(rg, table_id, key))

        async def read(self, rg, table_id, key):
            return data_pb2.ReadResponse(code=data_pb2.OK, found=True, value=b"v", epoch=2, leader=1)

    async def go():
        leader = _SilentFirst([data_pb2.OK])
        r = _router(leader)
        loop = asyncio.get_running_loop()
        call = (r.write("t", b"k", b"v", request_id=42, deadline=loop.time() + 600) if op == "write"
                else r.get("t", b"k", deadline=loop.time() + 600))
        pending = asyncio.ensure_future(call)
        for _ in range(100):   # until the first attempt is out
            if leader.requests or getattr(leader, "reads", 0):
                break
            await asyncio.sleep(0)
        rt = meta_pb2.RoutingTable(version=2)
        rt.groups.add(rg=1, leader=1, epoch=2)   # the routes above are of epoch 1
        r._install(Routing(rt))
        answer = await asyncio.wait_for(pending, 60)   # long before the call's deadline (600 s)
        return leader, answer

    leader, answer = asyncio.run(go())
    if op == "write":
        assert len(leader.requests) == 2 and len({req.request_id for req in leader.requests}) == 1
        assert leader.requests[1].first_seq == write_batch.seqs(leader.requests[0].batch, 0, 1)
    else:
        assert leader.reads == 2 and answer.value == b"v"


def test_a_call_cancelled_as_its_attempt_is_given_up_sends_no_more_attempts():
    # 3.11's wait_for raises the inner failure and drops a cancellation that
    # came in the same loop round: the router went on retrying a call its
    # caller had cancelled (found by a review).
    from server.proto import meta_pb2
    from server.router.routing import Routing

    class _Silent(_Leader):
        def submit_write(self, req):
            self.requests.append(req)
            return asyncio.get_running_loop().create_future()   # never answered

    async def go():
        leader = _Silent([])
        r = _router(leader)
        loop = asyncio.get_running_loop()
        call = asyncio.ensure_future(r.write("t", b"k", b"v", request_id=42, deadline=loop.time() + 3))
        for _ in range(100):
            if leader.requests:
                break
            await asyncio.sleep(0)
        rt = meta_pb2.RoutingTable(version=2)
        rt.groups.add(rg=1, leader=1, epoch=2)
        r._install(Routing(rt))   # the attempt's group has a newer leader ...
        call.cancel()             # ... and the caller gives up, in the same round
        with pytest.raises(asyncio.CancelledError):
            await call
        return leader.requests

    assert len(asyncio.run(go())) == 1


def test_a_call_cancelled_while_it_waits_for_a_routing_change_sends_nothing():
    # The same 3.11 wait_for behaviour in _await_change: a routing change in the
    # round of the cancellation let the call go on and send (found by a review).
    from server.proto import meta_pb2
    from server.router.routing import Routing

    async def go():
        leader = _Leader([data_pb2.OK])
        r = _router(leader)
        known = {"leader": False}
        r._client = lambda node: leader if known["leader"] else None   # no leader known yet: it waits
        loop = asyncio.get_running_loop()
        call = asyncio.ensure_future(r.write("t", b"k", b"v", request_id=42, deadline=loop.time() + 30))
        for _ in range(5):
            await asyncio.sleep(0)
        rt = meta_pb2.RoutingTable(version=2)
        rt.groups.add(rg=1, leader=1, epoch=2)
        known["leader"] = True
        r._install(Routing(rt))   # a leader appears ...
        call.cancel()             # ... and the caller gives up, in the same round
        with pytest.raises(asyncio.CancelledError):
            await call
        return leader.requests

    assert asyncio.run(go()) == []


@pytest.mark.parametrize("op", ["write", "get"])
def test_an_attempt_unanswered_at_the_calls_deadline_ends_the_call_and_its_late_answer_is_dropped(op):
    # The attempt's timer (Router._send) fails the answer's future at the
    # deadline: the call ends then (a write UNKNOWN: it may have applied; a
    # get UNAVAILABLE), and the future is done, so the DataClient drops the
    # answer if it comes later.
    class _Silent(_Leader):
        def submit_write(self, req):
            self.requests.append(req)
            self.answer = asyncio.get_running_loop().create_future()   # never answered
            return self.answer

        def submit_read(self, rg, table_id, key):
            self.requests.append(key)
            self.answer = asyncio.get_running_loop().create_future()
            return self.answer

    async def go():
        leader = _Silent([])
        r = _router(leader)
        r._await_change = lambda deadline: asyncio.sleep(0)   # no routing change comes
        loop = asyncio.get_running_loop()
        started = loop.time()
        call = (r.write("t", b"k", b"v", request_id=42, deadline=started + 0.2) if op == "write"
                else r.get("t", b"k", deadline=started + 0.2))
        with pytest.raises(RouterError) as err:
            await asyncio.wait_for(call, 30)   # a hang is the failure
        return err.value, loop.time() - started, leader

    err, took, leader = asyncio.run(go())
    assert err.code == (grpc.StatusCode.UNKNOWN if op == "write" else grpc.StatusCode.UNAVAILABLE), err
    assert 0.2 <= took < 5, took
    assert len(leader.requests) == 1 and leader.answer.done() and isinstance(leader.answer.exception(), TimeoutError)
