#!/usr/bin/env bash
# demo.sh — the offline demo, in one command (run as root from anywhere):
#
#   sudo tests/support/demo.sh
#
# Builds the library and cimagectl, starts Debian's docker-registry on a free loopback port,
# builds the fixture image (tests/support/mkimage.py) and publishes it there, then walks
# cimagectl through the seed flow against a throw-away store: store, pull, pull again, images,
# layers, container, containers, mount (and a look inside), write a file, unmount, delete,
# wipe. Everything (registry, mounts, files) is cleaned up at the end, also on failure.
#
# Env: DRIVER=overlay|vfs (default overlay), KEEP=1 keeps the work directory for inspection,
#      CARGO (default cargo), CC (default cc).
# Needs: cargo, a C compiler, python3, docker-registry, skopeo, curl (see .ci/run).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DRIVER=${DRIVER:-overlay}
CARGO=${CARGO:-cargo}
CC=${CC:-cc}

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: run me as root (mounting overlays and keeping file owners need it)" >&2
  exit 1
fi
for tool in "$CARGO" "$CC" python3 docker-registry skopeo curl; do
  command -v "$tool" >/dev/null || { echo "demo.sh: $tool not found (see .ci/run for the packages)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/cimage-demo.XXXXXX)
ROOT=$WORK/store/root
RUNROOT=$WORK/store/run
PORT=

cleanup() {
  local status=$?
  set +e
  if [ -n "$PORT" ]; then
    "$HERE/registry.sh" stop "$WORK/registry" "$PORT" 2>/dev/null
  fi
  # anything still mounted under the work directory, deepest first
  findmnt -rn -o TARGET | grep -F "$WORK" | sort -r | while read -r m; do umount -l "$m"; done
  if [ "${KEEP:-0}" = 1 ]; then
    echo "demo.sh: work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  if [ $status = 0 ]; then echo "demo.sh: done"; else echo "demo.sh: FAILED (status $status)" >&2; fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B= N=; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }

step "building the library (cargo build)"
(cd "$REPO" && "$CARGO" build)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
LIBDIR=$TARGET_DIR/debug

step "building cimagectl"
CTL=$WORK/cimagectl
RPATH=$LIBDIR
# The library may carry a SONAME (libcimage.so.0.1) that cargo does not create next to it:
# provide that name in a private directory searched after target/debug.
SONAME=$(readelf -d "$LIBDIR/libcimage.so" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [ -n "$SONAME" ] && [ ! -e "$LIBDIR/$SONAME" ]; then
  mkdir -p "$WORK/lib"
  ln -s "$LIBDIR/libcimage.so" "$WORK/lib/$SONAME"
  RPATH=$RPATH:$WORK/lib
fi
"$CC" -std=c11 -Wall -Wextra -Werror -I"$REPO/include" "$REPO/c-examples/cimagectl.c" \
  -L"$LIBDIR" -lcimage -Wl,-rpath,"$RPATH" -o "$CTL"
echo "$CTL"

step "starting a registry on a free loopback port"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$HERE/registry.sh" start "$WORK/registry" "$PORT"

step "building the fixture image and publishing it"
python3 "$HERE/mkimage.py" "$WORK/images" --sentinel "$WORK/sentinel" 2>/dev/null
"$HERE/publish.sh" "$WORK/images" "$PORT" "$WORK/registry"
IMAGE=docker://127.0.0.1:$PORT/cimage-test/fixture:t
NAME=127.0.0.1:$PORT/cimage-test/fixture:t

ctl() {
  printf '\n%s$ cimagectl -d %s -r %s -R %s %s%s\n' "$B" "$DRIVER" "$ROOT" "$RUNROOT" "$*" "$N" >&2
  "$CTL" -d "$DRIVER" -r "$ROOT" -R "$RUNROOT" "$@"
}

step "the seed flow"
ctl store
ctl pull --tls-verify=false "$IMAGE"
ctl pull --tls-verify=false "$IMAGE"
ctl images
ctl layers
ctl container --name demo "$NAME"
ctl containers
MNT=$(ctl mount demo | tail -1)
echo "$MNT"
printf '\n$ ls -la %s\n' "$MNT"
ls -la "$MNT"
printf '\n$ cat %s/etc/hostname\n' "$MNT"
cat "$MNT/etc/hostname"
printf '\n$ echo hello > %s/hello-from-the-demo.txt\n' "$MNT"
echo hello >"$MNT/hello-from-the-demo.txt"
ctl containers
ctl unmount demo
printf '\n(the file stays in the container'"'"'s layer:)\n'
find "$ROOT" -name hello-from-the-demo.txt -not -path '*/merged/*'
ctl delete demo
ctl delete "$NAME"
ctl images
ctl wipe
ctl layers
