"""Router: the request manager (`quorumkv router`), quorumkv's public gRPC API.

Purpose: validates each request, finds the (table, key)'s replication group
(RG) and its leader in its copy of the metadata (routing.py, kept current by
the metadata manager's watch stream), and forwards the operation to that
leader over the node's batching Data streams (server/node/data_client.py),
counting its writes' commits as a learner (server/node/learn_board.py).
Stateless: any number run side by side; clients spread over them with gRPC's
round_robin policy.

Retries, within the request's deadline:
  no leader yet, "not leader", "unknown group"   wait for the next routing
      version (or take the leader a node names with a newer epoch) and retry
  TIMEOUT (no quorum confirmed in time)           retry
  OUTCOME_UNKNOWN (leader stepped down with the write in flight, or the
      learner count could not finish: learn_board.py): retried
      with the same request id, which the new leader answers from the log if
      the write did commit (the node deduplicates), so a write never applies
      twice with different outcomes; each retry carries the seq of the first
      attempt that may have applied (WriteRequest.first_seq), so a leader
      whose window may have dropped that attempt answers FORGOTTEN (UNKNOWN
      to the client, at once, marked final so the SDK does not retry it)
      rather than apply it again
At the deadline: UNAVAILABLE with a retry hint (trailing metadata
"retry-after-ms"), or UNKNOWN for a write whose outcome is still unknown.

Seqs: the router stamps each write with a seq from its own Sequencer (node id
= the router's id); the leader stores max(seq, previous + 1) (issue 3). The
router observes the stored seqs its answers carry (writes and gets; not one
more than MAX_OBSERVED_AHEAD_NS ahead of its clock, nor a malformed one), so
a router whose clock lags the groups' stamps stamps its next writes above
what it has seen. The guard in server/node/dedup.py refuses, conservatively,
any retry whose first attempt was stamped at or below evicted_through. So a
router whose clock lags by more than a group's window (15 s) still has its
retries refused (FORGOTTEN: the client hears UNKNOWN) when it wrote nothing
to any group for longer than that window before the attempt: its stamps
then start from the last seq it saw. Keep clocks synchronised (NTP).

Thread-safety: one asyncio loop.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time

import grpc

from engine._native import write_batch
from engine._native.sequencer import Sequencer
from engine.db import TABLE_NAME_PATTERN, TABLE_NAME_RULE
from server.node.data_client import DataClient, StreamBroken
from server.node.learn_board import LearnBoard
from server.node.peers import CHANNEL_OPTIONS
from server.node_identity import NODE_METADATA_KEY
from server.proto import data_pb2, meta_pb2, meta_pb2_grpc
from server.router.calls import Attempt, ReadCall, Verdict, WriteCall, expire
from server.router.routing import NoSuchTable, Route, Routing

log = logging.getLogger(__name__)

MAX_KEY = 4096
MAX_VALUE = 1 << 20
DEFAULT_DEADLINE = 10.0
DEFAULT_PAGE = 1000
REFRESH_TIMEOUT = 2.0     # one routing fetch (refresh), whatever its callers' deadlines
MAX_PAGE_BYTES = 8 << 20   # a page stops adding ranges past this: with one range's scan it stays far below 64 MiB
MAX_PAGE = 10_000
RETRY_AFTER_MS = 200
MAX_OBSERVED_AHEAD_NS = 300 * 10**9   # seqs further ahead of this router's clock are not followed (_observe)
LEARNER_MODES = ("auto", "always", "off")   # Router's `learner`
WATCH_TIMEOUT = 2.0     # no routing message, not even a keepalive, for this long: next MM address
_TOKEN_VERSION = 1


def _raise_if_cancelled() -> None:
    """Raises CancelledError if the current task is being cancelled. Python
    3.11's wait_for returns (or raises) the inner outcome when it completes in
    the loop round of a cancellation, dropping the cancellation: a retry loop
    that went on would send attempts for a call its caller gave up."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


class LeaderChanged(Exception):
    """An attempt's group got a leader of a newer epoch in the routing before
    the attempt was answered (Router._send, _install)."""


class RouterError(Exception):
    """A request's failure as a gRPC status code and a message that says what to fix."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_ms: int = 0, final: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.final = final   # an UNKNOWN no retry can settle (kv.proto, OpResult.final)


def check_table(table: str) -> None:
    if not isinstance(table, str) or not TABLE_NAME_PATTERN.match(table):
        raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, f"table name {table!r} is invalid: use {TABLE_NAME_RULE}")


def check_key(key: bytes, what: str = "key") -> None:
    if not 1 <= len(key) <= MAX_KEY:
        raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} must be 1 to {MAX_KEY} bytes, got {len(key)}")


def check_value(value: bytes) -> None:
    if len(value) > MAX_VALUE:
        raise RouterError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"value must be at most {MAX_VALUE} bytes (1 MiB), got {len(value)}")


def check_seq(seq: bytes, what: str = "if_seq") -> None:
    if seq and len(seq) != 16:
        raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} must be 16 bytes, got {len(seq)}")


class Router:
    def __init__(self, router_id: int, meta_addresses: list[str], learner: str = "auto"):
        """`learner`: whether writes count their commits as a learner
        (server/node/learn_board.py): "auto" while lightly loaded (one hop
        less per write), "always", or "off" (wait for the leader's OK)."""
        if learner not in LEARNER_MODES:
            raise ValueError(f"learner must be one of {', '.join(LEARNER_MODES)}, not {learner!r}")
        self.id = router_id
        self.learner = learner
        self.meta_addresses = meta_addresses
        self.routing = Routing()
        self._changed = asyncio.Event()
        self._sequencer = Sequencer(router_id)
        self._clients: dict[str, DataClient] = {}
        # Writes count their commits as learners (server/node/learn_board.py):
        # one hop less per write; an OUTCOME_UNKNOWN from it is retried under
        # the request id like any other.
        self._learn = LearnBoard(lambda node: self.routing.nodes.get(node), sender_id=router_id) \
            if learner != "off" else None
        self._inflight: dict[int, dict[asyncio.Future, int]] = {}   # rg -> {attempt's answer: epoch it went to}
        self._closing: set[asyncio.Task] = set()
        self._watch_task: asyncio.Task | None = None
        self._meta_channel: grpc.aio.Channel | None = None
        self._meta_index = 0
        self._fetch_task: asyncio.Task | None = None   # refresh(): the fetch in flight,
        self._fetch_number = 0                          # ... its number,
        self._fetches_started = 0                       # ... and how many were started
        self.metadata = ((NODE_METADATA_KEY, str(router_id)),)   # on every call to other cluster processes
        self.stats = {"writes": 0, "reads": 0, "lists": 0, "retries": 0, "routing_updates": 0,
                      "seqs_ignored": 0}

    # ------------------------------------------------------------- metadata
    async def start(self) -> None:
        self._watch_task = asyncio.get_running_loop().create_task(self._watch(), name="meta-watch")

    def meta_stub(self) -> meta_pb2_grpc.MetaStub:
        if self._meta_channel is None:
            address = self.meta_addresses[self._meta_index % len(self.meta_addresses)]
            self._meta_channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return meta_pb2_grpc.MetaStub(self._meta_channel)

    async def _watch(self) -> None:
        backoff = 0.05
        while True:
            try:
                call = self.meta_stub().Watch(meta_pb2.WatchRequest(known_version=self.routing.version),
                                              metadata=self.metadata)
                updates = call.__aiter__()
                while True:
                    try:   # the MM sends at least a keepalive every 0.5 s (meta.proto)
                        rt = await asyncio.wait_for(anext(updates), WATCH_TIMEOUT)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        log.warning("routing watch silent for %.1f s: trying the next MM address", WATCH_TIMEOUT)
                        call.cancel()
                        break
                    backoff = 0.05
                    if not rt.keepalive:
                        self._install(Routing(rt))
            except grpc.aio.AioRpcError as exc:
                log.debug("routing watch ended: %s", exc.code())
            if self._meta_channel is not None:
                await self._meta_channel.close(grace=None)
            self._meta_channel = None
            self._meta_index += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def _install(self, routing: Routing) -> None:
        self.routing = routing
        live = set(routing.nodes.values())
        for address in [a for a in self._clients if a not in live]:   # a node moved or left: close its streams
            self._closing.add(asyncio.get_running_loop().create_task(self._clients.pop(address).close()))
            for t in [t for t in self._closing if t.done()]:
                self._closing.discard(t)
        self.stats["routing_updates"] += 1
        for rg, attempts in self._inflight.items():   # attempts at a leader the group has replaced: given up
            g = routing.group(rg)
            if g is not None:
                for fut, epoch in attempts.items():
                    if g[1] > epoch and not fut.done():
                        fut.set_exception(LeaderChanged())
        self._changed.set()
        self._changed = asyncio.Event()

    async def _await_change(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        except TimeoutError:
            pass

    @property
    def learn_board(self) -> LearnBoard | None:
        """The count of this router's learner writes (None: --learner off)."""
        return self._learn

    async def wait_ready(self, timeout: float) -> None:
        """Until the first routing table arrived (startup)."""
        deadline = time.monotonic() + timeout
        while self.routing.version == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("no routing table from the metadata manager")
            await self._await_change(deadline)

    def _client(self, node: int) -> DataClient | None:
        address = self.routing.nodes.get(node)
        if address is None:
            return None
        c = self._clients.get(address)
        if c is None:
            c = self._clients[address] = DataClient(address, sender_id=self.id, learn=self._learn,
                                                    always_learn=self.learner == "always")
        return c

    async def refresh(self, deadline: float) -> bool:
        """Fetches the MM's routing now (the first message of a fresh Watch),
        for what only current routing can settle: a table this copy does not
        know (created through another router a moment ago), or a table id a
        node reports dropped (the name may name a new table by now). False if
        no MM answered by the deadline.

        One fetch at a time per router: a caller shares a fetch only if it
        started after the caller arrived (an older one may predate what the
        caller must see), so a flood of requests for a missing table costs
        the MM at most one fetch per round trip, not one per request."""
        arrived = self._fetches_started
        while time.monotonic() < deadline:
            if self._fetch_task is None or self._fetch_task.done():
                self._fetches_started += 1
                self._fetch_task = asyncio.get_running_loop().create_task(self._fetch_routing())
                self._fetch_number = self._fetches_started
            task, number = self._fetch_task, self._fetch_number
            try:
                fresh = await asyncio.wait_for(asyncio.shield(task), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                return False
            if number > arrived:   # this fetch started after we arrived: it is fresh enough
                return fresh
        return False

    async def _fetch_routing(self) -> bool:
        try:
            call = self.meta_stub().Watch(meta_pb2.WatchRequest(known_version=0), metadata=self.metadata,
                                          timeout=REFRESH_TIMEOUT)
            async for rt in call:
                if not rt.keepalive:
                    if rt.version > self.routing.version:
                        self._install(Routing(rt))
                    call.cancel()
                    return True
            call.cancel()
        except grpc.aio.AioRpcError as exc:
            log.debug("routing refresh failed: %s", exc.code())
        except asyncio.CancelledError:
            # grpc.aio raises CancelledError from a call cancelled locally: the
            # watch loop closes the shared MM channel under this fetch whenever
            # its own Watch ends (_watch). Not this task's cancellation: a
            # failed fetch, not a cancellation of every call waiting on it.
            if asyncio.current_task().cancelling():
                raise
            log.debug("routing refresh cancelled under it (its MM channel closed)")
        return False

    # ------------------------------------------------------------- operations
    async def _route(self, table: str, key: bytes, deadline: float) -> Route:
        """The key's route; a table this copy does not know is looked up at the MM before NOT_FOUND."""
        try:
            return self.routing.route(table, key)
        except NoSuchTable:
            asked = await self.refresh(deadline)
        try:
            return self.routing.route(table, key)
        except NoSuchTable:
            if not asked:   # this copy may be behind: not knowing is not NOT_FOUND
                raise self._unavailable(f"table {table!r} (no metadata manager answered)") from None
            raise RouterError(grpc.StatusCode.NOT_FOUND, f"no table named {table!r}") from None

    async def _recreated(self, table: str, dropped_id: int, deadline: float) -> bool:
        """A node said the table id is dropped: whether the name now names
        another table (this copy was behind the MM), after a refresh."""
        await self.refresh(deadline)
        return self.routing.has_table(table) and self.routing.route(table, b"").table_id != dropped_id

    def _unavailable(self, what: str) -> RouterError:
        return RouterError(grpc.StatusCode.UNAVAILABLE, f"{what}: no leader answered in time, retry",
                           RETRY_AFTER_MS)

    def _observe(self, seq: bytes) -> None:
        """Moves this router's sequencer past a seq an answer carried, unless it
        is not one record's seq or lies more than MAX_OBSERVED_AHEAD_NS ahead of
        this router's clock: one bad answer must not freeze every later stamp
        far ahead (or exhaust the sequencer) for every group this router
        writes. Skipping is safe: the leader stamps max(seq, previous + 1)
        anyway, and a retry stamped low is at worst refused as forgotten."""
        if len(seq) != 16:
            return
        ahead = int.from_bytes(seq[:8], "big") - time.time_ns()
        if ahead > MAX_OBSERVED_AHEAD_NS:
            self.stats["seqs_ignored"] += 1
            if self.stats["seqs_ignored"] == 1 or self.stats["seqs_ignored"] % 1000 == 0:
                log.warning("an answer carried seq %s, %.0f s ahead of this router's clock: not followed "
                            "(%d such answers so far)", seq.hex(), ahead / 1e9, self.stats["seqs_ignored"])
            return
        self._sequencer.observe(seq)

    def _next_seq(self) -> bytes:
        try:
            return self._sequencer.next()
        except OverflowError as exc:   # only after observing the very top seq, which _observe keeps out
            raise RouterError(grpc.StatusCode.INTERNAL, f"this router cannot stamp writes: {exc}") from None

    def _follow_answer(self, route: Route, leader: int, epoch: int) -> bool:
        return bool(leader) and self.routing.with_leader(route.rg, leader, epoch)

    # An operation's attempts (server/router/calls.py). write() and get() run
    # them all in the caller's task; the Batch stream starts an operation with
    # begin_* and try_attempt on its own stack, judges the first answer in its
    # done-callback with *_verdict, and runs finish_* in a task only when that
    # answer left something to wait for.
    async def write(self, table: str, key: bytes, value: bytes | None, *, if_seq: bytes = b"",
                    if_absent: bool = False, request_id: int = 0, retry: bool = False, deadline: float) -> bytes:
        """A put (value not None) or delete; returns the stored seq. `retry`: the
        client already sent this request id through another call whose
        outcome it does not know (its seq unknown here)."""
        return await self.finish_write(self.begin_write(table, key, value, if_seq=if_seq, if_absent=if_absent,
                                                        request_id=request_id, retry=retry, deadline=deadline))

    async def get(self, table: str, key: bytes, *, deadline: float) -> data_pb2.ReadResponse:
        return await self.finish_read(self.begin_read(table, key, deadline=deadline))

    def begin_write(self, table: str, key: bytes, value: bytes | None, *, if_seq: bytes = b"",
                    if_absent: bool = False, request_id: int = 0, retry: bool = False, deadline: float) -> WriteCall:
        """A write's call, validated (RouterError INVALID_ARGUMENT otherwise); nothing sent yet."""
        check_table(table)
        check_key(key)
        if value is not None:
            check_value(value)
        check_seq(if_seq)
        if if_seq and if_absent:
            raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, "give if_seq or if_absent, not both")
        self.stats["writes"] += 1
        # A retry tells the leader the lowest seq any attempt that may have
        # applied was stamped with (data.proto, first_seq): that of the first
        # attempt whose outcome is unknown (this router's sequencer only
        # grows; a NOT_LEADER or TABLE_DROPPED answer means not applied), or
        # zeros after another call's attempt, whose seq is not known here.
        # The leader answers FORGOTTEN to a retry its window may have dropped.
        return WriteCall(table, key, value, write_batch.VALUE if value is not None else write_batch.DELETE,
                         if_seq, if_absent, request_id or random.getrandbits(63) + 1, retry, deadline,
                         bytes(16) if retry else b"")

    def begin_read(self, table: str, key: bytes, *, deadline: float) -> ReadCall:
        """A get's call, validated (RouterError INVALID_ARGUMENT otherwise); nothing sent yet."""
        check_table(table)
        check_key(key)
        self.stats["reads"] += 1
        return ReadCall(table, key, deadline)

    def try_attempt(self, call: WriteCall | ReadCall) -> Attempt | None:
        """The call's next attempt, sent now, if this router's copy routes its
        key to a leader it can reach; None otherwise (finish_* looks further)."""
        try:
            route = self.routing.route(call.table, call.key)
        except NoSuchTable:
            return None
        return self._send(call, route)

    def _send(self, call: WriteCall | ReadCall, route: Route) -> Attempt | None:
        client = self._client(route.leader) if route.leader else None
        if client is None:
            return None
        seq = b""
        if isinstance(call, WriteCall):
            seq = self._next_seq()
            answer = client.submit_write(data_pb2.WriteRequest(
                rg=route.rg, batch=write_batch.encode_one(call.kind, route.table_id, call.key, call.value, seq),
                request_id=wire_request_id(call.request_id, route.table_id), if_seq=call.if_seq,
                if_absent=call.if_absent, first_seq=call.first_seq))
        else:
            answer = client.submit_read(route.rg, route.table_id, call.key)
        # The answer is given up at the deadline (a timer on its future, not
        # wait_for's second future and callbacks per op), and once the routing
        # names a leader of a newer epoch for the group (_install): an old
        # leader that is paused or cut off holds its connection open, and
        # waiting for it would stall the call until its deadline although the
        # group serves again (a crashed one breaks its stream at once:
        # StreamBroken). Either way the attempt's outcome is unknown, and a
        # write is retried under the same request id.
        self._inflight.setdefault(route.rg, {})[answer] = route.epoch
        timer = asyncio.get_running_loop().call_later(max(0.01, call.deadline - time.monotonic()), expire, answer)
        return Attempt(answer, route, seq, timer)

    def settle(self, attempt: Attempt) -> None:
        """The attempt's answer is in (or given up): no more watching it."""
        attempt.timer.cancel()
        attempts = self._inflight.get(attempt.route.rg)
        if attempts is not None:
            attempts.pop(attempt.answer, None)
            if not attempts:
                del self._inflight[attempt.route.rg]

    def write_verdict(self, call: WriteCall, attempt: Attempt) -> bytes | Verdict:
        """What a write's settled attempt means: the stored seq (done), what is
        left to do, or RouterError (the call's final error)."""
        self.settle(attempt)
        exc = _failure_of(attempt.answer)
        if exc is not None:
            if not isinstance(exc, (LeaderChanged, StreamBroken, TimeoutError)):
                raise exc
            call.unknown = True   # it may have reached the leader: retried under the same request id
            call.first_seq = call.first_seq or attempt.seq
            # LeaderChanged: the routing has the new leader already, so at once.
            return Verdict.RETRY_NOW if isinstance(exc, LeaderChanged) else Verdict.WAIT
        resp = attempt.answer.result()
        code = resp.code
        # The group's stored seq (OK) or the record's (CONDITION_FAILED):
        # this router's later stamps go above it, however its clock lags.
        self._observe(resp.seqs)
        if code == data_pb2.OK:
            return resp.seqs[:16]
        if code == data_pb2.CONDITION_FAILED:
            current = resp.seqs[:16].hex() if resp.seqs else "none"
            raise RouterError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"condition failed: the record's current seq is {current}")
        if code == data_pb2.INVALID_ARGUMENT:
            raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, resp.message)
        if code == data_pb2.FORGOTTEN:
            # Final when this router knows the first attempt's seq: that attempt
            # is older than the group's window, so no retry can learn more. With
            # zeros (an earlier call's attempt, seq unknown here) the leader
            # refuses any id it has not seen, so a retry that overtook its
            # first attempt could still learn the outcome later: not final.
            raise RouterError(grpc.StatusCode.UNKNOWN, "the write's outcome is unknown: an earlier "
                              "attempt may have applied, longer ago than the group remembers "
                              "requests; read the key to see whether it was applied",
                              final=call.first_seq != bytes(16))
        if code == data_pb2.TABLE_DROPPED:
            call.dropped_table_id = attempt.route.table_id
            return Verdict.RECREATED
        if code in (data_pb2.OUTCOME_UNKNOWN, data_pb2.DURABLE_ON_LEADER):
            # (DURABLE_ON_LEADER reaches here only if no LearnBoard counted it:
            # durable on the leader alone, it may or may not commit.)
            call.unknown = True
            call.first_seq = call.first_seq or attempt.seq
        return Verdict.RETRY_NOW if self._follow_answer(attempt.route, resp.leader, resp.epoch) else Verdict.WAIT

    def read_verdict(self, call: ReadCall, attempt: Attempt) -> data_pb2.ReadResponse | Verdict:
        """What a get's settled attempt means: the answer (done), what is left
        to do, or RouterError."""
        self.settle(attempt)
        exc = _failure_of(attempt.answer)
        if exc is not None:
            if not isinstance(exc, (LeaderChanged, StreamBroken, TimeoutError)):
                raise exc
            return Verdict.RETRY_NOW if isinstance(exc, LeaderChanged) else Verdict.WAIT
        resp = attempt.answer.result()
        if resp.code == data_pb2.OK:
            self._observe(resp.seq)   # as a write's answer does (write_verdict)
            return resp
        if resp.code == data_pb2.TABLE_DROPPED:
            call.dropped_table_id = attempt.route.table_id
            return Verdict.RECREATED
        return Verdict.RETRY_NOW if self._follow_answer(attempt.route, resp.leader, resp.epoch) else Verdict.WAIT

    async def finish_write(self, call: WriteCall, verdict: Verdict | None = None) -> bytes:
        """The write's attempts until one settles it, from `verdict` (what its
        last attempt left; None: the next attempt now). Returns the stored seq."""
        return await self._finish(call, verdict, self.write_verdict)

    async def finish_read(self, call: ReadCall, verdict: Verdict | None = None) -> data_pb2.ReadResponse:
        """The get's attempts until one settles it, from `verdict` (as finish_write)."""
        return await self._finish(call, verdict, self.read_verdict)

    async def _finish(self, call, verdict: Verdict | None, judge):
        while True:
            if verdict is None:
                _raise_if_cancelled()
                route = await self._route(call.table, call.key, call.deadline)
                _raise_if_cancelled()   # 3.11's wait_for in refresh() drops a cancellation that came as the fetch ended
                attempt = self._send(call, route)
                if attempt is None:   # no leader known for the group yet
                    verdict = Verdict.WAIT
                else:
                    try:
                        await attempt.answer
                    except (LeaderChanged, StreamBroken, TimeoutError):
                        pass   # judged below
                    finally:
                        self.settle(attempt)   # also when this task is cancelled (the answer with it)
                    verdict = judge(call, attempt)
                    if not isinstance(verdict, Verdict):
                        return verdict
            if verdict is not Verdict.WAIT:
                if verdict is Verdict.RECREATED:
                    if not await self._recreated(call.table, call.dropped_table_id, call.deadline):
                        raise RouterError(grpc.StatusCode.NOT_FOUND, f"table {call.table!r} was dropped before the "
                                          "write committed: it was not applied" if isinstance(call, WriteCall)
                                          else f"table {call.table!r} was dropped")
                    if isinstance(call, WriteCall):
                        # Voided everywhere (never applied): it goes to the new table,
                        # under the id every router derives for it there (not sent by
                        # this call yet: only another call's attempt may be unknown).
                        call.first_seq = bytes(16) if call.retry else b""
                self.stats["retries"] += 1
                verdict = None
                continue
            if time.monotonic() >= call.deadline:
                if isinstance(call, WriteCall) and call.unknown:
                    raise RouterError(grpc.StatusCode.UNKNOWN, "the write's outcome is unknown: its leader changed "
                                      "while it was in flight; read the key to see whether it was applied")
                raise self._unavailable(f"table {call.table!r}")
            self.stats["retries"] += 1
            await self._await_change(call.deadline)
            verdict = None

    async def list_page(self, table: str, start: bytes, end: bytes, limit: int, keys_only: bool,
                        continuation: bytes, *, deadline: float) -> tuple[list, bytes]:
        """One page of (key, value, seq) in key order across the table's ranges,
        and the continuation token (empty at the end)."""
        check_table(table)
        if start:
            check_key(start, "start")
        if end:
            check_key(end, "end")
        limit = limit or DEFAULT_PAGE
        if limit > MAX_PAGE:
            raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, f"limit must be at most {MAX_PAGE}, got {limit}")
        self.stats["lists"] += 1
        table_id = (await self._route(table, b"", deadline)).table_id
        if continuation and _token_table(continuation) != table_id:
            await self.refresh(deadline)   # the token may be from a router whose copy is ahead of ours
            table_id = (await self._route(table, b"", deadline)).table_id
        if continuation:
            start = _resume_key(continuation, table_id)
            if start is None:   # the token's key was the last possible one
                return [], b""
        rows: list = []
        size = 0
        cursor = start
        while len(rows) < limit:
            route = await self._route(table, cursor, deadline)
            if route.table_id != table_id:
                raise RouterError(grpc.StatusCode.NOT_FOUND, f"table {table!r} was dropped while listing it")
            scan_end = route.end if route.end is not None else b""
            if end and (not scan_end or end < scan_end):
                scan_end = end
            resp = await self._scan(route, cursor, scan_end, limit - len(rows), keys_only, deadline)
            if resp.code == data_pb2.TABLE_DROPPED:
                if not continuation and not rows and await self._recreated(table, table_id, deadline):
                    return await self.list_page(table, start, end, limit, keys_only, b"", deadline=deadline)
                raise RouterError(grpc.StatusCode.NOT_FOUND, f"table {table!r} was dropped")
            values = resp.values if not keys_only else [b""] * len(resp.keys)
            rows.extend(zip(resp.keys, values, resp.seqs))
            size += sum(map(len, resp.keys)) + sum(map(len, values)) + 16 * len(resp.seqs)
            if resp.more or size >= MAX_PAGE_BYTES:   # a page fits one message whatever its ranges hold
                break
            if route.end is None or (end and route.end >= end):
                return rows, b""
            cursor = route.end
        if not rows:
            return rows, b""
        return rows, _token(table_id, rows[-1][0])

    async def _scan(self, route: Route, start: bytes, end: bytes, limit: int, keys_only: bool,
                    deadline: float) -> data_pb2.ScanResponse:
        while True:
            _raise_if_cancelled()
            client = self._client(route.leader) if route.leader else None
            if client is not None:
                try:
                    resp = await client.scan(route.rg, route.table_id, start, end, limit, keys_only,
                                             timeout=max(0.01, deadline - time.monotonic()))
                except grpc.aio.AioRpcError:
                    resp = None
                if resp is not None:
                    if resp.code in (data_pb2.OK, data_pb2.TABLE_DROPPED):
                        return resp
                    self._follow_answer(route, resp.leader, resp.epoch)
            if time.monotonic() >= deadline:
                raise self._unavailable(f"range of rg {route.rg}")
            await self._await_change(deadline)
            fresh = self.routing.group(route.rg)
            if fresh is not None:
                route = Route(route.table_id, route.rg, fresh[0], fresh[1], route.start, route.end)

    async def drop_table_data(self, table_id: int, rgs: set[int], deadline: float) -> set[int]:
        """After the MM dropped a table: drops its data in every group that held
        a range of it (one log entry each, server/node/entry_payload.py).
        Returns the groups not done by the deadline (their space stays used
        until a later drop; the table id is never reused, so nothing shows)."""
        left = set(rgs)
        while left:
            for rg in sorted(left):
                g = self.routing.group(rg)
                client = self._client(g[0]) if g and g[0] else None
                if client is None:
                    continue
                try:
                    resp = await client.drop_table(rg, table_id, timeout=max(0.01, deadline - time.monotonic()))
                except grpc.aio.AioRpcError:
                    continue
                if resp.code in (data_pb2.OK, data_pb2.UNKNOWN_GROUP):
                    left.discard(rg)
                else:
                    self.routing.with_leader(rg, resp.leader, resp.epoch)
            if not left or time.monotonic() >= deadline:
                break
            await self._await_change(deadline)
        return left

    async def close(self) -> None:
        for task in (self._watch_task, self._fetch_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for c in self._clients.values():
            await c.close()
        if self._learn is not None:
            await self._learn.close()
        if self._meta_channel is not None:
            await self._meta_channel.close(grace=None)


def _failure_of(answer: asyncio.Future) -> BaseException | None:
    """A settled answer's exception. One cancelled under a done-callback's
    judge (nothing here cancels a live op's answer; a caller's task awaiting
    it is cancelled with it and never judges it) counts as a broken stream:
    the attempt's outcome is unknown."""
    if answer.cancelled():
        return StreamBroken("the attempt's answer was cancelled")
    return answer.exception()


def wire_request_id(request_id: int, table_id: int) -> int:
    """The id a write goes to its group under: the client's request id and
    the table's id, hashed. Every router derives the same one, so the
    leader's deduplication (server/node/dedup.py) answers a retry through any
    router; and a retry that finds its table dropped and created again is a
    new request for the new table (the old one voided it: never applied)."""
    digest = hashlib.blake2b(request_id.to_bytes(8, "big") + table_id.to_bytes(4, "big"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) + 1


def _token(table_id: int, last_key: bytes) -> bytes:
    return bytes([_TOKEN_VERSION]) + table_id.to_bytes(4, "big") + last_key


def _token_table(token: bytes) -> int | None:
    """The table id a well-formed token names (None: malformed, which _resume_key reports)."""
    if len(token) < 6 or token[0] != _TOKEN_VERSION:
        return None
    return int.from_bytes(token[1:5], "big")


def _resume_key(token: bytes, table_id: int) -> bytes | None:
    """The first key after the token's last key (None: there is none). The
    token is opaque to clients but checked: a token of another table or
    version is INVALID_ARGUMENT."""
    tid = _token_table(token)
    if tid is None:
        raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, "continuation token is malformed: pass back the "
                          "token of the previous page unchanged")
    if tid != table_id:
        raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, "continuation token belongs to another table "
                          "(or the table was dropped and created again)")
    return key_after(token[5:])


def key_after(key: bytes) -> bytes | None:
    """The smallest key of at most MAX_KEY bytes that sorts after `key` (None:
    there is none). Appending a zero byte is the successor, except for a key
    of the maximum length: then the last byte that is not 0xFF goes up by one
    and the bytes after it are dropped."""
    if len(key) < MAX_KEY:
        return key + b"\x00"
    stripped = key.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
