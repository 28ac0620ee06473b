"""The metadata manager's Prometheus metrics (server/observability.py), read
at scrape time: whether this process is the active MM, groups, groups without
a leader, leader changes (epochs started), nodes connected, tables, routing
version and the store's fsyncs."""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class MetaCollector:
    def __init__(self, mm):
        self.mm = mm

    def collect(self):
        mm = self.mm
        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            return g

        groups = list(mm.groups.values())
        yield gauge("quorumkv_meta_active", "1 when this process is the active metadata manager", int(mm.active))
        yield gauge("quorumkv_meta_groups", "Replication groups", len(groups))
        yield gauge("quorumkv_meta_groups_without_leader", "Groups whose election is in progress",
                    sum(1 for g in groups if g.leader is None))
        yield gauge("quorumkv_meta_nodes_connected", "Nodes with an open heartbeat stream", len(mm.sessions))
        yield gauge("quorumkv_meta_tables", "Tables", len(mm.catalog.tables) if mm.catalog is not None else 0)
        yield gauge("quorumkv_meta_routing_version", "Version of the routing table pushed to routers",
                    mm.routing_version)
        changes = CounterMetricFamily("quorumkv_meta_leader_changes", "Epochs started (leader changes) since "
                                      "this process became active")
        changes.add_metric([], sum(g.elections for g in groups))
        yield changes
        store = getattr(mm.store, "fsyncs", None)
        if store is not None:
            fsyncs = CounterMetricFamily("quorumkv_meta_store_fsyncs", "fsyncs of the embedded store")
            fsyncs.add_metric([], store)
            yield fsyncs
