/* UFFDIO_MOVE (6.8+) racing an rmap walk that holds no folio lock: the main
 * thread moves PAGES pages back and forth between two uffd-registered areas
 * (every move points the folio at the other area's anon_vma:
 * folio_move_anon_rmap), while another thread keeps marking the same folios
 * idle through /sys/kernel/mm/page_idle/bitmap (page_idle_clear_pte_refs
 * walks an anon folio's rmap without locking it, through
 * folio_lock_anon_vma_read, which must retry when a move changed the folio's
 * anon_vma under it). A moved page keeps its folio, so the PFNs read once
 * from /proc/self/pagemap (root) stay right.
 *   move_idle [PAGES] [ROUNDS]
 * Prints one JSON line; exits 77 when UFFDIO_MOVE or page_idle is missing. */
#include "uffd_common.h"

static volatile int done;
static uint64_t *pfns;
static size_t npages;
static long idle_writes;

static void *idle_main(void *arg)
{
	int fd = *(int *)arg;

	while (!done)
		for (size_t i = 0; i < npages && !done; i++) {
			uint64_t bit = 1ULL << (pfns[i] % 64);

			if (pwrite(fd, &bit, sizeof(bit), (off_t)(pfns[i] / 64 * 8)) == sizeof(bit))
				idle_writes++;
		}
	return NULL;
}

static void register_area(int uffd, char *at, size_t len)
{
	struct uffdio_register reg = { .range = { (unsigned long)at, len }, .mode = UFFDIO_REGISTER_MODE_MISSING };

	if (mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
		die("mmap");
	madvise(at, len, MADV_NOHUGEPAGE);
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		die("UFFDIO_REGISTER");
}

/* Move the whole range, again where a move gave up part way (EAGAIN, EBUSY). */
static long move_all(int uffd, char *dst, char *src, size_t len)
{
	long retries = 0;
	size_t moved = 0;

	while (moved < len) {
		struct uffdio_move mv = { .dst = (unsigned long)dst + moved, .src = (unsigned long)src + moved,
					  .len = len - moved };

		if (ioctl(uffd, UFFDIO_MOVE, &mv) == 0) {
			moved = len;
		} else if (errno == EAGAIN || errno == EBUSY) {
			moved += mv.move > 0 ? (size_t)mv.move : 0;
			retries++;
		} else {
			die("UFFDIO_MOVE");
		}
	}
	return retries;
}

int main(int argc, char **argv)
{
	size_t rounds, len;
	int uffd = uffd_open(O_NONBLOCK, UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_MOVE);
	int idle = open("/sys/kernel/mm/page_idle/bitmap", O_RDWR | O_CLOEXEC);
	int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	char *a, *b, *src;
	pthread_t walker;
	long retries = 0;

	npages = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
	rounds = argc > 2 ? strtoul(argv[2], NULL, 0) : 2000;
	len = npages * page_size();
	if (idle < 0) {
		printf("{\"skip\": \"no /sys/kernel/mm/page_idle/bitmap (CONFIG_IDLE_PAGE_TRACKING)\"}\n");
		return 77;
	}
	if (pagemap < 0)
		die("open pagemap");
	/* Two areas with a PROT_NONE page between them: side by side they would
	 * merge into one VMA with one anon_vma, and a move would change nothing. */
	a = mmap(NULL, 2 * len + page_size(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		die("mmap");
	b = a + len + page_size();
	register_area(uffd, a, len);
	register_area(uffd, b, len);
	src = malloc(len);
	memset(src, 0x5a, len);
	/* Pages of its own for every address of a (a zero page could not move). */
	if (ioctl(uffd, UFFDIO_COPY, &(struct uffdio_copy){ .dst = (unsigned long)a, .src = (unsigned long)src,
							    .len = len }))
		die("UFFDIO_COPY");
	pfns = calloc(npages, sizeof(*pfns));
	for (size_t i = 0; i < npages; i++) {
		uint64_t entry;

		if (pread(pagemap, &entry, sizeof(entry), (off_t)(((unsigned long)a / page_size() + i) * 8)) !=
		    sizeof(entry))
			die("pread pagemap");
		pfns[i] = entry & ((1ULL << 55) - 1);
		if (!(entry >> 63) || !pfns[i]) {
			printf("{\"skip\": \"no PFN in /proc/self/pagemap (needs root)\"}\n");
			return 77;
		}
	}
	if (pthread_create(&walker, NULL, idle_main, &idle))
		die("pthread_create");
	for (size_t r = 0; r < rounds; r++) {
		retries += move_all(uffd, b, a, len);
		retries += move_all(uffd, a, b, len);
	}
	done = 1;
	pthread_join(walker, NULL);
	printf("{\"workload\": \"move_idle\", \"pid\": %d, \"mover_tid\": %d, \"pages\": %zu, \"rounds\": %zu, "
	       "\"moves\": %zu, \"move_retries\": %ld, \"idle_writes\": %ld}\n",
	       getpid(), tid(), npages, rounds, 2 * rounds, retries, idle_writes);
	return 0;
}
