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
 * FLAVR_START/FLAVR_END (folio_lock_anon_vma_read), PF_START/PF_END (the
 * page-fault entry, exc_page_fault), APCW (the address of
 * aio_poll_complete_work), all from /proc/kallsyms (0 when absent), and
 * HAVE_PF_TRACEPOINTS (x86 exceptions:page_fault_{user,kernel}), HAVE_IO_PGETEVENTS
 * (4.18+), HAVE_LOCK_CONTENTION (lock:contention_begin, 5.19+).
 *
 * Folding (without --events): a fault's steps are kept in its thread's
 * thread_fault entry instead of being sent one by one. A fault that is read
 * once and woken by the ioctl that resolves its page ends as one LIFECYCLE
 * record when that ioctl returns. Anything else (a second read or round, a
 * wake-up outside a resolving ioctl, a failed or DONTWAKE resolution, a
 * resolution that did not wake it, another thread on the same page) sends
 * what was folded so far as one FAULT_STATE record at that moment, and the
 * fault's later steps go out one by one as before. User space reads the
 * entries of faults folded for longer than --wake-ms (its watchdog), so a
 * fault that nobody reads or wakes is seen all the same.
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
/* Folding: faults woken inside an ioctl, until it returns, and their pages;
 * the registered modes of each uffd; the uffd each thread last closed. */
BPF_HASH(handed_faults, u64, struct fault_entry, 65536);   /* (waker << 32 | woken) -> its fault */
BPF_TABLE("lru_hash", struct page_key, u64, handed_pages, 65536);  /* -> its handed_faults key */
BPF_TABLE("lru_hash", u64, u64, uffd_modes, 65536);   /* LRU: a uffd closed at exit stays */
BPF_TABLE("lru_hash", u32, u64, closing, 4096);
BPF_PERCPU_ARRAY(folded_buf, struct uffdtrace_event, 1);
/* QUIET (--flagged): clean lifecycles and their messages are counted, not
 * sent, unless user space took the fault over (adopted: tid -> raised).
 * Messages of faults dropped because they never waited are counted too. */
BPF_PERCPU_ARRAY(quiet, u64, UT_QUIET_COUNTERS);
BPF_TABLE("lru_hash", u32, u64, adopted, 65536);
/* A fault that ended in the kernel without a record (quietly with QUIET, or
 * dropped because it never waited), until its page faults again (-> its
 * tid): a reader whose hook runs after that end (it took the message before
 * the fault ended) counts its message quietly too, instead of sending a
 * message that no record would match. */
BPF_TABLE("lru_hash", struct page_key, u32, quiet_pages, 65536);
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

/* ---- folding ------------------------------------------------------------ */

#if !defined(EVERY_RECORD) && !defined(NO_FOLD)
#define FOLD 1
#endif
enum fault_reason { REASON_ANY, REASON_MISSING, REASON_WP, REASON_MINOR };

/* Readers on other CPUs count messages into an entry while it is being
 * taken: a consumer seals the count (an atomic or), and a reader that finds
 * it sealed sends its message itself, stamped after the seal and so after
 * the record that carries the count (stamped before it). Which consumer
 * takes a folded fault (its waker, or whoever unfolds it) is decided by a
 * compare-and-swap of its state. Both are BPF atomics (5.12+, "bpf: Add
 * BPF_FETCH field / create atomic_fetch_add instruction", 5ca419f2864a). */

static __always_inline bool count_read(struct fault_entry *fe)
{
	if (!fe->t_read) {
		fe->t_read = bpf_ktime_get_ns();
		fe->reader = current_tid();
	}
	return !(__sync_fetch_and_add(&fe->reads, 1) & UT_READS_SEALED);
}

/* The count as the consumer takes it; later readers find it sealed. */
static __always_inline u64 seal_reads(struct fault_entry *fe)
{
	return __sync_fetch_and_or(&fe->reads, UT_READS_SEALED) & ~UT_READS_SEALED;
}

static __always_inline bool take(struct fault_entry *fe, u64 from, u64 to)
{
	return __sync_val_compare_and_swap(&fe->state, from, to) == from;
}

/* One record for a folded fault (of thread tid), from its entry; ts was
 * taken before the fault was taken, so that whoever lost it stamps later. */
static __always_inline void emit_folded(void *ctx, struct fault_entry *fe, u32 tid, u32 kind, u32 op, u64 ts)
{
	int zero = 0;
	struct uffdtrace_event *e = folded_buf.lookup(&zero);
	u64 reads = seal_reads(fe);

	if (!e)
		return;
	e->ts_ns = ts;
	e->kind = kind;
	e->cpu = bpf_get_smp_processor_id();
	e->tgid = fe->tgid;
	e->tid = tid;
	__builtin_memcpy(e->comm, fe->comm, sizeof(e->comm));
	e->ctx = fe->ctx;
	e->addr = fe->addr;
	e->len = fe->ts;
	e->flags = fe->error_code;
	e->mode = fe->slept;
	e->ret = fe->t_woken;
	e->aux = reads ? fe->t_read : 0;   /* a reader shut out by the seal sends its own */
	e->peer_tid = reads ? fe->reader : 0;
	e->peer2_tid = fe->waker;
	e->count = reads;
	e->op = op | fe->op_bits;
	emit(ctx, e);
}

/* The fault stops folding: what was folded goes out now, the rest as it comes. */
static __always_inline void unfold(void *ctx, struct fault_entry *fe, u32 tid)
{
#ifdef FOLD   /* else nothing folds, and no atomic is compiled in */
	u64 ts = bpf_ktime_get_ns();

	if (take(fe, UT_FE_FOLDING, UT_FE_RAW))
		emit_folded(ctx, fe, tid, UT_FAULT_STATE, 0, ts);
#endif
}

/* User space took thread tid's folded fault over (its watchdog): its end is sent. */
static __always_inline bool taken_over(struct fault_entry *fe, u32 tid)
{
	u64 *raised = adopted.lookup(&tid);

	return raised && *raised == fe->ts;
}

/* A folded fault that never slept in handle_userfault, whose message nobody
 * read, never waited: the kernel had the page without the handler (kprobe
 * mode sees no handle_userfault for it). It ends unreported (true), unless
 * user space took it over or a read raced this (then it goes out). */
static __always_inline bool drop_unwaited(void *ctx, struct fault_entry *fe, u32 tid)
{
#ifdef FOLD
	struct page_key k = {};
	u64 ts;

	if (fe->state != UT_FE_FOLDING || fe->slept || fe->reads || taken_over(fe, tid))
		return false;
	/* Published first: a read that then finds the fault taken counts there. */
	k.ctx = fe->ctx;
	k.page = fe->addr;
	quiet_pages.update(&k, &tid);
	ts = bpf_ktime_get_ns();   /* before the take, as in unfold */
	if (!take(fe, UT_FE_FOLDING, UT_FE_RAW)) {
		quiet_pages.delete(&k);
		return false;
	}
	if (!seal_reads(fe))
		return true;
	quiet_pages.delete(&k);   /* a read raced the drop: the fault goes out, with its count */
	emit_folded(ctx, fe, tid, UT_FAULT_STATE, 0, ts);
#endif
	return false;
}

/* Thread tid's fault on this page, if it is still being folded. */
static __always_inline struct fault_entry *folding(u32 tid, u64 uctx, u64 page)
{
	struct fault_entry *fe = thread_fault.lookup(&tid);

	if (!fe || fe->state != UT_FE_FOLDING || fe->ctx != uctx || fe->addr != page)
		return NULL;
	return fe;
}

/* Why the fault came, as user space derives it (uffdtrace/analysis/lifecycle.py _reason). */
static __always_inline u32 fault_reason(struct fault_entry *fe)
{
	u64 *modes = uffd_modes.lookup(&fe->ctx);
	u64 m = modes ? *modes : 0;

	if (fe->error_code & UT_X86_PF_PROT)
		return (fe->error_code & UT_X86_PF_WRITE) ? REASON_WP : REASON_ANY;
	if (m & UT_REGISTER_MODE_MINOR)
		return (m & UT_REGISTER_MODE_MISSING) ? REASON_ANY : REASON_MINOR;
	return REASON_MISSING;
}

/* Whether the returned ioctl resolved the fault it woke, without DONTWAKE
 * (uffdtrace/analysis/rules.py resolves, and Correlator._attempt's "ok"). */
static __always_inline bool resolved_cleanly(struct ioctl_entry *ie, struct fault_entry *hf, s64 ret)
{
	u32 nr = ie->cmd & 0xff;
	u64 start, len, mode;
	u32 kind, reason;

	if (ret != 0)
		return false;
	ioctl_range(ie, &start, &len);
	start &= ~(FILTER_PAGE - 1);
	if (hf->ctx != ie->ctx || hf->addr < start || hf->addr >= start + len)
		return false;
	mode = (nr == UT_OP_COPY || nr == UT_OP_MOVE) ? ie->in[3] : ie->in[2];
	switch (nr) {
	case UT_OP_COPY:
	case UT_OP_ZEROPAGE:
	case UT_OP_MOVE:
	case UT_OP_POISON:
		kind = REASON_MISSING;
		if (mode & UT_MODE_DONTWAKE)
			return false;
		break;
	case UT_OP_CONTINUE:
		kind = REASON_MINOR;
		if (mode & UT_MODE_DONTWAKE)
			return false;
		break;
	case UT_OP_WRITEPROTECT:
		kind = REASON_WP;
		if (mode & (UT_WP_MODE_WP | UT_WP_MODE_DONTWAKE))
			return false;
		break;
	default:
		return false;
	}
	reason = fault_reason(hf);
	return reason == REASON_ANY || reason == kind;
}

static __always_inline void handed_page_done(struct fault_entry *hf, u64 key)
{
	struct page_key k = { .ctx = hf->ctx, .page = hf->addr };
	u64 *v = handed_pages.lookup(&k);

	if (v && *v == key)
		handed_pages.delete(&k);
}

static __always_inline void count_quiet(int counter, u64 n)
{
	u64 *total = quiet.lookup(&counter);

	if (total)
		__sync_fetch_and_add(total, n);
}

/* With QUIET, a clean lifecycle is only counted (true), unless user
 * space took it over and waits for its end. */
static __always_inline bool quietly_ended(struct fault_entry *hf, u32 tid)
{
#ifdef QUIET
	struct page_key k = { .ctx = hf->ctx, .page = hf->addr };
	u64 reads;

	if (taken_over(hf, tid))
		return false;
	quiet_pages.update(&k, &tid);   /* before the seal: whom it shuts out looks here */
	reads = seal_reads(hf);
	/* Its message was counted: no reader is due. Only the entries a reader
	 * may still look for stay (stale ones would fill the LRU map, whose
	 * eviction is approximate and may then take recent entries). */
	if (reads)
		quiet_pages.delete(&k);
	count_quiet(UT_QUIET_LIFECYCLES, 1);
	count_quiet(UT_QUIET_READS, reads);
	return true;
#else
	return false;
#endif
}

/* A handed fault of thread w went out unfolded: so does the thread's own
 * entry. Still handed, it is no longer folded (its next wait in
 * handle_userfault is a round that user space infers from the wake-up
 * without the page); if the thread waits again already (refault), that
 * wait is the fault's next round, and it goes out now. */
static __always_inline void unfold_thread(void *ctx, struct fault_entry *hf, u32 w)
{
	struct fault_entry *fe = thread_fault.lookup(&w);

	if (!fe || fe->ctx != hf->ctx || fe->addr != hf->addr)
		return;
	if (fe->ts == hf->ts && take(fe, UT_FE_HANDED, UT_FE_RAW))
		return;
	if (fe->op_bits & UT_FOLD_REFAULT)
		unfold(ctx, fe, w);
}

/* The ioctl of thread tid returned: each folded fault it woke ends as one
 * LIFECYCLE record when the ioctl resolved it cleanly, else its FAULT_STATE
 * goes out (and the ioctl's own record after it). */
static __always_inline void settle_woken(void *ctx, struct ioctl_entry *ie, s64 ret, u32 tid)
{
	for (int i = 0; i < MAX_WOKEN; i++) {
		struct fault_entry *hf;
		u64 key;
		u32 w;

		if (i >= ie->nwoken)
			break;
		w = ie->woken[i];
		key = (u64)tid << 32 | w;
		hf = handed_faults.lookup(&key);
		if (!hf)
			continue;
		if (resolved_cleanly(ie, hf, ret)) {
			if (!quietly_ended(hf, w))
				emit_folded(ctx, hf, w, UT_LIFECYCLE, ie->cmd & 0xff, bpf_ktime_get_ns());
		} else {
			emit_folded(ctx, hf, w, UT_FAULT_STATE, 0, bpf_ktime_get_ns());
			ie->relevant = 1;
			unfold_thread(ctx, hf, w);
		}
		handed_page_done(hf, key);
		handed_faults.delete(&key);
	}
}

/* A uffd wake-up of thread pid, whose fault is folded: inside an ioctl, the
 * fault is handed to it (settle_woken); elsewhere it stops folding. True
 * when nothing is to be sent now. */
static __always_inline bool fold_wake(void *ctx, struct fault_entry *fe, u32 pid, u32 via_read)
{
	u32 tid = current_tid();
	struct ioctl_entry *ie = in_ioctl.lookup(&tid);
	u64 *closed = closing.lookup(&tid);
	struct fault_entry *old, *copy;
	struct page_key pk = {};
	u64 key, ts, reads;
	u32 n;

	if (fe->state != UT_FE_FOLDING)
		return false;

	if (!ie || ie->nwoken >= MAX_WOKEN) {
		if (closed && *closed == fe->ctx)
			fe->op_bits |= UT_FOLD_CLOSER;   /* the release of the uffd wakes it */
		unfold(ctx, fe, pid);
		return false;
	}
	ts = bpf_ktime_get_ns();
	if (!take(fe, UT_FE_FOLDING, UT_FE_HANDED))
		return false;
	key = (u64)tid << 32 | pid;
	old = handed_faults.lookup(&key);
	if (old) {
		/* Woken by this ioctl once already: that fault goes out now. */
		emit_folded(ctx, old, pid, UT_FAULT_STATE, 0, bpf_ktime_get_ns());
		ie->relevant = 1;
	}
	fe->t_woken = ts;
	fe->waker = tid;
	fe->op_bits |= via_read ? UT_FOLD_VIA_READ : 0;
	/* The copy is published (handed_pages) before the thread's entry is
	 * sealed, so that a reader the seal shuts out finds the copy; the
	 * entry's count then moves to it. */
	handed_faults.update(&key, fe);
	copy = handed_faults.lookup(&key);
	if (!copy) {   /* no room in the map: it goes out now, taken as it is */
		fe->state = UT_FE_RAW;
		emit_folded(ctx, fe, pid, UT_FAULT_STATE, 0, bpf_ktime_get_ns());
		return false;
	}
	copy->reads = 0;
	pk.ctx = fe->ctx;
	pk.page = fe->addr;
	handed_pages.update(&pk, &key);
	reads = seal_reads(fe);
	if (reads) {
		if (!copy->t_read || fe->t_read < copy->t_read) {
			copy->t_read = fe->t_read;
			copy->reader = fe->reader;
		}
		__sync_fetch_and_add(&copy->reads, reads);
	}
	n = ie->nwoken;
	if (n < MAX_WOKEN)
		ie->woken[n] = pid;
	ie->nwoken = n + 1;
	page_done(fe->ctx, fe->addr, pid);
	return true;
}

/* A message of a folded fault is counted in its entry (true). The thread's
 * entry is tried first, also once handed (until its waker seals it), then the
 * handed copy, then a fault that ended in the kernel without a record. */
static __always_inline bool fold_read(void *ctx, u64 uctx, u64 page, u32 ptid)
{
#ifdef FOLD
	struct page_key k = { .ctx = uctx, .page = page };
	struct fault_entry *fe;
	u32 owner = ptid;
	u64 *key;

	if (!owner) {
		u64 *o = waiting_pages.lookup(&k);

		if (o && *o & PAGE_SHARED)
			return false;
		owner = o ? (u32)*o : 0;
	}
	fe = owner ? thread_fault.lookup(&owner) : NULL;
	if (fe && (fe->state == UT_FE_FOLDING || fe->state == UT_FE_HANDED) && fe->ctx == uctx && fe->addr == page &&
	    count_read(fe))
		return true;
	key = handed_pages.lookup(&k);
	if (key && (!ptid || (u32)*key == ptid)) {
		fe = handed_faults.lookup(key);
		if (fe && fe->ctx == uctx && fe->addr == page && count_read(fe))
			return true;
	}
	u32 *ended = quiet_pages.lookup(&k);

	if (ended && (!ptid || *ended == ptid)) {
		quiet_pages.delete(&k);   /* one message per fault */
		count_quiet(UT_QUIET_READS, 1);
		return true;
	}
	return false;
#else
	return false;
#endif
}

static __always_inline bool waiter_matters(void *ctx, u64 uctx, u64 page, u64 owner, bool at_exit)
{
#ifdef FOLD
	u32 tid = (u32)owner;
	struct fault_entry *fe;

	if (owner & PAGE_SHARED)
		return true;
	fe = folding(tid, uctx, page);
	if (!fe)
		return true;
	if (!at_exit)
		return false;   /* whether the ioctl wakes it is known when it returns */
	unfold(ctx, fe, tid);   /* in its range, not woken by it: both go out */
#endif
	return true;
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
	count_lost(UT_LOST_RANGES_UNTRACKED, 1);  /* faults in this range go unseen */
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
	fill_ioctl_event(&e, ie, args->ret, (u32)ie->ctx);
	in_ioctl.delete(&tid);
	if (e.ret == 0 && e.op == UT_OP_REGISTER) {
		u64 *modes = uffd_modes.lookup(&e.ctx);
		u64 m = e.mode | (modes ? *modes : 0);

		uffd_modes.update(&e.ctx, &m);
		track_range(e.tgid, e.addr, e.len, e.ctx);
	}
	if (e.ret == 0 && e.op == UT_OP_UNREGISTER)
		untrack_ranges(e.tgid, e.addr, e.addr + e.len, 0);
	if (followed(e.tgid))
		emit(args, &e);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	u64 key = uffd_key(current_tgid(), args->fd);

	if (!uffd_fds.lookup(&key))
		return 0;
	uffd_fds.delete(&key);
	uffd_modes.delete(&key);
	closing.update(&tid, &key);
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
	bool same = false, fold = true;

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
	 * whether the previous one slept (see sched_switch). A folded fault goes
	 * out first; the next fault then goes out too, since user space ends
	 * the previous one at it. After a fault handed to its waker's ioctl
	 * (even a retry of the same page), the next one folds: settle_woken
	 * sends the handed one first. */
	last = thread_fault.lookup(&tid);
	if (last) {
		bool dropped = drop_unwaited(ctx, last, tid);

		same = last->ctx == fe.ctx && last->addr == (address & ~0xfffULL);
		/* user space ends an unwoken unfolded fault at the next one */
		fold = dropped || last->state == UT_FE_HANDED || (last->state == UT_FE_RAW && last->t_woken);
		unfold(ctx, last, tid);
		if (!same)
			page_done(last->ctx, last->addr, tid);
		else
			e.len = last->slept;
	}
	if (!fe.ctx) {
		thread_fault.delete(&tid);
		return;
	}
	init_event(&e, UT_FAULT);
	e.ctx = fe.ctx;
	e.addr = address & ~0xfffULL;
	e.aux = address;
	e.flags = error_code;   /* x86: 0x1 present, 0x2 write, 0x4 user */
	fe.ts = e.ts_ns;
	fe.addr = e.addr;
	fe.tgid = tgid;
	fe.error_code = error_code;
	__builtin_memcpy(fe.comm, e.comm, sizeof(fe.comm));
	if (!page_waits(fe.ctx, fe.addr, tid)) {
		/* Another thread waits on this page: a read or a resolution
		 * cannot tell the two apart in the kernel. */
		u64 *owner;
		struct page_key k = { .ctx = fe.ctx, .page = fe.addr };

		owner = waiting_pages.lookup(&k);
		if (owner) {
			u32 other = (u32)*owner;
			struct fault_entry *ofe = folding(other, fe.ctx, fe.addr);

			if (ofe)
				unfold(ctx, ofe, other);
		}
		fold = false;
	}
#ifdef FOLD
	if (fold)
		fe.state = UT_FE_FOLDING;   /* no record: its steps are folded */
#endif
#ifdef FOLD
	{
		struct page_key k = { .ctx = fe.ctx, .page = fe.addr };

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
	struct page_key k = { .ctx = fe->ctx, .page = fe->addr };
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
	fe = thread_fault.lookup(&tid);
	if (!fe || fe->over)
		return 0;
	found = stack_has(args, HU_START, HU_END, PF_START, PF_END);
	if (!(found & 1)) {
		/* Asleep outside any page fault: its fault is over, and this
		 * thread's sleeps and wake-ups are not looked at again until its
		 * next fault. A folded one that never waited is dropped; one that
		 * did is left to its next fault or the watchdog, which end it. */
		if (PF_END && !(found & 2) && (fe->state != UT_FE_FOLDING || drop_unwaited(args, fe, tid))) {
			struct page_key k = { .ctx = fe->ctx, .page = fe->addr };
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
	e.ctx = fe->ctx;
	e.addr = fe->addr;
	e.aux = e.ts_ns - fe->ts;
	/* Again (a thread that shared the page may have left it); shared now: unfold. */
	if (!page_waits(fe->ctx, fe->addr, tid))
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
	found = stack_has(args, UWF_START, UWF_END, WU_START, WU_END);
	if (!(found & 1))
		return 0;   /* not a uffd wake-up (a signal, an unrelated wait) */
#ifdef FOLD
	if (fold_wake(args, fe, pid, found & 2))
		return 0;
#endif
	init_event(&e, UT_WAKE_TASK);   /* after any FAULT_STATE fold_wake sent */
	e.ctx = fe->ctx;
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

	re.ctx = uffd_key(current_tgid(), fd);
	if (!uffd_fds.lookup(&re.ctx) || !followed(current_tgid()))
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

	/* The anon_vma lock is an rwsem taken for read (LCB_F_READ, 0x2 in
	 * include/trace/events/lock.h): spinlocks and writers are not it. */
	if (!(args->flags & 0x2) || !tracked(current_tgid()) ||
	    !(stack_has(args, FLAVR_START, FLAVR_END, 0, 0) & 1))
		return 0;
	init_event(&e, UT_ANON_VMA_LOCK);
	e.ctx = (u64)args->lock_addr;
	e.flags = args->flags;
	e.ret = -1;   /* outcome unknown in this mode */
	emit(args, &e);
	return 0;
}
#endif
