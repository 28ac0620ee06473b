"""WritePath: a replica's client writes, from arrival to answer.

Purpose: the leader-side half of ReplicaHost (replica_host.py): batches the
writes that arrive together into log entries, applies the sequencer rule,
evaluates conditional writes, deduplicates retried requests, and answers each
client when its entry is applied.

Batching: every write pending when the host loop comes round (typically
everything that arrived during the previous fsync) becomes ONE entry: the
client batches are merged and stamped in C (write_batch.merge_stamped), so
one fsync per member and one Append per follower carry all of them.

Sequencer rule: each record is stored with max(its seq, previous + 1), where
"previous" is the last seq this replica proposed or saw in its log (the last
*proposed*, because entries are pipelined), so seqs increase in log order
even across routers whose clocks differ.

Conditional writes (if_seq / if_absent, one record each) are checked against
the state in log order: they wait until every entry this leader proposed is
applied (new plain writes are held back meanwhile, so they cannot starve),
are then checked against the engine, and the accepted ones are proposed at
once, ahead of the held-back writes; one on a key that a write accepted in
the same round changes waits for the next round (its seq is not known yet).
Every replica applies the same entries, so the outcome is the leader's check,
made exactly once.

Deduplication: a write may carry a request id (entry_payload.py puts the ids
in the log). Every replica remembers the ids it applied in the last 15 s of
its log (at least DEDUP_WINDOW of them, at most DEDUP_MAX_IDS), with their
stored seqs, in its engine (dedup.py: part of the replicated state, so
restarts and snapshot installs keep it); a retry of an applied id
is answered from there, a retry of an id still in flight waits for the same
entry, and a retry of an id in this replica's log but not applied yet waits
for that entry (proposed anew if another entry replaced it).

Learners (server/replication/README.md, "The client as a learner"): a
write submitted with learner=True is answered DURABLE_ON_LEADER the moment
the leader's own copy of its entry is durable (durable_on_leader, called by
the host right after its fsync), with (index, seqs, voters), and gets no
answer at apply: the client counts the commit itself, from the followers'
Learn acknowledgements (server/node/learn_board.py). Not under a joint
config (a commit there needs two majorities) nor while a table drop is in
the log unapplied (the write may be voided by it: TABLE_DROPPED), nor for a
write the applied state voids already; those are answered at apply as usual.

Outcomes (rule C3 and E5 of server/replication/README.md):
  OK               applied in the epoch it was proposed in; value (index, seqs)
  DURABLE_ON_LEADER  (learners only) in the leader's log, durably; value (index, seqs, voters)
  NOT_LEADER       this replica does not lead, or another entry committed at
                   the index: the write definitely did not happen
  OUTCOME_UNKNOWN  the replica stepped down with the write in its log
  CONDITION_FAILED the condition did not hold; value: the current seq (or b"")
  TABLE_DROPPED    the write's table was dropped before it committed: voided
                   on every replica alike

Thread-safety: the host's event loop only.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from engine._native import write_batch
from server.node import entry_payload
from server.node.dedup import APPLIED, MAX_ENTRY_REQUESTS, VOIDED, Applied, DedupWindow
from server.node.replica_storage import ReplicaStorage
from server.replication.errors import NotLeaderError
from server.replication.messages import Entry, EntryKind, Role
from server.replication.replica import Replica

log = logging.getLogger(__name__)

MAX_ENTRY_BYTES = 4 << 20   # pending writes beyond this go into further entries of the same proposal
# ... and request ids beyond MAX_ENTRY_REQUESTS (dedup.py): an entry's ids always fit the dedup window


class Outcome(IntEnum):
    """Mirrors quorumkv.v1.Code of server/proto/data.proto."""

    OK = 1
    NOT_LEADER = 2
    OUTCOME_UNKNOWN = 5
    TIMEOUT = 6
    CONDITION_FAILED = 8
    TABLE_DROPPED = 9
    FORGOTTEN = 10
    DURABLE_ON_LEADER = 11


@dataclass(slots=True)
class Result:
    outcome: Outcome
    epoch: int
    leader: int | None
    value: Any = None       # writes: (index, seqs); reads: what the read function returned


Listener = Callable[[asyncio.Future], None]


@dataclass(slots=True)
class _Write:
    rep: bytes
    future: asyncio.Future
    request_id: int = 0
    if_seq: bytes = b""
    if_absent: bool = False
    on_done: Listener | None = None
    first_seq: bytes = b""   # a retry: the lowest seq any attempt was stamped with (submit)
    learner: bool = False    # may be answered DURABLE_ON_LEADER (durable_on_leader)


@dataclass(slots=True)
class _Waiting:
    epoch: int
    writes: list[_Write] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    learners: bool = False   # some of `writes` are learners'


def notify(fut: asyncio.Future, on_done: Listener | None) -> None:
    """Calls a submitter's listener now that `fut` is done (writes here, reads
    in replica_host.py). Its failure is logged, not raised: it must not stop
    the round that answered it."""
    if on_done is not None:
        try:
            on_done(fut)
        except Exception:  # noqa: BLE001 - the listener's bug, not the write's
            log.exception("a request's listener failed")


def _copy_outcome(first: asyncio.Future, twin: asyncio.Future, on_done: Listener | None) -> None:
    """A retry that joined an attempt in flight gets its outcome (cancellation
    included: the caller of the first gave up, the retry's caller decides)."""
    if twin.done():
        return
    if first.cancelled():
        twin.cancel()
    else:
        twin.set_result(first.result())
    notify(twin, on_done)


class WritePath:
    def __init__(self, node_id: int, replica: Replica, storage: ReplicaStorage):
        self.node_id = node_id
        self.replica = replica
        self.storage = storage
        lg = replica.log
        first = max(lg.first_index, lg.applied_index + 1)
        tail = lg.entries(first, lg.last_index) if lg.last_index >= first else []
        self.last_seq = storage.db.last_seq
        self._last_drop_index = 0   # the highest index of a table drop seen in the log (observe)
        # The window as of the engine's applied index (those above it are
        # replayed through apply() and recorded there).
        self._applied = DedupWindow(source=storage.dedup_rows)
        self._logged: dict[int, int] = {}        # request id -> index of a log entry holding it, not applied yet
        self._ids_at: dict[int, set[int]] = {}   # log index -> request ids seen in entries at that index
        self._awaiting_log: dict[int, list[_Write]] = {}   # retries of ids in `_logged`: answered when it applies
        self.observe(tail)
        self._pending: list[_Write] = []
        self._conditional: list[_Write] = []
        self._waiting: dict[int, _Waiting] = {}            # log index -> our clients' writes in that entry
        self._inflight: dict[int, asyncio.Future] = {}      # request id -> the first attempt's future
        self.applied_records = 0
        self.early_answers = 0   # learner writes answered DURABLE_ON_LEADER (metrics, tests)
        # The internal keys of the learner writes answered and not applied yet:
        # key -> the index of the last such entry writing it (reads of these
        # keys wait for them: ReplicaHost._start_reads), and index -> its keys.
        self.told_keys: dict[bytes, int] = {}
        self._told_at: dict[int, list[bytes]] = {}
        self._told_upto = (0, 0)   # (epoch, index): that epoch's entries up to index had their keys registered

    # ---------------------------------------------------------------- inputs
    def submit(self, rep: bytes, request_id: int = 0, if_seq: bytes = b"", if_absent: bool = False,
               on_done: Listener | None = None, first_seq: bytes = b"", learner: bool = False) -> asyncio.Future:
        """A client's write; its future resolves to a Result. `on_done(future)`,
        if given, is called the moment the future is done, inside the call
        that settled it (typically the apply): one loop round sooner than a
        done-callback, which asyncio schedules for the next round. (A retry
        that joins an attempt in flight hears a round after that attempt:
        it follows the first future's done-callback.) `first_seq`: set on a
        retry, the lowest seq any attempt of it that may have applied was
        stamped with; a retry the window no longer knows but may have
        forgotten (dedup.py) is answered FORGOTTEN when it would be proposed,
        and not applied. `learner`: see "Learners" above (a retry that joins
        or waits for an entry in the log is answered as usual)."""
        fut = asyncio.get_running_loop().create_future()
        if request_id:
            done = self._applied.get(request_id)
            if done is not None:
                fut.set_result(self._first_outcome(done))
                notify(fut, on_done)
                return fut
            first = self._inflight.get(request_id)
            if first is not None and not first.done():
                first.add_done_callback(lambda f: _copy_outcome(f, fut, on_done))
                return fut
            self._inflight[request_id] = fut
            if self._logged.get(request_id, 0) > self.replica.log.applied_index:
                # In this replica's log, not applied yet (typically: proposed by a
                # deposed leader, and this one is new): its outcome is that entry's.
                self._awaiting_log.setdefault(request_id, []).append(
                    _Write(rep, fut, request_id, if_seq, if_absent, on_done, first_seq))
                return fut
        w = _Write(rep, fut, request_id, if_seq, if_absent, on_done, first_seq, learner)
        (self._conditional if if_seq or if_absent else self._pending).append(w)
        return fut

    def _first_outcome(self, done: Applied) -> Result:
        """A retry's answer: the outcome its request had when it applied."""
        if done.status == VOIDED:
            return Result(Outcome.TABLE_DROPPED, self.replica.epoch, self.node_id)
        return Result(Outcome.OK, self.replica.epoch, self.node_id, (done.index, done.seqs))

    def observe(self, entries: Sequence[Entry], replaced_from: int | None = None) -> None:
        """Entries entering this replica's log, from entries[0].index on (what
        was there before is gone: a replaced suffix): the next stamps go above
        their seqs, and their request ids are known to be in the log. Retries
        that waited for an entry the log no longer holds are queued again.
        `replaced_from`: the log was emptied from there before `entries` came
        (a snapshot install: its index + 1, with or without entries after it
        in the same Ready); by default entries[0].index."""
        if replaced_from is None:
            if not entries:
                return
            replaced_from = entries[0].index
        dropped = self._forget_logged_from(replaced_from)
        for e in entries:
            if e.kind is EntryKind.WRITE and entry_payload.dropped_table(e.payload) is not None:
                self._last_drop_index = max(self._last_drop_index, e.index)
            elif e.kind is EntryKind.WRITE:
                requests, rep = entry_payload.decode(e.payload)
                s = write_batch.max_seq(rep)
                if s > self.last_seq:
                    self.last_seq = s
                for request_id, _first, _count in requests:
                    if request_id not in self._applied:
                        self._logged[request_id] = e.index
                        self._ids_at.setdefault(e.index, set()).add(request_id)
        self._requeue_awaiting(dropped - self._logged.keys())

    def _forget_logged_from(self, index: int) -> set[int]:
        """Forgets the request ids logged at `index` or later (those entries left
        the log); returns them."""
        dropped: set[int] = set()
        for at in [at for at in self._ids_at if at >= index]:
            for request_id in self._ids_at.pop(at):
                if self._logged.get(request_id) == at:
                    del self._logged[request_id]
                    dropped.add(request_id)
        return dropped

    def _requeue_awaiting(self, request_ids: Iterable[int]) -> None:
        """Retries that waited for an entry no longer in the log: proposed anew
        (settled by their id first: _retries_settled)."""
        for request_id in request_ids:
            for w in self._awaiting_log.pop(request_id, []):
                (self._conditional if w.if_seq or w.if_absent else self._pending).append(w)

    # ---------------------------------------------------------------- proposing
    def propose_pending(self) -> None:
        r = self.replica
        if not self._pending and not self._conditional:
            return
        if r.role is Role.FOLLOWER:
            self._reject(self._pending + self._conditional, Outcome.NOT_LEADER)
            self._pending, self._conditional = [], []
            return
        # A retry is checked again when it is proposed, not only when it was
        # submitted: it may have come in while this replica followed, and its
        # first attempt may have reached this log since (an old leader's late
        # Append stepped in the same turn as the appointment, not shown to
        # us by a Ready yet: observed here, once more, harmlessly). Its
        # outcome is then the first attempt's; one the window may have
        # forgotten is not proposed, whatever the proposing role
        # (LEADER_ELECT proposes too, right after a leader change).
        if any(w.request_id for w in self._pending) or any(w.request_id for w in self._conditional):
            if r.log.last_index > r.log.stable_index:
                self.observe(r.log.entries(r.log.stable_index + 1, r.log.last_index))
            self._pending = self._retries_settled(self._pending)
            self._conditional = self._retries_settled(self._conditional)
        writes: list[_Write] = []
        if self._conditional:
            if r.role is not Role.LEADER or r.log.applied_index < r.log.last_index:
                return   # the barrier: wait until everything proposed is applied (holding plain writes too)
            writes = self._check_conditions(self._conditional)   # leaves the deferred ones in _conditional
        writes.extend(self._pending)
        self._pending = []
        if writes:
            self._propose(writes)

    def _retries_settled(self, writes: list[_Write]) -> list[_Write]:
        """`writes` without the ones whose request id decides their outcome
        now: in the window (the first attempt's outcome), in this log and not
        applied yet (waits for that entry, as in submit), or a retry the window
        may have forgotten (dedup.py: answered FORGOTTEN, nothing applied)."""
        kept = []
        applied_index = self.replica.log.applied_index
        for w in writes:
            done = self._applied.get(w.request_id) if w.request_id else None
            if done is not None:
                self._resolve(w, self._first_outcome(done))
            elif w.request_id and self._logged.get(w.request_id, 0) > applied_index:
                self._awaiting_log.setdefault(w.request_id, []).append(w)
            elif w.first_seq and self._applied.may_have_forgotten(w.first_seq):
                self._resolve(w, Result(Outcome.FORGOTTEN, self.replica.epoch, self.node_id))
            else:
                kept.append(w)
        return kept

    def _check_conditions(self, conditional: list[_Write]) -> list[_Write]:
        """The conditional writes whose condition holds now. One whose key a
        write accepted just before it changes (its seq not stamped yet) is
        kept for the next round, which checks it against the applied state:
        an answer of CONDITION_FAILED carries the key's current seq. (A retry
        whose id applied meanwhile was answered just before: _retries_settled.)"""
        accepted: list[_Write] = []
        later: list[_Write] = []
        changed: set[tuple[int, bytes]] = set()   # keys accepted this round
        for w in conditional:
            (_kind, tid, user_key, _value, _seq), = write_batch.decode(w.rep)   # one record: checked on arrival
            if (tid, user_key) in changed:
                later.append(w)
                continue
            e = self.storage.get_entry(tid, user_key)
            live = e is not None and not e.deleted
            current = e.seq if live else None
            ok = (not live) if w.if_absent else (live and current == w.if_seq)
            if ok:
                accepted.append(w)
                changed.add((tid, user_key))
            else:
                self._resolve(w, Result(Outcome.CONDITION_FAILED, self.replica.epoch, self.node_id, current or b""))
        self._conditional = later
        return accepted

    def _propose(self, writes: list[_Write]) -> None:
        r = self.replica
        groups: list[list[_Write]] = [[]]
        size = ids = 0
        for w in writes:
            if size and (size + len(w.rep) > MAX_ENTRY_BYTES or ids == MAX_ENTRY_REQUESTS):
                groups.append([])
                size = ids = 0
            groups[-1].append(w)
            size += len(w.rep)
            ids += bool(w.request_id)
        first = r.log.last_index + 1
        payloads: list[bytes] = []
        waiting: list[_Waiting] = []
        last_seq = self.last_seq
        for i, group in enumerate(groups):
            merged, last_seq, offsets = write_batch.merge_stamped([w.rep for w in group], last_seq, first + i)
            ids = [(w.request_id, off, write_batch.count(w.rep)) for w, off in zip(group, offsets) if w.request_id]
            payloads.append(entry_payload.encode(ids, merged))
            waiting.append(_Waiting(0, group, offsets, any(w.learner for w in group)))
        try:
            p = r.propose(payloads)
        except NotLeaderError:
            self._reject(writes, Outcome.NOT_LEADER)
            return
        self.last_seq = last_seq
        for i, w in enumerate(waiting):
            w.epoch = p.epoch
            self._waiting[p.first_index + i] = w

    # ---------------------------------------------------------------- learners
    def durable_on_leader(self, entries: Sequence[Entry]) -> int:
        """`entries` are durable in this leader's log (the host calls this right
        after their fsync, in the Ready that logged them): answers their
        learner writes DURABLE_ON_LEADER (see "Learners" above); returns how
        many. Those writes get no answer at apply (their futures still
        settle then, for retries that joined them)."""
        r = self.replica
        config = r.config
        if config is None or config.joint or self._last_drop_index > r.log.applied_index:
            return 0
        answered = 0
        voters: tuple[int, ...] | None = None
        for e in entries:
            w = self._waiting.get(e.index)
            if w is None or not w.learners or w.epoch != e.epoch or e.epoch != r.epoch:
                continue
            if voters is None:
                voters = tuple(sorted(config.voters))
            _requests, rep = entry_payload.decode(e.payload)
            if self.storage.voided_tables(rep):   # a table dropped already: answered at apply (TABLE_DROPPED)
                continue
            stored = write_batch.seqs(rep, 0, write_batch.count(rep))
            r.learners_told(e.index)   # before any answer leaves: reads from now on wait for it
            self._tell_upto(e.index)
            for cw, off in zip(w.writes, w.offsets):
                if not cw.learner or cw.on_done is None:
                    continue
                count = write_batch.count(cw.rep)
                early = asyncio.get_running_loop().create_future()
                early.set_result(Result(Outcome.DURABLE_ON_LEADER, e.epoch, self.node_id,
                                        (e.index, stored[16 * off:16 * (off + count)], voters)))
                on_done, cw.on_done = cw.on_done, None
                notify(early, on_done)
                answered += 1
        self.early_answers += answered
        return answered

    def _tell_upto(self, index: int) -> None:
        """A learner may count `index` committed, so every entry up to it too:
        the keys of every record of the unapplied entries up to `index` (not
        only the learner writes'), since a multi-key batch before a told write
        is ordered before it."""
        r = self.replica
        lg = r.log
        upto_epoch, upto = self._told_upto
        lo = max(upto if upto_epoch == r.epoch else 0, lg.applied_index) + 1
        if lo > index:
            return   # registered already (or applied)
        told_keys = self.told_keys
        for e in lg.entries(lo, index):
            if e.kind is not EntryKind.WRITE or entry_payload.dropped_table(e.payload) is not None:
                continue
            keys = write_batch.internal_keys(entry_payload.decode(e.payload)[1])
            for k in keys:
                told_keys[k] = e.index
            self._told_at.setdefault(e.index, []).extend(keys)
        self._told_upto = (r.epoch, index)

    # ---------------------------------------------------------------- applying
    def apply(self, entries: Sequence[Entry]) -> None:
        """Committed entries, in log order: into the engine (with the dedup
        window, dedup.py), then the answers."""
        for e in entries:
            if self._told_at:
                self._untell(e.index)
            w = self._waiting.pop(e.index, None)
            dropped = entry_payload.dropped_table(e.payload) if e.kind is EntryKind.WRITE else None
            if e.kind is EntryKind.WRITE and dropped is None:
                self._apply_write(e, w)
                continue
            if dropped is not None:
                self.storage.drop_table(dropped)
                if w is not None:
                    for cw in w.writes:
                        self._resolve(cw, Result(Outcome.OK if w.epoch == e.epoch else Outcome.NOT_LEADER,
                                                 self.replica.epoch, self.node_id, (e.index, b"")))
            elif w is not None:   # a NOOP where we proposed writes: another leader's entry took the index
                self._reject(w.writes, Outcome.NOT_LEADER)
            self._settle_logged(e.index)   # request ids a replaced entry held at this index

    def _untell(self, index: int) -> None:
        """The entry at `index` applied (or left the picture): its keys are no longer told-not-applied."""
        told_keys = self.told_keys
        for k in self._told_at.pop(index, ()):
            if told_keys.get(k) == index:
                del told_keys[k]

    def _apply_write(self, e: Entry, w: _Waiting | None) -> None:
        requests, rep = entry_payload.decode(e.payload)
        n = write_batch.count(rep)
        self.applied_records += n
        stored = write_batch.seqs(rep, 0, n) if requests or w is not None else b""
        if requests:
            voided = self.storage.voided_tables(rep)
            tids = [r[1] for r in write_batch.decode(rep)] if voided else []   # rare: a write raced a drop
            window = [(request_id, VOIDED if voided.intersection(tids[first:first + count]) else APPLIED,
                       stored[16 * first:16 * (first + count)]) for request_id, first, count in requests]
            batch = self._applied.record(e.index, window, write_batch.max_seq(rep))
            if batch is not None:   # before the records: see dedup.py
                self.storage.apply_dedup(batch)
        voided = self.storage.apply([rep])
        for request_id, _first, _count in requests:
            self._inflight.pop(request_id, None)
        self._settle_logged(e.index)
        if w is None:
            return
        if w.epoch != e.epoch:   # another leader's entry committed at that index: ours never will
            self._reject(w.writes, Outcome.NOT_LEADER)
            return
        for cw, off in zip(w.writes, w.offsets):
            if voided and voided.intersection(write_batch.table_ids(cw.rep)):
                self._resolve(cw, Result(Outcome.TABLE_DROPPED, e.epoch, self.node_id))
                continue
            count = write_batch.count(cw.rep)
            self._resolve(cw, Result(Outcome.OK, e.epoch, self.node_id,
                                     (e.index, stored[16 * off:16 * (off + count)])))

    def _settle_logged(self, index: int) -> None:
        """After the entry at `index` applied (its request ids recorded): the
        retries waiting for an id logged there get the id's first outcome if
        it applied (there or earlier); ids that the applied entry does not
        hold (another entry replaced theirs) never happened, so their retries
        are proposed anew."""
        for request_id in self._ids_at.pop(index, ()):
            at = self._logged.get(request_id)
            if at is not None and at != index:
                continue   # logged again at a later index: settled when that one applies
            self._logged.pop(request_id, None)
            for w in self._awaiting_log.pop(request_id, []):
                done = self._applied.get(request_id)
                if done is not None:
                    self._resolve(w, self._first_outcome(done))
                else:
                    (self._conditional if w.if_seq or w.if_absent else self._pending).append(w)

    def installed_snapshot(self, index: int) -> None:
        """A snapshot replaced the state up to `index`: the window is the one it
        carried, the next stamps go above its seqs, and the ids logged at or
        below it are settled by it. (The ids the install dropped from the log
        past it were forgotten when its Ready began: observe's replaced_from,
        before the entries that came after it in the same Ready were logged.)"""
        self._applied.reset(self.storage.dedup_rows)
        self.last_seq = max(self.last_seq, self.storage.db.last_seq)
        for at in [i for i in self._told_at if i <= index]:
            self._untell(at)
        for at in sorted(i for i in self._ids_at if i <= index):
            self._settle_logged(at)

    def propose_drop(self, table_id: int) -> asyncio.Future:
        """Proposes dropping a table on every replica; resolves when applied."""
        fut = asyncio.get_running_loop().create_future()
        try:
            p = self.replica.propose([entry_payload.encode_drop(table_id)])
        except NotLeaderError:
            fut.set_result(Result(Outcome.NOT_LEADER, self.replica.epoch, self.replica.leader_id))
            return fut
        self._waiting[p.first_index] = _Waiting(p.epoch, [_Write(b"", fut)], [0])
        return fut

    # ---------------------------------------------------------------- failing
    def fail_all(self, outcome: Outcome) -> None:
        """Stepping down: writes in the log have an unknown outcome; writes not
        yet proposed definitely did not happen."""
        for w in self._waiting.values():
            self._reject(w.writes, outcome)
        self._waiting.clear()
        self._told_at.clear()   # a follower serves no reads; as leader again, R1 waits for its NOOP
        self.told_keys.clear()
        self._told_upto = (0, 0)
        for waiting in self._awaiting_log.values():   # retries of entries in the log: as unknown as those
            self._reject(waiting, outcome)
        self._awaiting_log.clear()
        self._reject(self._pending + self._conditional, Outcome.NOT_LEADER)
        self._pending, self._conditional = [], []

    def _reject(self, writes: list[_Write], outcome: Outcome) -> None:
        r = self.replica
        for w in writes:
            self._resolve(w, Result(outcome, r.epoch, r.leader_id))

    def _resolve(self, w: _Write, result: Result) -> None:
        if w.request_id and self._inflight.get(w.request_id) is w.future:
            del self._inflight[w.request_id]
        if not w.future.done():
            w.future.set_result(result)
            notify(w.future, w.on_done)
