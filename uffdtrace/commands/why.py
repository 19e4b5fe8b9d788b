"""`uffdtrace why`."""

from __future__ import annotations

import json
import os
import sys

import click

from ..errors import UffdtraceError
from ..live import hang, kernel, uffd_state
from ..live.source import check_pids


@click.command("why")
@click.argument("pids", nargs=-1, type=int, metavar="[PID]...")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object per blocked thread.")
def command(pids: tuple[int, ...], as_json: bool) -> None:
    """Explain a hang in progress, without a prior trace: for every thread of
    PID (every process when none is given) blocked in handle_userfault or in
    an event's completion, the missing step and who should take it. Exit 0
    when nothing is blocked, 3 when something is."""
    if os.geteuid() != 0:
        raise UffdtraceError("must run as root: the uffds' queues are walked with a BPF iterator and other "
                             "processes' /proc entries read; try sudo")
    check_pids(pids)
    features = kernel.probe()
    if features.bcc_version is None:
        raise UffdtraceError(f"bcc is not importable ({features.bcc_error}): install python3-bpfcc")
    if not features.btf:
        raise UffdtraceError("kernel has no BTF (/sys/kernel/btf/vmlinux): the uffds' queues cannot be walked")
    found = hang.explain(list(pids), uffd_state.snapshot())
    if as_json:
        for b in found:
            click.echo(json.dumps({"type": "blocked", **b.to_json()}))
    elif not found:
        click.echo("no thread is blocked on userfaultfd" + (f" in {' '.join(map(str, pids))}" if pids else ""))
    else:
        for b in found:
            click.echo(f"{b.verdict}: {b.explanation}")
    sys.exit(3 if found else 0)
