#!/bin/sh
# Buildroot-style post-build hook: final touches to the staged root filesystem.
#   post-build.sh TARGET_DIR   (env: PBX_VERSION, PBX_BUILD, KVER from firmware/build-image.sh)
# Idempotent. The root is a read-only squashfs, so whatever must change at run time
# points into RAM (/run) or /data here.
set -eu
TARGET_DIR=${1:?usage: post-build.sh TARGET_DIR}
cd "$TARGET_DIR"

mkdir -p proc sys dev run tmp var data root mnt etc/pbx
ln -sfn /run/resolv.conf etc/resolv.conf
ln -sfn /proc/mounts etc/mtab
chmod 0600 etc/shadow
chmod 0700 root

# The version comes from build-image.sh, which asks the frozen program (the bundle has
# no .py files to read it from): an os-release without it is refused, not written.
case "${PBX_VERSION:-}" in
    [0-9]*) ;;
    *) echo "post-build.sh: PBX_VERSION must be the pbx version (e.g. 0.1.0), got '${PBX_VERSION:-}'" >&2; exit 1 ;;
esac
cat >etc/os-release <<OS
NAME="Wafer PBX"
ID=wafer-pbx
VERSION_ID=$PBX_VERSION
PRETTY_NAME="Wafer PBX $PBX_VERSION (${PBX_BUILD:-unknown})"
BUILD_ID=${PBX_BUILD:-unknown}
KERNEL=${KVER:-unknown}
OS

if [ ! -d etc/pbx/factory ] || [ -z "$(ls -A etc/pbx/factory 2>/dev/null)" ]; then
    echo "post-build.sh: warning: no factory configuration in rootfs_overlay/etc/pbx/factory" >&2
    mkdir -p etc/pbx/factory
fi
