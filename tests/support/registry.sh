#!/usr/bin/env bash
# registry.sh start|stop|run|status DIR PORT
#
# Debian's docker-registry (distribution 2.8) on 127.0.0.1:PORT only: filesystem storage under
# DIR/storage, deletes enabled, no auth, plain HTTP. The packaged /etc/docker/registry/config.yml
# is not used; the config is written to DIR/config.yml.
#
#   start   run it in the background (own session; pid in DIR/registry.pid, log DIR/registry.log)
#           and wait until http://127.0.0.1:PORT/v2/ answers 200
#   stop    stop the one started by `start` with the same DIR
#   run     write the config and exec the registry in the foreground (the test harness uses this
#           so that the registry dies with the test process)
#   status  exit 0 when /v2/ answers
#
# Env: REGISTRY_BIN (default docker-registry).
set -euo pipefail

usage() { echo "usage: $0 start|stop|run|status DIR PORT" >&2; exit 2; }
[ $# -eq 3 ] || usage
CMD=$1
DIR=$(mkdir -p "$2" && cd "$2" && pwd)
PORT=$3
case "$PORT" in '' | *[!0-9]*) usage ;; esac
REGISTRY_BIN=${REGISTRY_BIN:-docker-registry}
CONF="$DIR/config.yml"
PIDFILE="$DIR/registry.pid"
LOG="$DIR/registry.log"
URL="http://127.0.0.1:$PORT/v2/"

write_config() {
  mkdir -p "$DIR/storage"
  cat >"$CONF" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$PORT
  secret: cimage-tests-not-a-secret
health:
  storagedriver:
    enabled: false
EOF
}

answers() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL" 2>/dev/null || true)" = 200 ]
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  if running_pid >/dev/null; then
    echo "registry.sh: already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT" >&2
    return 0
  fi
  if answers; then
    echo "registry.sh: something else already answers on $URL" >&2
    return 1
  fi
  write_config
  setsid "$REGISTRY_BIN" serve "$CONF" >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local i
  for i in $(seq 1 200); do
    if answers; then
      echo "registry.sh: up on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), storage $DIR/storage)" >&2
      return 0
    fi
    if ! running_pid >/dev/null; then
      echo "registry.sh: the registry exited; its log:" >&2
      tail -20 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      return 1
    fi
    sleep 0.05
  done
  echo "registry.sh: no answer from $URL within 10 s" >&2
  stop
  return 1
}

stop() {
  local pid i
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE"
    return 0
  fi
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  echo "registry.sh: stopped (pid $pid)" >&2
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  run)
    write_config
    exec "$REGISTRY_BIN" serve "$CONF"
    ;;
  status) answers ;;
  *) usage ;;
esac
