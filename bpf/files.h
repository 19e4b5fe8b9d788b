/* A struct file read through BTF offsets (OFF_*): whether it is a uffd, and
 * its inode number, the id /proc/PID/fd shows. Each helper exists where the
 * program is given what it needs. */
#ifndef UFFDTRACE_FILES_H
#define UFFDTRACE_FILES_H
#include "read.h"

#if defined(OFF_FILE_F_OP) && defined(OFF_FOPS_POLL) && defined(USERFAULTFD_POLL)
/* A uffd's f_op->poll is userfaultfd_poll (USERFAULTFD_POLL, from kallsyms:
 * the fops themselves are data, absent without KALLSYMS_ALL). */
static __always_inline bool file_is_uffd(u64 file)
{
	u64 fops = file ? read_u64(file + OFF_FILE_F_OP) : 0;

	return fops && read_u64(fops + OFF_FOPS_POLL) == USERFAULTFD_POLL;
}
#endif

#if defined(OFF_FILE_F_INODE) && defined(OFF_INODE_INO)
static __always_inline u64 file_ino(u64 file)
{
	return read_u64(read_u64(file + OFF_FILE_F_INODE) + OFF_INODE_INO);
}
#endif

#endif
