#!/usr/bin/env bash
# Set up uffdtrace on this host (root, idempotent).
#   scripts/setup.sh          what the tool needs: bcc, headers, .venv with uffdtrace
#   scripts/setup.sh --test   also what the test suite needs: qemu, Debian 6.1 and 6.12
#                             kernels + headers (the kprobe VM tier), pytest, virtme-ng,
#                             uffd-stress built from Debian's linux-source-6.12, and chromium
#                             (the HTML report is rendered by a real browser), prometheus
#                             (serve is scraped by a real server; promtool checks), tmux and
#                             bpftool (top is driven through tmux; no probe may stay behind),
#                             criu (the lazy-restore lab, run in the VM tier), and the
#                             kernel build tools scripts/seed_kernels.sh needs (opt-in builds)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WITH_TEST=0
[[ ${1:-} == --test ]] && WITH_TEST=1
if [[ $EUID -ne 0 ]]; then
	echo "setup.sh: must run as root (it installs packages and links kernel headers)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The VM kernels boot through virtme-ng without an initramfs: skip building one.
export INITRD=No

pkgs=(python3-bpfcc libbpfcc python3-venv python3-pip gcc libc6-dev dwarves)
if ((WITH_TEST)); then
	pkgs+=(qemu-system-x86 busybox-static util-linux
		linux-image-amd64 linux-headers-amd64 linux-image-6.12-amd64 linux-headers-6.12-amd64
		linux-source-6.12 chromium prometheus tmux bpftool criu
		flex bison bc libelf-dev cpio)
fi
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
apt_updated=0
apt_install() {
	((apt_updated)) || { apt-get update -qq; apt_updated=1; }
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ((${#missing[@]})); then
	echo "setup.sh: installing ${missing[*]}"
	apt_install "${missing[@]}"
fi

# Kernel headers for the running kernel: bcc compiles against them.
rel=$(uname -r)
mod=/lib/modules/$rel
if [[ ! -e $mod/build ]]; then
	if apt-cache show "linux-headers-$rel" >/dev/null 2>&1; then
		apt_install "linux-headers-$rel"
	fi
fi
if [[ ! -e $mod/build ]]; then
	# No headers exist for this kernel (e.g. a custom 6.18 build): link the
	# newest installed Debian headers. Only programs that read no kernel
	# struct through header types compile correctly against them, which is
	# how uffdtrace's programs are written (struct offsets come from BTF).
	newest=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
	if [[ -z $newest ]]; then
		apt_install linux-headers-amd64
		newest=$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -n 1)
	fi
	ver=${newest#/usr/src/linux-headers-}
	mkdir -p "$mod"
	ln -sfn "$newest" "$mod/build"
	ln -sfn "$(readlink -f "/lib/modules/$ver/source" 2>/dev/null || echo "${newest%-amd64}-common")" "$mod/source"
	echo "setup.sh: no headers for $rel; linked $newest (tracepoint-only programs compile against them)"
fi

# A venv that sees the distribution's bcc module.
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
	rm -rf .venv
	/usr/bin/python3 -m venv --system-site-packages .venv
fi
extra=""
((WITH_TEST)) && extra="[test]"
.venv/bin/pip install -q --disable-pip-version-check -e "$ROOT$extra"
.venv/bin/python -c 'import bcc' || { echo "setup.sh: bcc not importable from .venv" >&2; exit 1; }
((WITH_TEST)) && scripts/build_uffd_stress.sh
echo "setup.sh: ready: $ROOT/.venv/bin/uffdtrace"
