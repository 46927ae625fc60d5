package lbip

import (
	"net/netip"
	"time"

	"github.com/baregate/baregate/internal/cluster"
)

// A node that starts owning an IP because its inputs changed (an externalTrafficPolicy Local
// endpoint became ready here, a Service got the IP) must not answer ARP/NDP before its own forwarding
// rules reflect that change, or clients are refused for the moment in between. The gate below holds
// such a claim until this node's forwarding has programmed a snapshot at least as new as the one in
// which the node became eligible. A failover is not held: the survivor has been eligible (and
// programmed) all along; only liveness changed.

// forwardHoldLimit bounds the hold: a forwarding that cannot program (nftables failing) must not keep
// an IP unannounced for ever when no other node may take it.
const forwardHoldLimit = 10 * time.Second

// forwardRecheck is how soon a held claim is looked at again.
const forwardRecheck = 25 * time.Millisecond

// eligibleSince returns, for each IP this node is eligible to announce now, the snapshot generation
// since which it has been continuously eligible: the one in prev, else gen.
func eligibleSince(prev map[netip.Addr]uint64, eligible []netip.Addr, gen uint64) map[netip.Addr]uint64 {
	out := make(map[netip.Addr]uint64, len(eligible))
	for _, ip := range eligible {
		if g, ok := prev[ip]; ok {
			out[ip] = g
		} else {
			out[ip] = gen
		}
	}
	return out
}

// selfEligible lists the IPs node self could announce were it the only live node: the owner
// function's filters (pools, L2Advertisements, excluded nodes, externalTrafficPolicy Local
// endpoints) without the choice among nodes.
func selfEligible(snap *cluster.Snapshot, self string) []netip.Addr {
	var out []netip.Addr
	for _, a := range Assign(snap, map[string]bool{self: true}) {
		if a.Node == self {
			out = append(out, a.IP)
		}
	}
	return out
}

// forwardingReady reports whether this node's forwarding has programmed what announcing ip needs:
// programmed is the generation of the snapshot the forwarding last applied.
func forwardingReady(since map[netip.Addr]uint64, ip netip.Addr, programmed uint64) bool {
	g, ok := since[ip]
	return !ok || programmed >= g
}
