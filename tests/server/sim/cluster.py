"""Cluster: nodes, network, fake MM and checker wired together, one RNG for all.

The primitives (deliver, tick, propose, read, crash, restart, partition) are
shared by the random schedules (schedule.py) and the scenarios (scenario.py).
`stabilize()` heals everything and runs until the group converges, then
`final_check()` asserts every member holds the same committed history.
"""
from __future__ import annotations

import random

from server.meta.group_leadership import GroupLeadership
from server.replication.messages import METADATA_MANAGER_ID, Message, Role
from server.replication.options import ReplicaOptions

from .checker import Checker, SafetyViolation
from .network import FakeNetwork
from .node import CrashPoint, SimNode
from .state import payload_pairs

TICK_NS = 50_000_000
"""Simulated real time per tick of every node (the nodes tick every 50 ms)."""


class Cluster:
    def __init__(self, voters: list[int], spares: list[int], rng: random.Random,
                 options: ReplicaOptions | None = None, snapshot_chunk_bytes: int = 96, duplicate_p: float = 0.0,
                 clock_rates: dict[int, float] | None = None, node_options: dict[int, ReplicaOptions] | None = None):
        """clock_rates: node -> how fast its clock runs against the simulated
        real time (1.0 when absent); the replicas see their own clock only.
        node_options: nodes that run with other options than `options`."""
        self.rng = rng
        self.time = 0   # simulated real time, ns; only leases look at it (advance_time)
        self.clock_rates = clock_rates or {}
        self.net = FakeNetwork(rng, duplicate_p)
        self.checker = Checker(self)
        # Liveness as the MM sees it (its node sessions): a node that is up.
        self.mm = GroupLeadership(set(voters), self.send, member_alive=lambda m: self.nodes[m].up)
        options = options or ReplicaOptions()
        node_options = node_options or {}
        self.nodes: dict[int, SimNode] = {i: SimNode(i, self, node_options.get(i, options), snapshot_chunk_bytes)
                                          for i in voters + spares}
        for n in self.nodes.values():
            n.start()
        self.everyone = set(self.nodes) | {METADATA_MANAGER_ID}
        self.leaders_keep_mm = False   # the schedule's isolate_leader leaves the leader's link to the MM
        self.next_request = 0
        self.last_key = b"k0"   # the key of the last write proposed (gets read it: read)
        self.trace: list[str] | None = None

    # ----------------------------------------------------------- primitives
    def note(self, line: str) -> None:
        """A line of scenario output (only when tracing)."""
        if self.trace is not None:
            self.trace.append(line)

    def send(self, msg: Message) -> None:
        self.net.send(msg)

    def advance_time(self, ns: int) -> None:
        self.time += ns

    def clock(self, node: SimNode) -> int:
        """The node's own clock (what a node's CLOCK_BOOTTIME would read)."""
        return int(self.time * self.clock_rates.get(node.id, 1.0))

    def deliver(self, msg: Message) -> None:
        if msg.recipient == METADATA_MANAGER_ID:
            self.mm.step(msg)
            return
        node = self.nodes[msg.recipient]
        if node.replica is not None:
            node.replica.observe_time(self.clock(node))
            node.replica.step(msg)

    def leaders(self) -> list[SimNode]:
        """Nodes that believe they lead (deposed ones included)."""
        return [n for n in self.nodes.values() if n.replica is not None and n.replica.role is not Role.FOLLOWER]

    def serving_leader(self) -> SimNode | None:
        """The leader of the MM's current epoch, if it is up and serving."""
        node = self.nodes.get(self.mm.leader) if self.mm.leader is not None else None
        if node is None or node.replica is None or node.replica.role is not Role.LEADER:
            return None
        return node if node.replica.epoch == self.mm.epoch else None

    def tick(self, node: SimNode, report: bool = True) -> None:
        """One tick of the node; `report`: its heartbeat to the MM (StatusReport)."""
        if node.replica is not None:
            node.replica.observe_time(self.clock(node))
            node.replica.tick()
            if report:
                self.send(node.replica.status_report())

    def tick_all(self) -> None:
        for n in self.nodes.values():
            self.tick(n)
        self.mm.tick()

    def propose(self, node: SimNode, count: int) -> None:
        payloads = []
        for _ in range(count):
            self.next_request += 1
            key = self.rng.randrange(8)
            payload = b"k%d=v%d" % (key, self.next_request)
            if self.next_request % 4 == 0:   # a multi-key batch (not from the rng: the seeds replay as before)
                payload += b",k%d=v%d" % ((key + 1) % 8, self.next_request)
            payloads.append(payload)
            self.last_key = payload_pairs(payload)[-1][0]
        node.propose(payloads)

    def read(self, node: SimNode) -> None:
        """A read: two of three are gets of one key (the key last proposed, or
        one of the eight), which wait only for the writes to that key a
        learner was told of (the node's rule: ReplicaHost._start_reads); the
        others read the whole state. Chosen from the request number, not the
        rng: the seeds replay as before."""
        assert node.replica is not None
        self.next_request += 1
        request_id = self.next_request
        kind = request_id % 3
        key = None if kind == 0 else self.last_key if kind == 1 else b"k%d" % (request_id // 3 % 8)
        self.checker.on_read_issued(node, request_id, key)
        node.replica.observe_time(self.clock(node))
        node.replica.read_index(request_id, None if key is None else node.told_keys.get(key, 0))

    def crash(self, node: SimNode) -> None:
        node.crash()

    def process_all(self, crash_p: float = 0.0, flush_p: float = 0.3, compact_p: float = 0.1,
                    rounds: int = 3, slow_disk_p: float = 0.0) -> None:
        """Runs Ready cycles on every node (random order) until quiet or `rounds`."""
        rng = self.rng
        nodes = list(self.nodes.values())
        for _ in range(rounds):
            rng.shuffle(nodes)
            busy = False
            for n in nodes:
                crash_at = None
                if crash_p and rng.random() < crash_p:
                    crash_at = CrashPoint(rng.randrange(1, 4))
                if n.process_ready(crash_at, slow_disk_p, rng):
                    busy = True
                    n.maintain(rng, flush_p, compact_p)
            if not busy:
                return

    # ------------------------------------------------------------- the end
    def stabilize(self, max_iterations: int = 3000) -> None:
        """Heals the network, restarts every node, lets the MM finish any change
        and elect, then runs reliably until every member applied everything."""
        self.net.heal()
        self.net.duplicate_p = 0.0
        for n in self.nodes.values():
            if not n.up:
                n.start()
        if not self.mm.settled() or self.serving_leader() is None:
            self.mm.start_epoch()
        for i in range(max_iterations):
            while self.net.in_flight:
                self.deliver(self.net.in_flight.pop(0))
                self.process_all(flush_p=0.5, compact_p=0.05)
            self.process_all(flush_p=0.5, compact_p=0.05)
            if i % 3 == 0:
                self.advance_time(TICK_NS)   # leases and holds run out while it converges
                self.tick_all()
            leader = self.serving_leader()
            if leader is None or self.mm.phase or not self.mm.settled():
                continue
            r = leader.replica
            assert r is not None
            if r.log.last_position().epoch != r.epoch:
                continue
            if all(self._caught_up(m, r.log.last_index) for m in self.mm.config.members()):
                if r.log.applied_index == r.log.last_index and not self.net.in_flight:
                    return
        raise SafetyViolation(f"liveness: no convergence after {max_iterations} iterations: "
                              f"mm epoch {self.mm.epoch} leader {self.mm.leader} phase {self.mm.phase.name} "
                              + " ".join(self._describe(n) for n in self.nodes.values()))

    def _caught_up(self, member: int, index: int) -> bool:
        r = self.nodes[member].replica
        return r is not None and r.log.applied_index == index

    @staticmethod
    def _describe(n: SimNode) -> str:
        r = n.replica
        if r is None:
            return f"[{n.id} down]"
        return (f"[{n.id} {r.role.name} e{r.epoch} last={r.log.last_position()} commit={r.log.commit_index} "
                f"applied={r.log.applied_index} base={r.log.base}]")

    def final_check(self) -> None:
        """Every member of the final config applied the same, complete history,
        and every acknowledged write is in it."""
        members = [self.nodes[m] for m in sorted(self.mm.config.members())]
        states = {(n.app.applied_index, n.app.digest) for n in members if n.app is not None}
        if len(states) != 1:
            raise SafetyViolation(f"2: members diverge after stabilizing: {states}")
        applied, digest = states.pop()
        known = self.checker.committed.get(applied)
        if applied and (known is None or known[3] != digest):
            raise SafetyViolation(f"1: final state at {applied} is not the committed history")
        for index, epoch in self.checker.acknowledged.items():
            if index > applied or self.checker.committed[index][0] != epoch:
                raise SafetyViolation(f"1: acknowledged write {epoch}.{index} lost")
        for index, epoch in self.checker.learner_committed.items():   # 6: a lost tail is never applied
            if index > applied or self.checker.committed[index][0] != epoch:
                raise SafetyViolation(f"6: learner-counted {epoch}.{index} lost (final applied index {applied})")
