"""`uffdtrace top` used as a person uses it: in tmux (send-keys,
capture-pane) on this host, while a DONTWAKE stall waits and a handler in
another process serves faults (summed in the kernel)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ..conftest import ROOT, require

UFFDTRACE = ROOT / ".venv" / "bin" / "uffdtrace"
STALL_S = 6
SERVED = 512  # faults the handler process serves
UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000}


def pane() -> str:
    return subprocess.run(["tmux", "capture-pane", "-t", "uffdtrace-top", "-p"], capture_output=True, text=True,
                          check=True).stdout


def wait_for(check: Callable[[str], bool], what: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = pane()
        if check(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen}")


def stuck_age_ns(screen: str, tid: int) -> int:
    m = re.search(rf"dontwake \d+/{tid} \S+ (\d+)(ns|us|ms) waiting for wake-up", screen)
    assert m, screen
    return int(m[1]) * UNITS[m[2]]


def bpf_programs() -> int:
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return len(re.findall(r"^\d+: ", out, re.M))


def test_top_in_tmux(workloads: Path, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "top needs root")
    require(shutil.which("tmux") is not None and shutil.which("bpftool") is not None,
            "no tmux or bpftool (scripts/setup.sh --test installs them)")
    programs_before = bpf_programs()
    rc = tmp_path / "rc"
    subprocess.run(["tmux", "kill-session", "-t", "uffdtrace-top"], capture_output=True, check=False)
    # The pane gets the environment of whoever started the tmux server, which
    # may say COLUMNS=80 (pytest's does): rich would obey it over the pane.
    subprocess.run(["tmux", "new-session", "-d", "-s", "uffdtrace-top", "-x", "140", "-y", "30",
                    f"env -u COLUMNS -u LINES {UFFDTRACE} --mode tracepoint top; echo $? > {rc}; sleep 600"],
                   check=True)
    stall = None
    try:
        wait_for(lambda s: "q quit" in s, "the dashboard")
        served = subprocess.Popen([str(workloads / "handler_process"), "serve", str(SERVED), "2"],
                                  stdout=subprocess.PIPE, text=True)
        assert json.loads(served.communicate(timeout=120)[0].splitlines()[-1])["pages"] == SERVED
        row = rf"^{served.pid}\s.*copy ok {SERVED}\b"
        screen = wait_for(lambda s: re.search(row, s, re.M) is not None, "the handler's faults, all resolved")
        summed = re.search(r"([\d,]+) summed in kernel", screen)
        assert summed and int(summed[1].replace(",", "")) > 0, screen  # clean faults never came to Python
        stall = subprocess.Popen([str(workloads / "dontwake"), str(STALL_S)], stdout=subprocess.PIPE, text=True)
        first = wait_for(lambda s: "waiting for wake-up" in s and "dontwake" in s, "the stuck fault")
        tid = int(re.search(r"dontwake \d+/(\d+) ", first)[1])  # type: ignore[index]
        time.sleep(1.5)
        second = wait_for(lambda s: stuck_age_ns(s, tid) > stuck_age_ns(first, tid), "its age to grow")
        assert stuck_age_ns(second, tid) - stuck_age_ns(first, tid) >= 1_000_000_000
        assert re.search(r"never_woken dontwake \d+/" + str(tid), wait_for(lambda s: "never_woken" in s, "the flag"))

        subprocess.run(["tmux", "send-keys", "-t", "uffdtrace-top", "s"], check=True)
        wait_for(lambda s: "s sort (in flight)" in s, "the sort key")
        subprocess.run(["tmux", "send-keys", "-t", "uffdtrace-top", "/", str(stall.pid), "Enter"], check=True)
        filtered = wait_for(lambda s: f"/ pid ({stall.pid})" in s, "the pid filter")
        assert all(line.split()[0] == str(stall.pid) for line in filtered.splitlines()
                   if re.match(r"^\d+\s", line))
        subprocess.run(["tmux", "send-keys", "-t", "uffdtrace-top", "q"], check=True)
        deadline = time.monotonic() + 60
        while not rc.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rc.exists() and rc.read_text().strip() == "0", pane()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", "uffdtrace-top"], capture_output=True, check=False)
        if stall is not None:
            stall.wait(timeout=60)
    assert bpf_programs() == programs_before  # q detached every probe
    later = subprocess.run([str(UFFDTRACE), "--mode", "tracepoint", "trace", "--duration", "1"], capture_output=True,
                           text=True, timeout=120, check=False)
    assert later.returncode == 0, later.stderr


def test_top_without_a_terminal_is_one_line() -> None:
    proc = subprocess.run([str(UFFDTRACE), "top"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=60, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "top needs a terminal" in proc.stderr
