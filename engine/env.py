"""Env: every file operation of the engine goes through one of these.

Three implementations share this interface (LevelDB's Env, memenv and fault
injection):
  PosixEnv            the real file system (this module);
  MemEnv              files in memory, for fast tests (env_mem.py);
  FaultInjectionEnv   MemEnv that can simulate a power loss: crash() drops
                      every byte not fsynced and every directory entry not
                      fsynced, and can fail chosen operations (env_fault.py).

Contract:
  * A WritableFile appends only. append() may buffer; flush() hands the bytes
    to the OS (they survive a process crash); sync() makes them durable
    (fdatasync: they survive a power loss).
  * A new file's name is durable only after sync_dir() of its directory;
    rename() is atomic, and durable after sync_dir().
  * lock() takes an exclusive advisory lock that a second opener, in this
    process or another, cannot take.
Thread-safety: an Env may be shared; a file object has one user at a time.
"""
from __future__ import annotations

import errno
import fcntl
import os
from abc import ABC, abstractmethod

from engine.errors import DBLockedError

WRITE_BUFFER_BYTES = 256 * 1024


class WritableFile(ABC):
    @abstractmethod
    def append(self, data: bytes) -> None: ...

    def write(self, data: bytes) -> None:
        """append() and flush() in one call: the WAL's path, one write() per group."""
        self.append(data)
        self.flush()

    def allocate(self, size: int) -> None:
        """Reserves disk space so that the file spans at least `size` bytes
        from its start. The reserved bytes read as zeros until written; the
        write position does not move, so later writes land in the reserved
        space. Durable with the next sync().

        Why: an fdatasync after a write that grows a file must also commit
        the file's new length (a journal commit on ext4, about 30% of a small
        append's fdatasync here, more when two processes sync at once); a
        write into reserved space needs none (server/node/log_store.py,
        bench/RESULTS.md 2026-11-28 06:05). Readers of such a file must take a
        tail of zeros for unwritten space (engine/wal.py, read_log). An Env
        that cannot reserve space keeps this default: writes then grow the
        file as before."""
        return None

    def fileno(self) -> int:
        """The OS file descriptor that write() goes to, or -1 without one.
        Writing to it directly is allowed only while nothing is buffered,
        which holds for a file written only through write()."""
        return -1

    @abstractmethod
    def flush(self) -> None: ...

    @abstractmethod
    def sync(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def size(self) -> int: ...


class RandomAccessFile(ABC):
    @abstractmethod
    def read(self, offset: int, n: int) -> bytes: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def size(self) -> int: ...


class FileLock(ABC):
    @abstractmethod
    def release(self) -> None: ...


class Env(ABC):
    @abstractmethod
    def open_writable(self, path: str) -> WritableFile:
        """Creates (or truncates) path for appending."""

    @abstractmethod
    def open_random(self, path: str) -> RandomAccessFile: ...

    @abstractmethod
    def read_file(self, path: str) -> bytes: ...

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def list_dir(self, path: str) -> list[str]: ...

    @abstractmethod
    def remove(self, path: str) -> None: ...

    @abstractmethod
    def rename(self, src: str, dst: str) -> None: ...

    @abstractmethod
    def truncate(self, path: str, size: int) -> None:
        """Cuts the file to `size` bytes; durable once the file is synced
        afterwards (sync_file, or a sync of a writable handle on it: an
        fdatasync commits a changed length)."""

    @abstractmethod
    def sync_dir(self, path: str) -> None: ...

    @abstractmethod
    def sync_file(self, path: str) -> None:
        """Makes the current content of an existing file durable (fdatasync),
        whoever wrote it: e.g. bytes a process that died wrote but never synced,
        still in the page cache, before anything is built on them."""

    @abstractmethod
    def mkdirs(self, path: str) -> None: ...

    @abstractmethod
    def file_size(self, path: str) -> int: ...

    @abstractmethod
    def lock(self, path: str) -> FileLock:
        """Raises DBLockedError when another opener holds the lock."""

    def write_file_atomic(self, path: str, data: bytes) -> None:
        """Replaces path with data so that a crash leaves the old or the new
        content, never a mix: write a temp file, sync it, rename, sync the dir."""
        tmp = path + ".tmp"
        f = self.open_writable(tmp)
        try:
            f.append(data)
            f.sync()
        finally:
            f.close()
        self.rename(tmp, path)
        self.sync_dir(os.path.dirname(path) or ".")


class _PosixWritableFile(WritableFile):
    def __init__(self, path: str):
        self._path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self._buf: list[bytes] = []
        self._buffered = 0
        self._size = 0

    def append(self, data: bytes) -> None:
        self._buf.append(data)
        self._buffered += len(data)
        self._size += len(data)
        if self._buffered >= WRITE_BUFFER_BYTES:
            self.flush()

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes) -> None:
        if self._buf:
            self.flush()
        self._size += len(data)
        n = os.write(self._fd, data)
        if n < len(data):
            view = memoryview(data)[n:]
            while view:
                view = view[os.write(self._fd, view):]

    def flush(self) -> None:
        if not self._buf:
            return
        data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
        self._buf.clear()
        self._buffered = 0
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def allocate(self, size: int) -> None:
        if size > self._size:
            # posix_fallocate: fallocate(2), or glibc writes the zeros itself on a
            # file system without it (slower, same result). Beyond the write
            # position only, so the buffered bytes keep their place.
            os.posix_fallocate(self._fd, self._size, size - self._size)

    def sync(self) -> None:
        self.flush()
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1

    @property
    def size(self) -> int:
        return self._size


class _PosixRandomAccessFile(RandomAccessFile):
    def __init__(self, path: str):
        self._fd = -1
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self._fd, n, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()

    @property
    def size(self) -> int:
        return self._size


class _PosixFileLock(FileLock):
    def __init__(self, fd: int):
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


class PosixEnv(Env):
    def open_writable(self, path: str) -> WritableFile:
        return _PosixWritableFile(path)

    def open_random(self, path: str) -> RandomAccessFile:
        return _PosixRandomAccessFile(path)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def list_dir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def remove(self, path: str) -> None:
        os.remove(path)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync_file(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def mkdirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def file_size(self, path: str) -> int:
        return os.path.getsize(path)

    def lock(self, path: str) -> FileLock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DBLockedError(f"{path} is locked: the database is open in another process or handle") from None
            raise
        return _PosixFileLock(fd)


DEFAULT_ENV = PosixEnv()
