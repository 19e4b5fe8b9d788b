/* What both programs keep per thread (its fault, its read, its ioctl) and
 * how they decode what user space passes to a uffd. */
#ifndef UFFDTRACE_UFFD_H
#define UFFDTRACE_UFFD_H
#include "follow.h"

/* A thread's current fault: ts (raised), ctx, addr (page). Tracepoint mode
 * also keeps when it first slept, and, while it folds the fault's steps in
 * the kernel (state UT_FE_FOLDING, see fold.h), what happened to it. */
struct fault_entry {
	u64 ts;
	u64 uffd;        /* the uffd: its context (kprobe mode) or (tgid << 32 | fd) (tracepoint mode) */
	u64 addr;
	u64 slept;       /* first sleep in handle_userfault (0: not yet) */
	u64 t_read;      /* its first message read (0: none) */
	u64 t_woken;     /* woken (0: not yet) */
	u64 reads;       /* messages read (64-bit: updated with atomics) */
	u64 state;       /* enum uffdtrace_fault_state (idem) */
	u32 tgid;
	u32 reader;
	u32 waker;
	u32 error_code;  /* x86 page-fault error code */
	u32 op_bits;     /* UT_FOLD_* */
	u32 over;        /* seen asleep outside any page fault since: this fault is over */
	u32 ran;         /* switched in since its last uffd wake-up (tracepoint.c) */
	u32 pad;
	char comm[16];
};
/* entered: when read() began (a wake-up that ran inside it ran during its refile) */
struct read_entry { u64 uffd; u64 buf; u64 entered; };
#define MAX_WOKEN 4
/* relevant: the ioctl can matter to a lifecycle (see ioctl_wanted);
 * woken: folded faults it woke, settled when it returns (fold.h). */
struct ioctl_entry { u64 uffd; u64 cmd; u64 arg; u64 in[5]; u64 relevant; u32 nwoken; u32 woken[MAX_WOKEN]; };
BPF_HASH(in_ioctl, u32, struct ioctl_entry, 65536);  /* tid -> its uffd ioctl in progress */

#define MAX_MSGS_PER_READ 32
#define UFFD_MSG_SIZE 32

/* tid -> its current fault (kprobe mode: inside handle_userfault; tracepoint
 * mode: its last fault in a registered range). User space reads it to
 * confirm that a thread still waits for its page. */
BPF_HASH(thread_fault, u32, struct fault_entry, 65536);
BPF_HASH(reading, u32, struct read_entry, 65536);   /* tid -> its read() of a uffd */

#define UFFDIO 0xAA
#define USERFAULTFD_IOC_NEW 0xAA00

/* The range a resolving ioctl covers: {dst, src, len, ...} for COPY and
 * MOVE, {start, len, ...} for the others. */
static __always_inline void ioctl_range(struct ioctl_entry *ie, u64 *start, u64 *len)
{
	u32 nr = ie->cmd & 0xff;

	*start = ie->in[0];
	*len = (nr == UT_OP_COPY || nr == UT_OP_MOVE) ? ie->in[2] : ie->in[1];
}

/* The ioctls whose range is one of pages (the others carry no range). */
static __always_inline bool has_range(struct ioctl_entry *ie)
{
	u32 nr = ie->cmd & 0xff;

	return nr >= UT_OP_UNREGISTER && nr <= UT_OP_POISON;
}

/* The event for a returned uffd ioctl: ie holds the request and the user
 * struct as it was on entry; the output field is re-read now. fd < 0 when
 * unknown. */
static __always_inline void fill_ioctl_event(struct uffdtrace_event *e, struct ioctl_entry *ie, s64 ret, s64 fd)
{
	u32 nr = ie->cmd & 0xff;

	init_event(e, UT_RESOLVE);
	e->ctx = ie->uffd;
	e->op = nr;
	e->ret = ret;
	e->addr = ie->in[0];
	e->len = ie->in[1];
	e->mode = ie->in[2];
	switch (nr) {
	case UT_OP_API:
		e->kind = UT_UFFD_API;
		e->addr = 0;
		e->len = 0;
		e->mode = 0;
		e->flags = read_user_u64(ie->arg + 8);   /* features granted */
		e->aux = fd;
		mark_user(e->tgid, e->ctx);
		break;
	case UT_OP_REGISTER:
		e->kind = UT_UFFD_REGISTER;
		e->aux = read_user_u64(ie->arg + 24);   /* ioctls granted */
		mark_user(e->tgid, e->ctx);
		break;
	case UT_OP_UNREGISTER:
		e->kind = UT_UFFD_REGISTER;
		e->mode = 0;
		break;
	case UT_OP_WAKE:
		e->mode = 0;
		break;
	case UT_OP_COPY:
	case UT_OP_MOVE:
		/* {dst, src, len, mode, result} */
		e->len = ie->in[2];
		e->mode = ie->in[3];
		e->flags = ie->in[1];
		e->aux = read_user_u64(ie->arg + 32);
		break;
	case UT_OP_ZEROPAGE:
	case UT_OP_CONTINUE:
	case UT_OP_POISON:
		/* {range, mode, result} */
		e->aux = read_user_u64(ie->arg + 24);
		break;
	default:
		break;
	}
}

/* UFFD_NEW from userfaultfd(2) or /dev/userfaultfd USERFAULTFD_IOC_NEW (6.1+). */
static __always_inline void emit_uffd_new(void *ctx, s64 fd, u64 from_dev, struct uffdtrace_event *e)
{
	init_event(e, UT_UFFD_NEW);
	if (!followed(e->tgid))
		return;
	e->aux = fd;
	e->flags = from_dev;
	mark_user(e->tgid, 0);
	emit(ctx, e);
}

#endif
