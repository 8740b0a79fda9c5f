#!/usr/bin/env bash
# Builds memtrace's container image with podman from a memtrace binary already built, with no
# registry pull: the build context is a root filesystem holding the binary and the shared
# libraries it links (as `ldd` resolves them on this machine), and deploy/Containerfile starts
# FROM scratch.
#
# Usage: deploy/build-image.sh BINARY TAG
#   deploy/build-image.sh target/release/memtrace localhost/memtrace:0.1.0
# `cargo xtask image` builds the release binary and runs this.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 BINARY TAG   (e.g. $0 target/release/memtrace localhost/memtrace:dev)" >&2
    exit 2
fi
binary=$1
tag=$2
deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -x $binary ]] || { echo "$0: $binary is not an executable file" >&2; exit 1; }
command -v podman >/dev/null || { echo "$0: podman is not installed (apt-get install podman)" >&2; exit 1; }

context=$(mktemp -d -t memtrace-image.XXXXXX)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/tmp"
cp "$binary" "$context/rootfs/usr/local/bin/memtrace"
# Every library the binary loads, and the dynamic loader, at the paths it looks for them.
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
    while read -r lib; do
        mkdir -p "$context/rootfs$(dirname "$lib")"
        cp -L "$lib" "$context/rootfs$lib"
    done
chmod 1777 "$context/rootfs/tmp"
cp "$deploy/Containerfile" "$context/Containerfile"
podman build --quiet --network none --tag "$tag" --file "$context/Containerfile" "$context"
