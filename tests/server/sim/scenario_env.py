"""ScenarioEnv: the commands of the scenario scripts, over a deterministic Cluster.

Nothing random happens unless asked for: messages move only when a command
delivers them (in send order), Readys are processed in node-id order right
after every change, the engine flushes on every apply (so any applied index
may be compacted), and ticks send no status reports to the MM.

    add-replicas N [spares=K] [max-append-entries=N] [max-inflight=N] [chunk-bytes=N]
                   [heartbeat=N] [retransmit=N] [read-timeout=N] [snapshot-retry=N]
                   [lease=MS] [rates=ID:RATE,...] [leases=ID:MS,...]   leader leases; clock
                   rates vs real time; nodes with another lease (0: off, as an older binary)
                   [idle=N] [idle-after=N]   idle heartbeats (ReplicaOptions.idle_heartbeat_ticks)
                   [trailing=N]   quorum-first sending (ReplicaOptions.trailing_batch_entries)
                   [learner-reads=1]   read index = last index at arrival (ReplicaOptions.learner_reads)
    elect [promisers=1,2]       MM: new epoch; deliver only MM traffic (requests to
                                non-promisers dropped) until the appointment is in
    set-config voters=.. [outgoing=..] [learners=..]   MM's config for the next epoch
    propose ID PAYLOAD...       client writes at ID (one batch)
    read ID REQUEST             a linearizable read at ID
    deliver [from=ID] [to=ID] [n=N]   deliver (the first N of) what is in flight on
                                those links now, in order
    drop [from=ID] [to=ID]      drop what is in flight on those links
    stabilize                   deliver everything until nothing moves
    tick ID [n=N]               N ticks of one replica
    partition ID...             cut those nodes (MM is 0) from everyone else
    cut FROM TO                 cut one direction of one link
    heal
    crash ID / restart ID       lose / recover everything not durable
    hold ID / release ID        ID's disk stalls (Readys' messages go out, nothing is
                                persisted) / completes
    tick-mm [n=N]               MM ticks: retries, failure detection
    advance MS                  MS milliseconds of simulated real time pass (leases)
    compact ID INDEX            log compaction (S5)
    status / log ID / mm        print state
"""
from __future__ import annotations

import random
from dataclasses import replace

from server.replication.errors import ReplicationError
from server.replication.messages import METADATA_MANAGER_ID, Config, Message
from server.replication.options import ReplicaOptions

from .cluster import Cluster
from .describe import describe, describe_entry
from .scenario import split_args


def _pairs(text: str) -> list[list[str]]:
    """'1:0.5,2:1.1' -> [['1', '0.5'], ['2', '1.1']]."""
    return [x.split(":") for x in text.split(",") if x]


def _ids(text: str) -> frozenset[int]:
    return frozenset(int(x) for x in text.split(",") if x)


class ScenarioEnv:
    def __init__(self) -> None:
        self.cluster: Cluster | None = None
        self.out: list[str] = []
        self.tokens: list[str] = []

    def run(self, command: str) -> str:
        name, args, kw = split_args(command)
        self.tokens = command.split()[1:]
        self.out = []
        if self.cluster is not None:
            self.cluster.trace = self.out
        handler = getattr(self, "cmd_" + name.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {name!r}")
        try:
            handler(args, kw)
        except ReplicationError as e:
            self.out.append(f"error: {type(e).__name__}: {e}")
        return "\n".join(self.out)

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None, "add-replicas first"
        return self.cluster

    # ------------------------------------------------------------ plumbing
    def _settle(self) -> None:
        """Ready cycles in node-id order until no node has work."""
        busy = True
        while busy:
            busy = False
            for node_id in sorted(self.c.nodes):
                node = self.c.nodes[node_id]
                while node.process_ready():
                    busy = True
                    if node.app is not None and node.pending is None:
                        node.store.flush(node.app)
                    if node.disk_held:
                        break

    def _deliver(self, msg: Message) -> None:
        self.out.append(describe(msg))
        self.c.deliver(msg)
        self._settle()

    # ------------------------------------------------------------ commands
    def cmd_add_replicas(self, args: list[str], kw: dict[str, str]) -> None:
        n = int(args[0])
        spares = int(kw.get("spares", 0))
        options = ReplicaOptions(
            heartbeat_ticks=int(kw.get("heartbeat", 2)), retransmit_ticks=int(kw.get("retransmit", 6)),
            max_inflight_appends=int(kw.get("max-inflight", 4)),
            max_append_entries=int(kw.get("max-append-entries", 64)),
            snapshot_retry_ticks=int(kw.get("snapshot-retry", 8)), read_timeout_ticks=int(kw.get("read-timeout", 10)),
            lease_ns=int(kw.get("lease", 0)) * 1_000_000, idle_heartbeat_ticks=int(kw.get("idle", 0)),
            idle_after_ticks=int(kw.get("idle-after", 20)), trailing_batch_entries=int(kw.get("trailing", 0)),
            check_quorum_ticks=int(kw.get("check-quorum", 0)), learner_reads=kw.get("learner-reads") == "1")
        rates = {int(i): float(r) for i, r in _pairs(kw.get("rates", ""))}
        node_options = {int(i): replace(options, lease_ns=int(ms) * 1_000_000)
                        for i, ms in _pairs(kw.get("leases", ""))}
        self.cluster = Cluster(list(range(1, n + 1)), list(range(n + 1, n + 1 + spares)), random.Random(0),
                               options, snapshot_chunk_bytes=int(kw.get("chunk-bytes", 1 << 20)), clock_rates=rates,
                               node_options=node_options)
        self.cluster.trace = self.out

    def cmd_elect(self, args: list[str], kw: dict[str, str]) -> None:
        c = self.c
        promisers = _ids(kw["promisers"]) if "promisers" in kw else None
        c.mm.start_epoch()
        self.out.append(f"mm: epoch {c.mm.epoch}, {c.mm.config}")
        while True:
            mm_traffic = [m for m in c.net.in_flight if METADATA_MANAGER_ID in (m.sender, m.recipient)]
            if not mm_traffic:
                break
            msg = mm_traffic[0]
            c.net.in_flight.remove(msg)
            if promisers is not None and msg.sender == METADATA_MANAGER_ID and msg.recipient not in promisers:
                self.out.append(f"dropped: {describe(msg)}")
                continue
            if not c.net.connected(msg.sender, msg.recipient):
                continue
            self._deliver(msg)
        self.out.append(f"mm: leader of epoch {c.mm.epoch} is {c.mm.leader}")

    def cmd_set_config(self, args: list[str], kw: dict[str, str]) -> None:
        self.c.mm.config = Config(_ids(kw["voters"]), _ids(kw.get("outgoing", "")), _ids(kw.get("learners", "")))
        self.out.append(f"mm: next epochs use {self.c.mm.config}")

    def cmd_propose(self, args: list[str], kw: dict[str, str]) -> None:
        node = self.c.nodes[int(args[0])]
        assert node.replica is not None, "node is down"
        before = node.replica.log.last_index
        node.propose([a.encode() for a in self.tokens[1:]])  # payloads are key=value
        r = node.replica
        self.out.append(f"{node.id}: proposed {r.epoch}.{before + 1}..{r.epoch}.{r.log.last_index}")
        self._settle()

    def cmd_read(self, args: list[str], kw: dict[str, str]) -> None:
        node = self.c.nodes[int(args[0])]
        assert node.replica is not None, "node is down"
        self.c.checker.on_read_issued(node, args[1])
        node.replica.observe_time(self.c.clock(node))
        by_lease = node.replica.reads_by_lease
        node.replica.read_index(args[1])
        if node.replica.reads_by_lease > by_lease:
            self.out.append(f"{node.id}: read {args[1]} confirmed by its lease")
        else:
            self.out.append(f"{node.id}: read {args[1]} waits for a heartbeat round")
        self._settle()

    def cmd_advance(self, args: list[str], kw: dict[str, str]) -> None:
        self.c.advance_time(int(args[0]) * 1_000_000)
        self.out.append(f"time: {self.c.time // 1_000_000} ms")

    def cmd_deliver(self, args: list[str], kw: dict[str, str]) -> None:
        sender = int(kw["from"]) if "from" in kw else None
        recipient = int(kw["to"]) if "to" in kw else None
        msgs = self.c.net.take_matching(sender, recipient)
        count = int(kw.get("n", len(msgs)))
        self.c.net.in_flight[:0] = msgs[count:]  # the rest stay in flight, first in line
        for msg in msgs[:count]:
            self._deliver(msg)

    def cmd_drop(self, args: list[str], kw: dict[str, str]) -> None:
        sender = int(kw["from"]) if "from" in kw else None
        recipient = int(kw["to"]) if "to" in kw else None
        for msg in self.c.net.take_matching(sender, recipient):
            self.out.append(f"dropped: {describe(msg)}")

    def cmd_stabilize(self, args: list[str], kw: dict[str, str]) -> None:
        c = self.c
        self._settle()
        while c.net.in_flight:
            msg = c.net.in_flight.pop(0)
            if c.net.connected(msg.sender, msg.recipient):
                self._deliver(msg)
            else:
                self.out.append(f"lost: {describe(msg)}")

    def cmd_tick(self, args: list[str], kw: dict[str, str]) -> None:
        node = self.c.nodes[int(args[0])]
        for _ in range(int(kw.get("n", 1))):
            self.c.tick(node, report=kw.get("report") == "1")   # report=1: its StatusReport goes to the MM
            self._settle()

    def cmd_tick_mm(self, args: list[str], kw: dict[str, str]) -> None:
        for _ in range(int(kw.get("n", 1))):
            self.c.mm.tick()

    def cmd_hold(self, args: list[str], kw: dict[str, str]) -> None:
        self.c.nodes[int(args[0])].disk_held = True

    def cmd_release(self, args: list[str], kw: dict[str, str]) -> None:
        self.c.nodes[int(args[0])].disk_held = False
        self._settle()

    def cmd_partition(self, args: list[str], kw: dict[str, str]) -> None:
        self.c.net.isolate({int(a) for a in args}, self.c.everyone)

    def cmd_cut(self, args: list[str], kw: dict[str, str]) -> None:
        self.c.net.cut(int(args[0]), int(args[1]))

    def cmd_heal(self, args: list[str], kw: dict[str, str]) -> None:
        self.c.net.heal()

    def cmd_crash(self, args: list[str], kw: dict[str, str]) -> None:
        self.c.crash(self.c.nodes[int(args[0])])

    def cmd_restart(self, args: list[str], kw: dict[str, str]) -> None:
        node = self.c.nodes[int(args[0])]
        node.start()
        self._settle()

    def cmd_compact(self, args: list[str], kw: dict[str, str]) -> None:
        node = self.c.nodes[int(args[0])]
        assert node.replica is not None
        index = int(args[1])
        node.replica.compact_log(index)
        node.store.compact(index)
        self.out.append(f"{node.id}: log now starts after {node.replica.log.base}")

    def cmd_status(self, args: list[str], kw: dict[str, str]) -> None:
        for node_id in sorted(self.c.nodes):
            node = self.c.nodes[node_id]
            r = node.replica
            if r is None:
                self.out.append(f"{node_id}: down")
                continue
            lg = r.log
            self.out.append(f"{node_id}: {r.role.name} epoch={r.epoch} leader={r.leader_id} last={lg.last_position()} "
                            f"commit={lg.commit_index} applied={lg.applied_index} base={lg.base}")

    def cmd_log(self, args: list[str], kw: dict[str, str]) -> None:
        node = self.c.nodes[int(args[0])]
        assert node.replica is not None
        lg = node.replica.log
        entries = lg.entries(lg.first_index, lg.last_index)
        self.out.append(f"{node.id}: base={lg.base} " + " ".join(f"[{describe_entry(e)}]" for e in entries))

    def cmd_mm(self, args: list[str], kw: dict[str, str]) -> None:
        mm = self.c.mm
        self.out.append(f"mm: epoch {mm.epoch}, leader {mm.leader}, {mm.config}")
