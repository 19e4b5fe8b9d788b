/* Stack attribution: tracepoint mode reads no kernel struct, so it tells a
 * uffd sleep or wake-up from any other by the functions on the kernel
 * stack, as address ranges from /proc/kallsyms (-D *_START / *_END). */
#ifndef UFFDTRACE_STACKS_H
#define UFFDTRACE_STACKS_H
#include "output.h"

#define MAX_STACK 32

struct stack { u64 ip[MAX_STACK]; };
BPF_PERCPU_ARRAY(stack_buf, struct stack, 1);

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

#endif
