/* uffdtrace kprobe mode (README, "Modes"; docs/architecture.md, "The BPF programs"), compiled by bcc.
 *
 * Never dereferences a kernel struct through a header type: every member
 * offset (OFF_*) is passed in by uffdtrace/live/offsets.py from the running
 * kernel's BTF, and all reads go through read_*() below. Which probes get
 * attached (and to which symbol) is decided in uffdtrace/live/kprobe_mode.py.
 * Every step of a fault is sent (nothing is folded: fold_hooks.h's defaults).
 *
 * -D knobs beside those of output.h and follow.h: OFF_* member offsets,
 * HAVE_* for optional members, UFFD_FOPS (userfaultfd_fops' address),
 * ANON_VMA_READ_START/_END (folio_lock_anon_vma_read's range), EVERY_RECORD
 * (--events).
 */
#include "filter.h"
#include "messages.h"
#include "files.h"

BPF_HASH(poll_iocbs, u64, u8, 65536);

struct wake_entry { u64 ts; u64 uffd; u64 addr; u64 start; u64 len; u32 pid; u32 tgid; };
struct aio_entry { u64 uffd; u64 obj; u64 data; u32 mask; u32 events; u8 scheduled; };
struct aio_work_entry { u64 ts; u64 iocb; u64 uffd; u64 obj; u64 data; u8 on_queue; };
struct anon_vma_read_entry { u64 ts; u64 folio; u32 trylocks; };
#define MAPPING_FLAGS 0x3  /* PAGE_MAPPING_ANON | PAGE_MAPPING_MOVABLE */
#define MAPPING_ANON 0x1

BPF_HASH(ioctl_fd, u32, u64, 65536);
BPF_HASH(waking, u32, struct wake_entry, 4096);
BPF_HASH(aio_waking, u32, struct aio_entry, 4096);
BPF_HASH(aio_working, u32, struct aio_work_entry, 4096);
BPF_HASH(locking, u32, struct anon_vma_read_entry, 65536);

/* ---- handle_userfault: raised / returned ---------------------------- */

int kp_handle_userfault(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};
	struct fault_entry fe = {};
	u64 vmf = PT_REGS_PARM1(ctx);
	u32 tid = current_tid();

	init_event(&e, UT_FAULT);
	if (!followed(e.tgid))
		return 0;
	e.ctx = read_u64(read_u64(vmf + OFF_VM_FAULT_VMA) + OFF_VMA_UFFD_CTX);
	e.addr = read_u64(vmf + OFF_VM_FAULT_ADDRESS);
#ifdef OFF_VM_FAULT_REAL_ADDRESS
	e.aux = read_u64(vmf + OFF_VM_FAULT_REAL_ADDRESS);
#else
	e.aux = e.addr;
#endif
	e.flags = read_u32(vmf + OFF_VM_FAULT_FLAGS);
	e.mode = PT_REGS_PARM2(ctx);
	fe.ts = e.ts_ns;
	fe.uffd = e.ctx;
	fe.addr = e.addr;
	thread_fault.update(&tid, &fe);
	page_waits(fe.uffd, fe.addr, tid);
	mark_user(e.tgid, e.ctx);
	emit(ctx, &e);
	return 0;
}

int kr_handle_userfault(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	struct fault_entry *fe = thread_fault.lookup(&tid);

	if (!fe)
		return 0;
	init_event(&e, UT_FAULT_RET);
	e.ctx = fe->uffd;
	e.addr = fe->addr;
	e.ret = (u32)PT_REGS_RC(ctx);
	e.aux = e.ts_ns - fe->ts;
	page_done(fe->uffd, fe->addr, tid);
	thread_fault.delete(&tid);
	emit(ctx, &e);
	return 0;
}

/* ---- which inode each uffd is ----------------------------------------- */

/* The uffd's inode (what /proc/PID/fd shows) by its context, learned where
 * a file is at hand (read, ioctl) and forgotten at its release: user space
 * finds the processes holding a uffd by it (uffd_holders). LRU: a uffd long
 * unused is dropped. */
BPF_TABLE("lru_hash", u64, u64, uffd_inode, 16384);

static __always_inline void learn_inode(u64 uffd, u64 file)
{
#if defined(OFF_FILE_F_INODE) && defined(OFF_INODE_INO)
	u64 ino;

	if (uffd_inode.lookup(&uffd))
		return;
	ino = file_ino(file);
	if (ino)
		uffd_inode.update(&uffd, &ino);
#endif
}

/* ---- message read ---------------------------------------------------- */

static __always_inline void read_enter(u64 file, u64 buf)
{
	struct read_entry re = {};
	u32 tid = current_tid();

	re.uffd = read_u64(file + OFF_FILE_PRIVATE_DATA);
	re.buf = buf;
	re.entered = bpf_ktime_get_ns();
	if (!followed(current_tgid()) && !ctx_followed(re.uffd))
		return;
	learn_inode(re.uffd, file);
	reading.update(&tid, &re);
}

/* userfaultfd_read(file, buf, count, ppos): kernels up to 6.9. */
int kp_userfaultfd_read(struct pt_regs *ctx)
{
	read_enter(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx));
	return 0;
}

#if defined(OFF_IOV_ITER_TYPE) && defined(OFF_IOV_ITER_UBUF) && defined(OFF_IOV_ITER_IOV) && \
    defined(OFF_IOV_ITER_IOV_OFFSET) && defined(OFF_KIOCB_FILP) && defined(ITER_UBUF_VALUE) && \
    defined(ITER_IOVEC_VALUE)
/* userfaultfd_read_iter(iocb, to): 6.10+ (Jens Axboe, "userfaultfd:
 * convert to ->read_iter()"). The user buffer is the iov_iter's ubuf
 * (read) or its first iovec (readv). */
int kp_userfaultfd_read_iter(struct pt_regs *ctx)
{
	u64 iocb = PT_REGS_PARM1(ctx), to = PT_REGS_PARM2(ctx);
	u8 type = read_u8(to + OFF_IOV_ITER_TYPE);
	u64 buf = 0;

	if (type == ITER_UBUF_VALUE)
		buf = read_u64(to + OFF_IOV_ITER_UBUF);
	else if (type == ITER_IOVEC_VALUE)
		buf = read_user_u64(read_u64(to + OFF_IOV_ITER_IOV));
	else
		return 0;
	buf += read_u64(to + OFF_IOV_ITER_IOV_OFFSET);
	read_enter(read_u64(iocb + OFF_KIOCB_FILP), buf);
	return 0;
}
#endif

int kr_userfaultfd_read(struct pt_regs *ctx)
{
	u32 tid = current_tid();
	struct read_entry *re = reading.lookup(&tid);
	struct read_entry copy;

	if (!re)
		return 0;
	copy = *re;
	reading.delete(&tid);
	emit_messages(ctx, &copy, PT_REGS_RC(ctx));
	return 0;
}

/* ---- resolving ioctls ------------------------------------------------- */

TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
	u32 tid = current_tid();
	u64 fd = args->fd;

	if (((args->cmd >> 8) & 0xff) != UFFDIO)
		return 0;
	fd |= (u64)args->cmd << 32;
	ioctl_fd.update(&tid, &fd);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ioctl)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	u64 *fd = ioctl_fd.lookup(&tid);
	u64 cmd;

	if (!fd)
		return 0;
	cmd = *fd >> 32;
	ioctl_fd.delete(&tid);
	if (cmd == USERFAULTFD_IOC_NEW && args->ret >= 0)
		emit_uffd_new(args, args->ret, 1, &e);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_userfaultfd)
{
	struct uffdtrace_event e = {};

	if (args->ret >= 0)
		emit_uffd_new(args, args->ret, 0, &e);
	return 0;
}

int kp_userfaultfd_ioctl(struct pt_regs *ctx)
{
	struct ioctl_entry ie = {};
	u32 tid = current_tid();

	ie.uffd = read_u64(PT_REGS_PARM1(ctx) + OFF_FILE_PRIVATE_DATA);
	if (!followed(current_tgid()) && !ctx_followed(ie.uffd))
		return 0;
	learn_inode(ie.uffd, PT_REGS_PARM1(ctx));
	ie.cmd = PT_REGS_PARM2(ctx);
	ie.arg = PT_REGS_PARM3(ctx);
	bpf_probe_read_user(ie.in, sizeof(ie.in), (void *)ie.arg);
	ioctl_entered(ctx, &ie);
	in_ioctl.update(&tid, &ie);
	return 0;
}

int kr_userfaultfd_ioctl(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	struct ioctl_entry *ie = in_ioctl.lookup(&tid);
	u64 *fd = ioctl_fd.lookup(&tid);

	if (!ie)
		return 0;
	if (!ioctl_wanted(ctx, ie)) {
		in_ioctl.delete(&tid);
		return 0;
	}
	fill_ioctl_event(&e, ie, PT_REGS_RC(ctx), fd ? (s64)(u32)*fd : -1);
	in_ioctl.delete(&tid);
	emit(ctx, &e);
	return 0;
}

/* ---- wake-ups ---------------------------------------------------------- */

/* Attached only with --events (kprobe_mode.py events_only): no lifecycle
 * rule reads the range (the wake-ups themselves are the WAKE_TASK records). */
int kp___wake_userfault(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};
	u64 range = PT_REGS_PARM2(ctx);

	init_event(&e, UT_WAKE_RANGE);
	e.ctx = PT_REGS_PARM1(ctx);
	if (!followed(e.tgid) && !ctx_followed(e.ctx))
		return 0;
	e.addr = read_u64(range);
	e.len = read_u64(range + 8);
	emit(ctx, &e);
	return 0;
}

/* userfaultfd_wake_function(wq, mode, wake_flags, key): wq is inside the
 * faulting thread's on-stack struct userfaultfd_wait_queue. */
int kp_userfaultfd_wake_function(struct pt_regs *ctx)
{
	struct wake_entry we = {};
	u64 wq = PT_REGS_PARM1(ctx), key = PT_REGS_PARM4(ctx);
	u64 uwq = wq - OFF_UWQ_WQ;
	u64 task = read_u64(wq + OFF_WQE_PRIVATE);
	u32 tid = current_tid();

	we.ts = bpf_ktime_get_ns();
	we.uffd = read_u64(uwq + OFF_UWQ_CTX);
	we.addr = read_u64(uwq + OFF_UWQ_MSG + OFF_MSG_ADDRESS);
	we.pid = read_u32(task + OFF_TASK_PID);
	we.tgid = read_u32(task + OFF_TASK_TGID);
	if (!followed(current_tgid()) && !followed(we.tgid) && !ctx_followed(we.uffd))
		return 0;
	if (key) {
		we.start = read_u64(key);
		we.len = read_u64(key + 8);
	}
	waking.update(&tid, &we);
	return 0;
}

int kr_userfaultfd_wake_function(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	struct wake_entry *we = waking.lookup(&tid);

	if (!we)
		return 0;
#ifndef EVERY_RECORD
	/* Not this waiter's range: one such call per waiter of the uffd on
	 * every wake-up (the many of a busy uffd), and nothing happened. */
	if ((int)PT_REGS_RC(ctx) != 1) {
		waking.delete(&tid);
		return 0;
	}
#endif
	init_event(&e, UT_WAKE_TASK);
	/* Timed at entry, before try_to_wake_up: the woken thread may run and
	 * return from handle_userfault on another CPU before this return. */
	e.ts_ns = we->ts;
	e.ctx = we->uffd;
	e.addr = we->addr;
	e.peer_tid = we->pid;
	e.flags = we->tgid;
	e.aux = we->start;
	e.len = we->len;
	e.ret = (int)PT_REGS_RC(ctx);
	waking.delete(&tid);
	if (e.ret == 1)
		ioctl_woke();
	emit(ctx, &e);
	return 0;
}

/* ---- aio IOCB_CMD_POLL ------------------------------------------------- */

static __always_inline u64 iocb_of_poll(u64 req)
{
	return req - OFF_KIOCB_POLL;
}

/* The uffd context a poll request waits on (its file's private_data). */
static __always_inline u64 uffd_of_poll(u64 req)
{
	return read_u64(read_u64(req + OFF_POLL_FILE) + OFF_FILE_PRIVATE_DATA);
}

/* aio records name the uffd in ctx, and the request by its user iocb
 * pointer (addr) and aio_data (aux), as the process knows it. */
static __always_inline void fill_aio(struct uffdtrace_event *e, u64 iocb)
{
	e->ctx = uffd_of_poll(iocb + OFF_KIOCB_POLL);
	e->addr = read_u64(iocb + OFF_KIOCB_RES_OBJ);   /* user iocb pointer */
	e->aux = read_u64(iocb + OFF_KIOCB_RES_DATA);   /* aio_data cookie */
}

/* aio_poll_wake(wait, mode, sync, key) */
int kp_aio_poll_wake(struct pt_regs *ctx)
{
	struct aio_entry ae = {};
	u64 req = PT_REGS_PARM1(ctx) - OFF_POLL_WAIT;
	u32 tid = current_tid();
	u64 iocb;
	u8 one = 1;

#ifdef UFFD_FOPS
	/* Only polls on a userfaultfd. */
	if (read_u64(read_u64(req + OFF_POLL_FILE) + OFF_FILE_F_OP) != UFFD_FOPS)
		return 0;
#endif
	iocb = iocb_of_poll(req);
	if (!followed(current_tgid()) && !poll_iocbs.lookup(&iocb))
		return 0;
	ae.uffd = uffd_of_poll(req);
	ae.obj = read_u64(iocb + OFF_KIOCB_RES_OBJ);
	ae.data = read_u64(iocb + OFF_KIOCB_RES_DATA);
	ae.mask = (u32)PT_REGS_PARM4(ctx);
	ae.events = read_u32(req + OFF_POLL_EVENTS);
#ifdef OFF_POLL_WORK_SCHEDULED
	ae.scheduled = read_u8(req + OFF_POLL_WORK_SCHEDULED);
#endif
	poll_iocbs.update(&iocb, &one);
	aio_waking.update(&tid, &ae);
	return 0;
}

int kr_aio_poll_wake(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	struct aio_entry *ae = aio_waking.lookup(&tid);

	if (!ae)
		return 0;
	init_event(&e, UT_AIO_POLL_WAKE);
	/* The request may be completed (freed) by now: use what entry read. */
	e.ctx = ae->uffd;
	e.addr = ae->obj;
	e.aux = ae->data;
	e.mode = ae->mask;
	e.flags = ae->events;
	e.len = ae->scheduled;
	e.ret = (int)PT_REGS_RC(ctx);
	aio_waking.delete(&tid);
	emit(ctx, &e);
	return 0;
}

/* aio_poll_complete_work(work): whether the request is on the uffd's
 * waitqueue as its work begins. Since 363bee27e258 (v5.16) it stays there
 * until completed; before, the wake-up took it off and the work put it back
 * after polling, and a fault queued in between woke nothing. */
int kp_aio_poll_complete_work(struct pt_regs *ctx)
{
	struct aio_work_entry we = {};
	u64 iocb = iocb_of_poll(PT_REGS_PARM1(ctx) - OFF_POLL_WORK);
	u64 entry = iocb + OFF_KIOCB_POLL + OFF_POLL_WAIT + OFF_WQE_ENTRY;
	u32 tid = current_tid();

	if (!poll_iocbs.lookup(&iocb))
		return 0;
	we.ts = bpf_ktime_get_ns();
	we.iocb = iocb;
	we.uffd = uffd_of_poll(iocb + OFF_KIOCB_POLL);
	we.obj = read_u64(iocb + OFF_KIOCB_RES_OBJ);
	we.data = read_u64(iocb + OFF_KIOCB_RES_DATA);
	we.on_queue = read_u64(entry) != entry;  /* list_empty(&req->wait.entry) */
	aio_working.update(&tid, &we);
	return 0;
}

/* Recorded as the work returns: len its time inside, flags whether the
 * request was queued as it began, ret whether it completed the request
 * (aio_complete ran inside it and forgot the iocb). */
int kr_aio_poll_complete_work(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	struct aio_work_entry *we = aio_working.lookup(&tid);

	if (!we)
		return 0;
	init_event(&e, UT_AIO_POLL_WORK);
	e.ctx = we->uffd;
	e.addr = we->obj;
	e.aux = we->data;
	e.len = e.ts_ns - we->ts;
	e.flags = we->on_queue;
	e.ret = !poll_iocbs.lookup(&we->iocb);
	aio_working.delete(&tid);
	emit(ctx, &e);
	return 0;
}

/* aio_complete(iocb): only for poll requests seen above. */
int kp_aio_complete(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};
	u64 iocb = PT_REGS_PARM1(ctx);

	if (!poll_iocbs.lookup(&iocb))
		return 0;
	poll_iocbs.delete(&iocb);
	init_event(&e, UT_AIO_COMPLETE);
	fill_aio(&e, iocb);
	e.ret = read_u64(iocb + OFF_KIOCB_RES_RES);
	emit(ctx, &e);
	return 0;
}

/* ---- rmap: folio_lock_anon_vma_read ------------------------------------ */

int kp_anon_vma_read(struct pt_regs *ctx)
{
	struct anon_vma_read_entry fl = {};
	u32 tid = current_tid();

	fl.ts = bpf_ktime_get_ns();
	fl.folio = PT_REGS_PARM1(ctx);
	locking.update(&tid, &fl);
	return 0;
}

/* Every pass through the recheck loop takes exactly one trylock of the
 * root anon_vma rwsem, so retries = trylocks - 1. Only calls made from
 * inside the lock function count (return address in its range). */
int kp_down_read_trylock(struct pt_regs *ctx)
{
	u32 tid = current_tid();
	struct anon_vma_read_entry *fl = locking.lookup(&tid);
	u64 ra = 0;

	if (!fl)
		return 0;
	bpf_probe_read_kernel(&ra, sizeof(ra), (void *)PT_REGS_SP(ctx));
	if (ra >= ANON_VMA_READ_START && ra < ANON_VMA_READ_END)
		fl->trylocks++;
	return 0;
}

int kr_anon_vma_read(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	struct anon_vma_read_entry *fl = locking.lookup(&tid);
	u32 retries;
	u8 *wanted;

	if (!fl)
		return 0;
	init_event(&e, UT_ANON_VMA_LOCK);
	retries = fl->trylocks > 1 ? fl->trylocks - 1 : 0;
	e.ctx = fl->folio;
	e.len = e.ts_ns - fl->ts;
	e.flags = fl->trylocks;
	e.aux = retries;
	e.addr = PT_REGS_RC(ctx);
	e.ret = e.addr != 0;
	if (e.ret) {
		/* Locked an anon_vma that is not the folio's now: a UFFDIO_MOVE
		 * moved the folio between the walk's read of folio->mapping and
		 * the lock, and nothing looked again (the re-check 880a99b60d46
		 * added in v6.8). With the re-check the folio cannot move while
		 * the lock is held, so on a fixed kernel this never holds. */
		u64 mapping = read_u64(fl->folio + OFF_PAGE_MAPPING);

		e.mode = (mapping & MAPPING_FLAGS) == MAPPING_ANON && mapping - MAPPING_ANON != e.addr;
	}
	locking.delete(&tid);
#ifdef FILTER
	wanted = follow.lookup(&e.tgid);
#else
	wanted = uffd_users.lookup(&e.tgid);
#endif
	if (retries || e.mode || wanted)
		emit(ctx, &e);
	return 0;
}

/* ---- non-cooperative events --------------------------------------------- */

/* userfaultfd_event_wait_completion(ctx, ewq): the caller of madvise,
 * munmap, mremap or fork has queued ewq->msg on ctx and sleeps until a
 * handler reads it; its return is the caller resuming (read, or the uffd
 * released). The message is uffd_msg: the event at byte 0, arg words from
 * byte 8 (remove/unmap: start, end; remap: from, to, len). */
struct event_wait_entry { u64 ts; u64 uffd; u64 start; u64 len; u32 event; };
BPF_HASH(event_waiting, u32, struct event_wait_entry, 4096);

int kp_event_wait(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};
	struct event_wait_entry we = {};
	u64 msg = PT_REGS_PARM2(ctx) + OFF_UWQ_MSG;
	u32 tid = current_tid();

	init_event(&e, UT_EVENT_WAIT);
	e.ctx = PT_REGS_PARM1(ctx);
	if (!followed(e.tgid) && !ctx_followed(e.ctx))
		return 0;
	e.mode = read_u8(msg);
	if (e.mode == UT_UFFD_EVENT_REMOVE || e.mode == UT_UFFD_EVENT_UNMAP) {
		e.addr = read_u64(msg + 8);
		e.len = read_u64(msg + 16) - e.addr;
	} else if (e.mode == UT_UFFD_EVENT_REMAP) {
		e.addr = read_u64(msg + 8);
		e.len = read_u64(msg + 24);
	}
	we.ts = e.ts_ns;
	we.uffd = e.ctx;
	we.start = e.addr;
	we.len = e.len;
	we.event = e.mode;
	event_waiting.update(&tid, &we);
	emit(ctx, &e);
	return 0;
}

int kr_event_wait(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	struct event_wait_entry *we = event_waiting.lookup(&tid);

	if (!we)
		return 0;
	init_event(&e, UT_EVENT_DONE);
	e.ctx = we->uffd;
	e.addr = we->start;
	e.len = we->len;
	e.mode = we->event;
	e.aux = e.ts_ns - we->ts;   /* the wait */
	event_waiting.delete(&tid);
	emit(ctx, &e);
	return 0;
}

/* ---- uffd close --------------------------------------------------------- */

/* userfaultfd_release(inode, file) */
int kp_userfaultfd_release(struct pt_regs *ctx)
{
	struct uffdtrace_event e = {};

	init_event(&e, UT_UFFD_CLOSE);
	e.ctx = read_u64(PT_REGS_PARM2(ctx) + OFF_FILE_PRIVATE_DATA);
	if (!followed(e.tgid) && !ctx_followed(e.ctx))
		return 0;
	follow_ctx.delete(&e.ctx);
	uffd_inode.delete(&e.ctx);   /* released: the context may be reused */
	emit(ctx, &e);
	return 0;
}
