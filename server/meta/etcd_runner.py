"""EtcdRunner: a MetaServer run on the etcd backend, active while it holds the etcd lease.

Purpose: the glue between the election (etcd_election.py, in its thread) and
the MM (service.py, on the event loop):

    elected(term)     load the whole state from etcd (EtcdStore.open, fenced by
                      the term's leader key revision), then MetaServer.activate
    lost(term)        MetaServer.deactivate: streams end, nodes and routers go on
                      to the next MM address they know
    a write fails     MetaServer deactivates itself and calls back here: resign
                      the term (revoke the lease: the key goes at once), then
                      campaign again, reloading everything if this process wins

Both election callbacks hop to the loop with call_soon_threadsafe, so they run
in the order the election made them; a callback for a term that is no longer
the election's current one is ignored.

Stopping (SIGTERM): deactivate first, then revoke the lease, so a standby
takes over at once and never overlaps with this process acting.

Thread-safety: everything but the two `_on_*_thread` callbacks runs on the loop.
"""
from __future__ import annotations

import asyncio
import logging

from server.meta.backend import MetaStoreError, StoreUnavailable
from server.meta.etcd_client import EtcdClient
from server.meta.etcd_election import EtcdElection, Term
from server.meta.etcd_store import EtcdStore, Fence, cluster_prefix, leader_key
from server.meta.service import MetaServer

log = logging.getLogger(__name__)


class EtcdRunner:
    def __init__(self, mm: MetaServer, client: EtcdClient, cluster_name: str, address: str, ttl: int):
        """`address`: this MM's address as nodes and routers reach it (written to etcd for the standbys)."""
        self.mm = mm
        self.client = client
        self.prefix = cluster_prefix(cluster_name)
        self.election = EtcdElection(client, leader_key(self.prefix), address, ttl,
                                     on_elected=self._on_elected_thread, on_lost=self._on_lost_thread)
        self.term: Term | None = None            # the term the MM is active in
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        mm.active_hint = lambda: self.election.holder
        mm.on_store_failure = self._on_store_failure
        mm.standby_reason = "campaigning for the etcd lease"

    def start(self) -> None:
        """Requires: called on the MM's loop, after MetaServer.start()."""
        self._loop = asyncio.get_running_loop()
        self.election.start()

    async def stop(self) -> None:
        self._stopping = True
        self.term = None
        self.mm.deactivate("stopping")
        assert self._loop is not None
        await self._loop.run_in_executor(None, self.election.stop)
        self.client.close()

    # ----------------------------------------------------- election -> loop
    def _on_elected_thread(self, term: Term) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._elected, term)

    def _on_lost_thread(self, term: Term, reason: str) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._lost, term, reason)

    def _elected(self, term: Term) -> None:
        if self.election.term != term or self._stopping:
            return   # already lost again, or shutting down
        try:
            store = EtcdStore.open(self.client, self.prefix, Fence(term.key, term.create_revision))
        except StoreUnavailable as exc:
            log.error("elected but could not load the state: %s", exc)
            # Campaign again after a poll, not at once: etcd down, or the
            # records of an unfinished restore, stays so for a while.
            self.election.resign(term, str(exc), pause=self.election.poll_seconds)
            return
        self.term = term
        self.mm.activate(store)

    def _lost(self, term: Term, reason: str) -> None:
        if self.term == term:
            self.term = None
            self.mm.deactivate(f"lost the etcd lease: {reason}")

    def _on_store_failure(self, exc: MetaStoreError) -> None:
        term, self.term = self.term, None
        if term is not None:
            self.election.resign(term, str(exc))
