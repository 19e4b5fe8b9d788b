/* Code shared by the kprobe-mode (kprobe.c) and tracepoint-mode
 * (tracepoint.c) programs: output, lost counting, process following, and
 * the decoding of what user space reads from and passes to a uffd. */
#ifndef UFFDTRACE_COMMON_H
#define UFFDTRACE_COMMON_H
#include <uapi/linux/ptrace.h>
#include "events.h"

#ifndef SPAWN_PARENT
#define SPAWN_PARENT 0
#endif

#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERF_OUTPUT(spill);   /* per-CPU, lock-free: for records the ring refused */
#else
BPF_PERF_OUTPUT(events);
#endif
BPF_PERCPU_ARRAY(lost, u64, UT_LOST_CAUSES);

/* Processes being traced (FILTER), and uffd contexts / aio requests that
 * belong to them, so that handlers in other processes are seen too. */
BPF_HASH(follow, u32, u8, 65536);
BPF_HASH(follow_ctx, u64, u8, 65536);
BPF_HASH(uffd_users, u32, u8, 65536);

/* A thread's current fault: ts (raised), ctx, addr (page). Tracepoint mode
 * also keeps when it first slept, and, while it folds the fault's steps in
 * the kernel (state UT_FE_FOLDING, see tracepoint.c), what happened to it. */
struct fault_entry {
	u64 ts;
	u64 ctx;
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
struct read_entry { u64 ctx; u64 buf; u64 entered; };
#define MAX_WOKEN 4
/* relevant: the ioctl can matter to a lifecycle (see ioctl_wanted);
 * woken: folded faults it woke, settled when it returns (tracepoint.c). */
struct ioctl_entry { u64 ctx; u64 cmd; u64 arg; u64 in[5]; u64 relevant; u32 nwoken; u32 woken[MAX_WOKEN]; };
BPF_HASH(in_ioctl, u32, struct ioctl_entry, 65536);  /* tid -> its uffd ioctl in progress */

#define MAX_MSGS_PER_READ 32
#define UFFD_MSG_SIZE 32

/* read_u64(addr) etc.: one value from kernel or user memory, 0 if unreadable. */
#define DEFINE_READER(name, type, helper)				\
	static __always_inline type name(u64 addr)			\
	{								\
		type v = 0;						\
		helper(&v, sizeof(v), (void *)addr);			\
		return v;						\
	}
DEFINE_READER(read_u64, u64, bpf_probe_read_kernel)
DEFINE_READER(read_u32, u32, bpf_probe_read_kernel)
DEFINE_READER(read_u8, u8, bpf_probe_read_kernel)
DEFINE_READER(read_user_u64, u64, bpf_probe_read_user)

static __always_inline void count_lost(int cause, u64 n)
{
	u64 *v = lost.lookup(&cause);
	if (v)
		*v += n;
}

static __always_inline void init_event(struct uffdtrace_event *e, u32 kind)
{
	u64 id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->cpu = bpf_get_smp_processor_id();
	e->tgid = id >> 32;
	e->tid = (u32)id;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

/* Ring buffer records go out without a wake-up (user space drains on a
 * timer: no irq_work and no consumer wake-up per record). Since 6.15
 * ("bpf: Convert ringbuf.c to rqspinlock") a reservation can also fail
 * while the ring has room, when its resilient spinlock gives up under
 * contention (seen on 6.18 under uffd-stress: a few records in 300k, on
 * every try): such a record goes to the per-CPU spill buffer instead. */
static __always_inline void emit(void *ctx, struct uffdtrace_event *e)
{
#ifdef USE_RINGBUF
	if (events.ringbuf_output(e, sizeof(*e), BPF_RB_NO_WAKEUP) == 0)
		return;
	if (spill.perf_submit(ctx, e, sizeof(*e)) < 0)
		count_lost(UT_LOST_BUFFER_FULL, 1);
#else
	if (events.perf_submit(ctx, e, sizeof(*e)) < 0)
		count_lost(UT_LOST_BUFFER_FULL, 1);
#endif
}

static __always_inline bool followed(u32 tgid)
{
#ifdef FILTER
	return follow.lookup(&tgid) != NULL;
#else
	return true;
#endif
}

static __always_inline bool ctx_followed(u64 uctx)
{
#ifdef FILTER
	return follow_ctx.lookup(&uctx) != NULL;
#else
	return true;
#endif
}

static __always_inline void mark_user(u32 tgid, u64 uctx)
{
	u8 one = 1;
	uffd_users.update(&tgid, &one);
	if (uctx)
		follow_ctx.update(&uctx, &one);
}

static __always_inline u32 current_tgid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

static __always_inline u32 current_tid(void)
{
	return (u32)bpf_get_current_pid_tgid();
}

/* ---- process following ---------------------------------------------- */

#ifdef FILTER
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent = current_tgid();
	u32 child = args->child_pid;
	u8 one = 1;

	if (parent == SPAWN_PARENT || follow.lookup(&parent))
		follow.update(&child, &one);
	return 0;
}
#endif

#define UFFDIO 0xAA
#define USERFAULTFD_IOC_NEW 0xAA00

/* Hooks of tracepoint mode's folding (tracepoint.c; kprobe.c sends every step). */
static __always_inline bool fold_read(void *ctx, u64 uctx, u64 page, u32 ptid);
static __always_inline bool waiter_matters(void *ctx, u64 uctx, u64 page, u64 owner, bool at_exit);

/* One READ_MSG per uffd_msg the reader got (ret bytes at user buf), unless
 * the message's fault is folded in the kernel. */
static __always_inline void emit_messages(void *ctx, struct read_entry *re, s64 ret)
{
	struct uffdtrace_event e = {};
	u64 nmsgs;

	if (ret < UFFD_MSG_SIZE)
		return;
	nmsgs = ret / UFFD_MSG_SIZE;
	if (nmsgs > MAX_MSGS_PER_READ)
		count_lost(UT_LOST_MESSAGES_PER_READ, nmsgs - MAX_MSGS_PER_READ);
	init_event(&e, UT_READ_MSG);
	e.ctx = re->ctx;
	e.ret = ret;
	for (int i = 0; i < MAX_MSGS_PER_READ; i++) {
		u64 msg[4] = {};

		if (i >= nmsgs)
			break;
		bpf_probe_read_user(msg, sizeof(msg), (void *)(re->buf + i * UFFD_MSG_SIZE));
		e.mode = msg[0] & 0xff;      /* event: 0x12 = PAGEFAULT */
		e.flags = msg[1];            /* arg.pagefault.flags */
		e.addr = msg[2];             /* arg.pagefault.address */
		e.peer_tid = (u32)msg[3];    /* arg.pagefault.feat.ptid */
		e.aux = i;
		if (e.mode == UT_UFFD_EVENT_PAGEFAULT && fold_read(ctx, re->ctx, e.addr & ~0xfffULL, e.peer_tid))
			continue;
		e.ts_ns = bpf_ktime_get_ns();   /* after any FAULT_STATE fold_read sent */
		e.len = e.ts_ns - re->entered;  /* time inside read() */
		emit(ctx, &e);
	}
}

/* ---- in-kernel filter of resolutions --------------------------------- */

/* A post-copy destination copies every page with an ioctl of its own, and
 * almost none covers a page a thread waits for. Without --events
 * (EVERY_RECORD), a resolving ioctl is sent to user space only when it can
 * matter to a lifecycle: a fault waits in its range when it starts or
 * returns, or it woke a uffd waiter on the way; the others are counted in
 * `filtered`. UFFDIO_WAKE, MOVE (anon_vma evidence), (UN)REGISTER and API
 * always go out, and so does a range too long to check page by page.
 * waiting_pages holds, per page, the thread that waits on it (PAGE_SHARED:
 * more than one did). */
struct page_key { u64 ctx; u64 page; };
BPF_TABLE("lru_hash", struct page_key, u64, waiting_pages, 65536);  /* -> waiting tid */
BPF_PERCPU_ARRAY(filtered, u64, 1);
#define MAX_CHECKED_PAGES 16
#define FILTER_PAGE 4096ULL
#define PAGE_SHARED (1ULL << 32)

/* Thread tid waits on the page; false when another thread waits there too. */
static __always_inline bool page_waits(u64 uctx, u64 page, u32 tid)
{
	struct page_key k = { .ctx = uctx, .page = page & ~(FILTER_PAGE - 1) };
	u64 *owner = waiting_pages.lookup(&k);
	u64 me = tid;

	if (owner && *owner != me) {
		*owner |= PAGE_SHARED;
		return false;
	}
	waiting_pages.update(&k, &me);
	return true;
}

/* Thread tid stopped waiting on the page. A shared page goes too: the
 * threads still there claim it again when they sleep. */
static __always_inline void page_done(u64 uctx, u64 page, u32 tid)
{
	struct page_key k = { .ctx = uctx, .page = page & ~(FILTER_PAGE - 1) };
	u64 *owner = waiting_pages.lookup(&k);

	if (owner && (*owner == tid || *owner & PAGE_SHARED))
		waiting_pages.delete(&k);
}

/* The range a resolving ioctl covers: {dst, src, len, ...} for COPY and
 * MOVE, {start, len, ...} for the others. */
static __always_inline void ioctl_range(struct ioctl_entry *ie, u64 *start, u64 *len)
{
	u32 nr = ie->cmd & 0xff;

	*start = ie->in[0];
	*len = (nr == UT_OP_COPY || nr == UT_OP_MOVE) ? ie->in[2] : ie->in[1];
}

static __always_inline bool filterable(struct ioctl_entry *ie)
{
#ifdef EVERY_RECORD
	return false;
#else
	u32 nr = ie->cmd & 0xff;

	return nr == UT_OP_COPY || nr == UT_OP_ZEROPAGE || nr == UT_OP_CONTINUE || nr == UT_OP_WRITEPROTECT ||
	       nr == UT_OP_POISON;
#endif
}

/* The ioctls whose range is one of pages (the others carry no range). */
static __always_inline bool has_range(struct ioctl_entry *ie)
{
	u32 nr = ie->cmd & 0xff;

	return nr >= UT_OP_UNREGISTER && nr <= UT_OP_POISON;
}

/* Whether a fault user space must hear about waits in the ioctl's range
 * (true when it cannot tell). at_exit: the ioctl has returned, and a fault
 * folded in the kernel that it did not wake is sent now (waiter_matters). */
static __always_inline bool range_has_waiter(void *ctx, struct ioctl_entry *ie, bool at_exit)
{
	u64 start, len, first;
	bool found = false;

	if (!has_range(ie))
		return false;
	ioctl_range(ie, &start, &len);
	if (len == 0 || len > MAX_CHECKED_PAGES * FILTER_PAGE)
		return true;
	first = start & ~(FILTER_PAGE - 1);
	for (int i = 0; i < MAX_CHECKED_PAGES; i++) {
		struct page_key k = { .ctx = ie->ctx, .page = first + i * FILTER_PAGE };
		u64 *owner;

		if (k.page >= start + len)
			break;
		owner = waiting_pages.lookup(&k);
		if (owner && waiter_matters(ctx, k.ctx, k.page, *owner, at_exit))
			found = true;
	}
	return found;
}

/* At entry: ie->relevant says whether a fault waits in range now. */
static __always_inline void ioctl_entered(void *ctx, struct ioctl_entry *ie)
{
	ie->relevant = !filterable(ie) || range_has_waiter(ctx, ie, false);
}

/* The current thread, inside a uffd ioctl, woke a uffd waiter. */
static __always_inline void ioctl_woke(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct ioctl_entry *ie = in_ioctl.lookup(&tid);

	if (ie)
		ie->relevant = 1;
}

/* At return: relevant at entry, woke someone, or a fault arrived meanwhile. */
static __always_inline bool ioctl_wanted(void *ctx, struct ioctl_entry *ie)
{
	int zero = 0;
	bool waiting = range_has_waiter(ctx, ie, true);  /* first: it sends the folded faults in range */
	u64 *n;

	if (ie->relevant || waiting)
		return true;
	n = filtered.lookup(&zero);
	if (n)
		*n += 1;
	return false;
}

/* The event for a returned uffd ioctl: ie holds the request and the user
 * struct as it was on entry; the output field is re-read now. fd < 0 when
 * unknown. */
static __always_inline void fill_ioctl_event(struct uffdtrace_event *e, struct ioctl_entry *ie, s64 ret, s64 fd)
{
	u32 nr = ie->cmd & 0xff;

	init_event(e, UT_RESOLVE);
	e->ctx = ie->ctx;
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
