"""CRIU lazy-pages restore of a process that filled its memory with a pattern."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from .common import CRIU_WORKLOAD, LabError, last_error, one_line, process, wait_for
from .guest import need_program, need_root
from .recording import record, replay, stop_recording, tracer_view, wait_recording


def criu_lab(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    need_root()
    criu = need_program("criu", "criu")
    need_program("gcc", "gcc")
    check = subprocess.run([criu, "check", "--feature", "uffd-noncoop"], capture_output=True, text=True,
                           check=False)
    if check.returncode != 0:
        raise LabError(f"criu cannot restore lazily on this kernel: {one_line(check.stdout + check.stderr)}")
    binary = work / "criu_pattern"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(CRIU_WORKLOAD)], check=True)
    images = work / "images"
    images.mkdir()
    wl_log = work / "workload.log"
    with contextlib.ExitStack() as stack:
        # A session of its own: CRIU dumps it without --shell-job; its output is a file CRIU restores.
        wl = stack.enter_context(process([str(binary), str(args.pages)], wl_log, start_new_session=True))
        wait_for("the workload to fill its pages", lambda: b"filled" in wl_log.read_bytes(), 30, wl, wl_log)
        pid = wl.pid
        run_criu([criu, "dump", "-t", str(pid), "-D", str(images), "-v4", "-o", "dump.log"], images / "dump.log")
        wl.wait(10)  # CRIU killed it once dumped; the restore brings it back with the same pid
        cap = work / "criu.cap"
        tracer = stack.enter_context(record([], cap, work, "criu"))
        wait_recording(tracer, cap, work, "criu")
        daemon = stack.enter_context(process([criu, "lazy-pages", "-D", str(images), "-v4", "-o", "lazy.log"],
                                             work / "lazy-pages.log"))
        wait_for("the lazy-pages daemon's socket", (images / "lazy-pages.socket").exists, 30, daemon,
                 work / "lazy-pages.log")
        stack.callback(kill_pid, pid)
        run_criu([criu, "restore", "-D", str(images), "--lazy-pages", "-d", "-v4", "-o", "restore.log"],
                 images / "restore.log")
        os.kill(pid, signal.SIGUSR1)  # read every page back: each first touch faults to the daemon
        wait_for("the restored workload to check its pages", lambda: not running(pid), args.timeout)
        try:
            daemon.wait(args.timeout)  # it ends once every page has been placed
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"criu lazy-pages did not finish within {args.timeout:.0f} s") from exc
        stop_recording(tracer, work, "criu")
    verdict = re.findall(r"pattern (ok|BAD.*)", wl_log.read_text(errors="replace"))
    lazy_log = (images / "lazy.log").read_text(errors="replace")
    view = tracer_view(replay(cap), pid)
    return {"pages": args.pages, "pid": pid, "pattern": verdict[-1] if verdict else None, "capture": cap.name,
            "workload_log": wl_log.read_text(errors="replace").strip(),
            # criu/uffd.c logs every fault message it reads ("#PF at ADDR") at -v4.
            "criu_faults_read": len(re.findall(r"#PF at ", lazy_log)),
            "uffdtrace": {**view, "readers": dict(view["readers"])}}


def run_criu(argv: list[str], log: Path) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"criu {argv[1]} failed: {last_error(log)}")


def running(pid: int) -> bool:
    """Alive and not a zombie (whoever reaps the restored process, if anyone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_pid(pid: int) -> None:
    if running(pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
