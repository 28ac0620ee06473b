"""The MetaBackend contract (server/meta/backend.py) on both backends: the embedded
MetaStore and EtcdStore against a real etcd (Debian's etcd-server, installed by
scripts/install-etcd on first use; skipped only when that install is impossible).

Covers: put/get/items/delete and reload, backup and restore (with the refusal of
a non-empty target), the compare-and-swap on records, and fencing: a metadata
manager whose lease expired cannot write once another one won the election.
"""
from __future__ import annotations

import itertools
import os
import threading
import time

import pytest

from server.meta import backup
from server.meta.backend import StoreFenced, StoreUnavailable
from server.meta.etcd_client import EtcdClient, EtcdError, compare_create, op_put
from server.meta.etcd_election import ElectionState, EtcdElection
from server.meta.etcd_store import TXN_OPS, EtcdStore, Fence, cluster_prefix, leader_key
from server.meta.etcd_testing import EtcdCluster, EtcdClusterError, etcd_binary
from server.meta.store import MetaStore

_names = itertools.count(1)

RECORDS = [
    ("node", 1, "127.0.0.1:7001"),
    ("node", 2, "127.0.0.1:7002"),
    ("group", 1, {"members": [1, 2, 3], "epoch": 4, "leader": 2, "voters": [1, 2, 3], "outgoing": [],
                  "learners": []}),
    ("table", "stocks", {"id": 1, "ranges": [["", 1], ["6d", 1]]}),
    ("counter", "table_id", 1),
]


@pytest.fixture(scope="module")
def etcd():
    try:
        etcd_binary(install=True)
    except EtcdClusterError as exc:
        pytest.skip(f"etcd could not be installed here (scripts/install-etcd): {exc}")
    with EtcdCluster(members=1, fsync=not os.path.isdir("/dev/shm")) as cluster:   # tmpfs: fast, disposable
        client = EtcdClient(cluster.client_endpoints)
        yield client
        client.close()


class Embedded:
    """Opens MetaStores on one directory."""

    def __init__(self, tmp_path):
        self.dir = str(tmp_path / "meta")

    def open(self):
        return MetaStore(self.dir)

    def restore(self, records, force=False):
        backup.restore_embedded(self.dir, records, force=force)


class Etcd:
    """Opens EtcdStores on one fresh prefix, fenced by a leader key this object created."""

    def __init__(self, client: EtcdClient):
        self.client = client
        self.prefix = cluster_prefix(f"test-{os.getpid()}-{next(_names)}")
        key = leader_key(self.prefix)
        lease, _ = client.lease_grant(30)
        resp = client.txn([compare_create(key, 0)], [op_put(key, b"test", lease)])
        assert resp.succeeded
        self.lease = lease
        self.fence = Fence(key, resp.header.revision)

    def open(self):
        return EtcdStore.open(self.client, self.prefix, self.fence)

    def restore(self, records, force=False):
        self.client.lease_revoke(self.lease)    # "stop the MM": restore refuses while one holds the key
        EtcdStore.restore(self.client, self.prefix, records, force=force)


@pytest.fixture(params=["embedded", "etcd"])
def backend(request, tmp_path):
    if request.param == "embedded":
        return Embedded(tmp_path)
    return Etcd(request.getfixturevalue("etcd"))


def _fill(store) -> None:
    for kind, key, value in RECORDS:
        store.put(kind, key, value)


def _state(store) -> dict:
    return {kind: dict(store.items(kind)) for kind in ("node", "group", "table", "counter")}


def test_put_get_items_survive_reopen(backend):
    s = backend.open()
    _fill(s)
    s.put("node", 2, "127.0.0.1:7102")       # overwrite
    s.put("table", "gone", {"id": 9, "ranges": [["", 1]]})
    s.put("table", "gone", None)             # delete
    s.put("table", "never", None)            # delete of a missing record: not an error
    assert s.get("node", 1) == "127.0.0.1:7001" and s.get("node", "2") == "127.0.0.1:7102"
    assert s.get("table", "gone") is None and s.get("nothing", 1) is None
    assert dict(s.items("node")) == {"1": "127.0.0.1:7001", "2": "127.0.0.1:7102"}
    want = _state(s)
    s.close()
    for _ in range(2):   # twice: reopening must not lose what the previous open replayed
        s = backend.open()
        assert _state(s) == want
        s.close()


def test_put_many_sets_and_deletes_several_records_at_once(backend):
    s = backend.open()
    _fill(s)
    s.put_many([("table", "stocks", None), ("counter", "table_id", 7), ("request", 42, {"op": "drop"})])
    want = _state(s)
    assert s.get("table", "stocks") is None and s.get("request", 42) == {"op": "drop"}
    s.close()
    s = backend.open()
    assert _state(s) == want and s.get("request", 42) == {"op": "drop"}
    s.close()


def test_a_torn_put_many_leaves_none_of_its_records(tmp_path):
    """The embedded store writes put_many as one frame: a crash in its middle
    (the frame's tail missing) keeps the records as they were."""
    s = MetaStore(str(tmp_path / "m"))
    s.put("table", "a", {"id": 1})
    s.put_many([("table", "a", None), ("table", "b", {"id": 2})])
    s.close()
    log = tmp_path / "m" / "meta.log"
    data = log.read_bytes()
    log.write_bytes(data[:-5])             # the last frame torn
    s = MetaStore(str(tmp_path / "m"))
    assert (s.get("table", "a"), s.get("table", "b")) == ({"id": 1}, None)
    s.close()


def test_etcd_put_many_is_refused_whole(etcd):
    b = Etcd(etcd)
    first, second = b.open(), b.open()
    first.put("group", 1, {"epoch": 5})
    with pytest.raises(StoreFenced):
        second.put_many([("group", 2, {"epoch": 1}), ("group", 1, {"epoch": 9})])   # 1 changed meanwhile
    again = b.open()
    assert (again.get("group", 1), again.get("group", 2)) == ({"epoch": 5}, None)


def test_backup_then_restore_gives_the_same_state(backend, tmp_path):
    s = backend.open()
    _fill(s)
    doc = s.backup()
    s.close()
    records = backup.decode(doc)
    assert records == {f"{k}/{key}": v for k, key, v in RECORDS}
    with pytest.raises(backup.BackupError):
        backend.restore({"node/1": "elsewhere"})           # the target is not empty
    # A restore moves epochs and table ids past anything the lost MM may have
    # handed out since the backup (backup.for_restore); the rest is as backed up.
    want = backup.for_restore(records)
    backend.restore(records, force=True)
    s = backend.open()
    assert backup.decode(s.backup()) == want
    s.close()
    # Into a fresh embedded directory (the restore the CLI does), whatever the source backend.
    fresh = str(tmp_path / "fresh")
    backup.restore_embedded(fresh, records)
    restored = MetaStore(fresh)
    assert backup.decode(restored.backup()) == want
    restored.close()


class _FailingTxns:
    """An EtcdClient whose Txns fail from the `fail_at`-th one on (a restore killed half way)."""

    def __init__(self, client: EtcdClient, fail_at: int):
        self._client, self._left = client, fail_at

    def txn(self, *args, **kwargs):
        if self._left == 0:
            raise EtcdError("injected: the restore stopped here")
        self._left -= 1
        return self._client.txn(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


@pytest.mark.parametrize("stopped_after", [1, 2, 3])   # txns done: the marker, then batches of records
def test_an_etcd_restore_that_stopped_half_way_is_never_loaded_and_a_rerun_completes_it(etcd, stopped_after):
    b = Etcd(etcd)
    s = b.open()
    _fill(s)
    records = backup.decode(s.backup())
    records.update({f"node/{n}": f"127.0.0.1:{8000 + n}" for n in range(10, 10 + 2 * TXN_OPS + 20)})   # 3 batches
    etcd.lease_revoke(b.lease)
    with pytest.raises(StoreUnavailable):
        EtcdStore.restore(_FailingTxns(etcd, stopped_after), b.prefix, records, force=True)
    with pytest.raises(StoreUnavailable, match="did not finish"):
        b.open()                                    # partial records: no MM may load them
    EtcdStore.restore(etcd, b.prefix, records)      # no --force needed over an unfinished restore
    restored = EtcdStore.open(etcd, b.prefix, None)
    assert backup.decode(restored.backup()) == backup.for_restore(records)
    with pytest.raises(backup.BackupError):
        EtcdStore.restore(etcd, b.prefix, records)  # finished: a restore over it needs --force again


def test_a_resign_with_a_pause_campaigns_again_only_after_it(etcd):
    """An MM that cannot load the state (etcd failing, an unfinished restore) resigns
    with a pause (etcd_runner.py): its next campaign waits for it instead of looping."""
    key = leader_key(cluster_prefix(f"pause-{os.getpid()}-{next(_names)}"))
    elected: list[tuple[float, object]] = []
    won = threading.Event()

    def on_elected(term) -> None:
        elected.append((time.monotonic(), term))
        won.set()

    e = EtcdElection(etcd, key, "mm-a:1", ttl=2, on_elected=on_elected, poll_seconds=0.05)
    e.start()
    try:
        assert won.wait(10)
        won.clear()
        resigned = time.monotonic()
        e.resign(elected[0][1], "cannot load the state", pause=0.6)
        assert won.wait(10)
        assert elected[1][0] - resigned >= 0.6
    finally:
        e.stop()


def test_backup_document_is_checked():
    for bad in (b"not json", b"{}", b'{"format": "quorumkv-meta-backup", "version": 99, "records": {}}',
                b'{"format": "quorumkv-meta-backup", "version": 1, "records": {"nokind": 1}}'):
        with pytest.raises(backup.BackupError):
            backup.decode(bad)


def test_etcd_put_is_a_compare_and_swap(etcd):
    """Two stores loaded from the same state (as two MMs would be): the one that writes a
    record second, without having seen the first write, is refused and changes nothing."""
    b = Etcd(etcd)
    first, second = b.open(), b.open()
    first.put("group", 1, {"epoch": 5})
    with pytest.raises(StoreFenced, match="changed by another writer"):
        second.put("group", 1, {"epoch": 5})               # second believed the record absent
    assert b.open().get("group", 1) == {"epoch": 5}
    first, second = b.open(), b.open()
    first.put("group", 1, {"epoch": 6})
    with pytest.raises(StoreFenced):
        second.put("group", 1, None)                       # a delete of what it saw: refused too
    with pytest.raises(StoreFenced):
        second.put("group", 1, {"epoch": 7})
    first.put("group", 1, {"epoch": 8})                    # the writer that saw its own write goes on
    assert b.open().get("group", 1) == {"epoch": 8}


def test_etcd_a_metadata_manager_whose_lease_expired_cannot_write(etcd):
    """MM A wins the leader key with a 2 s lease and stops renewing it (paused); MM B
    campaigns through EtcdElection and wins once the lease expires; A's next write is
    refused, names B, and leaves B's state alone."""
    prefix = cluster_prefix(f"fence-{os.getpid()}-{next(_names)}")
    key = leader_key(prefix)
    lease_a, ttl = etcd.lease_grant(2)
    won = etcd.txn([compare_create(key, 0)], [op_put(key, b"mm-a:1", lease_a)])
    assert won.succeeded
    store_a = EtcdStore.open(etcd, prefix, Fence(key, won.header.revision))
    store_a.put("group", 1, {"epoch": 1})

    elected = []
    b = EtcdElection(etcd, key, "mm-b:2", ttl=2, on_elected=elected.append, poll_seconds=0.05)
    b.start()
    try:
        deadline = time.monotonic() + ttl + 5
        while not elected and time.monotonic() < deadline:
            assert b.holder in (None, "mm-a:1")
            time.sleep(0.02)
        assert elected, "B did not take over after A's lease expired"
        assert b.state is ElectionState.LEADING and b.holder == "mm-b:2"
        term = elected[0]
        store_b = EtcdStore.open(etcd, prefix, Fence(term.key, term.create_revision))
        assert store_b.get("group", 1) == {"epoch": 1}      # B loaded what A wrote
        store_b.put("group", 1, {"epoch": 2})
        with pytest.raises(StoreFenced, match="mm-b:2 took over"):
            store_a.put("group", 1, {"epoch": 2})           # A resumes: its epoch 2 never lands
        with pytest.raises(StoreFenced):
            store_a.put("node", 7, "127.0.0.1:1")           # nor any other write
        assert EtcdStore.open(etcd, prefix, None).records == {"group/1": {"epoch": 2}}
        # B resigns (as after a failed write): the key goes at once and B campaigns again.
        b.resign(term, "test")
        deadline = time.monotonic() + 5
        while len(elected) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(elected) == 2 and elected[1].create_revision > term.create_revision
        with pytest.raises(StoreFenced):
            store_b.put("group", 1, {"epoch": 3})           # the old term's fence is gone too
    finally:
        b.stop()
    assert etcd.get(key) is None                            # stop() revoked the lease: no leader key left


def _widest_split_keys(tag: int = 0) -> list[bytes]:
    """MAX_RANGES - 1 distinct split keys totalling MAX_SPLIT_KEY_BYTES: the largest table allowed."""
    from server.meta import catalog as catalog_mod

    n = catalog_mod.MAX_RANGES - 1
    width = catalog_mod.MAX_SPLIT_KEY_BYTES // n
    keys = [bytes([tag]) + i.to_bytes(3, "big") + b"k" * (width - 4) for i in range(n)]
    keys[-1] += b"k" * (catalog_mod.MAX_SPLIT_KEY_BYTES - sum(map(len, keys)))
    assert sum(map(len, keys)) == catalog_mod.MAX_SPLIT_KEY_BYTES
    return keys


def test_the_largest_table_the_catalog_allows_fits_one_etcd_change(backend):
    """MAX_RANGES ranges whose split keys total MAX_SPLIT_KEY_BYTES, created
    with a request id (the ranges twice: the record and the remembered answer),
    is one store change under etcd's request limit (1.5 MiB by default)."""
    from server.meta import catalog as catalog_mod

    s = backend.open()
    cat = catalog_mod.Catalog(s)
    t = cat.create_table("widest", _widest_split_keys(), [1, 2, 3], request_id=77)
    s.close()
    s = backend.open()
    again = catalog_mod.Catalog(s)
    assert again.tables["widest"] == t and len(t.ranges) == catalog_mod.MAX_RANGES
    s.close()


def test_a_backup_of_the_largest_tables_allowed_restores_into_etcd(etcd):
    """Each such table is one change under etcd's limit, but a restore put
    TXN_OPS records in one Txn whatever their size: three of them (six records
    of ~330 KB with their request answers) were refused as too large (found by
    a review). Txns are now bounded in bytes too."""
    from server.meta import catalog as catalog_mod

    source = Etcd(etcd)
    s = source.open()
    cat = catalog_mod.Catalog(s)
    made = [cat.create_table(f"wide{i}", _widest_split_keys(i + 1), [1, 2, 3], request_id=100 + i) for i in range(3)]
    records = backup.decode(s.backup())
    s.close()
    target = Etcd(etcd)
    target.restore(records)
    restored = EtcdStore.open(etcd, target.prefix, None)
    assert [catalog_mod.Catalog(restored).tables[t.name].ranges for t in made] == [t.ranges for t in made]
    restored.close()
