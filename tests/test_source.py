"""LiveSource logic that needs no kernel."""

from __future__ import annotations

from typing import Any

import pytest

from uffdtrace.errors import UffdtraceError
from uffdtrace.live.kprobe_mode import KprobeBackend
from uffdtrace.live.source import LiveSource, Options
from uffdtrace.live.tracepoint_mode import TracepointBackend


class RefusesAtomics:
    """Stands for bcc's BPF on a kernel whose verifier refuses BPF atomics."""

    def __init__(self, text: str, cflags: list[str]) -> None:
        if "-DNO_FOLD" not in cflags:
            raise Exception("invalid insn code")  # what bcc raises
        self.cflags = cflags


def test_tracepoint_mode_without_bpf_atomics_sends_every_step() -> None:
    src = LiveSource(Options())
    src.backend = TracepointBackend()
    bpf: Any = src._load(RefusesAtomics, {"USE_RINGBUF": None})
    assert "-DNO_FOLD" in bpf.cflags
    assert any("folding" in d for d in src.info.degraded)


@pytest.mark.parametrize("defines", [{"EVERY_RECORD": None}, {}])
def test_no_second_try_where_nothing_folds(defines: dict[str, int | None]) -> None:
    src = LiveSource(Options())
    src.backend = KprobeBackend() if not defines else TracepointBackend()
    with pytest.raises(UffdtraceError, match="could not compile"):
        src._load(RefusesAtomics, defines)


class InterruptedTwice:
    """Stands for bcc's BPF when a signal interrupts the verifier twice."""

    calls = 0

    def __init__(self, text: str, cflags: list[str]) -> None:
        InterruptedTwice.calls += 1
        if InterruptedTwice.calls <= 2:
            raise Exception("Failed to load BPF program b'x': Resource temporarily unavailable")
        self.cflags = cflags


def test_a_load_interrupted_by_a_signal_is_tried_again() -> None:
    src = LiveSource(Options())
    src.backend = TracepointBackend()
    bpf: Any = src._load(InterruptedTwice, {"USE_RINGBUF": None})
    assert InterruptedTwice.calls == 3 and "-DNO_FOLD" not in bpf.cflags and not src.info.degraded
