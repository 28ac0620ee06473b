"""LearnBoard: a learner client counts its writes' commits from the followers' acknowledgements.

Purpose: the client half of "the client as a learner"
(server/replication/README.md). Without it, a write's answer takes four
hops: client -> leader -> follower -> leader -> client. A learner's write is
answered DURABLE_ON_LEADER by the leader once the leader's own copy is
durable (server/node/write_path.py), and the follower's acknowledgement
comes to the client straight from the follower's Learn stream
(server/node/learn_feed.py), in parallel with the one to the leader: the
last hop is gone. One client's writes: bench/RESULTS.md.

The rule (checker rule 6 of tests/server/sim/checker.py checks it in every
simulated schedule): a write answered DURABLE_ON_LEADER at (epoch, index),
with the epoch's voters V (the leader among them, not a joint config), is
committed once len(V) // 2 distinct voters other than the leader sent an
accepted acknowledgement of that epoch at or past `index`. With the
leader's own durable copy that is a majority of V holding the entry
durably in the log of the epoch's only leader (L1's matching check made
each follower's prefix the leader's), and an entry of the current epoch on
a majority is committed (C1): no later leader can lack it (E3).

What can go wrong, and what the caller hears:
- Acknowledgements that never come (the leader was deposed before a quorum
  had the entry, a follower's Learn stream is down): after `wait_seconds`,
  OUTCOME_UNKNOWN, as from a leader that stepped down with the write in
  its log; at once when too many of the followers have moved to a later
  epoch for the write's epoch ever to gather its quorum.
- The write then may or may not commit: callers retry under the request
  id (server/router), exactly as for any OUTCOME_UNKNOWN.
A client asks for learner answers for a group (ready()) only while it has a
live Learn stream to enough of that group's followers (or does not know the
group yet), so in a healthy cluster the wait always ends in a count. (When
it asks at all is DataClient's rule: lightly loaded and mostly writing.)
"Moved on": a follower that acknowledged a later epoch, announced a durable
promise of one ((epoch, 0) on its feed), or leads one.

Streams: opened to a group's followers when an answer names them (or
ready() asks), closed after IDLE_SECONDS without a learner answer or a
ready() that said yes, so a client that stopped asking does not receive
every acknowledgement of every group.

Thread-safety: one event loop; everything runs on it.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable

import grpc

from server.node.learn_feed import unpack
from server.node.peers import STREAM_CHANNEL_OPTIONS
from server.node_identity import NODE_METADATA_KEY
from server.proto import data_pb2, data_pb2_grpc

log = logging.getLogger(__name__)

WAIT_SECONDS = 2.0         # a DURABLE_ON_LEADER write not counted by then: OUTCOME_UNKNOWN
RECONNECT_SECONDS = 0.5    # a Learn stream that ended is opened again after this
IDLE_SECONDS = 1.0         # no learner answer for this long: the Learn streams are closed (_check_idle)
FORGET_SECONDS = 5.0       # a group not ready() for this long is forgotten, its followers learned anew (ready)


class _Epoch:
    """One group's epoch as its learner writes saw it: who must acknowledge,
    how far they did, and the writes waiting for it, by log index."""

    __slots__ = ("rg", "epoch", "leader", "followers", "need", "matches", "moved_on", "committed", "waiting")

    def __init__(self, rg: int, epoch: int, leader: int, followers: tuple[int, ...], need: int):
        self.rg = rg
        self.epoch = epoch
        self.leader = leader
        self.followers = followers   # the epoch's voters other than the leader
        self.need = need             # how many of them must acknowledge an index
        self.matches = dict.fromkeys(followers, 0)   # follower -> its highest match in this epoch
        self.moved_on: set[int] = set()              # followers that acknowledged a later epoch
        # The highest index `need` followers acknowledged (a 1-voter group: the
        # leader's durable copy is the majority, every index is counted).
        self.committed = 0 if need else 1 << 64
        self.waiting: list[tuple[int, int, asyncio.Future, data_pb2.WriteResponse, float]] = []   # a heap

    def acknowledged(self, node: int, match: int) -> None:
        if match > self.matches.get(node, match):
            self.matches[node] = match
            self.committed = max(self.committed, sorted(self.matches.values(), reverse=True)[self.need - 1])

    def hopeless(self, index: int) -> bool:
        """Too many followers moved past this epoch for `index` to be counted:
        those that acknowledged it already count, moved on or not."""
        return sum(1 for v, m in self.matches.items() if m >= index or v not in self.moved_on) < self.need


class _Feed:
    """One node's Learn stream, opened again whenever it ends, until closed."""

    def __init__(self, board: LearnBoard, node_id: int):
        self.board = board
        self.node_id = node_id
        self.live = False   # a first message came, and the stream has not ended since
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"learn-{node_id}")

    async def _run(self) -> None:
        board = self.board
        while True:
            address = board.address_of(self.node_id)
            if address is not None:
                channel = grpc.aio.insecure_channel(address, options=STREAM_CHANNEL_OPTIONS)
                try:
                    call = data_pb2_grpc.DataStub(channel).Learn(data_pb2.LearnRequest(), metadata=board.metadata)
                    async for batch in call:
                        if not self.live:
                            self.live = True
                            board.feed_changed()
                        board.learned(batch.node, batch.acks)
                except grpc.aio.AioRpcError as exc:
                    log.debug("Learn stream of node %d ended: %s", self.node_id, exc.code().name)
                finally:
                    if self.live:
                        self.live = False
                        board.feed_changed()
                    await channel.close(grace=None)
            await asyncio.sleep(RECONNECT_SECONDS)


class LearnBoard:
    def __init__(self, address_of: Callable[[int], str | None], sender_id: int = 0,
                 wait_seconds: float = WAIT_SECONDS):
        """`address_of(node_id)`: where that node serves (None: unknown for now)."""
        self.address_of = address_of
        self.metadata = ((NODE_METADATA_KEY, str(sender_id)),)
        self.wait_seconds = wait_seconds
        self._feeds: dict[int, _Feed] = {}
        self._acks: dict[tuple[int, int], tuple[int, int]] = {}   # (rg, node) -> its highest (epoch, match)
        self._epochs: dict[int, _Epoch] = {}      # rg -> the latest epoch a learner write of it was answered in
        self._old: list[_Epoch] = []              # earlier epochs that still have writes waiting
        self._ready: dict[int, bool] = {}         # rg -> ready(rg), until a feed or an epoch changes
        self._unready_since: dict[int, float] = {}   # rg -> loop time ready(rg) first said no, in a row
        self._order = itertools.count()           # heap tie-break
        self._sweep: asyncio.TimerHandle | None = None
        self._idle_check: asyncio.TimerHandle | None = None
        self._last_use = 0.0      # loop time of the last learner answer settled here
        self._closing: set[asyncio.Task] = set()   # feeds cancelled by _check_idle, not finished yet
        self.counted = 0     # writes this board counted committed
        self.unknown = 0     # writes it gave up on (OUTCOME_UNKNOWN)

    # ------------------------------------------------------------- the client's side
    def ready(self, rg: int) -> bool:
        """Whether a write to `rg` should ask for a learner answer: the group is
        not known yet, or enough of its followers' Learn streams are live. A
        group that stays not ready for FORGET_SECONDS (its followers as this
        board last saw them cannot be reached: members replaced, say) is
        forgotten: the next write asks, and its answer names the voters now."""
        ready = self._ready.get(rg)
        if ready is None:
            e = self._epochs.get(rg)
            if e is not None:
                self._open_feeds(e.followers)   # closed while idle: open again (live in a moment)
            ready = e is None or sum(1 for v in e.followers
                                     if (f := self._feeds.get(v)) is not None and f.live) >= e.need
            self._ready[rg] = ready
        if ready:
            # A learner write is about to be sent: its answer comes within the
            # next IDLE_SECONDS, so the streams must stay open for it.
            self._last_use = asyncio.get_running_loop().time()
            if self._unready_since:
                self._unready_since.pop(rg, None)
            return True
        now = asyncio.get_running_loop().time()
        since = self._unready_since.setdefault(rg, now)
        e = self._epochs.get(rg)
        if now - since >= FORGET_SECONDS and e is not None and not e.waiting:
            del self._epochs[rg]
            self._ready.pop(rg, None)
            del self._unready_since[rg]
            return True
        return False

    def _open_feeds(self, nodes) -> None:
        for v in nodes:
            if v not in self._feeds:
                self._feeds[v] = _Feed(self, v)
        if self._feeds and self._idle_check is None:
            self._idle_check = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._check_idle)

    def _check_idle(self) -> None:
        """Closes the Learn streams when no learner answer came for IDLE_SECONDS:
        a client that stopped asking for them (DataClient._as_learner: under
        load) should not pay for every acknowledgement of every group, and its
        writers' answers should not share its loop with them. ready() opens
        them again when asked."""
        self._idle_check = None
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_use < IDLE_SECONDS or any(e.waiting for e in self._epochs.values()) \
                or any(e.waiting for e in self._old):
            self._idle_check = loop.call_later(IDLE_SECONDS, self._check_idle)
            return
        feeds, self._feeds = list(self._feeds.values()), {}
        for f in feeds:
            f.task.cancel()
            self._closing.add(f.task)
            f.task.add_done_callback(self._closing.discard)
        self._ready.clear()

    def feed_changed(self) -> None:
        """A Learn stream went live or ended: ready() looks again."""
        self._ready.clear()

    def settle(self, rg: int, future: asyncio.Future, response: data_pb2.WriteResponse) -> None:
        """A DURABLE_ON_LEADER answer (`response`) to the write to `rg` whose caller
        waits on `future`: resolved with it, turned OK, once counted committed
        (at once if the acknowledgements came first), or OUTCOME_UNKNOWN."""
        if future.done():
            return
        self._last_use = asyncio.get_running_loop().time()
        e = self._epochs.get(rg)
        if e is None or e.epoch != response.epoch or e.leader != response.leader:   # else: the same config (E1)
            e = self._new_epoch(rg, future, response, e)
            if e is None:
                return
        self._open_feeds(e.followers)   # closed while idle after the write was sent: open again
        index = response.index
        if index <= e.committed:
            self._ok(future, response)
        elif e.hopeless(index):
            self._unknown(future, response, f"the followers moved past epoch {e.epoch} before acknowledging it")
        else:
            heapq.heappush(e.waiting, (index, next(self._order), future, response,
                                       asyncio.get_running_loop().time() + self.wait_seconds))
            if self._sweep is None:
                self._sweep = asyncio.get_running_loop().call_later(self.wait_seconds / 4, self._expire)

    def _new_epoch(self, rg: int, future: asyncio.Future, response: data_pb2.WriteResponse,
                   previous: _Epoch | None) -> _Epoch | None:
        """The group's epoch of `response`, from its voters; None (and the
        write answered OUTCOME_UNKNOWN) if this board cannot count it."""
        leader, voters = response.leader, tuple(response.voters)
        followers = tuple(v for v in voters if v != leader)
        need = len(voters) // 2
        if leader not in voters:
            self._unknown(future, response, f"a DURABLE_ON_LEADER answer with voters {voters} and leader {leader}")
            return None
        if previous is not None and response.epoch < previous.epoch:
            # A deposed leader's answer, after its successor's: counted in an
            # _Epoch of its own, not made the group's current one.
            e = next((o for o in self._old if o.rg == rg and o.epoch == response.epoch and o.leader == leader), None)
            if e is None:
                e = self._epoch_from_acks(rg, response.epoch, leader, followers, need)
                self._old.append(e)
            return e
        e = self._epoch_from_acks(rg, response.epoch, leader, followers, need)
        if previous is not None and previous.waiting:
            self._old.append(previous)
        # The new epoch's leader promised it: it acknowledges no earlier epoch again.
        for old in [o for o in self._old if o.rg == rg and o.epoch < e.epoch and leader in o.matches]:
            old.moved_on.add(leader)
            self._release(old)
        self._epochs[rg] = e
        self._ready.pop(rg, None)
        return e

    def _epoch_from_acks(self, rg: int, epoch: int, leader: int, followers: tuple[int, ...], need: int) -> _Epoch:
        e = _Epoch(rg, epoch, leader, followers, need)
        for v in followers:
            ack_epoch, match = self._acks.get((rg, v), (0, 0))
            if ack_epoch == epoch:
                e.acknowledged(v, match)
            elif ack_epoch > epoch:
                e.moved_on.add(v)
        self._open_feeds(followers)
        return e

    # ------------------------------------------------------------- the feeds' side
    def learned(self, node: int, acks: bytes) -> None:
        """A LearnBatch from `node`: its acknowledgements, then the writes they complete."""
        touched: list[_Epoch] = []
        for rg, epoch, match in unpack(acks):
            key = (rg, node)
            if (epoch, match) <= self._acks.get(key, (0, 0)):
                continue
            self._acks[key] = (epoch, match)
            e = self._epochs.get(rg)
            if e is None:
                continue
            for g in (e, *self._old) if self._old else (e,):
                if g.rg != rg or node not in g.matches:
                    continue
                if g.epoch == epoch:
                    g.acknowledged(node, match)
                    touched.append(g)
                elif epoch > g.epoch and node not in g.moved_on:
                    g.moved_on.add(node)
                    touched.append(g)
        for g in touched:
            self._release(g)

    def _release(self, e: _Epoch) -> None:
        """Settles the writes of `e` that are counted now, or can no longer be."""
        waiting = e.waiting
        while waiting and waiting[0][0] <= e.committed:
            _index, _n, future, response, _deadline = heapq.heappop(waiting)
            self._ok(future, response)
        if waiting and e.hopeless(max(item[0] for item in waiting)):
            kept = []
            for item in waiting:
                if e.hopeless(item[0]):
                    self._unknown(item[2], item[3], f"the followers moved past epoch {e.epoch} before acknowledging it")
                else:
                    kept.append(item)
            heapq.heapify(kept)
            waiting[:] = kept
        if not waiting and e in self._old:
            self._old.remove(e)

    def _ok(self, future: asyncio.Future, response: data_pb2.WriteResponse) -> None:
        if not future.done():
            response.code = data_pb2.OK
            future.set_result(response)
            self.counted += 1

    def _unknown(self, future: asyncio.Future, response: data_pb2.WriteResponse, why: str) -> None:
        if not future.done():
            response.code = data_pb2.OUTCOME_UNKNOWN
            response.message = f"learner: {why}; the write may or may not have committed"
            future.set_result(response)
            self.unknown += 1

    def _expire(self) -> None:
        """Every wait_seconds / 4 while writes wait: those waiting longer than wait_seconds are unknown."""
        self._sweep = None
        now = asyncio.get_running_loop().time()
        left = False
        for e in [*self._epochs.values(), *self._old]:
            if not e.waiting:
                continue
            kept = []
            for item in e.waiting:
                if item[2].done():
                    continue
                if item[4] <= now:
                    self._unknown(item[2], item[3], f"no quorum acknowledgement within {self.wait_seconds} s")
                else:
                    kept.append(item)
            heapq.heapify(kept)
            e.waiting[:] = kept
            left = left or bool(kept)
        self._old = [e for e in self._old if e.waiting]
        if left:
            self._sweep = asyncio.get_running_loop().call_later(self.wait_seconds / 4, self._expire)

    async def close(self) -> None:
        """Stops the Learn streams; writes still waiting are answered OUTCOME_UNKNOWN."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for e in [*self._epochs.values(), *self._old]:
            for item in e.waiting:
                self._unknown(item[2], item[3], "the client closed")
            e.waiting.clear()
        self._old.clear()
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None
        tasks = [f.task for f in self._feeds.values()] + list(self._closing)
        self._feeds = {}
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
