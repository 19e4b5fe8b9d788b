"""The live side: probing the kernel, planning and attaching the BPF programs,
reading the ring buffer, and what /proc says (procscan)."""
