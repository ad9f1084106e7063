# Shell functions shared by the initramfs /init and the rootfs boot scripts
# (busybox ash). Source it; it defines functions only.

# wafer_cmdline KEY: the value of KEY=VALUE on the kernel command line (empty if absent).
wafer_cmdline() {
    local word
    for word in $(cat /proc/cmdline); do
        case "$word" in
            "$1"=*) echo "${word#*=}"; return 0 ;;
        esac
    done
    return 1
}

# wafer_coldplug: load the driver of every device the kernel has seen, by its
# modalias (PCI, SCSI, virtio, platform ...), the way udev's coldplug does. Repeats
# while new devices keep appearing (a disk controller brings SCSI disks, ...).
wafer_coldplug() {
    local before=-1 now rounds=0
    while [ $rounds -lt 5 ]; do
        now=$(find /sys/devices -name modalias 2>/dev/null | wc -l)
        [ "$now" = "$before" ] && break
        find /sys/devices -name modalias -exec cat {} + 2>/dev/null | sort -u \
            | xargs -r modprobe -qab 2>/dev/null
        before=$now
        rounds=$((rounds + 1))
    done
}

# wafer_disk_by_signature SIG: the name of the whole disk (sda, vda, hda ...) whose MBR
# disk signature (4 bytes at offset 440, little-endian) is the hex number SIG.
wafer_disk_by_signature() {
    local want dev name sig
    want=$(echo "$1" | tr 'A-F' 'a-f')
    for dev in /sys/class/block/*; do
        [ -e "$dev/partition" ] && continue
        name=${dev##*/}
        [ -b "/dev/$name" ] || continue
        sig=$(hexdump -s 440 -n 4 -e '1/4 "%08x"' "/dev/$name" 2>/dev/null) || continue
        if [ "$sig" = "$want" ]; then
            echo "$name"
            return 0
        fi
    done
    return 1
}

# wafer_partition DISK N: the block device name of partition N of DISK (sda2, mmcblk0p2).
wafer_partition() {
    local part
    for part in /sys/class/block/"$1"*; do
        [ -e "$part/partition" ] || continue
        if [ "$(cat "$part/partition")" = "$2" ]; then
            echo "${part##*/}"
            return 0
        fi
    done
    return 1
}

# wafer_partuuid_device PARTUUID=SSSSSSSS-NN: /dev/<partition> for an MBR PARTUUID
# (disk signature, partition number in hex), as the kernel's root= understands it.
wafer_partuuid_device() {
    local spec sig num disk part
    spec=${1#PARTUUID=}
    sig=${spec%-*}
    num=$((0x${spec#*-}))
    disk=$(wafer_disk_by_signature "$sig") || return 1
    part=$(wafer_partition "$disk" "$num") || return 1
    echo "/dev/$part"
}
