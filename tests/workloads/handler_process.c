/* Firecracker's layout: the process whose memory faults creates the uffd,
 * registers its memory and hands the uffd over a UNIX socket (SCM_RIGHTS) to
 * a page-fault handler in a process of its own, which reads the faults
 * through its own descriptor and resolves them with UFFDIO_COPY.
 *
 *   handler_process serve PAGES THREADS   the handler serves every fault;
 *                                         the faulting process closes its
 *                                         own descriptor once it is handed over
 *   handler_process killed STALL_MS       the handler reads one fault and is
 *                                         killed before resolving it; the
 *                                         faulting process keeps its
 *                                         descriptor, and after STALL_MS
 *                                         resolves the page itself
 *
 * One JSON line: the handler's pid and reads, the faulting tids. */
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "uffd_common.h"

static void send_fd(int sock, int fd)
{
	char data = 'u';
	struct iovec iov = { &data, 1 };
	union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } c = {};
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf, .msg_controllen = sizeof(c.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(sock, &msg, 0) != 1)
		die("sendmsg");
}

static int receive_fd(int sock)
{
	char data;
	struct iovec iov = { &data, 1 };
	union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } c = {};
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf, .msg_controllen = sizeof(c.buf) };
	struct cmsghdr *cm;
	int fd;

	if (recvmsg(sock, &msg, 0) != 1)
		die("recvmsg");
	cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		die("no descriptor received");
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/* The handler process: serve `limit` faults (0: until the uffd is released),
 * reporting each read on `report`; then wait to be killed. */
static void handler(int sock, int report, long limit)
{
	int uffd = receive_fd(sock);
	char *page = aligned_alloc(page_size(), page_size());
	struct uffd_msg msg;
	long reads = 0;

	memset(page, 0x5a, page_size());
	for (;;) {
		struct pollfd pfd = { .fd = uffd, .events = POLLIN };

		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			die("poll");
		if (pfd.revents & (POLLERR | POLLHUP))
			break;  /* released: every registered range went with it */
		if (read(uffd, &msg, sizeof(msg)) != sizeof(msg)) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			die("read uffd");
		}
		reads++;
		if (write(report, &reads, sizeof(reads)) != sizeof(reads))
			die("report");
		if (limit && reads >= limit)
			pause();  /* read, never resolved: killed here */
		uffd_copy(uffd, msg.arg.pagefault.address & ~(page_size() - 1), page, page_size(), 0);
	}
	_exit(0);
}

struct faulter {
	pthread_t thread;
	char *area;
	size_t first, count;
	pid_t tid;
	unsigned long sum;
};

static void *fault_pages(void *arg)
{
	struct faulter *f = arg;

	f->tid = tid();
	for (size_t i = f->first; i < f->first + f->count; i++)
		f->sum += ((volatile char *)f->area)[i * page_size()];
	return NULL;
}

static void *fault_one(void *arg)
{
	struct faulter *f = arg;

	f->tid = tid();
	f->sum = ((volatile char *)f->area)[0];
	return NULL;
}

int main(int argc, char **argv)
{
	int killed = argc == 3 && !strcmp(argv[1], "killed");
	size_t pages = killed ? 1 : (argc > 2 ? strtoul(argv[2], NULL, 0) : 4096);
	size_t threads = killed ? 1 : (argc > 3 ? strtoul(argv[3], NULL, 0) : 4);
	long stall_ms = killed ? strtol(argv[2], NULL, 0) : 0;
	int uffd = uffd_open(O_NONBLOCK, 0);  /* poll() of a blocking uffd says EPOLLERR */
	char *area = uffd_area(uffd, pages * page_size());
	struct faulter f[64] = {};
	int sv[2], rep[2];
	long reads = 0;
	pid_t child;

	if ((!killed && strcmp(argv[1], "serve")) || threads < 1 || threads > 64 || pages < threads || pages > 8192)
		die("usage: handler_process serve PAGES THREADS | killed STALL_MS");
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || pipe(rep))
		die("socketpair");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(uffd);  /* the handler's only descriptor is the one it is sent */
		handler(sv[1], rep[1], killed ? 1 : 0);
	}
	close(rep[1]);
	send_fd(sv[0], uffd);
	if (!killed)
		close(uffd);  /* the handler holds the only descriptor */
	for (size_t i = 0; i < threads; i++) {
		f[i].area = area;
		f[i].first = i * (pages / threads);
		f[i].count = i == threads - 1 ? pages - f[i].first : pages / threads;
		if (pthread_create(&f[i].thread, NULL, killed ? fault_one : fault_pages, &f[i]))
			die("pthread_create");
	}
	if (killed) {
		char *page = aligned_alloc(page_size(), page_size());

		if (read(rep[0], &reads, sizeof(reads)) != sizeof(reads))
			die("no read reported");
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		usleep(stall_ms * 1000);  /* the fault waits on a uffd nobody reads */
		memset(page, 0x5a, page_size());
		uffd_copy(uffd, (unsigned long)area, page, page_size(), 0);
	}
	for (size_t i = 0; i < threads; i++)
		pthread_join(f[i].thread, NULL);
	if (!killed) {
		kill(child, SIGKILL);  /* it waits for more faults */
		waitpid(child, NULL, 0);
		while (read(rep[0], &reads, sizeof(reads)) == sizeof(reads))
			;  /* its last report: the reads it made (the pipe holds 8192 of them) */
	}
	printf("{\"workload\": \"handler_process\", \"mode\": \"%s\", \"handler_pid\": %d, \"pages\": %zu, "
	       "\"handler_reads\": %ld, \"tids\": [", argv[1], child, pages, reads);
	for (size_t i = 0; i < threads; i++)
		printf("%s%d", i ? ", " : "", f[i].tid);
	printf("]}\n");
	return 0;
}
