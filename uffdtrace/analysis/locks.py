"""Which lock each fault ran under, and its fallbacks to mmap_lock (kprobe mode).

Since v6.4 ("mm: add FAULT_FLAG_VMA_LOCK flag") the x86 fault handler first
tries a user fault under the per-VMA lock (lock_vma_under_rcu), with
FAULT_FLAG_VMA_LOCK in vm_fault.flags. Whenever that pass returns
VM_FAULT_RETRY the handler takes mmap_lock and runs the fault again
(arch/x86/mm/fault.c, `lock_mmap:`). For a userfaultfd fault that happens
every time it waits: handle_userfault drops the VMA lock before it sleeps and
always returns VM_FAULT_RETRY, so the second pass, under mmap_lock, finds the
page (or enters handle_userfault again: a new round). A user fault that
reaches handle_userfault under mmap_lock without such a retry before it fell
back earlier: its VMA lock was not taken (the VMA was being changed, or the
kernel does not take it for this VMA) or its pass asked for a retry before
reaching userfaultfd (an anon_vma to prepare, a folio lock to wait for).
Kernels without per-VMA locks run every fault under mmap_lock.

Tracepoint mode cannot tell: the page-fault tracepoint fires once per
exception, before either pass."""

from __future__ import annotations

from ..events import FAULT_FLAG_USER, VM_FAULT_RETRY, Event
from .model import Lifecycle
from .tables import PAGE_MASK

USERFAULT_RETRY = "userfault_retry"  # left handle_userfault with VM_FAULT_RETRY, holding the VMA lock
VMA_LOCK_NOT_TAKEN = "vma_lock_not_taken"  # came to handle_userfault under mmap_lock, not after such a retry


class FaultLocks:
    """Reads the lock from kprobe mode's FAULT records (vm_fault.flags) and
    counts each fallback on the lifecycle, by cause."""

    MAX_THREADS = 65536  # threads between a VM_FAULT_RETRY and their next fault (exited ones age out)

    def __init__(self, vma_lock_flag: int | None) -> None:
        self.vma_lock_flag = vma_lock_flag  # RunInfo.vma_lock_flag: None when the session cannot tell
        # Thread -> page whose handle_userfault last returned VM_FAULT_RETRY: the
        # kernel runs that fault again under mmap_lock, at once. Per thread, not
        # per lifecycle: the retry can find the page gone again and open a
        # lifecycle of its own. A later fault elsewhere is a new exception.
        self._retrying: dict[int, int] = {}

    def entered(self, lc: Lifecycle, ev: Event) -> None:
        """A FAULT record: the round that begins runs under the lock its flags name."""
        if self.vma_lock_flag is None:
            return
        lock = "vma" if ev.flags & self.vma_lock_flag else "mmap"
        if lc.lock is None:
            lc.lock = lock
        lc.round_lock = lock
        retried = self._retrying.pop(ev.tid, None) == ev.addr & PAGE_MASK
        # Kernel-mode faults (GUP) take mmap_lock by design: no fallback.
        if lock == "mmap" and self.vma_lock_flag and ev.flags & FAULT_FLAG_USER and not retried:
            fallback(lc, VMA_LOCK_NOT_TAKEN)

    def returned(self, lc: Lifecycle, ev: Event) -> None:
        """A FAULT_RET record: after VM_FAULT_RETRY the kernel runs the fault
        again under mmap_lock, a fallback when this round held the VMA lock."""
        if self.vma_lock_flag is None or not ev.ret & VM_FAULT_RETRY:
            return
        self._retrying[ev.tid] = ev.addr & PAGE_MASK
        if len(self._retrying) > self.MAX_THREADS:
            del self._retrying[next(iter(self._retrying))]
        if lc.round_lock == "vma":
            fallback(lc, USERFAULT_RETRY)


def fallback(lc: Lifecycle, cause: str) -> None:
    lc.fallbacks[cause] = lc.fallbacks.get(cause, 0) + 1
