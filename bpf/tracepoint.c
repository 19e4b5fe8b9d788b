/* uffdtrace tracepoint mode (DESIGN.md §3.2), for kernels without kprobes
 * or fentry. The same records as kprobe.c, derived from tracepoints only; no
 * kernel struct is read. A uffd context is identified by (tgid << 32 | fd).
 *
 * Only processes known to use userfaultfd (uffd_users: filled when a uffd is
 * created, and from /proc at start) are looked at beyond one map lookup, and
 * only threads that just faulted inside a registered range are stack-walked.
 *
 * -D knobs on top of common.h's: HU_START/HU_END (handle_userfault),
 * UWF_START/UWF_END (userfaultfd_wake_function), WU_START/WU_END (__wake_up),
 * FLAVR_START/FLAVR_END (folio_lock_anon_vma_read), APCW (the address of
 * aio_poll_complete_work), all from /proc/kallsyms (0 when absent), and
 * HAVE_PF_TRACEPOINTS (x86 exceptions:page_fault_{user,kernel}), HAVE_IO_PGETEVENTS
 * (4.18+), HAVE_LOCK_CONTENTION (lock:contention_begin, 5.19+).
 */
#include <uapi/linux/aio_abi.h>
#include "common.h"

#define MAX_RANGES 16
#define MAX_STACK 32
#define MAX_IOCBS 8
#define IOCB_CMD_POLL 5

/* Registered ranges of one process: [start, end) belonging to uffd ctx. */
struct range_set {
	u64 start[MAX_RANGES];
	u64 end[MAX_RANGES];
	u64 ctx[MAX_RANGES];
};
struct stack { u64 ip[MAX_STACK]; };
struct getevents_entry { u64 events; };

BPF_HASH(ranges, u32, struct range_set, 16384);
BPF_HASH(uffd_fds, u64, u8, 65536);              /* (tgid, fd) of every known uffd */
/* tid -> its last fault in a registered range (user space reads it to
 * confirm that a thread still waits for that page) */
BPF_HASH(thread_fault, u32, struct fault_entry, 65536);
BPF_HASH(reading, u32, struct read_entry, 65536);
BPF_HASH(new_uffd, u32, u8, 65536);               /* tid inside /dev/userfaultfd IOC_NEW */
BPF_HASH(getting, u32, struct getevents_entry, 65536);
BPF_HASH(aio_polls, u64, u64, 65536);             /* user iocb -> uffd ctx */
BPF_PERCPU_ARRAY(stack_buf, struct stack, 1);
BPF_ARRAY(empty_ranges, struct range_set, 1);      /* all zero: template for new entries */

static __always_inline u64 uffd_key(u32 tgid, u64 fd)
{
	return ((u64)tgid << 32) | (u32)fd;
}

static __always_inline bool tracked(u32 tgid)
{
	return uffd_users.lookup(&tgid) != NULL && followed(tgid);
}

/* Bit 0: a frame in [a_start, a_end); bit 1: one in [b_start, b_end). */
static __always_inline u32 stack_has(void *ctx, u64 a_start, u64 a_end, u64 b_start, u64 b_end)
{
	int zero = 0;
	struct stack *st = stack_buf.lookup(&zero);
	u32 found = 0;
	long n;

	if (!st)
		return 0;
	n = bpf_get_stack(ctx, st->ip, sizeof(st->ip), 0);
	if (n <= 0)
		return 0;
	for (int i = 0; i < MAX_STACK; i++) {
		u64 ip;

		if (i >= n / 8)
			break;
		ip = st->ip[i];
		if (ip >= a_start && ip < a_end)
			found |= 1;
		if (ip >= b_start && ip < b_end)
			found |= 2;
	}
	return found;
}

/* ---- uffd lifetime and registered ranges --------------------------------- */

static __always_inline void uffd_created(void *ctx, s64 fd, u64 from_dev)
{
	struct uffdtrace_event e = {};
	u64 key = uffd_key(current_tgid(), fd);
	u8 one = 1;

	uffd_fds.update(&key, &one);
	emit_uffd_new(ctx, fd, from_dev, &e);
}

TRACEPOINT_PROBE(syscalls, sys_exit_userfaultfd)
{
	if (args->ret >= 0)
		uffd_created(args, args->ret, 0);
	return 0;
}

static __always_inline void track_range(u32 tgid, u64 start, u64 len, u64 uctx)
{
	int zero = 0;
	struct range_set *empty = empty_ranges.lookup(&zero);
	struct range_set *rs;

	if (!empty)
		return;
	ranges.insert(&tgid, empty);
	rs = ranges.lookup(&tgid);
	if (!rs)
		return;
	for (int i = 0; i < MAX_RANGES; i++) {
		if (rs->end[i] == 0) {
			rs->start[i] = start;
			rs->end[i] = start + len;
			rs->ctx[i] = uctx;
			return;
		}
	}
	count_lost(LOST_RANGES, 1);  /* faults in this range go unseen */
}

static __always_inline void untrack_ranges(u32 tgid, u64 start, u64 end, u64 uctx)
{
	struct range_set *rs = ranges.lookup(&tgid);

	if (!rs)
		return;
	for (int i = 0; i < MAX_RANGES; i++) {
		bool inside = rs->start[i] >= start && rs->end[i] <= end;

		if (rs->end[i] && (inside || (uctx && rs->ctx[i] == uctx)))
			rs->end[i] = 0;
	}
}

TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
	struct ioctl_entry ie = {};
	u32 tid = current_tid();
	u32 tgid = current_tgid();
	u64 key = uffd_key(tgid, args->fd);
	u8 one = 1;

	if (args->cmd == USERFAULTFD_IOC_NEW) {
		new_uffd.update(&tid, &one);
		return 0;
	}
	if (!uffd_fds.lookup(&key))
		return 0;
	ie.ctx = key;
	ie.cmd = args->cmd;
	ie.arg = args->arg;
	bpf_probe_read_user(ie.in, sizeof(ie.in), (void *)ie.arg);
	ioctl_entered(&ie);
	in_ioctl.update(&tid, &ie);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ioctl)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	struct ioctl_entry *ie;

	if (new_uffd.lookup(&tid)) {
		new_uffd.delete(&tid);
		if (args->ret >= 0)
			uffd_created(args, args->ret, 1);
		return 0;
	}
	ie = in_ioctl.lookup(&tid);
	if (!ie)
		return 0;
	if (!ioctl_wanted(ie)) {
		in_ioctl.delete(&tid);
		return 0;
	}
	fill_ioctl_event(&e, ie, args->ret, (u32)ie->ctx);
	in_ioctl.delete(&tid);
	if (e.ret == 0 && e.op == UT_OP_REGISTER)
		track_range(e.tgid, e.addr, e.len, e.ctx);
	if (e.ret == 0 && e.op == UT_OP_UNREGISTER)
		untrack_ranges(e.tgid, e.addr, e.addr + e.len, 0);
	if (followed(e.tgid))
		emit(args, &e);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
	struct uffdtrace_event e = {};
	u64 key = uffd_key(current_tgid(), args->fd);

	if (!uffd_fds.lookup(&key))
		return 0;
	uffd_fds.delete(&key);
	init_event(&e, UT_UFFD_CLOSE);
	e.ctx = key;
	untrack_ranges(e.tgid, 0, 0, key);
	if (followed(e.tgid))
		emit(args, &e);
	return 0;
}

/* ---- faults, blocking, wake-ups ------------------------------------------ */

#ifdef HAVE_PF_TRACEPOINTS
static __always_inline void on_page_fault(void *ctx, u64 address, u64 error_code)
{
	struct uffdtrace_event e = {};
	struct fault_entry fe = {};
	u32 tgid = current_tgid(), tid = current_tid();
	struct fault_entry *last;
	struct range_set *rs;

	if (!tracked(tgid))
		return;
	rs = ranges.lookup(&tgid);
	if (!rs)
		return;
	for (int i = 0; i < MAX_RANGES; i++) {
		if (address >= rs->start[i] && address < rs->end[i]) {
			fe.ctx = rs->ctx[i];
			break;
		}
	}
	/* The thread's previous fault is over: it runs (tracepoint mode sees no
	 * return from handle_userfault). Another attempt at the same page says
	 * whether the previous one slept (see sched_switch). */
	last = thread_fault.lookup(&tid);
	if (last && (last->ctx != fe.ctx || last->addr != (address & ~0xfffULL)))
		page_done(last->ctx, last->addr);
	else if (last)
		e.len = last->slept;
	if (!fe.ctx) {
		thread_fault.delete(&tid);
		return;
	}
	init_event(&e, UT_FAULT);
	e.ctx = fe.ctx;
	e.addr = address & ~0xfffULL;
	e.aux = address;
	e.flags = error_code;   /* x86: 0x2 write, 0x4 user */
	fe.ts = e.ts_ns;
	fe.addr = e.addr;
	thread_fault.update(&tid, &fe);
	page_waits(fe.ctx, fe.addr, fe.ts);
	emit(ctx, &e);
}

TRACEPOINT_PROBE(exceptions, page_fault_user)
{
	on_page_fault(args, args->address, args->error_code);
	return 0;
}

TRACEPOINT_PROBE(exceptions, page_fault_kernel)
{
	on_page_fault(args, args->address, args->error_code);
	return 0;
}
#endif

/* A thread that faulted in a range goes to sleep inside handle_userfault:
 * a BLOCK record with --events, otherwise kept in its thread_fault entry. */
TRACEPOINT_PROBE(sched, sched_switch)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	struct fault_entry *fe;

	if (args->prev_state == 0)
		return 0;
	fe = thread_fault.lookup(&tid);
	if (!fe)
		return 0;
	if (!(stack_has(args, HU_START, HU_END, 0, 0) & 1))
		return 0;
	init_event(&e, UT_BLOCK);
	e.ctx = fe->ctx;
	e.addr = fe->addr;
	e.aux = e.ts_ns - fe->ts;
	page_waits(fe->ctx, fe->addr, e.ts_ns);  /* again, after a wake-up without the page */
	if (!fe->slept)
		fe->slept = e.ts_ns;
#ifdef EVERY_RECORD
	emit(args, &e);
#endif
	/* Otherwise no record: a fault whose message is read was asleep anyway,
	 * the watchdog asks the thread's wchan about one that was not, and the
	 * thread's next fault on the page carries the time (FAULT len). */
	return 0;
}

/* Runs in the waker: a uffd wake-up has userfaultfd_wake_function on the
 * stack; a __wake_up frame means the fault had been read (refiled to
 * fault_wqh) before it was woken. Keyed on "faulted in a range", not on
 * "blocked": the waker can run before the faulter's own sched_switch fires
 * (it is still inside __schedule), and that wake-up is just as real. */
TRACEPOINT_PROBE(sched, sched_waking)
{
	struct uffdtrace_event e = {};
	u32 pid = args->pid;
	struct fault_entry *fe = thread_fault.lookup(&pid);
	u32 found;

	if (!fe)
		return 0;
	init_event(&e, UT_WAKE_TASK);
	e.ctx = fe->ctx;
	e.addr = fe->addr;
	found = stack_has(args, UWF_START, UWF_END, WU_START, WU_END);
	if (!(found & 1))
		return 0;   /* not a uffd wake-up (a signal, an unrelated wait) */
	ioctl_woke();
	e.peer_tid = pid;
	e.ret = 1;
	e.mode = (found & 2) ? 1 : 0;
	emit(args, &e);
	return 0;
}

/* ---- message reads ------------------------------------------------------- */

static __always_inline void read_enter(u64 fd, u64 buf)
{
	struct read_entry re = {};
	u32 tid = current_tid();

	re.ctx = uffd_key(current_tgid(), fd);
	if (!uffd_fds.lookup(&re.ctx) || !followed(current_tgid()))
		return;
	re.buf = buf;
	reading.update(&tid, &re);
}

static __always_inline void read_exit(void *ctx, s64 ret)
{
	u32 tid = current_tid();
	struct read_entry *re = reading.lookup(&tid);
	struct read_entry copy;

	if (!re)
		return;
	copy = *re;
	reading.delete(&tid);
	emit_messages(ctx, copy.ctx, copy.buf, ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
	read_enter(args->fd, (u64)args->buf);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_read)
{
	read_exit(args, args->ret);
	return 0;
}

/* readv: messages in the first iovec only. */
TRACEPOINT_PROBE(syscalls, sys_enter_readv)
{
	read_enter(args->fd, read_user_u64((u64)args->vec));
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_readv)
{
	read_exit(args, args->ret);
	return 0;
}

/* ---- aio IOCB_CMD_POLL on a uffd ------------------------------------------ */

TRACEPOINT_PROBE(syscalls, sys_enter_io_submit)
{
	u32 tgid = current_tgid();
	u64 iocbpp = (u64)args->iocbpp;

	if (!tracked(tgid))
		return 0;
	for (int i = 0; i < MAX_IOCBS; i++) {
		struct uffdtrace_event e = {};
		u64 cb[8] = {};
		u64 iocbp, key;

		if (i >= args->nr)
			break;
		iocbp = read_user_u64(iocbpp + 8 * i);
		bpf_probe_read_user(cb, sizeof(cb), (void *)iocbp);
		/* struct iocb: aio_data@0, aio_lio_opcode u16@16, aio_fildes u32@20, aio_buf@24 */
		if ((cb[2] & 0xffff) != IOCB_CMD_POLL)
			continue;
		key = uffd_key(tgid, cb[2] >> 32);
		if (!uffd_fds.lookup(&key))
			continue;
		aio_polls.update(&iocbp, &key);
		init_event(&e, UT_AIO_POLL_SUBMIT);
		e.ctx = key;
		e.addr = iocbp;
		e.aux = cb[0];
		e.flags = cb[3];
		emit(args, &e);
	}
	return 0;
}

static __always_inline void getevents_enter(u64 events)
{
	struct getevents_entry ge = { .events = events };
	u32 tid = current_tid();

	if (tracked(current_tgid()))
		getting.update(&tid, &ge);
}

/* Completions the process collected: struct io_event {data, obj, res, res2}. */
static __always_inline void getevents_exit(void *ctx, s64 ret)
{
	u32 tid = current_tid();
	struct getevents_entry *ge = getting.lookup(&tid);
	u64 events;

	if (!ge)
		return;
	events = ge->events;
	getting.delete(&tid);
	for (int i = 0; i < MAX_IOCBS; i++) {
		struct uffdtrace_event e = {};
		u64 ev[4] = {};
		u64 *uctx;

		if (i >= ret)
			break;
		bpf_probe_read_user(ev, sizeof(ev), (void *)(events + 32 * i));
		uctx = aio_polls.lookup(&ev[1]);
		if (!uctx)
			continue;
		init_event(&e, UT_AIO_COMPLETE);
		e.ctx = *uctx;
		e.addr = ev[1];
		e.aux = ev[0];
		e.ret = ev[2];
		aio_polls.delete(&ev[1]);
		emit(ctx, &e);
	}
}

TRACEPOINT_PROBE(syscalls, sys_enter_io_getevents)
{
	getevents_enter((u64)args->events);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_io_getevents)
{
	getevents_exit(args, args->ret);
	return 0;
}

#ifdef HAVE_IO_PGETEVENTS
TRACEPOINT_PROBE(syscalls, sys_enter_io_pgetevents)
{
	getevents_enter((u64)args->events);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_io_pgetevents)
{
	getevents_exit(args, args->ret);
	return 0;
}
#endif

/* A poll wake-up that could not complete inline defers to this work item. */
TRACEPOINT_PROBE(workqueue, workqueue_queue_work)
{
	struct uffdtrace_event e = {};

	if (!APCW || (u64)args->function != APCW)
		return 0;
	init_event(&e, UT_AIO_POLL_WORK);
	e.ctx = (u64)args->work;
	emit(args, &e);
	return 0;
}

/* ---- rmap: contended anon_vma lock inside folio_lock_anon_vma_read -------- */

#ifdef HAVE_LOCK_CONTENTION
TRACEPOINT_PROBE(lock, contention_begin)
{
	struct uffdtrace_event e = {};

	if (!tracked(current_tgid()) || !(stack_has(args, FLAVR_START, FLAVR_END, 0, 0) & 1))
		return 0;
	init_event(&e, UT_ANON_VMA_LOCK);
	e.ctx = (u64)args->lock_addr;
	e.flags = args->flags;
	e.ret = -1;   /* outcome unknown in this mode */
	emit(args, &e);
	return 0;
}
#endif
