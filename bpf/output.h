/* Records out to user space: the buffers, the lost counters and a record's
 * common fields. */
#ifndef UFFDTRACE_OUTPUT_H
#define UFFDTRACE_OUTPUT_H
#include <uapi/linux/ptrace.h>
#include "events.h"
#include "read.h"

#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERF_OUTPUT(spill);   /* per-CPU, lock-free: for records the ring refused */
#else
BPF_PERF_OUTPUT(events);
#endif
BPF_PERCPU_ARRAY(lost, u64, UT_LOST_CAUSES);


static __always_inline u32 current_tgid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

static __always_inline u32 current_tid(void)
{
	return (u32)bpf_get_current_pid_tgid();
}

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

#endif
