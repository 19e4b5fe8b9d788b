/* A balloon beside a page-fault handler (Firecracker's balloon device with a
 * UFFD handler): the uffd has UFFD_FEATURE_EVENT_REMOVE, a balloon thread
 * gives pages back with MADV_DONTNEED, which queues a REMOVE event and waits
 * until a handler reads it; while it is unread, the handler's UFFDIO_COPY
 * fails with EAGAIN.
 *
 *   balloon defer STALL_MS   the handler defers the fault on EAGAIN and never
 *                            retries it (the hang of the reports); after
 *                            STALL_MS the main thread resolves it, to end
 *   balloon retry            the handler retries once it has read the event
 *   balloon unread STALL_MS  the handler resolves the fault, then reads
 *                            nothing for STALL_MS while the balloon's
 *                            madvise waits on its event
 *
 * One JSON line: the threads, the page, what the handler saw. */
#include "uffd_common.h"

enum mode { DEFER, RETRY, UNREAD };

static int uffd, go[2];
static char *area, *source;
static enum mode mode;
static long stall_ms;
static volatile int stop;
static pid_t handler_tid, balloon_tid;
static long eagain, events_read, copies;

static int copy_page(unsigned long page)
{
	struct uffdio_copy c = { .dst = page, .src = (unsigned long)source, .len = page_size() };

	if (ioctl(uffd, UFFDIO_COPY, &c) == 0) {
		copies++;
		return 0;
	}
	if (errno == EAGAIN) {
		eagain++;
		return -EAGAIN;
	}
	if (errno != EEXIST)
		die("UFFDIO_COPY");
	return 0;
}

/* One message, or 0 when none came within timeout_ms. */
static int next_msg(struct uffd_msg *msg, int timeout_ms)
{
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };

	if (poll(&pfd, 1, timeout_ms) <= 0)
		return 0;
	if (read(uffd, msg, sizeof(*msg)) != sizeof(*msg)) {
		if (errno == EAGAIN)
			return 0;
		die("read uffd");
	}
	return 1;
}

static void *handler(void *arg)
{
	unsigned long deferred = 0;
	struct uffd_msg msg;

	(void)arg;
	handler_tid = tid();
	while (!next_msg(&msg, 100))
		;
	if (msg.event != UFFD_EVENT_PAGEFAULT)
		die("expected the fault first");
	if (mode == UNREAD) {
		copy_page(msg.arg.pagefault.address & ~(page_size() - 1));
		if (write(go[1], "g", 1) != 1)
			die("go");
		usleep(stall_ms * 1000);  /* reads nothing: the balloon waits */
	} else {
		if (write(go[1], "g", 1) != 1)
			die("go");
		usleep(100 * 1000);  /* the balloon's REMOVE is queued now */
		if (copy_page(msg.arg.pagefault.address & ~(page_size() - 1)) == -EAGAIN)
			deferred = msg.arg.pagefault.address & ~(page_size() - 1);
	}
	while (!stop) {
		if (next_msg(&msg, 50) && msg.event == UFFD_EVENT_REMOVE)
			events_read++;
		/* RETRY: again after each message or pause, until it takes (EAGAIN
		 * lasts until the balloon's madvise has resumed, after the read).
		 * DEFER: the deferred fault is forgotten. */
		if (mode == RETRY && deferred && copy_page(deferred) == 0)
			deferred = 0;
	}
	return NULL;
}

static void *balloon(void *arg)
{
	char g;

	(void)arg;
	balloon_tid = tid();
	if (read(go[0], &g, 1) != 1)
		die("go");
	if (madvise(area + page_size(), 3 * page_size(), MADV_DONTNEED))
		die("madvise");
	return NULL;
}

static void *faulter(void *arg)
{
	*(pid_t *)arg = tid();
	return (void *)(long)((volatile char *)area)[0];
}

int main(int argc, char **argv)
{
	pthread_t h, b, f;
	pid_t faulter_tid = 0;

	if (argc < 2 || (strcmp(argv[1], "defer") && strcmp(argv[1], "retry") && strcmp(argv[1], "unread")))
		die("usage: balloon defer STALL_MS | retry | unread STALL_MS");
	mode = !strcmp(argv[1], "defer") ? DEFER : !strcmp(argv[1], "retry") ? RETRY : UNREAD;
	stall_ms = argc > 2 ? strtol(argv[2], NULL, 0) : 1500;
	uffd = uffd_open(O_NONBLOCK, UFFD_FEATURE_EVENT_REMOVE);
	area = uffd_area(uffd, 4 * page_size());
	source = aligned_alloc(page_size(), page_size());
	memset(source, 0x5a, page_size());
	if (pipe(go))
		die("pipe");
	if (pthread_create(&h, NULL, handler, NULL) || pthread_create(&b, NULL, balloon, NULL) ||
	    pthread_create(&f, NULL, faulter, &faulter_tid))
		die("pthread_create");
	pthread_join(b, NULL);
	if (mode == DEFER) {
		usleep(stall_ms * 1000);  /* the deferred fault waits; nobody will retry it */
		copy_page((unsigned long)area);
	}
	pthread_join(f, NULL);
	stop = 1;
	pthread_join(h, NULL);
	printf("{\"workload\": \"balloon\", \"mode\": \"%s\", \"faulter_tid\": %d, \"handler_tid\": %d, "
	       "\"balloon_tid\": %d, \"page\": %lu, \"balloon_start\": %lu, \"eagain\": %ld, \"events_read\": %ld, "
	       "\"copies\": %ld}\n", argv[1], faulter_tid, handler_tid, balloon_tid, (unsigned long)area,
	       (unsigned long)area + page_size(), eagain, events_read, copies);
	return 0;
}
