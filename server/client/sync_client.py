"""Client: the synchronous client of quorumkv, for threads; an AsyncClient on a private event loop.

Purpose: most Python callers are synchronous. `Client` has the same calls as
`AsyncClient` (server/client/async_client.py, whose contract applies) and
runs them on one event-loop thread of its own, submitting each call with
`asyncio.run_coroutine_threadsafe`. So the ops of 64 threads calling `put()`
at once meet on the same Batch streams and travel in shared batches.

    with quorumkv.Client("127.0.0.1:7000,127.0.0.1:7001") as c:
        c.create_table("stocks")
        seq = c.put("stocks", b"a", b"120")
        for rec in c.list("stocks", start=b"a", end=b"z"):
            ...

Contract:
  1. One event-loop thread per Client (named "quorumkv-client", a daemon),
     started by the constructor and ended by `close()` (or when the Client is
     garbage-collected unclosed).
  2. Every call blocks the calling thread until the AsyncClient call returns
     or raises; its exception is raised in the caller's thread.
  3. Calls made after `close()`, and calls from the Client's own loop thread
     (they would deadlock), raise without being sent; calls in flight when
     `close()` runs raise QuorumKVError (or the error their op got) at once.
  4. `list` returns an iterator that fetches a page when the previous one is
     used up; its arguments are checked when `list` is called.
  5. put_many / get_many take their whole input in the calling thread, then
     send every op at once.

Thread-safety: safe for any number of threads.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from server.client.async_client import AsyncClient
from server.client.errors import QuorumKVError
from server.client.paging import Pager
from server.client.record import BytesLike, Record, as_bound, as_table
from server.client.retry import DEFAULT_TIMEOUT, RetryPolicy

T = TypeVar("T")


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


class Client:
    def __init__(self, routers: str | Sequence[str] | None = None, *, timeout: float | None = DEFAULT_TIMEOUT,
                 retry: RetryPolicy | None = None, channel_options: Sequence[tuple[str, Any]] = ()):
        """The arguments of AsyncClient: `routers` ("host:port,host:port"; None: default_routers()),
        the default per-call `timeout` in seconds, the `retry` policy, extra gRPC `channel_options`."""
        self._async = AsyncClient(routers, timeout=timeout, retry=retry, channel_options=channel_options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="quorumkv-client", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()        # orders call submissions against close()
        self._closed = False
        self._in_flight: set[concurrent.futures.Future] = set()
        self._finalizer = weakref.finalize(self, _stop_loop, self._loop, self._thread)

    @property
    def target(self) -> str:
        return self._async.target

    @property
    def async_client(self) -> AsyncClient:
        """The AsyncClient this Client runs (its loop is the Client's thread: use it only from there)."""
        return self._async

    def create_table(self, name: str, split_keys: Iterable[BytesLike] | None = None, *,
                     timeout: float | None = None) -> None:
        """See AsyncClient.create_table."""
        self._call(self._async.create_table(name, None if split_keys is None else list(split_keys),
                                            timeout=timeout))

    def drop_table(self, name: str, *, timeout: float | None = None) -> None:
        """See AsyncClient.drop_table."""
        self._call(self._async.drop_table(name, timeout=timeout))

    def tables(self, *, timeout: float | None = None) -> list[str]:
        """See AsyncClient.tables."""
        return self._call(self._async.tables(timeout=timeout))

    def put(self, table: str, key: BytesLike, value: BytesLike, *, if_seq: bytes | None = None,
            if_absent: bool = False, timeout: float | None = None) -> bytes:
        """See AsyncClient.put."""
        return self._call(self._async.put(table, key, value, if_seq=if_seq, if_absent=if_absent, timeout=timeout))

    def get(self, table: str, key: BytesLike, timeout: float | None = None) -> Record | None:
        """See AsyncClient.get."""
        return self._call(self._async.get(table, key, timeout=timeout))

    def delete(self, table: str, key: BytesLike, *, if_seq: bytes | None = None,
               timeout: float | None = None) -> bytes:
        """See AsyncClient.delete."""
        return self._call(self._async.delete(table, key, if_seq=if_seq, timeout=timeout))

    def list(self, table: str, start: BytesLike | None = None, end: BytesLike | None = None, *,
             limit: int | None = None, page_size: int = 1000, keys_only: bool = False,
             timeout: float | None = None) -> Iterator[Record]:
        """See AsyncClient.list; here an iterator."""
        pager = Pager(as_table(table), as_bound(start), as_bound(end), limit, page_size, keys_only)
        return self._pages(pager, timeout)

    def put_many(self, table: str, items: Iterable[tuple[BytesLike, BytesLike]], *,
                 timeout: float | None = None) -> list[bytes]:
        """See AsyncClient.put_many."""
        return self._call(self._async.put_many(table, list(items), timeout=timeout))

    def get_many(self, table: str, keys: Iterable[BytesLike], timeout: float | None = None) -> list[Record | None]:
        """See AsyncClient.get_many."""
        return self._call(self._async.get_many(table, list(keys), timeout=timeout))

    def close(self) -> None:
        """Close the AsyncClient (ops in flight fail) and end the loop thread. Idempotent."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("Client.close() called from the client's own event-loop thread")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._async.close(), self._loop).result()
            with self._lock:
                in_flight = list(self._in_flight)
            for future in in_flight:         # e.g. asleep between retries: their threads must not wait forever
                future.cancel()
            asyncio.run_coroutine_threadsafe(self._loop.shutdown_asyncgens(), self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            self._finalizer.detach()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _pages(self, pager: Pager, timeout: float | None) -> Iterator[Record]:
        while (req := pager.next_request()) is not None:
            yield from pager.take(self._call(self._async._list_page(req, timeout)))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._closed or threading.current_thread() is self._thread:
                coro.close()
                if self._closed:
                    raise QuorumKVError("the client is closed")
                raise RuntimeError("a Client call from the client's own event-loop thread would deadlock")
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            self._in_flight.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise QuorumKVError("the client was closed with this call in flight (a write's outcome is "
                                    "unknown)") from None
            raise
        except BaseException:
            future.cancel()          # a KeyboardInterrupt in the caller: stop the op too
            raise
        finally:
            with self._lock:
                self._in_flight.discard(future)
