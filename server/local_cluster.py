"""LocalCluster: a metadata manager and storage nodes as real processes on loopback.

Purpose: one place that starts, signals and stops the processes of a local
cluster, for the tests (tests/cluster), the benchmarks (bench/rg_throughput.py)
and, with routers, `quorumkv up` (issue 4).

Each role is `python -m server.cli <role> ...` with its data under one
directory; a process is ready when it prints "READY ..." (server/runtime.py),
which is awaited, never slept on. Only processes this object started are ever
signalled, by their PIDs; `close()` ends them all (SIGTERM, then SIGKILL after
a grace period) and the caller's context manager removes the directory.

Several metadata managers (`metas=2` with `meta_args` naming the etcd
backend): all start before the nodes and routers, which get every MM's
address; `meta_stub()` and the helpers built on it talk to whichever MM
answers as the active one.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import grpc

from server.proto import meta_pb2, meta_pb2_grpc

READY_TIMEOUT = 30.0
ROUTER_ID_BASE = 1000


@dataclass
class RoleProcess:
    name: str
    args: list[str]
    log_path: str
    proc: subprocess.Popen | None = None
    address: str = ""
    metrics_port: int = 0      # its Prometheus endpoint on 127.0.0.1 (0: none)
    history: list[int] = field(default_factory=list)   # every PID this role had

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalCluster:
    def __init__(self, base_dir: str, nodes: int = 3, env: dict[str, str] | None = None,
                 node_args: list[str] | None = None, meta_args: list[str] | None = None, metas: int = 1,
                 source_dir: str | None = None, fault_hooks: bool = False):
        """source_dir: the checkout whose code the processes run (default:
        this one); bench/ab_one_client.py runs two checkouts side by side.
        fault_hooks: nodes take `--isolate-file` (isolate(), heal()): tests only."""
        self.fault_hooks = fault_hooks
        self.base_dir = base_dir
        self.source_dir = source_dir or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.env = dict(os.environ, **(env or {}))
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.meta = RoleProcess("meta", ["meta", "--listen", "127.0.0.1:0", "--data", os.path.join(base_dir, "meta"),
                                         *(meta_args or [])], os.path.join(base_dir, "meta.log"))
        self.metas = [self.meta] + [
            RoleProcess(f"meta{i}", ["meta", "--listen", "127.0.0.1:0", "--data", os.path.join(base_dir, f"meta{i}"),
                                     *(meta_args or [])], os.path.join(base_dir, f"meta{i}.log"))
            for i in range(2, metas + 1)]
        self.node_args = list(node_args or [])
        self.nodes: dict[int, RoleProcess] = {}
        self.routers: dict[int, RoleProcess] = {}
        self._node_count = nodes
        self._meta_port: int | None = None

    # ---------------------------------------------------------------- processes
    def _spawn(self, role: RoleProcess) -> None:
        if role.running():   # a second process would orphan the first (nothing would end it)
            raise RuntimeError(f"{role.name} is already running (pid {role.pid})")
        if role.proc is not None and role.proc.stdout is not None:
            role.proc.stdout.close()   # the previous incarnation's pipe
        log = open(role.log_path, "ab")
        role.proc = subprocess.Popen([sys.executable, "-m", "server.cli", *role.args], stdout=subprocess.PIPE,
                                     stderr=log, env=self.env, cwd=self.source_dir)
        log.close()
        role.history.append(role.proc.pid)
        role.address = self._await_ready(role)

    def _await_ready(self, role: RoleProcess) -> str:
        proc = role.proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 0.5)
            if r:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    if line.startswith("READY "):
                        for word in line.split():
                            if word.startswith("metrics="):
                                role.metrics_port = int(word[8:])
                        return line.split()[-1]
            elif proc.poll() is not None:
                break
        self._kill(role)
        with open(role.log_path, "rb") as f:
            tail = f.read()[-3000:].decode(errors="replace")
        raise RuntimeError(f"{role.name} did not start (exit {proc.poll()}); log tail:\n{tail}")

    def start(self) -> LocalCluster:
        os.makedirs(self.base_dir, exist_ok=True)
        for meta in self.metas:
            self._spawn(meta)
        for i in range(1, self._node_count + 1):
            self.add_node(i)
        return self

    def add_node(self, node_id: int) -> RoleProcess:
        role = RoleProcess(f"node{node_id}", ["node", "--id", str(node_id), "--listen", "127.0.0.1:0", "--data",
                                              os.path.join(self.base_dir, f"node{node_id}"), "--meta",
                                              self.meta_addresses,
                                              *(["--isolate-file", self._isolate_file(node_id)]
                                                if self.fault_hooks else []),
                                              *self.node_args],
                           os.path.join(self.base_dir, f"node{node_id}.log"))
        self.nodes[node_id] = role
        self._spawn(role)
        return role

    def add_router(self, router_id: int, args: list[str] | None = None) -> RoleProcess:
        """A request manager; its seqs carry router_id, so it is kept apart
        from node ids (ROUTER_ID_BASE + n). `args`: more `quorumkv router` arguments."""
        role = RoleProcess(f"router{router_id}", ["router", "--id", str(router_id), "--listen", "127.0.0.1:0",
                                                  "--meta", self.meta_addresses, *(args or [])],
                           os.path.join(self.base_dir, f"router{router_id}.log"))
        self.routers[router_id] = role
        self._spawn(role)
        return role

    def serve(self, groups: int, members: list[int], routers: int, timeout: float = 30.0,
              router_args: list[str] | None = None) -> None:
        """Groups 1..`groups` over `members`, each with a serving leader, then
        `routers` request managers (ids ROUTER_ID_BASE + 1, ...), with `router_args`."""
        for rg in range(1, groups + 1):
            self.create_group(rg, members)
        for rg in range(1, groups + 1):
            self.wait_for_leader(rg, timeout=timeout)
        for i in range(routers):
            self.add_router(ROUTER_ID_BASE + i + 1, router_args)

    @property
    def meta_addresses(self) -> str:
        """Every MM's address, comma-separated (one MM: its address)."""
        return ",".join(m.address for m in self.metas)

    @property
    def router_addresses(self) -> str:
        return ",".join(r.address for r in self.routers.values() if r.running())

    def restart(self, role: RoleProcess) -> None:
        """Starts a stopped or killed role again, on the same port, with the same data."""
        if role.running():
            raise RuntimeError(f"{role.name} is running")
        if role.address:   # same port: the others know it (the MM's address is in every node's args)
            role.args[role.args.index("--listen") + 1] = role.address
        self._spawn(role)

    def kill9(self, role: RoleProcess) -> None:
        assert role.proc is not None
        role.proc.send_signal(signal.SIGKILL)
        role.proc.wait(10)

    def pause(self, role: RoleProcess) -> None:
        assert role.proc is not None
        role.proc.send_signal(signal.SIGSTOP)

    def resume(self, role: RoleProcess) -> None:
        assert role.proc is not None
        role.proc.send_signal(signal.SIGCONT)

    def _isolate_file(self, node_id: int) -> str:
        return os.path.join(self.base_dir, f"node{node_id}.isolated")

    def isolate(self, node_id: int) -> None:
        """Cuts node `node_id` off from the other cluster processes, peers and
        metadata manager, both ways (`quorumkv node --isolate-file`); its
        clients still reach it. Takes effect at its next tick (50 ms).
        Requires: fault_hooks."""
        if not self.fault_hooks:
            raise RuntimeError("this LocalCluster was made without fault_hooks=True")
        with open(self._isolate_file(node_id), "w"):
            pass

    def heal(self, node_id: int) -> None:
        """Ends isolate(node_id), at the node's next tick."""
        try:
            os.remove(self._isolate_file(node_id))
        except FileNotFoundError:
            pass

    def stop(self, role: RoleProcess) -> None:
        """Clean stop (SIGTERM): the role flushes and closes what it holds."""
        self._kill(role, grace=15.0)

    def _kill(self, role: RoleProcess, grace: float = 5.0) -> None:
        p = role.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGCONT)   # a paused process cannot act on SIGTERM
        p.terminate()
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

    def close(self) -> None:
        """Stops every role: routers first (no new client work), then nodes and
        MMs together; each gets SIGTERM and a grace period, SIGKILL after it.
        The signals go out before any wait, so the graceful stops overlap."""
        for tier in (list(self.routers.values()), list(self.nodes.values()) + self.metas):
            running = [r for r in tier if r.proc is not None and r.proc.poll() is None]
            for role in running:
                role.proc.send_signal(signal.SIGCONT)   # a paused process cannot act on SIGTERM
                role.proc.terminate()
            deadline = time.monotonic() + 5.0
            for role in running:
                try:
                    role.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    role.proc.kill()
                    role.proc.wait(10)
        for role in list(self.routers.values()) + list(self.nodes.values()) + self.metas:
            if role.proc is not None and role.proc.stdout is not None:
                role.proc.stdout.close()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- metadata
    def meta_stub(self) -> tuple[grpc.Channel, meta_pb2_grpc.MetaStub]:
        """A stub of the MM (of the active one, when there are several)."""
        ch = grpc.insecure_channel(self.meta.address if len(self.metas) == 1 else self.active_meta().address)
        return ch, meta_pb2_grpc.MetaStub(ch)

    def active_meta(self, timeout: float = 15.0) -> RoleProcess:
        """The running MM that answers ListGroups (standbys refuse with UNAVAILABLE); polls,
        since which one is active is another process's state."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.metas:
                if not m.running():
                    continue
                with grpc.insecure_channel(m.address) as ch:
                    try:
                        meta_pb2_grpc.MetaStub(ch).ListGroups(meta_pb2.ListGroupsRequest(), timeout=2)
                        return m
                    except grpc.RpcError:
                        pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no active metadata manager after {timeout} s")
            time.sleep(0.05)

    def create_group(self, rg: int, members: list[int]) -> None:
        ch, stub = self.meta_stub()
        with ch:
            stub.CreateGroup(meta_pb2.GroupSpec(rg=rg, members=members), timeout=10)

    def group(self, rg: int) -> meta_pb2.GroupState:
        ch, stub = self.meta_stub()
        with ch:
            for g in stub.ListGroups(meta_pb2.ListGroupsRequest(), timeout=10).groups:
                if g.rg == rg:
                    return g
        raise KeyError(rg)

    def wait_for_leader(self, rg: int, timeout: float = 15.0, not_epoch: int = 0) -> tuple[int, int]:
        """(leader node id, epoch) once the MM names a leader that reports
        LEADER (its NOOP committed) in an epoch other than `not_epoch`. Polls
        the MM's state (a condition over another process's state: there is
        nothing to await locally)."""
        deadline = time.monotonic() + timeout
        while True:
            g = self.group(rg)
            if g.leader and g.epoch != not_epoch:
                for r in g.replicas:
                    if r.node_id == g.leader and r.alive and r.report.role == 3:
                        return g.leader, g.epoch
            if time.monotonic() > deadline:
                raise TimeoutError(f"rg {rg}: no serving leader after {timeout} s: {g}")
            time.sleep(0.02)
