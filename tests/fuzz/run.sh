#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (FUZZ_SECS, default 300) with
# cargo fuzz on nightly, starting from the kept corpus and adding to it.
# New corpus entries are kept when they are small; a crash is left in
# tests/fuzz/artifacts/<target>/ and ends the script with its status.
# Usage: bash tests/fuzz/run.sh [target…]   (targets: config units allow exchange tape)
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
secs=${FUZZ_SECS:-300}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config units allow exchange tape)
for t in "${targets[@]}"; do
  echo "== $t for ${secs}s"
  cargo +nightly fuzz run --fuzz-dir . "$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048 -timeout=5
done
