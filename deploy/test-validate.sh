#!/usr/bin/env bash
# Shows that deploy/validate.sh catches broken files: it must pass on a copy
# of deploy/ as committed, and fail on a copy with one breakage of each kind
# it checks, naming each one. Two runs of validate.sh (about 20 s).
#
# Usage: deploy/test-validate.sh   (PORTEIRO_BIN as for validate.sh)
set -euo pipefail
deploy=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# validate.sh finds the binary relative to the repository; give the copies
# the same one.
if [ -z "${PORTEIRO_BIN:-}" ]; then
  target=${CARGO_TARGET_DIR:-$(dirname "$deploy")/target}
  for candidate in "$target/release/porteiro" "$target/debug/porteiro"; do
    [ -x "$candidate" ] && { PORTEIRO_BIN=$candidate; break; }
  done
fi
export PORTEIRO_BIN
# The copies' image is built from this repository.
export PORTEIRO_REPO=${PORTEIRO_REPO:-$(dirname "$deploy")}

cp -r "$deploy" "$work/clean"
if ! "$work/clean/validate.sh" >"$work/clean.log" 2>&1; then
  cat "$work/clean.log"
  echo "test-validate: FAILED: validate.sh refuses deploy/ as committed" >&2
  exit 1
fi
echo "test-validate: ok: deploy/ as committed passes"

cp -r "$deploy" "$work/broken"
b=$work/broken
# Replaces one exact, unique line of a file, so a test never silently
# breaks nothing.
edit() {
  local file=$1 from=$2 to=$3
  [ "$(grep -cxF -- "$from" "$file")" = 1 ] || { echo "test-validate: no unique line '$from' in $file" >&2; exit 1; }
  FROM=$from TO=$to python3 -c '
import os, sys
p = sys.argv[1]
lines = open(p).read().split("\n")
lines = [os.environ["TO"] if l == os.environ["FROM"] else l for l in lines]
open(p, "w").write("\n".join(lines))' "$file"
}
# A core kind with a misspelt field (Deployment, kubernetes-validate).
edit "$b/kubernetes/sidecar/helpdesk.yaml" "  replicas: 1" "  replica: 1"
# A custom resource with a misspelt field (Traefik Middleware, vendored schema).
edit "$b/kubernetes/forward-auth/traefik.yaml" \
  '    address: "http://porteiro.helpdesk.svc.cluster.local:8080/sso/auth?redirect=true"' \
  '    adress: "http://porteiro.helpdesk.svc.cluster.local:8080/sso/auth?redirect=true"'
# A gateway.toml porteiro refuses (an unknown key).
edit "$b/kubernetes/forward-auth/porteiro.yaml" '    validity_minutes = 60' '    validity_minute = 60'
# A valid config change without its checksum: the pods would not roll.
edit "$b/kubernetes/replicas/porteiro.yaml" '    validity_minutes = 60' '    validity_minutes = 30'
# A probe off the admin listener.
edit "$b/kubernetes/sidecar/helpdesk.yaml" '              path: /readyz' '              path: /ready'
# YAML that is no longer valid YAML.
edit "$b/kubernetes/replicas/redis.yaml" '  replicas: 1' '  replicas: [1'
# A Dockerfile hadolint rejects: the image would run as root.
printf 'USER root\n' >>"$b/Dockerfile"
# A runtime stage without the SAML libraries the binary links (the lines
# end in a literal backslash).
# shellcheck disable=SC1003
edit "$b/Dockerfile" '        libxmlsec1 \' '        \'
# shellcheck disable=SC1003
edit "$b/Dockerfile" '        libxmlsec1-openssl \' '        \'
# A build stage that leaves the allocator's path dependency out.
edit "$b/Dockerfile" 'COPY crates crates' ''

if "$b/validate.sh" >"$work/broken.log" 2>&1; then
  cat "$work/broken.log"
  echo "test-validate: FAILED: validate.sh accepted broken manifests" >&2
  exit 1
fi
passed=2 # deploy/ as committed passes; the broken copy fails
failed=0
expect() {
  if grep -qF -- "$2" "$work/broken.log"; then
    echo "test-validate: ok: $1"
    passed=$((passed + 1))
  else
    echo "test-validate: FAILED: $1: no '$2' in validate.sh's output" >&2
    failed=$((failed + 1))
  fi
}
expect "misspelt Deployment field" "('replica' was unexpected)"
expect "misspelt Middleware field" "('adress' was unexpected)"
expect "gateway.toml porteiro refuses" "forward-auth/porteiro.yaml [0] ConfigMap/porteiro: porteiro check"
expect "gateway.toml porteiro refuses" "session.validity_minute"
expect "stale config checksum" "replicas/porteiro.yaml [2] Deployment/porteiro container porteiro: pod annotation checksum/porteiro-config"
expect "readiness probe off /readyz" "readinessProbe must be GET /readyz"
expect "invalid YAML" "redis.yaml"
expect "invalid YAML" "syntax error"
expect "invalid YAML" "replicas/redis.yaml: not YAML"
expect "root user in the image" "DL3002"
expect "missing runtime library" "MISSING libxmlsec1.so.1"
expect "build stage without a path dependency" "failed to get \`porteiro-alloc\`"
[ "$failed" -eq 0 ] || cat "$work/broken.log"
echo "test-validate: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
