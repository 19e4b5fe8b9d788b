#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then
# runs lint, type checks, unit tests, the live host tier and the kprobe VM
# tier (Debian 6.1 and 6.12 under qemu TCG). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check uffdtrace tests scripts
.venv/bin/mypy uffdtrace
exec .venv/bin/python -m pytest -ra "$@"
