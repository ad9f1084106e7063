#!/usr/bin/env bash
# Build the Wafer PBX CompactFlash image: output/images/cf.img
#
#   VENV=/path/to/venv firmware/build-image.sh      (./build.sh image calls it so)
#
# Inputs: Debian binary packages pinned in firmware/packages.lock (cached in dl/),
# the pbx_core sources (frozen with PyInstaller), rootfs_overlay/, board/wafer/.
# Work happens in output/build, the root filesystem is staged in output/target and
# the results land in output/images, the way Buildroot lays out its output.
# Runs as root on Debian 12 (as ./build.sh image and CI do); genimage itself needs no
# root and no loop devices.
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
FW=$TOP/firmware
BOARD=${BOARD:-$TOP/board/wafer}
DL=${DL_DIR:-$TOP/dl}
OUT=${OUTPUT_DIR:-$TOP/output}
BUILD=$OUT/build
TARGET=$OUT/target
IMAGES=$OUT/images
SYSROOT=$BUILD/sysroot
VENV=${VENV:-$TOP/.venv}
LOCK=$FW/packages.lock
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$TOP" log -1 --format=%ct 2>/dev/null || date +%s)}

t_all=$EPOCHREALTIME
step_name=""
step() {
    step_name=$1
    step_t0=$EPOCHREALTIME
    printf '==> %s\n' "$step_name"
}
step_done() {
    awk -v n="$step_name" -v a="$step_t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "    %s: %.1fs\n", n, b-a}'
}
die() {
    printf 'build-image.sh: %s\n' "$*" >&2
    exit 1
}
trap 'printf "\n*** build-image.sh: step \"%s\" failed\n" "${step_name:-?}" >&2' ERR

for tool in apt-get dpkg-deb depmod modprobe cpio gzip genimage mksquashfs mkdosfs mcopy \
    mke2fs sfdisk xz; do
    command -v "$tool" >/dev/null || die "missing host tool '$tool': run ./build.sh image (it installs firmware/apt-packages)"
done
[ -x "$VENV/bin/python" ] || die "no Python venv at $VENV (set VENV=..., or run ./build.sh image)"
VENV=$(cd "$VENV" && pwd)
[ -f "$LOCK" ] || die "no $LOCK"
mkdir -p "$DL" "$BUILD" "$IMAGES"
# One build at a time in this output directory (tests and people share a tree).
exec 9>"$OUT/.build.lock"
if ! flock -n 9; then
    echo "==> waiting for another build in $OUT to finish"
    flock 9
fi

# ------------------------------------------------------------------------------------
# 1. Debian packages: exactly the pinned versions, checked by SHA-256, cached in dl/.
# ------------------------------------------------------------------------------------
deb_path() { # NAME VERSION -> path of the cached .deb (may not exist)
    local enc=${2//:/%3a} f
    for f in "$DL/$1_${enc}"_*.deb; do
        echo "$f"
        return 0
    done
}

fetch_debs() {
    local name ver sha f fetched=() updated=0 have
    while read -r name ver sha; do
        case "$name" in '' | '#'*) continue ;; esac
        f=$(deb_path "$name" "$ver")
        if [ -f "$f" ] && [ "$(sha256sum "$f" | cut -c1-64)" = "$sha" ]; then
            continue
        fi
        rm -f "$f"
        if ! (cd "$DL" && apt-get -q -o APT::Sandbox::User=root download "$name=$ver" >/dev/null 2>&1); then
            if [ $updated -eq 0 ]; then
                apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null || true
                updated=1
            fi
            (cd "$DL" && apt-get -q -o APT::Sandbox::User=root download "$name=$ver" >/dev/null) \
                || die "cannot download $name=$ver. The mirror may have dropped that version:
    re-pin with firmware/pin-packages.sh (then commit packages.lock), or restore dl/."
        fi
        f=$(deb_path "$name" "$ver")
        have=$(sha256sum "$f" | cut -c1-64)
        [ "$have" = "$sha" ] || die "$f: SHA-256 $have, packages.lock says $sha"
        fetched+=("$name=$ver")
    done <"$LOCK"
    if [ ${#fetched[@]} -eq 0 ]; then
        echo "    fetched nothing: all $(grep -cv '^#' "$LOCK") pinned packages are in dl/"
    else
        printf '    fetched %s\n' "${fetched[@]}"
    fi
}

unpack_debs() {
    local stamp name ver sha
    stamp=$(sha256sum "$LOCK" | cut -c1-16)
    if [ -f "$SYSROOT/.stamp-$stamp" ]; then
        echo "    up to date"
        return 0
    fi
    rm -rf "$SYSROOT"
    mkdir -p "$SYSROOT"
    while read -r name ver sha; do
        case "$name" in '' | '#'*) continue ;; esac
        dpkg-deb -x "$(deb_path "$name" "$ver")" "$SYSROOT"
    done <"$LOCK"
    KVER=$(ls "$SYSROOT/lib/modules")
    depmod -b "$SYSROOT" "$KVER"
    touch "$SYSROOT/.stamp-$stamp"
}

step "fetch pinned Debian packages into dl/"
fetch_debs
step_done

step "unpack Debian packages"
unpack_debs
step_done

KVER=$(ls "$SYSROOT/lib/modules")
[ "$(echo "$KVER" | wc -w)" -eq 1 ] || die "expected one kernel in packages.lock, found: $KVER"
MULTIARCH=x86_64-linux-gnu

# ------------------------------------------------------------------------------------
# 2. The frozen program: PyInstaller --onedir --strip of the pbx CLI, rebuilt only
#    when the sources (or the freezer) changed. The version is stamped into a staged
#    copy of pbx_core; the source tree is never modified.
# ------------------------------------------------------------------------------------
FREEZE=$BUILD/freeze
# Left out of the bundle (the image's xz size is an aim): Tk, pydoc's topics, the CJK
# codecs, the XML parsers, decimal, bz2 and lzma. pbx_core imports none of them. Nor
# does the box run pbx_core.media.prompts_build: it makes the prompts at build time
# (step 2b, espeak-ng on the build host) and has no business in the firmware.
FREEZE_ARGS="--onedir --strip --noconfirm --log-level WARN --name pbx --collect-submodules pbx_core
--exclude-module tkinter --exclude-module _tkinter --exclude-module pydoc_data
--exclude-module _codecs_jp --exclude-module _codecs_kr --exclude-module _codecs_cn
--exclude-module _codecs_hk --exclude-module _codecs_tw --exclude-module _codecs_iso2022
--exclude-module xml --exclude-module pyexpat --exclude-module decimal --exclude-module _decimal
--exclude-module _pydecimal --exclude-module bz2 --exclude-module _bz2 --exclude-module lzma
--exclude-module _lzma --exclude-module pbx_core.media.prompts_build"

freeze() {
    local src_hash pbx_build stamp commit
    src_hash=$(
        cd "$TOP"
        find pbx_core -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
            | xargs -0 sha256sum
        sha256sum pyproject.toml
        "$VENV/bin/python" -c 'import sys, PyInstaller; print(sys.version, PyInstaller.__version__)'
        echo "$FREEZE_ARGS"
    )
    src_hash=$(echo "$src_hash" | sha256sum | cut -c1-12)
    commit=$(git -C "$TOP" log -1 --format=%cd.g%h --date=format:%Y%m%d -- pbx_core 2>/dev/null || true)
    if [ -z "$commit" ]; then
        pbx_build="src.$src_hash"
    elif [ -n "$(git -C "$TOP" status --porcelain -- pbx_core 2>/dev/null)" ]; then
        pbx_build="$commit+src.$src_hash"
    else
        pbx_build="$commit"
    fi
    stamp="$FREEZE/.stamp-$src_hash-$(echo "$pbx_build" | sha256sum | cut -c1-8)"
    if [ -f "$stamp" ] && [ -x "$FREEZE/dist/pbx/pbx" ]; then
        echo "    up to date ($pbx_build)"
        PBX_BUILD=$pbx_build
        return 0
    fi
    rm -rf "$FREEZE/src" "$FREEZE/dist" "$FREEZE"/.stamp-*
    mkdir -p "$FREEZE/src"
    (cd "$TOP" && tar --exclude=__pycache__ --exclude='*.pyc' -cf - pbx_core) | tar -xf - -C "$FREEZE/src"
    sed -i "s/^BUILD = .*/BUILD = \"$pbx_build\"/" "$FREEZE/src/pbx_core/version.py"
    grep -q "^BUILD = \"$pbx_build\"$" "$FREEZE/src/pbx_core/version.py" \
        || die "pbx_core/version.py has no 'BUILD = ...' line to stamp"
    cat >"$FREEZE/src/pbx_main.py" <<'PY'
import sys

from pbx_core.cli import main

sys.exit(main())
PY
    # shellcheck disable=SC2086  # FREEZE_ARGS is a word list on purpose
    if ! (cd "$FREEZE" && PYINSTALLER_CONFIG_DIR="$FREEZE/cache" "$VENV/bin/python" -m PyInstaller \
        $FREEZE_ARGS --paths src --distpath dist --workpath work --specpath spec src/pbx_main.py \
        >"$FREEZE/pyinstaller.log" 2>&1); then
        tail -40 "$FREEZE/pyinstaller.log" >&2
        die "PyInstaller failed (log above, all of it in $FREEZE/pyinstaller.log)"
    fi
    "$FREEZE/dist/pbx/pbx" --version >/dev/null || die "the frozen pbx does not run on the host"
    # An excluded module that pbx_core itself imports would fail at run time: refuse.
    if grep '^excluded module named' "$FREEZE/work/pbx/warn-pbx.txt" | grep -E 'imported by .*pbx_core'; then
        die "pbx_core imports a module build-image.sh leaves out of the bundle (above): drop it from FREEZE_ARGS"
    fi
    touch "$stamp"
    PBX_BUILD=$pbx_build
}

step "freeze pbx (PyInstaller --onedir --strip)"
freeze
pbx_version=$("$FREEZE/dist/pbx/pbx" --version)
echo "    $pbx_version, $(du -sh "$FREEZE/dist/pbx" | cut -f1)"
# The version (pbx_core.version.VERSION) as the frozen program itself reports it: the
# bundle holds no .py files to read it from. "Wafer PBX 0.1.0 (build)" -> 0.1.0.
PBX_VERSION=$(echo "$pbx_version" | sed -n 's/^Wafer PBX \([^ ]*\) (.*)$/\1/p')
[ -n "$PBX_VERSION" ] || die "cannot read the version from '$pbx_version'"
step_done

# ------------------------------------------------------------------------------------
# 2b. Voice prompts and music on hold (pbx_core/media/prompts_build.py, espeak-ng),
#     installed as /usr/share/pbx/prompts; rebuilt when the generator changes.
# ------------------------------------------------------------------------------------
ASSETS=$OUT/assets
prompts() {
    local gen=$TOP/pbx_core/media/prompts_build.py stamp
    if [ ! -f "$gen" ]; then
        echo "    no $gen: the image has no prompts"
        return 0
    fi
    command -v espeak-ng >/dev/null || die "espeak-ng is missing: run ./build.sh image (firmware/apt-packages)"
    stamp=$( (sha256sum "$gen"; espeak-ng --version; command -v sox || true) | sha256sum | cut -c1-16)
    if [ -f "$ASSETS/.stamp-$stamp" ] && [ -d "$ASSETS/prompts" ]; then
        echo "    up to date ($(find "$ASSETS/prompts" -name '*.wav' | wc -l) files)"
        return 0
    fi
    rm -rf "$ASSETS"
    mkdir -p "$ASSETS"
    (cd "$TOP" && "$VENV/bin/python" -m pbx_core.media.prompts_build "$ASSETS/prompts" >/dev/null) \
        || die "pbx_core.media.prompts_build failed"
    touch "$ASSETS/.stamp-$stamp"
    echo "    $(find "$ASSETS/prompts" -name '*.wav' | wc -l) files, $(du -sh "$ASSETS/prompts" | cut -f1)"
}

step "prompts (espeak-ng)"
prompts
step_done

# ------------------------------------------------------------------------------------
# 3. Kernel modules: what firmware/modules.list names, with dependencies.
# ------------------------------------------------------------------------------------
MODSRC=$SYSROOT/lib/modules/$KVER

module_files() { # WHERE... -> module paths (relative to $MODSRC) with their dependencies
    local mod name
    awk -v w="$*" 'BEGIN{n=split(w,a," "); for(i=1;i<=n;i++) want[a[i]]=1}
                   !/^#/ && NF==2 && ($1 in want) {print $2}' "$FW/modules.list" \
        | while read -r mod; do
            if [[ $mod == *[*?]* ]]; then
                find "$MODSRC/kernel" -name "$mod.ko" -printf '%f\n' | sed 's/\.ko$//'
            else
                echo "$mod"
            fi
        done \
        | while read -r name; do
            modprobe -d "$SYSROOT" -S "$KVER" --show-depends "$name" 2>/dev/null \
                || die "kernel $KVER has no module '$name' (firmware/modules.list)"
        done \
        | awk '$1 == "insmod" {print $2}' | sed "s|^$MODSRC/||" | LC_ALL=C sort -u
}

install_modules() { # DESTROOT WHERE...
    local dest=$1 files f
    shift
    files=$(module_files "$@")
    mkdir -p "$dest/lib/modules/$KVER"
    for f in $files; do
        install -D -m 0644 "$MODSRC/$f" "$dest/lib/modules/$KVER/$f"
    done
    cp "$MODSRC"/modules.order "$MODSRC"/modules.builtin "$MODSRC"/modules.builtin.modinfo \
        "$dest/lib/modules/$KVER/"
    depmod -b "$dest" "$KVER"
}

step "kernel modules ($KVER)"
rm -rf "$BUILD/modules-initramfs" "$BUILD/modules-rootfs"
install_modules "$BUILD/modules-initramfs" initramfs
install_modules "$BUILD/modules-rootfs" initramfs rootfs
echo "    initramfs: $(find "$BUILD/modules-initramfs" -name '*.ko' | wc -l) modules," \
    "$(du -sh "$BUILD/modules-initramfs" | cut -f1); rootfs:" \
    "$(find "$BUILD/modules-rootfs" -name '*.ko' | wc -l) modules, $(du -sh "$BUILD/modules-rootfs" | cut -f1)" \
    "(Debian ships $(find "$MODSRC/kernel" -name '*.ko' | wc -l))"
step_done

# ------------------------------------------------------------------------------------
# 4. initramfs: static busybox, the storage modules and /init. No device nodes (the
#    /init mounts devtmpfs first), so it is built without root.
# ------------------------------------------------------------------------------------
install_busybox() { # DESTROOT: busybox and a symlink per applet, where Debian puts them
    local dest=$1 applet
    install -D -m 0755 "$SYSROOT/bin/busybox" "$dest/bin/busybox"
    for applet in $("$SYSROOT/bin/busybox" --list-full); do
        [ "$applet" = bin/busybox ] && continue
        mkdir -p "$dest/$(dirname "$applet")"
        [ -e "$dest/$applet" ] || ln -s /bin/busybox "$dest/$applet"
    done
}

step "initramfs"
INITRAMFS=$BUILD/initramfs
rm -rf "$INITRAMFS"
mkdir -p "$INITRAMFS"/{dev,proc,sys,run,newroot,lib/wafer}
install_busybox "$INITRAMFS"
cp -a "$BUILD/modules-initramfs/lib/modules" "$INITRAMFS/lib/"
install -m 0755 "$FW/initramfs/init" "$INITRAMFS/init"
install -m 0644 "$TOP/rootfs_overlay/lib/wafer/functions.sh" "$INITRAMFS/lib/wafer/functions.sh"
find "$INITRAMFS" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$INITRAMFS" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
    | xz -9 --check=crc32 >"$IMAGES/initrd.xz"  # the kernel's xz decoder needs crc32
install -m 0644 "$SYSROOT/boot/vmlinuz-$KVER" "$IMAGES/vmlinuz"
echo "    initrd.xz $(du -h --apparent-size "$IMAGES/initrd.xz" | cut -f1), vmlinuz $(du -h --apparent-size "$IMAGES/vmlinuz" | cut -f1)"
step_done

# ------------------------------------------------------------------------------------
# 5. Root filesystem staging (output/target).
# ------------------------------------------------------------------------------------
# copy_libs FILE...: the shared libraries FILE needs, taken from the pinned Debian
# packages (never from the host), into $TARGET/lib/$MULTIARCH.
copy_libs() {
    local sonames so found
    local libpath="$FREEZE/dist/pbx/_internal:$SYSROOT/lib/$MULTIARCH:$SYSROOT/usr/lib/$MULTIARCH"
    sonames=$({ LD_LIBRARY_PATH="$libpath" ldd "$@" 2>/dev/null || true; } | awk '/=>/ {print $1} /^\t\/lib64\/ld-linux/ {print "ld-linux-x86-64.so.2"}' \
        | LC_ALL=C sort -u)
    for so in $sonames; do
        found=""
        for d in "$SYSROOT/lib/$MULTIARCH" "$SYSROOT/usr/lib/$MULTIARCH"; do
            if [ -e "$d/$so" ]; then found="$d/$so"; break; fi
        done
        # Not a system library: PyInstaller bundled it in _internal.
        [ -z "$found" ] && [ -e "$FREEZE/dist/pbx/_internal/$so" ] && continue
        [ -n "$found" ] || die "no $so in the pinned packages: add its Debian package to firmware/packages.lock"
        install -D -m 0755 "$(readlink -f "$found")" "$TARGET/lib/$MULTIARCH/$so"
    done
}

step "root filesystem"
rm -rf "$TARGET"
mkdir -p "$TARGET"/{bin,sbin,usr/bin,usr/sbin,usr/lib,lib64,etc,dev,proc,sys,run,tmp,var,data,root,mnt}
install_busybox "$TARGET"
# e2fsprogs for /data: e2fsck, and mke2fs for a blank card (busybox's makes ext2 only).
install -m 0755 "$SYSROOT/sbin/e2fsck" "$SYSROOT/sbin/mke2fs" "$TARGET/sbin/"
ln -sf e2fsck "$TARGET/sbin/fsck.ext4"
ln -sf mke2fs "$TARGET/sbin/mkfs.ext4"
install -m 0644 "$SYSROOT/etc/mke2fs.conf" "$TARGET/etc/mke2fs.conf"
# The frozen PBX.
cp -a "$FREEZE/dist/pbx" "$TARGET/usr/lib/pbx"
ln -s ../lib/pbx/pbx "$TARGET/usr/bin/pbx"
# glibc and friends for it and for e2fsprogs; libgcc_s too, which ldd does not list but
# glibc dlopens when a thread exits.
mapfile -t elves < <(find "$TARGET/usr/lib/pbx" -type f \( -name '*.so*' -o -perm -u+x \) \
    -exec sh -c 'head -c4 "$1" | grep -q ELF && echo "$1"' _ {} \;)
copy_libs "${elves[@]}" "$TARGET/sbin/e2fsck" "$TARGET/sbin/mke2fs"
install -m 0644 "$SYSROOT/lib/$MULTIARCH/libgcc_s.so.1" "$TARGET/lib/$MULTIARCH/libgcc_s.so.1"
ln -s /lib/$MULTIARCH/ld-linux-x86-64.so.2 "$TARGET/lib64/ld-linux-x86-64.so.2"
cp -a "$BUILD/modules-rootfs/lib/modules" "$TARGET/lib/"
if [ -d "$ASSETS/prompts" ]; then
    mkdir -p "$TARGET/usr/share/pbx"
    cp -a "$ASSETS/prompts" "$TARGET/usr/share/pbx/"
fi
# The overlay last: init scripts, inittab, factory configuration.
cp -a "$TOP/rootfs_overlay/." "$TARGET/"
step_done

step "post-build ($BOARD/post-build.sh)"
PBX_BUILD="$PBX_BUILD" PBX_VERSION="$PBX_VERSION" KVER="$KVER" "$BOARD/post-build.sh" "$TARGET"
if [ "$(id -u)" -eq 0 ]; then
    # The real test: the staged root runs the frozen program with only its own libraries.
    chroot "$TARGET" /usr/bin/pbx --version | sed 's/^/    chroot: /' \
        || die "the frozen pbx does not run inside the staged root filesystem"
fi
echo "    rootfs staged: $(du -sh "$TARGET" | cut -f1)"
step_done

# ------------------------------------------------------------------------------------
# 6. Images: genimage (boot FAT16, squashfs root, ext4 data, MBR disk), then the MBR
#    code and SYSLINUX on the image file.
# ------------------------------------------------------------------------------------
step "images (genimage + syslinux, $BOARD/post-image.sh)"
SYSROOT="$SYSROOT" BUILD_DIR="$BUILD" TARGET_DIR="$TARGET" "$BOARD/post-image.sh" "$IMAGES"
step_done

cf=$IMAGES/cf.img
printf '==> done in %.1fs: %s\n' "$(awk -v a="$t_all" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$cf"
printf '    %-16s %s\n' \
    "version" "$(chroot "$TARGET" /usr/bin/pbx --version 2>/dev/null || echo "$PBX_BUILD")" \
    "cf.img" "$(du -h --apparent-size "$cf" | cut -f1) raw, $(du -h "$cf" | cut -f1) allocated" \
    "rootfs.squashfs" "$(du -h --apparent-size "$IMAGES/rootfs.squashfs" | cut -f1)" \
    "kernel+initrd" "$(du -ch --apparent-size "$IMAGES/vmlinuz" "$IMAGES/initrd.xz" | tail -1 | cut -f1)"
