"""`uffdtrace doctor`."""

from __future__ import annotations

import json
import sys

import click

from .. import doctor
from ..escape import printable


@click.command("doctor")
@click.option("-j", "--json", "as_json", is_flag=True, help="Machine-readable report.")
def command(as_json: bool) -> None:
    """Check kernel, BTF, probes, headers and bcc; exit 0 when a mode works."""
    rep = doctor.run()
    if as_json:
        click.echo(json.dumps({"checks": dict(rep.lines), "probes": rep.probes,
                               "tracepoint_capabilities": rep.tracepoint_caps, "modes": rep.modes}))
    else:
        click.echo("\n".join(map(printable, doctor.render(rep).split("\n"))))
    sys.exit(0 if rep.usable else 1)
