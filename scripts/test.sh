#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then
# runs lint, type checks, unit tests, the live host tier and the kprobe VM
# tier (Debian 6.1 and 6.12 under qemu TCG). Run as root.
# The seed-bug tier (tests/seedbugs) runs when the seed kernels are built;
#   scripts/test.sh --seed-kernels [pytest args]
# builds them first (scripts/seed_kernels.sh: about 20 minutes the first time,
# cached in /var/cache/uffdtrace/kernels), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
if [[ ${1:-} == --seed-kernels ]]; then
	shift
	scripts/seed_kernels.sh
fi
.venv/bin/ruff check uffdtrace tests scripts
.venv/bin/mypy uffdtrace
exec .venv/bin/python -m pytest -ra "$@"
