"""The Data service's answer streams (server/node/data_answers.py): answers go
back as their futures complete, each in a response batch, and a request whose
future fails is answered UNAVAILABLE without ending the stream."""
from __future__ import annotations

import asyncio

from engine._native import write_batch
from server.node.data_answers import answer_stream
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
