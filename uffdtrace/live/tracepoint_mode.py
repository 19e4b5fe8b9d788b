"""tracepoint mode (README, "Modes"; docs/architecture.md, "The BPF programs"), for kernels without kprobes or fentry:
the same records from tracepoints, stack attribution through kallsyms
address ranges, and the uffds that existed before tracing learnt from
/proc."""

from __future__ import annotations

import ctypes
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UffdtraceError
from . import kernel, offsets, procscan
from .btf import BtfError
from .kallsyms import Symbols
from .kernel import Features
from .probes import Backend, Plan, ProbeStatus
from .procscan import UffdProcess


# Each capability, the tracepoints it needs
# and the kallsyms functions whose address ranges attribute stacks to it.
@dataclass(frozen=True)
class TracepointCapability:
    name: str
    tracepoints: tuple[str, ...]
    symbols: tuple[str, ...]
    what: str
    define: str | None = None  # -D set when the tracepoints exist (else the code is left out)


TRACEPOINT_CAPS: tuple[TracepointCapability, ...] = (
    TracepointCapability("fault", ("exceptions/page_fault_user", "exceptions/page_fault_kernel"), (),
                         "page faults inside registered ranges", "HAVE_PF_TRACEPOINTS"),
    TracepointCapability("block", ("sched/sched_switch",), ("handle_userfault",),
                         "sleeps whose kernel stack holds handle_userfault"),
    TracepointCapability("wake_task", ("sched/sched_waking",), ("userfaultfd_wake_function", "__wake_up"),
                         "wake-ups whose waker stack holds userfaultfd_wake_function"),
    TracepointCapability("read", ("syscalls/sys_enter_read", "syscalls/sys_enter_readv"), (),
                         "read/readv on a uffd, through any process's descriptor"),
    TracepointCapability("resolve", ("syscalls/sys_enter_ioctl",), (),
                         "ioctls on a uffd, through any process's descriptor"),
    TracepointCapability("close", ("syscalls/sys_enter_close",), (), "every holder's close of a uffd descriptor"),
    TracepointCapability("aio_poll", ("syscalls/sys_enter_io_submit", "syscalls/sys_enter_io_getevents"), (),
                         "IOCB_CMD_POLL submitted on a uffd and collected"),
    TracepointCapability("aio_pgetevents", ("syscalls/sys_enter_io_pgetevents",), (),
                         "completions collected by io_pgetevents (4.18+)", "HAVE_IO_PGETEVENTS"),
    TracepointCapability("aio_poll_work", ("workqueue/workqueue_queue_work",), ("aio_poll_complete_work",),
                         "poll wake-ups deferred to the workqueue"),
    TracepointCapability("event_wait", ("syscalls/sys_enter_madvise", "syscalls/sys_enter_munmap",
                                        "syscalls/sys_enter_mremap", "syscalls/sys_enter_clone"),
                         ("userfaultfd_event_wait_completion",),
                         "madvise, munmap, mremap and fork waiting for their uffd event to be read",
                         "HAVE_EVENT_WAITS"),
    # clone3 arrived in 5.3 (7f192e3cd316, "fork: add clone3").
    TracepointCapability("event_clone3", ("syscalls/sys_enter_clone3",), (),
                         "fork through clone3 waiting for its uffd event to be read", "HAVE_CLONE3"),
    # lock:contention_begin arrived in 5.19 (f4aed1b1a8f3, "locking: Add lock contention tracepoints").
    TracepointCapability("anon_vma_lock", ("lock/contention_begin",), ("folio_lock_anon_vma_read",),
                         "contended anon_vma locks in folio_lock_anon_vma_read (no retry count)",
                         "HAVE_LOCK_CONTENTION"),
)

# What tracepoint mode cannot see at all (recorded in headers and doctor).
TRACEPOINT_DEGRADED = ("fault_ret", "wake_range", "aio_poll_wake", "fault reason (inferred from error_code)",
                       "anon_vma retries",
                       "faults taken through get_user_pages (no page-fault exception)")

# -D name pairs for the stack-attribution ranges (bpf/stacks.h): the first of
# the symbols that kallsyms has. PAGE_FAULT, any page fault's entry: exc_page_fault since 5.8
# (91eeafea1e4b, "x86/entry: Switch page fault exception to IDTENTRY_RAW"),
# do_page_fault before; without either, a thread's fault is never taken as
# over from its sleeps (more stack walks, nothing missed).
_RANGE_DEFINES = {"HANDLE_USERFAULT": ("handle_userfault",), "WAKE_FUNCTION": ("userfaultfd_wake_function",),
                  "WAKE_UP": ("__wake_up",), "ANON_VMA_READ": ("folio_lock_anon_vma_read",),
                  "PAGE_FAULT": ("exc_page_fault", "do_page_fault"),
                  "EVENT_WAIT": ("userfaultfd_event_wait_completion",)}
_REQUIRED_TRACEPOINT_CAPS = ("block", "wake_task", "read", "resolve")


# bpf/uffd_id.h: a descriptor resolved to its uffd through the fd table.
_UFFD_ID_MEMBERS = ("OFF_TASK_FILES", "OFF_FILES_FDT", "OFF_FDTABLE_MAX_FDS", "OFF_FDTABLE_FD", "OFF_FILE_F_OP",
                    "OFF_FOPS_POLL", "OFF_FILE_F_INODE", "OFF_INODE_INO", "OFF_FILE_PRIVATE_DATA")
def uffd_identity(kallsyms: Symbols, member_offsets: dict[str, int] | None) -> tuple[dict[str, int | None], str]:
    """The -D knobs of bpf/uffd_id.h, and how a uffd is known (for doctor
    and the header): by its inode, by its context, or, without BTF or
    userfaultfd_poll, by (tgid, fd) only."""
    poll = kallsyms.address("userfaultfd_poll")
    refs = next((m for m in ("OFF_FILE_F_REF", "OFF_FILE_F_COUNT") if m in (member_offsets or {})), None)
    if member_offsets is None or not poll or refs is None or \
            any(m not in member_offsets for m in _UFFD_ID_MEMBERS):
        return {}, "uffd known by (tgid, fd) only (no BTF or no userfaultfd_poll): a handler in another " \
                   "process is not seen"
    defines: dict[str, int | None] = {m: member_offsets[m] for m in _UFFD_ID_MEMBERS}
    defines.update(UFFD_BY_FILE=None, USERFAULTFD_POLL=poll, OFF_FILE_REFS=member_offsets[refs],
                   FILE_ONE_REF=0 if refs == "OFF_FILE_F_REF" else 1)
    if kernel.uffd_inodes_distinct():
        return defines, "uffd known by its inode, through any process's descriptor"
    defines["UFFD_ID_CTX"] = None
    return defines, "uffd known by its context; uffds opened before tracing are not seen (they share one inode)"


def btf_offsets(btf: bool) -> dict[str, int] | None:
    """The member offsets bpf/uffd_id.h needs, None without BTF."""
    try:
        return offsets.load() if btf else None
    except BtfError:
        return None


def tracepoint_plan(kallsyms: Symbols, tracefs: Path, btf: bool) -> Plan:
    result = Plan()
    identity, how = uffd_identity(kallsyms, btf_offsets(btf))
    result.defines.update(identity)
    result.status.append(ProbeStatus("uffd_identity", "syscalls/sys_enter_*", "UFFD_BY_FILE" in identity, how))
    for prefix, names in _RANGE_DEFINES.items():
        sym = next((found for found in map(kallsyms.symbol, names) if found), None)
        result.defines[f"{prefix}_START"] = sym.start if sym else 0
        result.defines[f"{prefix}_END"] = sym.end if sym else 0
    result.defines["AIO_POLL_COMPLETE_WORK"] = kallsyms.address("aio_poll_complete_work") or 0
    for cap in TRACEPOINT_CAPS:
        missing_tp = [tp for tp in cap.tracepoints if not (tracefs / "events" / tp).is_dir()]
        missing_sym = [s for s in cap.symbols if s not in kallsyms]
        ok = not missing_tp and not missing_sym
        detail = cap.what if ok else "; ".join(
            [f"no tracepoint {tp}" for tp in missing_tp] + [f"{s} not in kallsyms" for s in missing_sym])
        result.status.append(ProbeStatus(cap.name, ",".join(cap.tracepoints), ok, detail))
        if missing_tp and cap.name in _REQUIRED_TRACEPOINT_CAPS:
            result.fatal.append(f"{cap.name}: {', '.join(f'no tracepoint {tp}' for tp in missing_tp)}")
        if cap.define and not missing_tp:
            result.defines[cap.define] = None
    return result


def tracepoint_mode_unusable(the_plan: Plan) -> str | None:
    """Why tracepoint mode cannot work here, or None. Missing tracepoints are
    fatal; missing kallsyms symbols only degrade the events that need them."""
    return "; ".join(the_plan.fatal) or None


def degraded(the_plan: Plan) -> list[str]:
    """What the session cannot see: the mode's blind spots and missing capabilities."""
    missing = [f"{s.name} ({s.detail})" for s in the_plan.status if not s.attached]
    return list(TRACEPOINT_DEGRADED) + missing


class TracepointBackend(Backend):
    mode = "tracepoint"
    program = "tracepoint.c"
    sees_returns = False
    learns_every_uffd = True

    def plan(self, kallsyms: Symbols, features: Features) -> Plan:
        assert features.tracefs is not None  # source.check_environment made sure
        the_plan = tracepoint_plan(kallsyms, features.tracefs, features.btf)
        why = tracepoint_mode_unusable(the_plan)
        if why:
            raise UffdtraceError(f"tracepoint mode cannot work on this kernel: {why}")
        return the_plan

    def degraded(self, the_plan: Plan) -> list[str]:
        return degraded(the_plan)

    def unseen(self, followed: Collection[int], found: list[UffdProcess]) -> list[str]:
        """A process whose registered memory's uffd it holds no descriptor
        of (handed to its handler process before tracing began): /proc does
        not say which uffd the ranges belong to, and this mode knows a
        fault's uffd by its range. Said, not guessed: a wrong uffd would
        make its faults look unread."""
        holding = {p.pid for p in found if p.fds}
        return [f"faults of pid {pid} (its memory is registered with a uffd it handed to another process "
                "before tracing began: kprobe mode sees them)"
                for pid in followed if pid not in holding and procscan.registered_ranges(pid)]

    def uffd_inode(self, bpf: Any, the_plan: Plan, uffd: int) -> int | None:
        """The id is the inode (bpf/uffd_id.h); a context (uffds sharing one
        inode) has none of its own, and a (tgid, fd) without BTF may have
        been closed and reused since."""
        return uffd if "UFFD_BY_FILE" in the_plan.defines and "UFFD_ID_CTX" not in the_plan.defines else None

    def learn(self, bpf: Any, the_plan: Plan, found: list[UffdProcess], followed: Collection[int]) -> list[int]:
        """This mode sees uffds created from now on; the ones that already
        exist, and their registered ranges, come from /proc. A uffd is known
        by its inode (bpf/uffd_id.h), or by (tgid, fd) without BTF; by its
        context, the kernel alone knows it, and its ranges stay unknown.
        A followed process's uffds are followed (bpf/follow.h), so that a
        handler in another process that reads them is seen."""
        by_file = "UFFD_BY_FILE" in the_plan.defines
        if by_file and "UFFD_ID_CTX" in the_plan.defines:
            found = []
        users, ranges, owners = bpf["uffd_users"], bpf["ranges"], bpf["uffd_owner"]
        for proc in found:
            users[ctypes.c_uint32(proc.pid)] = ctypes.c_uint8(1)
            ids = [ufd.ino or 0 if by_file else proc.pid << 32 | ufd.fd for ufd in proc.fds]
            if not by_file:
                for uffd in ids:
                    bpf["uffd_fds"][ctypes.c_uint64(uffd)] = ctypes.c_uint8(1)
            if proc.pid in followed:
                for uffd in filter(None, ids):
                    bpf["follow_ctx"][ctypes.c_uint64(uffd)] = ctypes.c_uint8(1)
            if not proc.ranges or not ids[0]:
                continue
            # /proc does not say which uffd a range belongs to: the first one.
            owners[ctypes.c_uint64(ids[0])] = ctypes.c_uint32(proc.pid)
            rs = ranges.Leaf()
            for i, (start, end) in enumerate(proc.ranges[: len(rs.start)]):
                rs.start[i], rs.end[i], rs.uffd[i] = start, end, ids[0]
            ranges[ctypes.c_uint32(proc.pid)] = rs
        return [p.pid for p in found]
