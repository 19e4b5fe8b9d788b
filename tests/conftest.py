"""Shared test helpers: live prerequisites fail loudly under CI, and the C
workloads are built once per session."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".build"
WORKLOAD_SRC = ROOT / "tests" / "workloads"
IN_CI = os.environ.get("CI", "").lower() == "true"
# The markers of each tier's directory (pyproject.toml declares them): `-m "not vm"` and the like select tiers.
TIER_MARKERS = {"live": ("live",), "vm": ("live", "vm"), "seedbugs": ("live",)}


SESSION_START = time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Beside pytest's slowest tests: each VM scenario's wall time in its
    guest (a kernel's scenarios run in one boot, which pytest times as one)."""
    for times in sorted(BUILD.glob("vm-*/times")):
        if times.stat().st_mtime < SESSION_START:
            continue  # a boot of an earlier session
        rows = [line.split() for line in times.read_text().splitlines() if len(line.split()) == 2]
        rows.sort(key=lambda r: -int(r[1]))
        total = sum(int(r[1]) for r in rows)
        terminalreporter.write_line(f"{times.parent.name} scenarios ({total} s in the guest): "
                                    + ", ".join(f"{name} {secs} s" for name, secs in rows[:8]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(ROOT / "tests").parts
        for name in TIER_MARKERS.get(parts[0], ()) if len(parts) > 1 else ():
            item.add_marker(name)


def require(condition: bool, reason: str) -> None:
    """Skip on a developer machine; under CI=true a missing prerequisite fails."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"live tier cannot run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def workloads() -> Path:
    """Compile every tests/workloads/*.c into .build/wl/."""
    out = BUILD / "wl"
    out.mkdir(parents=True, exist_ok=True)
    for src in sorted(WORKLOAD_SRC.glob("*.c")):
        subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", str(out / src.stem),
                        str(src)], check=True)
    return out


@pytest.fixture(scope="session")
def uffd_stress() -> Path:
    """The kernel's own uffd-stress, built from Debian's linux-source-6.12."""
    out = BUILD / "uffd-stress"
    build = subprocess.run([str(ROOT / "scripts" / "build_uffd_stress.sh"), str(out)], capture_output=True,
                           text=True, check=False)
    require(build.returncode == 0, f"cannot build uffd-stress: {build.stderr.strip()}")
    return out


@pytest.fixture(scope="session")
def uffd_unit_tests(uffd_stress: Path) -> Path:
    """The kernel's own uffd-unit-tests, built beside uffd-stress."""
    return uffd_stress.parent / "uffd-unit-tests"
