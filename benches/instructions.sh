#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: a
# measure of the proxy's own work that other load on the machine hardly
# changes (req/s it changes a lot).
#
#   bash benches/instructions.sh                          # porteiro (release build) and nginx
#   PORTEIRO_BIN=/path/a bash benches/instructions.sh     # a given binary, e.g. an older commit's
#   SYSTEMS=porteiro DURATION=60 bash benches/instructions.sh
#
# The `public` case of benches/load.sh: one public route to an upstream nginx
# answering `200 ok`; porteiro with `worker_threads = 1`, nginx with one
# worker proxying with keep-alive and the same X-Forwarded-* headers. Each
# proxy runs under callgrind, not instrumented at first; after a warm-up,
# instrumentation is switched on, `wrk -c$CONNECTIONS` sends requests for
# DURATION seconds, it is switched off, and the instructions (Ir)
# counted in between are divided by the requests wrk completed (the few
# dozen in flight when wrk stops are counted in Ir only: well under 1%).
# Startup and warm-up are not counted. Under callgrind a proxy answers a
# few thousand requests a second. ANNOTATE=1 prints the top functions
# (callgrind_annotate, inclusive; ANNOTATE_LINES=60), PROFILE_DIR=dir keeps
# the profiles (callgrind.out.porteiro, callgrind.out.nginx).
#
# CASE=bearer measures porteiro on load.sh's `bearer` case instead: a
# bearer-only route, every request carrying the same day-long HS256 token
# (answered from the verification cache after the first); CASE=cookie on
# its `cookie` case, a `jwt` login route signed into once, every request
# carrying the session cookie (the cases are benches/cases.sh, load.sh's).
# nginx proxies plainly either way, and gets the bare request. CASE=accesslog
# (and any case) runs porteiro at the case's log level, as load.sh does:
# there with the access log on, to a file.
#
# Needs valgrind, nginx and wrk (Debian: valgrind nginx-light wrk).

set -euo pipefail

DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-50}
WARMUP=${WARMUP:-3}
SYSTEMS=${SYSTEMS:-porteiro nginx}
CASE=${CASE:-public}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ANNOTATE=${ANNOTATE:-0}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '%s\n' "$*" >&2; }
die() { log "instructions.sh: $*"; exit 1; }

for tool in valgrind callgrind_control nginx wrk curl; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install valgrind nginx-light wrk curl)"
done

WORK=$(mktemp -d /tmp/porteiro-ir.XXXXXX)
chmod 755 "$WORK"
declare -a STARTED=()
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z ${PORTEIRO_BIN:-} && $SYSTEMS == *porteiro* ]]; then
    log "building porteiro (release)"
    (cd "$REPO" && cargo build --release --quiet --bin porteiro)
    PORTEIRO_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/porteiro
fi

# Callgrind makes startup slow.
WAIT_SECONDS=120
source "$REPO/benches/cases.sh"

UPSTREAM_PORT=$(free_port)
nginx_upstream_conf "$WORK/upstream" "$UPSTREAM_PORT"
taskset -c "$LOAD_CPU" nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" \
    >"$WORK/upstream.log" 2>&1 &
STARTED+=("$!")
wait_http "http://127.0.0.1:$UPSTREAM_PORT/"

# The case's porteiro config and setup, as load.sh runs it.
[[ -n ${CASE_CONFIG[$CASE]+x} ]] || die "unknown CASE $CASE (known: ${CASE_NAMES[*]})"
declare -a WRK_ARGS=()

# Runs wrk for $2 seconds; prints how many requests it completed.
load() { # port seconds
    local out
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$2s" --timeout 30s "${WRK_ARGS[@]}" "http://127.0.0.1:$1/")
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
        log "warning: errors in this run:
$out"
    fi
    awk '/requests in/ { print $1 }' <<<"$out"
}

# Starts $2... under callgrind (not instrumented yet), loads port $1, prints "Ir requests".
# $3 answers 200 once the proxy is ready. porteiro then runs the case's
# setup (a sign-in, a token), which sets the arguments wrk sends both proxies.
measure() { # name port ready-url command...
    local name=$1 port=$2 ready=$3 pid requests ir out=$WORK/callgrind.$1
    shift 3
    taskset -c "$PROXY_CPU" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out.%p" \
        "$@" >"$WORK/$name.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_http "$ready"
    if [[ $name == porteiro ]] && declare -F "setup_$CASE" >/dev/null; then
        PORTEIRO_PORT=$port "setup_$CASE"
    fi
    [[ -z ${CASE_WRK_ARGS[$CASE]} ]] || mapfile -t WRK_ARGS <<<"${CASE_WRK_ARGS[$CASE]}"
    load "$port" "$WARMUP" >/dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    requests=$(load "$port" "$DURATION")
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # The dump taken while running (".1"), not the one at exit.
    ir=$(awk '/^totals:/ { print $2 }' "$out.$pid.1")
    [[ -z ${PROFILE_DIR:-} ]] || cp "$out.$pid.1" "$PROFILE_DIR/callgrind.out.$name"
    if [[ $ANNOTATE == 1 ]]; then
        callgrind_annotate --inclusive=yes --threshold=99 "$out.$pid.1" | head -"${ANNOTATE_LINES:-60}" >&2
    fi
    echo "$ir $requests"
}

printf '| system | instructions (Ir) | requests | Ir per request |\n| --- | ---: | ---: | ---: |\n'
for sys in $SYSTEMS; do
    case $sys in
    porteiro)
        port=$(free_port) admin=$(free_port)
        cat >"$WORK/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
worker_threads = 1
shutdown_grace_seconds = 1
$(case_config "$CASE" "http://127.0.0.1:$UPSTREAM_PORT")
EOF
        read -r ir n < <(RUST_LOG=${CASE_RUST_LOG[$CASE]:-warn} measure porteiro "$port" "http://127.0.0.1:$admin/readyz" \
            "$PORTEIRO_BIN" --config "$WORK/gateway.toml")
        ;;
    nginx)
        port=$(free_port)
        NGINX_MASTER=off nginx_proxy_conf "$WORK/nginx" "$port"
        read -r ir n < <(measure nginx "$port" "http://127.0.0.1:$port/" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log")
        ;;
    *) die "unknown system $sys (porteiro, nginx)" ;;
    esac
    printf '| %s | %s | %s | %s |\n' "$sys" "$ir" "$n" "$(awk -v a="$ir" -v b="$n" 'BEGIN { printf "%.0f", a / b }')"
done
