"""Driving a simulated cluster in real time: every step is one 50 ms tick of
every node (each reporting to the MM) and of the MM, then every message on a
working link is delivered. For tests of what takes real time: check-quorum
(test_check_quorum_sim.py), a wiped member's catch-up (test_catch_up.py)."""
from __future__ import annotations

from .cluster import TICK_NS, Cluster


def pump(c: Cluster) -> None:
    """Delivers every message on a working link and runs every Ready, until nothing moves."""
    for _ in range(50):
        moved = False
        while c.net.in_flight:
            m = c.net.in_flight.pop(0)
            if c.net.connected(m.sender, m.recipient):
                c.deliver(m)
            moved = True
        for n in c.nodes.values():
            while n.up and n.process_ready():
                moved = True
                if n.app is not None and n.pending is None:
                    n.store.flush(n.app)
        if not moved:
            return


def step(c: Cluster) -> None:
    """One tick of real time."""
    c.advance_time(TICK_NS)
    for node in c.nodes.values():
        c.tick(node, report=True)
    pump(c)
    c.mm.tick()
    pump(c)
