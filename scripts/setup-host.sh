#!/usr/bin/env bash
# Prepare a Debian 12 host for kube-router-sctp: Debian's Docker and registry, QEMU, etcd and
# kubectl (the dataplane proof's control plane), the project's virtualenv; start dockerd and a
# registry on 127.0.0.1:5000 unless running.
# Idempotent: run it as often as you like. Needs root (or sudo) for apt and dockerd.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
state=${KRS_STATE_DIR:-/var/lib/kube-router-sctp}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

say() { printf '==> %s\n' "$*" >&2; }

# gpgv + debian-archive-keyring check Debian's signed indices for --kernel debian:SUITE;
# zstd unpacks zstd-compressed kernel packages; shellcheck lints the guest scripts.
packages=(docker-registry apache2-utils cpio qemu-system-x86 qemu-system-arm qemu-utils qemu-user-static
          binfmt-support debootstrap e2fsprogs kmod git python3-venv ca-certificates curl iproute2
          gpgv gpg debian-archive-keyring zstd shellcheck etcd-server openssl)
# Keep a Docker that is already installed (docker-ce, moby on CI runners); else Debian's.
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
# Likewise kubectl (any 1.20+ does); else Debian's kubernetes-client (1.20).
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Kernels (amd64 and arm64 alike) come from the Debian mirror's signed indices through the
# tool itself, so apt needs no foreign architecture.
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# verify runs an etcd of its own per run, on a port chosen then; the packaged service that
# installing etcd-server starts on systemd hosts is not needed: stop it if we started it.
if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1 \
   && systemctl is-active --quiet etcd 2>/dev/null; then
    say "stopping the packaged etcd service (verify starts its own etcd per run)"
    $sudo systemctl disable --now etcd >/dev/null 2>&1 || true
fi

if ! docker version >/dev/null 2>&1; then
    say "starting dockerd"
    $sudo mkdir -p "$state"
    $sudo sh -c "nohup dockerd >'$state/dockerd.log' 2>&1 &"
    for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
    docker version >/dev/null 2>&1 || { echo "dockerd did not start; see $state/dockerd.log" >&2; exit 1; }
fi

# arm64 images are built and run under binfmt emulation (qemu-user-static).
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    $sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    $sudo update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || say "warning: cannot enable arm64 emulation (binfmt_misc)"
fi

registry_up() { curl -fs -o /dev/null http://127.0.0.1:5000/v2/; }  # -s: "not running yet" is no error
if registry_up; then
    say "a registry answers on 127.0.0.1:5000"
else
    say "no registry on 127.0.0.1:5000 yet; starting one"
    $sudo mkdir -p "$state/registry"
    $sudo tee "$state/registry/config.yml" >/dev/null <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YAML
    $sudo sh -c "nohup docker-registry serve '$state/registry/config.yml' >'$state/registry/registry.log' 2>&1 &"
    for _ in $(seq 1 30); do registry_up && break; sleep 1; done
    registry_up || { echo "registry did not start; see $state/registry/registry.log" >&2; exit 1; }
fi

if [ ! -x "$here/.venv/bin/python" ]; then
    say "creating $here/.venv"
    python3 -m venv "$here/.venv"
fi
if ! "$here/.venv/bin/python" -c 'import kube_router_sctp, pytest' 2>/dev/null \
   || [ "$here/pyproject.toml" -nt "$here/.venv/.installed" ]; then
    say "installing the project and its test tools into .venv"
    "$here/.venv/bin/python" -m pip install -q -e "${here}[test]"
    touch "$here/.venv/.installed"
fi
say "host ready: docker $(docker version --format '{{.Server.Version}}'), registry 127.0.0.1:5000"
