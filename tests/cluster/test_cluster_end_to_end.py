"""The whole cluster end to end (issue 4): metadata manager, 3 nodes, 2 groups,
2 routers as real processes; the SDK and the CLI as a user runs them."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

import quorumkv
from server.local_cluster import LocalCluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(str(tmp_path_factory.mktemp("e2e") / "cluster"), nodes=3)
    try:
        c.start()
        c.serve(groups=2, members=[1, 2, 3], routers=2)
        yield c
    finally:
        c.close()


@pytest.fixture
def client(cluster):
    with quorumkv.Client(cluster.router_addresses, timeout=10) as c:
        yield c


def test_the_seeds_example_through_the_sdk(client):
    client.create_table("stocks")
    for key, price in ((b"b", b"100"), (b"a", b"120"), (b"c", b"135")):
        client.put("stocks", key, price)
    rec = client.get("stocks", b"a")
    assert rec.value == b"120" and len(rec.seq) == 16
    assert [(r.key, r.value) for r in client.list("stocks")] == [(b"a", b"120"), (b"b", b"100"), (b"c", b"135")]
    assert "stocks" in client.tables()
    with pytest.raises(quorumkv.TableExists):
        client.create_table("stocks")


def test_the_data_plane_walk_across_two_groups(cluster, client):
    """Seed section 6: a table whose ranges live in different groups; writes,
    reads and an ordered list across both."""
    client.create_table("walk", split_keys=[b"m"])
    before = _records_applied(cluster)
    keys = [b"%c%03d" % (c, i) for c in b"agmz" for i in range(50)]
    seqs = client.put_many("walk", [(k, k[::-1]) for k in keys])
    assert len(seqs) == len(keys) and len(set(seqs)) == len(keys)
    assert [r.value for r in client.get_many("walk", keys)] == [k[::-1] for k in keys]
    assert [r.key for r in client.list("walk", page_size=7)] == sorted(keys)
    assert [r.key for r in client.list("walk", start=b"g010", end=b"m005")] == \
        sorted(k for k in keys if b"g010" <= k < b"m005")
    # Both groups hold half of the table: each applied 100 records (node metrics, read
    # from every node; followers apply a heartbeat later at most: polled).
    deadline = time.monotonic() + 10
    while True:
        after = _records_applied(cluster)
        grown = {rg: max(after.get((n, rg), 0) - before.get((n, rg), 0) for n in cluster.nodes) for rg in ("1", "2")}
        if all(v >= 100 for v in grown.values()):
            break
        assert time.monotonic() < deadline, f"records applied per group: {grown}"
        time.sleep(0.05)


def _records_applied(cluster) -> dict[tuple[int, str], float]:
    import urllib.request

    out = {}
    for nid, node in cluster.nodes.items():
        text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith("quorumkv_node_records_applied_total{"):
                out[(nid, line.split('rg="')[1].split('"')[0])] = float(line.rsplit(" ", 1)[1])
    return out


def test_conditional_writes_and_deletes(client):
    client.create_table("cond")
    seq = client.put("cond", b"k", b"1", if_absent=True)
    with pytest.raises(quorumkv.ConditionFailed):
        client.put("cond", b"k", b"2", if_absent=True)
    seq2 = client.put("cond", b"k", b"2", if_seq=seq)
    assert seq2 > seq
    with pytest.raises(quorumkv.ConditionFailed):
        client.put("cond", b"k", b"3", if_seq=seq)
    with pytest.raises(quorumkv.ConditionFailed):
        client.delete("cond", b"k", if_seq=seq)
    client.delete("cond", b"k", if_seq=seq2)
    assert client.get("cond", b"k") is None
    client.put("cond", b"k", b"4", if_absent=True)   # absent again after the delete


def test_bad_input_gets_clear_errors(client):
    with pytest.raises(quorumkv.InvalidArgument, match="table name"):
        client.put("no spaces", b"k", b"v")
    client.create_table("bad")
    with pytest.raises(quorumkv.InvalidArgument, match="1 to 4096"):
        client.put("bad", b"", b"v")
    with pytest.raises(quorumkv.InvalidArgument, match="1048576"):
        client.put("bad", b"k", b"x" * ((1 << 20) + 1))
    with pytest.raises(quorumkv.TableNotFound):
        client.get("missing", b"k")
    assert client.get("bad", b"k") is None        # nothing was written by the failed calls


def test_the_cli_finds_the_local_cluster(cluster, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "routers").write_text(cluster.router_addresses + "\n")
    env = dict(os.environ, QUORUMKV_DATA=str(data), PYTHONPATH=ROOT)
    env.pop("QUORUMKV_ROUTERS", None)

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "server.cli", *args], env=env, capture_output=True, text=True,
                             timeout=60, cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr
        return out.stdout

    cli("create-table", "clistocks")
    cli("put", "clistocks", "b", "100")
    cli("put", "clistocks", "a", "120")
    assert cli("get", "clistocks", "a").startswith("120")
    assert cli("list", "clistocks").splitlines() == ["a 120", "b 100"]
    assert "clistocks" in cli("tables").split()


def test_leader_kill9_under_load_short_unavailability_and_no_acknowledged_write_lost(cluster, client):
    client.create_table("load")
    leader, epoch = cluster.wait_for_leader(1)
    acked: dict[bytes, bytes] = {}
    errors: list[tuple[float, str]] = []
    ack_times: list[float] = []
    stop = threading.Event()
    progress = threading.Condition()

    def writer(w: int) -> None:
        i = 0
        deadline = time.monotonic() + 30      # bounded: stops by itself
        while not stop.is_set() and time.monotonic() < deadline and i < 5000:
            key = b"w%d-%06d" % (w, i)
            try:
                seq = client.put("load", key, key, timeout=5)
            except quorumkv.QuorumKVError as exc:
                with progress:
                    errors.append((time.monotonic(), type(exc).__name__))
            else:
                with progress:
                    acked[key] = seq
                    ack_times.append(time.monotonic())
                    progress.notify_all()
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    with progress:
        assert progress.wait_for(lambda: len(acked) >= 200, timeout=30)
    killed = cluster.nodes[leader]
    cluster.kill9(killed)
    killed_at = time.monotonic()
    cluster.wait_for_leader(1, timeout=10, not_epoch=epoch)
    with progress:
        n = len(acked)
        assert progress.wait_for(lambda: len(acked) >= n + 200, timeout=30), "writes did not resume"
    recovered = time.monotonic() - killed_at
    # The unavailability window: the longest stretch without any acknowledged write around the kill.
    times = sorted(t for t in ack_times if t > killed_at - 1)
    window = max(b - a for a, b in zip(times, times[1:]))
    stop.set()
    for t in threads:
        t.join(30)
    cluster.restart(killed)
    print(f"\nleader kill -9: no write acknowledged for {window:.2f} s at most; 200 more after {recovered:.2f} s; "
          f"{len(errors)} failed calls ({sorted(set(e for _, e in errors))}); {len(acked)} acknowledged")
    got = client.get_many("load", list(acked))
    lost = [k for k, r in zip(acked, got) if r is None or r.seq != acked[k]]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
    assert window < 3.0, f"writes stalled for {window:.2f} s"


def test_every_process_serves_health_and_metrics(cluster, client):
    import urllib.request

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    client.create_table("observed")
    client.put_many("observed", [(b"k%d" % i, b"v") for i in range(20)])   # ops spread over both routers' streams
    client.get("observed", b"k1")
    reads_seen = 0.0
    for role in [*cluster.nodes.values(), *cluster.routers.values(), cluster.meta]:
        with grpc.insecure_channel(role.address) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, role.name
        assert role.metrics_port, role.name
        text = urllib.request.urlopen(f"http://127.0.0.1:{role.metrics_port}/metrics", timeout=5).read().decode()
        if role.name.startswith("router"):
            assert 'quorumkv_router_ops_total{code="OK",op="put"}' in text
            assert "quorumkv_router_latency_seconds_bucket" in text
        elif role is cluster.meta:
            assert "quorumkv_meta_active 1.0" in text and "quorumkv_meta_groups 2.0" in text
            assert "quorumkv_meta_leader_changes_total" in text
        else:
            for name in ("quorumkv_node_fsyncs_total", "quorumkv_node_replica_role", "quorumkv_node_log_lag_entries",
                         "quorumkv_node_engine_compactions_total", "quorumkv_node_leader_changes_total",
                         'quorumkv_node_read_batches_total{by="lease"', "quorumkv_node_lease_clock_suspect"):
                assert name in text, (role.name, name)
            reads_seen += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                              if line.startswith("quorumkv_node_read_batches_total{"))
    assert reads_seen >= 1   # the get above, on whichever node leads its group


def _engine_tables(cluster) -> dict[tuple[str, str], float]:
    """quorumkv_node_tables per (node, rg), from every node's metrics."""
    import urllib.request

    out = {}
    for node in cluster.nodes.values():
        text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith("quorumkv_node_tables{"):
                rg = line.split('rg="')[1].split('"')[0]
                out[(node.name, rg)] = float(line.rsplit(" ", 1)[1])
    return out


def _settled_tables(cluster) -> dict[str, float]:
    """Per rg, the engine table count once all three replicas agree (followers
    apply a heartbeat after the leader). Another process's state: polled."""
    deadline = time.monotonic() + 10
    while True:
        counts = _engine_tables(cluster)
        per_rg: dict[str, set[float]] = {}
        for (_node, rg), n in counts.items():
            per_rg.setdefault(rg, set()).add(n)
        if all(len(v) == 1 for v in per_rg.values()):
            return {rg: v.pop() for rg, v in per_rg.items()}
        assert time.monotonic() < deadline, counts
        time.sleep(0.05)


def test_drop_table_frees_its_data_in_every_group(cluster, client):
    client.create_table("doomed", split_keys=[b"m"])
    client.put_many("doomed", [(b"%c%04d" % (c, i), b"x" * 1000) for c in b"am" for i in range(300)])
    before = _settled_tables(cluster)
    client.drop_table("doomed")
    assert "doomed" not in client.tables()
    with pytest.raises(quorumkv.TableNotFound):
        client.get("doomed", b"a0001")
    # Every replica of both groups dropped the table from its engine (one log entry per group).
    assert _settled_tables(cluster) == {rg: n - 1 for rg, n in before.items()}
    client.create_table("doomed")                    # the name is free again, with a new id: empty
    assert list(client.list("doomed")) == []
    client.put("doomed", b"k", b"v")
    assert client.get("doomed", b"k").value == b"v"
