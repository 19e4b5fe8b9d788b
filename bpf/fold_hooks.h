/* The two places the folding engine (fold.h, tracepoint mode) hooks into
 * the code both programs share. A program without it (kprobe mode sends
 * every step) gets these defaults: no message is folded, every waiter
 * matters. */
#ifndef UFFDTRACE_FOLD_HOOKS_H
#define UFFDTRACE_FOLD_HOOKS_H

#ifndef UT_FOLD_HOOKS
/* A message of a fault folded in the kernel is counted there (true): no record. */
static __always_inline bool fold_read(void *ctx, struct uffdtrace_event *msg, u64 entered)
{
	return false;
}

/* Whether the fault of the thread waiting on the page (owner) makes the
 * ioctl covering it matter to user space. */
static __always_inline bool waiter_matters(void *ctx, u64 uffd, u64 page, u64 owner, bool at_exit)
{
	return true;
}
#endif

#endif
