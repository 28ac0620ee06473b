"""Routing: a request manager's in-memory copy of the metadata, in a compact form.

Purpose: answers "which replication group (RG) holds (table, key), and which
node leads it" for every request, from the RoutingTable the metadata manager
pushes (server/proto/meta.proto, Meta.Watch).

Sizing (issue 4: at most 30 bytes per RG and per table beyond the bytes of the
keys themselves; 1,000 to 10,000 RGs in the design): no Python object per
table, range or RG. Everything lives in typed arrays (the `array` module:
compact like numpy's, and faster to index one element at a time, which is
what binary searches do) and byte blobs:

    tables   names: one blob of the sorted names + u32 end offsets   4 B + name
             table_id u32, first range u32                            8 B
    ranges   starts: one blob + u32 end offsets (per table sorted)   4 B + key
             rg u32 (index into the group arrays)                     4 B
    groups   rg id u64, leader node u32, epoch u64                   20 B

so a table costs 12 bytes plus its name, a range 8 plus its start key, an RG
20 (bench/routing_memory.py measures it). Lookups are binary searches over
the blobs (O(log n) slices).

Every request looks up its route: the tables and routes used last are kept
in two small dicts (at most ROUTE_CACHE_ENTRIES each, emptied when full and
when a leader moves), so a hot table costs one dict lookup, not two binary
searches in Python and a new Route object. A bounded cost beyond the
per-table sizes above: a cached Route holds copies of its start and end keys,
so at most 1,024 x 2 x 4 KiB (8 MiB) with the longest keys, a few hundred KiB
with typical ones.

Thread-safety: one event loop uses it. Immutable once built, except that a
leader named in a node's answer may move a group to a newer epoch (with_leader);
the router swaps in a new Routing for every update from the MM.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate

from server.proto import meta_pb2


class _SortedBlobs:
    """Byte strings in one blob, addressed by end offsets."""

    __slots__ = ("blob", "ends")

    def __init__(self, items: list[bytes]):
        self.blob = b"".join(items)
        self.ends = array("I", accumulate(len(x) for x in items))

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> bytes:
        lo = self.ends[i - 1] if i > 0 else 0
        return self.blob[lo:self.ends[i]]

    def bisect_right(self, key: bytes, lo: int, hi: int) -> int:
        """First index in [lo, hi) whose item is > key (items sorted in that span)."""
        while lo < hi:
            mid = (lo + hi) // 2
            if key < self[mid]:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def nbytes(self) -> int:
        return len(self.blob) + self.ends.itemsize * len(self.ends)


@dataclass(frozen=True, slots=True)
class Route:
    table_id: int
    rg: int
    leader: int          # 0: no leader yet
    epoch: int
    start: bytes         # the range's first key
    end: bytes | None    # the next range's first key; None: the table's last range


class NoSuchTable(KeyError):
    pass


ROUTE_CACHE_ENTRIES = 1024


class Routing:
    def __init__(self, rt: meta_pb2.RoutingTable | None = None):
        rt = rt or meta_pb2.RoutingTable()
        self.version = rt.version
        tables = sorted(rt.tables, key=lambda t: t.name)
        self._names = _SortedBlobs([t.name.encode() for t in tables])
        self._table_ids = array("I", (t.table_id for t in tables))
        starts: list[bytes] = []
        rgs: list[int] = []
        first = []
        for t in tables:
            first.append(len(starts))
            for r in sorted(t.ranges, key=lambda r: r.start):
                starts.append(r.start)
                rgs.append(r.rg)
        first.append(len(starts))
        self._first_range = array("I", first)
        self._starts = _SortedBlobs(starts)
        groups = sorted(rt.groups, key=lambda g: g.rg)
        self._rg_ids = array("Q", (g.rg for g in groups))
        self._leaders = array("I", (g.leader for g in groups))
        self._epochs = array("Q", (g.epoch for g in groups))
        self._range_group = array("I", (bisect_left(self._rg_ids, rg) for rg in rgs))
        self.nodes = {n.node_id: n.address for n in rt.nodes}
        self._table_cache: dict[str, int] = {}   # table name -> table index
        self._route_cache: dict[int, Route] = {}  # range index -> its Route (leaders as of now)

    # ---------------------------------------------------------------- lookups
    def _table_index(self, table: str) -> int:
        name = table.encode()
        i = self._names.bisect_right(name, 0, len(self._names)) - 1
        if i < 0 or self._names[i] != name:
            raise NoSuchTable(table)
        return i

    def has_table(self, table: str) -> bool:
        try:
            self._table_index(table)
        except NoSuchTable:
            return False
        return True

    def tables(self) -> list[str]:
        return [self._names[i].decode() for i in range(len(self._names))]

    def _route(self, t: int, r: int) -> Route:
        last = self._first_range[t + 1] - 1
        g = self._range_group[r]
        return Route(self._table_ids[t], self._rg_ids[g], self._leaders[g], self._epochs[g],
                     self._starts[r], self._starts[r + 1] if r < last else None)

    def route(self, table: str, key: bytes) -> Route:
        """The range holding `key`. Raises NoSuchTable."""
        t = self._table_cache.get(table)
        if t is None:
            t = self._table_index(table)
            if len(self._table_cache) >= ROUTE_CACHE_ENTRIES:
                self._table_cache.clear()
            self._table_cache[table] = t
        lo, hi = self._first_range[t], self._first_range[t + 1]
        r = lo if hi - lo == 1 else max(self._starts.bisect_right(key, lo, hi) - 1, lo)
        route = self._route_cache.get(r)
        if route is None:
            route = self._route(t, r)
            if len(self._route_cache) >= ROUTE_CACHE_ENTRIES:
                self._route_cache.clear()
            self._route_cache[r] = route
        return route

    def ranges(self, table: str) -> list[Route]:
        t = self._table_index(table)
        return [self._route(t, r) for r in range(self._first_range[t], self._first_range[t + 1])]

    def group(self, rg: int) -> tuple[int, int] | None:
        """(leader, epoch) of an RG, or None if unknown."""
        g = bisect_left(self._rg_ids, rg)
        if g >= len(self._rg_ids) or self._rg_ids[g] != rg:
            return None
        return self._leaders[g], self._epochs[g]

    def with_leader(self, rg: int, leader: int, epoch: int) -> bool:
        """Records a leader a node named in an answer ("not leader, try N"),
        if its epoch is newer than what this copy knows. Returns whether it was."""
        g = bisect_left(self._rg_ids, rg)
        if g >= len(self._rg_ids) or self._rg_ids[g] != rg or epoch <= self._epochs[g]:
            return False
        self._leaders[g] = leader
        self._epochs[g] = epoch
        self._route_cache.clear()   # routes carry their group's leader and epoch
        return True

    def nbytes(self) -> int:
        """Bytes of routing state (what issue 4 bounds), node directory excluded."""
        arrays = (self._table_ids, self._first_range, self._rg_ids, self._leaders, self._epochs, self._range_group)
        return self._names.nbytes() + self._starts.nbytes() + sum(a.itemsize * len(a) for a in arrays)
