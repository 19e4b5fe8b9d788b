/* Stack attribution: tracepoint mode reads no kernel struct, so it tells a
 * uffd sleep or wake-up from any other by the functions on the kernel
 * stack, as address ranges from /proc/kallsyms (-D *_START / *_END). */
#ifndef UFFDTRACE_STACKS_H
#define UFFDTRACE_STACKS_H
#include "output.h"

#define MAX_STACK 32
#define NEAR_STACK 6   /* the frames a first, cheaper walk unwinds */

struct stack { u64 ip[MAX_STACK]; };
BPF_PERCPU_ARRAY(stack_buf, struct stack, 1);

/* Bit 0: one of the first n frames is in [a_start, a_end); bit 1: one is in [b_start, b_end). */
static __always_inline u32 frames_in(struct stack *st, long n, u64 a_start, u64 a_end, u64 b_start, u64 b_end)
{
	u32 found = 0;

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

/* Bit 0: a frame of the kernel stack in [a_start, a_end); bit 1: one in
 * [b_start, b_end). A walk costs by the frames it unwinds, and the frames
 * looked for are mostly the second to fourth (try_to_wake_up <
 * userfaultfd_wake_function < __wake_up_common < __wake_up; __schedule <
 * schedule < handle_userfault): the NEAR_STACK top frames first, and the
 * whole stack only when a bit of ``needed`` is still missing and the stack
 * goes on. Either way the bits of ``needed`` are those of the whole stack. */
static __always_inline u32 stack_has(void *ctx, u64 a_start, u64 a_end, u64 b_start, u64 b_end, u32 needed)
{
	int zero = 0;
	struct stack *st = stack_buf.lookup(&zero);
	u32 found;
	long n;

	if (!st)
		return 0;
	n = bpf_get_stack(ctx, st->ip, NEAR_STACK * sizeof(u64), 0);
	if (n <= 0)
		return 0;
	found = frames_in(st, n, a_start, a_end, b_start, b_end);
	if ((found & needed) == needed || n < NEAR_STACK * (long)sizeof(u64))
		return found;
	n = bpf_get_stack(ctx, st->ip, sizeof(st->ip), 0);
	return n > 0 ? frames_in(st, n, a_start, a_end, b_start, b_end) : 0;
}

#endif
