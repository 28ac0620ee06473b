"""Catalog: the tables, their key ranges and the replication group (RG) of each range.

Purpose: the data half of the metadata manager's state (design section 4),
kept in the MetaBackend (server/meta/backend.py): one record per table,

    table/<name> = {"id": table id, "ranges": [[start key hex, rg], ...]}

ranges sorted by start, the first starting at the empty key, so every key of
the table has exactly one range. Table ids are cluster-wide and never reused
(a dropped table's keys may still sit in the RGs' engines until reclaimed):
the counter is the record `counter/table_id`.

Retries: a create or drop whose answer was lost (its router died, say) is
retried by the SDK under the same request id; without one the retry heard
TableExists for the caller's own new table, or NoSuchTable for its own drop
(and the groups' part of that drop was never done). The last
TABLE_REQUESTS_KEPT such calls are remembered,

    request/<id> = {"op": "create" | "drop", "table": name, "id": table id,
                    "ranges": [...], "n": order}

written in the same atomic change as the table record (put_many), so a
retry gets the first call's answer (the table as it was created or
dropped) whatever happened since. Oldest forgotten first.

Dropped data: a drop also records, in the same change, the groups whose
engines still hold the table's rows,

    dropping/<table id> = {"rgs": [rg, ...]}

until each has dropped them (data_freed; the MM's TableReclaimer sees to it,
server/meta/table_reclaimer.py): the router that made the drop frees them
at once, within its client's deadline, but it may die or run out of time.

Placement: a new table's ranges go to the RGs holding the fewest ranges, in
turn, so tables spread over the groups (the controller's splits and moves,
issue 5, refine it later).

Thread-safety: none; the MM's loop owns it.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from engine.db import TABLE_NAME_PATTERN, TABLE_NAME_RULE
from server.meta.backend import MetaBackend
from server.node.dedup import DEDUP_TABLE_ID

MAX_KEY = 4096
# A table's record (and, for a call with a request id, its answer: the ranges
# twice, hex) is one atomic store change, which etcd caps at 1.5 MiB per
# request: 10,000 ranges and 128 KiB of split keys make at most about 1 MB.
MAX_RANGES = 10_000
MAX_SPLIT_KEY_BYTES = 128 << 10
TABLE_REQUESTS_KEPT = 10_000


class TableExists(ValueError):
    pass


class NoSuchTable(KeyError):
    pass


class RequestIdReused(ValueError):
    """A request id already answered a different table call."""


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
            self.tables[name] = Table(name, rec["id"], _ranges(rec["ranges"]))
        self.requests: OrderedDict[int, dict[str, Any]] = OrderedDict(
            sorted(((int(k), v) for k, v in store.items("request")), key=lambda kv: kv[1]["n"]))
        self.dropping: dict[int, set[int]] = {int(k): set(v["rgs"]) for k, v in store.items("dropping")}

    def create_table(self, name: str, split_keys: list[bytes], groups: list[int], request_id: int = 0) -> Table:
        """Raises ValueError for a bad name or split key or when there is no RG,
        TableExists when the name is taken, RequestIdReused. A call already
        made under `request_id` returns the table it created."""
        done = self._done(request_id, "create", name)
        if done is not None:
            return done
        if not isinstance(name, str) or not TABLE_NAME_PATTERN.match(name):
            raise ValueError(f"table name {name!r} is invalid: use {TABLE_NAME_RULE}")
        if name in self.tables:
            raise TableExists(f"table {name!r} already exists")
        if not groups:
            raise ValueError("no replication group exists yet to hold the table")
        splits = sorted(set(split_keys))
        check_split_keys(splits)
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
        t = Table(name, table_id, ranges)
        self._commit([("counter", "table_id", table_id), ("table", name, {"id": table_id, "ranges": _hex(ranges)})],
                     request_id, "create", t)
        self.tables[name] = t
        return t

    def drop_table(self, name: str, request_id: int = 0) -> Table:
        """The table dropped. Raises NoSuchTable, RequestIdReused. A call
        already made under `request_id` returns the table it dropped."""
        done = self._done(request_id, "drop", name)
        if done is not None:
            return done
        t = self.tables.get(name)
        if t is None:
            raise NoSuchTable(name)
        rgs = {rg for _, rg in t.ranges}
        self._commit([("table", name, None), ("dropping", t.table_id, {"rgs": sorted(rgs)})], request_id, "drop", t)
        del self.tables[name]
        self.dropping[t.table_id] = rgs
        return t

    def data_freed(self, table_id: int, rg: int) -> None:
        """Group `rg` dropped the rows of dropped table `table_id`."""
        rgs = self.dropping.get(table_id)
        if rgs is None or rg not in rgs:
            return
        left = rgs - {rg}
        self.store.put("dropping", table_id, {"rgs": sorted(left)} if left else None)
        if left:
            self.dropping[table_id] = left
        else:
            del self.dropping[table_id]

    # ------------------------------------------------------------ retries
    def _done(self, request_id: int, op: str, name: str) -> Table | None:
        rec = self.requests.get(request_id) if request_id else None
        if rec is None:
            return None
        if rec["op"] != op or rec["table"] != name:
            raise RequestIdReused(f"request id {request_id} already answered a {rec['op']} of table "
                                  f"{rec['table']!r}: use a new id for each call")
        return Table(rec["table"], rec["id"], _ranges(rec["ranges"]))

    def _commit(self, changes: list, request_id: int, op: str, t: Table) -> None:
        """One atomic store change: the table's records and, for a call with a
        request id, its answer (evicting the oldest beyond TABLE_REQUESTS_KEPT)."""
        evicted: list[int] = []
        if request_id:
            n = next(reversed(self.requests.values()))["n"] + 1 if self.requests else 1
            rec = {"op": op, "table": t.name, "id": t.table_id, "ranges": _hex(t.ranges), "n": n}
            changes = changes + [("request", request_id, rec)]
            evicted = list(self.requests)[:max(0, len(self.requests) + 1 - TABLE_REQUESTS_KEPT)]
            changes += [("request", old, None) for old in evicted]
        self.store.put_many(changes)
        for old in evicted:
            del self.requests[old]
        if request_id:
            self.requests[request_id] = rec


def check_split_keys(split_keys: list[bytes]) -> None:
    """Raises ValueError unless every split key is 1 to MAX_KEY bytes and all
    of them fit one table record (MAX_RANGES, MAX_SPLIT_KEY_BYTES)."""
    for k in split_keys:
        if not 1 <= len(k) <= MAX_KEY:
            raise ValueError(f"split keys must be 1 to {MAX_KEY} bytes, got {len(k)}")
    if len(split_keys) >= MAX_RANGES:
        raise ValueError(f"a table has at most {MAX_RANGES} ranges: give at most {MAX_RANGES - 1} split keys, "
                         f"got {len(split_keys)}")
    total = sum(len(k) for k in split_keys)
    if total > MAX_SPLIT_KEY_BYTES:
        raise ValueError(f"a table's split keys total at most {MAX_SPLIT_KEY_BYTES} bytes, got {total}: "
                         "give fewer or shorter ones")


def _ranges(rows) -> tuple[tuple[bytes, int], ...]:
    return tuple((bytes.fromhex(s), rg) for s, rg in rows)


def _hex(ranges) -> list[list]:
    return [[s.hex(), rg] for s, rg in ranges]
