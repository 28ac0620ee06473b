"""MetaServer: the `quorumkv meta` process (design section 4).

Purpose: holds the nodes and the replication groups (members, epoch, leader)
in a MetaBackend (server/meta/backend.py: the embedded MetaStore or etcd),
watches node liveness through their heartbeat streams, and runs each group's
leadership (server/meta/group_leadership.py): a new group and a group whose
leader stops reporting get a new epoch, promises from a quorum, and an
appointed leader. Tables and key ranges (issue 4) build on the same store.

    Meta.Heartbeat    one bidi stream per node: heartbeats and answers in,
                      commands out (directory, replicas to host, promise
                      requests, appointments)
    Meta.CreateGroup  admin: a new RG over the given nodes (idempotent)
    Meta.ListGroups   every RG with epoch, leader, config and the members'
                      last status reports
    Meta.Watch        the routing table (tables, ranges, RG leaders, node
                      addresses) now and after every change, to the routers
    Meta.CreateTable, Meta.DropTable   the catalog (server/meta/catalog.py)
    Meta.Backup       the whole state as one document (server/meta/backup.py)

Active and standby (explicit state: `active`): the server listens from
`start()`, but acts only between `activate(store)`, which loads every record
from the store, and `deactivate(reason)`, which ends every stream and drops
the in-memory state. The embedded backend activates at once and for good;
with etcd, server/meta/etcd_runner.py activates on winning the election and
deactivates on losing it. While inactive every RPC fails with UNAVAILABLE
naming the active MM when known, so nodes (MetaLink) and routers move on to
the next address they were given. A store write that fails (StoreFenced:
another MM took over; StoreUnavailable: outcome unknown) deactivates at once
and calls `on_store_failure`, before any message depending on it leaves.

Timing: the MM ticks every `tick_seconds` (50 ms); a leader silent for
`leader_timeout_seconds` (500 ms) is deposed. An epoch is persisted before
any message of it leaves (GroupLeadership calls persist first).

Thread-safety: everything runs on one asyncio loop.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from server.meta.backend import MetaBackend, MetaStoreError
from server.meta.catalog import Catalog, NoSuchTable, RequestIdReused, TableExists
from server.meta.group_leadership import GroupLeadership
from server.meta.table_reclaimer import TableReclaimer
from server.node import codec
from server.node.peers import SERVER_OPTIONS
from server.node_identity import RequireNodeId
from server.observability import add_health, set_serving
from server.proto import meta_pb2, meta_pb2_grpc, replication_pb2
from server.replication.errors import InvariantViolation
from server.replication.messages import Config, Message, StatusReport

log = logging.getLogger(__name__)

HEALTH_SERVICES = ["quorumkv.v1.Meta"]
KEEPALIVE_SECONDS = 0.5   # an idle Heartbeat or Watch stream gets a keepalive this often (meta.proto)


@dataclass
class MetaOptions:
    tick_seconds: float = 0.05
    leader_timeout_seconds: float = 0.5
    election_retry_seconds: float = 0.4
    avoid_deposed_seconds: float = 5.0   # CQ2 (GroupLeadership avoid_ticks)


@dataclass
class _NodeSession:
    node_id: int
    address: str
    incarnation: int
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    last_heartbeat: float = 0.0


class MetaServer:
    def __init__(self, listen: str, options: MetaOptions | None = None):
        self.options = options or MetaOptions()
        self.listen = listen
        self.port: int | None = None
        self.active = False
        self.store: MetaBackend | None = None
        self.standby_reason = "starting"
        self.active_hint: Callable[[], str | None] = lambda: None     # the active MM's address, if known
        self.on_store_failure: Callable[[MetaStoreError], None] | None = None
        self.health = None   # the gRPC health servicer, once started
        self._reset_state()
        # Routers compare versions for equality; starting from the clock keeps a
        # restarted MM's versions distinct from the ones it handed out before.
        self.routing_version = time.time_ns() // 1000
        self._routing_changed = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._tick_task: asyncio.Task | None = None
        self._reclaim_task: asyncio.Task | None = None

    def _reset_state(self) -> None:
        self.sessions: dict[int, _NodeSession] = {}
        self.nodes: dict[int, str] = {}
        self.directory_version = 1
        self.groups: dict[int, GroupLeadership] = {}
        self.members: dict[int, tuple[int, ...]] = {}
        self.reports: dict[tuple[int, int], replication_pb2.StatusReport] = {}   # (rg, node) -> last report
        self.catalog: Catalog | None = None
        self.established: set[int] = set()   # groups that have had a leader (ReplicaAssignment.established)
        # The groups each node leads, kept as appointments come and go: new
        # leaders go to the least loaded of the members whose logs tie.
        self.leader_of: dict[int, int] = {}
        self.led_by: dict[int, set[int]] = {}
        # (rg, node) -> its last StatusReport: a heartbeat without one means "unchanged"
        self.last_status: dict[tuple[int, int], StatusReport] = {}

    # ---------------------------------------------------------- active/standby
    def activate(self, store: MetaBackend) -> None:
        """Loads the whole state from `store` and starts acting. Requires: inactive, on the loop."""
        assert not self.active
        self._reset_state()
        self.store = store
        self.nodes = {int(k): v for k, v in store.items("node")}
        self.catalog = Catalog(store)
        for key, rec in store.items("group"):
            self._load_group(int(key), rec)
        self.active = True
        self.routing_version = max(self.routing_version + 1, time.time_ns() // 1000)
        self._tick_task = asyncio.get_running_loop().create_task(self._ticker(), name="meta-ticker")
        self._reclaim_task = asyncio.get_running_loop().create_task(TableReclaimer(self).run(), name="reclaimer")
        log.info("active: %d nodes, %d groups, %d tables", len(self.nodes), len(self.groups),
                 len(self.catalog.tables))
        self._report_health()

    def deactivate(self, reason: str) -> None:
        """Stops acting: ends every node stream and routing watch (their callers go on to
        another MM), drops the in-memory state (the store holds it) and closes the store."""
        if not self.active:
            return
        log.warning("standing by: %s", reason)
        self.active = False
        self.standby_reason = reason
        for task in (self._tick_task, self._reclaim_task):
            if task is not None:
                task.cancel()   # possibly the running task itself: it stops at its next await
        self._tick_task = self._reclaim_task = None
        for s in self.sessions.values():
            s.outbox.put_nowait(None)
        self._routing_changed.set()    # watches wake up, see inactive, and end
        self._routing_changed = asyncio.Event()
        store, self.store = self.store, None
        self._reset_state()
        if store is not None:
            store.close()
        self._report_health()

    def _report_health(self) -> None:
        """SERVING while active, NOT_SERVING on standby (health checks find the active MM)."""
        if self.health is not None:
            asyncio.get_running_loop().create_task(set_serving(self.health, HEALTH_SERVICES, self.active))

    def store_failed(self, exc: MetaStoreError) -> None:
        """A write did not go through: stop acting on state the store may not hold."""
        log.error("metadata store: %s", exc)
        self.deactivate(f"store write failed: {exc}")
        if self.on_store_failure is not None:
            self.on_store_failure(exc)

    def standby_message(self) -> str:
        hint = self.active_hint()
        where = f"the active one is at {hint}" if hint else "no active one is known yet"
        return f"standby metadata manager ({self.standby_reason}); {where}"

    # ---------------------------------------------------------------- groups
    def _ticks(self, seconds: float) -> int:
        return max(1, round(seconds / self.options.tick_seconds))

    def _new_leadership(self, rg: int, members: tuple[int, ...], epoch: int = 0,
                        config: Config | None = None) -> GroupLeadership:
        o = self.options
        gl = GroupLeadership(set(members), lambda m, rg=rg: self._send(rg, m),
                             persist=lambda g, rg=rg: self._persist_group(rg, g), epoch=epoch, config=config,
                             leader_timeout_ticks=self._ticks(o.leader_timeout_seconds),
                             election_retry_ticks=self._ticks(o.election_retry_seconds),
                             avoid_ticks=self._ticks(o.avoid_deposed_seconds),
                             leader_rank=self._groups_led, member_alive=self._node_alive)
        self.groups[rg] = gl
        self.members[rg] = members
        return gl

    def _load_group(self, rg: int, rec: dict) -> None:
        config = Config(frozenset(rec["voters"]), frozenset(rec.get("outgoing", ())),
                        frozenset(rec.get("learners", ())))
        gl = self._new_leadership(rg, tuple(rec["members"]), rec["epoch"], config)
        gl.leader = rec.get("leader")   # confirmed by its next status reports, or deposed
        # CQ2: who a predecessor MM deposed for hearing no quorum stays avoided
        # for what is left of the window (wall clock: the window outlives the MM).
        now = time.time()
        for member, until in rec.get("avoid", ()):
            if until > now:
                gl.avoid[member] = gl.ticks + math.ceil((until - now) / self.options.tick_seconds)
        self._count_leader(rg, gl.leader)
        if rec.get("established") or gl.leader is not None:
            self.established.add(rg)

    def routing_changed(self) -> None:
        self.routing_version += 1
        self._routing_changed.set()
        self._routing_changed = asyncio.Event()

    def routing_table(self) -> meta_pb2.RoutingTable:
        rt = meta_pb2.RoutingTable(version=self.routing_version)
        for t in sorted(self.catalog.tables.values(), key=lambda t: t.name):
            tr = rt.tables.add(name=t.name, table_id=t.table_id)
            for start, rg in t.ranges:
                tr.ranges.add(start=start, rg=rg)
        for rg, gl in sorted(self.groups.items()):
            rt.groups.add(rg=rg, leader=gl.leader or 0, epoch=gl.epoch)
        for nid, addr in sorted(self.nodes.items()):
            rt.nodes.add(node_id=nid, address=addr)
        return rt

    def _node_alive(self, node_id: int) -> bool:
        """Whether the node heartbeats us (within the leader timeout)."""
        s = self.sessions.get(node_id)
        return s is not None and time.monotonic() - s.last_heartbeat < self.options.leader_timeout_seconds

    def _groups_led(self, node_id: int) -> int:
        return len(self.led_by.get(node_id, ()))

    def _count_leader(self, rg: int, leader: int | None) -> None:
        old = self.leader_of.pop(rg, None)
        if old is not None:
            self.led_by[old].discard(rg)
        if leader is not None:
            self.leader_of[rg] = leader
            self.led_by.setdefault(leader, set()).add(rg)

    def _persist_group(self, rg: int, gl: GroupLeadership) -> None:
        self.routing_changed()   # a new epoch has no leader yet; an appointment names one
        self._count_leader(rg, gl.leader)   # every change of a group's leader is persisted here
        c = gl.config
        if gl.leader is not None:
            self.established.add(rg)
        rec = {"members": list(self.members[rg]), "epoch": gl.epoch, "leader": gl.leader,
               "voters": sorted(c.voters), "outgoing": sorted(c.outgoing_voters),
               "learners": sorted(c.learners), "established": rg in self.established}
        avoid = sorted((m, until) for m, until in gl.avoid.items() if until > gl.ticks)
        if avoid:   # CQ2's window, as wall-clock ends, for an MM that takes over within it
            now = time.time()
            rec["avoid"] = [[m, round(now + (until - gl.ticks) * self.options.tick_seconds, 3)] for m, until in avoid]
        self.store.put("group", rg, rec)

    def create_group(self, rg: int, members: list[int]) -> GroupLeadership:
        if rg <= 0:
            raise ValueError("rg ids are positive")
        if len(members) not in (1, 3, 5) or len(set(members)) != len(members) or min(members) <= 0:
            raise ValueError("a group has 1, 3 or 5 distinct members with positive node ids")
        gl = self.groups.get(rg)
        if gl is not None:
            if set(self.members[rg]) != set(members):
                raise ValueError(f"rg {rg} exists with members {sorted(self.members[rg])}")
            return gl
        gl = self._new_leadership(rg, tuple(sorted(members)))
        self._persist_group(rg, gl)
        for m in members:
            s = self.sessions.get(m)
            if s is not None:
                s.outbox.put_nowait(meta_pb2.MetaCommand(host=[self._assignment(rg)]))
        return gl

    def _assignment(self, rg: int) -> meta_pb2.ReplicaAssignment:
        a = meta_pb2.ReplicaAssignment(rg=rg, established=rg in self.established, epoch=self.groups[rg].epoch)
        codec.config_to_pb(self.groups[rg].config, a.config)
        return a

    def _send(self, rg: int, msg: Message) -> None:
        s = self.sessions.get(msg.recipient)
        if s is None:
            return   # the node is not connected: lost, GroupLeadership resends
        cmd = meta_pb2.MetaCommand()
        codec.encode(rg, msg, cmd.envelopes.add())
        s.outbox.put_nowait(cmd)

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self.active:
            next_at += self.options.tick_seconds
            # Ticks the loop missed (it was blocked: a slow fsync or etcd round trip) are
            # skipped, not run back to back: the MM stalled, the leaders did not go silent.
            next_at = max(next_at, loop.time())
            await asyncio.sleep(next_at - loop.time())
            try:
                for gl in list(self.groups.values()):
                    if gl.change is None and gl.leader is None:
                        gl.start_epoch()
                    gl.tick()
            except MetaStoreError as exc:
                self.store_failed(exc)
                return

    # ---------------------------------------------------------------- nodes
    def on_heartbeat(self, s: _NodeSession, hb: meta_pb2.NodeHeartbeat) -> None:
        """The node's messages, and its replicas' status reports. A node sends
        only the reports that changed (and all of them on a new stream and every
        400 ms: MetaLink), so for each group the node leads, a heartbeat without
        its report counts as the last report again (a leader's reports are what
        keeps it from being deposed: GroupLeadership)."""
        s.last_heartbeat = time.monotonic()
        reported: set[int] = set()
        for env in hb.envelopes:
            try:
                rg, msg = codec.decode(env)
            except ValueError as exc:
                log.warning("bad envelope from node %d: %s", s.node_id, exc)
                continue
            gl = self.groups.get(rg)
            if gl is None:
                continue
            if isinstance(msg, StatusReport):
                self.reports[(rg, msg.sender)] = env.status_report   # with the node-side figures
                self.last_status[(rg, msg.sender)] = msg
                reported.add(rg)
                if (msg.last.index and rg not in self.established and msg.sender == s.node_id
                        and msg.sender in self.members[rg] and msg.epoch <= gl.epoch):
                    self._learn_established(rg, gl)
            self._step_group(gl, rg, msg)
        for rg in self.led_by.get(s.node_id, frozenset()) - reported:   # a copy: a step may change it
            msg = self.last_status.get((rg, s.node_id))
            if msg is not None:
                self._step_group(self.groups[rg], rg, msg)

    def _learn_established(self, rg: int, gl: GroupLeadership) -> None:
        """A member's log holds entries, which only a leader writes: the group
        has had a leader even if this MM's state does not say so (restored
        from a backup taken before its first appointment). Only a member's
        own report, of an epoch this MM issued (a restored MM's epochs jump
        past any issued before: backup.EPOCH_GAP), counts: a node holding an
        old replica of a reused group id must not mark a new group. Recorded,
        so that a member hosted again on a wiped disk rejoins without a vote
        (node.py, ReplicaAssignment.established) instead of voting empty."""
        self.established.add(rg)
        try:
            self._persist_group(rg, gl)
        except MetaStoreError as exc:
            self.store_failed(exc)

    @staticmethod
    def _step_group(gl: GroupLeadership, rg: int, msg: Message) -> None:
        try:
            gl.step(msg)
        except InvariantViolation as exc:   # a node names an epoch we never issued: our store was lost?
            log.error("rg %d: %s", rg, exc)

    def register(self, hb: meta_pb2.NodeHeartbeat) -> _NodeSession:
        # A new stream starts with every report of the node: the cached ones
        # may be an earlier incarnation's (a wiped replica reports nothing yet).
        for key in [k for k in self.last_status if k[1] == hb.node_id]:
            del self.last_status[key]
        old = self.sessions.get(hb.node_id)
        s = _NodeSession(hb.node_id, hb.address, hb.incarnation)
        self.sessions[hb.node_id] = s
        if old is not None:
            old.outbox.put_nowait(None)   # ends the older stream of the same node
        if self.nodes.get(hb.node_id) != hb.address:
            self.nodes[hb.node_id] = hb.address
            self.store.put("node", hb.node_id, hb.address)
            self.directory_version += 1
            self.routing_changed()
            for other in self.sessions.values():
                if other is not s:
                    other.outbox.put_nowait(self._directory())
        first = self._directory()
        first.host.extend(self._assignment(rg) for rg, ms in self.members.items() if hb.node_id in ms)
        s.outbox.put_nowait(first)
        return s

    def _directory(self) -> meta_pb2.MetaCommand:
        cmd = meta_pb2.MetaCommand(directory_version=self.directory_version)
        for nid, addr in sorted(self.nodes.items()):
            cmd.directory.add(node_id=nid, address=addr)
        return cmd

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Listens; serves once activated (see the module docstring)."""
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[
            RequireNodeId(["/quorumkv.v1.Meta/Heartbeat"])])   # admin calls (CLI, tests) need no node id
        meta_pb2_grpc.add_MetaServicer_to_server(_MetaService(self), server)
        self.health = add_health(server, HEALTH_SERVICES)
        self.port = server.add_insecure_port(self.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.listen}")
        await server.start()
        self._server = server
        await set_serving(self.health, HEALTH_SERVICES, self.active)

    @property
    def address(self) -> str:
        return f"{self.listen.rsplit(':', 1)[0]}:{self.port}"

    async def stop(self) -> None:
        tasks = [t for t in (self._tick_task, self._reclaim_task) if t is not None]
        self.deactivate("stopping")
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.stop(grace=0.5)

    def group_state(self, rg: int) -> meta_pb2.GroupState:
        gl = self.groups[rg]
        g = meta_pb2.GroupState(rg=rg, epoch=gl.epoch, leader=gl.leader or 0)
        codec.config_to_pb(gl.config, g.config)
        for m in self.members[rg]:
            ns = g.replicas.add(node_id=m, address=self.nodes.get(m, ""), alive=self._node_alive(m))
            rep = self.reports.get((rg, m))
            if rep is not None:
                ns.report.CopyFrom(rep)
        return g


class _MetaService(meta_pb2_grpc.MetaServicer):
    """The RPC edge: refuses every call while the MM is inactive, maps store failures
    (which deactivate it) and catalog errors to gRPC codes."""

    def __init__(self, mm: MetaServer):
        self.mm = mm

    async def _require_active(self, context) -> None:
        if not self.mm.active:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self.mm.standby_message())

    async def _store_failed(self, exc: MetaStoreError, context) -> None:
        self.mm.store_failed(exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, self.mm.standby_message())

    async def Heartbeat(self, request_iterator, context):  # noqa: N802 - gRPC's name
        await self._require_active(context)
        incoming = request_iterator.__aiter__()
        first = await anext(incoming, None)
        if first is None:
            return
        await self._require_active(context)
        try:
            s = self.mm.register(first)
            self.mm.on_heartbeat(s, first)
        except MetaStoreError as exc:
            await self._store_failed(exc, context)
        mm = self.mm

        async def pump() -> None:
            try:
                async for hb in incoming:
                    if not mm.active or mm.sessions.get(s.node_id) is not s:
                        break
                    mm.on_heartbeat(s, hb)
            except MetaStoreError as exc:
                mm.store_failed(exc)
            finally:
                s.outbox.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(pump())
        try:
            while True:
                try:
                    cmd = await asyncio.wait_for(s.outbox.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield meta_pb2.MetaCommand()   # keepalive (meta.proto)
                    continue
                if cmd is None:
                    break
                while not s.outbox.empty():   # everything queued leaves as one message
                    nxt = s.outbox.get_nowait()
                    if nxt is None:
                        yield cmd
                        return
                    cmd.MergeFrom(nxt)
                yield cmd
        finally:
            reader.cancel()
            if self.mm.sessions.get(s.node_id) is s:
                del self.mm.sessions[s.node_id]
        await self._require_active(context)   # deactivated: end with UNAVAILABLE, the node moves on

    async def CreateGroup(self, request, context):  # noqa: N802
        await self._require_active(context)
        try:
            self.mm.create_group(request.rg, list(request.members))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except MetaStoreError as exc:
            await self._store_failed(exc, context)
        return meta_pb2.CreateGroupResponse(group=self.mm.group_state(request.rg))

    async def Watch(self, request, context):  # noqa: N802
        await self._require_active(context)
        known = request.known_version
        while True:
            changed = self.mm._routing_changed
            if not self.mm.active:
                await context.abort(grpc.StatusCode.UNAVAILABLE, self.mm.standby_message())
            if self.mm.routing_version != known:
                rt = self.mm.routing_table()
                known = rt.version
                yield rt
            try:
                await asyncio.wait_for(changed.wait(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield meta_pb2.RoutingTable(version=known, keepalive=True)

    async def CreateTable(self, request, context):  # noqa: N802
        await self._require_active(context)
        try:
            t = self.mm.catalog.create_table(request.name, list(request.split_keys), sorted(self.mm.groups),
                                             request.request_id)
        except TableExists as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except RequestIdReused as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ValueError as exc:
            code = grpc.StatusCode.UNAVAILABLE if not self.mm.groups else grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, str(exc))
        except MetaStoreError as exc:
            await self._store_failed(exc, context)
        self.mm.routing_changed()
        out = meta_pb2.NewTableResponse()
        out.table.name, out.table.table_id = t.name, t.table_id
        for start, rg in t.ranges:
            out.table.ranges.add(start=start, rg=rg)
        return out

    async def DropTable(self, request, context):  # noqa: N802
        await self._require_active(context)
        try:
            t = self.mm.catalog.drop_table(request.name, request.request_id)
        except NoSuchTable:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no table named {request.name!r}")
        except RequestIdReused as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except MetaStoreError as exc:
            await self._store_failed(exc, context)
        self.mm.routing_changed()
        return meta_pb2.DropTableResponse(table_id=t.table_id, rgs=sorted({rg for _, rg in t.ranges}))

    async def ListGroups(self, request, context):  # noqa: N802
        await self._require_active(context)
        return meta_pb2.ListGroupsResponse(groups=[self.mm.group_state(rg) for rg in sorted(self.mm.groups)],
                                           version=self.mm.directory_version)

    async def Backup(self, request, context):  # noqa: N802
        await self._require_active(context)
        assert self.mm.store is not None
        return meta_pb2.BackupResponse(document=self.mm.store.backup())
