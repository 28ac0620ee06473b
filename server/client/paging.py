"""Pager: the requests and records of a `list`, page by page, following continuation tokens.

Purpose: `AsyncClient.list` and `Client.list` share this; it does no I/O
(the sans-I/O idea of STYLE.md rule 1): `next_request()` says what to ask
for, `take(response)` turns the answer into records and remembers where to
resume.

Contract:
  1. Pages ask for `min(page_size, records still wanted)` records; the
     listing ends when a response carries no continuation, or when `limit`
     records were returned.
  2. A page may come back shorter than asked (even empty) with a
     continuation: the listing goes on.
  3. Requires: page_size >= 1; limit is None (no limit) or >= 0.

Thread-safety: one Pager per listing, used by one thread or task.
"""
from __future__ import annotations

from server.client.errors import InvalidArgument
from server.client.record import Record
from server.proto import kv_pb2

MAX_PAGE_SIZE = 10_000             # the router's largest page (server/router/router.py MAX_PAGE)


class Pager:
    def __init__(self, table: str, start: bytes, end: bytes, limit: int | None, page_size: int, keys_only: bool):
        if not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size is 1 to {MAX_PAGE_SIZE}, not {page_size!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidArgument(f"limit is None or a count >= 0, not {limit!r}")
        self._table = table
        self._start = start
        self._end = end
        self._remaining = limit
        self._page_size = page_size
        self._keys_only = keys_only
        self._continuation = b""
        self._finished = False
        self.pages = 0

    def next_request(self) -> kv_pb2.ListRequest | None:
        """The request for the next page, None when the listing is complete."""
        if self._finished or self._remaining == 0:
            return None
        size = self._page_size if self._remaining is None else min(self._page_size, self._remaining)
        return kv_pb2.ListRequest(table=self._table, start=self._start, end=self._end, limit=size,
                                  keys_only=self._keys_only, continuation=self._continuation)

    def take(self, response: kv_pb2.ListResponse) -> list[Record]:
        """The records of the page answering the last request."""
        records = [Record(r.key, r.value, r.seq) for r in response.records]
        if self._remaining is not None:
            records = records[:self._remaining]
            self._remaining -= len(records)
        self._continuation = response.continuation
        self._finished = not response.continuation
        self.pages += 1
        return records
