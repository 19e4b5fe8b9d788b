"""LiveSource logic that needs no kernel."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from uffdtrace.errors import UffdtraceError
from uffdtrace.events import RECORD, RECORD_SIZE, Event, Kind, encode_many
from uffdtrace.live.kernel import Features
from uffdtrace.live.kprobe_mode import KprobeBackend
from uffdtrace.live.loader import BpfError
from uffdtrace.live.source import BATCH_BYTES, DELIVERY_SLACK_NS, LiveSource, Options
from uffdtrace.live.tracepoint_mode import TracepointBackend

FEATURES = Features(release="6.18", root=True, btf=True, kprobes=False, tracefs=None, headers=None,
                    headers_target=None, bcc_version="0.26.0", bcc_error=None)


def refuses_atomics(text: str, cflags: list[str], bcc_version: str | None, headers: Any,
                    load: Callable[[Any], Any]) -> tuple[Any, str]:
    """Stands for compiling on a kernel whose verifier refuses BPF atomics."""
    if "-DNO_FOLD" not in cflags:
        raise Exception("invalid insn code")  # what bcc raises
    return cflags, "compiled"


def test_tracepoint_mode_without_bpf_atomics_sends_every_step() -> None:
    src = LiveSource(Options())
    src.backend = TracepointBackend()
    cflags: Any = src._load({"USE_RINGBUF": None}, FEATURES, obtain=refuses_atomics)
    assert "-DNO_FOLD" in cflags and src.info.program == "compiled"
    [said] = [d for d in src.info.degraded if "folding" in d]
    assert "invalid insn code" in said  # what was refused, not only the guess of an old kernel


@pytest.mark.parametrize("defines", [{"EVERY_RECORD": None}, {}])
def test_no_second_try_where_nothing_folds(defines: dict[str, int | None]) -> None:
    src = LiveSource(Options())
    src.backend = KprobeBackend() if not defines else TracepointBackend()
    with pytest.raises(UffdtraceError, match="could not compile"):
        src._load(defines, FEATURES, obtain=refuses_atomics)


class InterruptedTwice:
    """Stands for loading when a signal interrupts the verifier twice."""

    calls = 0

    def __init__(self, compiled: Any, tracefs: Any) -> None:
        InterruptedTwice.calls += 1
        if InterruptedTwice.calls <= 2:
            raise BpfError("loading BPF program x", errno.EAGAIN)
        self.cflags = compiled


def compiles(text: str, cflags: list[str], bcc_version: str | None, headers: Any,
             load: Callable[[Any], Any]) -> tuple[Any, str]:
    return load(cflags), "compiled"


def test_a_load_interrupted_by_a_signal_is_tried_again() -> None:
    src = LiveSource(Options())
    src.backend = TracepointBackend()
    bpf: Any = src._load({"USE_RINGBUF": None}, FEATURES, obtain=compiles, program=InterruptedTwice)
    assert InterruptedTwice.calls == 3 and "-DNO_FOLD" not in bpf.cflags and not src.info.degraded


def chunk(*stamps: int) -> tuple[Any, bytes]:
    return RECORD, encode_many([Event(ts_ns=ts, kind=Kind.FAULT, tid=1) for ts in stamps])


def test_a_batch_behind_the_kernel_takes_part_and_says_up_to_when() -> None:
    """Under a load the correlator cannot keep up with, a batch decodes at
    most BATCH_BYTES, and its horizon stops before the first record left:
    the correlator works through the backlog instead of queueing it whole."""
    src = LiveSource(Options())
    per_chunk = BATCH_BYTES // RECORD_SIZE // 2 + 1  # two chunks pass the limit
    base = 10_000_000_000
    for i in range(3):
        src._pending.append(chunk(*[base + i * 1_000_000_000 + j for j in range(per_chunk)]))
        src._drained += per_chunk * RECORD_SIZE
    batch, left_from = src._take(BATCH_BYTES)
    assert len(batch) == 2 * per_chunk and [ev.ts_ns for ev in batch[:2]] == [base, base + 1]
    assert left_from == base + 2_000_000_000 - DELIVERY_SLACK_NS
    batch, left_from = src._take(BATCH_BYTES)
    assert len(batch) == per_chunk and left_from is None and src._drained == src._taken


def test_the_drain_stops_at_the_backlog_cap_and_leaves_records_to_the_kernel() -> None:
    src = LiveSource(Options(buffer_kb=1))
    src._drained = src._backlog_cap  # nothing taken yet: the cap is reached
    src._poll(0)  # no ring, no perf reader: reading either would fail
    assert not src._pending and src._delivered_before == 0


STOPPER = """
import os, signal, sys
from uffdtrace.live.source import Stopper
stopper = Stopper()
stopper.install()
os.kill(os.getpid(), signal.SIGTERM)
print(stopper.stopped, flush=True)
os.kill(os.getpid(), signal.SIGTERM)
print("still here", flush=True)
"""


def test_a_second_signal_ends_the_tracer_at_once() -> None:
    """The first SIGTERM/SIGINT asks for a clean end; a tracer stuck in
    ending it goes with the second."""
    proc = subprocess.run([sys.executable, "-c", STOPPER], capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout == "True\n"
    assert proc.returncode == -signal.SIGTERM
