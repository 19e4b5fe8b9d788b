/* Firecracker's layout: the process whose memory faults creates the uffd,
 * registers its memory and hands the uffd over a UNIX socket (SCM_RIGHTS) to
 * a page-fault handler in a process of its own, which reads the faults
 * through its own descriptor and resolves them with UFFDIO_COPY.
 *
 *   handler_process serve PAGES THREADS [wait|wait-keep]
 *                                         the handler serves every fault;
 *                                         the faulting process closes its
 *                                         own descriptor once it is handed over
 *                                         (with "wait": then prints a line and
 *                                         faults when stdin says "go", so that
 *                                         the uffd predates a tracer;
 *                                         "wait-keep": the same, keeping its
 *                                         descriptor)
 *   handler_process killed STALL_MS       the handler reads one fault and is
 *                                         killed before resolving it; the
 *                                         faulting process keeps its
 *                                         descriptor, and after STALL_MS
 *                                         resolves the page itself
 *   handler_process stalled STALL_MS      the handler reads one fault and does
 *                                         nothing for STALL_MS (then it is
 *                                         killed and the page resolved as above)
 *   handler_process unread STALL_MS       the handler takes the uffd and reads
 *                                         nothing for STALL_MS (then the same)
 *   handler_process dead STALL_MS         the handler dies before reading
 *                                         anything, and the faulting process
 *                                         (one thread, which keeps its
 *                                         descriptor) faults: nobody can read.
 *                                         After STALL_MS a rescuer, forked
 *                                         before the uffd existed, takes the
 *                                         uffd with pidfd_getfd and resolves it
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

/* The handler process: serve `limit` faults (0: until the uffd is released;
 * -1: none), reporting each read on `report`; then wait to be killed. */
static void handler(int sock, int report, long limit)
{
	int uffd = receive_fd(sock);
	char *page = aligned_alloc(page_size(), page_size());
	struct uffd_msg msg;
	long reads = 0;

	if (limit < 0)
		pause();  /* holds the uffd, reads nothing: killed here */

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

/* The rescuer: holds no descriptor on the uffd until STALL_MS have passed,
 * then takes the faulting process's (pidfd_getfd, 5.6+) and copies the page. */
static void rescuer(int go, long stall_ms)
{
	char *page = aligned_alloc(page_size(), page_size());
	unsigned long addr;
	int fd, pidfd, uffd;

	if (read(go, &fd, sizeof(fd)) != sizeof(fd) || read(go, &addr, sizeof(addr)) != sizeof(addr))
		_exit(1);
	usleep(stall_ms * 1000);
	pidfd = syscall(SYS_pidfd_open, getppid(), 0);
	uffd = pidfd < 0 ? -1 : syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	if (uffd < 0)
		die("pidfd_getfd");
	memset(page, 0x5a, page_size());
	uffd_copy(uffd, addr, page, page_size(), 0);
	_exit(0);
}

/* dead: see the head of this file. The process stays single-threaded. */
static int dead(long stall_ms)
{
	int go[2], uffd;
	pid_t saver, handler_pid;
	unsigned long addr;
	char *area;
	int sum;

	if (pipe(go))
		die("pipe");
	saver = fork();
	if (saver < 0)
		die("fork");
	if (saver == 0) {
		close(go[1]);
		rescuer(go[0], stall_ms);
	}
	close(go[0]);
	uffd = uffd_open(O_NONBLOCK, 0);
	area = uffd_area(uffd, page_size());
	handler_pid = fork();  /* the handler: it inherits the uffd and dies before reading it */
	if (handler_pid < 0)
		die("fork");
	if (handler_pid == 0)
		pause();
	kill(handler_pid, SIGKILL);
	waitpid(handler_pid, NULL, 0);
	addr = (unsigned long)area;
	if (write(go[1], &uffd, sizeof(uffd)) != sizeof(uffd) || write(go[1], &addr, sizeof(addr)) != sizeof(addr))
		die("write");
	sum = ((volatile char *)area)[0];  /* waits until the rescuer's copy */
	waitpid(saver, NULL, 0);
	printf("{\"workload\": \"handler_process\", \"mode\": \"dead\", \"handler_pid\": %d, \"rescuer_pid\": %d, "
	       "\"handler_reads\": 0, \"byte\": %d, \"tids\": [%d]}\n", handler_pid, saver, sum, tid());
	return 0;
}

int main(int argc, char **argv)
{
	const char *modes[] = { "serve", "killed", "stalled", "unread" };
	enum { SERVE, KILLED, STALLED, UNREAD } mode = SERVE;

	if (argc == 3 && !strcmp(argv[1], "dead"))
		return dead(strtol(argv[2], NULL, 0));
	while (argc > 1 && mode < UNREAD && strcmp(argv[1], modes[mode]))
		mode++;
	int stalling = mode != SERVE;  /* one fault, one thread, STALL_MS */
	size_t pages = stalling ? 1 : (argc > 2 ? strtoul(argv[2], NULL, 0) : 4096);
	size_t threads = stalling ? 1 : (argc > 3 ? strtoul(argv[3], NULL, 0) : 4);
	long stall_ms = stalling && argc > 2 ? strtol(argv[2], NULL, 0) : 0;
	int uffd = uffd_open(O_NONBLOCK, 0);  /* poll() of a blocking uffd says EPOLLERR */
	char *area = uffd_area(uffd, pages * page_size());
	struct faulter f[64] = {};
	int sv[2], rep[2];
	long reads = 0;
	pid_t child;

	int keep = !stalling && argc == 5 && !strcmp(argv[4], "wait-keep");
	int wait_go = keep || (!stalling && argc == 5 && !strcmp(argv[4], "wait"));
	char go[8];

	if (argc < 2 || strcmp(argv[1], modes[mode]) || (stalling && argc != 3) || (argc == 5 && !wait_go) ||
	    argc > 5 || threads < 1 || threads > 64 || pages < threads || pages > 8192)
		die("usage: handler_process serve PAGES THREADS [wait|wait-keep] | killed|stalled|unread|dead STALL_MS");
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || pipe(rep))
		die("socketpair");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(uffd);  /* the handler's only descriptor is the one it is sent */
		handler(sv[1], rep[1], mode == UNREAD ? -1 : stalling ? 1 : 0);
	}
	close(rep[1]);
	send_fd(sv[0], uffd);
	if (!stalling && !keep)
		close(uffd);  /* the handler holds the only descriptor */
	if (wait_go) {
		printf("{\"ready\": true, \"pid\": %d, \"handler_pid\": %d}\n", getpid(), child);
		fflush(stdout);
		if (!fgets(go, sizeof(go), stdin) || strcmp(go, "go\n"))
			die("expected go");
	}
	for (size_t i = 0; i < threads; i++) {
		f[i].area = area;
		f[i].first = i * (pages / threads);
		f[i].count = i == threads - 1 ? pages - f[i].first : pages / threads;
		if (pthread_create(&f[i].thread, NULL, stalling ? fault_one : fault_pages, &f[i]))
			die("pthread_create");
	}
	if (stalling) {
		char *page = aligned_alloc(page_size(), page_size());

		if (mode != UNREAD && read(rep[0], &reads, sizeof(reads)) != sizeof(reads))
			die("no read reported");
		if (mode == KILLED) {
			kill(child, SIGKILL);
			waitpid(child, NULL, 0);
		}
		usleep(stall_ms * 1000);  /* the fault waits */
		if (mode != KILLED) {
			kill(child, SIGKILL);
			waitpid(child, NULL, 0);
		}
		memset(page, 0x5a, page_size());
		uffd_copy(uffd, (unsigned long)area, page, page_size(), 0);
	}
	for (size_t i = 0; i < threads; i++)
		pthread_join(f[i].thread, NULL);
	if (!stalling) {
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
