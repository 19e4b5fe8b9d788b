/* Which processes are traced (-p PID, a command and its children: FILTER)
 * and which uffds belong to them, so that a handler in another process is
 * seen too. Without FILTER every process is followed. */
#ifndef UFFDTRACE_FOLLOW_H
#define UFFDTRACE_FOLLOW_H
#include "output.h"

/* Processes being traced (FILTER), and uffd contexts / aio requests that
 * belong to them, so that handlers in other processes are seen too. */
BPF_HASH(follow, u32, u8, 65536);
BPF_HASH(follow_ctx, u64, u8, 65536);
BPF_HASH(uffd_users, u32, u8, 65536);
/* The tgid whose children are followed (uffdtrace itself, for a command):
 * a map, not a define, so that the compiled program does not change with
 * the tracer's pid (the cache of compiled programs, docs/architecture.md). */
BPF_ARRAY(spawn_parent, u32, 1);

static __always_inline bool followed(u32 tgid)
{
#ifdef FILTER
	return follow.lookup(&tgid) != NULL;
#else
	return true;
#endif
}

static __always_inline bool ctx_followed(u64 uffd)
{
#ifdef FILTER
	return follow_ctx.lookup(&uffd) != NULL;
#else
	return true;
#endif
}

/* A followed process's uffd is followed from its first UFFDIO_API or
 * REGISTER on (its handler may live in another process); another
 * process's ioctls on its own uffd leave both out. */
static __always_inline void mark_user(u32 tgid, u64 uffd)
{
	u8 one = 1;

	if (!followed(tgid))
		return;
	uffd_users.update(&tgid, &one);
	if (uffd)
		follow_ctx.update(&uffd, &one);
}

/* ---- process following ---------------------------------------------- */

#ifdef FILTER
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent = current_tgid();
	u32 child = args->child_pid;
	u32 zero = 0;
	u32 *spawner = spawn_parent.lookup(&zero);
	u8 one = 1;

	if ((spawner && parent == *spawner) || follow.lookup(&parent))
		follow.update(&child, &one);
	return 0;
}
#endif

#endif
