"""`uffdtrace serve`: Prometheus metrics of a live session."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import session
from ..errors import UffdtraceError
from ..sinks import Ignoring, Tee
from .options import live_source, pid_options, threshold_options, thresholds


def listen_address(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT, such as 127.0.0.1:9464")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (":PORT" asks for every address)


class Announce(Ignoring):
    """One line on stderr once the probes are live: where to scrape."""

    def __init__(self, url: str) -> None:
        self.url = url

    def header(self, info: dict[str, Any]) -> None:
        click.echo(f"uffdtrace: {info['mode']} mode, probes live; metrics at {self.url}", err=True)


@click.command("serve", context_settings={"ignore_unknown_options": False})
@click.option("--listen", default="127.0.0.1:9464", show_default=True, callback=listen_address,
              help="HOST:PORT to serve /metrics on (localhost unless told otherwise).")
@pid_options
@threshold_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def command(ctx: click.Context, /, listen: tuple[str, int], pids: tuple[int, ...], duration: float | None,
            command: tuple[str, ...], **kw: Any) -> None:
    """Prometheus metrics of every userfaultfd fault (or -p PID's, or CMD's):
    counters, in-flight and oldest-blocked gauges, latency histograms; a
    flag's evidence goes to stderr as a JSON line. Until Ctrl-C or SIGTERM."""
    from prometheus_client import CollectorRegistry, start_http_server  # only serve needs it

    from ..sinks.prometheus import FlagLog, Metrics

    host, port = listen
    registry = CollectorRegistry()
    src = live_source(ctx, pids, command, duration, kw, aggregate=True)
    metrics = Metrics(registry, src)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UffdtraceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    url = f"http://{host}:{port}/metrics" if ":" not in host else f"http://[{host}]:{port}/metrics"
    try:
        session.run(src, Tee(metrics, FlagLog(sys.stderr), Announce(url)), thresholds(kw), raw_events=True)
    finally:
        server.shutdown()
        thread.join()
