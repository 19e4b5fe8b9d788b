"""The kernel's sums of clean lifecycles (bpf/aggregate.h), done in Python
on a replay: what serve's and top's sinks get from the kernel instead of
the lifecycles themselves."""

from __future__ import annotations

from typing import Any

from uffdtrace.analysis.model import Lifecycle
from uffdtrace.events import HIST_BOUNDS, bucket_of
from uffdtrace.sinks import Tee
from uffdtrace.sinks.report import total_ns
from uffdtrace.source import CleanTotals, LatencySum


class KernelSums(Tee):
    """Sums the clean lifecycles of a replay as bpf/aggregate.h does, instead
    of passing them on: what the kernel would have kept from serve's or
    top's Python, taken as LiveSource.take_clean_totals takes it (what grew
    since the last call)."""

    def __init__(self, *sinks: Any) -> None:
        super().__init__(*sinks)
        self.sums: dict[tuple[int, str, int, str | None, str | None], list[int]] = {}
        self.taken: dict[tuple[int, str, int, str | None, str | None], CleanTotals] = {}
        self.diverted = 0

    def lifecycle(self, lc: Lifecycle) -> None:
        lat = lc.latencies()
        if (lc.flags or len(lc.attempts) != 1 or lc.attempts[0].ret != 0 or lc.rounds != 1
                or lc.t_woken is None or lat["wake"] != 0 or lat["resume"] is not None):
            super().lifecycle(lc)
            return
        self.diverted += 1
        key = (lc.tgid, lc.comm, lc.uffd, lc.reason, lc.attempts[0].op)
        row = self.sums.setdefault(key, [0] * (4 + 3 * (HIST_BOUNDS + 2)))
        row[0] += 1
        row[1] += 1
        row[2] += lc.reads
        row[3] = lc.ended_at or lc.last_ts
        for k, ns in enumerate((lat["pickup"], lat["service"], total_ns(lc))):
            if ns is not None:
                base = 4 + k * (HIST_BOUNDS + 2)
                row[base + bucket_of(ns)] += 1
                row[base + HIST_BOUNDS + 1] += ns

    def take_clean_totals(self) -> list[CleanTotals]:
        def hist(row: list[int], k: int) -> LatencySum:
            base = 4 + k * (HIST_BOUNDS + 2)
            return LatencySum(tuple(row[base:base + HIST_BOUNDS + 1]), row[base + HIST_BOUNDS + 1])

        out = []
        for key, row in self.sums.items():
            now = CleanTotals(*key, row[0], row[1], row[2], row[3], hist(row, 0), hist(row, 1), hist(row, 2))
            grown = now.since(self.taken.get(key))
            self.taken[key] = now
            if grown.faults or grown.reads:
                out.append(grown)
        return out
