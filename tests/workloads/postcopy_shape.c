/* The shape of QEMU's post-copy destination, in rounds: FAULTERS threads
 * touch their share of the area just ahead of a background copier that
 * fills every page in order with UFFDIO_COPY (as the migration stream does),
 * while a fault thread reads each message and copies the page it names,
 * ignoring EEXIST (the background copy won, and its copy woke the faulter).
 * After each round MADV_DONTNEED empties the area for the next.
 *   postcopy_shape [PAGES] [ROUNDS] [FAULTERS]
 * Prints what it did as one JSON line: the messages the fault thread read
 * are the number the tracer must see. */
#include "uffd_common.h"

#define MAX_FAULTERS 16

static int uffd;
static char *area, *src;
static size_t pages;
static volatile int done;

static void *copier_main(void *arg)
{
	size_t *eexist = arg;

	for (size_t i = 0; i < pages; i++)
		if (uffd_copy(uffd, (unsigned long)area + i * page_size(), src, page_size(), 0) == -EEXIST)
			++*eexist;
	return NULL;
}

struct reader {
	pthread_t thread;
	pid_t tid;
	size_t reads, copies, eexist;
};

/* The fault thread: poll with a timeout so that it can stop when told. */
static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };
	struct uffd_msg msg;

	r->tid = tid();
	while (!done) {
		if (poll(&pfd, 1, 10) <= 0)
			continue;
		if (read(uffd, &msg, sizeof(msg)) != sizeof(msg)) {
			if (errno == EAGAIN)
				continue;
			die("read uffd");
		}
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		r->reads++;
		if (uffd_copy(uffd, msg.arg.pagefault.address & ~(page_size() - 1), src, page_size(), 0) == -EEXIST)
			r->eexist++;
		else
			r->copies++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	size_t rounds, faulters, touches = 0, background_eexist = 0;
	struct toucher fs[MAX_FAULTERS] = {};
	struct reader r = {};

	pages = argc > 1 ? strtoul(argv[1], NULL, 0) : 512;
	rounds = argc > 2 ? strtoul(argv[2], NULL, 0) : 20;
	faulters = argc > 3 ? strtoul(argv[3], NULL, 0) : 4;
	if (!faulters || faulters > MAX_FAULTERS || pages < faulters)
		die("bad arguments");
	uffd = uffd_open(O_NONBLOCK, UFFD_FEATURE_THREAD_ID);
	area = uffd_area(uffd, pages * page_size());
	src = malloc(page_size());
	memset(src, 0x5a, page_size());
	if (pthread_create(&r.thread, NULL, reader_main, &r))
		die("pthread_create");
	for (size_t round = 0; round < rounds; round++) {
		pthread_t copier;

		for (size_t i = 0; i < faulters; i++) {
			fs[i].area = area + i * (pages / faulters) * page_size();
			fs[i].pages = pages / faulters;
			if (pthread_create(&fs[i].thread, NULL, toucher_main, &fs[i]))
				die("pthread_create");
		}
		if (pthread_create(&copier, NULL, copier_main, &background_eexist))
			die("pthread_create");
		pthread_join(copier, NULL);
		for (size_t i = 0; i < faulters; i++) {
			pthread_join(fs[i].thread, NULL);
			touches += fs[i].pages;
		}
		if (madvise(area, pages * page_size(), MADV_DONTNEED))
			die("madvise");
	}
	done = 1;
	pthread_join(r.thread, NULL);
	printf("{\"workload\": \"postcopy_shape\", \"pid\": %d, \"reader_tid\": %d, \"pages\": %zu, \"rounds\": %zu, "
	       "\"faulters\": %zu, \"touches\": %zu, \"msgs_read\": %zu, \"reader_copies\": %zu, "
	       "\"reader_eexist\": %zu, \"background_eexist\": %zu}\n",
	       getpid(), r.tid, pages, rounds, faulters, touches, r.reads, r.copies, r.eexist, background_eexist);
	return 0;
}
