"""The metadata manager (MM) as real processes: restart, backup and restore on the
embedded backend, failover between two MMs on the etcd backend (issue 4, "Metadata
manager restart and restore from backup, for both backends; etcd backend failover
between two `quorumkv meta` processes").

Each test starts its own processes on loopback (server/local_cluster.py; a
3-member etcd from server/meta/etcd_testing.py) and checks what a user relies on:
the group keeps or regains a serving leader, writes through it succeed, and the
groups and tables the MM held are intact.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import grpc
import pytest

from engine._native import sequencer, write_batch
from server.local_cluster import LocalCluster
from server.meta.etcd_testing import EtcdCluster, EtcdClusterError, etcd_binary
from server.node.data_client import DataClient, StreamBroken
from server.proto import data_pb2, meta_pb2, meta_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RG = 1
LEASE_TTL = 2     # seconds: etcd's minimum; a dead active MM is replaced within about this long


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _stub(address: str) -> tuple[grpc.Channel, meta_pb2_grpc.MetaStub]:
    ch = grpc.insecure_channel(address)
    return ch, meta_pb2_grpc.MetaStub(ch)


def _state(address: str) -> tuple[dict, dict]:
    """(groups: rg -> sorted members, tables: name -> (id, ranges)) as the MM at `address` holds them."""
    ch, stub = _stub(address)
    with ch:
        groups = {g.rg: sorted(r.node_id for r in g.replicas)
                  for g in stub.ListGroups(meta_pb2.ListGroupsRequest(), timeout=10).groups}
        watch = stub.Watch(meta_pb2.WatchRequest(known_version=0), timeout=10)
        rt = next(watch)
        watch.cancel()
    tables = {t.name: (t.table_id, [(r.start, r.rg) for r in t.ranges]) for t in rt.tables}
    return groups, tables


def _answers(address: str) -> bool:
    """Whether the MM at `address` acts as the active one (standbys refuse with UNAVAILABLE)."""
    ch, stub = _stub(address)
    with ch:
        try:
            stub.ListGroups(meta_pb2.ListGroupsRequest(), timeout=2)
            return True
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), exc
            return False


def _wait(condition, timeout: float, what: str) -> float:
    """Polls another process's state until `condition()`; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


def _create_table(address: str, name: str, split_keys: list[bytes]) -> int:
    ch, stub = _stub(address)
    with ch:
        return stub.CreateTable(meta_pb2.NewTableRequest(name=name, split_keys=split_keys), timeout=10).table.table_id


def _write(cluster: LocalCluster, table_id: int, key: bytes, value: bytes, timeout: float = 20.0) -> int:
    """Writes one record through the group's leader (found through the MM), retrying while the
    group has none or the node is not leading any more; returns the commit index."""
    async def go() -> int:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            leader, _ = cluster.wait_for_leader(RG, timeout=max(1.0, deadline - time.monotonic()))
            client = DataClient(cluster.nodes[leader].address)
            try:
                batch = write_batch.encode_one(write_batch.VALUE, table_id, key, value,
                                               sequencer.encode(time.time_ns(), 0, 9))
                resp = await asyncio.wait_for(client.write(RG, batch), 5)
                if resp.code == data_pb2.OK:
                    return resp.index
                last = resp
            except (StreamBroken, TimeoutError) as exc:
                last = exc
            finally:
                await client.close()
            await asyncio.sleep(0.1)
        raise AssertionError(f"no write through the leader within {timeout} s: {last}")
    return asyncio.run(go())


def _read(cluster: LocalCluster, table_id: int, key: bytes) -> bytes | None:
    async def go():
        leader, _ = cluster.wait_for_leader(RG)
        client = DataClient(cluster.nodes[leader].address)
        try:
            resp = await asyncio.wait_for(client.read(RG, table_id, key), 10)
        finally:
            await client.close()
        assert resp.code == data_pb2.OK, resp
        return resp.value if resp.found else None
    return asyncio.run(go())


def test_embedded_mm_kill9_restart_backup_and_restore(tmp_path):
    with LocalCluster(str(tmp_path / "cluster"), nodes=3) as c:
        c.create_group(RG, [1, 2, 3])
        c.wait_for_leader(RG)
        stocks = _create_table(c.meta.address, "stocks", [])
        _create_table(c.meta.address, "walk", [b"m"])
        _write(c, stocks, b"a", b"120")
        before = _state(c.meta.address)
        assert before == ({RG: [1, 2, 3]}, {"stocks": (stocks, [(b"", RG)]),
                                            "walk": (stocks + 1, [(b"", RG), (b"m", RG)])})

        backup_file = str(tmp_path / "meta.backup")
        out = _cli("meta", "backup", "--meta", c.meta.address, "--out", backup_file)
        assert out.returncode == 0, out.stderr
        assert "records" in out.stdout

        c.kill9(c.meta)
        c.restart(c.meta)                   # same port, same data: the nodes reconnect
        c.wait_for_leader(RG, timeout=20)   # kept (its reports confirm it) or a new epoch's
        assert _state(c.meta.address) == before
        assert _read(c, stocks, b"a") == b"120"
        _write(c, stocks, b"b", b"100")

        # Offline restore into a fresh directory; an MM started on it holds the same groups and tables.
        restored = tmp_path / "restored"
        out = _cli("meta", "restore", "--in", backup_file, "--data", str(restored / "meta"))
        assert out.returncode == 0, out.stderr
        out = _cli("meta", "restore", "--in", backup_file, "--data", str(restored / "meta"))
        assert out.returncode == 1 and "not empty" in out.stderr      # refuses a non-empty directory
        assert _cli("meta", "restore", "--in", backup_file, "--data", str(restored / "meta"),
                    "--force").returncode == 0
        with LocalCluster(str(restored), nodes=0) as r:
            assert _state(r.meta.address) == before


@pytest.fixture(scope="module")
def etcd3():
    try:
        etcd_binary(install=True)
    except EtcdClusterError as exc:
        pytest.skip(f"etcd could not be installed here (scripts/install-etcd): {exc}")
    with EtcdCluster(members=3, fsync=not os.path.isdir("/dev/shm")) as cluster:   # tmpfs: fast, disposable
        yield cluster


def test_etcd_backend_failover_between_two_mms(etcd3, tmp_path):
    meta_args = ["--backend", "etcd", "--etcd", ",".join(etcd3.client_endpoints), "--cluster-name", "failover",
                 "--lease-ttl", str(LEASE_TTL)]
    with LocalCluster(str(tmp_path / "cluster"), nodes=3, meta_args=meta_args, metas=2) as c:
        c.create_group(RG, [1, 2, 3])
        c.wait_for_leader(RG)
        active = c.active_meta()
        standby = next(m for m in c.metas if m is not active)
        table = _create_table(active.address, "stocks", [b"k"])
        _write(c, table, b"a", b"120")
        before = _state(active.address)

        # The standby refuses, naming the active one (nodes and routers move on to it).
        ch, stub = _stub(standby.address)
        with ch, pytest.raises(grpc.RpcError) as refused:
            stub.ListGroups(meta_pb2.ListGroupsRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert active.address in refused.value.details()

        killed_at = time.monotonic()
        c.kill9(active)
        assert c.active_meta(timeout=LEASE_TTL + 10) is standby
        takeover = time.monotonic() - killed_at
        assert takeover < LEASE_TTL + 5, f"standby took {takeover:.1f} s to take over"
        c.wait_for_leader(RG, timeout=20)   # the nodes found the new MM: their reports name a leader
        assert _state(standby.address) == before
        _write(c, table, b"b", b"100")
        assert _read(c, table, b"a") == b"120"

        # The killed MM comes back as a standby of the new active one.
        c.restart(active)
        assert not _answers(active.address)
        assert c.active_meta() is standby

        # The active MM pauses (SIGSTOP) past its lease: the other takes over. Resumed, the
        # paused one stands down instead of acting on its stale state (its lease is gone and
        # its writes would fail the fence), its streams end, and the nodes move on.
        c.pause(standby)
        paused = _wait(lambda: _answers(active.address), LEASE_TTL + 10, "take-over from a paused MM")
        # While the old one is still paused, nodes notice (keepalive on their MM link) and move to
        # the new active MM: the group keeps a leader and takes writes.
        _write(c, table, b"b2", b"101")
        c.resume(standby)
        _wait(lambda: not _answers(standby.address), 5, "the resumed MM standing down")
        c.wait_for_leader(RG, timeout=30)
        _write(c, table, b"c", b"135")
        assert c.active_meta() is active

        # Online backup through either address: the active one answers.
        backup_file = str(tmp_path / "etcd.backup")
        out = _cli("meta", "backup", "--meta", c.meta_addresses, "--out", backup_file)
        assert out.returncode == 0, out.stderr
        after = _state(active.address)

    # Restore into etcd under another cluster name; an MM started there holds the same state.
    endpoints = ",".join(etcd3.client_endpoints)
    restore = ("meta", "restore", "--in", backup_file, "--backend", "etcd", "--etcd", endpoints,
               "--cluster-name", "restored")
    out = _cli(*restore)
    assert out.returncode == 0, out.stderr
    out = _cli(*restore)
    assert out.returncode == 1 and "already exist" in out.stderr      # refuses to overwrite records
    restored_args = meta_args[:meta_args.index("--cluster-name")] + ["--cluster-name", "restored"]
    with LocalCluster(str(tmp_path / "restored"), nodes=0, meta_args=restored_args) as r:
        assert _state(r.active_meta().address) == after
    print(f"etcd backend: standby took over {takeover:.2f} s after kill -9 of the active MM, "
          f"{paused:.2f} s after SIGSTOP of it (lease TTL {LEASE_TTL} s)")


def test_etcd_testing_finds_the_member_that_leads(etcd3):
    """bench/rg_throughput.py sends etcd's load to etcd's leader (as ours goes to
    our leader); a wrong answer here would make etcd pay a forwarding hop."""
    import json
    import urllib.request

    leader = etcd3.leader_endpoint()
    assert leader in etcd3.client_endpoints
    said = set()
    for m in etcd3.members:
        req = urllib.request.Request(m.client_url + "/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            status = json.loads(resp.read())
        said.add(status["leader"])
        if status["header"]["member_id"] == status["leader"]:
            assert f"127.0.0.1:{m.client_port}" == leader
    assert len(said) == 1   # every member names the same leader
