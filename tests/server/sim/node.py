"""SimNode: one node process hosting one Replica, following the Ready contract.

What survives `crash()` is exactly the DurableStore; the volatile engine state
(`app`), frozen snapshots and the client bookkeeping are lost. Crash points
inside one Ready cycle model a kill at each step of the contract.
"""
from __future__ import annotations

import random
from enum import IntEnum
from typing import TYPE_CHECKING

from server.replication.messages import AppendAck, AppendResult, EntryKind, Role
from server.replication.options import ReplicaOptions
from server.replication.ready import Ready
from server.replication.replica import Replica

from .describe import describe_entries, describe_entry
from .state import DurableStore, KVStateMachine, payload_pairs

if TYPE_CHECKING:
    from .cluster import Cluster


class CrashPoint(IntEnum):
    BEFORE_PERSIST = 1  # messages of the Ready are out, nothing written
    AFTER_PERSIST = 2   # written and fsynced, acknowledgements not sent
    AFTER_APPLY = 3     # applied, advance() not called


class SimNode:
    def __init__(self, node_id: int, cluster: Cluster, options: ReplicaOptions, snapshot_chunk_bytes: int = 96):
        self.id = node_id
        self.cluster = cluster
        self.options = options
        self.store = DurableStore()
        self.replica: Replica | None = None
        self.app: KVStateMachine | None = None
        self.frozen: dict[int, list[bytes]] = {}
        self.proposals: dict[int, int] = {}  # index -> epoch of our clients' writes
        self.told_keys: dict[bytes, int] = {}  # key -> last index of a write to it told to a learner (in memory)
        self.snapshot_chunk_bytes = snapshot_chunk_bytes
        self.incarnation = 0
        self.pending: Ready | None = None  # a Ready whose disk work is not done yet
        self.pending_lead: tuple[int, object] | None = None  # (epoch, config) if it led when taking `pending`
        self.disk_held = False  # scenarios: the disk does not complete until released

    @property
    def up(self) -> bool:
        return self.replica is not None

    def start(self) -> None:
        assert self.replica is None
        self.incarnation += 1
        self.replica = Replica(self.id, self.store.durable_state(), self.options)
        self.app = self.store.engine.copy()
        self.frozen = {}
        self.proposals = {}

    def crash(self) -> None:
        self.cluster.checker.forget_node_reads(self.id)  # its clients' reads die with it
        self.pending = self.pending_lead = None
        self.disk_held = False
        self.replica = None
        self.app = None
        self.frozen = {}
        self.proposals = {}
        self.told_keys = {}

    def propose(self, payloads: list[bytes]) -> None:
        r = self.replica
        assert r is not None
        p = r.propose(payloads)  # NotLeaderError unless it believes it leads
        for i in range(p.first_index, p.last_index + 1):
            self.proposals[i] = p.epoch

    def process_ready(self, crash_at: CrashPoint | None = None, slow_disk_p: float = 0.0,
                      rng: random.Random | None = None) -> bool:
        """One Ready cycle. Returns False if there was nothing to do. With
        probability slow_disk_p the disk work is left pending (the Ready's
        `messages` are out): the replica keeps stepping messages meanwhile, and
        a later call, or crash(), finishes or loses it."""
        r = self.replica
        if r is None:
            return False
        if self.pending is None:
            if not r.has_ready():
                return False
            r.observe_time(self.cluster.clock(self))
            self.pending = r.ready()
            # Checker rule 6: its own entries in this Ready are answered to a learner once durable,
            # whatever its role by then (LEADER_ELECT, or deposed meanwhile).
            self.pending_lead = (r.epoch, r.config) if r.role is not Role.FOLLOWER else None
            for m in self.pending.messages:
                self.cluster.send(m)
            if crash_at is CrashPoint.BEFORE_PERSIST:
                self.crash()
                return True
            if self.disk_held or (slow_disk_p and rng is not None and rng.random() < slow_disk_p):
                return True
        elif self.disk_held or (slow_disk_p and rng is not None and rng.random() < slow_disk_p):
            return False  # still waiting for the disk
        rd, lead = self.pending, self.pending_lead
        self.pending = self.pending_lead = None
        self._finish(r, rd, crash_at, lead)
        return True

    def _finish(self, r: Replica, rd: Ready, crash_at: CrashPoint | None, lead: tuple[int, object] | None) -> None:
        c = self.cluster
        if c.trace is not None:
            self._trace_persist(rd)
        installed = self.store.persist(rd)
        if lead is not None and rd.entries:
            c.checker.on_leader_durable(self, lead[0], rd.entries, lead[1])   # what it would answer a learner now
            told = [e for e in rd.entries if e.epoch == lead[0]]
            if told and r.epoch == lead[0]:
                r.learners_told(told[-1].index)   # as the node does when it answers them (write_path.py)
                for e in told:
                    if e.kind is EntryKind.WRITE:   # every key of the entry: a batch is atomic
                        for key, _ in payload_pairs(e.payload):
                            self.told_keys[key] = e.index
        if crash_at is CrashPoint.AFTER_PERSIST:
            self.crash()
            return
        for m in rd.messages_after_persist:
            if isinstance(m, AppendAck) and m.result is AppendResult.ACCEPTED:
                c.checker.on_ack_to_learner(m)   # the copy a learner would get, the moment it is sent
            c.send(m)
        app = self.app
        assert app is not None
        if installed is not None:
            app = self.app = installed.copy()
            c.checker.on_snapshot_installed(self, app)
        if installed is not None:
            c.note(f"{self.id}: installed snapshot {rd.snapshot}")
        for e in rd.committed_entries:
            app.apply(e)
            c.checker.on_apply(self, e, app)
            c.note(f"{self.id}: apply {describe_entry(e)}")
            mine = self.proposals.pop(e.index, None)
            if mine == e.epoch:
                c.checker.on_write_acknowledged(self, e)
                c.note(f"{self.id}: write {e.epoch}.{e.index} acknowledged to its client")
            elif mine is not None:
                c.note(f"{self.id}: write {mine}.{e.index} failed: {e.epoch}.{e.index} committed there")
        for rs in rd.reads:
            c.checker.on_read_served(self, rs, app)
            c.note(f"{self.id}: read {rs.request_id} served at applied index {app.applied_index} "
                   f"(read index {rs.read_index}) -> {self._kv_text(app)}")
        for fr in rd.failed_reads:
            c.checker.on_read_failed(self, fr)
            c.note(f"{self.id}: read {fr.request_id} failed {fr.reason.name} (epoch {fr.epoch}, "
                   f"leader {fr.leader_id})")
        if crash_at is CrashPoint.AFTER_APPLY:
            self.crash()
            return
        for req in rd.snapshot_requests:
            self._serve_snapshot(req.member, req.snapshot_index, req.offset)
        r.advance(rd)

    def _trace_persist(self, rd: Ready) -> None:
        c = self.cluster
        if rd.soft_state is not None:
            ss = rd.soft_state
            c.note(f"{self.id}: now {ss.role.name} in epoch {ss.epoch} (leader {ss.leader_id})")
        for chunk in rd.snapshot_chunks:
            last = " (last)" if chunk.done else ""
            c.note(f"{self.id}: stage snapshot {chunk.snapshot} chunk {chunk.offset}{last}")
        if rd.entries:
            first = rd.entries[0].index
            replaced = self.store.last_index() - first + 1
            text = f"{self.id}: persist {describe_entries(rd.entries)}"
            if replaced > 0:
                text += f", replacing {replaced} stored entr{'y' if replaced == 1 else 'ies'} from {first}"
            c.note(text)
        if rd.hard_state is not None and rd.hard_state.promised_epoch != self.store.hard.promised_epoch:
            c.note(f"{self.id}: persist promised epoch {rd.hard_state.promised_epoch}")

    @staticmethod
    def _kv_text(app: KVStateMachine) -> str:
        return " ".join(f"{k.decode()}={v.decode()}" for k, v in sorted(app.kv.items())) or "{}"

    def _serve_snapshot(self, member: int, snapshot_index: int | None, offset: int) -> None:
        r, app = self.replica, self.app
        assert r is not None and app is not None
        if snapshot_index is None:
            data = app.to_bytes()
            size = self.snapshot_chunk_bytes
            chunks = [data[i:i + size] for i in range(0, len(data), size)]
            snapshot_index = app.applied_index
            self.frozen[snapshot_index] = chunks
        chunks = self.frozen.get(snapshot_index)
        if chunks is None or offset >= len(chunks):
            r.abort_snapshot(member)
            return
        r.snapshot_chunk(member, snapshot_index, offset, chunks[offset], offset == len(chunks) - 1)

    def maintain(self, rng: random.Random, flush_p: float, compact_p: float) -> None:
        """Engine flushes (applied state becomes durable) and log compaction (S5)."""
        r, app = self.replica, self.app
        if r is None or app is None or self.pending is not None:
            return
        if rng.random() < flush_p:
            self.store.flush(app)
        if rng.random() < compact_p:
            index = min(self.store.engine.applied_index, r.log.stable_index, r.log.applied_index) - rng.randrange(3)
            if index > r.log.base.index:
                r.compact_log(index)
                self.store.compact(index)
