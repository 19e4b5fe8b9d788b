"""`uffdtrace dashboard`: what `serve`'s metrics plug into."""

from __future__ import annotations

from importlib import resources

import click


@click.command("dashboard")
@click.option("--grafana", "what", flag_value="grafana.json", help="The Grafana dashboard (JSON, to import).")
@click.option("--alerts", "what", flag_value="alerts.yml", help="Prometheus alerting rules (YAML).")
def command(what: str | None) -> None:
    """Print the Grafana dashboard or the Prometheus alerting rules for `serve`."""
    if what is None:
        raise click.UsageError("say which: --grafana or --alerts")
    click.echo(resources.files("uffdtrace.dashboards").joinpath(what).read_text(), nl=False)
