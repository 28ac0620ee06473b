"""The node's Prometheus metrics (server/observability.py).

Read at scrape time from state that exists anyway (per replica: role, epoch,
commit and applied index, log fsyncs, engine flushes and compactions, leader
changes, snapshots installed, read batches confirmed by the lease or by a
round), plus one latency histogram and one counter of
client operations filled on the data path.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from server.observability import LATENCY_BUCKETS

if TYPE_CHECKING:
    from server.node.node import Node

CLIENT_OPS = Counter("quorumkv_node_client_ops_total", "Client operations answered by this node",
                     ["op", "code"])
CLIENT_LATENCY = Histogram("quorumkv_node_client_latency_seconds",
                           "From a request's arrival at the node to its answer", ["op"], buckets=LATENCY_BUCKETS)


class NodeCollector:
    def __init__(self, node: Node):
        self.node = node

    def collect(self):
        rg = ["rg"]
        role = GaugeMetricFamily("quorumkv_node_replica_role", "1 follower, 2 electing (NOOP not committed), 3 leader",
                                 labels=rg)
        epoch = GaugeMetricFamily("quorumkv_node_replica_epoch", "The replica's epoch", labels=rg)
        lag = GaugeMetricFamily("quorumkv_node_log_lag_entries", "Committed entries not applied yet", labels=rg)
        log_entries = GaugeMetricFamily("quorumkv_node_log_entries", "Entries held in the replicated log", labels=rg)
        fsyncs = CounterMetricFamily("quorumkv_node_fsyncs", "fdatasyncs of the replicated log", labels=rg)
        applied = CounterMetricFamily("quorumkv_node_records_applied", "Records applied to the engine", labels=rg)
        flushes = CounterMetricFamily("quorumkv_node_engine_flushes", "Engine memtable flushes", labels=rg)
        compactions = CounterMetricFamily("quorumkv_node_engine_compactions", "Engine compactions", labels=rg)
        leader_changes = CounterMetricFamily("quorumkv_node_leader_changes",
                                             "Times this replica became leader", labels=rg)
        snapshots = CounterMetricFamily("quorumkv_node_snapshots_installed", "Snapshots installed", labels=rg)
        size = GaugeMetricFamily("quorumkv_node_data_bytes", "The range's data (SSTables and memtable)", labels=rg)
        tables = GaugeMetricFamily("quorumkv_node_tables", "Tables with data in the replica's engine", labels=rg)
        clock = GaugeMetricFamily("quorumkv_node_lease_clock_suspect",
                                  "1 if this member found its clock's rate off the leader's by more than the "
                                  "lease's bound (server/replication/README.md LL6): it holds for no lease",
                                  labels=rg)
        reads = CounterMetricFamily("quorumkv_node_read_batches",
                                    "Batches of linearizable reads (those that reached the leader together, one "
                                    "Replica.read_index each), by how they were confirmed: at once under the "
                                    "leader's lease, or by a heartbeat round", labels=["rg", "by"])
        for group, h in sorted(self.node.hosts.items()):
            label = [str(group)]
            r = h.replica
            lg = r.log
            st = h.storage.db.stats()
            role.add_metric(label, int(r.role))
            epoch.add_metric(label, r.epoch)
            lag.add_metric(label, lg.commit_index - lg.applied_index)
            log_entries.add_metric(label, lg.last_index - lg.base.index)
            fsyncs.add_metric(label, h.storage.log.stats()["fsyncs"])
            applied.add_metric(label, h.writes.applied_records)
            flushes.add_metric(label, st["flushes"])
            compactions.add_metric(label, st["compactions"])
            leader_changes.add_metric(label, h.leader_changes)
            snapshots.add_metric(label, h.storage.snapshots_installed)
            size.add_metric(label, sum(level["bytes"] for level in st["levels"]) + st["memtable_bytes"])
            tables.add_metric(label, len(h.storage.db.tables()))
            clock.add_metric(label, int(r.clock_suspect))
            reads.add_metric([str(group), "lease"], r.reads_by_lease)
            reads.add_metric([str(group), "round"], r.reads_by_round)
        yield from (role, epoch, lag, log_entries, fsyncs, applied, flushes, compactions, leader_changes, snapshots,
                    size, tables, clock, reads)
