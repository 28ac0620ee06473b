"""Catch-up by snapshot at the node: what a transfer in progress must survive.

A forced log compaction must not cut below a snapshot being sent (the member
would install it and need another, forever under load); a table dropped
while its snapshot is sent must end that transfer, not the leader's process;
a member that lost its data votes again only once what it caught up to is
durable, not when a snapshot's last chunk is stepped. Found by a review
(session 10); each test failed before its fix (server/node/replica_host.py).
"""
import asyncio
import os
import shutil

import pytest
from host_group import RG, HostGroup

from engine._native import sequencer, write_batch
from server.node import replica_host as rh
from server.node import replica_storage as rs
from server.node.replica_host import ReplicaHost
from server.node.replica_storage import RECOVERING, ReplicaStorage, mark_recovering
from server.node.write_path import Outcome
from server.replication.messages import SnapshotChunk
from server.replication.options import ReplicaOptions
from server.replication.progress import Progress, ProgressState

VICTIM = 9      # "t9" sorts after "t10": scanned after the first chunk was cut
FIRST = 10


def rep_t(tid, key, value=b"v" * 50):
    return write_batch.encode_one(write_batch.VALUE, tid, key, value, sequencer.encode(1000, 0, 77))


def test_a_forced_compaction_keeps_the_log_after_a_snapshot_being_sent(tmp_path, monkeypatch):
    monkeypatch.setattr(rs, "CHUNK_BYTES", 300)

    async def go():
        g = HostGroup(str(tmp_path))
        try:
            await g.elect(1, 1, (1, 2, 3))
            h1, h3 = g.hosts[1], g.hosts[3]
            g.down = {3}
            for i in range(40):
                g.write(1, b"k%03d" % i, b"v" * 40)
                await g.pump()
            await g.compact(1)                       # 3 can only catch up by snapshot
            g.down = set()
            for _ in range(3000):                     # the transfer runs for a while...
                await g.deliver_one()
                src = h1._snapshots.get(3)
                if src is not None and src._next >= 3:
                    break
            snap_index = h1._snapshots[3].index
            g.down = {3}                              # ... slowly (a large range), while writes go on
            g.queue.clear()
            for i in range(20):
                g.write(1, b"w%03d" % i, b"x")
                await g.pump()
            await g.compact(1)                        # the log grew past RETAIN_FACTOR x threshold: forced
            leader_base = h1.replica.log.base.index
            g.down = set()
            for _ in range(3000):
                await g.deliver_one()
                if h3.storage.snapshots_installed >= 1 and not h3._busy:
                    break
            await g.pump(ticks=5)
            assert leader_base <= snap_index   # held at the snapshot's index, forced or not
            assert h3.storage.snapshots_installed == 1, "a second full snapshot was needed"
        finally:
            await g.close()

    asyncio.run(go())


def test_a_table_dropped_during_its_snapshot_ends_the_transfer_not_the_leader(tmp_path, monkeypatch):
    monkeypatch.setattr(rs, "CHUNK_BYTES", 400)
    failures = []
    monkeypatch.setattr(rh, "fail_stop", lambda log, what, exc=None: failures.append((what, exc)))

    async def go():
        g = HostGroup(str(tmp_path))
        try:
            await g.elect(1, 1, (1, 2, 3))
            h1 = g.hosts[1]
            g.down = {3}
            for i in range(40):
                h1.submit_write(rep_t(FIRST, b"k%03d" % i), wake=False)
                h1.start_client_work()
                await g.pump()
            h1.submit_write(rep_t(VICTIM, b"x"), wake=False)
            h1.start_client_work()
            await g.pump()
            await g.compact(1)
            g.down = set()
            # deliver until the leader has started a snapshot for member 3
            for _ in range(2000):
                await g.deliver_one()
                if 3 in h1._snapshots and h1._snapshots[3]._next >= 3:
                    break
            assert 3 in h1._snapshots, "no snapshot transfer started"
            g.down = {3}                 # the transfer pauses (slow member)
            g.queue.clear()
            d = h1.submit_drop(VICTIM)
            await g.pump()
            assert d.result().outcome is Outcome.OK
            g.down = set()
            await g.pump(ticks=30)       # the transfer resumes
            await g.idle()
        finally:
            await g.close()

    try:
        asyncio.run(go())
    except Exception as exc:  # noqa: BLE001
        failures.append(("run", exc))
    assert not failures, failures


def test_a_wiped_member_keeps_its_recovering_mark_until_the_snapshot_is_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(rh, "fail_stop", lambda *a, **k: None)
    async def go():
        g = HostGroup(str(tmp_path))
        try:
            await g.elect(1, 1, (1, 2, 3))
            for i in range(10):
                g.write(1, b"k%d" % i, b"v" * 30)
                await g.pump()
            await g.hosts[3].close()                   # 3's disk is wiped
            path = os.path.join(g.base, "3")
            shutil.rmtree(path)
            mark_recovering(path)
            h3 = ReplicaHost(RG, 3, ReplicaStorage(path, node_id=3), g.options,
                             lambda to, msg: g.queue.append(msg), g.io, recovering=True)
            g.hosts[3] = h3
            h3.start()
            await g.compact(1)
            g.down = {3}
            await g.elect(2, 1, (1, 2))                # a new leader (fresh progress) probes 3
            g.down = set()
            held = None
            for _ in range(3000):                      # deliver until the last chunk to 3 is next
                await g.idle()
                if not g.queue:
                    for h in g.hosts.values():
                        h.tick()
                    continue
                m = g.queue.pop(0)
                if isinstance(m, SnapshotChunk) and m.recipient == 3 and m.done:
                    held = m
                    break
                if m.recipient != 0:
                    g.hosts[m.recipient].step(m, wake=False)
                    g.hosts[m.recipient].acknowledged()
            assert held is not None

            # The last chunk is stepped while another Ready of this member is
            # in flight: it moves the replica's applied index to the
            # snapshot's before the install is on disk. (The Ready in flight
            # is a snapshot chunk's, persisted on the I/O thread: the only
            # Readys that wait; Appends are carried out without a pause since
            # a replica's round flushes its own sends.) That Ready's end checks
            # whether the member caught up: it has not, nothing is installed.
            h3.step(held, wake=False)
            assert h3.replica.log.applied_index >= held.snapshot.index
            h3._check_recovered()                      # as that Ready's _finish does
            marker = os.path.exists(os.path.join(path, RECOVERING))
            assert h3.recovering
            assert marker, "RECOVERING removed while nothing is installed on disk"
        finally:
            g.hosts.pop(3, None)
            await g.close()

    asyncio.run(go())


def test_a_wiped_member_rejoins_fencing_leaders_of_older_epochs(tmp_path):
    """3 is away during epoch 1 (leader 1); 1 is cut off, 2 leads epoch 2 with
    3 and commits b=2; 3's disk is wiped and the node hosts it again. Were it
    to start with promised epoch 0, the deposed 1 (still cut off from the MM
    and from 2, but reaching 3) would count 3's acks and commit a stale write
    at an index where epoch 2 committed b=2. The MM hands the re-hosted
    replica the group's epoch (ReplicaAssignment.epoch), which it promises
    first (Node._host): E2 fences 1, and 3's NotMyLeader deposes it (E5)."""
    async def go():
        g = HostGroup(str(tmp_path))
        try:
            g.down = {3}
            await g.elect(1, 1, (1, 2))
            g.write(1, b"a", b"1")
            await g.pump()
            g.down = {1}
            await g.elect(2, 2, (2, 3))
            b = g.write(2, b"b", b"2")
            await g.pump()
            assert b.result().outcome is Outcome.OK
            await g.hosts[3].close()
            path = os.path.join(g.base, "3")
            shutil.rmtree(path)
            mark_recovering(path)
            storage = ReplicaStorage(path, node_id=3)
            storage.promise_at_least(g.hosts[2].replica.epoch)   # what Node._host does with the MM's epoch
            h3 = ReplicaHost(RG, 3, storage, g.options, lambda to, msg: g.queue.append(msg), g.io, recovering=True)
            g.hosts[3] = h3
            h3.start()
            g.down = {2}                                # 1 reaches 3, not 2 nor the MM
            stale = g.write(1, b"b", b"STALE")         # through a router with stale routing
            await g.pump(ticks=10)
            h1 = g.hosts[1]
            assert not (stale.done() and stale.result().outcome is Outcome.OK)
            assert h1.replica.epoch >= 2 and h1.replica.role.name == "FOLLOWER"
            assert h3.replica.log.last_index == 0      # nothing of 1's taken
        finally:
            await g.close()

    asyncio.run(go())


def test_the_node_hosts_a_replica_it_lost_having_promised_the_groups_epoch(tmp_path):
    from server.meta.service import MetaServer
    from server.meta.store import MetaStore
    from server.node.node import Node

    async def go():
        mm = MetaServer("127.0.0.1:0")
        mm.activate(MetaStore(str(tmp_path / "meta")))
        gl = mm.create_group(5, [1, 2, 3])
        gl.epoch = 7
        assignment = mm._assignment(5)   # what a MetaCommand's host list carries
        mm.deactivate("test over")
        node = Node(1, "127.0.0.1:0", str(tmp_path / "node"), ["127.0.0.1:1"], block_cache_bytes=0)
        h = node._host(assignment.rg, True, assignment.epoch)   # no rg-5 on this disk: it lost it
        try:
            return assignment.epoch, h.recovering, h.replica.epoch
        finally:
            await h.close()

    assert asyncio.run(go()) == (7, True, 7)


async def _rehost_wiped(g: HostGroup, n: int) -> ReplicaHost:
    """What Node._host does for a replica the MM assigns it that has no data on this disk."""
    await g.hosts[n].close()
    path = os.path.join(g.base, str(n))
    shutil.rmtree(path)
    mark_recovering(path)
    storage = ReplicaStorage(path, node_id=n)
    storage.promise_at_least(max(h.replica.epoch for h in g.hosts.values()))
    h = ReplicaHost(RG, n, storage, g.options, lambda to, msg: g.queue.append(msg), g.io, recovering=True)
    g.hosts[n] = h
    h.start()
    return h


NODE_LIKE = ReplicaOptions(eager_commit=False, follower_apply_batch=64, idle_heartbeat_ticks=10,
                           check_quorum_ticks=30)


@pytest.mark.parametrize("writes_after", [True, False], ids=["writes-go-on", "idle-group"])
@pytest.mark.parametrize("compacted", [False, True], ids=["log-tail", "snapshot"])
def test_a_wiped_follower_catches_up_while_the_same_leader_stays(tmp_path, compacted, writes_after):
    """The leader keeps its match for 3 from before the wipe; 3's rejections at
    or below it looked stale (S1) and 3 stayed empty, without a vote, until a
    leader change. S6: a member rejoining without data says LOG_LOST, and the
    leader probes it from scratch (down to a snapshot when its log was cut).
    In an idle group no Append comes to be rejected: the member answers a
    heartbeat whose commit index it lacks (found by a review, session 11)."""
    async def go():
        g = HostGroup(str(tmp_path), NODE_LIKE)
        try:
            await g.elect(1, 1, (1, 2, 3))
            for i in range(12):
                g.write(1, b"k%02d" % i, b"v%d" % i)
                await g.pump()
            h1 = g.hosts[1]
            assert h1.replica.progress()[3].match == h1.replica.log.last_index
            h3 = await _rehost_wiped(g, 3)
            if compacted:
                await g.compact(1)
                assert h1.replica.log.base.index > 0
            late = g.write(1, b"late", b"x") if writes_after else None
            await g.pump(ticks=60)
            assert late is None or late.result().outcome is Outcome.OK
            assert not h3.recovering and not os.path.exists(os.path.join(h3.storage.directory, RECOVERING))
            assert h3.storage.snapshots_installed == (1 if compacted else 0)
            for i in range(12):
                assert h3.get(9, b"k%02d" % i)[0] == b"v%d" % i
            if late is not None:
                assert h3.get(9, b"late")[0] == b"x"
            assert h1.replica.progress()[3].match == h1.replica.log.last_index
        finally:
            await g.close()

    asyncio.run(go())


class _Crash(Exception):
    pass


async def _start_and_list(data) -> tuple[list[int], list[str]]:
    """Starts a node on `data` and stops it: the replicas it hosted, and what is left in the directory."""
    from server.node.node import Node

    node = Node(1, "127.0.0.1:0", str(data), ["127.0.0.1:1"], block_cache_bytes=0)
    await node.start()
    try:
        return sorted(node.hosts), sorted(os.listdir(data))
    finally:
        await node.stop()


def test_a_crash_while_marking_a_lost_replica_leaves_no_replica_to_open(tmp_path, monkeypatch):
    """mark_recovering used to create the directory, then the marker: a crash
    in between left an empty rg directory that the next start opened as a
    fresh member with a vote. Now the directory appears with its marker in it,
    and the next start removes what a crash left half built."""
    data = tmp_path / "node"
    path = data / "rg-5"
    os.makedirs(data)

    def crash(*args, **kwargs):
        raise _Crash()
    monkeypatch.setattr(rs.DEFAULT_ENV, "write_file_atomic", crash)
    with pytest.raises(_Crash):
        mark_recovering(str(path))
    monkeypatch.undo()
    assert not path.exists()   # nothing under the replica's name: the MM's assignment marks it again
    os.makedirs(data / "rg-old-copy")   # not the node's: left alone (a start used to fail on it)

    assert asyncio.run(_start_and_list(data)) == ([], ["rg-old-copy"])


def test_a_crash_while_removing_a_dropped_replica_leaves_no_part_of_it(tmp_path, monkeypatch):
    data = tmp_path / "node"
    path = data / "rg-6"
    storage = ReplicaStorage(str(path), node_id=1)
    storage.close()

    real_rmtree = shutil.rmtree

    def crash(target, *args, **kwargs):
        if os.path.exists(target):
            raise _Crash()   # killed during the recursive delete
        real_rmtree(target, *args, **kwargs)
    monkeypatch.setattr(rs.shutil, "rmtree", crash)
    with pytest.raises(_Crash):
        rs.remove_replica_dir(str(path))
    monkeypatch.undo()
    assert not path.exists()

    assert asyncio.run(_start_and_list(data)) == ([], [])


def test_a_late_log_lost_after_the_catch_up_is_a_plain_rejection():
    """A second answer of a retransmitted probe, arriving after the member
    caught up by snapshot, threw its match back to 0 (and, the log being
    compacted, started another snapshot). A loss is acted on once: S6."""
    pr = Progress(3, next_index=21, learner=False)
    pr.match = 20                       # counted from before the wipe
    pr.sent_append(20, 0)               # a probe at prev 20, retransmitted: two answers LOG_LOST(20, hint 0)
    assert pr.on_lost(20, 0, lost_id=7)
    assert pr.match == 0 and pr.state is ProgressState.PROBE and pr.next == 1
    pr.become_snapshot()
    pr.match = 20                       # snapshot 20 installed (Replicator.on_append_ack, SNAPSHOT state)
    pr.become_probe()
    pr.on_accepted(20)
    assert pr.state is ProgressState.REPLICATE and pr.match == 20
    assert not pr.on_lost(20, 0, lost_id=7)   # the late answer
    assert pr.match == 20 and pr.state is ProgressState.REPLICATE
    assert pr.on_lost(20, 0, lost_id=8)       # the member lost its data again: a new loss
    assert pr.match == 0
