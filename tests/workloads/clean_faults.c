/* N clean faults: one thread touches N pages in turn, this thread reads each
 * message and resolves it with UFFDIO_COPY (which wakes the faulter).
 * With "wait" as second argument it sets everything up, prints
 * {"ready": PID}, and faults only after a line arrives on stdin (a uffd that
 * existed before the tracer started). */
#include "uffd_common.h"
#include <time.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 7;
	int uffd = uffd_open(O_NONBLOCK, UFFD_FEATURE_THREAD_ID);
	char *area = uffd_area(uffd, n * page_size());
	char *src = malloc(page_size());
	struct toucher t = { .area = area, .pages = n };
	struct uffd_msg msg;
	size_t reads = 0;
	long long t0;

	memset(src, 0x5a, page_size());
	if (argc > 2 && !strcmp(argv[2], "wait")) {
		char line[16];

		printf("{\"ready\": %d}\n", getpid());
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			die("stdin closed");
	}
	t0 = now_ns();
	if (pthread_create(&t.thread, NULL, toucher_main, &t))
		die("pthread_create");
	while (reads < n) {
		uffd_read_msg(uffd, &msg);
		reads++;
		uffd_copy(uffd, msg.arg.pagefault.address, src, page_size(), 0);
	}
	pthread_join(t.thread, NULL);
	printf("{\"workload\": \"clean_faults\", \"pid\": %d, \"handler_tid\": %d, \"faulter_tid\": %d, "
	       "\"base\": %lu, \"pages\": %zu, \"page_size\": %ld, \"msgs_read\": %zu, \"elapsed_ns\": %lld}\n",
	       getpid(), tid(), t.tid, (unsigned long)area, n, page_size(), reads, now_ns() - t0);
	return 0;
}
