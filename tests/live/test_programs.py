"""Both BPF programs compile and load on this kernel in every combination
of the knobs a session sets (tracepoint.c in full; kprobe.c up to attaching,
which needs kprobes: its programs are loaded, not attached). A C change
that breaks one configuration fails here in seconds, before the VM tier."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.conftest import require
from uffdtrace.live import kernel, kprobe_mode, probes, tracepoint_mode
from uffdtrace.live.kallsyms import Kallsyms

# What session options add (live/source.py LiveSource.start).
KNOBS: dict[str, dict[str, int | None]] = {
    "default": {},
    "events": {"EVERY_RECORD": None},
    "flagged": {"QUIET": None},
    "serve": {"QUIET": None, "AGGREGATE": None},
    "followed serve": {"QUIET": None, "AGGREGATE": None, "FILTER": None, "SPAWN_PARENT": 1},
    "no-fold": {"NO_FOLD": None},
    "followed, ring buffer": {"FILTER": None, "SPAWN_PARENT": 1, "USE_RINGBUF": None, "RINGBUF_PAGES": 64},
}


def _bcc() -> Any:
    require(os.geteuid() == 0, "needs root")
    try:
        from bcc import BPF
    except ImportError:
        require(False, "bcc is not installed (scripts/setup.sh)")
    return BPF


@pytest.mark.live
@pytest.mark.parametrize("knobs", KNOBS.values(), ids=list(KNOBS))
def test_tracepoint_program_loads(knobs: dict[str, int | None]) -> None:
    bpf_class = _bcc()
    features = kernel.probe()
    require(features.tracefs is not None, "no tracefs")
    plan = tracepoint_mode.TracepointBackend().plan(Kallsyms.load(), features)
    bpf = bpf_class(text=probes.source_text("tracepoint.c").encode(), cflags=probes.cflags({**plan.defines, **knobs}))
    try:
        assert bpf.num_open_tracepoints() >= 8
    finally:
        bpf.cleanup()


@pytest.mark.live
@pytest.mark.parametrize("identity", ["context", "tgid and fd"])
def test_tracepoint_program_loads_with_each_uffd_identity(identity: str) -> None:
    """bpf/uffd_id.h's fallbacks: uffds sharing one inode (before 5.12), and no BTF."""
    bpf_class = _bcc()
    features = kernel.probe()
    require(features.tracefs is not None, "no tracefs")
    defines = tracepoint_mode.TracepointBackend().plan(Kallsyms.load(), features).defines
    assert "UFFD_BY_FILE" in defines, "this kernel has BTF: the descriptor is resolved to its uffd"
    if identity == "context":
        defines["UFFD_ID_CTX"] = None
    else:
        defines = {k: v for k, v in defines.items() if k != "UFFD_BY_FILE"}
    bpf = bpf_class(text=probes.source_text("tracepoint.c").encode(), cflags=probes.cflags(defines))
    try:
        assert bpf.num_open_tracepoints() >= 8
    finally:
        bpf.cleanup()


@pytest.mark.live
@pytest.mark.parametrize("knobs", KNOBS.values(), ids=list(KNOBS))
def test_kprobe_program_loads(knobs: dict[str, int | None]) -> None:
    bpf_class = _bcc()
    plan = kprobe_mode.KprobeBackend().plan(Kallsyms.load(), kernel.probe())
    bpf = bpf_class(text=probes.source_text("kprobe.c").encode(), cflags=probes.cflags({**plan.defines, **knobs}))
    try:
        for spec in kprobe_mode.PROBES:
            for cand in spec.candidates:
                bpf.load_func(cand.entry_fn.encode(), bpf_class.KPROBE)
            if spec.return_fn:
                bpf.load_func(spec.return_fn.encode(), bpf_class.KPROBE)
    finally:
        bpf.cleanup()
