"""Node: one `quorumkv node` process, hosting replicas of any number of replication groups.

Purpose: wires the pieces of server/node together on one asyncio event loop
(uvloop when installed):

    gRPC server   Replication.Exchange  peers' message streams -> ReplicaHost.step
                  Data.Write/Read/Scan  client batches -> ReplicaHost.submit_*
    PeerLinks     ReplicaHost messages -> one stream per peer node (peers.py)
    MetaLink      heartbeats and answers -> the MM; commands <- the MM (meta_link.py)
    ticker        Replica.tick() for every replica every TICK_SECONDS
    maintenance   log compaction once the engine holds entries durably
    I/O thread    snapshot writes (ReplicaStorage.persist); log fsyncs run inline (replica_host.py)

Data layout: <data>/rg-<id>/ per replica (server/node/replica_storage.py).
Replicas are created when the MM assigns them (MetaCommand.host) and found
again on restart from the directories.

Thread-safety: everything but snapshot writes runs on the loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import grpc

from engine._native import write_batch
from engine._native.block_cache import BlockCache
from engine.errors import QuorumKVError
from server import timeline
from server.node import codec
from server.node.data_answers import answer_now, answer_stream
from server.node.dedup import DEDUP_TABLE_ID, MAX_DEDUP_RECORDS
from server.node.learn_feed import LearnFeed
from server.node.meta_link import MetaLink
from server.node.metrics import NodeCollector
from server.node.peers import SERVER_OPTIONS, PeerLink
from server.node.replica_host import COMPACT_FORCE, DROPPED_TABLE, ReplicaHost
from server.node.replica_storage import (
    PARTIAL_SUFFIXES,
    ReplicaStorage,
    mark_recovering,
    remove_replica_dir,
    table_name,
)
from server.node.write_path import Listener, Outcome, Result
from server.node_identity import NODE_METADATA_KEY, RequireNodeId
from server.observability import add_health, register, set_serving, start_metrics
from server.proto import data_pb2, data_pb2_grpc, meta_pb2, replication_pb2, replication_pb2_grpc
from server.replication.errors import InvariantViolation, ReplicaMisuseError
from server.replication.messages import METADATA_MANAGER_ID, Append, AppendAck, Heartbeat, HeartbeatAck, Message, Role
from server.replication.options import ReplicaOptions
from server.runtime import fail_stop

log = logging.getLogger(__name__)

HEALTH_SERVICES = ["quorumkv.v1.Replication", "quorumkv.v1.Data"]
TICK_SECONDS = 0.05
MAX_SCAN_BYTES = 8 << 20         # a Scan answer stops here (with more=True), far below the 64 MiB message cap
MAINTENANCE_SECONDS = 1.0
COMPACT_AFTER_ENTRIES = 10_000   # compact a replica's log once it holds this many entries
RETAIN_FACTOR = 4                # ... but keep entries a member lacks until it holds this many times that
FOLLOWER_APPLY_BATCH = 64        # see ReplicaOptions.follower_apply_batch
# A group with no write or read for 1 s (idle_after_ticks) heartbeats every
# 500 ms instead of 100: a node's idle CPU is mostly its groups' heartbeats.
IDLE_HEARTBEAT_TICKS = 10
# A leader that heard from no quorum for this long says so to the MM, which
# deposes it (ReplicaOptions.check_quorum_ticks): three idle heartbeat periods.
CHECK_QUORUM_TICKS = 3 * IDLE_HEARTBEAT_TICKS
# Quorum-first sending (server/replication/README.md, "Trailing followers"): a
# leader of 3 sends each write at once to one follower, and to the other once
# 128 entries wait for it or at the next tick (50 ms). 128 rather than 32: the
# trailing member's batches cost every member's shared CPU less often (one
# client's writes +4%, the median of four A/B runs; bench/RESULTS.md
# 2026-11-28 06:11), and its lag stays bounded by the tick.
TRAILING_BATCH_ENTRIES = 128
# One block cache for every replica's engine on the node (engine Options.block_cache):
# the node's read memory is bounded once, whatever the number of replicas.
BLOCK_CACHE_BYTES = 256 << 20
# Leader leases (server/replication/README.md, LL1-LL6): reads skip the
# heartbeat round while a round of the last 300 ms was acknowledged. Members
# then hold their promise for 367 ms, below the MM's 500 ms leader timeout, so
# a crashed leader's successor is not delayed by it. 0 turns leases off.
LEASE_MS = 300
# Messages whose Ready the replica host carries out at once on the Exchange
# handler's stack (ReplicaHost.acknowledged, called by deliver_all), without
# a loop wake-up: on a leader, acknowledgements that complete a quorum (apply,
# answers, served reads); on a follower, a read round's Heartbeat (its
# HeartbeatAck) and an Append (fsync, acknowledgement, apply:
# ReplicaHost._needs_loop). A Ready with work for the loop is handed to it.
_TAKEN_AT_ONCE = (AppendAck, HeartbeatAck, Heartbeat, Append)
_RESERVED_TABLE = f"table ids from {DEDUP_TABLE_ID} up are the replicas' own (server/node/dedup.py)"
_DATA_CODE = {Outcome.OK: data_pb2.OK, Outcome.NOT_LEADER: data_pb2.NOT_LEADER,
              Outcome.OUTCOME_UNKNOWN: data_pb2.OUTCOME_UNKNOWN, Outcome.TIMEOUT: data_pb2.TIMEOUT,
              Outcome.CONDITION_FAILED: data_pb2.CONDITION_FAILED, Outcome.TABLE_DROPPED: data_pb2.TABLE_DROPPED,
              Outcome.FORGOTTEN: data_pb2.FORGOTTEN, Outcome.DURABLE_ON_LEADER: data_pb2.DURABLE_ON_LEADER}


class Node:
    def __init__(self, node_id: int, listen: str, data_dir: str, meta_addresses: list[str],
                 options: ReplicaOptions | None = None, advertise: str | None = None,
                 compact_after_entries: int = COMPACT_AFTER_ENTRIES, metrics_listen: str | None = None,
                 lease_ms: int = LEASE_MS, trailing_batch_entries: int = TRAILING_BATCH_ENTRIES,
                 block_cache_bytes: int = BLOCK_CACHE_BYTES, isolate_file: str | None = None):
        if node_id <= 0:
            raise ValueError("node ids are positive (0 is the metadata manager)")
        self.id = node_id
        self.listen = listen
        self.address = advertise or listen
        self.data_dir = data_dir
        # Followers learn commits with the next Append or heartbeat: half the
        # messages per write at low load (bench/RESULTS.md); only leaders serve reads.
        # They apply in batches of up to FOLLOWER_APPLY_BATCH entries (or every tick).
        # An idle group heartbeats every IDLE_HEARTBEAT_TICKS (ReplicaOptions).
        # Followers beyond a quorum get entries in batches (TRAILING_BATCH_ENTRIES).
        # Reads wait for the last index at their arrival, not the commit index:
        # a learner client may know of a commit before the leader does
        # (learner_reads; server/node/learn_feed.py).
        self.options = options or ReplicaOptions(eager_commit=False, follower_apply_batch=FOLLOWER_APPLY_BATCH,
                                                 lease_ns=lease_ms * 1_000_000,
                                                 idle_heartbeat_ticks=IDLE_HEARTBEAT_TICKS,
                                                 check_quorum_ticks=CHECK_QUORUM_TICKS,
                                                 trailing_batch_entries=trailing_batch_entries,
                                                 learner_reads=True)
        self.compact_after_entries = compact_after_entries
        self.metrics_listen = metrics_listen
        self.metrics_port: int | None = None
        self._health = None
        self.hosts: dict[int, ReplicaHost] = {}
        self.directory: dict[int, str] = {}
        self._directory_version = -1
        self.peers: dict[int, PeerLink] = {}
        self.learn_feed = LearnFeed(node_id)
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"node{node_id}-io")
        # Shared by every replica's engine; 0: no block cache at all.
        self.block_cache = BlockCache(block_cache_bytes) if block_cache_bytes else None
        self._engine_options = {"block_cache": self.block_cache} if block_cache_bytes else {"block_cache_bytes": 0}
        self.meta = MetaLink(node_id, self.address, meta_addresses, self)
        # Fault injection for tests (`quorumkv node --isolate-file`): while the
        # file exists, this node is cut off from every other cluster process,
        # peers and metadata manager, both ways; its clients still reach it.
        # Checked every tick. So a test stages a leader that has not heard of
        # its deposition, with real processes on one host.
        self.isolate_file = isolate_file
        self.isolated = False
        self.meta.silenced = lambda: self.isolated
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task] = []
        self._loose_tasks: set[asyncio.Task] = set()
        self.port: int | None = None

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        for name in sorted(os.listdir(self.data_dir)):
            if not name.startswith("rg-"):
                continue
            if name.endswith(PARTIAL_SUFFIXES):
                shutil.rmtree(os.path.join(self.data_dir, name), ignore_errors=True)   # a crash's leftover
            elif name[3:].isdigit():
                self._host(int(name[3:]))
            else:
                log.warning("%s: not a replica directory (rg-<group id>): left alone",
                            os.path.join(self.data_dir, name))
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[
            RequireNodeId(["/quorumkv.v1.Replication/", "/quorumkv.v1.Data/"])])
        replication_pb2_grpc.add_ReplicationServicer_to_server(_ReplicationService(self), server)
        data_pb2_grpc.add_DataServicer_to_server(_DataService(self), server)
        self._health = add_health(server, HEALTH_SERVICES)
        self.port = server.add_insecure_port(self.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.listen}")
        host = self.listen.rsplit(":", 1)[0]
        if self.address == self.listen and self.listen.endswith(":0"):
            self.address = self.meta.address = f"{host}:{self.port}"
        await server.start()
        self._server = server
        await set_serving(self._health, HEALTH_SERVICES, True)
        if self.metrics_listen is not None:
            register(NodeCollector(self))
            self.metrics_port = start_metrics(self.metrics_listen)
        self.meta.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._ticker(), name="ticker"),
                       loop.create_task(self._maintenance(), name="maintenance")]
        log.info("node %d serving on %s (data %s)", self.id, self.address, self.data_dir)

    async def stop(self) -> None:
        if self._health is not None:
            await set_serving(self._health, HEALTH_SERVICES, False)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.meta.close()
        if self._server is not None:
            await self._server.stop(grace=0.5)
        for p in self.peers.values():
            await p.close()
        for h in list(self.hosts.values()):
            await h.close()
        self._io.shutdown(wait=True)

    # ---------------------------------------------------------------- replicas
    def _host(self, rg: int, established: bool = False, epoch: int = 0) -> ReplicaHost:
        """The replica of `rg`, created if needed. A replica of an established
        group (one that has had a leader) with no data on this disk lost it:
        it rejoins without a vote until it caught up (ReplicaHost.recovering),
        having promised the group's current `epoch` (the MM's), so that no
        deposed leader of an older one counts it."""
        h = self.hosts.get(rg)
        if h is None:
            path = os.path.join(self.data_dir, f"rg-{rg}")
            if established and not os.path.exists(path):
                mark_recovering(path)
            storage = ReplicaStorage(path, self.id, engine_options=self._engine_options)
            if storage.recovering:
                storage.promise_at_least(epoch)
            h = ReplicaHost(rg, self.id, storage, self.options, lambda to, m, rg=rg: self.send(rg, to, m), self._io,
                            recovering=storage.recovering, on_ack=self.learn_feed.publish)
            self.hosts[rg] = h
            h.start()
        return h

    async def _drop(self, rg: int) -> None:
        h = self.hosts.pop(rg, None)
        if h is not None:
            await h.close()
            remove_replica_dir(os.path.join(self.data_dir, f"rg-{rg}"))

    def send(self, rg: int, to: int, msg: Message) -> None:
        if self.isolated:
            return
        if to == METADATA_MANAGER_ID:
            self.meta.send(rg, msg)
            return
        link = self.peers.get(to)
        if link is None:
            address = self.directory.get(to)
            if address is None:
                return   # unknown node: dropped; the directory arrives with the MM's next command
            link = self.peers[to] = PeerLink(self.id, to, address)
            link.start()
        link.send(rg, msg)

    def _background(self, coro) -> None:
        """A task nobody awaits, kept referenced until done (the loop holds only weak references)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._loose_tasks.add(task)
        task.add_done_callback(self._loose_tasks.discard)

    def deliver_all(self, envelopes, sender: str) -> None:
        """Steps a batch of messages into their replicas; a malformed envelope
        is logged and skipped. Replicas that got one of _TAKEN_AT_ONCE (an
        acknowledgement; at a follower, an Append or a Heartbeat) then carry
        out its Ready at once (ReplicaHost.acknowledged): after the whole
        batch, so the messages that came together make one Ready."""
        if self.isolated:
            return
        acknowledged = None
        for env in envelopes:
            try:
                h = self.deliver(env)
            except ValueError as exc:
                log.warning("bad envelope from %s: %s", sender, exc)
                continue
            if h is not None:
                if acknowledged is None:
                    acknowledged = {}
                acknowledged[h.rg] = h
        if acknowledged:
            for h in acknowledged.values():
                h.acknowledged()

    def deliver(self, env: replication_pb2.Envelope) -> ReplicaHost | None:
        """Steps one message into its replica. A malformed envelope raises
        ValueError (the sender's fault: callers log and skip it); a message
        that breaks a protocol invariant stops the node (fail-stop). Returns
        the replica's host if the message is one of _TAKEN_AT_ONCE, which the
        caller must then tell (ReplicaHost.acknowledged): its loop was not
        woken for it."""
        if timeline.ENABLED:
            timeline.mark("exchange.message")
        rg, msg = codec.decode(env)
        if msg.recipient != self.id:
            log.warning("message for node %d delivered to node %d: dropped", msg.recipient, self.id)
            return None
        h = self.hosts.get(rg)
        if h is not None:
            at_once = type(msg) in _TAKEN_AT_ONCE
            try:
                h.step(msg, wake=not at_once)
                if timeline.ENABLED:
                    timeline.mark("exchange.stepped")
            except (InvariantViolation, ReplicaMisuseError) as exc:
                fail_stop(log, f"rg {rg}: {type(msg).__name__} from {msg.sender}", exc)
            if at_once:
                return h
        return None

    # ---------------------------------------------------------------- MetaLinkHandler
    def on_meta_command(self, command: meta_pb2.MetaCommand) -> None:
        if self.isolated:
            return
        if command.directory_version != self._directory_version and command.directory:
            self._directory_version = command.directory_version
            new = {a.node_id: a.address for a in command.directory}
            for nid, link in list(self.peers.items()):
                if new.get(nid) != link.address:
                    self.peers.pop(nid)
                    self._background(link.close())
            self.directory = new
        for a in command.host:
            self._host(a.rg, a.established, a.epoch)
        for rg in command.drop:
            self._background(self._drop(rg))
        self.deliver_all(command.envelopes, "the metadata manager")

    def status_envelopes(self, heartbeat: meta_pb2.NodeHeartbeat, sent: dict) -> None:
        """MetaLinkHandler: the reports that differ from the stream's last ones
        (`sent`, updated here). With hundreds of idle replicas, sending and
        decoding unchanged reports ten times a second was a large part of an
        idle node's and the MM's CPU."""
        for rg in [rg for rg in sent if rg not in self.hosts]:   # dropped replicas
            del sent[rg]
        for rg, h in self.hosts.items():
            last = sent.get(rg)
            if last is not None and last[0] == h.status_version:
                continue   # nothing stepped or finished since: the same report (an idle replica)
            # The size (summed over the engine's files) is read only for a report
            # that goes: one that changed only in size waits for the next full one.
            key = (h.status_report(), h.ops_per_second, h.storage.log.fsyncs, h.storage.snapshots_installed)
            sent[rg] = (h.status_version, key)
            if last is not None and last[1] == key:
                continue
            env = codec.encode(rg, key[0], heartbeat.envelopes.add())
            b = env.status_report
            b.size_bytes = h.storage.size_bytes()
            b.ops_per_second, b.fsyncs, b.snapshots_installed = key[1:]

    # ---------------------------------------------------------------- timers
    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += TICK_SECONDS
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            # Ticks the loop missed (it was blocked) are skipped, not run back to
            # back: a burst of ticks with the acknowledgements still queued would
            # make a leader look cut off from its quorum (check-quorum, CQ1) and
            # time out retransmits for nothing.
            now = loop.time()
            if now - next_at > TICK_SECONDS:
                next_at = now
            if self.isolate_file is not None:
                isolated = os.path.exists(self.isolate_file)
                if isolated != self.isolated:
                    if isolated:
                        log.warning("node %d: isolated (test fault: %s exists)", self.id, self.isolate_file)
                    else:
                        log.warning("node %d: no longer isolated", self.id)
                    self.isolated = isolated
                    if not isolated:   # the MM's commands of the meantime were dropped: a new stream gets them
                        self.meta.reconnect()
            for h in self.hosts.values():
                h.tick()

    async def _maintenance(self) -> None:
        """Bounds each replica's log: once it holds more than compact_after_entries
        entries, the engine is flushed (so its applied index is durable) and the
        log is compacted up to it (S5), keeping what a member still lacks until
        the log holds RETAIN_FACTOR times that; a member further behind gets a
        snapshot."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(MAINTENANCE_SECONDS)
            for h in list(self.hosts.values()):
                lg = h.replica.log
                held = lg.last_index - lg.base.index
                if held <= self.compact_after_entries:
                    continue
                if h.storage.db.applied_index < lg.applied_index:
                    try:
                        await loop.run_in_executor(self._io, h.storage.db.flush)
                    except QuorumKVError as exc:   # e.g. closed by a snapshot install meanwhile: next round
                        log.warning("rg %d: flush before log compaction failed: %s", h.rg, exc)
                        continue
                h.compact_due = COMPACT_FORCE if held > RETAIN_FACTOR * self.compact_after_entries else True
                h.tick()


def _peer_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == NODE_METADATA_KEY:
            return value
    return "?"


class _ReplicationService(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, node: Node):
        self.node = node

    async def Exchange(self, request_iterator, context):  # noqa: N802 - gRPC's name
        n = 0
        sender = None
        async for batch in request_iterator:
            n += 1
            if sender is None:
                sender = f"node {_peer_id(context)}"
            self.node.deliver_all(batch.envelopes, sender)
        return replication_pb2.ExchangeSummary(batches=n)


class _DataService(data_pb2_grpc.DataServicer):
    """The leader-facing data plane (server/proto/data.proto)."""

    def __init__(self, node: Node):
        self.node = node

    async def Write(self, request_iterator, context):  # noqa: N802 - gRPC's name
        await answer_stream(request_iterator, context.write, self._submit_write, _fill_write,
                            data_pb2.WriteBatchResponse, "write")

    async def Read(self, request_iterator, context):  # noqa: N802
        await answer_stream(request_iterator, context.write, self._submit_read, _fill_read,
                            data_pb2.ReadBatchResponse, "read")

    async def Learn(self, request, context):  # noqa: N802
        """This node's accepted acknowledgements, for learner clients (learn_feed.py)."""
        hosts = self.node.hosts
        await self.node.learn_feed.serve([(rg, *h.last_ack) for rg, h in hosts.items() if h.last_ack is not None],
                                         context.write)

    def _submit_write(self, req: data_pb2.WriteRequest, on_done: Listener) -> ReplicaHost | None:
        """Submits one write; returns the host that took it (None: answered at once)."""
        h = self.node.hosts.get(req.rg)
        problem = None
        if h is None:
            problem = (data_pb2.UNKNOWN_GROUP, f"no replica of rg {req.rg} on node {self.node.id}")
        elif not write_batch.validate(req.batch) or write_batch.count(req.batch) == 0:
            problem = (data_pb2.INVALID_ARGUMENT, "batch is not a well-formed, non-empty write batch")
        elif max(write_batch.table_ids(req.batch)) >= DEDUP_TABLE_ID:
            problem = (data_pb2.INVALID_ARGUMENT, _RESERVED_TABLE)
        elif req.request_id and write_batch.count(req.batch) > MAX_DEDUP_RECORDS:
            problem = (data_pb2.INVALID_ARGUMENT, f"a write with a request id holds at most {MAX_DEDUP_RECORDS} "
                                                  "records (split it)")
        elif (req.if_seq or req.if_absent) and write_batch.count(req.batch) != 1:
            problem = (data_pb2.INVALID_ARGUMENT, "a conditional write holds exactly one record")
        elif req.if_seq and (len(req.if_seq) != 16 or req.if_absent):
            problem = (data_pb2.INVALID_ARGUMENT, "if_seq must be 16 bytes and excludes if_absent")
        elif req.first_seq and (len(req.first_seq) != 16 or not req.request_id):
            problem = (data_pb2.INVALID_ARGUMENT, "first_seq must be 16 bytes, on a write with a request id")
        if problem is None:
            h.submit_write(req.batch, req.request_id, req.if_seq, req.if_absent, on_done, wake=False,
                           first_seq=req.first_seq, learner=req.learner)
            return h
        answer_now(on_done, problem)
        return None

    def _submit_read(self, req: data_pb2.ReadRequest, on_done: Listener) -> ReplicaHost | None:
        """Submits one linearizable read; returns the host that took it (None: answered at once)."""
        h = self.node.hosts.get(req.rg)
        if h is None:
            answer_now(on_done, (data_pb2.UNKNOWN_GROUP, f"no replica of rg {req.rg} on node {self.node.id}"))
            return None
        if req.table_id >= DEDUP_TABLE_ID:
            answer_now(on_done, (data_pb2.INVALID_ARGUMENT, _RESERVED_TABLE))
            return None
        h.submit_read(lambda: h.get(req.table_id, req.key), on_done, wake=False,
                      key=req.table_id.to_bytes(4, "big") + req.key)
        return h

    async def DropTable(self, request, context):  # noqa: N802
        h = self.node.hosts.get(request.rg)
        if h is None:
            return data_pb2.GroupDropTableResponse(code=data_pb2.UNKNOWN_GROUP,
                                                   message=f"no replica of rg {request.rg} here")
        if request.table_id >= DEDUP_TABLE_ID:
            return data_pb2.GroupDropTableResponse(code=data_pb2.INVALID_ARGUMENT, message=_RESERVED_TABLE)
        if h.replica.role is not Role.LEADER:
            return data_pb2.GroupDropTableResponse(code=data_pb2.NOT_LEADER, epoch=h.replica.epoch,
                                                   leader=h.replica.leader_id or 0)
        result: Result = await h.submit_drop(request.table_id)
        return data_pb2.GroupDropTableResponse(code=_DATA_CODE[result.outcome], epoch=result.epoch,
                                               leader=result.leader or 0)

    async def Scan(self, request, context):  # noqa: N802
        h = self.node.hosts.get(request.rg)
        if h is None:
            return data_pb2.ScanResponse(code=data_pb2.UNKNOWN_GROUP, message=f"no replica of rg {request.rg} here")
        if request.table_id >= DEDUP_TABLE_ID:
            return data_pb2.ScanResponse(code=data_pb2.INVALID_ARGUMENT, message=_RESERVED_TABLE)
        limit = request.limit or None
        fetch = None if limit is None else limit + 1

        def scan():
            db = h.storage.db
            name = table_name(request.table_id)
            if name not in db.tables():
                return DROPPED_TABLE if request.table_id in db.dropped_table_ids() else []
            rows, size = [], 0
            for row in db.scan(name, request.start or None, request.end or None, fetch, keys_only=request.keys_only):
                rows.append(row)
                size += len(row[0]) + (len(row[1]) if row[1] is not None else 0) + 16
                if size >= MAX_SCAN_BYTES:   # a page stops at a byte budget too: answers fit in a message
                    rows.append(None)
                    break
            return rows

        result: Result = await h.submit_read(scan)
        out = data_pb2.ScanResponse(code=_DATA_CODE[result.outcome], epoch=result.epoch, leader=result.leader or 0)
        if result.value is DROPPED_TABLE:
            out.code = data_pb2.TABLE_DROPPED
        elif result.outcome is Outcome.OK:
            rows = result.value
            if rows and rows[-1] is None:
                rows = rows[:-1]
                out.more = True
            if limit is not None and len(rows) > limit:
                rows = rows[:limit]
                out.more = True
            out.keys.extend(k for k, _, _ in rows)
            if not request.keys_only:
                out.values.extend(v for _, v, _ in rows)
            out.seqs.extend(s for _, _, s in rows)
        return out


def _fill_write(out: data_pb2.WriteResponse, req_id: int, result) -> None:
    out.id = req_id
    if not isinstance(result, Result):   # rejected before reaching a replica: (code, message)
        out.code, out.message = result
        return
    out.code = _DATA_CODE[result.outcome]
    out.epoch = result.epoch
    out.leader = result.leader or 0
    if result.outcome is Outcome.OK:
        out.index, out.seqs = result.value
    elif result.outcome is Outcome.DURABLE_ON_LEADER:
        out.index, out.seqs, voters = result.value
        out.voters.extend(voters)
    elif result.outcome is Outcome.CONDITION_FAILED:
        out.seqs = result.value   # the record's current seq, b"" if it has none


def _fill_read(out: data_pb2.ReadResponse, req_id: int, result) -> None:
    out.id = req_id
    if not isinstance(result, Result):
        out.code, out.message = result
        return
    out.code = _DATA_CODE[result.outcome]
    out.epoch = result.epoch
    out.leader = result.leader or 0
    if result.value is DROPPED_TABLE:
        out.code = data_pb2.TABLE_DROPPED
    elif result.outcome is Outcome.OK and result.value is not None:
        out.found = True
        out.value = result.value.value
        out.seq = result.value.seq
