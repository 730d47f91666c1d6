#!/usr/bin/env bash
# The GPU smoke check (benchmarks/gpu_check.py): benchmarks/gpu_check.sh BUNDLE [--device cpu] [--work DIR] [--minutes M]
# Make BUNDLE first: python benchmarks/gpu_check.py bundle -o BUNDLE
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_check.py" run "$@"
