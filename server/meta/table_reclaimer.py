"""TableReclaimer: the active MM sees to it that every group frees the rows of a dropped table.

Purpose: a drop removes the table from the catalog at once and records the
groups that held its ranges (Catalog.dropping). The router that made the
drop asks those groups to drop the rows within its client's deadline, but
it may die, or a group may have no leader for that long; the rows would
then stay on disk for good (table ids are never reused, so no one would
read them: a leak of space, not of data). Every RECLAIM_SECONDS this task
asks each such group's leader to drop the table (the same Data.DropTable a
router sends; a group drops a table id once, and again is a no-op), and
records each group that did (Catalog.data_freed). It waits RECLAIM_AFTER
first, so the router's own attempt usually comes first; a group asked twice
costs one log entry.

Thread-safety: the MM's event loop; stopped with the MM's activity.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc

from server.meta.backend import MetaStoreError
from server.node.data_client import DataClient
from server.proto import data_pb2
from server.replication.messages import METADATA_MANAGER_ID

if TYPE_CHECKING:
    from server.meta.service import MetaServer

log = logging.getLogger(__name__)

RECLAIM_SECONDS = 2.0    # how often the pending drops are looked at
RECLAIM_AFTER = 5.0      # a drop is left to its router this long
CALL_TIMEOUT = 5.0


class TableReclaimer:
    def __init__(self, mm: MetaServer, every: float | None = None, after: float | None = None):
        self.mm = mm
        self.every = RECLAIM_SECONDS if every is None else every
        self.after = RECLAIM_AFTER if after is None else after
        self._seen: dict[int, float] = {}   # table id -> when this MM first saw its drop pending
        self._clients: dict[str, DataClient] = {}

    async def run(self) -> None:
        try:
            while self.mm.active:
                await asyncio.sleep(self.every)
                try:
                    await self.reclaim_once()
                except MetaStoreError:
                    raise
                except Exception:  # noqa: BLE001 - one failed pass must not end the task unseen
                    log.exception("freeing dropped tables' rows failed; trying again in %.1f s", self.every)
        except MetaStoreError as exc:
            self.mm.store_failed(exc)
        finally:
            for client in self._clients.values():
                await client.close()
            self._clients.clear()

    async def reclaim_once(self) -> None:
        """One pass over the pending drops that are old enough."""
        now = time.monotonic()
        catalog = self.mm.catalog
        if catalog is None:
            return
        for table_id in sorted(catalog.dropping):
            if now - self._seen.setdefault(table_id, now) < self.after:
                continue
            for rg in sorted(catalog.dropping.get(table_id, ())):
                if not self.mm.active:
                    return
                if await self._drop_in(rg, table_id):
                    catalog.data_freed(table_id, rg)
        for table_id in [t for t in self._seen if t not in catalog.dropping]:
            del self._seen[table_id]

    async def _drop_in(self, rg: int, table_id: int) -> bool:
        """Whether group `rg` no longer holds rows of `table_id` (dropped now,
        or the group is gone from the MM). A node answering that it has no
        replica of the group proves nothing of the other members (it may have
        lost its disk, or its address may be another node's by now): asked
        again later."""
        gl = self.mm.groups.get(rg)
        if gl is None:
            return True
        address = self.mm.nodes.get(gl.leader) if gl.leader else None
        if address is None:
            return False
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = DataClient(address, METADATA_MANAGER_ID)
        try:
            resp = await client.drop_table(rg, table_id, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.info("freeing dropped table %d in rg %d: %s", table_id, rg, exc.code().name)
            return False
        return resp.code == data_pb2.OK
