"""The Grafana dashboard and Prometheus alerting rules for `uffdtrace serve`
(printed by `uffdtrace dashboard --grafana` / `--alerts`)."""
