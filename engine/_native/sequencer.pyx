"""The 16-byte record sequencer of the design (seed section 2).

Layout, big-endian so that byte order equals numeric order:

    0               8          12         16
    +---------------+----------+----------+
    | timestamp ns  | counter  | node id  |
    |   u64 BE      |  u32 BE  |  u32 BE  |
    +---------------+----------+----------+

Contract:
  1. Seqs issued by one Sequencer are strictly increasing in byte order, even
     when the wall clock steps back or many seqs are issued in one nanosecond:
     the (timestamp, counter) pair never repeats or decreases.
  2. The counter advances by one per seq issued and wraps at 2**32 (the seed's
     "unique number per load"); when it wraps while the clock stands still the
     timestamp is moved one nanosecond ahead of the clock.
  3. observe(seq) moves the generator past seq (hybrid logical clock), so no
     seq issued afterwards is at or below an observed one, whatever node made it.
     Having observed the largest possible seq, next() raises OverflowError
     rather than break rule 1.
Thread-safety: every method takes the instance's mutex; any thread may call.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME

cdef extern from *:
    """
    #define QKV_U32_MAX 0xffffffffu
    #define QKV_U64_MAX 0xffffffffffffffffull
    """
    uint32_t QKV_U32_MAX
    uint64_t QKV_U64_MAX


cdef inline uint64_t _wall_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <uint64_t>ts.tv_sec * 1000000000 + <uint64_t>ts.tv_nsec


cdef class Sequencer:
    """Issues strictly increasing 16-byte seqs for one node.

    clock: optional callable returning nanoseconds, for tests; the default
    reads CLOCK_REALTIME in C.
    """

    def __init__(self, uint32_t node_id, clock=None):
        self.node_id = node_id
        self._last_ts = 0
        self._last_counter = 0
        self._clock = clock

    cdef int next_into(self, uint8_t *out) except -1:
        cdef uint64_t now
        cdef bint exhausted = False
        if self._clock is None:
            now = _wall_ns()
        else:
            reading = self._clock()
            if type(reading) is not int:
                raise TypeError(f"the clock must return nanoseconds as an int, got {type(reading).__name__}")
            if not 0 <= reading < 2**64:
                raise OverflowError(f"the clock returned {reading}, outside [0, 2**64) nanoseconds")
            now = <uint64_t>reading
        with self._lock:
            if self._last_counter == QKV_U32_MAX:
                if now <= self._last_ts:
                    if self._last_ts == QKV_U64_MAX:
                        exhausted = True
                    else:
                        now = self._last_ts + 1
                if not exhausted:
                    self._last_counter = 0
            else:
                self._last_counter += 1
            if not exhausted:
                if now > self._last_ts:
                    self._last_ts = now
                seq_pack(out, self._last_ts, self._last_counter, self.node_id)
        if exhausted:
            # Only reachable by observing a seq at the very top of the space.
            raise OverflowError("sequencer exhausted: it observed the largest possible seq")
        return 0

    cdef void _observe(self, const uint8_t *seq) noexcept:
        cdef uint64_t ts = seq_ts(seq)
        cdef uint32_t counter = seq_u32(seq + 8)
        with self._lock:
            if ts > self._last_ts or (ts == self._last_ts and counter > self._last_counter):
                self._last_ts = ts
                self._last_counter = counter

    def next(self) -> bytes:
        """The next seq: greater than every seq issued or observed before."""
        cdef uint8_t buf[SEQ_SIZE]
        self.next_into(buf)
        return (<char *>buf)[:SEQ_SIZE]

    def next_many(self, Py_ssize_t n) -> bytes:
        """n consecutive seqs, concatenated (16 * n bytes), for batches."""
        if n < 0:
            raise ValueError("n must be >= 0")
        cdef bytearray out = bytearray(SEQ_SIZE * n)
        cdef uint8_t *p = out
        cdef Py_ssize_t i
        for i in range(n):
            self.next_into(p + SEQ_SIZE * i)
        return bytes(out)

    def observe(self, const unsigned char[::1] seq not None) -> None:
        """Move past seq so every later seq from this generator is greater."""
        if seq.shape[0] != SEQ_SIZE:
            raise ValueError(f"a seq is {SEQ_SIZE} bytes, got {seq.shape[0]}")
        self._observe(&seq[0])

    @property
    def last(self) -> bytes:
        cdef uint8_t buf[SEQ_SIZE]
        with self._lock:
            seq_pack(buf, self._last_ts, self._last_counter, self.node_id)
        return (<char *>buf)[:SEQ_SIZE]


def encode(uint64_t timestamp_ns, uint32_t counter, uint32_t node_id) -> bytes:
    """Pack the three parts into 16 big-endian bytes."""
    cdef uint8_t buf[SEQ_SIZE]
    seq_pack(buf, timestamp_ns, counter, node_id)
    return (<char *>buf)[:SEQ_SIZE]


def decode(const unsigned char[::1] seq not None) -> tuple:
    """(timestamp_ns, counter, node_id) of a 16-byte seq."""
    if seq.shape[0] != SEQ_SIZE:
        raise ValueError(f"a seq is {SEQ_SIZE} bytes, got {seq.shape[0]}")
    return (seq_ts(&seq[0]), seq_u32(&seq[8]), seq_u32(&seq[12]))


ZERO = b"\x00" * SEQ_SIZE
SIZE = SEQ_SIZE
