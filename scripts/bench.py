#!/usr/bin/env python3
"""Overhead of uffdtrace, as ratios measured in one run (never asserted in tests).

1. uffd fault throughput: tests/workloads/clean_faults N, untraced vs traced
   (`uffdtrace trace -j -- ...`, the default lifecycle output, and with
   `--events`, every event printed too); the workload times its own fault
   loop, so tracer start-up is not counted. The workload is pinned to one CPU:
   each fault ping-pongs between two threads, and unpinned the result is
   dominated by how fast an idle vCPU wakes up (a running tracer keeps CPUs
   awake and made the traced run *faster*, measuring nothing about tracing).
2. An unrelated busy workload (compiling the workloads with gcc, repeatedly)
   with and without a host-wide tracer attached: what processes that never
   touch userfaultfd pay.

Usage (root): .venv/bin/python scripts/bench.py [--mode auto|kprobe|tracepoint] [--pages N] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UFFDTRACE = ROOT / ".venv" / "bin" / "uffdtrace"
SOURCES = sorted((ROOT / "tests" / "workloads").glob("*.c"))


def build(out: Path) -> Path:
    exe = out / "clean_faults"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(ROOT / "tests/workloads/clean_faults.c")],
                   check=True)
    return exe


def fault_rate(cmd: list[str]) -> float:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    w = next(json.loads(line) for line in out.splitlines() if line.startswith('{"workload"'))
    summary = next((json.loads(line) for line in out.splitlines() if line.startswith('{"type":"summary"')), None)
    if summary and (summary["lost"] or summary["lifecycles"] != w["pages"]):
        print(f"  (traced run: {summary['lost']} lost, {summary['lifecycles']} lifecycles for {w['pages']} faults)")
    return float(w["pages"]) / (w["elapsed_ns"] / 1e9)


def busy_seconds(scratch: Path) -> float:
    t0 = time.monotonic()
    for src in SOURCES:
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(scratch / src.stem), str(src)], check=True)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--pages", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench.py: run as root", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        exe = build(scratch)
        workload = ["taskset", "-c", "0", str(exe), str(args.pages)]
        plain = [fault_rate(workload) for _ in range(args.runs)]
        rate_plain = statistics.median(plain)
        for output in ([], ["--events"]):
            traced = [fault_rate([str(UFFDTRACE), "--mode", args.mode, "trace", "-j", *output, "--", *workload])
                      for _ in range(args.runs)]
            rate_traced = statistics.median(traced)
            print(f"uffd faults/s  untraced {rate_plain:,.0f}  traced{' --events' if output else ''} "
                  f"{rate_traced:,.0f}  ratio {rate_traced / rate_plain:.3f}  ({args.pages} faults, median of "
                  f"{args.runs})")

        idle = [busy_seconds(scratch) for _ in range(args.runs)]
        tracer = subprocess.Popen([str(UFFDTRACE), "--mode", args.mode, "trace", "-j"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert tracer.stdout is not None
        tracer.stdout.readline()  # header: probes are live
        try:
            busy = [busy_seconds(scratch) for _ in range(args.runs)]
        finally:
            tracer.terminate()
            tracer.wait()
        t_idle, t_busy = statistics.median(idle), statistics.median(busy)
        print(f"unrelated gcc builds  untraced {t_idle:.3f}s  traced {t_busy:.3f}s  "
              f"slowdown ratio {t_busy / t_idle:.3f}  (median of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
