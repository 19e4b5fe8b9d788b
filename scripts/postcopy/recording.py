"""uffdtrace records the migration; its capture is replayed and summed up per phase."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from .common import PHASES, PLACED_BY_READ_NS, UFFDTRACE, LabError, one_line, process, wait_for


def record(argv: list[str], cap: Path, work: Path, name: str) -> contextlib.AbstractContextManager[
        subprocess.Popen[bytes]]:
    return process([str(UFFDTRACE), "record", "-j", "-o", str(cap), *argv], work / f"{name}.record.log")


def wait_recording(proc: subprocess.Popen[bytes], cap: Path, work: Path, name: str) -> None:
    """The capture's header is written once every probe is attached."""
    wait_for("uffdtrace to attach", lambda: cap.exists() and cap.stat().st_size > 0, 180, proc,
             work / f"{name}.record.log")


def stop_recording(proc: subprocess.Popen[bytes], work: Path, name: str) -> None:
    """Ctrl-C, as a user would (the capture is what is read next)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired as exc:
        raise LabError("uffdtrace record did not stop within 60 s of SIGINT") from exc
    log = (work / f"{name}.record.log").read_text(errors="replace")
    if proc.returncode != 0:
        raise LabError(f"uffdtrace record failed ({proc.returncode}): {one_line(log)}")


def replay(cap: Path) -> list[dict[str, Any]]:
    """Every line `trace --from` prints for the capture (lifecycles, flags, summary)."""
    out = subprocess.run([str(UFFDTRACE), "trace", "--from", str(cap), "-j"], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise LabError(f"uffdtrace trace --from {cap} failed: {out.stderr.strip()}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1e6


def tracer_view(lines: list[dict[str, Any]], tgid: int) -> dict[str, Any]:
    """Faults, messages read, resolutions, flags and latency of one process."""
    lcs = [x for x in lines if x["type"] == "lifecycle" and x["tgid"] == tgid]
    summary = next(x for x in lines if x["type"] == "summary")
    phases: dict[str, list[int]] = {p: [] for p in PHASES}
    for lc in lcs:
        for p in PHASES:
            if lc["latency_ns"].get(p) is not None:
                phases[p].append(lc["latency_ns"][p])
    return {
        "faults": len(lcs),
        "messages_read": sum(lc["reads"] for lc in lcs),
        "readers": Counter(lc["reader_tid"] for lc in lcs if lc["reads"]),
        # Messages whose page was placed before (or right after) they were read: a
        # client that checks what it already has may not ask for them (QEMU does).
        "placed_by_read": sum(1 for lc in lcs if lc["reads"] and lc["t_resolved_ns"] is not None
                              and lc["t_read_ns"] is not None
                              and lc["t_resolved_ns"] - lc["t_read_ns"] < PLACED_BY_READ_NS),
        "resolutions": dict(Counter(f"{lc['resolve_op']}:{'ok' if lc['resolve_ret'] == 0 else lc['resolve_ret']}"
                                    for lc in lcs if lc["resolve_op"])),
        "states": dict(Counter(lc["state"] for lc in lcs)),
        "flags": [x for x in lines if x["type"] == "flag"],
        "latency_ms": {p: {"p50": percentile(v, 0.50), "p99": percentile(v, 0.99), "n": len(v)}
                       for p, v in phases.items()},
        "lost": summary["lost"],
        "unmatched_reads": summary["unmatched_reads"],
        "summary": summary,
    }
