/* An event loop that serves a uffd through an aio IOCB_CMD_POLL, the way
 * loops that must not miss a message do: arm the poll, serve its other
 * sources (GAP_US microseconds of other work), drain every queued message
 * (read until EAGAIN, UFFDIO_COPY each), then wait for the poll to
 * complete. FAULTERS threads touch their share of PAGES pages in turn.
 * Every message is served by a drain, either before the wait or after the
 * poll completes: the kernel completes the poll as soon as a message is
 * queued. On a kernel that loses an aio poll wake-up (seed "aiopoll": the
 * request off the uffd's waitqueue between a wake-up and its work, as before
 * 363bee27e258) a fault queued in that gap leaves the poll pending beside an
 * unread message, the loop asleep in io_getevents and the faulting thread in
 * handle_userfault: the workload hangs until killed.
 *   aio_drain [PAGES] [FAULTERS] [GAP_US]
 * Prints one JSON line once every page was served. */
#include "uffd_common.h"
#include <linux/aio_abi.h>

#define MAX_FAULTERS 16

int main(int argc, char **argv)
{
	size_t pages = argc > 1 ? strtoul(argv[1], NULL, 0) : 2048;
	size_t nfaulters = argc > 2 ? strtoul(argv[2], NULL, 0) : 2;
	useconds_t gap_us = argc > 3 ? (useconds_t)strtoul(argv[3], NULL, 0) : 300;
	int uffd = uffd_open(O_NONBLOCK, UFFD_FEATURE_THREAD_ID);
	char *area, *src = malloc(page_size());
	struct toucher t[MAX_FAULTERS];
	aio_context_t actx = 0;
	struct iocb cb = { .aio_data = 0xa10, .aio_lio_opcode = IOCB_CMD_POLL, .aio_fildes = (uint32_t)uffd,
			   .aio_buf = POLLIN };
	struct iocb *cbs[1] = { &cb };
	size_t served = 0, polls = 0, empty_drains = 0;
	int armed = 0;

	if (nfaulters < 1 || nfaulters > MAX_FAULTERS || pages < nfaulters)
		die("usage: aio_drain [PAGES] [FAULTERS <= %d]", MAX_FAULTERS);
	area = uffd_area(uffd, pages * page_size());
	memset(src, 0x5a, page_size());
	if (syscall(SYS_io_setup, 8, &actx))
		die("io_setup");
	for (size_t i = 0; i < nfaulters; i++) {
		t[i].area = area + i * (pages / nfaulters) * page_size();
		t[i].pages = i + 1 < nfaulters ? pages / nfaulters : pages - i * (pages / nfaulters);
		if (pthread_create(&t[i].thread, NULL, toucher_main, &t[i]))
			die("pthread_create");
	}
	while (served < pages) {
		struct uffd_msg msg;
		struct io_event ev;
		size_t drained = 0;

		if (!armed) {
			if (syscall(SYS_io_submit, actx, 1, cbs) != 1)
				die("io_submit");
			armed = 1;
			usleep(gap_us);  /* the loop's other sources */
		}
		while (read(uffd, &msg, sizeof(msg)) == sizeof(msg)) {
			if (msg.event != UFFD_EVENT_PAGEFAULT)
				continue;
			uffd_copy(uffd, msg.arg.pagefault.address & ~(page_size() - 1), src, page_size(), 0);
			served++;
			drained++;
		}
		if (errno != EAGAIN)
			die("read uffd");
		empty_drains += !drained;
		if (served == pages)
			break;
		if (syscall(SYS_io_getevents, actx, 1, 1, &ev, NULL) != 1) {
			if (errno == EINTR)
				continue;
			die("io_getevents");
		}
		armed = 0;
		polls++;
	}
	for (size_t i = 0; i < nfaulters; i++)
		pthread_join(t[i].thread, NULL);
	printf("{\"workload\": \"aio_drain\", \"pid\": %d, \"handler_tid\": %d, \"pages\": %zu, \"served\": %zu, "
	       "\"polls_completed\": %zu, \"empty_drains\": %zu, \"aio_data\": %llu}\n",
	       getpid(), tid(), pages, served, polls, empty_drains, (unsigned long long)cb.aio_data);
	return 0;
}
