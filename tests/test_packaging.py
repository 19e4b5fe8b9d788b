"""`pip install .` gives a working tool away from the checkout: every
sub-package installed, the BPF sources inside the package; doctor, trace
--from and report run from /."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_an_installed_copy_runs_from_elsewhere(tmp_path: Path) -> None:
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, cwd=tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    *map(str, wheels.glob("*.whl"))], check=True, cwd=tmp_path)
    # The installed copy comes before the checkout's editable install (a
    # finder appended to sys.meta_path); the venv still gives click and orjson.
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    where = subprocess.run([sys.executable, "-c",
                            "import uffdtrace.live.probes as p, uffdtrace.sinks.text; print(p.BPF_DIR); "
                            "print(p.source_text('tracepoint.c')[:40])"],
                           check=True, cwd="/", env=env, capture_output=True, text=True).stdout
    assert where.startswith(str(target / "uffdtrace" / "bpf")), where
    assert "uffdtrace" in where.splitlines()[1]
    doctor = subprocess.run([sys.executable, "-m", "uffdtrace", "doctor"], check=False, cwd="/", env=env,
                            capture_output=True, text=True)
    assert doctor.returncode in (0, 1) and "Traceback" not in doctor.stderr, doctor.stderr
    assert "kernel" in doctor.stdout.lower(), doctor.stdout
    capture = next((ROOT / "tests" / "captures").glob("*.cap"))
    for args in (["trace", "--from", str(capture)], ["report", str(capture)]):
        run = subprocess.run([sys.executable, "-m", "uffdtrace", *args], cwd="/", env=env, capture_output=True,
                             text=True, check=False)
        assert run.returncode == 0 and not run.stderr and "lifecycles" in run.stdout.lower(), (args, run.stderr)
