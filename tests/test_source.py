"""LiveSource logic that needs no kernel."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from uffdtrace.errors import UffdtraceError
from uffdtrace.live.kernel import Features
from uffdtrace.live.kprobe_mode import KprobeBackend
from uffdtrace.live.loader import BpfError
from uffdtrace.live.source import LiveSource, Options
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
    assert any("folding" in d for d in src.info.degraded)


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
