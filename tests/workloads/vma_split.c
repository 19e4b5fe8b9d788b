/* Faults that cannot take the per-VMA lock (v6.4+): THREADS threads fault
 * PAGES pages of one uffd-registered VMA while another thread keeps splitting
 * and merging that VMA (mprotect of a page past the faulted ones, and back).
 * mprotect write-locks the VMA under mmap_lock, so a fault that comes
 * meanwhile finds lock_vma_under_rcu() refusing and is handled under
 * mmap_lock from its first pass, with no VM_FAULT_RETRY before it. A handler
 * thread reads each message and copies the page. */
#include "uffd_common.h"   /* first: it defines _GNU_SOURCE */
#include <stdatomic.h>

struct faulter {
	struct toucher t;
	size_t first, stride, pages;
};

static char *area;
static atomic_int done;

static void *fault_every_stride(void *arg)
{
	struct faulter *f = arg;

	f->t.tid = tid();
	for (size_t i = f->first; i < f->pages; i += f->stride)
		f->t.sum += (unsigned char)area[i * page_size()];
	return NULL;
}

static void *split_and_merge(void *arg)
{
	char *page = arg;
	long *rounds = malloc(sizeof(*rounds));

	for (*rounds = 0; !atomic_load(&done); (*rounds)++) {
		if (mprotect(page, page_size(), PROT_READ) || mprotect(page, page_size(), PROT_READ | PROT_WRITE))
			die("mprotect");
	}
	return rounds;
}

int main(int argc, char **argv)
{
	size_t pages = argc > 1 ? strtoul(argv[1], NULL, 0) : 2048;
	int threads = argc > 2 ? atoi(argv[2]) : 2;
	int uffd = uffd_open(O_NONBLOCK, UFFD_FEATURE_THREAD_ID);
	struct faulter *faulters = calloc((size_t)threads, sizeof(*faulters));
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };
	char *src = malloc(page_size());
	pthread_t splitter;
	struct uffd_msg msg;
	long copies = 0, *rounds;

	if (threads < 1 || !faulters || pages < 1)
		die("usage: vma_split PAGES THREADS");
	memset(src, 0x5a, page_size());
	area = uffd_area(uffd, (pages + 1) * page_size());   /* the last page is split off, never faulted */
	if (pthread_create(&splitter, NULL, split_and_merge, area + pages * page_size()))
		die("pthread_create");
	for (int i = 0; i < threads; i++) {
		faulters[i] = (struct faulter){ .first = (size_t)i, .stride = (size_t)threads, .pages = pages };
		if (pthread_create(&faulters[i].t.thread, NULL, fault_every_stride, &faulters[i]))
			die("pthread_create");
	}
	while ((size_t)copies < pages) {
		if (poll(&pfd, 1, 10000) != 1)
			die("no message after %ld copies", copies);
		if (read(uffd, &msg, sizeof(msg)) != sizeof(msg)) {
			if (errno == EAGAIN)
				continue;
			die("read uffd");
		}
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			die("unexpected event %u", msg.event);
		if (uffd_copy(uffd, msg.arg.pagefault.address & ~(unsigned long)(page_size() - 1), src, page_size(), 0) > 0)
			copies++;   /* not EEXIST: a page served for the first time */
	}
	for (int i = 0; i < threads; i++)
		pthread_join(faulters[i].t.thread, NULL);
	atomic_store(&done, 1);
	pthread_join(splitter, (void **)&rounds);
	printf("{\"workload\": \"vma_split\", \"pid\": %d, \"pages\": %zu, \"threads\": %d, \"copies\": %ld, "
	       "\"splits\": %ld}\n", getpid(), pages, threads, copies, *rounds);
	return 0;
}
