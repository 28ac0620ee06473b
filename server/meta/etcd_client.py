"""EtcdClient: a small synchronous client of etcd's v3 gRPC API, over several endpoints.

Purpose: the calls the metadata manager's etcd backend makes (etcd_store.py,
etcd_election.py): Range, Txn and DeleteRange on the KV service, Grant,
Revoke and KeepAlive on the Lease service; nothing else.

Why our own client. The messages are server/proto/etcd_v3.proto, a subset of
etcd's API with etcd's field numbers, generated with this repository's
grpc_tools like every other proto here (scripts/gen-protos). The maintained
Python etcd clients were tried first:
  - etcd3-async-client 0.3.1 (PyPI, 2025) does not import on a clean
    environment (its generated modules need googleapis-common-protos, which it
    does not declare), needs grpcio-tools at run time, installs top-level
    packages named `etcd`, `gogoproto` and `protoc_gen_openapiv2`, and its
    client offers put/get/watch with authentication but no transactions or
    leases, the two things the backend is built on.
  - aetcd 1.0.0 (2026) imports and works with grpcio 1.85 / protobuf 7, but its
    Client talks to one host:port: losing that etcd member would take the MM
    down with it, where a 3-member etcd is there to survive it. Wrapping one
    aetcd Client per endpoint would leave us writing the failover anyway, on
    top of a new dependency whose generated code targets protobuf 5.
  - etcd3 (the well-known one) pins protobuf 3 and is unmaintained.
The subset is about 25 messages; owning it costs less than either workaround.

Endpoints and failover: one gRPC channel per endpoint; a call goes to the
current one, and on UNAVAILABLE or DEADLINE_EXCEEDED (member down, partitioned,
or without a raft leader) the client moves to the next and tries again, once
per endpoint. A Txn retried after a deadline may have been applied already:
its compare-and-swap then fails, which the caller treats as fenced (reloads),
never as success; lease grants are not retried after a deadline (an orphan
lease would only expire), revokes are idempotent.

Thread-safety: safe to share between threads (gRPC's sync channels are); the
current-endpoint index is a hint that either thread may move.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc

from server.proto import etcd_v3_pb2 as pb
from server.proto import etcd_v3_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 1.0      # per attempt: a healthy etcd answers in milliseconds; a hung member is skipped
RANGE_PAGE = 1000
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

T = TypeVar("T")


class EtcdError(Exception):
    """etcd refused the call, or no endpoint answered in time."""


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes [prefix, end) every key starting with `prefix`."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"   # all keys


# --------------------------------------------------------------- txn pieces
def compare_create(key: bytes, revision: int) -> pb.Compare:
    """True when `key` was (last) created at `revision`; 0: the key does not exist."""
    return pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.CREATE, key=key, create_revision=revision)


def compare_mod(key: bytes, revision: int) -> pb.Compare:
    """True when `key` was last changed at `revision`; 0: the key does not exist."""
    return pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.MOD, key=key, mod_revision=revision)


def op_put(key: bytes, value: bytes, lease: int = 0) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, lease=lease))


def op_delete(key: bytes, range_end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=range_end))


def op_range(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key))


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], timeout: float = REQUEST_TIMEOUT):
        """`endpoints`: etcd client addresses, host:port (an http:// prefix is dropped)."""
        eps = [e.strip().removeprefix("http://") for e in endpoints if e.strip()]
        if not eps:
            raise ValueError("no etcd endpoint given")
        self.endpoints = eps
        self.timeout = timeout
        self._channels = [grpc.insecure_channel(e, options=CHANNEL_OPTIONS) for e in eps]
        self._kv = [pb_grpc.KVStub(c) for c in self._channels]
        self._lease = [pb_grpc.LeaseStub(c) for c in self._channels]
        self._current = 0

    def _call(self, what: str, fn: Callable[[int], T], retry: bool = True) -> T:
        """fn(endpoint index) on the current endpoint, then on the others while they fail retryably."""
        last: grpc.RpcError | None = None
        attempts = len(self.endpoints) if retry else 1
        for _ in range(attempts):
            i = self._current
            try:
                return fn(i)
            except grpc.RpcError as exc:
                last = exc
                if exc.code() not in RETRIED:
                    raise EtcdError(f"etcd {what} at {self.endpoints[i]}: {exc.code().name}: {exc.details()}") from None
                log.debug("etcd %s at %s: %s; trying the next endpoint", what, self.endpoints[i], exc.code().name)
                self._current = (i + 1) % len(self.endpoints)
        assert last is not None
        raise EtcdError(f"etcd {what}: no endpoint of {','.join(self.endpoints)} answered "
                        f"({last.code().name}: {last.details()})")

    # ----------------------------------------------------------------- KV
    def get(self, key: bytes) -> pb.KeyValue | None:
        """The key's current KeyValue (a linearizable read), or None when it does not exist."""
        r = self._call("range", lambda i: self._kv[i].Range(pb.RangeRequest(key=key), timeout=self.timeout))
        return r.kvs[0] if r.kvs else None

    def range_prefix(self, prefix: bytes) -> tuple[list[pb.KeyValue], int]:
        """Every key under `prefix`, in key order, as of one revision (linearizable, paged):
        (kvs, that revision)."""
        end = prefix_end(prefix)
        out: list[pb.KeyValue] = []
        start, revision = prefix, 0
        while True:
            req = pb.RangeRequest(key=start, range_end=end, limit=RANGE_PAGE, revision=revision)
            r = self._call("range", lambda i, req=req: self._kv[i].Range(req, timeout=self.timeout))
            if revision == 0:
                revision = r.header.revision
            out.extend(r.kvs)
            if not r.more or not r.kvs:
                return out, revision
            start = r.kvs[-1].key + b"\0"

    def txn(self, compare: Sequence[pb.Compare], success: Sequence[pb.RequestOp],
            failure: Sequence[pb.RequestOp] = ()) -> pb.TxnResponse:
        req = pb.TxnRequest(compare=compare, success=success, failure=failure)
        return self._call("txn", lambda i: self._kv[i].Txn(req, timeout=self.timeout))

    def delete_prefix(self, prefix: bytes) -> int:
        req = pb.DeleteRangeRequest(key=prefix, range_end=prefix_end(prefix))
        return self._call("delete", lambda i: self._kv[i].DeleteRange(req, timeout=self.timeout)).deleted

    # -------------------------------------------------------------- leases
    def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, the TTL etcd granted, in seconds; it may raise a short one to its minimum)."""
        r = self._call("lease grant", lambda i: self._lease[i].LeaseGrant(pb.LeaseGrantRequest(TTL=ttl),
                                                                         timeout=self.timeout), retry=False)
        if r.error:
            raise EtcdError(f"etcd lease grant: {r.error}")
        return r.ID, r.TTL

    def lease_revoke(self, lease: int) -> None:
        """Ends the lease and deletes its keys. A lease already gone is not an error."""
        try:
            self._call("lease revoke", lambda i: self._lease[i].LeaseRevoke(pb.LeaseRevokeRequest(ID=lease),
                                                                           timeout=self.timeout))
        except EtcdError as exc:
            if "NOT_FOUND" not in str(exc):
                raise

    def lease_keepalive(self, lease: int, timeout: float | None = None) -> int:
        """Renews the lease once: its new TTL in seconds, 0 or less when it no longer exists.
        `timeout` per endpoint tried (default: the client's)."""
        def once(i: int) -> int:
            call = self._lease[i].LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=lease)]),
                                                 timeout=timeout or self.timeout)
            try:
                for resp in call:
                    return resp.TTL
                return 0
            finally:
                call.cancel()
        return self._call("lease keepalive", once)

    def close(self) -> None:
        for c in self._channels:
            c.close()
