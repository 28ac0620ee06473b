"""quorumkv: the client of a quorumkv cluster.

    import quorumkv
    c = quorumkv.Client("127.0.0.1:7000,127.0.0.1:7001")   # threads; quorumkv.AsyncClient for asyncio
    c.create_table("stocks")
    seq = c.put("stocks", b"a", b"120")                     # the record's 16-byte seq
    c.get("stocks", b"a")                                   # Record(key=b'a', value=b'120', seq=...) or None
    c.close()

A thin facade: everything lives in server/client/ (start with its __init__).
Without an address, the client uses `default_routers()`: $QUORUMKV_ROUTERS,
else the routers file that `quorumkv up` writes.
"""
from __future__ import annotations

from server.client import (
    AsyncClient,
    Client,
    ConditionFailed,
    DeadlineExceeded,
    InvalidArgument,
    OutcomeUnknown,
    QuorumKVError,
    Record,
    RetryPolicy,
    TableExists,
    TableNotFound,
    Unavailable,
    default_routers,
)

__all__ = [
    "AsyncClient", "Client", "ConditionFailed", "DeadlineExceeded", "InvalidArgument", "OutcomeUnknown",
    "QuorumKVError", "Record", "RetryPolicy", "TableExists", "TableNotFound", "Unavailable", "default_routers",
]
