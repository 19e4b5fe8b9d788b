/* Records out to user space: the buffers, the lost counters, a record's
 * common fields, and the safe readers every probe reads memory with. */
#ifndef UFFDTRACE_OUTPUT_H
#define UFFDTRACE_OUTPUT_H
#include <uapi/linux/ptrace.h>
#include "events.h"

#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERF_OUTPUT(spill);   /* per-CPU, lock-free: for records the ring refused */
#else
BPF_PERF_OUTPUT(events);
#endif
BPF_PERCPU_ARRAY(lost, u64, UT_LOST_CAUSES);

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
