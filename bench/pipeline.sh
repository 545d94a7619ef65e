#!/usr/bin/env bash
# pipeline.sh DEST seq|par DECOMPRESSOR URL DIGEST [URL DIGEST ...]
#
# The machine's best single pass over an image's layers: for each layer
#     curl URL | tee >(sha256sum) | DECOMPRESSOR -dc | tar -x -C DEST/N
# (tee feeds sha256sum through a fifo, which is the same pass but can be waited for)
# and the digest checked at the end, as a puller must. "seq" runs the layers one after
# another, "par" two at a time.
set -euo pipefail
dest=$1 mode=$2 dec=$3
shift 3

layer() { # layer N URL DIGEST
  local dir=$dest/$1 sum hasher
  mkdir -p "$dir"
  # tee's second output goes to sha256sum through a fifo, so that it can be waited for.
  mkfifo "$dir.fifo"
  sha256sum < "$dir.fifo" > "$dir.sha256" &
  hasher=$!
  curl -sf "$2" | tee "$dir.fifo" | "$dec" -dc | tar --numeric-owner -x -C "$dir"
  wait "$hasher"
  sum=$(cut -d' ' -f1 "$dir.sha256")
  [ "sha256:$sum" = "$3" ] || { echo "pipeline: $2: digest sha256:$sum, want $3" >&2; return 1; }
}

n=0
running=()
while [ $# -gt 0 ]; do
  if [ "$mode" = seq ]; then
    layer "$n" "$1" "$2"
  else
    layer "$n" "$1" "$2" &
    running+=($!)
    if [ ${#running[@]} -ge 2 ]; then
      wait "${running[0]}"
      running=("${running[@]:1}")
    fi
  fi
  n=$((n + 1))
  shift 2
done
for pid in "${running[@]}"; do wait "$pid"; done
