"""The one path every flag takes out of the correlator: counted (and for
--fail-on-flags), completed with what was lost while its thread waited,
re-reported with the final numbers when a stuck thread ends, and handed to
the sink. Which flags a fault earns is rules.py's decision."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Protocol

from .model import Evidence, Flag, Lifecycle
from .rules import FROM_ABSENCE, WHILE_BLOCKED, counts_as_failure
from .verdicts import of_flag


class FlagSink(Protocol):
    def flag(self, flag: Flag) -> None: ...


@dataclass
class FlagCounts:
    by_name: collections.Counter[str] = field(default_factory=collections.Counter)
    failing: int = 0  # flags that --fail-on-flags counts


class Flags:
    def __init__(self, sink: FlagSink) -> None:
        self.sink = sink
        self.counts = FlagCounts()

    def report(self, flag: Flag) -> None:
        """Every flag, of a lifecycle or not, leaves through here."""
        self.counts.by_name[flag.name] += 1
        self.counts.failing += counts_as_failure(flag.name)
        self.sink.flag(flag)

    def on_lifecycle(self, lc: Lifecycle, name: str, now: int, conclusion: Evidence, lost: int) -> None:
        """Raise ``name`` on the lifecycle, once; ``lost`` is the records lost so far."""
        if name in lc.flags:
            return
        evidence = lc.evidence(conclusion)
        if name in FROM_ABSENCE and lost > lc.lost_at_start:
            evidence.append(Evidence(f"{lost - lc.lost_at_start} records were lost while it waited: the "
                                     "missing event may be among them (the kernel confirms that it still waits)"))
        flag = Flag(name=name, ts_ns=now, tgid=lc.tgid, tid=lc.tid, comm=lc.comm, uffd=lc.uffd, addr=lc.page,
                    blocked_ns=now - lc.waiting_since if lc.waiting else None,
                    state="blocked" if lc.waiting else lc.state, evidence=evidence,
                    verdict=of_flag(name, lc.round_reads > 0, lc.present))
        lc.flags[name] = flag
        self.report(flag)

    def lifecycle_ended(self, lc: Lifecycle, now: int) -> None:
        """A while-blocked flag again, with how long the wait lasted in the end."""
        end = lc.t_woken or lc.t_returned or now
        for flag in list(lc.flags.values()):
            if flag.name in WHILE_BLOCKED:
                self.sink.flag(Flag(name=flag.name, ts_ns=now, tgid=lc.tgid, tid=lc.tid, comm=lc.comm, uffd=lc.uffd,
                                    addr=lc.page, blocked_ns=end - lc.waiting_since, state=lc.state,
                                    evidence=lc.evidence(), update=True, verdict=flag.verdict))
