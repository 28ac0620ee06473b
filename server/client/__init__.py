"""quorumkv's client SDK (issue 4); users import it as the `quorumkv` package.

    import quorumkv
    with quorumkv.Client("127.0.0.1:7000,127.0.0.1:7001") as c:    # or Client(): default_routers()
        c.put("stocks", b"a", b"120")

Modules: `sync_client` (Client, for threads), `async_client` (AsyncClient,
for asyncio), `batch_stream` (ops multiplexed onto Batch streams in batches),
`retry` (deadlines, backoff, RetryPolicy), `paging` (list pages),
`routers` (addresses, default_routers, the round_robin target),
`record` (Record, argument rules), `errors` (the exceptions).
"""
from __future__ import annotations

from server.client.async_client import AsyncClient
from server.client.errors import (
    ConditionFailed,
    DeadlineExceeded,
    InvalidArgument,
    OutcomeUnknown,
    QuorumKVError,
    TableExists,
    TableNotFound,
    Unavailable,
)
from server.client.record import Record
from server.client.retry import RetryPolicy
from server.client.routers import default_routers
from server.client.sync_client import Client

__all__ = [
    "AsyncClient", "Client", "ConditionFailed", "DeadlineExceeded", "InvalidArgument", "OutcomeUnknown",
    "QuorumKVError", "Record", "RetryPolicy", "TableExists", "TableNotFound", "Unavailable", "default_routers",
]
