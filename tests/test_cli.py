"""CLI contract without a kernel: bad input is one line on stderr, exit 1."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from uffdtrace.cli import main
from uffdtrace.live import kernel

GOOD = kernel.Features(release="6.12.0-test", root=True, btf=True, kprobes=True, tracefs=Path("/sys/kernel/tracing"),
                       headers=Path("/lib/modules/x/build"), headers_target="/usr/src/linux-headers-6.12.0-test",
                       bcc_version="0.26.0", bcc_error=None)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def one_line_error(output: str, needle: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], output
    assert "Traceback" not in output


@pytest.mark.parametrize(("change", "needle"), [
    ({"root": False}, "must run as root"),
    ({"bcc_version": None, "bcc_error": "No module named 'bcc'"}, "install python3-bpfcc"),
    ({"btf": False}, "no BTF"),
    ({"kprobes": False}, "kprobes are unavailable"),
    ({"headers": None, "headers_target": None}, "no kernel headers"),
])
def test_environment_problems_are_one_line(monkeypatch: pytest.MonkeyPatch, change: dict[str, object],
                                           needle: str) -> None:
    monkeypatch.setattr(kernel, "ensure_tracefs", lambda: None)
    monkeypatch.setattr(kernel, "probe", lambda: dataclasses.replace(GOOD, **change))
    code, out = run("--mode", "kprobe", "trace", "--events", "--duration", "1")
    assert code == 1
    one_line_error(out, needle)


def test_unknown_pid() -> None:
    code, out = run("trace", "--events", "-p", "999999999")
    assert code == 1
    one_line_error(out, "no such process: 999999999")


def test_missing_command() -> None:
    code, out = run("trace", "--events", "--", "/no/such/uffd-program", "--flag")
    assert code == 1
    one_line_error(out, "command not found")


def test_unwritable_output_file(tmp_path: Path) -> None:
    code, out = run("trace", "-o", str(tmp_path / "no" / "such" / "dir" / "trace.txt"), "--duration", "1")
    assert code == 1
    one_line_error(out, "cannot write")


@pytest.mark.parametrize("args", [["trace", "--events", "--duration", "-3"], ["trace", "--events", "-p", "0"],
                                  ["--mode", "bogus", "doctor"], ["no-such-command"]])
def test_usage_errors_exit_1(args: list[str]) -> None:
    code, out = run(*args)
    assert code == 1
    assert "Traceback" not in out and "Error" in out


def test_tracepoint_mode_without_tracefs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "ensure_tracefs", lambda: None)
    monkeypatch.setattr(kernel, "probe", lambda: dataclasses.replace(GOOD, tracefs=None))
    code, out = run("--mode", "tracepoint", "trace", "--events", "--duration", "1")
    assert code == 1
    one_line_error(out, "no tracefs")


def test_auto_mode_picks_tracepoint_without_kprobes() -> None:
    from uffdtrace.live.source import resolve_mode

    assert resolve_mode(dataclasses.replace(GOOD, kprobes=False), "auto") == "tracepoint"
    assert resolve_mode(GOOD, "auto") == "kprobe"
    assert resolve_mode(GOOD, "tracepoint") == "tracepoint"


def test_help_and_version() -> None:
    assert run("--help")[0] == 0
    code, out = run("--version")
    assert code == 0 and "uffdtrace" in out


def test_missing_symbols_degrade_tracepoint_mode_instead_of_refusing(tmp_path: Path) -> None:
    from uffdtrace.live import tracepoint_mode
    from uffdtrace.live.kallsyms import Kallsyms

    for tp in ("sched/sched_switch", "sched/sched_waking", "syscalls/sys_enter_read", "syscalls/sys_enter_readv",
               "syscalls/sys_enter_ioctl"):
        (tmp_path / "events" / tp).mkdir(parents=True)
    no_symbols = Kallsyms("ffffffff81000000 T _stext\n")
    plan = tracepoint_mode.tracepoint_plan(no_symbols, tmp_path, btf=False)
    assert tracepoint_mode.tracepoint_mode_unusable(plan) is None
    assert plan.defines["HANDLE_USERFAULT_START"] == plan.defines["HANDLE_USERFAULT_END"] == 0  # blocks never match
    lost = " ".join(tracepoint_mode.degraded(plan))
    assert "handle_userfault not in kallsyms" in lost and "userfaultfd_wake_function not in kallsyms" in lost
    assert "HAVE_PF_TRACEPOINTS" not in plan.defines  # no page-fault tracepoints: that code is left out
    assert "UFFD_BY_FILE" not in plan.defines and "uffd_identity (uffd known by (tgid, fd) only" in lost
    (tmp_path / "events" / "sched" / "sched_waking").rmdir()
    unusable = tracepoint_mode.tracepoint_mode_unusable(tracepoint_mode.tracepoint_plan(no_symbols, tmp_path, False))
    assert "no tracepoint sched/sched_waking" in (unusable or "")


@pytest.mark.parametrize("args", [["trace", "--stuck-ms", "-1"], ["trace", "--wake-ms", "-5"],
                                  ["trace", "--retry-threshold", "1"], ["trace", "--retry-threshold", "x"],
                                  ["serve", "--listen", "foo"], ["serve", "--listen", "127.0.0.1:99999"],
                                  ["serve", "--stuck-ms", "-1"]])
def test_impossible_thresholds_are_usage_errors(args: list[str]) -> None:
    code, out = run(*args)
    assert code == 1
    assert "Invalid value" in out and "Traceback" not in out


def test_printer_renders_lifecycles_and_flags() -> None:
    """Text and JSON output of a flagged lifecycle, and --flagged / -t filtering."""
    import io
    import json

    from uffdtrace.analysis.model import Evidence, Flag
    from uffdtrace.sinks import printer
    from uffdtrace.sinks.text import Text

    from .synthetic import FAULTER, HANDLER, PAGE, T0, clean, correlate, dontwake_stall

    out, _ = correlate(dontwake_stall("kprobe", wake_at=2000) + clean("kprobe", page=PAGE + 4096, at=3000),
                       "kprobe", ticks=[150, 1100, 2500, 3500])
    flagged, plain = out.lifecycles
    text = io.StringIO()
    p = Text(text, origin_ns=T0)
    for f in out.flags:
        p.flag(f)
    p.lifecycle(flagged)
    p.lifecycle(plain)
    lines = text.getvalue().splitlines()
    assert lines[0].split()[1:4] == ["FLAG", "dontwake_without_wake", "wl"]
    assert any("tid 100: copy DONTWAKE resolved" in line for line in lines)
    assert any("FLAG (final) never_woken" in line and "blocked=2000ms" in line for line in lines)
    assert "FLAGS=dontwake_without_wake,never_woken" in lines[-2] and "rounds=1" in lines[-2]
    assert "copy=0" in lines[-1] and "FLAGS" not in lines[-1]

    js = io.StringIO()
    p = printer(True, js, flagged_only=True)
    p.lifecycle(flagged)
    p.lifecycle(plain)  # not flagged: left out
    p.flag(Flag("never_woken", T0, 1, FAULTER, "wl", 1, None, 5, "blocked", [Evidence("x", None, None)]))
    records = [json.loads(line) for line in js.getvalue().splitlines()]
    assert [r["type"] for r in records] == ["lifecycle", "flag"]
    assert records[0]["flags"] == ["dontwake_without_wake", "never_woken"] and records[1]["addr"] is None

    only = io.StringIO()
    p = printer(True, only, tids=(HANDLER + 1000,))
    p.lifecycle(flagged)
    assert only.getvalue() == ""


def test_text_output_shows_control_characters_instead_of_obeying_them() -> None:
    """A process named with an escape sequence or a carriage return must not
    rewrite the operator's terminal (JSON escapes them already)."""
    import io

    from uffdtrace.escape import printable
    from uffdtrace.sinks.text import Text

    from .synthetic import T0, correlate, dontwake_stall, ev

    assert printable("qemu-system-x86") == "qemu-system-x86"
    assert printable("a\x1b[31mb\rc\x9b\x7f\t") == "a\\x1b[31mb\\x0dc\\x9b\\x7f\\x09"
    hostile = "\x1b[2J\rpwned"
    out, _ = correlate(dontwake_stall("kprobe", wake_at=2000), "kprobe", ticks=[150, 1100, 2500])
    text = io.StringIO()
    p = Text(text, origin_ns=T0)
    for f in out.flags:
        p.flag(dataclasses.replace(f, comm=hostile))
    p.lifecycle(dataclasses.replace(out.lifecycles[0], comm=hostile))
    from uffdtrace.events import Kind

    p.event(dataclasses.replace(ev(Kind.FAULT, 0, 1), comm=hostile))
    written = text.getvalue()
    assert "\x1b" not in written and "\r" not in written
    assert written.count("\\x1b[2J\\x0dpwned") == len(out.flags) + 2  # flag lines, the lifecycle, the event


def _dependencies(name: str, found: dict[str, importlib.metadata.Distribution]) -> None:
    """The installed distributions ``name`` needs to run, transitively (extras left out)."""
    dist = importlib.metadata.distribution(name)
    if dist.metadata["Name"].lower() in found:
        return
    found[dist.metadata["Name"].lower()] = dist
    for requirement in dist.requires or []:
        if "extra ==" not in requirement:
            _dependencies(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0), found)  # type: ignore[union-attr]


def _as_nobody(tmp_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `uffdtrace ARGS` as user nobody, from a world-readable copy of
    the package and every library it needs (the checkout and its venv may
    lie under a directory only root can enter, as a fresh clone in a
    ``mktemp -d`` does)."""
    import shutil
    import sys

    import uffdtrace

    package = Path(uffdtrace.__file__).parent
    shutil.copytree(package, tmp_dir / "uffdtrace", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    shutil.copytree(package.parent / "bpf", tmp_dir / "bpf", dirs_exist_ok=True)
    found: dict[str, importlib.metadata.Distribution] = {}
    _dependencies("uffdtrace", found)
    del found["uffdtrace"]  # an editable install: copied above
    for dist in found.values():
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")
                    and not f.parts[0].endswith((".dist-info", ".pth"))}:
            source = Path(str(dist.locate_file(top)))
            if source.is_dir():
                shutil.copytree(source, tmp_dir / top, ignore=shutil.ignore_patterns("__pycache__"),
                                dirs_exist_ok=True)
            else:  # a single-module distribution
                shutil.copy(source, tmp_dir / top)
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_dir)], check=True)
    python = os.path.realpath(sys.executable)  # not the venv's link: its directory may be closed to nobody
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c",
                           "import sys; sys.path.insert(0, sys.argv.pop(1)); from uffdtrace.cli import main; main()",
                           str(tmp_dir), *args], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("drops to user nobody: needs root")  # a developer's non-root run is non-root already
    path = Path(tempfile.mkdtemp(prefix="uffdtrace-nobody-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize("args", [("trace",), ("record", "-o", "CAPTURE"), ("why",), ("serve",), ("demo",)],
                         ids=lambda a: a[0])
def test_not_root_is_one_line_not_a_traceback(world_readable_dir: Path, args: tuple[str, ...]) -> None:
    capture = Path(f"{world_readable_dir}.cap")  # in /tmp, which user nobody may write
    proc = _as_nobody(world_readable_dir, *(str(capture) if a == "CAPTURE" else a for a in args))
    assert not capture.exists()  # nothing is left behind
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and not proc.stdout, proc
    one_line_error(proc.stderr, "must run as root")


def test_a_capture_replays_without_root(world_readable_dir: Path) -> None:
    """The maintainer's side of a bug report: user nobody replays and reports
    a capture recorded elsewhere (another kernel), as it was printed live."""
    import shutil

    golden = Path(__file__).parent / "captures" / "dontwake-kprobe-6.1.cap"
    capture = world_readable_dir / golden.name
    shutil.copy(golden, capture)
    capture.chmod(0o644)
    proc = _as_nobody(world_readable_dir, "trace", "-j", "--events", "--from", str(capture))
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert proc.stdout.splitlines()[1:] == golden.with_suffix(".expected.jsonl").read_text().splitlines()
    report = _as_nobody(world_readable_dir, "report", str(capture))
    assert report.returncode == 0 and "FLAG never_woken" in report.stdout, report.stderr


def test_ps_not_root_says_what_it_could_not_see(world_readable_dir: Path) -> None:
    proc = _as_nobody(world_readable_dir, "ps")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "processes of other users could not be looked at: run as root" in proc.stdout


def test_ps_names_every_holder_of_a_uffd() -> None:
    """A uffd inherited by a child (or passed over a UNIX socket): `ps`
    lists it in both processes, each naming the other as a holder."""
    import ctypes
    import json
    import os
    import signal
    import subprocess
    import sys

    from uffdtrace.live import kernel

    from .conftest import require

    require(kernel.uffd_inodes_distinct(), "uffds share one inode on this kernel (before 5.12), or none can be made")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(kernel.SYS_USERFAULTFD, kernel.O_CLOEXEC | kernel.O_NONBLOCK | kernel.UFFD_USER_MODE_ONLY)
    try:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(fd,))
        try:
            proc = subprocess.run([sys.executable, "-m", "uffdtrace", "ps", "-j"], capture_output=True, text=True,
                                  check=True, timeout=60)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    finally:
        os.close(fd)
    held = {p["pid"]: p["uffds"] for p in map(json.loads, proc.stdout.splitlines()) if p["type"] == "process"}
    assert [u["also_held_by"] for u in held[os.getpid()] if u["fd"] == fd] == [[child.pid]], held
    assert [u["also_held_by"] for u in held[child.pid] if u["fd"] == fd] == [[os.getpid()]], held


def test_kprobe_mode_attaches_the_wake_range_probe_only_with_events() -> None:
    """__wake_userfault's records only matter to --events: without it the
    probe is not attached at all (every wake-up would pay for an empty body)."""
    from uffdtrace.live import kprobe_mode
    from uffdtrace.live.kallsyms import Kallsyms

    syms = "".join(f"ffffffff8100{i:04x} T {c.symbol}\n" for i, spec in enumerate(kprobe_mode.PROBES)
                   for c in spec.candidates[:1])
    offsets = {m: 8 for spec in kprobe_mode.PROBES for c in spec.candidates for m in c.needs}

    class Bpf:
        def __init__(self) -> None:
            self.attached: list[str] = []

        def attach_kprobe(self, event: str, fn_name: str) -> None:
            self.attached.append(event)

        def attach_kretprobe(self, event: str, fn_name: str, maxactive: int) -> None:
            pass

    for every_record, expected in ((False, False), (True, True)):
        plan = kprobe_mode.plan(Kallsyms(syms), offsets)
        if every_record:
            plan.defines["EVERY_RECORD"] = None
        bpf = Bpf()
        kprobe_mode.attach(bpf, plan)
        [status] = [s for s in plan.status if s.name == "wake_range"]
        assert ("__wake_userfault" in bpf.attached) is expected and status.attached is expected
        assert "handle_userfault" in bpf.attached


def test_lost_records_are_blamed_on_their_own_causes() -> None:
    from uffdtrace.sinks.text import lost_causes

    assert lost_causes({"buffer_full": 0, "messages_per_read": 0}) == ""
    said = lost_causes({"buffer_full": 0, "messages_per_read": 3, "ranges_untracked": 1})
    assert "3 because more than 32 messages in one read()" in said and "--buffer-kb" not in said
    assert "1 because faults in ranges beyond the 16" in said
