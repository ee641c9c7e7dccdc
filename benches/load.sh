#!/usr/bin/env bash
# Load test: porteiro against a plain nginx reverse proxy, same machine, same run.
#
#   bash benches/load.sh                                  # 3 rounds x 10 s per system and case
#   ROUNDS=5 DURATION=20 CONNECTIONS=100 bash benches/load.sh
#   CASES="public" bash benches/load.sh                   # pick cases by name
#
# Layout (two cores or more): each proxy under test runs alone on PROXY_CPU
# (default core 0) with one worker (porteiro `worker_threads = 1`, a
# current-thread runtime; nginx `worker_processes 1`). The upstream (a second
# nginx answering `200 ok`) and wrk share LOAD_CPU (default core 1). Both
# proxies keep upstream connections alive and neither logs requests. nginx is
# asked to add the same X-Forwarded-* headers porteiro adds, so both do the
# same work. Systems alternate round by round (porteiro, nginx, porteiro, ...)
# so drift on the machine hits both alike; the table shows per-system medians.
#
# "proxy CPU" is the proxy's CPU time over the run's wall time (100% = one
# core): near 100% means the proxy was the bottleneck and req/s compares
# capacity; well below means the load side was, and req/s and latency say
# more about wrk and the upstream than about the proxy.
#
# Other work on the machine (a build in another checkout) skews everything:
# before each run the script waits up to QUIET_WAIT seconds (default 30) for
# both CPUs to drop under QUIET_PCT% busy (default 20), and the per-round table
# shows "other on proxy CPU", busy time on the proxy's core that was not the
# proxy's. Distrust rounds where it is more than a few percent.
#
# Everything listens on 127.0.0.1, on free ports. Every process started here
# is stopped on exit; the script stops by itself (a watchdog ends it after
# MAX_SECONDS, default: what the rounds need plus 5 minutes).
#
# Needs root or installed packages: nginx (nginx-light) and wrk are installed
# from Debian when missing. PORTEIRO_BIN skips the release build.

set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}          # seconds per wrk run
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}             # wrk threads
WARMUP=${WARMUP:-2}               # seconds of unrecorded load per system and case
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CASES=${CASES:-}                  # space-separated names; empty = every case
QUIET_PCT=${QUIET_PCT:-20}        # before each run, wait for both CPUs under this % busy...
QUIET_WAIT=${QUIET_WAIT:-30}      # ...for at most this many seconds

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# === cases ===
#
# The cases (public, cookie, bearer, apikey, identity), their porteiro configs and setups are
# in cases.sh, shared with instructions.sh.
source "$REPO/benches/cases.sh"

# === helpers ===

log() { printf '%s\n' "$*" >&2; }
die() { log "load.sh: $*"; exit 1; }

WORK=$(mktemp -d /tmp/porteiro-load.XXXXXX)
# nginx workers drop to an unprivileged user when started as root.
chmod 755 "$WORK"
declare -a STARTED=()             # pids of the daemons started here

cleanup() {
    local pid
    trap - EXIT INT TERM
    for pid in "${STARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        # Give each a moment, then insist.
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ -n ${WATCHDOG:-} ]] && kill "$WATCHDOG" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# CPU ticks (user + system) of a process and its direct children: nginx's
# master and workers, or porteiro's one process with all its threads.
cpu_ticks() {
    local root=$1 pid total=0 rest
    local -a f
    for pid in "$root" $(pgrep -P "$root" || true); do
        rest=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        # The command name (field 2) may hold spaces: split after its ")".
        read -r -a f <<<"${rest##*) }"
        # f[0] = state (field 3), so utime (14) and stime (15) are f[11], f[12].
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# Busy and total jiffies of one CPU, from /proc/stat.
cpu_busy() {
    awk -v cpu="cpu$1" '$1 == cpu { idle = $5 + $6; total = 0; for (i = 2; i <= 9; i++) total += $i; print total - idle, total }' /proc/stat
}

# Milliseconds from a wrk latency such as 812.00us, 1.23ms or 1.02s.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { printf "nan" }
    }'
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

# === setup ===

(($(nproc) >= 2)) || log "load.sh: warning: fewer than 2 cores; proxy and load will share a core"

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    log "installing nginx and wrk from Debian"
    ((EUID == 0)) || die "nginx or wrk missing and not root: apt-get install nginx-light wrk"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nginx-light wrk >/dev/null 2>&1 ||
        apt-get install -y -qq nginx wrk >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx not found"

if [[ -z ${PORTEIRO_BIN:-} ]]; then
    log "building porteiro (release)"
    (cd "$REPO" && cargo build --release --quiet --bin porteiro)
    PORTEIRO_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/porteiro
    [[ $PORTEIRO_BIN = /* ]] || PORTEIRO_BIN=$REPO/$PORTEIRO_BIN
fi
[[ -x $PORTEIRO_BIN ]] || die "no porteiro binary at $PORTEIRO_BIN"

if [[ -n $CASES ]]; then
    read -r -a SELECTED <<<"$CASES"
    for c in "${SELECTED[@]}"; do
        [[ -n ${CASE_CONFIG[$c]+x} ]] || die "unknown case $c (known: ${CASE_NAMES[*]})"
    done
else
    SELECTED=("${CASE_NAMES[@]}")
fi

# Watchdog: whatever hangs, the script ends.
PER_RUN=$((DURATION + QUIET_WAIT + 6))
MAX_SECONDS=${MAX_SECONDS:-$((${#SELECTED[@]} * (2 * ROUNDS * PER_RUN + 2 * (WARMUP + 5) + 30) + 300))}
(
    # The sleep must not hold the script's output open once cleanup has
    # killed this subshell: a caller piping the output would wait for it.
    sleep "$MAX_SECONDS" </dev/null >/dev/null 2>&1
    log "load.sh: watchdog: still running after ${MAX_SECONDS}s, stopping"
    kill -TERM $$
) &
WATCHDOG=$!

# Starts a daemon in the background pinned to $1; records its pid.
start_pinned() {
    local cpu=$1 logfile=$2
    shift 2
    taskset -c "$cpu" "$@" >"$logfile" 2>&1 &
    STARTED+=("$!")
    LAST_PID=$!
}

# The upstream: answers every request with a small fixed 200.
UPSTREAM_PORT=$(free_port)
nginx_upstream_conf "$WORK/upstream" "$UPSTREAM_PORT"
start_pinned "$LOAD_CPU" "$WORK/upstream/stderr.log" \
    "$NGINX" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log"
wait_http "http://127.0.0.1:$UPSTREAM_PORT/"
UPSTREAM_URL="http://127.0.0.1:$UPSTREAM_PORT"

# The reference: nginx as a plain keep-alive reverse proxy.
NGINX_PORT=$(free_port)
nginx_proxy_conf "$WORK/nginx" "$NGINX_PORT"
start_pinned "$PROXY_CPU" "$WORK/nginx/stderr.log" \
    "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log"
NGINX_PID=$LAST_PID
wait_http "http://127.0.0.1:$NGINX_PORT/"
# The same proxy writing its access log, for cases compared with it.
for c in "${SELECTED[@]}"; do
    [[ ${CASE_NGINX[$c]:-} == logged && -z ${NGINX_LOGGED_PORT:-} ]] || continue
    NGINX_LOGGED_PORT=$(free_port)
    nginx_proxy_conf "$WORK/nginx-logged" "$NGINX_LOGGED_PORT" logged
    start_pinned "$PROXY_CPU" "$WORK/nginx-logged/stderr.log" \
        "$NGINX" -p "$WORK/nginx-logged" -c "$WORK/nginx-logged/nginx.conf" -e "$WORK/nginx-logged/error.log"
    NGINX_LOGGED_PID=$LAST_PID
    wait_http "http://127.0.0.1:$NGINX_LOGGED_PORT/"
done

# porteiro for one case; stopped before the next case starts.
start_porteiro() {
    local case=$1 dir=$WORK/porteiro-$1 config admin_port
    PORTEIRO_PORT=$(free_port)
    admin_port=$(free_port)
    mkdir -p "$dir"
    config=$(case_config "$case" "$UPSTREAM_URL")
    cat >"$dir/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$PORTEIRO_PORT"
admin_listen = "127.0.0.1:$admin_port"
worker_threads = 1
shutdown_grace_seconds = 1
$config
EOF
    RUST_LOG=${RUST_LOG:-${CASE_RUST_LOG[$case]:-warn}} start_pinned "$PROXY_CPU" "$dir/stderr.log" \
        "$PORTEIRO_BIN" --config "$dir/gateway.toml"
    PORTEIRO_PID=$LAST_PID
    # Ready, whatever the case's routes answer to a bare request (401, 302...).
    wait_http "http://127.0.0.1:$admin_port/readyz"
    # A case that needs state first (a session to get a cookie for, say)
    # defines setup_NAME; it may add to CASE_WRK_ARGS[NAME].
    if declare -F "setup_$case" >/dev/null; then
        "setup_$case"
    fi
}

stop_porteiro() {
    kill -TERM "$PORTEIRO_PID" 2>/dev/null || true
    wait "$PORTEIRO_PID" 2>/dev/null || true
}

# Percent busy between two cpu_busy samples.
busy_pct() {
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
        printf "%.0f", (y[2] > x[2]) ? 100 * (y[1] - x[1]) / (y[2] - x[2]) : 0 }'
}

# Other work on this machine (a build, another benchmark) skews results:
# wait up to QUIET_WAIT seconds for both CPUs to be under QUIET_PCT busy.
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) a0 a1 b0 b1 pa pb
    while :; do
        a0=$(cpu_busy "$PROXY_CPU") b0=$(cpu_busy "$LOAD_CPU")
        sleep 1
        a1=$(cpu_busy "$PROXY_CPU") b1=$(cpu_busy "$LOAD_CPU")
        pa=$(busy_pct "$a0" "$a1") pb=$(busy_pct "$b0" "$b1")
        ((pa < QUIET_PCT && pb < QUIET_PCT)) && return
        if ((SECONDS >= deadline)); then
            log "load.sh: warning: machine busy (CPU $PROXY_CPU ${pa}%, CPU $LOAD_CPU ${pb}%) with nothing of ours running; results will be noisy"
            return
        fi
    done
}

# The case's request, as wrk sends it, must reach the upstream: a 200 with
# the upstream's body. wrk itself counts only 4xx/5xx as errors, so a
# session that no longer opens (a 302 to the login) would otherwise go
# unnoticed. Checked before every run, warm-ups included.
check_upstream_answer() { # port case system
    local port=$1 case=$2 sys=$3 answer status body
    local -a extra=()
    [[ -n ${CASE_WRK_ARGS[$case]} ]] && mapfile -t extra <<<"${CASE_WRK_ARGS[$case]}"
    answer=$(curl -sS --max-time 5 -w '\n%{http_code}' "${extra[@]}" "http://127.0.0.1:$port/") ||
        die "case $case: $sys does not answer"
    status=${answer##*$'\n'}
    body=${answer%$'\n'*}
    body=${body%$'\n'}             # the upstream answers "ok\n"
    [[ $status == 200 && $body == ok ]] ||
        die "case $case: $sys answered $status instead of the upstream's 200 (body: ${body:0:200}); not measuring"
}

# One wrk run. Prints "rps p50_ms p99_ms proxy_cpu_pct load_cpu_pct other_pct errors":
# other = busy time on the proxy's CPU not spent by the proxy (noise).
run_wrk() { # port pid seconds case
    local port=$1 pid=$2 secs=$3 case=$4 out before after start end l0 l1 p0 p1
    local -a extra=()
    [[ -n ${CASE_WRK_ARGS[$case]} ]] && mapfile -t extra <<<"${CASE_WRK_ARGS[$case]}"
    check_upstream_answer "$port" "$case" "$([[ $pid == "${PORTEIRO_PID:-}" ]] && echo porteiro || echo nginx)"
    before=$(cpu_ticks "$pid")
    l0=$(cpu_busy "$LOAD_CPU") p0=$(cpu_busy "$PROXY_CPU")
    start=$(date +%s.%N)
    out=$(timeout $((secs + 30)) taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" \
        -d"${secs}s" --timeout 5s --latency "${extra[@]}" "http://127.0.0.1:$port/") ||
        die "wrk failed against port $port"
    end=$(date +%s.%N)
    after=$(cpu_ticks "$pid")
    l1=$(cpu_busy "$LOAD_CPU") p1=$(cpu_busy "$PROXY_CPU")
    echo "$out" >>"$WORK/wrk.log"
    local rps p50 p99 errors cpu load other
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    # Socket errors and non-2xx answers: a run with either is suspect.
    errors=$(awk '/Non-2xx or 3xx responses:/ { n += $NF }
        /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
        END { print n + 0 }' <<<"$out")
    cpu=$(awk -v a="$before" -v b="$after" -v s="$start" -v e="$end" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.0f", 100 * (b - a) / hz / (e - s) }')
    load=$(busy_pct "$l0" "$l1")
    other=$(($(busy_pct "$p0" "$p1") - cpu))
    ((other > 0)) || other=0
    [[ -n $rps ]] || die "cannot parse wrk output: $out"
    echo "$rps $p50 $p99 $cpu $load $other $errors"
}

# === run ===

log "porteiro $("$PORTEIRO_BIN" --version 2>/dev/null | awk '{print $2}') vs $("$NGINX" -v 2>&1 | sed 's/.*: //'); $ROUNDS rounds x ${DURATION}s, $CONNECTIONS connections, $THREADS wrk thread(s); proxy on CPU $PROXY_CPU, upstream + wrk on CPU $LOAD_CPU"

declare -a TABLE=() GOALS=() RAW=()
NOISY=0                           # runs where other work took over 10% of the proxy's CPU
declare -A V=() M=()              # V[metric,system]: one value per round; M: their medians
METRICS="rps p50 p99 cpu load percore"
for case in "${SELECTED[@]}"; do
    start_porteiro "$case"
    log "case $case: warming up"
    run_wrk "$PORTEIRO_PORT" "$PORTEIRO_PID" "$WARMUP" "$case" >/dev/null
    if [[ ${CASE_NGINX[$case]:-} == logged ]]; then
        nginx_port=$NGINX_LOGGED_PORT nginx_pid=$NGINX_LOGGED_PID
    else
        nginx_port=$NGINX_PORT nginx_pid=$NGINX_PID
    fi
    run_wrk "$nginx_port" "$nginx_pid" "$WARMUP" "$case" >/dev/null
    V=()
    case_errors=0
    for round in $(seq 1 "$ROUNDS"); do
        for sys in porteiro nginx; do
            if [[ $sys == porteiro ]]; then port=$PORTEIRO_PORT pid=$PORTEIRO_PID; else port=$nginx_port pid=$nginx_pid; fi
            wait_quiet
            result=$(run_wrk "$port" "$pid" "$DURATION" "$case")
            read -r rps p50 p99 cpu load other errors <<<"$result"
            # Throughput per core of proxy CPU actually used: capacity, even
            # when the load side (wrk + upstream) is what saturates.
            percore=$(awk -v r="$rps" -v c="$cpu" 'BEGIN { printf "%.0f", (c > 0) ? r * 100 / c : 0 }')
            log "case $case round $round $sys: $rps req/s, p50 $p50 ms, p99 $p99 ms, proxy CPU $cpu%, load CPU $load%, other on proxy CPU $other%, $percore req/s per proxy core, errors $errors"
            ((errors == 0)) || log "load.sh: warning: $sys answered $errors requests with errors in case $case"
            [[ $sys == nginx ]] || case_errors=$((case_errors + errors))
            for m in $METRICS; do V[$m,$sys]+=" ${!m}"; done
            RAW+=("| $case | $round | $sys | $rps | $p50 | $p99 | $cpu% | $load% | $other% | $percore | $errors |")
            ((other <= 10)) || NOISY=$((NOISY + 1))
        done
    done
    for sys in porteiro nginx; do
        for m in $METRICS; do
            # Unquoted on purpose: one argument per round.
            # shellcheck disable=SC2086
            M[$m,$sys]=$(median ${V[$m,$sys]})
        done
    done
    r_rps=$(ratio "${M[rps,porteiro]}" "${M[rps,nginx]}")
    r_core=$(ratio "${M[percore,porteiro]}" "${M[percore,nginx]}")
    r_p99=$(ratio "${M[p99,porteiro]}" "${M[p99,nginx]}")
    floor=${CASE_FLOOR[$case]:-0.90}
    verdict=$(awk -v r="$r_core" -v f="$floor" 'BEGIN { print (r >= f) ? "met" : "MISSED" }')
    ((case_errors == 0)) || verdict="INVALID: porteiro answered $case_errors requests with errors"
    p99_verdict=$(awk -v l="$r_p99" 'BEGIN { print (l <= 1.2) ? "met" : "missed" }')
    [[ $case == public ]] && NGINX_PLAIN_CORE=${M[percore,nginx]}
    vs_plain=""
    [[ $case != public && -n ${NGINX_PLAIN_CORE:-} ]] &&
        vs_plain=" ($(ratio "${M[percore,porteiro]}" "$NGINX_PLAIN_CORE") x nginx's in the public case)"
    for sys in porteiro nginx; do
        TABLE+=("| $case | $sys | $(printf '%.0f' "${M[rps,$sys]}") | ${M[p50,$sys]} | ${M[p99,$sys]} | $(printf '%.0f' "${M[cpu,$sys]}")% | $(printf '%.0f' "${M[load,$sys]}")% | $(printf '%.0f' "${M[percore,$sys]}") |")
    done
    TABLE+=("| $case | **porteiro / nginx** | **$r_rps** | | **$r_p99** | | | **$r_core** |")
    GOALS+=("$case: req/s per proxy core $r_core x nginx$vs_plain, floor >= $floor: **$verdict**; p99 $r_p99 x nginx (goal <= 1.20): $p99_verdict")
    if [[ ${CASE_NGINX[$case]:-} == logged ]]; then
        # Both really logged every request.
        grep -q 'porteiro::access' "$WORK/porteiro-$case/stderr.log" ||
            die "case $case: porteiro wrote no access-log line"
        [[ -s $WORK/nginx-logged/access.log ]] || die "case $case: nginx wrote no access log"
    fi
    stop_porteiro
done

cat <<EOF

### porteiro vs nginx, one proxy core each

Reproduce: \`ROUNDS=$ROUNDS DURATION=$DURATION CONNECTIONS=$CONNECTIONS THREADS=$THREADS bash benches/load.sh\`

$(nproc) cores; the proxy pinned to CPU $PROXY_CPU (porteiro \`worker_threads = 1\`, nginx \`worker_processes 1\`);
the upstream nginx and \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s\` pinned to CPU $LOAD_CPU. Medians of $ROUNDS alternating rounds.
"proxy CPU": the proxy's CPU time over wall time (100% = one core); "load CPU": how busy CPU $LOAD_CPU was;
"req/s per core": req/s / proxy CPU, what one saturated core would serve.

| case | system | req/s | p50 ms | p99 ms | proxy CPU | load CPU | req/s per core |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |
$(printf '%s\n' "${TABLE[@]}")

$(printf -- '- %s\n' "${GOALS[@]}")
$( ((NOISY == 0)) || echo "
**$NOISY of $((${#SELECTED[@]} * ROUNDS * 2)) runs shared the proxy's CPU with other work (over 10%, see every round):
latencies and req/s are unreliable; req/s per core, which counts only the proxy's own CPU time, less so.**")

<details><summary>every round</summary>

| case | round | system | req/s | p50 ms | p99 ms | proxy CPU | load CPU | other on proxy CPU | req/s per core | errors |
| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$(printf '%s\n' "${RAW[@]}")

</details>
EOF
