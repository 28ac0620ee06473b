"""DataClient's streams (server/node/data_client.py): no request is lost into a stream that ended.

A send of an ended stream can complete late, after a newer stream started;
when it does, its writer must not take the requests the newer stream serves.
(Found by reviews, when the streams were fed by request generators that gRPC
resumed after their call had finished; the real-process case is
tests/cluster/test_replication_group.py::test_the_first_request_after_a_node_restart_is_answered.)
"""
from __future__ import annotations

import asyncio

import pytest

from server.node.data_client import StreamBroken, _Stream
from server.proto import data_pb2


class _FakeCall:
    """A stream-stream call written with write() (as DataClient's StreamWriter
    does): a send puts its batch on the wire when it starts and completes
    when the test lets it, and a write on a finished call fails (as gRPC)."""

    made: list[_FakeCall] = []

    def __init__(self):
        self.finished = False
        self.sent: list[list[int]] = []
        self.send_done: asyncio.Future | None = None
        self.responses: asyncio.Queue = asyncio.Queue()
        _FakeCall.made.append(self)

    async def write(self, batch) -> None:
        if self.finished:
            raise asyncio.InvalidStateError("RPC already finished")
        self.sent.append([r.id for r in batch.requests])
        self.send_done = asyncio.get_running_loop().create_future()
        await self.send_done

    def complete_send(self) -> None:
        if self.send_done is not None and not self.send_done.done():
            self.send_done.set_result(None)

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self.responses.get()
        if item is None:
            self.finished = True
            raise StopAsyncIteration
        return item

    def cancel(self) -> None:   # a finished call: nothing to cancel (as gRPC)
        pass


async def _rounds(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.parametrize("late_send_first", [False, True])
def test_a_request_submitted_after_a_stream_ended_goes_to_the_new_stream_even_if_an_old_send_completes_late(
        late_send_first):
    async def go():
        _FakeCall.made = []
        s = _Stream(_FakeCall, data_pb2.ReadBatchRequest)
        first = s.submit(data_pb2.ReadRequest(id=1))
        await _rounds()
        a = _FakeCall.made[0]
        assert a.send_done is not None                      # batch [1] being sent on stream A
        a.responses.put_nowait(None)                        # stream A ends (its server closed it)
        await _rounds()
        assert isinstance(first.exception(), StreamBroken)  # its caller hears of it
        if late_send_first:   # A's writer resumes before B's task first runs
            a.complete_send()                               # A's last send completes late
            second = s.submit(data_pb2.ReadRequest(id=2))   # stream B starts
        else:
            second = s.submit(data_pb2.ReadRequest(id=2))
            a.complete_send()
        await _rounds()
        b = _FakeCall.made[1]
        b.complete_send()
        await _rounds()
        b.responses.put_nowait(data_pb2.ReadBatchResponse(responses=[data_pb2.ReadResponse(id=2)]))
        answer = await asyncio.wait_for(second, 5)
        return a.sent, b.sent, answer

    a_sent, b_sent, answer = asyncio.run(go())
    assert a_sent == [[1]] and b_sent == [[2]] and answer.id == 2
