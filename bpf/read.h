/* The safe readers every program reads kernel and user memory with. */
#ifndef UFFDTRACE_READ_H
#define UFFDTRACE_READ_H

/* read_u64(addr) etc.: one value from kernel or user memory, 0 if unreadable. */
#define DEFINE_READER(name, type, helper)				\
	static __always_inline type name(u64 addr)			\
	{								\
		type v = 0;						\
		helper(&v, sizeof(v), (void *)addr);			\
		return v;						\
	}
DEFINE_READER(read_u64, u64, bpf_probe_read_kernel)
DEFINE_READER(read_u32, u32, bpf_probe_read_kernel)
DEFINE_READER(read_u8, u8, bpf_probe_read_kernel)
DEFINE_READER(read_user_u64, u64, bpf_probe_read_user)

#endif
