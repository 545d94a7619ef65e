#!/usr/bin/env bash
# bench/dirty_tag.sh — pulling a second tag whose layers are all present, beside 512 MiB of
# unrelated data not yet written back, on a fresh loop-mounted ext4 per round. Only the image
# record and its manifest/config are written, so the pull should not wait for the dirty data.
#
#   sudo bench/dirty_tag.sh                      # the built cimagectl against skopeo
#   sudo bench/dirty_tag.sh old=/dir1 new=/dir2  # also A/B builds: dirs holding libcimage.so.0.1
#
# Needs what bench/run.sh builds ($WORK/bin/cimagectl, linked against target/release) and
# docker-registry, umoci, skopeo. Environment: WORK=/var/tmp/cimage-bench PORT=5077 ROUNDS=4
# DIRTY_MIB=512.
set -euo pipefail
WORK=${WORK:-/var/tmp/cimage-bench}
PORT=${PORT:-5077}
ROUNDS=${ROUNDS:-4}
DIRTY_MIB=${DIRTY_MIB:-512}
CTL=$WORK/bin/cimagectl
[ "$(id -u)" = 0 ] || { echo "run as root (loop and overlay mounts)" >&2; exit 1; }
[ -x "$CTL" ] || { echo "no $CTL: run 'sudo bench/run.sh setup' first" >&2; exit 1; }
VARIANTS=("$@")
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=(cimage=)
VARIANTS+=(skopeo=)

T=$(mktemp -d /var/tmp/dirty-tag.XXXXXX)
cleanup() {
  umount -R "$T/mnt" 2> /dev/null || true
  [ -n "${REG_PID:-}" ] && kill "$REG_PID" 2> /dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

# Two tags of one 20 MiB layer: b differs from a only in its config.
mkdir -p "$T/reg" "$T/mnt"
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$T/reg" "$PORT" > "$T/reg.yml"
docker-registry serve "$T/reg.yml" > "$T/reg.log" 2>&1 &
REG_PID=$!
umoci init --layout "$T/L"
umoci new --image "$T/L:a"
umoci unpack --image "$T/L:a" "$T/bundle" > /dev/null
head -c 20000000 /dev/urandom > "$T/bundle/rootfs/blob.bin"
umoci repack --image "$T/L:a" "$T/bundle"
umoci config --image "$T/L:a" --config.env FOO=1 --tag b
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/v2/" > /dev/null && break; sleep 0.1; done
for tag in a b; do
  skopeo copy -q "oci:$T/L:$tag" "docker://127.0.0.1:$PORT/t:$tag" --dest-tls-verify=false
done

pull() { # variant libdir tag
  local store="$T/mnt/root" run="$T/run"
  if [ "$1" = skopeo ]; then
    skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$PORT/t:$3" \
      "containers-storage:[overlay@$store+$run]127.0.0.1:$PORT/t:$3"
  else
    LD_LIBRARY_PATH=$2 "$CTL" -d overlay -r "$store" -R "$run" pull --tls-verify=false \
      "docker://127.0.0.1:$PORT/t:$3" > /dev/null 2> "$T/pull.log" || {
      cat "$T/pull.log" >&2
      return 1
    }
  fi
}

truncate -s 3G "$T/disk.img"
echo "second-tag pull beside $DIRTY_MIB MiB of unwritten data, fresh ext4 each time (seconds):"
for round in $(seq "$ROUNDS"); do
  for v in "${VARIANTS[@]}"; do
    name=${v%%=*} lib=${v#*=}
    mkfs.ext4 -q -F "$T/disk.img"
    mount -o loop "$T/disk.img" "$T/mnt"
    pull "$name" "$lib" a
    sync
    dd if=/dev/zero of="$T/mnt/dirty" bs=1M count="$DIRTY_MIB" status=none
    start=$(date +%s.%N)
    pull "$name" "$lib" b
    end=$(date +%s.%N)
    printf '  round %d  %-8s %.3f\n' "$round" "$name" "$(echo "$end - $start" | bc)"
    umount -R "$T/mnt/root/overlay" 2> /dev/null || true
    umount -R "$T/mnt"
    rm -rf "$T/run"
  done
done
