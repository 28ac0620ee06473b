"""The router's Batch stream (server/router/service.py, KVService.Batch): ops
in, answers out as they complete, sent by a StreamWriter at the end of the
loop round that completed them, every op answered exactly once before the
handler returns, and answers that cannot be sent end the stream with an error."""
from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc._cython.cygrpc import ExecuteBatchError

from server.proto import kv_pb2
from server.router.router import RouterError
from server.router.service import AnswersUnsent, KVService


class _Router:
    """A fake Router: each put's answer is a future the test settles (by key)."""

    def __init__(self):
        self.answers: dict[bytes, asyncio.Future] = {}

    async def write(self, table, key, value, **kwargs):
        fut = self.answers.setdefault(key, asyncio.get_running_loop().create_future())
        return await fut

    async def get(self, table, key, *, deadline):
        raise RouterError(grpc.StatusCode.NOT_FOUND, f"table {table!r} does not exist")


class _Context:
    """A server context whose write completes in the next loop round, as gRPC's does."""

    def __init__(self, fail_with: BaseException | None = None):
        self.sent: list[list[tuple[int, int, bytes]]] = []   # per message: (op id, code, seq)
        self.fail_with = fail_with

    async def write(self, batch: kv_pb2.OpResultBatch) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append([(r.id, r.code, r.seq) for r in batch.results])
        await asyncio.sleep(0)


def _puts(*ids: int) -> kv_pb2.OpBatch:
    return kv_pb2.OpBatch(ops=[kv_pb2.Op(id=i, put=kv_pb2.PutRequest(table="t", key=b"k%d" % i, value=b"v"))
                               for i in ids])


async def _ops(batches, more: asyncio.Future | None = None):
    for b in batches:
        yield b
    if more is not None:   # the client keeps its stream open
        await more


def _seq(i: int) -> bytes:
    return bytes(15) + bytes([i])


def test_answers_leave_as_they_complete_and_every_op_is_answered_before_the_handler_returns():
    async def run():
        router, ctx = _Router(), _Context()
        handler = asyncio.ensure_future(KVService(router).Batch(_ops([_puts(1, 2), _puts(3)]), ctx))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not handler.done()   # the client half-closed, but ops 1-3 are not answered yet
        router.answers[b"k2"].set_result(_seq(2))
        for _ in range(10):
            await asyncio.sleep(0)
        router.answers[b"k3"].set_result(_seq(3))
        router.answers[b"k1"].set_result(_seq(1))
        await asyncio.wait_for(handler, 5)
        return ctx.sent

    sent = asyncio.run(run())
    assert sent == [[(2, 0, _seq(2))], [(3, 0, _seq(3)), (1, 0, _seq(1))]]


def test_ops_completed_in_one_loop_round_go_out_as_one_message():
    async def run():
        router, ctx = _Router(), _Context()
        handler = asyncio.ensure_future(KVService(router).Batch(_ops([_puts(*range(1, 9))]), ctx))
        for _ in range(10):
            await asyncio.sleep(0)
        for i in range(1, 9):
            router.answers[b"k%d" % i].set_result(_seq(i))
        await asyncio.wait_for(handler, 5)
        return ctx.sent

    sent = asyncio.run(run())
    assert len(sent) == 1 and sorted(op_id for op_id, _, _ in sent[0]) == list(range(1, 9))


def test_an_op_that_fails_is_answered_with_its_code_and_the_stream_goes_on():
    async def run():
        router, ctx = _Router(), _Context()
        get = kv_pb2.Op(id=7, get=kv_pb2.GetRequest(table="gone", key=b"k"))
        handler = asyncio.ensure_future(KVService(router).Batch(_ops([kv_pb2.OpBatch(ops=[get]), _puts(8)]), ctx))
        for _ in range(10):
            await asyncio.sleep(0)
        router.answers[b"k8"].set_result(_seq(8))
        await asyncio.wait_for(handler, 5)
        return ctx.sent

    answers = {op_id: code for message in asyncio.run(run()) for op_id, code, _ in message}
    assert answers == {7: grpc.StatusCode.NOT_FOUND.value[0], 8: 0}


def test_answers_that_cannot_be_sent_end_the_stream_with_an_error_not_a_silent_wait():
    # A send that fails for a reason other than the stream's end (a bug): the
    # handler must end with an error while the client keeps its stream open,
    # so the client's ops in flight fail instead of waiting for answers never sent.
    async def run():
        loop = asyncio.get_running_loop()
        router, ctx = _Router(), _Context(fail_with=ValueError("cannot send answer"))
        more = loop.create_future()
        handler = asyncio.ensure_future(KVService(router).Batch(_ops([_puts(1)], more), ctx))
        for _ in range(10):
            await asyncio.sleep(0)
        router.answers[b"k1"].set_result(_seq(1))
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
        router = _Router()
        ctx = _Context(fail_with=ExecuteBatchError("Failed \"execute_batch\": (<grpc_call_error.GRPC_CALL_ERROR"
                                                   "_TOO_MANY_OPERATIONS>)"))
        handler = asyncio.ensure_future(KVService(router).Batch(_ops([_puts(1)]), ctx))
        for _ in range(10):
            await asyncio.sleep(0)
        router.answers[b"k1"].set_result(_seq(1))
        await asyncio.wait_for(handler, 5)
        return "ended"

    assert asyncio.run(run()) == "ended"


def test_the_rpcs_cancel_cancels_the_ops_in_flight():
    async def run():
        router, ctx = _Router(), _Context()
        handler = asyncio.ensure_future(KVService(router).Batch(_ops([_puts(1)]), ctx))
        for _ in range(10):
            await asyncio.sleep(0)
        handler.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handler
        await asyncio.sleep(0)
        return router.answers[b"k1"]

    assert asyncio.run(run()).cancelled()
