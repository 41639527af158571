#!/bin/sh
# Init of the Docker-host VM (tini is PID 1 and reaps orphans; this script is its child).
# It travels in each boot's initramfs, so changing it needs no new disk.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
# Values filled in by the harness (kube_router_sctp.guestscripts.render).
MODULES=@MODULES@
API_PORT=@API_PORT@

say() { echo "krs-init: $*"; echo "$*" > /dev/ttyS1; }
fail() { say "failed: $*"; echo o > /proc/sysrq-trigger; sleep 10; exit 1; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "cannot mount cgroup2"
mount -o remount,rw / || fail "cannot remount / read-write"
hostname krs-docker-host
say booting
for module in $MODULES; do
    modprobe "$module" 2>/dev/null || echo "krs-init: modprobe $module failed"
done
ip link set lo up
if mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || echo "krs-init: no arm64 emulation"
else
    echo "krs-init: no arm64 emulation"
fi
# The NIC is named by the kernel (no udev here); pick the first with a device behind it,
# since modules such as dummy create interfaces too.
nic=
tries=0
while [ -z "$nic" ]; do
    for dev in /sys/class/net/*; do
        [ -e "$dev/device" ] && nic=${dev##*/} && break
    done
    [ -n "$nic" ] && break
    tries=$((tries + 1))
    [ "$tries" -gt 300 ] && fail "no network interface appeared"
    sleep 0.1
done
ip addr add 10.0.2.15/24 dev "$nic" || fail "cannot configure $nic"
ip link set "$nic" up
ip route add default via 10.0.2.2 || fail "cannot add the default route"
echo 1 > /proc/sys/net/ipv4/ip_forward
say "network $nic"
insecure=
read -r cmdline < /proc/cmdline
for word in $cmdline; do
    case "$word" in krs.insecure=*) insecure=${word#krs.insecure=} ;; esac
done
flags=
for registry in $(echo "$insecure" | tr ',' ' '); do flags="$flags --insecure-registry $registry"; done
mkdir -p /run/containerd
containerd --log-level warn >/dev/console 2>&1 &
tries=0
while [ ! -S /run/containerd/containerd.sock ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 600 ] && fail "containerd did not start"
    sleep 0.1
done
# --tls=false says on purpose what a bare TCP listener implies; without it dockerd
# 20.10 sleeps 15 s to show a deprecation warning. The API is reachable only through
# the host's loopback forward.
# shellcheck disable=SC2086 # flags are words on purpose
dockerd -H "tcp://0.0.0.0:$API_PORT" -H unix:///run/docker.sock --tls=false \
    --containerd /run/containerd/containerd.sock $flags >/dev/console 2>&1 &
dockerd=$!
say "dockerd started"
while kill -0 "$dockerd" 2>/dev/null; do sleep 2; done
wait "$dockerd"
fail "dockerd exited with status $?"
