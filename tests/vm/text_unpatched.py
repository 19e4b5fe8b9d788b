"""Runs in the VM guest, after guest_run.sh's tracepoint keeper: the kernel
text at the tracepoint sites where TCG guests died, hashed from /proc/kcore
before a tracer starts, while its probes are live and after it ends, in each
mode. With the keeper, a tracer patches none of it.
    text_unpatched.py OUT.json UFFDTRACE"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from typing import BinaryIO

# The sites the deaths were on (tests/vm/tcg_guest.py), and sched_waking's.
FUNCTIONS = ("syscall_trace_enter", "__schedule", "kernel_clone", "try_to_wake_up")
MODES = ("kprobe", "tracepoint")
TRACED_S = 8


def text_symbols() -> list[tuple[int, str]]:
    out = []
    with open("/proc/kallsyms") as fh:
        for line in fh:
            addr, kind, name = line.split()[:3]
            # A function GCC specialised is named NAME.constprop.0 (6.1's
            # syscall_trace_enter); NAME.cold is only its unlikely part.
            if kind in "tT" and not name.endswith(".cold"):
                out.append((int(addr, 16), name.split(".")[0]))
    return sorted(out)


def load_segments(kcore: BinaryIO) -> list[tuple[int, int, int]]:
    """(vaddr, size, file offset) of /proc/kcore's PT_LOAD segments."""
    header = kcore.read(64)
    (phoff,) = struct.unpack_from("<Q", header, 32)
    phentsize, phnum = struct.unpack_from("<HH", header, 54)
    segments = []
    for i in range(phnum):
        kcore.seek(phoff + i * phentsize)
        p_type, _flags, offset, vaddr, _paddr, _filesz, memsz, _align = struct.unpack("<IIQQQQQQ", kcore.read(56))
        if p_type == 1:
            segments.append((vaddr, memsz, offset))
    return segments


def hashes(symbols: list[tuple[int, str]]) -> dict[str, str]:
    with open("/proc/kcore", "rb") as kcore:
        segments = load_segments(kcore)
        out = {}
        for i, (start, name) in enumerate(symbols[:-1]):
            if name not in FUNCTIONS or name in out:
                continue
            size = symbols[i + 1][0] - start
            vaddr, _size, offset = next(s for s in segments if s[0] <= start < s[0] + s[1])
            kcore.seek(offset + start - vaddr)
            out[name] = hashlib.sha256(kcore.read(size)).hexdigest()[:12]
    return out


def main() -> int:
    out, uffdtrace = sys.argv[1], sys.argv[2]
    symbols = text_symbols()
    result = {}
    for mode in MODES:
        idle = hashes(symbols)
        # A cache of its own: the scenarios after it must compile their programs
        # themselves (test_programs_compiled_once_then_loaded_from_the_cache).
        env = {**os.environ, "UFFDTRACE_CACHE": f"{out}.cache"}
        tracer = subprocess.Popen([uffdtrace, "--mode", mode, "trace", "-j", "--", "sleep", str(TRACED_S)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert tracer.stdout is not None
        header = tracer.stdout.readline()  # printed once its probes are live
        traced = hashes(symbols)
        _, err = tracer.communicate()
        result[mode] = {"idle": idle, "traced": traced, "after": hashes(symbols), "rc": tracer.returncode,
                        "header": header.startswith('{"type":"header"'), "stderr": err[-2000:]}
    with open(out, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
