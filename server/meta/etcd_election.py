"""EtcdElection: which of several `quorumkv meta --backend etcd` processes is active.

Purpose: exactly one metadata manager (MM) acts at a time; the others stand
by and take over when it dies. The choice is etcd's, through a lease:

  campaign   (STANDBY) read the leader key (P + "leader", etcd_store.py); when
             absent: grant a lease of `ttl` seconds and, in one Txn, create the
             key with our address attached to that lease, if it still does not
             exist (compare create_revision == 0). Success: LEADING; the key's
             create revision fences every write of this term (etcd_store.py).
             Failure: someone else won; revoke our lease, remember the
             holder's address (standbys name it when they refuse a call), and
             poll again after `poll_seconds`.
  keep alive (LEADING) renew the lease every ttl/3. The lease is certainly alive
             until (time a renewal was sent + the TTL it returned); past that
             local deadline without a renewal, or when etcd answers that the
             lease is gone, the term ends: on_lost, back to STANDBY. etcd
             deletes the key when the lease expires, and the next campaign,
             ours or another process's, wins.
  resign     (the MM's write was fenced or unconfirmed) revoke the lease, which
             deletes the key at once, then campaign again.

A process that pauses (SIGSTOP, a long GC, a partition) past its lease may
still believe it leads for a moment after it resumes; it cannot act on that
belief: its writes fail the fence, and the MM deactivates on the first one
(server/meta/service.py), and every epoch is persisted before any message of
it leaves (GroupLeadership), so the stale MM sends nothing new.

Threads: the election runs in its own daemon thread, so renewals do not wait
behind the MM's event loop; `on_elected(term)` and `on_lost(term, reason)`
are called from that thread (the caller hops to its loop). `resign(term)` and
`stop()` may be called from any thread. Terms are numbered locally, so a
resign or a callback meant for an older term is recognised and ignored.

Not sans-I/O (STYLE rule 1) on purpose: every decision here is etcd's (who
holds the key, whether the lease lives); the only local state is the current
lease, the key's revision and the local deadline, read straight off etcd's
answers.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from server.meta.etcd_client import EtcdClient, EtcdError, compare_create, op_put, op_range

log = logging.getLogger(__name__)

DEFAULT_TTL = 5
MIN_POLL = 0.05


class ElectionState(IntEnum):
    STANDBY = 1
    LEADING = 2
    STOPPED = 3


@dataclass(frozen=True)
class Term:
    number: int            # local counter: which win of this process
    lease: int
    key: bytes
    create_revision: int   # the leader key's: the fence of every write in this term
    ttl: int


class EtcdElection:
    def __init__(self, client: EtcdClient, key: bytes, address: str, ttl: int = DEFAULT_TTL,
                 on_elected: Callable[[Term], None] = lambda term: None,
                 on_lost: Callable[[Term, str], None] = lambda term, reason: None,
                 poll_seconds: float | None = None):
        """`address`: what standbys tell callers to use while this process leads."""
        self.client = client
        self.key = key
        self.address = address
        self.ttl = ttl
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.poll_seconds = poll_seconds if poll_seconds is not None else max(MIN_POLL, ttl / 8)
        self.state = ElectionState.STANDBY
        self.term: Term | None = None
        self.holder: str | None = None     # the leading process's address, as last read
        self._terms = 0
        self._deadline = 0.0               # monotonic: our lease is certainly alive until then
        self._resign: tuple[int, str, float] | None = None
        self._failing = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ API
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="meta-election", daemon=True)
        self._thread.start()

    def resign(self, term: Term, reason: str, pause: float = 0.0) -> None:
        """Ends `term` (if still current): revoke the lease, then campaign again,
        after `pause` seconds (a failure that will not clear at once, e.g. a
        state this MM cannot load, must not become a loop of campaigns)."""
        with self._lock:
            self._resign = (term.number, reason, pause)
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops campaigning; when leading, revokes the lease so a standby takes over at once."""
        with self._lock:
            self.state, was = ElectionState.STOPPED, self.state
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if was is ElectionState.LEADING and self.term is not None:
            self._revoke(self.term.lease)

    # --------------------------------------------------------------- thread
    def _run(self) -> None:
        while True:
            self._wake.clear()   # before reading: a resign() or stop() from now on cuts the wait short
            with self._lock:
                state, resign, self._resign = self.state, self._resign, None
            if state is ElectionState.STOPPED:
                return
            try:
                if state is ElectionState.STANDBY:
                    wait = self._on_standby()
                else:
                    wait = self._on_leading(resign)
            except Exception:   # never let the thread die: log, pause, go on
                log.exception("meta election")
                wait = self.poll_seconds
            self._wake.wait(wait)

    def _on_standby(self) -> float:
        try:
            kv = self.client.get(self.key)
            if kv is not None:
                self.holder = kv.value.decode(errors="replace")
                return self.poll_seconds
            sent = time.monotonic()
            lease, granted = self.client.lease_grant(self.ttl)
        except EtcdError as exc:
            self._etcd_failed("campaign", exc)
            return self.poll_seconds
        self._etcd_ok()
        try:
            resp = self.client.txn([compare_create(self.key, 0)], [op_put(self.key, self.address.encode(), lease)],
                                   [op_range(self.key)])
        except EtcdError as exc:
            self._etcd_failed("campaign", exc)
            self._revoke(lease)
            return self.poll_seconds
        if not resp.succeeded:
            kvs = resp.responses[0].response_range.kvs if resp.responses else []
            self.holder = kvs[0].value.decode(errors="replace") if kvs else None
            self._revoke(lease)
            return self.poll_seconds
        with self._lock:
            stopped = self.state is ElectionState.STOPPED
            if not stopped:
                self._terms += 1
                term = Term(self._terms, lease, self.key, resp.header.revision, granted)
                self.term, self.state, self.holder = term, ElectionState.LEADING, self.address
                self._deadline = sent + granted
        if stopped:   # stop() came during the campaign and saw no term: give the key back here
            self._revoke(lease)
            return 0.0
        log.info("elected: lease %x, leader key created at revision %d, ttl %d s",
                 lease, term.create_revision, granted)
        self.on_elected(term)
        return granted / 3

    def _on_leading(self, resign: tuple[int, str, float] | None) -> float:
        term = self.term
        assert term is not None
        if resign is not None and resign[0] == term.number:
            self._lose(term, f"resigned: {resign[1]}", revoke=True)
            return resign[2]
        now = time.monotonic()
        if now >= self._deadline:
            self._lose(term, "lease not renewed in time", revoke=True)
            return 0.0
        try:
            # A short timeout per endpoint: a hung member must not eat the whole lease.
            ttl = self.client.lease_keepalive(term.lease, timeout=min(self.client.timeout, term.ttl / 4))
        except EtcdError as exc:
            self._etcd_failed("lease keepalive", exc)
            return max(MIN_POLL, min(term.ttl / 12, self._deadline - time.monotonic()))
        self._etcd_ok()
        if ttl <= 0:
            self._lose(term, "lease expired in etcd", revoke=False)
            return 0.0
        self._deadline = now + ttl
        return term.ttl / 3

    def _lose(self, term: Term, reason: str, revoke: bool) -> None:
        with self._lock:
            if self.state is ElectionState.LEADING:
                self.state = ElectionState.STANDBY
            self.term, self.holder = None, None
        log.warning("leadership lost: %s", reason)
        if revoke:
            self._revoke(term.lease)
        self.on_lost(term, reason)

    def _etcd_failed(self, what: str, exc: EtcdError) -> None:
        """Logs the first failure of a run of them as a warning, the rest at debug level."""
        log.log(logging.DEBUG if self._failing else logging.WARNING, "%s: %s", what, exc)
        self._failing = True

    def _etcd_ok(self) -> None:
        if self._failing:
            log.info("etcd answers again")
        self._failing = False

    def _revoke(self, lease: int) -> None:
        try:
            self.client.lease_revoke(lease)
        except EtcdError as exc:
            log.info("lease revoke (it expires by itself): %s", exc)
