"""Compiled programs kept across sessions (cache.py): bcc takes 2.5 s of CPU
and 90 MiB to compile the tracer under clang, and the result depends only on
what the key below names. A second session with the same key loads the
bytecode straight away (loader.py); any doubt (a damaged entry, a refusal
by the verifier) compiles afresh.

The key holds everything that shapes the bytecode: the program's text with
every header pasted in, the compile flags (the plan's defines: symbol
addresses, BTF offsets, the session's knobs), bcc's version (its rewriter
and built-in headers), the kernel's release and build string and the tree of
headers bcc compiles against (tracepoint formats and struct layouts), the
number of possible CPUs (per-CPU maps) and the page size (the ring's size).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from . import cache
from .compiled import Compiled, CompiledError, compile_program
from .loader import possible_cpus

Loaded = TypeVar("Loaded")

# Files of a headers tree whose change means other headers.
_HEADER_STAMPS = ("include/generated/autoconf.h", "include/config/kernel.release", ".config", "Makefile")


def _headers_identity(headers: Path | None) -> str:
    if headers is None:
        return "none"
    parts = [os.path.realpath(headers)]
    for rel in _HEADER_STAMPS:
        try:
            st = (headers / rel).stat()
            parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{rel}:-")
    return " ".join(parts)


def entry_name(text: str, cflags: list[str], bcc_version: str | None, headers: Path | None) -> str:
    uname = os.uname()
    return "program-" + cache.key(
        text, "\0".join(cflags), bcc_version or "none", uname.release, uname.version,
        _headers_identity(headers), str(possible_cpus()), str(mmap.PAGESIZE)) + ".json"


def cached(name: str) -> Compiled | None:
    raw = cache.read(name)
    if raw is None:
        return None
    try:
        return Compiled.from_json(raw)
    except CompiledError:
        return None


def compile_and_keep(name: str, text: str, cflags: list[str]) -> Compiled:
    compiled = compile_program(text, cflags)
    cache.write(name, compiled.to_json())
    return compiled


def forget(name: str) -> None:
    """Drop an entry the kernel refused (a later session compiles afresh)."""
    cache.remove(name)


def obtain(text: str, cflags: list[str], bcc_version: str | None, headers: Path | None,
           load: Callable[[Compiled], Loaded]) -> tuple[Loaded, str]:
    """``load`` applied to the cached program ("cached"), or, when there is
    none or the kernel refuses it, to one compiled now and kept ("compiled")."""
    name = entry_name(text, cflags, bcc_version, headers)
    found = cached(name)
    if found is not None:
        try:
            return load(found), "cached"
        except Exception:  # whatever the doubt: compile afresh (its error, if any, is the one shown)
            forget(name)
    return load(compile_and_keep(name, text, cflags)), "compiled"
