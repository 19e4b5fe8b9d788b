"""What every part of the post-copy lab shares: paths, constants, the one error
it ends with, progress lines, and the processes it starts."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the checkout (scripts/postcopy/ is two below)
UFFDTRACE = ROOT / ".venv" / "bin" / "uffdtrace"
CRIU_WORKLOAD = ROOT / "tests" / "workloads" / "criu_pattern.c"
SRC_ADDR, DST_ADDR, PREFIX_LEN, PORT = "10.77.0.1", "10.77.0.2", 24, 4444
PHASES = ("pickup", "service", "wake", "resume")
PLACED_BY_READ_NS = 100_000
# QEMU names its threads (-name debug-threads=on); its post-copy fault thread
# (migration/postcopy-ram.c; QEMU 7.2 names it "fault-default") reads the uffd.
FAULT_THREAD = "fault-default"


class LabError(Exception):
    """Ends the lab with one line on stderr and exit 1."""



def say(what: str) -> None:
    """Progress, as comments: the one line that starts "postcopy_lab:" is an error."""
    print(f"# {what}", file=sys.stderr, flush=True)



def one_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else "no output"


def last_error(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"no log at {path}"
    errors = [x for x in lines if "Error" in x]
    return one_line(errors[-1] if errors else "\n".join(lines))



@contextlib.contextmanager
def process(argv: list[str], log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child that is terminated (then killed) however the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(what: str, ready: Any, timeout: float, alive: subprocess.Popen[bytes] | None = None,
             log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = ready()
        if got:
            return got
        if alive is not None and alive.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log else []
            raise LabError(f"{what}: the process exited ({alive.returncode}){': ' + tail[0] if tail else ''}")
        time.sleep(0.1)
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
