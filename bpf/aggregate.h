/* serve and top (AGGREGATE, with QUIET): a clean lifecycle (fold.h) is
 * summed here instead of being sent, as user space would have counted it
 * (uffdtrace/sinks/prometheus.py, sinks/top.py): per (process, comm, uffd,
 * reason, op), its fault, its messages, and histograms of its pickup
 * (raised to read), service (read to resolved) and whole-fault (raised to
 * woken) times. Its wake-up came inside the resolving ioctl: user space
 * counts 0 for it. User space reads the map once a second and deletes the
 * keys of processes that have exited. */
#ifndef UFFDTRACE_AGGREGATE_H
#define UFFDTRACE_AGGREGATE_H
#include "uffd.h"

struct clean_key {
	char comm[16];
	u64 uffd;
	u32 tgid;
	u32 reason;   /* enum uffdtrace_reason */
	u32 op;       /* UT_OP_* of the resolving ioctl; 0: messages only (count_late_read) */
	u32 pad;      /* named, so that an initializer zeroes it (hash keys are bytes) */
};

struct clean_totals {
	u64 faults;
	u64 woken;        /* of the faults, those with their wake-up seen */
	u64 reads;
	u64 last_ns;      /* when the last one ended */
	u64 pickup_ns;    /* sums of the histograms' values */
	u64 service_ns;
	u64 fault_ns;
	u64 pickup[UT_HIST_BOUNDS + 1];
	u64 service[UT_HIST_BOUNDS + 1];
	u64 fault[UT_HIST_BOUNDS + 1];
};

BPF_HASH(clean_totals, struct clean_key, struct clean_totals, 4096);
BPF_ARRAY(clean_zero, struct clean_totals, 1);   /* all zero: the first value of a key */

/* The totals of fault fe's (process, comm, uffd) and (reason, op), made
 * on first use; NULL when the map is full (the caller then sends its
 * record: nothing is dropped). */
static __always_inline struct clean_totals *clean_totals_of(struct fault_entry *fe, u32 reason, u32 op)
{
	struct clean_key k = { .uffd = fe->uffd, .tgid = fe->tgid, .reason = reason, .op = op };
	struct clean_totals *t, *zero_value;
	int zero = 0;

	__builtin_memcpy(k.comm, fe->comm, sizeof(k.comm));
	t = clean_totals.lookup(&k);
	if (t)
		return t;
	zero_value = clean_zero.lookup(&zero);
	if (!zero_value)
		return NULL;
	clean_totals.insert(&k, zero_value);   /* NOEXIST: another CPU's first value stays */
	return clean_totals.lookup(&k);
}

/* The bucket of a value: the first i with ns <= 1000 << i, else the last.
 * That is the bit length of v = ceil(ns / 1000) - 1, found by halving
 * (a loop that breaks out early is not unrolled by LLVM). */
static __always_inline u32 hist_bucket(u64 ns)
{
	u64 v = ns ? (ns - 1) / 1000 : 0;
	u32 i = 0;

	if (v >> 32) { v >>= 32; i += 32; }
	if (v >> 16) { v >>= 16; i += 16; }
	if (v >> 8) { v >>= 8; i += 8; }
	if (v >> 4) { v >>= 4; i += 4; }
	if (v >> 2) { v >>= 2; i += 2; }
	if (v >> 1) { v >>= 1; i += 1; }
	i += v;   /* 0 or 1 by now */
	return i < UT_HIST_BOUNDS ? i : UT_HIST_BOUNDS;
}

static __always_inline void hist_add(u64 *hist, u64 *sum, u64 ns)
{
	u32 i = hist_bucket(ns);

	/* LLVM knows i <= UT_HIST_BOUNDS and drops the check, and 6.1's
	 * verifier cannot follow the bit-length arithmetic that bounds it
	 * ("R4 unbounded memory access"): the empty asm hides i from LLVM. */
	asm volatile("" : "+r"(i));
	if (i > UT_HIST_BOUNDS)
		return;
	__sync_fetch_and_add(&hist[i], 1);
	__sync_fetch_and_add(sum, ns);
}

/* A clean lifecycle of fault fe, resolved at `now` by the ioctl that woke
 * it, with `reads` messages (as sinks/prometheus.py reads a LIFECYCLE
 * record: analysis/folded.py _finished and analysis/model.py latencies). */
static __always_inline void add_clean(struct clean_totals *t, struct fault_entry *fe, u64 reads, u64 now)
{
	u64 end;

	__sync_fetch_and_add(&t->faults, 1);
	if (reads)
		__sync_fetch_and_add(&t->reads, reads);
	if (reads && fe->t_read) {
		if (fe->t_read >= fe->ts)
			hist_add(t->pickup, &t->pickup_ns, fe->t_read - fe->ts);
		if (now >= fe->t_read)
			hist_add(t->service, &t->service_ns, now - fe->t_read);
	}
	if (fe->t_woken)
		__sync_fetch_and_add(&t->woken, 1);
	end = fe->t_woken ? fe->t_woken : now;
	if (end >= fe->ts)
		hist_add(t->fault, &t->fault_ns, end - fe->ts);
	t->last_ns = now;
}

/* A message of a fault that ended quietly, read after its end: counted for
 * the thread that faulted (while its entry says). */
static __always_inline void count_late_read(u32 tid)
{
	struct fault_entry *fe = thread_fault.lookup(&tid);
	struct clean_totals *t;

	if (!fe)
		return;
	t = clean_totals_of(fe, UT_REASON_ANY, 0);
	if (t)
		__sync_fetch_and_add(&t->reads, 1);
}

#endif
