"""Bulk consumer of a BPF ring buffer map (5.8+), without a Python call per record.

The kernel lets a consumer mmap the ring (kernel/bpf/ringbuf.c,
``ringbuf_map_mmap``): page 0 holds the consumer position (read-write); from
page 1, read-only, the producer position page, then the data area mapped
twice back to back, so that a span that wraps is contiguous. Every record is
an 8-byte header (length, with BUSY bit 31 while the producer writes it and
DISCARD bit 30) followed by the data, padded to 8 bytes.

uffdtrace's records all have one size, so a span of committed records is a
byte string that ``struct.iter_unpack`` decodes in one C call: this reader
copies whole spans and advances the consumer position, and decoding happens
later, in the correlating thread. The producers send no wake-ups
(BPF_RB_NO_WAKEUP): the reader is called on a timer.

The positions are read and written with plain loads and stores: correct on
x86-64 (loads are not reordered with loads, stores not with stores), the
architecture tracepoint mode supports; kprobe mode on weakly ordered
architectures would need the acquire/release barriers libbpf uses.
"""

from __future__ import annotations

import mmap
import struct

HEADER_SIZE = 8
LENGTH_HIGH_BYTE = 3  # of the little-endian u32 length that starts each header
BUSY = 1 << 31
DISCARD = 1 << 30
_POS = struct.Struct("<Q")


def slot_size(record_size: int) -> int:
    """Bytes one record takes in the ring: header plus data padded to 8."""
    return HEADER_SIZE + (record_size + 7) // 8 * 8


class RingReader:
    def __init__(self, map_fd: int, size: int, record_size: int) -> None:
        if size & (size - 1) or size % mmap.PAGESIZE:
            raise ValueError(f"ring size {size} is not a power of two multiple of the page size")
        page = mmap.PAGESIZE
        self.size = size
        self.slot = slot_size(record_size)
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._data = memoryview(self._producer)[page:]
        self.position = 0  # the consumer's, after the last read: where a busy record held it

    def read(self) -> tuple[bytes, bool]:
        """Every committed record now in the ring, as one byte string of
        whole slots (headers included), and whether the span ended at a
        record still being written (then later records wait for the next read)."""
        cons = _POS.unpack_from(self._consumer, 0)[0]
        prod = _POS.unpack_from(self._producer, 0)[0]
        if prod == cons:
            return b"", False
        start = cons & (self.size - 1)
        span = bytes(self._data[start:start + (prod - cons)])
        # The high byte of each header: zero for a committed record of our
        # size (a length below 16 MiB, neither BUSY nor DISCARD).
        flags = span[LENGTH_HIGH_BYTE::self.slot]
        stalled = False
        if flags.strip(b"\0"):
            for i, byte in enumerate(flags):
                if byte & (BUSY >> 24):
                    span, stalled = span[:i * self.slot], True
                    break
                if byte & (DISCARD >> 24):
                    raise RuntimeError("a discarded ring buffer record: uffdtrace never discards")
        if len(span) % self.slot:
            raise RuntimeError(f"ring buffer span of {len(span)} bytes is not made of {self.slot}-byte records")
        self.position = cons + len(span)
        _POS.pack_into(self._consumer, 0, self.position)
        return span, stalled

    def close(self) -> None:
        self._data.release()
        self._producer.close()
        self._consumer.close()
