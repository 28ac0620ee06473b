"""gRPC runtime settings for every quorumkv process, set before grpc is imported.

Imported by server/__init__.py, so any `server.*` import (the CLI's roles, the
SDK through quorumkv/, the benchmarks) applies it before the first
`import grpc`. A GRPC_EXPERIMENTS already in the environment wins.

Why: grpc's EventEngine endpoints (the default since grpcio 1.6x) hand every
message between its own I/O threads, the aio poller thread and the event
loop: two extra thread wake-ups per message, on a path whose cost is mostly
such hand-offs. With the classic poller the thread that polls does the
socket I/O. Measured with bench/rg_throughput.py, runs alternating
(bench/RESULTS.md, 10:45 entry): writes/s +17% at one client (median of 5
pairs) and +13% at 64, linearizable gets +35% and +25%. A name this grpcio
does not know is logged as an error and ignored: keep the list to known ones.
"""
from __future__ import annotations

import os

GRPC_EXPERIMENTS = ",".join(f"-{name}" for name in (
    "event_engine_client",
    "event_engine_listener",
    "event_engine_for_all_other_endpoints",
    "event_engine_callback_cq",
))

os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
