"""Preflight and the guest image: root, programs, a kernel, and a busybox initramfs whose init dirties memory."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

from .common import LabError


def need_root() -> None:
    if os.geteuid() != 0:
        raise LabError("must run as root (network namespaces, QEMU's userfaultfd, BPF)")


def need_program(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LabError(f"{name} not found (Debian package {package})")
    return path


def newest_kernel() -> str:
    found = sorted(glob.glob("/boot/vmlinuz-*"), key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    if not found:
        raise LabError("no kernel in /boot for the guest (give one with --kernel)")
    return found[-1]


# --------------------------------------------------------------- guest image

def cpio_entry(name: str, mode: int, data: bytes = b"") -> bytes:
    """One entry of a newc cpio archive (what the kernel unpacks as an initramfs)."""
    encoded = name.encode() + b"\0"
    fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
    return head + b"\0" * (-len(head) % 4) + data + b"\0" * (-len(data) % 4)


GUEST_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
mount -t tmpfs -o size={dirty}m tmpfs /tmp
round=0
while :; do
    round=$((round + 1))
    yes "uffdlab round $round" | head -c {dirty}m > /tmp/dirty 2>/dev/null
    echo "uffdlab: round $round"
done
"""


def build_initramfs(path: Path, busybox: str, dirty_mib: int) -> None:
    """busybox and an init that rewrites dirty_mib MiB of tmpfs, round after round."""
    archive = b"".join([
        *(cpio_entry(d, 0o040755) for d in ("bin", "proc", "dev", "tmp")),
        cpio_entry("bin/busybox", 0o100755, Path(busybox).read_bytes()),
        cpio_entry("init", 0o100755, GUEST_INIT.format(dirty=dirty_mib).encode()),
        cpio_entry("TRAILER!!!", 0),
    ])
    path.write_bytes(archive)


def check_static(busybox: str) -> None:
    if b"ld-linux" in Path(busybox).read_bytes()[:8192] or "interpreter" in subprocess.run(
            ["file", "-b", busybox], capture_output=True, text=True, check=False).stdout:
        raise LabError(f"{busybox} is not a static busybox (Debian package busybox-static)")
