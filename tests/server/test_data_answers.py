"""The Data service's answer streams (server/node/data_answers.py): answers go
back as their futures complete, each in a response batch, and a request whose
future fails is answered UNAVAILABLE without ending the stream."""
from __future__ import annotations

import asyncio

from grpc._cython.cygrpc import ExecuteBatchError
from prometheus_client import REGISTRY

from engine._native import write_batch
from server.node.data_answers import AnswersUnsent, answer_now, answer_stream
from server.node.dedup import MAX_DEDUP_RECORDS
from server.node.node import _DataService, _fill_read
from server.node.write_path import Outcome, Result
from server.proto import data_pb2


async def _requests(batches):
    for b in batches:
        yield b


def _read_batch(*ids: int) -> data_pb2.ReadBatchRequest:
    return data_pb2.ReadBatchRequest(requests=[data_pb2.ReadRequest(id=i, rg=1, table_id=1, key=b"k") for i in ids])


async def _answers(batches, submit) -> list[data_pb2.ReadResponse]:
    out = []

    async def write(resp):   # a send that completes in the next loop round, as gRPC's later
        out.extend(resp.responses)
        await asyncio.sleep(0)

    await answer_stream(_requests(batches), write, submit, _fill_read, data_pb2.ReadBatchResponse, "read")
    return out


def test_a_failed_request_is_answered_unavailable_and_the_stream_goes_on():
    async def run():
        loop = asyncio.get_running_loop()

        def submit(req, on_done):
            fut = loop.create_future()
            fut.add_done_callback(on_done)
            if req.id == 2:
                loop.call_soon(fut.set_exception, OSError("disk read failed"))
            else:
                loop.call_soon(fut.set_result, Result(Outcome.OK, 7, 1, None))

        return await _answers([_read_batch(1, 2), _read_batch(3)], submit)

    answers = {a.id: a for a in asyncio.run(run())}
    assert sorted(answers) == [1, 2, 3]
    assert answers[1].code == data_pb2.OK and answers[3].code == data_pb2.OK and answers[3].epoch == 7
    assert answers[2].code == data_pb2.UNAVAILABLE
    assert "disk read failed" in answers[2].message


def test_answers_leave_as_they_complete_not_in_request_order():
    async def run():
        loop = asyncio.get_running_loop()
        first = loop.create_future()

        def submit(req, on_done):
            if req.id == 1:
                first.add_done_callback(on_done)   # completes only after the second
                return
            fut = loop.create_future()
            fut.set_result(Result(Outcome.OK, 1, 1, None))
            on_done(fut)   # at once, as WritePath does for writes
            loop.call_soon(lambda: loop.call_soon(first.set_result, Result(Outcome.NOT_LEADER, 2, 3)))

        return [(r.id, r.code) for r in await _answers([_read_batch(1, 2)], submit)]

    assert asyncio.run(run()) == [(2, data_pb2.OK), (1, data_pb2.NOT_LEADER)]


def test_a_write_with_a_request_id_too_large_for_the_dedup_window_is_refused_before_any_replica():
    # Its seqs must fit one engine value of the dedup window (server/node/dedup.py).
    class _Host:
        rg = 1
        submitted = 0

        def submit_write(self, *args, **kwargs):
            self.submitted += 1

    async def run():
        host = _Host()
        service = _DataService(type("Node", (), {"hosts": {1: host}, "id": 1})())
        seq = bytes(15) + b"\x01"
        records = [(write_batch.VALUE, 9, b"k%d" % i, b"", seq) for i in range(MAX_DEDUP_RECORDS + 1)]
        answers = []
        req = data_pb2.WriteRequest(id=1, rg=1, batch=write_batch.encode_many(records), request_id=7)
        assert service._submit_write(req, lambda fut: answers.append(fut.result())) is None
        req.request_id = 0   # without an id nothing is remembered: no limit beyond the batch's own
        assert service._submit_write(req, lambda fut: answers.append(fut.result())) is host
        return answers, host.submitted

    answers, submitted = asyncio.run(run())
    assert [code for code, _ in answers] == [data_pb2.INVALID_ARGUMENT] and submitted == 1
    assert f"at most {MAX_DEDUP_RECORDS} records" in answers[0][1]


def test_an_answer_settled_just_before_the_requests_end_is_sent_before_the_handler_returns():
    # A request refused at once (answer_now), then the client half-closes: the
    # answer waits for a flush point when the handler sees the end of the
    # requests with nothing outstanding. It must still go out (found by review).
    async def run():
        def submit(req, on_done):
            answer_now(on_done, (data_pb2.UNKNOWN_GROUP, "no replica"))

        return await _answers([_read_batch(1)], submit)

    answers = asyncio.run(run())
    assert [(a.id, a.code) for a in answers] == [(1, data_pb2.UNKNOWN_GROUP)]


def test_answers_that_cannot_be_sent_end_the_stream_with_an_error_not_a_silent_wait():
    # An answer that cannot be encoded (a bug) closes the stream's writer:
    # the handler must end (gRPC then ends the RPC with an error and the
    # callers hear StreamBroken), not go on taking requests it never answers.
    def fill(out, req_id, result):
        if req_id == 2:
            raise ValueError("cannot encode answer 2")
        _fill_read(out, req_id, result)

    async def run():
        loop = asyncio.get_running_loop()
        more = loop.create_future()   # the client keeps its stream open

        async def requests():
            yield _read_batch(1)
            yield _read_batch(2)
            await more

        def submit(req, on_done):
            fut = loop.create_future()
            fut.add_done_callback(on_done)
            loop.call_soon(fut.set_result, Result(Outcome.OK, 1, 1, None))

        async def write(resp):
            await asyncio.sleep(0)

        handler = asyncio.ensure_future(
            answer_stream(requests(), write, submit, fill, data_pb2.ReadBatchResponse, "read"))
        done, _ = await asyncio.wait([handler], timeout=5)   # ends long before; a hang is the failure
        if not done:
            handler.cancel()
            return "the handler is still waiting for requests it will never answer"
        return handler.exception()

    outcome = asyncio.run(run())
    assert isinstance(outcome, AnswersUnsent), outcome
    assert "cannot encode answer 2" in str(outcome)


def test_an_answer_that_cannot_be_encoded_while_the_handler_flushes_still_ends_the_stream_with_an_error():
    # The answer settles in the round the handler sees the client's
    # half-close, so its encoding fails on the handler's own stack (inside
    # flushed()): the handler must still end with AnswersUnsent, not return
    # (gRPC would then send OK with no answer; found by the second review).
    def fill(out, req_id, result):
        raise ValueError(f"cannot encode answer {req_id}")

    async def run():
        def submit(req, on_done):
            answer_now(on_done, (data_pb2.UNKNOWN_GROUP, "no replica"))

        async def write(resp):
            await asyncio.sleep(0)

        try:
            await answer_stream(_requests([_read_batch(1)]), write, submit, fill, data_pb2.ReadBatchResponse, "read")
        except AnswersUnsent as exc:
            return exc
        return "returned normally"

    outcome = asyncio.run(run())
    assert isinstance(outcome, AnswersUnsent) and "cannot encode answer 1" in str(outcome), outcome


def test_a_send_that_fails_because_the_rpc_ended_is_not_reported_as_unsent_answers():
    # A client that cancels while the server's send is held by flow control:
    # the send fails with gRPC's ExecuteBatchError. That is the stream's end,
    # which gRPC handles (it cancels the handler), not a bug to report.
    async def run():
        async def write(resp):
            raise ExecuteBatchError("Failed \"execute_batch\": (<grpc_call_error.GRPC_CALL_ERROR_TOO_MANY_OPERATIONS>)")

        def submit(req, on_done):
            answer_now(on_done, (data_pb2.UNKNOWN_GROUP, "no replica"))

        await answer_stream(_requests([_read_batch(1)]), write, submit, _fill_read, data_pb2.ReadBatchResponse, "read")
        return "ended"

    assert asyncio.run(run()) == "ended"


def test_every_answered_request_is_counted_by_outcome_and_timed():
    # Recorded after the loop round that answered them (not before their send).
    def sample(name: str, labels: dict) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    ok = {"op": "read", "code": "OK"}
    before = (sample("quorumkv_node_client_ops_total", ok),
              sample("quorumkv_node_client_latency_seconds_count", {"op": "read"}))

    async def run():
        loop = asyncio.get_running_loop()

        def submit(req, on_done):
            fut = loop.create_future()
            fut.add_done_callback(on_done)
            loop.call_soon(fut.set_result, Result(Outcome.OK, 1, 1, None))

        answers = await _answers([_read_batch(1, 2), _read_batch(3)], submit)
        await asyncio.sleep(0)   # the round after the last answer
        return answers

    assert len(asyncio.run(run())) == 3
    after = (sample("quorumkv_node_client_ops_total", ok),
             sample("quorumkv_node_client_latency_seconds_count", {"op": "read"}))
    assert after[0] - before[0] == 3 and after[1] - before[1] == 3
