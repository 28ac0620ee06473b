"""The `quorumkv` command line.

Subcommands so far:
  engine-demo   writes, reads, scans and reopens a table in the embedded
                engine and prints what it measured (the main job until the
                cluster exists).
  node          one storage node: replicas of replication groups (server/node)
  meta          the metadata manager (server/meta); `meta backup` and
                `meta restore` save and restore its state
  router        a request manager: the public API (server/router)
  up            a whole local cluster, with a live status table (server/cluster_cli.py)
  status        tables, groups, leaders, epochs, lag, sizes, ops/s
  put, get, delete, list, create-table, drop-table, tables
                client commands through the SDK; they find the local
                cluster by default (--routers or QUORUMKV_ROUTERS to override)
  create-group  asks the metadata manager for a new replication group
  groups        lists the replication groups: epoch, leader, members' state
"""
from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s" if seconds > 0 else "inf"


def engine_demo(args: argparse.Namespace) -> int:
    from engine import DB

    own_dir = args.data is None
    path = tempfile.mkdtemp(prefix="quorumkv-demo-") if own_dir else args.data
    n = args.records
    rng = random.Random(7)
    keys = [rng.randbytes(16) for _ in range(n)]
    value = b"v" * args.value_size
    print(f"quorumkv engine demo: {n:,} records of {args.value_size} B in {path}")
    try:
        with DB.open(path, sync="never") as db:
            if "stocks" not in db.tables():
                db.create_table("stocks")
            for name, price in ((b"b", b"100"), (b"a", b"120"), (b"c", b"135")):
                db.put("stocks", name, price)
            rec = db.get("stocks", b"a")
            print(f"  seed example: get(stocks, a) = {rec.value.decode()}  seq={rec.seq.hex()}")
            print("  list(stocks) =", [(k.decode(), v.decode()) for k, v, _ in db.scan("stocks")])
            if "demo" not in db.tables():
                db.create_table("demo")
            t = time.perf_counter()
            for k in keys:
                db.put("demo", k, value)
            dt = time.perf_counter() - t
            print(f"  put (unsynced)      {_rate(n, dt):>14}")
        with DB.open(path, sync="always") as db:
            batch_n = min(n, 10_000)
            t = time.perf_counter()
            for k in keys[:batch_n]:
                db.put("demo", k, value)
            dt = time.perf_counter() - t
            print(f"  put (fsync each)    {_rate(batch_n, dt):>14}   fsyncs={db.stats()['wal_syncs']}")
            sample = rng.sample(keys, min(n, 100_000))
            t = time.perf_counter()
            for k in sample:
                assert db.get("demo", k).value == value
            dt = time.perf_counter() - t
            print(f"  get (memtable)      {_rate(len(sample), dt):>14}")
            db.flush()
            db.compact_range()
            t = time.perf_counter()
            for k in sample:
                assert db.get("demo", k).value == value
            dt = time.perf_counter() - t
            print(f"  get (sstables)      {_rate(len(sample), dt):>14}")
            t = time.perf_counter()
            count = sum(1 for _ in db.scan("demo"))
            dt = time.perf_counter() - t
            print(f"  scan (ordered)      {_rate(count, dt):>14}   {count:,} records")
        t = time.perf_counter()
        with DB.open(path) as db:
            reopen = time.perf_counter() - t
            count = sum(1 for _ in db.scan("demo", keys_only=True))
            check = db.check()
            s = db.stats()
        print(f"  reopen              {reopen * 1000:>12.1f} ms  {count:,} records, "
              f"{check['files']} SSTables verified")
        print("  levels (files/MiB):", " ".join(f"L{i}={lv['files']}/{lv['bytes'] / 2**20:.1f}"
                                              for i, lv in enumerate(s["levels"]) if lv["files"]))
        return 0
    finally:
        if own_dir and not args.keep:
            shutil.rmtree(path, ignore_errors=True)


def node_main(args: argparse.Namespace) -> int:
    from server.node.node import BLOCK_CACHE_BYTES, LEASE_MS, TRAILING_BATCH_ENTRIES, Node
    from server.replication.lease import MAX_LEASE_NS
    from server.runtime import configure_logging, raise_open_files_limit, run_service

    configure_logging(args.log_level)
    raise_open_files_limit()
    lease_ms = LEASE_MS if args.lease_ms is None else args.lease_ms
    if not 0 <= lease_ms <= MAX_LEASE_NS // 1_000_000:
        print(f"quorumkv node: --lease-ms must be 0 (leases off) or positive, at most {MAX_LEASE_NS // 1_000_000}",
              file=sys.stderr)
        return 2
    trailing = TRAILING_BATCH_ENTRIES if args.trailing_batch is None else args.trailing_batch
    if trailing < 0:
        print("quorumkv node: --trailing-batch must be 0 (every follower gets each write at once) or positive",
              file=sys.stderr)
        return 2
    cache_bytes = BLOCK_CACHE_BYTES if args.block_cache_mib is None else args.block_cache_mib << 20
    if cache_bytes < 0:
        print("quorumkv node: --block-cache-mib must be 0 (no cache) or positive", file=sys.stderr)
        return 2
    node = Node(args.id, args.listen, args.data, args.meta.split(","), compact_after_entries=args.compact_after_entries,
                metrics_listen=args.metrics_listen or None, lease_ms=lease_ms, trailing_batch_entries=trailing,
                block_cache_bytes=cache_bytes, isolate_file=args.isolate_file)

    async def start() -> str:
        await node.start()
        return f"node {node.id} metrics={node.metrics_port or 0} {node.address}"

    return run_service(start, node.stop)


def meta_main(args: argparse.Namespace) -> int:
    """Runs the metadata manager: embedded (active at once) or etcd (active while it holds the lease)."""
    from server.meta.service import MetaOptions, MetaServer
    from server.runtime import configure_logging, run_service

    if args.backend == "embedded" and not args.data:
        print("error: the embedded backend needs --data DIR", file=sys.stderr)
        return 2
    if args.backend == "etcd" and not args.etcd:
        print("error: the etcd backend needs --etcd HOST:PORT[,HOST:PORT...]", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    mm = MetaServer(args.listen, MetaOptions(leader_timeout_seconds=args.leader_timeout_ms / 1000))
    runner = None

    async def start() -> str:
        nonlocal runner
        metrics = 0
        if args.metrics_listen:
            from server.meta.metrics import MetaCollector
            from server.observability import register, start_metrics
            register(MetaCollector(mm))
            metrics = start_metrics(args.metrics_listen)
        if args.backend == "embedded":
            from server.meta.store import MetaStore
            from server.runtime import fail_stop
            # No other MM takes over an embedded store: a write that failed
            # ends the process (a restart replays what is durable), rather than
            # leave an MM that answers but never elects again.
            mm.on_store_failure = lambda exc: fail_stop(logging.getLogger("quorumkv.meta"),
                                                        "metadata store write failed", exc)
            mm.activate(MetaStore(args.data))
            await mm.start()
            return f"meta metrics={metrics} {mm.address}"
        from server.meta.etcd_client import EtcdClient
        from server.meta.etcd_runner import EtcdRunner
        await mm.start()
        runner = EtcdRunner(mm, EtcdClient(args.etcd.split(",")), args.cluster_name, args.advertise or mm.address,
                            args.lease_ttl)
        runner.start()
        return f"meta metrics={metrics} {mm.address}"

    async def stop() -> None:
        if runner is not None:
            await runner.stop()
        await mm.stop()

    return run_service(start, stop)


def meta_backup_main(args: argparse.Namespace) -> int:
    """Asks the active metadata manager (the first of --meta that answers) for its state; writes it to --out."""
    import grpc

    from server.meta import backup
    from server.proto import meta_pb2, meta_pb2_grpc

    errors = []
    for address in args.meta.split(","):
        with grpc.insecure_channel(address) as ch:
            try:
                doc = meta_pb2_grpc.MetaStub(ch).Backup(meta_pb2.BackupRequest(), timeout=args.timeout).document
            except grpc.RpcError as exc:
                errors.append(f"{address}: {exc.details()}")
                continue
        records = backup.decode(doc)
        backup.write_file_durably(args.out, doc)
        print(f"backup of {len(records)} records from {address} written to {args.out}")
        return 0
    print("error: no metadata manager gave a backup:\n  " + "\n  ".join(errors), file=sys.stderr)
    return 1


def meta_restore_main(args: argparse.Namespace) -> int:
    """Offline restore of a backup: into a new embedded store directory, or into etcd."""
    from server.meta import backup
    from server.meta.backend import MetaStoreError

    try:
        with open(args.in_path, "rb") as f:
            records = backup.decode(f.read())
        if args.backend == "embedded":
            if not args.data:
                print("error: restore into the embedded backend needs --data DIR", file=sys.stderr)
                return 2
            backup.restore_embedded(args.data, records, force=args.force)
            where = args.data
        else:
            if not args.etcd:
                print("error: restore into etcd needs --etcd HOST:PORT[,HOST:PORT...]", file=sys.stderr)
                return 2
            from server.meta.etcd_client import EtcdClient
            from server.meta.etcd_store import EtcdStore, cluster_prefix
            client = EtcdClient(args.etcd.split(","))
            try:
                EtcdStore.restore(client, cluster_prefix(args.cluster_name), records, force=args.force)
            finally:
                client.close()
            where = f"etcd {args.etcd} under {cluster_prefix(args.cluster_name).decode()}"
    except (OSError, ValueError, MetaStoreError) as exc:   # BackupError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"restored {len(records)} records into {where}")
    return 0


def router_main(args: argparse.Namespace) -> int:
    import grpc

    from server.node.peers import SERVER_OPTIONS
    from server.observability import add_health, register, set_serving, start_metrics
    from server.proto import kv_pb2_grpc
    from server.router.metrics import RouterCollector
    from server.router.router import Router
    from server.router.service import KVService
    from server.runtime import configure_logging, run_service

    configure_logging(args.log_level)
    router = Router(args.id, args.meta.split(","), learner=args.learner)
    server = None

    async def start() -> str:
        nonlocal server
        await router.start()
        await router.wait_ready(30)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        kv_pb2_grpc.add_KVServicer_to_server(KVService(router), server)
        health = add_health(server, ["quorumkv.v1.KV"])
        port = server.add_insecure_port(args.listen)
        if port == 0:
            raise OSError(f"cannot listen on {args.listen}")
        await server.start()
        await set_serving(health, ["quorumkv.v1.KV"], True)
        metrics_port = 0
        if args.metrics_listen:
            register(RouterCollector(router))
            metrics_port = start_metrics(args.metrics_listen)
        return f"router {args.id} metrics={metrics_port} {args.listen.rsplit(':', 1)[0]}:{port}"

    async def stop() -> None:
        if server is not None:
            await server.stop(grace=1.0)
        await router.close()

    return run_service(start, stop)


def create_group_main(args: argparse.Namespace) -> int:
    import grpc

    from server.proto import meta_pb2, meta_pb2_grpc

    with grpc.insecure_channel(args.meta) as ch:
        try:
            meta_pb2_grpc.MetaStub(ch).CreateGroup(
                meta_pb2.GroupSpec(rg=args.rg, members=[int(m) for m in args.members.split(",")]), timeout=5)
        except grpc.RpcError as exc:
            print(f"error: {exc.details()}", file=sys.stderr)
            return 1
    print(f"rg {args.rg} created")
    return 0


def groups_main(args: argparse.Namespace) -> int:
    import grpc

    from server.proto import meta_pb2, meta_pb2_grpc

    with grpc.insecure_channel(args.meta) as ch:
        groups = meta_pb2_grpc.MetaStub(ch).ListGroups(meta_pb2.ListGroupsRequest(), timeout=5).groups
    print(f"{'rg':>4} {'epoch':>6} {'leader':>6}  members (node:role:commit/applied)")
    roles = {0: "-", 1: "F", 2: "E", 3: "L"}
    for g in groups:
        members = " ".join(f"{r.node_id}:{roles[r.report.role] if r.alive else 'down'}:"
                           f"{r.report.commit_index}/{r.report.applied_index}" for r in g.replicas)
        print(f"{g.rg:>4} {g.epoch:>6} {g.leader or '-':>6}  {members}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quorumkv", description="quorumkv: a strongly consistent key-value database")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("engine-demo", help="exercise the embedded storage engine and print its figures")
    demo.add_argument("--records", type=int, default=200_000, help="records to write (default 200,000)")
    demo.add_argument("--value-size", type=int, default=100, help="value size in bytes (default 100)")
    demo.add_argument("--data", help="directory to use (default: a temp dir, removed afterwards)")
    demo.add_argument("--keep", action="store_true", help="keep the temp dir")
    demo.set_defaults(func=engine_demo)

    node = sub.add_parser("node", help="run a storage node")
    node.add_argument("--id", type=int, required=True, help="node id (a positive integer, unique in the cluster)")
    node.add_argument("--listen", default="127.0.0.1:0", help="host:port of its gRPC server (port 0: any free)")
    node.add_argument("--data", required=True, help="data directory")
    node.add_argument("--meta", required=True, help="metadata manager address(es), comma-separated")
    node.add_argument("--compact-after-entries", type=int, default=10_000,
                      help="flush and compact a replica's log past this many entries (default 10,000)")
    node.add_argument("--metrics-listen", default="127.0.0.1:0",
                      help="host:port of the Prometheus endpoint (port 0: any free; empty: none)")
    node.add_argument("--lease-ms", type=int, default=None,
                      help="leader lease for reads, in ms, at most 500 (default: server/node/node.py's LEASE_MS, "
                           "300; 0: every read waits for a heartbeat round); assumes clock rates within 10%% of "
                           "real time (server/replication/README.md, LL1-LL6)")
    node.add_argument("--trailing-batch", type=int, default=None,
                      help="quorum-first sending: a leader sends each write at once only to the followers its "
                           "quorum needs, and to the others once this many entries wait or at its next tick "
                           "(default: server/node/node.py's TRAILING_BATCH_ENTRIES, 128; 0: every follower at "
                           "once; server/replication/README.md, \"Trailing followers\")")
    node.add_argument("--block-cache-mib", type=int, default=None,
                      help="one block cache for every replica's engine on this node, in MiB (default: "
                           "server/node/node.py's BLOCK_CACHE_BYTES, 256; 0: none)")
    node.add_argument("--isolate-file", default=None,
                      help="fault injection for tests: while this file exists the node is cut off from the other "
                           "cluster processes (peers and metadata manager); clients still reach it")
    node.add_argument("--log-level", default="INFO")
    node.set_defaults(func=node_main)

    meta = sub.add_parser("meta", help="run the metadata manager (or: meta backup, meta restore)",
                          description="Without a subcommand: runs the metadata manager. With the etcd backend "
                                      "run several, all with the same --etcd and --cluster-name: one is active, "
                                      "the others stand by and take over when its etcd lease expires.")
    meta.add_argument("--listen", default="127.0.0.1:0", help="host:port of its gRPC server (port 0: any free)")
    meta.add_argument("--data", help="data directory (embedded backend; required there)")
    meta.add_argument("--backend", choices=("embedded", "etcd"), default="embedded",
                      help="where the state lives: its own fsynced log in --data (default), or an etcd cluster")
    meta.add_argument("--etcd", help="etcd client endpoints, host:port, comma-separated (etcd backend)")
    meta.add_argument("--cluster-name", default="default",
                      help="the cluster's keys live under /quorumkv/NAME/ in etcd (default: default)")
    meta.add_argument("--lease-ttl", type=int, default=5,
                      help="seconds: a dead active MM is replaced after about this long (etcd backend; "
                           "default 5, etcd's minimum is 2)")
    meta.add_argument("--advertise", help="address the other MMs name to callers while this one is active "
                                          "(etcd backend; default: the listen host and port)")
    meta.add_argument("--leader-timeout-ms", type=int, default=500,
                      help="a leader silent this long is replaced (default 500)")
    meta.add_argument("--metrics-listen", default="127.0.0.1:0",
                      help="host:port of the Prometheus endpoint (port 0: any free; empty: none)")
    meta.add_argument("--log-level", default="INFO")
    meta.set_defaults(func=meta_main)
    meta_sub = meta.add_subparsers(dest="meta_command", metavar="{backup,restore}")
    mb = meta_sub.add_parser("backup", help="write the active metadata manager's state to a file (online)")
    mb.add_argument("--meta", required=True, help="metadata manager address(es), comma-separated: the active "
                                                  "one answers")
    mb.add_argument("--out", required=True, help="backup file to write")
    mb.add_argument("--timeout", type=float, default=10.0, help="seconds per call (default 10)")
    mb.set_defaults(func=meta_backup_main)
    mr = meta_sub.add_parser("restore", help="write a backup into a new store (offline: no MM running on it)")
    mr.add_argument("--in", dest="in_path", required=True, help="backup file (from meta backup)")
    mr.add_argument("--backend", choices=("embedded", "etcd"), default="embedded")
    mr.add_argument("--data", help="embedded: the new store's directory (must be empty unless --force)")
    mr.add_argument("--etcd", help="etcd: client endpoints, comma-separated")
    mr.add_argument("--cluster-name", default="default", help="etcd: restore under /quorumkv/NAME/")
    mr.add_argument("--force", action="store_true",
                    help="replace what is there (embedded: the store's files; etcd: the records under the prefix)")
    mr.set_defaults(func=meta_restore_main)

    router = sub.add_parser("router", help="run a request manager (the public API)")
    router.add_argument("--id", type=int, required=True,
                        help="router id: the node id in the seqs it issues (keep it distinct from the nodes')")
    router.add_argument("--listen", default="127.0.0.1:0", help="host:port of its gRPC server (port 0: any free)")
    router.add_argument("--meta", required=True, help="metadata manager address(es), comma-separated")
    router.add_argument("--metrics-listen", default="127.0.0.1:0",
                        help="host:port of the Prometheus endpoint (port 0: any free; empty: none)")
    router.add_argument("--learner", choices=("auto", "always", "off"), default="auto",
                        help="count writes' commits from the followers' acknowledgements, one hop less per write: "
                             "auto (while lightly loaded), always, or off (wait for the leader's OK)")
    router.add_argument("--log-level", default="INFO")
    router.set_defaults(func=router_main)

    cg = sub.add_parser("create-group", help="create a replication group")
    cg.add_argument("--meta", required=True, help="metadata manager address")
    cg.add_argument("rg", type=int, help="replication group id")
    cg.add_argument("members", help="node ids, comma-separated (1, 3 or 5 of them)")
    cg.set_defaults(func=create_group_main)

    from server.cluster_cli import add_parsers
    add_parsers(sub)

    gs = sub.add_parser("groups", help="list replication groups")
    gs.add_argument("--meta", required=True, help="metadata manager address")
    gs.set_defaults(func=groups_main)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
