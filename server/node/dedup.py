"""DedupWindow: the request ids a replica applied, kept in its engine so they survive restarts and travel in snapshots.

Purpose: a router that does not know a write's outcome (a lost answer, a
leader change) retries it under the same request id, on whichever replica
leads by then; that replica must answer from the first attempt, never apply
the write again (a second copy would overwrite the writes acknowledged in
between). So the window is part of the replicated state, like the data:
every replica records the same ids in log order and evicts the same oldest
ones (the last `capacity` requests applied), in a reserved engine table
written just before the entry's own records. A restart rebuilds it from the
engine (whose durable state plus the replayed log is the state at the last
applied entry), and a snapshot carries the table like any other.

Record in table DEDUP_TABLE_ID (one per request id):

    key    request id, u64 big endian
    value  +-----------+-----------+--------+------------------------+
           | index     | order     | status | seqs                   |
           | u64 LE    | u32 LE    | u8     | 16 bytes per record    |
           +-----------+-----------+--------+------------------------+
    seq    the largest seq stamped in the entry (so a later entry's record
           of the same id, or its eviction, is newer)

index: the log entry that applied it; order: its place among the entry's
requests (the window's order is (index, order)); status: APPLIED, or VOIDED
(its table was dropped before it committed, so a retry hears TABLE_DROPPED);
seqs: the seqs its records were stored with.

Why written before the entry's records, as a separate engine batch without
an applied index: the engine persists by flushing whole memtables, so if the
entry's records (which move the applied index) are durable, so is its window;
the reverse (window durable, records not) replays the entry on restart, which
records the same ids again.

Thread-safety: the host's event loop only.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

from engine._native import write_batch

DEDUP_TABLE_ID = 2**32 - 2        # the engine's largest table id; the catalog never hands it out
DEDUP_WINDOW = 50_000             # requests remembered per replica
MAX_DEDUP_RECORDS = 60_000        # records of one deduplicated request: its seqs fit in one engine value
APPLIED, VOIDED = 1, 2
_HEAD = struct.Struct("<QIB")
_KEY = struct.Struct(">Q")


class Applied(NamedTuple):
    """What the window knows of one request."""

    index: int
    order: int
    status: int
    seqs: bytes


class DedupWindow:
    def __init__(self, capacity: int = DEDUP_WINDOW):
        if capacity < 1:
            raise ValueError("the window holds at least one request")
        self.capacity = capacity
        self._ids: OrderedDict[int, Applied] = OrderedDict()   # in (index, order) order, oldest first

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, request_id: int) -> bool:
        return request_id in self._ids

    def get(self, request_id: int) -> Applied | None:
        return self._ids.get(request_id)

    def load(self, rows: Iterable[tuple[bytes, bytes, bytes]]) -> None:
        """Replaces the window by the dedup table's rows (key, value, seq), as
        a restart or a snapshot install leaves them."""
        found = []
        for key, value, _seq in rows:
            index, order, status = _HEAD.unpack_from(value)
            found.append((index, order, _KEY.unpack(key)[0], status, value[_HEAD.size:]))
        found.sort()
        self._ids = OrderedDict((rid, Applied(index, order, status, seqs))
                                for index, order, rid, status, seqs in found)

    def record(self, index: int, requests: list[tuple[int, int, bytes]], seq: bytes) -> bytes | None:
        """Adds the requests (id, status, seqs) of the entry at `index`, in
        their order, and evicts the oldest beyond capacity. Returns the engine
        batch that makes the table match (puts of the added ids that stay,
        deletes of the evicted ones, all with `seq`), or None if nothing
        changes."""
        if not requests:
            return None
        ids = self._ids
        added: dict[int, None] = {}   # ids of this entry, in order
        moved: set[int] = set()       # ... of which the table held an older record
        for order, (rid, status, seqs) in enumerate(requests):
            old = ids.get(rid)
            if old is not None:
                if old.index == index:
                    continue   # twice in one entry: the first counts
                del ids[rid]   # applied again later (a retry proposed anew): it moves to this entry
                moved.add(rid)
            ids[rid] = Applied(index, order, status, seqs)
            added[rid] = None
        evicted = []
        while len(ids) > self.capacity:
            evicted.append(ids.popitem(last=False)[0])
        table = DEDUP_TABLE_ID
        records = [(write_batch.DELETE, table, _KEY.pack(rid), None, seq)
                   for rid in evicted if rid not in added or rid in moved]
        for rid in added:
            a = ids.get(rid)
            if a is not None:   # not evicted at once (an entry with more requests than the window)
                records.append((write_batch.VALUE, table, _KEY.pack(rid),
                                _HEAD.pack(a.index, a.order, a.status) + a.seqs, seq))
        return write_batch.encode_many(records) if records else None
