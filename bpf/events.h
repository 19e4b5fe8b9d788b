/* uffdtrace event ABI: one fixed-size little-endian record per event.
 * Mirrored once in Python by uffdtrace/events.py; tests/test_events_abi.py
 * compiles this header and compares every offset and the size.
 * Field meaning per kind is documented in README.md ("Event fields"). */
#ifndef UFFDTRACE_EVENTS_H
#define UFFDTRACE_EVENTS_H

#ifndef __KERNEL__
#include <stdint.h>
typedef uint32_t u32;
typedef uint64_t u64;
typedef int64_t s64;
#endif

enum uffdtrace_kind {
	UT_FAULT = 1,          /* entered handle_userfault */
	UT_FAULT_RET = 2,      /* left handle_userfault (ret = vm_fault_t, aux = ns inside) */
	UT_BLOCK = 3,          /* slept inside handle_userfault (tracepoint mode) */
	UT_READ_MSG = 4,       /* one uffd_msg delivered to a reader */
	UT_RESOLVE = 5,        /* one resolving ioctl returned (op says which) */
	UT_WAKE_RANGE = 6,     /* __wake_userfault(ctx, range) */
	UT_WAKE_TASK = 7,      /* userfaultfd_wake_function returned (peer_tid = woken) */
	UT_AIO_POLL_SUBMIT = 8,
	UT_AIO_POLL_WAKE = 9,
	UT_AIO_POLL_WORK = 10,
	UT_AIO_COMPLETE = 11,
	UT_ANON_VMA_LOCK = 12,
	UT_UFFD_NEW = 13,
	UT_UFFD_API = 14,
	UT_UFFD_REGISTER = 15,
	UT_UFFD_CLOSE = 16,
	UT_LOST = 17,          /* synthesised by user space from the in-kernel lost counter */
	UT_FAULT_STATE = 18,   /* a fault folded in the kernel so far, now sent step by step */
	UT_LIFECYCLE = 19,     /* a fault folded in the kernel from raised to resolved and woken */
};

/* FAULT_STATE / LIFECYCLE: op bits beside the resolving op (LIFECYCLE). */
#define UT_FOLD_VIA_READ 0x100  /* woken after its message was read (refiled) */
#define UT_FOLD_CLOSER 0x200    /* woken by the thread that closed its uffd */
#define UT_FOLD_REFAULT 0x400   /* raised again by the in-kernel retry after its wake-up */

/* RESOLVE / REGISTER ops: the ioctl number (_IOC_NR) of the request. */
enum uffdtrace_op {
	UT_OP_REGISTER = 0x00,
	UT_OP_UNREGISTER = 0x01,
	UT_OP_WAKE = 0x02,
	UT_OP_COPY = 0x03,
	UT_OP_ZEROPAGE = 0x04,
	UT_OP_MOVE = 0x05,
	UT_OP_WRITEPROTECT = 0x06,
	UT_OP_CONTINUE = 0x07,
	UT_OP_POISON = 0x08,
	UT_OP_API = 0x3f,
};

struct uffdtrace_event {
	u64 ts_ns;     /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	u32 kind;      /* enum uffdtrace_kind */
	u32 cpu;
	u32 tgid;
	u32 tid;
	char comm[16];
	u64 ctx;       /* uffd context (kernel pointer, mapped to a small id in user space) */
	u64 addr;
	u64 len;
	u64 flags;
	u64 mode;
	s64 ret;
	u32 peer_tid;  /* woken / faulting / reading thread, by kind */
	u32 op;        /* enum uffdtrace_op for RESOLVE and REGISTER */
	u64 aux;
	u32 peer2_tid; /* FAULT_STATE / LIFECYCLE: the waker (and resolver) */
	u32 count;     /* FAULT_STATE / LIFECYCLE: messages read */
};

#endif
