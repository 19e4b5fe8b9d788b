"""The event ABI: the one Python mirror of ``bpf/events.h``.

Records arrive from the kernel as raw bytes; :func:`decode` turns one into an
:class:`Event`. Kernel pointers (uffd contexts, folios, kiocbs) never leave
this module as they are: :class:`PointerIds` maps them to small stable ids so
that no output leaks KASLR.
"""

from __future__ import annotations

import ctypes
import enum
import struct
from dataclasses import dataclass
from typing import Any


class Kind(enum.IntEnum):
    FAULT = 1
    FAULT_RET = 2
    BLOCK = 3
    READ_MSG = 4
    RESOLVE = 5
    WAKE_RANGE = 6
    WAKE_TASK = 7
    AIO_POLL_SUBMIT = 8
    AIO_POLL_WAKE = 9
    AIO_POLL_WORK = 10
    AIO_COMPLETE = 11
    ANON_VMA_LOCK = 12
    UFFD_NEW = 13
    UFFD_API = 14
    UFFD_REGISTER = 15
    UFFD_CLOSE = 16
    FAULT_STATE = 18
    LIFECYCLE = 19
    EVENT_WAIT = 20
    EVENT_DONE = 21


class FoldBit(enum.IntEnum):
    """FAULT_STATE / LIFECYCLE op bits beside the resolving op (UT_FOLD_*)."""

    OP_MASK = 0xFF
    VIA_READ = 0x100
    CLOSER = 0x200
    REFAULT = 0x400  # raised again by the kernel's retry of the same page fault, after its wake-up


class LostCause(enum.IntEnum):
    """Index of the per-CPU ``lost`` array (UT_LOST_*); the name is the summary's."""

    BUFFER_FULL = 0
    MESSAGES_PER_READ = 1
    RANGES_UNTRACKED = 2


class FaultState(enum.IntEnum):
    """A thread_fault / handed_faults entry's state in tracepoint mode (UT_FE_*)."""

    RAW = 0
    FOLDING = 1
    HANDED = 2


class QuietCounter(enum.IntEnum):
    """Index of the per-CPU ``quiet`` array (UT_QUIET_*)."""

    LIFECYCLES = 0
    READS = 1


class Reason(enum.IntEnum):
    """Why a fault came to its uffd, as the kernel derives it (UT_REASON_*);
    ANY: it cannot tell (a lifecycle's reason None, "unknown" in metrics)."""

    ANY = 0
    MISSING = 1
    WP = 2
    MINOR = 3


def reason_name(reason: int) -> str | None:
    """A UT_REASON_* as a lifecycle's reason (analysis/rules.py fault_reason)."""
    return None if reason == Reason.ANY else Reason(reason).name.lower()


# Buckets of the kernel's latency histograms (bpf/aggregate.h): bucket i holds
# the values of at most 1000 << i ns, bucket HIST_BOUNDS the rest.
HIST_BOUNDS = 27


def bucket_of(ns: int) -> int:
    """The bucket of a latency: the first i with ns <= 1000 << i, else the
    last (bpf/aggregate.h hist_bucket)."""
    return min(max((ns + 999) // 1000 - 1, 0).bit_length(), HIST_BOUNDS)


CLOSE_KEPT = 0x1  # UFFD_CLOSE flags: a holder's descriptor closed, the uffd lives on (UT_CLOSE_KEPT)
READS_SEALED = 1 << 63  # fault_entry.reads: the count is sealed (UT_READS_SEALED)
READS_COUNT = READS_SEALED - 1  # the count without it

# Kernel and uapi values both sides interpret (enum uffdtrace_kernel_value).
UFFD_EVENT_PAGEFAULT = 0x12  # uffd_msg.event of a page-fault message
PAGEFAULT_FLAG_WP = 0x2  # uffd_msg.arg.pagefault.flags (READ_MSG flags): a write-protect fault's
UFFD_EVENT_FORK, UFFD_EVENT_REMAP, UFFD_EVENT_REMOVE, UFFD_EVENT_UNMAP = 0x13, 0x14, 0x15, 0x16  # non-cooperative
UFFD_EVENT_NAMES = {UFFD_EVENT_FORK: "fork", UFFD_EVENT_REMAP: "remap", UFFD_EVENT_REMOVE: "remove",
                    UFFD_EVENT_UNMAP: "unmap"}
X86_PF_PROT, X86_PF_WRITE = 0x1, 0x2  # x86 page-fault error code (tracepoint mode's FAULT flags)
REGISTER_MODE_MISSING, REGISTER_MODE_WP, REGISTER_MODE_MINOR = 0x1, 0x2, 0x4  # UFFDIO_REGISTER modes
MODE_DONTWAKE = 0x1  # COPY, ZEROPAGE, CONTINUE, POISON, MOVE
WP_MODE_WP, WP_MODE_DONTWAKE = 0x1, 0x2  # UFFDIO_WRITEPROTECT
VM_UFFD_MISSING, VM_UFFD_WP = 0x200, 0x1000  # handle_userfault's reason (kprobe mode's FAULT mode)
VM_FAULT_SIGBUS = 0x2  # handle_userfault's return (FAULT_RET ret)
VM_FAULT_RETRY = 0x400  # ... the kernel retries the fault (under mmap_lock after a per-VMA-lock pass)
# vm_fault.flags (kprobe mode's FAULT flags): a user-mode fault. FAULT_FLAG_VMA_LOCK
# moves between kernels: its value comes from the traced kernel's BTF (RunInfo).
FAULT_FLAG_USER = 0x40


class Op(enum.IntEnum):
    """Userfaultfd ioctl request numbers (_IOC_NR of UFFDIO_*)."""

    REGISTER = 0x00
    UNREGISTER = 0x01
    WAKE = 0x02
    COPY = 0x03
    ZEROPAGE = 0x04
    MOVE = 0x05
    WRITEPROTECT = 0x06
    CONTINUE = 0x07
    POISON = 0x08
    API = 0x3F


# Mode bits that mean "do not wake", per op (include/uapi/linux/userfaultfd.h).
DONTWAKE_BIT = {
    Op.COPY: MODE_DONTWAKE,
    Op.ZEROPAGE: MODE_DONTWAKE,
    Op.CONTINUE: MODE_DONTWAKE,
    Op.POISON: MODE_DONTWAKE,
    Op.MOVE: MODE_DONTWAKE,
    Op.WRITEPROTECT: WP_MODE_DONTWAKE,
}


class RawEvent(ctypes.Structure):
    """Byte-for-byte mirror of ``struct uffdtrace_event``."""

    _pack_ = 8
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("kind", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("tgid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
        ("ctx", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("ret", ctypes.c_int64),
        ("peer_tid", ctypes.c_uint32),
        ("op", ctypes.c_uint32),
        ("aux", ctypes.c_uint64),
        ("peer2_tid", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
    ]


RECORD_SIZE = ctypes.sizeof(RawEvent)
FIELD_NAMES = tuple(field[0] for field in RawEvent._fields_)
# The same layout as a struct format, derived from RawEvent (decoding with
# struct is several times faster than through ctypes; the fields are naturally
# aligned, so "<" adds no padding).
_CODES: dict[Any, str] = {ctypes.c_uint64: "Q", ctypes.c_uint32: "I", ctypes.c_int64: "q"}
RECORD = struct.Struct("<" + "".join(_CODES.get(f[1]) or f"{ctypes.sizeof(f[1])}s" for f in RawEvent._fields_))
assert RECORD.size == RECORD_SIZE
_KINDS = {k.value: k for k in Kind}


class RawField(enum.IntEnum):
    """A field's position in a record unpacked as a tuple (RECORD.iter_unpack):
    readers of raw tuples (the capture reader) name fields through this."""

    TS_NS = 0
    KIND = 1
    CPU = 2
    TGID = 3
    TID = 4
    COMM = 5
    CTX = 6
    ADDR = 7
    LEN = 8
    FLAGS = 9
    MODE = 10
    RET = 11
    PEER_TID = 12
    OP = 13
    AUX = 14
    PEER2_TID = 15
    COUNT = 16


assert tuple(f.name.lower() for f in RawField) == FIELD_NAMES


@dataclass(slots=True)
class Event:
    """One decoded record. Decoding builds it positionally (fast); anything
    else builds it by keyword (``Event(ts_ns=..., kind=Kind.FAULT, tid=...)``):
    a field left out is 0."""

    ts_ns: int
    kind: Kind
    cpu: int = 0
    tgid: int = 0
    tid: int = 0
    comm: str = ""
    ctx: int = 0
    addr: int = 0
    len: int = 0
    flags: int = 0
    mode: int = 0
    ret: int = 0
    peer_tid: int = 0
    op: int = 0
    aux: int = 0
    peer2_tid: int = 0
    count: int = 0

    @property
    def dontwake(self) -> bool:
        bit = DONTWAKE_BIT.get(Op(self.op)) if self.op in Op._value2member_map_ else None
        return bool(bit and self.mode & bit)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "event", "kind": self.kind.name.lower()}
        for name in FIELD_NAMES:
            if name != "kind":
                out[name] = getattr(self, name)
        if self.kind in (Kind.RESOLVE, Kind.UFFD_REGISTER, Kind.UFFD_API):
            out["op"] = op_name(self.op)
            out["dontwake"] = self.dontwake
        return out


class Folded:
    """A FAULT_STATE or LIFECYCLE record read with its own meanings: a fault
    the kernel folded (bpf/fold.h). The one place those meanings are written
    in Python: the live source builds such records with ``record``, the
    correlator reads them through the properties."""

    __slots__ = ("ev",)

    def __init__(self, ev: Event) -> None:
        self.ev = ev

    @property
    def raised_ns(self) -> int:
        return self.ev.len

    @property
    def slept_ns(self) -> int:
        """When it slept in handle_userfault (0: not seen asleep)."""
        return self.ev.mode

    @property
    def read_ns(self) -> int:
        """When its message was first read (0: not read)."""
        return self.ev.aux

    @property
    def reader_tid(self) -> int:
        return self.ev.peer_tid

    @property
    def messages(self) -> int:
        """Messages read for it."""
        return self.ev.count

    @property
    def woken_ns(self) -> int:
        """When it was woken (0: not yet)."""
        return self.ev.ret

    @property
    def waker_tid(self) -> int:
        """The waker (for LIFECYCLE, also the resolver)."""
        return self.ev.peer2_tid

    @property
    def resolve_op(self) -> int:
        return self.ev.op & FoldBit.OP_MASK

    @property
    def via_read(self) -> bool:
        return bool(self.ev.op & FoldBit.VIA_READ)

    @property
    def by_closer(self) -> bool:
        return bool(self.ev.op & FoldBit.CLOSER)

    @property
    def refault(self) -> bool:
        return bool(self.ev.op & FoldBit.REFAULT)

    @staticmethod
    def record(*, kind: Kind, ts_ns: int, cpu: int, tgid: int, tid: int, comm: str, uffd: int, page: int,
               error_code: int, raised_ns: int, slept_ns: int, read_ns: int, reader_tid: int, messages: int,
               woken_ns: int, waker_tid: int, op_bits: int) -> Event:
        """The record for a folded fault, by meaning (the live source builds
        FAULT_STATE records from the kernel's map entries)."""
        return Event(ts_ns=ts_ns, kind=kind, cpu=cpu, tgid=tgid, tid=tid, comm=comm, ctx=uffd, addr=page,
                     len=raised_ns, flags=error_code, mode=slept_ns, ret=woken_ns, peer_tid=reader_tid, op=op_bits,
                     aux=read_ns, peer2_tid=waker_tid, count=messages)


_OP_NAMES = {op.value: op.name.lower() for op in Op}


def op_name(op: int) -> str:
    return _OP_NAMES.get(op) or f"ioctl_{op:#x}"


class PointerIds:
    """Replaces kernel pointers by small ids, in order of first sighting."""

    def __init__(self) -> None:
        self.known: dict[int, int] = {}  # pointer -> id, for lookups without a call
        self._pointers: dict[int, int] = {}  # id -> pointer

    def __call__(self, pointer: int) -> int:
        if pointer == 0:
            return 0
        found = self.known.get(pointer)
        if found is None:
            found = self.known[pointer] = len(self.known) + 1
            self._pointers[found] = pointer
        return found

    def pointer(self, uffd: int) -> int | None:
        """The kernel value behind an id (never printed: for questions to the kernel)."""
        return self._pointers.get(uffd)


def slot_layout(header: int, slot: int) -> struct.Struct:
    """Records laid out every ``slot`` bytes after a ``header`` (a ring buffer's)."""
    return struct.Struct(f"<{header}x{RECORD.format[1:]}{slot - header - RECORD_SIZE}x")


class _Comms(dict[bytes, str]):
    """comm[16] as the kernel wrote it -> text, decoded once per distinct name;
    ``raw`` maps back (a capture keeps the bytes, even where they are not UTF-8)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: dict[str, bytes] = {}

    def __missing__(self, raw: bytes) -> str:
        if len(self) >= 65536:  # names are few; a fork storm must not grow this without end
            self.clear()
            self.raw.clear()
        text = self[raw] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        self.raw.setdefault(text, raw)
        return text


_COMMS = _Comms()


def decode_comm(raw: bytes) -> str:
    return _COMMS[raw]


def decode_many(data: bytes, ids: PointerIds, layout: struct.Struct = RECORD) -> list[Event]:
    """Decode back-to-back records (one C call to split them); ``ids`` hides kernel pointers."""
    kinds, comms, known = _KINDS, _COMMS, ids.known
    return [Event(ts_ns, kinds[kind], cpu, tgid, tid, comms[comm], known.get(ctx) or ids(ctx),
                  addr, length, flags, mode, ret, peer_tid, op, aux, peer2_tid, count)
            for (ts_ns, kind, cpu, tgid, tid, comm, ctx, addr, length, flags, mode, ret, peer_tid, op, aux,
                 peer2_tid, count)
            in layout.iter_unpack(data)]


def encode_many(events: list[Event]) -> bytes:
    """Records for ``events``, back to back (what decode_many read, pointers now ids)."""
    pack, raw = RECORD.pack, _COMMS.raw
    return b"".join([pack(e.ts_ns, e.kind, e.cpu, e.tgid, e.tid, raw.get(e.comm) or e.comm.encode(), e.ctx, e.addr,
                          e.len, e.flags, e.mode, e.ret, e.peer_tid, e.op, e.aux, e.peer2_tid, e.count)
                     for e in events])


def decode(data: bytes, ids: PointerIds) -> Event:
    """Decode one record."""
    return decode_many(data[:RECORD_SIZE], ids)[0]
