#!/usr/bin/env python3
"""Catch the real kernel races live: boot each seed kernel of
scripts/seed_kernels.sh under virtme-ng (TCG, as the VM tier does) and run a
racy-but-correct workload under `uffdtrace trace -j --fail-on-flags`, in
kprobe mode and in tracepoint mode, inside the same guest.

The races' workload is tests/workloads/postcopy_shape: faulting threads touch pages
just ahead of a background thread that copies the area in order, and a fault
thread reads each message and copies the page too, treating EEXIST as "the
background copy placed it and woke the waiter", without UFFDIO_WAKE, as QEMU
post-copy does. (The kernel's uffd-stress cannot show these races: its
handler calls UFFDIO_WAKE after every EEXIST, which wakes the thread whose
wake-up the kernel lost.) Each run is bounded: the workload is killed after
--seconds, a hung thread with it.

The windows' workloads: tests/workloads/move_idle (UFFDIO_MOVE back and
forth while another thread marks the same folios idle through page_idle,
whose rmap walk takes no folio lock) and tests/workloads/aio_poll (an
IOCB_CMD_POLL on the uffd); both run on every variant, in kprobe mode.

The aio poll race's workload is tests/workloads/aio_drain: an event loop
that arms an IOCB_CMD_POLL on the uffd, drains every queued message, then
waits in io_getevents, while two threads fault page after page; in each
mode, on every variant.

`why`: the races' workload once more, untraced, while `uffdtrace why -j` is
asked again and again (tests/why_driver.py): a thread it finds asleep for 3 s
or more hangs; on `refile` its verdict is
resolved_not_woken (the page is there, the wake-up was lost).

Expected: `stock` flags nothing; `refile` and `mustwait` hang a thread, and
uffdtrace says so while it hangs: missed_wakeup (a resolution covered the
page, without DONTWAKE, while the thread waited, and no wake-up reached it),
then never_woken; for `refile`, the evidence names the read() during which
the copy's wake-up ran; `windows`: anon_vma_retry naming the UFFDIO_MOVE,
and the slow aio poll wake-ups completed, not flagged; `aiopoll`: the
event loop hangs, and aio_poll_stuck names the unread fault beside the
pending poll (kprobe mode: queued while the request was off the waitqueue).

Prints a table per variant and mode: runs, faults, lifecycles, flags by
name, seconds to the first flag, and the first flag's evidence as printed.

Usage (root; builds missing kernels through seed_kernels.sh, about 20
minutes the first time):
  .venv/bin/python scripts/seed_bugs.py [--variant V]... [--runs N] [--mode kprobe|tracepoint]...
                                        [--seconds S] [--json FILE] [--out DIR]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.vm.tcg_guest import boot as boot_guest  # noqa: E402  (the VM tier's guest watch)

VENV = ROOT / ".venv" / "bin"
GUEST_RUN = ROOT / "tests" / "vm" / "guest_run.sh"
WORKLOADS = ("postcopy_shape", "move_idle", "aio_poll", "aio_drain")
VARIANTS = ("stock", "refile", "mustwait", "windows", "aiopoll", "moverecheck")
MODES = ("kprobe", "tracepoint")
# pages, rounds, faulting threads: a few seconds a run on stock under TCG.
SHAPE = (256, 40, 2)
MOVE_IDLE = "64 300"  # pages, rounds (two UFFDIO_MOVEs each)
AIO_DRAIN = "2048 2 300"  # pages, faulting threads, microseconds between arming the poll and draining
BOOT_TIMEOUT_S = 1800
# The why run's deadline: one `why` compiles its walk for about 20 s under TCG,
# and must find the hung thread before the workload is killed.
WHY_SECONDS = 60


class SeedError(Exception):
    pass


def kernels(variants: list[str], build: bool) -> dict[str, str]:
    """VARIANT -> bzImage, from seed_kernels.sh (which builds what is missing unless --cached)."""
    argv = [str(ROOT / "scripts" / "seed_kernels.sh"), *([] if build else ["--cached"]), *variants]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SeedError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"{argv} failed")
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def compile_workloads(out: Path) -> Path:
    wl = out / "wl"
    wl.mkdir(parents=True, exist_ok=True)
    for name in WORKLOADS:
        subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(wl / name),
                        str(ROOT / "tests" / "workloads" / f"{name}.c")], check=True)
    return wl


def scenarios(out: Path, wl: Path, args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """NAME -> (mode, uffdtrace arguments), every one on every variant: the
    races' workload in each mode, and the windows' workloads (kprobe mode:
    tracepoint mode cannot count anon_vma retries)."""
    def trace(name: str, rest: str) -> str:
        return f"trace -j --fail-on-flags -o {out}/{name}.trace --record {out}/{name}.cap {rest}"

    shape = " ".join(map(str, SHAPE))
    runs = {f"postcopy_{mode}": (mode, trace(f"postcopy_{mode}",
                                             f"-- timeout -s KILL {args.seconds} {wl}/postcopy_shape {shape}"))
            for mode in args.mode}
    for mode in args.mode:
        runs[f"aio_drain_{mode}"] = (mode, trace(f"aio_drain_{mode}", f"-- timeout -s KILL {args.seconds} "
                                                                       f"{wl}/aio_drain {AIO_DRAIN}"))
    runs["move_idle"] = ("kprobe", trace("move_idle", f"-- {wl}/move_idle {MOVE_IDLE}"))
    # `why`, with nothing traced: the races' workload alone, `why -j` asked while it runs.
    runs["why"] = ("run", f"{VENV / 'python'} {ROOT / 'tests' / 'why_driver.py'} hang {out}/why.json "
                          f"{VENV / 'uffdtrace'} {max(args.seconds, WHY_SECONDS)} {wl}/postcopy_shape {shape}")
    runs["aio"] = ("kprobe", trace("aio", f"--events -- {wl}/aio_poll"))
    return runs


def headers() -> set[str]:
    """The build tree bcc compiles against in the guest (seed_kernels.sh links
    it as /lib/modules/<release>/build). The guest sees the host's root, but
    virtme-ng mounts a tmpfs on /var/cache: the tree is handed in read-only."""
    return {os.path.realpath(p) for p in glob.glob("/lib/modules/*-uffdseed/build")}


def boot(bzimage: str, out: Path, lines: list[str]) -> None:
    """One guest, every mode's run in it (tests/vm/guest_run.sh drives uffdtrace)."""
    (out / "scenarios").write_text("".join(f"{x}\n" for x in lines))
    # --verbose: the guest's console goes to vm.log (a guest that dies says why there).
    cmd = [str(VENV / "vng"), "--verbose", "--run", bzimage, "--disable-kvm", "--force-9p", "--cpus", "2",
           "--memory", "2G",
           *(f"--rodir={tree}" for tree in headers()), "--rwdir", str(out),
           "--exec", f"{GUEST_RUN} {out} {VENV / 'uffdtrace'}"]
    env = {**os.environ, "PATH": f"{VENV}:{os.environ['PATH']}"}
    started = time.monotonic()
    if not boot_guest(cmd, env, out, out / "vm.log", BOOT_TIMEOUT_S):
        tail = (out / "vm.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise SeedError(f"the guest did not finish ({out / 'vm.log'}, after {time.monotonic() - started:.0f} s): "
                        f"{' | '.join(tail)}")


def parse_why(out: Path) -> dict[str, Any]:
    """What `why` said of the races' workload, untraced (tests/why_driver.py hang): the threads it saw hang."""
    if int((out / "why.rc").read_text()) != 0 or not (out / "why.json").exists():
        err = (out / "why.err").read_text(errors="replace").strip().splitlines()
        raise SeedError(f"{out.name} why: {err[-1] if err else 'no output'}")
    seen = json.loads((out / "why.json").read_text())
    return {"rc": seen["rc"], "kernel": None, "mode": "why", "lifecycles": 0, "flags": {}, "first_flag": None,
            "summary": {"lost": 0}, "workload": None if seen["rc"] else {}, "why": seen}


def parse_run(out: Path, name: str) -> dict[str, Any]:
    """What one traced run printed: header, lifecycles, flags, summary, and the workload's own line."""
    if name == "why":
        return parse_why(out)
    traced = out / f"{name}.trace"
    lines = [json.loads(x) for x in traced.read_text().splitlines() if x.startswith("{")] if traced.exists() else []
    if not any(x["type"] == "header" for x in lines) or not any(x["type"] == "summary" for x in lines):
        err = (out / f"{name}.err").read_text(errors="replace").strip().splitlines()
        raise SeedError(f"{out.name} {name}: uffdtrace did not trace it: {err[-1] if err else 'no output'}")
    header = next(x for x in lines if x["type"] == "header")
    flags = [x for x in lines if x["type"] == "flag" and not x.get("update")]
    first = min(flags, key=lambda f: f["t_ns"]) if flags else None
    workload = [json.loads(x) for x in (out / f"{name}.out").read_text().splitlines() if x.startswith("{")]
    return {
        "rc": int((out / f"{name}.rc").read_text()),
        "kernel": header["kernel"],
        "mode": header["mode"],
        "lifecycles": sum(1 for x in lines if x["type"] == "lifecycle"),
        "flags": dict(Counter(f["flag"] for f in flags)),
        "first_flag": None if first is None else {
            "flag": first["flag"], "seconds": round((first["t_ns"] - header["started_ns"]) / 1e9, 2),
            "tid": first["tid"], "evidence": [e["what"] for e in first["evidence"]]},
        "summary": next(x for x in lines if x["type"] == "summary"),
        "workload": workload[-1] if workload else None,  # none: it hung and was killed
    }


def run_variant(variant: str, bzimage: str, args: argparse.Namespace, work: Path, wl: Path) -> list[dict[str, Any]]:
    results = []
    for run in range(1, args.runs + 1):
        out = work / f"{variant}-{run}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        runs = scenarios(out, wl, args)
        started = time.monotonic()
        boot(bzimage, out, [f"{name}|{mode}|{argv}" for name, (mode, argv) in runs.items()])
        print(f"# {variant} run {run}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        results += [{"variant": variant, "run": run, "scenario": name, **parse_run(out, name)} for name in runs]
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'variant':<9} {'scenario':<20} {'mode':<10} {'run':>3} {'faults':>7} {'lost':>5} {'hung':>4} "
          f"{'1st flag s':>10}  flags")
    for r in results:
        first = r["first_flag"]
        print(f"{r['variant']:<9} {r['scenario']:<20} {r['mode']:<10} {r['run']:>3} {r['lifecycles']:>7} "
              f"{r['summary']['lost']:>5} "
              f"{'yes' if r['workload'] is None else 'no':>4} {first['seconds'] if first else '-':>10}  "
              f"{', '.join(f'{k} x{v}' for k, v in sorted(r['flags'].items())) or 'none'}")
    for r in results:
        if r["first_flag"]:
            f = r["first_flag"]
            print(f"\n{r['variant']} {r['scenario']} run {r['run']}: first flag {f['flag']} (tid {f['tid']}) "
                  f"at {f['seconds']} s:")
            for what in f["evidence"]:
                print(f"    {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", choices=VARIANTS, help="default: all")
    ap.add_argument("--mode", action="append", choices=MODES, help="default: both")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=20, help="the workload is killed after this long")
    ap.add_argument("--cached", action="store_true", help="use only kernels already built (never build)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--out", metavar="DIR", help="keep every run's traces and captures here")
    args = ap.parse_args()
    args.variant = args.variant or list(VARIANTS)
    args.mode = args.mode or list(MODES)
    if os.geteuid() != 0:
        print("seed_bugs: must run as root (qemu, the kernel cache)", file=sys.stderr)
        return 1
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="seedbugs."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        found = kernels(args.variant, build=not args.cached)
        wl = compile_workloads(work)
        results = [r for v in args.variant for r in run_variant(v, found[v], args, work, wl)]
        print_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        return 0
    except (SeedError, subprocess.TimeoutExpired) as exc:
        print(f"seed_bugs: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
