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
"$uffdtrace" doctor > "$out/doctor.txt" 2>&1
echo $? > "$out/doctor.rc"
while IFS='|' read -r name mode args; do
	if [ "$name" = move_pageout ]; then
		# MADV_PAGEOUT only unmaps anon pages (the rmap walk) when they can
		# go to swap: give the guest a small zram swap device.
		modprobe zram num_devices=1 && echo 256M > /sys/block/zram0/disksize &&
			mkswap /dev/zram0 >/dev/null && swapon /dev/zram0
		cat /proc/swaps > "$out/swaps"
	fi
	started=$(date +%s)
	# One scenario that hangs fails alone (rc 124), not the whole boot.
	# ARGS is a word list on purpose (SC2086).
	if [ "$mode" = run ]; then
		# shellcheck disable=SC2086
		timeout 1500 $args > "$out/$name.out" 2> "$out/$name.err" < /dev/null
	else
		# shellcheck disable=SC2086
		timeout 900 "$uffdtrace" --mode "$mode" $args > "$out/$name.out" 2> "$out/$name.err" < /dev/null
	fi
	echo $? > "$out/$name.rc"
	echo "$name $(($(date +%s) - started))" >> "$out/times"
done < "$out/scenarios"
echo done > "$out/finished"
