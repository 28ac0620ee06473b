"""The client SDK's exception hierarchy, and the one mapping from gRPC status codes to it.

Purpose: every failure a caller of `quorumkv.Client` / `quorumkv.AsyncClient`
can see is a `QuorumKVError`; the subclass says what to do about it. The
server's status codes (server/proto/kv.proto) become exceptions in exactly one
place, `error_for()`, whether they arrive as a unary call's status or as the
`code` of an `OpResult` in the Batch stream.

Contract:
  1. Every exception carries the server's message (`message`), the gRPC code
     it came from (`code`, None when the SDK raised it itself) and the server's
     `retry_after_ms` hint (0 when none).
  2. A write (put, delete, create_table, drop_table) raises `OutcomeUnknown`,
     never `Unavailable` or `DeadlineExceeded`, once any attempt of it may
     have reached the server without an answer. So `Unavailable` or
     `DeadlineExceeded` from a write means it was not applied.
  3. `Unavailable` and `OutcomeUnknown` reach the caller only after the SDK's
     retries (server/client/retry.py) ran out of deadline, except an
     `OutcomeUnknown` the server marked `final`: the group no longer
     remembers the request id, so no retry can settle it, and it is raised
     at once.

Thread-safety: exceptions are plain values; `error_for` is a pure function.
"""
from __future__ import annotations

import grpc

RETRY_AFTER_KEY = "retry-after-ms"     # the trailing metadata key of a unary UNAVAILABLE
FINAL_KEY = "quorumkv-final"           # ... of a unary UNKNOWN that no retry can settle (kv.proto, OpResult.final)


class QuorumKVError(Exception):
    """Base class of every SDK error. Other, unexpected status codes raise this class itself."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, retry_after_ms: int = 0,
                 final: bool = False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry_after_ms = retry_after_ms
        self.final = final   # the server says retrying cannot change the answer

    def __str__(self) -> str:
        return self.message if self.code is None else f"{self.code.name}: {self.message}"


class TableNotFound(QuorumKVError):
    """NOT_FOUND: the table does not exist. (A missing key is not an error: `get` returns None.)"""


class TableExists(QuorumKVError):
    """ALREADY_EXISTS: `create_table` of a table that exists."""


class InvalidArgument(QuorumKVError, ValueError):
    """INVALID_ARGUMENT: a bad table name, key, value, seq, option or continuation token."""


class ConditionFailed(QuorumKVError):
    """FAILED_PRECONDITION: the `if_seq` / `if_absent` condition of a put or delete does not hold."""


class Unavailable(QuorumKVError):
    """UNAVAILABLE: no leader for the key's range, or no router reachable, until the deadline.

    For a write this means it was not applied (contract 2 above)."""


class DeadlineExceeded(QuorumKVError, TimeoutError):
    """DEADLINE_EXCEEDED: the call's deadline passed. For a write this means it was not applied."""


class OutcomeUnknown(QuorumKVError):
    """UNKNOWN: a write that may or may not have been applied.

    Raised when an attempt was sent and its answer was lost (its stream broke,
    its leader stepped down, its deadline passed) and no retry with the same
    request id settled it before the deadline, or at once when the server
    marked it `final` (its group no longer remembers the request id, so no
    retry can settle it). Read the key to find out."""


_BY_CODE: dict[grpc.StatusCode, type[QuorumKVError]] = {
    grpc.StatusCode.NOT_FOUND: TableNotFound,
    grpc.StatusCode.ALREADY_EXISTS: TableExists,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: ConditionFailed,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNKNOWN: OutcomeUnknown,
}
_CODE_OF_INT: dict[int, grpc.StatusCode] = {sc.value[0]: sc for sc in grpc.StatusCode}


def status_code(code: int | grpc.StatusCode) -> grpc.StatusCode:
    """The StatusCode of an OpResult's int `code`; an unknown int becomes UNKNOWN."""
    if isinstance(code, grpc.StatusCode):
        return code
    return _CODE_OF_INT.get(code, grpc.StatusCode.UNKNOWN)


def error_for(code: int | grpc.StatusCode, message: str, retry_after_ms: int = 0,
              final: bool = False) -> QuorumKVError:
    """THE mapping: the exception for a non-OK status code (an int from OpResult or a grpc.StatusCode).

    Requires: `code` is not OK."""
    sc = status_code(code)
    cls = _BY_CODE.get(sc, QuorumKVError)
    # Only an UNKNOWN can be final (kv.proto): on any other code the mark means nothing.
    return cls(message or sc.name.lower(), code=sc, retry_after_ms=retry_after_ms,
               final=final and sc is grpc.StatusCode.UNKNOWN)


def retry_after_ms_of(metadata) -> int:
    """The server's `retry-after-ms` hint in a call's trailing metadata, 0 when absent or malformed."""
    for key, value in metadata or ():
        if key == RETRY_AFTER_KEY:
            try:
                return max(0, int(value))
            except (TypeError, ValueError):
                return 0
    return 0


def final_of(metadata) -> bool:
    """Whether a call's trailing metadata marks its error final (FINAL_KEY)."""
    return any(key == FINAL_KEY and value == "1" for key, value in metadata or ())


def error_for_rpc(exc: grpc.aio.AioRpcError) -> QuorumKVError:
    """`error_for` of a failed unary call, with its trailing `retry-after-ms` and final mark."""
    trailing = exc.trailing_metadata()
    return error_for(exc.code(), exc.details() or "", retry_after_ms_of(trailing), final_of(trailing))
