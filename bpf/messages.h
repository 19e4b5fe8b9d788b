/* The messages a read() of a uffd returned, one READ_MSG record each. */
#ifndef UFFDTRACE_MESSAGES_H
#define UFFDTRACE_MESSAGES_H
#include "uffd.h"
#include "fold_hooks.h"

#ifndef UT_FORK_HOOK
/* Tracepoint mode follows the ranges a FORK or REMAP message moves (uffd_id.h). */
static __always_inline void fork_message_read(u64 uffd, u64 fd)
{
}

static __always_inline void fork_message_read_late(u64 uffd)
{
}

static __always_inline void remap_message_read(u64 uffd)
{
}
#endif

/* One READ_MSG per uffd_msg the reader got (ret bytes at user buf), unless
 * the message's fault is folded in the kernel. */
static __always_inline void emit_messages(void *ctx, struct read_entry *re, s64 ret)
{
	struct uffdtrace_event e = {};
	bool fork_read = false;
	u64 nmsgs;

	if (ret < UFFD_MSG_SIZE)
		return;
	nmsgs = ret / UFFD_MSG_SIZE;
	if (nmsgs > MAX_MSGS_PER_READ)
		count_lost(UT_LOST_MESSAGES_PER_READ, nmsgs - MAX_MSGS_PER_READ);
	init_event(&e, UT_READ_MSG);
	e.ctx = re->uffd;
	e.ret = ret;
	for (int i = 0; i < MAX_MSGS_PER_READ; i++) {
		u64 msg[4] = {};

		if (i >= nmsgs)
			break;
		bpf_probe_read_user(msg, sizeof(msg), (void *)(re->buf + i * UFFD_MSG_SIZE));
		e.mode = msg[0] & 0xff;      /* event: 0x12 = PAGEFAULT */
		e.flags = msg[1];            /* arg.pagefault.flags */
		e.addr = msg[2];             /* arg.pagefault.address */
		e.peer_tid = (u32)msg[3];    /* arg.pagefault.feat.ptid */
		e.aux = i;
		if (e.mode == UT_UFFD_EVENT_PAGEFAULT && fold_read(ctx, &e, re->entered))
			continue;
		if (e.mode == UT_UFFD_EVENT_FORK) {
			fork_message_read(re->uffd, (u32)e.flags);   /* arg.fork.ufd */
			fork_read = true;
		}
		if (e.mode == UT_UFFD_EVENT_REMAP)
			remap_message_read(re->uffd);
		e.ts_ns = bpf_ktime_get_ns();   /* after any FAULT_STATE fold_read sent */
		e.len = e.ts_ns - re->entered;  /* time inside read() */
		emit(ctx, &e);
	}
	if (fork_read)
		fork_message_read_late(re->uffd);   /* outside the loop: one copy of it for the verifier */
}

#endif
