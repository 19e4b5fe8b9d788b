/* Tracepoint mode: which uffd a file descriptor names (docs/architecture.md,
 * "uffd identity"). A syscall gives only (caller, fd); the uffd is the
 * kernel object behind it, the same through every process's descriptor
 * (inherited across fork, passed with SCM_RIGHTS, dup'ed). The descriptor
 * is resolved through the caller's fd table (offsets from BTF) to the file,
 * which is a uffd when its f_op->poll is userfaultfd_poll (USERFAULTFD_POLL,
 * from kallsyms: the fops themselves are data, absent without KALLSYMS_ALL).
 *
 * The id is the file's inode number: each uffd has an anon inode of its own
 * since v5.12 (b537900f1598, "userfaultfd: use secure anon inodes for
 * userfaultfd"), which /proc/PID/fd shows too, so that uffds opened before
 * tracing are known by the same id. Before that every uffd shares one inode
 * (UFFD_ID_CTX): the id is the userfaultfd_ctx, a pointer user space turns
 * into a small id. Without BTF (no UFFD_BY_FILE) a uffd is only known by the
 * (tgid << 32 | fd) that created it or that /proc showed at start. */
#ifndef UFFDTRACE_UFFD_ID_H
#define UFFDTRACE_UFFD_ID_H
#include "files.h"
#include "follow.h"

/* uffd -> the tgid whose memory it serves (its creator). LRU: a process that
 * exits without close(2) leaves its entry, and new uffds must still get one. */
BPF_TABLE("lru_hash", u64, u32, uffd_owner, 65536);

#ifdef UFFD_BY_FILE
/* The file behind descriptor fd of the current process (0: none). */
static __always_inline u64 fd_file(u64 fd)
{
	u64 files = read_u64(bpf_get_current_task() + OFF_TASK_FILES);
	u64 fdt = files ? read_u64(files + OFF_FILES_FDT) : 0;

	if (!fdt || fd >= read_u32(fdt + OFF_FDTABLE_MAX_FDS))
		return 0;
	return read_u64(read_u64(fdt + OFF_FDTABLE_FD) + fd * sizeof(void *));
}

/* The uffd a file is (0: it is none). */
static __always_inline u64 file_uffd(u64 file)
{
	if (!file_is_uffd(file))
		return 0;
#ifdef UFFD_ID_CTX
	return read_u64(file + OFF_FILE_PRIVATE_DATA);
#else
	return file_ino(file);
#endif
}

/* Closing descriptor fd drops the file's last reference: the uffd is
 * released (its waiters woken, its ranges unregistered). Other holders keep
 * it alive. file_ref_t (v6.13, 90ee6ed776c0 "fs: port files to file_ref")
 * counts one reference as 0; f_count before it as 1. */
static __always_inline bool last_reference(u64 file)
{
	return (long)read_u64(file + OFF_FILE_REFS) == FILE_ONE_REF;
}

static __always_inline u64 uffd_of_fd(u64 fd)
{
	return file_uffd(fd_file(fd));
}

/* The uffd descriptor fd names, about to be closed; *released: this close
 * releases it. */
static __always_inline u64 uffd_closing(u64 fd, bool *released)
{
	u64 file = fd_file(fd);
	u64 uffd = file_uffd(file);

	*released = uffd && last_reference(file);
	return uffd;
}

#else
BPF_HASH(uffd_fds, u64, u8, 65536);  /* (tgid << 32 | fd) of every known uffd */

static __always_inline u64 uffd_of_fd(u64 fd)
{
	u64 key = ((u64)current_tgid() << 32) | (u32)fd;

	return uffd_fds.lookup(&key) ? key : 0;
}

static __always_inline u64 uffd_closing(u64 fd, bool *released)
{
	u64 uffd = uffd_of_fd(fd);

	if (uffd)
		uffd_fds.delete(&uffd);
	*released = uffd != 0;  /* as far as this mode can tell */
	return uffd;
}
#endif

/* UFFD_FEATURE_EVENT_FORK: the child's uffd gets its file when a handler
 * reads the FORK message, as a descriptor in the reader's table (arg.fork.ufd).
 * forked: the parent's uffd -> the child's, until the parent's fork returns
 * and the child's ranges are copied (event_waits.h): at the fork's return, or
 * at the read when that returns last. */
struct fork_entry { u64 uffd; u64 ts; };   /* ts: when its message was read */
BPF_TABLE("lru_hash", u64, struct fork_entry, forked, 4096);
/* UFFD_FEATURE_EVENT_REMAP: the range moves with mremap (and keeps its
 * registration only then). remapped: tgid -> when a REMAP message of its
 * memory was last read (a read may come before the caller's sleep). */
BPF_TABLE("lru_hash", u32, u64, remapped, 4096);

#define UT_FORK_HOOK
static __always_inline void remap_message_read(u64 uffd)
{
	u32 *owner = uffd_owner.lookup(&uffd);
	u64 now = bpf_ktime_get_ns();

	if (owner)
		remapped.update(owner, &now);
}

static __always_inline void fork_message_read(u64 uffd, u64 fd)
{
	struct fork_entry f = { .uffd = uffd_of_fd(fd), .ts = bpf_ktime_get_ns() };

	if (f.uffd)
		forked.update(&uffd, &f);
}

/* After the read's messages: a fork that already returned gets its child's ranges. */
static __always_inline void fork_message_read_late(u64 uffd);   /* event_waits.h */

/* A uffd just created through descriptor fd: its id, and whose memory it serves. */
static __always_inline u64 uffd_created_as(u64 fd)
{
	u32 tgid = current_tgid();
	u64 uffd;

#ifdef UFFD_BY_FILE
	uffd = uffd_of_fd(fd);
#else
	u8 one = 1;

	uffd = ((u64)tgid << 32) | (u32)fd;
	uffd_fds.update(&uffd, &one);
#endif
	if (uffd)
		uffd_owner.update(&uffd, &tgid);
	return uffd;
}

/* The process whose memory the uffd serves: registered ranges are its own,
 * whoever asks (a handler in another process may register them). */
static __always_inline u32 uffd_owner_of(u64 uffd, u32 caller)
{
	u32 *owner = uffd_owner.lookup(&uffd);

	return owner ? *owner : caller;
}

#endif
