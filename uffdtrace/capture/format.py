"""The capture format, version 1. All integers little-endian.

    magic      8 bytes  b"UFFDTRC\\0"
    version    u32      FORMAT_VERSION
    rec_size   u32      size of one record (events.RECORD_SIZE)
    hdr_len    u32      length of the JSON header that follows
    reserved   u32      0
    header     hdr_len bytes of UTF-8 JSON: {"format", "tool_version",
               "run": source.RunInfo, "thresholds": rules.Thresholds}
    records    rec_size bytes each: bpf/events.h's struct uffdtrace_event as
               the source delivered it, kernel pointers (ctx) already
               replaced by small ids; kinds from 0x100 are the capture's own
               (Cap below): the session's batch boundaries and the answers
               the correlator got from outside the record stream
    END        a Cap.END record whose `len` is the length of the JSON
               trailer (source.Totals and record counts) that follows it

A file cut anywhere (a recorder killed, a disk full) keeps every whole
record before the cut; the reader replays them and says what is missing."""

from __future__ import annotations

import enum
import struct

from ..events import Kind
from ..source import TaskState

MAGIC = b"UFFDTRC\0"
FORMAT_VERSION = 1
PREAMBLE = struct.Struct("<8sIIII")
MAX_HEADER = 1 << 20  # a header is a few KiB; more means damage
MAX_TRAILER = 1 << 20


class Cap(enum.IntEnum):
    """Record kinds of the capture itself (field use in parentheses)."""

    BATCH = 0x100  # end of a batch (ts_ns: its horizon)
    LOST = 0x101  # lost() answered (len: records lost so far)
    NOW = 0x102  # now() answered (ts_ns)
    TASK = 0x103  # thread_state(tgid, tid) answered (ret: index in TASK_STATES)
    FAULT_PAGE = 0x104  # fault_page(tid) answered (addr; flags 1 when known)
    FOLDED = 0x105  # folded_faults(mode: include_handed): `count` FAULT_STATE records follow
    BLOCKED = 0x106  # blocked_before(): `count` BLOCKED_THREAD records follow
    BLOCKED_THREAD = 0x107  # one of them (tgid, tid, comm; ts_ns: last ran)
    HOLDERS = 0x108  # uffd_holders(addr: the uffd id) answered (flags 1 when known): `count` HOLDER records follow
    HOLDER = 0x109  # one of them (tgid, comm; len: threads alive, ret: those asleep in a userfaultfd wait)
    END = 0x1FF  # the trailer follows (len: its length)


# An answer mark owns the `count` records after it, of this kind: they are
# part of the answer, never of the stream, even when nobody asks for it.
FOLLOWERS: dict[int, int] = {Cap.FOLDED: Kind.FAULT_STATE, Cap.BLOCKED: Cap.BLOCKED_THREAD, Cap.HOLDERS: Cap.HOLDER}

# thread_state answers, by index (appended to: older captures keep theirs)
TASK_STATES: tuple[TaskState | None, ...] = ("uffd", "other", "gone", None, "event", "aio")
