#!/bin/sh
# until_passes.sh N CMD [ARG...]: runs the kernel's uffd-unit-tests (CMD) up to
# N times, until one attempt exits 0, and exits with the last attempt's status.
#
# Why: the selftest's events tests race against themselves. The handler
# thread reads the REMOVE event, and that read resumes the child. The handler
# then unregisters the range. Between the two, the child can read its range,
# and that raises a missing fault. The handler reads it after the UNREGISTER,
# its UFFDIO_COPY fails with -ENOENT, and the test exits
# ("UFFDIO_COPY error: -2"). Untraced on Debian's 6.12 under TCG, 9 of 11 runs
# fail this way; traced runs are slower and fail rarely.
#
# Each failed attempt prints one line on stdout, with the last line of its
# stderr, so that the checks can tell this race from a real failure. Its
# stderr is passed on as it is.
n=$1
shift
i=1
while :; do
	{ err=$("$@" 2>&1 1>&3 3>&-); rc=$?; } 3>&1
	[ -n "$err" ] && printf '%s\n' "$err" >&2
	[ "$rc" = 0 ] && exit 0
	echo "until_passes: attempt $i of $n exited $rc: $(printf '%s\n' "$err" | tail -n 1)"
	[ "$i" -ge "$n" ] && exit "$rc"
	i=$((i + 1))
done
