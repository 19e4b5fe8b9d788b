/* uffdtrace tracepoint mode (README, "Modes"; docs/architecture.md, "The BPF programs"), for kernels
 * without kprobes or fentry. The same records as kprobe.c, derived from
 * tracepoints only; no kernel struct is read. A uffd context is identified
 * by (tgid << 32 | fd) (ranges.h). Only threads that just faulted inside a
 * registered range are stack-walked (stacks.h). Without --events a fault's
 * steps are folded in the kernel (fold.h).
 *
 * -D knobs beside those of output.h and follow.h, all from /proc/kallsyms
 * (0 when absent): HANDLE_USERFAULT_START/_END, WAKE_FUNCTION_START/_END
 * (userfaultfd_wake_function), WAKE_UP_START/_END (__wake_up),
 * ANON_VMA_READ_START/_END (folio_lock_anon_vma_read), PAGE_FAULT_START/_END
 * (exc_page_fault), EVENT_WAIT_START/_END (userfaultfd_event_wait_completion),
 * AIO_POLL_COMPLETE_WORK (its address); HAVE_EVENT_WAITS, HAVE_CLONE3
 * (event_waits.h); the uffd identity knobs of uffd_id.h; and
 * HAVE_PF_TRACEPOINTS (x86 exceptions:page_fault_{user,kernel}),
 * HAVE_IO_PGETEVENTS (4.18+), HAVE_LOCK_CONTENTION (lock:contention_begin,
 * 5.19+), EVERY_RECORD (--events), QUIET (--flagged), NO_FOLD.
 */
#include <uapi/linux/aio_abi.h>
#include "uffd_id.h"
#include "ranges.h"
#include "stacks.h"
#include "fold.h"
#include "filter.h"
#include "messages.h"
#include "event_waits.h"

#define MAX_IOCBS 8
#define IOCB_CMD_POLL 5

struct getevents_entry { u64 events; };

BPF_HASH(new_uffd, u32, u8, 65536);               /* tid inside /dev/userfaultfd IOC_NEW */
BPF_HASH(getting, u32, struct getevents_entry, 65536);
BPF_HASH(aio_polls, u64, u64, 65536);             /* user iocb -> uffd ctx */

/* ---- uffd lifetime and registered ranges --------------------------------- */

static __always_inline void uffd_created(void *ctx, s64 fd, u64 from_dev)
{
	struct uffdtrace_event e = {};

	uffd_created_as(fd);
	emit_uffd_new(ctx, fd, from_dev, &e);
}

TRACEPOINT_PROBE(syscalls, sys_exit_userfaultfd)
{
	if (args->ret >= 0)
		uffd_created(args, args->ret, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
	struct ioctl_entry ie = {};
	u32 tid = current_tid();
	u8 one = 1;

	if (args->cmd == USERFAULTFD_IOC_NEW) {
		new_uffd.update(&tid, &one);
		return 0;
	}
	if (_IOC_TYPE(args->cmd) != UFFDIO)  /* before the fd table walk: most ioctls are not ours */
		return 0;
	ie.uffd = uffd_of_fd(args->fd);
	if (!ie.uffd)
		return 0;
	ie.cmd = args->cmd;
	ie.arg = args->arg;
	bpf_probe_read_user(ie.in, sizeof(ie.in), (void *)ie.arg);
	ioctl_entered(args, &ie);
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
#ifdef FOLD
	settle_woken(args, ie, args->ret, tid);
#endif
	if (!ioctl_wanted(args, ie)) {
		in_ioctl.delete(&tid);
		return 0;
	}
	fill_ioctl_event(&e, ie, args->ret, (u32)ie->uffd);
	in_ioctl.delete(&tid);
	if (e.ret == 0 && e.op == UT_OP_REGISTER) {
		u64 *modes = uffd_modes.lookup(&e.ctx);
		u64 m = e.mode | (modes ? *modes : 0);

		uffd_modes.update(&e.ctx, &m);
		track_range(uffd_owner_of(e.ctx, e.tgid), e.addr, e.len, e.ctx);
	}
	if (e.ret == 0 && e.op == UT_OP_UNREGISTER)
		untrack_ranges(uffd_owner_of(e.ctx, e.tgid), e.addr, e.addr + e.len, 0);
	if (followed(e.tgid) || ctx_followed(e.ctx))
		emit(args, &e);
	return 0;
}

/* Every holder's close is sent (user space keeps who holds a uffd); only
 * the one that releases it ends its registrations. */
TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	bool released;
	u64 uffd = uffd_closing(args->fd, &released);

	if (!uffd)
		return 0;
	init_event(&e, UT_UFFD_CLOSE);
	e.ctx = uffd;
	e.aux = args->fd;
	if (released) {
		closing.update(&tid, &uffd);
		uffd_modes.delete(&uffd);
		untrack_ranges(uffd_owner_of(uffd, e.tgid), 0, 0, uffd);
		uffd_owner.delete(&uffd);
	} else {
		e.flags = UT_CLOSE_KEPT;
	}
	if (followed(e.tgid) || ctx_followed(uffd))
		emit(args, &e);
	return 0;
}

/* ---- faults, blocking, wake-ups ------------------------------------------ */

#ifdef HAVE_PF_TRACEPOINTS
/* The thread's previous fault is over: it runs (tracepoint mode sees no
 * return from handle_userfault). A folded one goes out first; the next
 * fault then goes out too, since user space ends the previous one at it.
 * After a fault handed to its waker's ioctl (even a retry of the same
 * page), the next one folds: settle_woken sends the handed one first.
 * Returns whether the new fault may fold; *slept: when the previous attempt
 * at the same page slept (see sched_switch), else untouched. */
static __always_inline bool previous_fault_over(void *ctx, u32 tid, u64 uffd, u64 page, u64 *slept)
{
	struct fault_entry *last = thread_fault.lookup(&tid);
	bool dropped, fold;

	if (!last)
		return true;
	dropped = drop_unwaited(ctx, last, tid);
	/* user space ends an unwoken unfolded fault at the next one */
	fold = dropped || last->state == UT_FE_HANDED || (last->state == UT_FE_RAW && last->t_woken);
	unfold(ctx, last, tid);
	if (last->uffd == uffd && last->addr == page)
		*slept = last->slept;
	else
		page_done(last->uffd, last->addr, tid);
	return fold;
}

/* Whether the thread is alone on the page. If another waits there too, a
 * read or a resolution cannot tell the two apart in the kernel: the other's
 * folded fault goes out, and this one does not fold. */
static __always_inline bool alone_on_page(void *ctx, u64 uffd, u64 page, u32 tid)
{
	struct page_key k = { .uffd = uffd, .page = page };
	struct fault_entry *ofe;
	u64 *owner;

	if (page_waits(uffd, page, tid))
		return true;
	owner = waiting_pages.lookup(&k);
	if (owner) {
		ofe = folding((u32)*owner, uffd, page);
		if (ofe)
			unfold(ctx, ofe, (u32)*owner);
	}
	return false;
}

static __always_inline void on_page_fault(void *ctx, u64 address, u64 error_code)
{
	struct uffdtrace_event e = {};
	struct fault_entry fe = {};
	u32 tgid = current_tgid(), tid = current_tid();
	struct range_set *rs;
	bool fold;

	if (!tracked(tgid))
		return;
	rs = ranges.lookup(&tgid);
	if (!rs)
		return;
	fe.uffd = range_uffd(rs, address);
	fe.addr = address & ~0xfffULL;
	fold = previous_fault_over(ctx, tid, fe.uffd, fe.addr, &e.len);
	if (!fe.uffd) {
		thread_fault.delete(&tid);
		return;
	}
	init_event(&e, UT_FAULT);
	e.ctx = fe.uffd;
	e.addr = fe.addr;
	e.aux = address;
	e.flags = error_code;   /* x86: 0x1 present, 0x2 write, 0x4 user */
	fe.ts = e.ts_ns;
	fe.tgid = tgid;
	fe.error_code = error_code;
	__builtin_memcpy(fe.comm, e.comm, sizeof(fe.comm));
	fold = alone_on_page(ctx, fe.uffd, fe.addr, tid) && fold;
#ifdef FOLD
	if (fold)
		fe.state = UT_FE_FOLDING;   /* no record: its steps are folded */
	{
		struct page_key k = { .uffd = fe.uffd, .page = fe.addr };

		quiet_pages.delete(&k);   /* later messages of this page are this fault's */
	}
#endif
	thread_fault.update(&tid, &fe);
	if (fe.state != UT_FE_FOLDING)
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

/* The thread of a handed fault sleeps in handle_userfault again: the page
 * was gone when the kernel retried the same page fault after the wake-up
 * (no page-fault tracepoint fires for a retry). The entry folds this wait
 * as a fault of its own, and the messages of the page are its messages now.
 * If the handed fault does not end cleanly, settle_woken makes this wait
 * its next round instead (unfold_thread). */
static __always_inline void refault(struct fault_entry *fe, u32 tid, u64 ts)
{
	struct page_key k = { .uffd = fe->uffd, .page = fe->addr };
	u64 key = (u64)fe->waker << 32 | tid;
	u64 *v;

	fe->op_bits |= UT_FOLD_REFAULT;   /* first: settle_woken looks for it */
	if (!take(fe, UT_FE_HANDED, UT_FE_FOLDING))
		return;   /* settled meanwhile, not cleanly: a round user space infers */
	v = handed_pages.lookup(&k);
	if (v && *v == key)
		handed_pages.delete(&k);
	quiet_pages.delete(&k);
	fe->slept = 0;
	fe->t_read = 0;
	fe->t_woken = 0;
	fe->reader = 0;
	fe->waker = 0;
	fe->op_bits = UT_FOLD_REFAULT;
	fe->reads = 0;
	fe->ts = ts;
}

/* A thread that faulted in a range goes to sleep inside handle_userfault:
 * a BLOCK record with --events, otherwise kept in its thread_fault entry. */
TRACEPOINT_PROBE(sched, sched_switch)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid(), next = args->next_pid;
	struct fault_entry *fe = thread_fault.lookup(&next);
	u32 found, ran;

	/* A woken thread runs: a later wait in handle_userfault is a new one.
	 * (Its waker can run before the thread's own sleep is switched out.) */
	if (fe && (fe->state == UT_FE_HANDED || fe->t_woken))
		fe->ran = 1;
	/* Asleep: S (0x1) or D (0x2). A preempted thread (R+: TASK_REPORT_MAX,
	 * or TASK_STATE_MAX before 4.14) is still running its fault. */
	if (!(args->prev_state & 0x3))
		return 0;
	event_call_sleeps(args, tid);
	fe = thread_fault.lookup(&tid);
	if (!fe || fe->over)
		return 0;
	/* The page-fault frame matters only when handle_userfault's is not there. */
	found = stack_has(args, HANDLE_USERFAULT_START, HANDLE_USERFAULT_END, PAGE_FAULT_START, PAGE_FAULT_END, 1);
	if (!(found & 1)) {
		/* Asleep outside any page fault: its fault is over, and this
		 * thread's sleeps and wake-ups are not looked at again until its
		 * next fault. A folded one that never waited is dropped; one that
		 * did is left to its next fault or the watchdog, which end it. */
		if (PAGE_FAULT_END && !(found & 2) && (fe->state != UT_FE_FOLDING || drop_unwaited(args, fe, tid))) {
			struct page_key k = { .uffd = fe->uffd, .page = fe->addr };
			u64 *owner = waiting_pages.lookup(&k);

			fe->over = 1;
			if (owner && *owner == tid)   /* a shared page keeps its other waiters */
				waiting_pages.delete(&k);
		}
		return 0;
	}
	ran = fe->ran;
	fe->ran = 0;
	init_event(&e, UT_BLOCK);
	e.mode = ran;   /* a wait after a wake-up: user space's refault */
	if (fe->state == UT_FE_HANDED) {
		if (!ran)
			return 0;   /* the sleep its waker already ended */
#ifdef FOLD
		refault(fe, tid, e.ts_ns);
#endif
	}
	e.ctx = fe->uffd;
	e.addr = fe->addr;
	e.aux = e.ts_ns - fe->ts;
	/* Again (a thread that shared the page may have left it); shared now: unfold. */
	if (!page_waits(fe->uffd, fe->addr, tid))
		unfold(args, fe, tid);
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

	if (!fe || fe->over)
		return 0;   /* a thread outside any fault is not woken by a uffd */
	found = stack_has(args, WAKE_FUNCTION_START, WAKE_FUNCTION_END, WAKE_UP_START, WAKE_UP_END, 3);
	if (!(found & 1))
		return 0;   /* not a uffd wake-up (a signal, an unrelated wait) */
#ifdef FOLD
	if (fold_wake(args, fe, pid, found & 2))
		return 0;
#endif
	init_event(&e, UT_WAKE_TASK);   /* after any FAULT_STATE fold_wake sent */
	e.ctx = fe->uffd;
	e.addr = fe->addr;
	fe->t_woken = e.ts_ns;
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

	re.uffd = uffd_of_fd(fd);
	if (!re.uffd || (!followed(current_tgid()) && !ctx_followed(re.uffd)))
		return;
	re.buf = buf;
	re.entered = bpf_ktime_get_ns();
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
	emit_messages(ctx, &copy, ret);
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
		key = uffd_of_fd(cb[2] >> 32);
		if (!key)
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
		u64 *uffd;

		if (i >= ret)
			break;
		bpf_probe_read_user(ev, sizeof(ev), (void *)(events + 32 * i));
		uffd = aio_polls.lookup(&ev[1]);
		if (!uffd)
			continue;
		init_event(&e, UT_AIO_COMPLETE);
		e.ctx = *uffd;
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

	if (!AIO_POLL_COMPLETE_WORK || (u64)args->function != AIO_POLL_COMPLETE_WORK)
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

	/* The anon_vma lock is an rwsem taken for read (LCB_F_READ, 0x2 in
	 * include/trace/events/lock.h): spinlocks and writers are not it. */
	if (!(args->flags & 0x2) || !tracked(current_tgid()) ||
	    !(stack_has(args, ANON_VMA_READ_START, ANON_VMA_READ_END, 0, 0, 1) & 1))
		return 0;
	init_event(&e, UT_ANON_VMA_LOCK);
	e.ctx = (u64)args->lock_addr;
	e.flags = args->flags;
	e.ret = -1;   /* outcome unknown in this mode */
	emit(args, &e);
	return 0;
}
#endif
