/* Which thread waits on which page of which uffd (PAGE_SHARED: more than
 * one did): what the filter of resolutions and the folding engine look up. */
#ifndef UFFDTRACE_PAGES_H
#define UFFDTRACE_PAGES_H
#include "uffd.h"

struct page_key { u64 uffd; u64 page; };
BPF_TABLE("lru_hash", struct page_key, u64, waiting_pages, 65536);  /* -> waiting tid */
#define FILTER_PAGE 4096ULL
#define PAGE_SHARED (1ULL << 32)

/* Thread tid waits on the page; false when another thread waits there too. */
static __always_inline bool page_waits(u64 uffd, u64 page, u32 tid)
{
	struct page_key k = { .uffd = uffd, .page = page & ~(FILTER_PAGE - 1) };
	u64 *owner = waiting_pages.lookup(&k);
	u64 me = tid;

	if (owner && *owner != me) {
		*owner |= PAGE_SHARED;
		return false;
	}
	waiting_pages.update(&k, &me);
	return true;
}

/* Thread tid stopped waiting on the page. A shared page goes too: the
 * threads still there claim it again when they sleep. */
static __always_inline void page_done(u64 uffd, u64 page, u32 tid)
{
	struct page_key k = { .uffd = uffd, .page = page & ~(FILTER_PAGE - 1) };
	u64 *owner = waiting_pages.lookup(&k);

	if (owner && (*owner == tid || *owner & PAGE_SHARED))
		waiting_pages.delete(&k);
}

#endif
