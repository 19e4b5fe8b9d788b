"""Struct member offsets the BPF programs need, from the running kernel's BTF.

Computed once per kernel build and cached (cache.py; parsing vmlinux BTF takes ~0.5 s).
A member the kernel does not have is simply absent from the result: the probe
that needs it is reported unavailable, or the C code takes its #ifdef branch.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import cache
from .btf import VMLINUX_BTF, Btf, BtfError

# C macro -> BTF path. Kept in the order the probes use them.
MEMBERS: dict[str, str] = {
    "OFF_VM_FAULT_VMA": "vm_fault.vma",
    "OFF_VM_FAULT_ADDRESS": "vm_fault.address",
    "OFF_VM_FAULT_REAL_ADDRESS": "vm_fault.real_address",  # 6.1+
    "OFF_VM_FAULT_FLAGS": "vm_fault.flags",
    "OFF_VMA_UFFD_CTX": "vm_area_struct.vm_userfaultfd_ctx.ctx",
    "OFF_FILE_PRIVATE_DATA": "file.private_data",
    "OFF_FILE_F_OP": "file.f_op",
    "OFF_KIOCB_FILP": "kiocb.ki_filp",
    "OFF_IOV_ITER_TYPE": "iov_iter.iter_type",
    "OFF_IOV_ITER_UBUF": "iov_iter.ubuf",
    "OFF_IOV_ITER_IOV": "iov_iter.__iov",
    "OFF_IOV_ITER_IOV_OFFSET": "iov_iter.iov_offset",
    "OFF_UWQ_MSG": "userfaultfd_wait_queue.msg",
    "OFF_UWQ_WQ": "userfaultfd_wait_queue.wq",
    "OFF_UWQ_CTX": "userfaultfd_wait_queue.ctx",
    "OFF_MSG_ADDRESS": "uffd_msg.arg.pagefault.address",
    "OFF_WQE_PRIVATE": "wait_queue_entry.private",
    "OFF_TASK_PID": "task_struct.pid",
    "OFF_TASK_TGID": "task_struct.tgid",
    "OFF_POLL_FILE": "poll_iocb.file",
    "OFF_POLL_EVENTS": "poll_iocb.events",
    "OFF_POLL_WAIT": "poll_iocb.wait",
    "OFF_POLL_WORK": "poll_iocb.work",
    # Added by 363bee27e258 "aio: keep poll requests on waitqueue until
    # completed" (v5.16-rc5, backported to 5.4.y/5.10.y/5.15.y).
    "OFF_POLL_WORK_SCHEDULED": "poll_iocb.work_scheduled",
    "OFF_KIOCB_POLL": "aio_kiocb.poll",
    "OFF_KIOCB_RES_DATA": "aio_kiocb.ki_res.data",
    "OFF_KIOCB_RES_OBJ": "aio_kiocb.ki_res.obj",
    "OFF_KIOCB_RES_RES": "aio_kiocb.ki_res.res",
    # folio_lock_anon_vma_read's folio (page_lock_anon_vma_read's page): a
    # folio overlays its head page, so page.mapping is folio.mapping.
    "OFF_PAGE_MAPPING": "page.mapping",
    # Tracepoint mode: a descriptor to its uffd (bpf/uffd_id.h).
    "OFF_TASK_FILES": "task_struct.files",
    "OFF_FILES_FDT": "files_struct.fdt",
    "OFF_FDTABLE_MAX_FDS": "fdtable.max_fds",
    "OFF_FDTABLE_FD": "fdtable.fd",
    "OFF_FILE_F_INODE": "file.f_inode",
    "OFF_INODE_INO": "inode.i_ino",
    "OFF_FOPS_POLL": "file_operations.poll",
    # A file's references: file_ref_t f_ref since v6.13 (90ee6ed776c0,
    # "fs: port files to file_ref"), atomic_long_t f_count before.
    "OFF_FILE_F_REF": "file.f_ref",
    "OFF_FILE_F_COUNT": "file.f_count",
    # `why` (bpf/why.c): a uffd's queues, walked from its context.
    "OFF_CTX_FAULT_PENDING_WQH": "userfaultfd_ctx.fault_pending_wqh",
    "OFF_CTX_FAULT_WQH": "userfaultfd_ctx.fault_wqh",
    "OFF_CTX_EVENT_WQH": "userfaultfd_ctx.event_wqh",
    "OFF_CTX_RELEASED": "userfaultfd_ctx.released",
    "OFF_CTX_FEATURES": "userfaultfd_ctx.features",
    "OFF_WQH_HEAD": "wait_queue_head.head",
    "OFF_WQE_ENTRY": "wait_queue_entry.entry",
}

# C macro -> enumerator whose value the C code needs.
ENUMERATORS: dict[str, str] = {
    "ITER_UBUF_VALUE": "ITER_UBUF",
    "ITER_IOVEC_VALUE": "ITER_IOVEC",
    # Per-VMA locks ("mm: add FAULT_FLAG_VMA_LOCK flag", v6.4): which lock each
    # fault ran under, from vm_fault.flags (RunInfo.vma_lock_flag). Absent:
    # every fault runs under mmap_lock.
    "FAULT_FLAG_VMA_LOCK_VALUE": "FAULT_FLAG_VMA_LOCK",
}

def compute(btf: Btf) -> dict[str, int]:
    """Every macro of MEMBERS and ENUMERATORS the kernel's BTF can answer."""
    out: dict[str, int] = {}
    for macro, path in MEMBERS.items():
        try:
            out[macro] = btf.offsetof(path)
        except BtfError:
            continue
    for macro, name in ENUMERATORS.items():
        try:
            out[macro] = btf.enum_value(name)
        except BtfError:
            continue
    return out


def _build_key(btf_path: Path) -> str:
    """Identifies one kernel build: its version string and its BTF's size."""
    return cache.key(Path("/proc/version").read_bytes(), str(btf_path.stat().st_size))


def load(btf_path: Path = VMLINUX_BTF) -> dict[str, int]:
    """Offsets for the running kernel, from the cache when it has this build."""
    try:
        name = f"offsets-{_build_key(btf_path)}.json"
    except OSError as exc:
        raise BtfError(f"cannot read {btf_path}: {exc.strerror}") from exc
    try:
        data = json.loads(cache.read(name) or b"null")
        if data and data.get("members") == MEMBERS and data.get("enumerators") == ENUMERATORS:
            return {k: int(v) for k, v in data["offsets"].items()}
    except (ValueError, KeyError, AttributeError, TypeError):
        pass
    offsets = compute(Btf.from_file(btf_path))
    cache.write(name, json.dumps({"members": MEMBERS, "enumerators": ENUMERATORS, "offsets": offsets}).encode())
    return offsets
