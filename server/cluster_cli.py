"""`quorumkv up` and `quorumkv status`: a whole local cluster in one command, and its state.

`up` starts, each as a real process on loopback with its data under one
directory (server/local_cluster.py): the metadata manager, the storage nodes
(--nodes, default 3, plus --spares that join no group: the controller's pool,
issue 5), --groups replication groups over the first 3 (or 5) nodes, and
--routers request managers. It records the routers' addresses in
<data>/routers (the CLI's client commands and the SDK read it) and the
metadata manager's in <data>/meta.address (`status` reads it), prints them,
then shows a live status table until Ctrl-C, which stops every process it
started. --demo runs a short load through the SDK first (the seed's example,
then bounded batches of puts, gets and a list) and prints its figures;
--exit-after-demo stops the cluster after it (the README's first command).

Data survives: `up` on an existing directory restarts the same cluster.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from server.local_cluster import LocalCluster

ROLES = {0: "-", 1: "follower", 2: "electing", 3: "leader"}


def routers_file(data_dir: str) -> str:
    return os.path.join(data_dir, "routers")


def meta_file(data_dir: str) -> str:
    return os.path.join(data_dir, "meta.address")


def render_status(meta_address: str) -> str:
    import grpc

    from server.proto import meta_pb2, meta_pb2_grpc

    with grpc.insecure_channel(meta_address) as ch:
        stub = meta_pb2_grpc.MetaStub(ch)
        groups = stub.ListGroups(meta_pb2.ListGroupsRequest(), timeout=5).groups
        rt = next(iter(stub.Watch(meta_pb2.WatchRequest(), timeout=5)))
    lines = [f"tables: {', '.join(f'{t.name} ({len(t.ranges)} ranges)' for t in rt.tables) or '(none)'}",
             f"{'rg':>3} {'epoch':>5} {'leader':>6}  {'node':>4} {'role':<9} {'commit':>7} {'applied':>7} "
             f"{'lag':>5} {'size MiB':>8} {'ops/s':>8}"]
    for g in groups:
        leader_commit = max((r.report.commit_index for r in g.replicas), default=0)
        for i, r in enumerate(g.replicas):
            head = f"{g.rg:>3} {g.epoch:>5} {g.leader or '-':>6}" if i == 0 else " " * 16
            role = ROLES.get(r.report.role, "?") if r.alive else "DOWN"
            lines.append(f"{head}  {r.node_id:>4} {role:<9} {r.report.commit_index:>7} {r.report.applied_index:>7} "
                         f"{leader_commit - r.report.applied_index:>5} {r.report.size_bytes / 2**20:>8.1f} "
                         f"{r.report.ops_per_second:>8.0f}")
    return "\n".join(lines)


def _demo(routers: str, records: int) -> None:
    import quorumkv

    print("demo: the seed's example through the SDK")
    with quorumkv.Client(routers) as c:
        if "stocks" not in c.tables():
            c.create_table("stocks", split_keys=[b"b"])
        for name, price in ((b"b", b"100"), (b"a", b"120"), (b"c", b"135")):
            c.put("stocks", name, price)
        rec = c.get("stocks", b"a")
        print(f"  get(stocks, a) = {rec.value.decode()}  seq={rec.seq.hex()}")
        print("  list(stocks) =", [(r.key.decode(), r.value.decode()) for r in c.list("stocks")])
        if "demo" not in c.tables():
            c.create_table("demo", split_keys=[b"k%07d" % (records // 2)])
        value = b"v" * 100
        keys = [b"k%07d" % i for i in range(records)]
        t = time.perf_counter()
        for lo in range(0, records, 500):
            c.put_many("demo", [(k, value) for k in keys[lo:lo + 500]])
        dt = time.perf_counter() - t
        print(f"  put_many  {records:,} records in {dt:.2f} s  ({records / dt:,.0f}/s, durable on a majority)")
        t = time.perf_counter()
        found = 0
        for lo in range(0, records, 500):
            found += sum(r is not None for r in c.get_many("demo", keys[lo:lo + 500]))
        dt = time.perf_counter() - t
        print(f"  get_many  {found:,} found in {dt:.2f} s  ({records / dt:,.0f}/s, linearizable)")
        t = time.perf_counter()
        n = sum(1 for _ in c.list("demo", keys_only=True))
        dt = time.perf_counter() - t
        print(f"  list      {n:,} keys in {dt:.2f} s")
        if found != records or n != records:
            raise SystemExit(f"demo: expected {records} records, found {found} by get and {n} by list")


def up_main(args: argparse.Namespace) -> int:
    data = os.path.abspath(args.data)
    os.makedirs(data, exist_ok=True)
    replicas = 5 if args.nodes >= 5 and args.replicas == 5 else 3
    if args.nodes < replicas:
        print(f"error: --nodes must be at least {replicas}", file=sys.stderr)
        return 2
    cluster = LocalCluster(data, nodes=args.nodes + args.spares, node_args=["--log-level", "WARNING"],
                           meta_args=["--log-level", "WARNING"])
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        t0 = time.monotonic()
        cluster.start()
        cluster.serve(args.groups, list(range(1, replicas + 1)), args.routers)
        routers = cluster.router_addresses
        with open(routers_file(data), "w") as f:
            f.write(routers + "\n")
        with open(meta_file(data), "w") as f:
            f.write(cluster.meta.address + "\n")
        print(f"quorumkv is up in {time.monotonic() - t0:.1f} s: metadata manager {cluster.meta.address}, "
              f"{args.nodes} nodes + {args.spares} spares, {args.groups} groups of {replicas}")
        print(f"routers: {routers}   (recorded in {routers_file(data)}; logs in {data})")
        print(f"try:  quorumkv put stocks a 120 && quorumkv get stocks a   (QUORUMKV_DATA={data})")
        if args.demo:
            _demo(routers, args.demo_records)
            print(render_status(cluster.meta.address))
        if args.exit_after_demo:
            return 0
        while not stop.is_set():
            print("\033[2J\033[H" + time.strftime("%H:%M:%S ") + f"routers {routers}  (Ctrl-C stops)\n"
                  + render_status(cluster.meta.address), flush=True)
            stop.wait(1.0)
        return 0
    finally:
        print("stopping...", flush=True)
        cluster.close()
        for name in (routers_file(data), meta_file(data)):
            try:
                os.remove(name)
            except FileNotFoundError:
                pass


def _data_dir(args: argparse.Namespace) -> str:
    return args.data or os.environ.get("QUORUMKV_DATA", "quorumkv-data")


def status_main(args: argparse.Namespace) -> int:
    meta = args.meta
    if meta is None:
        path = meta_file(_data_dir(args))
        if not os.path.exists(path):
            print(f"error: no local cluster found ({path} is missing): start one with `quorumkv up` "
                  "or pass --meta", file=sys.stderr)
            return 2
        meta = open(path).read().strip()
    print(render_status(meta))
    return 0


def client_main(args: argparse.Namespace) -> int:
    """put, get, delete, list, create-table, drop-table, tables through the SDK."""
    import quorumkv
    from server.client import default_routers

    try:
        routers = args.routers or default_routers()
        with quorumkv.Client(routers) as c:
            cmd = args.command
            if cmd == "put":
                print(c.put(args.table, os.fsencode(args.key), os.fsencode(args.value)).hex())
            elif cmd == "get":
                rec = c.get(args.table, os.fsencode(args.key))
                if rec is None:
                    print("(not found)")
                    return 1
                print(rec.value.decode(errors="replace"), f"  seq={rec.seq.hex()}")
            elif cmd == "delete":
                print(c.delete(args.table, os.fsencode(args.key)).hex())
            elif cmd == "list":
                for r in c.list(args.table, os.fsencode(args.start) if args.start else None,
                                os.fsencode(args.end) if args.end else None, limit=args.limit):
                    print(r.key.decode(errors="replace"), r.value.decode(errors="replace"))
            elif cmd == "create-table":
                c.create_table(args.table, split_keys=[os.fsencode(k) for k in args.split] or None)
                print(f"created {args.table}")
            elif cmd == "drop-table":
                c.drop_table(args.table)
                print(f"dropped {args.table}")
            elif cmd == "tables":
                print("\n".join(c.tables()))
    except quorumkv.QuorumKVError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_parsers(sub) -> None:
    up = sub.add_parser("up", help="start a local cluster (meta, nodes, routers) and show its status")
    up.add_argument("--data", default=os.environ.get("QUORUMKV_DATA", "quorumkv-data"),
                    help="directory for every process's data and logs (default ./quorumkv-data)")
    up.add_argument("--nodes", type=int, default=3, help="storage nodes in groups (default 3)")
    up.add_argument("--spares", type=int, default=0, help="extra nodes in the spare pool (default 0)")
    up.add_argument("--replicas", type=int, default=3, choices=(3, 5), help="members per group (default 3)")
    up.add_argument("--groups", type=int, default=2, help="replication groups (default 2)")
    up.add_argument("--routers", type=int, default=2, help="request managers (default 2)")
    up.add_argument("--demo", action="store_true", help="run a short demo load first")
    up.add_argument("--demo-records", type=int, default=20_000)
    up.add_argument("--exit-after-demo", action="store_true", help="stop the cluster after the demo")
    up.set_defaults(func=up_main)

    st = sub.add_parser("status", help="tables, ranges, groups, leaders, epochs, lag, sizes, ops/s")
    st.add_argument("--meta", help="metadata manager address (default: the local cluster's)")
    st.add_argument("--data", help="the local cluster's directory (default $QUORUMKV_DATA or ./quorumkv-data)")
    st.set_defaults(func=status_main)

    def client(name: str, help_: str, *positional: str):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--routers", help="router addresses, comma-separated (default: $QUORUMKV_ROUTERS, "
                                         "else the local cluster's)")
        for arg in positional:
            p.add_argument(arg)
        p.set_defaults(func=client_main)
        return p

    client("put", "write a record", "table", "key", "value")
    client("get", "read a record", "table", "key")
    client("delete", "delete a record", "table", "key")
    ls = client("list", "list records in key order", "table")
    ls.add_argument("--start")
    ls.add_argument("--end")
    ls.add_argument("--limit", type=int)
    ct = client("create-table", "create a table", "table")
    ct.add_argument("--split", action="append", default=[], help="a split key (repeatable): one range per part")
    client("drop-table", "drop a table", "table")
    client("tables", "list the tables")
