#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then
# runs lint, type checks, unit tests, the live host tier and the kprobe VM
# tier (Debian 6.1 and 6.12 under qemu TCG). Run as root. pytest prints the
# slowest tests at the end (docs/testing.md: tiers and their times).
# The seed-bug tier (tests/seedbugs/test_seed_bugs.py, marker `seed`) is opt-in:
#   scripts/test.sh --seed-kernels [pytest args]
# builds the seed kernels first (scripts/seed_kernels.sh: about 20 minutes the
# first time, cached in /var/cache/uffdtrace/kernels), then runs the whole
# suite with it. Without the flag it does not run, cached or not.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
select=(-m "not seed")
if [[ ${1:-} == --seed-kernels ]]; then
	shift
	scripts/seed_kernels.sh
	export UFFDTRACE_SEED_TIER=1
	select=()
else
	echo "test.sh: the seed-bug tier is not run (opt-in: scripts/test.sh --seed-kernels)"
fi
.venv/bin/ruff check uffdtrace tests scripts
.venv/bin/mypy uffdtrace
exec .venv/bin/python -m pytest -ra --durations=25 "${select[@]}" "$@"
