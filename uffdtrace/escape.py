"""Text from others (process names, paths) made safe for a terminal.

A process can name itself with an escape sequence or a carriage return;
printed raw, it would rewrite the operator's screen. Like ps(1), text
output shows control characters instead of obeying them: here as ``\\xNN``
(C0, DEL and the C1 range, whose U+009B is a one-character CSI)."""

from __future__ import annotations

_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    return text.translate(_CONTROLS)
