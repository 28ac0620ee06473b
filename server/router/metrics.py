"""The router's Prometheus metrics (server/observability.py): operations by
kind and status code, their latency, and the router's counters (retries,
routing updates) read at scrape time."""
from __future__ import annotations

import time
from contextlib import contextmanager

import grpc
from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from server.observability import LATENCY_BUCKETS

OPS = Counter("quorumkv_router_ops_total", "Operations answered, by kind and gRPC status code", ["op", "code"])
LATENCY = Histogram("quorumkv_router_latency_seconds", "From a request's arrival to its answer", ["op"],
                    buckets=LATENCY_BUCKETS)


@contextmanager
def measured(op: str):
    """Times the block and counts it under the RouterError's code, or OK."""
    t0 = time.perf_counter()
    code = "OK"
    try:
        yield
    except Exception as exc:
        code = getattr(getattr(exc, "code", None), "name", None) or grpc.StatusCode.INTERNAL.name
        raise
    finally:
        LATENCY.labels(op).observe(time.perf_counter() - t0)
        OPS.labels(op, code).inc()


class RouterCollector:
    def __init__(self, router):
        self.router = router

    def collect(self):
        stats = self.router.stats
        retries = CounterMetricFamily("quorumkv_router_retries", "Retries after not-leader, timeouts, no leader")
        retries.add_metric([], stats["retries"])
        updates = CounterMetricFamily("quorumkv_router_routing_updates", "Routing tables received from the MM")
        updates.add_metric([], stats["routing_updates"])
        version = GaugeMetricFamily("quorumkv_router_routing_version", "Version of the routing copy in use")
        version.add_metric([], self.router.routing.version)
        learned = CounterMetricFamily("quorumkv_router_learner_writes",
                                      "Writes whose commit this router counted from the followers' acknowledgements "
                                      "(counted), or gave up counting (unknown: retried)", labels=["outcome"])
        board = self.router.learn_board
        learned.add_metric(["counted"], board.counted if board is not None else 0)
        learned.add_metric(["unknown"], board.unknown if board is not None else 0)
        yield from (retries, updates, version, learned)
