#!/bin/sh
# Initramfs of the Docker-host VM: load the disk's drivers, mount it, switch to it.
B=/bin/busybox
fail() { echo "failed: $*" > /dev/ttyS1; echo "krs-initrd: $*"; echo o > /proc/sysrq-trigger; sleep 10; exit 1; }
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
for module in /modules/*.ko; do
    $B insmod "$module" 2>/dev/null || echo "krs-initrd: insmod ${module##*/} failed"
done
tries=0
while [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 300 ] && fail "the disks /dev/vda and /dev/vdb did not appear"
    $B sleep 0.1
done
$B mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount /dev/vda"
# The kernel's modules travel on a disk of their own, so one system disk serves every kernel.
$B mkdir -p /newroot/usr/lib/modules
$B mount -t ext4 -o ro /dev/vdb /newroot/usr/lib/modules || fail "cannot mount the modules disk /dev/vdb"
$B cp /krs-init /newroot/sbin/krs-init || fail "cannot install the init"
$B umount /proc /sys /dev
# tini as PID 1 reaps the orphans containerd shims leave behind; a shell would not.
for tini in /usr/bin/tini-static /usr/bin/tini; do
    [ -x "/newroot$tini" ] && exec $B switch_root /newroot "$tini" -- /sbin/krs-init
done
exec $B switch_root /newroot /sbin/krs-init
