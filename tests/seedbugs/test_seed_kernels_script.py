"""scripts/seed_kernels.sh's answers to bad input and an empty cache: one
line, a non-zero exit, nothing built (these run without building anything)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..conftest import ROOT, require

SCRIPT = ROOT / "scripts" / "seed_kernels.sh"


def run(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"UFFDTRACE_KERNEL_CACHE": str(cache)} if cache else {})}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, check=False, env=env)


def test_unknown_variant_is_one_line() -> None:
    done = run("bogus")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == ("seed_kernels.sh: no variant bogus "
                           "(known: stock refile mustwait windows aiopoll moverecheck)\n")


def test_cached_with_nothing_built_says_what_is_missing(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "seed_kernels.sh needs root")
    require(Path("/usr/src/linux-source-6.12.tar.xz").exists(), "no linux-source-6.12 (scripts/setup.sh --test)")
    done = run("--cached", "stock", "refile", cache=tmp_path)
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.startswith("seed_kernels.sh: not built: stock refile ("), done.stderr
    assert done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
