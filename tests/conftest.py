"""Shared test helpers: live prerequisites fail loudly under CI, and the C
workloads are built once per session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".build"
WORKLOAD_SRC = ROOT / "tests" / "workloads"
IN_CI = os.environ.get("CI", "").lower() == "true"
# The markers of each tier's directory (pyproject.toml declares them): `-m "not vm"` and the like select tiers.
TIER_MARKERS = {"live": ("live",), "vm": ("live", "vm"), "seedbugs": ("live",)}


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
