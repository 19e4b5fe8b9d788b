/* The in-kernel filter of resolutions. A post-copy destination copies every
 * page with an ioctl of its own, and almost none covers a page a thread
 * waits for. Without --events
 * (EVERY_RECORD), a resolving ioctl is sent to user space only when it can
 * matter to a lifecycle: a fault waits in its range when it starts or
 * returns, or it woke a uffd waiter on the way; the others are counted in
 * `filtered`. UFFDIO_WAKE, MOVE (anon_vma evidence), (UN)REGISTER and API
 * always go out, and so does a range too long to check page by page. */
#ifndef UFFDTRACE_FILTER_H
#define UFFDTRACE_FILTER_H
#include "pages.h"
#include "fold_hooks.h"

BPF_PERCPU_ARRAY(filtered, u64, 1);
#define MAX_CHECKED_PAGES 16

static __always_inline bool filterable(struct ioctl_entry *ie)
{
#ifdef EVERY_RECORD
	return false;
#else
	u32 nr = ie->cmd & 0xff;

	return nr == UT_OP_COPY || nr == UT_OP_ZEROPAGE || nr == UT_OP_CONTINUE || nr == UT_OP_WRITEPROTECT ||
	       nr == UT_OP_POISON;
#endif
}

/* Whether a fault user space must hear about waits in the ioctl's range
 * (true when it cannot tell). at_exit: the ioctl has returned, and a fault
 * folded in the kernel that it did not wake is sent now (waiter_matters). */
static __always_inline bool range_has_waiter(void *ctx, struct ioctl_entry *ie, bool at_exit)
{
	u64 start, len, first;
	bool found = false;

	if (!has_range(ie))
		return false;
	ioctl_range(ie, &start, &len);
	if (len == 0 || len > MAX_CHECKED_PAGES * FILTER_PAGE)
		return true;
	first = start & ~(FILTER_PAGE - 1);
	for (int i = 0; i < MAX_CHECKED_PAGES; i++) {
		struct page_key k = { .uffd = ie->uffd, .page = first + i * FILTER_PAGE };
		u64 *owner;

		if (k.page >= start + len)
			break;
		owner = waiting_pages.lookup(&k);
		if (owner && waiter_matters(ctx, k.uffd, k.page, *owner, at_exit))
			found = true;
	}
	return found;
}

/* At entry: ie->relevant says whether a fault waits in range now. */
static __always_inline void ioctl_entered(void *ctx, struct ioctl_entry *ie)
{
	ie->relevant = !filterable(ie) || range_has_waiter(ctx, ie, false);
}

/* The current thread, inside a uffd ioctl, woke a uffd waiter. */
static __always_inline void ioctl_woke(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct ioctl_entry *ie = in_ioctl.lookup(&tid);

	if (ie)
		ie->relevant = 1;
}

/* At return: relevant at entry, woke someone, or a fault arrived meanwhile. */
static __always_inline bool ioctl_wanted(void *ctx, struct ioctl_entry *ie)
{
	int zero = 0;
	bool waiting = range_has_waiter(ctx, ie, true);  /* first: it sends the folded faults in range */
	u64 *n;

	if (ie->relevant || waiting)
		return true;
	n = filtered.lookup(&zero);
	if (n)
		*n += 1;
	return false;
}

#endif
