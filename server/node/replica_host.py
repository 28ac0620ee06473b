"""ReplicaHost: drives one Replica on the node's event loop, following the Ready contract.

Purpose: the I/O around the sans-I/O protocol core (server/replication/): it
feeds the replica messages, ticks and client work, and carries out each
Ready in the order server/replication/README.md ("The Ready contract") gives.

Work per loop round: client writes go to WritePath (write_path.py: batching
into one entry per round, the sequencer rule, conditions, deduplication,
answers); reads that arrived together share one ReadIndex confirmation
round; log fsyncs run inline on the loop's thread, a leader's after its
Appends were handed to its peer links (flush_deferred:
server/stream_writer.py); snapshot work runs in the node's I/O thread (see
"The node" in server/replication/README.md). start_client_work() lets the
Data service begin that round itself when the loop is idle (between
Readys): the loop then carries out the Ready it began (a leader's fsync).
acknowledged() does the same for the node's Exchange handler after a
quorum's acknowledgement, a Heartbeat or an Append, and carries that Ready
out there to the end (_needs_loop: all but a leader's fsync and snapshot
work): a leader's apply and answers, a follower's fsync, acknowledgement
and apply.

Thread-safety: everything runs on the event loop except a snapshot's
ReplicaStorage.persist, which runs in the I/O executor while the loop keeps
going; the replica and the waiters are touched only on the loop.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from engine.errors import TableNotFoundError
from server import timeline
from server.node.replica_storage import ReplicaStorage, table_name
from server.node.write_path import Listener, Outcome, Result, WritePath, notify
from server.replication.messages import (
    Append,
    AppendAck,
    AppendResult,
    Heartbeat,
    Message,
    PromiseRequest,
    Role,
    SnapshotChunk,
    StatusReport,
)
from server.replication.options import ReplicaOptions
from server.replication.ready import ReadFailure, Ready, SnapshotRequest
from server.replication.replica import Replica
from server.runtime import fail_stop
from server.stream_writer import flush_deferred

log = logging.getLogger(__name__)
COMPACT_FORCE = "force"   # compact_due value: compact past members that lag (see _compact_log)
DROPPED_TABLE = "dropped table"   # what a read function returns for a dropped table id (a sentinel)


def lease_clock() -> int:
    """The clock leases are measured on (server/replication/lease.py): CLOCK_BOOTTIME,
    which keeps counting while the process is stopped or the machine sleeps."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class _SnapshotSource:
    """One snapshot being sent: its chunk generator (holding a pinned engine
    snapshot, released when the generator is closed or collected) and the
    chunks at or after the last one asked for."""

    def __init__(self, index: int, chunks: Iterator[bytes]):
        self.index = index
        self._chunks = chunks
        self._kept: dict[int, bytes] = {0: next(chunks)}   # the first chunk now: pins the state at `index`
        self._next = 1

    def first_kept(self) -> int:
        return min(self._kept, default=self._next)

    def chunk(self, offset: int) -> bytes | None:
        """Chunk `offset` (None past the end); forgets the chunks before it."""
        for o in [o for o in self._kept if o < offset - 1]:
            del self._kept[o]
        while offset >= self._next:
            data = next(self._chunks, None)
            if data is None:
                return None
            self._kept[self._next] = data
            self._next += 1
        return self._kept.get(offset)


class _Read:
    """A linearizable read waiting for its ReadIndex round."""

    __slots__ = ("read", "future", "on_done", "key")

    def __init__(self, read: Callable[[], Any], future: asyncio.Future, on_done: Listener | None,
                 key: bytes | None = None):
        self.read = read
        self.future = future
        self.on_done = on_done
        self.key = key   # the internal key a get reads (None: a scan, or unknown)

    def settle(self, outcome: Result | BaseException) -> None:
        """Resolves the future (an exception: the read's own error) unless done, then tells the listener."""
        if self.future.done():
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)
        notify(self.future, self.on_done)


class ReplicaHost:
    def __init__(self, rg: int, node_id: int, storage: ReplicaStorage, options: ReplicaOptions,
                 send: Callable[[int, Message], None], io: Executor, recovering: bool = False,
                 on_ack: Callable[[int, int, int], None] | None = None):
        """`on_ack(rg, epoch, match)`: called with each accepted AppendAck this
        replica sends (the node's Learn feed, server/node/learn_feed.py)."""
        self.rg = rg
        self.node_id = node_id
        self.storage = storage
        self.options = options
        self._send = send
        self._io = io
        self._on_ack = on_ack
        # The highest (epoch, match) this replica acknowledged, or (epoch, 0) for
        # an epoch it promised since (learn_feed.py: a new subscriber's first message).
        self.last_ack: tuple[int, int] | None = None
        self.replica = Replica(node_id, storage.durable_state(), options)
        self.writes = WritePath(node_id, self.replica, storage)
        self.compact_due: bool | str = False   # set by the node after engine flushes; done between Readys
        self.leader_changes = 0    # times this replica became LEADER (metrics)
        # A member whose data is gone (wiped disk) must not promise: with an empty
        # log it could complete a quorum that lacks entries it had acknowledged.
        # It answers no PromiseRequest until it applied what a leader had
        # committed when it came back (the first Append's commit index, or a
        # snapshot's index).
        self.recovering = recovering
        self._recover_target = 0
        # And at least the last index of the leader of the latest epoch heard, as
        # of its first message (a learner client may have counted an entry up to
        # it committed from our lost acknowledgement, before that leader knew):
        # (epoch, index); None until a leader's Append or Heartbeat came.
        self._recover_floor: tuple[int, int] | None = None
        if recovering:
            log.warning("rg %d: no data on this disk for an established group: rejoining without a vote "
                        "until caught up", rg)
            self.replica.rejoin_without_data(time.time_ns())   # LL3 and S6 (server/replication/README.md)
        self._pending_reads: list[_Read] = []
        self._read_groups: dict[int, list[_Read]] = {}
        self._read_token = 0
        self._snapshots: dict[int, _SnapshotSource] = {}   # member -> the snapshot being sent to it
        self._wake = asyncio.Event()
        self._busy = False   # a Ready is between ready() and advance()
        self._handoff: Ready | None = None   # a Ready start_client_work() began, for the loop to carry out
        self._closed = False
        self._task: asyncio.Task | None = None
        self._ops_seen = 0
        self._ops_window_start = time.monotonic()
        self.ops_per_second = 0.0
        # Moves whenever what status_report() and the node's report figures
        # show may have changed (a message stepped, a Ready begun or finished),
        # so the node rebuilds only those reports (Node.status_envelopes).
        self.status_version = 0
        self._quorum_contact = True
        self._wake.set()   # the first Ready replays committed entries above the engine's applied index

    # ------------------------------------------------------------- inputs
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"rg{self.rg}")
        self._task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task) -> None:
        """Fail-stop: a replica whose loop died must not linger. Its node would
        go on heartbeating the MM as if the replica were healthy, while it
        neither replicates nor answers. Exiting makes the failure what the
        protocol already handles: a crashed node, restarted from its disk."""
        if task.cancelled() or task.exception() is None:
            return
        fail_stop(log, f"rg {self.rg}: replica loop failed", task.exception())

    def step(self, msg: Message, wake: bool = True) -> None:
        """Steps a peer's message in. wake=False leaves the loop asleep: the
        caller calls acknowledged() next, which carries out the Ready itself
        or wakes the loop."""
        if self.recovering:
            if isinstance(msg, PromiseRequest):
                return   # no vote yet (see __init__); the MM retries, or elects among the others
            if isinstance(msg, (Append, Heartbeat)):
                if isinstance(msg, Append):
                    self._recover_target = max(self._recover_target, msg.commit_index)
                if msg.epoch >= self.replica.epoch and (self._recover_floor is None
                                                        or msg.epoch > self._recover_floor[0]):
                    self._recover_floor = (msg.epoch, msg.last_index)
            elif isinstance(msg, SnapshotChunk):
                self._recover_target = max(self._recover_target, msg.snapshot.index)
        self.replica.observe_time(lease_clock())
        self.replica.step(msg)
        self.status_version += 1
        if wake:
            self._wake.set()

    def _check_recovered(self) -> None:
        """Votes again once what a leader had committed is applied here and
        durable: in the log store (entries) or the engine (an installed
        snapshot). The replica's applied index alone moves when a snapshot's
        last chunk is stepped, before the install is on disk."""
        if self._recover_floor is None:
            return   # no leader's last index yet: what a learner counted may be beyond the target
        target = max(self._recover_target, self._recover_floor[1])
        durable = max(self.storage.log.last_index, self.storage.db.applied_index)
        if target and self.replica.log.applied_index >= target and durable >= target:
            self.storage.clear_recovering()
            self.recovering = False
            self.replica.caught_up()
            log.warning("rg %d: caught up to %d: voting again", self.rg, target)

    def tick(self) -> None:
        """One tick (Node._ticker, every TICK_SECONDS). The loop is woken only
        when the tick made work (a Ready: heartbeats, retransmits, an apply
        that was due, expired reads) or a log compaction waits: an idle
        replica costs no task switch per tick, which with hundreds of
        replicas on a node is most of its idle CPU."""
        self.replica.observe_time(lease_clock())
        self.replica.tick()
        contact = self.replica.quorum_contact()
        if contact is not self._quorum_contact:   # CQ1 moves with ticks alone: the MM must hear of it
            self._quorum_contact = contact
            self.status_version += 1
        if self.compact_due or self.replica.has_ready():
            self._wake.set()

    def submit_write(self, rep: bytes, request_id: int = 0, if_seq: bytes = b"",
                     if_absent: bool = False, on_done: Listener | None = None,
                     wake: bool = True, first_seq: bytes = b"", learner: bool = False) -> asyncio.Future:
        """A client's write batch (seqs set by the router). Resolves to a Result
        (write_path.py) whose value is (log index, concatenated stored seqs);
        `on_done`, `first_seq` and `learner` as in WritePath.submit. wake=False: the caller calls
        start_client_work() once its batch is in (so the loop is not woken
        first, ahead of the peer links that carry the proposal)."""
        fut = self.writes.submit(rep, request_id, if_seq, if_absent, on_done, first_seq, learner)
        if wake:
            self._wake.set()
        return fut

    def submit_drop(self, table_id: int) -> asyncio.Future:
        """Drops a table on every replica (a log entry); resolves when applied here."""
        fut = self.writes.propose_drop(table_id)
        self._wake.set()
        return fut

    def submit_read(self, read: Callable[[], Any], on_done: Listener | None = None,
                    wake: bool = True, key: bytes | None = None) -> asyncio.Future:
        """A linearizable read: `read()` runs against the engine once a
        ReadIndex round confirmed this replica still leads. `on_done` as in
        WritePath.submit: called inside the round that answered it. `wake`
        as in submit_write. `key`: the internal key (table id, 4 bytes big
        endian, then the user key) a get reads: it then waits only for the
        learner writes to that key answered but not applied (_take_client_work);
        None (a scan): for all of them."""
        fut = asyncio.get_running_loop().create_future()
        self._pending_reads.append(_Read(read, fut, on_done, key))
        if wake:
            self._wake.set()
        return fut

    def get(self, table_id: int, key: bytes):
        """Read function for submit_read: the live record, None, or
        DROPPED_TABLE if the table id was dropped (a router whose routing
        predates the drop must look again: the name may name a new table)."""
        try:
            return self.storage.db.get(table_name(table_id), key)
        except TableNotFoundError:
            return DROPPED_TABLE if table_id in self.storage.db.dropped_table_ids() else None

    def status_report(self) -> StatusReport:
        return self.replica.status_report()

    # ------------------------------------------------------------- the loop
    def start_client_work(self) -> None:
        """Proposes the writes and starts the read rounds submitted so far, now,
        if the loop is between Readys: their Appends or heartbeats are queued
        for the peer links before the caller goes back to gRPC, not a loop
        round later. The rest of that Ready (fsync, apply) is left to the loop.
        When the loop is busy (a Ready in progress, typically an fsync), the
        work waits for it, and everything submitted meanwhile becomes one entry.
        Called by the Data service once per incoming batch (server/node/node.py)."""
        self.run_now()

    def acknowledged(self) -> None:
        """An acknowledgement (AppendAck, HeartbeatAck), a Heartbeat or an
        Append was stepped in: if it completed a quorum, the committed
        entries are applied and their writers answered (or the confirmed
        reads served) now, on the caller's stack, when the loop is between
        Readys; a follower makes an Append durable, acknowledges it and
        applies what it commits the same way, and sends a HeartbeatAck.
        The loop would only add a wake-up. (A Ready with work for the loop,
        _needs_loop, is handed to it.) Called by Node.deliver_all."""
        self.run_now()

    def run_now(self) -> None:
        """Begins the next Ready here if the loop is between Readys (see
        start_client_work and acknowledged) and carries it out to the end,
        unless it has work for the loop (_needs_loop), which is handed over."""
        if self._busy or self._closed or self._handoff is not None:
            return
        try:
            self._take_client_work()
            if not self.replica.has_ready():
                return
            rd = self.replica.ready()
            self._busy = True
            if timeline.ENABLED:
                timeline.mark("host.ready")
            self._begin(rd)
            if self._needs_loop(rd):
                self._handoff = rd
                self._wake.set()
                return
            self._persist_inline(rd)
            self._send_after_persist(rd)
            self._finish(rd)
            # As the loop does after each Ready: conditional writes waiting for
            # this apply (write_path.py's barrier) are proposed now.
            self._take_client_work()
            if self.replica.has_ready():   # that proposal, or Appends this Ready's acks let through
                self._wake.set()
        except BaseException as exc:  # noqa: BLE001 - as the loop's task would: the replica must not linger
            fail_stop(log, f"rg {self.rg}: replica round failed", exc)

    def _needs_loop(self, rd: Ready) -> bool:
        """Whether `rd` is handed to the loop rather than carried out on the
        caller's stack: snapshot work (the I/O thread), and a leader's log
        fsync. A leader's fsync is handed to the loop: client writes read
        before the loop gets to it find the replica busy and become its next
        entry (batching). A follower fsyncs where the Append arrived: its work
        follows the leader's messages, one Ready per message either way, and
        the loop would only add a task switch to each write's chain."""
        if rd.snapshot_chunks or rd.snapshot is not None or rd.snapshot_requests:
            return True
        return self.replica.role is not Role.FOLLOWER and \
            self.storage.needs_fsync(rd.snapshot_chunks, rd.snapshot, rd.entries, rd.hard_state)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        r = self.replica
        while not self._closed:
            await self._wake.wait()
            if timeline.ENABLED:
                timeline.mark("host.woke")
            self._wake.clear()
            if self._handoff is not None:   # begun by start_client_work()
                rd, self._handoff = self._handoff, None
                if not await self._carry_out(rd, loop):
                    return
            if self.compact_due:
                self._compact_log()
                self.compact_due = False
            self._take_client_work()
            while r.has_ready() and not self._closed:
                rd = r.ready()
                self._busy = True
                if timeline.ENABLED:
                    timeline.mark("host.ready")
                self._begin(rd)
                if not await self._carry_out(rd, loop):
                    return
                self._take_client_work()

    def _begin(self, rd: Ready) -> None:
        """Step 1 of the Ready contract: role changes, the messages that need no persist, entries seen."""
        self.status_version += 1   # e.g. a proposal's new last index, before the Ready is finished
        if rd.soft_state is not None:
            if rd.soft_state.role is Role.FOLLOWER:
                self.writes.fail_all(Outcome.OUTCOME_UNKNOWN)
                self._snapshots.clear()   # closes the sources: their engine snapshots are released
            elif rd.soft_state.role is Role.LEADER:
                self.leader_changes += 1
        # Confirmed reads whose index is applied already need neither this
        # Ready's fsync nor its apply (R3): served now, their answers out with
        # the Appends, not after a leader's fsync of writes that came with them.
        early = bool(rd.reads) and self._serve_reads(rd.reads, self.replica.log.applied_index)
        if rd.messages:
            self._send_all(rd.messages)
        if rd.messages or early:
            flush_deferred()   # a leader's Appends: on the wire before its own fsync, which they overlap
        # A snapshot emptied the log past its index; entries in the same Ready came after it.
        self.writes.observe(rd.entries, rd.snapshot.index + 1 if rd.snapshot is not None else None)

    async def _carry_out(self, rd: Ready, loop: asyncio.AbstractEventLoop) -> bool:
        """Steps 2-6 of a begun Ready. False: the host closed meanwhile."""
        if rd.snapshot_chunks or rd.snapshot is not None:
            # Snapshot work (large) goes to the I/O thread.
            await loop.run_in_executor(self._io, self.storage.persist, rd.snapshot_chunks, rd.snapshot,
                                       rd.entries, rd.hard_state)
            if self._closed:
                return False
        else:
            self._persist_inline(rd)
        self._send_after_persist(rd)
        self._finish(rd)
        return True

    def _send_after_persist(self, rd: Ready) -> None:
        """Step 3: e.g. a follower's AppendAck, on the wire before the apply
        (the leader waits for it, not for our apply)."""
        sent = bool(rd.messages_after_persist)
        if sent:
            self._send_all(rd.messages_after_persist)
        hs = rd.hard_state
        if hs is not None and (self.last_ack is None or hs.promised_epoch > self.last_ack[0]):
            sent = True
            # A promise of a later epoch is durable: this member acknowledges no
            # earlier one again. Learners hear it as (epoch, 0), which claims
            # nothing else, so writes they count in an earlier epoch end at once
            # when too few of its followers are left (learn_board.py), not at
            # their timeout; after this Ready's own acknowledgements, in order.
            self._acknowledged(hs.promised_epoch, 0)
        if sent:
            flush_deferred()

    def _send_all(self, messages) -> None:
        """Sends `messages`; accepted AppendAcks also go to on_ack (a member's
        durable match, which learner clients count: the Learn feed)."""
        for m in messages:
            self._send(m.recipient, m)
            if type(m) is AppendAck and m.result is AppendResult.ACCEPTED:
                self._acknowledged(m.epoch, m.index)

    def _acknowledged(self, epoch: int, match: int) -> None:
        if self.last_ack is None or (epoch, match) > self.last_ack:   # a re-acknowledgement may be lower
            self.last_ack = (epoch, match)
        if self._on_ack is not None:
            self._on_ack(self.rg, epoch, match)

    def _persist_inline(self, rd: Ready) -> None:
        """Step 2 of a Ready without snapshot work, on this thread. Log
        entries are fsynced inline, on every member ("The node" in
        server/replication/README.md): an I/O thread costs two thread
        hand-offs per round, each a wait for the GIL on a busy machine, and
        the loop has nothing better to do than what waits for this fsync.
        The Ready's messages (a leader's Appends) are on the wire already
        (_begin flushes the peer links, peers.py; a link whose previous send
        has not completed sends them after it, which can be after this
        fsync), so the followers' fsyncs overlap this one; acknowledgements
        go right after it, before the apply (_send_after_persist). A Ready that needs no fsync keeps
        its commit hint for the next fsynced write (log_store.py)."""
        if self.storage.needs_fsync(rd.snapshot_chunks, rd.snapshot, rd.entries, rd.hard_state):
            self.storage.persist((), None, rd.entries, rd.hard_state)
            # Learner writes hear now, as the Appends' acknowledgements are on their way to them too.
            if rd.entries and self.replica.role is not Role.FOLLOWER and self.writes.durable_on_leader(rd.entries):
                flush_deferred()
        elif rd.hard_state is not None:
            self.storage.persist((), None, (), rd.hard_state)

    def _finish(self, rd: Ready) -> None:
        """Steps 4-6 of a Ready whose persist is done: apply, answer, advance."""
        if rd.snapshot is not None:   # its dedup window and seqs (the next stamps go above them)
            self.writes.installed_snapshot(rd.snapshot.index)
        self._apply(rd)
        if rd.committed_entries:
            # A flush point: the answers to what was just applied leave now,
            # before the rest of the round (reads, advance, status), not at
            # the end of the loop round. One client +1.4 to +5.9% in three
            # A/Bs (bench/RESULTS.md, 2026-11-28 10:55 entry).
            flush_deferred()
        if timeline.ENABLED and rd.committed_entries:
            timeline.mark("host.applied")
        self._serve_reads(rd.reads)
        self._fail_reads(rd)
        self.replica.advance(rd)
        if timeline.ENABLED:
            timeline.mark("host.advanced")
        # After advance: the replica's applied index then includes this Ready's
        # entries, which the pinned engine state of a new snapshot holds.
        for req in rd.snapshot_requests:
            self._serve_snapshot(req)
        if self.recovering:
            self._check_recovered()   # also after a snapshot install (no committed entries)
        self.status_version += 1
        self._busy = False

    def _take_client_work(self) -> None:
        r = self.replica
        # Fresh, not from the last step: a read is checked against the lease
        # at this moment (LL4), and the Ready that follows starts rounds now.
        r.observe_time(lease_clock())
        self.writes.propose_pending()
        if self._pending_reads:
            pending_reads, self._pending_reads = self._pending_reads, []
            if r.role is not Role.FOLLOWER:
                self._start_reads(pending_reads)
            else:
                for pending in pending_reads:
                    pending.settle(Result(Outcome.NOT_LEADER, r.epoch, r.leader_id))

    def _start_reads(self, reads: list[_Read]) -> None:
        """Starts the ReadIndex round(s) of `reads`, which arrived together. A
        learner may know a write committed before this leader does (the
        learner writes answered but not applied: WritePath.told_keys); a read
        waits for those only if it reads their keys. So a get of any other
        key is served as without learners (floor 0: R1's commit index), and
        the rest, gets of those keys and scans, wait for every learner write
        told of (floor None). Linearizable per key: the state a clean get
        reads differs from the one at the told index only in other keys."""
        told = self.writes.told_keys
        clean, rest = (reads, []) if not told else ([], [])
        if told:
            for p in reads:
                (clean if p.key is not None and p.key not in told else rest).append(p)
        for group, floor in ((clean, 0), (rest, None)):
            if group:
                self._read_token += 1
                self._read_groups[self._read_token] = group
                self.replica.read_index(self._read_token, floor)

    def _apply(self, rd: Ready) -> None:
        if not rd.committed_entries:
            return
        before = self.writes.applied_records
        self.writes.apply(rd.committed_entries)
        if self.recovering:
            self._check_recovered()
        self._ops_seen += self.writes.applied_records - before
        now = time.monotonic()
        if now - self._ops_window_start >= 1.0:
            self.ops_per_second = self._ops_seen / (now - self._ops_window_start)
            self._ops_seen, self._ops_window_start = 0, now

    def _serve_reads(self, reads, upto: int | None = None) -> bool:
        """Serves the confirmed reads of `reads` (a Ready's) whose read index is
        at most `upto` (None: all); returns whether any were. Each group is
        served once: a later call skips those served before."""
        r = self.replica
        served = False
        for rs in reads:
            if upto is not None and rs.read_index > upto:
                continue
            group = self._read_groups.pop(rs.request_id, ())
            served = served or bool(group)
            for pending in group:
                if pending.future.done():
                    continue
                try:
                    value = pending.read()
                except Exception as exc:  # noqa: BLE001 - the read's own error goes to its caller
                    pending.settle(exc)
                    continue
                pending.settle(Result(Outcome.OK, r.epoch, self.node_id, value))
        return served

    def _fail_reads(self, rd: Ready) -> None:
        for fr in rd.failed_reads:
            outcome = Outcome.TIMEOUT if fr.reason is ReadFailure.TIMEOUT else Outcome.NOT_LEADER
            for pending in self._read_groups.pop(fr.request_id, ()):
                pending.settle(Result(outcome, fr.epoch, fr.leader_id))

    def _serve_snapshot(self, req: SnapshotRequest) -> None:
        """Chunk `req.offset` of the snapshot being sent to a member. A source
        keeps its generator (over a pinned engine snapshot) and only the chunks
        the member may still ask for again: the one it asks for and the next.
        Asking for an older one means a restart: a new snapshot."""
        r = self.replica
        src = self._snapshots.get(req.member)
        if req.snapshot_index is None or src is None or src.index != req.snapshot_index \
                or req.offset < src.first_kept():
            self._snapshots.pop(req.member, None)
            if req.snapshot_index is not None:
                r.abort_snapshot(req.member)     # that snapshot is gone: start over
                self._wake.set()
                return
            index = r.log.applied_index
            src = self._snapshots[req.member] = _SnapshotSource(index, self.storage.snapshot_chunks(index))
        try:
            data = src.chunk(req.offset)
        except TableNotFoundError:   # a table dropped since the source listed it: the next snapshot has it dropped
            data = None
        if data is None:
            self._snapshots.pop(req.member, None)
            r.abort_snapshot(req.member)
            self._wake.set()
            return
        try:
            done = src.chunk(req.offset + 1) is None
        except TableNotFoundError:   # as above: this transfer ends; the member asks again
            self._snapshots.pop(req.member, None)
            r.abort_snapshot(req.member)
            self._wake.set()
            return
        if done:
            self._snapshots.pop(req.member, None)
        r.snapshot_chunk(req.member, src.index, req.offset, data, done)
        self._wake.set()

    # ------------------------------------------------------------- helpers
    def _compact_log(self) -> None:
        """Drops log entries the engine holds durably (S5). Retention: a leader
        keeps what some member still lacks (it can catch up from the log,
        cheaper than a snapshot) unless the log has grown past
        RETAIN_FACTOR times the compaction threshold (a member that far
        behind gets a snapshot). Runs between Readys (no persist in flight)."""
        r = self.replica
        index = min(self.storage.db.applied_index, r.log.stable_index, r.log.applied_index)
        members = r.progress()
        if members and self.compact_due != COMPACT_FORCE:
            index = min(index, min(p.match for p in members.values()))
        if self._snapshots:   # even when forced: a member installing one needs the log after it
            index = min(index, min(src.index for src in self._snapshots.values()))
        if index > r.log.base.index:
            r.compact_log(index)
            self.storage.log.compact(index)
            log.info("rg %d: log compacted to %d", self.rg, index)

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self.writes.fail_all(Outcome.OUTCOME_UNKNOWN)
        pending_reads, self._pending_reads = self._pending_reads, []
        for pending in [*pending_reads, *(p for group in self._read_groups.values() for p in group)]:
            pending.settle(Result(Outcome.NOT_LEADER, self.replica.epoch, None))
        self._read_groups.clear()
        self.storage.close()
