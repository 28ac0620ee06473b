"""Log files: the WAL's segments and the MANIFEST share one framing
(engine/_native/wal_frame.pyx, whose header specifies it) and these rules.

WAL frame payload (type WRITE_BATCH):

    0          8
    +----------+--------------------------------------+
    | lsn      | write batch (write_batch.pyx)        |
    | u64 LE   |                                      |
    +----------+--------------------------------------+
    lsn  the lsn of the batch's first record; record i has lsn + i.

read_log() applies the replay rules: stop cleanly at a torn tail (counted),
raise CorruptionError for a bad frame that valid frames follow. A file whose
space is reserved ahead of its writes (WritableFile.allocate; read with
reserved_tail=True) ends in zeros that were never written: a clean end; torn
bytes are counted up to the last non-zero byte, and a bad frame whose
claimed length runs into the zeros is treated like one running past the end
of the file (its length may be damaged). Every other file keeps the strict
rule: zeros after the last frame are a torn tail, or damage in a segment a
newer one follows (e.g. an acknowledged frame whose data a failing disk
lost).
The search for valid frames after a bad one may look inside a torn frame's
payload, whose value may hold bytes shaped like frames (a copy of a log file,
say). A frame's checksum covers its file offset (wal_frame.pyx), so such bytes
validate only if crafted for the very offset they landed at. Besides: a torn
write keeps its header (it is a prefix of what was written), so after a
complete frame with a bad checksum the search starts past the extent its
length claims; a frame whose length runs past the end of the file (or into
reserved zeros) may have a damaged length, so the search then starts at the
next byte, and relies on the offset alone.
Every log file starts with the file header (wal_frame.FILE_HEADER: magic and
format version, as a frame a build of format version 1 refuses instead of
reading the file as a torn tail). read_log refuses another version, and a
version-1 file (no header, its frames found by the old checksum rule) with
CorruptionError, never a torn tail (that would drop acknowledged data); a
file whose header is torn (created, then the power failed) holds nothing,
unless valid frames follow the damage (CorruptionError).
LogWriter writes the header when it creates its file and frames at the
file's size, so every frame is checksummed for the offset it lands at; it
appends already-framed groups too (append_framed: the caller framed them at
`size`); the group commit itself lives in
engine/write_queue.py, which decides who writes and who waits.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from engine._native import wal_frame
from engine.env import Env, WritableFile
from engine.errors import CorruptionError

_STATUS_NAMES = {wal_frame.TRUNCATED: "truncated frame", wal_frame.BAD_CRC: "checksum mismatch",
                 wal_frame.BAD_TYPE: "unknown frame type"}
_LSN = struct.Struct("<Q")


@dataclass
class LogContents:
    frames: list[tuple[int, int, bytes]]   # (offset, type, payload)
    valid_bytes: int                       # length of the valid prefix
    torn_bytes: int                        # bytes after it, dropped as a torn tail


def read_log(env: Env, path: str, reserved_tail: bool = False) -> LogContents:
    """Every valid frame of a log file, applying the replay rules (module
    docstring); `reserved_tail`: the file's space was reserved ahead of its
    writes, so it may end in unwritten zeros."""
    data = env.read_file(path)
    kind, value = wal_frame.read_file_header(data)
    if kind == wal_frame.HEADER_OTHER_VERSION:
        raise CorruptionError(f"log file of format version {value}; this build reads version "
                              f"{wal_frame.FORMAT_VERSION}", path, 0)
    if kind != wal_frame.HEADER_OK:
        return _without_header(data, path, kind, reserved_tail)
    frames, end, status = wal_frame.decode_frames(data, value)
    if status == wal_frame.OK:
        return LogContents(frames, end, 0)
    written = _written_end(data, end) if reserved_tail else len(data)
    if written == end:   # only unwritten space after the last frame (zeros never form a frame: type 0 is none)
        return LogContents(frames, end, 0)
    if status == wal_frame.BAD_TYPE:
        raise CorruptionError("log frame of unknown type (written by a newer version?)", path, end)
    search_from = end + 1
    if status == wal_frame.BAD_CRC:
        (claimed,) = struct.unpack_from("<I", data, end + 4)
        if end + wal_frame.HEADER_SIZE + claimed <= written:
            search_from = end + wal_frame.HEADER_SIZE + claimed
        # else: the claimed extent runs into unwritten space, like a length
        # running past the end of the file: the length itself may be damaged.
    nxt = wal_frame.find_valid_frame(data, search_from) if search_from < len(data) else -1
    if nxt >= 0:
        raise CorruptionError(f"{_STATUS_NAMES[status]} before valid frames at offset {nxt}: "
                              "acknowledged data is damaged", path, end)
    return LogContents(frames, end, written - end)


def _without_header(data: bytes, path: str, kind: int, reserved_tail: bool) -> LogContents:
    """A file that does not start with this version's file header: one torn
    while it was being created holds nothing (no frame of it was
    acknowledged); one of an older format, or whose header is damaged before
    valid frames, is refused, never read as a torn tail.

    Older formats are recognised only where their frames must be: version 1's
    first frame at 0 (HEADER_LEGACY), or its second where a damaged first
    frame's length points; frames checksummed over their offset but without a
    file header (the build of commit 068e54b, one day old) at 0. Version-1
    frames validate at any offset, so a search for them through the file
    would let bytes inside a value turn a torn new file into an "older
    format" one."""
    if kind != wal_frame.HEADER_LEGACY and len(data) >= wal_frame.HEADER_SIZE:
        (length,) = struct.unpack_from("<I", data, 4)
        second = wal_frame.HEADER_SIZE + length
        if second < len(data) and wal_frame.read_file_header(data[second:])[0] == wal_frame.HEADER_LEGACY:
            kind = wal_frame.HEADER_LEGACY   # version 1, its first frame damaged
    if kind == wal_frame.HEADER_LEGACY:
        raise CorruptionError("log file written by an older format (version 1: no file header), which this "
                              "build does not read", path, 0)
    nxt = wal_frame.find_valid_frame(data, 0)   # this version's frames validate only where they were written
    if nxt == 0:
        raise CorruptionError("log file written by an older format (no file header, as commit 068e54b wrote), "
                              "which this build does not read", path, 0)
    if nxt > 0:
        raise CorruptionError(f"damaged file header before valid frames at offset {nxt}: acknowledged data is "
                              "damaged", path, 0)
    written = _written_end(data, 0) if reserved_tail else len(data)
    return LogContents([], 0, written)


def _written_end(data: bytes, start: int) -> int:
    """The end of the last non-zero byte at or after `start` (`start` if none),
    looking back from the end a MiB at a time: a reserved tail is short."""
    hi = len(data)
    while hi > start:
        lo = max(start, hi - (1 << 20))
        chunk = data[lo:hi]
        if chunk.count(0) != len(chunk):
            return lo + len(chunk.rstrip(b"\0"))
        hi = lo
    return start


def decode_wal_payload(payload: bytes, path: str | None = None, offset: int | None = None) -> tuple[int, bytes]:
    if len(payload) < _LSN.size:
        raise CorruptionError("WAL record shorter than its lsn", path, offset)
    return _LSN.unpack_from(payload)[0], payload[_LSN.size:]


class LogWriter:
    """Appends frames to one log file, which it creates (empty). One writer
    thread at a time (the group-commit leader or the manifest's owner).
    Invariant: size is the file's length, so the offset the next frame lands
    at (its checksum covers it: wal_frame.pyx)."""

    def __init__(self, env: Env, path: str, number: int = 0):
        self.path = path
        self.number = number
        self._file: WritableFile = env.open_writable(path)
        # Synced at once: a file that gets no frame must still read as empty,
        # not as a torn header (zeros where the power failed) that a newer
        # file follows, which is damage (engine/db.py's replay).
        self._file.write(wal_frame.FILE_HEADER)
        self._file.sync()
        self.size = len(wal_frame.FILE_HEADER)
        # The OS file descriptor, for the native unsynced write path
        # (engine/_native/commit.pyx); -1 when the Env has none (MemEnv).
        self.fd = self._file.fileno()

    def append_framed(self, framed: bytes, sync: bool) -> None:
        """Requires: `framed` was encoded for offset self.size
        (wal_frame.encode_*(..., offset=self.size)), with nothing written since."""
        self._file.write(framed)
        self.size += len(framed)
        if sync:
            self._file.sync()

    def add(self, frame_type: int, payloads: list[bytes], sync: bool) -> None:
        self.append_framed(wal_frame.encode_frames(frame_type, payloads, self.size), sync)

    def sync(self) -> None:
        self._file.sync()

    def close(self) -> None:
        self._file.close()
