"""What the running kernel and host offer: probed from files, never from versions."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .btf import VMLINUX_BTF

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


@dataclass(frozen=True)
class Features:
    release: str
    root: bool
    btf: bool
    kprobes: bool
    tracefs: Path | None
    headers: Path | None
    headers_target: str | None
    bcc_version: str | None
    bcc_error: str | None

    @property
    def headers_match(self) -> bool:
        """Whether the headers bcc will use were built for this very kernel:
        the release their build wrote down (a kernel built in its own tree,
        or Debian's headers package), else the tree's name."""
        if self.headers_target is None:
            return False
        try:
            built_for = (Path(self.headers_target) / "include" / "config" / "kernel.release").read_text()
        except OSError:
            return self.release in self.headers_target
        return built_for.strip() == self.release


def tracefs() -> Path | None:
    for path in TRACEFS_CANDIDATES:
        try:
            if (path / "events").is_dir():
                return path
        except PermissionError:  # not root: the caller says what is missing
            continue
    return None


def ensure_tracefs() -> Path | None:
    """Mount tracefs if nothing is mounted yet (bcc reads tracepoint formats
    from it); returns where it is, or None if it cannot be had."""
    found = tracefs()
    if found is not None:
        return found
    target = TRACEFS_CANDIDATES[0]
    if target.is_dir() and os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)], check=False, capture_output=True)
    return tracefs()


def kprobes_available(trace_dir: Path | None) -> bool:
    # The perf 'kprobe' PMU (what bcc uses) or tracefs kprobe_events exist
    # only with CONFIG_KPROBE_EVENTS, which needs CONFIG_KPROBES.
    if Path("/sys/bus/event_source/devices/kprobe").is_dir():
        return True
    return trace_dir is not None and (trace_dir / "kprobe_events").exists()


def bcc_version() -> tuple[str | None, str | None]:
    try:
        import bcc
    except ImportError as exc:
        return None, str(exc)
    return getattr(bcc, "__version__", "unknown"), None


def probe() -> Features:
    release = platform.release()
    build = Path("/lib/modules") / release / "build"
    trace_dir = tracefs()
    version, error = bcc_version()
    return Features(
        release=release,
        root=os.geteuid() == 0,
        btf=VMLINUX_BTF.exists(),
        kprobes=kprobes_available(trace_dir),
        tracefs=trace_dir,
        headers=build if build.exists() else None,
        headers_target=os.path.realpath(build) if build.exists() else None,
        bcc_version=version,
        bcc_error=error,
    )
