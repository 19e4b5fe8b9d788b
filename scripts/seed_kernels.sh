#!/usr/bin/env bash
# Build the seed-bug kernels: small x86-64 kernels from Debian's
# linux-source-6.12, each variant a patch under scripts/seed-patches/:
#   stock     the source as shipped (no patch): uffdtrace must flag nothing
#   refile    refile_seq's retry removed (a wake-up during read()'s refile is lost)
#   mustwait  userfaultfd_must_wait()'s recheck removed (a copy racing the fault's queueing)
#   windows   no fix reverted: delays in folio_lock_anon_vma_read() and aio_poll_wake()
#   aiopoll   363bee27e258 undone: a poll request leaves the uffd's waitqueue on wake-up
#   moverecheck  880a99b60d46's re-check undone: an rmap walk keeps the anon_vma a moved folio left
# Configuration: virtme-ng's minimal one (vng --kconfig) plus
# scripts/seed-patches/uffdtrace.config. One source tree, built in place, serves
# every variant (a patch touches a file or two: after the first build,
# about 18 minutes on 2 cores, a variant rebuilds in about 2); its headers are
# what bcc compiles against in the guest, linked as /lib/modules/<release>/build.
# Cached: /var/cache/uffdtrace/kernels/<variant>-<hash of version, config, patch>/bzImage,
# written whole or not at all. Prints one line per variant: VARIANT PATH_TO_BZIMAGE.
# With --cached it builds nothing: it prints the lines when every variant asked
# for is built, else says which are not and exits 3.
#   scripts/seed_kernels.sh [--jobs N] [--cached] [VARIANT...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PATCHES=$ROOT/scripts/seed-patches
CACHE=${UFFDTRACE_KERNEL_CACHE:-/var/cache/uffdtrace/kernels}
TARBALL=/usr/src/linux-source-6.12.tar.xz
NEED_GIB=12
ALL=(stock refile mustwait windows aiopoll moverecheck)

die() { echo "seed_kernels.sh: $*" >&2; exit 1; }

jobs=$(nproc)
cached_only=0
variants=()
while (($#)); do
	case $1 in
		--jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
		--jobs=*) jobs=${1#--jobs=}; shift ;;
		--cached) cached_only=1; shift ;;
		-h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		-*) die "unknown option $1" ;;
		*) variants+=("$1"); shift ;;
	esac
done
((${#variants[@]})) || variants=("${ALL[@]}")
for v in "${variants[@]}"; do
	[[ $v == stock || -f $PATCHES/$v.patch ]] || die "no variant $v (known: ${ALL[*]})"
done

[[ $EUID -eq 0 ]] || die "must run as root (the cache in $CACHE, the /lib/modules link)"
[[ -f $TARBALL ]] || die "linux-source-6.12 is not installed ($TARBALL missing: apt-get install linux-source-6.12)"
version=$(dpkg-query -W -f='${Version}' linux-source-6.12)
tree=$CACHE/tree-${version//\~/_}  # no "~": virtme-ng takes the tree as a --rodir
hash_of() { cat "$@" | sha256sum | cut -c1-12; }
variant_dir() {
	local patch_file=/dev/null
	[[ $1 == stock ]] || patch_file=$PATCHES/$1.patch
	echo "$CACHE/$1-$(hash_of "$PATCHES/uffdtrace.config" "$patch_file" <(echo "$version"))"
}
if ((cached_only)); then
	absent=()
	for v in "${variants[@]}"; do
		[[ -f $(variant_dir "$v")/bzImage && -d $tree ]] || absent+=("$v")
	done
	((${#absent[@]} == 0)) || { echo "seed_kernels.sh: not built: ${absent[*]} (scripts/seed_kernels.sh builds them)" >&2; exit 3; }
	for v in "${variants[@]}"; do echo "$v $(variant_dir "$v")/bzImage"; done
	exit 0
fi
missing=()
for tool in gcc make flex bison bc pahole cpio; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ -f /usr/include/gelf.h ]] || missing+=(libelf-dev)
((${#missing[@]} == 0)) || die "missing build tools: ${missing[*]} (scripts/setup.sh --test installs them)"
VNG=$ROOT/.venv/bin/vng
[[ -x $VNG ]] || die "no virtme-ng in .venv (scripts/setup.sh --test)"
mkdir -p "$CACHE"
free_gib=$(($(df --output=avail -k "$CACHE" | tail -n 1) / 1024 / 1024))
if [[ ! -d $tree ]] && ((free_gib < NEED_GIB)); then
	die "not enough disk in $CACHE: ${free_gib} GiB free, a build needs ${NEED_GIB} GiB"
fi

# Undo whatever a patch did to the tree however the script ends.
applied=""
cleanup() {
	if [[ -n $applied ]]; then
		patch -s -R -p1 -d "$tree" < "$applied" || echo "seed_kernels.sh: could not revert $applied in $tree" >&2
	fi
	rm -rf "$CACHE"/*.tmp
}
trap cleanup EXIT

if [[ ! -d $tree ]]; then
	echo "seed_kernels.sh: unpacking linux-source-6.12 $version" >&2
	rm -rf "$tree.tmp" && mkdir -p "$tree.tmp"
	tar -xJf "$TARBALL" -C "$tree.tmp" --strip-components=1
	mv "$tree.tmp" "$tree"
fi

config_hash=$(hash_of "$PATCHES/uffdtrace.config" <(echo "$version"))
if [[ ! -f $tree/.config || $(cat "$tree/.uffdseed-config" 2>/dev/null) != "$config_hash" ]]; then
	echo "seed_kernels.sh: configuring (vng --kconfig + uffdtrace.config)" >&2
	(cd "$tree" && PATH=$(dirname "$VNG"):$PATH "$VNG" --kconfig --config "$PATCHES/uffdtrace.config" \
		>"$tree/.uffdseed-kconfig.log" 2>&1) || die "vng --kconfig failed (see $tree/.uffdseed-kconfig.log)"
	for item in CONFIG_DEBUG_INFO_BTF CONFIG_KPROBES CONFIG_USERFAULTFD CONFIG_BPF_SYSCALL CONFIG_FTRACE_SYSCALLS; do
		grep -q "^$item=y" "$tree/.config" || die "the configuration lost $item=y (see $tree/.config)"
	done
	echo "$config_hash" > "$tree/.uffdseed-config"
fi

release=""
for v in "${variants[@]}"; do
	patch_file=/dev/null
	[[ $v == stock ]] || patch_file=$PATCHES/$v.patch
	out=$(variant_dir "$v")
	if [[ ! -f $out/bzImage ]]; then
		if [[ $v != stock ]]; then
			patch -s -p1 --forward -d "$tree" < "$patch_file" || die "$v.patch does not apply to $version"
			applied=$patch_file
		fi
		echo "seed_kernels.sh: building $v (make -j$jobs bzImage; log in $out.tmp/build.log)" >&2
		rm -rf "$out.tmp" && mkdir -p "$out.tmp"
		start=$SECONDS
		if ! make -C "$tree" -j"$jobs" bzImage > "$out.tmp/build.log" 2>&1; then
			failed=$CACHE/$v-failed-build.log  # kept: the .tmp directory goes
			cp "$out.tmp/build.log" "$failed"
			first=$(grep -m 1 -E '(error|Error)[: ]' "$failed" || tail -n 1 "$failed")
			die "building $v failed: $first (whole log: $failed)"
		fi
		cp "$tree/arch/x86/boot/bzImage" "$out.tmp/bzImage"
		cp "$patch_file" "$out.tmp/variant.patch"
		echo "$((SECONDS - start))" > "$out.tmp/build-seconds"
		if [[ -n $applied ]]; then
			patch -s -R -p1 -d "$tree" < "$applied"
			applied=""
		fi
		rm -rf "$out" && mv "$out.tmp" "$out"
	fi
	release=$(make -s -C "$tree" kernelrelease)
	echo "$v $out/bzImage"
done

# bcc in the guest compiles against the tree the kernels came from.
mkdir -p "/lib/modules/$release"
ln -sfn "$tree" "/lib/modules/$release/build"
ln -sfn "$tree" "/lib/modules/$release/source"
