#!/bin/sh
# Buildroot-style post-image hook: assemble cf.img from the pieces in BINARIES_DIR.
#   post-image.sh BINARIES_DIR      (env: TARGET_DIR, BUILD_DIR, SYSROOT from
#                                    firmware/build-image.sh; SYSROOT holds the
#                                    unpacked syslinux and syslinux-common packages)
# genimage builds the filesystems and the MBR partition table without root or loop
# devices; then SYSLINUX's MBR code goes into the first 440 bytes and its boot sector
# and ldlinux.sys/ldlinux.c32 onto the FAT16 partition, both on the image file.
set -eu
BOARD_DIR=$(cd "$(dirname "$0")" && pwd)
BINARIES_DIR=${1:?usage: post-image.sh BINARIES_DIR}
: "${TARGET_DIR:?}" "${BUILD_DIR:?}" "${SYSROOT:?}"

cp "$BOARD_DIR/syslinux.cfg" "$BINARIES_DIR/syslinux.cfg"
# genimage writes into a scratch directory; the finished images replace the old ones
# with rename(2), so whoever copies output/images/cf.img never sees half an image.
tmp=$BUILD_DIR/genimage.tmp
out=$BUILD_DIR/genimage.out
rm -rf "$tmp" "$out"
mkdir -p "$out"
log=$BUILD_DIR/genimage.log
if ! genimage --config "$BOARD_DIR/genimage.cfg" --rootpath "$TARGET_DIR" --tmppath "$tmp" \
    --inputpath "$BINARIES_DIR" --outputpath "$out" >"$log" 2>&1; then
    cat "$log" >&2
    echo "post-image.sh: genimage failed (log above, also in $log)" >&2
    exit 1
fi
rm -rf "$tmp"

img=$out/cf.img
dd if="$SYSROOT/usr/lib/syslinux/mbr/mbr.bin" of="$img" bs=440 count=1 conv=notrunc status=none
start=$(sfdisk -d "$img" | sed -n 's/^[^ ]*1 : start= *\([0-9]*\),.*/\1/p')
[ -n "$start" ] || { echo "post-image.sh: cannot read partition 1 of $img" >&2; exit 1; }
"$SYSROOT/usr/bin/syslinux" --install --offset $((start * 512)) "$img"

for f in boot.vfat rootfs.squashfs data.ext4 cf.img; do
    mv -f "$out/$f" "$BINARIES_DIR/$f"
done
rmdir "$out"
