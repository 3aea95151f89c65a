#!/usr/bin/env bash
# The project's test command (README, .ci/run). Builds with the `failpoints` feature so the
# fault-injection tests can run; release builds never carry it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --all-features --locked "$@"
