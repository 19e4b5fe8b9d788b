"""kprobe mode (README, "Modes"; docs/architecture.md, "The BPF programs"): attach points chosen from what the running
kernel has (kallsyms, BTF member offsets), compiled with bcc, attached one by
one. A probe whose symbol or struct members are missing is reported, not
fatal: the rest keeps working."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from ..errors import UffdtraceError
from . import kernel, offsets
from .btf import BtfError
from .kallsyms import Symbols
from .kernel import Features
from .probes import Backend, Candidate, Plan, ProbeStatus

# Deep enough for every thread of a large VMM to sit in handle_userfault at
# once (the kernel caps maxactive at 4096; the default is ~2 * ncpus).
KRETPROBE_MAXACTIVE = 4096


@dataclass(frozen=True)
class ProbeSpec:
    """One probe: the first candidate the kernel has is used."""

    name: str
    candidates: tuple[Candidate, ...]
    return_fn: str | None = None
    events_only: bool = False  # its records only matter to --events: attached only then


_FAULT_MEMBERS = ("OFF_VM_FAULT_VMA", "OFF_VM_FAULT_ADDRESS", "OFF_VM_FAULT_FLAGS", "OFF_VMA_UFFD_CTX")
_WAKE_MEMBERS = ("OFF_UWQ_MSG", "OFF_UWQ_WQ", "OFF_UWQ_CTX", "OFF_MSG_ADDRESS", "OFF_WQE_PRIVATE",
                 "OFF_TASK_PID", "OFF_TASK_TGID")
_AIO_MEMBERS = ("OFF_POLL_FILE", "OFF_POLL_EVENTS", "OFF_POLL_WAIT", "OFF_POLL_WORK", "OFF_KIOCB_POLL",
                "OFF_KIOCB_RES_DATA", "OFF_KIOCB_RES_OBJ", "OFF_KIOCB_RES_RES", "OFF_FILE_F_OP",
                "OFF_FILE_PRIVATE_DATA")
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
    ProbeSpec("wake_range", (Candidate("__wake_userfault", "kp___wake_userfault"),), events_only=True),
    ProbeSpec("wake_task", (Candidate("userfaultfd_wake_function", "kp_userfaultfd_wake_function",
                                      _WAKE_MEMBERS),), "kr_userfaultfd_wake_function"),
    ProbeSpec("aio_poll_wake", (Candidate("aio_poll_wake", "kp_aio_poll_wake", _AIO_MEMBERS),),
              "kr_aio_poll_wake"),
    ProbeSpec("aio_poll_work", (Candidate("aio_poll_complete_work", "kp_aio_poll_complete_work",
                                          (*_AIO_MEMBERS, "OFF_WQE_ENTRY")),), "kr_aio_poll_complete_work"),
    ProbeSpec("aio_complete", (Candidate("aio_complete", "kp_aio_complete", _AIO_MEMBERS),)),
    ProbeSpec("anon_vma_lock", (
        Candidate("folio_lock_anon_vma_read", "kp_anon_vma_read", ("OFF_PAGE_MAPPING",), why="folio API, 5.18+"),
        Candidate("page_lock_anon_vma_read", "kp_anon_vma_read", ("OFF_PAGE_MAPPING",),
                  why="before the folio conversion"),
    ), "kr_anon_vma_read"),
    # Static in fs/userfaultfd.c and called from four places; present
    # (not inlined) in Debian's 6.1 and 6.12 builds. Without it no event
    # lifecycle is seen (the event messages' reads still are).
    ProbeSpec("event_wait", (Candidate("userfaultfd_event_wait_completion", "kp_event_wait", ("OFF_UWQ_MSG",)),),
              "kr_event_wait"),
    ProbeSpec("close", (Candidate("userfaultfd_release", "kp_userfaultfd_release",
                                  ("OFF_FILE_PRIVATE_DATA",)),)),
)


def plan(kallsyms: Symbols, offsets: dict[str, int]) -> Plan:
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
    result.defines["ANON_VMA_READ_START"] = sym.start if sym else 0
    result.defines["ANON_VMA_READ_END"] = sym.end if sym else 0
    fops = kallsyms.address("userfaultfd_fops")
    if fops:  # needs CONFIG_KALLSYMS_ALL; without it aio polls are filtered by process only
        result.defines["UFFD_FOPS"] = fops
    return result


def attach(bpf: Any, the_plan: Plan) -> None:
    """Attach every chosen probe; record per-probe success or the error."""
    for status in the_plan.status:
        cand = the_plan.chosen.get(status.name)
        if cand is None:
            continue
        spec = next(s for s in PROBES if s.name == status.name)
        if spec.events_only and "EVERY_RECORD" not in the_plan.defines:
            status.detail = "not attached: its records are sent only with --events"
            continue
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


class KprobeBackend(Backend):
    mode = "kprobe"
    program = "kprobe.c"
    sees_returns = True
    learns_every_uffd = False

    def plan(self, kallsyms: Symbols, features: Features) -> Plan:
        try:
            member_offsets = offsets.load()
        except BtfError as exc:
            raise UffdtraceError(f"cannot read kernel BTF: {exc}") from exc
        the_plan = plan(kallsyms, member_offsets)
        if "fault" not in the_plan.chosen:
            raise UffdtraceError("handle_userfault is not in kallsyms: is CONFIG_USERFAULTFD enabled?")
        return the_plan

    def degraded(self, the_plan: Plan) -> list[str]:
        return [f"{s.name} ({s.detail})" for s in the_plan.status if s.symbol is None]

    def vma_lock_flag(self, the_plan: Plan) -> int | None:
        value = the_plan.defines.get("FAULT_FLAG_VMA_LOCK_VALUE")
        return value if isinstance(value, int) else 0

    _inodes_distinct: bool | None = None

    def uffd_inode(self, bpf: Any, the_plan: Plan, uffd: int) -> int | None:
        """Learned by bpf/kprobe.c where a file was at hand (a read, an
        ioctl); of no use where every uffd shares the anon inode (before v5.12)."""
        if self._inodes_distinct is None:
            self._inodes_distinct = kernel.uffd_inodes_distinct()
        ino = bpf["uffd_inode"].get(ctypes.c_uint64(uffd)) if self._inodes_distinct else None
        return None if ino is None else int(ino.value)

    def attach(self, bpf: Any, the_plan: Plan) -> None:
        attach(bpf, the_plan)
        if not any(s.attached for s in the_plan.status):
            raise UffdtraceError("no probe could be attached: see 'uffdtrace doctor'")
