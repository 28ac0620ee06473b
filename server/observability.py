"""Health checking and Prometheus metrics for every quorumkv process.

Health: the standard gRPC health service (grpcio-health-checking), served on
each process's own gRPC port, so load balancers and `grpc_health_probe` work
as with any gRPC server. A process reports SERVING once it started, and
NOT_SERVING while it stops.

Metrics: each process serves Prometheus' text format over HTTP on
`--metrics-listen` (default 127.0.0.1 on any free port; the port is in the
process's READY line as metrics=PORT). Counters on the hot path are plain
prometheus_client objects (a few microseconds each, per batch or per
request); state that already exists elsewhere (engine and log statistics,
replica roles) is read at scrape time by a collector, costing nothing
between scrapes.

Metric names: quorumkv_<process>_<what>, e.g. quorumkv_router_ops_total,
quorumkv_node_fsyncs_total, quorumkv_meta_leader_changes_total.
"""
from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY, start_http_server

# Latency buckets (seconds) for operations that take a network round trip
# plus an fsync: 0.5 ms .. 10 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def add_health(server: grpc.aio.Server, services: list[str]) -> health.aio.HealthServicer:
    """Registers the health service; `services` (full names) and "" start SERVING."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


async def set_serving(servicer: health.aio.HealthServicer, services: list[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *services]:
        await servicer.set(name, status)


def start_metrics(listen: str) -> int:
    """Starts the HTTP endpoint; returns its port."""
    host, _, port = listen.rpartition(":")
    httpd, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    return httpd.server_port


def register(collector) -> None:
    """A scrape-time collector (prometheus_client's Collector protocol)."""
    REGISTRY.register(collector)
