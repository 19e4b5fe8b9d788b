/* A fault whose page is taken away again right after UFFDIO_COPY woke it.
 * The handler runs SCHED_FIFO on the faulter's CPU, so the woken faulter
 * cannot run before the handler zaps the page (MADV_DONTNEED); its retry,
 * inside the same page fault, goes back to sleep in handle_userfault with a
 * new message and no new page-fault tracepoint. ROUNDS messages in all; the
 * last one is read STALL seconds late (0: at once), then resolved. */
#include "uffd_common.h"   /* first: it defines _GNU_SOURCE */
#include <sched.h>

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 3;
	double stall = argc > 2 ? atof(argv[2]) : 0;
	int uffd = uffd_open(O_NONBLOCK, UFFD_FEATURE_THREAD_ID);
	char *area = uffd_area(uffd, page_size());
	char *src = malloc(page_size());
	struct sched_param fifo = { .sched_priority = 1 };
	struct toucher t = { .area = area, .pages = 1 };
	struct uffd_msg msg;
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };
	cpu_set_t cpus, one;
	int n;

	memset(src, 0x5a, page_size());
	if (sched_getaffinity(0, sizeof(cpus), &cpus))
		die("sched_getaffinity");
	CPU_ZERO(&one);
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (CPU_ISSET(cpu, &cpus)) {
			CPU_SET(cpu, &one);
			break;
		}
	}
	if (sched_setaffinity(0, sizeof(one), &one))   /* the faulter inherits it */
		die("sched_setaffinity");
	if (pthread_create(&t.thread, NULL, toucher_main, &t))
		die("pthread_create");
	if (sched_setscheduler(0, SCHED_FIFO, &fifo)) {   /* this thread only */
		printf("{\"skip\": \"SCHED_FIFO: %s\"}\n", strerror(errno));
		return 77;
	}
	for (n = 1;; n++) {
		if (n == rounds && stall > 0)
			usleep((useconds_t)(stall * 1e6));
		if (poll(&pfd, 1, 10000) != 1 || read(uffd, &msg, sizeof(msg)) != sizeof(msg))
			die("no message for round %d", n);   /* the faulter did not come back */
		uffd_copy(uffd, msg.arg.pagefault.address, src, page_size(), 0);
		if (n >= rounds)
			break;
		if (madvise(area, page_size(), MADV_DONTNEED))
			die("madvise");
	}
	pthread_join(t.thread, NULL);
	printf("{\"workload\": \"refault\", \"pid\": %d, \"handler_tid\": %d, \"faulter_tid\": %d, "
	       "\"addr\": %lu, \"rounds\": %d, \"msgs_read\": %d, \"stall_s\": %g}\n",
	       getpid(), tid(), t.tid, (unsigned long)area, rounds, n, stall);
	return 0;
}
