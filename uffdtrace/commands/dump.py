"""`uffdtrace dump`."""

from __future__ import annotations

import sys

import click

from ..capture.reader import Reader, dump


@click.command("dump")
@click.argument("path", metavar="FILE")
def command(path: str) -> None:
    """A capture's header, records and trailer, one per line (for debugging the format)."""
    dump(Reader(path), sys.stdout)
