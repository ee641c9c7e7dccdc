#!/usr/bin/env bash
# Checks that the runtime stage of deploy/Dockerfile installs every shared
# library the porteiro binary links, without building the image (no
# container registry is needed): each library `ldd` lists is mapped to its
# Debian package with `dpkg -S` on this machine, and that package must be
# one the runtime stage installs, or a dependency of one, or part of the
# Debian base image (Essential packages and apt, with their dependencies).
#
# Usage: deploy/check-runtime-libs.sh [BINARY] [DOCKERFILE]
#   BINARY      default: $PORTEIRO_BIN, else target/release/porteiro
#   DOCKERFILE  default: deploy/Dockerfile
#
# The mapping uses this machine's packages, so it must run on the Debian
# release the runtime stage is based on (checked below).
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-${PORTEIRO_BIN:-${CARGO_TARGET_DIR:-target}/release/porteiro}}
dockerfile=${2:-deploy/Dockerfile}
[ -x "$binary" ] || { echo "check-runtime-libs: no binary at $binary (cargo build --release)" >&2; exit 2; }

# The runtime stage (the last FROM) and the packages its `apt-get install`
# lines name.
read -r base packages < <(python3 - "$dockerfile" <<'EOF'
import re, shlex, sys
text = open(sys.argv[1]).read()
# Join continuation lines, drop comments.
lines, cur = [], ""
for raw in text.splitlines():
    s = raw.strip()
    if s.startswith("#"):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    lines.append(cur + s)
    cur = ""
stages = [i for i, l in enumerate(lines) if l.upper().startswith("FROM ")]
if not stages:
    sys.exit("no FROM in " + sys.argv[1])
last = lines[stages[-1]:]
base = last[0].split()[1]
pkgs = []
for l in last:
    if not l.upper().startswith("RUN "):
        continue
    for cmd in re.split(r"&&|;|\|\|", l[4:]):
        words = shlex.split(cmd)
        if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
            after = words[words.index("install") + 1:]
            pkgs += [w.split("=")[0] for w in after if not w.startswith("-")]
if not pkgs:
    sys.exit("the runtime stage installs no packages")
print(base, " ".join(sorted(set(pkgs))))
EOF
)
echo "check-runtime-libs: runtime stage $base installs: $packages"

# shellcheck source=/dev/null
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
case "$base" in
  debian:"$codename"-slim | debian:"$codename" | debian:"$codename"-*) ;;
  *)
    echo "check-runtime-libs: the runtime stage is $base, but this machine is Debian $codename:" >&2
    echo "  its packages cannot tell which package provides which library there" >&2
    exit 2
    ;;
esac

# Everything the runtime stage has: the installed packages, the base image's
# (Essential ones and apt), and all they depend on. Alternatives are all
# counted, which can only make the check more lenient, never wrongly fail.
essential=$(dpkg-query -W -f '${Package} ${Essential}\n' | awk '$2 == "yes" { print $1 }')
# shellcheck disable=SC2086 # word splitting of package lists is intended
provided=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances $packages $essential apt 2>/dev/null \
  | grep -v '^ ' | sed 's/:.*//; s/[<>]//g' | sort -u)
for p in $packages; do
  grep -qx "$p" <<<"$provided" || {
    echo "check-runtime-libs: package $p is unknown to apt here (apt-get update?)" >&2
    exit 2
  }
done

missing=0
checked=0
while read -r lib path; do
  case "$path" in
    "not found")
      echo "check-runtime-libs: $lib: not found on this machine either" >&2
      missing=1
      continue
      ;;
  esac
  # dpkg records a file under /lib or /usr/lib, whichever its package used;
  # with merged /usr either may be what the loader reports.
  pkg=""
  for candidate in "$path" "$(realpath "$path")" "/usr$path" "${path#/usr}"; do
    pkg=$(dpkg -S "$candidate" 2>/dev/null | head -n1 | cut -d: -f1) && [ -n "$pkg" ] && break
  done
  if [ -z "$pkg" ]; then
    echo "check-runtime-libs: $lib ($path) belongs to no Debian package" >&2
    missing=1
  elif grep -qx "$pkg" <<<"$provided"; then
    echo "check-runtime-libs: ok  $lib  <- $pkg"
  else
    echo "check-runtime-libs: MISSING $lib ($path) is in package $pkg, which the runtime stage does not install" >&2
    missing=1
  fi
  checked=$((checked + 1))
done < <(ldd "$binary" | awk '
  /=>/ { print $1, ($3 == "not" ? "not found" : $3); next }
  /^[[:space:]]*\// { print $1, $1 }')

[ "$checked" -gt 0 ] || { echo "check-runtime-libs: ldd listed no library for $binary" >&2; exit 2; }
if [ "$missing" -ne 0 ]; then
  echo "check-runtime-libs: FAILED: add the packages above to the runtime stage of $dockerfile" >&2
  exit 1
fi
echo "check-runtime-libs: all $checked libraries of $binary are installed by the runtime stage"
