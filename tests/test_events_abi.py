"""bpf/events.h and uffdtrace/events.py describe the same bytes."""

from __future__ import annotations

import ctypes
import struct
import subprocess
from pathlib import Path

from uffdtrace.events import (
    FIELD_NAMES,
    RECORD_SIZE,
    Event,
    Kind,
    Op,
    PointerIds,
    RawEvent,
    decode,
    decode_many,
    slot_layout,
)
from uffdtrace.live.ringbuf import HEADER_SIZE, slot_size

ROOT = Path(__file__).resolve().parent.parent


def _c_layout(tmp_path: Path) -> dict[str, int]:
    lines = [f'printf("{name} %zu\\n", offsetof(struct uffdtrace_event, {name}));' for name in FIELD_NAMES]
    prog = tmp_path / "layout.c"
    prog.write_text('#include <stddef.h>\n#include <stdio.h>\n#include "events.h"\nint main(void) {\n'
                    + "\n".join(lines) + '\nprintf("sizeof %zu\\n", sizeof(struct uffdtrace_event));\n'
                    + 'printf("UT_LOST %d\\nUT_OP_API %d\\n", UT_LOST, UT_OP_API);\nreturn 0; }\n')
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-Wall", "-Werror", f"-I{ROOT / 'bpf'}", "-o", str(exe), str(prog)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_every_offset_and_the_size_match(tmp_path: Path) -> None:
    layout = _c_layout(tmp_path)
    for name in FIELD_NAMES:
        assert getattr(RawEvent, name).offset == layout[name], name
    assert layout["sizeof"] == RECORD_SIZE == ctypes.sizeof(RawEvent)
    assert layout["UT_LOST"] == Kind.LOST
    assert layout["UT_OP_API"] == Op.API


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
