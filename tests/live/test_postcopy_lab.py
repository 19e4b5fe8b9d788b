"""The post-copy lab on this host (tracepoint mode): a real QEMU 7.2 live
migration between two network namespaces, the destination recorded by
uffdtrace, tied to QEMU's own figures; then the lab's bad input and its
cleanup on Ctrl-C. (The host's kernel has no netem: the delayed links and
CRIU, which cannot run on this kernel, are in the VM tier.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ..conftest import require
from ..labs import LAB, check_criu_lab, check_postcopy_lab, lab_command, leftovers

TIMEOUT_S = 600
# A slow background stream (QEMU's max-bandwidth) leaves more pages for the guest to ask for.
QEMU_LAB = ("qemu", "--bandwidth-mib", "32", "--guest-mib", "256", "--dirty-mib", "96")


@pytest.fixture(scope="module", autouse=True)
def lab_host() -> None:
    require(os.geteuid() == 0, "the lab needs root")
    missing = [p for p in ("qemu-system-x86_64", "busybox", "nsenter") if subprocess.run(
        ["which", p], capture_output=True, check=False).returncode]
    require(not missing, f"missing {missing} (scripts/setup.sh --test)")
    assert leftovers() == [], "a previous lab left these behind"


def run_lab(*args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lab_command(*args), capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


def test_qemu_postcopy_migration_seen_whole(tmp_path: Path) -> None:
    out = tmp_path / "lab.json"
    done = run_lab(*QEMU_LAB, "--json", str(out), "--keep", str(tmp_path / "keep"))
    assert done.returncode == 0, done.stderr
    [r] = json.loads(out.read_text())
    assert r["uffdtrace"]["summary"]["lifecycles"] == r["uffdtrace"]["faults"]
    check_postcopy_lab(r)
    assert (tmp_path / "keep" / r["capture"]).stat().st_size > 0
    assert "fault-thread reads" in done.stdout and "pickup p50/p99" in done.stdout
    assert leftovers() == []


def test_twice_in_a_row_and_ctrl_c_mid_migration_cleans_up(tmp_path: Path) -> None:
    """SIGINT while QEMU migrates (a slow stream keeps it migrating): one
    line, exit 1, nothing left; then a whole run works at once."""
    proc = subprocess.Popen(lab_command("qemu", "--bandwidth-mib", "2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "migrating" in line:
            break
    time.sleep(2)
    assert proc.poll() is None, "".join(lines)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    said = [x for x in err.splitlines() if not x.startswith("# ")]
    assert said == ["postcopy_lab: interrupted; everything the lab started was removed"], err
    assert leftovers() == []
    again = run_lab("qemu", "--json", str(tmp_path / "again.json"))
    assert again.returncode == 0, again.stderr
    assert leftovers() == []


def one_line_error(done: subprocess.CompletedProcess[str], says: str, ours: tuple[str, ...] = ()) -> None:
    """One line, exit 1, and nothing left but what the test itself made (``ours``)."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    said = [x for x in done.stderr.splitlines() if not x.startswith("# ")]  # progress lines are comments
    assert len(said) == 1 and said[0].startswith("postcopy_lab: "), done.stderr
    assert says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert leftovers() == list(ours)


def test_namespace_taken(tmp_path: Path) -> None:
    subprocess.run(["ip", "netns", "add", "uffdlab-dst"], check=True)
    try:
        # Still there after: the lab never removes a namespace it did not create.
        one_line_error(run_lab("qemu"), "network namespace uffdlab-dst already exists", ("netns uffdlab-dst",))
    finally:
        subprocess.run(["ip", "netns", "del", "uffdlab-dst"], check=True)
    assert leftovers() == []


def test_migration_timeout(tmp_path: Path) -> None:
    one_line_error(run_lab("qemu", "--bandwidth-mib", "1", "--timeout", "3"), "migration timed out after 3 s")


def run_lab_without_path(tmp_path: Path, lab: str) -> subprocess.CompletedProcess[str]:
    """The lab with an empty PATH: none of the programs it drives can be found."""
    bare = tmp_path / "bin"
    bare.mkdir()
    return subprocess.run(lab_command(lab), capture_output=True, text=True, check=False,
                          env={**os.environ, "PATH": str(bare)})


def test_no_qemu(tmp_path: Path) -> None:
    one_line_error(run_lab_without_path(tmp_path, "qemu"),
                   "qemu-system-x86_64 not found (Debian package qemu-system-x86)")


def test_not_root() -> None:
    """As user nobody, from a world-readable copy of the script and its
    package (the checkout and its venv may not be readable to it; the lab
    needs only the standard library until it has checked for root)."""
    copy = Path(tempfile.mkdtemp(prefix="uffdlab-nobody-", dir="/tmp"))
    try:
        copy.chmod(0o755)
        shutil.copy(LAB, copy / LAB.name)
        (copy / LAB.name).chmod(0o755)
        shutil.copytree(LAB.parent / "postcopy", copy / "postcopy", ignore=shutil.ignore_patterns("__pycache__"))
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                               str(copy / LAB.name), "qemu"], capture_output=True, text=True, check=False, cwd="/")
    finally:
        shutil.rmtree(copy)
    one_line_error(done, "must run as root")


def test_netem_missing_or_delay_applied(tmp_path: Path) -> None:
    """A delay needs netem: this host's kernel has none (CONFIG_NET_SCH_NETEM
    unset), which the lab says in one line before it boots anything."""
    has_netem = subprocess.run(["modprobe", "-q", "--dry-run", "sch_netem"], check=False).returncode == 0 or \
        Path("/sys/module/sch_netem").exists()
    if has_netem:
        pytest.skip("this kernel has netem: the delayed links run in the VM tier's lab")
    one_line_error(run_lab("qemu", "--delay", "5"), "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM)")


def test_no_criu(tmp_path: Path) -> None:
    one_line_error(run_lab_without_path(tmp_path, "criu"), "criu not found (Debian package criu)")


def test_criu_here_runs_whole_or_says_why_in_one_line(tmp_path: Path) -> None:
    """CRIU 3.17 cannot run on this host's kernel (it fails detecting the
    kernel's features: its vDSO check); the lab says so in one line with
    CRIU's own words. Where it can run, the lazy restore must be seen whole
    (the VM tier always runs it)."""
    out = tmp_path / "criu.json"
    done = run_lab("criu", "--json", str(out))
    if done.returncode == 0:
        check_criu_lab(json.loads(out.read_text()))
        assert leftovers() == []
    else:
        one_line_error(done, "criu cannot restore lazily on this kernel: Error (")
