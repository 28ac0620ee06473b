"""quorumkv's distributed layer: nodes, metadata manager, routers, SDK and CLI."""
from server import grpc_env as _grpc_env  # noqa: F401 - sets gRPC's environment before grpc is imported
