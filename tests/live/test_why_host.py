"""`uffdtrace why` on this host: the hangs of tests/why_scenarios.py, and
what a user meets besides (nothing blocked, bad input, a busy host)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT, require
from ..why_scenarios import CASES, WhyCase, check, run_all

UFFDTRACE = ROOT / ".venv" / "bin" / "uffdtrace"
HANG_MS = 6000  # long enough for `why` to look, whatever the host's load
SETTLE_S = 4.0  # how long `why` is asked, again and again, until every hang shows


@pytest.fixture(scope="module", autouse=True)
def root() -> None:
    require(os.geteuid() == 0, "why needs root")
    require(UFFDTRACE.exists(), "no .venv: run scripts/setup.sh")


def why(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(UFFDTRACE), "why", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def hangs(workloads: Path) -> dict[str, Any]:
    return run_all(str(UFFDTRACE), workloads, HANG_MS, SETTLE_S)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hang_explained(hangs: dict[str, Any], case: WhyCase) -> None:
    check(case, hangs[case.name])


def test_nothing_blocked_is_one_line_and_exit_0() -> None:
    done = why(str(os.getpid()))
    assert done.returncode == 0 and done.stdout == f"no thread is blocked on userfaultfd in {os.getpid()}\n", done
    assert not done.stderr


def test_a_gone_pid_is_one_line_and_exit_1() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    done = why(str(gone.pid))
    assert done.returncode == 1 and not done.stdout and len(done.stderr.splitlines()) == 1, done
    # Without root: tests/test_cli.py (from a copy user nobody can read; this checkout may lie under a 0700 dir)


def test_ten_thousand_idle_threads(capsys: pytest.CaptureFixture[str]) -> None:
    """The cost on a busy host: the walk of every process's files and threads
    with 10,000 idle threads more (printed; never asserted as a time)."""
    threading.stack_size(64 * 1024)
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait, daemon=True) for _ in range(10_000)]
    for t in threads:
        t.start()
    try:
        started = time.monotonic()
        done = why()
        took = time.monotonic() - started
    finally:
        stop.set()
        for t in threads:
            t.join()
        threading.stack_size(0)
    assert done.returncode == 0 and "no thread is blocked" in done.stdout, done
    with capsys.disabled():
        print(f"\n`uffdtrace why` with 10,000 idle threads: {took:.2f} s")


def test_watch_says_what_happened_next(workloads: Path) -> None:
    """--watch traces the blocked threads' processes and holders: the
    DONTWAKE stall's UFFDIO_WAKE seen and the thread no longer blocked; the
    handler that reads nothing still leaves its fault unread."""
    woken = subprocess.Popen([str(workloads / "dontwake"), "9"], stdout=subprocess.PIPE, text=True)
    unread = subprocess.Popen([str(workloads / "handler_process"), "unread", "20000"], stdout=subprocess.PIPE,
                              text=True)
    time.sleep(1)
    done = why("-j", "--watch", "10", str(woken.pid), str(unread.pid))  # the wake comes once the probes are live
    found = {b["pid"]: b for b in map(json.loads, done.stdout.splitlines())}
    outs = [json.loads(p.communicate(timeout=60)[0].splitlines()[-1]) for p in (woken, unread)]
    assert done.returncode == 3 and not done.stderr, done
    w = found[woken.pid]["watch"]
    assert w["seconds"] == 10 and w["still_blocked"] is None, w
    assert {"by_tid": outs[0]["handler_tid"], "op": "wake", "ret": 0} in w["resolutions"], w
    u = found[unread.pid]["watch"]
    assert u["still_blocked"] == "not_read" and u["reads"] == [] and u["resolutions"] == [], u
    text = why("--watch", "0.5", str(os.getpid()))
    assert text.returncode == 0 and "watched" not in text.stdout  # nothing blocked: nothing to watch
