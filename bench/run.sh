#!/usr/bin/env bash
# bench/run.sh — cimage against skopeo, podman and the machine's own limits, in one run.
#
#   sudo bench/run.sh            # full run (~20 min on 2 cores): every image, 5 rounds
#   sudo QUICK=1 bench/run.sh    # a few minutes: debian:bookworm only, 3 rounds
#   sudo bench/run.sh setup      # only install, build, debootstrap, make and push the images
#
# What it does: installs the Debian packages it lacks (debootstrap, docker-registry, skopeo,
# podman, containers-storage, ...); builds the library and cimagectl in release mode; runs
# debootstrap --variant=minbase once (the tree is cached as a tarball under $WORK/cache); cuts
# the benchmark images from it (bench/images.py); serves them from docker-registry on 127.0.0.1;
# then bench/measure.py times every tool on every image, alternating the tools round by round,
# with the store on a fresh loop-mounted ext4 and on a tmpfs, and bench/report.py prints the
# medians (min–max) and the ratios, and writes the markdown report.
#
# Environment (defaults):
#   QUICK=0            1: one image, 3 rounds, fewer limit measurements
#   WORK=/var/tmp/cimage-bench    caches, stores, registry storage, results
#   PORT=5055          registry port on 127.0.0.1
#   ROUNDS=5 (3 quick) cold-pull rounds per tool, image and file system
#   IMAGES             default: all five (quick: debian:bookworm)
#   FILESYSTEMS="ext4 tmpfs"
#   REPORT=$WORK/report.md
#   MIRROR             Debian mirror for debootstrap (default: the first one in apt's sources)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
QUICK=${QUICK:-0}
WORK=${WORK:-/var/tmp/cimage-bench}
PORT=${PORT:-5055}
SUITE=bookworm
if [ "$QUICK" = 1 ]; then
  ROUNDS=${ROUNDS:-3}
  IMAGES=${IMAGES:-"debian:bookworm"}
else
  ROUNDS=${ROUNDS:-5}
  IMAGES=${IMAGES:-"debian:bookworm debian:4layer synthetic:8x32 smallfiles:50k debian:zstd"}
fi
FILESYSTEMS=${FILESYSTEMS:-"ext4 tmpfs"}
REPORT=${REPORT:-$WORK/report.md}
STEP=${1:-all}

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, loop and overlay mounts, root stores)"
case "$STEP" in all | setup) ;; *) die "usage: $0 [all|setup]" ;; esac

# ---------------------------------------------------------------------------- packages
need=()
for pair in debootstrap:debootstrap docker-registry:docker-registry skopeo:skopeo podman:podman \
  containers-storage:containers-storage curl:curl pigz:pigz zstd:zstd mkfs.ext4:e2fsprogs losetup:mount \
  python3:python3 cc:gcc cargo:cargo; do
  command -v "${pair%%:*}" > /dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  [[ " ${need[*]} " == *" cargo "* ]] && die "cargo is missing: install a Rust toolchain first"
  log "installing ${need[*]}"
  apt-get update -q > /dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" > /dev/null
fi
grep -qw overlay /proc/filesystems || modprobe overlay 2> /dev/null || die "no overlay file system"

mkdir -p "$WORK"/{cache,bin,results}

# ---------------------------------------------------------------------------- builds
# Release library; cimagectl and the micro-benchmark in C at -O2 against it.
log "cargo build --release"
(cd "$REPO" && cargo build --release -q)
LIB=$REPO/target/release
[ -e "$LIB/libcimage.so.0.1" ] || ln -sf libcimage.so "$LIB/libcimage.so.0.1"
for prog in "$REPO/c-examples/cimagectl.c" "$HERE/micro.c"; do
  out=$WORK/bin/$(basename "$prog" .c)
  if [ ! -x "$out" ] || [ "$prog" -nt "$out" ] || [ "$LIB/libcimage.so" -nt "$out" ]; then
    cc -std=c11 -O2 -Wall -Wextra -Werror -I"$REPO/include" "$prog" -L"$LIB" -lcimage \
      -Wl,-rpath,"$LIB" -o "$out"
  fi
done
# The launcher every measured command runs under (wall time, CPU, peak RSS; see spawn.c).
cc -std=c11 -O2 -Wall -Wextra -Werror "$HERE/spawn.c" -o "$WORK/bin/spawn"

# ---------------------------------------------------------------------------- rootfs (cached)
ROOTFS=$WORK/cache/$SUITE-minbase.tar
if [ ! -s "$ROOTFS" ]; then
  if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2> /dev/null \
      | awk '$1 == "deb" { print $2 }' | grep -m1 '/debian/\?$' || true)
    [ -n "$MIRROR" ] || MIRROR=$(cat /etc/apt/sources.list.d/*.sources 2> /dev/null \
      | awk '$1 == "URIs:" { print $2 }' | grep -m1 '/debian/\?$' || true)
  fi
  [ -n "$MIRROR" ] || die "no Debian mirror in apt's sources; set MIRROR"
  tree=$WORK/cache/rootfs.tmp
  rm -rf "$tree"
  log "debootstrap --variant=minbase $SUITE from $MIRROR (once; cached as $ROOTFS)"
  debootstrap --variant=minbase "$SUITE" "$tree" "$MIRROR" > "$WORK/cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/cache/debootstrap.log" >&2; die "debootstrap failed"; }
  # What an image build leaves out: downloaded packages, apt lists, device nodes.
  rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/cache/apt/*.bin \
    "$tree"/var/lib/apt/lists/* "$tree"/dev/*
  tar --numeric-owner --sort=name -C "$tree" -cf "$ROOTFS.tmp" .
  mv "$ROOTFS.tmp" "$ROOTFS"
  rm -rf "$tree"
fi

# ---------------------------------------------------------------------------- images + registry
log "images (bench/images.py)"
python3 "$HERE/images.py" build --out "$WORK/images" --rootfs "$ROOTFS"

REGDIR=$WORK/registry
REGPID=""
stop_registry() {
  if [ -n "$REGPID" ] && kill -0 "$REGPID" 2> /dev/null; then
    kill "$REGPID"
    wait "$REGPID" 2> /dev/null || true
  fi
}
trap stop_registry EXIT
mkdir -p "$REGDIR/storage"
cat > "$REGDIR/config.yml" << EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REGDIR/storage
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$PORT
  secret: cimage-bench
EOF
curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/v2/" && die "port $PORT is taken; set PORT"
docker-registry serve "$REGDIR/config.yml" >> "$REGDIR/log" 2>&1 < /dev/null &
REGPID=$!
for _ in $(seq 100); do
  curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/v2/" && break
  kill -0 "$REGPID" 2> /dev/null || { tail "$REGDIR/log" >&2; die "the registry did not start"; }
  sleep 0.1
done
python3 "$HERE/images.py" push --out "$WORK/images" --registry "127.0.0.1:$PORT"
[ "$STEP" = setup ] && { log "setup done"; exit 0; }

# ---------------------------------------------------------------------------- measure + report
RESULTS=$WORK/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS"
log "measuring: images [$IMAGES], file systems [$FILESYSTEMS], $ROUNDS rounds -> $RESULTS"
python3 "$HERE/measure.py" --work "$WORK" --registry "127.0.0.1:$PORT" --results "$RESULTS" \
  --images "$IMAGES" --filesystems "$FILESYSTEMS" --rounds "$ROUNDS" --quick "$QUICK" \
  --cimagectl "$WORK/bin/cimagectl" --micro "$WORK/bin/micro" --spawn "$WORK/bin/spawn"
python3 "$HERE/report.py" --results "$RESULTS" --report "$REPORT"
log "report: $REPORT (raw results in $RESULTS)"
