#!/usr/bin/env bash
# publish.sh OUTDIR PORT [REGISTRY_DIR]
#
# Pushes every OCI layout that mkimage.py wrote to OUTDIR to the registry on 127.0.0.1:PORT as
# 127.0.0.1:PORT/cimage-test/NAME:t (the index of `multi` with all its platforms), keeping the
# manifest digests (skopeo --preserve-digests).
#
# hostile-lying-digest cannot be pushed as it is (the registry checks digests on upload): its
# honest twin is pushed under that name and then, when REGISTRY_DIR (the DIR given to
# registry.sh) is known, the layer's bytes in the registry's storage are replaced by the lying
# ones, so that the registry serves bytes that do not match the digest it announces.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 OUTDIR PORT [REGISTRY_DIR]" >&2; exit 2; }
OUT=$(cd "$1" && pwd)
PORT=$2
REGDIR=${3:-}
DEST="127.0.0.1:$PORT/cimage-test"
TAG=t

push() { # push LAYOUT_DIR NAME [extra skopeo args]
  local layout=$1 name=$2
  shift 2
  skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false "$@" \
    "oci:$layout:$TAG" "docker://$DEST/$name:$TAG"
}

count=0
for layout in "$OUT"/*/; do
  layout=${layout%/}
  name=$(basename "$layout")
  [ -f "$layout/oci-layout" ] || continue
  case "$name" in
    *.honest) continue ;;
    hostile-lying-digest)
      if [ -z "$REGDIR" ]; then
        echo "publish.sh: no REGISTRY_DIR given: not publishing $name" >&2
        continue
      fi
      push "$OUT/$name.honest" "$name"
      # The one blob of the lying layout whose bytes do not hash to its name.
      for blob in "$layout"/blobs/sha256/*; do
        hex=$(basename "$blob")
        if [ "$(sha256sum <"$blob" | cut -d' ' -f1)" != "$hex" ]; then
          data="$REGDIR/storage/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
          [ -f "$data" ] || { echo "publish.sh: $data missing after the push" >&2; exit 1; }
          cp "$blob" "$data"
        fi
      done
      ;;
    multi) push "$layout" "$name" --all ;;
    *) push "$layout" "$name" ;;
  esac
  count=$((count + 1))
done
echo "publish.sh: $count images pushed to $DEST" >&2
