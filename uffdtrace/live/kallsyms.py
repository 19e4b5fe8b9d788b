"""Kernel symbol table (/proc/kallsyms): which functions exist and their ranges.

Attach points are chosen by what the running kernel has, never by version.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

KALLSYMS = Path("/proc/kallsyms")


@dataclass(frozen=True)
class Symbol:
    name: str
    start: int
    end: int  # address of the next symbol: the function's extent


class Kallsyms:
    def __init__(self, text: str) -> None:
        entries: list[tuple[int, str, str]] = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                entries.append((int(parts[0], 16), parts[1], parts[2]))
        entries.sort()
        self._addrs = [a for a, _, _ in entries]
        self._by_name: dict[str, int] = {}
        for index, (addr, _kind, name) in enumerate(entries):
            if addr:
                self._by_name.setdefault(name, index)
        self._entries = entries

    @classmethod
    def load(cls, path: Path = KALLSYMS) -> Kallsyms:
        return cls(path.read_text())

    @property
    def readable(self) -> bool:
        """False when addresses are hidden (kptr_restrict, not root)."""
        return bool(self._by_name)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def symbol(self, name: str) -> Symbol | None:
        index = self._by_name.get(name)
        if index is None:
            return None
        start = self._entries[index][0]
        nxt = bisect.bisect_right(self._addrs, start)
        end = self._addrs[nxt] if nxt < len(self._addrs) else start
        return Symbol(name, start, end)

    def address(self, name: str) -> int | None:
        sym = self.symbol(name)
        return sym.start if sym else None
