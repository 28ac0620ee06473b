"""DedupWindow: the request ids a replica applied, kept in its engine so they survive restarts and travel in snapshots.

Purpose: a router that does not know a write's outcome (a lost answer, a
leader change) retries it under the same request id, on whichever replica
leads by then; that replica must answer from the first attempt, never apply
the write again (a second copy would overwrite the writes acknowledged in
between). So the window is part of the replicated state, like the data:
every replica records the same ids in log order and evicts the same oldest
ones (the retention rule below), in a reserved engine table
written just before the entry's own records. A restart rebuilds it from the
engine (whose durable state plus the replayed log is the state at the last
applied entry), and a snapshot carries the table like any other.

Records in table DEDUP_TABLE_ID, one per applied WRITE entry that carried
request ids (two or more if its requests' seqs pass a value's 1 MiB):

    key    entry index u64 BE | part u16 BE
    value  request * n, each:
           +-----------+--------+-----------+------------------------+
           | id        | status | count     | seqs                   |
           | u64 LE    | u8     | u32 LE    | 16 bytes * count       |
           +-----------+--------+-----------+------------------------+
    seq    the largest seq stamped in the entry

status: APPLIED, or VOIDED (its table was dropped before it committed, so a
retry hears TABLE_DROPPED); seqs: the seqs its records were stored with.

One more record, key (entry index 0, part 0) (no entry has index 0): its
value is the highest seq of the entries evicted so far (`evicted_through`;
empty while none was), written with the window's first entry. A table
without it was written before it existed: load() then counts a window that
could have evicted by count (nearly `capacity` ids) as having evicted.

A retry whose id is not in the window and whose first attempt was stamped
at or below evicted_through may have applied in an evicted entry: the
leader answers it FORGOTTEN instead of applying it again (write_path.py).
Stamped seqs only grow in log order (issue 3's sequencer rule), so an
attempt stamped above it can only be in a kept entry. An id applied again
by a later entry (a retry proposed anew) counts from the later one.

Retention: eviction drops whole entries, oldest first (one engine delete per
evicted entry), while the window holds more than `capacity` ids (DEDUP_WINDOW)
and either more than `max_ids` (DEDUP_MAX_IDS) or its oldest entry's stamp is
`retain_ns` (DEDUP_RETAIN_NS) or more older than the entry being recorded.
The time rule stops once `time_evictions` records (DEDUP_TIME_EVICTIONS)
went in one call (finishing the entry it is at), so the first write after a
long pause does not drop a quarter of a million ids in one go (about 0.3 s
on the loop, on every replica at once): the window shrinks over the next
writes instead. So a group keeps every id of the last 15 s of its log, which covers a
client's retries (the SDK's default deadline is 10 s), up to a memory bound,
and never fewer than `capacity`: a group writing 2,000 requests a second
(the seed's figure) keeps 25 s, one writing 30,000 keeps the 15 s up to the
bound (about 8 s). Time here is the entries' stamped seqs, which are in the
log, so every replica evicts the same entries (after a router clock far
ahead of the others, later stamps keep its timestamp and grow by their
counter for a while: the window then keeps up to max_ids). A replica
running an older rule keeps a different window; both are safe (a smaller
window only answers FORGOTTEN sooner).

Why written before the entry's records, as a separate engine batch without
an applied index: the engine persists by flushing whole memtables, so if the
entry's records (which move the applied index) are durable, so is its window;
the reverse (window durable, records not) replays the entry on restart, which
records the same ids again.

Thread-safety: the host's event loop only.
"""
from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterable
from typing import NamedTuple

from engine._native import write_batch
from engine._native.u64_map import U64Map

DEDUP_TABLE_ID = 2**32 - 2        # the engine's largest table id; the catalog never hands it out
DEDUP_WINDOW = 50_000             # request ids a replica keeps at least (whole entries: up to one entry fewer)
DEDUP_RETAIN_NS = 15 * 10**9      # ... and every id of the last 15 s of stamps (retention, above)
DEDUP_MAX_IDS = 250_000           # ... but never more than this (about 33 MB: bench/dedup_memory.py)
DEDUP_TIME_EVICTIONS = 4_096      # records the time rule evicts per entry recorded, about (retention, above)
MAX_DEDUP_RECORDS = 60_000        # records of one deduplicated request: its seqs fit in one engine value
MAX_ENTRY_REQUESTS = 10_000       # request ids in one log entry at most (write_path.py splits proposals)
APPLIED, VOIDED = 1, 2
_REQUEST = struct.Struct("<QBI")
_KEY = struct.Struct(">QH")
_EVICTED_KEY = _KEY.pack(0, 0)   # the highest seq of the entries evicted so far
_PART_BYTES = write_batch.MAX_VALUE - 64


class Applied(NamedTuple):
    """What the window knows of one request."""

    index: int
    order: int
    status: int
    seqs: bytes


Rows = Iterable[tuple[bytes, bytes, bytes]]


class DedupWindow:
    """The window, loaded from the table's rows on first use (`source`), so a
    node opening hundreds of idle replicas reads none of them.

    In memory, about 130 bytes an id instead of about 500 with a dict of
    tuples (bench/dedup_memory.py; bench/RESULTS.md, 2026-11-28 06:50): one
    record per (request id, entry) in log order, kept in flat arrays (its
    id, its entry's index, its order and status, where its seqs start in one
    byte arena, its entry's highest seq for evicted_through), and a U64Map
    from each id to its newest record's number.
    Evicting the oldest entry drops records from the front; the arrays give
    the dropped prefix back once it is as long as what is kept."""

    def __init__(self, capacity: int = DEDUP_WINDOW, source: Callable[[], Rows] | None = None, *,
                 retain_ns: int = DEDUP_RETAIN_NS, max_ids: int = DEDUP_MAX_IDS,
                 time_evictions: int = DEDUP_TIME_EVICTIONS):
        if capacity < 1:
            raise ValueError("the window holds at least one request")
        if retain_ns < 0 or max_ids < capacity or time_evictions < 1:
            raise ValueError(f"retain_ns must be >= 0, max_ids >= capacity ({capacity}) and time_evictions >= 1, "
                             f"got {retain_ns}, {max_ids} and {time_evictions}")
        self.capacity = capacity
        self.retain_ns = retain_ns
        self.max_ids = max_ids
        self.time_evictions = time_evictions
        self._source = source
        self._clear()

    def _clear(self) -> None:
        self._newest: U64Map = U64Map()   # request id -> number of its newest record
        self._base = 0                    # number of the record at position 0 of the arrays
        self._head = 0                    # position of the oldest record kept
        self._rec_id = array("Q")         # per record, in log order: the request id,
        self._rec_index = array("Q")      # the index of its entry,
        self._rec_meta = array("Q")       # order << 8 | status,
        self._rec_seqs = array("Q")       # where its seqs start in _seqs (arena offset + _seqs_base)
        self._seqs = bytearray()          # the records' seqs, in record order
        self._seqs_base = 0
        self._parts: dict[int, int] = {}  # entry index -> its rows, when more than one
        self._rec_entry_seq = bytearray()  # per record, 16 bytes: the highest seq of its entry
        self._last_index = 0              # the newest entry recorded
        self.evicted_through = b""        # the highest seq of the entries evicted (b"": none yet)
        self._tracked = False             # the table holds the evicted_through record (module docstring)

    def _loaded(self) -> U64Map:
        if self._source is not None:
            source, self._source = self._source, None
            self.load(source())
        return self._newest

    def __len__(self) -> int:
        return len(self._loaded())

    def __contains__(self, request_id: int) -> bool:
        return request_id in self._loaded()

    def get(self, request_id: int) -> Applied | None:
        n = self._loaded().get(request_id)
        if n is None:
            return None
        i = n - self._base
        start = self._rec_seqs[i] - self._seqs_base
        end = self._rec_seqs[i + 1] - self._seqs_base if i + 1 < len(self._rec_seqs) else len(self._seqs)
        meta = self._rec_meta[i]
        return Applied(self._rec_index[i], meta >> 8, meta & 0xFF, bytes(self._seqs[start:end]))

    def reset(self, source: Callable[[], Rows]) -> None:
        """Forgets the window; the next use loads it from `source` (after a snapshot install)."""
        self._source = source
        self._clear()

    def load(self, rows: Rows) -> None:
        """Replaces the window by the dedup table's rows (key, value, seq), as
        a restart or a snapshot install leaves them."""
        parts: dict[int, list[tuple[int, bytes]]] = {}
        seqs: dict[int, bytes] = {}
        evicted = b""
        tracked = False
        for key, value, seq in rows:
            if key == _EVICTED_KEY:
                evicted, tracked = value, True
                continue
            index, part = _KEY.unpack(key)
            parts.setdefault(index, []).append((part, value))
            seqs[index] = seq
        self._source = None
        self._clear()
        self.evicted_through = evicted
        self._tracked = tracked
        for index in sorted(parts):
            self._add(index, [r for _part, value in sorted(parts[index]) for r in _unpack(value)],
                      len(parts[index]), seqs[index])
        if not tracked and len(self._newest) >= self.capacity - MAX_ENTRY_REQUESTS:
            # A table written before evicted_through was recorded: a window this
            # full may have evicted (after an eviction it never holds fewer ids
            # than this). Everything evicted is older than the oldest entry kept.
            self.evicted_through = bytes(self._rec_entry_seq[:16])

    def _add(self, index: int, requests: list[tuple[int, int, bytes]], parts: int, seq: bytes) -> None:
        if len(seq) != 16:
            raise ValueError(f"entry {index}'s seq must be 16 bytes, not {len(seq)}")
        newest = self._newest
        for order, (rid, status, seqs) in enumerate(requests):
            n = newest.get(rid)
            if n is not None and self._rec_index[n - self._base] == index:
                continue   # twice in one entry: the first counts
            newest[rid] = self._base + len(self._rec_id)
            self._rec_id.append(rid)
            self._rec_index.append(index)
            self._rec_meta.append(order << 8 | status)
            self._rec_seqs.append(self._seqs_base + len(self._seqs))
            self._seqs += seqs
            self._rec_entry_seq += seq
        if parts > 1:
            self._parts[index] = parts
        self._last_index = index

    def record(self, index: int, requests: list[tuple[int, int, bytes]], seq: bytes) -> bytes | None:
        """Adds the requests (id, status, seqs) of the entry at `index`, in
        their order, and evicts the oldest entries as the retention rule
        (module docstring) says, never the new one. Returns the engine batch that
        makes the table match (`seq` on every record), or None if nothing
        changes: no requests, or an entry recorded already (a replay after a
        crash that kept the window but not the entry's records). Entries are
        recorded in log order, so "recorded already" is "at or below the
        newest entry recorded"."""
        newest = self._loaded()
        if not requests or index <= self._last_index:
            return None
        values = _pack(requests)
        self._add(index, requests, len(values), seq)
        records = []
        evicted = self.evicted_through
        keep_from = int.from_bytes(seq[:8], "big") - self.retain_ns   # entries stamped above it are kept
        time_budget = self.time_evictions   # records the time rule may still evict in this call
        while len(newest) > self.capacity and self._rec_index[self._head] != index:
            by_time = len(newest) <= self.max_ids
            if by_time and (
                    time_budget <= 0
                    or int.from_bytes(self._rec_entry_seq[16 * self._head:16 * self._head + 8], "big") > keep_from):
                break
            first = self._head
            old = self._rec_index[self._head]
            evicted = max(evicted, bytes(self._rec_entry_seq[16 * self._head:16 * self._head + 16]))
            while self._rec_index[self._head] == old:   # the new entry's records end the arrays
                rid = self._rec_id[self._head]
                if newest.get(rid) == self._base + self._head:   # not applied again by a later entry
                    newest.pop(rid)
                self._head += 1
            records.extend((write_batch.DELETE, DEDUP_TABLE_ID, _KEY.pack(old, part), None, seq)
                           for part in range(self._parts.pop(old, 1)))
            if by_time:
                time_budget -= self._head - first
        if evicted != self.evicted_through or not self._tracked:
            self.evicted_through = evicted
            self._tracked = True
            records.append((write_batch.VALUE, DEDUP_TABLE_ID, _EVICTED_KEY, evicted, seq))
        if self._head and 2 * self._head >= len(self._rec_id):
            self._trim()
        records.extend((write_batch.VALUE, DEDUP_TABLE_ID, _KEY.pack(index, part), value, seq)
                       for part, value in enumerate(values))
        return write_batch.encode_many(records)

    def _trim(self) -> None:
        """Gives back the arrays' dropped prefix (amortized: at most once per as many records kept)."""
        h = self._head
        cut = self._rec_seqs[h] - self._seqs_base
        del self._rec_id[:h], self._rec_index[:h], self._rec_meta[:h], self._rec_seqs[:h], self._seqs[:cut]
        del self._rec_entry_seq[:16 * h]
        self._base += h
        self._seqs_base += cut
        self._head = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the window's arrays, arena and map (what it costs a replica)."""
        arrays = (self._rec_id, self._rec_index, self._rec_meta, self._rec_seqs)
        return (sum(a.buffer_info()[1] * a.itemsize for a in arrays) + len(self._seqs)
                + len(self._rec_entry_seq) + self._loaded().nbytes)

    def may_have_forgotten(self, first_seq: bytes) -> bool:
        """Whether a request whose attempts were all stamped at or above
        `first_seq` may have applied in an entry this window evicted (module
        docstring): then a retry of it that is not in the window has an
        unknown outcome."""
        self._loaded()
        return bool(self.evicted_through) and first_seq <= self.evicted_through


def _pack(requests: list[tuple[int, int, bytes]]) -> list[bytes]:
    """The entry's requests as values of at most _PART_BYTES (one request never spans two)."""
    values: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for rid, status, seqs in requests:
        one = _REQUEST.pack(rid, status, len(seqs) // 16) + seqs
        if chunk and size + len(one) > _PART_BYTES:
            values.append(b"".join(chunk))
            chunk, size = [], 0
        chunk.append(one)
        size += len(one)
    values.append(b"".join(chunk))
    return values


def _unpack(value: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    at = 0
    while at < len(value):
        rid, status, count = _REQUEST.unpack_from(value, at)
        at += _REQUEST.size
        out.append((rid, status, value[at:at + 16 * count]))
        at += 16 * count
    return out
