#!/bin/sh
# Runs inside a virtme-ng guest (the host's root filesystem, read-only):
# every kprobe scenario of one kernel in one boot, driving uffdtrace exactly
# as a user would. Results go to $1 (a --rwdir shared with the host).
#   guest_run.sh OUTDIR UFFDTRACE WORKLOAD_DIR SCENARIO...
# A scenario is NAME:WORKLOAD:ARG:MODE (ARG may be empty, MODE defaults to
# kprobe); its output lands in OUTDIR/NAME.{jsonl,err,rc}.
out=$1 uffdtrace=$2 wl=$3
shift 3
export UFFDTRACE_CACHE="$out/cache"
uname -r > "$out/uname"
"$uffdtrace" doctor > "$out/doctor.txt" 2>&1
echo $? > "$out/doctor.rc"
for scenario in "$@"; do
	IFS=: read -r name prog arg mode <<-END
	$scenario
	END
	if [ "$name" = move_pageout ]; then
		# MADV_PAGEOUT only unmaps anon pages (the rmap walk) when they can
		# go to swap: give the guest a small zram swap device.
		modprobe zram num_devices=1 && echo 256M > /sys/block/zram0/disksize &&
			mkswap /dev/zram0 >/dev/null && swapon /dev/zram0
		cat /proc/swaps > "$out/swaps"
	fi
	"$uffdtrace" --mode "${mode:-kprobe}" trace --events -j -- "$wl/$prog" $arg > "$out/$name.jsonl" 2> "$out/$name.err"
	echo $? > "$out/$name.rc"
done
echo done > "$out/finished"
