"""Catalog: the tables, their key ranges and the replication group (RG) of each range.

Purpose: the data half of the metadata manager's state (design section 4),
kept in the MetaBackend (server/meta/backend.py): one record per table,

    table/<name> = {"id": table id, "ranges": [[start key hex, rg], ...]}

ranges sorted by start, the first starting at the empty key, so every key of
the table has exactly one range. Table ids are cluster-wide and never reused
(a dropped table's keys may still sit in the RGs' engines until reclaimed):
the counter is the record `counter/table_id`.

Placement: a new table's ranges go to the RGs holding the fewest ranges, in
turn, so tables spread over the groups (the controller's splits and moves,
issue 5, refine it later).

Thread-safety: none; the MM's loop owns it.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.db import TABLE_NAME_PATTERN, TABLE_NAME_RULE
from server.meta.backend import MetaBackend
from server.node.dedup import DEDUP_TABLE_ID

MAX_KEY = 4096


class TableExists(ValueError):
    pass


class NoSuchTable(KeyError):
    pass


@dataclass(frozen=True)
class Table:
    name: str
    table_id: int
    ranges: tuple[tuple[bytes, int], ...]   # (start, rg), sorted by start, first start b""


class Catalog:
    def __init__(self, store: MetaBackend):
        self.store = store
        self.tables: dict[str, Table] = {}
        for name, rec in store.items("table"):
            self.tables[name] = Table(name, rec["id"], tuple((bytes.fromhex(s), rg) for s, rg in rec["ranges"]))

    def create_table(self, name: str, split_keys: list[bytes], groups: list[int]) -> Table:
        """Raises ValueError for a bad name or split key or when there is no RG,
        TableExists when the name is taken."""
        if not isinstance(name, str) or not TABLE_NAME_PATTERN.match(name):
            raise ValueError(f"table name {name!r} is invalid: use {TABLE_NAME_RULE}")
        if name in self.tables:
            raise TableExists(f"table {name!r} already exists")
        if not groups:
            raise ValueError("no replication group exists yet to hold the table")
        splits = sorted(set(split_keys))
        for k in splits:
            if not 1 <= len(k) <= MAX_KEY:
                raise ValueError(f"split keys must be 1 to {MAX_KEY} bytes, got {len(k)}")
        load = {rg: 0 for rg in groups}
        for t in self.tables.values():
            for _, rg in t.ranges:
                if rg in load:
                    load[rg] += 1
        order = sorted(groups, key=lambda rg: (load[rg], rg))
        starts = [b""] + splits
        ranges = tuple((start, order[i % len(order)]) for i, start in enumerate(starts))
        table_id = (self.store.get("counter", "table_id") or 0) + 1
        if table_id >= DEDUP_TABLE_ID:   # the ids above are the replicas' own (server/node/dedup.py)
            raise ValueError(f"table ids are exhausted ({table_id - 1} tables were created)")
        self.store.put("counter", "table_id", table_id)
        self.store.put("table", name, {"id": table_id, "ranges": [[s.hex(), rg] for s, rg in ranges]})
        t = self.tables[name] = Table(name, table_id, ranges)
        return t

    def drop_table(self, name: str) -> Table:
        t = self.tables.get(name)
        if t is None:
            raise NoSuchTable(name)
        self.store.put("table", name, None)
        del self.tables[name]
        return t
