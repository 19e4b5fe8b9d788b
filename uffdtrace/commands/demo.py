"""`uffdtrace demo`."""

from __future__ import annotations

import sys

import click

from .. import session
from ..analysis.rules import Thresholds
from ..errors import UffdtraceError
from ..live import kernel
from ..live.source import LiveSource, Options, check_bpf
from ..sinks import Tee, printer
from .options import json_option, transport_option


@click.command("demo")
@json_option
@transport_option
@click.pass_context
def command(ctx: click.Context, /, as_json: bool, transport: str) -> None:
    """Run built-in workloads (clean faults, a stuck DONTWAKE fault, a retry
    loop) under the tracer and show the lifecycles and flags it finds."""
    from ..demo import Verdicts

    command = [sys.executable, "-m", "uffdtrace.workloads", "demo"]
    check_bpf(kernel.probe())  # before the plan is printed: a user without root sees one line
    verdicts = Verdicts(as_json)
    verdicts.intro()
    src = LiveSource(Options(command=command, transport=transport), ctx.obj["mode"])
    summary = session.run(src, Tee(printer(as_json, sys.stdout), verdicts), Thresholds(), raw_events=False)
    if not verdicts.verdicts() or summary["command_status"] != 0:
        raise UffdtraceError(f"demo: the tracer did not find what the workloads did (workload exit status "
                             f"{summary['command_status']}, {summary['lost']} records lost)")
