"""A local etcd cluster for benchmarks: moved to server/meta/etcd_testing.py, which the
metadata manager's tests share; this module re-exports it for the benchmarks.

Usage (unchanged):

    from etcd_cluster import EtcdCluster          # with bench/ on sys.path
    from bench.etcd_cluster import EtcdCluster    # from the repository root
    with EtcdCluster(members=3) as cluster:
        cluster.client_endpoints                   # ["127.0.0.1:41231", ...]
"""
from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:   # run as a script: sys.path[0] is bench/, the server package lives in REPO
    sys.path.insert(1, REPO)

from server.meta.etcd_testing import (  # noqa: E402 - after the path fix above
    EtcdCluster,
    EtcdClusterError,
    EtcdMember,
    etcd_binary,
    etcd_version,
)

__all__ = ["EtcdCluster", "EtcdClusterError", "EtcdMember", "etcd_binary", "etcd_version"]

if __name__ == "__main__":
    with EtcdCluster() as c:
        print(f"etcd {c.version}: {c.client_endpoints} pids {c.pids} in {c.dir}")
