#!/usr/bin/env bash
# Regenerates link-order.txt: the functions a running porteiro executes,
# hottest first, which build.rs hands the linker so that they sit together
# at the front of the binary's code (README "Memory").
#
#   bash benches/link_order.sh                      # builds, runs, writes link-order.txt
#   PORTEIRO_BIN=/path/porteiro bash benches/link_order.sh
#
# Runs porteiro (release) under valgrind's callgrind once per case of
# benches/cases.sh, from start-up on: the case's sign-in or key, LOAD
# seconds of wrk, the admin listener's probes and metrics, then SIGTERM.
# The functions porteiro's binary ran in any of them make the list: those
# every case ran first, then those fewer cases ran, each group by its own
# instructions (benches/link_order.py). Symbol names carry a hash of the
# dependency versions and the toolchain, and some (closures, generic
# instances) move with porteiro's source: run it again after Cargo.lock or
# the toolchain changes, or when memory.sh reports many names missing; the
# script ends by rebuilding and printing how many of the listed functions
# the new binary has. Needs valgrind, nginx, wrk, curl and python3.

set -euo pipefail

LOAD=${LOAD:-3}
OUT=${OUT:-}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$REPO/link-order.txt}

log() { printf '%s\n' "$*" >&2; }
die() { log "link_order.sh: $*"; exit 1; }

for tool in valgrind nginx wrk curl python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install valgrind nginx-light wrk curl python3)"
done

WORK=$(mktemp -d /tmp/porteiro-order.XXXXXX)
chmod 755 "$WORK"
declare -a STARTED=()
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z ${PORTEIRO_BIN:-} ]]; then
    log "building porteiro (release)"
    (cd "$REPO" && cargo build --release --quiet --bin porteiro)
    PORTEIRO_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/porteiro
fi

# Callgrind makes start-up slow.
WAIT_SECONDS=120
source "$REPO/benches/cases.sh"

UPSTREAM_PORT=$(free_port)
nginx_upstream_conf "$WORK/upstream" "$UPSTREAM_PORT"
nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" \
    >"$WORK/upstream.log" 2>&1 &
STARTED+=("$!")
wait_http "http://127.0.0.1:$UPSTREAM_PORT/"

declare -a DUMPS=()
for CASE in "${CASE_NAMES[@]}"; do
    log "case $CASE"
    port=$(free_port) admin=$(free_port)
    cat >"$WORK/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
shutdown_grace_seconds = 1
$(case_config "$CASE" "http://127.0.0.1:$UPSTREAM_PORT")
TOML
    dump=$WORK/callgrind.$CASE
    RUST_LOG=${CASE_RUST_LOG[$CASE]:-warn} valgrind --tool=callgrind --demangle=no --dump-instr=no \
        --callgrind-out-file="$dump" "$PORTEIRO_BIN" --config "$WORK/gateway.toml" \
        >"$WORK/$CASE.log" 2>&1 &
    pid=$!
    wait_http "http://127.0.0.1:$admin/readyz"
    if declare -F "setup_$CASE" >/dev/null; then
        PORTEIRO_PORT=$port "setup_$CASE"
    fi
    declare -a WRK_ARGS=()
    [[ -z ${CASE_WRK_ARGS[$CASE]} ]] || mapfile -t WRK_ARGS <<<"${CASE_WRK_ARGS[$CASE]}"
    out=$(wrk -t1 -c50 -d"${LOAD}s" --timeout 30s "${WRK_ARGS[@]}" "http://127.0.0.1:$port/")
    grep -q "Non-2xx\|Socket errors" <<<"$out" && die "case $CASE: errors under load:
$out"
    for path in /healthz /readyz /metrics; do
        curl -sf -o /dev/null "http://127.0.0.1:$admin$path" || die "case $CASE: admin $path failed"
    done
    kill -TERM "$pid"
    wait "$pid" || die "case $CASE: porteiro exited with $? (log: $(tail -5 "$WORK/$CASE.log"))"
    DUMPS+=("$dump")
done

python3 "$REPO/benches/link_order.py" "$PORTEIRO_BIN" "$OUT" "${DUMPS[@]}"

# The list only lays out a build whose symbols it names.
log "rebuilding with the new list"
(cd "$REPO" && cargo build --release --quiet --bin porteiro)
bin=${CARGO_TARGET_DIR:-$REPO/target}/release/porteiro
python3 "$REPO/benches/link_order.py" --check "$bin" "$OUT" >&2
