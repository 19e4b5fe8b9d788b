"""Runs `uffdtrace why` where pytest does not run (a VM guest):

  why_driver.py scenarios OUT WORKLOADS UFFDTRACE
      tests/why_scenarios.py's hangs, all at once (the live VM tier)
  why_driver.py hang OUT UFFDTRACE SECONDS CMD...
      CMD run untraced for at most SECONDS while `why -j` is asked again and
      again: a thread found asleep for HUNG_S or more (in one ask, or at the
      same address in asks that far apart) hangs (the seed tier: a kernel
      whose race hangs one)

and writes what it saw to OUT (JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.why_scenarios import run_all

HANG_MS = 40_000  # TCG compiles the walk in seconds: every hang must outlast a few asks
SETTLE_S = 30.0
HUNG_S = 3.0


def hang(uffdtrace: str, seconds: int, cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.Popen(["timeout", "-s", "KILL", str(seconds), *cmd], stdout=subprocess.DEVNULL)
    asks: list[tuple[float, list[dict[str, Any]]]] = []
    while proc.poll() is None:
        done = subprocess.run([uffdtrace, "why", "-j"], capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL, check=False)
        assert done.returncode in (0, 3) and not done.stderr, done
        asks.append((time.monotonic(), [json.loads(line) for line in done.stdout.splitlines()]))
        time.sleep(1)
    first: dict[tuple[int, int | None], float] = {}
    hung: dict[int, dict[str, Any]] = {}
    for at, found in asks:
        for b in found:
            since = first.setdefault((b["tid"], b["addr"]), at)
            asleep = max(at - since, b["waiting_s"] or 0.0)  # under TCG one ask can take most of the run
            if asleep >= HUNG_S:
                hung[b["tid"]] = {**b, "seen_for_s": round(asleep, 1)}
    return {"rc": proc.returncode, "asks": len(asks), "hung": list(hung.values()),
            "blocked_per_ask": [len(found) for _, found in asks]}


if __name__ == "__main__":
    what, out = sys.argv[1:3]
    if what == "scenarios":
        result = run_all(sys.argv[4], Path(sys.argv[3]), HANG_MS, SETTLE_S)
    else:
        result = hang(sys.argv[3], int(sys.argv[4]), sys.argv[5:])
    Path(out).write_text(json.dumps(result))
