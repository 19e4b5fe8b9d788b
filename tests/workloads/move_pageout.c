/* UFFDIO_MOVE (6.8+) while MADV_PAGEOUT forces rmap walks on the same
 * folios: faults on dst are resolved by moving pages from src, and a third
 * thread keeps paging both areas out (try_to_unmap -> rmap_walk_anon ->
 * folio_lock_anon_vma_read). Needs swap for pageout to unmap anon pages. */
#include "uffd_common.h"

static volatile int done;
static char *src_area, *dst_area;
static size_t npages;

static void *pageout_main(void *arg)
{
	long *rounds = arg;

	while (!done) {
		madvise(src_area, npages * page_size(), MADV_PAGEOUT);
		madvise(dst_area, npages * page_size(), MADV_PAGEOUT);
		(*rounds)++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	npages = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
	int uffd = uffd_open(O_NONBLOCK, UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_MOVE);
	struct toucher t;
	pthread_t pager;
	long rounds = 0;
	size_t moves = 0;
	struct uffd_msg msg;

	src_area = mmap(NULL, npages * page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src_area == MAP_FAILED)
		die("mmap");
	madvise(src_area, npages * page_size(), MADV_NOHUGEPAGE);
	memset(src_area, 0x5a, npages * page_size());
	dst_area = uffd_area(uffd, npages * page_size());
	t = (struct toucher){ .area = dst_area, .pages = npages };
	if (pthread_create(&pager, NULL, pageout_main, &rounds))
		die("pthread_create");
	if (pthread_create(&t.thread, NULL, toucher_main, &t))
		die("pthread_create");
	while (moves < npages) {
		unsigned long dst;
		struct uffdio_move mv;

		uffd_read_msg(uffd, &msg);
		dst = msg.arg.pagefault.address;
		mv = (struct uffdio_move){ .dst = dst, .src = (unsigned long)src_area + (dst - (unsigned long)dst_area),
					   .len = page_size(), .mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES };
		if (ioctl(uffd, UFFDIO_MOVE, &mv) && errno != EEXIST)
			die("UFFDIO_MOVE");
		moves++;
	}
	pthread_join(t.thread, NULL);
	done = 1;
	pthread_join(pager, NULL);
	printf("{\"workload\": \"move_pageout\", \"pid\": %d, \"handler_tid\": %d, \"faulter_tid\": %d, "
	       "\"pages\": %zu, \"moves\": %zu, \"pageout_rounds\": %ld}\n",
	       getpid(), tid(), t.tid, npages, moves, rounds);
	return 0;
}
