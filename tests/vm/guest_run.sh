#!/bin/sh
# Runs inside a virtme-ng guest (the host's root filesystem, read-only):
# every scenario of one kernel in one boot, driving uffdtrace exactly as a
# user would. Results go to $1 (a --rwdir shared with the host).
#   guest_run.sh OUTDIR UFFDTRACE
# OUTDIR/scenarios holds one scenario a line (not the kernel command line,
# which virtme-ng's --exec travels on and which x86 caps at 2048 bytes):
# NAME|MODE|ARGS runs `uffdtrace --mode MODE ARGS` (ARGS split on spaces), or
# with MODE "run" the command ARGS itself (the labs of scripts/postcopy_lab.py);
# its output lands in OUTDIR/NAME.{out,err,rc} (NAME.out: its stdout), and
# its wall time in seconds in OUTDIR/times (the suite prints them at its end).
out=$1 uffdtrace=$2
export UFFDTRACE_CACHE="$out/cache"
uname -r > "$out/uname"
# Keep every tracepoint uffdtrace attaches enabled for the whole boot, twice,
# in two tracing instances that record nothing (tracing_on 0): the tracer's
# attach and detach then patch no kernel text. A tracepoint's static key
# stays on, and its static call stays on the iterator, which it leaves only
# for a tracepoint with exactly one probe (kernel/tracepoint.c,
# tracepoint_update_call; an unchanged call site is not rewritten). Under TCG
# a vCPU can go on running kernel text another vCPU has just patched (no
# serializing IPIs, as on hardware), and the guests died of exactly that: a
# soft lockup on the syscall tracepoints' jump label in syscall_trace_enter
# (6.1), int3 Oopses on sched_process_fork's site in kernel_clone and on
# sys_enter's static call in syscall_trace_enter (6.12), and one on
# sched_switch's site in __schedule as this very loop enabled it with both
# vCPUs up. So the other CPUs are offline while it runs: one vCPU patching its
# own text is safe. The events enabled are listed in OUTDIR/kept_tracepoints.
tracing=/sys/kernel/tracing
[ -d "$tracing/instances" ] || mount -t tracefs tracefs "$tracing"
others=$(ls -d /sys/devices/system/cpu/cpu[1-9]*/online 2> /dev/null)
for cpu in $others; do echo 0 > "$cpu"; done
events=$(grep -ho 'TRACEPOINT_PROBE([a-z_]*, *[a-z_0-9]*)' "$(dirname "$0")"/../../bpf/* | sort -u |
	sed 's/TRACEPOINT_PROBE(\([a-z_]*\), *\([a-z_0-9]*\))/\1\/\2/')
for keep in "$tracing/instances/uffdtrace-keep1" "$tracing/instances/uffdtrace-keep2"; do
	mkdir -p "$keep" && echo 0 > "$keep/tracing_on"
	for event in $events; do
		echo 1 2> /dev/null > "$keep/events/$event/enable" && echo "$event"
	done > "$out/kept_tracepoints"
done
for cpu in $others; do echo 1 > "$cpu"; done
nproc > "$out/cpus_online"
"$uffdtrace" doctor > "$out/doctor.txt" 2>&1
echo $? > "$out/doctor.rc"
# One scenario that hangs fails alone (rc 124), not the whole boot, and
# leaves what it was doing in OUTDIR/NAME.hang: every thread's kernel stack
# and wait channel, Python's stacks (py-spy), and the kernel's view of all
# CPUs and blocked tasks. Then TERM, and KILL 20 s later.
watched() {
	limit=$1 name=$2
	shift 2
	"$@" > "$out/$name.out" 2> "$out/$name.err" < /dev/null &
	pid=$!
	(
		sleep "$limit"
		kill -0 "$pid" 2> /dev/null || exit 0
		hung "$pid" > "$out/$name.hang" 2>&1
		kill -TERM "$pid"
		sleep 20
		kill -KILL "$pid" 2> /dev/null
	) &
	watchdog=$!
	wait "$pid"
	rc=$?
	kill "$watchdog" 2> /dev/null
	if [ -e "$out/$name.hang" ]; then
		rc=124
	fi
	return "$rc"
}

hung() {
	for pid in "$1" $(pgrep -P "$1"); do
		for task in /proc/"$pid"/task/*; do
			echo "== $task $(cat "$task/comm") state $(cut -d' ' -f3 "$task/stat") wchan $(cat "$task/wchan")"
			cat "$task/stack"
		done
		"$(dirname "$uffdtrace")/py-spy" dump --native --pid "$pid"
	done
	echo l > /proc/sysrq-trigger
	echo w > /proc/sysrq-trigger
	dmesg | tail -n 400
}

while IFS='|' read -r name mode args; do
	if [ "$name" = move_pageout ]; then
		# MADV_PAGEOUT only unmaps anon pages (the rmap walk) when they can
		# go to swap: give the guest a small zram swap device.
		modprobe zram num_devices=1 && echo 256M > /sys/block/zram0/disksize &&
			mkswap /dev/zram0 >/dev/null && swapon /dev/zram0
		cat /proc/swaps > "$out/swaps"
	fi
	started=$(date +%s)
	# ARGS is a word list on purpose (SC2086).
	if [ "$mode" = run ]; then
		# shellcheck disable=SC2086
		watched 1500 "$name" $args
	else
		# shellcheck disable=SC2086
		watched 600 "$name" "$uffdtrace" --mode "$mode" $args
	fi
	echo $? > "$out/$name.rc"
	echo "$name $(($(date +%s) - started))" >> "$out/times"
done < "$out/scenarios"
echo done > "$out/finished"
