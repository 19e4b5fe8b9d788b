"""The VM tier's guest watch (tests/vm/tcg_guest.py), on a stand-in for vng:
a guest that soft-locks is killed at once, kept and booted once more."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .vm.tcg_guest import boot, run_guest

# Stands in for vng: the first boot soft-locks and would never end; the second finishes.
GUEST = """
out=$1
if [ ! -e "$out/../booted" ]; then
    touch "$out/../booted"
    echo "[   61.2] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [python3:412]"
    exec sleep 600
fi
touch "$out/finished"
"""


def test_a_soft_locked_guest_is_killed_kept_and_booted_again(tmp_path: Path) -> None:
    out = tmp_path / "vm-6.1"
    out.mkdir()
    (out / "scenarios").write_text("demo|kprobe|demo\n")
    started = time.monotonic()
    assert boot(["sh", "-c", GUEST, "guest", str(out)], dict(os.environ), out, out / "vm.log", 600)
    assert time.monotonic() - started < 300  # not the sleep's 600 s
    kept = tmp_path / "vm-6.1-tcg-death"
    assert "soft lockup" in (kept / "vm.log").read_text()
    assert (kept / "scenarios").read_text() == (out / "scenarios").read_text()
    assert not (kept / "finished").exists()


def test_a_guest_that_hangs_without_a_sign_is_not_booted_again(tmp_path: Path) -> None:
    log = tmp_path / "vm.log"
    assert run_guest(["sh", "-c", "echo booting; exec sleep 600"], dict(os.environ), log, 6) is None
    assert log.read_text() == "booting\n"
