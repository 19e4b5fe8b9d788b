"""uffdtrace's on-disk cache (``$UFFDTRACE_CACHE``, default /var/cache/uffdtrace):
what a second session need not compute again (BTF offsets per kernel build,
kernel symbols per boot, compiled programs per everything that shapes them).

What it holds is loaded into the kernel by root, so it is trusted only as far
as root's own files are: the directory and each entry must belong to this
user and be writable by no one else, and each entry carries the digest of its
contents, checked before use. Anything else reads as a miss: the caller
computes afresh (and says nothing: a cache is an optimisation). A cache that
cannot be written costs the same work next time.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

MAGIC = b"uffdtrace-cache 1 "
KEEP = 16  # entries of one kind (prefix); older ones are removed on write


def directory() -> Path:
    return Path(os.environ.get("UFFDTRACE_CACHE", "/var/cache/uffdtrace"))


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read(name: str) -> bytes | None:
    """The entry's contents when it is whole and trusted, else None."""
    path = directory() / name
    try:
        if not _trusted(os.stat(path.parent)):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode) or not _trusted(os.fstat(fd)):
                return None
            with os.fdopen(fd, "rb", closefd=False) as f:
                raw = f.read()
        finally:
            os.close(fd)
    except OSError:
        return None
    header, _, body = raw.partition(b"\n")
    if not header.startswith(MAGIC) or header[len(MAGIC):] != hashlib.sha256(body).hexdigest().encode():
        return None
    return body


def write(name: str, body: bytes) -> None:
    """Store an entry (atomically: a reader sees the old one or the new one),
    and prune the oldest entries sharing its prefix (up to the first '-')."""
    folder = directory()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _trusted(folder.stat()):
            return
        tmp = folder / f".{name}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
        os.replace(tmp, folder / name)
        _prune(folder, name.split("-", 1)[0] + "-")
    except OSError:
        pass


def remove(name: str) -> None:
    """Drop an entry (one the caller found wanting)."""
    (directory() / name).unlink(missing_ok=True)


def _prune(folder: Path, prefix: str) -> None:
    entries = sorted((p for p in folder.glob(prefix + "*") if p.is_file()),
                     key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in entries[KEEP:]:
        old.unlink(missing_ok=True)


def key(*parts: bytes | str) -> str:
    """A short digest of everything an entry depends on."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()[:32]
