# shellcheck shell=bash
# The load benches' cases and helpers, sourced by load.sh, instructions.sh
# and memory.sh (which define REPO, WORK and die first).

# === cases ===
#
# A case is (name, porteiro config snippet, wrk extra args). The snippet is
# appended after porteiro's [server] table, so it may hold [session] and
# [[routes]]; @UPSTREAM@ becomes the upstream's URL, @WORK@ a directory of
# the run's own. wrk extra args are given
# one per argument, e.g. -H "Cookie: porteiro_session=...". nginx gets the
# same requests and just proxies them.

declare -a CASE_NAMES=()
declare -A CASE_CONFIG=()
declare -A CASE_WRK_ARGS=()       # one argument per line
# The floor of porteiro's req/s per proxy core over nginx's in the same case
# (nginx always proxies plainly, so this is against nginx without any
# authentication): plain proxying 0.90, authenticated cases 0.85.
declare -A CASE_FLOOR=([public]=0.90 [cookie]=0.85 [bearer]=0.85 [apikey]=0.85 [identity]=0.85 [accesslog]=0.85)
# Per case: porteiro's RUST_LOG (default `warn`, which leaves the access log
# out) and the nginx it is compared with (default the plain proxy; `logged`:
# the same proxy writing its access log).
declare -A CASE_RUST_LOG=() CASE_NGINX=()

# Case $1's config snippet for upstream URL $2, its @WORK@ under $WORK.
case_config() { # case upstream-url
    local config=${CASE_CONFIG[$1]//@UPSTREAM@/$2}
    echo "${config//@WORK@/$WORK/$1}"
}

add_case() {
    local name=$1 config=$2
    shift 2
    CASE_NAMES+=("$name")
    CASE_CONFIG[$name]=$config
    CASE_WRK_ARGS[$name]=$(printf '%s\n' "$@")
}

# Plain proxying: one public route, no authentication.
add_case public '
[[routes]]
path_prefix = "/"
upstream = "@UPSTREAM@"
public = true
'

# Plain proxying with both access logs on: porteiro's `porteiro::access`
# line per request (its log, stderr, goes to a file) against nginx's
# `access_log` to a file.
add_case accesslog '
[[routes]]
path_prefix = "/"
upstream = "@UPSTREAM@"
public = true
'
CASE_RUST_LOG[accesslog]="warn,porteiro::access=info"
CASE_NGINX[accesslog]=logged

# Secrets of the authenticated cases (literal: porteiro warns, the bench
# does not care). 32 bytes or more each.
SESSION_SECRET="load-bench-session-secret-0123456789abcdef"
LOGIN_SECRET="load-bench-login-jwt-secret-0123456789abcd"
BEARER_SECRET="load-bench-bearer-jwt-secret-0123456789abc"

# Browser session: a protected route behind a `jwt` login; setup_cookie
# signs in once through /sso/callback and every request carries the session
# cookie (opened, checked and mapped to identity headers per request).
add_case cookie "
[session]
secret = \"$SESSION_SECRET\"
validity_minutes = 1440

[[providers]]
id = \"login\"
kind = \"jwt\"
login_url = \"http://127.0.0.1:9/login\"
issuer = \"load.bench\"
algorithms = [\"HS256\"]
secret = \"$LOGIN_SECRET\"

[[routes]]
path_prefix = \"/\"
upstream = \"@UPSTREAM@\"
login = \"login\"
"

# API client: a bearer-only route; every request carries the same long-lived
# HS256 token (exp in a day, no iat), so after the first request porteiro
# answers from its verification cache (a SHA-256 of the token and a lookup).
add_case bearer "
[[providers]]
id = \"api\"
kind = \"bearer\"
issuer = \"load.bench\"
audience = \"api://load-bench\"
algorithms = [\"HS256\"]
secret = \"$BEARER_SECRET\"
max_token_age_seconds = 0

[[routes]]
path_prefix = \"/\"
upstream = \"@UPSTREAM@\"
bearer = [\"api\"]
"

# API key (Carol / Clock In): a signed-in user's key on a login route with
# api_keys = true (kept in state_dir, which the snippet's first line adds
# to [server]); setup_apikey signs in and mints the key once, then every
# request carries it and porteiro answers from its memory of seen keys.
add_case apikey "
state_dir = \"@WORK@/apikey-state\"

[session]
secret = \"$SESSION_SECRET\"

[[providers]]
id = \"login\"
kind = \"jwt\"
login_url = \"http://127.0.0.1:9/login\"
issuer = \"load.bench\"
algorithms = [\"HS256\"]
secret = \"$LOGIN_SECRET\"

[[routes]]
path_prefix = \"/\"
upstream = \"@UPSTREAM@\"
login = \"login\"
api_keys = true
"

# Signed identity: the cookie case's route with identity_jwt = true, so the
# upstream also gets X-Porteiro-Jwt-Assertion. porteiro signs it once per
# session and audience and hands the same value out for 4 minutes, so after
# the first request this costs a cache lookup, not an ECDSA signature.
add_case identity "
[session]
secret = \"$SESSION_SECRET\"
validity_minutes = 1440

[[providers]]
id = \"login\"
kind = \"jwt\"
login_url = \"http://127.0.0.1:9/login\"
issuer = \"load.bench\"
algorithms = [\"HS256\"]
secret = \"$LOGIN_SECRET\"

[[routes]]
path_prefix = \"/\"
upstream = \"@UPSTREAM@\"
login = \"login\"
identity_jwt = true
identity_audience = \"load-bench\"
"

# A case whose request must be computed against the running porteiro defines
# a function setup_NAME, called once porteiro is ready (PORTEIRO_PORT set);
# it may append wrk arguments to CASE_WRK_ARGS[NAME], one per line. Before
# any load, every case's request (with those arguments) must get the
# upstream's own 200 from both proxies, or the script stops; every run also
# counts non-2xx answers as errors.

# Appends wrk arguments (one per argument) to case $1's.
add_wrk_args() { # case args...
    local case=$1
    shift
    CASE_WRK_ARGS[$case]+=${CASE_WRK_ARGS[$case]:+$'\n'}$(printf '%s\n' "$@")
}

# An HS256 JWT: the JSON claims $3 plus exp = now + $2 seconds (and iat = now
# when $4 is "iat"), signed with secret $1.
mint_hs256() { # secret lifetime claims-json [iat]
    python3 "$REPO/benches/mint_hs256.py" "$@"
}

setup_cookie() {
    local cookie
    cookie=$(login_cookie cookie) || exit 1
    add_wrk_args cookie -H "Cookie: $cookie"
}

setup_identity() {
    local cookie
    cookie=$(login_cookie identity) || exit 1
    add_wrk_args identity -H "Cookie: $cookie"
}

# Signs in through the jwt login like a browser; prints the session cookie
# (name=value). $1 names the case in errors.
login_cookie() { # case
    local token headers cookie
    # A login token as a login page mints it: exp in a minute, iat, unique jti.
    token=$(mint_hs256 "$LOGIN_SECRET" 60 \
        '{"iss": "load.bench", "name": "Load Bench", "email": "bench@example.com", "userid": "bench-1",
          "groups": ["staff", "ops", "bench"], "jti": "load-'"$RANDOM$RANDOM"'"}' iat) ||
        die "$1: cannot sign the login token (python3)"
    # Generous: under valgrind (instructions.sh) the login takes seconds.
    headers=$(curl -sS -o /dev/null -D - --max-time 60 \
        "http://127.0.0.1:$PORTEIRO_PORT/sso/callback?jwt=$token&redirectUrl=/") ||
        die "$1: the login callback did not answer"
    cookie=$(tr -d '\r' <<<"$headers" |
        awk 'tolower($1) == "set-cookie:" && $2 ~ /^porteiro_session=./ { sub(/;.*/, "", $2); print $2 }')
    [[ -n $cookie ]] || die "$1: the login callback set no session cookie; it answered:
$headers"
    echo "$cookie"
}

setup_apikey() {
    local cookie answer key
    cookie=$(login_cookie apikey) || exit 1
    answer=$(curl -sS --max-time 60 -H "Cookie: $cookie" -H 'Content-Type: application/json' \
        --data '{"name": "load bench"}' "http://127.0.0.1:$PORTEIRO_PORT/sso/api-keys") ||
        die "apikey: minting the key did not answer"
    key=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])' <<<"$answer") ||
        die "apikey: no key minted; porteiro answered: $answer"
    add_wrk_args apikey -H "Authorization: Bearer $key"
}

setup_bearer() {
    local token
    # Long-lived and without iat: reusable for the whole run, and cacheable.
    token=$(mint_hs256 "$BEARER_SECRET" 86400 \
        '{"iss": "load.bench", "aud": "api://load-bench", "sub": "svc-load", "groups": ["ops"]}') ||
        die "bearer: cannot sign the token (python3)"
    add_wrk_args bearer -H "Authorization: Bearer $token"
}

# === helpers shared by load.sh, instructions.sh and memory.sh ===

# A free TCP port on 127.0.0.1: one no socket is listening on, and not handed
# out earlier in this run.
declare -A USED_PORTS=()
free_port() {
    local port hex
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        [[ -n ${USED_PORTS[$port]:-} ]] && continue
        hex=$(printf ':%04X ' "$port")
        if ! grep -q "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            USED_PORTS[$port]=1
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

# Waits until URL answers 2xx, for at most WAIT_SECONDS (30).
wait_http() {
    local url=$1 deadline=$((SECONDS + ${WAIT_SECONDS:-30}))
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        ((SECONDS < deadline)) || die "nothing answers at $url (logs in $WORK)"
        sleep 0.1
    done
}

# DIR/nginx.conf: one worker, the http block's BODY. NGINX_MASTER (on),
# NGINX_CONNECTIONS (4096 per worker, and as many open files) and
# NGINX_KEEPALIVE (75s, idle client connections) adjust it.
nginx_conf() { # dir body
    local dir=$1 body=$2 connections=${NGINX_CONNECTIONS:-4096}
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process ${NGINX_MASTER:-on};
worker_processes 1;
worker_rlimit_nofile $connections;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $connections; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout ${NGINX_KEEPALIVE:-75s};
$body
}
EOF
}

# The upstream of every bench: DIR/nginx.conf answering `200 ok` on PORT.
nginx_upstream_conf() { # dir port
    nginx_conf "$1" "
    server {
        listen 127.0.0.1:$2;
        location / { default_type text/plain; return 200 \"ok\n\"; }
    }"
}

# The reference: nginx as a plain keep-alive reverse proxy on PORT to
# UPSTREAM_PORT, with the X-Forwarded-* headers porteiro sets; with
# `logged`, writing its access log (combined format) to DIR/access.log.
nginx_proxy_conf() { # dir port [logged]
    local access=""
    [[ ${3:-} == logged ]] && access="access_log $1/access.log;"
    nginx_conf "$1" "
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$2;
        $access
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
    }"
}
