/* The contract between the BPF programs and user space: the record, and
 * every value both sides read or write (kinds, ops, counters, states, bits).
 * Mirrored once in Python by uffdtrace/events.py; tests/test_events_abi.py
 * compiles this header and compares every offset, the size and every UT_
 * name with its Python value, both ways. Field meaning per kind:
 * docs/architecture.md ("The record"). */
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
	UT_FAULT_STATE = 18,   /* a fault folded in the kernel so far, now sent step by step */
	UT_LIFECYCLE = 19,     /* a fault folded in the kernel from raised to resolved and woken */
	UT_EVENT_WAIT = 20,    /* a caller queued a non-cooperative event and waits for its read (tracepoint mode) */
	UT_EVENT_DONE = 21,    /* the call that queued it returned (ret; aux = ns waited) */
};

/* FAULT_STATE / LIFECYCLE: op bits beside the resolving op (LIFECYCLE). */
enum uffdtrace_fold_bit {
	UT_FOLD_OP_MASK = 0xff,   /* the resolving op */
	UT_FOLD_VIA_READ = 0x100, /* woken after its message was read (refiled) */
	UT_FOLD_CLOSER = 0x200,   /* woken by the thread that closed its uffd */
	UT_FOLD_REFAULT = 0x400,  /* raised again by the in-kernel retry after its wake-up */
};

/* Records that went unseen, per cause: index of the per-CPU `lost` array. */
enum uffdtrace_lost_cause {
	UT_LOST_BUFFER_FULL = 0,       /* no room in the kernel buffer */
	UT_LOST_MESSAGES_PER_READ = 1, /* messages beyond MAX_MSGS_PER_READ in one read */
	UT_LOST_RANGES_UNTRACKED = 2,  /* registered ranges beyond MAX_RANGES (tracepoint mode) */
	UT_LOST_CAUSES,
};

/* A thread_fault / handed_faults entry's state (tracepoint mode, bpf/fold.h). */
enum uffdtrace_fault_state {
	UT_FE_RAW = 0,      /* sent step by step */
	UT_FE_FOLDING = 1,  /* its steps folded in the kernel */
	UT_FE_HANDED = 2,   /* woken inside an ioctl that has not returned */
};

/* Faults that ended cleanly in the kernel and were only counted (--flagged):
 * index of the per-CPU `quiet` array. */
enum uffdtrace_quiet_counter {
	UT_QUIET_LIFECYCLES = 0,
	UT_QUIET_READS = 1,
	UT_QUIET_COUNTERS,
};

/* Why a fault came to the uffd, as user space derives it from the x86 error
 * code and the uffd's registered modes (analysis/rules.py fault_reason);
 * ANY: it cannot tell. */
enum uffdtrace_reason {
	UT_REASON_ANY = 0,
	UT_REASON_MISSING = 1,
	UT_REASON_WP = 2,
	UT_REASON_MINOR = 3,
};

/* serve's clean lifecycles, summed in the kernel (bpf/aggregate.h): latency
 * histograms of UT_HIST_BOUNDS buckets, bucket i holding the values of at
 * most 1000 << i ns (1 us to 67 s, the metrics' buckets), and one more for
 * the rest. */
#define UT_HIST_BOUNDS 27

/* UFFD_CLOSE flags: a holder closed its descriptor and the uffd lives on
 * (other descriptors or references hold it); 0: the close released it. */
#define UT_CLOSE_KEPT 0x1

/* fault_entry.reads: the top bit seals the count once the fault is sent. */
#define UT_READS_SEALED (1ULL << 63)

/* Kernel and uapi values both sides interpret (include/uapi/linux/userfaultfd.h,
 * arch/x86/include/asm/trap_pf.h, include/linux/mm.h, include/linux/mm_types.h). */
enum uffdtrace_kernel_value {
	UT_UFFD_EVENT_PAGEFAULT = 0x12,  /* uffd_msg.event (READ_MSG mode; EVENT_WAIT/_DONE mode) */
	UT_UFFD_EVENT_FORK = 0x13,
	UT_UFFD_EVENT_REMAP = 0x14,
	UT_UFFD_EVENT_REMOVE = 0x15,
	UT_UFFD_EVENT_UNMAP = 0x16,
	UT_PAGEFAULT_FLAG_WP = 0x2,      /* uffd_msg.arg.pagefault.flags (READ_MSG flags) */
	UT_X86_PF_PROT = 0x1,            /* page-fault error code (tracepoint FAULT flags) */
	UT_X86_PF_WRITE = 0x2,
	UT_REGISTER_MODE_MISSING = 0x1,  /* UFFDIO_REGISTER modes (REGISTER mode) */
	UT_REGISTER_MODE_WP = 0x2,
	UT_REGISTER_MODE_MINOR = 0x4,
	UT_MODE_DONTWAKE = 0x1,          /* COPY, ZEROPAGE, CONTINUE, POISON, MOVE */
	UT_WP_MODE_WP = 0x1,             /* WRITEPROTECT: protecting, not resolving */
	UT_WP_MODE_DONTWAKE = 0x2,
	UT_VM_UFFD_MISSING = 0x200,      /* handle_userfault's reason (kprobe FAULT mode) */
	UT_VM_UFFD_WP = 0x1000,
	UT_VM_FAULT_SIGBUS = 0x2,        /* handle_userfault's return (FAULT_RET ret) */
	UT_VM_FAULT_RETRY = 0x400,       /* ... the kernel retries the fault (under mmap_lock after a per-VMA-lock pass) */
	UT_FAULT_FLAG_USER = 0x40,       /* vm_fault.flags (kprobe FAULT flags): a user-mode fault */
};

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
