"""StreamWriter (server/stream_writer.py): sends start on the caller's stack,
one at a time, in take() order; a failed send or close() ends the taking."""
from __future__ import annotations

import asyncio
import logging
import threading

from server.stream_writer import StreamWriter, flush_deferred


class _Wire:
    """A stream's send: puts the message on the wire when it starts (as gRPC's
    classic poller does), then waits for the test to complete it."""

    def __init__(self):
        self.sent: list = []
        self.pending: list[asyncio.Future] = []
        self.fail_next: BaseException | None = None

    async def write(self, message) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.sent.append(message)
        done = asyncio.get_running_loop().create_future()
        self.pending.append(done)
        await done

    def complete(self) -> None:
        self.pending.pop(0).set_result(None)


class _Queue:
    def __init__(self):
        self.items: list = []
        self.takes = 0

    def put(self, item) -> None:
        self.items.append(item)

    def take(self):
        self.takes += 1
        if not self.items:
            return None
        batch, self.items = self.items, []
        return batch


async def _rounds(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_send_on_an_idle_stream_reaches_the_wire_before_kick_returns():
    async def go():
        wire, q = _Wire(), _Queue()
        w = StreamWriter(wire.write, q.take)
        q.put(1)
        w.kick()
        return list(wire.sent)   # no loop round has passed

    assert asyncio.run(go()) == [[1]]


def test_what_is_sent_during_a_send_goes_after_it_as_one_message_in_order():
    async def go():
        wire, q = _Wire(), _Queue()
        w = StreamWriter(wire.write, q.take)
        q.put(1)
        w.kick()
        for i in (2, 3, 4):
            q.put(i)
            w.kick()   # in flight: waits
        assert wire.sent == [[1]]
        wire.complete()
        await _rounds()
        assert wire.sent == [[1], [2, 3, 4]]
        wire.complete()
        await _rounds()
        return wire.sent, w.sent

    sent, count = asyncio.run(go())
    assert sent == [[1], [2, 3, 4]] and count == 2


def test_a_failed_send_ends_the_writer_once_and_takes_nothing_more():
    async def go():
        wire, q = _Wire(), _Queue()
        failures = []
        w = StreamWriter(wire.write, q.take, failures.append)
        wire.fail_next = asyncio.InvalidStateError("RPC already finished")
        q.put(1)
        w.kick()   # must not raise
        takes = q.takes
        q.put(2)
        w.kick()
        await _rounds()
        return w.closed, failures, q.takes - takes, wire.sent

    closed, failures, later_takes, sent = asyncio.run(go())
    assert closed and len(failures) == 1 and isinstance(failures[0], asyncio.InvalidStateError)
    assert later_takes == 0 and sent == []


def test_after_close_a_send_that_completes_late_takes_nothing():
    async def go():
        wire, q = _Wire(), _Queue()
        w = StreamWriter(wire.write, q.take)
        q.put(1)
        w.kick()
        w.close()   # the stream ended while [1] was in flight
        q.put(2)    # meant for the next stream
        wire.complete()
        await _rounds()
        return wire.sent, q.items

    sent, left = asyncio.run(go())
    assert sent == [[1]] and left == [2]


def test_flushed_waits_for_the_send_in_flight_and_what_queued_behind_it():
    async def go():
        wire, q = _Wire(), _Queue()
        w = StreamWriter(wire.write, q.take)
        q.put(1)
        w.kick()
        q.put(2)
        w.kick()
        flushed = asyncio.ensure_future(w.flushed())
        await _rounds()
        assert not flushed.done()
        wire.complete()
        await _rounds()
        assert not flushed.done()   # [2] is in flight now
        wire.complete()
        await asyncio.wait_for(flushed, 5)
        return wire.sent

    assert asyncio.run(go()) == [[1], [2]]


def test_a_send_that_yields_bare_goes_on_in_the_next_round():
    async def go():
        sent = []

        async def write(message):
            await asyncio.sleep(0)   # a bare yield, not a future
            sent.append(message)

        q = _Queue()
        w = StreamWriter(write, q.take)
        q.put(1)
        w.kick()
        q.put(2)
        w.kick()
        await asyncio.wait_for(w.flushed(), 5)
        return sent

    assert asyncio.run(go()) == [[1], [2]]


def test_a_failing_take_is_logged_and_ends_the_writer(caplog):
    async def go():
        wire = _Wire()
        failures = []

        def take():
            raise KeyError("bug")

        w = StreamWriter(wire.write, take, failures.append)
        w.kick()   # must not raise into the caller (a replica round)
        return w.closed, failures

    with caplog.at_level(logging.ERROR, logger="server.stream_writer"):
        closed, failures = asyncio.run(go())
    assert closed and isinstance(failures[0], KeyError)
    assert "building the next stream message failed" in caplog.text


def test_what_is_queued_within_one_loop_round_goes_as_one_message():
    # kick_soon: a lone request or answer must not leave alone while others
    # are being queued in the same round (at 64 clients that turned batching
    # off: one write per fsync).
    async def go():
        wire, q = _Wire(), _Queue()
        w = StreamWriter(wire.write, q.take)
        for i in (1, 2, 3):
            q.put(i)
            w.kick_soon()
        assert wire.sent == []   # not before the round ends
        await _rounds(1)
        return wire.sent

    assert asyncio.run(go()) == [[1, 2, 3]]


def test_flush_deferred_starts_the_kicked_writers_at_once():
    async def go():
        wires = [_Wire(), _Wire()]
        queues = [_Queue(), _Queue()]
        writers = [StreamWriter(wire.write, q.take) for wire, q in zip(wires, queues)]
        for q, w in zip(queues, writers):
            q.put("x")
            w.kick_soon()
        flush_deferred()   # a flush point: e.g. a replica's acknowledgement, before its apply
        sent = [list(wire.sent) for wire in wires]
        await _rounds()
        return sent, [wire.sent for wire in wires]

    at_flush, later = asyncio.run(go())
    assert at_flush == [[["x"]], [["x"]]] and later == at_flush   # nothing sent twice


def test_flushed_sends_what_waits_for_a_flush_point():
    async def go():
        wire, q = _Wire(), _Queue()
        w = StreamWriter(wire.write, q.take)
        q.put(1)
        w.kick_soon()
        flushed = asyncio.ensure_future(w.flushed())
        await _rounds(1)
        assert wire.sent == [[1]] and not flushed.done()   # sent, in flight
        wire.complete()
        await asyncio.wait_for(flushed, 5)
        return wire.sent

    assert asyncio.run(go()) == [[1]]


def test_writers_of_two_loops_in_two_threads_keep_their_own_flush_points():
    # A client's loop in another thread (found by review: one module-wide
    # list of waiting writers let loop B drop loop A's, which then never sent again).
    a_waiting, b_deferred = threading.Event(), threading.Event()
    sent: dict[str, list] = {}

    def loop_a():
        async def main():
            wire, q = _Wire(), _Queue()
            w = StreamWriter(wire.write, q.take)
            q.put("a1")
            w.kick_soon()
            a_waiting.set()
            assert b_deferred.wait(5)   # this loop is inside a step while B defers its own writer
            await _rounds(2)
            wire.complete()
            q.put("a2")
            w.kick_soon()
            await _rounds(2)
            sent["a"] = wire.sent

        asyncio.run(main())

    def loop_b():
        async def main():
            assert a_waiting.wait(5)
            wire, q = _Wire(), _Queue()
            w = StreamWriter(wire.write, q.take)
            q.put("b1")
            w.kick_soon()
            b_deferred.set()
            await _rounds(2)
            sent["b"] = wire.sent

        asyncio.run(main())

    threads = [threading.Thread(target=loop_a), threading.Thread(target=loop_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sent == {"a": [["a1"], ["a2"]], "b": [["b1"]]}
