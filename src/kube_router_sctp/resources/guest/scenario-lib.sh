#!/bin/sh
# Helpers of the scenarios (dataplane/situations.py), sourced by each command the host
# runs in the node VM. Namespaces: "node" (node A, the VM's root), "node-b", "ext" (the
# external client), "pod-*" (pods). Long-lived processes start with setsid -f and write
# their output under /run/krs, which the harness reads back.
KRS=/run/krs
PEER=$KRS/sctp-peer.py # run with the node's python3

in_ns() { # in_ns NS COMMAND...
    ns=$1
    shift
    if [ "$ns" = node ]; then "$@"; else ip netns exec "$ns" "$@"; fi
}

sc_pod() { # sc_pod NS IPv4 IPv6|- NAME PORT...: a pod on node A's bridge serving SCTP
    ns=$1 ip4=$2 ip6=$3 name=$4
    shift 4
    # a pod that is a real container arrives with its namespace attached already
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    # ...with IPv6 off, as Docker leaves a container it gave no IPv6 network
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
    ip link add "veth-$ns" type veth peer name eth0 netns "$ns"
    ip link set "veth-$ns" master kube-bridge up
    # The pod announces its address when eth0 comes up (a gratuitous ARP), as a pod wired by
    # the CNI bridge plugin does: a pod re-created with its old address and a new MAC must
    # not be sent to the old MAC that node A's neighbour cache still holds.
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.eth0.arp_notify=1
    # ...which node A ignores within its neighbour entry's locktime: forget the entry too
    ip neigh flush to "$ip4" dev kube-bridge 2>/dev/null || true
    ip -n "$ns" addr add "$ip4/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$(ip -4 -o addr show dev kube-bridge | awk '{sub(/\/.*/, "", $4); print $4; exit}')"
    if [ "$ip6" != - ]; then
        gateway6=$(ip -6 -o addr show dev kube-bridge scope global | awk '{sub(/\/.*/, "", $4); print $4; exit}')
        ip -n "$ns" -6 addr add "$ip6/64" dev eth0 nodad
        ip -n "$ns" -6 route add default via "$gateway6"
        # A nodad address sends no unsolicited neighbour advertisement: node A forgets the old
        # MAC of a re-created pod's address instead, and resolves it afresh.
        ip -6 neigh flush to "$ip6" dev kube-bridge 2>/dev/null || true
    fi
    ip netns exec "$ns" sysctl -qw net.sctp.hb_interval=1000 net.sctp.path_max_retrans=2 \
        net.sctp.rto_initial=500 net.sctp.rto_min=200 net.sctp.rto_max=1000
    for port in "$@"; do sc_serve "$ns" "$name" "$port" || return 1; done
}

sc_bridge6() { # sc_bridge6 ADDR/LEN: the pods' IPv6 gateway on kube-bridge
    ip -6 addr replace "$1" dev kube-bridge nodad
}

sc_serve() { # sc_serve NS NAME PORT: the echo server (sctp-peer.py serve) as a daemon, listening when it returns
    log="$KRS/serve-$1-$3.log"
    rm -f "$log"
    ip netns exec "$1" setsid -f python3 "$PEER" serve --port "$3" --name "$2" </dev/null >"$log" 2>&1
    # ready only once it listens, as a readiness probe would have it: an INIT that comes
    # before the listen is answered with an ABORT
    for _ in $(seq 100); do
        grep -q '"listening"' "$log" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "the server in $1 on port $3 is not listening after 10s: $(tail -c 300 "$log" 2>/dev/null)"
    return 1
}

sc_stop_pod() { # sc_stop_pod NS: end every process in a pod's network namespace
    for pid in $(ip netns pids "$1"); do kill "$pid" 2>/dev/null || true; done
}

sc_stop_talks() { # sc_stop_talks: end every background client, so none outlives its scenario
    pkill -f -- "(^|/)python3 $PEER talk( |\$)" 2>/dev/null || true
}

sc_talk() { # sc_talk NS NAME ARGS...: a client (sctp-peer.py talk) in the background
    ns=$1 name=$2
    shift 2
    ip netns exec "$ns" setsid -f python3 "$PEER" talk "$@" </dev/null >"$KRS/talk-$name.log" 2>&1
}

sc_talk_now() { # sc_talk_now NS ARGS...: a client in the foreground, its JSON lines out
    ns=$1
    shift
    in_ns "$ns" python3 "$PEER" talk "$@" 2>&1
    echo "KRS-TALK status=$?"
}

sc_read() { # sc_read NAME: what a background client has said so far
    cat "$KRS/talk-$1.log" 2>/dev/null || true
}

sc_capture_start() { # sc_capture_start NS NAME FILTER...: tcpdump -i any into a pcap
    ns=$1 name=$2
    shift 2
    rm -f "$KRS/cap-$name.pcap" "$KRS/cap-$name.pid"
    # exec keeps the pid the pid file names: the capture is stopped by that pid alone.
    # shellcheck disable=SC2016 # expanded by the inner shell, from its arguments
    in_ns "$ns" setsid -f sh -c 'echo $$ >"$0"; exec tcpdump -i any -U -s 256 -c 8000 -w "$1" "$2"' \
        "$KRS/cap-$name.pid" "$KRS/cap-$name.pcap" "$*" </dev/null >"$KRS/cap-$name.log" 2>&1
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        grep -q "listening on" "$KRS/cap-$name.log" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "capture $name did not start: $(cat "$KRS/cap-$name.log")"
}

sc_capture_stop() { # sc_capture_stop NAME: stop the capture, print the pcap as base64
    pid=$(cat "$KRS/cap-$1.pid" 2>/dev/null || true)
    if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null || true; fi
    sleep 0.5
    echo "KRS-PCAP-BEGIN"
    base64 "$KRS/cap-$1.pcap" 2>/dev/null || true
    echo "KRS-PCAP-END"
}

sc_tables() { # sc_tables NS: the kernel's IPVS connections and SCTP conntrack entries
    echo "## ipvsadm -Ln"
    in_ns "$1" ipvsadm -Ln
    echo "## ipvsadm -Lnc"
    in_ns "$1" ipvsadm -Lnc
    echo "## conntrack -L -p sctp"
    in_ns "$1" conntrack -L -p sctp 2>&1
}

sc_sysctl() { # sc_sysctl NS NAME[=VALUE]: read (or set, then read) a sysctl
    case $2 in
    *=*) in_ns "$1" sysctl -qw "$2" && in_ns "$1" sysctl -n "${2%%=*}" ;;
    *) in_ns "$1" sysctl -n "$2" ;;
    esac
}
