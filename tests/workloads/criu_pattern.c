/* The process scripts/postcopy_lab.py criu dumps and restores lazily: it fills
 * N private anonymous pages with a pattern of their own (page index and a
 * seed), says "filled pid P pages N", then waits for SIGUSR1. CRIU dumps it
 * while it waits and restores it with --lazy-pages; after the lab's SIGUSR1
 * (sent to the restored process) it reads every page back, a first touch
 * being a userfaultfd fault the lazy-pages daemon resolves unless its
 * background copy placed the page first, and says
 * "pattern ok" or "pattern BAD at page I", then exits 0 or 1. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static uint64_t word(size_t page, size_t i, uint64_t seed)
{
	return (page * 0x9e3779b97f4a7c15ULL) ^ (i * 0xff51afd7ed558ccdULL) ^ seed;
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 256;
	size_t psz = (size_t)sysconf(_SC_PAGESIZE), words = psz / sizeof(uint64_t);
	uint64_t seed = (uint64_t)getpid() << 32;
	uint64_t *area = mmap(NULL, n * psz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	sigset_t usr1, old;

	if (area == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old); /* a SIGUSR1 before sigsuspend() is not lost */
	signal(SIGUSR1, on_usr1);
	for (size_t p = 0; p < n; p++)
		for (size_t i = 0; i < words; i++)
			area[p * words + i] = word(p, i, seed);
	printf("filled pid %d pages %zu\n", getpid(), n);
	fflush(stdout);
	while (!go)
		sigsuspend(&old);
	/* From the top down: CRIU's daemon copies the pages nobody asked for
	 * from the bottom up, so most of these touches fault before it gets there. */
	for (size_t p = n; p-- > 0;)
		for (size_t i = 0; i < words; i++)
			if (area[p * words + i] != word(p, i, seed)) {
				printf("pattern BAD at page %zu\n", p);
				return 1;
			}
	printf("pattern ok\n");
	return 0;
}
