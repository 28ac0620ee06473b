"""Router addresses: where they come from, and the gRPC target that load-balances over them.

Purpose: the SDK talks to the request managers ("routers") through one gRPC
channel with gRPC's own client-side `round_robin` policy, so its address list
must become one target string:

  "127.0.0.1:7000,127.0.0.1:7001"   -> "ipv4:127.0.0.1:7000,127.0.0.1:7001"
  "[::1]:7000,[::1]:7001"           -> "ipv6:[::1]:7000,[::1]:7001"
  "db.example:7000" (one hostname)  -> "dns:///db.example:7000" (every A record)
  "localhost:7000,localhost:7001"   -> resolved once, here, to an ipv4: (or ipv6:) list

A string that already names a gRPC scheme ("dns:", "ipv4:", "ipv6:", "unix:")
is passed through as it is.

Contract:
  1. Every address is host:port (IPv6 hosts in brackets); otherwise
     InvalidArgument. Several hostnames are resolved at client construction,
     not again: use one DNS name, or IP addresses, for routers that move.
  2. `default_routers()` checks, in order, the QUORUMKV_ROUTERS environment
     variable, then the file `<QUORUMKV_DATA or ./quorumkv-data>/routers`
     that `quorumkv up` writes (one line, comma-separated addresses); with
     neither it raises QuorumKVError saying what to do.

Thread-safety: pure functions (default_routers reads the environment and a file).
"""
from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence

from server.client.errors import InvalidArgument, QuorumKVError

ROUTERS_ENV = "QUORUMKV_ROUTERS"
DATA_ENV = "QUORUMKV_DATA"
DEFAULT_DATA_DIR = "quorumkv-data"
ROUTERS_FILE = "routers"
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")


def default_routers() -> str:
    """The router address list to use when the caller gives none (see contract 2)."""
    env = os.environ.get(ROUTERS_ENV, "").strip()
    if env:
        return env
    path = os.path.join(os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR, ROUTERS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().strip()
    except FileNotFoundError:
        line = ""
    if line:
        return line
    raise QuorumKVError(f"no router addresses given, {ROUTERS_ENV} is not set and {path} does not exist: "
                        f"start a local cluster with `quorumkv up`, or set {ROUTERS_ENV}=host:port,host:port")


def split_addresses(routers: str | Sequence[str]) -> list[str]:
    """The list of addresses in a comma-separated string (or a sequence of addresses)."""
    parts = routers.split(",") if isinstance(routers, str) else list(routers)
    addresses = [p.strip() for p in parts if p.strip()]
    if not addresses:
        raise InvalidArgument("no router address given: pass 'host:port,host:port'")
    return addresses


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"router address {address!r} is not host:port")
    return host, int(port)


def _ip_version(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def channel_target(routers: str | Sequence[str]) -> tuple[str, int]:
    """(the gRPC target for `routers`, the number of router addresses in it)."""
    if isinstance(routers, str) and routers.strip().startswith(_SCHEMES):
        body = routers.strip().split(":", 1)[1].lstrip("/")
        return routers.strip(), max(1, len([p for p in body.split(",") if p.strip()]))
    hosts = [_host_port(a) for a in split_addresses(routers)]
    if len(hosts) == 1 and _ip_version(hosts[0][0]) is None:
        host, port = hosts[0]
        return f"dns:///{host}:{port}", 1
    resolved = []
    for host, port in hosts:
        if _ip_version(host) is None:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise InvalidArgument(f"router host {host!r} does not resolve: {exc}") from None
            infos.sort(key=lambda i: i[0] != socket.AF_INET)          # prefer IPv4
            host = infos[0][4][0]
        resolved.append((host, port))
    versions = {_ip_version(h) for h, _ in resolved}
    if versions == {4}:
        return "ipv4:" + ",".join(f"{h}:{p}" for h, p in resolved), len(resolved)
    if versions == {6}:
        return "ipv6:" + ",".join(f"[{h}]:{p}" for h, p in resolved), len(resolved)
    raise InvalidArgument("router addresses mix IPv4 and IPv6; gRPC balances over one family: use one")
