/* Tracepoint mode's folding engine (without --events): a fault's steps are
 * kept in its thread's thread_fault entry instead of being sent one by one. A fault that is read
 * once and woken by the ioctl that resolves its page ends as one LIFECYCLE
 * record when that ioctl returns. Anything else (a second read or round, a
 * wake-up outside a resolving ioctl, a failed or DONTWAKE resolution, a
 * resolution that did not wake it, another thread on the same page) sends
 * what was folded so far as one FAULT_STATE record at that moment, and the
 * fault's later steps go out one by one as before. User space reads the
 * entries of faults folded for longer than --wake-ms (its watchdog), so a
 * fault that nobody reads or wakes is seen all the same.
 */
#ifndef UFFDTRACE_FOLD_H
#define UFFDTRACE_FOLD_H
#include "pages.h"
#ifdef AGGREGATE
#include "aggregate.h"
#endif

#define UT_FOLD_HOOKS 1   /* fold_read and waiter_matters are these, not fold_hooks.h's */

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
 * dropped because it never waited), until its page faults again: a reader
 * whose hook runs after that end (it took the message before the fault
 * ended) counts its message quietly too, instead of sending a message that
 * no record would match. Only a read under way at the end can hold that
 * fault's message: the kernel takes a fault's message off its queue before
 * the fault leaves handle_userfault. A read begun later holds another
 * wait's message, one this mode saw no fault for (get_user_pages, README
 * "Modes"): it goes out, and does not pass for this fault's. */
struct quiet_end {
	u32 tid;
	u32 pad;      /* named, so that an initializer zeroes it */
	u64 ended;    /* ns, published before the fault is taken */
};
BPF_TABLE("lru_hash", struct page_key, struct quiet_end, quiet_pages, 65536);

#if !defined(EVERY_RECORD) && !defined(NO_FOLD)
#define FOLD 1
#endif

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
	e->ctx = fe->uffd;
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

static __always_inline void publish_quiet_end(struct page_key *k, u32 tid, u64 now)
{
	struct quiet_end end = { .tid = tid, .ended = now };

	quiet_pages.update(k, &end);
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
	k.uffd = fe->uffd;
	k.page = fe->addr;
	ts = bpf_ktime_get_ns();   /* before the take, as in unfold */
	publish_quiet_end(&k, tid, ts);
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
static __always_inline struct fault_entry *folding(u32 tid, u64 uffd, u64 page)
{
	struct fault_entry *fe = thread_fault.lookup(&tid);

	if (!fe || fe->state != UT_FE_FOLDING || fe->uffd != uffd || fe->addr != page)
		return NULL;
	return fe;
}

/* Why the fault came, as user space derives it (uffdtrace/analysis/rules.py fault_reason). */
static __always_inline u32 fault_reason(struct fault_entry *fe)
{
	u64 *modes = uffd_modes.lookup(&fe->uffd);
	u64 m = modes ? *modes : 0;

	if (fe->error_code & UT_X86_PF_PROT)
		return (fe->error_code & UT_X86_PF_WRITE) ? UT_REASON_WP : UT_REASON_ANY;
	if (m & UT_REGISTER_MODE_MINOR)
		return (m & UT_REGISTER_MODE_MISSING) ? UT_REASON_ANY : UT_REASON_MINOR;
	return UT_REASON_MISSING;
}

/* Whether the returned ioctl resolved the fault it woke, without DONTWAKE
 * (uffdtrace/analysis/rules.py resolves, and Correlator.attempt's "ok"). */
static __always_inline bool resolved_cleanly(struct ioctl_entry *ie, struct fault_entry *hf, s64 ret)
{
	u32 nr = ie->cmd & 0xff;
	u64 start, len, mode;
	u32 kind, reason;

	if (ret != 0)
		return false;
	ioctl_range(ie, &start, &len);
	start &= ~(FILTER_PAGE - 1);
	if (hf->uffd != ie->uffd || hf->addr < start || hf->addr >= start + len)
		return false;
	mode = (nr == UT_OP_COPY || nr == UT_OP_MOVE) ? ie->in[3] : ie->in[2];
	switch (nr) {
	case UT_OP_COPY:
	case UT_OP_ZEROPAGE:
	case UT_OP_MOVE:
	case UT_OP_POISON:
		kind = UT_REASON_MISSING;
		if (mode & UT_MODE_DONTWAKE)
			return false;
		break;
	case UT_OP_CONTINUE:
		kind = UT_REASON_MINOR;
		if (mode & UT_MODE_DONTWAKE)
			return false;
		break;
	case UT_OP_WRITEPROTECT:
		kind = UT_REASON_WP;
		if (mode & (UT_WP_MODE_WP | UT_WP_MODE_DONTWAKE))
			return false;
		break;
	default:
		return false;
	}
	reason = fault_reason(hf);
	return reason == UT_REASON_ANY || reason == kind;
}

static __always_inline void handed_page_done(struct fault_entry *hf, u64 key)
{
	struct page_key k = { .uffd = hf->uffd, .page = hf->addr };
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

/* With QUIET, a clean lifecycle (resolved by ioctl op at now) is only
 * counted (true), unless user space took it over and waits for its end;
 * with AGGREGATE, summed (aggregate.h), unless there is no room for it. */
static __always_inline bool quietly_ended(struct fault_entry *hf, u32 tid, u32 op, u64 now)
{
#ifdef QUIET
	struct page_key k = { .uffd = hf->uffd, .page = hf->addr };
	u64 reads;

	if (taken_over(hf, tid))
		return false;
#ifdef AGGREGATE
	struct clean_totals *totals = clean_totals_of(hf, fault_reason(hf), op);

	if (!totals)
		return false;
#endif
	publish_quiet_end(&k, tid, now);   /* before the seal: whom it shuts out looks here */
	reads = seal_reads(hf);
	/* Its message was counted: no reader is due. Only the entries a reader
	 * may still look for stay (stale ones would fill the LRU map, whose
	 * eviction is approximate and may then take recent entries). */
	if (reads)
		quiet_pages.delete(&k);
	count_quiet(UT_QUIET_LIFECYCLES, 1);
	count_quiet(UT_QUIET_READS, reads);
#ifdef AGGREGATE
	add_clean(totals, hf, reads, now);
#endif
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

	if (!fe || fe->uffd != hf->uffd || fe->addr != hf->addr)
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
			u64 now = bpf_ktime_get_ns();

			if (!quietly_ended(hf, w, ie->cmd & 0xff, now))
				emit_folded(ctx, hf, w, UT_LIFECYCLE, ie->cmd & 0xff, now);
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
		if (closed && *closed == fe->uffd)
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
	pk.uffd = fe->uffd;
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
	page_done(fe->uffd, fe->addr, pid);
	return true;
}

/* Whether a message with these flags can be the fault's: a write to a
 * present page (the error code's protection and write bits) queues only
 * write-protect messages (uffdtrace/analysis/rules.py message_fits). */
static __always_inline bool message_fits(struct fault_entry *fe, u64 msg_flags)
{
	u32 wp = UT_X86_PF_PROT | UT_X86_PF_WRITE;

	return (fe->error_code & wp) != wp || (msg_flags & UT_PAGEFAULT_FLAG_WP);
}

/* A message of a folded fault is counted in its entry (true). The thread's
 * entry is tried first, also once handed (until its waker seals it), then the
 * handed copy, then a fault that ended in the kernel without a record before
 * the read began (entered). */
static __always_inline bool fold_read(void *ctx, struct uffdtrace_event *msg, u64 entered)
{
#ifdef FOLD
	u64 uffd = msg->ctx, page = msg->addr & ~0xfffULL;
	u32 ptid = msg->peer_tid;
	struct page_key k = { .uffd = uffd, .page = page };
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
	if (fe && (fe->state == UT_FE_FOLDING || fe->state == UT_FE_HANDED) && fe->uffd == uffd && fe->addr == page &&
	    message_fits(fe, msg->flags) && count_read(fe))
		return true;
	key = handed_pages.lookup(&k);
	if (key && (!ptid || (u32)*key == ptid)) {
		fe = handed_faults.lookup(key);
		if (fe && fe->uffd == uffd && fe->addr == page && message_fits(fe, msg->flags) && count_read(fe))
			return true;
	}
	struct quiet_end *end = quiet_pages.lookup(&k);

	if (end && (!ptid || end->tid == ptid) && entered < end->ended) {
		u32 faulter = end->tid;

		quiet_pages.delete(&k);   /* one message per fault */
		count_quiet(UT_QUIET_READS, 1);
#ifdef AGGREGATE
		count_late_read(faulter);
#endif
		return true;
	}
	return false;
#else
	return false;
#endif
}

static __always_inline bool waiter_matters(void *ctx, u64 uffd, u64 page, u64 owner, bool at_exit)
{
#ifdef FOLD
	u32 tid = (u32)owner;
	struct fault_entry *fe;

	if (owner & PAGE_SHARED)
		return true;
	fe = folding(tid, uffd, page);
	if (!fe)
		return true;
	if (!at_exit)
		return false;   /* whether the ioctl wakes it is known when it returns */
	unfold(ctx, fe, tid);   /* in its range, not woken by it: both go out */
#endif
	return true;
}

#endif
