"""One virtme-ng guest under TCG, watched for the emulator's own deaths.

Under TCG a vCPU can run a kernel text byte another vCPU has just patched (a
tracepoint's, jump label's or kprobe's site, toggled as the tracer attaches or
detaches). Seen on these machines since guests kept their console:
- "Oops: int3" at that site (2026-12-04: in kernel_clone while the tracer
  started a thread; 1 of 14 seed-kernel boots, likely one CI 6.12 guest);
- "BUG: soft lockup" with the vCPU stuck on that site (2026-12-04: the 6.1
  guest of a CI run, in syscall_trace_enter on a 2-byte jump-label NOP, the
  text-patching sync IPI pending, as a tracer attached). That guest never
  ends: without a watch the tier waited out its whole timeout.
On hardware the patching's serializing IPIs rule both out, so we take them for
the emulator's: the guest is killed at the first sign, kept, and the caller
boots once more (a second death fails). guest_run.sh's keeper holds the
tracer's tracepoints from before the first scenario, so that a tracer patches
none of their sites; kprobe sites are still patched."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

TCG_DEATHS = {
    "Oops: int3": "an int3 Oops at a kernel site being patched",
    "BUG: soft lockup": "a soft lockup on a kernel site being patched",
}
WATCH_S = 5.0


def tcg_death(console: str) -> str | None:
    """What the console says the emulator killed the guest of, if it does."""
    return next((why for sign, why in TCG_DEATHS.items() if sign in console), None)


def run_guest(cmd: list[str], env: dict[str, str], log: Path, timeout_s: float) -> str | None:
    """Runs the guest, its console to `log`, until it exits, shows a TCG death
    (then it is killed at once) or `timeout_s` passes; returns the death seen."""
    with log.open("wb") as fh:
        guest = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                 start_new_session=True)
    deadline = time.monotonic() + timeout_s
    seen, tail = 0, b""
    try:
        while True:
            try:
                guest.wait(timeout=WATCH_S)
                break
            except subprocess.TimeoutExpired:
                pass
            with log.open("rb") as fh:
                fh.seek(seen)
                new = fh.read()
            seen += len(new)
            # The tail carries a sign split across two reads.
            tail = tail[-64:] + new
            if tcg_death(tail.decode(errors="replace")) or time.monotonic() > deadline:
                break
    finally:
        if guest.poll() is None:
            os.killpg(guest.pid, signal.SIGKILL)
            guest.wait()
    return tcg_death(log.read_text(errors="replace"))


def boot(cmd: list[str], env: dict[str, str], out: Path, log: Path, timeout_s: float) -> bool:
    """Boots the guest that runs `out`/scenarios; one the emulator killed is
    kept beside `out` (named OUT-tcg-death) and booted once more. Returns
    whether the guest finished."""
    for attempt in range(2):
        death = run_guest(cmd, env, log, timeout_s)
        if (out / "finished").exists() or attempt or death is None:
            break
        kept = out.with_name(f"{out.name}-tcg-death")
        shutil.rmtree(kept, ignore_errors=True)
        shutil.move(out, kept)
        if log.exists():  # a console kept outside `out`
            log.rename(kept / "vm.log")
        print(f"\n{out.name}: the guest died of {death} (TCG); kept in {kept}, booting again", file=sys.stderr)
        out.mkdir(parents=True)
        (out / "scenarios").write_text((kept / "scenarios").read_text())
    return (out / "finished").exists()
