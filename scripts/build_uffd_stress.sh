#!/usr/bin/env bash
# Builds the kernel's own userfaultfd selftests, uffd-stress and
# uffd-unit-tests (events, fork, remap, remove, poison, minor faults), from
# Debian's linux-source-6.12 package (scripts/setup.sh --test installs it),
# against that tree's uapi headers. Load that nobody here wrote: the live
# tiers and scripts/bench.py run them under the tracer.
#   scripts/build_uffd_stress.sh [OUT]   (default .build/uffd-stress, and
#   uffd-unit-tests beside it; cached)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.build/uffd-stress}
tarball=$(ls /usr/src/linux-source-6.12.tar.* 2>/dev/null | head -n 1 || true)
if [[ -z $tarball ]]; then
	echo "build_uffd_stress.sh: no /usr/src/linux-source-6.12.tar.*: apt-get install linux-source-6.12" >&2
	exit 1
fi
units=$(dirname "$out")/uffd-unit-tests
[[ -x $out && $out -nt $tarball && -x $units && $units -nt $tarball ]] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
top=linux-source-6.12
mm=$top/tools/testing/selftests/mm
tar -xf "$tarball" -C "$work" "$mm/uffd-stress.c" "$mm/uffd-unit-tests.c" "$top/mm/gup_test.h" "$mm/uffd-common.c" "$mm/uffd-common.h" "$mm/vm_util.c" \
	"$mm/vm_util.h" "$top/tools/testing/selftests/kselftest.h" "$top/include/uapi/linux/userfaultfd.h" \
	"$top/include/uapi/linux/fs.h" "$top/tools/include"
# The tree's uapi userfaultfd.h and fs.h (newer than the distribution's) come
# first; __packed is what the kernel's headers_install would have rewritten.
mkdir -p "$work/uapi/linux" "$(dirname "$out")"
cp "$work/$top/include/uapi/linux/userfaultfd.h" "$work/$top/include/uapi/linux/fs.h" "$work/uapi/linux/"
for prog in uffd-stress uffd-unit-tests; do
	gcc -O2 -w -U_FORTIFY_SOURCE '-D__packed=__attribute__((packed))' -I "$work/uapi" \
		-I "$work/$top/tools/testing/selftests" -I "$work/$top/tools/include" -o "$(dirname "$out")/$prog" \
		"$work/$mm/$prog.c" "$work/$mm/uffd-common.c" "$work/$mm/vm_util.c" -lrt -lpthread -lm
done
[[ $(basename "$out") == uffd-stress ]] || mv "$(dirname "$out")/uffd-stress" "$out"
echo "build_uffd_stress.sh: built $out and $units from $tarball"
