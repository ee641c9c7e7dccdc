#!/usr/bin/env bash
# Checks that the image's build stage copies everything the release build
# needs: the files its COPY lines name (from the repository) are put in an
# empty directory, where Cargo must resolve the package and its path
# dependencies offline with the committed Cargo.lock, and find the build
# script and its code layout list (build.rs, link-order.txt) the
# repository has. A file left out of the image's build context otherwise
# shows only when someone builds the image.
#
# Usage: deploy/check-build-context.sh DOCKERFILE REPOSITORY
set -euo pipefail
dockerfile=$1 repo=$2
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# COPY lines of the first stage (the build), not those copying from a stage.
stage=0
while read -r word rest; do
  case $word in
    FROM) stage=$((stage + 1)) ;;
    COPY)
      [ "$stage" = 1 ] || continue
      read -r -a words <<<"$rest"
      # Options (--chown, --chmod, --link) are not sources; a copy from
      # another stage is not from the repository.
      args=() from_stage=false
      for w in "${words[@]}"; do
        case $w in
          --from=*) from_stage=true ;;
          --*) ;;
          *) args+=("$w") ;;
        esac
      done
      [ "$from_stage" = false ] || continue
      dest=${args[-1]}
      unset 'args[-1]'
      for src in "${args[@]}"; do
        [ -e "$repo/$src" ] || { echo "build-context: COPY names $src, which the repository lacks" >&2; exit 1; }
        if [ "${#args[@]}" -gt 1 ] || [[ $dest == */ ]]; then
          mkdir -p "$ctx/$dest"
          cp -r "$repo/$src" "$ctx/$dest/"
        else
          mkdir -p "$(dirname "$ctx/$dest")"
          cp -r "$repo/$src" "$ctx/$dest"
        fi
      done
      ;;
  esac
done <"$dockerfile"

for needed in build.rs link-order.txt; do
  if [ -e "$repo/$needed" ] && [ ! -e "$ctx/$needed" ]; then
    echo "build-context: the build stage does not copy $needed" >&2
    exit 1
  fi
done
if ! (cd "$ctx" && cargo tree --locked --offline --target x86_64-unknown-linux-gnu --edges normal,build --depth 1 >/dev/null); then
  echo "build-context: cargo cannot resolve the package from what the build stage copies" >&2
  exit 1
fi
echo "build-context: the build stage copies what the build needs"
