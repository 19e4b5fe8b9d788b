#!/usr/bin/env python3
"""Cost of uffdtrace, as ratios measured in one run (never asserted in tests).

1. `stress`: the kernel's own uffd-stress (anon, shmem, and hugetlb when huge
   pages can be reserved), many threads, traced host-wide. Variants run in
   alternation, round after round: untraced; uffdtrace (default output);
   uffdtrace --events, --flagged, --record; serve; top (in a 132x40
   pseudo-terminal, redrawn 4 times a second as a person sees it: its CPU
   per fault uffd-stress counted, its lost count read off its last screen);
   and a bpftrace script of comparable reach (the same
   tracepoints, kernel stacks, aggregated in the kernel) as the peer. For
   each: wall-time ratio and CPU-cost ratio (the workload's user+sys from its
   rusage, plus the tracer's CPU over the same interval), lost records,
   messages read against uffd-stress's own count, flags, the tracer's peak
   RSS and its start-up time (launch to probes live). With --bpf-time, also
   the time the tracer's BPF programs ran, per fault uffd-stress counted
   (kernel.bpf_stats_enabled for the run: it adds two clock reads per
   program run, to every traced variant alike).
2. `startup`: launch to probes live and peak RSS of `trace -j`, cold (an
   empty cache: bcc compiles) and warm (the cache the cold run filled).
   `serve-rss`: `serve`'s RSS sampled every 30 s over --minutes under load.
3. `micro`: uffd fault throughput of tests/workloads/clean_faults N pinned
   to one CPU (each fault ping-pongs between two threads; unpinned, the
   result measures idle vCPU wake-up instead), untraced vs traced.
4. `busy`: an unrelated busy workload (gcc builds) with and without a
   host-wide tracer: what processes that never touch userfaultfd pay.
5. `rate`: the record rate `--events` consumed with zero loss, rising with the
   faulting threads of tests/workloads/postcopy_shape (the rate over the
   records' own time span), and where loss starts, if it does.
6. `capture`: the same rising load under `record --events`: records written
   per second with zero loss (and where loss starts), bytes per record in
   the file; then the time `report` and `trace --from` take per million
   records of the largest capture.
7. `migration`: a QEMU post-copy migration of scripts/postcopy_lab.py (256
   MiB guest, 16 MiB/s stream), untraced and recorded, in alternation:
   QEMU's own migration time and vCPU blocktime (query-migrate), as ratios.

Wall time swings by tens of percent between runs on these machines, hence
the alternation, the medians and the CPU-cost ratio beside the wall ratio.

Usage (root; bpftrace from Debian's package for the peer column):
  .venv/bin/python scripts/bench.py [--mode M] [--runs R] [--stress TYPE:MIB:BOUNCES] [--bpf-time]
                                    [--only stress|startup|serve-rss|micro|busy|rate|capture|migration]
                                    [--minutes N]
Kprobe mode in the Debian 6.12 VM (ratios only: the guest is emulated), from the checkout:
  vng --run /boot/vmlinuz-6.12.*+deb12-amd64 --disable-kvm --force-9p --cpus 2 --memory 2G
      --exec '.venv/bin/python scripts/bench.py --mode kprobe --only stress --runs 2 --stress anon:8:4'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIGRATION_LAB = ("--bandwidth-mib", "16")
UFFDTRACE = ROOT / ".venv" / "bin" / "uffdtrace"
UFFD_STRESS = ROOT / ".build" / "uffd-stress"
SOURCES = sorted((ROOT / "tests" / "workloads").glob("*.c"))
STRESS_CONFIGS = ("anon:64:8", "shmem:64:8", "hugetlb:64:8")  # uffd-stress TYPE:MiB:BOUNCES
SERVE_PORT = 9473
SERVE_READY = "probes live"  # serve's line on stderr
TOP_READY = "q quit"  # top's key line: drawn once its probes are live
HUGEPAGES = 64  # 2 MiB pages reserved for the hugetlb run (and given back afterwards)
TICKS = os.sysconf("SC_CLK_TCK")
# The peer: what a bpftrace user would write to watch the same steps.
BPFTRACE_SCRIPT = """
tracepoint:exceptions:page_fault_user /comm == "uffd-stress"/ { @faults[tid] = count(); }
tracepoint:sched:sched_switch /args->prev_state != 0 && comm == "uffd-stress"/ { @block[kstack(8)] = count(); }
tracepoint:sched:sched_waking /args->comm == "uffd-stress"/ { @wake[kstack(8)] = count(); }
tracepoint:syscalls:sys_exit_ioctl /comm == "uffd-stress"/ { @ioctl[args->ret] = count(); }
tracepoint:syscalls:sys_exit_read /comm == "uffd-stress"/ { @read = count(); }
"""


@dataclass
class Run:
    wall_s: float
    cpu_s: float  # workload user+sys, plus the tracer's CPU over the same interval
    tracer_cpu_s: float = 0.0  # the tracer's part of cpu_s (the rest: the workload, probes included)
    startup_s: float | None = None
    peak_rss_mib: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    counted: int = 0  # uffd-stress's own count of userfaults it handled
    bpf_s: float | None = None  # the tracer's BPF programs' run time (with --bpf-time)
    bpf_programs: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (run ns, runs)


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime of every thread


def bpf_runs(pid: int) -> dict[int, tuple[int, int]]:
    """Run time (ns) and run count of each BPF program ``pid`` holds, by
    program id (their fdinfo; 0 unless kernel.bpf_stats_enabled)."""
    out = {}
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue  # closed meanwhile
        fields = dict(re.findall(r"^(prog_id|run_time_ns|run_cnt):\s+(\d+)", text, re.M))
        if "prog_id" in fields:
            out[int(fields["prog_id"])] = (int(fields.get("run_time_ns", 0)), int(fields.get("run_cnt", 0)))
    return out


def bpf_by_program(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """What each program ran between the two readings, by what it is attached
    to (bpftool perf: the tracepoint or kprobe), else its name (truncated to
    15 characters by the kernel)."""
    names: dict[int, str] = {}
    for what in (["prog", "show"], ["perf", "show"]):
        try:
            shown = json.loads(subprocess.run(["bpftool", *what, "-j"], capture_output=True, text=True,
                                              check=True).stdout)
        except (OSError, subprocess.CalledProcessError, json.JSONDecodeError):
            continue
        for p in shown:
            prog = p.get("prog_id", p.get("id"))
            names[prog] = p.get("tracepoint") or p.get("func") or p.get("name") or str(prog)
    out: dict[str, tuple[int, int]] = {}
    for prog, (ns, cnt) in after.items():
        ns0, cnt0 = before.get(prog, (0, 0))
        name = names.get(prog, str(prog))
        had = out.get(name, (0, 0))
        out[name] = (had[0] + ns - ns0, had[1] + cnt - cnt0)
    return out


def peak_rss_mib(pid: int) -> float:
    m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m[1]) / 1024 if m else 0.0


def run_workload(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, user+sys seconds (its own rusage) and stdout."""
    with tempfile.TemporaryFile(mode="w+") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {text[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime, text


def counted_faults(text: str) -> int:
    return sum(int(n) for line in text.splitlines() if "userfaults:" in line
               for n in re.findall(r"(\d+) (?:missing|wp|minor)\b", line))


class Tracer:
    """A host-wide tracer process writing to a file (as a user would), or
    top to a pseudo-terminal: started, waited for until its probes are
    live, sampled, stopped."""

    def __init__(self, cmd: list[str], ready: str) -> None:
        self.out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives as long as the tracer; read in stop())
        self._pty: Terminal | None = None
        t0 = time.monotonic()
        if ready == TOP_READY:
            self._pty = Terminal()
            self.proc = subprocess.Popen(cmd, stdin=self._pty.tty, stdout=self._pty.tty, stderr=self._pty.tty,
                                         start_new_session=True)
        else:
            # serve says "probes live" on stderr; its stdout stays empty.
            stderr = self.out if ready == SERVE_READY else subprocess.DEVNULL
            self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=stderr, start_new_session=True)
        while ready not in (self._pty.screen() if self._pty else
                            Path(f"/proc/self/fd/{self.out.fileno()}").read_text()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} ended before its probes were live")
            time.sleep(0.01)
        self.startup_s = time.monotonic() - t0

    def stop(self) -> tuple[float, str]:
        rss = peak_rss_mib(self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:  # seen once from bpftrace: its output is then lost, not the run
            self.proc.kill()
            self.proc.wait()
        if self._pty is not None:
            return rss, self._pty.close()
        self.out.seek(0)
        return rss, self.out.read()


class Terminal:
    """A 132x40 pseudo-terminal whose output a thread keeps reading (the
    last 64 KiB of it), as a terminal emulator would."""

    def __init__(self) -> None:
        import fcntl
        import pty
        import struct
        import termios
        import threading

        self._master, self.tty = pty.openpty()
        fcntl.ioctl(self.tty, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
        self._tail = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every writer is gone
                return
            if not chunk:
                return
            self._tail = (self._tail + chunk)[-65536:]

    def screen(self) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self._tail.decode(errors="replace"))

    def close(self) -> str:
        os.close(self.tty)
        self._reader.join(timeout=5)
        os.close(self._master)
        return self.screen()


def serve_summary() -> dict[str, Any]:
    """serve's counters, scraped, in the shape of trace's summary."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{SERVE_PORT}/metrics", timeout=10).read().decode()

    def total(name: str) -> int:
        return int(sum(float(v) for v in re.findall(rf"^uffdtrace_{name}_total(?:{{[^}}]*}})? (\S+)", text, re.M)))

    flags = {m[1]: int(float(m[2])) for m in re.finditer(r'^uffdtrace_flags_total{.*flag="(\w+)".*} (\S+)', text, re.M)}
    return {"lifecycles": total("faults"), "messages_read": total("messages_read"), "events": total("events"),
            "lost": total("lost_records"), "flags": flags}


def top_summary(screen: str) -> dict[str, Any]:
    """What top's last screen says: lost records, faults the kernel summed
    (it shows no count of records or messages read: those stay unknown)."""
    lost = re.findall(r"lost (\d+)", screen)
    summed = re.findall(r"([\d,]+) summed in kernel", screen)
    return {"top": True, "lost": int(lost[-1]) if lost else -1,
            "summed": int(summed[-1].replace(",", "")) if summed else 0}


def traced_run(tracer_cmd: list[str] | None, ready: str, workload: list[str]) -> Run:
    if tracer_cmd is None:
        wall, cpu, text = run_workload(workload)
        return Run(wall, cpu, counted=counted_faults(text))
    tracer = Tracer(tracer_cmd, ready)
    before, bpf_before = proc_cpu_s(tracer.proc.pid), bpf_runs(tracer.proc.pid)
    wall, cpu, text = run_workload(workload)
    # The tracer's drain of the last records belongs to this run (and serve's
    # reading of what the kernel summed, once a second).
    time.sleep(1.2 if ready in (SERVE_READY, TOP_READY) else 0.2)
    tracer_cpu = proc_cpu_s(tracer.proc.pid) - before
    programs = bpf_by_program(bpf_before, bpf_runs(tracer.proc.pid))
    served = serve_summary() if ready == SERVE_READY else None
    rss, out = tracer.stop()
    summary: dict[str, Any] = served or (top_summary(out) if ready == TOP_READY else next(
        (json.loads(line) for line in out.splitlines() if line.startswith('{"type":"summary"')), {}))
    return Run(wall, cpu + tracer_cpu, tracer_cpu, tracer.startup_s, rss, summary, counted_faults(text),
               sum(ns for ns, _ in programs.values()) / 1e9, programs)


@contextlib.contextmanager
def bpf_stats(enabled: bool) -> Iterator[None]:
    """kernel.bpf_stats_enabled on for the block (then as it was)."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = knob.read_text() if enabled else None
    if enabled:
        knob.write_text("1")
    try:
        yield
    finally:
        if old is not None:
            knob.write_text(old)


def reserve_hugepages() -> int | None:
    """Reserve HUGEPAGES huge pages; returns the old setting to restore, None if impossible."""
    knob = Path("/proc/sys/vm/nr_hugepages")
    old = int(knob.read_text())
    knob.write_text(str(old + HUGEPAGES))
    if int(knob.read_text()) < old + HUGEPAGES:
        knob.write_text(str(old))
        return None
    return old


def bench_stress(mode: str, runs: int, configs: list[str], only: list[str] | None = None) -> None:
    """``only``: the variants to run (with the untraced baseline), by name."""
    if not UFFD_STRESS.exists():
        subprocess.run([str(ROOT / "scripts" / "build_uffd_stress.sh")], check=True)
    variants: dict[str, tuple[list[str] | None, str]] = {
        "untraced": (None, ""),
        "uffdtrace": ([str(UFFDTRACE), "--mode", mode, "trace", "-j"], '"type":"header"'),
        "uffdtrace --events": ([str(UFFDTRACE), "--mode", mode, "trace", "-j", "--events"], '"type":"header"'),
        "uffdtrace --flagged": ([str(UFFDTRACE), "--mode", mode, "trace", "-j", "--flagged"], '"type":"header"'),
        "uffdtrace --record": ([str(UFFDTRACE), "--mode", mode, "trace", "-j", "--force", "--record",
                                str(Path(tempfile.gettempdir()) / "uffdtrace-bench.cap")], '"type":"header"'),
        "uffdtrace serve": ([str(UFFDTRACE), "--mode", mode, "serve", "--listen", f"127.0.0.1:{SERVE_PORT}"],
                            SERVE_READY),
        "uffdtrace top": ([str(UFFDTRACE), "--mode", mode, "top"], TOP_READY),
    }
    if shutil.which("bpftrace"):
        variants["bpftrace (peer)"] = (["bpftrace", "-e", BPFTRACE_SCRIPT], "Attaching")
    else:
        print("  (no bpftrace: apt-get install bpftrace for the peer column)")
    if only:
        variants = {name: v for name, v in variants.items()
                    if name == "untraced" or name in only}
    for config in (tuple(c.split(":")) for c in configs):
        old_huge = reserve_hugepages() if config[0] == "hugetlb" else None
        if config[0] == "hugetlb" and old_huge is None:
            print(f"uffd-stress {' '.join(config)}: skipped (cannot reserve {HUGEPAGES} huge pages)")
            continue
        try:
            results: dict[str, list[Run]] = {name: [] for name in variants}
            for _ in range(runs):  # alternate: drift in the machine hits every variant alike
                for name, (cmd, ready) in variants.items():
                    results[name].append(traced_run(cmd, ready, [str(UFFD_STRESS), *config]))
        finally:
            if old_huge is not None:
                Path("/proc/sys/vm/nr_hugepages").write_text(str(old_huge))
        report(f"uffd-stress {' '.join(config)}", results, runs)


def report(title: str, results: dict[str, list[Run]], runs: int) -> None:
    base = results["untraced"]
    wall0, cpu0 = statistics.median(r.wall_s for r in base), statistics.median(r.cpu_s for r in base)
    print(f"{title} (median of {runs}; ratios are untraced/traced, 1.0 = free)")
    print(f"  {'variant':<20} {'wall s':>7} {'wall ratio':>10} {'cpu s':>7} {'cpu ratio':>9} {'tracer s':>8} "
          f"{'us/lc':>6} {'bpf us/f':>8} {'rec/f':>5} {'start s':>7} {'peak MiB':>8}  records, lost, reads/counted, "
          "flags")
    for name, rs in results.items():
        wall, cpu = statistics.median(r.wall_s for r in rs), statistics.median(r.cpu_s for r in rs)
        start = "-" if rs[0].startup_s is None else f"{statistics.median(r.startup_s or 0 for r in rs):.2f}"
        rss = "-" if rs[0].peak_rss_mib is None else f"{max(r.peak_rss_mib or 0 for r in rs):.0f}"
        detail = ""
        top = rs[0].summary.get("top", False)
        if top:
            detail = (f"top: {statistics.median(r.summary['summed'] for r in rs):,.0f} summed in kernel, "
                      f"{sum(r.summary['lost'] for r in rs)} lost (its last screen)")
        elif rs[0].summary:
            reads = " ".join(f"{r.summary.get('messages_read', 0)}/{r.counted}" for r in rs)
            flags = [r.summary["flags"] for r in rs if r.summary["flags"]] or "none"
            detail = (f"{statistics.median(r.summary['events'] for r in rs):,.0f}, "
                      f"{sum(r.summary['lost'] for r in rs)}, {reads}, {flags}")
        tracer = statistics.median(r.tracer_cpu_s for r in rs)
        # The tracer's CPU per lifecycle: comparable across runs whose fault counts differ
        # (top counts no lifecycles on its screen: per fault uffd-stress counted).
        ended = [r.counted if top else r.summary.get("lifecycles", 0) for r in rs]
        per_lc = (f"{statistics.median(r.tracer_cpu_s / max(1, n) * 1e6 for r, n in zip(rs, ended, strict=True)):.1f}"
                  if rs[0].summary else "-")
        # The BPF programs' time per fault uffd-stress counted (in the workload's CPU already).
        bpf = (f"{statistics.median((r.bpf_s or 0) / max(1, r.counted) * 1e6 for r in rs):.1f}"
               if any(r.bpf_s for r in rs) else "-")
        # Records the tracer consumed per fault uffd-stress counted (folding makes it about 1).
        per_fault = (f"{statistics.median(r.summary['events'] / max(1, r.counted) for r in rs):.2f}"
                     if rs[0].summary and not top else "-")
        print(f"  {name:<20} {wall:>7.2f} {wall0 / wall:>10.2f} {cpu:>7.2f} {cpu0 / cpu:>9.2f} {tracer:>8.2f} "
              f"{per_lc:>6} {bpf:>8} {per_fault:>5} {start:>7} {rss:>8}  {detail}")
        if any(r.bpf_s for r in rs):
            print(f"  {'':<20} BPF per fault by program: {program_shares(rs)}")


def program_shares(rs: list[Run], shown: int = 6) -> str:
    """The programs that ran longest per fault uffd-stress counted (medians
    over the runs), each with its runs per fault: where the BPF time goes."""
    names = {name for r in rs for name in r.bpf_programs}
    per = {name: (statistics.median(r.bpf_programs.get(name, (0, 0))[0] / max(1, r.counted) / 1e3 for r in rs),
                  statistics.median(r.bpf_programs.get(name, (0, 0))[1] / max(1, r.counted) for r in rs))
           for name in names}
    top = sorted(per.items(), key=lambda kv: -kv[1][0])[:shown]
    return ", ".join(f"{name} {us:.2f} µs ({runs:.1f} runs)" for name, (us, runs) in top)


def bench_startup(mode: str, runs: int, scratch: Path) -> None:
    """Launch to probes live, and peak RSS, of `trace -j` host-wide: cold
    (an empty cache: bcc compiles) and warm (the program, symbols and
    offsets the cold run kept), in alternation."""
    results: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
    cmd = [str(UFFDTRACE), "--mode", mode, "trace", "-j"]
    for i in range(runs):
        env_dir = scratch / f"cache-{i}"
        for name in ("cold", "warm"):
            os.environ["UFFDTRACE_CACHE"] = str(env_dir)
            try:
                tracer = Tracer(cmd, '"type":"header"')
                time.sleep(0.2)
                rss, _ = tracer.stop()
            finally:
                del os.environ["UFFDTRACE_CACHE"]
            results[name].append((tracer.startup_s, rss))
    print(f"start-up of `trace -j` (median of {runs}; peak RSS: the largest)")
    for name, rs in results.items():
        print(f"  {name:<5} {statistics.median(s for s, _ in rs):6.2f} s {max(m for _, m in rs):6.0f} MiB")


def bench_serve_rss(mode: str, minutes: float, scratch: Path) -> None:
    """`serve`'s RSS over a run under load (uffd-stress anon 16 MiB x 4,
    again and again): sampled every 30 s, the curve printed."""
    if not UFFD_STRESS.exists():
        subprocess.run([str(ROOT / "scripts" / "build_uffd_stress.sh")], check=True)
    serve = Tracer([str(UFFDTRACE), "--mode", mode, "serve", "--listen", f"127.0.0.1:{SERVE_PORT}"], SERVE_READY)
    deadline = time.monotonic() + minutes * 60
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    next_sample = t0
    runs = 0
    while time.monotonic() < deadline:
        run_workload([str(UFFD_STRESS), "anon", "16", "4"])
        runs += 1
        if time.monotonic() >= next_sample:
            m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{serve.proc.pid}/status").read_text())
            samples.append((time.monotonic() - t0, int(m[1]) / 1024 if m else 0.0))
            next_sample += 30
    counts = serve_summary()
    kept = kernel_sum_keys() if mode == "tracepoint" else None
    serve.stop()
    print(f"serve RSS under load over {minutes:g} min (uffd-stress anon 16 MiB x 4 in a loop): "
          f"{counts['lifecycles']:,.0f} faults, {counts['lost']:,.0f} records lost, {runs} processes"
          + ("" if kept is None else f", {kept} keys left in the kernel's sums (exited processes' deleted)"))
    print("  " + "  ".join(f"{t / 60:.1f}m {mib:.0f}" for t, mib in samples) + " MiB")


def kernel_sum_keys() -> int | None:
    """Entries in serve's map of summed clean faults (bpf/aggregate.h), by bpftool."""
    if not shutil.which("bpftool"):
        return None
    done = subprocess.run(["bpftool", "-j", "map", "dump", "name", "clean_totals"], capture_output=True, text=True,
                          check=False)
    return len(json.loads(done.stdout)) if done.returncode == 0 else None


def build_workload(name: str, scratch: Path) -> Path:
    exe = scratch / name
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(ROOT / "tests" / "workloads" / f"{name}.c")],
                   check=True)
    return exe


def fault_rate(cmd: list[str]) -> float:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    w = next(json.loads(line) for line in out.splitlines() if line.startswith('{"workload"'))
    summary = next((json.loads(line) for line in out.splitlines() if line.startswith('{"type":"summary"')), None)
    if summary and (summary["lost"] or summary["lifecycles"] != w["pages"]):
        print(f"  (traced run: {summary['lost']} lost, {summary['lifecycles']} lifecycles for {w['pages']} faults)")
    return float(w["pages"] / (w["elapsed_ns"] / 1e9))


def bench_micro(mode: str, runs: int, pages: int, scratch: Path) -> None:
    exe = build_workload("clean_faults", scratch)
    workload = ["taskset", "-c", "0", str(exe), str(pages)]
    rates: dict[str, list[float]] = {"untraced": [], "traced": [], "traced --events": []}
    for _ in range(runs):
        rates["untraced"].append(fault_rate(workload))
        for output in ([], ["--events"]):
            name = "traced --events" if output else "traced"
            rates[name].append(fault_rate([str(UFFDTRACE), "--mode", mode, "trace", "-j", *output, "--", *workload]))
    plain = statistics.median(rates["untraced"])
    for name in ("traced", "traced --events"):
        traced = statistics.median(rates[name])
        print(f"uffd faults/s pinned  untraced {plain:,.0f}  {name} {traced:,.0f}  ratio {traced / plain:.3f}  "
              f"({pages} faults, median of {runs})")


def busy_seconds(scratch: Path) -> float:
    t0 = time.monotonic()
    for src in SOURCES:
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(scratch / src.stem), str(src)], check=True)
    return time.monotonic() - t0


def bench_busy(mode: str, runs: int, scratch: Path) -> None:
    idle = [busy_seconds(scratch) for _ in range(runs)]
    tracer = Tracer([str(UFFDTRACE), "--mode", mode, "trace", "-j"], '"type":"header"')
    try:
        busy = [busy_seconds(scratch) for _ in range(runs)]
    finally:
        tracer.stop()
    t_idle, t_busy = statistics.median(idle), statistics.median(busy)
    print(f"unrelated gcc builds  untraced {t_idle:.3f}s  traced {t_busy:.3f}s  "
          f"slowdown ratio {t_busy / t_idle:.3f}  (median of {runs})")


def bench_rate(mode: str, scratch: Path) -> None:
    exe = build_workload("postcopy_shape", scratch)
    for faulters in (1, 2, 4, 8, 16):
        out = subprocess.run([str(UFFDTRACE), "--mode", mode, "trace", "-j", "--events", "--", str(exe), "4096",
                              "20", str(faulters)], capture_output=True, text=True, check=True).stdout
        stamps = [int(m[1]) for m in re.finditer(r'^\{"type":"event".*?"ts_ns":(\d+)', out, re.MULTILINE)]
        summary = json.loads(out.splitlines()[-1])
        span = (max(stamps) - min(stamps)) / 1e9 if stamps else 0.0
        rate = len(stamps) / span if span else 0.0
        print(f"--events  {faulters:>2} faulting threads: {len(stamps):>9,} records in {span:.2f} s = "
              f"{rate:>10,.0f} records/s, lost {summary['lost']}")


def bench_capture(mode: str, scratch: Path) -> None:
    exe = build_workload("postcopy_shape", scratch)
    largest: tuple[int, Path] | None = None
    for faulters in (1, 4, 16):
        cap = scratch / f"rate-{faulters}.cap"
        proc = subprocess.run([str(UFFDTRACE), "--mode", mode, "record", "--events", "-j", "-o", str(cap), "--",
                               str(exe), "4096", "20", str(faulters)], capture_output=True, text=True, check=True)
        summary = json.loads(next(line for line in proc.stderr.splitlines() if line.startswith('{"type":"summary"')))
        dump = subprocess.run([str(UFFDTRACE), "dump", str(cap)], capture_output=True, text=True, check=True).stdout
        stamps = [int(m[1]) for m in re.finditer(r'^\{"type":"event".*?"ts_ns":(\d+)', dump, re.MULTILINE)]
        span = (max(stamps) - min(stamps)) / 1e9 if stamps else 0.0
        size = cap.stat().st_size
        print(f"record --events {faulters:>2} faulting threads: {len(stamps):>9,} records in {span:.2f} s = "
              f"{len(stamps) / span if span else 0:>10,.0f} records/s, lost {summary['lost']}, "
              f"{size / max(1, len(stamps)):.0f} bytes/record in a file of {size / 2**20:.1f} MiB")
        if largest is None or len(stamps) > largest[0]:
            largest = (len(stamps), cap)
    assert largest is not None
    n, cap = largest
    for what, cmd in (("report", ["report", str(cap)]), ("trace --from", ["trace", "-j", "--from", str(cap)])):
        t0 = time.monotonic()
        subprocess.run([str(UFFDTRACE), *cmd], stdout=subprocess.DEVNULL, check=True)
        took = time.monotonic() - t0
        print(f"{what:<13} of {n:,} records: {took:.2f} s ({took * 1e6 / max(1, n):.2f} s per million records)")


def lab_migration(untraced: bool, scratch: Path) -> dict[str, Any]:
    out = scratch / "lab.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "postcopy_lab.py"), "qemu", *MIGRATION_LAB,
                    *(["--untraced"] if untraced else []), "--json", str(out)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    [result] = json.loads(out.read_text())
    return dict(result["qemu"])


def bench_migration(runs: int, scratch: Path) -> None:
    """QEMU's own figures for a post-copy migration (scripts/postcopy_lab.py),
    untraced and with `record -p` on the destination, in alternation."""
    got: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(runs):
        for untraced in (True, False):
            got[untraced].append(lab_migration(untraced, scratch))
    for key, what in (("total_time_ms", "migration time"), ("postcopy_blocktime_ms", "vCPU blocktime")):
        plain, traced = (statistics.median(r[key] for r in got[u]) for u in (True, False))
        print(f"post-copy {what:<15} untraced {plain:8.0f} ms  traced {traced:8.0f} ms  "
              f"ratio (untraced/traced) {plain / traced:.2f}  (median of {runs}; QEMU's query-migrate)")
    requests = [r["postcopy_requests"] for r in got[False]]
    print(f"post-copy requests per traced run: {requests}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--pages", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", choices=["stress", "startup", "serve-rss", "micro", "busy", "rate", "capture",
                                       "migration"])
    ap.add_argument("--minutes", type=float, default=10, help="serve-rss: how long")
    ap.add_argument("--stress", action="append", metavar="TYPE:MIB:BOUNCES",
                    help=f"uffd-stress configuration (repeatable; default {' '.join(STRESS_CONFIGS)})")
    ap.add_argument("--variant", action="append", metavar="NAME",
                    help="stress: only this variant, by its row's name, e.g. 'uffdtrace --flagged' "
                         "(repeatable; untraced always runs)")
    ap.add_argument("--bpf-time", action="store_true",
                    help="stress: also the tracers' BPF run time per fault (turns kernel.bpf_stats_enabled on)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench.py: run as root", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "stress"):
            with bpf_stats(args.bpf_time):
                bench_stress(args.mode, args.runs, args.stress or list(STRESS_CONFIGS), args.variant)
        if args.only in (None, "startup"):
            bench_startup(args.mode, args.runs, Path(tmp))
        if args.only in (None, "serve-rss"):
            bench_serve_rss(args.mode, args.minutes, Path(tmp))
        if args.only in (None, "micro"):
            bench_micro(args.mode, args.runs, args.pages, Path(tmp))
        if args.only in (None, "busy"):
            bench_busy(args.mode, args.runs, Path(tmp))
        if args.only in (None, "rate"):
            bench_rate(args.mode, Path(tmp))
        if args.only in (None, "capture"):
            bench_capture(args.mode, Path(tmp))
        if args.only in (None, "migration"):
            bench_migration(args.runs, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
