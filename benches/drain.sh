#!/usr/bin/env bash
# What a load balancer sees when porteiro shuts down (DESIGN §9): wrk keeps
# 50 keep-alive connections busy on a public route while porteiro gets
# SIGTERM, and reports socket errors and non-2xx answers.
#
#   run 1: -d6s, SIGTERM at 2 s, shutdown_delay_seconds = 5: the run ends
#          inside the delay, so every request must succeed (0 errors).
#   run 2: -d10s, same signal: the run outlasts the delay; once porteiro
#          stops accepting, wrk's reconnects are refused (wrk counts them
#          as write and read errors), and answers in flight say
#          `Connection: close`. The script prints how many answers porteiro
#          wrote (access-log lines) beside wrk's count of responses read:
#          equal when no answered request was lost.
#
# Usage: benches/drain.sh   (PORTEIRO_BIN=... [default target/release/porteiro
#        under $CARGO_TARGET_DIR], DELAY=5, SIGNAL_AT=2; needs nginx and wrk)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
die() { echo "drain: $*" >&2; exit 1; }
# shellcheck source=cases.sh
source "$REPO/benches/cases.sh"
BIN=${PORTEIRO_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/porteiro}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
DELAY=${DELAY:-5}
SIGNAL_AT=${SIGNAL_AT:-2}
[[ -x $BIN ]] || die "no porteiro binary at $BIN"
command -v wrk >/dev/null || die "wrk is not installed"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

UPSTREAM_PORT=$(free_port)
nginx_upstream_conf "$WORK/upstream" "$UPSTREAM_PORT"
"$NGINX" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" &
pids+=($!)
wait_http "http://127.0.0.1:$UPSTREAM_PORT/"

run() { # seconds
    local port admin pid
    port=$(free_port)
    admin=$(free_port)
    cat >"$WORK/gateway.toml" <<CONF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
shutdown_delay_seconds = $DELAY

[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
public = true
CONF
    "$BIN" --config "$WORK/gateway.toml" 2>"$WORK/porteiro-$1.log" &
    pid=$!
    pids+=("$pid")
    wait_http "http://127.0.0.1:$port/"
    echo "== wrk -t2 -c50 -d${1}s http://127.0.0.1:$port/  (SIGTERM at ${SIGNAL_AT}s, shutdown_delay_seconds = $DELAY)"
    (sleep "$SIGNAL_AT"; kill -TERM "$pid") &
    wrk -t2 -c50 -d"${1}s" "http://127.0.0.1:$port/"
    wait "$pid" && echo "porteiro exited 0" || echo "porteiro exited $?"
    # Every answer porteiro wrote has its access-log line: compare with the
    # responses wrk read whole ("requests in").
    echo "porteiro answered $(grep -c 'porteiro::access' "$WORK/porteiro-$1.log") requests"
}
run 6
run 10
