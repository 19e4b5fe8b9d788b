/* A fault that races the UNREGISTER of its range. Each round registers a
 * fresh page; a faulting thread touches it while this thread unregisters it
 * after a random spin. The UNREGISTER wakes the faults of the range "so they
 * will not hang permanently" (fs/userfaultfd.c), then clears the VMA's uffd;
 * a fault woken by it faults again without the uffd and returns. It wakes
 * before it write-locks the VMA, and since v6.6 a uffd fault holds only its
 * VMA's lock, not mmap_lock: a fault can queue after that wake-up, and then
 * nothing wakes it. Not back after WAIT_MS and asleep in handle_userfault
 * (its wchan), it counts as stranded, and this thread frees it with
 * UFFDIO_WAKE. Messages are read and dropped (nobody resolves a page here).
 *
 * unregister_race [ROUNDS] [WAIT_MS] [MAX_STRANDED]: stops after
 * MAX_STRANDED stranded rounds (default: never); one JSON line, with the
 * stranded rounds' pages. */
#include "uffd_common.h"   /* first: it defines _GNU_SOURCE */
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

static atomic_long go, done;
static char *volatile page;
static pid_t faulter_tid;

static void *fault_each_round(void *arg)
{
	long rounds = *(long *)arg;
	unsigned long sum = 0;

	faulter_tid = tid();
	for (long r = 1; r <= rounds; r++) {
		while (atomic_load(&go) != r)
			if (atomic_load(&go) < 0)
				return NULL;
		sum += (unsigned char)page[0];
		atomic_store(&done, r);
	}
	return (void *)sum;
}

static bool in_userfault(void)
{
	char path[64], wchan[64] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", faulter_tid);
	f = fopen(path, "r");
	if (!f)
		die("%s", path);
	if (!fgets(wchan, sizeof(wchan), f))
		wchan[0] = 0;
	fclose(f);
	return strcmp(wchan, "handle_userfault") == 0;
}

static long ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void drain(int uffd)
{
	struct uffd_msg msg;

	while (read(uffd, &msg, sizeof(msg)) == sizeof(msg))
		;
}

int main(int argc, char **argv)
{
	long rounds = argc > 1 ? strtol(argv[1], NULL, 0) : 2000;
	long wait_ms = argc > 2 ? strtol(argv[2], NULL, 0) : 200;
	long max_stranded = argc > 3 ? strtol(argv[3], NULL, 0) : 0;
	int uffd = uffd_open(O_NONBLOCK, UFFD_FEATURE_THREAD_ID);
	long stranded = 0, r;
	unsigned long pages[16];
	pthread_t faulter;

	if (rounds < 1 || wait_ms < 1)
		die("usage: unregister_race ROUNDS WAIT_MS");
	srand((unsigned)getpid());
	if (pthread_create(&faulter, NULL, fault_each_round, &rounds))
		die("pthread_create");
	for (r = 1; r <= rounds; r++) {
		char *p = uffd_area(uffd, (size_t)page_size());
		struct uffdio_range range = { (unsigned long)p, (unsigned long)page_size() };
		int spin = rand() % 16000;   /* wide: a traced fault path is slower */
		long since;

		page = p;
		atomic_store(&go, r);
		for (volatile int i = 0; i < spin; i++)
			;
		if (ioctl(uffd, UFFDIO_UNREGISTER, &range))
			die("UFFDIO_UNREGISTER");
		/* Stranded: still not back after WAIT_MS, and asleep in handle_userfault
		 * (a faulter that merely did not get a CPU meanwhile is waited for). */
		for (since = ms_now(); atomic_load(&done) != r && (ms_now() - since < wait_ms || !in_userfault());)
			drain(uffd);
		if (atomic_load(&done) != r) {
			if (stranded < 16)
				pages[stranded] = (unsigned long)p;
			stranded++;
			uffd_wake(uffd, range.start, range.len);
			while (atomic_load(&done) != r)
				;
		}
		drain(uffd);
		munmap(p, (size_t)page_size());
		if (max_stranded && stranded >= max_stranded)
			break;
	}
	rounds = r < rounds ? r : rounds;
	atomic_store(&go, -1);   /* the faulter's loop ends at once */
	printf("{\"workload\": \"unregister_race\", \"pid\": %d, \"faulter_tid\": %d, \"rounds\": %ld, "
	       "\"stranded\": %ld, \"stranded_pages\": [",
	       getpid(), faulter_tid, rounds, stranded);
	for (long i = 0; i < stranded && i < 16; i++)
		printf("%s%lu", i ? ", " : "", pages[i]);
	printf("]}\n");
	return 0;
}
