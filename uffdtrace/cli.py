"""Command line (README, "Commands"). Exit codes: 0 ok, 1 usage/environment error, 3 flags found
with --fail-on-flags."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__
from .commands import dashboard, demo, doctor, dump, export, ps, record, report, serve, top, trace, why
from .errors import UffdtraceError


class Group(click.Group):
    """Every usage or environment error is one line on stderr and exit status 1."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            status = super().main(*args, **kwargs)
        except click.ClickException as exc:
            exc.show()
            sys.exit(1)
        except click.Abort:
            click.echo("uffdtrace: aborted", err=True)
            sys.exit(1)
        except UffdtraceError as exc:
            click.echo(f"uffdtrace: error: {exc}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            # The reader went away (| head): stop quietly, like other CLI tools.
            sys.stderr.close()
            sys.exit(0)
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="uffdtrace")
@click.option("--mode", type=click.Choice(["auto", "kprobe", "tracepoint"]), default="auto", show_default=True,
              help="Probe set: kprobe, or tracepoint for kernels without kprobes; auto picks kprobe where it works.")
@click.pass_context
def main(ctx: click.Context, mode: str) -> None:
    """Live tracer and race detector for userfaultfd."""
    ctx.obj = {"mode": mode}


for command in (doctor.command, trace.command, record.command, report.command, export.command, dump.command,
                ps.command, why.command, demo.command, serve.command, dashboard.command, top.command):
    main.add_command(command)
