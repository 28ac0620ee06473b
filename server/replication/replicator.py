"""Replicator: a leader's sending side, one Progress per member (README S1-S3, C1).

Purpose: decides what each member gets next (Appends, pipelined in REPLICATE;
probes in PROBE; snapshot chunks in SNAPSHOT; batches only, for members beyond
a quorum: README "Trailing followers"), handles the members' answers to them,
retransmits on timeouts, and computes the index a quorum holds durably. The
Replica owns it while it leads and drops it on stepping down; everything it
sends goes into the Replica's outbox of immediate messages (leader messages
never wait for the leader's own fsync).

Invariants:
  1. Every message carries the leader's epoch, and every Append's prev is an
     entry of the leader's log (or its base).
  2. A member's match only grows, and only on its acknowledgements (sent after
     its fsync, C2) or on its report that it holds a snapshot.
  3. The leader counts itself at its log's stable index only (C1).

Thread-safety: none; owned by the leader's Replica.
"""
from __future__ import annotations

from server.replication.log import ReplicatedLog
from server.replication.messages import (
    Append,
    AppendAck,
    AppendResult,
    Config,
    Heartbeat,
    LogPosition,
    Message,
    SnapshotAck,
    SnapshotChunk,
)
from server.replication.options import ReplicaOptions
from server.replication.progress import Progress, ProgressState
from server.replication.quorum import has_quorum, majority, quorum_value
from server.replication.ready import SnapshotRequest


class Replicator:
    def __init__(self, leader_id: int, epoch: int, config: Config, log: ReplicatedLog, options: ReplicaOptions,
                 outbox: list[Message]):
        """Requires: the leader's log ends with its NOOP of `epoch` (it was just appended)."""
        self.leader_id = leader_id
        self.epoch = epoch
        self.config = config
        self._log = log
        self._opts = options
        self._outbox = outbox
        next_index = log.last_index  # probe from before the NOOP: members may lack only it
        learners = config.learners - config.all_voters()
        self.progress: dict[int, Progress] = {m: Progress(m, next_index, m in learners)
                                              for m in sorted(config.members()) if m != leader_id}
        self.ticks = 0   # since the appointment: every member counts as heard at 0 (CQ1)
        # quorum_index() runs after every acknowledgement: with one voter set
        # (no joint change), its inputs are fixed for this leadership.
        self._simple_quorum = not config.outgoing_voters
        self._voter_progress = [p for m, p in self.progress.items() if m in config.voters]
        self._leader_votes = leader_id in config.voters
        self._quorum_rank = majority(len(config.voters)) - 1
        # Quorum-first sending (README "Trailing followers"): the voters beyond
        # the _quorum_rank followers a quorum needs get new entries in batches.
        self._trail_after = 0
        self.trailing: frozenset[int] = frozenset()
        if (options.trailing_batch_entries and self._simple_quorum and self._leader_votes
                and len(self._voter_progress) > self._quorum_rank):
            self._trail_after = options.trailing_batch_entries
            self.trailing = frozenset(p.member for p in self._voter_progress[self._quorum_rank:])

    # ------------------------------------------------------------- quorum
    def quorum_index(self) -> int:
        """The highest index a quorum of voters holds durably (C1; learners never count)."""
        if self._simple_quorum:   # quorum.quorum_value for one voter set, without building a table
            values = [p.match for p in self._voter_progress]
            if self._leader_votes:
                values.append(self._log.stable_index)
            values.sort(reverse=True)
            return values[self._quorum_rank]
        matches = {m: p.match for m, p in self.progress.items() if not p.learner}
        matches[self.leader_id] = self._log.stable_index
        return quorum_value(self.config, matches)

    def matches(self) -> tuple[tuple[int, int], ...]:
        """(member, durable match) for every member, the leader included (status reports)."""
        return tuple(sorted([(m, p.match) for m, p in self.progress.items()]
                            + [(self.leader_id, self._log.stable_index)]))

    # ------------------------------------------------------------ sending
    def broadcast_appends(self) -> None:
        for pr in self.progress.values():
            self.send_appends(pr)

    def send_appends(self, pr: Progress) -> None:
        """Sends as many Appends as pr's state allows (one probe, or a full pipeline);
        a trailing member in REPLICATE only once a batch of entries waits for it."""
        if (pr.member in self.trailing and pr.state is ProgressState.REPLICATE and pr.next > pr.flush_to
                and self._log.last_index - pr.next + 1 < self._trail_after):
            return
        while pr.can_send_append(self._opts.max_inflight_appends):
            if pr.state is ProgressState.REPLICATE and pr.next > self._log.last_index:
                return   # nothing (more) for this member: the common case, checked before any lookup
            if not self._send_append(pr, allow_empty=pr.state is ProgressState.PROBE):
                break
            if pr.state is ProgressState.PROBE:
                break

    def send_commits(self) -> None:
        for pr in self.progress.values():
            self.send_commit(pr)

    def send_commit(self, pr: Progress) -> None:
        """Tells a member with a drained pipeline a commit index it has not heard
        (an empty Append: its prev is the member's match, so it cannot be rejected).
        Trailing members hear it with their next batch or heartbeat."""
        if pr.member in self.trailing:
            return
        if (self._opts.eager_commit and pr.state is ProgressState.REPLICATE and not pr.inflight
                and pr.sent_commit < min(self._log.commit_index, pr.match)):
            self._send_append(pr, allow_empty=True)

    def _send_append(self, pr: Progress, allow_empty: bool) -> bool:
        log = self._log
        if not allow_empty and pr.next == log.last_index + 1:
            return False   # nothing new for this member (the common case after an ack): skip the lookups
        prev_index = pr.next - 1
        prev_epoch = log.epoch_at(prev_index)
        if prev_epoch is None:
            pr.become_snapshot()  # S2: the entry before next is compacted away
            return False
        entries = log.entries(pr.next, log.last_index, self._opts.max_append_entries, self._opts.max_append_bytes)
        if not entries and not allow_empty:
            return False
        self._outbox.append(Append(epoch=self.epoch, sender=self.leader_id, recipient=pr.member,
                                   prev=LogPosition(prev_epoch, prev_index), entries=tuple(entries),
                                   commit_index=log.commit_index, last_index=log.last_index))
        pr.sent_append(entries[-1].index if entries else prev_index, len(entries))
        pr.sent_commit = max(pr.sent_commit, log.commit_index)
        return True

    def broadcast_heartbeats(self, read_round: int, now: int = 0) -> None:
        """Liveness, the commit index (at most what each member is known to hold, L4)
        and the read-confirmation round (R2), asking for the lease (LL1)."""
        commit = self._log.commit_index
        lease = self._opts.lease_ns
        for pr in self.progress.values():
            member_commit = min(commit, pr.match)
            pr.sent_commit = max(pr.sent_commit, member_commit)
            self._outbox.append(Heartbeat(epoch=self.epoch, sender=self.leader_id, recipient=pr.member,
                                          commit_index=member_commit, round=read_round, lease_ns=lease,
                                          sent_at_ns=now if lease else 0, last_index=self._log.last_index))

    def _rechoose_trailing(self) -> None:
        """A trailing member's match moved: the followers with the highest match
        make the quorum (a member keeps its place on a tie, then the lower id
        wins). So when a quorum follower stops answering, the next batch a
        trailing member acknowledges past it (at most a tick later) swaps them,
        and commits go on at full speed (the tick's batch is sent whole, one
        pipeline after another, so it gets past it even when it lagged by
        more than one pipeline holds)."""
        ranked = sorted(self._voter_progress, key=lambda p: (-p.match, p.member in self.trailing, p.member))
        trailing = frozenset(p.member for p in ranked[self._quorum_rank:])
        if trailing != self.trailing:
            self.trailing = trailing
            for p in ranked[:self._quorum_rank]:
                self.send_appends(p)   # what it was spared so far, at once

    def all_hold(self, index: int) -> bool:
        """Whether every member (learners included) has acknowledged the log up to `index`."""
        return all(pr.match >= index for pr in self.progress.values())

    def heard(self, member: int) -> None:
        """A message of this epoch came from `member` (CQ1)."""
        pr = self.progress.get(member)
        if pr is not None:
            pr.heard_tick = self.ticks

    def quorum_contact(self, window_ticks: int) -> bool:
        """CQ1: whether the members heard from within the last `window_ticks`
        ticks, with the leader, form a quorum of the config."""
        heard = [m for m, pr in self.progress.items() if self.ticks - pr.heard_tick < window_ticks]
        heard.append(self.leader_id)
        return has_quorum(self.config, heard)

    def tick(self) -> None:
        """Retransmit timers: probes and pipelines unanswered, snapshot chunks unanswered."""
        self.ticks += 1
        for pr in self.progress.values():
            if pr.state is ProgressState.SNAPSHOT:
                assert pr.transfer is not None
                pr.transfer.on_tick(self._opts.snapshot_retry_ticks)
            elif pr.outstanding():
                pr.idle_ticks += 1
                if pr.idle_ticks >= self._opts.retransmit_ticks:
                    pr.on_timeout()
        if self.trailing:   # a trailing member gets all it lacks now, in as many Appends as that takes
            last = self._log.last_index
            for m in self.trailing:
                self.progress[m].flush_to = last
        self.broadcast_appends()

    # ------------------------------------------------------------ answers
    def on_append_ack(self, msg: AppendAck) -> bool | None:
        """Records the member's answer. Returns None if there is nothing to do
        (unknown member, stale answer), else whether its match moved; then the
        caller commits what it can and calls send_to(member)."""
        pr = self.progress.get(msg.sender)
        if pr is None:
            return None
        if msg.result is AppendResult.ACCEPTED:
            if pr.state is not ProgressState.SNAPSHOT:
                moved = pr.on_accepted(msg.index)
                if moved and pr.member in self.trailing:
                    self._rechoose_trailing()
                return moved
            moved = msg.index > pr.match
            if moved:
                pr.match = msg.index
                if pr.member in self.trailing:
                    self._rechoose_trailing()
            if self._log.epoch_at(pr.match) is not None:
                pr.become_probe()  # it caught up some other way: back to the log
            return moved
        if msg.result is AppendResult.LOG_LOST:
            return False if pr.on_lost(msg.index, msg.hint_index, msg.lost_id) else None
        return False if pr.on_rejected(msg.index, msg.hint_index) else None

    def send_to(self, member: int) -> None:
        """Whatever the member should get now: more entries, or the commit index."""
        pr = self.progress.get(member)
        if pr is not None:
            self.send_appends(pr)
            self.send_commit(pr)

    def on_heartbeat_ack(self, member: int) -> None:
        pr = self.progress.get(member)
        if pr is not None and pr.state is ProgressState.PROBE and pr.match < self._log.last_index:
            pr.probe_sent = False  # the member is reachable: probe again now, not at the timeout
            self.send_appends(pr)

    def on_snapshot_ack(self, msg: SnapshotAck) -> bool:
        """Returns True when the member's match moved (then: commit, send_to)."""
        pr = self.progress.get(msg.sender)
        if pr is None:
            return False
        if not msg.installed:
            t = pr.transfer
            if pr.state is ProgressState.SNAPSHOT and t is not None and t.snapshot == msg.snapshot:
                t.on_ack(msg.next_offset)
            return False
        moved = pr.match < msg.snapshot.index <= self._log.last_index
        if moved:
            pr.match = msg.snapshot.index
            if pr.member in self.trailing:
                self._rechoose_trailing()
        if pr.state is ProgressState.SNAPSHOT:
            pr.become_probe()
        return moved

    # ----------------------------------------------------------- snapshots
    def snapshot_requests(self) -> list[SnapshotRequest]:
        """Asks the node for the next chunk of every transfer waiting for one (S2)."""
        out = []
        for pr in self.progress.values():
            t = pr.transfer
            if pr.state is ProgressState.SNAPSHOT and t is not None and not t.waiting():
                t.requested = True
                t.idle_ticks = 0
                out.append(SnapshotRequest(pr.member, t.snapshot.index if t.snapshot else None, t.next_offset))
        return out

    def snapshot_wanted(self) -> bool:
        for pr in self.progress.values():   # a loop, not any(genexpr): has_ready() asks this on every round
            if pr.state is ProgressState.SNAPSHOT and pr.transfer is not None and not pr.transfer.waiting():
                return True
        return False

    def snapshot_chunk(self, member: int, snapshot_index: int, offset: int, data: bytes, done: bool) -> None:
        """Sends the node's chunk, if the transfer still wants exactly it."""
        pr = self.progress.get(member)
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        t = pr.transfer
        assert t is not None
        if not t.requested or offset != t.next_offset:
            return
        if t.snapshot is None:
            epoch = self._log.epoch_at(snapshot_index)
            if epoch is None or snapshot_index > self._log.commit_index:
                t.requested = False  # compacted past it meanwhile: ask for a newer one
                return
            t.snapshot = LogPosition(epoch, snapshot_index)
        elif t.snapshot.index != snapshot_index:
            return
        t.requested = False
        t.chunk_in_flight = True
        t.done_sent = done
        t.idle_ticks = 0
        self._outbox.append(SnapshotChunk(epoch=self.epoch, sender=self.leader_id, recipient=member,
                                          snapshot=t.snapshot, offset=offset, data=data, done=done))

    def abort_snapshot(self, member: int) -> None:
        pr = self.progress.get(member)
        if pr is not None and pr.state is ProgressState.SNAPSHOT:
            pr.become_snapshot()
