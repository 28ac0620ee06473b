"""EtcdStore: the metadata manager's records kept in an etcd cluster (the etcd backend).

Purpose: for users who need the metadata manager (MM) itself highly
available (issue 4): the state lives in etcd, several `quorumkv meta --backend
etcd` processes run, one of them active (etcd_election.py), and whichever
becomes active loads the state from etcd and carries on. Implements
MetaBackend (server/meta/backend.py).

etcd client: our own, over a subset of etcd's v3 API generated from
server/proto/etcd_v3.proto; etcd_client.py says why the PyPI clients were
not used (etcd3-async-client lacks transactions and leases and does not import
cleanly; aetcd talks to a single endpoint; etcd3 pins protobuf 3).

Layout in etcd, under the cluster's prefix P = "/quorumkv/<cluster name>/":

    P + "leader"            the active MM's address (UTF-8 host:port), attached
                            to its lease (etcd_election.py)
    P + "records/<kind>/<key>"
                            one record: its JSON value, UTF-8 (backend.py names
                            the kinds); no key: no record
    P + "restoring"         present while a restore writes the records (JSON:
                            how many it writes); an MM refuses to load them

Writes: every put is one Txn:

    compare  mod_revision(record key) == the revision this MM last saw of it
                                          (0: it saw none: the key must not exist)
             create_revision(P + "leader") == the revision at which this MM's
                                          campaign created the leader key
    success  put (or delete) the record
    failure  range P + "leader"          (to name the holder in the error)

The first compare is the compare-and-swap: a record changed by anyone else
since we loaded it is never overwritten. The second is the fence: once this
MM's lease expired (paused, partitioned, slow) the leader key is gone or
re-created by another MM at a higher revision, so every write of the stale
MM fails (StoreFenced), however late it arrives. A Txn commits through etcd's
raft log on a quorum of members before it returns: durable on every change.

Loading: one linearizable range read of P + "records/" (paged, at one
revision) after winning the campaign, so it sees every write of every
earlier MM, and remembers each record's mod_revision for the compares above.

Restore: `EtcdStore.restore` writes a backup's records (backup.py) under the
prefix, refusing when records or a leader key are there unless forced;
batches of at most TXN_OPS puts and TXN_BYTES (etcd's default --max-txn-ops
is 128, and one request is capped at 1.5 MiB), so a restore is several Txns. It writes P + "restoring"
first and deletes it with the last batch: a restore that stopped half way
(killed, etcd unreachable) leaves the marker, and load() refuses the partial
records (StoreUnavailable: an elected MM resigns and campaigns again) until a
restore runs to the end. A restore finding the marker replaces the partial
records without --force.

Thread-safety: none; the MM's loop owns it. Calls block the loop for one
etcd round trip (a few ms), as the embedded store blocks it for an fsync.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.meta import backup as backup_format
from server.meta.backend import RecordMap, StoreFenced, StoreUnavailable
from server.meta.etcd_client import EtcdClient, EtcdError, compare_create, compare_mod, op_delete, op_put, op_range

TXN_OPS = 100
TXN_BYTES = 1 << 20   # a restore's Txn carries at most this much (keys and values), under etcd's 1.5 MiB


def cluster_prefix(cluster_name: str) -> bytes:
    if not cluster_name or "/" in cluster_name:
        raise ValueError(f"cluster name {cluster_name!r} must be non-empty and without '/'")
    return f"/quorumkv/{cluster_name}/".encode()


def leader_key(prefix: bytes) -> bytes:
    return prefix + b"leader"


def records_prefix(prefix: bytes) -> bytes:
    return prefix + b"records/"


def restoring_key(prefix: bytes) -> bytes:
    """Present while a restore is writing the records (module docstring, "Restore")."""
    return prefix + b"restoring"


@dataclass(frozen=True)
class Fence:
    """What a write must find to go through: the leader key as this MM's campaign created it."""
    key: bytes
    create_revision: int


class EtcdStore(RecordMap):
    def __init__(self, client: EtcdClient, prefix: bytes, fence: Fence | None):
        """An empty store; `load()` reads the records. `fence` None writes without leadership
        (tests, tools); the MM always passes its campaign's Fence."""
        self.client = client
        self.prefix = prefix
        self.fence = fence
        self.records: dict[str, Any] = {}
        self._revisions: dict[str, int] = {}    # record name -> mod_revision this store last saw
        self.revision = 0                       # etcd revision of the load, then of our latest write
        self.writes = 0

    @classmethod
    def open(cls, client: EtcdClient, prefix: bytes, fence: Fence | None) -> EtcdStore:
        """A store loaded from etcd. Raises StoreUnavailable when etcd does not answer."""
        store = cls(client, prefix, fence)
        store.load()
        return store

    def load(self) -> None:
        """Reads every record. Raises StoreUnavailable when etcd does not answer, or
        when a restore that did not finish left its marker: the records are partial."""
        rp = records_prefix(self.prefix)
        try:
            kvs, self.revision = self.client.range_prefix(rp)
            restoring = self.client.get(restoring_key(self.prefix))
        except EtcdError as exc:
            raise StoreUnavailable(str(exc)) from None
        if restoring is not None:
            raise StoreUnavailable(f"a restore into {self.prefix.decode()} did not finish (its marker "
                                   f"{restoring_key(self.prefix).decode()} is there): the records are partial; "
                                   "run `quorumkv meta restore` again")
        self.records = {kv.key[len(rp):].decode(): json.loads(kv.value) for kv in kvs}
        self._revisions = {kv.key[len(rp):].decode(): kv.mod_revision for kv in kvs}

    # ----------------------------------------------------------- MetaBackend
    def put(self, kind: str, key: str | int, value: Any) -> None:
        """Durably sets (value None: deletes) one record through a fenced compare-and-swap Txn.
        Raises StoreFenced when the leader key or the record is not as this store last saw it
        (nothing written), StoreUnavailable when etcd did not answer (outcome unknown)."""
        self.put_many([(kind, key, value)])

    def put_many(self, changes: list[tuple[str, str | int, Any]]) -> None:
        """put() of several records in one Txn: all of them or none."""
        changes = [(f"{kind}/{key}", value) for kind, key, value in changes]
        changes = [(name, value) for name, value in changes if value is not None or name in self.records]
        if not changes:
            return
        rp = records_prefix(self.prefix)
        compare, ops = [], []
        for name, value in changes:
            ek = rp + name.encode()
            compare.append(compare_mod(ek, self._revisions.get(name, 0)))
            ops.append(op_delete(ek) if value is None
                       else op_put(ek, json.dumps(value, separators=(",", ":")).encode()))
        if self.fence is not None:
            compare.append(compare_create(self.fence.key, self.fence.create_revision))
        first = rp + changes[0][0].encode()
        names = ", ".join(name for name, _ in changes)
        try:
            resp = self.client.txn(compare, ops, [op_range(self.fence.key if self.fence else first)])
        except EtcdError as exc:
            raise StoreUnavailable(f"write of {names} not confirmed: {exc}") from None
        if not resp.succeeded:
            raise StoreFenced(self._refusal(names, resp))
        self.revision = resp.header.revision
        self.writes += 1
        for name, value in changes:
            if value is None:
                self.records.pop(name, None)
                self._revisions.pop(name, None)
            else:
                self.records[name] = value
                self._revisions[name] = resp.header.revision

    def _refusal(self, name: str, resp) -> str:
        kvs = resp.responses[0].response_range.kvs if resp.responses else []
        if self.fence is None:
            return f"record {name} was changed by another writer (etcd revision {kvs[0].mod_revision if kvs else 0})"
        if not kvs:
            return f"write of {name} refused: this metadata manager's leadership ended (no leader key)"
        if kvs[0].create_revision != self.fence.create_revision:
            return (f"write of {name} refused: the metadata manager at {kvs[0].value.decode(errors='replace')} "
                    f"took over (leader key created at revision {kvs[0].create_revision}, "
                    f"ours at {self.fence.create_revision})")
        return f"write of {name} refused: record changed by another writer"

    def backup(self) -> bytes:
        return backup_format.encode(self.records)

    def close(self) -> None:
        """The client belongs to the caller; nothing else to release."""

    # --------------------------------------------------------------- restore
    @staticmethod
    def restore(client: EtcdClient, prefix: bytes, records: dict[str, Any], force: bool = False) -> int:
        """Writes `records` (a backup's, backup.py) under `prefix`; returns how many.
        Raises backup.BackupError when records exist under the prefix or an MM holds the
        leader key, unless `force` (then the old records are deleted first). Requires:
        no MM writes meanwhile (stop them: a forced restore under an active MM makes its
        next write fail its compare-and-swap, and it reloads)."""
        rp = records_prefix(prefix)
        marker = restoring_key(prefix)
        records = backup_format.for_restore(records)
        names = sorted(records)
        try:
            existing, _ = client.range_prefix(rp)
            holder = client.get(leader_key(prefix))
            unfinished = client.get(marker) is not None   # a restore that stopped half way: partial records
            if not force:
                if holder is not None:
                    raise backup_format.BackupError(
                        f"a metadata manager is active at {holder.value.decode(errors='replace')}: "
                        "stop it first (or use --force)")
                if existing and not unfinished:
                    raise backup_format.BackupError(
                        f"{len(existing)} records already exist under {prefix.decode()} (use --force to replace them)")
            # The marker first: from here until the last batch, no MM loads these records.
            client.txn([], [op_put(marker, json.dumps({"records": len(names)}).encode())])
            if existing:
                client.delete_prefix(rp)
            batches = _batches([(rp + n.encode(), json.dumps(records[n], separators=(",", ":")).encode())
                                for n in names])
            for k, batch in enumerate(batches):
                ops = [op_put(key, value) for key, value in batch]
                if k == len(batches) - 1:
                    ops.append(op_delete(marker))   # with the last records: the state is whole
                client.txn([], ops)
        except EtcdError as exc:
            raise StoreUnavailable(str(exc)) from None
        return len(names)


def _batches(items: list[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
    """`items` in order, cut into Txns of at most TXN_OPS puts and TXN_BYTES
    (a record above TXN_BYTES travels alone: one record is one store change,
    which the catalog keeps under etcd's limit). At least one batch, maybe
    empty (it carries the marker's delete)."""
    out: list[list[tuple[bytes, bytes]]] = [[]]
    size = 0
    for key, value in items:
        n = len(key) + len(value)
        if out[-1] and (len(out[-1]) >= TXN_OPS or size + n > TXN_BYTES):
            out.append([])
            size = 0
        out[-1].append((key, value))
        size += n
    return out
