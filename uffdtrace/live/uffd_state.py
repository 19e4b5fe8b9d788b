"""What the kernel holds for every uffd now (bpf/why.c, a BPF iterator over
every process's files, run once): who holds a descriptor on each uffd, and
the waiters on its queues (faults queued unread, faults read and not woken,
events queued for their read). For `uffdtrace why`; no tracing, no probe."""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from ..errors import UffdtraceError
from . import offsets, probes
from .btf import BtfError
from .kallsyms import Kallsyms

# bpf/why.c struct why_record
RECORD = struct.Struct("<6IQ4Q")
FILE, QUEUED, READ, EVENT, MORE = range(5)
NEEDS = ("OFF_FILE_F_OP", "OFF_FOPS_POLL", "OFF_FILE_PRIVATE_DATA", "OFF_FILE_F_INODE", "OFF_INODE_INO",
         "OFF_CTX_FAULT_PENDING_WQH", "OFF_CTX_FAULT_WQH", "OFF_CTX_EVENT_WQH", "OFF_CTX_RELEASED",
         "OFF_CTX_FEATURES", "OFF_WQH_HEAD", "OFF_WQE_ENTRY", "OFF_WQE_PRIVATE", "OFF_UWQ_WQ", "OFF_UWQ_MSG",
         "OFF_TASK_PID", "OFF_TASK_TGID")


@dataclass(frozen=True)
class Waiter:
    """A thread on one of a uffd's queues, with the message it queued."""

    tid: int
    tgid: int
    event: int  # uffd_msg.event (0x12: a page fault)
    args: tuple[int, int, int]  # uffd_msg.arg words: pagefault flags, address, ptid; an event's range


@dataclass
class Uffd:
    ino: int
    released: bool = False
    features: int = 0
    holders: dict[int, list[int]] = field(default_factory=dict)  # pid -> its descriptors on it
    queued: list[Waiter] = field(default_factory=list)  # faults whose message nobody has read
    read: list[Waiter] = field(default_factory=list)  # faults read, not woken yet
    events: list[Waiter] = field(default_factory=list)  # events queued for their read
    truncated: bool = False  # a queue held more waiters than bpf/why.c sends (MAX_WAITERS)


def parse(data: bytes) -> dict[int, Uffd]:
    """The iterator's records; each uffd's queues once (every holder sends them)."""
    out: dict[int, Uffd] = {}
    current: tuple[int, int] | None = None  # (uffd, holder) whose queues follow
    whole = len(data) - len(data) % RECORD.size
    for kind, fd, holder, tid, tgid, released, ino, *msg in RECORD.iter_unpack(data[:whole]):
        u = out.get(ino)
        if kind == FILE:
            current = (ino, holder) if u is None else None
            u = out.setdefault(ino, Uffd(ino, bool(released), msg[0]))
            u.holders.setdefault(holder, []).append(fd)
            continue
        if u is None:
            continue
        if current != (ino, holder):
            continue  # the same queues, sent again after another descriptor
        if kind == MORE:
            u.truncated = True
            continue
        waiter = Waiter(tid, tgid, msg[0] & 0xFF, (msg[1], msg[2], msg[3]))
        {QUEUED: u.queued, READ: u.read, EVENT: u.events}[kind].append(waiter)
    return out


def _iterate(bpf: Any) -> bytes:
    """Attach the iterator and read it to its end (bcc has no Python call for it)."""
    from bcc import BPF, lib

    fn = bpf.load_func("bpf_iter__task_file", BPF.TRACING)
    lib.bcc_iter_attach.restype = ctypes.c_int
    lib.bcc_iter_attach.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
    lib.bcc_iter_create.restype = ctypes.c_int
    lib.bcc_iter_create.argtypes = [ctypes.c_int]
    link = lib.bcc_iter_attach(fn.fd, None, 0)
    if link < 0:
        raise UffdtraceError(f"cannot attach the task_file BPF iterator (needs v5.8+): {os.strerror(-link)}")
    try:
        it = lib.bcc_iter_create(link)
        if it < 0:
            raise UffdtraceError(f"cannot run the task_file BPF iterator: {os.strerror(-it)}")
        chunks = []
        try:
            while chunk := os.read(it, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(it)
    finally:
        os.close(link)
    return b"".join(chunks)


def snapshot() -> dict[int, Uffd]:
    """Every uffd on the host by inode, as the kernel holds it now (root)."""
    try:
        member_offsets = offsets.load()
    except BtfError as exc:
        raise UffdtraceError(f"cannot read kernel BTF: {exc}") from exc
    missing = [m for m in NEEDS if m not in member_offsets]
    if missing:
        raise UffdtraceError(f"the kernel's BTF lacks {', '.join(missing)}: cannot walk the uffds' queues")
    poll = Kallsyms.load().address("userfaultfd_poll")
    if not poll:
        raise UffdtraceError("userfaultfd_poll is not in kallsyms: is CONFIG_USERFAULTFD enabled?")
    from bcc import BPF  # system package, imported only once root is checked

    defines: dict[str, int | None] = {m: member_offsets[m] for m in NEEDS}
    defines["USERFAULTFD_POLL"] = poll
    try:
        bpf = BPF(text=probes.source_text("why.c"), cflags=probes.cflags(defines))
    except Exception as exc:  # bcc raises bare Exception for compile/load errors
        raise UffdtraceError(f"bcc could not compile/load the uffd walk: {exc}") from exc
    try:
        return parse(_iterate(bpf))
    finally:
        bpf.cleanup()
