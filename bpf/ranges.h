/* What tracepoint mode knows in place of the VMAs: the ranges registered on
 * each uffd, per process whose memory they are (uffd_id.h names the uffd).
 * Only processes known to use userfaultfd (uffd_users: filled when a uffd is
 * created, and from /proc at start) are looked at beyond one map lookup. */
#ifndef UFFDTRACE_RANGES_H
#define UFFDTRACE_RANGES_H
#include "uffd.h"

#define MAX_RANGES 16

/* Registered ranges of one process: [start, end) belonging to uffd ctx. */
struct range_set {
	u64 start[MAX_RANGES];
	u64 end[MAX_RANGES];
	u64 uffd[MAX_RANGES];
};

BPF_HASH(ranges, u32, struct range_set, 16384);
BPF_ARRAY(empty_ranges, struct range_set, 1);      /* all zero: template for new entries */

static __always_inline bool tracked(u32 tgid)
{
	return uffd_users.lookup(&tgid) != NULL && followed(tgid);
}

/* The uffd whose registered range holds the address (0: none). */
static __always_inline u64 range_uffd(struct range_set *rs, u64 address)
{
	for (int i = 0; i < MAX_RANGES; i++) {
		if (address >= rs->start[i] && address < rs->end[i])
			return rs->uffd[i];
	}
	return 0;
}

static __always_inline void track_range(u32 tgid, u64 start, u64 len, u64 uffd)
{
	int zero = 0;
	struct range_set *empty = empty_ranges.lookup(&zero);
	struct range_set *rs;

	if (!empty)
		return;
	ranges.insert(&tgid, empty);
	rs = ranges.lookup(&tgid);
	if (!rs)
		return;
	for (int i = 0; i < MAX_RANGES; i++) {
		if (rs->end[i] == 0) {
			rs->start[i] = start;
			rs->end[i] = start + len;
			rs->uffd[i] = uffd;
			return;
		}
	}
	count_lost(UT_LOST_RANGES_UNTRACKED, 1);  /* faults in this range go unseen */
}

static __always_inline void untrack_ranges(u32 tgid, u64 start, u64 end, u64 uffd)
{
	struct range_set *rs = ranges.lookup(&tgid);

	if (!rs)
		return;
	for (int i = 0; i < MAX_RANGES; i++) {
		bool inside = rs->start[i] >= start && rs->end[i] <= end;

		if (rs->end[i] && (inside || (uffd && rs->uffd[i] == uffd)))
			rs->end[i] = 0;
	}
}

#endif
