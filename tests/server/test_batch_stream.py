"""The SDK's Batch stream (server/client/batch_stream.py) over a fake gRPC call:
ops count as sent only once taken into a message on a connected call, ops
queued while it connects go out together, an op given up before that is
never sent, and a send that fails ends the call, failing its ops by whether
they were sent."""
from __future__ import annotations

import asyncio
import socket
import time

import grpc
import pytest

from server.client.batch_stream import BatchStream
from server.client.errors import OutcomeUnknown, Unavailable
from server.proto import kv_pb2, kv_pb2_grpc

_CANCELLED = object()


class _Call:
    """A fake grpc.aio StreamStreamCall: connects when the test says, records
    what is written, yields the answers the test gives."""

    def __init__(self, fail_write: BaseException | None = None):
        self.connected = asyncio.get_running_loop().create_future()
        self.written: list[kv_pb2.OpBatch] = []
        self.fail_write = fail_write
        self.answers: asyncio.Queue = asyncio.Queue()

    def done(self) -> bool:
        return False

    async def wait_for_connection(self) -> None:
        await self.connected

    async def write(self, batch: kv_pb2.OpBatch) -> None:
        if self.fail_write is not None:
            raise self.fail_write
        self.written.append(batch)
        await asyncio.sleep(0)   # completes in the next loop round, as gRPC's

    def cancel(self) -> bool:
        self.answers.put_nowait(_CANCELLED)
        return True

    def __aiter__(self):
        return self

    async def __anext__(self) -> kv_pb2.OpResultBatch:
        item = await self.answers.get()
        if item is _CANCELLED:
            raise asyncio.CancelledError()   # what grpc.aio raises for a call cancelled here
        return item


class _Stub:
    def __init__(self, *calls: _Call):
        self.calls = list(calls)

    def Batch(self):  # noqa: N802 - gRPC's name
        return self.calls.pop(0)


def _put(key: bytes) -> kv_pb2.Op:
    return kv_pb2.Op(put=kv_pb2.PutRequest(table="t", key=key, value=b"v"))


async def _rounds(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_ops_queued_while_connecting_go_out_together_once_connected_and_count_as_sent_from_then():
    async def run():
        call = _Call()
        stream = BatchStream(_Stub(call))
        ops = [asyncio.ensure_future(stream.call(_put(b"k%d" % i), 10, True, 5)) for i in range(3)]
        await _rounds()
        pending = list(stream._call.waiting.values())
        assert call.written == [] and not any(p.sent for p in pending)   # no transport yet: nothing sent
        call.connected.set_result(None)
        await _rounds()
        assert [len(b.ops) for b in call.written] == [3] and all(p.sent for p in pending)
        call.answers.put_nowait(kv_pb2.OpResultBatch(results=[kv_pb2.OpResult(id=op.id) for op in call.written[0].ops]))
        return [r.id for r in await asyncio.gather(*ops)]

    assert sorted(asyncio.run(run())) == [1, 2, 3]


def test_an_op_given_up_before_the_call_connects_is_never_sent():
    async def run():
        call = _Call()
        stream = BatchStream(_Stub(call))
        given_up = asyncio.ensure_future(stream.call(_put(b"a"), 10, True, 5))
        kept = asyncio.ensure_future(stream.call(_put(b"b"), 10, True, 5))
        await _rounds()
        given_up.cancel()
        await _rounds()
        call.connected.set_result(None)
        await _rounds()
        written = [op.put.key for b in call.written for op in b.ops]
        call.answers.put_nowait(kv_pb2.OpResultBatch(results=[kv_pb2.OpResult(id=call.written[0].ops[0].id)]))
        await kept
        return written

    assert asyncio.run(run()) == [b"b"]


def test_a_send_that_fails_ends_the_call_and_its_ops_fail_by_whether_they_were_sent():
    # The send of the first message fails (a bug, not the stream's end): the
    # call is cancelled; its write was taken into that message, so it may have
    # reached the router: OutcomeUnknown. A read fails Unavailable (safe to
    # retry). The next op opens a new call.
    async def run():
        broken, fresh = _Call(fail_write=ValueError("cannot send")), _Call()
        fresh.connected.set_result(None)
        broken.connected.set_result(None)
        stream = BatchStream(_Stub(broken, fresh))
        write = asyncio.ensure_future(stream.call(_put(b"w"), 10, True, 5))
        read = asyncio.ensure_future(stream.call(kv_pb2.Op(get=kv_pb2.GetRequest(table="t", key=b"r")), 10, False, 5))
        outcomes = await asyncio.wait_for(asyncio.gather(write, read, return_exceptions=True), 5)   # a hang fails
        after = asyncio.ensure_future(stream.call(_put(b"x"), 10, True, 5))
        await _rounds()
        fresh.answers.put_nowait(kv_pb2.OpResultBatch(results=[kv_pb2.OpResult(id=fresh.written[0].ops[0].id)]))
        await after
        return outcomes, stream.calls_opened

    (write_outcome, read_outcome), opened = asyncio.run(run())
    assert isinstance(write_outcome, OutcomeUnknown), write_outcome
    assert isinstance(read_outcome, Unavailable), read_outcome
    assert opened == 2


@pytest.mark.parametrize("ops", [1, 40])
def test_ops_queued_in_one_loop_round_go_out_as_one_message(ops):
    async def run():
        call = _Call()
        call.connected.set_result(None)
        stream = BatchStream(_Stub(call))
        first = asyncio.ensure_future(stream.call(_put(b"first"), 10, True, 5))   # the call is up and idle after it
        await _rounds()
        call.answers.put_nowait(kv_pb2.OpResultBatch(results=[kv_pb2.OpResult(id=call.written[0].ops[0].id)]))
        await first
        calls = [asyncio.ensure_future(stream.call(_put(b"k%d" % i), 10, True, 5)) for i in range(ops)]
        await _rounds()
        call.answers.put_nowait(kv_pb2.OpResultBatch(results=[kv_pb2.OpResult(id=op.id) for op in call.written[1].ops]))
        await asyncio.gather(*calls)
        return [len(b.ops) for b in call.written]

    assert asyncio.run(run()) == [1, ops]


# Found by the review of f00031e (the first a regression of it, the other two older).
def test_ops_of_a_call_the_channel_cancels_while_connecting_fail_unavailable_at_once():
    # A router that accepts TCP but never speaks HTTP/2: the Batch call stays
    # connecting. grpc.aio's Channel.close() (AsyncClient.close() does it)
    # cancels the call; grpc.aio then never sets the call's "metadata sent"
    # event, so _run's `await call.wait_for_connection()` never returns and
    # the op waits for its own deadline (DeadlineExceeded, or forever with no
    # timeout) instead of failing Unavailable (contract 3). Before f00031e
    # the reader saw the cancellation at once.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    silent.setblocking(False)
    accepted = []

    async def run():
        channel = grpc.aio.insecure_channel("127.0.0.1:%d" % silent.getsockname()[1])
        stream = BatchStream(kv_pb2_grpc.KVStub(channel))
        op = asyncio.ensure_future(stream.call(_put(b"k"), 10, True, 3.0))
        try:
            conn, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(silent), 5)
            accepted.append(conn)                    # the call is connecting, the op queued on it
            await channel.close()
            t0 = time.monotonic()
            with pytest.raises(Unavailable):
                await op
            assert time.monotonic() - t0 < 1.0
            done, _ = await asyncio.wait([stream._call.task], timeout=1)
            assert done                              # no task left waiting forever
        finally:
            await stream.close()

    try:
        asyncio.run(run())
    finally:
        for conn in accepted:
            conn.close()
        silent.close()


def test_close_right_after_an_op_opened_a_call_fails_the_op_at_once():
    # Pre-existing (same in f00031e~1): close() cancels the call's task before
    # it ever ran, so _run's handlers (and _die) never run: the queued op waits
    # for its deadline instead of failing Unavailable.
    class _Stub:
        def Batch(self):  # noqa: N802
            raise AssertionError("never reached: the task was cancelled before it started")

    async def run():
        stream = BatchStream(_Stub())
        op = asyncio.ensure_future(stream.call(_put(b"k"), 10, True, 2.0))
        await asyncio.sleep(0)                       # op queued, the call's task created, not started
        await stream.close()
        t0 = time.monotonic()
        with pytest.raises(Unavailable):
            await op
        assert time.monotonic() - t0 < 0.5

    asyncio.run(run())


def test_a_write_taken_after_the_call_ended_but_before_its_reader_saw_it_is_unsent():
    # Pre-existing (the old generator did the same), low severity: the router
    # ended the stream (the call is done: grpc.aio's write() raises
    # InvalidStateError before handing anything to gRPC) but the reader has
    # not run yet. An op queued in that window is taken, marked sent, and the
    # write fails with OutcomeUnknown although it never left (contract 3 says
    # Unavailable).
    class _EndedCall:
        def __init__(self):
            self.finished = False
            self.written = []
            self.answers: asyncio.Queue = asyncio.Queue()

        def done(self):
            return self.finished

        async def wait_for_connection(self):
            return None

        async def write(self, batch):
            if self.finished:
                raise asyncio.InvalidStateError("RPC already finished.")
            self.written.append(batch)

        def cancel(self):
            return False

        def __aiter__(self):
            return self

        async def __anext__(self):
            item = await self.answers.get()
            if item is None:
                raise StopAsyncIteration
            return item

    class _Stub:
        def __init__(self, call):
            self.call = call

        def Batch(self):  # noqa: N802
            return self.call

    async def run():
        call = _EndedCall()
        stream = BatchStream(_Stub(call))
        first = asyncio.ensure_future(stream.call(_put(b"a"), 10, True, 5))
        for _ in range(5):
            await asyncio.sleep(0)
        call.answers.put_nowait(kv_pb2.OpResultBatch(results=[kv_pb2.OpResult(id=call.written[0].ops[0].id)]))
        await first
        call.finished = True                          # the router's status arrived ...
        late = asyncio.ensure_future(stream.call(_put(b"b"), 10, True, 5))
        for _ in range(3):
            await asyncio.sleep(0)                    # ... its op queued and flushed ...
        call.answers.put_nowait(None)                 # ... before the reader sees the end
        with pytest.raises(Unavailable):
            await late
        assert [len(b.ops) for b in call.written] == [1]

    asyncio.run(run())
