"""MemEnv: an Env whose files live in memory, with power-loss semantics.

Each file keeps its bytes and how many of them are durable (synced); each
directory entry (a file's name) is durable once sync_dir() ran after it was
created or renamed. crash() (used by FaultInjectionEnv and the crash tests)
forgets everything not durable, as a power loss would:
  * every file is cut back to its synced length (a truncate not synced
    since is undone);
  * a file whose name was never made durable disappears;
  * a rename not followed by sync_dir() is undone.
Thread-safety: one lock around all state.
"""
from __future__ import annotations

import os
import threading

from engine.env import Env, FileLock, RandomAccessFile, WritableFile
from engine.errors import DBLockedError


class _MemFile:
    """`data`: the bytes written (the write position is its end). `reserved`:
    the length allocate() gave the file; readers see `data` followed by zeros
    up to it. `synced` and `reserved_synced`: what a power loss keeps."""

    __slots__ = ("data", "synced", "reserved", "reserved_synced", "before_cut")

    def __init__(self) -> None:
        self.data = bytearray()
        self.synced = 0
        self.reserved = 0
        self.reserved_synced = 0
        # The durable bytes when a truncate cut into them, until the next sync:
        # a power loss before that sync brings them back (as on ext4).
        self.before_cut: bytes | None = None

    def contents(self) -> bytes:
        tail = self.reserved - len(self.data)
        return bytes(self.data) + bytes(tail) if tail > 0 else bytes(self.data)

    def length(self) -> int:
        return max(len(self.data), self.reserved)


class _MemWritable(WritableFile):
    def __init__(self, env: "MemEnv", path: str, node: _MemFile):
        self._env = env
        self._path = path
        self._node = node
        self._closed = False

    def append(self, data: bytes) -> None:
        self._env._before("append", self._path)
        with self._env._lock:
            self._node.data += data

    def flush(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.append(data)

    def allocate(self, size: int) -> None:
        self._env._before("allocate", self._path)
        with self._env._lock:
            self._node.reserved = max(self._node.reserved, size)

    def sync(self) -> None:
        self._env._before("sync", self._path)
        with self._env._lock:
            self._node.synced = len(self._node.data)
            self._node.reserved_synced = self._node.reserved
            self._node.before_cut = None

    def close(self) -> None:
        self._closed = True

    @property
    def size(self) -> int:
        return len(self._node.data)


class _MemRandom(RandomAccessFile):
    def __init__(self, env: "MemEnv", path: str, node: _MemFile):
        self._env = env
        self._path = path
        self._node = node

    def read(self, offset: int, n: int) -> bytes:
        self._env._before("read", self._path)
        return self._node.contents()[offset:offset + n]

    def close(self) -> None:
        pass

    @property
    def size(self) -> int:
        return self._node.length()


class _MemLock(FileLock):
    def __init__(self, env: "MemEnv", path: str):
        self._env = env
        self._path = path

    def release(self) -> None:
        with self._env._lock:
            self._env._locks.discard(self._path)


class MemEnv(Env):
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._files: dict[str, _MemFile] = {}
        # The durable view of names: what a crash would leave.
        self._durable_names: dict[str, _MemFile] = {}
        self._dirs: set[str] = set()
        self._locks: set[str] = set()

    # Hook for FaultInjectionEnv.
    def _before(self, op: str, path: str) -> None:
        pass

    def open_writable(self, path: str) -> WritableFile:
        self._before("open_writable", path)
        with self._lock:
            node = _MemFile()
            self._files[path] = node
            return _MemWritable(self, path, node)

    def open_random(self, path: str) -> RandomAccessFile:
        with self._lock:
            node = self._files.get(path)
            if node is None:
                raise FileNotFoundError(path)
            return _MemRandom(self, path, node)

    def read_file(self, path: str) -> bytes:
        self._before("read", path)
        with self._lock:
            node = self._files.get(path)
            if node is None:
                raise FileNotFoundError(path)
            return node.contents()

    def exists(self, path: str) -> bool:
        with self._lock:
            return path in self._files or path in self._dirs

    def list_dir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        with self._lock:
            return sorted(p[len(prefix):] for p in self._files if p.startswith(prefix) and "/" not in p[len(prefix):])

    def remove(self, path: str) -> None:
        self._before("remove", path)
        with self._lock:
            if self._files.pop(path, None) is None:
                raise FileNotFoundError(path)

    def rename(self, src: str, dst: str) -> None:
        self._before("rename", src)
        with self._lock:
            node = self._files.pop(src, None)
            if node is None:
                raise FileNotFoundError(src)
            self._files[dst] = node

    def truncate(self, path: str, size: int) -> None:
        """Cuts the file now; the cut is durable after the file's next sync
        (before it, a power loss brings the cut durable bytes back)."""
        self._before("truncate", path)
        with self._lock:
            node = self._files[path]
            if node.before_cut is None and max(node.synced, node.reserved_synced) > size:
                node.before_cut = bytes(node.data[:node.synced])
            del node.data[size:]
            node.reserved = min(node.reserved, size)

    def sync_dir(self, path: str) -> None:
        self._before("sync_dir", path)
        prefix = path.rstrip("/") + "/"
        with self._lock:
            for name in [p for p in self._durable_names if p.startswith(prefix) and "/" not in p[len(prefix):]]:
                del self._durable_names[name]
            for name, node in self._files.items():
                if name.startswith(prefix) and "/" not in name[len(prefix):]:
                    self._durable_names[name] = node

    def sync_file(self, path: str) -> None:
        self._before("sync", path)
        with self._lock:
            node = self._files.get(path)
            if node is None:
                raise FileNotFoundError(path)
            node.synced = len(node.data)
            node.reserved_synced = node.reserved
            node.before_cut = None

    def mkdirs(self, path: str) -> None:
        with self._lock:
            while path and path not in self._dirs:
                self._dirs.add(path)
                path = os.path.dirname(path)

    def file_size(self, path: str) -> int:
        with self._lock:
            return self._files[path].length()

    def lock(self, path: str) -> FileLock:
        with self._lock:
            if path in self._locks:
                raise DBLockedError(f"{path} is locked: the database is open in another handle")
            self._locks.add(path)
            return _MemLock(self, path)

    def crash(self) -> None:
        """Simulates a power loss: keeps only what was made durable."""
        with self._lock:
            files: dict[str, _MemFile] = {}
            for name, node in self._durable_names.items():
                if node.before_cut is not None:   # a cut not synced yet: undone
                    node.data = bytearray(node.before_cut)
                    node.before_cut = None
                node.data = node.data[:node.synced]
                node.reserved = node.reserved_synced
                files[name] = node
            # Files open for writing keep their (durable) node; their handles
            # are dead after a crash, like every handle.
            self._files = files
            self._durable_names = dict(files)
            self._locks.clear()
