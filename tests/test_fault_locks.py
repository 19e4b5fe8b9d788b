"""Which lock each fault ran under and its fallbacks to mmap_lock
(analysis/locks.py), from kprobe mode's vm_fault.flags and return values,
through the lifecycle, the text line, `report` and the metrics."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from uffdtrace import session
from uffdtrace.analysis.rules import Thresholds
from uffdtrace.capture.reader import Reader
from uffdtrace.capture.writer import Recording
from uffdtrace.events import FAULT_FLAG_USER, Event
from uffdtrace.sinks import printer
from uffdtrace.sinks.prometheus import Metrics
from uffdtrace.sinks.text import Text

from .synthetic import PAGE, PID, RETRY, copy, correlate, fault, fault_ret, read, uffdio_wake, woken
from .test_capture_file import Scripted

VMA_LOCK = 1 << 12  # FAULT_FLAG_VMA_LOCK on 6.4+ kernels (from BTF when live)
USER_VMA = FAULT_FLAG_USER | VMA_LOCK


def served(flags: int, at: float = 0.0, page: int = PAGE) -> list[Event]:
    """One fault read, copied, woken; it leaves handle_userfault with VM_FAULT_RETRY, as every waited fault does."""
    return [fault(at, flags=flags, page=page), read(at + 0.1, page=page), woken(at + 0.2, page=page),
            fault_ret(at + 0.25, ret=RETRY, page=page), copy(at + 0.3, page=page)]


def test_a_fault_under_the_vma_lock_falls_back_once_after_its_wait() -> None:
    out, _ = correlate(served(USER_VMA), "kprobe", vma_lock_flag=VMA_LOCK)
    [lc] = out.lifecycles
    assert (lc.lock, lc.fallbacks) == ("vma", {"userfault_retry": 1})
    assert lc.to_json()["lock"] == "vma" and lc.to_json()["fallbacks"] == {"userfault_retry": 1}
    assert not out.flags


def test_a_kernel_without_per_vma_locks_runs_every_fault_under_mmap_lock() -> None:
    out, _ = correlate(served(FAULT_FLAG_USER), "kprobe", vma_lock_flag=0)
    [lc] = out.lifecycles
    assert (lc.lock, lc.fallbacks) == ("mmap", {})


def test_a_user_fault_under_mmap_lock_on_a_per_vma_kernel_fell_back_before_userfaultfd() -> None:
    out, _ = correlate(served(FAULT_FLAG_USER), "kprobe", vma_lock_flag=VMA_LOCK)
    [lc] = out.lifecycles
    assert (lc.lock, lc.fallbacks) == ("mmap", {"vma_lock_not_taken": 1})


def test_a_kernel_mode_fault_takes_mmap_lock_by_design() -> None:
    out, _ = correlate(served(0), "kprobe", vma_lock_flag=VMA_LOCK)  # a GUP fault: no FAULT_FLAG_USER
    [lc] = out.lifecycles
    assert (lc.lock, lc.fallbacks) == ("mmap", {})


def test_tracepoint_mode_cannot_tell() -> None:
    out, _ = correlate(served(0x6), "tracepoint")  # x86 error code: user, write
    [lc] = out.lifecycles
    assert (lc.lock, lc.fallbacks) == (None, {})
    assert lc.to_json()["lock"] is None


def test_retry_loop_counts_the_fallbacks_by_cause() -> None:
    """Woken twice without the page: the first round ran under the VMA lock and
    went back to mmap_lock; the next rounds run under mmap_lock, after that
    retry (not a fallback of their own)."""
    seq: list[Event] = []
    for i, flags in enumerate((USER_VMA, FAULT_FLAG_USER, FAULT_FLAG_USER)):
        t = float(i)
        seq += [fault(t, flags=flags), read(t + 0.1), woken(t + 0.2)]
        seq += [uffdio_wake(t + 0.3), fault_ret(t + 0.25)] if i < 2 else [copy(t + 0.3), fault_ret(t + 0.35)]
    out, _ = correlate(seq, "kprobe", vma_lock_flag=VMA_LOCK)
    [lc] = out.lifecycles
    assert (lc.rounds, lc.lock, lc.fallbacks) == (3, "vma", {"userfault_retry": 1})
    [flag] = out.flags
    assert flag.name == "retry_loop"
    assert flag.evidence[-1].what.endswith("(causes: woken_unresolved x2; fell back to mmap_lock: userfault_retry x1)")


def test_the_retry_that_finds_the_page_gone_again_is_no_fallback_of_its_own() -> None:
    """Seen live on 6.12 (tests/workloads/refault.c): the page is zapped after
    the copy, the kernel's retry under mmap_lock enters handle_userfault again
    and opens a lifecycle of its own. A later exception on another page that
    comes under mmap_lock is a fallback again."""
    other = PAGE + 0x1000
    seq = served(USER_VMA) + served(FAULT_FLAG_USER, at=0.5)
    seq += served(FAULT_FLAG_USER, at=5.0, page=other)
    out, _ = correlate(seq, "kprobe", vma_lock_flag=VMA_LOCK)
    assert [(lc.lock, lc.fallbacks) for lc in out.lifecycles] == [
        ("vma", {"userfault_retry": 1}), ("mmap", {}), ("mmap", {"vma_lock_not_taken": 1})]


def test_text_report_and_metrics_show_them(tmp_path: Path) -> None:
    """Live printing, a capture's header (the flag's value) and `report` of it, and serve's metrics."""
    seq = served(USER_VMA) + served(FAULT_FLAG_USER, at=5.0, page=PAGE + 0x1000)
    out, _ = correlate(seq, "kprobe", vma_lock_flag=VMA_LOCK)
    assert [(lc.lock, lc.fallbacks) for lc in out.lifecycles] == [("vma", {"userfault_retry": 1}),
                                                                  ("mmap", {"vma_lock_not_taken": 1})]
    text = io.StringIO()
    sink = Text(text)
    for lc in out.lifecycles:
        sink.lifecycle(lc)
    first, second = text.getvalue().splitlines()
    assert first.endswith("lock=vma fallbacks=userfault_retry:1")
    assert second.endswith("lock=mmap fallbacks=vma_lock_not_taken:1")

    src = Scripted([seq])
    src.info.vma_lock_flag = VMA_LOCK
    capture = tmp_path / "locks.cap"
    session.run(Recording(src, str(capture), Thresholds()), printer(True, io.StringIO()), Thresholds(),
                raw_events=False)
    assert Reader(str(capture)).header.info.vma_lock_flag == VMA_LOCK
    report = [sys.executable, "-m", "uffdtrace", "report", str(capture)]
    rows = json.loads(subprocess.run([*report, "-j"], capture_output=True, text=True, check=True).stdout)["processes"]
    [row] = [r for r in rows if r["pid"] == PID]
    assert (row["locks"], row["fallbacks"]) == ({"mmap": 1, "vma": 1}, {"userfault_retry": 1, "vma_lock_not_taken": 1})
    printed = subprocess.run(report, capture_output=True, text=True, check=True).stdout
    assert re.search(rf"^\s*{PID}\s+wl\s+1\s+1\s+1\s+userfault_retry 1, vma_lock_not_taken 1$", printed, re.M)

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for lc in out.lifecycles:
        metrics.lifecycle(lc)
    exposed = generate_latest(registry).decode()
    for series in ('uffdtrace_fault_locks_total{comm="wl",lock="vma"} 1.0',
                   'uffdtrace_fault_locks_total{comm="wl",lock="mmap"} 1.0',
                   'uffdtrace_lock_fallbacks_total{cause="userfault_retry",comm="wl"} 1.0',
                   'uffdtrace_lock_fallbacks_total{cause="vma_lock_not_taken",comm="wl"} 1.0'):
        assert re.search(f"^{re.escape(series)}$", exposed, re.M), series
