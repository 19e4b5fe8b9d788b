/* Faults taken through get_user_pages, on a page whose last fault never
 * waited. Each round the handler maps the zero page (UFFDIO_ZEROPAGE); the
 * faulter writes it (a copy-on-write fault in the range that needs no
 * handler), sleeps, zaps the page and reads it back with process_vm_readv:
 * get_user_pages faults it in, with no page-fault exception, and waits in
 * handle_userfault until the handler, polling, reads the message and copies
 * the page. That is how KVM's vCPUs (QEMU post-copy), O_DIRECT, io_uring
 * and futexes on shared memory fault. ROUNDS rounds (default 20). */
#include "uffd_common.h"   /* first: it defines _GNU_SOURCE */
#include <sys/uio.h>

struct faulter {
	pthread_t thread;
	char *page;
	int go[2], done[2];
	int rounds;
	pid_t tid;
};

static void *faulter_main(void *arg)
{
	struct faulter *f = arg;
	char byte, got;
	struct iovec local = { &got, 1 }, remote;

	f->tid = tid();
	remote.iov_base = f->page;
	remote.iov_len = 1;
	for (int n = 0; n < f->rounds; n++) {
		if (read(f->go[0], &byte, 1) != 1)
			die("read go");
		*(volatile char *)f->page = 1;   /* copy-on-write of the zero page: no handler */
		usleep(2000);                    /* asleep outside any page fault: that fault is over */
		if (madvise(f->page, page_size(), MADV_DONTNEED))
			die("madvise");
		if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != 1)
			die("process_vm_readv");
		if (got != 0x5a || write(f->done[1], &got, 1) != 1)
			die("round %d: read back %#x", n, got);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 20;
	int uffd = uffd_open(O_NONBLOCK, 0);
	struct faulter f = { .page = uffd_area(uffd, page_size()), .rounds = rounds };
	char *src = malloc(page_size());
	struct uffd_msg msg;
	int n, reads = 0;
	char byte = 0;

	memset(src, 0x5a, page_size());
	if (pipe(f.go) || pipe(f.done))
		die("pipe");
	if (pthread_create(&f.thread, NULL, faulter_main, &f))
		die("pthread_create");
	for (n = 0; n < rounds; n++) {
		struct uffdio_zeropage zero = { .range = { (unsigned long)f.page, page_size() } };

		if (n && madvise(f.page, page_size(), MADV_DONTNEED))   /* the last round's copy */
			die("madvise");
		if (ioctl(uffd, UFFDIO_ZEROPAGE, &zero))
			die("UFFDIO_ZEROPAGE");
		if (write(f.go[1], &byte, 1) != 1)
			die("write go");
		uffd_read_msg(uffd, &msg);   /* polls first: read() begins after the message came */
		reads++;
		if (msg.event != UFFD_EVENT_PAGEFAULT || msg.arg.pagefault.address != (unsigned long)f.page)
			die("round %d: unexpected message", n);
		uffd_copy(uffd, (unsigned long)f.page, src, page_size(), 0);
		if (read(f.done[0], &byte, 1) != 1)
			die("read done");
	}
	pthread_join(f.thread, NULL);
	printf("{\"workload\": \"gup_fault\", \"pid\": %d, \"handler_tid\": %d, \"faulter_tid\": %d, "
	       "\"addr\": %lu, \"rounds\": %d, \"msgs_read\": %d}\n",
	       getpid(), tid(), f.tid, (unsigned long)f.page, rounds, reads);
	return 0;
}
