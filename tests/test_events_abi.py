"""bpf/events.h and uffdtrace/events.py describe the same bytes and the
same values: every UT_ name the header defines has its Python mirror, with
the same value, and no Python mirror names a value the header lacks."""

from __future__ import annotations

import ctypes
import enum
import re
import struct
import subprocess
from pathlib import Path

from uffdtrace import events
from uffdtrace.events import (
    FIELD_NAMES,
    RECORD_SIZE,
    Event,
    FaultState,
    FoldBit,
    Kind,
    LostCause,
    Op,
    PointerIds,
    QuietCounter,
    RawEvent,
    Reason,
    decode,
    decode_many,
    slot_layout,
)
from uffdtrace.live.ringbuf import HEADER_SIZE, slot_size

ROOT = Path(__file__).resolve().parent.parent


# The Python mirror of every UT_ name: enums by prefix, single values by name.
ENUMS: dict[str, type[enum.IntEnum]] = {"UT_OP_": Op, "UT_FOLD_": FoldBit, "UT_LOST_": LostCause,
                                         "UT_FE_": FaultState, "UT_QUIET_": QuietCounter, "UT_REASON_": Reason,
                                         "UT_": Kind}
SINGLES = ("CLOSE_KEPT", "READS_SEALED", "UFFD_EVENT_PAGEFAULT", "UFFD_EVENT_FORK", "UFFD_EVENT_REMAP",
           "UFFD_EVENT_REMOVE", "UFFD_EVENT_UNMAP", "PAGEFAULT_FLAG_WP", "X86_PF_PROT", "X86_PF_WRITE",
           "REGISTER_MODE_MISSING", "REGISTER_MODE_WP", "REGISTER_MODE_MINOR", "MODE_DONTWAKE", "WP_MODE_WP",
           "WP_MODE_DONTWAKE", "VM_UFFD_MISSING", "VM_UFFD_WP", "VM_FAULT_SIGBUS", "VM_FAULT_RETRY", "FAULT_FLAG_USER",
           "HIST_BOUNDS")
COUNTS = {"UT_LOST_CAUSES": len(LostCause), "UT_QUIET_COUNTERS": len(QuietCounter)}


def python_side() -> dict[str, int]:
    out = dict(COUNTS)
    for prefix, cls in ENUMS.items():
        for member in cls:
            out[prefix + member.name] = member.value
    for name in SINGLES:
        out["UT_" + name] = getattr(events, name)
    return out


def header_names() -> set[str]:
    """Every UT_ value events.h defines: enum members and #defines."""
    text = re.sub(r"/\*.*?\*/", "", (ROOT / "bpf" / "events.h").read_text(), flags=re.S)
    return set(re.findall(r"^\s*(UT_[A-Z0-9_]+)\s*(?:=|,)", text, re.M)) | \
        set(re.findall(r"^#define\s+(UT_[A-Z0-9_]+)\s", text, re.M))


def _c_layout(tmp_path: Path, names: list[str]) -> dict[str, int]:
    lines = [f'printf("{name} %zu\\n", offsetof(struct uffdtrace_event, {name}));' for name in FIELD_NAMES]
    lines += [f'printf("{name} %llu\\n", (unsigned long long)({name}));' for name in names]
    prog = tmp_path / "layout.c"
    prog.write_text('#include <stddef.h>\n#include <stdio.h>\n#include "events.h"\nint main(void) {\n'
                    + "\n".join(lines) + '\nprintf("sizeof %zu\\n", sizeof(struct uffdtrace_event));\nreturn 0; }\n')
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-Wall", "-Werror", f"-I{ROOT / 'bpf'}", "-o", str(exe), str(prog)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_every_offset_and_the_size_match(tmp_path: Path) -> None:
    layout = _c_layout(tmp_path, [])
    for name in FIELD_NAMES:
        assert getattr(RawEvent, name).offset == layout[name], name
    assert layout["sizeof"] == RECORD_SIZE == ctypes.sizeof(RawEvent)


def test_every_shared_value_matches_both_ways(tmp_path: Path) -> None:
    python = python_side()
    defined = header_names()
    assert defined == set(python), (f"in events.h only: {sorted(defined - set(python))}; "
                                    f"in Python only: {sorted(set(python) - defined)}")
    c_values = _c_layout(tmp_path, sorted(defined))
    assert {name: c_values[name] for name in defined} == python


def test_the_programs_use_the_header_not_copies() -> None:
    """No BPF source redefines a value events.h names (it would drift)."""
    bare = {name.removeprefix("UT_") for name in header_names()} | {"LOST_CAUSES", "FE_FOLDING", "READS_SEALED"}
    for src in (ROOT / "bpf").glob("*.[ch]"):
        if src.name == "events.h":
            continue
        defined = set(re.findall(r"#define\s+([A-Z0-9_]+)", src.read_text()))
        assert not defined & bare, f"{src.name} redefines {sorted(defined & bare)}"


def test_decode_hides_kernel_pointers_and_names_ops() -> None:
    raw = RawEvent(ts_ns=5, kind=Kind.RESOLVE, tgid=10, tid=11, comm=b"qemu", ctx=0xFFFF888012345678,
                   addr=0x7F0000001000, len=4096, mode=1, op=Op.COPY, aux=4096)
    ids = PointerIds()
    ev = decode(bytes(raw), ids)
    assert isinstance(ev, Event)
    assert ev.ctx == 1 and ev.comm == "qemu" and ev.dontwake
    again = decode(bytes(RawEvent(kind=Kind.FAULT, ctx=0xFFFF888012345678)), ids)
    other = decode(bytes(RawEvent(kind=Kind.FAULT, ctx=0xFFFF888000000000)), ids)
    assert (again.ctx, other.ctx) == (1, 2)
    js = ev.to_json()
    assert js["type"] == "event" and js["kind"] == "resolve" and js["op"] == "copy" and js["dontwake"] is True
    assert set(FIELD_NAMES) <= set(js)


def test_decode_reads_every_field_where_the_header_puts_it() -> None:
    """The struct format is derived from RawEvent: a distinct value in every
    field comes back in the same field (16-char comm, negative ret)."""
    values = {name: 1000 + i for i, name in enumerate(FIELD_NAMES)}
    values.update(kind=Kind.WAKE_TASK, comm=b"sixteen-chars-xx", ret=-17, ctx=0)
    ev = decode(bytes(RawEvent(**values)), PointerIds())
    for name in FIELD_NAMES:
        expected = values[name].decode() if name == "comm" else values[name]
        assert getattr(ev, name) == expected, name


def test_decode_many_reads_ring_slots_past_their_headers() -> None:
    """Ring buffer spans are records behind 8-byte headers, padded to 8 bytes."""
    slot = slot_size(RECORD_SIZE)
    assert slot % 8 == 0 and slot >= HEADER_SIZE + RECORD_SIZE
    span = b"".join(struct.pack("<II", RECORD_SIZE, 0) + bytes(RawEvent(kind=Kind.FAULT, tid=tid, addr=tid << 12))
                    + bytes(slot - HEADER_SIZE - RECORD_SIZE) for tid in (7, 8, 9))
    events = decode_many(span, PointerIds(), slot_layout(HEADER_SIZE, slot))
    assert [(e.kind, e.tid, e.addr) for e in events] == [(Kind.FAULT, t, t << 12) for t in (7, 8, 9)]
