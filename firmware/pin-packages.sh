#!/usr/bin/env bash
# Pin the Debian binary packages that go into the image.
#
#   firmware/pin-packages.sh                  re-pin every package in packages.lock
#                                             to the version apt offers now
#   firmware/pin-packages.sh NAME[=VER]...    pin exactly these packages (replaces the list)
#
# Writes firmware/packages.lock: "name version sha256" per line. The build
# (firmware/build-image.sh) downloads exactly these versions into dl/ and checks
# their SHA-256, so two builds from the same lock file use the same bytes.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LOCK="$HERE/packages.lock"

if [ $# -eq 0 ]; then
    [ -f "$LOCK" ] || { echo "pin-packages.sh: no $LOCK and no package named" >&2; exit 2; }
    # shellcheck disable=SC2046  # package names never contain spaces
    set -- $(awk '!/^#/ && NF {print $1}' "$LOCK")
fi

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
    echo "# Debian packages in the Wafer PBX image: name version sha256 (of the .deb)."
    echo "# Written by firmware/pin-packages.sh; the build fetches exactly these into dl/."
    for spec in "$@"; do
        name=${spec%%=*}
        if [ "$spec" != "$name" ]; then
            ver=${spec#*=}
        else
            ver=$(apt-cache policy "$name" | awk '/Candidate:/ {print $2}')
        fi
        if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
            echo "pin-packages.sh: apt knows no version of $name (run apt-get update?)" >&2
            exit 1
        fi
        sha=$(apt-cache show "$name=$ver" 2>/dev/null | awk '/^SHA256:/ {print $2; exit}')
        if [ -z "$sha" ]; then
            echo "pin-packages.sh: apt has no $name=$ver" >&2
            exit 1
        fi
        printf '%s %s %s\n' "$name" "$ver" "$sha"
    done
} >"$tmp"
mv "$tmp" "$LOCK"
trap - EXIT
cat "$LOCK"
