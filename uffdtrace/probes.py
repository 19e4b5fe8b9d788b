"""Kprobe-mode attach points (DESIGN.md §3.1): chosen from what the running
kernel has, compiled with bcc, attached one by one.

A probe whose symbol or struct members are missing is reported, not fatal:
the rest keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UffdtraceError
from .kallsyms import Kallsyms

BPF_DIR = Path(__file__).resolve().parent / "bpf"
if not BPF_DIR.is_dir():  # running from a source checkout
    BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"

# Deep enough for every thread of a large VMM to sit in handle_userfault at
# once (the kernel caps maxactive at 4096; the default is ~2 * ncpus).
KRETPROBE_MAXACTIVE = 4096


@dataclass(frozen=True)
class Candidate:
    symbol: str
    entry_fn: str
    needs: tuple[str, ...] = ()
    why: str = ""


@dataclass(frozen=True)
class ProbeSpec:
    """One row of DESIGN §3.1: the first candidate the kernel has is used."""

    name: str
    candidates: tuple[Candidate, ...]
    return_fn: str | None = None


_FAULT_MEMBERS = ("OFF_VM_FAULT_VMA", "OFF_VM_FAULT_ADDRESS", "OFF_VM_FAULT_FLAGS", "OFF_VMA_UFFD_CTX")
_WAKE_MEMBERS = ("OFF_UWQ_MSG", "OFF_UWQ_WQ", "OFF_UWQ_CTX", "OFF_MSG_ADDRESS", "OFF_WQE_PRIVATE",
                 "OFF_TASK_PID", "OFF_TASK_TGID")
_AIO_MEMBERS = ("OFF_POLL_FILE", "OFF_POLL_EVENTS", "OFF_POLL_WAIT", "OFF_POLL_WORK", "OFF_KIOCB_POLL",
                "OFF_KIOCB_RES_DATA", "OFF_KIOCB_RES_OBJ", "OFF_KIOCB_RES_RES", "OFF_FILE_F_OP")
_READ_ITER_MEMBERS = ("OFF_KIOCB_FILP", "OFF_IOV_ITER_TYPE", "OFF_IOV_ITER_UBUF", "OFF_IOV_ITER_IOV",
                      "OFF_IOV_ITER_IOV_OFFSET", "ITER_UBUF_VALUE", "ITER_IOVEC_VALUE")

PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec("fault", (Candidate("handle_userfault", "kp_handle_userfault", _FAULT_MEMBERS),),
              "kr_handle_userfault"),
    ProbeSpec("read", (
        Candidate("userfaultfd_read", "kp_userfaultfd_read", ("OFF_FILE_PRIVATE_DATA",), "up to 6.9"),
        # 6.10: Jens Axboe, "userfaultfd: convert to ->read_iter()".
        Candidate("userfaultfd_read_iter", "kp_userfaultfd_read_iter",
                  ("OFF_FILE_PRIVATE_DATA", *_READ_ITER_MEMBERS), "6.10+"),
    ), "kr_userfaultfd_read"),
    ProbeSpec("resolve", (Candidate("userfaultfd_ioctl", "kp_userfaultfd_ioctl", ("OFF_FILE_PRIVATE_DATA",)),),
              "kr_userfaultfd_ioctl"),
    # __wake_userfault is static and may be inlined into userfaultfd_ioctl;
    # wake_userfault itself is __always_inline and never probe-able.
    ProbeSpec("wake_range", (Candidate("__wake_userfault", "kp___wake_userfault"),)),
    ProbeSpec("wake_task", (Candidate("userfaultfd_wake_function", "kp_userfaultfd_wake_function",
                                      _WAKE_MEMBERS),), "kr_userfaultfd_wake_function"),
    ProbeSpec("aio_poll_wake", (Candidate("aio_poll_wake", "kp_aio_poll_wake", _AIO_MEMBERS),),
              "kr_aio_poll_wake"),
    ProbeSpec("aio_poll_work", (Candidate("aio_poll_complete_work", "kp_aio_poll_complete_work",
                                          _AIO_MEMBERS),)),
    ProbeSpec("aio_complete", (Candidate("aio_complete", "kp_aio_complete", _AIO_MEMBERS),)),
    ProbeSpec("anon_vma_lock", (
        Candidate("folio_lock_anon_vma_read", "kp_anon_vma_read", why="folio API, 5.18+"),
        Candidate("page_lock_anon_vma_read", "kp_anon_vma_read", why="before the folio conversion"),
    ), "kr_anon_vma_read"),
    ProbeSpec("close", (Candidate("userfaultfd_release", "kp_userfaultfd_release",
                                  ("OFF_FILE_PRIVATE_DATA",)),)),
)


@dataclass
class ProbeStatus:
    name: str
    symbol: str | None
    attached: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"probe": self.name, "symbol": self.symbol, "attached": self.attached, "detail": self.detail}


@dataclass
class Plan:
    """What will be attached where, and the -D flags for the C code."""

    chosen: dict[str, Candidate] = field(default_factory=dict)
    status: list[ProbeStatus] = field(default_factory=list)
    defines: dict[str, int | None] = field(default_factory=dict)
    fatal: list[str] = field(default_factory=list)  # why the mode cannot run at all


def plan(kallsyms: Kallsyms, offsets: dict[str, int]) -> Plan:
    result = Plan(defines={k: v for k, v in offsets.items()})
    for spec in PROBES:
        reasons = []
        for cand in spec.candidates:
            missing = [m for m in cand.needs if m not in offsets]
            if cand.symbol not in kallsyms:
                reasons.append(f"{cand.symbol} not in kallsyms")
            elif missing:
                reasons.append(f"{cand.symbol}: BTF lacks {', '.join(missing)}")
            else:
                result.chosen[spec.name] = cand
                result.status.append(ProbeStatus(spec.name, cand.symbol, False, cand.why or "found"))
                break
        else:
            result.status.append(ProbeStatus(spec.name, None, False, "; ".join(reasons)))
    # Every required member gets a definition so the C compiles; the probes
    # that lack one are not attached.
    for spec in PROBES:
        for cand in spec.candidates:
            for member in cand.needs:
                if member not in _READ_ITER_MEMBERS:
                    result.defines.setdefault(member, 0)
    lock = result.chosen.get("anon_vma_lock")
    sym = kallsyms.symbol(lock.symbol) if lock else None
    result.defines["FLAVR_START"] = sym.start if sym else 0
    result.defines["FLAVR_END"] = sym.end if sym else 0
    fops = kallsyms.address("userfaultfd_fops")
    if fops:  # needs CONFIG_KALLSYMS_ALL; without it aio polls are filtered by process only
        result.defines["UFFD_FOPS"] = fops
    return result


# Tracepoint mode (DESIGN §3.2): each capability, the tracepoints it needs
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
                       "fault reason (inferred from error_code)", "anon_vma retries")

# -D name pairs for the stack-attribution ranges.
_RANGE_DEFINES = {"handle_userfault": "HU", "userfaultfd_wake_function": "UWF", "__wake_up": "WU",
                  "folio_lock_anon_vma_read": "FLAVR"}
_REQUIRED_TRACEPOINT_CAPS = ("block", "wake_task", "read", "resolve")


def tracepoint_plan(kallsyms: Kallsyms, tracefs: Path) -> Plan:
    result = Plan()
    for name, prefix in _RANGE_DEFINES.items():
        sym = kallsyms.symbol(name)
        result.defines[f"{prefix}_START"] = sym.start if sym else 0
        result.defines[f"{prefix}_END"] = sym.end if sym else 0
    result.defines["APCW"] = kallsyms.address("aio_poll_complete_work") or 0
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


def cflags(defines: dict[str, int | None]) -> list[str]:
    # -w: warnings come from the kernel's own headers (often another build's,
    # see scripts/setup.sh); nothing a user can act on. Errors still show.
    flags = [f"-I{BPF_DIR}", "-w"]
    for name, value in sorted(defines.items()):
        flags.append(f"-D{name}" if value is None else f"-D{name}={value}ULL")
    return flags


def attach(bpf: Any, the_plan: Plan) -> None:
    """Attach every chosen probe; record per-probe success or the error."""
    for status in the_plan.status:
        cand = the_plan.chosen.get(status.name)
        if cand is None:
            continue
        spec = next(s for s in PROBES if s.name == status.name)
        try:
            bpf.attach_kprobe(event=cand.symbol, fn_name=cand.entry_fn)
            if spec.return_fn:
                bpf.attach_kretprobe(event=cand.symbol, fn_name=spec.return_fn, maxactive=KRETPROBE_MAXACTIVE)
            if status.name == "anon_vma_lock":
                bpf.attach_kprobe(event="down_read_trylock", fn_name="kp_down_read_trylock")
        except Exception as exc:  # bcc raises plain Exception on attach failure
            status.detail = f"attach failed: {exc}"
            continue
        status.attached = True


def source_text(program: str) -> str:
    """The program with common.h pasted in: bcc generates tracepoint argument
    structs only for TRACEPOINT_PROBEs in the main file, not in headers."""
    try:
        text = (BPF_DIR / program).read_text()
        return text.replace('#include "common.h"', (BPF_DIR / "common.h").read_text(), 1)
    except OSError as exc:
        raise UffdtraceError(f"BPF source missing ({exc.filename}): reinstall uffdtrace") from exc
