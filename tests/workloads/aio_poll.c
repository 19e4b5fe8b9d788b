/* An aio IOCB_CMD_POLL on the uffd (as QEMU-style event loops do): the fault
 * wakes the poll request, io_getevents reports it, then read + UFFDIO_COPY. */
#include "uffd_common.h"
#include <linux/aio_abi.h>

int main(void)
{
	int uffd = uffd_open(O_NONBLOCK, UFFD_FEATURE_THREAD_ID);
	char *area = uffd_area(uffd, page_size());
	char *src = malloc(page_size());
	struct toucher t = { .area = area, .pages = 1 };
	aio_context_t actx = 0;
	struct iocb cb = { .aio_data = 0x1234, .aio_lio_opcode = IOCB_CMD_POLL, .aio_fildes = (uint32_t)uffd,
			   .aio_buf = POLLIN };
	struct iocb *cbs[1] = { &cb };
	struct io_event ev;
	struct uffd_msg msg;

	memset(src, 0x5a, page_size());
	if (syscall(SYS_io_setup, 8, &actx))
		die("io_setup");
	if (syscall(SYS_io_submit, actx, 1, cbs) != 1)
		die("io_submit");
	if (pthread_create(&t.thread, NULL, toucher_main, &t))
		die("pthread_create");
	if (syscall(SYS_io_getevents, actx, 1, 1, &ev, NULL) != 1)
		die("io_getevents");
	uffd_read_msg(uffd, &msg);
	uffd_copy(uffd, msg.arg.pagefault.address, src, page_size(), 0);
	pthread_join(t.thread, NULL);
	printf("{\"workload\": \"aio_poll\", \"pid\": %d, \"handler_tid\": %d, \"faulter_tid\": %d, "
	       "\"addr\": %lu, \"iocb\": %lu, \"aio_data\": %llu, \"event_obj\": %llu, \"event_res\": %lld}\n",
	       getpid(), tid(), t.tid, (unsigned long)area, (unsigned long)&cb, (unsigned long long)cb.aio_data,
	       (unsigned long long)ev.obj, (long long)ev.res);
	return 0;
}
