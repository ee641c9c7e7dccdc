#!/usr/bin/env bash
# Memory: what an idle keep-alive connection costs porteiro and nginx, and
# whether porteiro gives the memory back once the connections close.
#
#   bash benches/memory.sh                       # N = 10 000 connections
#   N=2000 bash benches/memory.sh                # fewer
#   SYSTEMS=porteiro PORTEIRO_BIN=/path/a bash benches/memory.sh
#
# Each system (porteiro, then nginx) proxies the `public` case of
# benches/cases.sh (one public route) to an upstream nginx answering `200 ok`.
# For each, on a freshly started process:
#   1. "idle": RSS after one request (lazy set-up done) and a pause;
#   2. benches/idle_clients.py opens N keep-alive connections, sends one GET
#      on each and reads the answer (at most CONCURRENCY at a time), then
#      keeps them all open and idle for QUIET seconds: RSS "with N idle";
#   3. the clients close every connection; once the proxy has closed its
#      side of every one (ss shows none left on its port), SETTLE seconds
#      later: RSS "after close".
# Then on another fresh process, N connections that are only opened (no
# request): RSS with them open ("accepted only").
#
# KB per connection = (RSS with N idle - RSS idle) / N, in KiB. RSS is VmRSS
# summed over the process and its children (nginx's master and worker).
# porteiro runs with its defaults (one worker thread per core) except
# header_read_timeout_seconds (which also closes idle keep-alive connections)
# raised to IDLE_SECONDS; nginx with one worker and keepalive_timeout
# IDLE_SECONDS. Everything listens on 127.0.0.1; every process started here
# is stopped on exit. Needs nginx, curl and python3; raises the open-file
# limit to what N needs, within the hard limit.

set -euo pipefail

N=${N:-10000}
CONCURRENCY=${CONCURRENCY:-200}   # connections being opened/answered at once
SETTLE=${SETTLE:-3}               # seconds between the proxy closing its side and "after close"
QUIET=${QUIET:-3}                 # seconds the connections stay quiet before "with N idle"
IDLE_SECONDS=${IDLE_SECONDS:-300} # keep-alive idle timeout of both proxies
SYSTEMS=${SYSTEMS:-porteiro nginx}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '%s\n' "$*" >&2; }
die() { log "memory.sh: $*"; exit 1; }

# The `public` case's porteiro config (shared with load.sh, instructions.sh).
source "$REPO/benches/cases.sh"

for tool in nginx curl python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install nginx-light curl python3)"
done

# N client sockets in the client, N accepted ones in the proxy, plus the
# upstream pool and the usual few.
want=$((N + 1024))
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((hard < want)); then
    die "open-file hard limit $hard is below the $want that N=$N needs; lower N or raise the hard limit"
fi
(($(ulimit -Sn) >= want)) || ulimit -Sn "$want"
# nginx: as many connections and open files, and the same idle timeout.
NGINX_CONNECTIONS=$want NGINX_KEEPALIVE=${IDLE_SECONDS}s

WORK=$(mktemp -d /tmp/porteiro-memory.XXXXXX)
chmod 755 "$WORK"                 # nginx workers run unprivileged under root
declare -a STARTED=()
cleanup() {
    local pid
    trap - EXIT
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# KiB of VmRSS of a process and its direct children.
rss_kib() {
    local pid total=0 kb
    for pid in "$1" $(pgrep -P "$1" || true); do
        kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# Client connections the proxy on PORT still has: any state but listening
# and TIME-WAIT (a socket the proxy closed first, as when its close crossed
# the client's, waits out 60 s in the kernel without the process).
client_sockets() {
    ss -Htn state connected exclude time-wait "( sport = :$PORT )" | wc -l
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
per_conn() { awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN { printf "%.2f", (b - a) / n }'; }

if [[ -z ${PORTEIRO_BIN:-} && $SYSTEMS == *porteiro* ]]; then
    log "building porteiro (release)"
    (cd "$REPO" && cargo build --release --quiet --bin porteiro)
    PORTEIRO_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/porteiro
fi
# Idle RSS depends on the code layout (README "Memory"): say whether the
# binary has the functions link-order.txt lists.
if [[ $SYSTEMS == *porteiro* ]] && command -v nm >/dev/null; then
    log "$(python3 "$REPO/benches/link_order.py" --check "$PORTEIRO_BIN" "$REPO/link-order.txt")"
fi

UPSTREAM_PORT=$(free_port)
nginx_upstream_conf "$WORK/upstream" "$UPSTREAM_PORT"
nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" >"$WORK/upstream.log" 2>&1 &
STARTED+=("$!")
wait_http "http://127.0.0.1:$UPSTREAM_PORT/"

# Starts system $1 on a fresh port; sets PID and PORT.
start_system() {
    local sys=$1 dir=$WORK/$1.$RANDOM admin
    PORT=$(free_port)
    mkdir -p "$dir"
    case $sys in
    porteiro)
        admin=$(free_port)
        cat >"$dir/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$admin"
header_read_timeout_seconds = $IDLE_SECONDS
shutdown_grace_seconds = 1
${CASE_CONFIG[public]//@UPSTREAM@/http://127.0.0.1:$UPSTREAM_PORT}
EOF
        RUST_LOG=warn "$PORTEIRO_BIN" --config "$dir/gateway.toml" >"$dir/stderr.log" 2>&1 &
        ;;
    nginx)
        nginx_proxy_conf "$dir" "$PORT"
        nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stderr.log" 2>&1 &
        ;;
    *) die "unknown system $sys (porteiro, nginx)" ;;
    esac
    PID=$!
    STARTED+=("$PID")
    wait_http "http://127.0.0.1:$PORT/"
    sleep 1
}

stop_system() {
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}

# Runs idle_clients.py against PORT with $1 requests per connection: calls
# $2 once they are all open and idle, then closes them and waits until the
# proxy has closed its side of every one.
with_clients() { # requests on-ready
    local requests=$1 on_ready=$2 line deadline
    coproc CLIENTS { exec python3 "$REPO/benches/idle_clients.py" "$PORT" "$N" \
        --requests "$requests" --concurrency "$CONCURRENCY" 2>"$WORK/clients.err"; }
    read -r line <&"${CLIENTS[0]}" || true
    [[ $line == "ready $N" ]] || die "the clients did not all connect: $(cat "$WORK/clients.err")"
    # Give the proxy a moment to accept them all (accepted only), and
    # let them be quiet as idle connections are (porteiro parks an HTTP/1.1
    # connection quiet for 1 to 2 s).
    sleep "$QUIET"
    "$on_ready"
    echo >&"${CLIENTS[1]}"
    read -r line <&"${CLIENTS[0]}" || true
    [[ $line == closed ]] || die "the clients did not close cleanly: $(cat "$WORK/clients.err")"
    wait "$CLIENTS_PID" 2>/dev/null || true
    deadline=$((SECONDS + 60))
    while (($(client_sockets) > 0)); do
        ((SECONDS < deadline)) || die "the proxy still holds $(client_sockets) client connections a minute after the clients closed:
$(ss -tan "( sport = :$PORT or dport = :$PORT )" | grep -v LISTEN | head -5)"
        sleep 0.2
    done
}

declare -a TABLE=()
for sys in $SYSTEMS; do
    log "$sys: $N idle keep-alive connections, one GET each"
    start_system "$sys"
    idle=$(rss_kib "$PID")
    record_loaded() { loaded=$(rss_kib "$PID"); }
    with_clients 1 record_loaded
    sleep "$SETTLE"
    after=$(rss_kib "$PID")
    stop_system

    log "$sys: $N connections only opened"
    start_system "$sys"
    idle2=$(rss_kib "$PID")
    record_accepted() { accepted=$(rss_kib "$PID"); }
    with_clients 0 record_accepted
    stop_system

    TABLE+=("| $sys | $(mib "$idle") | $(mib "$loaded") | **$(per_conn "$idle" "$loaded")** | $(mib "$after") | $(per_conn "$idle2" "$accepted") |")
    log "$sys: idle $(mib "$idle") MiB, with $N $(mib "$loaded") MiB, after close $(mib "$after") MiB; accepted only +$(per_conn "$idle2" "$accepted") KiB each"
done

cat <<EOF

### Memory per idle connection

Reproduce: \`N=$N bash benches/memory.sh\`

$N clients each open a keep-alive connection to 127.0.0.1, send one \`GET /\` (proxied to an nginx
answering \`200 ok\`) and stay idle; RSS (VmRSS; nginx: master + worker) in MiB; KB = KiB.
"with N idle": ${QUIET} s after the last one connected; "after close": ${SETTLE} s after the proxy closed the last connection.
"accepted only": a fresh process, $N connections opened without a request.

| system | RSS idle | with $N idle connections | KB per connection | after they close | accepted only, KB per connection |
| --- | ---: | ---: | ---: | ---: | ---: |
$(printf '%s\n' "${TABLE[@]}")
EOF
