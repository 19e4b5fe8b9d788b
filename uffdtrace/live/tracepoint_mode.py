"""tracepoint mode (README, "Modes"; docs/architecture.md, "The BPF programs"), for kernels without kprobes or fentry:
the same records from tracepoints, stack attribution through kallsyms
address ranges, and the uffds that existed before tracing learnt from
/proc."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UffdtraceError
from .kallsyms import Kallsyms
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
                         "read/readv on a known uffd fd"),
    TracepointCapability("resolve", ("syscalls/sys_enter_ioctl",), (), "ioctls on a known uffd fd"),
    TracepointCapability("close", ("syscalls/sys_enter_close",), (), "close of a known uffd fd"),
    TracepointCapability("aio_poll", ("syscalls/sys_enter_io_submit", "syscalls/sys_enter_io_getevents"), (),
                         "IOCB_CMD_POLL submitted on a uffd and collected"),
    TracepointCapability("aio_pgetevents", ("syscalls/sys_enter_io_pgetevents",), (),
                         "completions collected by io_pgetevents (4.18+)", "HAVE_IO_PGETEVENTS"),
    TracepointCapability("aio_poll_work", ("workqueue/workqueue_queue_work",), ("aio_poll_complete_work",),
                         "poll wake-ups deferred to the workqueue"),
    # lock:contention_begin arrived in 5.19 (f4aed1b1a8f3, "locking: Add lock contention tracepoints").
    TracepointCapability("anon_vma_lock", ("lock/contention_begin",), ("folio_lock_anon_vma_read",),
                         "contended anon_vma locks in folio_lock_anon_vma_read (no retry count)",
                         "HAVE_LOCK_CONTENTION"),
)

# What tracepoint mode cannot see at all (recorded in headers and doctor).
TRACEPOINT_DEGRADED = ("fault_ret", "wake_range", "aio_poll_wake", "ctx is (tgid, fd), not the kernel object",
                       "fault reason (inferred from error_code)", "anon_vma retries",
                       "faults taken through get_user_pages (no page-fault exception)")

# -D name pairs for the stack-attribution ranges (bpf/stacks.h): the first of
# the symbols that kallsyms has. PAGE_FAULT, any page fault's entry: exc_page_fault since 5.8
# (91eeafea1e4b, "x86/entry: Switch page fault exception to IDTENTRY_RAW"),
# do_page_fault before; without either, a thread's fault is never taken as
# over from its sleeps (more stack walks, nothing missed).
_RANGE_DEFINES = {"HANDLE_USERFAULT": ("handle_userfault",), "WAKE_FUNCTION": ("userfaultfd_wake_function",),
                  "WAKE_UP": ("__wake_up",), "ANON_VMA_READ": ("folio_lock_anon_vma_read",),
                  "PAGE_FAULT": ("exc_page_fault", "do_page_fault")}
_REQUIRED_TRACEPOINT_CAPS = ("block", "wake_task", "read", "resolve")


def tracepoint_plan(kallsyms: Kallsyms, tracefs: Path) -> Plan:
    result = Plan()
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

    def plan(self, kallsyms: Kallsyms, features: Features) -> Plan:
        assert features.tracefs is not None  # source.check_environment made sure
        the_plan = tracepoint_plan(kallsyms, features.tracefs)
        why = tracepoint_mode_unusable(the_plan)
        if why:
            raise UffdtraceError(f"tracepoint mode cannot work on this kernel: {why}")
        return the_plan

    def degraded(self, the_plan: Plan) -> list[str]:
        return degraded(the_plan)

    def learn(self, bpf: Any, found: list[UffdProcess]) -> list[int]:
        """This mode sees uffds created from now on; the ones that already
        exist, and their registered ranges, come from /proc."""
        users, fds, ranges = bpf["uffd_users"], bpf["uffd_fds"], bpf["ranges"]
        for proc in found:
            users[ctypes.c_uint32(proc.pid)] = ctypes.c_uint8(1)
            for ufd in proc.fds:
                fds[ctypes.c_uint64(proc.pid << 32 | ufd.fd)] = ctypes.c_uint8(1)
            # /proc does not say which uffd a range belongs to: the first one.
            owner = proc.pid << 32 | proc.fds[0].fd
            rs = ranges.Leaf()
            for i, (start, end) in enumerate(proc.ranges[: len(rs.start)]):
                rs.start[i], rs.end[i], rs.uffd[i] = start, end, owner
            ranges[ctypes.c_uint32(proc.pid)] = rs
        return [p.pid for p in found]
