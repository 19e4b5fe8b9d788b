"""The pure-Python BTF reader agrees with pahole on every member the probes use."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from typing import Any

import pytest

from uffdtrace.live.btf import VMLINUX_BTF, Btf, BtfError
from uffdtrace.live.offsets import MEMBERS, compute

from .conftest import require

Node = dict[str, tuple[int, Any]]  # member -> (offset, type name | nested members)
MEMBER_RE = re.compile(r"^(?P<type>.*?[\w*\s])\s*\**(?P<name>\w+)(\[\d*\])*(\s*:\s*\d+)?;\s*/\*\s*(?P<off>\d+)")
FUNC_PTR_RE = re.compile(r"^.*\(\*(?P<name>\w+)\)\(.*\);\s*/\*\s*(?P<off>\d+)")  # __poll_t (*poll)(...);
CLOSE_RE = re.compile(r"^\}\s*(?P<name>\w*)\s*;\s*/\*\s*(?P<off>\d+)")


@cache
def pahole(struct: str) -> Node:
    """Members of ``struct`` as pahole prints them, anonymous members flattened."""
    text = subprocess.run(["pahole", "-C", struct, str(VMLINUX_BTF)], capture_output=True, text=True,
                          check=True).stdout
    stack: list[Node] = [{}]
    for line in text.splitlines()[1:]:
        s = line.strip()
        if s.endswith("{"):
            stack.append({})
        elif (m := CLOSE_RE.match(s)) and len(stack) > 1:
            # pahole prints inline members at offsets from the outermost struct.
            inner, off = stack.pop(), int(m["off"])
            if m["name"]:
                stack[-1][m["name"]] = (off, inner)
            else:
                stack[-1].update(inner)
        elif m := FUNC_PTR_RE.match(s):
            stack[-1][m["name"]] = (int(m["off"]), None)
        elif m := MEMBER_RE.match(s):
            type_name = m["type"].replace("const", "").split()
            stack[-1][m["name"]] = (int(m["off"]), type_name[-1] if type_name[0] in ("struct", "union") else None)
    return stack[0]


def pahole_offset(path: str) -> int:
    struct, *members = path.split(".")
    node: Node = pahole(struct)
    base = 0
    for name in members[:-1]:
        off, sub = node[name]
        if isinstance(sub, dict):
            node = sub  # inline struct: its members' offsets are already absolute
        else:
            base += off
            node = pahole(sub) if sub else {}
    return base + node[members[-1]][0]


@pytest.fixture(scope="module")
def btf() -> Btf:
    require(VMLINUX_BTF.exists(), "no /sys/kernel/btf/vmlinux")
    require(shutil.which("pahole") is not None, "pahole (dwarves) not installed")
    return Btf.from_file()


def test_every_probe_member_matches_pahole(btf: Btf) -> None:
    offsets = compute(btf)
    checked = 0
    for macro, path in MEMBERS.items():
        if macro not in offsets:
            with pytest.raises((KeyError, subprocess.CalledProcessError)):
                pahole_offset(path)
            continue
        assert offsets[macro] == pahole_offset(path), path
        checked += 1
    # The probes' core structs are all present on any kernel with userfaultfd.
    assert checked >= 20


def test_sizes_match_pahole(btf: Btf) -> None:
    for struct in ("userfaultfd_wait_queue", "poll_iocb", "aio_kiocb", "vm_fault"):
        text = subprocess.run(["pahole", "-C", struct, str(VMLINUX_BTF)], capture_output=True, text=True,
                              check=True).stdout
        size = int(re.findall(r"/\* size: (\d+)", text)[-1])
        assert btf.sizeof(struct) == size, struct


def test_missing_things_raise_btf_error(btf: Btf) -> None:
    with pytest.raises(BtfError):
        btf.offsetof("vm_fault.no_such_member")
    with pytest.raises(BtfError):
        btf.offsetof("no_such_struct_xyz.a")
    with pytest.raises(BtfError):
        btf.enum_value("NO_SUCH_ENUMERATOR_XYZ")


def test_rejects_garbage() -> None:
    with pytest.raises(BtfError):
        Btf(b"\x00" * 64)
    with pytest.raises(BtfError):
        Btf(b"\x9f\xeb")
