"""A small pure-Python reader of kernel BTF (``/sys/kernel/btf/vmlinux``).

The probes never trust kernel headers for struct layouts (a host's headers may
not match its kernel, and several structs are private to their ``.c`` file), so
the BPF C receives member offsets computed here from the running kernel's BTF.
Format: Documentation/bpf/btf.rst.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

BTF_MAGIC = 0xEB9F

# BTF_KIND_* numbers and how many bytes follow the 12-byte common type header.
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BtfError(Exception):
    """The BTF blob is missing, malformed, or lacks what was asked for."""


@dataclass
class Member:
    name: str
    type_id: int
    bit_offset: int


@dataclass
class BtfType:
    kind: int
    name: str
    size_or_type: int
    members: list[Member] = field(default_factory=list)
    enumerators: dict[str, int] = field(default_factory=dict)


def _extra_size(kind: int, vlen: int) -> int:
    if kind in (KIND_INT, KIND_VAR, KIND_DECL_TAG):
        return 4
    if kind == KIND_ARRAY:
        return 12
    if kind in (KIND_STRUCT, KIND_UNION, KIND_DATASEC, KIND_ENUM64):
        return 12 * vlen
    if kind in (KIND_ENUM, KIND_FUNC_PROTO):
        return 8 * vlen
    return 0


class Btf:
    """Parsed BTF: types by id, and struct/union/enum lookups by name."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) < 24:
            raise BtfError("BTF blob too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"bad BTF magic {magic:#x}")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
        self._strings = blob[hdr_len + str_off : hdr_len + str_off + str_len]
        self.types: list[BtfType | None] = [None]  # type id 0 is void
        self._by_name: dict[str, list[int]] = {}
        self._parse(blob, hdr_len + type_off, hdr_len + type_off + type_len)

    @classmethod
    def from_file(cls, path: Path = VMLINUX_BTF) -> Btf:
        try:
            return cls(path.read_bytes())
        except OSError as exc:
            raise BtfError(f"cannot read {path}: {exc.strerror}") from exc

    def _str(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _parse(self, blob: bytes, pos: int, end: int) -> None:
        keep = (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64)
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", blob, pos)
            pos += 12
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            kind_flag = info >> 31
            t = BtfType(kind, self._str(name_off) if kind in keep else "", size_or_type)
            if kind in (KIND_STRUCT, KIND_UNION):
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", blob, pos + 12 * i)
                    bit_offset = m_off & 0xFFFFFF if kind_flag else m_off
                    t.members.append(Member(self._str(m_name), m_type, bit_offset))
            elif kind == KIND_ENUM:
                for i in range(vlen):
                    e_name, e_val = struct.unpack_from("<Ii", blob, pos + 8 * i)
                    t.enumerators[self._str(e_name)] = e_val
            elif kind == KIND_ENUM64:
                for i in range(vlen):
                    e_name, lo, hi = struct.unpack_from("<III", blob, pos + 12 * i)
                    t.enumerators[self._str(e_name)] = lo | (hi << 32)
            pos += _extra_size(kind, vlen)
            self.types.append(t)
            if t.name:
                self._by_name.setdefault(t.name, []).append(len(self.types) - 1)

    def _resolve(self, type_id: int) -> BtfType | None:
        """Follow typedefs and qualifiers to the underlying type."""
        t = self.types[type_id]
        while t is not None and t.kind in _MODIFIERS:
            t = self.types[t.size_or_type]
        return t

    def composite(self, name: str) -> BtfType:
        """The complete struct or union called ``name``."""
        for type_id in self._by_name.get(name, []):
            t = self.types[type_id]
            if t is not None and t.kind in (KIND_STRUCT, KIND_UNION) and t.members:
                return t
        raise BtfError(f"struct {name} not in BTF")

    def _find_member(self, t: BtfType, name: str) -> tuple[int, BtfType | None] | None:
        """Bit offset and type of member ``name``, descending anonymous members."""
        for m in t.members:
            if m.name == name:
                return m.bit_offset, self._resolve(m.type_id)
        for m in t.members:
            inner = self._resolve(m.type_id)
            if m.name == "" and inner is not None and inner.kind in (KIND_STRUCT, KIND_UNION):
                found = self._find_member(inner, name)
                if found is not None:
                    return m.bit_offset + found[0], found[1]
        return None

    def offsetof(self, path: str) -> int:
        """Byte offset of ``struct.member[.member...]``, e.g. ``vm_fault.vma``."""
        struct_name, *members = path.split(".")
        if not members:
            raise BtfError(f"{path}: expected struct.member")
        t: BtfType | None = self.composite(struct_name)
        bits = 0
        for name in members:
            if t is None or t.kind not in (KIND_STRUCT, KIND_UNION):
                raise BtfError(f"{path}: {name} is not inside a struct")
            found = self._find_member(t, name)
            if found is None:
                raise BtfError(f"{path}: no member {name}")
            bits += found[0]
            t = found[1]
        if bits % 8:
            raise BtfError(f"{path} is a bitfield")
        return bits // 8

    def sizeof(self, name: str) -> int:
        return self.composite(name).size_or_type

    def enum_value(self, enumerator: str) -> int:
        for t in self.types:
            if t is not None and enumerator in t.enumerators:
                return t.enumerators[enumerator]
        raise BtfError(f"enumerator {enumerator} not in BTF")
