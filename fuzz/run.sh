#!/usr/bin/env bash
# fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Long fuzzing runs with cargo-fuzz (nightly + libFuzzer, with its sanitizer coverage). Each
# target's corpus grows in fuzz/corpus/<target>/ (started from fuzz/seeds/<target>/; the smoke
# test replays it too); crashes are saved in fuzz/artifacts/<target>/ and reproduce with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
# Targets: reference manifest storage_conf layer tar_split (bodies in fuzz/bodies.rs).
# Default: 600 s per target. The layer and tar_split targets write into a scratch directory;
# run as root to fuzz device nodes and overlay whiteouts too.
#
# Without cargo-fuzz on a nightly toolchain (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`), runs the stable mutator of tests/fuzz_smoke.rs for as long.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(reference manifest storage_conf layer tar_split)

if cargo +nightly fuzz --version >/dev/null 2>&1; then
  for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "run.sh: fuzzing $t for ${secs}s" >&2
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1
  done
else
  echo "run.sh: no cargo-fuzz on nightly: running the stable mutator (tests/fuzz_smoke.rs) for ${secs}s per target" >&2
  cd ..
  CIMAGE_FUZZ_SECONDS="$secs" cargo test --test fuzz_smoke -- --nocapture
fi
