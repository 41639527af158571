#!/bin/sh
# The smoke check: the image's own ipvsadm and ipset create SCTP, TCP and UDP IPVS
# services and an SCTP ipset entry. Runs in a privileged container or as a QEMU guest's
# job. Exit 0 = pass; any other status is a failure class (smoke.CLASSES), so the
# verdict never depends on scraping this output.
set -u
# Values filled in by the harness (kube_router_sctp.guestscripts.render).
VIP=@VIP@
REAL=@REAL@
SCTP_PORT=@SCTP_PORT@
TCP_PORT=@TCP_PORT@
UDP_PORT=@UDP_PORT@
EXTERNAL_IP=@EXTERNAL_IP@
KUBE_ROUTER_VERSION=@KUBE_ROUTER_VERSION@
IPVSADM_VERSION=@IPVSADM_VERSION@
CHECK_VERSIONS=@CHECK_VERSIONS@

# Text is read with the shell's own builtins, not grep, awk or head: under QEMU's TCG
# every program started costs about 0.1 s, and the kernel smoke's verdict is timed.
nl='
'
fail() { code=$1; shift; echo "SMOKE-FAIL $code $*"; exit "$code"; }
port_of() { case $1 in sctp) echo "$SCTP_PORT" ;; tcp) echo "$TCP_PORT" ;; udp) echo "$UDP_PORT" ;; esac; }
upper() { case $1 in sctp) echo SCTP ;; tcp) echo TCP ;; udp) echo UDP ;; esac; }
# listed NAME ADDRESS REAL: 0 when $table has the service line "NAME ADDRESS rr" (at the
# line's start, as ipvsadm prints services) and, among the indented lines under it,
# "-> REAL Masq"; 1 when the service is missing, 2 the real server.
listed() {
    name=$1 address=$2 real_address=$3 service=no real=no inside=no
    while IFS= read -r line; do
        set -f
        # shellcheck disable=SC2086 # the line's words, split on purpose (globbing off)
        set -- $line
        set +f
        case $line in
            " "* | "	"*)
                if [ "$inside" = yes ] && [ "${1:-}" = "->" ] && [ "${2:-}" = "$real_address" ] \
                    && [ "${3:-}" = Masq ]; then
                    real=yes
                fi ;;
            *)
                inside=no
                if [ "${1:-}" = "$name" ] && [ "${2:-}" = "$address" ] && [ "${3:-}" = rr ]; then
                    service=yes inside=yes
                fi ;;
        esac
    done <<TABLE
$table
TABLE
    [ "$service" = yes ] || return 1
    [ "$real" = yes ] || return 2
}

for bin in kube-router gobgp ipvsadm ipset iptables; do
    command -v "$bin" >/dev/null 2>&1 || fail 13 "missing binary: $bin"
done
# CAP_NET_ADMIN is bit 12 of the effective capability set.
cap=0
while read -r key value _rest; do [ "$key" = CapEff: ] && cap=$value; done </proc/self/status
case "$cap" in *[!0-9a-f]* | "") cap=0 ;; esac
if [ $(( 0x$cap >> 12 & 1 )) -ne 1 ]; then fail 12 "CapEff=$cap lacks CAP_NET_ADMIN"; fi
out=$(ipvsadm -Ln 2>&1) || {
    echo "$out"
    case "$out" in *"Protocol not available"*|*"Can't initialize ipvs"*|*"Module ip_vs not found"*)
        fail 10 "ipvsadm -Ln: $out" ;;
    esac
    case "$out" in *"ermission denied"*|*"not permitted"*) fail 12 "ipvsadm -Ln: $out" ;; esac
    fail 10 "ipvsadm -Ln: $out"
}
kv=$(kube-router --version 2>&1); kv=${kv%%"$nl"*}; echo "kube-router: $kv"
iv=$(ipvsadm --version 2>&1); iv=${iv%%"$nl"*}; echo "ipvsadm: $iv"
gv=$(gobgp --version 2>&1); gv=${gv%%"$nl"*}; echo "gobgp: $gv"
if [ "$CHECK_VERSIONS" = yes ]; then
    case "$kv" in *"version $KUBE_ROUTER_VERSION,"*) ;; *) fail 16 "kube-router says: $kv" ;; esac
    case "$iv" in *"v$IPVSADM_VERSION "*) ;; *) fail 16 "ipvsadm says: $iv" ;; esac
fi
for proto in tcp udp sctp; do
    port=$(port_of "$proto")
    name=$(upper "$proto")
    code=14
    [ "$proto" = sctp ] && code=11  # IPVS without SCTP support refuses exactly these
    ipvsadm -A "--$proto-service" "$VIP:$port" -s rr 2>&1 || fail "$code" "cannot add $name service"
    ipvsadm -a "--$proto-service" "$VIP:$port" -r "$REAL:$port" -m 2>&1 || fail "$code" "cannot add $name real server"
done
echo "--- ipvsadm -Ln"
table=$(ipvsadm -Ln)
echo "$table"
for proto in tcp udp sctp; do
    port=$(port_of "$proto")
    name=$(upper "$proto")
    listed "$name" "$VIP:$port" "$REAL:$port"
    case $? in
        1) fail 14 "$name service not listed as $name" ;;
        2) fail 14 "$name real server not listed" ;;
    esac
done
ipset create krs-smoke hash:ip,port timeout 0 2>/dev/null || ipset create krs-smoke hash:ip,port
# Protocol 132 by number: musl's protocol table has no "sctp".
ipset add krs-smoke "$EXTERNAL_IP,132:$SCTP_PORT" 2>&1 || fail 15 "ipset add $EXTERNAL_IP,132:$SCTP_PORT"
ipset add krs-smoke "$EXTERNAL_IP,tcp:$TCP_PORT" 2>&1 || fail 15 "ipset add tcp entry"
echo "--- ipset list krs-smoke"; ipset list krs-smoke
ipset destroy krs-smoke
ipvsadm -C
echo "SMOKE-PASS"
