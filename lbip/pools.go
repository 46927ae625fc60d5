package lbip

import (
	"fmt"
	"net/netip"
	"strings"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
)

// ExternalIPsAnnotation on an IPAddressPool set to "true" makes baregate announce the spec.externalIPs
// of Services that fall in the pool (MetalLB has no such switch: it never announces externalIPs).
const ExternalIPsAnnotation = "baregate.io/announce-external-ips"

// addrRange is one entry of a pool's addresses: a CIDR or an inclusive first-last range.
type addrRange struct{ first, last netip.Addr }

func (r addrRange) contains(ip netip.Addr) bool {
	return r.first.BitLen() == ip.BitLen() && r.first.Compare(ip) <= 0 && ip.Compare(r.last) <= 0
}

// parseRange parses one IPAddressPool address entry as MetalLB accepts it: "203.0.113.0/24" or
// "203.0.113.10-203.0.113.20".
func parseRange(s string) (addrRange, error) {
	s = strings.TrimSpace(s)
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err := netip.ParseAddr(strings.TrimSpace(first))
		if err != nil {
			return addrRange{}, fmt.Errorf("parsing range start of %q: %w", s, err)
		}
		b, err := netip.ParseAddr(strings.TrimSpace(last))
		if err != nil {
			return addrRange{}, fmt.Errorf("parsing range end of %q: %w", s, err)
		}
		a, b = a.Unmap(), b.Unmap()
		if a.Zone() != "" || b.Zone() != "" {
			return addrRange{}, fmt.Errorf("range %q has a zone", s)
		}
		if a.BitLen() != b.BitLen() || b.Less(a) {
			return addrRange{}, fmt.Errorf("range %q is not a first-last pair of one family", s)
		}
		return addrRange{a, b}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return addrRange{}, fmt.Errorf("parsing CIDR %q: %w", s, err)
	}
	p = p.Masked()
	return addrRange{p.Addr(), lastAddr(p)}, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// poolIndex finds the pool an IP belongs to. Bad address entries are skipped here: the allocator
// reports them on the pool.
type poolIndex struct {
	pools  []*metallbv1beta1.IPAddressPool
	ranges [][]addrRange
}

func newPoolIndex(pools []*metallbv1beta1.IPAddressPool) *poolIndex {
	idx := &poolIndex{pools: pools, ranges: make([][]addrRange, len(pools))}
	for i, p := range pools {
		for _, a := range p.Spec.Addresses {
			if r, err := parseRange(a); err == nil {
				idx.ranges[i] = append(idx.ranges[i], r)
			}
		}
	}
	return idx
}

// poolFor returns the first pool (in snapshot order, by name) holding ip, or nil.
func (idx *poolIndex) poolFor(ip netip.Addr) *metallbv1beta1.IPAddressPool {
	for i, rs := range idx.ranges {
		for _, r := range rs {
			if r.contains(ip) {
				return idx.pools[i]
			}
		}
	}
	return nil
}
