/* Tracepoint mode: non-cooperative events (UFFD_FEATURE_EVENT_REMOVE,
 * _UNMAP, _REMAP, _FORK). A thread in madvise, munmap, mremap or fork on
 * registered memory queues an event and sleeps in
 * userfaultfd_event_wait_completion until a handler reads it; meanwhile
 * every UFFDIO_COPY/ZEROPAGE/CONTINUE/MOVE on that uffd fails with EAGAIN
 * (mmap_changing). Only the calls of processes that use userfaultfd are
 * kept; the first sleep with that function on the stack (EVENT_WAIT_START,
 * _END: kallsyms) raises the event (EVENT_WAIT), the call's return ends it
 * (EVENT_DONE). Which uffd it went to is in the handler's read.
 * HAVE_EVENT_WAITS: the syscall tracepoints exist; HAVE_CLONE3: 5.3+. */
#ifndef UFFDTRACE_EVENT_WAITS_H
#define UFFDTRACE_EVENT_WAITS_H
#include "ranges.h"
#include "stacks.h"

#ifdef HAVE_EVENT_WAITS
#define MADV_DONTNEED 4
#define MADV_FREE 8
#define MADV_REMOVE 9
#define MADV_DONTNEED_LOCKED 24

/* entered: the call began; waited: its first sleep in the event wait (0: none yet). */
struct event_call { u64 entered; u64 start; u64 len; u64 waited; u32 event; u32 pad; };
BPF_HASH(event_calls, u32, struct event_call, 65536);

static __always_inline void event_call_enter(u32 event, u64 start, u64 len)
{
	struct event_call c = { .entered = bpf_ktime_get_ns(), .start = start, .len = len, .event = event };
	u32 tid = current_tid();

	if (tracked(current_tgid()))
		event_calls.update(&tid, &c);
}

static __always_inline void event_record(struct uffdtrace_event *e, u32 kind, struct event_call *c)
{
	init_event(e, kind);
	e->addr = c->start;
	e->len = c->len;
	e->mode = c->event;
}

/* The caller sleeps: inside the event wait, its event is raised now. */
static __always_inline void event_call_sleeps(void *ctx, u32 tid)
{
	struct uffdtrace_event e = {};
	struct event_call *c = event_calls.lookup(&tid);

	if (!c || c->waited || !(stack_has(ctx, EVENT_WAIT_START, EVENT_WAIT_END, 0, 0, 1) & 1))
		return;
	event_record(&e, UT_EVENT_WAIT, c);
	c->waited = e.ts_ns;
	e.aux = e.ts_ns - c->entered;   /* inside the call before the wait */
	emit(ctx, &e);
}

/* A fork that returned before its FORK message's read did: the reader's
 * read wakes the forker before it returns, and on another CPU the fork may
 * return first. Parent's uffd -> the fork; the read finishes it. */
struct fork_unread { u32 parent; u32 child; u64 since; };
BPF_TABLE("lru_hash", u64, struct fork_unread, forks_unread, 4096);

/* The parent's fork returned the child: the child's memory is registered as
 * the parent's was, on the uffds the FORK messages gave it; a range whose
 * message is not read yet waits in forks_unread. */
static __always_inline void fork_ranges(u32 parent, u32 child, u64 since)
{
	struct range_set *from = ranges.lookup(&parent), *to = ranges.lookup(&child);
	int zero = 0;
	struct range_set *empty = empty_ranges.lookup(&zero);
	u8 one = 1;

	if (!from || !empty)
		return;
	for (int i = 0; i < MAX_RANGES; i++) {
		struct fork_entry *f;

		if (!from->end[i])
			continue;
		f = forked.lookup(&from->uffd[i]);
		if (!f || f->ts < since) {
			struct fork_unread u = { .parent = parent, .child = child, .since = since };

			forks_unread.update(&from->uffd[i], &u);
			continue;
		}
		if (!to) {
			ranges.update(&child, empty);
			to = ranges.lookup(&child);
			if (!to)
				return;
			uffd_users.update(&child, &one);
		}
		to->start[i] = from->start[i];
		to->end[i] = from->end[i];
		to->uffd[i] = f->uffd;
		uffd_owner.update(&f->uffd, &child);
	}
}

/* The FORK message of the parent's uffd was read after the fork returned:
 * the child gets the parent's ranges on that uffd, on the child's uffd. It
 * runs in the read's exit, beside folding, so it has one branch per range
 * (fork_ranges' two made that program too large for the verifier). A fork
 * that fails after its message went out (a stale uffd, see userfaultfd(2)
 * BUGS) never returns a child, so never waits here. */
static __always_inline void fork_message_read_late(u64 uffd)
{
	struct fork_unread *u = forks_unread.lookup(&uffd);
	struct fork_entry *f = forked.lookup(&uffd);
	struct range_set *from, *to;
	int zero = 0;
	struct range_set *empty = empty_ranges.lookup(&zero);
	u32 parent, child;
	u8 one = 1;

	if (!u || !f || !empty)
		return;
	parent = u->parent;
	child = u->child;
	forks_unread.delete(&uffd);
	from = ranges.lookup(&parent);
	if (!from)
		return;
	to = ranges.lookup(&child);
	if (!to) {
		ranges.update(&child, empty);
		to = ranges.lookup(&child);
		if (!to)
			return;
	}
	uffd_users.update(&child, &one);
	uffd_owner.update(&f->uffd, &child);
	for (int i = 0; i < MAX_RANGES; i++) {
		if (from->uffd[i] != uffd || !from->end[i])
			continue;
		to->start[i] = from->start[i];
		to->end[i] = from->end[i];
		to->uffd[i] = f->uffd;
	}
}

/* mremap moved [from, from + len) to `to`: a registered range inside it
 * moves along when a REMAP event went out (UFFD_FEATURE_EVENT_REMAP), and
 * loses its registration otherwise (mremap_userfaultfd_prep). */
static __always_inline void remap_ranges(u32 tgid, u64 from, u64 len, u64 to, bool evented)
{
	struct range_set *rs = ranges.lookup(&tgid);

	if (!rs)
		return;
	for (int i = 0; i < MAX_RANGES; i++) {
		if (!rs->end[i] || rs->start[i] < from || rs->end[i] > from + len)
			continue;
		if (evented) {
			rs->start[i] = rs->start[i] - from + to;
			rs->end[i] = rs->end[i] - from + to;
		} else {
			rs->end[i] = 0;
		}
	}
}

static __always_inline void event_call_exit(void *ctx, s64 ret)
{
	struct uffdtrace_event e = {};
	u32 tid = current_tid();
	struct event_call *c = event_calls.lookup(&tid);

	if (!c)
		return;
	if (c->event == UT_UFFD_EVENT_FORK && ret > 0)
		fork_ranges(current_tgid(), ret, c->entered);
	if (c->event == UT_UFFD_EVENT_REMAP && ret > 0 && (u64)ret != c->start) {
		u32 tgid = current_tgid();
		u64 *read = remapped.lookup(&tgid);

		remap_ranges(tgid, c->start, c->len, ret, c->waited || (read && *read >= c->entered));
	}
	if (c->event == UT_UFFD_EVENT_UNMAP && ret == 0)
		untrack_ranges(current_tgid(), c->start, c->start + c->len, 0);   /* gone with the mapping */
	if (c->waited) {
		event_record(&e, UT_EVENT_DONE, c);
		e.ret = ret;
		e.aux = e.ts_ns - c->waited;   /* the wait */
		emit(ctx, &e);
	}
	event_calls.delete(&tid);
}

TRACEPOINT_PROBE(syscalls, sys_enter_madvise)
{
	int advice = args->behavior;

	if (advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE || advice == MADV_DONTNEED_LOCKED)
		event_call_enter(UT_UFFD_EVENT_REMOVE, args->start, args->len_in);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_madvise)
{
	event_call_exit(args, args->ret);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_munmap)
{
	event_call_enter(UT_UFFD_EVENT_UNMAP, args->addr, args->len);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_munmap)
{
	event_call_exit(args, args->ret);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_mremap)
{
	event_call_enter(UT_UFFD_EVENT_REMAP, args->addr, args->old_len);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_mremap)
{
	event_call_exit(args, args->ret);
	return 0;
}

/* fork(): glibc calls clone; the child returns too, with no entry. A clone
 * that shares the memory (CLONE_VM: a thread, vfork) copies no mm, so it
 * raises no FORK event and must not wait in forks_unread. */
#define UT_CLONE_VM 0x00000100ULL
TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
	if (!(args->clone_flags & UT_CLONE_VM))
		event_call_enter(UT_UFFD_EVENT_FORK, 0, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_clone)
{
	event_call_exit(args, args->ret);
	return 0;
}

#ifdef HAVE_CLONE3
TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
	u64 flags = 0;

	/* clone_args.flags, its first field; a failed read leaves 0: a fork */
	bpf_probe_read_user(&flags, sizeof(flags), args->uargs);
	if (!(flags & UT_CLONE_VM))
		event_call_enter(UT_UFFD_EVENT_FORK, 0, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_clone3)
{
	event_call_exit(args, args->ret);
	return 0;
}
#endif
#else
static __always_inline void event_call_sleeps(void *ctx, u32 tid)
{
}

static __always_inline void fork_message_read_late(u64 uffd)
{
}
#endif

#endif
