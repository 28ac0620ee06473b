"""MetaBackend: where the metadata manager (MM) keeps its durable state.

Purpose: one small interface over the two backends (issue 4), so the MM
(server/meta/service.py) and the catalog (catalog.py) never know which one
they run on:

    MetaStore   server/meta/store.py       embedded: an fsynced change log and
                                           snapshots in the MM's data directory
    EtcdStore   server/meta/etcd_store.py  records in an etcd cluster, every
                                           change a compare-and-swap Txn fenced
                                           by the MM's leadership

The state is a map of records named (kind, key): kind is a short word
("node", "group", "table", "counter"), key a string (ints are stored as their
decimal string), the value any JSON value. `put(kind, key, None)` deletes.

Contract (both backends):
  1. `put` returns only once the change is durable (embedded: fsynced; etcd:
     committed by a quorum of etcd members); the MM acts on a change, and
     sends messages that depend on it, only after `put` returned (E1 of
     server/replication/README.md: an epoch is never reissued).
  2. `get` and `items` answer from memory (the backend's copy of what it
     loaded plus every change it made); they never fail.
  3. A `put` that raises leaves the record as it was, as far as this process
     knows: `StoreFenced` says the change was refused (another MM owns the
     state now), `StoreUnavailable` that its outcome is unknown. After either,
     the MM stops acting (deactivates) and, on the etcd backend, reloads
     everything from etcd before it acts again.
  4. `backup()` is the whole state as one document (server/meta/backup.py),
     consistent: the MM's loop owns the backend, so no change is half done.

Thread-safety: none; one MM event loop owns a backend.
"""
from __future__ import annotations

from typing import Any, Protocol


class MetaStoreError(Exception):
    """A change could not be made durable; the MM must stop acting on its in-memory state."""


class StoreFenced(MetaStoreError):
    """The change was refused: this MM lost its leadership (or another writer changed the record).
    Nothing was written."""


class StoreUnavailable(MetaStoreError):
    """The store could not be reached in time: the change may or may not have been applied."""


class RecordMap:
    """get() and items() over `self.records` ("kind/key" -> value), the
    in-memory copy both backends keep of what they made durable."""

    records: dict[str, Any]

    def get(self, kind: str, key: str | int) -> Any:
        return self.records.get(f"{kind}/{key}")

    def items(self, kind: str) -> list[tuple[str, Any]]:
        prefix = kind + "/"
        return [(k[len(prefix):], v) for k, v in self.records.items() if k.startswith(prefix)]


class MetaBackend(Protocol):
    def get(self, kind: str, key: str | int) -> Any:
        """The record's value, or None when there is none (not an error)."""
        ...

    def items(self, kind: str) -> list[tuple[str, Any]]:
        """Every (key, value) of one kind, in no particular order."""
        ...

    def put(self, kind: str, key: str | int, value: Any) -> None:
        """Durably sets (value None: deletes) one record; returns once durable.
        Raises MetaStoreError (or OSError, embedded) when it cannot."""
        ...

    def put_many(self, changes: list[tuple[str, str | int, Any]]) -> None:
        """put() of several records (kind, key, value) as one change: after a
        crash, all of them or none. Raises as put() does."""
        ...

    def backup(self) -> bytes:
        """The whole state as one backup document (server/meta/backup.py)."""
        ...

    def close(self) -> None:
        ...
