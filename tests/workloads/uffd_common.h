/* Shared helpers for the test workloads: each workload makes one known,
 * countable userfaultfd situation for real and prints what it did as one
 * JSON line on stdout, so tests can compare the tracer's view with it. */
#ifndef UFFD_COMMON_H
#define UFFD_COMMON_H
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* UFFDIO_MOVE arrived in 6.8 (adef440691ba, "userfaultfd: UFFDIO_MOVE uABI");
 * older uapi headers (Debian 12's are 6.1) lack it. Values from 6.8's uapi. */
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct uffdio_move)
#endif

#define die(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, ": %s\n", strerror(errno)); exit(1); } while (0)

static inline pid_t tid(void) { return (pid_t)syscall(SYS_gettid); }

static inline long page_size(void) { return sysconf(_SC_PAGESIZE); }

/* A uffd with the API handshake done; exits 77 (skip) if features are missing. */
static inline int uffd_open(int flags, uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, flags | O_CLOEXEC);

	if (fd < 0)
		die("userfaultfd");
	if (ioctl(fd, UFFDIO_API, &api)) {
		if (errno == EINVAL) {
			printf("{\"skip\": \"uffd features %#llx unsupported\"}\n", (unsigned long long)features);
			exit(77);
		}
		die("UFFDIO_API");
	}
	return fd;
}

/* Anonymous memory registered for MISSING faults, without THP so that every
 * page faults on its own. */
static inline char *uffd_area(int uffd, size_t len)
{
	char *area = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct uffdio_register reg = { .range = { (unsigned long)area, len }, .mode = UFFDIO_REGISTER_MODE_MISSING };

	if (area == MAP_FAILED)
		die("mmap");
	madvise(area, len, MADV_NOHUGEPAGE);
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		die("UFFDIO_REGISTER");
	return area;
}

/* Blocking read of one message (poll first: the uffd may be O_NONBLOCK). */
static inline void uffd_read_msg(int uffd, struct uffd_msg *msg)
{
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };

	for (;;) {
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			die("poll");
		if (read(uffd, msg, sizeof(*msg)) == sizeof(*msg))
			return;
		if (errno != EAGAIN && errno != EINTR)
			die("read uffd");
	}
}

static inline long uffd_copy(int uffd, unsigned long dst, const void *src, size_t len, uint64_t mode)
{
	struct uffdio_copy copy = { .dst = dst, .src = (unsigned long)src, .len = len, .mode = mode };

	if (ioctl(uffd, UFFDIO_COPY, &copy) && errno != EEXIST)
		die("UFFDIO_COPY");
	return (long)copy.copy;
}

static inline void uffd_wake(int uffd, unsigned long start, size_t len)
{
	struct uffdio_range range = { start, len };

	if (ioctl(uffd, UFFDIO_WAKE, &range))
		die("UFFDIO_WAKE");
}

/* Touch one byte of every page, from a thread of its own. */
struct toucher {
	pthread_t thread;
	char *area;
	size_t pages;
	pid_t tid;
	volatile unsigned long sum;
};

static __attribute__((unused)) void *toucher_main(void *arg)
{
	struct toucher *t = arg;

	t->tid = tid();
	for (size_t i = 0; i < t->pages; i++)
		t->sum += (unsigned char)t->area[i * page_size()];
	return NULL;
}
#endif
