"""What one settled attempt means for its call (Router.write_verdict and
read_verdict, server/router/calls.py): a table of every answer a leader or
the router's own watch can give, and what the call does next.

Each row: how the attempt's answer settled (a response code, with or without
a newer leader named in it, or an exception set on the future), and what
must follow: done (the seq or the response), a Verdict, or the call's final
RouterError, plus whether a write's outcome became unknown and which
first_seq its later attempts carry. A new response code must get a row."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from server.node.data_client import StreamBroken
from server.proto import data_pb2, meta_pb2
from server.router.calls import Attempt, ReadCall, Verdict, WriteCall
from server.router.router import LeaderChanged, Router, RouterError
from server.router.routing import Route, Routing

SEQ = bytes(8) + b"\x00\x00\x00\x07" + b"\x00\x00\x00\x05"      # this attempt's stamp
STORED = bytes(8) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x01"   # what the group stored (below the clock: observed)
ZEROS = bytes(16)
ROUTE = Route(table_id=3, rg=1, leader=1, epoch=1, start=b"", end=None)

OK, UNKNOWN, NOT_LEADER = data_pb2.OK, data_pb2.OUTCOME_UNKNOWN, data_pb2.NOT_LEADER

# (settled as, newer leader named, first_seq before) -> (outcome, unknown after, first_seq after)
WRITE_ROWS = [
    ((OK, False, b""), (STORED, False, b"")),
    ((data_pb2.CONDITION_FAILED, False, b""), (grpc.StatusCode.FAILED_PRECONDITION, False, b"")),
    ((data_pb2.INVALID_ARGUMENT, False, b""), (grpc.StatusCode.INVALID_ARGUMENT, False, b"")),
    ((data_pb2.FORGOTTEN, False, SEQ), ("final UNKNOWN", False, SEQ)),
    ((data_pb2.FORGOTTEN, False, ZEROS), ("UNKNOWN, not final", False, ZEROS)),
    ((data_pb2.TABLE_DROPPED, False, b""), (Verdict.RECREATED, False, b"")),
    ((UNKNOWN, True, b""), (Verdict.RETRY_NOW, True, SEQ)),
    ((UNKNOWN, False, b""), (Verdict.WAIT, True, SEQ)),
    ((UNKNOWN, False, ZEROS), (Verdict.WAIT, True, ZEROS)),     # a client's retry: zeros stay
    ((data_pb2.DURABLE_ON_LEADER, False, b""), (Verdict.WAIT, True, SEQ)),   # not counted by a board: unknown
    ((NOT_LEADER, True, b""), (Verdict.RETRY_NOW, False, b"")),
    ((NOT_LEADER, False, b""), (Verdict.WAIT, False, b"")),     # no newer leader known: wait for the routing
    ((data_pb2.UNKNOWN_GROUP, False, b""), (Verdict.WAIT, False, b"")),
    ((data_pb2.TIMEOUT, False, b""), (Verdict.WAIT, False, b"")),
    ((LeaderChanged, False, b""), (Verdict.RETRY_NOW, True, SEQ)),
    ((StreamBroken, False, b""), (Verdict.WAIT, True, SEQ)),
    ((TimeoutError, False, SEQ[:15] + b"\x09"), (Verdict.WAIT, True, SEQ[:15] + b"\x09")),   # the first stays
    (("cancelled", False, b""), (Verdict.WAIT, True, SEQ)),   # under a done-callback: as a broken stream
]


def _router() -> Router:
    r = Router(5, [])
    rt = meta_pb2.RoutingTable(version=1)
    rt.groups.add(rg=1, leader=1, epoch=1)
    r.routing = Routing(rt)
    return r


def _settled(how, newer_leader: bool, write: bool) -> Attempt:
    loop = asyncio.get_running_loop()
    answer = loop.create_future()
    if how == "cancelled":
        answer.cancel()
    elif isinstance(how, type):
        answer.set_exception(how("gone"))
    elif write:
        answer.set_result(data_pb2.WriteResponse(code=how, seqs=STORED if how in (OK, data_pb2.CONDITION_FAILED)
                                                 else b"", message="bad", leader=2 if newer_leader else 0,
                                                 epoch=2 if newer_leader else 0))
    else:
        answer.set_result(data_pb2.ReadResponse(code=how, found=how == OK, value=b"v", seq=STORED,
                                                leader=2 if newer_leader else 0, epoch=2 if newer_leader else 0))
    return Attempt(answer, ROUTE, SEQ if write else b"", loop.call_later(60, lambda: None))


@pytest.mark.parametrize("given, expected", WRITE_ROWS, ids=[str(i) for i in range(len(WRITE_ROWS))])
def test_what_a_writes_settled_attempt_means(given, expected):
    how, newer_leader, first_seq = given
    want, unknown, want_first_seq = expected

    async def run():
        r = _router()
        call = WriteCall("t", b"k", b"v", 0, b"", False, 42, first_seq == ZEROS, 0.0, first_seq)
        attempt = _settled(how, newer_leader, write=True)
        try:
            got = r.write_verdict(call, attempt)
        except RouterError as err:
            got = err
        return got, call, attempt.timer.cancelled()

    got, call, timer_cancelled = asyncio.run(run())
    if isinstance(want, (bytes, Verdict)):
        assert got == want
    elif want == "final UNKNOWN":
        assert isinstance(got, RouterError) and got.code == grpc.StatusCode.UNKNOWN and got.final
    elif want == "UNKNOWN, not final":
        assert isinstance(got, RouterError) and got.code == grpc.StatusCode.UNKNOWN and not got.final
    else:
        assert isinstance(got, RouterError) and got.code == want, got
    assert (call.unknown, call.first_seq) == (unknown, want_first_seq)
    assert timer_cancelled   # settled: its deadline timer is gone
    if want is Verdict.RECREATED:
        assert call.dropped_table_id == ROUTE.table_id


READ_ROWS = [
    ((OK, False), "the response"),
    ((data_pb2.TABLE_DROPPED, False), Verdict.RECREATED),
    ((NOT_LEADER, True), Verdict.RETRY_NOW),
    ((NOT_LEADER, False), Verdict.WAIT),
    ((data_pb2.TIMEOUT, False), Verdict.WAIT),
    ((LeaderChanged, False), Verdict.RETRY_NOW),
    ((StreamBroken, False), Verdict.WAIT),
    ((TimeoutError, False), Verdict.WAIT),
    (("cancelled", False), Verdict.WAIT),
]


@pytest.mark.parametrize("given, want", READ_ROWS, ids=[str(i) for i in range(len(READ_ROWS))])
def test_what_a_gets_settled_attempt_means(given, want):
    how, newer_leader = given

    async def run():
        r = _router()
        call = ReadCall("t", b"k", 0.0)
        return r.read_verdict(call, _settled(how, newer_leader, write=False))

    got = asyncio.run(run())
    if want == "the response":
        assert isinstance(got, data_pb2.ReadResponse) and got.value == b"v"
    else:
        assert got == want


def test_an_unexpected_exception_on_an_answer_is_raised_not_retried():
    async def run():
        call = WriteCall("t", b"k", b"v", 0, b"", False, 42, False, 0.0, b"")
        attempt = _settled(ValueError, False, write=True)
        with pytest.raises(ValueError):
            _router().write_verdict(call, attempt)
        return call.unknown

    assert asyncio.run(run()) is False
