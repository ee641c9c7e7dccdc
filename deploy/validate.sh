#!/usr/bin/env bash
# Validates everything under deploy/ offline, without a cluster, a container
# registry or the network:
#   1. YAML style and syntax (yamllint, deploy/.yamllint.yaml);
#   2. the Dockerfile (hadolint);
#   3. the vendored CRD schemas are valid JSON Schemas (check-jsonschema);
#   4. the Kubernetes manifests: core kinds against Kubernetes' schemas
#      (kubernetes-validate, pinned version), custom resources against the
#      vendored schemas, every gateway.toml with `porteiro check`, the
#      config checksum annotations, ports and probes (check_manifests.py);
#   5. every shared library the binary links is installed by the image's
#      runtime stage (check-runtime-libs.sh);
#   6. the image's build stage copies every file the build needs
#      (check-build-context.sh; Cargo, offline).
# Every step runs; the script fails if any did.
#
# Tools: pip install -r deploy/requirements.txt (pinned versions).
# Usage: deploy/validate.sh
#   PORTEIRO_REPO the repository the image is built from [default: deploy/'s
#                 parent]
#   PORTEIRO_BIN  the porteiro binary [default: target/release/porteiro,
#                 else target/debug/porteiro, under $CARGO_TARGET_DIR if set]
set -uo pipefail
deploy=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$deploy")

bin=${PORTEIRO_BIN:-}
if [ -z "$bin" ]; then
  target=${CARGO_TARGET_DIR:-$root/target}
  for candidate in "$target/release/porteiro" "$target/debug/porteiro"; do
    [ -x "$candidate" ] && { bin=$candidate; break; }
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "validate: no porteiro binary (cargo build, or set PORTEIRO_BIN)" >&2
  exit 2
fi
bin=$(realpath "$bin")
echo "validate: porteiro binary $bin"

failed=()
step() {
  local name=$1
  shift
  echo "validate: -- $name"
  if "$@"; then
    echo "validate: ok $name"
  else
    echo "validate: FAILED $name" >&2
    failed+=("$name")
  fi
}

step yamllint yamllint --strict -c "$deploy/.yamllint.yaml" "$deploy"
step hadolint hadolint --no-color "$deploy/Dockerfile"
mapfile -t schemas < <(find "$deploy/schemas" -name '*.json' | sort)
step schemas check-jsonschema --check-metaschema "${schemas[@]}"
step manifests python3 "$deploy/check_manifests.py" --dir "$deploy/kubernetes" --porteiro "$bin"
step runtime-libs "$deploy/check-runtime-libs.sh" "$bin" "$deploy/Dockerfile"
step build-context "$deploy/check-build-context.sh" "$deploy/Dockerfile" "${PORTEIRO_REPO:-$root}"

if [ ${#failed[@]} -gt 0 ]; then
  echo "validate: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "validate: all checks passed"
