"""The engine's exception hierarchy; the server maps these to gRPC status codes.

    QuorumKVError
    ├── InvalidArgumentError (also ValueError)   bad key, value, seq or option
    ├── TableNotFoundError   (also KeyError)      unknown table name
    ├── TableExistsError                          create_table of an existing name
    ├── CorruptionError                           a checksum or format check failed
    ├── DBLockedError                             another process holds the directory
    └── DBClosedError                             use after close()
"""


class QuorumKVError(Exception):
    """Base of every error quorumkv raises on purpose."""


class InvalidArgumentError(QuorumKVError, ValueError):
    """The caller passed something the API does not accept; nothing was written."""


class TableNotFoundError(QuorumKVError, KeyError):
    """No table of that name exists."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "table not found"


class TableExistsError(QuorumKVError):
    """A table of that name already exists."""


class CorruptionError(QuorumKVError):
    """Stored data failed a checksum or format check.

    path and offset, when known, say where.
    """

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        where = ""
        if path is not None:
            where = f" in {path}" + (f" at offset {offset}" if offset is not None else "")
        super().__init__(message + where)
        self.path = path
        self.offset = offset


class DBLockedError(QuorumKVError):
    """The database directory is locked by another opener."""


class DBClosedError(QuorumKVError):
    """The database was closed."""
