#!/bin/sh
# PID 1 of the kernel smoke guest, in the image's root file system: load the modules the
# harness put in the initramfs, run the smoke check, report its exit status, power off.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
# Values filled in by the harness (kube_router_sctp.guestscripts.render).
STATUS_PORTS=@STATUS_PORTS@
HARNESS=@HARNESS@
BEGIN=@BEGIN@
END=@END@

report() {
    # The status port is a file on the host: the exit status travels there, not in
    # console text. Closing the port drains it, so the number is out before poweroff.
    # shellcheck disable=SC2086 # the ports are a glob on purpose (/dev/vport*p1 on arm64)
    for port in $STATUS_PORTS; do echo "$1" > "$port"; done
    echo o > /proc/sysrq-trigger
    sleep 10
    exit "$1"  # no sysrq? PID 1 exiting panics the kernel, and panic=-1 + -no-reboot ends QEMU
}
command -v mount >/dev/null 2>&1 || { echo "KRS-INIT: no mount command in the image"; report 96; }
# The root is the initramfs, in memory and writable: /run and /tmp need no mount of
# their own (each program started costs about 0.1 s under TCG).
mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
command -v insmod >/dev/null 2>&1 || { echo "KRS-INIT: no insmod in the image"; report 97; }
# The modules are $HARNESS/lib/modules/0.0-krs/NN/NAME.ko, NN in load order, with an index
# of their names beside them: one modprobe loads them all, in the order named (each insmod
# is an exec, about 0.1 s under TCG). What it did not load gets an insmod of its own.
set --
for module in "$HARNESS"/lib/modules/0.0-krs/*/*.ko; do
    [ -e "$module" ] || continue
    name=${module##*/}
    set -- "$@" "${name%.ko}"
done
if [ "$#" -gt 0 ] && [ -e "$HARNESS/lib/modules/0.0-krs/modules.dep.bin" ]; then
    # -C: the image's own modprobe.d plays no part, as with insmod
    modprobe -q -d "$HARNESS" -S 0.0-krs -C "$HARNESS/modprobe.conf" -a -- "$@" 2>/dev/null
fi
indexed=0
for module in "$HARNESS"/lib/modules/0.0-krs/*/*.ko; do
    [ -e "$module" ] || continue
    name=${module##*/}
    name=${name%.ko}
    if [ -d "/sys/module/$name" ]; then
        indexed=$((indexed + 1))
        continue
    fi
    # A failure here is not fatal (crc32c-intel needs SSE4.2, which TCG may lack); a
    # module the check needs shows up as the smoke failure class instead.
    insmod "$module" 2>/dev/null || echo "KRS-INIT: insmod ${module##*/} failed"
done
echo "KRS-INIT: $indexed of $# modules loaded by one modprobe"
ip link set lo up 2>/dev/null || /sbin/ip link set lo up 2>/dev/null
echo "$BEGIN"
/bin/sh "$HARNESS/smoke.sh" </dev/null 2>&1
status=$?
echo "$END $status"
report "$status"
