/* A fault resolved with UFFDIO_COPY_MODE_DONTWAKE, woken only SECS seconds
 * later by UFFDIO_WAKE: the faulter stays asleep on a present page. */
#include "uffd_common.h"

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 2.0;
	int uffd = uffd_open(O_NONBLOCK, UFFD_FEATURE_THREAD_ID);
	char *area = uffd_area(uffd, page_size());
	char *src = malloc(page_size());
	struct toucher t = { .area = area, .pages = 1 };
	struct uffd_msg msg;

	memset(src, 0x5a, page_size());
	if (pthread_create(&t.thread, NULL, toucher_main, &t))
		die("pthread_create");
	uffd_read_msg(uffd, &msg);
	uffd_copy(uffd, msg.arg.pagefault.address, src, page_size(), UFFDIO_COPY_MODE_DONTWAKE);
	usleep((useconds_t)(secs * 1e6));
	uffd_wake(uffd, msg.arg.pagefault.address, page_size());
	pthread_join(t.thread, NULL);
	printf("{\"workload\": \"dontwake\", \"pid\": %d, \"handler_tid\": %d, \"faulter_tid\": %d, "
	       "\"addr\": %lu, \"stall_s\": %g}\n", getpid(), tid(), t.tid, (unsigned long)area, secs);
	return 0;
}
