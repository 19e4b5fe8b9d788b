/* `uffdtrace why` (README, "uffdtrace why";
 * docs/architecture.md, "Explaining a hang"), compiled by bcc and run once:
 * a BPF iterator over every process's open files (task_file, v5.8, eaaacd23910f) that sends, for each
 * descriptor on a uffd, the descriptor and the waiters on the uffd's three
 * queues: faults whose message is queued and unread (fault_pending_wqh),
 * faults read and not yet woken (fault_wqh), and non-cooperative events
 * queued for their read (event_wqh). It reads, never changes anything.
 *
 * A file is a uffd when f_op->poll is userfaultfd_poll (USERFAULTFD_POLL,
 * from kallsyms); every member offset (OFF_*) comes from BTF
 * (uffdtrace/live/offsets.py). The lists are walked without their lock,
 * each entry read with bpf_probe_read_kernel: a waiter woken meanwhile may
 * be missed or seen twice, which user space tells by asking the thread. */
#include "files.h"

#define MAX_WAITERS 1024   /* per queue and uffd: that there are more is said, not who */

enum why_kind { WHY_FILE = 0, WHY_QUEUED = 1, WHY_READ = 2, WHY_EVENT = 3, WHY_MORE = 4 };

/* One record per uffd descriptor (WHY_FILE) and per waiter. */
struct why_record {
	u32 kind;
	u32 fd;          /* the holder's descriptor */
	u32 holder;      /* the holder's tgid */
	u32 tid;         /* a waiter: its thread and process */
	u32 tgid;
	u32 released;    /* WHY_FILE: the uffd was released (no more faults queue on it) */
	u64 ino;         /* the uffd's inode: /proc/PID/fd shows the same */
	u64 msg[4];      /* a waiter: its uffd_msg; WHY_FILE: features in msg[0]; WHY_MORE: the queue in msg[0] */
};

/* The iterator's context (kernel/bpf/task_iter.c): field offsets as the
 * kernel registered them for the task_file target. */
struct why_iter_meta { void *seq; u64 session_id; u64 seq_num; };
struct why_iter_task_file { struct why_iter_meta *meta; void *task; u32 fd; void *file; };

/* The loop's counter is dead after it, so that the verifier sees every
 * exit as one state (bcc cannot call a subprogram, and a live counter would
 * make the walks that follow verified once per exit). */
static __always_inline void send_queue(void *seq, struct why_record *r, u64 head, u32 kind)
{
	u64 node = read_u64(head);   /* list_head.next */

	r->kind = kind;
	for (int i = 0; i < MAX_WAITERS; i++) {
		u64 uwq, task;

		if (!node || node == head)
			return;
		uwq = node - OFF_WQE_ENTRY - OFF_UWQ_WQ;   /* container_of: the userfaultfd_wait_queue */
		task = read_u64(uwq + OFF_UWQ_WQ + OFF_WQE_PRIVATE);
		r->tid = read_u32(task + OFF_TASK_PID);
		r->tgid = read_u32(task + OFF_TASK_TGID);
		bpf_probe_read_kernel(r->msg, sizeof(r->msg), (void *)(uwq + OFF_UWQ_MSG));
		bpf_seq_write(seq, r, sizeof(*r));
		node = read_u64(node);
	}
	if (node && node != head) {   /* more waiters than MAX_WAITERS: said, not sent */
		r->kind = WHY_MORE;
		r->tid = r->tgid = 0;
		r->msg[0] = kind;
		bpf_seq_write(seq, r, sizeof(*r));
	}
}

int bpf_iter__task_file(struct why_iter_task_file *it)
{
	struct why_record r = {};
	struct why_iter_meta *meta = it->meta;
	void *seq = meta->seq;
	u64 file = (u64)it->file, task = (u64)it->task, ctx;

	if (!task)
		return 0;
	if (!file_is_uffd(file))
		return 0;
	ctx = read_u64(file + OFF_FILE_PRIVATE_DATA);
	r.kind = WHY_FILE;
	r.fd = it->fd;
	r.holder = read_u32(task + OFF_TASK_TGID);
	r.ino = file_ino(file);
	r.released = read_u8(ctx + OFF_CTX_RELEASED);
	r.msg[0] = read_u32(ctx + OFF_CTX_FEATURES);
	bpf_seq_write(seq, &r, sizeof(r));
	r.msg[0] = 0;
	send_queue(seq, &r, ctx + OFF_CTX_FAULT_PENDING_WQH + OFF_WQH_HEAD, WHY_QUEUED);
	send_queue(seq, &r, ctx + OFF_CTX_FAULT_WQH + OFF_WQH_HEAD, WHY_READ);
	send_queue(seq, &r, ctx + OFF_CTX_EVENT_WQH + OFF_WQH_HEAD, WHY_EVENT);
	return 0;
}
