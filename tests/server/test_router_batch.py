"""The router's Batch stream (server/router/op_stream.py, served by KVService.Batch).

A real Router with a real routing copy (table "t" in group 1, led by node 1)
and a fake leader's DataClient whose answers the tests settle: ops start on
the stack that read them and are settled by their first answer without a
task; an op that needs more (a retry, a table this copy does not know) goes
on in a task; answers leave as they complete, those of one loop round in one
message; every op is answered exactly once before the handler returns; and
answers that cannot be sent end the stream with an error."""
from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc._cython.cygrpc import ExecuteBatchError

from engine._native import write_batch
from server.proto import data_pb2, kv_pb2, meta_pb2
from server.router.op_stream import AnswersUnsent
from server.router.router import Router
from server.router.routing import Routing
from server.router.service import KVService


class _Leader:
    """A fake leader's DataClient: every request's answer is a future the test settles."""

    def __init__(self):
        self.writes: list[data_pb2.WriteRequest] = []
        self.answers: dict[bytes, list[asyncio.Future]] = {}   # key -> the answers of its attempts

    def submit_write(self, req: data_pb2.WriteRequest) -> asyncio.Future:
        self.writes.append(req)
        (_kind, _tid, key, _value, _seq), = write_batch.decode(req.batch)
        return self._answer(key)

    def submit_read(self, rg: int, table_id: int, key: bytes) -> asyncio.Future:
        return self._answer(key)

    def _answer(self, key: bytes) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.answers.setdefault(key, []).append(fut)
        return fut

    def ok(self, key: bytes, attempt: int = 0) -> None:
        req = [r for r in self.writes if write_batch.decode(r.batch)[0][2] == key][attempt]
        self.answers[key][attempt].set_result(data_pb2.WriteResponse(
            id=req.id, code=data_pb2.OK, seqs=write_batch.seqs(req.batch, 0, 1), epoch=1, leader=1))


def _router(leader: _Leader) -> Router:
    r = Router(5, [])
    rt = meta_pb2.RoutingTable(version=1)
    rt.groups.add(rg=1, leader=1, epoch=1)
    rt.tables.add(name="t", table_id=3).ranges.add(start=b"", rg=1)
    rt.nodes.add(node_id=1, address="127.0.0.1:1")
    r.routing = Routing(rt)
    r._client = lambda node: leader

    async def refresh(deadline):
        return True   # the MM answered: the copy is current

    r.refresh = refresh
    return r


class _Context:
    """A server context whose write completes in the next loop round, as gRPC's does."""

    def __init__(self, fail_with: BaseException | None = None):
        self.sent: list[list[kv_pb2.OpResult]] = []
        self.fail_with = fail_with

    async def write(self, batch: kv_pb2.OpResultBatch) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(list(batch.results))
        await asyncio.sleep(0)


def _put(i: int, table: str = "t", timeout_ms: int = 0) -> kv_pb2.Op:
    return kv_pb2.Op(id=i, timeout_ms=timeout_ms, put=kv_pb2.PutRequest(table=table, key=b"k%d" % i, value=b"v"))


async def _ops(*batches: list[kv_pb2.Op], more: asyncio.Future | None = None):
    for ops in batches:
        yield kv_pb2.OpBatch(ops=ops)
    if more is not None:   # the client keeps its stream open
        await more


async def _rounds(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _serve(router: Router, ctx: _Context, ops) -> asyncio.Task:
    return asyncio.ensure_future(KVService(router).Batch(ops, ctx))


def test_ops_are_settled_by_their_first_answer_as_they_complete_and_all_before_the_handler_returns():
    async def run():
        leader, ctx = _Leader(), _Context()
        router = _router(leader)
        handler = _serve(router, ctx, _ops([_put(1), _put(2)], [_put(3)]))
        await _rounds()
        assert len(leader.writes) == 3   # sent on the stacks that read them
        assert not handler.done()        # the client half-closed, but nothing is answered yet
        leader.ok(b"k2")
        await _rounds()
        leader.ok(b"k3")
        leader.ok(b"k1")
        await asyncio.wait_for(handler, 5)
        return ctx.sent, router

    sent, router = asyncio.run(run())
    assert [[(r.id, r.code) for r in message] for message in sent] == [[(2, 0)], [(3, 0), (1, 0)]]
    assert all(len(r.seq) == 16 for message in sent for r in message)
    assert router._inflight == {} and router.stats["retries"] == 0


def test_ops_completed_in_one_loop_round_go_out_as_one_message():
    async def run():
        leader, ctx = _Leader(), _Context()
        handler = _serve(_router(leader), ctx, _ops([_put(i) for i in range(1, 9)]))
        await _rounds()
        for i in range(1, 9):
            leader.ok(b"k%d" % i)
        await asyncio.wait_for(handler, 5)
        return ctx.sent

    sent = asyncio.run(run())
    assert len(sent) == 1 and sorted(r.id for r in sent[0]) == list(range(1, 9))


def test_an_op_whose_first_answer_leaves_a_retry_goes_on_in_a_task_under_the_same_request_id():
    # OUTCOME_UNKNOWN naming a newer leader: retried at once, with the first
    # attempt's seq as first_seq (it may have applied).
    async def run():
        leader, ctx = _Leader(), _Context()
        handler = _serve(_router(leader), ctx, _ops([_put(1)]))
        await _rounds()
        leader.answers[b"k1"][0].set_result(data_pb2.WriteResponse(code=data_pb2.OUTCOME_UNKNOWN, leader=1, epoch=2))
        await _rounds()
        assert len(leader.writes) == 2
        leader.ok(b"k1", attempt=1)
        await asyncio.wait_for(handler, 5)
        return ctx.sent, leader.writes

    sent, writes = asyncio.run(run())
    assert [(r.id, r.code) for r in sent[0]] == [(1, 0)]
    assert writes[0].request_id == writes[1].request_id and not writes[0].first_seq
    assert writes[1].first_seq == write_batch.seqs(writes[0].batch, 0, 1)


def test_ops_that_fail_are_answered_with_their_code_and_the_stream_goes_on():
    async def run():
        leader, ctx = _Leader(), _Context()
        bad_name = _put(7, table="no such/name")
        unknown_table = kv_pb2.Op(id=8, get=kv_pb2.GetRequest(table="gone", key=b"k"))   # not in the copy: a task
        final = _put(9)
        handler = _serve(_router(leader), ctx, _ops([bad_name, unknown_table, final, _put(10)]))
        await _rounds()
        leader.answers[b"k9"][0].set_result(data_pb2.WriteResponse(code=data_pb2.FORGOTTEN))
        leader.ok(b"k10")
        await asyncio.wait_for(handler, 5)
        return {r.id: r for message in ctx.sent for r in message}

    answers = asyncio.run(run())
    assert answers[7].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "table name" in answers[7].message
    assert answers[8].code == grpc.StatusCode.NOT_FOUND.value[0] and "gone" in answers[8].message
    # A forgotten first attempt: UNKNOWN, final (the SDK must not retry it: kv.proto, OpResult.final).
    assert answers[9].code == grpc.StatusCode.UNKNOWN.value[0] and answers[9].final
    assert answers[10].code == 0


def test_a_first_attempt_unanswered_at_the_ops_deadline_ends_unknown():
    async def run():
        leader, ctx = _Leader(), _Context()
        router = _router(leader)
        router._await_change = lambda deadline: asyncio.sleep(0)   # no routing change comes
        handler = _serve(router, ctx, _ops([_put(1, timeout_ms=200)]))
        await asyncio.wait_for(handler, 30)   # a hang is the failure
        return ctx.sent, leader, router

    sent, leader, router = asyncio.run(run())
    assert [(r.id, r.code) for r in sent[0]] == [(1, grpc.StatusCode.UNKNOWN.value[0])]
    assert len(leader.writes) == 1 and isinstance(leader.answers[b"k1"][0].exception(), TimeoutError)
    assert router._inflight == {}


def test_answers_that_cannot_be_sent_end_the_stream_with_an_error_not_a_silent_wait():
    # A send that fails for a reason other than the stream's end (a bug): the
    # handler must end with an error while the client keeps its stream open,
    # so the client's ops in flight fail instead of waiting for answers never sent.
    async def run():
        leader, ctx = _Leader(), _Context(fail_with=ValueError("cannot send answer"))
        handler = _serve(_router(leader), ctx, _ops([_put(1)], more=asyncio.get_running_loop().create_future()))
        await _rounds()
        leader.ok(b"k1")
        done, _ = await asyncio.wait([handler], timeout=5)
        if not done:
            handler.cancel()
            return "the handler is still waiting for ops it will never answer"
        return handler.exception()

    outcome = asyncio.run(run())
    assert isinstance(outcome, AnswersUnsent), outcome
    assert "cannot send answer" in str(outcome)


def test_a_send_that_fails_because_the_rpc_ended_is_not_reported_as_unsent_answers():
    # A client that cancels while the server's send is held by flow control:
    # gRPC's ExecuteBatchError is the stream's end, which gRPC handles.
    async def run():
        leader = _Leader()
        ctx = _Context(fail_with=ExecuteBatchError("Failed \"execute_batch\": (<grpc_call_error.GRPC_CALL_ERROR"
                                                   "_TOO_MANY_OPERATIONS>)"))
        handler = _serve(_router(leader), ctx, _ops([_put(1)]))
        await _rounds()
        leader.ok(b"k1")
        await asyncio.wait_for(handler, 5)
        return "ended"

    assert asyncio.run(run()) == "ended"


def test_the_rpcs_cancel_gives_up_first_attempts_and_cancels_the_ops_tasks():
    async def run():
        leader, ctx = _Leader(), _Context()
        router = _router(leader)
        handler = _serve(router, ctx, _ops([_put(1), _put(2)]))
        await _rounds()
        leader.answers[b"k2"][0].set_result(data_pb2.WriteResponse(code=data_pb2.OUTCOME_UNKNOWN))
        await _rounds()   # op 2 now waits for a routing change, in a task
        handler.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handler
        await _rounds()
        return leader, router

    leader, router = asyncio.run(run())
    assert leader.answers[b"k1"][0].cancelled()   # given up: its late answer is dropped
    assert len(leader.writes) == 2 and router._inflight == {}


def test_many_large_answers_completing_together_go_out_in_messages_cut_at_the_answer_limit():
    # Ten 900 KiB values answered in one round: one message would pass a
    # client's receive limit; they go in several, each within MAX_ANSWER_BYTES.
    from server.router.op_stream import MAX_ANSWER_BYTES

    async def run():
        leader, ctx = _Leader(), _Context()
        gets = [kv_pb2.Op(id=i, get=kv_pb2.GetRequest(table="t", key=b"k%d" % i)) for i in range(1, 11)]
        handler = _serve(_router(leader), ctx, _ops(gets))
        await _rounds()
        for i in range(1, 11):
            leader.answers[b"k%d" % i][0].set_result(data_pb2.ReadResponse(code=data_pb2.OK, found=True,
                                                                          value=bytes(900 << 10), seq=bytes(16)))
        await asyncio.wait_for(handler, 5)
        return ctx.sent

    sent = asyncio.run(run())
    assert sorted(r.id for message in sent for r in message) == list(range(1, 11))
    assert len(sent) > 1 and all(sum(len(r.value) for r in message) <= MAX_ANSWER_BYTES for message in sent)


def test_a_cancellation_that_leaks_into_an_ops_task_still_answers_the_op():
    # Not the stream's cancel: a CancelledError from below (e.g. a gRPC call
    # cancelled under a refresh). The op is answered (invariant 1): a write
    # UNKNOWN, a read UNAVAILABLE; the handler does not wait forever.
    async def run():
        leader, ctx = _Leader(), _Context()
        router = _router(leader)

        async def leaks(call, verdict=None):
            raise asyncio.CancelledError()

        router.finish_write = router.finish_read = leaks
        unknown_table = kv_pb2.Op(id=1, get=kv_pb2.GetRequest(table="new", key=b"k"))   # not in the copy: a task
        write = _put(2, table="new")
        await asyncio.wait_for(_serve(router, ctx, _ops([unknown_table, write])), 5)
        return {r.id: r.code for message in ctx.sent for r in message}

    assert asyncio.run(run()) == {1: grpc.StatusCode.UNAVAILABLE.value[0], 2: grpc.StatusCode.UNKNOWN.value[0]}


def test_every_answered_op_is_counted_by_code_and_timed():
    # Recorded after the loop round that answered them.
    from prometheus_client import REGISTRY

    def sample(name: str, labels: dict) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    def samples():
        return (sample("quorumkv_router_ops_total", {"op": "put", "code": "OK"}),
                sample("quorumkv_router_ops_total", {"op": "put", "code": "INVALID_ARGUMENT"}),
                sample("quorumkv_router_latency_seconds_count", {"op": "put"}))

    before = samples()

    async def run():
        leader, ctx = _Leader(), _Context()
        handler = _serve(_router(leader), ctx, _ops([_put(1), _put(2), _put(3, table="no such/name")], [_put(4)]))
        await _rounds()
        for i in (1, 2, 4):
            leader.ok(b"k%d" % i)
        await asyncio.wait_for(handler, 5)
        await asyncio.sleep(0)   # the round after the last answer

    asyncio.run(run())
    after = samples()
    assert [a - b for a, b in zip(after, before)] == [3, 1, 4]
