"""The sender's node id on every RPC between cluster processes (gRPC metadata `x-quorumkv-node`).

Purpose: logs, metrics and access control need to know which cluster
process is calling. Clients of cluster services put their id in the
metadata (peers.py, meta_link.py, data_client.py, the router); servers
install `RequireNodeId` for their cluster-internal services, which refuses a
call without a well-formed id with PERMISSION_DENIED and a message saying
what is missing, so a process that forgot it fails loudly in every test.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc

NODE_METADATA_KEY = "x-quorumkv-node"


def node_metadata(node_id: int) -> tuple[tuple[str, str], ...]:
    return ((NODE_METADATA_KEY, str(node_id)),)


def caller_id(metadata: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    for key, value in metadata or ():
        if key == NODE_METADATA_KEY:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


class RequireNodeId(grpc.aio.ServerInterceptor):
    """Refuses calls whose method path starts with one of `prefixes` (a whole
    service "/quorumkv.v1.Replication/", or one method
    "/quorumkv.v1.Meta/Heartbeat") and that carry no x-quorumkv-node."""

    def __init__(self, prefixes: Iterable[str]):
        self._prefixes = tuple(prefixes)

    async def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        if handler_call_details.method.startswith(self._prefixes) and \
                caller_id(handler_call_details.invocation_metadata) is None:
            return _deny(handler_call_details.method)
        return await continuation(handler_call_details)


def _deny(method: str) -> grpc.RpcMethodHandler:
    message = f"{method} is for cluster processes: send your node id in the {NODE_METADATA_KEY} metadata"

    async def abort_unary(request, context):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)

    async def abort_stream(request_iterator, context):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)

    if method.endswith(("/Exchange", "/Heartbeat", "/Write", "/Read")):
        return grpc.stream_stream_rpc_method_handler(abort_stream) if not method.endswith("/Exchange") \
            else grpc.stream_unary_rpc_method_handler(abort_stream)
    return grpc.unary_unary_rpc_method_handler(abort_unary)
