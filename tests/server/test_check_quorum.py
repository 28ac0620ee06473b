"""Check-quorum through real nodes and the MM (server/replication/README.md CQ1-CQ2).

The MM elects from status reports alone. A leader whose links to its
followers fail while its link to the MM holds kept reporting, so it was never
deposed: the group took no write until the links came back. Now it reports
that it hears no quorum, the MM deposes it and appoints one of the others
(not it again, although it may have the longest log), and writes go on.
"""
import asyncio
import time

from inproc_cluster import run_with_routers

from server.replication.messages import METADATA_MANAGER_ID, Role


def test_a_leader_cut_off_from_its_followers_but_not_the_mm_is_replaced(tmp_path):
    async def body(c, routers, clients):
        client = clients[0]
        await client.create_table("t")
        await client.put("t", b"before", b"1")
        old = c.mm.groups[1].leader
        for node in c.nodes:                       # old <-> the others, both ways; the MM link stays
            def send(rg, to, msg, real=node.send, me=node.id):
                if to != METADATA_MANAGER_ID and old in (me, to):
                    return
                real(rg, to, msg)
            node.send = send
        cut_at = time.monotonic()
        deadline = cut_at + 20
        while True:                                 # a condition over the MM's state, polled
            gl = c.mm.groups[1]
            rep = c.mm.last_status.get((1, gl.leader)) if gl.leader is not None else None
            if gl.leader not in (None, old) and rep is not None and rep.role is Role.LEADER:
                break
            assert time.monotonic() < deadline, f"no new leader 20 s after the cut (leader {gl.leader})"
            await asyncio.sleep(0.05)
        replaced_after = time.monotonic() - cut_at
        await client.put("t", b"after", b"2")
        got = [(await client.get("t", k)).value for k in (b"before", b"after")]
        return old, gl.leader, got, replaced_after

    old, new, got, replaced_after = run_with_routers(tmp_path, 1, body, timeout=10.0,
                                                     groups=((1, (1, 2, 3)),), nodes=(1, 2, 3))
    assert new != old and got == [b"1", b"2"]
    print(f"new leader {replaced_after:.2f} s after the cut")


def test_a_node_skips_the_ticks_its_loop_missed(tmp_path):
    """After the loop was blocked (here 0.3 s), the node's ticker ran the
    missed ticks back to back, while the acknowledgements that arrived
    meanwhile were still queued: a leader could count 30 ticks without
    hearing from anyone (CQ1). Missed ticks are skipped now, as the MM's are."""
    from server.node.node import Node

    class Counting:
        ticks = 0

        def tick(self):
            Counting.ticks += 1

    async def go():
        node = Node(1, "127.0.0.1:0", str(tmp_path / "n"), ["127.0.0.1:1"], block_cache_bytes=0)
        node.hosts = {1: Counting()}
        task = asyncio.get_running_loop().create_task(node._ticker())
        try:
            while Counting.ticks < 2:    # the ticker runs
                await asyncio.sleep(0.01)
            time.sleep(0.3)              # the loop is blocked for six ticks' time
            before = Counting.ticks
            for _ in range(10):          # ten loop rounds, no time to speak of
                await asyncio.sleep(0)
            return Counting.ticks - before
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert asyncio.run(go()) <= 1
