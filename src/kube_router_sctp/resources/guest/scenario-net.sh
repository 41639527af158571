#!/bin/sh
# The scenarios' network (docs/dataplane.md, "Scenarios"): a second node and a LAN.
# Runs once in the node VM's root network namespace (node A), after the base proof, with
# kube-router stopped. Node B is the network namespace of a container the harness
# started (attached here as "node-b"), the way kind runs nodes as containers: its own
# addresses, routes, IPVS, iptables and ipsets (all per network namespace in Linux).
#
#   netns lan: bridge br0 (a switch: no addresses, no netfilter)
#     +-- node A  eth1 10.101.50.117  fd00:101:50::117   (the VM's root namespace)
#     +-- node B  eth0 10.101.50.118  fd00:101:50::118   (netns node-b)
#     +-- ext     eth0 10.101.50.85   fd00:101:50::85    (the external client)
#   ext eth1 10.101.51.85 <-> node A eth2 10.101.51.117  (the client's second path)
#
# Routes are what a provisioner (or kube-router's BGP, in the router profile) would give:
# each node reaches the other's pod range through it; node B reaches the API server
# (10.0.2.2, QEMU's name for the host) through node A, which masquerades it.
set -eux
# Values filled in by the harness (kube_router_sctp.guestscripts.render).
NODE_B_PID=@NODE_B_PID@
NODE_A_IP=@NODE_A_IP@
NODE_B_IP=@NODE_B_IP@
CLIENT_IP=@CLIENT_IP@
NODE_A_IP2=@NODE_A_IP2@
CLIENT_IP2=@CLIENT_IP2@
NODE_A_IP6=@NODE_A_IP6@
NODE_B_IP6=@NODE_B_IP6@
CLIENT_IP6=@CLIENT_IP6@
POD_RANGE_A=@POD_RANGE_A@
POD_RANGE_B=@POD_RANGE_B@
POD_RANGE_A6=@POD_RANGE_A6@
SERVICE_RANGES=@SERVICE_RANGES@
EXTERNAL_RANGES=@EXTERNAL_RANGES@
API_HOST=@API_HOST@

v6() { case $1 in *:*) return 0 ;; *) return 1 ;; esac; }

# The base proof's direct link between node A and the external host goes; its
# addresses come back on the LAN.
ip link del eth1 2>/dev/null || true
ip netns del ext 2>/dev/null || true
ip netns add ext
ip netns add lan
ip -n lan link add br0 type bridge
ip -n lan link set br0 up
ip -n lan link set lo up
# A switch filters nothing: keep the LAN's frames out of iptables (br_netfilter).
ip netns exec lan sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true
ip netns exec lan sysctl -qw net.bridge.bridge-nf-call-ip6tables=0 2>/dev/null || true

mkdir -p /run/netns
ip netns attach node-b "$NODE_B_PID"
# Docker turns IPv6 off in the namespaces of containers it did not give IPv6 to; a
# node has it (interfaces made later inherit "default").
ip netns exec node-b sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0

plug() { # plug NS IFNAME PORTNAME: a veth from NS (IFNAME) to the LAN's switch
    # The NS end is made in NS: node A's own eth0 (the VM's uplink) would clash with it.
    if [ "$1" = node ]; then
        ip link add "$3" type veth peer name "$2"
    else
        ip link add "$3" type veth peer name "$2" netns "$1"
    fi
    ip link set "$3" netns lan
    ip -n lan link set "$3" master br0 up
}
in_ns() { if [ "$1" = node ]; then shift; "$@"; else ns=$1; shift; ip netns exec "$ns" "$@"; fi; }
address() { # address NS IFNAME IPv4/len IPv6/len
    in_ns "$1" ip addr add "$3" dev "$2"
    in_ns "$1" ip -6 addr add "$4" dev "$2" nodad
    in_ns "$1" ip link set "$2" up
}
plug node eth1 lan-a
plug node-b eth0 lan-b
plug ext eth0 lan-ext
address node eth1 "$NODE_A_IP/24" "$NODE_A_IP6/64"
address node-b eth0 "$NODE_B_IP/24" "$NODE_B_IP6/64"
address ext eth0 "$CLIENT_IP/24" "$CLIENT_IP6/64"
ip -n node-b link set lo up
ip -n ext link set lo up
# The multi-homing scenario takes the client's first link down and up again: its IPv6
# address must survive that (by default a link going down drops it).
ip netns exec ext sysctl -qw net.ipv6.conf.eth0.keep_addr_on_down=1

# The client's second path: a link of its own to node A.
ip link add eth2 type veth peer name eth1 netns ext
ip addr add "$NODE_A_IP2/24" dev eth2
ip link set eth2 up
ip -n ext addr add "$CLIENT_IP2/24" dev eth1
ip -n ext link set eth1 up

# Node B forwards as a node does (a fresh namespace starts with forwarding off).
ip netns exec node-b sysctl -qw net.ipv4.ip_forward=1
ip netns exec node-b sysctl -qw net.ipv6.conf.all.forwarding=1
sysctl -qw net.ipv6.conf.all.forwarding=1

# Pod ranges across the nodes; node B's way to the API server.
ip route replace "$POD_RANGE_B" via "$NODE_B_IP"
ip -n node-b route add "$POD_RANGE_A" via "$NODE_A_IP"
ip -n node-b -6 route add "$POD_RANGE_A6" via "$NODE_A_IP6"
ip -n node-b route add "$API_HOST/32" via "$NODE_A_IP"
iptables -t nat -A POSTROUTING -s "$NODE_B_IP/32" -d "$API_HOST/32" \
    -m comment --comment "krs: node B reaches the API server through node A" -j MASQUERADE
for range in "$NODE_A_IP/24" "$NODE_A_IP2/24"; do
    iptables -A FORWARD -s "$range" -m comment --comment "krs: node network" -j ACCEPT
    iptables -A FORWARD -d "$range" -m comment --comment "krs: node network" -j ACCEPT
done

# The external client reaches the service ranges (as --advertise-cluster-ip would
# announce them) and the external IPs through node A, its first path preferred.
for range in $SERVICE_RANGES $EXTERNAL_RANGES; do
    if v6 "$range"; then
        ip -n ext -6 route add "$range" via "$NODE_A_IP6" metric 10
    else
        ip -n ext route add "$range" via "$NODE_A_IP" metric 10
        ip -n ext route add "$range" via "$NODE_A_IP2" metric 20
    fi
done

# SCTP that notices a dead path in seconds, not minutes (defaults: heartbeat every 30 s,
# 5 retransmissions per path): in every namespace that ends an association.
for ns in node node-b ext; do
    in_ns "$ns" sysctl -qw net.sctp.hb_interval=1000 net.sctp.path_max_retrans=2 \
        net.sctp.rto_initial=500 net.sctp.rto_min=200 net.sctp.rto_max=1000
done
echo "node A:"; ip -br addr
echo "node B:"; ip -n node-b -br addr; ip -n node-b route
echo "ext:"; ip -n ext -br addr; ip -n ext route
