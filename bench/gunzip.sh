#!/usr/bin/env bash
# bench/gunzip.sh BLOB... — compares flate2's gzip back ends (zlib-rs without and with runtime CPU
# detection, the latter as cimage builds it; miniz_oxide, zlib-ng) on the given gzip blobs, in-process,
# best of 5, against gzip -dc and pigz -dc on the same files.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/gunzip"
for backend in zlib-rs zlib-rs-detect miniz zlib-ng; do
  cargo build --release -q --no-default-features --features "$backend" --target-dir "target/$backend"
  printf '%-15s ' "$backend"
  "target/$backend/release/cimage-bench-gunzip" "$@"
done
best() { # best of 5 wall times of a shell command
  python3 - "$1" <<'PY'
import subprocess, sys, time
b = 1e9
for _ in range(5):
    t = time.perf_counter(); subprocess.run(sys.argv[1], shell=True, check=True); b = min(b, time.perf_counter() - t)
print("%.3f s" % b)
PY
}
printf '%-15s %s\n' "gzip -dc" "$(best "gzip -dc $* > /dev/null")"
printf '%-15s %s\n' "pigz -dc" "$(best "pigz -dc $* > /dev/null")"
printf '%-15s %s\n' "sha256sum" "$(best "sha256sum $* > /dev/null")"
