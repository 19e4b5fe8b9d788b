"""Runs tests/why_scenarios.py's hangs where pytest does not run (a VM
guest of the live VM tier): `why_driver.py OUT WORKLOADS UFFDTRACE` writes
what `why` said of each, and each workload's own account, to OUT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.why_scenarios import run_all

HANG_MS = 40_000  # TCG compiles the walk in seconds: every hang must outlast a few asks
SETTLE_S = 30.0

if __name__ == "__main__":
    out, workloads, uffdtrace = sys.argv[1:4]
    Path(out).write_text(json.dumps(run_all(uffdtrace, Path(workloads), HANG_MS, SETTLE_S)))
