"""Checker: the safety properties, asserted as the simulation runs.

  1. No committed entry is lost or changed: the first replica to apply index i
     fixes (epoch, kind, payload, digest) for i; every later apply of i, every
     installed snapshot at i, and every commit index's entry must agree.
  2. All replicas apply the same sequence (the digest chains agree).
  3. At most one replica leads each epoch.
  4. What a leader commits, and every write it acknowledges, is durable on a
     quorum of its config (disks checked); every match index it counts is on
     that member's disk.
  5. A served read reflects every write committed anywhere before it arrived.
  6. The client as a learner (server/replication/README.md, "Not covered
     yet"; not built): a client that hears a leader's entry of its epoch
     durable on the leader, and acknowledgements of that epoch at or past its
     index from followers that make a quorum of the leader's config with it,
     counts the entry committed. Such an entry must never be lost or changed:
     the first apply of its index anywhere must be that epoch's entry, no
     other entry may be counted at that index, and the final history holds
     it. A leader answers for its entries of the epoch it led when it took
     the Ready (LEADER_ELECT included, deposed meanwhile or not). With
     ReplicaOptions.learner_reads (the read rule such clients need), rule 5
     also counts what a learner counted committed before a read arrived.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

from server.replication.messages import Entry, EntryKind, Role
from server.replication.quorum import has_quorum
from server.replication.ready import FailedRead, ReadState

from .state import KVStateMachine, payload_pairs

if TYPE_CHECKING:
    from .cluster import Cluster
    from .node import SimNode


class SafetyViolation(AssertionError):
    pass


class Checker:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.committed: dict[int, tuple[int, EntryKind, bytes, int]] = {}
        self.leader_of_epoch: dict[int, int] = {}
        self.max_commit = 0
        self.read_bounds: dict[tuple[int, Hashable], int] = {}
        self.acknowledged: dict[int, int] = {}  # index -> epoch of writes acknowledged to clients
        self.reads_served = 0
        self.reads_failed = 0
        self.writes_acknowledged = 0
        self.snapshots_installed = 0
        self._durable_commit: dict[tuple[int, int], int] = {}  # (leader, epoch) -> commit checked
        # 6: the learner's view. (epoch, index) -> (leader, config) of entries durable on their leader
        # and not counted yet; epoch -> {follower: highest index it acknowledged in that epoch}.
        self._learner_pending: dict[tuple[int, int], tuple[int, object, tuple[bytes, ...]]] = {}
        self._learner_acks: dict[int, dict[int, int]] = {}
        self.learner_committed: dict[int, int] = {}   # index -> epoch the learner counted committed
        self.learner_ahead = 0   # of them, counted before any replica's commit index reached them
        self.learner_key_max: dict[bytes, int] = {}   # key -> the highest counted index of a write to it

    def fail(self, what: str) -> None:
        raise SafetyViolation(what)

    # ------------------------------------------------------------ 1, 2: applies
    def on_apply(self, node: SimNode, e: Entry, app: KVStateMachine) -> None:
        counted = self.learner_committed.get(e.index)
        if counted is not None and counted != e.epoch:
            self.fail(f"6: a learner counted {counted}.{e.index} committed, but node {node.id} applied "
                      f"{e.epoch}.{e.index} there")
        record = (e.epoch, e.kind, e.payload, app.digest)
        known = self.committed.setdefault(e.index, record)
        if known != record:
            self.fail(f"1: node {node.id} applied {e.epoch}.{e.index} {e.payload!r} digest {app.digest}, "
                      f"but {known[0]}.{e.index} {known[2]!r} digest {known[3]} was applied before")

    def on_snapshot_installed(self, node: SimNode, app: KVStateMachine) -> None:
        self.snapshots_installed += 1
        known = self.committed.get(app.applied_index)
        if known is None or known[3] != app.digest:
            self.fail(f"2: node {node.id} installed a snapshot at {app.applied_index} whose digest {app.digest} "
                      f"is not the committed one {known}")

    # ---------------------------------------------------------- 6: learner
    def on_leader_durable(self, node: SimNode, epoch: int, entries, config) -> None:
        """The entries of `epoch`, which `node` led when it took the Ready (LEADER_ELECT
        included), are on its disk: it would answer a learner now, deposed meanwhile or not."""
        for e in entries:
            if e.epoch == epoch:
                keys = tuple(k for k, _ in payload_pairs(e.payload)) if e.kind is EntryKind.WRITE else ()
                self._learner_pending[(e.epoch, e.index)] = (node.id, config, keys)
        self._learner_count()

    def on_ack_to_learner(self, ack) -> None:
        """A follower's ACCEPTED acknowledgement, as a learner would get it."""
        acks = self._learner_acks.setdefault(ack.epoch, {})
        if ack.index > acks.get(ack.sender, 0):
            acks[ack.sender] = ack.index
        self._learner_count()

    def _learner_count(self) -> None:
        for (epoch, index), (leader, config, keys) in list(self._learner_pending.items()):
            holders = {leader} | {m for m, i in self._learner_acks.get(epoch, {}).items() if i >= index}
            if not has_quorum(config, holders):
                continue
            del self._learner_pending[(epoch, index)]
            known = self.committed.get(index)
            if known is not None and known[0] != epoch:
                self.fail(f"6: a learner counts {epoch}.{index} committed, but {known[0]}.{index} was applied")
            counted = self.learner_committed.setdefault(index, epoch)
            if counted != epoch:
                self.fail(f"6: a learner counts {epoch}.{index} committed, and {counted}.{index} before")
            for key in keys:
                if index > self.learner_key_max.get(key, 0):
                    self.learner_key_max[key] = index
            self.observe_commits()
            if index > self.max_commit:
                self.learner_ahead += 1   # known to a learner before any replica: what only rule 6 checks

    # ------------------------------------------------------------- 4: writes
    def on_write_acknowledged(self, node: SimNode, e: Entry) -> None:
        """The node answers a client whose write it proposed. If it still leads
        the proposal's epoch, the entry must be on a quorum of that epoch's
        config. Otherwise the commit that let it apply was made by some leader in
        its own epoch, whose commit index was checked durable on that epoch's
        quorum then (C1 in after_step): a deposed proposer learns it from that
        leader, and a proposer appointed again in a later epoch inherits it or
        commits it with its own entries (C1 again). The later epoch's config is
        no test: an entry committed under the old config of a membership change
        reaches the new voters only as they catch up (seed 455728819)."""
        self.writes_acknowledged += 1
        self.acknowledged[e.index] = e.epoch
        r = node.replica
        config = r.config if r is not None and r.epoch == e.epoch else None
        if config is None:
            return
        holders = {n.id for n in self.cluster.nodes.values() if n.store.holds(e.epoch, e.index)}
        if not has_quorum(config, holders):
            self.fail(f"4: node {node.id} acknowledged {e.epoch}.{e.index} durable only on {sorted(holders)} "
                      f"of {config}")

    # -------------------------------------------------------------- 5: reads
    def on_read_issued(self, node: SimNode, request_id: Hashable, key: bytes | None = None) -> None:
        """A read of the whole state, or of one `key` (a get: it must see the
        writes to that key a learner counted committed, not the others)."""
        self.observe_commits()
        bound = self.max_commit
        r = node.replica
        if r is not None and r.options.learner_reads and self.learner_committed:
            # 6: a client may know of these commits before any replica does.
            bound = max(bound, max(self.learner_committed) if key is None else self.learner_key_max.get(key, 0))
        self.read_bounds[(node.id, request_id)] = bound

    def on_read_served(self, node: SimNode, rs: ReadState, app: KVStateMachine) -> None:
        self.reads_served += 1
        bound = self.read_bounds.pop((node.id, rs.request_id))
        if app.applied_index < rs.read_index:
            self.fail(f"5: node {node.id} served read {rs.request_id} at {app.applied_index} < read index "
                      f"{rs.read_index}")
        if app.applied_index < bound:
            self.fail(f"5: node {node.id} served read {rs.request_id} from state at {app.applied_index}, but "
                      f"{bound} was committed before the read arrived (stale read)")
        known = self.committed.get(app.applied_index)
        if app.applied_index and (known is None or known[3] != app.digest):
            self.fail(f"5: node {node.id} served read {rs.request_id} from a state not on the committed history")

    def on_read_failed(self, node: SimNode, fr: FailedRead) -> None:
        self.reads_failed += 1
        self.read_bounds.pop((node.id, fr.request_id), None)

    # ----------------------------------------------------- 1, 3: every step
    def observe_commits(self) -> None:
        for n in self.cluster.nodes.values():
            r = n.replica
            if r is not None and r.log.commit_index > self.max_commit:
                self.max_commit = r.log.commit_index

    def after_step(self) -> None:
        for n in self.cluster.nodes.values():
            r = n.replica
            if r is None:
                continue
            c = r.log.commit_index
            if r.role is not Role.FOLLOWER:
                leader = self.leader_of_epoch.setdefault(r.epoch, n.id)
                if leader != n.id:
                    self.fail(f"3: nodes {leader} and {n.id} both lead epoch {r.epoch}")
                # Only what it commits itself: its commit index when it took
                # over was learned under earlier epochs, with other configs.
                key = (n.id, r.epoch)
                if c > self._durable_commit.setdefault(key, c):
                    self._check_commit_durable(n, c)
                if r.epoch == self.cluster.mm.epoch:
                    # Only a leader no newer epoch can have deposed: a deposed one keeps
                    # stale matches of members the new leader truncated since (harmless:
                    # it cannot commit with them, acks given before promising the new
                    # epoch are in the new leader's log).
                    self._check_matches_durable(n)
            if c > self.max_commit:
                self.max_commit = c
            known = self.committed.get(c)
            epoch = r.log.epoch_at(c)
            if known is not None and epoch is not None and c > r.log.base.index and epoch != known[0]:
                self.fail(f"1: node {n.id} has {epoch}.{c} committed, but {known[0]}.{c} was applied")

    def _check_commit_durable(self, node: SimNode, index: int) -> None:
        """C1 by its definition: what a leader calls committed is on a quorum's disks."""
        r = node.replica
        assert r is not None and r.config is not None
        epoch = r.log.epoch_at(index)
        if epoch is None:
            return
        holders = {n.id for n in self.cluster.nodes.values() if n.store.holds(epoch, index)}
        if not has_quorum(r.config, holders):
            self.fail(f"C1: leader {node.id} committed {epoch}.{index}, durable only on {sorted(holders)} "
                      f"of {r.config}")
        self._durable_commit[(node.id, r.epoch)] = index

    def _check_matches_durable(self, node: SimNode) -> None:
        """C2: every match index a leader counts is on that member's disk."""
        r = node.replica
        assert r is not None
        for member, p in r.progress().items():
            if p.match:
                epoch = r.log.epoch_at(p.match)
                if epoch is not None and not self.cluster.nodes[member].store.holds(epoch, p.match):
                    self.fail(f"C2: leader {node.id} counts {member} as holding {epoch}.{p.match}; its disk "
                              f"does not (base {self.cluster.nodes[member].store.base}, last "
                              f"{self.cluster.nodes[member].store.last_index()})")

    def forget_node_reads(self, node_id: int) -> None:
        """The node crashed: its clients' reads are gone (they time out client-side)."""
        for key in [k for k in self.read_bounds if k[0] == node_id]:
            del self.read_bounds[key]
